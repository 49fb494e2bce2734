/**
 * <l2s-inspect-panel>: pictures of what a merge works with, computed in the engine worker from the
 * stored weights: per-layer task-vector norms, sign conflicts between models, what TIES' trimming
 * keeps, and the singular spectrum of one task vector. Charts are inline SVG, drawn here.
 *
 * The base and the models come from the recipe in the editor; other library models can be ticked
 * to compare with them (the demo ticks its instruct model, so sign conflicts have two models).
 */
import { css, html, LitElement, nothing, type PropertyValues, svg, type TemplateResult } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import type { InspectProgress, SpectrumInspection, TaskVectorInspection } from '../inspect/inspect-models';
import { conflictFraction, keptShares, relativeNorm } from '../inspect/task-vector-stats';
import { defaultSpectrumTensor } from '../inspect/tensor-groups';
import { parseRecipe } from '../recipe';
import type { MergeRecipe, ParameterSetting } from '../recipe/recipe';
import type { ModelRecord } from '../store/library';
import { callback, type Engine, newRunId } from '../worker/client';
import { panelStyles } from './panel-styles';

type ViewState = 'idle' | 'running' | 'done' | 'error';

/** The paper's TIES setting (trim 80%, keep 20%), used when the recipe gives no density. */
const PAPER_TIES_DENSITY = 0.2;

const MODEL_COLORS = ['#1c5fb8', '#d9480f', '#2b8a3e', '#862e9c', '#b02a37', '#0b7285'];
const ATTENTION_COLOR = '#3b6fd0';
const MLP_COLOR = '#e8890c';

/** Chart frame in SVG user units; the SVG scales to its box. */
const W = 360;
const H = 200;
const M = { left: 40, right: 36, top: 12, bottom: 30 };

const percent = (x: number, digits = 0) => (Number.isFinite(x) ? `${(100 * x).toFixed(digits)}%` : '–');

function scale(d0: number, d1: number, r0: number, r1: number): (v: number) => number {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

/** About `count` round tick values from 0 to at least `max`. */
function niceTicks(max: number, count = 4): number[] {
  const top = max > 0 && Number.isFinite(max) ? max : 1;
  const raw = top / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let v = 0; v <= top + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < top) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

function formatTick(v: number): string {
  if (v === 0) return '0';
  return Math.abs(v) >= 0.01 && Math.abs(v) < 1000 ? String(Number(v.toPrecision(3))) : v.toExponential(0);
}

/** Left axis with grid lines, bottom axis with layer (or rank) labels. */
function axes(
  yTicks: number[],
  y: (v: number) => number,
  yLabel: (v: number) => string,
  xTicks: number[],
  x: (v: number) => number,
  xTitle: string,
): TemplateResult {
  return svg`
    ${yTicks.map(
      (t) => svg`<line class="grid" x1=${M.left} x2=${W - M.right} y1=${y(t)} y2=${y(t)}></line>
        <text class="tick" x=${M.left - 4} y=${y(t) + 3} text-anchor="end">${yLabel(t)}</text>`,
    )}
    <line class="axis" x1=${M.left} x2=${W - M.right} y1=${H - M.bottom} y2=${H - M.bottom}></line>
    ${xTicks.map((t) => svg`<text class="tick" x=${x(t)} y=${H - M.bottom + 13} text-anchor="middle">${t}</text>`)}
    <text class="title" x=${(M.left + W - M.right) / 2} y=${H - 3} text-anchor="middle">${xTitle}</text>
  `;
}

/** Every layer index, or about a dozen evenly spaced ones for deep models. */
function layerTicks(layers: number): number[] {
  const step = Math.max(1, Math.ceil(layers / 12));
  return Array.from({ length: Math.ceil(layers / step) }, (_, i) => i * step);
}

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
      svg {
        width: 100%;
        height: auto;
        display: block;
      }
      svg .grid {
        stroke: #eceff4;
      }
      svg .axis {
        stroke: #8a93a3;
      }
      svg .tick,
      svg .title {
        font-size: 10px;
        fill: #5d6677;
      }
      svg .marker {
        stroke: #6b7383;
        stroke-dasharray: 3 3;
      }
      svg .marker-label {
        font-size: 10px;
        fill: #1d2330;
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
      .swatch.dashed {
        background: repeating-linear-gradient(90deg, currentColor 0 4px, transparent 4px 7px) !important;
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
  private runId?: string;
  private spectrumRunId?: string;

  protected override willUpdate(changed: PropertyValues<this>): void {
    if (changed.has('recipeText')) {
      try {
        this.recipe = this.recipeText.trim() ? parseRecipe(this.recipeText, 'recipe') : undefined;
      } catch {
        // The editor shows the parse error; inspection waits for a recipe that reads.
        this.recipe = undefined;
      }
    }
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
        <span>Base: <strong>${base}</strong></span>
        <span>Compare:</span>
        ${this.candidates.map(
          (name) => html`<label
            ><input
              type="checkbox"
              data-testid="inspect-model"
              data-name=${name}
              .checked=${selected.includes(name)}
              @change=${(e: Event) => this.toggle(name, (e.target as HTMLInputElement).checked)}
            />${name}</label
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
    const layers = report.layers.length;
    const series = report.models.flatMap((model, m) =>
      (['attention', 'mlp'] as const).map((block) => ({
        model,
        block,
        color: MODEL_COLORS[m % MODEL_COLORS.length],
        values: report.layers.map((l) => relativeNorm(l.norms[m][block])),
      })),
    );
    const max = Math.max(0, ...series.flatMap((s) => s.values.filter(Number.isFinite)));
    const yTicks = niceTicks(max);
    const y = scale(0, yTicks[yTicks.length - 1], H - M.bottom, M.top);
    const x = scale(0, Math.max(1, layers - 1), M.left + 8, W - M.right - 8);
    const line = (values: number[]) =>
      values
        .map((v, i) => (Number.isFinite(v) ? `${x(i).toFixed(1)},${y(v).toFixed(1)}` : ''))
        .filter(Boolean)
        .join(' ');
    const overall = report.totals.norms.map(relativeNorm);
    return html`
      <figure data-testid="inspect-norms" data-state="done">
        <h3>Task-vector size per layer</h3>
        <svg viewBox="0 0 ${W} ${H}" role="img" aria-label="Relative task-vector norm per layer">
          ${axes(yTicks, y, formatTick, layerTicks(layers), x, 'layer')}
          ${series.map(
            (s) => svg`<g>
              <polyline fill="none" stroke=${s.color} stroke-width="1.8"
                stroke-dasharray=${s.block === 'mlp' ? '5 3' : 'none'} points=${line(s.values)}></polyline>
              ${s.values.map((v, i) =>
                Number.isFinite(v)
                  ? svg`<circle cx=${x(i)} cy=${y(v)} r="2.6" fill=${s.block === 'mlp' ? '#fff' : s.color}
                      stroke=${s.color}><title>${s.model}, layer ${i} ${s.block}: ${v.toFixed(4)}</title></circle>`
                  : nothing,
              )}
            </g>`,
          )}
        </svg>
        <div class="legend">
          ${report.models.map(
            (model, m) => html`<span
              data-testid="inspect-norm-model"
              data-model=${model}
              data-value=${String(overall[m])}
              ><span class="swatch" style="background: ${MODEL_COLORS[m % MODEL_COLORS.length]}"></span>${model}
              <span class="num">${overall[m].toFixed(3)}</span></span
            >`,
          )}
          <span><span class="swatch" style="background: #555"></span>attention</span>
          <span style="color: #555"><span class="swatch dashed"></span>MLP</span>
        </div>
        <figcaption>
          ‖θ<sub>model</sub> − θ<sub>base</sub>‖ / ‖θ<sub>base</sub>‖ for each layer’s attention and MLP weights
          (legend: over the whole model): a merge adds a share of these task vectors to the fast System 1 base, so
          their size is how far each model can pull the merge towards its own behaviour.
        </figcaption>
      </figure>
    `;
  }

  private renderSigns(report: TaskVectorInspection) {
    const layers = report.layers.length;
    const x = scale(-0.5, Math.max(0.5, layers - 0.5), M.left, W - M.right);
    const band = (W - M.left - M.right) / Math.max(1, layers);
    const twoModels = report.models.length >= 2;
    const conflicts = report.layers.map((l) => ({
      attention: conflictFraction(l.signs.attention),
      mlp: conflictFraction(l.signs.mlp),
    }));
    const maxConflict = Math.max(
      0,
      ...conflicts.flatMap((c) => [c.attention, c.mlp]).filter(Number.isFinite),
    );
    const cTicks = niceTicks(Math.max(maxConflict, 0.1));
    const cy = scale(0, cTicks[cTicks.length - 1], H - M.bottom, M.top);
    const overallConflict = conflictFraction(report.totals.signs);

    const keep = keptShares(report.totals.ties);
    const perLayer = report.layers.map((l) => keptShares(l.ties));
    const ky = scale(0, 1, H - M.bottom, M.top);
    const kTicks = [0, 0.25, 0.5, 0.75, 1];
    const bar = (
      i: number,
      slot: number,
      slots: number,
      v: number,
      yOf: (v: number) => number,
      color: string,
      tip: string,
    ) => {
      if (!Number.isFinite(v)) return nothing;
      const w = (band * 0.8) / slots;
      const left = x(i) - band * 0.4 + slot * w;
      return svg`<rect x=${left} y=${yOf(v)} width=${Math.max(1, w - 1)} height=${Math.max(0, yOf(0) - yOf(v))}
        fill=${color}><title>${tip}</title></rect>`;
    };
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
              <svg viewBox="0 0 ${W} ${H}" role="img" aria-label="Sign conflicts per layer">
                ${axes(
                  cTicks,
                  cy,
                  (v) => percent(v),
                  layerTicks(layers),
                  (i) => x(i),
                  'layer',
                )}
                ${conflicts.map(
                  (c, i) => svg`
                    ${bar(i, 0, 2, c.attention, cy, ATTENTION_COLOR, `layer ${i} attention: ${percent(c.attention, 1)} in conflict`)}
                    ${bar(i, 1, 2, c.mlp, cy, MLP_COLOR, `layer ${i} MLP: ${percent(c.mlp, 1)} in conflict`)}`,
                )}
              </svg>
              <div class="legend">
                <span><span class="swatch" style="background: ${ATTENTION_COLOR}"></span>attention</span>
                <span><span class="swatch" style="background: ${MLP_COLOR}"></span>MLP</span>
              </div>`
            : html`<p class="hint">Tick a second model to compare signs.</p>`
        }
        <div class="headline" data-testid="inspect-ties-headline">
          TIES keeps ${percent(keep.entries)} of entries holding ${percent(keep.energy)} of the energy
          (${percent(keep.l1)} of the L1 mass) of ${report.focus}’s task vector (${density}).
        </div>
        <svg viewBox="0 0 ${W} ${H}" role="img" aria-label="Share of entries, L1 mass and energy TIES keeps per layer">
          ${axes(
            kTicks,
            ky,
            (v) => percent(v),
            layerTicks(layers),
            (i) => x(i),
            'layer',
          )}
          ${perLayer.map(
            (s, i) => svg`
              ${bar(i, 0, 3, s.entries, ky, '#9aa3b2', `layer ${i}: ${percent(s.entries, 1)} of entries kept`)}
              ${bar(i, 1, 3, s.l1, ky, '#5c7cfa', `layer ${i}: ${percent(s.l1, 1)} of the L1 mass kept`)}
              ${bar(i, 2, 3, s.energy, ky, '#2b8a3e', `layer ${i}: ${percent(s.energy, 1)} of the energy kept`)}`,
          )}
        </svg>
        <div class="legend">
          <span><span class="swatch" style="background: #9aa3b2"></span>entries</span>
          <span><span class="swatch" style="background: #5c7cfa"></span>L1 mass</span>
          <span><span class="swatch" style="background: #2b8a3e"></span>energy (L2²)</span>
        </div>
        <figcaption>
          Where task vectors push a weight in opposite directions, averaging cancels both, which is why TIES elects
          one sign per weight; and because a task vector’s energy sits in its few largest entries, TIES can drop most
          entries yet keep most of what the reasoning model learned.
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
    const r = spec.normalized.length;
    const positive = [...spec.normalized].filter((v) => v > 0);
    const floor = 10 ** Math.floor(Math.log10(Math.max(1e-6, Math.min(...positive, 1))));
    const decades = Math.round(-Math.log10(floor));
    const logY = scale(Math.log10(floor), 0, H - M.bottom, M.top);
    const y = (v: number) => logY(Math.log10(Math.max(floor, v)));
    const cy = scale(0, 1, H - M.bottom, M.top);
    const x = scale(1, Math.max(2, r), M.left + 4, W - M.right - 4);
    const step = Math.max(1, Math.ceil(r / 8 / 5) * 5);
    const xTicks = [1, ...Array.from({ length: Math.floor(r / step) }, (_, i) => (i + 1) * step)];
    const yTicks = Array.from({ length: decades + 1 }, (_, i) => 10 ** -i);
    const points = (values: ArrayLike<number>, yOf: (v: number) => number) =>
      Array.from(values, (v, i) => `${x(i + 1).toFixed(1)},${yOf(v).toFixed(1)}`).join(' ');
    const min = Math.min(spec.rows, spec.cols);
    const marker = (rank: number | null, label: string, dy: number) =>
      rank === null || rank < 1
        ? nothing
        : svg`<line class="marker" x1=${x(rank)} x2=${x(rank)} y1=${M.top} y2=${H - M.bottom}></line>
            <text class="marker-label" x=${x(rank) + 3} y=${M.top + dy}>${label} at rank ${rank}</text>`;
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
        <svg viewBox="0 0 ${W} ${H}" role="img" aria-label="Normalized singular values and cumulative energy">
          ${axes(yTicks, y, (v) => (v === 1 ? '1' : `1e${Math.round(Math.log10(v))}`), xTicks, x, spec.exact ? 'rank' : `rank (leading ${r} values)`)}
          ${[0, 0.5, 1].map(
            (t) => svg`<text class="tick" x=${W - M.right + 4} y=${cy(t) + 3}>${percent(t)}</text>`,
          )}
          <polyline fill="none" stroke="#1c5fb8" stroke-width="1.8" points=${points(spec.normalized, y)}></polyline>
          <polyline fill="none" stroke="#2b8a3e" stroke-width="1.8" stroke-dasharray="5 3"
            points=${points(spec.cumulativeEnergy, cy)}></polyline>
          ${marker(spec.rank90, '90%', 10)} ${marker(spec.rank99, '99%', 22)}
        </svg>
        <div class="legend">
          <span><span class="swatch" style="background: #1c5fb8"></span>σ<sub>i</sub> / σ<sub>1</sub> (log)</span>
          <span style="color: #24733a"><span class="swatch dashed"></span>cumulative energy (right axis)</span>
        </div>
        <figcaption>
          Sparse, low-rank task vectors are why TIES and the low-rank (SVD) merges keep the reasoning while dropping
          most of the delta: a few singular directions of ${result.tensor} carry most of what ${result.model}
          changed.
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
