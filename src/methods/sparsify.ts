/**
 * Sparsification of task vectors, as mergekit's `sparsify.py` does it, in f32.
 *
 * Every method builds a 0/1 mask and then applies `rescaledMaskedInPlace`:
 *   masked[i] = fround(delta[i] * mask[i])        (so a dropped NaN stays NaN and a dropped ±Inf becomes
 *                                                   NaN, exactly like torch's `tensor * mask`)
 *   with rescale (mergekit's RescaleNorm.l1, the meaning of `rescale: true` since mergekit 0.1):
 *     before = sumAbsF32(delta), after = sumAbsF32(masked)  (blocked f32 sums, see f32-reduce.ts)
 *     if before < fround(1e-7) or after < fround(1e-7): leave masked as is
 *     else scale = fround(before / after); masked[i] = fround(masked[i] * scale)
 *   A NaN anywhere makes before and after NaN; the comparisons are then false and every element is
 *   multiplied by NaN, as in mergekit.
 *
 * Methods (n = number of elements, density/gamma/epsilon are doubles as in Python):
 * - magnitude (TIES): density >= 1 leaves delta untouched. k = trunc(density * n) (Python int());
 *   k <= 0 is an error (mergekit asserts). Keeps the k largest |delta|, ties to the lowest flat index,
 *   NaN counted as the largest magnitude (rank-select.ts).
 * - magnitude_outliers (breadcrumbs): density >= 1 untouched. target = trunc(density * n),
 *   top = trunc(gamma * n), bottom = n - target - top; if bottom < 0 then top += bottom, bottom = 0.
 *   Keeps the positions [bottom : -top] (a Python slice) of the stable ascending |delta| order. Note
 *   Python's -0 == 0: when top is 0 (gamma * n < 1, or gamma = 0) the slice is empty and the whole
 *   task vector is dropped. That is mergekit's behaviour and is kept so recipes give the same result.
 * - random (DARE): density >= 1 untouched. Element i is kept iff u(i) < fround(density), with u the
 *   counter-based uniform of (seed, tensor name, model index, stream 0, i) from counter-rng.ts.
 *   density < 0 is an error (torch.bernoulli rejects it); density 0 drops everything.
 * - della_magprune (DELLA): density >= 1 untouched; density <= 0 gives zeros (not delta * 0: NaNs are
 *   cleared too, as torch.zeros_like does). Otherwise density + epsilon >= 1 or density - epsilon <= 0
 *   is an error. The tensor is viewed as [d0, d1, rest] (a 1-D tensor as [1, n]) and magnitudes are
 *   ranked along d1, mergekit's dim 1: for each fiber of length m, r = 1 + the stable ascending rank of
 *   |delta| (equal magnitudes: lower index first), and in f32:
 *     norm = fround(fround(r - 1) / fround(m - 1))     (min rank 1, max rank m; clamp(0, 1) is a no-op)
 *     p    = fround(fround(density - epsilon) + fround(fround(norm * 2) * fround(epsilon)))
 *   where density - epsilon is computed in double first (a Python float); ranks are exact in f32 for
 *   fibers shorter than 2^24. m = 1 is an error (mergekit
 *   divides 0 by 0 and torch.bernoulli rejects the NaN). Element i is kept iff u(i) < p(i), u as for
 *   DARE with i the flat index.
 */
import { fillUniform, RNG_STREAM_SPARSIFY } from '../random/counter-rng';
import { sumAbsF32 } from './f32-reduce';
import { fiberMagnitudeRanks, magnitudeRankRangeMask } from './rank-select';
import { MergeMethodError } from './types';

export type SparsificationMethod = 'magnitude' | 'random' | 'magnitude_outliers' | 'della_magprune';

/** Threshold below which the L1 rescale is skipped (mergekit's eps = 1e-7, compared in f32). */
export const RESCALE_EPSILON = Math.fround(1e-7);

/** Where the random numbers of one task vector come from. */
export interface RandomKey {
  readonly seed: number;
  /** fnv1a32 of the output tensor name. */
  readonly nameHash: number;
  /** Position of the model in MergeInputs.tensors. */
  readonly modelIndex: number;
}

export interface SparsifyOptions {
  readonly method: SparsificationMethod;
  readonly density: number;
  /** Breadcrumbs: fraction of the largest magnitudes removed (mergekit default 0.01). */
  readonly gamma?: number;
  /** DELLA: half-width of the keep-probability range (mergekit default 0.15). */
  readonly epsilon?: number;
  /** L1 norm-matching rescale of the kept entries. */
  readonly rescale: boolean;
  /** Shape of the tensor; DELLA ranks along dimension 1. */
  readonly shape: readonly number[];
  /** Required by 'random' and 'della_magprune'. */
  readonly random?: RandomKey;
}

const fround = Math.fround;

/** Elements per tile when drawing uniforms, to bound the scratch memory on large tensors. */
const UNIFORM_TILE = 1 << 16;

/** TIES' keep mask: the trunc(density * n) largest magnitudes; null when density >= 1 (keep all). */
export function magnitudeMask(delta: Float32Array, density: number): Uint8Array | null {
  if (density >= 1) return null;
  const k = Math.trunc(density * delta.length);
  if (k <= 0) {
    throw new MergeMethodError(
      `density ${density} keeps no element of a tensor with ${delta.length} elements ` +
        `(int(density * n) = ${k}); raise density`,
    );
  }
  return magnitudeRankRangeMask(delta, 0, k, 'descending');
}

/** Python's slice bounds [start:stop] over a sequence of length n, as a half-open range. */
function pythonSliceRange(start: number, stop: number, n: number): [number, number] {
  const clamp = (index: number) => {
    const absolute = index < 0 ? index + n : index;
    return Math.max(0, Math.min(n, absolute));
  };
  return [clamp(start), clamp(stop)];
}

/** The numbers of elements breadcrumbs cuts from the bottom and the top, after mergekit's adjustment. */
export function breadcrumbsCuts(n: number, density: number, gamma: number): { bottom: number; top: number } {
  const target = Math.trunc(density * n);
  let top = Math.trunc(gamma * n);
  let bottom = n - target - top;
  if (bottom < 0) {
    top += bottom;
    bottom = 0;
  }
  return { bottom, top };
}

/** Breadcrumbs' keep mask (see the module comment, including the empty slice when top is 0). */
export function magnitudeOutliersMask(
  delta: Float32Array,
  density: number,
  gamma: number,
): Uint8Array | null {
  if (density >= 1) return null;
  const n = delta.length;
  const { bottom, top } = breadcrumbsCuts(n, density, gamma);
  // indices[bottom:-top]; -0 is 0 in Python, so top = 0 gives an empty slice.
  const [from, to] = pythonSliceRange(bottom, -top, n);
  return magnitudeRankRangeMask(delta, from, to, 'ascending');
}

function requireRandom(options: SparsifyOptions): RandomKey {
  if (!options.random) {
    throw new MergeMethodError(`sparsification "${options.method}" needs a random key (seed, tensor, model)`);
  }
  return options.random;
}

/** DARE's keep mask: u(i) < fround(density); null when density >= 1. */
export function bernoulliMask(n: number, density: number, random: RandomKey): Uint8Array | null {
  if (density >= 1) return null;
  if (density < 0 || Number.isNaN(density)) {
    throw new MergeMethodError(`density must be between 0 and 1, got ${density}`);
  }
  const p = fround(density);
  const mask = new Uint8Array(n);
  const uniforms = new Float32Array(Math.min(n, UNIFORM_TILE));
  for (let start = 0; start < n; start += UNIFORM_TILE) {
    const count = Math.min(UNIFORM_TILE, n - start);
    const tile = count === uniforms.length ? uniforms : uniforms.subarray(0, count);
    fillUniform(tile, random.seed, random.nameHash, random.modelIndex, RNG_STREAM_SPARSIFY, start);
    for (let j = 0; j < count; j++) mask[start + j] = tile[j] < p ? 1 : 0;
  }
  return mask;
}

/** DELLA's epsilon check, made after the density >= 1 and density <= 0 shortcuts as in mergekit. */
function checkDellaParameters(density: number, epsilon: number): void {
  if (density + epsilon >= 1 || density - epsilon <= 0) {
    throw new MergeMethodError(
      `epsilon must be chosen such that density +/- epsilon is in (0, 1); ` +
        `got density ${density}, epsilon ${epsilon}`,
    );
  }
}

/** The tensor as [d0, d1, rest] for ranking along dimension 1; a 1-D tensor is [1, n]. */
function dellaFibers(shape: readonly number[], n: number): { outer: number; length: number; inner: number } {
  if (shape.length === 0) {
    throw new MergeMethodError('DELLA ranks magnitudes along dimension 1 and cannot prune a scalar tensor');
  }
  if (shape.length === 1) return { outer: 1, length: n, inner: 1 };
  const outer = shape[0];
  const length = shape[1];
  return { outer, length, inner: outer * length === 0 ? 0 : n / (outer * length) };
}

/**
 * DELLA's keep probabilities, one per element (see the module comment for the formula). Throws for
 * invalid density/epsilon; density must be in (0, 1) here.
 */
export function dellaKeepProbabilities(
  delta: Float32Array,
  shape: readonly number[],
  density: number,
  epsilon: number,
): Float32Array {
  checkDellaParameters(density, epsilon);
  const n = delta.length;
  const { outer, length, inner } = dellaFibers(shape, n);
  if (length < 2 && n > 0) {
    throw new MergeMethodError(
      `DELLA ranks magnitudes along dimension 1, which has length ${length} in shape [${shape.join(', ')}]; ` +
        'it needs at least 2 (use another method for this tensor)',
    );
  }
  const low = fround(density - epsilon);
  const epsilon32 = fround(epsilon);
  const rankSpan = fround(length - 1);
  const probabilities = new Float32Array(n);
  const ranks = new Uint32Array(length);
  for (let o = 0; o < outer; o++) {
    for (let r = 0; r < inner; r++) {
      const offset = o * length * inner + r;
      fiberMagnitudeRanks(delta, offset, length, inner, ranks);
      for (let j = 0; j < length; j++) {
        // 1-based rank r minus min rank 1 is the 0-based rank.
        const norm = fround(ranks[j] / rankSpan);
        probabilities[offset + j * inner] = fround(low + fround(fround(norm * 2) * epsilon32));
      }
    }
  }
  return probabilities;
}

/** DELLA's keep mask: u(i) < p(i). Call only for 0 < density < 1. */
export function dellaMask(
  delta: Float32Array,
  shape: readonly number[],
  density: number,
  epsilon: number,
  random: RandomKey,
): Uint8Array {
  const probabilities = dellaKeepProbabilities(delta, shape, density, epsilon);
  const n = delta.length;
  const mask = new Uint8Array(n);
  const uniforms = new Float32Array(Math.min(n, UNIFORM_TILE));
  for (let start = 0; start < n; start += UNIFORM_TILE) {
    const count = Math.min(UNIFORM_TILE, n - start);
    const tile = count === uniforms.length ? uniforms : uniforms.subarray(0, count);
    fillUniform(tile, random.seed, random.nameHash, random.modelIndex, RNG_STREAM_SPARSIFY, start);
    for (let j = 0; j < count; j++) mask[start + j] = tile[j] < probabilities[start + j] ? 1 : 0;
  }
  return mask;
}

/** Applies a mask and, with rescale, matches the L1 norm of the original (module comment). */
export function rescaledMaskedInPlace(delta: Float32Array, mask: Uint8Array, rescale: boolean): void {
  const before = rescale ? sumAbsF32(delta) : 0;
  for (let i = 0; i < delta.length; i++) delta[i] = delta[i] * mask[i];
  if (!rescale) return;
  const after = sumAbsF32(delta);
  if (before < RESCALE_EPSILON || after < RESCALE_EPSILON) return;
  const scale = fround(before / after);
  for (let i = 0; i < delta.length; i++) delta[i] = delta[i] * scale;
}

/**
 * Sparsifies one task vector in place, as mergekit's `sparsify` (module comment). Returns `delta`.
 */
export function sparsifyInPlace(delta: Float32Array, options: SparsifyOptions): Float32Array {
  const { method, density } = options;
  let mask: Uint8Array | null;
  switch (method) {
    case 'magnitude':
      mask = magnitudeMask(delta, density);
      break;
    case 'magnitude_outliers':
      mask = magnitudeOutliersMask(delta, density, options.gamma ?? 0.01);
      break;
    case 'random':
      mask = density >= 1 ? null : bernoulliMask(delta.length, density, requireRandom(options));
      break;
    case 'della_magprune': {
      if (density >= 1) return delta;
      if (density <= 0) {
        delta.fill(0);
        return delta;
      }
      mask = dellaMask(delta, options.shape, density, options.epsilon ?? 0.15, requireRandom(options));
      break;
    }
  }
  if (mask) rescaledMaskedInPlace(delta, mask, options.rescale);
  return delta;
}
