/**
 * <l2s-run-panel>: runs the recipe in the engine worker, shows progress (tensors, bytes, throughput,
 * time left), and offers cancel. Errors name the file and tensor, as the engine words them. Merges
 * cut short by a reload or a crash are offered for resumption (from the last finished tensor) or
 * discarding.
 */
import { css, html, LitElement } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { placementSummary } from '../engine/placement';
import { formatBytes, parseByteSize } from '../formats/size';
import type { BackendChoice } from '../worker/backend';
import { callback, type Engine, newRunId } from '../worker/client';
import type { InterruptedRun, MergeOutcome, MergeProgressEvent } from '../worker/engine.worker';
import { panelStyles } from './panel-styles';

type RunState = 'idle' | 'running' | 'done' | 'error';

function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '…';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
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
      }
      .row {
        display: flex;
        gap: 10px;
        align-items: center;
        flex-wrap: wrap;
      }
      .interrupted {
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
      }
    `,
  ];

  @property({ attribute: false }) engine?: Engine;
  @property() recipeText = '';
  /** Merges cut short by a reload or a crash (the app lists them from the engine's journal). */
  @property({ attribute: false }) interrupted: InterruptedRun[] = [];
  @state() private state: RunState = 'idle';
  @state() private message = '';
  @state() private progress?: MergeProgressEvent;
  @state() private log: string[] = [];
  @state() private seed = 0;
  @state() private device: BackendChoice = 'auto';
  /** `--out-shard-size` as typed (5B, 500M, bytes); empty for the default. */
  @state() private shardSize = '';
  /** `--gpu-memory` as typed (3B, 500M, bytes); empty for the default from the GPU's limits. */
  @state() private gpuMemory = '';
  @state() private backendUsed?: 'cpu' | 'gpu';
  /** The output the last finished merge wrote (the output panel shows it once loaded). */
  @state() private outputUsed?: string;
  /** Merges started since the page opened; lets observers tell one run's end from the previous one's. */
  @state() private runs = 0;
  private runId?: string;

  private start(): Promise<void> {
    const engine = this.engine;
    if (!engine) return Promise.resolve();
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
    const request = {
      recipeText: this.recipeText,
      seed: this.seed,
      device: this.device,
      outShardSize,
      gpuMemory,
    };
    return this.execute(newRunId(), 'Merging…', (runId, onProgress, onLog) =>
      engine.api.merge(runId, request, onProgress, onLog),
    );
  }

  private resume(run: InterruptedRun): Promise<void> {
    const engine = this.engine;
    if (!engine) return Promise.resolve();
    return this.execute(
      run.runId,
      `Resuming after ${run.tensorsDone} of ${run.tensorsTotal} tensors…`,
      (runId, onProgress, onLog) => engine.api.resume(runId, onProgress, onLog),
    );
  }

  private async discard(run: InterruptedRun): Promise<void> {
    if (!this.engine || this.state === 'running') return;
    try {
      await this.engine.api.discardRun(run.runId);
      this.message = 'The interrupted merge was discarded.';
    } catch (e) {
      this.state = 'error';
      this.message = `${(e as Error).name}: ${(e as Error).message}`;
    }
    this.dispatchEvent(new CustomEvent('interrupted-changed', { bubbles: true, composed: true }));
  }

  /** One merge (new or resumed) from start to its end, with progress, log and cancel. */
  private async execute(
    runId: string,
    startMessage: string,
    call: (
      runId: string,
      onProgress: (p: MergeProgressEvent) => void,
      onLog: (line: string) => void,
    ) => Promise<MergeOutcome>,
  ): Promise<void> {
    if (this.state === 'running') return;
    this.state = 'running';
    this.runs++;
    this.message = startMessage;
    this.progress = undefined;
    this.log = [];
    this.backendUsed = undefined;
    this.runId = runId;
    this.dispatchEvent(new CustomEvent('merge-started', { bubbles: true, composed: true }));
    try {
      const outcome = await call(
        runId,
        callback((p: MergeProgressEvent) => {
          this.progress = p;
        }),
        callback((line: string) => {
          this.log = [...this.log, line];
        }),
      );
      this.backendUsed = outcome.backend;
      this.outputUsed = outcome.outputId;
      this.state = 'done';
      this.message =
        `Merged ${outcome.tensors} tensors (${formatBytes(outcome.bytesWritten)}) on the ` +
        `${outcome.backend.toUpperCase()} in ${formatDuration(outcome.elapsedMs)}: ` +
        `${placementSummary(outcome.placement)}.`;
      this.dispatchEvent(new CustomEvent('merge-done', { detail: outcome, bubbles: true, composed: true }));
    } catch (e) {
      const error = e as Error;
      if (error.name === 'AbortError') {
        this.state = 'idle';
        this.message = 'Merge cancelled; nothing was kept.';
      } else {
        this.state = 'error';
        this.message = `${error.name}: ${error.message}`;
      }
    } finally {
      this.runId = undefined;
      this.dispatchEvent(new CustomEvent('interrupted-changed', { bubbles: true, composed: true }));
    }
  }

  private cancel(): void {
    if (this.runId) void this.engine?.api.cancel(this.runId);
  }

  private renderProgress() {
    const p = this.progress;
    if (!p || this.state !== 'running') return '';
    const seconds = p.elapsedMs / 1000;
    // A resumed run's rate counts only what this run wrote.
    const rate = seconds > 0 ? (p.bytesDone - p.bytesResumed) / seconds : 0;
    const eta = rate > 0 ? ((p.bytesTotal - p.bytesDone) / rate) * 1000 : Number.NaN;
    return html`
      <progress data-testid="merge-progress" max=${p.bytesTotal} .value=${p.bytesDone}></progress>
      <div class="stats">
        ${p.tensorsDone} / ${p.tensorsTotal} tensors · ${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)} ·
        ${formatBytes(rate)}/s · ${formatDuration(eta)} left ${p.tensor ? html`· ${p.tensor}` : ''}
      </div>
    `;
  }

  private renderInterrupted(running: boolean) {
    return this.interrupted
      .filter((run) => run.runId !== this.runId)
      .map(
        (run) => html`
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
            <button data-testid="merge-resume" ?disabled=${running} @click=${() => this.resume(run)}>Resume</button>
            <button data-testid="merge-discard" ?disabled=${running} @click=${() => this.discard(run)}>Discard</button>
          </div>
        `,
      );
  }

  override render() {
    const running = this.state === 'running';
    return html`
      <section>
        <h2>Merge</h2>
        ${this.renderInterrupted(running)}
        <div class="row">
          <button data-testid="merge-run" ?disabled=${running || !this.recipeText.trim()} @click=${this.start}>Merge</button>
          ${running ? html`<button data-testid="merge-cancel" @click=${this.cancel}>Cancel</button>` : ''}
          <label
            >Seed
            <input
              type="number"
              data-testid="merge-seed"
              min="0"
              step="1"
              style="width: 6em"
              .value=${String(this.seed)}
              @change=${(e: Event) => {
                this.seed = Math.max(0, Math.floor(Number((e.target as HTMLInputElement).value) || 0));
              }}
          /></label>
          <label
            >Device
            <select
              data-testid="merge-device"
              @change=${(e: Event) => {
                this.device = (e.target as HTMLSelectElement).value as BackendChoice;
              }}
            >
              <option value="auto" ?selected=${this.device === 'auto'}>auto</option>
              <option value="gpu" ?selected=${this.device === 'gpu'}>GPU (WebGPU)</option>
              <option value="cpu" ?selected=${this.device === 'cpu'}>CPU</option>
            </select></label
          >
          <label title="Largest output shard: bytes, or with K, M, B (thousand, million, billion)"
            >Shard size
            <input
              data-testid="merge-shard-size"
              placeholder="5B"
              style="width: 5em"
              .value=${this.shardSize}
              @input=${(e: Event) => {
                this.shardSize = (e.target as HTMLInputElement).value;
              }}
          /></label>
          <label
            title="GPU memory the merge may use: bytes, or with K, M, B (thousand, million, billion); empty for a share of the GPU's limits. Larger tensors stream through the GPU a tile at a time."
            >GPU memory
            <input
              data-testid="merge-gpu-memory"
              placeholder="auto"
              style="width: 5em"
              .value=${this.gpuMemory}
              @input=${(e: Event) => {
                this.gpuMemory = (e.target as HTMLInputElement).value;
              }}
          /></label>
        </div>
        <p
          data-testid="merge-status"
          data-state=${this.state}
          data-backend=${this.backendUsed ?? ''}
          data-output-id=${this.outputUsed ?? ''}
          data-runs=${this.runs}
          class=${this.state === 'error' ? 'error' : ''}
        >${this.message}</p>
        ${this.renderProgress()}
        ${this.log.length ? html`<div class="log">${this.log.join('\n')}</div>` : ''}
      </section>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-run-panel': L2sRunPanel;
  }
}
