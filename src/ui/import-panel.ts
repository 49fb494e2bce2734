/**
 * <l2s-import-panel>: brings models into the library from a local folder (picker or drag and drop)
 * or from the Hugging Face hub, with per-file progress; lists hub downloads that can be resumed.
 * Where the browser has the File System Access API a folder can be linked instead (read in place,
 * nothing copied): "Link a folder…", or a drop while "Link dropped folders" is ticked. Elsewhere
 * folders are copied into browser storage as before.
 *
 * A hub other than huggingface.co (a `?hub=` in the address, or the Hub URL field) is shown with a
 * warning, and an access token goes to it only after the user ticks that they trust it; over plain
 * HTTP (other than to localhost) a token is never sent.
 */
import { css, html, LitElement } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { formatBytes } from '../formats/size';
import { DEFAULT_HUB_URL, hubUrlWarning, tokenRefusal } from '../store/hub-fetch';
import { type FolderFile, filesFromDirectoryInput, type ImportProgress } from '../store/import-folder';
import type { PendingImport } from '../store/library';
import { callback, type Engine, newRunId } from '../worker/client';
import { canPickDirectory, pickDirectory } from './directory-picker';
import { panelStyles } from './panel-styles';

/** DataTransferItem.getAsFileSystemHandle (Chromium); the DOM typings do not have it yet. */
interface HandleItem {
  getAsFileSystemHandle?(): Promise<FileSystemHandle | null>;
}

type ImportState = 'idle' | 'running' | 'done' | 'error';

/** The files directly inside a dropped folder (a model's files are at its top level). */
async function filesOfDroppedFolder(entry: FileSystemDirectoryEntry): Promise<FolderFile[]> {
  const reader = entry.createReader();
  const entries: FileSystemEntry[] = [];
  // readEntries returns at most ~100 entries per call; an empty batch means the end.
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((resolve, reject) =>
      reader.readEntries(resolve, reject),
    );
    if (batch.length === 0) break;
    entries.push(...batch);
  }
  const files: FolderFile[] = [];
  for (const e of entries) {
    if (!e.isFile) continue;
    const file = await new Promise<File>((resolve, reject) =>
      (e as FileSystemFileEntry).file(resolve, reject),
    );
    files.push({ name: e.name, blob: file });
  }
  return files;
}

@customElement('l2s-import-panel')
export class L2sImportPanel extends LitElement {
  static override styles = [
    panelStyles,
    css`
      .drop {
        border: 2px dashed #b8c0d0;
        border-radius: 8px;
        padding: 10px;
        text-align: center;
        margin: 6px 0;
      }
      .drop.over {
        border-color: #3163d8;
        background: #eef3ff;
      }
      fieldset {
        border: 1px solid #e0e4ec;
        border-radius: 6px;
        margin: 8px 0;
      }
      .row {
        display: flex;
        gap: 6px;
        flex-wrap: wrap;
        align-items: center;
      }
      .files {
        font-size: 12px;
        font-variant-numeric: tabular-nums;
      }
      .files .name {
        overflow-wrap: anywhere;
      }
      input {
        max-width: 100%;
        box-sizing: border-box;
      }
      fieldset {
        min-width: 0;
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
  @property({ attribute: false }) pending: PendingImport[] = [];
  @property() hubUrl = DEFAULT_HUB_URL;
  @state() private state: ImportState = 'idle';
  @state() private message = '';
  @state() private dragOver = false;
  @state() private repo = '';
  @state() private revision = 'main';
  /** Kept only in this component's memory: never stored or logged. */
  @state() private accessToken = '';
  /** The user said the hub at `hubUrl` (not the default one) may have the token; reset when it changes. */
  @state() private tokenConsent = false;
  /** Per-file progress of the import under way. */
  @state() private fileProgress = new Map<string, { done: number; size: number }>();
  @state() private total = { done: 0, size: 0 };
  /** Dropped folders are linked (read in place) rather than copied, where the browser can. */
  @state() private linkDropped = true;
  private readonly canLink = canPickDirectory();
  private runId?: string;

  private changed(): void {
    this.dispatchEvent(new CustomEvent('library-changed', { bubbles: true, composed: true }));
  }

  private onProgress = (p: ImportProgress): void => {
    const next = new Map(this.fileProgress);
    next.set(p.file, { done: p.fileBytesDone, size: p.fileBytes });
    this.fileProgress = next;
    this.total = { done: p.bytesDone, size: p.bytesTotal };
  };

  private async run(label: string, work: (runId: string) => Promise<{ name: string }>): Promise<void> {
    if (this.state === 'running') return;
    this.state = 'running';
    this.message = label;
    this.fileProgress = new Map();
    this.total = { done: 0, size: 0 };
    this.runId = newRunId();
    try {
      const record = await work(this.runId);
      this.state = 'done';
      this.message = `Imported ${record.name}.`;
    } catch (e) {
      const error = e as Error;
      this.state = error.name === 'AbortError' ? 'idle' : 'error';
      this.message = error.name === 'AbortError' ? 'Import cancelled.' : error.message;
    } finally {
      this.runId = undefined;
      this.changed();
    }
  }

  private importFiles(folder: string, files: FolderFile[]): Promise<void> {
    const engine = this.engine;
    if (!engine) return Promise.resolve();
    return this.run(`Importing ${folder}…`, (runId) =>
      engine.api.importFolder(runId, folder, files, callback(this.onProgress)),
    );
  }

  private async onFolderChosen(e: Event): Promise<void> {
    const input = e.target as HTMLInputElement;
    const chosen = [...(input.files ?? [])];
    input.value = '';
    try {
      const { folder, files } = filesFromDirectoryInput(chosen);
      await this.importFiles(folder, files);
    } catch (error) {
      this.state = 'error';
      this.message = (error as Error).message;
    }
  }

  private async link(handles: FileSystemDirectoryHandle[]): Promise<void> {
    const engine = this.engine;
    if (!engine || this.state === 'running') return;
    this.state = 'running';
    this.fileProgress = new Map();
    const linked: string[] = [];
    try {
      for (const handle of handles) {
        this.message = `Linking ${handle.name}…`;
        linked.push((await engine.api.linkFolder(handle)).name);
      }
      this.state = 'done';
      this.message = `Linked ${linked.join(', ')}: read in place from your folder, nothing copied into browser storage.`;
    } catch (e) {
      this.state = 'error';
      this.message = (e as Error).message;
    } finally {
      this.changed();
    }
  }

  private async linkChosen(): Promise<void> {
    try {
      const handle = await pickDirectory('link-model', 'read');
      if (handle) await this.link([handle]);
    } catch (e) {
      this.state = 'error';
      this.message = (e as Error).message;
    }
  }

  private async onDrop(e: DragEvent): Promise<void> {
    e.preventDefault();
    this.dragOver = false;
    const items = [...(e.dataTransfer?.items ?? [])] as (DataTransferItem & HandleItem)[];
    if (
      this.canLink &&
      this.linkDropped &&
      items.every((i) => typeof i.getAsFileSystemHandle === 'function')
    ) {
      // Every handle is asked for before the first await: the items go stale once the event ends.
      const handles = (await Promise.all(items.map((i) => i.getAsFileSystemHandle?.()))).filter(
        (h): h is FileSystemDirectoryHandle => h?.kind === 'directory',
      );
      if (handles.length === 0) {
        this.state = 'error';
        this.message = 'Drop a model folder (the folder itself, holding config.json and *.safetensors).';
        return;
      }
      await this.link(handles);
      return;
    }
    const entries = [...(e.dataTransfer?.items ?? [])]
      .map((item) => item.webkitGetAsEntry())
      .filter((x): x is FileSystemEntry => x !== null);
    const folders = entries.filter((x): x is FileSystemDirectoryEntry => x.isDirectory);
    if (folders.length === 0) {
      this.state = 'error';
      this.message = 'Drop a model folder (the folder itself, holding config.json and *.safetensors).';
      return;
    }
    for (const folder of folders) await this.importFiles(folder.name, await filesOfDroppedFolder(folder));
  }

  protected override willUpdate(changed: Map<PropertyKey, unknown>): void {
    if (changed.has('hubUrl')) this.tokenConsent = false;
  }

  private hubOrigin(): string {
    try {
      return new URL(this.hubUrl).origin;
    } catch {
      return this.hubUrl;
    }
  }

  /** Why the token may not go out now, or undefined; checked before any request carries it. */
  private tokenBlocked(): string | undefined {
    if (!this.accessToken) return undefined;
    const refusal = tokenRefusal(this.hubUrl);
    if (refusal)
      return `The access token was not sent: ${refusal}. Clear the token to download public models from it.`;
    if (this.hubOrigin() !== DEFAULT_HUB_URL && !this.tokenConsent) {
      return (
        `The access token was not sent: this page is set to use the hub at ${this.hubOrigin()}, not ${DEFAULT_HUB_URL}. ` +
        `Tick "Send my access token to ${this.hubOrigin()}" if you trust that server, or clear the token.`
      );
    }
    return undefined;
  }

  private refuseToken(why: string): Promise<void> {
    this.state = 'error';
    this.message = why;
    return Promise.resolve();
  }

  /**
   * The access token a merge streaming from the hub may send, under the same rules as a download:
   * undefined when none was entered or when it may not go to this hub (the panel says why).
   */
  streamAccessToken(): string | undefined {
    const blocked = this.tokenBlocked();
    if (blocked) {
      this.state = 'error';
      this.message = blocked;
      return undefined;
    }
    return this.accessToken || undefined;
  }

  /** Downloads `repo` (a recipe named it and the library lacks it); the panel shows the progress. */
  downloadFromHub(repo: string): Promise<void> {
    this.repo = repo;
    this.scrollIntoView({ block: 'nearest' });
    return this.importHub();
  }

  private importHub(e?: Event): Promise<void> {
    e?.preventDefault();
    const engine = this.engine;
    const repo = this.repo.trim();
    if (!engine || !repo) return Promise.resolve();
    const blocked = this.tokenBlocked();
    if (blocked) return this.refuseToken(blocked);
    return this.run(`Downloading ${repo}…`, (runId) =>
      engine.api.importHub(
        runId,
        {
          repo,
          revision: this.revision.trim() || 'main',
          hubUrl: this.hubUrl,
          accessToken: this.accessToken || undefined,
        },
        callback(this.onProgress),
      ),
    );
  }

  private resume(p: PendingImport): Promise<void> {
    const engine = this.engine;
    if (!engine) return Promise.resolve();
    const blocked = this.tokenBlocked();
    if (blocked) return this.refuseToken(blocked);
    return this.run(`Resuming ${p.name}…`, (runId) =>
      engine.api.resumeHub(
        runId,
        p.id,
        { hubUrl: this.hubUrl, accessToken: this.accessToken || undefined },
        callback(this.onProgress),
      ),
    );
  }

  private async discard(p: PendingImport): Promise<void> {
    await this.engine?.api.discardImport(p.id);
    this.changed();
  }

  private cancel(): void {
    if (this.runId) void this.engine?.api.cancel(this.runId);
  }

  private renderProgress() {
    if (this.state !== 'running' || this.fileProgress.size === 0) return '';
    return html`
      <progress
        data-testid="import-progress"
        aria-label="Import progress"
        max=${this.total.size}
        .value=${this.total.done}
      ></progress>
      <table class="files">
        ${[...this.fileProgress].map(
          ([name, p]) => html`<tr>
            <td class="name">${name}</td>
            <td>${formatBytes(p.done)} / ${formatBytes(p.size)}</td>
            <td><progress aria-label=${`${name} downloaded`} max=${p.size} .value=${p.done}></progress></td>
          </tr>`,
        )}
      </table>
    `;
  }

  private renderHubWarning() {
    const warning = hubUrlWarning(this.hubUrl);
    if (!warning) return '';
    const consentPossible = !tokenRefusal(this.hubUrl);
    return html`<div class="warning" data-testid="hub-warning" role="alert">
      ${warning}
      ${
        consentPossible
          ? html`<label
              ><input
                type="checkbox"
                data-testid="hub-token-consent"
                .checked=${this.tokenConsent}
                @change=${(e: Event) => {
                  this.tokenConsent = (e.target as HTMLInputElement).checked;
                }}
              />
              Send my access token to ${this.hubOrigin()}</label
            >`
          : ''
      }
    </div>`;
  }

  override render() {
    const running = this.state === 'running';
    return html`
      <section>
        <h2>Import</h2>
        <div
          class="drop ${this.dragOver ? 'over' : ''}"
          @dragover=${(e: DragEvent) => {
            e.preventDefault();
            this.dragOver = true;
          }}
          @dragleave=${() => {
            this.dragOver = false;
          }}
          @drop=${this.onDrop}
        >
          Drop a model folder here, or
          <label
            >choose one:
            <input
              type="file"
              webkitdirectory
              data-testid="import-folder"
              ?disabled=${running}
              @change=${this.onFolderChosen}
          /></label>
          <div class="hint">Kept: config.json, *.safetensors and their index, tokenizer files, generation_config.json.</div>
          ${
            this.canLink
              ? html`<div class="row">
                  <button data-testid="link-folder" ?disabled=${running} @click=${this.linkChosen}>Link a folder…</button>
                  <label
                    ><input
                      type="checkbox"
                      data-testid="link-dropped"
                      .checked=${this.linkDropped}
                      @change=${(e: Event) => {
                        this.linkDropped = (e.target as HTMLInputElement).checked;
                      }}
                    />
                    Link dropped folders instead of copying</label
                  >
                </div>
                <div class="hint">
                  A linked folder is read in place: nothing is copied into browser storage, and the browser asks
                  again for permission to read it after a reload. Choosing a folder above copies it.
                </div>`
              : ''
          }
        </div>
        <form @submit=${this.importHub}>
          <fieldset>
            <legend>From the Hugging Face hub</legend>
            ${this.renderHubWarning()}
            <div class="row">
              <input
                type="text"
                data-testid="hub-repo"
                aria-label="Hub repo id"
                placeholder="owner/model, e.g. Qwen/Qwen2.5-Math-1.5B"
                size="36"
                .value=${this.repo}
                @input=${(e: Event) => {
                  this.repo = (e.target as HTMLInputElement).value;
                }}
              />
              <input
                type="text"
                data-testid="hub-revision"
                aria-label="Revision"
                size="8"
                title="Revision: branch, tag or commit"
                .value=${this.revision}
                @input=${(e: Event) => {
                  this.revision = (e.target as HTMLInputElement).value;
                }}
              />
              <button type="submit" data-testid="hub-import" ?disabled=${running}>Download</button>
            </div>
            <label
              >Access token (gated repos; kept in this tab's memory only):
              <input
                type="password"
                data-testid="hub-token"
                autocomplete="off"
                .value=${this.accessToken}
                @input=${(e: Event) => {
                  this.accessToken = (e.target as HTMLInputElement).value;
                }}
            /></label>
            <label
              >Hub URL:
              <input
                type="url"
                data-testid="hub-url"
                size="30"
                .value=${this.hubUrl}
                @change=${(e: Event) => {
                  this.hubUrl = (e.target as HTMLInputElement).value.replace(/\/+$/, '');
                }}
            /></label>
          </fieldset>
        </form>
        ${
          this.pending.length
            ? html`<h3>Unfinished downloads</h3>
              <ul>
                ${this.pending.map((p) => {
                  const done = p.files.reduce((s, f) => s + f.bytesDone, 0);
                  const size = p.files.reduce((s, f) => s + f.size, 0);
                  return html`<li data-testid="pending-import" data-name=${p.name}>
                    ${p.name}: ${formatBytes(done)} of ${formatBytes(size)}
                    ${
                      p.resumable
                        ? html`<button data-testid="hub-resume" ?disabled=${running} @click=${() => this.resume(p)}>Resume</button>`
                        : ''
                    }
                    <button ?disabled=${running} @click=${() => this.discard(p)}>Discard</button>
                  </li>`;
                })}
              </ul>`
            : ''
        }
        <p role="status" data-testid="import-status" data-state=${this.state} class=${this.state === 'error' ? 'error' : ''}>${this.message}${
          running ? html` <button data-testid="import-cancel" @click=${this.cancel}>Cancel</button>` : ''
        }</p>
        ${this.renderProgress()}
      </section>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-import-panel': L2sImportPanel;
  }
}
