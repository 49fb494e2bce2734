/** Styles every panel shares, so the page reads as one. */
import { css } from 'lit';

export const panelStyles = css`
  :host {
    display: block;
    margin-bottom: 16px;
  }
  section {
    border: 1px solid #d8dce5;
    border-radius: 8px;
    padding: 10px 14px;
    background: #fbfcfe;
  }
  h2 {
    font-size: 16px;
    margin: 0 0 8px;
  }
  table {
    border-collapse: collapse;
    width: 100%;
    font-size: 13px;
  }
  th,
  td {
    text-align: left;
    padding: 3px 6px;
    border-bottom: 1px solid #e7eaf0;
  }
  .hint {
    color: #5d6677;
  }
  .error {
    color: #a4161a;
    white-space: pre-wrap;
  }
  progress {
    width: 100%;
  }
  label {
    display: block;
    margin: 4px 0;
  }
  /* Read by screen readers, not shown. */
  .visually-hidden {
    position: absolute;
    width: 1px;
    height: 1px;
    overflow: hidden;
    clip: rect(0 0 0 0);
    white-space: nowrap;
  }
  section {
    min-width: 0;
  }
  code {
    overflow-wrap: anywhere;
  }
  input[type='text'],
  input[type='password'],
  input[type='url'],
  input[type='number'],
  select {
    font: inherit;
    padding: 2px 4px;
  }
`;
