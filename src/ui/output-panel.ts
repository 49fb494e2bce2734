/**
 * <l2s-output-panel>: the merged files of the last run. Each file is a download link backed by an
 * object URL (revoked when the output is replaced or the panel goes away); "Save folder" writes them
 * all into a folder the user picks; "Add to library" keeps the merge as a model for further merges.
 */
import { html, LitElement, type PropertyValues } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { formatBytes } from '../formats/size';
import { type Engine, newRunId } from '../worker/client';
import { type OutputInfo, outputFiles } from '../worker/opfs-output';
import { panelStyles } from './panel-styles';

interface DirectoryPickerWindow {
  showDirectoryPicker(options?: { mode?: 'readwrite' }): Promise<FileSystemDirectoryHandle>;
}

interface WritableFileHandle {
  createWritable(): Promise<WritableStream<Uint8Array>>;
}

@customElement('l2s-output-panel')
export class L2sOutputPanel extends LitElement {
  static override styles = panelStyles;

  @property({ attribute: false }) engine?: Engine;
  /** The output shown (the last merge, or one picked from the earlier ones). */
  @property() outputId?: string;
  /** Every finished output kept in browser storage, newest first. */
  @property({ attribute: false }) outputs: OutputInfo[] = [];
  @state() private links: { file: File; url: string }[] = [];
  /** The output whose files `links` holds: lags `outputId` while its files load. */
  @state() private linksFor?: string;
  @state() private message = '';
  @state() private name = 'merged-model';
  @state() private busy = false;

  protected override willUpdate(changed: PropertyValues<this>): void {
    if (changed.has('outputId')) void this.loadFiles();
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.revokeAll();
  }

  private revokeAll(): void {
    for (const link of this.links) URL.revokeObjectURL(link.url);
    this.links = [];
    this.linksFor = undefined;
  }

  private async loadFiles(): Promise<void> {
    this.revokeAll();
    this.message = '';
    const id = this.outputId;
    if (!id) return;
    try {
      const files = await outputFiles(id);
      if (this.outputId !== id) return;
      this.links = files.map((file) => ({ file, url: URL.createObjectURL(file) }));
      this.linksFor = id;
    } catch (e) {
      this.message = (e as Error).message;
    }
  }

  private async saveFolder(): Promise<void> {
    const picker = window as unknown as Partial<DirectoryPickerWindow>;
    if (!picker.showDirectoryPicker) return;
    let directory: FileSystemDirectoryHandle;
    try {
      directory = await picker.showDirectoryPicker({ mode: 'readwrite' });
    } catch {
      return; // the user closed the picker
    }
    this.busy = true;
    try {
      for (const { file } of this.links) {
        const handle = (await directory.getFileHandle(file.name, {
          create: true,
        })) as unknown as WritableFileHandle;
        await file.stream().pipeTo(await handle.createWritable());
      }
      this.message = `Saved ${this.links.length} files to ${directory.name}.`;
    } catch (e) {
      this.message = `Saving failed: ${(e as Error).message}`;
    } finally {
      this.busy = false;
    }
  }

  private async addToLibrary(): Promise<void> {
    const id = this.outputId;
    if (!id || !this.engine) return;
    this.busy = true;
    try {
      const record = await this.engine.api.addOutputToLibrary(
        newRunId(),
        id,
        this.name.trim() || 'merged-model',
      );
      this.message = `Added to the library as ${record.name}.`;
      this.dispatchEvent(new CustomEvent('library-changed', { bubbles: true, composed: true }));
    } catch (e) {
      this.message = (e as Error).message;
    } finally {
      this.busy = false;
    }
  }

  private async deleteOutput(id: string): Promise<void> {
    if (!this.engine) return;
    await this.engine.api.deleteOutput(id);
    if (id === this.outputId) this.select(undefined);
    this.dispatchEvent(new CustomEvent('outputs-changed', { bubbles: true, composed: true }));
  }

  private select(id: string | undefined): void {
    this.dispatchEvent(new CustomEvent('output-select', { detail: id, bubbles: true, composed: true }));
  }

  private renderSelected() {
    const canPick = 'showDirectoryPicker' in window;
    return html`
      <table data-testid="output-files" data-output-id=${this.linksFor ?? ''}>
        ${this.links.map(
          ({ file, url }) => html`<tr>
            <td><a data-testid="download-file" href=${url} download=${file.name}>${file.name}</a></td>
            <td>${formatBytes(file.size)}</td>
          </tr>`,
        )}
      </table>
      <p>
        ${canPick ? html`<button data-testid="save-folder" ?disabled=${this.busy} @click=${this.saveFolder}>Save folder…</button>` : ''}
        <input
          type="text"
          data-testid="output-name"
          .value=${this.name}
          @input=${(e: Event) => {
            this.name = (e.target as HTMLInputElement).value;
          }}
        />
        <button data-testid="add-to-library" ?disabled=${this.busy} @click=${this.addToLibrary}>Add to library</button>
        <button ?disabled=${this.busy} @click=${() => this.deleteOutput(this.outputId!)}>Delete output</button>
      </p>
    `;
  }

  override render() {
    const earlier = this.outputs.filter((o) => o.id !== this.outputId);
    if (!this.outputId && earlier.length === 0) return html``;
    return html`
      <section>
        <h2>Merged model</h2>
        ${this.outputId ? this.renderSelected() : html`<p class="hint">Pick an earlier merge to download it.</p>`}
        ${this.message ? html`<p data-testid="output-message">${this.message}</p>` : ''}
        ${
          earlier.length
            ? html`<h3>Earlier merges in browser storage</h3>
                <ul>
                  ${earlier.map(
                    (o) => html`<li data-testid="earlier-output">
                      ${new Date(o.createdAt).toLocaleString()}: ${o.files.length} files,
                      ${formatBytes(o.files.reduce((sum, f) => sum + f.size, 0))}
                      <button @click=${() => this.select(o.id)}>Show</button>
                      <button @click=${() => this.deleteOutput(o.id)}>Delete</button>
                    </li>`,
                  )}
                </ul>`
            : ''
        }
      </section>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-output-panel': L2sOutputPanel;
  }
}
