/**
 * <l2s-output-panel>: the merged files of the last run. Each file is a download link backed by an
 * object URL (revoked when the output is replaced or the panel goes away); "Download all" saves one
 * zip (zip-download.ts says how it streams); "Save to a folder" writes them into a new subfolder of a
 * folder the user picks, under temporary names renamed at the end (folder-output.ts), so a failure
 * leaves nothing half-written (a merge can also write straight into a folder: the run panel's "Write
 * output to"); "Add to library" keeps the merge as a model for further merges. Earlier outputs are listed
 * with their method, models, date and size; deleting one asks first.
 */
import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { formatBytes } from '../formats/size';
import { DEFAULT_HUB_URL, hubUrlWarning } from '../store/hub-fetch';
import { type HubUploadProgress, pushToHub } from '../store/hub-upload';
import { type Engine, newRunId } from '../worker/client';
import { createFolderOutput, freeFolderName } from '../worker/folder-output';
import { type OutputInfo, outputFiles } from '../worker/opfs-output';
import { canPickDirectory, pickDirectory } from './directory-picker';
import { panelStyles } from './panel-styles';
import { saveZip } from './zip-download';

@customElement('l2s-output-panel')
export class L2sOutputPanel extends LitElement {
  static override styles = [
    panelStyles,
    css`
      td.file,
      .models {
        overflow-wrap: anywhere;
      }
      .row {
        display: flex;
        gap: 6px;
        flex-wrap: wrap;
        align-items: center;
      }
      input[type='text'] {
        max-width: 100%;
        box-sizing: border-box;
      }
      li {
        margin: 4px 0;
      }
      fieldset {
        border: 1px solid #e0e4ec;
        border-radius: 6px;
        min-width: 0;
      }
      .row label {
        margin: 0;
      }
      .warning {
        background: #fff4d6;
        border: 1px solid #e0b341;
        border-radius: 6px;
        padding: 6px 8px;
        color: #5a4300;
      }
    `,
  ];

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
  /** The output whose Delete was pressed once: it asks to confirm. */
  @state() private confirming?: string;
  /** Where "Push to the hub" sends the output (the page's hub, `?hub=`). */
  @property() hubUrl = DEFAULT_HUB_URL;
  @state() private pushRepo = '';
  /** Kept only in this component's memory: never stored or logged. */
  @state() private pushToken = '';
  @state() private pushPrivate = true;
  /** For a hub other than huggingface.co: the user ticked that it may have the token. */
  @state() private pushConsent = false;
  @state() private pushState: 'idle' | 'running' | 'done' | 'error' = 'idle';
  @state() private pushMessage = '';
  @state() private pushFiles = new Map<string, { state: string; progress: number }>();
  private pushAbort?: AbortController;

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

  /** Copies the output's files into a new subfolder (named after the output) of a folder the user picks. */
  private async saveFolder(): Promise<void> {
    const files = this.links.map((l) => l.file);
    const id = this.outputId;
    if (files.length === 0 || id === undefined) return;
    let parent: FileSystemDirectoryHandle | undefined;
    try {
      parent = await pickDirectory('merge-output', 'readwrite');
    } catch (e) {
      this.message = `Cannot open that folder: ${(e as Error).message}`;
      return;
    }
    if (!parent) return; // the user closed the picker
    this.busy = true;
    let output: Awaited<ReturnType<typeof createFolderOutput>> | undefined;
    try {
      const name = await freeFolderName(parent, id);
      output = await createFolderOutput({ parent, name });
      for (const file of files) {
        const sink = await output.createFile(file.name);
        const reader = file.stream().getReader();
        for (let r = await reader.read(); !r.done; r = await reader.read()) await sink.write(r.value);
        await sink.close();
      }
      await output.commit();
      this.message = `Saved ${files.length} files to the folder ${parent.name}/${name}.`;
    } catch (e) {
      await output?.abort().catch(() => undefined);
      this.message = `Saving to the folder failed (nothing was left in it): ${(e as Error).message}`;
    } finally {
      this.busy = false;
    }
  }

  private async downloadAll(): Promise<void> {
    const files = this.links.map((l) => l.file);
    if (files.length === 0) return;
    const zipName = `${this.name.trim() || 'merged-model'}.zip`;
    this.busy = true;
    try {
      const saved = await saveZip(files, zipName);
      if (saved.saved) {
        this.message =
          saved.route === 'stream-to-file'
            ? `Saved ${zipName} (${formatBytes(saved.bytes)}), streamed into the file you chose.`
            : `Downloading ${zipName} (${formatBytes(saved.bytes)}).`;
      }
    } catch (e) {
      this.message = `Download all failed: ${(e as Error).message}`;
    } finally {
      this.busy = false;
    }
  }

  private async push(e: Event): Promise<void> {
    e.preventDefault();
    if (this.pushState === 'running') return;
    const files = this.links.map((l) => l.file);
    const repo = this.pushRepo.trim();
    if (hubUrlWarning(this.hubUrl) && !this.pushConsent) {
      this.pushState = 'error';
      this.pushMessage = `The token was not sent: tick "Send my token to ${this.hubUrl}" if you trust that server.`;
      return;
    }
    this.pushState = 'running';
    this.pushMessage = `Pushing ${files.length} files to ${repo}…`;
    this.pushFiles = new Map();
    const abort = new AbortController();
    this.pushAbort = abort;
    try {
      const result = await pushToHub({
        repo,
        accessToken: this.pushToken,
        hubUrl: this.hubUrl,
        files,
        private: this.pushPrivate,
        signal: abort.signal,
        onProgress: (p: HubUploadProgress) => {
          if (!p.file) return;
          const next = new Map(this.pushFiles);
          next.set(p.file.path, { state: p.file.state, progress: p.file.progress });
          this.pushFiles = next;
        },
      });
      this.pushState = 'done';
      this.pushMessage = `${result.created ? 'Created' : 'Updated'} ${repo}: ${result.repoUrl}`;
    } catch (error) {
      const err = error as Error;
      this.pushState = err.name === 'AbortError' ? 'idle' : 'error';
      this.pushMessage =
        err.name === 'AbortError' ? 'Push cancelled; the repo was not changed.' : err.message;
    } finally {
      this.pushAbort = undefined;
    }
  }

  private renderPushWarning() {
    const warning = hubUrlWarning(this.hubUrl);
    if (!warning) return nothing;
    return html`<p class="warning" data-testid="push-hub-warning">${warning}</p>
      <label
        ><input
          type="checkbox"
          data-testid="push-consent"
          .checked=${this.pushConsent}
          @change=${(e: Event) => {
            this.pushConsent = (e.target as HTMLInputElement).checked;
          }}
        />
        Send my token to ${this.hubUrl}</label
      >`;
  }

  private renderPush() {
    const running = this.pushState === 'running';
    return html`<form @submit=${this.push}>
      <fieldset>
        <legend>Push to the hub</legend>
        <div class="row">
          <label
            >Repo
            <input
              type="text"
              data-testid="push-repo"
              placeholder="you/merged-model"
              .value=${this.pushRepo}
              @input=${(e: Event) => {
                this.pushRepo = (e.target as HTMLInputElement).value;
              }}
          /></label>
          <label
            >Write token
            <input
              type="password"
              autocomplete="off"
              data-testid="push-token"
              .value=${this.pushToken}
              @input=${(e: Event) => {
                this.pushToken = (e.target as HTMLInputElement).value;
              }}
          /></label>
          <label
            ><input
              type="checkbox"
              data-testid="push-private"
              .checked=${this.pushPrivate}
              @change=${(e: Event) => {
                this.pushPrivate = (e.target as HTMLInputElement).checked;
              }}
            />
            private (a new repo)</label
          >
          <button type="submit" data-testid="push-run" ?disabled=${running || !this.pushRepo.trim() || !this.pushToken}>
            Push
          </button>
          ${running ? html`<button type="button" data-testid="push-cancel" @click=${() => this.pushAbort?.abort()}>Cancel</button>` : nothing}
        </div>
        ${this.renderPushWarning()}
        <div class="hint">
          Creates the model repo (or adds a commit to it) on ${this.hubUrl} with every file above, the model card and
          mergekit_config.yml included. The token goes to that hub only and stays in this tab's memory.
        </div>
        ${
          this.pushFiles.size
            ? html`<table class="files" data-testid="push-files">
                ${[...this.pushFiles].map(
                  ([path, p]) => html`<tr>
                    <td class="file">${path}</td>
                    <td>${p.state}</td>
                    <td><progress aria-label=${`${path}: ${p.state}`} max="1" .value=${p.progress}></progress></td>
                  </tr>`,
                )}
              </table>`
            : nothing
        }
        <p
          role="status"
          data-testid="push-status"
          data-state=${this.pushState}
          class=${this.pushState === 'error' ? 'error' : ''}
        >${this.pushMessage}</p>
      </fieldset>
    </form>`;
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
    this.confirming = undefined;
    if (!this.engine) return;
    await this.engine.api.deleteOutput(id);
    if (id === this.outputId) this.select(undefined);
    this.dispatchEvent(new CustomEvent('outputs-changed', { bubbles: true, composed: true }));
  }

  private select(id: string | undefined): void {
    this.dispatchEvent(new CustomEvent('output-select', { detail: id, bubbles: true, composed: true }));
  }

  /** Delete, then Delete/Keep in its place. */
  private deleteControl(id: string, what: string, bytes: number) {
    if (this.confirming !== id) {
      return html`<button
        data-testid="output-delete"
        aria-label=${id === this.outputId ? nothing : `Delete ${what}`}
        ?disabled=${this.busy}
        @click=${() => {
          this.confirming = id;
        }}
      >
        Delete${id === this.outputId ? ' output' : ''}
      </button>`;
    }
    return html`<span class="row" role="group" aria-label=${`Delete ${what}?`}>
      Delete ${formatBytes(bytes)} for good?
      <button data-testid="output-delete-confirm" @click=${() => this.deleteOutput(id)}>Delete</button>
      <button
        data-testid="output-delete-keep"
        @click=${() => {
          this.confirming = undefined;
        }}
      >
        Keep
      </button>
    </span>`;
  }

  private renderSelected() {
    const canPick = canPickDirectory();
    const id = this.outputId!;
    const bytes = this.links.reduce((sum, l) => sum + l.file.size, 0);
    return html`
      <table data-testid="output-files" data-output-id=${this.linksFor ?? ''}>
        ${this.links.map(
          ({ file, url }) => html`<tr>
            <td class="file"><a data-testid="download-file" href=${url} download=${file.name}>${file.name}</a></td>
            <td>${formatBytes(file.size)}</td>
          </tr>`,
        )}
      </table>
      <p class="row">
        <button data-testid="download-zip" ?disabled=${this.busy || this.links.length === 0} @click=${this.downloadAll}>
          Download all (.zip, ${formatBytes(bytes)})
        </button>
        ${canPick ? html`<button data-testid="save-folder" ?disabled=${this.busy || this.links.length === 0} @click=${this.saveFolder}>Save to a folder…</button>` : ''}
      </p>
      <p class="row">
        <label
          >Name
          <input
            type="text"
            data-testid="output-name"
            .value=${this.name}
            @input=${(e: Event) => {
              this.name = (e.target as HTMLInputElement).value;
            }}
        /></label>
        <button data-testid="add-to-library" ?disabled=${this.busy} @click=${this.addToLibrary}>Add to library</button>
        ${this.deleteControl(id, 'this output', bytes)}
      </p>
      ${this.renderPush()}
    `;
  }

  override render() {
    const earlier = this.outputs.filter((o) => o.id !== this.outputId);
    if (!this.outputId && earlier.length === 0) return html``;
    return html`
      <section>
        <h2>Merged model</h2>
        ${this.outputId ? this.renderSelected() : html`<p class="hint">Pick an earlier merge to download it.</p>`}
        ${this.message ? html`<p role="status" data-testid="output-message">${this.message}</p>` : ''}
        ${
          earlier.length
            ? html`<h3>Earlier merges in browser storage</h3>
                <ul>
                  ${earlier.map((o) => {
                    const bytes = o.files.reduce((sum, f) => sum + f.size, 0);
                    const when = new Date(o.createdAt).toLocaleString();
                    return html`<li data-testid="earlier-output" data-output-id=${o.id}>
                      <strong data-testid="earlier-output-method">${o.recipe?.method ?? 'merge'}</strong>
                      of <span class="models" data-testid="earlier-output-models">${o.recipe?.models.join(', ') ?? '(recipe not found)'}</span>,
                      ${when}: ${o.files.length} files,
                      <span data-testid="earlier-output-size">${formatBytes(bytes)}</span>
                      <span class="row">
                        <button aria-label=${`Show the merge of ${when}`} @click=${() => this.select(o.id)}>Show</button>
                        ${this.deleteControl(o.id, `the merge of ${when}`, bytes)}
                      </span>
                    </li>`;
                  })}
                </ul>`
            : nothing
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
