/** <l2s-library-panel>: the models in browser storage, storage use, and keeping storage persistent. */
import { css, html, LitElement } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { formatBytes } from '../formats/size';
import type { ModelRecord, StorageUse } from '../store/library';
import type { Engine } from '../worker/client';
import { panelStyles } from './panel-styles';

function describeSource(m: ModelRecord): string {
  switch (m.source.kind) {
    case 'folder':
      return 'folder';
    case 'hub':
      return `hub ${m.source.repo}@${m.source.revision}`;
    case 'merge':
      return 'merge';
    case 'demo':
      return 'synthetic demo (random weights)';
  }
}

@customElement('l2s-library-panel')
export class L2sLibraryPanel extends LitElement {
  static override styles = [
    panelStyles,
    css`
      td.num {
        text-align: right;
        font-variant-numeric: tabular-nums;
      }
    `,
  ];

  @property({ attribute: false }) engine?: Engine;
  @property({ attribute: false }) models: ModelRecord[] = [];
  @property({ attribute: false }) storage?: StorageUse;
  @state() private error = '';

  private async deleteModel(m: ModelRecord): Promise<void> {
    if (!this.engine) return;
    try {
      await this.engine.api.deleteModel(m.id);
      this.error = '';
    } catch (e) {
      this.error = `Deleting ${m.name} failed: ${(e as Error).message}`;
    }
    this.dispatchEvent(new CustomEvent('library-changed', { bubbles: true, composed: true }));
  }

  private async persist(): Promise<void> {
    const granted = await navigator.storage.persist();
    this.error = granted
      ? ''
      : 'The browser did not grant persistent storage (it may after you use the page more).';
    this.dispatchEvent(new CustomEvent('library-changed', { bubbles: true, composed: true }));
  }

  override render() {
    const s = this.storage;
    return html`
      <section>
        <h2>Library</h2>
        <p class="storage" data-testid="storage-use">
          ${
            s
              ? html`Storage: ${formatBytes(s.usage)} used of ${formatBytes(s.quota)}
                ${s.persisted ? '(persistent)' : html`<button @click=${this.persist}>Keep storage</button>`}`
              : 'Storage: measuring…'
          }
        </p>
        ${
          this.models.length === 0
            ? html`<p class="hint">No models yet. Import a folder or a hub repo, or try the demo.</p>`
            : html`<table data-testid="library">
              <thead>
                <tr><th>Name</th><th>Architecture</th><th>dtype</th><th>Tensors</th><th>Size</th><th>Source</th><th></th></tr>
              </thead>
              <tbody>
                ${this.models.map(
                  (m) => html`<tr data-testid="library-model" data-name=${m.name}>
                    <td>${m.name}</td>
                    <td>${m.summary.architecture ?? '?'}</td>
                    <td>${m.summary.dtype ?? '?'}</td>
                    <td class="num">${m.summary.tensorCount}</td>
                    <td class="num">${formatBytes(m.summary.totalBytes)}</td>
                    <td>${describeSource(m)}</td>
                    <td><button data-testid="model-delete" title="Delete ${m.name}" @click=${() => this.deleteModel(m)}>Delete</button></td>
                  </tr>`,
                )}
              </tbody>
            </table>`
        }
        ${this.error ? html`<p role="alert" class="error">${this.error}</p>` : ''}
      </section>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-library-panel': L2sLibraryPanel;
  }
}
