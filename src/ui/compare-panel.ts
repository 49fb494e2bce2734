/**
 * <l2s-compare-panel>: ask System 2, the merge and System 1 the same question, one model after the
 * other in the runtime worker, with the text streaming; per model the tokens generated, tokens/s, time
 * and the extracted final answer. "Run all questions" grades every model on the first N built-in
 * (or GSM8K test) questions and fills the paper's table: accuracy, mean tokens, and the length change
 * relative to the first model (System 2), len / len_S2 - 1.
 *
 * The default system message is the paper's evaluation prompt (Qwen2.5-Math's qwen25-math-cot),
 * rendered through each model's own chat template; generation is greedy, as the paper evaluates.
 */
import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { answersMatch, extractAnswer } from '../eval/answer';
import { DEFAULT_DATASETS_URL, fetchGsm8kTest } from '../eval/gsm8k';
import { BUILTIN_QUESTIONS, type EvalQuestion, PAPER_SYSTEM_PROMPT } from '../eval/questions';
import {
  type EvalResult,
  type EvalTableRow,
  formatLengthChange,
  scoreResponse,
  summarize,
} from '../eval/score';
import type { ChatMessage } from '../model/tokenizer';
import type { ModelRecord } from '../store/library';
import type { BackendChoice } from '../worker/backend';
import { callback, newRunId } from '../worker/client';
import type { OutputInfo } from '../worker/opfs-output';
import type { GenerationOutcome, RuntimeModelSource, StreamedToken } from '../worker/runtime.worker';
import { type Runtime, startRuntime } from '../worker/runtime-client';
import { compareDefaults } from './compare-defaults';
import { announceLibraryChanged, askToReadLinkedModels } from './linked-permission';
import { panelStyles } from './panel-styles';

/** The paper's evaluation system prompt (Qwen2.5-Math toolkit, prompt type qwen25-math-cot). */

const SLOT_COUNT = 3;
const SLOT_ROLES = ['System 2', 'Merged', 'System 1'];
const DEFAULT_MAX_NEW_TOKENS = 1024;
const DEFAULT_RUN_ALL_COUNT = 10;
/** How long Stop waits for the run to end before it ends the runtime worker instead. */
const STOP_GRACE_MS = 5000;
/** Positions kept for the prompt beside the token budget when sizing a model's KV cache. */
const PROMPT_ALLOWANCE = 1024;

type SlotState = 'waiting' | 'loading' | 'running' | 'done' | 'stopped' | 'error';
type PanelState = 'idle' | 'running' | 'done' | 'error';

interface SlotResult {
  model: string;
  state: SlotState;
  text: string;
  tokens: number;
  /** Token events that reached the page while the model generated. */
  streamed: number;
  outcome?: GenerationOutcome;
  backend?: 'cpu' | 'gpu';
  notice?: string;
  error?: string;
  /** The expected answer, when the question was picked from a list and not edited. */
  gold?: string;
}

interface ModelOption {
  /** `lib:<name>` or `out:<output id>`. */
  key: string;
  label: string;
  source: RuntimeModelSource;
}

const formatSeconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;

/** The `compare-table` event: the finished rows, and the model name in each slot (System 2, merged, System 1). */
export interface CompareTableDetail {
  rows: EvalTableRow[];
  slots: (string | undefined)[];
}

@customElement('l2s-compare-panel')
export class L2sComparePanel extends LitElement {
  static override styles = [
    panelStyles,
    css`
      .row {
        display: flex;
        gap: 12px;
        flex-wrap: wrap;
        align-items: flex-end;
      }
      /* Long model names and questions must not widen the page on a phone. */
      .row > label {
        max-width: 100%;
        min-width: 0;
      }
      select {
        max-width: 100%;
      }
      .table-wrap {
        overflow-x: auto;
      }
      textarea {
        font: inherit;
        width: 100%;
        box-sizing: border-box;
      }
      .results {
        display: grid;
        grid-template-columns: repeat(auto-fit, minmax(260px, 1fr));
        gap: 10px;
        margin-top: 10px;
      }
      .result {
        border: 1px solid #e0e4ec;
        border-radius: 6px;
        padding: 6px 10px;
        background: #fff;
      }
      .result h3 {
        font-size: 14px;
        margin: 0 0 4px;
      }
      .result pre {
        font: 12px/1.4 ui-monospace, monospace;
        white-space: pre-wrap;
        word-break: break-word;
        max-height: 18em;
        overflow: auto;
        background: #f5f7fa;
        padding: 6px;
        margin: 4px 0;
      }
      .stats {
        font-variant-numeric: tabular-nums;
        font-size: 13px;
      }
      .correct {
        color: #2b8a3e;
      }
      .wrong {
        color: #a4161a;
      }
      select {
        max-width: 100%;
      }
      td.num,
      th.num {
        text-align: right;
        font-variant-numeric: tabular-nums;
      }
    `,
  ];

  @property({ attribute: false }) models: ModelRecord[] = [];
  @property({ attribute: false }) outputs: OutputInfo[] = [];
  /** The output of the last merge (the default middle model). */
  @property() outputId?: string;
  @property() recipeText = '';
  /** Dataset viewer base URL for GSM8K (`?datasets=` on the page). */
  @property() datasetsUrl = DEFAULT_DATASETS_URL;

  /** Model keys per slot ('' = none); follows the recipe until the user picks. */
  @state() private slots: string[] = ['', '', ''];
  @state() private systemPrompt = PAPER_SYSTEM_PROMPT;
  @state() private question = BUILTIN_QUESTIONS[0].question;
  /** The gold answer of the picked question, while the question text is unchanged. */
  @state() private gold?: { question: string; answer: string } = {
    question: BUILTIN_QUESTIONS[0].question,
    answer: BUILTIN_QUESTIONS[0].answer,
  };
  @state() private maxNewTokens = DEFAULT_MAX_NEW_TOKENS;
  @state() private device: BackendChoice = 'auto';
  @state() private questionSet: 'builtin' | 'gsm8k' = 'builtin';
  @state() private gsm8k: EvalQuestion[] = [];
  @state() private gsm8kState: 'idle' | 'loading' | 'done' | 'error' = 'idle';
  @state() private gsm8kMessage = '';
  @state() private runAllCount = DEFAULT_RUN_ALL_COUNT;
  @state() private state: PanelState = 'idle';
  @state() private message = '';
  /** Runs started since the page opened, so observers can tell one run's end from the last one's. */
  @state() private runs = 0;
  @state() private results: SlotResult[] = [];
  @state() private batch?: { done: number; total: number; label: string };
  @state() private evalResults: EvalResult[] = [];
  /** Models of `evalResults` that answered every question of the run, in slot order. */
  @state() private evalComplete: string[] = [];
  @state() private evalQuestions: EvalQuestion[] = [];
  private slotsPicked = false;
  /** The merge output the merged slot got by default, so a newer merge can take its place. */
  private mergedDefault = '';
  private runtime?: Runtime;
  private runId?: string;
  private stopRequested = false;

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.runtime?.terminate();
    this.runtime = undefined;
  }

  private options(): ModelOption[] {
    const library = this.models.map((m) => ({
      key: `lib:${m.name}`,
      label: m.source.kind === 'demo' ? `${m.name} (synthetic)` : m.name,
      source: { kind: 'library', name: m.name } as RuntimeModelSource,
    }));
    const outputs = this.outputs.map((o, i) => {
      const label = `merge output ${new Date(o.createdAt).toLocaleString()}${i === 0 ? ' (latest)' : ''}`;
      return {
        key: `out:${o.id}`,
        label,
        source: { kind: 'output', outputId: o.id, name: label } as RuntimeModelSource,
      };
    });
    return [...library, ...outputs];
  }

  protected override willUpdate(changed: PropertyValues<this>): void {
    const relevant = ['models', 'outputs', 'outputId', 'recipeText'] as const;
    if (!relevant.some((k) => changed.has(k))) return;
    const keys = new Set(this.options().map((o) => o.key));
    const pick = (key: string | undefined) => (key && keys.has(key) ? key : '');
    const latest = this.outputId ?? this.outputs[0]?.id;
    const merged = pick(latest && `out:${latest}`);
    if (this.slotsPicked) {
      // A new merge replaces the one the merged slot showed (or fills it when empty); other picks stay.
      if (
        merged &&
        merged !== this.mergedDefault &&
        (this.slots[1] === '' || this.slots[1] === this.mergedDefault)
      ) {
        this.slots = this.slots.map((k, i) => (i === 1 ? merged : k));
      }
      this.mergedDefault = merged;
      return;
    }
    const defaults = compareDefaults(
      this.recipeText,
      this.models.map((m) => m.name),
    );
    this.mergedDefault = merged;
    this.slots = [
      pick(defaults.system2 && `lib:${defaults.system2}`),
      merged,
      pick(defaults.system1 && `lib:${defaults.system1}`),
    ];
  }

  private chosen(): Array<{ slot: number; option: ModelOption; name: string }> {
    const options = new Map(this.options().map((o) => [o.key, o]));
    const picked: Array<{ slot: number; option: ModelOption; name: string }> = [];
    const seen = new Map<string, number>();
    this.slots.forEach((key, slot) => {
      const option = options.get(key);
      if (!option) return;
      // The same model twice gets two names, so the table keeps them apart.
      const count = (seen.get(option.label) ?? 0) + 1;
      seen.set(option.label, count);
      picked.push({ slot, option, name: count > 1 ? `${option.label} (${count})` : option.label });
    });
    return picked;
  }

  private messages(question: string): ChatMessage[] {
    const system = this.systemPrompt.trim();
    return [...(system ? [{ role: 'system', content: system }] : []), { role: 'user', content: question }];
  }

  private questionPool(): readonly EvalQuestion[] {
    return this.questionSet === 'gsm8k' ? this.gsm8k : BUILTIN_QUESTIONS;
  }

  private ensureRuntime(): Runtime {
    this.runtime ??= startRuntime();
    return this.runtime;
  }

  /**
   * The runtime worker reads linked folders but cannot ask for them: the run buttons (clicks) ask
   * for the linked models picked. False, with the reason shown, when the browser refuses one.
   */
  private async allowLinkedModels(): Promise<boolean> {
    if (this.state === 'running') return false;
    const names = this.chosen().flatMap(({ option }) =>
      option.source.kind === 'library' ? [option.source.name] : [],
    );
    const permission = await askToReadLinkedModels(this.models, names, 'run');
    if (permission.asked) announceLibraryChanged(this);
    if (!permission.refusal) return true;
    this.state = 'error';
    this.message = permission.refusal;
    return false;
  }

  private begin(message: string): boolean {
    if (this.state === 'running') return false;
    if (this.chosen().length === 0) {
      this.state = 'error';
      this.message = 'Pick at least one model to run.';
      return false;
    }
    if (!(Number.isInteger(this.maxNewTokens) && this.maxNewTokens >= 1)) {
      this.state = 'error';
      this.message = 'Max new tokens must be a whole number of at least 1.';
      return false;
    }
    const synthetic = this.chosen().filter(
      ({ option }) =>
        option.source.kind === 'library' &&
        this.models.find((m) => m.name === option.source.name)?.source.kind === 'demo',
    );
    if (synthetic.length) {
      this.state = 'error';
      this.message =
        `${synthetic.map((c) => c.name).join(', ')}: synthetic demo model${synthetic.length > 1 ? 's' : ''} ` +
        '(random weights, no chat template): they show what a merge does to tensors but cannot ' +
        'generate text. Import real models, or run the paper’s 1.5B experiment below.';
      return false;
    }
    this.state = 'running';
    this.runs++;
    this.stopRequested = false;
    this.message = message;
    return true;
  }

  private async load(runtime: Runtime, option: ModelOption, onNotice: (line: string) => void) {
    return runtime.guard(
      runtime.api.load(
        { source: option.source, device: this.device, maxContext: this.maxNewTokens + PROMPT_ALLOWANCE },
        callback(onNotice),
      ),
    );
  }

  /** One generation, streaming into `onToken`; resolves with the outcome (finishReason 'abort' on Stop). */
  private async generateOne(
    runtime: Runtime,
    question: string,
    onToken?: (t: StreamedToken) => void,
  ): Promise<GenerationOutcome> {
    const runId = newRunId();
    this.runId = runId;
    try {
      return await runtime.guard(
        runtime.api.generate(
          runId,
          { prompt: { messages: this.messages(question) }, maxNewTokens: this.maxNewTokens },
          callback((t: StreamedToken) => {
            onToken?.(t);
            return !this.stopRequested;
          }),
        ),
      );
    } finally {
      this.runId = undefined;
    }
  }

  private setSlot(index: number, patch: Partial<SlotResult>): void {
    this.results = this.results.map((r, i) => (i === index ? { ...r, ...patch } : r));
  }

  private async runQuestion(): Promise<void> {
    const question = this.question.trim();
    if (!question) {
      this.state = 'error';
      this.message = 'Type a question or pick one.';
      return;
    }
    if (!(await this.allowLinkedModels())) return;
    if (!this.begin('Running each model in turn…')) return;
    const chosen = this.chosen();
    const gold = this.gold?.question === question ? this.gold.answer : undefined;
    this.results = chosen.map(({ name }) => ({
      model: name,
      state: 'waiting',
      text: '',
      tokens: 0,
      streamed: 0,
      gold,
    }));
    const runtime = this.ensureRuntime();
    let failed = false;
    for (const [i, { option }] of chosen.entries()) {
      if (this.stopRequested) {
        this.setSlot(i, { state: 'stopped' });
        continue;
      }
      this.setSlot(i, { state: 'loading' });
      try {
        const info = await this.load(runtime, option, (line) => this.setSlot(i, { notice: line }));
        this.setSlot(i, { state: 'running', backend: info.backend });
        let text = '';
        let streamed = 0;
        const outcome = await this.generateOne(runtime, question, (t) => {
          text += t.text;
          streamed++;
          this.setSlot(i, { text, tokens: t.index + 1, streamed });
        });
        this.setSlot(i, {
          state: outcome.finishReason === 'abort' ? 'stopped' : 'done',
          text: outcome.text,
          tokens: outcome.tokenIds.length,
          outcome,
        });
      } catch (e) {
        if (this.stopRequested && (e as Error).name === 'AbortError') {
          this.setSlot(i, { state: 'stopped' });
          continue;
        }
        failed = true;
        this.forgetDeadRuntime(e);
        this.setSlot(i, { state: 'error', error: `${(e as Error).name}: ${(e as Error).message}` });
      }
    }
    await this.unload(runtime);
    this.finish(failed, this.stopRequested ? 'Stopped.' : 'Done: every model answered.');
  }

  private async runAll(): Promise<void> {
    const pool = this.questionPool();
    const count = Math.min(this.runAllCount, pool.length);
    if (!(Number.isInteger(this.runAllCount) && this.runAllCount >= 1) || count === 0) {
      this.state = 'error';
      this.message =
        pool.length === 0
          ? 'Load the GSM8K questions first (or pick the built-in ones).'
          : 'The number of questions must be a whole number of at least 1.';
      return;
    }
    if (!(await this.allowLinkedModels())) return;
    if (!this.begin(`Running ${count} questions on each model…`)) return;
    const questions = pool.slice(0, count);
    const chosen = this.chosen();
    this.evalQuestions = questions;
    this.evalResults = [];
    this.evalComplete = [];
    this.results = [];
    const total = questions.length * chosen.length;
    this.batch = { done: 0, total, label: '' };
    const runtime = this.ensureRuntime();
    const failures: string[] = [];
    for (const [m, { option, name }] of chosen.entries()) {
      if (this.stopRequested) break;
      try {
        this.batch = { ...this.batch, label: `Loading ${name} (model ${m + 1} of ${chosen.length})…` };
        await this.load(runtime, option, (line) => {
          this.message = line;
        });
        let answered = 0;
        for (const [q, question] of questions.entries()) {
          if (this.stopRequested) break;
          this.batch = {
            ...this.batch,
            label: `${name} (model ${m + 1} of ${chosen.length}): question ${q + 1} of ${questions.length}`,
          };
          const outcome = await this.generateOne(runtime, question.question);
          if (outcome.finishReason === 'abort') break;
          this.evalResults = [
            ...this.evalResults,
            scoreResponse(name, question, outcome.text, outcome.tokenIds.length, outcome.finishReason),
          ];
          answered++;
          this.batch = { ...this.batch, done: this.batch.done + 1 };
        }
        if (answered === questions.length) this.evalComplete = [...this.evalComplete, name];
      } catch (e) {
        if (this.stopRequested && (e as Error).name === 'AbortError') break;
        this.forgetDeadRuntime(e);
        // One model failing (too big for the device, a broken file) does not cost the others' answers.
        failures.push(`${name}: ${(e as Error).name}: ${(e as Error).message}`);
        this.batch = { ...this.batch, done: (m + 1) * questions.length };
      }
    }
    await this.unload(runtime);
    if (failures.length) this.message = failures.join('\n');
    // Whoever embeds the panel (the guided experiment) gets the table of the models that answered all.
    const complete = new Set(this.evalComplete);
    const names = SLOT_ROLES.map((_, slot) => chosen.find((c) => c.slot === slot)?.name);
    this.dispatchEvent(
      new CustomEvent<CompareTableDetail>('compare-table', {
        detail: { rows: this.tableRows().filter((r) => !r.partial && complete.has(r.model)), slots: names },
        bubbles: true,
        composed: true,
      }),
    );
    this.finish(
      failures.length > 0,
      this.stopRequested
        ? `Stopped after ${this.batch?.done ?? 0} of ${total} answers.`
        : `Done: ${chosen.length} models × ${questions.length} questions.`,
    );
  }

  private finish(failed: boolean, message: string): void {
    this.state = failed ? 'error' : 'done';
    if (!failed) this.message = message;
    else if (!this.message || this.message.startsWith('Running'))
      this.message = 'A model failed; see its panel.';
  }

  private stop(): void {
    this.stopRequested = true;
    const runtime = this.runtime;
    if (this.runId) void runtime?.api.cancel(this.runId);
    // A generation stops within a token, but loading a model or a long prefill cannot be cut
    // short: if the run has not ended soon, end the worker itself (a fresh one starts next time).
    const run = this.runs;
    setTimeout(() => {
      if (this.state !== 'running' || this.runs !== run || this.runtime !== runtime || !runtime) return;
      this.runtime = undefined;
      runtime.terminate();
    }, STOP_GRACE_MS);
  }

  /** Frees the model after a run; nothing to do when the worker is gone. */
  private async unload(runtime: Runtime): Promise<void> {
    try {
      await runtime.guard(runtime.api.unload());
    } catch {
      // A terminated or crashed worker holds nothing any more.
    }
  }

  /** After a crash of the runtime worker, the next run starts a new one. */
  private forgetDeadRuntime(e: unknown): void {
    if ((e as Error).name !== 'RuntimeWorkerError') return;
    this.runtime?.terminate();
    this.runtime = undefined;
  }

  private async loadGsm8k(): Promise<void> {
    this.gsm8kState = 'loading';
    this.gsm8kMessage = 'Fetching GSM8K test questions…';
    try {
      this.gsm8k = await fetchGsm8kTest(Math.max(1, this.runAllCount), { endpoint: this.datasetsUrl });
      this.gsm8kState = 'done';
      this.gsm8kMessage = `${this.gsm8k.length} GSM8K test questions loaded.`;
      this.questionSet = 'gsm8k';
    } catch (e) {
      this.gsm8kState = 'error';
      this.gsm8kMessage = `${(e as Error).name}: ${(e as Error).message}`;
    }
  }

  private pickQuestion(id: string): void {
    const q = [...BUILTIN_QUESTIONS, ...this.gsm8k].find((x) => x.id === id);
    if (!q) return;
    this.question = q.question;
    this.gold = { question: q.question, answer: q.answer };
  }

  private tableRows(): Array<EvalTableRow & { partial?: boolean }> {
    const complete = new Set(this.evalComplete);
    const reference = this.chosen()[0]?.name;
    const done = this.evalResults.filter((r) => complete.has(r.model));
    const rows: Array<EvalTableRow & { partial?: boolean }> = done.length
      ? summarize(done, reference !== undefined && complete.has(reference) ? reference : undefined)
      : [];
    const partial = this.evalResults.filter((r) => !complete.has(r.model));
    if (partial.length) rows.push(...summarize(partial).map((r) => ({ ...r, partial: true })));
    return rows;
  }

  private renderModelPickers() {
    const options = this.options();
    return html`<div class="row">
      ${Array.from(
        { length: SLOT_COUNT },
        (_, slot) => html`<label
          >Model ${slot + 1} (${SLOT_ROLES[slot]}${slot === 0 ? ', length reference' : ''})
          <select
            data-testid=${`compare-model-${slot}`}
            ?disabled=${this.state === 'running'}
            @change=${(e: Event) => {
              this.slotsPicked = true;
              this.slots = this.slots.map((k, i) => (i === slot ? (e.target as HTMLSelectElement).value : k));
            }}
          >
            <option value="" ?selected=${this.slots[slot] === ''}>(none)</option>
            ${options.map((o) => html`<option value=${o.key} ?selected=${this.slots[slot] === o.key}>${o.label}</option>`)}
          </select></label
        >`,
      )}
    </div>`;
  }

  private renderQuestionInputs() {
    const pool = [...BUILTIN_QUESTIONS, ...this.gsm8k];
    const goldShown = this.gold?.question === this.question.trim() ? this.gold.answer : undefined;
    return html`
      <label
        >System message (empty: none)
        <textarea
          data-testid="compare-system-prompt"
          rows="2"
          .value=${this.systemPrompt}
          @input=${(e: Event) => {
            this.systemPrompt = (e.target as HTMLTextAreaElement).value;
          }}
        ></textarea>
      </label>
      <div class="row">
        <label
          >Built-in question
          <select data-testid="compare-question-pick" @change=${(e: Event) => this.pickQuestion((e.target as HTMLSelectElement).value)}>
            <option value="">(type your own below)</option>
            ${pool.map(
              (q) => html`<option value=${q.id} ?selected=${this.question === q.question}>
                ${q.id}: ${q.question.length > 70 ? `${q.question.slice(0, 70)}…` : q.question}
              </option>`,
            )}
          </select></label
        >
      </div>
      <label
        >Question
        <textarea
          data-testid="compare-question"
          rows="3"
          .value=${this.question}
          @input=${(e: Event) => {
            this.question = (e.target as HTMLTextAreaElement).value;
          }}
        ></textarea>
      </label>
      ${goldShown !== undefined ? html`<p class="hint" data-testid="compare-gold">Expected answer: ${goldShown}</p>` : nothing}
    `;
  }

  private renderSettings(running: boolean) {
    return html`<div class="row">
      <label
        >Max new tokens
        <input
          type="number"
          data-testid="compare-max-tokens"
          min="1"
          step="1"
          style="width: 7em"
          .value=${String(this.maxNewTokens)}
          @change=${(e: Event) => {
            this.maxNewTokens = Math.floor(Number((e.target as HTMLInputElement).value));
          }}
      /></label>
      <label
        >Device
        <select
          data-testid="compare-device"
          @change=${(e: Event) => {
            this.device = (e.target as HTMLSelectElement).value as BackendChoice;
          }}
        >
          <option value="auto" ?selected=${this.device === 'auto'}>auto</option>
          <option value="gpu" ?selected=${this.device === 'gpu'}>GPU (WebGPU)</option>
          <option value="cpu" ?selected=${this.device === 'cpu'}>CPU</option>
        </select></label
      >
      <button data-testid="compare-run" ?disabled=${running} @click=${this.runQuestion}>Ask every model</button>
      ${running ? html`<button data-testid="compare-stop" @click=${this.stop}>Stop</button>` : nothing}
    </div>`;
  }

  private renderResult(r: SlotResult, index: number) {
    const o = r.outcome;
    const extracted = o ? extractAnswer(o.text) : undefined;
    const goldAnswer = r.gold;
    const correct = goldAnswer !== undefined && o ? answersMatch(extracted?.value, goldAnswer) : undefined;
    return html`<div
      class="result"
      data-testid="compare-result"
      data-slot=${index}
      data-model=${r.model}
      data-state=${r.state}
      data-tokens=${r.tokens}
      data-streamed=${r.streamed}
      data-token-ids=${o ? o.tokenIds.join(',') : ''}
      data-backend=${r.backend ?? ''}
      data-answer=${extracted?.value ?? ''}
    >
      <h3>${r.model}</h3>
      <pre data-testid="compare-text">${r.text}</pre>
      ${r.error ? html`<p class="error" role="alert">${r.error}</p>` : nothing}
      ${r.notice ? html`<p class="hint">${r.notice}</p>` : nothing}
      <div class="stats" data-testid="compare-stats">
        ${r.state === 'loading' ? 'Loading the model…' : nothing}
        ${r.state === 'waiting' ? 'Waiting…' : nothing}
        ${
          r.state === 'running' || o
            ? html`<span data-testid="compare-tokens">${r.tokens} tokens</span>
                ${
                  o
                    ? html` · <span data-testid="compare-tps">${o.tokensPerSecond.toFixed(1)} tokens/s</span> ·
                        <span data-testid="compare-time">${formatSeconds(o.totalMs)}</span> · ${o.backend.toUpperCase()} ·
                        ${o.finishReason === 'eos' ? 'finished' : o.finishReason === 'length' ? 'token limit reached' : 'stopped'}`
                    : nothing
                }`
            : nothing
        }
      </div>
      ${
        o
          ? html`<p data-testid="compare-answer">
              Answer: <strong>${extracted ? extracted.value : '(none)'}</strong>
              ${extracted ? html`<span class="hint">(${extracted.source === 'boxed' ? '\\boxed{}' : extracted.source === 'answer-is' ? '"the answer is"' : 'last number'})</span>` : nothing}
              ${correct === undefined ? nothing : correct ? html`<span class="correct">✓ correct</span>` : html`<span class="wrong">✗ expected ${goldAnswer}</span>`}
            </p>`
          : nothing
      }
    </div>`;
  }

  private renderRunAll(running: boolean) {
    const rows = this.tableRows();
    const reference = this.chosen()[0]?.name;
    return html`
      <h3>All questions</h3>
      <div class="row">
        <label
          >Questions
          <select
            data-testid="compare-question-set"
            @change=${(e: Event) => {
              this.questionSet = (e.target as HTMLSelectElement).value as 'builtin' | 'gsm8k';
            }}
          >
            <option value="builtin" ?selected=${this.questionSet === 'builtin'}>
              built-in (${BUILTIN_QUESTIONS.length})
            </option>
            <option value="gsm8k" ?selected=${this.questionSet === 'gsm8k'} ?disabled=${this.gsm8k.length === 0}>
              GSM8K test (${this.gsm8k.length} loaded)
            </option>
          </select></label
        >
        <button data-testid="compare-gsm8k-load" ?disabled=${this.gsm8kState === 'loading'} @click=${this.loadGsm8k}>
          Load GSM8K test questions
        </button>
        <label
          >First N questions
          <input
            type="number"
            data-testid="compare-count"
            min="1"
            step="1"
            style="width: 5em"
            .value=${String(this.runAllCount)}
            @change=${(e: Event) => {
              this.runAllCount = Math.floor(Number((e.target as HTMLInputElement).value));
            }}
        /></label>
        <button data-testid="compare-run-all" ?disabled=${running} @click=${this.runAll}>Run all questions</button>
      </div>
      ${
        this.gsm8kMessage
          ? html`<p data-testid="compare-gsm8k-status" data-state=${this.gsm8kState} class=${this.gsm8kState === 'error' ? 'error' : 'hint'}>
              ${this.gsm8kMessage}
            </p>`
          : nothing
      }
      ${
        this.batch && running
          ? html`<label
                >${this.batch.label}
                <progress data-testid="compare-progress" max=${this.batch.total} .value=${this.batch.done}></progress
              ></label>`
          : nothing
      }
      ${
        rows.length
          ? html`<div class="table-wrap"><table data-testid="compare-table">
              <caption class="hint">
                ${this.evalQuestions.length} questions, greedy; length change relative to ${reference ?? 'the first model'}
              </caption>
              <thead>
                <tr>
                  <th scope="col">Model</th>
                  <th scope="col" class="num">Accuracy</th>
                  <th scope="col" class="num">Correct</th>
                  <th scope="col" class="num">Mean tokens</th>
                  <th scope="col" class="num">Length vs ${reference ?? 'first'}</th>
                </tr>
              </thead>
              <tbody>
                ${rows.map(
                  (r) => html`<tr
                    data-testid="compare-table-row"
                    data-model=${r.model}
                    data-questions=${r.questions}
                    data-accuracy=${r.accuracy}
                    data-mean-tokens=${r.meanTokens}
                    data-length-change=${r.lengthChange ?? ''}
                    data-partial=${r.partial ? 'true' : 'false'}
                  >
                    <th scope="row">${r.model}${r.partial ? ' (unfinished)' : ''}</th>
                    <td class="num">${(r.accuracy * 100).toFixed(1)}%</td>
                    <td class="num">${r.correct}/${r.questions}</td>
                    <td class="num">${r.meanTokens.toFixed(1)}</td>
                    <td class="num">${r.model === reference && !r.partial ? 'reference' : formatLengthChange(r.lengthChange)}</td>
                  </tr>`,
                )}
              </tbody>
            </table></div>
            ${this.renderAnswers()}`
          : nothing
      }
    `;
  }

  /** Every graded answer, per question and model. */
  private renderAnswers() {
    const models = [...new Set(this.evalResults.map((r) => r.model))];
    const byKey = new Map(this.evalResults.map((r) => [`${r.model}\n${r.questionId}`, r]));
    return html`<details>
      <summary>Answers per question</summary>
      <div class="table-wrap"><table data-testid="compare-answers">
        <thead>
          <tr>
            <th scope="col">Question</th>
            <th scope="col">Expected</th>
            ${models.map((m) => html`<th scope="col">${m}</th>`)}
          </tr>
        </thead>
        <tbody>
          ${this.evalQuestions.map(
            (q) => html`<tr>
              <th scope="row" title=${q.question}>${q.id}</th>
              <td>${q.answer}</td>
              ${models.map((m) => {
                const r = byKey.get(`${m}\n${q.id}`);
                return r
                  ? html`<td class=${r.correct ? 'correct' : 'wrong'}>${r.predicted ?? '(none)'} (${r.generatedTokens} tokens)</td>`
                  : html`<td>–</td>`;
              })}
            </tr>`,
          )}
        </tbody>
      </table></div>
    </details>`;
  }

  override render() {
    const running = this.state === 'running';
    return html`
      <section aria-labelledby="compare-heading">
        <h2 id="compare-heading">Compare: System 2, the merge, System 1</h2>
        <p class="hint">
          Each model answers in turn (one model in memory at a time), greedily, through its own chat template.
        </p>
        ${this.renderModelPickers()} ${this.renderQuestionInputs()} ${this.renderSettings(running)}
        <p
          data-testid="compare-status"
          data-state=${this.state}
          data-runs=${this.runs}
          class=${this.state === 'error' ? 'error' : 'hint'}
          role=${this.state === 'error' ? 'alert' : 'status'}
        >${this.message}</p>
        ${this.results.length ? html`<div class="results">${this.results.map((r, i) => this.renderResult(r, i))}</div>` : nothing}
        ${this.renderRunAll(running)}
      </section>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'l2s-compare-panel': L2sComparePanel;
  }
}
