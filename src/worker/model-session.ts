/**
 * One model loaded for generation: its runner (CPU reference or GPU), tokenizer and chat template.
 * The runtime worker holds one session at a time, so two models never share the device's memory:
 * loading a model unloads the previous one first (Compare runs System 2, the merge and System 1 one
 * after the other). Node tests drive this class directly; the worker adds comlink, the library and
 * OPFS around it.
 *
 * Cancel stops within one token: comlink cannot carry an AbortSignal, so the page stops a generation
 * either with the worker's `cancel(runId)` or by answering `false` from its token callback. The token
 * callback's answer is awaited before each decode step, which also lets the worker take the cancel
 * message in between (a CPU forward pass would otherwise never yield to the event loop).
 */
import type { ModelFiles } from '../engine/io';
import type { DeviceChoice } from '../gpu/select-backend';
import type { ModelConfig } from '../model/config';
import { type FinishReason, type GenerateResult, type GenerateTimings, generate } from '../model/generate';
import { createRunner } from '../model/index';
import {
  ContextOverflowError,
  type ModelRunner,
  type PrefillHooks,
  type SamplingOptions,
  type StepResult,
} from '../model/runner';
import { GREEDY, validateSampling } from '../model/sampling';
import { type ChatMessage, ModelTokenizer } from '../model/tokenizer';
import { openModelWeights } from '../model/weights';

export interface LoadOptions {
  device: DeviceChoice;
  /** Most tokens (prompt + generated) the KV cache is sized for; default the runner's. */
  maxContext?: number;
  /** Where to get WebGPU; default navigator.gpu. */
  gpu?: () => Promise<GPU | undefined>;
  notice?: (line: string) => void;
}

export interface LoadedModelInfo {
  name: string;
  backend: 'cpu' | 'gpu';
  architecture: ModelConfig['architecture'];
  numLayers: number;
  hiddenSize: number;
  vocabSize: number;
  maxContext: number;
  hasChatTemplate: boolean;
  loadMs: number;
}

export type GeneratePrompt =
  /** Rendered through the model's chat template with the generation prompt added. */
  | { messages: ChatMessage[] }
  /** Tokenized as is (no template, no special tokens added). */
  | { raw: string };

export interface GenerationRequest {
  prompt: GeneratePrompt;
  maxNewTokens: number;
  sampling?: SamplingOptions;
}

export interface StreamedToken {
  index: number;
  token: number;
  /** The text this token completes ('' for eos, and while a UTF-8 character is incomplete). */
  text: string;
}

/** Answer false (or a promise of false) to stop the generation before the next token is computed. */
export type TokenCallback = (token: StreamedToken) => unknown;

export interface GenerationOutcome {
  model: string;
  backend: 'cpu' | 'gpu';
  promptTokenIds: number[];
  /** Generated ids, the eos id included when reached (as transformers' generate returns them). */
  tokenIds: number[];
  /** The generated text without the final eos. */
  text: string;
  finishReason: FinishReason;
  /** The token budget used: the one asked for, or less where the context ends first. */
  maxNewTokens: number;
  timings: GenerateTimings;
  /** Prefill and decode together. */
  totalMs: number;
  /** Generated tokens per second of totalMs. */
  tokensPerSecond: number;
}

/** generate() was asked for without a model loaded. */
export class NoModelLoadedError extends Error {
  override name = 'NoModelLoadedError';
}

/** Thrown inside a decode step that a stop made unnecessary; generate() ends there. */
class StoppedBeforeDecode extends Error {
  override name = 'AbortError';
}

/**
 * Waits for the page's answer to the previous token before each step, so a stop (a `false` answer,
 * or a cancel message taken while waiting) is seen before the next token is computed: generate()
 * checks its signal before it asks for a step, when the answer has not come yet, so the step itself
 * declines once the answer says stop.
 */
class PacedRunner implements ModelRunner {
  pending?: Promise<void>;

  constructor(
    private readonly inner: ModelRunner,
    private readonly stop: AbortSignal,
  ) {}

  get config() {
    return this.inner.config;
  }
  get backend() {
    return this.inner.backend;
  }
  get maxContext() {
    return this.inner.maxContext;
  }
  get length() {
    return this.inner.length;
  }
  prefill(tokens: readonly number[], sampling: SamplingOptions, hooks?: PrefillHooks): Promise<StepResult> {
    return this.inner.prefill(tokens, sampling, hooks);
  }
  async decode(token: number, sampling: SamplingOptions): Promise<StepResult> {
    const pending = this.pending;
    this.pending = undefined;
    if (pending) await pending;
    if (this.stop.aborted) throw new StoppedBeforeDecode('stopped');
    return this.inner.decode(token, sampling);
  }
  lastLogits(): Promise<Float32Array> {
    return this.inner.lastLogits();
  }
  reset(): void {
    this.inner.reset();
  }
  dispose(): void {
    this.inner.dispose();
  }
}

export class ModelSession {
  private runner?: ModelRunner;
  private tokenizer?: ModelTokenizer;
  private info?: LoadedModelInfo;
  private busy = false;

  get loaded(): LoadedModelInfo | undefined {
    return this.info;
  }

  /** Loads `files` (after unloading the current model): config, weights, tokenizer, runner. */
  async load(files: ModelFiles, options: LoadOptions): Promise<LoadedModelInfo> {
    if (this.busy) throw new Error('a generation is under way; stop it before loading another model');
    this.unload();
    const started = performance.now();
    const weights = await openModelWeights(files);
    const tokenizer = await ModelTokenizer.load(files);
    // A KV cache longer than the model's positions would only be refused: ask for what it has.
    const maxContext =
      options.maxContext === undefined
        ? undefined
        : Math.min(options.maxContext, weights.config.maxPositionEmbeddings);
    const runner = await createRunner(weights, options.device, {
      gpu: options.gpu,
      maxContext,
      notice: options.notice,
    });
    const config = weights.config;
    this.runner = runner;
    this.tokenizer = tokenizer;
    this.info = {
      name: files.name,
      backend: runner.backend,
      architecture: config.architecture,
      numLayers: config.numLayers,
      hiddenSize: config.hiddenSize,
      vocabSize: config.vocabSize,
      maxContext: runner.maxContext,
      hasChatTemplate: tokenizer.chatTemplate !== undefined,
      loadMs: performance.now() - started,
    };
    return this.info;
  }

  /** Frees the runner (its GPU buffers); safe to call with nothing loaded. */
  unload(): void {
    if (this.busy) throw new Error('a generation is under way; stop it before unloading the model');
    const runner = this.runner;
    this.runner = undefined;
    this.tokenizer = undefined;
    this.info = undefined;
    runner?.dispose();
  }

  /** The prompt's token ids as the loaded model's tokenizer and chat template give them. */
  promptIds(prompt: GeneratePrompt): number[] {
    if (!this.tokenizer) throw new NoModelLoadedError('load a model before tokenizing a prompt');
    return 'raw' in prompt
      ? this.tokenizer.encode(prompt.raw, { addSpecialTokens: false })
      : this.tokenizer.encodeChat(prompt.messages, { addGenerationPrompt: true });
  }

  async generate(
    request: GenerationRequest,
    opts: { signal?: AbortSignal; onToken?: TokenCallback } = {},
  ): Promise<GenerationOutcome> {
    const runner = this.runner;
    const tokenizer = this.tokenizer;
    const info = this.info;
    if (!runner || !tokenizer || !info) throw new NoModelLoadedError('load a model before generating');
    if (this.busy) throw new Error('a generation is already under way on this model');
    const sampling = request.sampling ?? GREEDY;
    validateSampling(sampling);
    const promptTokenIds = this.promptIds(request.prompt);
    // The last generated token is never fed back, so N tokens need prompt + N - 1 cache positions.
    const room = runner.maxContext - promptTokenIds.length + 1;
    if (promptTokenIds.length > runner.maxContext) {
      throw new ContextOverflowError(
        `${info.name}: the prompt has ${promptTokenIds.length} tokens and the context holds ${runner.maxContext}; shorten the prompt`,
      );
    }
    // The token budget stops at the end of the context (finishReason 'length'), not with an error.
    const maxNewTokens = Math.min(request.maxNewTokens, room);
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    opts.signal?.addEventListener('abort', onAbort);
    if (opts.signal?.aborted) stop.abort();
    const paced = new PacedRunner(runner, stop.signal);
    const { onToken } = opts;
    // What streamed so far, for the result of a generation stopped between two tokens.
    const streamedIds: number[] = [];
    let firstTokenAt = 0;
    let lastTokenAt = 0;
    this.busy = true;
    const started = performance.now();
    const outcome = (result: GenerateResult): GenerationOutcome => {
      const totalMs = performance.now() - started;
      return {
        model: info.name,
        backend: runner.backend,
        promptTokenIds,
        tokenIds: result.tokenIds,
        text: result.text,
        finishReason: result.finishReason,
        maxNewTokens,
        timings: result.timings,
        totalMs,
        tokensPerSecond: totalMs > 0 ? (result.tokenIds.length / totalMs) * 1000 : 0,
      };
    };
    try {
      const result = await generate(paced, tokenizer, promptTokenIds, {
        maxNewTokens,
        sampling,
        signal: stop.signal,
        onToken: (e) => {
          streamedIds.push(e.token);
          lastTokenAt = performance.now();
          if (e.index === 0) firstTokenAt = lastTokenAt;
          if (!onToken) return;
          const answer = Promise.resolve(onToken({ index: e.index, token: e.token, text: e.text })).then(
            (keepGoing) => {
              if (keepGoing === false) stop.abort();
            },
            () => stop.abort(),
          );
          paced.pending = answer;
          return answer;
        },
      });
      return outcome(result);
    } catch (e) {
      if (!(e instanceof StoppedBeforeDecode)) throw e;
      // The same result generate() gives for an abort seen between tokens (no eos was reached).
      const prefillMs = firstTokenAt - started;
      const decodeMs = streamedIds.length > 1 ? lastTokenAt - firstTokenAt : 0;
      return outcome({
        tokenIds: streamedIds,
        text: tokenizer.decode(streamedIds),
        finishReason: 'abort',
        timings: {
          promptTokens: promptTokenIds.length,
          generatedTokens: streamedIds.length,
          prefillMs,
          decodeMs,
          prefillTokensPerSecond: prefillMs > 0 ? (promptTokenIds.length / prefillMs) * 1000 : 0,
          decodeTokensPerSecond: decodeMs > 0 ? ((streamedIds.length - 1) / decodeMs) * 1000 : 0,
        },
      });
    } finally {
      this.busy = false;
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }
}
