/**
 * <l2s-paper-experiment>: "Run the paper's 1.5B experiment", guided. First it shows what it will take
 * (download sizes from the hub's file list, the storage the browser has, a time estimate, and whether
 * this GPU can run the models) before fetching any weights; then it downloads Qwen2.5-Math-1.5B
 * (System 1) and DeepSeek-R1-Distill-Qwen-1.5B (System 2), merges them with the paper's TIES preset,
 * and runs the Compare questions on the models, showing the user's table beside the paper's with CSV
 * and PNG export for slides.
 */
import * as Plot from '@observablehq/plot';
import { css, html, LitElement, nothing } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { formatBytes } from '../../formats/size';
import {
  type AdapterFacts,
  type ComparisonRow,
  comparisonCsv,
  comparisonRows,
  type ExperimentEstimate,
  estimateExperiment,
  experimentRecipe,
  type GpuVerdict,
  gpuVerdict,
} from '../../lesson/experiment';
import { PAPER, PAPER_1_5B_MODELS } from '../../lesson/paper-results';
import type { HubModelPlan } from '../../store/hub-plan';
import type { ModelRecord } from '../../store/library';
import { callback, type Engine, newRunId } from '../../worker/client';
import type { MergeOutcome, MergeProgressEvent } from '../../worker/engine.worker';
import type { OutputInfo } from '../../worker/opfs-output';
import '../charts/chart';
import '../compare-panel';
import type { ChartFrame, ChartSpec } from '../charts/chart';
import { saveBlob } from '../charts/export';
import type { CompareTableDetail } from '../compare-panel';
import { panelStyles } from '../panel-styles';

type Phase = 'idle' | 'planning' | 'planned' | 'downloading' | 'merging' | 'merged' | 'error';

interface Plans {
  system1: HubModelPlan;
  system2: HubModelPlan;
  estimate: ExperimentEstimate;
  storage?: { usage: number; quota: number };
  verdict: GpuVerdict;
}

function duration(seconds: number): string {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function adapterFacts(): Promise<AdapterFacts> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  const adapter = await gpu?.requestAdapter().catch(() => null);
  if (!adapter) return { available: false };
  const info = adapter.info;
  return {
    available: true,
    description: [info.vendor, info.architecture, info.device].filter(Boolean).join(' ') || 'unknown',
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    isFallbackAdapter: (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter,
  };
}

/** Mean tokens and accuracy, the user's beside the paper's, as a chart for slides. */
function comparisonChart(rows: readonly ComparisonRow[]): ChartSpec {
  const data = rows.flatMap((r) => [
    ...(r.yours
      ? [{ role: r.role, source: 'yours', tokens: r.yours.meanTokens, accuracy: r.yours.accuracy * 100 }]
      : []),
    ...(r.paper?.tokens
      ? [{ role: r.role, source: 'paper', tokens: r.paper.tokens, accuracy: r.paper.gsm8k }]
      : []),
  ]);
  const sources = ['yours', 'paper'];
  const colors = ['#1c5fb8', '#8a93a3'];
  const draw = (frame: ChartFrame) =>
    Plot.plot({
      width: frame.width,
      height: Math.round(Math.max(220, Math.min(380, frame.width * 0.45))),
      marginLeft: Math.round(frame.fontSize * 5),
      style: { fontSize: `${frame.fontSize}px`, background: 'transparent', overflow: 'visible' },
      ariaLabel: 'Mean response tokens and accuracy, yours against the paper',
      fx: { label: null, domain: rows.map((r) => r.role) },
      x: { axis: null, domain: sources },
      y: { label: 'mean response tokens', grid: true },
      color: { domain: sources, range: colors },
      marks: [
        Plot.barY(data, { fx: 'role', x: 'source', y: 'tokens', fill: 'source', tip: true }),
        Plot.text(data, {
          fx: 'role',
          x: 'source',
          y: 'tokens',
          text: (d: { accuracy: number; tokens: number }) =>
            `${Math.round(d.tokens)} tok, ${d.accuracy.toFixed(1)}%`,
          dy: -8,
          fill: '#1d2330',
        }),
        Plot.ruleY([0]),
      ],
    });
  return {
    draw,
    legend: [
      { label: 'your run', color: colors[0] },
      { label: `paper (GSM8K, ${PAPER.authors} Table 2)`, color: colors[1] },
    ],
  };
}

@customElement('l2s-paper-experiment')
export class L2sPaperExperiment extends LitElement {
  static override styles = [
    panelStyles,
    css`
      .facts td.num {
        text-align: right;
        font-variant-numeric: tabular-nums;
      }
      .verdict.bad {
        color: #a4161a;
      }
      .verdict.good {
        color: #2b6a30;
      }
      .actions {
        display: flex;
        flex-wrap: wrap;
        gap: 8px;
        align-items: center;
        margin: 8px 0;
      }
      code {
        overflow-wrap: anywhere;
      }
      .table-wrap {
        overflow-x: auto;
      }
    `,
  ];

  @property({ attribute: false }) engine?: Engine;
  @property({ attribute: false }) models: ModelRecord[] = [];
  @property({ attribute: false }) outputs: OutputInfo[] = [];
  @property() hubUrl = 'https://huggingface.co';

  @state() private phase: Phase = 'idle';
  @state() private message = '';
  @state() private plans?: Plans;
  @state() private anyway = false;
  @state() private progress?: { label: string; done: number; total: number };
  @state() private outputId?: string;
  @state() private table?: ComparisonRow[];
  private chart?: ChartSpec;
  private runId?: string;

  private readonly system1 = PAPER_1_5B_MODELS.system1;
  private readonly system2 = PAPER_1_5B_MODELS.system2;

  private inLibrary(name: string): boolean {
    return this.models.some((m) => m.name === name);
  }

  private async plan(): Promise<void> {
    const engine = this.engine;
    if (!engine) return;
    this.phase = 'planning';
    this.message = `Reading the file lists of ${this.system1} and ${this.system2} on ${new URL(this.hubUrl).host}…`;
    try {
      const request = (repo: string) =>
        engine.api.planHub(newRunId(), { repo, revision: 'main', hubUrl: this.hubUrl });
      const [system1, system2, adapter, estimate] = await Promise.all([
        request(this.system1),
        request(this.system2),
        adapterFacts(),
        navigator.storage?.estimate?.().catch(() => undefined),
      ]);
      const plans: Plans = {
        system1,
        system2,
        estimate: estimateExperiment(
          { system1, system2 },
          { system1: this.inLibrary(this.system1), system2: this.inLibrary(this.system2) },
        ),
        storage: estimate?.quota ? { usage: estimate.usage ?? 0, quota: estimate.quota } : undefined,
        // Compare runs System 2 and the merge, which have its shape; the larger of the two decides.
        verdict: gpuVerdict(adapter, system2.weightBytes >= system1.weightBytes ? system2 : system1),
      };
      this.plans = plans;
      this.phase = 'planned';
      this.message = '';
    } catch (e) {
      this.phase = 'error';
      this.message = `${(e as Error).name}: ${(e as Error).message}`;
    }
  }

  private get storageShort(): boolean {
    const p = this.plans;
    return !!p?.storage && p.storage.quota - p.storage.usage < p.estimate.storageBytes;
  }

  private async run(): Promise<void> {
    const engine = this.engine;
    if (!engine || !this.plans) return;
    const runId = newRunId();
    this.runId = runId;
    try {
      for (const repo of [this.system1, this.system2]) {
        if (this.inLibrary(repo)) continue;
        this.phase = 'downloading';
        this.message = `Downloading ${repo}…`;
        this.progress = { label: repo, done: 0, total: 1 };
        await engine.api.importHub(
          runId,
          { repo, revision: 'main', hubUrl: this.hubUrl },
          callback((p: { bytesDone: number; bytesTotal: number }) => {
            this.progress = { label: repo, done: p.bytesDone, total: p.bytesTotal };
          }),
        );
        this.dispatchEvent(new CustomEvent('library-changed', { bubbles: true, composed: true }));
      }
      this.phase = 'merging';
      const recipeText = experimentRecipe(this.system1, this.system2);
      this.dispatchEvent(
        new CustomEvent('recipe-change', { detail: recipeText, bubbles: true, composed: true }),
      );
      this.message = 'Merging with the paper’s TIES preset (density 0.2, weight 1, lambda 1)…';
      this.progress = { label: 'merge', done: 0, total: 1 };
      const outcome: MergeOutcome = await engine.api.merge(
        runId,
        { recipeText, seed: 0, device: 'auto' },
        callback((p: MergeProgressEvent) => {
          this.progress = { label: p.tensor ?? 'merge', done: p.bytesDone, total: p.bytesTotal };
        }),
      );
      this.outputId = outcome.outputId;
      this.phase = 'merged';
      this.progress = undefined;
      this.message = `Merged ${outcome.tensors} tensors on the ${outcome.backend.toUpperCase()} in ${duration(outcome.elapsedMs / 1000)}.`;
      this.dispatchEvent(
        new CustomEvent<MergeOutcome>('merge-done', { detail: outcome, bubbles: true, composed: true }),
      );
    } catch (e) {
      const error = e as Error;
      this.phase = error.name === 'AbortError' || error.name === 'ImportAbortedError' ? 'planned' : 'error';
      this.message = this.phase === 'planned' ? 'Stopped.' : `${error.name}: ${error.message}`;
      this.progress = undefined;
    } finally {
      if (this.runId === runId) this.runId = undefined;
    }
  }

  private cancel(): void {
    if (this.runId) void this.engine?.api.cancel(this.runId);
  }

  /** The Compare panel's table, once "Run all questions" is done: slots are System 2, merged, System 1. */
  private onCompareTable(detail: CompareTableDetail): void {
    const [system2, merged, system1] = detail.slots;
    const table = comparisonRows(detail.rows, {
      system2: system2 ?? this.system2,
      merged: merged ?? 'merged',
      system1: system1 ?? this.system1,
    });
    this.table = table;
    this.chart = comparisonChart(table);
  }

  private exportCsv(): void {
    if (this.table)
      saveBlob(new Blob([comparisonCsv(this.table)], { type: 'text/csv' }), 'l2s-1.5b-experiment.csv');
  }

  private renderPlan(p: Plans) {
    const e = p.estimate;
    const row = (role: string, plan: HubModelPlan) => html`<tr>
      <td>${role}</td>
      <td><code>${plan.repo}</code></td>
      <td class="num" data-testid="experiment-size" data-bytes=${String(plan.bytes)}>${formatBytes(plan.bytes)}</td>
      <td>${this.inLibrary(plan.repo) ? 'in the library' : `${plan.files.length} files to download`}</td>
    </tr>`;
    return html`
      <div class="table-wrap"><table class="facts" data-testid="experiment-plan-table">
        <thead><tr><th>Role</th><th>Repo</th><th>Size</th><th></th></tr></thead>
        <tbody>${row('System 1', p.system1)} ${row('System 2', p.system2)}</tbody>
      </table></div>
      <p data-testid="experiment-storage">
        Needs ${formatBytes(e.storageBytes)} of browser storage (${formatBytes(e.downloadBytes)} to download, a
        ${formatBytes(e.outputBytes)} merged model);
        ${
          p.storage
            ? html`${formatBytes(p.storage.quota - p.storage.usage)} of ${formatBytes(p.storage.quota)} is free.`
            : 'the browser does not say how much is free.'
        }
        ${this.storageShort ? html`<strong class="verdict bad">Not enough space: free some storage first.</strong>` : nothing}
      </p>
      <p data-testid="experiment-estimate">
        About ${duration(e.downloadSeconds)} to download at ${formatBytes(25e6)}/s and ${duration(e.mergeSeconds)} to
        merge at ${formatBytes(150e6)}/s (rough: your connection and disk decide).
      </p>
      <p data-testid="experiment-gpu" data-fits=${String(p.verdict.fits)} class="verdict ${p.verdict.fits ? 'good' : 'bad'}">
        ${p.verdict.fits ? 'Your GPU can run the models: ' : 'Your GPU cannot run the models: '}${p.verdict.message}
      </p>
      ${
        p.verdict.fits
          ? nothing
          : html`<label
              ><input
                type="checkbox"
                data-testid="experiment-anyway"
                .checked=${this.anyway}
                @change=${(ev: Event) => {
                  this.anyway = (ev.target as HTMLInputElement).checked;
                }}
              />
              Download and merge anyway (the merge runs on the CPU; Compare will be very slow)</label
            >`
      }
    `;
  }

  private renderResults(table: ComparisonRow[]) {
    const pct = (v: number | undefined) => (v === undefined ? '–' : `${(v * 100).toFixed(1)}%`);
    return html`
      <h3>Your run beside the paper</h3>
      <div class="table-wrap"><table data-testid="experiment-results">
        <thead>
          <tr>
            <th>Model</th><th>Questions</th><th>Accuracy</th><th>Mean tokens</th><th>Length vs System 2</th>
            <th>Paper GSM8K</th><th>Paper tokens</th>
          </tr>
        </thead>
        <tbody>
          ${table.map(
            (r) => html`<tr data-testid="experiment-result-row" data-role=${r.role}>
              <td>${r.role}<br /><code>${r.model}</code></td>
              <td>${r.yours?.questions ?? '–'}</td>
              <td>${pct(r.yours?.accuracy)}</td>
              <td>${r.yours ? r.yours.meanTokens.toFixed(0) : '–'}</td>
              <td>${r.yours?.lengthChange === undefined ? '–' : pct(r.yours.lengthChange)}</td>
              <td>${r.paper?.gsm8k ?? '–'}</td>
              <td>${r.paper?.tokens ?? '–'}</td>
            </tr>`,
          )}
        </tbody>
      </table></div>
      <p class="hint">
        The paper: ${PAPER.authors}, Table 2, all 1,319 GSM8K test questions, up to 10,240 new tokens, vLLM at
        temperature 0. Fewer questions or a lower token budget change the figures; the direction is what to look for.
      </p>
      <l2s-chart .spec=${this.chart} chart-title="L2S 1.5B experiment tokens and accuracy"></l2s-chart>
      <div class="actions"><button data-testid="experiment-csv" @click=${this.exportCsv}>Save the table as CSV</button></div>
    `;
  }

  override render() {
    const busy = this.phase === 'planning' || this.phase === 'downloading' || this.phase === 'merging';
    const p = this.plans;
    const canRun = p && !this.storageShort && (p.verdict.fits || this.anyway);
    return html`
      <section>
        <h2>Run the paper’s 1.5B experiment</h2>
        <p>
          Downloads <code>${this.system1}</code> (System 1) and <code>${this.system2}</code> (System 2), merges them
          with the paper’s TIES preset (density 0.2, weight 1, lambda 1), then asks the same questions of System 2,
          the merge and System 1. Nothing is downloaded until you say so.
        </p>
        <div class="actions">
          <button data-testid="experiment-plan" ?disabled=${busy || !this.engine} @click=${this.plan}>
            Check sizes, storage and GPU
          </button>
          <button data-testid="experiment-run" ?disabled=${busy || !canRun} @click=${this.run}>Download and merge</button>
          ${busy && this.phase !== 'planning' ? html`<button data-testid="experiment-cancel" @click=${this.cancel}>Cancel</button>` : nothing}
        </div>
        <p data-testid="experiment-status" data-phase=${this.phase} class=${this.phase === 'error' ? 'error' : 'hint'} role="status">
          ${this.message}
        </p>
        ${
          this.progress
            ? html`<progress
                aria-label="${this.progress.label}"
                max=${this.progress.total || 1}
                .value=${this.progress.done}
              ></progress>`
            : nothing
        }
        ${p ? this.renderPlan(p) : nothing}
        ${
          this.phase === 'merged' || this.table
            ? html`<h3>Ask the models</h3>
                <p class="hint">
                  “Run all questions” in Compare below fills the table; System 2 answers at length, so give it a generous
                  token budget.
                </p>
                <l2s-compare-panel
                  .models=${this.models}
                  .outputs=${this.outputs}
                  .outputId=${this.outputId}
                  .recipeText=${experimentRecipe(this.system1, this.system2)}
                  @compare-table=${(e: CustomEvent<CompareTableDetail>) => this.onCompareTable(e.detail)}
                ></l2s-compare-panel>`
            : nothing
        }
        ${this.table ? this.renderResults(this.table) : nothing}
      </section>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-paper-experiment': L2sPaperExperiment;
  }
}
