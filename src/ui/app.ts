/**
 * <l2s-app>: the page. It owns the engine worker and the state every panel shows (library, storage,
 * the recipe text, the last output); panels call the engine and announce changes with events.
 * The recipe text is kept across reloads (ui-state.ts); a link with `#recipe=` (a shared recipe)
 * replaces it on open.
 */
import { css, html, LitElement } from 'lit';
import { customElement, state } from 'lit/decorators.js';
import { DEFAULT_DATASETS_URL } from '../eval/gsm8k';
import { DEFAULT_HUB_URL } from '../store/import-hub';
import type { ModelRecord, PendingImport, StorageUse } from '../store/library';
import { storageUse } from '../store/library';
import { type Engine, newRunId, startEngine } from '../worker/client';
import type { EngineOptions, InterruptedRun, MergeOutcome } from '../worker/engine.worker';
import type { OutputInfo } from '../worker/opfs-output';
import { DEMO_RECIPE } from './demo-recipe';
import type { L2sImportPanel } from './import-panel';
import { checkRecipe } from './recipe-check';
import { recipeFromFragment } from './recipe-editor';
import type { GpuStatus } from './run-panel';
import { loadUiState, saveUiState } from './ui-state';
import './library-panel';
import './import-panel';
import './recipe-editor';
import './run-panel';
import './output-panel';
import './inspect-panel';
import './compare-panel';
import './lesson/lesson';
import './lesson/paper-experiment';
import { type LessonNavigateDetail, lessonStepFromHash } from './lesson/lesson';

/**
 * Settings a URL can carry: `?hub=` (hub endpoint, for tests and mirrors; shown with a warning),
 * `?datasets=` (the dataset viewer endpoint GSM8K questions come from), `?chunk=` (bytes per stored
 * chunk), `?stallCommit=` (crash tests: a merge's commit stops after that many files, as if the tab
 * died there), `?paceWrites=` (tests of a running merge: milliseconds before each write of merged bytes),
 * `?holdReply=` (tests of Cancel: milliseconds a finished merge waits after its commit before it answers),
 * `?streamCache=` (tests of the hub stream's spool: bytes kept in memory across a tensor's passes),
 * `?opfsPicker` (browser tests: folder pickers take a folder of the origin private file system, see
 * directory-picker.ts).
 */
function pageSettings(): {
  hubUrl: string;
  datasetsUrl: string;
  chunkBytes?: number;
  stallCommitAfterFiles?: number;
  paceWritesMs?: number;
  holdReplyMs?: number;
  streamCacheBytes?: number;
} {
  const params = new URLSearchParams(location.search);
  const chunk = Number(params.get('chunk'));
  const stall = Number(params.get('stallCommit'));
  const pace = Number(params.get('paceWrites'));
  const hold = Number(params.get('holdReply'));
  const streamCache = params.has('streamCache') ? Number(params.get('streamCache')) : Number.NaN;
  return {
    hubUrl: params.get('hub') || DEFAULT_HUB_URL,
    datasetsUrl: params.get('datasets') || DEFAULT_DATASETS_URL,
    chunkBytes: Number.isSafeInteger(chunk) && chunk > 0 ? chunk : undefined,
    stallCommitAfterFiles: Number.isSafeInteger(stall) && stall > 0 ? stall : undefined,
    paceWritesMs: Number.isSafeInteger(pace) && pace > 0 ? Math.min(pace, 10_000) : undefined,
    holdReplyMs: Number.isSafeInteger(hold) && hold > 0 ? Math.min(hold, 60_000) : undefined,
    streamCacheBytes: Number.isSafeInteger(streamCache) && streamCache >= 0 ? streamCache : undefined,
  };
}

/** Where the recipe text is kept across reloads. */
const RECIPE_KEY = 'recipe';

@customElement('l2s-app')
export class L2sApp extends LitElement {
  static override styles = css`
    :host {
      display: block;
      font: 14px/1.45 system-ui, sans-serif;
      color: #1d2330;
      max-width: 1100px;
      margin: 0 auto;
      padding: 16px;
    }
    header {
      display: flex;
      align-items: baseline;
      gap: 16px;
      flex-wrap: wrap;
      border-bottom: 1px solid #d8dce5;
      margin-bottom: 12px;
    }
    h1 {
      font-size: 20px;
      margin: 8px 0;
    }
    .backend {
      color: #4b5567;
      overflow-wrap: anywhere;
    }
    nav {
      display: flex;
      gap: 6px;
      flex-wrap: wrap;
    }
    nav button {
      font-size: 13px;
    }
    .grid {
      display: grid;
      grid-template-columns: minmax(0, 1fr) minmax(0, 1fr);
      gap: 16px;
    }
    @media (max-width: 800px) {
      .grid {
        /* minmax(0, ...): a long name or a wide form never widens the page past the screen. */
        grid-template-columns: minmax(0, 1fr);
      }
    }
    button.demo {
      font-size: 15px;
      padding: 6px 14px;
    }
  `;

  @state() private engine?: Engine;
  @state() private models: ModelRecord[] = [];
  @state() private pending: PendingImport[] = [];
  @state() private storage?: StorageUse;
  @state() private gpu?: GpuStatus;
  @state() private recipeText = '';
  @state() private outputs: OutputInfo[] = [];
  @state() private interrupted: InterruptedRun[] = [];
  @state() private outputId?: string;
  @state() private demoState: 'idle' | 'running' | 'error' = 'idle';
  @state() private demoError = '';
  /** The demo's models: the Inspect view compares all of them with the base by default. */
  @state() private demoModels: string[] = [];
  /** Hub repos the user chose to merge straight from the hub (the recipe names them, the library lacks them). */
  @state() private streamRepos: string[] = [];
  /** Streamed repos whose bytes the merge also keeps in the library (off unless ticked). */
  @state() private copyRepos: string[] = [];
  private readonly settings = pageSettings();
  /** The open lesson step (0-based), undefined while the lesson is closed; `#learn/N` opens it. */
  @state() private lessonStep?: number = lessonStepFromHash(location.hash);
  private readonly onHash = () => {
    const step = lessonStepFromHash(location.hash);
    if (step !== undefined) this.lessonStep = step;
  };
  /** How every engine worker of the page is configured (the run panel starts one per merge). */
  private readonly engineOptions: EngineOptions = {
    chunkBytes: this.settings.chunkBytes,
    stallCommitAfterFiles: this.settings.stallCommitAfterFiles,
    paceWritesMs: this.settings.paceWritesMs,
    holdReplyMs: this.settings.holdReplyMs,
    streamCacheBytes: this.settings.streamCacheBytes,
  };

  override connectedCallback(): void {
    super.connectedCallback();
    window.addEventListener('hashchange', this.onHash);
    const engine = startEngine();
    this.engine = engine;
    void this.restoreRecipe();
    window.addEventListener('hashchange', this.onHashChange);
    void (async () => {
      await engine.api.configure(this.engineOptions);
      await engine.api.cleanUp();
      await this.refresh();
      this.gpu = await engine.api.gpuStatus();
    })();
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    window.removeEventListener('hashchange', this.onHashChange);
    window.removeEventListener('hashchange', this.onHash);
  }

  private closeLesson(): void {
    this.lessonStep = undefined;
    if (lessonStepFromHash(location.hash) !== undefined)
      history.replaceState(null, '', location.pathname + location.search);
  }

  /** A lesson step's link: close the lesson, load the demo when asked, show the section. */
  private async lessonNavigate(detail: LessonNavigateDetail): Promise<void> {
    this.closeLesson();
    if (detail.loadDemo) await this.loadDemo();
    await this.updateComplete;
    this.renderRoot
      .querySelector(`#${detail.section}`)
      ?.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  /** A shared link pasted into this tab's address bar. */
  private readonly onHashChange = (): void => {
    if (recipeFromFragment() !== undefined) void this.restoreRecipe();
  };

  /** A shared link's recipe (`#recipe=`), else the one this browser had when the page last closed. */
  private async restoreRecipe(): Promise<void> {
    const shared = recipeFromFragment();
    if (shared !== undefined) {
      this.setRecipe(shared);
      // Loaded once: a reload keeps the edits made since, not the link's recipe.
      history.replaceState(null, '', location.pathname + location.search);
      return;
    }
    const saved = await loadUiState<string>(RECIPE_KEY);
    // Something typed before the store answered wins.
    if (saved !== undefined && this.recipeText === '') this.recipeText = saved;
  }

  private setRecipe(text: string): void {
    this.recipeText = text;
    void saveUiState(RECIPE_KEY, text);
  }

  /** Scrolls a panel into view: the page is long on a phone, with the library first. */
  private jump(selector: string): void {
    this.renderRoot.querySelector(selector)?.scrollIntoView({ block: 'start' });
  }

  private async refresh(): Promise<void> {
    if (!this.engine) return;
    const [models, pending, storage, outputs, interrupted] = await Promise.all([
      this.engine.api.listModels(),
      this.engine.api.pendingImports(),
      storageUse(),
      this.engine.api.listOutputs(),
      this.engine.api.interruptedRuns(),
    ]);
    this.outputs = outputs;
    this.interrupted = interrupted;
    this.models = models;
    this.pending = pending;
    this.storage = storage;
  }

  private async loadDemo(): Promise<void> {
    if (!this.engine) return;
    this.demoState = 'running';
    try {
      const demo = await this.engine.api.loadDemo(newRunId());
      await this.refresh();
      this.demoModels = demo.models;
      this.setRecipe(DEMO_RECIPE);
      this.demoState = 'idle';
    } catch (e) {
      this.demoState = 'error';
      this.demoError = (e as Error).message;
    }
  }

  override render() {
    const gpu = this.gpu;
    const check = checkRecipe(this.recipeText, [...this.models.map((m) => m.name), ...this.streamRepos]);
    return html`
      <header>
        <h1>l2s-merge</h1>
        <span
          class="backend"
          data-testid="webgpu-status"
          data-webgpu=${gpu ? String(gpu.available) : 'unknown'}
          data-software=${gpu?.software ? 'true' : 'false'}
          title=${gpu?.software ?? ''}
        >
          ${
            gpu === undefined
              ? 'Checking for WebGPU…'
              : !gpu.available
                ? 'No WebGPU: merges run on the CPU'
                : gpu.software
                  ? `WebGPU is a software renderer here (${gpu.adapter}): auto merges on the CPU`
                  : `WebGPU present (${gpu.adapter})`
          }
        </span>
        <button class="demo" data-testid="lesson-open" @click=${() => {
          this.lessonStep = 0;
        }}>Learn L2S</button>
        <button class="demo" data-testid="demo" ?disabled=${this.demoState === 'running'} @click=${this.loadDemo}
          title="Three tiny synthetic Qwen2-shaped models with random weights, generated in the page: they show what a merge does to tensors, but cannot generate text.">
          ${this.demoState === 'running' ? 'Loading the demo…' : 'Try the L2S demo'}
        </button>
        ${this.demoModels.length ? html`<span class="backend" data-testid="demo-note">Demo models are synthetic (random weights): good for seeing what a merge does to tensors, not for generating text.</span>` : ''}
        ${this.demoState === 'error' ? html`<span role="alert">${this.demoError}</span>` : ''}
        <nav aria-label="Panels">
          <button data-testid="jump-library" @click=${() => this.jump('l2s-library-panel')}>Library</button>
          <button data-testid="jump-recipe" @click=${() => this.jump('l2s-recipe-editor')}>Recipe</button>
          <button data-testid="jump-merge" @click=${() => this.jump('l2s-run-panel')}>Merge</button>
        </nav>
      </header>
      <main>
      <div class="grid">
        <div>
          <l2s-library-panel
            id="library"
            .engine=${this.engine}
            .models=${this.models}
            .storage=${this.storage}
            @library-changed=${this.refresh}
          ></l2s-library-panel>
          <l2s-import-panel
            id="import"
            .engine=${this.engine}
            .pending=${this.pending}
            .hubUrl=${this.settings.hubUrl}
            @library-changed=${this.refresh}
          ></l2s-import-panel>
        </div>
        <div>
          <l2s-recipe-editor
            id="recipe"
            .models=${this.models}
            .streamed=${this.streamRepos}
            .keptCopies=${this.copyRepos}
            .text=${this.recipeText}
            @recipe-change=${(e: CustomEvent<string>) => this.setRecipe(e.detail)}
            @hub-stream-request=${(e: CustomEvent<{ repo: string; stream: boolean }>) => {
              const others = this.streamRepos.filter((r) => r !== e.detail.repo);
              this.streamRepos = e.detail.stream ? [...others, e.detail.repo] : others;
              if (!e.detail.stream) this.copyRepos = this.copyRepos.filter((r) => r !== e.detail.repo);
            }}
            @hub-copy-request=${(e: CustomEvent<{ repo: string; keep: boolean }>) => {
              const others = this.copyRepos.filter((r) => r !== e.detail.repo);
              this.copyRepos = e.detail.keep ? [...others, e.detail.repo] : others;
            }}
            @hub-download-request=${(e: CustomEvent<string>) => {
              void this.renderRoot.querySelector<L2sImportPanel>('#import')?.downloadFromHub(e.detail);
            }}
          ></l2s-recipe-editor>
          <l2s-run-panel
            id="merge"
            .engine=${this.engine}
            .recipeText=${this.recipeText}
            .models=${this.models}
            .problem=${check.parseError ?? check.error ?? ''}
            .gpu=${this.gpu}
            .engineOptions=${this.engineOptions}
            .hubStream=${{
              hubUrl: this.settings.hubUrl,
              repos: this.streamRepos.filter((r) => !this.models.some((m) => m.name === r)),
              keepCopy: this.copyRepos,
              accessToken: () =>
                this.renderRoot.querySelector<L2sImportPanel>('#import')?.streamAccessToken(),
            }}
            @recipe-restore=${(e: CustomEvent<string>) => this.setRecipe(e.detail)}
            .interrupted=${this.interrupted}
            @interrupted-changed=${this.refresh}
            @library-changed=${this.refresh}
            @merge-started=${() => {
              this.outputId = undefined;
            }}
            @merge-done=${(e: CustomEvent<MergeOutcome>) => {
              // A merge written to a folder on this computer has no output in browser storage.
              this.outputId = e.detail.outputId || undefined;
              void this.refresh();
            }}
            @output-kept=${(e: CustomEvent<string>) => {
              // Cancel came after the commit: the output stays, and is shown like a finished merge's.
              this.outputId = e.detail;
              void this.refresh();
            }}
          ></l2s-run-panel>
          <l2s-output-panel
            .engine=${this.engine}
            .hubUrl=${this.settings.hubUrl}
            .outputId=${this.outputId}
            .outputs=${this.outputs}
            @output-select=${(e: CustomEvent<string | undefined>) => {
              this.outputId = e.detail;
            }}
            @outputs-changed=${this.refresh}
            @library-changed=${this.refresh}
          ></l2s-output-panel>
        </div>
      </div>
      <l2s-inspect-panel
        id="inspect"
        .engine=${this.engine}
        .models=${this.models}
        .recipeText=${this.recipeText}
        .suggested=${this.demoModels}
        @library-changed=${this.refresh}
      ></l2s-inspect-panel>
      <l2s-compare-panel
        id="compare"
        .models=${this.models}
        .outputs=${this.outputs}
        .outputId=${this.outputId}
        .recipeText=${this.recipeText}
        .datasetsUrl=${this.settings.datasetsUrl}
        @library-changed=${this.refresh}
      ></l2s-compare-panel>
      <l2s-paper-experiment
        id="experiment"
        .engine=${this.engine}
        .models=${this.models}
        .outputs=${this.outputs}
        .hubUrl=${this.settings.hubUrl}
        @library-changed=${this.refresh}
        @recipe-change=${(e: CustomEvent<string>) => this.setRecipe(e.detail)}
        @merge-done=${(e: CustomEvent<MergeOutcome>) => {
          this.outputId = e.detail.outputId;
          void this.refresh();
        }}
      ></l2s-paper-experiment>
      </main>
      ${
        this.lessonStep === undefined
          ? ''
          : html`<l2s-lesson
            .engine=${this.engine}
            .models=${this.models}
            .recipeText=${this.recipeText}
            .suggested=${this.demoModels}
            .step=${this.lessonStep}
            @lesson-close=${this.closeLesson}
            @library-changed=${this.refresh}
            @lesson-navigate=${(e: CustomEvent<LessonNavigateDetail>) => void this.lessonNavigate(e.detail)}
          ></l2s-lesson>`
      }
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-app': L2sApp;
  }
}
