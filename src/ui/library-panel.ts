/**
 * <l2s-library-panel>: the models in browser storage with the storage each takes, storage use, and
 * keeping storage persistent. Deleting asks first (inline, so it works the same on a phone).
 */
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
                      <div class="meta">
                        ${m.summary.architecture ?? '?'} · ${m.summary.tensorCount} tensors · ${describeSource(m)}
                      </div>
                    </td>
                    <td class="wide">${m.summary.architecture ?? '?'}</td>
                    <td>${m.summary.dtype ?? '?'}</td>
                    <td class="num wide">${m.summary.tensorCount}</td>
                    <td class="num" data-testid="model-storage">${formatBytes(storedBytes(m))}</td>
                    <td class="wide">${describeSource(m)}</td>
                    <td>
                      ${
                        this.confirming === m.id
                          ? html`<span class="confirm" role="group" aria-label=${`Delete ${m.name}?`}>
                              Delete ${formatBytes(storedBytes(m))}?
                              <button data-testid="model-delete-confirm" @click=${() => this.deleteModel(m)}>Delete</button>
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
                              aria-label=${`Delete ${m.name}`}
                              title=${`Delete ${m.name}`}
                              @click=${() => {
                                this.confirming = m.id;
                              }}
                            >
                              Delete
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
