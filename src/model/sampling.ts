/**
 * Choosing the next token from f32 logits: the TS specification, which the GPU sampler reproduces.
 *
 * - temperature 0: argmax; the lowest id wins ties; NaN logits never win.
 * - otherwise, with u = samplingUniform(seed, position) from src/random/counter-rng.ts (position = the
 *   index the sampled token will have in the sequence, prompt included, i.e. the KV cache length after
 *   the step that produced the logits):
 *   p = softmax(logits / T) (computed in f64 from the f32 logits, as exp((l - max) / T) / sum);
 *   the nucleus is the tokens in descending p (ties by lower id), taken until their cumulative sum
 *   reaches topP (>= topP; the crossing token included); tokens with p = 0 are never in it;
 *   r = u * sum(nucleus p); the token is the first in nucleus order whose running sum exceeds r (the
 *   last nucleus token if rounding leaves none).
 * - top log-probabilities (when asked for) are log_softmax of the raw f32 logits (not temperature
 *   scaled), in natural log, most likely first, ties by lower id.
 */
import { samplingUniform } from '../random/counter-rng';
import type { SamplingOptions, StepResult } from './runner';

export class SamplingOptionsError extends RangeError {
  override name = 'SamplingOptionsError';
}

export const GREEDY: SamplingOptions = { temperature: 0, topP: 1, seed: 0 };

export function validateSampling(options: SamplingOptions): void {
  const { temperature, topP, seed, topLogprobs } = options;
  if (!Number.isFinite(temperature) || temperature < 0) {
    throw new SamplingOptionsError(`temperature must be a number >= 0, got ${temperature}`);
  }
  if (!Number.isFinite(topP) || topP <= 0 || topP > 1) {
    throw new SamplingOptionsError(`top-p must be in (0, 1], got ${topP}`);
  }
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new SamplingOptionsError(`seed must be an integer from 0 to 4294967295, got ${seed}`);
  }
  if (topLogprobs !== undefined && (!Number.isInteger(topLogprobs) || topLogprobs < 0)) {
    throw new SamplingOptionsError(`topLogprobs must be a non-negative integer, got ${topLogprobs}`);
  }
}

/** Index of the largest logit; the lowest index among equals; 0 when every logit is NaN. */
export function argmax(logits: Float32Array): number {
  let best = 0;
  let bestValue = Number.NEGATIVE_INFINITY;
  let found = false;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v > bestValue || (!found && v === bestValue)) {
      best = i;
      bestValue = v;
      found = true;
    }
  }
  return best;
}

/** The token sampled from `logits` for sequence position `position`, as the module comment says. */
export function sampleToken(logits: Float32Array, options: SamplingOptions, position: number): number {
  if (options.temperature === 0) return argmax(logits);
  const n = logits.length;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  if (max === Number.NEGATIVE_INFINITY || Number.isNaN(max)) return argmax(logits);
  if (max === Number.POSITIVE_INFINITY) return argmax(logits);
  const p = new Float64Array(n);
  let total = 0;
  const invT = 1 / options.temperature;
  for (let i = 0; i < n; i++) {
    const e = Math.exp((logits[i] - max) * invT);
    // NaN logits get no mass.
    p[i] = Number.isNaN(e) ? 0 : e;
    total += p[i];
  }
  const candidates: number[] = [];
  for (let i = 0; i < n; i++) {
    p[i] /= total;
    if (p[i] > 0) candidates.push(i);
  }
  candidates.sort((a, b) => p[b] - p[a] || a - b);
  let nucleusEnd = candidates.length;
  let cumulative = 0;
  for (let j = 0; j < candidates.length; j++) {
    cumulative += p[candidates[j]];
    if (cumulative >= options.topP) {
      nucleusEnd = j + 1;
      break;
    }
  }
  let mass = 0;
  for (let j = 0; j < nucleusEnd; j++) mass += p[candidates[j]];
  const r = samplingUniform(options.seed, position) * mass;
  let running = 0;
  for (let j = 0; j < nucleusEnd; j++) {
    running += p[candidates[j]];
    if (running > r) return candidates[j];
  }
  return candidates[nucleusEnd - 1];
}

/** The k most likely tokens with their natural-log probabilities (log_softmax of the f32 logits). */
export function topLogprobs(logits: Float32Array, k: number): Array<[number, number]> {
  const n = logits.length;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(logits[i] - max);
    if (e > 0) sum += e;
  }
  const logZ = max + Math.log(sum);
  // Insertion into a short sorted list: k is small (5), the vocabulary large.
  const top: number[] = [];
  const better = (a: number, b: number) => logits[a] > logits[b] || (logits[a] === logits[b] && a < b);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(logits[i])) continue;
    if (top.length === k && !better(i, top[k - 1])) continue;
    let j = top.length < k ? top.length : k - 1;
    if (top.length < k) top.push(i);
    while (j > 0 && better(i, top[j - 1])) {
      top[j] = top[j - 1];
      j--;
    }
    top[j] = i;
  }
  return top.map((id) => [id, logits[id] - logZ]);
}

/** sampleToken plus the top log-probabilities when the options ask for them. */
export function sampleStep(logits: Float32Array, options: SamplingOptions, position: number): StepResult {
  const token = sampleToken(logits, options, position);
  return options.topLogprobs ? { token, topLogprobs: topLogprobs(logits, options.topLogprobs) } : { token };
}
