/**
 * Sparsification of task vectors, as mergekit's `sparsify.py` does it, in f32.
 *
 * Every method decides keep (1) or drop (0) per element, then, as `rescaledMaskedInPlace` does:
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
 *
 * Streaming (`ChunkSparsifier`, a tensor visited a chunk of whole rows at a time, in order): the L1
 * norms are blocked sums carried across chunks; TIES and breadcrumbs find their cut keys in pass 0
 * (pass 1 too when the first rows mislead the guess, see rank-select.ts); DARE draws at the flat
 * index; DELLA ranks within the rows of the chunk. Statistics passes: magnitude / magnitude_outliers
 * 1 or 2, random / della_magprune 0; with rescale one more (|delta| is summed in pass 0, |masked| in
 * the last pass, once the keep decisions are known).
 */
import { fillUniform, RNG_STREAM_SPARSIFY } from '../random/counter-rng';
import { ScratchF32, ScratchU8 } from './chunks';
import { BlockedSumF32 } from './f32-reduce';
import {
  fiberRanksFromBits,
  MagnitudeRangeSelector,
  magnitudeRankRangeMask,
  PACKED_SORT_MAX,
  type RankMaskParameters,
  SELECTION_SAMPLE,
  type SelectionKernels,
} from './rank-select';
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
  /** Shape of the tensor; its element count sets TIES' and breadcrumbs' k, DELLA ranks along dimension 1. */
  readonly shape: readonly number[];
  /** Required by 'random' and 'della_magprune'. */
  readonly random?: RandomKey;
  /** Faster exact loops (the WebAssembly kernels); the TypeScript here runs wherever they do not. */
  readonly kernels?: SparsifyKernels;
}

/**
 * Exact replacements for the hot loops of the sparsifications (src/kernels). Each returns false
 * where it cannot run on the arrays it is given, and the TypeScript loop runs instead.
 */
export interface SparsifyKernels {
  readonly selection?: SelectionKernels;
  /** fillUniform (counter-rng.ts) of `out` for elements start + j, stream RNG_STREAM_SPARSIFY. */
  fillUniform?(out: Float32Array, random: RandomKey, start: number): boolean;
  /** delta[j] = delta[j] * +(u(start + j) < probability) in place: DARE's mask. */
  bernoulliInPlace?(delta: Float32Array, start: number, probability: number, random: RandomKey): boolean;
  /**
   * DELLA's mask in place on a chunk of whole slabs: delta[j] = delta[j] * +(u(start + j) < p_j),
   * p_j from the magnitude rank of delta[j] within its fiber (dellaChunkProbabilities).
   */
  dellaInPlace?(
    delta: Float32Array,
    start: number,
    fibers: DellaFibers,
    scale: DellaScale,
    random: RandomKey,
  ): boolean;
}

/**
 * One task vector's sparsification as passes over chunks of whole rows, in order (types.ts
 * `StreamingMerge`): `accumulate(p, ...)` on every chunk for each statistics pass p < passes, then
 * `apply` on every chunk. Both take the chunk's delta values, which they may overwrite.
 */
export interface ChunkSparsifier {
  readonly passes: number;
  /**
   * True when every call must cover whole rows of the tensor (DELLA ranks within rows); otherwise any
   * consecutive range of a chunk will do, so callers may work in small cache-sized tiles.
   */
  readonly wholeRows: boolean;
  /** Statistics pass `pass` over delta[0, delta.length), tensor elements [start, start + delta.length). */
  accumulate(pass: number, delta: Float32Array, start: number): void;
  /** Replaces the chunk's delta values by their sparsified values. */
  apply(delta: Float32Array, start: number): void;
  /**
   * TIES and breadcrumbs: instead of `apply` on the chunk at `start`, its keep decisions as kernel
   * parameters, and the rescale factor to multiply the kept values by (null: none); call
   * `endRankMask` once the kernel has run.
   */
  rankMask?(start: number): { mask: RankMaskParameters; scale: number | null };
  endRankMask?(): void;
  /**
   * TIES and breadcrumbs without rescale: the selector whose statistics threads can split
   * (rank-select.ts partialCounts, mergeCounts); absent where they run in chunk order.
   */
  readonly splitSelector?: MagnitudeRangeSelector;
}

const fround = Math.fround;

/** Elements per tile when drawing uniforms, to bound the scratch memory on large chunks. */
const UNIFORM_TILE = 1 << 16;

function bitsOf(values: Float32Array): Int32Array {
  return new Int32Array(values.buffer, values.byteOffset, values.length);
}

/** The rescale factor for L1 norms before and after masking; null where mergekit leaves the mask as is. */
export function rescaleFactor(before: number, after: number): number | null {
  if (before < RESCALE_EPSILON || after < RESCALE_EPSILON) return null;
  return fround(before / after);
}

/** delta[i] = fround(delta[i] * mask[i]), then with a factor fround(delta[i] * scale). */
function maskInPlace(delta: Float32Array, mask: Uint8Array, scale: number | null): void {
  const n = delta.length;
  if (scale === null) {
    for (let i = 0; i < n; i++) delta[i] = delta[i] * mask[i];
  } else {
    for (let i = 0; i < n; i++) delta[i] = fround(delta[i] * mask[i]) * scale;
  }
}

/**
 * A sparsification that multiplies each delta by a 0/1 keep decision, then applies the optional L1
 * rescale. With rescale, pass 0 also sums |delta| and pass `maskPasses` sums |masked delta|.
 */
abstract class MaskSparsifier implements ChunkSparsifier {
  readonly wholeRows: boolean = false;
  private readonly before = new BlockedSumF32();
  private readonly after = new BlockedSumF32();
  private scale: number | null | undefined;

  constructor(protected readonly rescale: boolean) {}

  /** Statistics passes the mask needs; may drop after pass 0 (rank-select.ts). */
  protected abstract get maskPasses(): number;

  get passes(): number {
    return this.maskPasses + (this.rescale ? 1 : 0);
  }

  /** Statistics pass `pass` < maskPasses for the mask. */
  protected abstract countForMask(pass: number, delta: Float32Array, start: number): void;
  /** delta[j] = fround(delta[j] * keep_j) for the elements start + j of the chunk. */
  protected abstract applyMask(delta: Float32Array, start: number): void;

  accumulate(pass: number, delta: Float32Array, start: number): void {
    if (this.rescale && pass === 0) this.before.addAbs(delta, 0, delta.length);
    if (pass < this.maskPasses) {
      this.countForMask(pass, delta, start);
    } else if (this.rescale && pass === this.maskPasses) {
      this.applyMask(delta, start);
      this.after.addAbs(delta, 0, delta.length);
    }
  }

  /** The rescale factor, known once the statistics passes are done (null: none). */
  protected finalScale(): number | null {
    if (this.scale === undefined) {
      this.scale = this.rescale ? rescaleFactor(this.before.result(), this.after.result()) : null;
    }
    return this.scale;
  }

  apply(delta: Float32Array, start: number): void {
    this.finalScale();
    this.applyMask(delta, start);
    const scale = this.scale as number | null;
    if (scale !== null) for (let i = 0; i < delta.length; i++) delta[i] = delta[i] * scale;
  }
}

/** TIES and breadcrumbs: positions [from, to) of the magnitude order, selected by histogram passes. */
class RankRangeSparsifier extends MaskSparsifier {
  private readonly selector: MagnitudeRangeSelector;

  constructor(selector: MagnitudeRangeSelector, rescale: boolean) {
    super(rescale);
    this.selector = selector;
  }

  protected get maskPasses(): number {
    return this.selector.passes;
  }

  protected countForMask(pass: number, delta: Float32Array): void {
    if (pass === 0) this.selector.countHigh(bitsOf(delta), 0, delta.length);
    else this.selector.countLow(bitsOf(delta), 0, delta.length);
  }

  protected applyMask(delta: Float32Array, start: number): void {
    this.selector.maskValues(bitsOf(delta), 0, delta.length, start, delta);
  }

  rankMask(start: number): { mask: RankMaskParameters; scale: number | null } {
    return { mask: this.selector.beginMask(start), scale: this.finalScale() };
  }

  endRankMask(): void {
    this.selector.endMask();
  }

  get splitSelector(): MagnitudeRangeSelector | undefined {
    // The rescale's L1 sums are f32 sums in chunk order, which threads cannot split.
    return this.rescale ? undefined : this.selector;
  }
}

/** A sparsification whose keep decisions come as a mask per chunk (drawn at random). */
abstract class RandomMaskSparsifier extends MaskSparsifier {
  private readonly mask = new ScratchU8();

  protected get maskPasses(): number {
    return 0;
  }

  protected countForMask(): void {}

  /** mask[j] = 1 iff element start + j is kept, for j in [0, delta.length). */
  protected abstract fillMask(delta: Float32Array, start: number, mask: Uint8Array): void;

  protected applyMask(delta: Float32Array, start: number): void {
    const mask = this.mask.take(delta.length);
    this.fillMask(delta, start, mask);
    maskInPlace(delta, mask, null);
  }

  /** The mask of a whole tensor given as one chunk. */
  wholeMask(delta: Float32Array): Uint8Array {
    const mask = new Uint8Array(delta.length);
    this.fillMask(delta, 0, mask);
    return mask;
  }
}

/** TIES' k = trunc(density * n) (Python's int()); null when density >= 1 (keep all). */
function magnitudeCount(n: number, density: number): number | null {
  if (density >= 1) return null;
  const k = Math.trunc(density * n);
  if (k <= 0) {
    throw new MergeMethodError(
      `density ${density} keeps no element of a tensor with ${n} elements ` +
        `(int(density * n) = ${k}); raise density`,
    );
  }
  return k;
}

/** TIES: the k largest magnitudes; null when density >= 1. */
function magnitudeSparsifier(
  n: number,
  density: number,
  rescale: boolean,
  kernels?: SelectionKernels,
): RankRangeSparsifier | null {
  const k = magnitudeCount(n, density);
  return k === null
    ? null
    : new RankRangeSparsifier(
        new MagnitudeRangeSelector(n, 0, k, 'descending', SELECTION_SAMPLE, kernels),
        rescale,
      );
}

/** TIES' keep mask: the trunc(density * n) largest magnitudes; null when density >= 1 (keep all). */
export function magnitudeMask(delta: Float32Array, density: number): Uint8Array | null {
  const k = magnitudeCount(delta.length, density);
  return k === null ? null : magnitudeRankRangeMask(delta, 0, k, 'descending');
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

/** Breadcrumbs' kept positions [from, to) of the ascending magnitude order (module comment). */
function outliersRange(n: number, density: number, gamma: number): [number, number] {
  const { bottom, top } = breadcrumbsCuts(n, density, gamma);
  // indices[bottom:-top]; -0 is 0 in Python, so top = 0 gives an empty slice.
  return pythonSliceRange(bottom, -top, n);
}

/** Breadcrumbs (module comment, including the empty slice when top is 0); null when density >= 1. */
function outliersSparsifier(
  n: number,
  density: number,
  gamma: number,
  rescale: boolean,
  kernels?: SelectionKernels,
): RankRangeSparsifier | null {
  if (density >= 1) return null;
  const [from, to] = outliersRange(n, density, gamma);
  return new RankRangeSparsifier(
    new MagnitudeRangeSelector(n, from, to, 'ascending', SELECTION_SAMPLE, kernels),
    rescale,
  );
}

/** Breadcrumbs' keep mask (see the module comment, including the empty slice when top is 0). */
export function magnitudeOutliersMask(
  delta: Float32Array,
  density: number,
  gamma: number,
): Uint8Array | null {
  if (density >= 1) return null;
  const [from, to] = outliersRange(delta.length, density, gamma);
  return magnitudeRankRangeMask(delta, from, to, 'ascending');
}

function requireRandom(options: SparsifyOptions): RandomKey {
  if (!options.random) {
    throw new MergeMethodError(`sparsification "${options.method}" needs a random key (seed, tensor, model)`);
  }
  return options.random;
}

/**
 * mask[j] = 1 iff the uniform of element start + j is below the keep probability: `probability` when
 * a number, probability[j] when an array. Uniforms are drawn in tiles of at most UNIFORM_TILE.
 */
function fillRandomMask(
  mask: Uint8Array,
  start: number,
  probability: number | Float32Array,
  random: RandomKey,
  scratch: ScratchF32,
  kernels?: SparsifyKernels,
): void {
  const n = mask.length;
  const uniforms = scratch.take(Math.min(n, UNIFORM_TILE));
  for (let offset = 0; offset < n; offset += uniforms.length) {
    const count = Math.min(uniforms.length, n - offset);
    const tile = count === uniforms.length ? uniforms : uniforms.subarray(0, count);
    if (!kernels?.fillUniform?.(tile, random, start + offset)) {
      fillUniform(tile, random.seed, random.nameHash, random.modelIndex, RNG_STREAM_SPARSIFY, start + offset);
    }
    // +(a < b) rather than a conditional: keep/drop is a coin flip, which branches mispredict.
    if (typeof probability === 'number') {
      for (let j = 0; j < count; j++) mask[offset + j] = +(tile[j] < probability);
    } else {
      for (let j = 0; j < count; j++) {
        mask[offset + j] = +(tile[j] < probability[offset + j]);
      }
    }
  }
}

function checkBernoulliDensity(density: number): void {
  if (density < 0 || Number.isNaN(density)) {
    throw new MergeMethodError(`density must be between 0 and 1, got ${density}`);
  }
}

/** DARE: element i kept iff u(i) < fround(density). */
class BernoulliSparsifier extends RandomMaskSparsifier {
  private readonly probability: number;
  private readonly uniforms = new ScratchF32();

  constructor(
    density: number,
    private readonly random: RandomKey,
    rescale: boolean,
    private readonly kernels?: SparsifyKernels,
  ) {
    super(rescale);
    checkBernoulliDensity(density);
    this.probability = fround(density);
  }

  protected fillMask(_delta: Float32Array, start: number, mask: Uint8Array): void {
    fillRandomMask(mask, start, this.probability, this.random, this.uniforms, this.kernels);
  }

  protected override applyMask(delta: Float32Array, start: number): void {
    if (this.kernels?.bernoulliInPlace?.(delta, start, this.probability, this.random)) return;
    super.applyMask(delta, start);
  }
}

/** DARE's keep mask: u(i) < fround(density); null when density >= 1. */
export function bernoulliMask(n: number, density: number, random: RandomKey): Uint8Array | null {
  if (density >= 1) return null;
  checkBernoulliDensity(density);
  const mask = new Uint8Array(n);
  fillRandomMask(mask, 0, fround(density), random, new ScratchF32());
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
export interface DellaFibers {
  /** Fibers per slab (the elements of `rest`) and fiber length (d1); a slab is one row of a chunk. */
  readonly inner: number;
  readonly length: number;
}

function dellaFibers(shape: readonly number[], n: number): DellaFibers {
  if (shape.length === 0) {
    throw new MergeMethodError('DELLA ranks magnitudes along dimension 1 and cannot prune a scalar tensor');
  }
  const outer = shape.length === 1 ? 1 : shape[0];
  const length = shape.length === 1 ? n : shape[1];
  const fibers = { length, inner: outer * length === 0 ? 0 : n / (outer * length) };
  if (length < 2 && n > 0) {
    throw new MergeMethodError(
      `DELLA ranks magnitudes along dimension 1, which has length ${length} in shape [${shape.join(', ')}]; ` +
        'it needs at least 2 (use another method for this tensor)',
    );
  }
  return fibers;
}

/** The f32 constants of DELLA's keep probability (module comment). */
export interface DellaScale {
  readonly low: number;
  readonly epsilon: number;
  readonly rankSpan: number;
}

function dellaScale(density: number, epsilon: number, length: number): DellaScale {
  return { low: fround(density - epsilon), epsilon: fround(epsilon), rankSpan: fround(length - 1) };
}

/** Scratch for ranking one fiber. */
class FiberScratch {
  readonly ranks: Uint32Array;
  readonly packed: Float64Array;

  constructor(length: number) {
    this.ranks = new Uint32Array(length);
    this.packed = new Float64Array(length <= PACKED_SORT_MAX ? length : 0);
  }
}

/**
 * DELLA's keep probabilities of a chunk of whole slabs (rows): probabilities[j] for delta[j], ranked
 * within each fiber along dimension 1.
 */
function dellaChunkProbabilities(
  delta: Float32Array,
  fibers: DellaFibers,
  scale: DellaScale,
  scratch: FiberScratch,
  probabilities: Float32Array,
): void {
  const { length, inner } = fibers;
  const slab = length * inner;
  if (slab === 0) return;
  const bits = bitsOf(delta);
  const ranks = scratch.ranks;
  const { low, epsilon, rankSpan } = scale;
  for (let slabStart = 0; slabStart < delta.length; slabStart += slab) {
    for (let r = 0; r < inner; r++) {
      const offset = slabStart + r;
      fiberRanksFromBits(bits, offset, length, inner, ranks, scratch.packed);
      for (let j = 0; j < length; j++) {
        // 1-based rank r minus min rank 1 is the 0-based rank.
        const norm = fround(ranks[j] / rankSpan);
        probabilities[offset + j * inner] = low + fround(fround(norm * 2) * epsilon);
      }
    }
  }
}

/** DELLA: element i kept iff u(i) < p(i), p from its magnitude rank within its fiber. */
class DellaSparsifier extends RandomMaskSparsifier {
  override readonly wholeRows = true;
  private readonly fibers: DellaFibers;
  private readonly keepScale: DellaScale;
  private readonly scratch: FiberScratch;
  private readonly uniforms = new ScratchF32();
  private readonly probabilities = new ScratchF32();

  constructor(
    n: number,
    shape: readonly number[],
    density: number,
    epsilon: number,
    private readonly random: RandomKey,
    rescale: boolean,
    private readonly kernels?: SparsifyKernels,
  ) {
    super(rescale);
    checkDellaParameters(density, epsilon);
    this.fibers = dellaFibers(shape, n);
    this.keepScale = dellaScale(density, epsilon, this.fibers.length);
    this.scratch = new FiberScratch(this.fibers.length);
  }

  protected override applyMask(delta: Float32Array, start: number): void {
    if (this.kernels?.dellaInPlace?.(delta, start, this.fibers, this.keepScale, this.random)) return;
    super.applyMask(delta, start);
  }

  protected fillMask(delta: Float32Array, start: number, mask: Uint8Array): void {
    const probabilities = this.probabilities.take(delta.length);
    dellaChunkProbabilities(delta, this.fibers, this.keepScale, this.scratch, probabilities);
    fillRandomMask(mask, start, probabilities, this.random, this.uniforms, this.kernels);
  }
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
  const fibers = dellaFibers(shape, delta.length);
  const probabilities = new Float32Array(delta.length);
  dellaChunkProbabilities(
    delta,
    fibers,
    dellaScale(density, epsilon, fibers.length),
    new FiberScratch(fibers.length),
    probabilities,
  );
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
  return new DellaSparsifier(delta.length, shape, density, epsilon, random, false).wholeMask(delta);
}

/** DELLA at density <= 0: zeros, NaNs cleared too (torch.zeros_like). */
class ZeroSparsifier implements ChunkSparsifier {
  readonly passes = 0;
  readonly wholeRows = false;
  accumulate(): void {}
  apply(delta: Float32Array): void {
    delta.fill(0);
  }
}

/**
 * The chunked sparsification of one task vector of `elementCount(options.shape)` elements, or null
 * when it leaves the task vector untouched (density >= 1). Throws MergeMethodError for parameters
 * mergekit rejects.
 */
export function createSparsifier(options: SparsifyOptions, n: number): ChunkSparsifier | null {
  const { method, density, rescale, kernels } = options;
  switch (method) {
    case 'magnitude':
      return magnitudeSparsifier(n, density, rescale, kernels?.selection);
    case 'magnitude_outliers':
      return outliersSparsifier(n, density, options.gamma ?? 0.01, rescale, kernels?.selection);
    case 'random':
      return density >= 1 ? null : new BernoulliSparsifier(density, requireRandom(options), rescale, kernels);
    case 'della_magprune':
      if (density >= 1) return null;
      if (density <= 0) return new ZeroSparsifier();
      return new DellaSparsifier(
        n,
        options.shape,
        density,
        options.epsilon ?? 0.15,
        requireRandom(options),
        rescale,
        kernels,
      );
  }
}

/** Applies a mask and, with rescale, matches the L1 norm of the original (module comment). */
export function rescaledMaskedInPlace(delta: Float32Array, mask: Uint8Array, rescale: boolean): void {
  const before = new BlockedSumF32();
  if (rescale) before.addAbs(delta, 0, delta.length);
  maskInPlace(delta, mask, null);
  if (!rescale) return;
  const after = new BlockedSumF32();
  after.addAbs(delta, 0, delta.length);
  const scale = rescaleFactor(before.result(), after.result());
  if (scale === null) return;
  for (let i = 0; i < delta.length; i++) delta[i] = delta[i] * scale;
}

/**
 * Sparsifies one whole task vector in place, as mergekit's `sparsify` (module comment). Returns `delta`.
 */
export function sparsifyInPlace(delta: Float32Array, options: SparsifyOptions): Float32Array {
  const sparsifier = createSparsifier(options, delta.length);
  if (sparsifier === null) return delta;
  const scratch = new Float32Array(delta.length);
  for (let pass = 0; pass < sparsifier.passes; pass++) {
    // Passes may overwrite the values they are given.
    scratch.set(delta);
    sparsifier.accumulate(pass, scratch, 0);
  }
  sparsifier.apply(delta, 0);
  return delta;
}
