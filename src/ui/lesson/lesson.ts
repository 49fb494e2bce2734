/**
 * <l2s-lesson>: "Learn L2S", a lesson a lecturer walks through with the arrow keys in about ten
 * minutes. Full-window presenter mode: large type, one idea per step, legible projected at 1280 x 720
 * and at 150% zoom. The pictures of the merge methods are computed from the models in the library
 * (the recipe's base and models), with the Inspect panel's code; the paper's results are charted from
 * its tables (src/lesson/paper-results.ts). Each step links to the part of the app that does it.
 *
 * Keys: → ↓ PageDown Space next; ← ↑ PageUp back; Home / End first / last; Escape closes. The step is
 * kept in the URL (`#learn/3`), so a reload or a bookmark opens the same step.
 */
import { css, html, LitElement, nothing, type PropertyValues, type TemplateResult } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { normsCaption, percent, signsCaption, spectrumCaption, tiesCaption } from '../../inspect/captions';
import type { SpectrumInspection, TaskVectorInspection } from '../../inspect/inspect-models';
import { keptShares } from '../../inspect/task-vector-stats';
import { defaultSpectrumTensor } from '../../inspect/tensor-groups';
import { LENGTHS_7B, PAPER, TABLE_1_5B, TABLE_7B } from '../../lesson/paper-results';
import { parseRecipe } from '../../recipe';
import type { ModelRecord } from '../../store/library';
import { folderPermission } from '../../store/linked-folder';
import { type Engine, newRunId } from '../../worker/client';
import '../charts/chart';
import type { ChartSpec } from '../charts/chart';
import { conflictsChart, normsChart, spectrumChart, tiesKeptChart } from '../charts/inspect-charts';
import { announceLibraryChanged, askToReadLinkedModels } from '../linked-permission';
import { onePointFiveBChart, scaleChart, sevenBChart } from './paper-charts';

/** Parts of the app a step can send the presenter to (element ids in <l2s-app>). */
export type AppSection = 'library' | 'recipe' | 'merge' | 'inspect' | 'compare' | 'experiment';

/** Asks the app to close the lesson and show a section (or load the demo first). */
export type LessonNavigateDetail = { section: AppSection; loadDemo?: boolean };

interface Step {
  id: string;
  title: string;
  body: () => TemplateResult;
  link?: { label: string; section: AppSection; loadDemo?: boolean };
}

/** Whether the loaded models give the lesson anything to picture, and what. */
type Pictures =
  | { state: 'none'; why: string }
  | { state: 'loading'; what: string }
  | { state: 'error'; message: string }
  /** Linked models whose folders the browser must be allowed to read again (asked on a click). */
  | { state: 'permission'; folders: string[] }
  | { state: 'done'; report: TaskVectorInspection; spectrum?: SpectrumInspection; synthetic: boolean };

const LEARN_HASH = /^#learn(?:\/(\d+))?$/;

/** The step a URL hash asks for (1-based in the URL), or undefined when it is not the lesson's. */
export function lessonStepFromHash(hash: string): number | undefined {
  const m = LEARN_HASH.exec(hash);
  if (!m) return undefined;
  return m[1] ? Math.max(0, Number(m[1]) - 1) : 0;
}

const r1_7b = TABLE_7B.find((r) => r.model === 'R1-Distill-7B');
const math7b = TABLE_7B.find((r) => r.model === 'Qwen2.5-Math-7B');
const ties7b = TABLE_7B.find((r) => r.model === 'TIES');
const average7b = TABLE_7B.find((r) => r.model === 'Average');
const r1_15 = TABLE_1_5B.find((r) => r.model === 'R1-Distill-1.5B');
const ties15 = TABLE_1_5B.find((r) => r.model === 'TIES');
const average15 = TABLE_1_5B.find((r) => r.model === 'Average');

@customElement('l2s-lesson')
export class L2sLesson extends LitElement {
  static override styles = css`
    :host {
      position: fixed;
      inset: 0;
      z-index: 100;
      display: block;
      background: #ffffff;
      color: #1d2330;
      font: clamp(17px, 1.25vw + 0.9vh, 32px) / 1.4 system-ui, sans-serif;
    }
    .deck {
      height: 100%;
      display: flex;
      flex-direction: column;
      outline: none;
    }
    header {
      display: flex;
      align-items: center;
      gap: 1em;
      padding: 0.5em 1.2em;
      border-bottom: 1px solid #d8dce5;
      font-size: 0.7em;
    }
    header .brand {
      font-weight: 600;
    }
    header .count {
      margin-left: auto;
      font-variant-numeric: tabular-nums;
      color: #4b5567;
    }
    .step {
      flex: 1;
      overflow: auto;
      padding: 0.8em 1.6em 0.4em;
      max-width: 64em;
      width: 100%;
      box-sizing: border-box;
      margin: 0 auto;
    }
    h2 {
      font-size: 1.6em;
      line-height: 1.15;
      margin: 0.2em 0 0.5em;
    }
    p,
    li {
      max-width: 46em;
    }
    p {
      margin: 0.4em 0;
    }
    ul {
      margin: 0.3em 0;
      padding-left: 1.2em;
    }
    .big {
      font-size: 1.25em;
    }
    .two {
      display: grid;
      grid-template-columns: 1fr 1fr;
      gap: 1em;
    }
    @media (max-width: 700px) {
      .two {
        grid-template-columns: 1fr;
      }
    }
    .card {
      border: 1px solid #d8dce5;
      border-radius: 0.4em;
      padding: 0.5em 0.8em;
    }
    .formula {
      font-family: ui-serif, Georgia, serif;
      font-size: 1.2em;
      margin: 0.4em 0;
    }
    .hint {
      color: #4b5567;
      font-size: 0.8em;
    }
    .error {
      color: #a4161a;
    }
    cite,
    .source {
      font-size: 0.7em;
      color: #4b5567;
      font-style: normal;
    }
    a {
      color: #1c5fb8;
    }
    footer {
      display: flex;
      gap: 0.6em;
      align-items: center;
      padding: 0.5em 1.2em;
      border-top: 1px solid #d8dce5;
      font-size: 0.7em;
      flex-wrap: wrap;
    }
    footer .spacer {
      flex: 1;
    }
    button {
      font: inherit;
      padding: 0.2em 0.8em;
    }
    .synthetic {
      display: inline-block;
      background: #fff3bf;
      color: #5c4200;
      border-radius: 0.3em;
      padding: 0 0.4em;
      font-size: 0.8em;
    }
  `;

  @property({ attribute: false }) engine?: Engine;
  @property({ attribute: false }) models: ModelRecord[] = [];
  @property() recipeText = '';
  /** Models pictured besides the recipe's (the demo's instruct model, so sign conflicts have two). */
  @property({ attribute: false }) suggested: string[] = [];
  /** Current step, 0-based. */
  @property({ type: Number }) step = 0;

  @state() private pictures: Pictures = { state: 'none', why: '' };
  private picturesKey = '';
  private runId?: string;
  private charts?: {
    norms: ChartSpec;
    conflicts: ChartSpec;
    ties: ChartSpec;
    spectrum?: ChartSpec;
  };
  private readonly paperCharts = {
    sevenB: sevenBChart(),
    oneFive: onePointFiveBChart(),
    scale: scaleChart(),
  };

  private readonly steps: Step[] = [
    {
      id: 'intro',
      title: 'Shorter reasoning by merging two models',
      body: () => html`
        <p class="big">
          Reasoning models think out loud for thousands of tokens. Merging one with a fast, terse model of the same
          family gives a model that answers about as well with half the tokens or fewer — no training, no data.
        </p>
        <p>
          This page merges the two models in your browser, on your own GPU, shows what the merge does to their
          weights, and lets you ask the models side by side.
        </p>
        <p class="source">
          After ${PAPER.authors}, “${PAPER.title}”, <a href=${PAPER.url} target="_blank" rel="noopener">arXiv
          ${PAPER.arxiv}</a>.
        </p>
      `,
    },
    {
      id: 'systems',
      title: 'System 1 and System 2',
      body: () => html`
        <div class="two">
          <div class="card">
            <strong>System 1: fast and short</strong>
            <p>
              ${LENGTHS_7B.system1.model} answers a math question directly, in ${LENGTHS_7B.system1.min} to
              ${LENGTHS_7B.system1.max} tokens on average across the paper's six benchmarks.
            </p>
          </div>
          <div class="card">
            <strong>System 2: slow and deliberate</strong>
            <p>
              ${LENGTHS_7B.system2.model} (distilled from DeepSeek-R1) reasons step by step, re-checks itself, and
              spends ${LENGTHS_7B.system2.min} to ${LENGTHS_7B.system2.max} tokens on the same questions.
            </p>
          </div>
        </div>
        <p>
          The slow thinker is far better on hard problems (average accuracy ${r1_7b?.average} against
          ${math7b?.average}), but it is just as slow on easy ones.
        </p>
      `,
      link: { label: 'Ask both models in Compare', section: 'compare' },
    },
    {
      id: 'overthinking',
      title: 'The overthinking problem',
      body: () => html`
        <p class="big">
          On grade-school problems (GSM8K) System 2 is barely more accurate — ${r1_7b?.scores[0]} against
          ${math7b?.scores[0]} at 7B — yet at 1.5B it writes ${r1_15?.tokens} tokens per answer.
        </p>
        <p>
          Much of that is reflection that changes nothing: “wait”, “let me double-check”, “let me just verify”. Long
          answers cost time, energy and money at every query. Long-to-Short (L2S) asks for the accuracy of System 2
          at the length of System 1.
        </p>
      `,
      link: { label: 'Count the tokens in Compare', section: 'compare' },
    },
    {
      id: 'task-vector',
      title: 'A task vector: what fine-tuning changed',
      body: () => html`
        <p class="formula">τ = θ<sub>System 2</sub> − θ<sub>System 1</sub></p>
        <p>
          Both models start from the same pretrained weights. Their difference, tensor by tensor, is a task vector:
          what training for long reasoning wrote into the weights.
        </p>
        ${this.renderPicture('norms')}
      `,
      link: { label: 'Inspect the task vectors', section: 'inspect' },
    },
    {
      id: 'merging',
      title: 'Merging: add back part of the task vector',
      body: () => html`
        <p class="formula">θ<sub>merged</sub> = θ<sub>System 1</sub> + λ · f(τ)</p>
        <p>
          A merge keeps System 1 and adds a processed share of the task vector. It takes minutes on one GPU and needs
          neither training nor data. The methods differ in f, the processing:
        </p>
        <ul>
          <li><strong>Average</strong> and <strong>task arithmetic</strong>: f(τ) = τ, scaled (λ 0.5 or 0.7).</li>
          <li><strong>TIES</strong>: keep only the largest entries of τ, elect one sign per weight.</li>
          <li><strong>DARE</strong>: drop entries at random and rescale the rest.</li>
          <li><strong>SVD methods</strong> (LoRE, Twin, low-rank task arithmetic): keep τ's main directions.</li>
          <li><strong>AIM</strong>: shrink τ where the base model's activations say a channel matters most.</li>
        </ul>
      `,
      link: { label: 'Write a recipe', section: 'recipe' },
    },
    {
      id: 'ties',
      title: 'TIES: trim, elect a sign, merge',
      body: () => html`
        <p>
          TIES keeps each tensor's largest 20% of task-vector entries (the paper's setting), and where several task
          vectors disagree in sign, keeps only the side with more mass, so opposite changes do not cancel.
        </p>
        ${this.renderPicture('ties')}
      `,
      link: { label: 'Merge with TIES', section: 'recipe' },
    },
    {
      id: 'dare-svd',
      title: 'DARE and the SVD methods',
      body: () => html`
        <p>
          <strong>DARE</strong> drops a random share p of the entries (the paper: p = 0.3) and rescales the rest: in
          expectation it keeps the same share of the energy as of the entries, where TIES keeps the largest.
          <strong>SVD methods</strong> keep the leading singular directions of each task-vector matrix; they work when
          a task vector is low-rank.
        </p>
        ${this.renderPicture('spectrum')}
      `,
      link: { label: 'See the spectra in Inspect', section: 'inspect' },
    },
    {
      id: 'results-7b',
      title: 'The paper at 7B: half the length, the same accuracy',
      body: () => html`
        <l2s-chart
          .spec=${this.paperCharts.sevenB}
          chart-title="Paper Table 1 (7B) accuracy against length change"
          .fontSize=${this.chartFontSize}
          .maxHeight=${this.chartMaxHeight}
        ></l2s-chart>
        <p>
          TIES keeps R1's average accuracy (${ties7b?.average} vs ${r1_7b?.average}) with
          ${percent(-(ties7b?.lengthChange ?? 0))} shorter answers; AIM-TIES is shortest. Plain averaging loses
          accuracy (${average7b?.average}).
        </p>
        <cite
          >${PAPER.authors}, Table 1: Qwen2.5-Math-7B + DeepSeek-R1-Distill-Qwen-7B, six math benchmarks; length =
          mean of (length / R1's − 1). <a href=${PAPER.url} target="_blank" rel="noopener">arXiv ${PAPER.arxiv}</a></cite
        >
      `,
    },
    {
      id: 'results-1-5b',
      title: 'The paper at 1.5B: shorter still, but fragile',
      body: () => html`
        <l2s-chart
          .spec=${this.paperCharts.oneFive}
          chart-title="Paper Table 2 (1.5B) GSM8K accuracy against tokens"
          .fontSize=${this.chartFontSize}
          .maxHeight=${this.chartMaxHeight}
        ></l2s-chart>
        <p>
          TIES answers GSM8K in ${ties15?.tokens} tokens instead of ${r1_15?.tokens} at almost the same accuracy
          (${ties15?.gsm8k} vs ${r1_15?.gsm8k}).
        </p>
        <cite
          >${PAPER.authors}, Table 2: Qwen2.5-Math-1.5B + DeepSeek-R1-Distill-Qwen-1.5B, GSM8K.
          <a href=${PAPER.url} target="_blank" rel="noopener">arXiv ${PAPER.arxiv}</a></cite
        >
      `,
      link: { label: 'Run this experiment yourself', section: 'experiment' },
    },
    {
      id: 'scale',
      title: 'Model scale matters',
      body: () => html`
        <div class="two">
          <div>
            <p>
              At 1.5B, averaging collapses (GSM8K ${average15?.gsm8k}) while TIES holds (${ties15?.gsm8k}): small models
              tolerate less interference between the two sets of weights. Every method loses on AIME24 at 1.5B.
            </p>
            <p>
              At 14B and 32B the answers shrink much less: the large System 2 models already overthink less, and their
              task vectors merge less cleanly.
            </p>
          </div>
          <l2s-chart
            .spec=${this.paperCharts.scale}
            chart-title="TIES length change by model size"
            .fontSize=${this.chartFontSize}
          .maxHeight=${this.chartMaxHeight}
          ></l2s-chart>
        </div>
        <cite>${PAPER.authors}, Tables 1-4. <a href=${PAPER.url} target="_blank" rel="noopener">arXiv ${PAPER.arxiv}</a></cite>
      `,
    },
    {
      id: 'try',
      title: 'Try it',
      body: () => html`
        <ul>
          <li>
            <strong>The built-in demo</strong> loads three tiny Qwen2-shaped models generated in the page:
            <span class="synthetic">synthetic, random weights</span>. They show what a merge does to tensors (every
            picture in this lesson), but they cannot generate text.
          </li>
          <li>
            <strong>The paper's 1.5B experiment</strong> downloads Qwen2.5-Math-1.5B and DeepSeek-R1-Distill-Qwen-1.5B
            (about 7 GB), merges them with the paper's TIES setting, and asks both the same questions: that is where
            the shorter answers show.
          </li>
        </ul>
        <p>
          <button data-testid="lesson-demo" @click=${() => this.navigate({ section: 'inspect', loadDemo: true })}>
            Load the demo and inspect it
          </button>
          <button data-testid="lesson-experiment" @click=${() => this.navigate({ section: 'experiment' })}>
            Run the 1.5B experiment
          </button>
        </p>
      `,
    },
  ];

  get stepCount(): number {
    return this.steps.length;
  }

  private get chartFontSize(): number {
    return Math.round(Math.max(13, Math.min(22, window.innerWidth / 70)));
  }

  /** Charts leave room for the title, the text under them and the controls on one screen. */
  private get chartMaxHeight(): number {
    return Math.round(Math.max(160, window.innerHeight * 0.42));
  }

  override connectedCallback(): void {
    super.connectedCallback();
    window.addEventListener('keydown', this.onKey);
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    window.removeEventListener('keydown', this.onKey);
    if (this.runId) void this.engine?.api.cancel(this.runId);
  }

  protected override firstUpdated(): void {
    this.renderRoot.querySelector<HTMLElement>('.deck')?.focus();
  }

  protected override willUpdate(changed: PropertyValues<this>): void {
    if (changed.has('step')) this.step = Math.max(0, Math.min(this.steps.length - 1, this.step));
    if (
      changed.has('models') ||
      changed.has('recipeText') ||
      changed.has('engine') ||
      changed.has('suggested')
    ) {
      void this.loadPictures();
    }
  }

  protected override updated(changed: PropertyValues<this>): void {
    if (changed.has('step')) {
      const hash = `#learn/${this.step + 1}`;
      if (location.hash !== hash) history.replaceState(null, '', hash);
      this.renderRoot.querySelector('.step')?.scrollTo(0, 0);
    }
  }

  private readonly onKey = (e: KeyboardEvent) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const target = e.composedPath()[0] as HTMLElement | undefined;
    const onControl = target && ['BUTTON', 'A', 'INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName);
    switch (e.key) {
      case 'ArrowRight':
      case 'ArrowDown':
      case 'PageDown':
        this.go(this.step + 1);
        break;
      case ' ':
        if (onControl) return;
        this.go(this.step + 1);
        break;
      case 'ArrowLeft':
      case 'ArrowUp':
      case 'PageUp':
        this.go(this.step - 1);
        break;
      case 'Home':
        this.go(0);
        break;
      case 'End':
        this.go(this.steps.length - 1);
        break;
      case 'Escape':
        this.close();
        break;
      default:
        return;
    }
    e.preventDefault();
  };

  private go(step: number): void {
    this.step = Math.max(0, Math.min(this.steps.length - 1, step));
  }

  private close(): void {
    this.dispatchEvent(new CustomEvent('lesson-close', { bubbles: true, composed: true }));
  }

  private navigate(detail: LessonNavigateDetail): void {
    this.dispatchEvent(
      new CustomEvent<LessonNavigateDetail>('lesson-navigate', { detail, bubbles: true, composed: true }),
    );
  }

  /** Base and models to picture: the recipe's, when the library has them. */
  private pictureModels(): { base: string; models: string[] } | { why: string } {
    let recipe: ReturnType<typeof parseRecipe> | undefined;
    try {
      recipe = this.recipeText.trim() ? parseRecipe(this.recipeText, 'recipe') : undefined;
    } catch {
      recipe = undefined;
    }
    if (!recipe?.baseModel)
      return { why: 'Load the demo or write a recipe to see these pictures for real models.' };
    const present = new Set(this.models.map((m) => m.name));
    const models = [...new Set([...recipe.models.map((m) => m.model), ...this.suggested])].filter(
      (n) => n !== recipe.baseModel && present.has(n),
    );
    if (!present.has(recipe.baseModel) || models.length === 0) {
      return { why: `The recipe's models are not all in the library yet (base ${recipe.baseModel}).` };
    }
    return { base: recipe.baseModel, models };
  }

  private async loadPictures(): Promise<void> {
    const engine = this.engine;
    const pick = this.pictureModels();
    if (!engine || 'why' in pick) {
      this.pictures = { state: 'none', why: 'why' in pick ? pick.why : '' };
      this.picturesKey = '';
      return;
    }
    const key = JSON.stringify(pick);
    if (key === this.picturesKey) return;
    this.picturesKey = key;
    if (this.runId) void engine.api.cancel(this.runId);
    const runId = newRunId();
    this.runId = runId;
    const synthetic = [pick.base, ...pick.models].some(
      (name) => this.models.find((m) => m.name === name)?.source.kind === 'demo',
    );
    this.pictures = { state: 'loading', what: [pick.base, ...pick.models].join(', ') };
    try {
      // Pictures load without a click, so they cannot ask for a linked folder: they offer a button.
      const folders = await this.foldersNeedingPermission([pick.base, ...pick.models]);
      if (this.runId !== runId) return;
      if (folders.length > 0) {
        this.pictures = { state: 'permission', folders };
        this.picturesKey = '';
        return;
      }
      const report = await engine.api.inspect(runId, {
        base: pick.base,
        models: pick.models,
        focus: pick.models[0],
        density: [0.2],
      });
      if (this.runId !== runId) return;
      const tensor = defaultSpectrumTensor(report.matrices);
      const spectrum = tensor
        ? await engine.api.inspectSpectrum(runId, { base: pick.base, model: pick.models[0], tensor })
        : undefined;
      if (this.runId !== runId) return;
      this.charts = {
        norms: normsChart(report),
        conflicts: conflictsChart(report),
        ties: tiesKeptChart(report),
        spectrum: spectrum && spectrumChart(spectrum.spectrum, spectrum.model),
      };
      this.pictures = { state: 'done', report, spectrum, synthetic };
    } catch (e) {
      if (this.runId !== runId) return;
      const error = e as Error;
      this.pictures =
        error.name === 'AbortError'
          ? { state: 'none', why: '' }
          : { state: 'error', message: `${error.name}: ${error.message}` };
      this.picturesKey = '';
    } finally {
      if (this.runId === runId) this.runId = undefined;
    }
  }

  private async foldersNeedingPermission(names: readonly string[]): Promise<string[]> {
    const folders: string[] = [];
    for (const m of this.models) {
      if (!m.link || !names.includes(m.name)) continue;
      const permission = await folderPermission(m.link.handle).catch(() => 'prompt' as const);
      if (permission !== 'granted') folders.push(m.link.handle.name);
    }
    return folders;
  }

  private async allowPictureModels(): Promise<void> {
    const pick = this.pictureModels();
    if ('why' in pick) return;
    const permission = await askToReadLinkedModels(this.models, [pick.base, ...pick.models], 'pictured');
    if (permission.asked) announceLibraryChanged(this);
    if (permission.refusal) {
      this.pictures = { state: 'error', message: permission.refusal };
      return;
    }
    this.picturesKey = '';
    await this.loadPictures();
  }

  private renderPicture(kind: 'norms' | 'ties' | 'spectrum') {
    const p = this.pictures;
    if (p.state === 'permission') {
      return html`<p class="hint" data-testid="lesson-picture" data-state="permission">
        These pictures read the linked folder${p.folders.length > 1 ? 's' : ''} ${p.folders.join(', ')}, which the
        browser needs your permission to read again (it asks after a reload).
        <button data-testid="lesson-allow" @click=${this.allowPictureModels}>Allow reading</button>
      </p>`;
    }
    if (p.state === 'none')
      return html`<p class="hint" data-testid="lesson-picture" data-state="none">${p.why}</p>`;
    if (p.state === 'loading') {
      return html`<p class="hint" data-testid="lesson-picture" data-state="loading">
        Computing this picture from ${p.what}…
      </p>`;
    }
    if (p.state === 'error') {
      return html`<p class="error" data-testid="lesson-picture" data-state="error">${p.message}</p>`;
    }
    const { report, spectrum } = p;
    const models = [report.base, ...report.models].join(', ');
    const from = html`<p class="hint">
      Computed now from ${models}${p.synthetic ? html` — <span class="synthetic">synthetic demo models</span>` : nothing}.
    </p>`;
    const fontSize = this.chartFontSize;
    if (kind === 'norms') {
      return html`<div data-testid="lesson-picture" data-state="done" data-kind="norms">
        <l2s-chart .spec=${this.charts?.norms} chart-title="Task-vector size per layer" .fontSize=${fontSize} .maxHeight=${this.chartMaxHeight}></l2s-chart>
        <p data-testid="lesson-caption">${normsCaption(report)}</p>
        ${from}
      </div>`;
    }
    if (kind === 'ties') {
      const keep = keptShares(report.totals.ties);
      return html`<div
        data-testid="lesson-picture"
        data-state="done"
        data-kind="ties"
        data-kept-energy=${String(keep.energy)}
      >
        <div class="two">
          ${
            report.models.length >= 2
              ? html`<l2s-chart .spec=${this.charts?.conflicts} chart-title="Sign conflicts per layer" .fontSize=${fontSize} .maxHeight=${this.chartMaxHeight}></l2s-chart>`
              : nothing
          }
          <l2s-chart .spec=${this.charts?.ties} chart-title="What TIES keeps per layer" .fontSize=${fontSize} .maxHeight=${this.chartMaxHeight}></l2s-chart>
        </div>
        <p data-testid="lesson-caption">${tiesCaption(report)} ${report.models.length >= 2 ? signsCaption(report) : ''}</p>
        ${from}
      </div>`;
    }
    if (!spectrum || !this.charts?.spectrum) {
      return html`<p class="hint" data-testid="lesson-picture" data-state="none">
        These models have no 2-D task vector to take a spectrum of.
      </p>`;
    }
    const s = spectrum.spectrum;
    const keep = keptShares(report.totals.ties);
    return html`<div data-testid="lesson-picture" data-state="done" data-kind="spectrum">
      <l2s-chart .spec=${this.charts.spectrum} chart-title="Singular spectrum of ${spectrum.tensor}" .fontSize=${fontSize} .maxHeight=${this.chartMaxHeight}></l2s-chart>
      <p data-testid="lesson-caption">
        ${spectrumCaption({
          model: spectrum.model,
          tensor: spectrum.tensor,
          fullRank: Math.min(s.rows, s.cols),
          rank90: s.rank90,
          rank99: s.rank99,
          computed: s.normalized.length,
        })}
        DARE keeping ${percent(keep.entries)} of entries at random would keep about ${percent(keep.entries)} of the
        energy; TIES' largest ${percent(keep.entries)} keep ${percent(keep.energy)}.
      </p>
      ${from}
    </div>`;
  }

  override render() {
    const step = this.steps[this.step];
    const last = this.steps.length - 1;
    return html`
      <div
        class="deck"
        role="dialog"
        aria-modal="true"
        aria-label="Learn L2S"
        tabindex="-1"
        data-testid="lesson"
        data-step=${step.id}
        data-index=${String(this.step)}
      >
        <header>
          <span class="brand">Learn L2S</span>
          <span>${step.title}</span>
          <span class="count" aria-live="polite">${this.step + 1} / ${this.steps.length}</span>
        </header>
        <section class="step" aria-labelledby="step-title">
          <h2 id="step-title" data-testid="lesson-title">${step.title}</h2>
          ${step.body()}
        </section>
        <footer>
          <button data-testid="lesson-prev" ?disabled=${this.step === 0} @click=${() => this.go(this.step - 1)}>
            ← Back
          </button>
          <button data-testid="lesson-next" ?disabled=${this.step === last} @click=${() => this.go(this.step + 1)}>
            Next →
          </button>
          ${
            step.link
              ? html`<button
                data-testid="lesson-link"
                @click=${() => step.link && this.navigate({ section: step.link.section, loadDemo: step.link.loadDemo })}
              >
                ${step.link.label}
              </button>`
              : nothing
          }
          <span class="spacer"></span>
          <span class="hint">← → to move, Esc to close</span>
          <button data-testid="lesson-close" @click=${this.close}>Close</button>
        </footer>
      </div>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-lesson': L2sLesson;
  }
}
