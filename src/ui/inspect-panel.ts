/**
 * <l2s-inspect-panel>: pictures of what a merge works with, computed in the engine worker from the
 * stored weights: per-layer task-vector norms, sign conflicts between models, what TIES' trimming
 * keeps, the singular spectrum of one task vector, and a merged model against System 2. Charts are
 * drawn by Observable Plot (src/ui/charts); every caption is computed from the data it describes.
 *
 * The base and the models come from the recipe in the editor; other library models can be ticked
 * to compare with them (the demo ticks its instruct model, so sign conflicts have two models).
 */
import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import {
  beforeAfterCaption,
  beforeAfterRows,
  normsCaption,
  percent,
  signsCaption,
  spectrumCaption,
  tiesCaption,
} from '../inspect/captions';
import type { InspectProgress, SpectrumInspection, TaskVectorInspection } from '../inspect/inspect-models';
import { conflictFraction, keptShares, relativeNorm } from '../inspect/task-vector-stats';
import { defaultSpectrumTensor } from '../inspect/tensor-groups';
import { parseRecipe } from '../recipe';
import type { MergeRecipe, ParameterSetting } from '../recipe/recipe';
import type { ModelRecord } from '../store/library';
import { callback, type Engine, newRunId } from '../worker/client';
import './charts/chart';
import type { ChartSpec } from './charts/chart';
import {
  beforeAfterChart,
  conflictsChart,
  MODEL_COLORS,
  normsChart,
  spectrumChart,
  tiesKeptChart,
} from './charts/inspect-charts';
import { announceLibraryChanged, askToReadLinkedModels } from './linked-permission';
import { panelStyles } from './panel-styles';

type ViewState = 'idle' | 'running' | 'done' | 'error';

/** The paper's TIES setting (trim 80%, keep 20%), used when the recipe gives no density. */
const PAPER_TIES_DENSITY = 0.2;

@customElement('l2s-inspect-panel')
export class L2sInspectPanel extends LitElement {
  static override styles = [
    panelStyles,
    css`
      .row {
        display: flex;
        gap: 12px;
        align-items: center;
        flex-wrap: wrap;
      }
      .row label {
        display: inline-flex;
        gap: 4px;
        align-items: center;
        margin: 2px 0;
      }
      .figures {
        display: grid;
        grid-template-columns: repeat(auto-fit, minmax(320px, 1fr));
        gap: 12px;
        margin-top: 10px;
      }
      figure {
        margin: 0;
        border: 1px solid #e1e5ec;
        border-radius: 6px;
        padding: 8px;
        background: #fff;
      }
      figure h3 {
        font-size: 14px;
        margin: 0 0 4px;
      }
      figcaption {
        font-size: 12.5px;
        color: #4b5567;
        margin-top: 4px;
      }
      .headline {
        font-size: 13px;
        font-weight: 600;
        margin: 2px 0;
      }
      .legend {
        display: flex;
        flex-wrap: wrap;
        gap: 4px 12px;
        font-size: 12px;
      }
      .swatch {
        display: inline-block;
        width: 14px;
        height: 3px;
        vertical-align: middle;
        margin-right: 4px;
      }
      .synthetic {
        background: #fff3bf;
        color: #5c4200;
        border-radius: 4px;
        padding: 0 4px;
        font-size: 12px;
      }
      .num {
        font-variant-numeric: tabular-nums;
      }
      select.tensor {
        max-width: 100%;
      }
    `,
  ];

  @property({ attribute: false }) engine?: Engine;
  @property({ attribute: false }) models: ModelRecord[] = [];
  @property() recipeText = '';
  /** Library models ticked by default besides the recipe's (the demo's instruct model). */
  @property({ attribute: false }) suggested: string[] = [];

  @state() private recipe?: MergeRecipe;
  /** Models ticked by the user; undefined until the first tick, then the defaults no longer apply. */
  @state() private picked?: string[];
  @state() private focusPick = '';
  @state() private densityText = '';
  @state() private state: ViewState = 'idle';
  @state() private message = '';
  @state() private progress?: InspectProgress;
  @state() private report?: TaskVectorInspection;
  @state() private spectrumTensor = '';
  @state() private spectrumState: ViewState = 'idle';
  @state() private spectrumMessage = '';
  @state() private spectrum?: SpectrumInspection;
  /** Chart drawings, made once per report so that re-rendering does not redraw them. */
  @state() private charts?: {
    norms: ChartSpec;
    conflicts: ChartSpec;
    ties: ChartSpec;
    beforeAfter?: ChartSpec;
  };
  @state() private spectrumSpec?: ChartSpec;
  private runId?: string;
  private spectrumRunId?: string;

  protected override willUpdate(changed: PropertyValues<this>): void {
    const report = this.report;
    if (changed.has('report' as keyof L2sInspectPanel) || changed.has('models')) {
      const pair = report ? this.mergedAndSystem2(report) : undefined;
      this.charts = report && {
        norms: normsChart(report),
        conflicts: conflictsChart(report),
        ties: tiesKeptChart(report),
        beforeAfter:
          pair &&
          beforeAfterChart(
            beforeAfterRows(report, pair.merged, pair.system2),
            report.models[pair.merged],
            report.models[pair.system2],
          ),
      };
    }
    if (changed.has('spectrum' as keyof L2sInspectPanel)) {
      this.spectrumSpec = this.spectrum && spectrumChart(this.spectrum.spectrum, this.spectrum.model);
    }
    if (changed.has('recipeText')) {
      try {
        this.recipe = this.recipeText.trim() ? parseRecipe(this.recipeText, 'recipe') : undefined;
      } catch {
        // The editor shows the parse error; inspection waits for a recipe that reads.
        this.recipe = undefined;
      }
    }
  }

  /**
   * The before/after pair: a merged model of the library (an output added to it) and System 2, the
   * recipe's first model, when the report has both.
   */
  private mergedAndSystem2(report: TaskVectorInspection): { merged: number; system2: number } | undefined {
    const isMerge = (name: string) => this.models.find((m) => m.name === name)?.source.kind === 'merge';
    const merged = report.models.findIndex(isMerge);
    const recipeModels = (this.recipe?.models ?? []).map((m) => m.model);
    const system2 = report.models.findIndex(
      (name, i) => i !== merged && recipeModels.includes(name) && !isMerge(name),
    );
    return merged >= 0 && system2 >= 0 ? { merged, system2 } : undefined;
  }

  private isSynthetic(name: string): boolean {
    return this.models.find((m) => m.name === name)?.source.kind === 'demo';
  }

  private get base(): string | undefined {
    return this.recipe?.baseModel;
  }

  private get libraryNames(): string[] {
    return this.models.map((m) => m.name);
  }

  /** Models that can be compared with the base: the recipe's first, then the rest of the library. */
  private get candidates(): string[] {
    const inLibrary = new Set(this.libraryNames);
    const fromRecipe = (this.recipe?.models ?? []).map((m) => m.model).filter((n) => inLibrary.has(n));
    const rest = this.libraryNames.filter((n) => !fromRecipe.includes(n));
    return [...new Set([...fromRecipe, ...rest])].filter((n) => n !== this.base);
  }

  private get selected(): string[] {
    const chosen = this.picked ?? [...(this.recipe?.models ?? []).map((m) => m.model), ...this.suggested];
    return this.candidates.filter((n) => chosen.includes(n));
  }

  private get focusModel(): string | undefined {
    const selected = this.selected;
    return selected.includes(this.focusPick) ? this.focusPick : selected[0];
  }

  /** TIES density settings for the focus model: typed, else the model's, the recipe's, the paper's. */
  private densitySettings(focus: string): ParameterSetting[] {
    if (this.densityText.trim()) return [Number(this.densityText)];
    const own = this.recipe?.models.find((m) => m.model === focus)?.parameters.density;
    const top = this.recipe?.parameters.density;
    return [own, top, PAPER_TIES_DENSITY].filter((s): s is ParameterSetting => s !== undefined);
  }

  private densityPlaceholder(focus: string | undefined): string {
    const first = focus ? this.densitySettings(focus)[0] : PAPER_TIES_DENSITY;
    if (typeof first === 'number') {
      const fromRecipe =
        focus !== undefined &&
        (this.recipe?.models.find((m) => m.model === focus)?.parameters.density ??
          this.recipe?.parameters.density) !== undefined;
      return fromRecipe ? `${first} (recipe)` : `${first} (paper)`;
    }
    return 'per layer (recipe)';
  }

  private async inspect(): Promise<void> {
    const engine = this.engine;
    const base = this.base;
    const focus = this.focusModel;
    if (!engine || !base || !focus || this.state === 'running') return;
    const density = this.densitySettings(focus);
    if (density.some((d) => typeof d === 'number' && !(d >= 0))) {
      this.state = 'error';
      this.message = `The density must be a number from 0 to 1, not '${this.densityText}'.`;
      return;
    }
    // Inspect is a click: the browser may be asked here for linked folders (the worker cannot ask).
    const permission = await askToReadLinkedModels(this.models, [base, ...this.selected], 'inspected');
    if (permission.asked) announceLibraryChanged(this);
    if (permission.refusal) {
      this.state = 'error';
      this.message = permission.refusal;
      return;
    }
    if ((this.state as ViewState) === 'running') return; // a second click while the browser asked
    const runId = newRunId();
    this.runId = runId;
    this.state = 'running';
    this.message = `Reading ${[base, ...this.selected].join(', ')}…`;
    this.progress = undefined;
    this.report = undefined;
    this.spectrum = undefined;
    this.spectrumState = 'idle';
    try {
      const report = await engine.api.inspect(
        runId,
        { base, models: this.selected, focus, density },
        callback((p: InspectProgress) => {
          this.progress = p;
        }),
      );
      this.report = report;
      this.state = 'done';
      const skipped = report.skipped.length;
      this.message =
        `Compared ${report.tensors} tensors of ${report.models.join(', ')} with ${report.base}` +
        (skipped ? ` (${skipped} left out: ${report.skipped[0].tensor}: ${report.skipped[0].reason}…)` : '.');
      const tensor = report.matrices.includes(this.spectrumTensor)
        ? this.spectrumTensor
        : defaultSpectrumTensor(report.matrices);
      if (tensor) void this.loadSpectrum(tensor);
    } catch (e) {
      const error = e as Error;
      this.state = error.name === 'AbortError' ? 'idle' : 'error';
      this.message =
        error.name === 'AbortError' ? 'Inspection cancelled.' : `${error.name}: ${error.message}`;
    } finally {
      if (this.runId === runId) this.runId = undefined;
    }
  }

  private async loadSpectrum(tensor: string): Promise<void> {
    const engine = this.engine;
    const report = this.report;
    if (!engine || !report) return;
    if (this.spectrumRunId) void engine.api.cancel(this.spectrumRunId);
    const runId = newRunId();
    this.spectrumRunId = runId;
    this.spectrumTensor = tensor;
    this.spectrumState = 'running';
    this.spectrumMessage = `Computing the singular values of ${tensor}…`;
    try {
      const result = await engine.api.inspectSpectrum(runId, {
        base: report.base,
        model: report.focus,
        tensor,
      });
      if (this.spectrumRunId !== runId) return;
      this.spectrum = result;
      this.spectrumState = 'done';
      this.spectrumMessage = '';
    } catch (e) {
      if (this.spectrumRunId !== runId) return;
      const error = e as Error;
      this.spectrumState = error.name === 'AbortError' ? 'idle' : 'error';
      this.spectrumMessage = error.name === 'AbortError' ? '' : `${error.name}: ${error.message}`;
    } finally {
      if (this.spectrumRunId === runId) this.spectrumRunId = undefined;
    }
  }

  private cancel(): void {
    if (this.runId) void this.engine?.api.cancel(this.runId);
    if (this.spectrumRunId) void this.engine?.api.cancel(this.spectrumRunId);
  }

  private toggle(name: string, on: boolean): void {
    const current = this.selected;
    this.picked = on ? [...current, name] : current.filter((n) => n !== name);
  }

  private renderControls() {
    const base = this.base;
    const selected = this.selected;
    const focus = this.focusModel;
    const running = this.state === 'running';
    if (!base) {
      return html`<p class="hint">Write or pick a recipe with a <code>base_model</code> (or press “Try the L2S demo”) to
        inspect its task vectors.</p>`;
    }
    return html`
      <div class="row">
        <span>Base: <strong>${base}</strong>${this.isSynthetic(base) ? html` <span class="synthetic">synthetic</span>` : nothing}</span>
        <span>Compare:</span>
        ${this.candidates.map(
          (name) => html`<label
            ><input
              type="checkbox"
              data-testid="inspect-model"
              data-name=${name}
              .checked=${selected.includes(name)}
              @change=${(e: Event) => this.toggle(name, (e.target as HTMLInputElement).checked)}
            />${name}${this.isSynthetic(name) ? html` <span class="synthetic">synthetic</span>` : nothing}</label
          >`,
        )}
      </div>
      <div class="row">
        <label
          >TIES and spectrum for
          <select
            data-testid="inspect-focus"
            @change=${(e: Event) => {
              this.focusPick = (e.target as HTMLSelectElement).value;
            }}
          >
            ${selected.map((n) => html`<option value=${n} ?selected=${n === focus}>${n}</option>`)}
          </select></label
        >
        <label title="Share of each task vector TIES keeps; empty: the recipe's (or the paper's 0.2)"
          >density
          <input
            type="number"
            data-testid="inspect-density"
            min="0"
            max="1"
            step="0.05"
            style="width: 9em"
            placeholder=${this.densityPlaceholder(focus)}
            .value=${this.densityText}
            @input=${(e: Event) => {
              this.densityText = (e.target as HTMLInputElement).value;
            }}
        /></label>
        <button data-testid="inspect-run" ?disabled=${running || !focus} @click=${this.inspect}>Inspect</button>
        ${
          running || this.spectrumState === 'running'
            ? html`<button data-testid="inspect-cancel" @click=${this.cancel}>Cancel</button>`
            : nothing
        }
      </div>
    `;
  }

  private renderProgress() {
    const p = this.progress;
    if (this.state !== 'running' || !p) return nothing;
    return html`<progress max=${p.tensorsTotal} .value=${p.tensorsDone}></progress>
      <div class="hint num">${p.tensorsDone} / ${p.tensorsTotal} tensors ${p.tensor ? `· ${p.tensor}` : ''}</div>`;
  }

  private renderNorms(report: TaskVectorInspection) {
    const overall = report.totals.norms.map(relativeNorm);
    return html`
      <figure data-testid="inspect-norms" data-state="done">
        <h3>Task-vector size per layer</h3>
        <l2s-chart .spec=${this.charts?.norms} chart-title="Task-vector size per layer"></l2s-chart>
        <div class="legend">
          <span>Over the whole model:</span>
          ${report.models.map(
            (model, m) => html`<span
              data-testid="inspect-norm-model"
              data-model=${model}
              data-value=${String(overall[m])}
              ><span class="swatch" style="background: ${MODEL_COLORS[m % MODEL_COLORS.length]}"></span>${model}
              <span class="num">${overall[m].toFixed(3)}</span></span
            >`,
          )}
        </div>
        <figcaption data-testid="inspect-norms-caption">
          ‖θ<sub>model</sub> − θ<sub>base</sub>‖ / ‖θ<sub>base</sub>‖ per layer: how far each model can pull a merge
          away from the fast System 1 base. ${normsCaption(report)}
        </figcaption>
      </figure>
    `;
  }

  private renderSigns(report: TaskVectorInspection) {
    const twoModels = report.models.length >= 2;
    const overallConflict = conflictFraction(report.totals.signs);
    const keep = keptShares(report.totals.ties);
    const density =
      report.density.min === report.density.max
        ? `density ${report.density.min}`
        : `density ${report.density.min}–${report.density.max}`;
    return html`
      <figure
        data-testid="inspect-signs"
        data-state="done"
        data-conflicts=${String(overallConflict)}
        data-kept-entries=${String(keep.entries)}
        data-kept-l1=${String(keep.l1)}
        data-kept-energy=${String(keep.energy)}
      >
        <h3>Sign conflicts, and what TIES keeps</h3>
        ${
          twoModels
            ? html`<div class="headline">
                  The models disagree in sign on ${percent(overallConflict)} of the weights.
                </div>
                <l2s-chart .spec=${this.charts?.conflicts} chart-title="Sign conflicts per layer"></l2s-chart>`
            : nothing
        }
        <p class="hint" data-testid="inspect-signs-caption">${signsCaption(report)}</p>
        <div class="headline" data-testid="inspect-ties-headline">
          TIES keeps ${percent(keep.entries)} of entries holding ${percent(keep.energy)} of the energy
          (${percent(keep.l1)} of the L1 mass) of ${report.focus}’s task vector (${density}).
        </div>
        <l2s-chart .spec=${this.charts?.ties} chart-title="What TIES keeps per layer"></l2s-chart>
        <figcaption data-testid="inspect-ties-caption">${tiesCaption(report)}</figcaption>
      </figure>
    `;
  }

  private renderBeforeAfter(report: TaskVectorInspection) {
    const pair = this.mergedAndSystem2(report);
    if (!pair || !this.charts?.beforeAfter) return nothing;
    return html`
      <figure data-testid="inspect-before-after" data-state="done">
        <h3>The merged model against System 2</h3>
        <l2s-chart
          .spec=${this.charts.beforeAfter}
          chart-title="Merged model against System 2 per layer"
        ></l2s-chart>
        <figcaption data-testid="inspect-before-after-caption">
          ${beforeAfterCaption(report, pair.merged, pair.system2)}
        </figcaption>
      </figure>
    `;
  }

  private renderSpectrum(report: TaskVectorInspection) {
    const result = this.spectrum?.tensor === this.spectrumTensor ? this.spectrum : undefined;
    const spec = result?.spectrum;
    const select = html`<label
      >Tensor
      <select
        class="tensor"
        data-testid="inspect-spectrum-tensor"
        @change=${(e: Event) => void this.loadSpectrum((e.target as HTMLSelectElement).value)}
      >
        ${report.matrices.map((n) => html`<option value=${n} ?selected=${n === this.spectrumTensor}>${n}</option>`)}
      </select></label
    >`;
    if (!spec || this.spectrumState !== 'done') {
      return html`<figure data-testid="inspect-spectrum" data-state=${this.spectrumState}>
        <h3>Singular spectrum of one task vector</h3>
        ${select}
        <p class=${this.spectrumState === 'error' ? 'error' : 'hint'}>${this.spectrumMessage}</p>
      </figure>`;
    }
    const min = Math.min(spec.rows, spec.cols);
    const r = spec.normalized.length;
    const rankText = (rank: number | null) => (rank === null ? `more than ${r}` : String(rank));
    return html`
      <figure
        data-testid="inspect-spectrum"
        data-state="done"
        data-tensor=${result.tensor}
        data-model=${result.model}
        data-rank90=${String(spec.rank90)}
        data-rank99=${String(spec.rank99)}
        data-full-rank=${String(min)}
      >
        <h3>Singular spectrum of one task vector</h3>
        ${select}
        <div class="headline">
          ${result.model}: rank ${rankText(spec.rank90)} of ${min} holds 90% of the energy, rank
          ${rankText(spec.rank99)} holds 99%.
        </div>
        <l2s-chart .spec=${this.spectrumSpec} chart-title="Singular spectrum of ${result.tensor}"></l2s-chart>
        <figcaption data-testid="inspect-spectrum-caption">
          ${spectrumCaption({
            model: result.model,
            tensor: result.tensor,
            fullRank: min,
            rank90: spec.rank90,
            rank99: spec.rank99,
            computed: r,
          })}
        </figcaption>
      </figure>
    `;
  }

  override render() {
    const report = this.report;
    return html`
      <section>
        <h2>Inspect</h2>
        ${this.renderControls()}
        <p data-testid="inspect-status" data-state=${this.state} class=${this.state === 'error' ? 'error' : 'hint'}>
          ${this.message}
        </p>
        ${this.renderProgress()}
        ${
          report
            ? html`<div class="figures">
              ${this.renderNorms(report)} ${this.renderSigns(report)} ${this.renderSpectrum(report)}
              ${this.renderBeforeAfter(report)}
            </div>`
            : nothing
        }
      </section>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-inspect-panel': L2sInspectPanel;
  }
}
