/**
 * What the CPU reference (src/model/reference.ts) and the GPU runtime (src/model/gpu) both implement:
 * a model with a KV cache that takes tokens and returns the next one, sampled as src/model/sampling.ts
 * specifies. The generation loop (src/model/generate.ts), the CLI and the worker drive any runner.
 */
import type { ModelConfig } from './config';

export interface SamplingOptions {
  /** 0 = greedy (argmax, lowest id on ties). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 keeps every token. Ignored when greedy. */
  topP: number;
  /** Seed of the sampling stream of src/random/counter-rng.ts (u32). */
  seed: number;
  /** When set, the k most likely tokens and their natural-log probabilities from the f32 logits. */
  topLogprobs?: number;
}

export interface StepResult {
  token: number;
  /** Most likely first; ties by lower id. */
  topLogprobs?: Array<[id: number, logprob: number]>;
}

/**
 * Called during prefill with the input of every module that has a weight and is not an embedding
 * (for AIM's activation statistics): `module` is the weight's tensor name without ".weight"
 * (model.layers.0.input_layernorm, model.layers.0.self_attn.q_proj, ..., model.layers.0.mlp.down_proj,
 * model.norm, lm_head; Qwen3's self_attn.q_norm / k_norm with x [tokens * heads, headDim]); `x` is
 * [rows, channels] row-major f32. A norm's input is the residual stream before normalisation. q/k/v
 * (and gate/up) receive the same array. `x` is only valid during the call: copy what you keep.
 */
export type ModuleInputObserver = (module: string, x: Float32Array, channels: number) => void;

export interface PrefillHooks {
  onModuleInput?: ModuleInputObserver;
}

export interface ModelRunner {
  readonly config: ModelConfig;
  readonly backend: 'cpu' | 'gpu';
  /** Most tokens the KV cache holds. */
  readonly maxContext: number;
  /** Tokens in the KV cache. */
  readonly length: number;
  /**
   * Appends `tokens` (at least one) to the KV cache and returns the token sampled from the logits of
   * the last one. Its sampling position (see sampling.ts) is the cache length after the call.
   */
  prefill(tokens: readonly number[], sampling: SamplingOptions, hooks?: PrefillHooks): Promise<StepResult>;
  /** prefill of one token. */
  decode(token: number, sampling: SamplingOptions): Promise<StepResult>;
  /** f32 logits of the last position run (a copy). */
  lastLogits(): Promise<Float32Array>;
  /** Empties the KV cache. */
  reset(): void;
  /** Frees what the runner holds (GPU buffers); the runner is unusable afterwards. */
  dispose(): void;
}

/** The KV cache is full: the prompt plus the tokens asked for do not fit the runner's context. */
export class ContextOverflowError extends Error {
  override name = 'ContextOverflowError';
}

/** A token id outside the vocabulary (names the id and the model). */
export class TokenRangeError extends Error {
  override name = 'TokenRangeError';
}

export function checkTokens(
  config: ModelConfig,
  tokens: readonly number[],
  length: number,
  maxContext: number,
): void {
  if (tokens.length === 0) throw new RangeError('prefill needs at least one token');
  for (const t of tokens) {
    if (!Number.isInteger(t) || t < 0 || t >= config.vocabSize) {
      throw new TokenRangeError(
        `${config.configFile}: token id ${t} is outside the vocabulary (vocab_size ${config.vocabSize})`,
      );
    }
  }
  if (length + tokens.length > maxContext) {
    throw new ContextOverflowError(
      `the context holds ${maxContext} tokens; ${length} are used and ${tokens.length} more were given`,
    );
  }
}
