/**
 * <l2s-library-panel>: the models in browser storage with the storage each takes, storage use, and
 * keeping storage persistent. Deleting asks first (inline, so it works the same on a phone).
 * Linked models (read in place from a folder) show their state: "Permission needed" with a button
 * that asks the browser (only a click may), or "Changed since linking" with the files and Re-link.
 * Removing a linked model removes the link only.
 */
import { css, html, LitElement } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { formatBytes } from '../formats/size';
import type { ModelRecord, StorageUse } from '../store/library';
import {
  describeLinkChange,
  type LinkState,
  linkState,
  requestFolderPermission,
} from '../store/linked-folder';
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
    case 'linked':
      return `folder ${m.link?.handle.name ?? ''} (read in place)`;
  }
}

/** Bytes the model takes in browser storage: every stored file, weights or not. */
function storedBytes(m: ModelRecord): number {
  return m.files.reduce((sum, f) => sum + f.size, 0);
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
      /* Cells wrap at dashes first; a part longer than its column breaks anywhere, so the table
         never outgrows its panel. */
      td {
        overflow-wrap: anywhere;
      }
      td.name {
        min-width: 8em;
      }
      td button {
        white-space: nowrap;
      }
      :host {
        container-type: inline-size;
      }
      .confirm {
        display: flex;
        gap: 4px;
        flex-wrap: wrap;
        align-items: center;
      }
      /* The panel's own width (a column of the page), not the screen's, decides what fits. */
      .badge {
        display: inline-block;
        font-size: 11px;
        border-radius: 8px;
        padding: 0 6px;
        margin-left: 4px;
        background: #e7ebf3;
        color: #3b4559;
      }
      .badge.linked {
        background: #dff0e4;
        color: #1f5a32;
      }
      .link-state {
        font-size: 12px;
        color: #8a4b00;
      }
      .meta {
        display: none;
        color: #5d6677;
        font-size: 12px;
      }
      @container (max-width: 640px) {
        .wide {
          display: none;
        }
        .meta {
          display: block;
        }
      }
    `,
  ];

  @property({ attribute: false }) engine?: Engine;
  @property({ attribute: false }) models: ModelRecord[] = [];
  @property({ attribute: false }) storage?: StorageUse;
  @state() private error = '';
  /** The model whose Delete was pressed once: its row asks to confirm. */
  @state() private confirming?: string;
  /** Linked models' states, by id, checked in the page (which may ask for permission). */
  @state() private linkStates = new Map<string, LinkState>();
  private readonly onFocus = () => void this.checkLinks();

  override connectedCallback(): void {
    super.connectedCallback();
    // Files change while the page is in the background: check again when it comes back.
    window.addEventListener('focus', this.onFocus);
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    window.removeEventListener('focus', this.onFocus);
  }

  protected override willUpdate(changed: Map<PropertyKey, unknown>): void {
    if (changed.has('models')) void this.checkLinks();
  }

  private async checkLinks(): Promise<void> {
    const next = new Map<string, LinkState>();
    for (const m of this.models) {
      if (!m.link) continue;
      try {
        next.set(m.id, await linkState(m.link));
      } catch (e) {
        this.error = `Checking the linked folder of ${m.name} failed: ${(e as Error).message}`;
      }
    }
    this.linkStates = next;
  }

  private async allowReading(m: ModelRecord): Promise<void> {
    if (!m.link) return;
    try {
      const granted = await requestFolderPermission(m.link.handle, 'read');
      this.error = granted
        ? ''
        : `The browser did not allow reading ${m.link.handle.name}; ${m.name} cannot be merged.`;
    } catch (e) {
      this.error = `Asking to read ${m.link.handle.name} failed: ${(e as Error).message}`;
    }
    await this.checkLinks();
  }

  private async relink(m: ModelRecord): Promise<void> {
    if (!this.engine) return;
    try {
      await this.engine.api.relinkModel(m.id);
      this.error = '';
    } catch (e) {
      this.error = `Re-linking ${m.name} failed: ${(e as Error).message}`;
    }
    this.dispatchEvent(new CustomEvent('library-changed', { bubbles: true, composed: true }));
  }

  private renderLinkState(m: ModelRecord) {
    const state = this.linkStates.get(m.id);
    if (!m.link || !state) return '';
    if (state.state === 'ready') {
      return html`<div class="link-state" data-testid="link-state" data-state="ready" hidden></div>`;
    }
    if (state.state === 'permission') {
      return html`<div class="link-state" data-testid="link-state" data-state="permission">
        Permission needed to read ${m.link.handle.name}
        <button data-testid="model-allow" @click=${() => this.allowReading(m)}>Allow reading</button>
      </div>`;
    }
    return html`<div class="link-state" data-testid="link-state" data-state="changed">
      Changed since linking: ${state.changes.map(describeLinkChange).join('; ')}
      <button
        data-testid="model-relink"
        title="Record the folder's files as they are now, so the model can be merged again"
        @click=${() => this.relink(m)}
      >
        Re-link
      </button>
    </div>`;
  }

  private async deleteModel(m: ModelRecord): Promise<void> {
    this.confirming = undefined;
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
                <tr>
                  <th>Name</th><th class="wide">Architecture</th><th>dtype</th><th class="wide">Tensors</th>
                  <th>Storage</th><th class="wide">Source</th><th><span class="visually-hidden">Actions</span></th>
                </tr>
              </thead>
              <tbody>
                ${this.models.map(
                  (m) => html`<tr data-testid="library-model" data-name=${m.name}>
                    <td class="name" title=${m.name}>
                      ${m.name}
                      <span
                        class="badge ${m.link ? 'linked' : ''}"
                        data-testid="model-kind"
                        title=${m.link ? 'Read in place from a folder on this computer; nothing is stored' : 'Stored in browser storage'}
                        >${m.link ? 'linked' : 'stored'}</span
                      >
                      ${this.renderLinkState(m)}
                      <div class="meta">
                        ${m.summary.architecture ?? '?'} · ${m.summary.tensorCount} tensors · ${describeSource(m)}
                      </div>
                    </td>
                    <td class="wide">${m.summary.architecture ?? '?'}</td>
                    <td>${m.summary.dtype ?? '?'}</td>
                    <td class="num wide">${m.summary.tensorCount}</td>
                    <td class="num" data-testid="model-storage">${m.link ? 'none (in place)' : formatBytes(storedBytes(m))}</td>
                    <td class="wide">${describeSource(m)}</td>
                    <td>
                      ${
                        this.confirming === m.id
                          ? html`<span class="confirm" role="group" aria-label=${`Delete ${m.name}?`}>
                              ${m.link ? 'Remove the link? The folder is not touched.' : `Delete ${formatBytes(storedBytes(m))}?`}
                              <button data-testid="model-delete-confirm" @click=${() => this.deleteModel(m)}>${m.link ? 'Remove link' : 'Delete'}</button>
                              <button
                                data-testid="model-delete-keep"
                                @click=${() => {
                                  this.confirming = undefined;
                                }}
                              >
                                Keep
                              </button>
                            </span>`
                          : html`<button
                              data-testid="model-delete"
                              aria-label=${m.link ? `Remove the link to ${m.name}` : `Delete ${m.name}`}
                              title=${m.link ? `Remove the link to ${m.name} (its folder stays)` : `Delete ${m.name}`}
                              @click=${() => {
                                this.confirming = m.id;
                              }}
                            >
                              ${m.link ? 'Unlink' : 'Delete'}
                            </button>`
                      }
                    </td>
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
