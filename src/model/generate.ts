/**
 * The generation loop over any ModelRunner (CPU reference or GPU): prefill the prompt, then decode one
 * token at a time until an eos id, the token budget or an abort. The AbortSignal is checked between
 * tokens, so an abort stops within one token; the partial result is returned with finishReason 'abort'.
 */
import type { ModelRunner, SamplingOptions } from './runner';
import type { StreamingDecoder } from './tokenizer';

export type FinishReason = 'eos' | 'length' | 'abort';

/** What generate needs of a tokenizer: text for the tokens (ModelTokenizer provides it). */
export interface TextDecoderSource {
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  streamingDecoder(options?: { skipSpecialTokens?: boolean }): StreamingDecoder;
}

export interface TokenEvent {
  /** 0-based index among the generated tokens. */
  index: number;
  token: number;
  /** Text this token completes ('' while a UTF-8 character is incomplete, and for an eos token). */
  text: string;
  topLogprobs?: Array<[number, number]>;
}

export interface GenerateOptions {
  maxNewTokens: number;
  sampling: SamplingOptions;
  /** Stop ids; default: the runner's config.eosTokenIds. */
  eos?: readonly number[];
  signal?: AbortSignal;
  /**
   * Called after each token. A returned promise is awaited before the next step, so an abort that
   * lands meanwhile (e.g. a worker's round trip to the page) stops generation before another token.
   */
  onToken?: (event: TokenEvent) => unknown;
}

export interface GenerateTimings {
  promptTokens: number;
  generatedTokens: number;
  /** Prefill of the prompt (includes sampling the first token). */
  prefillMs: number;
  /** The decode steps after the first token. */
  decodeMs: number;
  prefillTokensPerSecond: number;
  /** Generated tokens after the first per second of decodeMs (0 when there were none). */
  decodeTokensPerSecond: number;
}

export interface GenerateResult {
  /** The generated ids, the eos id included when reached. */
  tokenIds: number[];
  /** The text of the generated ids, the final eos excluded (as transformers' reference texts). */
  text: string;
  finishReason: FinishReason;
  /** Per generated token, when sampling.topLogprobs was set. */
  topLogprobs?: Array<Array<[number, number]>>;
  timings: GenerateTimings;
}

/** Starts from an empty cache (the runner is reset). */
export async function generate(
  runner: ModelRunner,
  tokenizer: TextDecoderSource,
  promptIds: readonly number[],
  options: GenerateOptions,
): Promise<GenerateResult> {
  const { maxNewTokens, sampling, signal, onToken } = options;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) {
    throw new RangeError(`max new tokens must be a non-negative integer, got ${maxNewTokens}`);
  }
  const eos = new Set(options.eos ?? runner.config.eosTokenIds);
  const streaming = tokenizer.streamingDecoder();
  const tokenIds: number[] = [];
  const logprobs: Array<Array<[number, number]>> | undefined = sampling.topLogprobs ? [] : undefined;
  let finishReason: FinishReason = 'length';
  runner.reset();
  const prefillStart = performance.now();
  let prefillMs = 0;
  let decodeStart = prefillStart;

  for (let index = 0; index < maxNewTokens; index++) {
    if (signal?.aborted) {
      finishReason = 'abort';
      break;
    }
    const step =
      index === 0
        ? await runner.prefill(promptIds, sampling)
        : await runner.decode(tokenIds[index - 1], sampling);
    if (index === 0) {
      prefillMs = performance.now() - prefillStart;
      decodeStart = performance.now();
    }
    tokenIds.push(step.token);
    if (logprobs && step.topLogprobs) logprobs.push(step.topLogprobs);
    const isEos = eos.has(step.token);
    const piece = isEos ? '' : streaming.push(step.token);
    const acknowledged = onToken?.({ index, token: step.token, text: piece, topLogprobs: step.topLogprobs });
    if (acknowledged instanceof Promise) await acknowledged;
    if (isEos) {
      finishReason = 'eos';
      break;
    }
  }
  const decodeMs = tokenIds.length > 1 ? performance.now() - decodeStart : 0;
  // The whole text decoded at once equals the streamed pieces plus what the decoder still holds.
  const text = tokenizer.decode(finishReason === 'eos' ? tokenIds.slice(0, -1) : tokenIds);
  const result: GenerateResult = {
    tokenIds,
    text,
    finishReason,
    timings: {
      promptTokens: promptIds.length,
      generatedTokens: tokenIds.length,
      prefillMs,
      decodeMs,
      prefillTokensPerSecond: prefillMs > 0 ? (promptIds.length / prefillMs) * 1000 : 0,
      decodeTokensPerSecond: decodeMs > 0 ? ((tokenIds.length - 1) / decodeMs) * 1000 : 0,
    },
  };
  if (logprobs) result.topLogprobs = logprobs;
  return result;
}
