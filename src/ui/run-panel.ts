/**
 * <l2s-run-panel>: runs the recipe in an engine worker of its own, shows progress (input bytes read,
 * which moves inside a large tensor; tensors; throughput and time left smoothed over the last
 * seconds; the tensor and backend at work), and offers Cancel, which terminates that worker at once
 * and then removes what it left from the page's main engine. Errors name the file and tensor, as the
 * engine words them. Merges cut short by a reload or a crash are offered for resumption (from the
 * last finished tensor) or discarding; a merge running in another tab is shown, never offered.
 * Where the browser has the File System Access API the output can go straight into a folder the
 * user picks ("Write output to"): a new subfolder per run, never over an earlier one. Such a run
 * resumes after a reload into its temporary files there (permission to write the folder is asked
 * again on Resume); if those files are gone or changed it is offered to start again, its partial
 * files removed first. Its finished output has no copy in browser storage, so instead of "Add to library" the panel offers to
 * link the new subfolder as a model read in place (the panel still holds the picked folder's handle,
 * so the user is not asked for the folder again).
 */
import { css, html, LitElement, nothing } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { live } from 'lit/directives/live.js';
import { placementSummary } from '../engine/placement';
import { formatBytes, parseByteSize } from '../formats/size';
import { parseRecipe } from '../recipe';
import type { ModelRecord } from '../store/library';
import { requestFolderPermission } from '../store/linked-folder';
import type { BackendChoice } from '../worker/backend';
import { callback, type Engine, newRunId, startEngine } from '../worker/client';
import type {
  EngineOptions,
  InterruptedRun,
  MergeCheck,
  MergeOutcome,
  MergeProgressEvent,
  MergeRequest,
} from '../worker/engine.worker';
import { type FolderOutputTarget, freeFolderName } from '../worker/folder-output';
import { canPickDirectory, pickDirectory } from './directory-picker';
import { announceLibraryChanged, askToReadLinkedModels } from './linked-permission';
import { panelStyles } from './panel-styles';
import { loadUiState, saveUiState } from './ui-state';

type RunState = 'idle' | 'running' | 'cancelling' | 'done' | 'error';

/** Cancel reached a merge into a folder after its commit: the finished output stays in `folder`. */
class FinishedBeforeCancel extends Error {
  override name = 'FinishedBeforeCancel';
  constructor(
    /** Where the committed output is: a folder `parent/name` on this computer, or browser storage. */
    readonly kept: { folder: string } | { outputId: string },
    /** Streamed repos whose library copy was still being completed, and was removed. */
    readonly copiesCancelled: readonly string[],
  ) {
    super('the merge had finished before it was cancelled; its output was kept');
  }

  /** The status line: the output was kept, each copy under way was not. */
  get status(): string {
    const where =
      'folder' in this.kept
        ? `in the folder ${this.kept.folder} on this computer`
        : "in this browser's storage";
    return (
      `Cancel came too late: the merge had already finished, and its output was kept ${where}.` +
      this.copiesCancelled
        .map(
          (repo) =>
            ` Keeping a copy of ${repo} in the library was cancelled; nothing was added to the library.`,
        )
        .join('')
    );
  }
}

/** The finished output folder could not be linked in the library. */
class OutputLinkError extends Error {
  override name = 'OutputLinkError';
}

/** What the page found of WebGPU (the worker's gpuStatus). */
export interface GpuStatus {
  available: boolean;
  adapter?: string;
  /** Set when auto merges on the CPU because the adapter is a software renderer: why. */
  software?: string;
}

interface RunSettings {
  seed: number;
  device: BackendChoice;
  /** CPU kernel threads (absent in settings saved before there was a choice: auto). */
  cpuThreads?: CpuThreadsSetting;
  shardSize: string;
  gpuMemory?: string;
  /** "Write output to": browser storage (OPFS) or a folder on this computer. */
  outputTo?: 'browser' | 'folder';
  /** The folder picked for outputs (IndexedDB keeps the handle; permission is asked again). */
  outputParent?: FileSystemDirectoryHandle;
  /** The subfolder each run creates (`-2`, `-3`, ... when taken). */
  outputName?: string;
}

type CpuThreadsSetting = 'auto' | 1 | 2;

const SETTINGS_KEY = 'run-settings';
/** Tabs of this origin tell each other when a merge starts or ends. */
const RUNS_CHANNEL = 'l2s-merge-runs';
/** Throughput is measured over this much recent time, so the ETA follows the current pace. */
const RATE_WINDOW_MS = 5000;

function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '…';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Hub repos the next merge streams (recipe-editor's "Merge straight from the hub"). */
export interface HubStreamSetting {
  hubUrl: string;
  repos: string[];
  /** Repos of `repos` the merge also keeps in the library. */
  keepCopy?: string[];
  /** The token the import panel holds, when it may go to this hub. */
  accessToken: () => string | undefined;
}

/** What became of the streamed repos kept in the library; the merged output never depends on it. */
function copiesSummary(copies: MergeOutcome['copies']): string {
  return (copies ?? [])
    .map((c) =>
      c.name
        ? ` The copy of ${c.repo} is in the library as ${c.name} (every file checked against the hub's hashes).`
        : ` The copy of ${c.repo} was not kept, and the merged output is not affected: ${c.errorName}: ${c.error}`,
    )
    .join('');
}

function recipeMethod(recipeText: string): string {
  return /^merge_method:\s*(\S+)/m.exec(recipeText)?.[1] ?? 'merge';
}

@customElement('l2s-run-panel')
export class L2sRunPanel extends LitElement {
  static override styles = [
    panelStyles,
    css`
      .stats {
        font-variant-numeric: tabular-nums;
        font-size: 13px;
        overflow-wrap: anywhere;
      }
      .row {
        display: flex;
        gap: 10px;
        align-items: center;
        flex-wrap: wrap;
      }
      .row label {
        margin: 0;
      }
      .interrupted,
      .elsewhere {
        border: 1px solid #e0c36a;
        background: #fff8e1;
        border-radius: 4px;
        padding: 6px 10px;
        margin: 8px 0;
      }
      .log {
        font: 12px ui-monospace, monospace;
        color: #4b5567;
        max-height: 6em;
        overflow: auto;
        white-space: pre-wrap;
        overflow-wrap: anywhere;
      }
      button.primary {
        font-size: 15px;
        padding: 6px 18px;
      }
      .problems {
        white-space: pre-line;
        overflow-wrap: anywhere;
      }
      .blocked {
        color: #a4161a;
        font-size: 13px;
        flex: 1 1 14em;
        overflow-wrap: anywhere;
      }
    `,
  ];

  @property({ attribute: false }) engine?: Engine;
  @property() recipeText = '';
  /** Why the recipe cannot be merged as it stands (the recipe editor shows the same); empty if it can. */
  @property() problem = '';
  @property({ attribute: false }) gpu?: GpuStatus;
  /** The library: linked models the recipe reads get their read permission asked for on Merge. */
  @property({ attribute: false }) models: ModelRecord[] = [];
  /** The page's engine settings, given to each merge's worker as to the page's own. */
  @property({ attribute: false }) engineOptions: EngineOptions = {};
  /** Merges cut short by a reload or a crash (the app lists them from the engine's journal). */
  @property({ attribute: false }) interrupted: InterruptedRun[] = [];
  @property({ attribute: false }) hubStream?: HubStreamSetting;
  /** The last header-only Check, shown until the recipe changes. */
  @state() private check?: MergeCheck & { recipeText: string };
  @state() private checking = false;
  @state() private state: RunState = 'idle';
  @state() private message = '';
  @state() private progress?: MergeProgressEvent;
  /** Bytes read per second over the last RATE_WINDOW_MS; NaN until there is a window to measure. */
  @state() private rate = Number.NaN;
  /** Milestones read out by screen readers (25%, 50%, 75%). */
  @state() private announcement = '';
  @state() private log: string[] = [];
  @state() private seed = 0;
  @state() private device: BackendChoice = 'auto';
  @state() private cpuThreads: CpuThreadsSetting = 'auto';
  /** `--out-shard-size` as typed (5B, 500M, bytes); empty for the default. */
  @state() private shardSize = '';
  /** `--gpu-memory` as typed (3B, 500M, bytes); empty for the default from the GPU's limits. */
  @state() private gpuMemory = '';
  @state() private outputTo: 'browser' | 'folder' = 'browser';
  @state() private outputParent?: FileSystemDirectoryHandle;
  @state() private outputName = 'merged-model';
  private readonly canPick = canPickDirectory();
  /** The folder the merge under way writes into, so Cancel can remove what it wrote. */
  private folderUnderWay?: FolderOutputTarget;
  /** The last merge's finished output in a folder, until it is linked in the library. */
  @state() private finishedFolder?: FolderOutputTarget;
  @state() private linking = false;
  /** What became of "Link it in the library". */
  @state() private linkMessage = '';
  @state() private linkFailed = false;
  @state() private backendUsed?: 'cpu' | 'gpu';
  /** Kernel threads the last finished merge's CPU tensors ran on. */
  @state() private cpuThreadsUsed?: number;
  @state() private tensorsOnThreads?: number;
  /** The output the last finished merge wrote (the output panel shows it once loaded). */
  @state() private outputUsed?: string;
  /** Merges started since the page opened; lets observers tell one run's end from the previous one's. */
  @state() private runs = 0;
  /** Merges under way in other tabs of this origin. */
  @state() private elsewhere: string[] = [];
  private runId?: string;
  /** The worker of the merge under way (terminated by Cancel). */
  private runEngine?: Engine;
  /** Ends the merge under way with the outcome of its cancellation. */
  private endRun?: (reason: Error) => void;
  private samples: { at: number; bytes: number }[] = [];
  private milestone = 0;
  private channel?: BroadcastChannel;

  override connectedCallback(): void {
    super.connectedCallback();
    void loadUiState<RunSettings>(SETTINGS_KEY).then((saved) => {
      if (!saved) return;
      this.seed = saved.seed;
      this.device = saved.device;
      this.cpuThreads = saved.cpuThreads ?? 'auto';
      this.shardSize = saved.shardSize;
      this.gpuMemory = saved.gpuMemory ?? '';
      this.outputParent = saved.outputParent;
      this.outputTo =
        saved.outputTo === 'folder' && saved.outputParent && this.canPick ? 'folder' : 'browser';
      this.outputName = saved.outputName || 'merged-model';
    });
    this.channel = new BroadcastChannel(RUNS_CHANNEL);
    this.channel.onmessage = () => {
      void this.checkElsewhere();
      this.dispatchEvent(new CustomEvent('interrupted-changed', { bubbles: true, composed: true }));
    };
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.channel?.close();
  }

  protected override updated(changed: Map<PropertyKey, unknown>): void {
    if (changed.has('engine') && this.engine) void this.checkElsewhere();
  }

  private saveSettings(): void {
    const settings: RunSettings = {
      seed: this.seed,
      device: this.device,
      cpuThreads: this.cpuThreads,
      shardSize: this.shardSize,
      gpuMemory: this.gpuMemory,
      outputTo: this.outputTo,
      outputParent: this.outputParent,
      outputName: this.outputName,
    };
    void saveUiState(SETTINGS_KEY, settings);
  }

  private async checkElsewhere(): Promise<void> {
    if (!this.engine) return;
    const ids = await this.engine.api.runsUnderWay();
    this.elsewhere = ids.filter((id) => id !== this.runId);
  }

  /** Picks the folder outputs go into; keeps the previous choice when the picker is closed. */
  private async pickOutputFolder(): Promise<void> {
    try {
      const picked = await pickDirectory('merge-output', 'readwrite');
      if (picked) this.outputParent = picked;
    } catch (e) {
      this.state = 'error';
      this.message = `${(e as Error).name}: choosing the output folder: ${(e as Error).message}`;
    }
    this.outputTo = this.outputParent ? 'folder' : 'browser';
    this.saveSettings();
  }

  /**
   * The subfolder this run will create: permission to write the picked folder (asked from the
   * Merge click), then the first free name. Undefined (with the reason shown) when it cannot.
   */
  private async outputFolderTarget(): Promise<FolderOutputTarget | undefined> {
    const parent = this.outputParent;
    if (!parent) {
      this.state = 'error';
      this.message = 'Choose the folder the output goes into first ("Write output to").';
      return undefined;
    }
    try {
      if (!(await requestFolderPermission(parent, 'readwrite'))) {
        this.state = 'error';
        this.message = `The browser did not allow writing into ${parent.name}; nothing was merged.`;
        return undefined;
      }
      return { parent, name: await freeFolderName(parent, this.outputName.trim() || 'merged-model') };
    } catch (e) {
      this.state = 'error';
      this.message = `${(e as Error).name}: the output folder ${parent.name}: ${(e as Error).message}`;
      return undefined;
    }
  }

  /**
   * After a reload the browser must be asked again before linked folders may be read; Merge is a
   * click, so it asks here for every linked model the recipe names. False (with the reason shown)
   * when one is refused.
   */
  private async allowLinkedModels(recipeText = this.recipeText): Promise<boolean> {
    let names: Set<string>;
    try {
      const recipe = parseRecipe(recipeText, 'recipe');
      names = new Set(
        [recipe.baseModel, ...recipe.models.map((m) => m.model)].filter((n) => n !== undefined),
      );
    } catch {
      return true; // the merge reports the recipe's error
    }
    const permission = await askToReadLinkedModels(this.models, names, 'merged');
    // The library shows the new permission.
    if (permission.asked) announceLibraryChanged(this);
    if (permission.refusal) {
      this.state = 'error';
      this.message = permission.refusal;
      return false;
    }
    return true;
  }

  private async start(): Promise<void> {
    if (this.problem || this.state === 'running' || this.state === 'cancelling') return;
    if (!(await this.allowLinkedModels())) return;
    let outShardSize: number | undefined;
    try {
      outShardSize = this.shardSize.trim() ? parseByteSize(this.shardSize) : undefined;
    } catch (e) {
      this.state = 'error';
      this.message = `${(e as Error).name}: shard size: ${(e as Error).message}`;
      return Promise.resolve();
    }
    let gpuMemory: number | undefined;
    try {
      gpuMemory = this.gpuMemory.trim() ? parseByteSize(this.gpuMemory) : undefined;
    } catch (e) {
      this.state = 'error';
      this.message = `${(e as Error).name}: GPU memory: ${(e as Error).message}`;
      return Promise.resolve();
    }
    const outputFolder =
      this.canPick && this.outputTo === 'folder' ? await this.outputFolderTarget() : undefined;
    if (this.canPick && this.outputTo === 'folder' && !outputFolder) return;
    const request: MergeRequest = {
      recipeText: this.recipeText,
      seed: this.seed,
      device: this.device,
      cpuThreads: this.cpuThreads,
      outShardSize,
      gpuMemory,
      hubStream: this.streamRequest(),
      outputFolder,
    };
    const label = outputFolder
      ? `Merging into ${outputFolder.parent.name}/${outputFolder.name}…`
      : 'Merging…';
    return this.execute(
      newRunId(),
      label,
      (engine, runId, onProgress, onLog) => engine.api.merge(runId, request, onProgress, onLog),
      outputFolder,
    );
  }

  private streamRequest(): MergeRequest['hubStream'] {
    const hub = this.hubStream;
    if (!hub || hub.repos.length === 0) return undefined;
    return {
      hubUrl: hub.hubUrl,
      repos: hub.repos,
      keepCopy: hub.keepCopy?.filter((r) => hub.repos.includes(r)),
      accessToken: hub.accessToken(),
    };
  }

  /**
   * The validation every merge starts with, on its own: the models' safetensors headers only (Range
   * reads for streamed hub repos), every missing tensor and shape mismatch listed.
   */
  private async runCheck(): Promise<void> {
    if (!this.engine || this.problem || this.checking) return;
    const recipeText = this.recipeText;
    this.checking = true;
    try {
      const result = await this.engine.api.checkMerge(newRunId(), {
        recipeText,
        seed: this.seed,
        device: this.device,
        outShardSize: this.shardSize.trim() ? parseByteSize(this.shardSize) : undefined,
        hubStream: this.streamRequest(),
      });
      this.check = { ...result, recipeText };
    } catch (e) {
      this.check = { ok: false, error: (e as Error).message, errorName: (e as Error).name, recipeText };
    } finally {
      this.checking = false;
    }
  }

  private renderCheck() {
    const check = this.check;
    if (this.checking)
      return html`<p data-testid="merge-check-result" data-state="running">Checking the headers…</p>`;
    if (!check || check.recipeText !== this.recipeText) return nothing;
    if (check.ok) {
      return html`<p data-testid="merge-check-result" data-state="ok">
        Check passed: ${check.tensors} tensors from ${check.models} models
        (${formatBytes(check.inputBytes ?? 0)} to read), from the safetensors headers alone.
      </p>`;
    }
    return html`<p class="error problems" data-testid="merge-check-result" data-state="error">${check.errorName}: ${check.error}</p>`;
  }

  /** An interrupted run into a folder: its partial subfolder removed (asking to write there first). */
  private async discardFolderRun(run: InterruptedRun): Promise<boolean> {
    if (!this.engine || !run.folder) return false;
    try {
      if (!(await requestFolderPermission(run.folder.parent, 'readwrite'))) {
        this.state = 'error';
        this.message = `The browser did not allow writing into ${run.folder.parent.name}, so its partial files stay.`;
        return false;
      }
      await this.engine.api.discardRun(run.runId);
    } catch (e) {
      this.state = 'error';
      this.message = `${(e as Error).name}: ${(e as Error).message}`;
      return false;
    } finally {
      this.dispatchEvent(new CustomEvent('interrupted-changed', { bubbles: true, composed: true }));
    }
    this.message = `The interrupted merge's partial files in ${run.folder.parent.name}/${run.folder.name} were removed.`;
    return true;
  }

  /** "Start again": the interrupted run's recipe back in the editor, its files removed, a new merge. */
  private async restartFolderRun(run: InterruptedRun): Promise<void> {
    this.dispatchEvent(
      new CustomEvent('recipe-restore', { detail: run.recipeText, bubbles: true, composed: true }),
    );
    if (!(await this.discardFolderRun(run))) return;
    this.seed = run.seed;
    this.device = run.device;
    // The recipe reaches `recipeText` through the page on the next update.
    await this.updateComplete;
    await this.start();
  }

  private async resume(run: InterruptedRun): Promise<void> {
    // The resumed run's recipe goes back into the editor, so what is shown is what is merged.
    this.dispatchEvent(
      new CustomEvent('recipe-restore', { detail: run.recipeText, bubbles: true, composed: true }),
    );
    const folder = run.folder;
    const where = folder && `${folder.parent.name}/${folder.name}`;
    // After a reload the browser asks again before the merge may read linked models, and write
    // into the picked folder.
    if (!(await this.allowLinkedModels(run.recipeText))) return;
    if (folder && !(await this.allowWriting(folder.parent, `the merge into ${where} was not resumed`)))
      return;
    return this.execute(
      run.runId,
      folder
        ? `Resuming the merge into ${where} after ${run.tensorsDone} of ${run.tensorsTotal} tensors…`
        : `Resuming after ${run.tensorsDone} of ${run.tensorsTotal} tensors…`,
      (engine, runId, onProgress, onLog) =>
        engine.api.resume(
          runId,
          onProgress,
          onLog,
          run.models.some((m) => m.commit) ? { accessToken: this.hubStream?.accessToken() } : undefined,
        ),
      folder,
    );
  }

  /** Asks to write into `parent` (from a click); false, with `what` said, when refused. */
  private async allowWriting(parent: FileSystemDirectoryHandle, what: string): Promise<boolean> {
    try {
      if (await requestFolderPermission(parent, 'readwrite')) return true;
      this.state = 'error';
      this.message = `The browser did not allow writing into ${parent.name}, so ${what}. Press Resume again and allow it.`;
    } catch (e) {
      this.state = 'error';
      this.message = `${(e as Error).name}: ${(e as Error).message}`;
    }
    return false;
  }

  private async discard(run: InterruptedRun): Promise<void> {
    if (!this.engine || this.state === 'running' || this.state === 'cancelling') return;
    try {
      await this.engine.api.discardRun(run.runId);
      this.message = 'The interrupted merge was discarded.';
    } catch (e) {
      this.state = 'error';
      this.message = `${(e as Error).name}: ${(e as Error).message}`;
    }
    this.dispatchEvent(new CustomEvent('interrupted-changed', { bubbles: true, composed: true }));
  }

  private onProgress(p: MergeProgressEvent): void {
    this.progress = p;
    const now = performance.now();
    this.samples.push({ at: now, bytes: p.inputBytesDone });
    while (this.samples.length > 2 && now - this.samples[1].at > RATE_WINDOW_MS) this.samples.shift();
    const first = this.samples[0];
    const span = now - first.at;
    this.rate = span >= 500 ? ((p.inputBytesDone - first.bytes) / span) * 1000 : Number.NaN;
    const share = p.inputBytesTotal > 0 ? p.inputBytesDone / p.inputBytesTotal : 0;
    const reached = Math.floor(share * 4);
    if (reached > this.milestone && reached < 4) {
      this.milestone = reached;
      this.announcement = `Merge ${reached * 25}% done.`;
    }
  }

  /** One merge (new or resumed) from start to its end, with progress, log and cancel. */
  private async execute(
    runId: string,
    startMessage: string,
    call: (
      engine: Engine,
      runId: string,
      onProgress: (p: MergeProgressEvent) => void,
      onLog: (line: string) => void,
    ) => Promise<MergeOutcome>,
    outputFolder?: FolderOutputTarget,
  ): Promise<void> {
    if (this.state === 'running' || this.state === 'cancelling') return;
    this.folderUnderWay = outputFolder;
    this.finishedFolder = undefined;
    this.linkMessage = '';
    this.state = 'running';
    this.runs++;
    this.message = startMessage;
    this.announcement = '';
    this.progress = undefined;
    this.rate = Number.NaN;
    this.samples = [];
    this.milestone = 0;
    this.log = [];
    this.backendUsed = undefined;
    this.runId = runId;
    const engine = startEngine('l2s-merge-run');
    this.runEngine = engine;
    const ended = new Promise<never>((_, reject) => {
      this.endRun = reject;
    });
    this.dispatchEvent(new CustomEvent('merge-started', { bubbles: true, composed: true }));
    this.channel?.postMessage({ started: runId });
    try {
      const outcome = await Promise.race([
        engine.api.configure(this.engineOptions).then(() =>
          call(
            engine,
            runId,
            callback((p: MergeProgressEvent) => this.onProgress(p)),
            callback((line: string) => {
              this.log = [...this.log, line];
            }),
          ),
        ),
        ended,
      ]);
      this.backendUsed = outcome.backend;
      this.cpuThreadsUsed = outcome.cpuThreads;
      this.tensorsOnThreads = outcome.tensorsOnThreads;
      this.outputUsed = outcome.outputId;
      this.finishedFolder = outcome.folder ? outputFolder : undefined;
      this.state = 'done';
      const threads =
        outcome.backend === 'cpu'
          ? ` (${outcome.cpuThreads === 1 ? '1 thread' : `${outcome.cpuThreads} threads`})`
          : '';
      this.message =
        `Merged ${outcome.tensors} tensors (${formatBytes(outcome.bytesWritten)}) on the ` +
        `${outcome.backend.toUpperCase()}${threads} in ${formatDuration(outcome.elapsedMs)}: ` +
        `${placementSummary(outcome.placement)}.` +
        (outcome.folder ? ` Written to the folder ${outcome.folder} on this computer.` : '') +
        copiesSummary(outcome.copies);
      this.dispatchEvent(new CustomEvent('merge-done', { detail: outcome, bubbles: true, composed: true }));
    } catch (e) {
      const error = e as Error;
      if (error instanceof FinishedBeforeCancel) {
        // The worker stopped after its commit: the finished files are the merge's output.
        this.outputUsed = 'outputId' in error.kept ? error.kept.outputId : '';
        this.finishedFolder = 'folder' in error.kept ? outputFolder : undefined;
        this.state = 'done';
        this.message = error.status;
        if ('outputId' in error.kept) {
          this.dispatchEvent(
            new CustomEvent('output-kept', { detail: error.kept.outputId, bubbles: true, composed: true }),
          );
        }
      } else if (error.name === 'AbortError') {
        this.state = 'idle';
        this.message = 'Merge cancelled; nothing was kept.';
      } else {
        this.state = 'error';
        this.message = `${error.name}: ${error.message}`;
      }
    } finally {
      engine.terminate();
      this.runEngine = undefined;
      this.endRun = undefined;
      this.folderUnderWay = undefined;
      this.runId = undefined;
      this.channel?.postMessage({ ended: runId });
      this.dispatchEvent(new CustomEvent('interrupted-changed', { bubbles: true, composed: true }));
    }
  }

  /**
   * Terminates the merge's worker (the merge stops at once), then removes its partial output and
   * journal record through the page's main engine; "Cancelling…" shows until they are gone.
   */
  private async cancel(): Promise<void> {
    const runId = this.runId;
    const end = this.endRun;
    if (this.state !== 'running' || !runId || !end) return;
    this.state = 'cancelling';
    this.message = 'Cancelling…';
    this.runEngine?.terminate();
    try {
      if (!this.engine) throw new Error('the engine is not ready');
      const { keptFolder, keptOutput, copiesCancelled } = await this.engine.api.removeCancelledRun(
        runId,
        this.folderUnderWay,
      );
      const kept = keptFolder ? { folder: keptFolder } : keptOutput ? { outputId: keptOutput } : undefined;
      end(
        kept
          ? new FinishedBeforeCancel(kept, copiesCancelled)
          : new DOMException('The merge was cancelled.', 'AbortError'),
      );
    } catch (e) {
      end(e as Error);
    }
  }

  /**
   * Links the finished output folder as a model read in place. The handle comes from the picked
   * folder the merge wrote into, so nothing is picked again; reading it needs the permission the
   * merge was given (asked again only where the browser dropped it).
   */
  private async linkOutput(): Promise<void> {
    const target = this.finishedFolder;
    if (!target || !this.engine || this.linking) return;
    const where = `${target.parent.name}/${target.name}`;
    this.linking = true;
    this.linkFailed = false;
    this.linkMessage = `Linking ${where}…`;
    try {
      if (!(await requestFolderPermission(target.parent, 'read'))) {
        throw new OutputLinkError(
          `the browser did not allow reading ${target.parent.name}, so ${where} was not linked. Press "Link it in the library" again and allow it.`,
        );
      }
      let folder: FileSystemDirectoryHandle;
      try {
        folder = await target.parent.getDirectoryHandle(target.name);
      } catch (e) {
        if (e instanceof DOMException && (e.name === 'NotFoundError' || e.name === 'TypeMismatchError')) {
          throw new OutputLinkError(
            `${where} is no longer there (moved, renamed or deleted), so it was not linked. ` +
              'Link the folder where it is now with "Link a folder…".',
          );
        }
        throw e;
      }
      const record = await this.engine.api.linkFolder(folder);
      this.finishedFolder = undefined;
      this.linkMessage =
        `Linked ${where} in the library as ${record.name}: read in place from your folder, ` +
        'nothing copied into browser storage.';
    } catch (e) {
      this.linkFailed = true;
      this.linkMessage = `${(e as Error).name}: ${(e as Error).message}`;
    } finally {
      this.linking = false;
      announceLibraryChanged(this);
    }
  }

  private renderLinkOutput(busy: boolean) {
    const target = this.finishedFolder;
    return html`${
      target && this.state === 'done'
        ? html`<div class="row">
            <button
              data-testid="merge-link-output"
              title="Add the output folder to the library as a linked model (read in place, nothing copied), to merge it again, inspect or compare it"
              ?disabled=${busy || this.linking}
              @click=${this.linkOutput}
            >
              Link it in the library
            </button>
            <span class="hint">The output is only in ${target.parent.name}/${target.name}, not in browser storage.</span>
          </div>`
        : nothing
    }${
      this.linkMessage
        ? html`<p
            role="status"
            data-testid="merge-link-status"
            data-state=${this.linking ? 'linking' : this.linkFailed ? 'error' : 'done'}
            class=${this.linkFailed ? 'error' : ''}
          >${this.linkMessage}</p>`
        : nothing
    }`;
  }

  private renderProgress() {
    const p = this.progress;
    if (!p || (this.state !== 'running' && this.state !== 'cancelling')) return nothing;
    const eta = this.rate > 0 ? ((p.inputBytesTotal - p.inputBytesDone) / this.rate) * 1000 : Number.NaN;
    const where =
      p.backend === 'gpu' ? `the GPU${this.gpu?.adapter ? ` (${this.gpu.adapter})` : ''}` : 'the CPU';
    return html`
      <progress
        data-testid="merge-progress"
        aria-label="Merge progress: input bytes read"
        max=${p.inputBytesTotal}
        .value=${p.inputBytesDone}
      ></progress>
      <div class="stats" data-testid="merge-stats">
        ${formatBytes(p.inputBytesDone)} / ${formatBytes(p.inputBytesTotal)} read · ${p.tensorsDone} /
        ${p.tensorsTotal} tensors · ${Number.isFinite(this.rate) ? `${formatBytes(this.rate)}/s` : '…'} ·
        ${formatDuration(eta)} left
      </div>
      <div class="stats" data-testid="merge-working" data-backend=${p.backend}>
        ${p.tensor ? html`Working on <code>${p.tensor}</code> on ${where}` : html`Starting on ${where}`}
      </div>
    `;
  }

  private renderInterrupted(busy: boolean) {
    return this.interrupted
      .filter((run) => run.runId !== this.runId)
      .map((run) =>
        run.folder && run.resumeProblem
          ? html`<div
              class="interrupted row"
              data-testid="merge-interrupted"
              data-run-id=${run.runId}
              data-folder=${`${run.folder.parent.name}/${run.folder.name}`}
              data-state="cannot-resume"
            >
              <span
                >The merge into the folder ${run.folder.parent.name}/${run.folder.name} interrupted after
                ${run.tensorsDone} of ${run.tensorsTotal} tensors cannot continue: ${run.resumeProblem}. Start it
                again (its partial files are removed first) or discard it.</span
              >
              <button data-testid="merge-restart" ?disabled=${busy} @click=${() => this.restartFolderRun(run)}>
                Start again
              </button>
              <button data-testid="merge-discard" ?disabled=${busy} @click=${() => this.discardFolderRun(run)}>
                Discard
              </button>
            </div>`
          : run.folder
            ? html`<div
                class="interrupted row"
                data-testid="merge-interrupted"
                data-run-id=${run.runId}
                data-folder=${`${run.folder.parent.name}/${run.folder.name}`}
                data-tensors-done=${run.tensorsDone}
              >
                <span
                  >Merge into the folder ${run.folder.parent.name}/${run.folder.name} interrupted after
                  ${run.tensorsDone} of ${run.tensorsTotal} tensors (${recipeMethod(run.recipeText)}, seed
                  ${run.seed}, started ${new Date(run.startedAt).toLocaleString()}). Resume continues in its
                  temporary files there.</span
                >
                <button data-testid="merge-resume" ?disabled=${busy} @click=${() => this.resume(run)}>Resume</button>
                <button data-testid="merge-discard" ?disabled=${busy} @click=${() => this.discardFolderRun(run)}>
                  Discard
                </button>
              </div>`
            : html`
          <div
            class="interrupted row"
            data-testid="merge-interrupted"
            data-run-id=${run.runId}
            data-tensors-done=${run.tensorsDone}
          >
            <span
              >Merge interrupted after ${run.tensorsDone} of ${run.tensorsTotal} tensors
              (${recipeMethod(run.recipeText)}, seed ${run.seed}, started
              ${new Date(run.startedAt).toLocaleString()})</span
            >
            <button data-testid="merge-resume" ?disabled=${busy} @click=${() => this.resume(run)}>Resume</button>
            <button data-testid="merge-discard" ?disabled=${busy} @click=${() => this.discard(run)}>Discard</button>
          </div>
        `,
      );
  }

  private renderDeviceNote() {
    const gpu = this.gpu;
    if (!gpu || this.device !== 'auto') return nothing;
    if (!gpu.available)
      return html`<p class="hint" data-testid="device-note">auto: the CPU (no WebGPU here).</p>`;
    if (gpu.software) {
      return html`<p class="hint" data-testid="device-note" data-auto="cpu">
        auto merges on the CPU: ${gpu.software}.
      </p>`;
    }
    return html`<p class="hint" data-testid="device-note" data-auto="gpu">auto: the GPU (${gpu.adapter}).</p>`;
  }

  private renderOutputChoice(busy: boolean) {
    if (!this.canPick) return nothing;
    const folder = this.outputTo === 'folder' && this.outputParent;
    return html`<div class="row">
        <label
          >Write output to
          <select
            data-testid="merge-output-to"
            ?disabled=${busy}
            .value=${live(this.outputTo)}
            @change=${(e: Event) => {
              const to = (e.target as HTMLSelectElement).value;
              if (to === 'folder') void this.pickOutputFolder();
              else {
                this.outputTo = 'browser';
                this.saveSettings();
              }
            }}
          >
            <option value="browser" ?selected=${this.outputTo === 'browser'}>browser storage</option>
            <option value="folder" ?selected=${this.outputTo === 'folder'}>a folder on this computer…</option>
          </select></label
        >
        ${
          folder
            ? html`<button data-testid="merge-output-change" ?disabled=${busy} @click=${this.pickOutputFolder}>
                  Change folder…
                </button>
                <label
                  >Subfolder
                  <input
                    data-testid="merge-output-name"
                    style="width: 10em"
                    ?disabled=${busy}
                    .value=${live(this.outputName)}
                    @input=${(e: Event) => {
                      this.outputName = (e.target as HTMLInputElement).value;
                      this.saveSettings();
                    }}
                /></label>`
            : nothing
        }
      </div>
      ${
        folder
          ? html`<p class="hint" data-testid="merge-output-where">
              Each merge writes a new folder ${folder.name}/${this.outputName.trim() || 'merged-model'} (or -2, -3, …
              if taken), files under temporary names until the merge ends; a cancelled or failed merge leaves
              nothing there. A merge cut short by a reload resumes there.
            </p>`
          : nothing
      }`;
  }

  override render() {
    const busy = this.state === 'running' || this.state === 'cancelling';
    const blocked = this.problem || (!this.recipeText.trim() ? 'write or pick a recipe first' : '');
    return html`
      <section>
        <h2 id="merge-heading">Merge</h2>
        ${this.renderInterrupted(busy)}
        ${
          this.elsewhere.length
            ? html`<p class="elsewhere" data-testid="merge-elsewhere" role="status">
                A merge is running in another tab of this page; it finishes there (cancel it there to stop it).
              </p>`
            : nothing
        }
        <div class="row">
          <button
            class="primary"
            data-testid="merge-run"
            ?disabled=${busy || blocked !== ''}
            aria-describedby=${blocked ? 'merge-blocked' : nothing}
            @click=${this.start}
          >
            Merge
          </button>
          <button
            data-testid="merge-check"
            title="Check the recipe against the models' safetensors headers, reading no tensor data"
            ?disabled=${busy || this.checking || blocked !== ''}
            @click=${this.runCheck}
          >
            Check
          </button>
          ${busy ? html`<button data-testid="merge-cancel" ?disabled=${this.state === 'cancelling'} @click=${this.cancel}>Cancel</button>` : nothing}
          ${
            blocked && !busy
              ? html`<span id="merge-blocked" class="blocked" data-testid="merge-blocked">Cannot merge yet: ${blocked}</span>`
              : nothing
          }
        </div>
        <div class="row">
          <label
            >Seed
            <input
              type="number"
              data-testid="merge-seed"
              min="0"
              step="1"
              style="width: 6em"
              .value=${live(String(this.seed))}
              @change=${(e: Event) => {
                this.seed = Math.max(0, Math.floor(Number((e.target as HTMLInputElement).value) || 0));
                this.saveSettings();
              }}
          /></label>
          <label
            >Device
            <select
              data-testid="merge-device"
              .value=${live(this.device)}
              @change=${(e: Event) => {
                this.device = (e.target as HTMLSelectElement).value as BackendChoice;
                this.saveSettings();
              }}
            >
              <option value="auto" ?selected=${this.device === 'auto'}>auto</option>
              <option value="gpu" ?selected=${this.device === 'gpu'}>GPU (WebGPU)</option>
              <option value="cpu" ?selected=${this.device === 'cpu'}>CPU</option>
            </select></label
          >
          <label title="Threads for a merge on the CPU: 1 merges in the merge worker; 2 starts two kernel workers; auto takes 2 on 4 or more cores"
            >CPU threads
            <select
              data-testid="merge-cpu-threads"
              .value=${live(String(this.cpuThreads))}
              @change=${(e: Event) => {
                const value = (e.target as HTMLSelectElement).value;
                this.cpuThreads = value === '1' ? 1 : value === '2' ? 2 : 'auto';
                this.saveSettings();
              }}
            >
              <option value="auto" ?selected=${this.cpuThreads === 'auto'}>auto</option>
              <option value="1" ?selected=${this.cpuThreads === 1}>1</option>
              <option value="2" ?selected=${this.cpuThreads === 2}>2</option>
            </select></label
          >
          <label title="Largest output shard: bytes, or with K, M, B (thousand, million, billion)"
            >Shard size
            <input
              data-testid="merge-shard-size"
              placeholder="5B"
              style="width: 5em"
              .value=${live(this.shardSize)}
              @input=${(e: Event) => {
                this.shardSize = (e.target as HTMLInputElement).value;
                this.saveSettings();
              }}
          /></label>
          <label
            title="GPU memory the merge may use: bytes, or with K, M, B (thousand, million, billion); empty for a share of the GPU's limits. Larger tensors stream through the GPU a tile at a time."
            >GPU memory
            <input
              data-testid="merge-gpu-memory"
              placeholder="auto"
              style="width: 5em"
              .value=${live(this.gpuMemory)}
              @input=${(e: Event) => {
                this.gpuMemory = (e.target as HTMLInputElement).value;
                this.saveSettings();
              }}
          /></label>
        </div>
        ${this.renderOutputChoice(busy)}
        ${this.renderDeviceNote()}
        ${this.renderCheck()}
        <p
          role="status"
          data-testid="merge-status"
          data-state=${this.state}
          data-backend=${this.backendUsed ?? ''}
          data-cpu-threads=${this.cpuThreadsUsed ?? ''}
          data-tensors-on-threads=${this.tensorsOnThreads ?? ''}
          data-output-id=${this.outputUsed ?? ''}
          data-runs=${this.runs}
          class=${this.state === 'error' ? 'error problems' : ''}
        >${this.message}</p>
        ${this.renderLinkOutput(busy)}
        <div class="visually-hidden" aria-live="polite" data-testid="merge-announce">${this.announcement}</div>
        ${this.renderProgress()}
        ${this.log.length ? html`<div class="log">${this.log.join('\n')}</div>` : nothing}
      </section>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-run-panel': L2sRunPanel;
  }
}
