/**
 * The CPU's per-chunk decode -> method -> encode step on the WebAssembly kernels (wasm.ts): a tensor
 * visited a chunk of whole rows at a time, its inputs as stored (bf16, f16, f32 bytes) in the
 * kernel arena, the output encoded there. Bytes are exactly those of the reference (the method's
 * `stream`, decodeToF32 and encodeFromF32); the choice of path never changes a result, with one
 * exception: a NaN output may carry another sign or payload than the reference's NaN (which
 * operand's payload an operation on two NaNs keeps, and the sign of Inf - Inf's NaN, follow the
 * instructions V8 picks for the reference's loops, which may swap an addition's operands).
 *
 * - linear, task_arithmetic and the rest of the generalized task-arithmetic family: per tile, the
 *   kernels take the task vectors from the stored bytes, the sparsifiers of sparsify.ts decide what
 *   is kept (TIES' and breadcrumbs' masks, DARE's uniforms and DELLA's ranks in WebAssembly), and
 *   one kernel mixes, finishes and encodes.
 * - slerp and model_stock (reduce-kernels.ts): their blocked sums and outputs in WebAssembly from the
 *   stored bytes, the few upper levels of the sums and the coefficients in the reference's TypeScript.
 * - every other streamed method: the WebAssembly codecs around the reference's own passes.
 */
import { DTYPE_BYTES, type FloatDType } from '../formats/dtype';
import { chunkRowLength } from '../methods/chunks';
import {
  GeneralizedTaskArithmetic,
  type TaskArithmeticPlan,
  taskTileLength,
  weightDivisor,
} from '../methods/generalized-task-arithmetic';
import { LinearMerge } from '../methods/linear';
import { elementCount } from '../methods/params';
import {
  type MagnitudeRangeSelector,
  type RankMaskParameters,
  SELECTION_SAMPLE,
} from '../methods/rank-select';
import type { ChunkSparsifier } from '../methods/sparsify';
import type { MergeMethod, StreamingMerge, TensorMergeSpec } from '../methods/types';
import { reductionChunkMerge } from './reduce-kernels';
import {
  ArenaSparsifyKernels,
  dellaArenaBytes,
  SPARSIFY_SCRATCH_BYTES,
  selectionArenaBytes,
} from './sparsify-kernels';
import { DELTA_VALUES, DTYPE_CODE, type KernelArena } from './wasm';

/** Bytes of one model-table entry: pointer, dtype code, f32 weight. */
const ENTRY_BYTES = 12;
/** The generalized task-arithmetic tile (TILE there), or whole rows when they are longer. */
const TILE_BOUND = 4096;

/**
 * One tensor's merge on raw chunks. For each statistics pass p < passes (read `passes` before every
 * pass), `accumulate(p, set, start, n)` for every chunk in order; then `produce(set, start, n)` for
 * every chunk in order, which returns the chunk's encoded output. Chunk inputs go into
 * `input(set, i, n)` first; two sets let one chunk be read while the other is computed (or one set
 * per chunk keeps them all, RawTensorSpec.inputSets), and two output buffers let one be written
 * while the next is produced.
 */
export interface RawChunkMerge {
  readonly passes: number;
  input(set: number, index: number, elements: number): Uint8Array;
  accumulate(pass: number, set: number, start: number, elements: number): void;
  produce(set: number, start: number, elements: number): Uint8Array;
  /**
   * Split statistics (kernel threads, kernel-worker.ts): per model, the selector of its mask, or
   * null for a model without one; absent or null where the statistics cannot be split.
   */
  splitSelectors?(): (MagnitudeRangeSelector | null)[] | null;
  /** Per model of `splitSelectors`: the ties [upTo, below] at its cut keys in the chunk in `set`. */
  chunkTies?(set: number, elements: number): [number, number][];
}

/** What the engine knows of a tensor's inputs and output. */
export interface RawTensorSpec {
  readonly spec: TensorMergeSpec;
  readonly inputDtypes: readonly FloatDType[];
  readonly outDtype: FloatDType;
  /** The recipe's working dtype: inputs stored otherwise are rounded to it when decoded. */
  readonly workDtype?: FloatDType;
  /** The most elements of any chunk. */
  readonly chunkElements: number;
  /**
   * Input buffer sets (default 2, one being read while the other computes). As many as the tensor
   * has chunks keep every chunk's inputs from the first pass to the output (`chunkInputSets`).
   */
  readonly inputSets?: number;
}

/** Input bytes of a tensor whose chunks the engine keeps from the first pass on, at most. */
export const CACHED_INPUT_BYTES = 32 << 20;

/**
 * The input buffer sets of a tensor of `chunks` chunks and `inputBytes` input bytes merged in
 * `passes` statistics passes: every chunk its own when there are passes and the inputs fit in
 * CACHED_INPUT_BYTES (each is read once, not once per pass), else two.
 */
export function chunkInputSets(passes: number, chunks: number, inputBytes: number): number {
  return passes > 0 && chunks > 2 && inputBytes <= CACHED_INPUT_BYTES ? chunks : 2;
}

/** The input buffers, the two output buffers and their views, laid out in the arena. */
class ChunkBuffers {
  readonly inputPtr: number[][];
  readonly outPtr: number[];

  constructor(
    readonly arena: KernelArena,
    readonly raw: RawTensorSpec,
  ) {
    const n = raw.chunkElements;
    this.inputPtr = Array.from({ length: raw.inputSets ?? 2 }, () =>
      raw.inputDtypes.map((dtype) => arena.alloc(n * DTYPE_BYTES[dtype])),
    );
    this.outPtr = [0, 1].map(() => arena.alloc(n * DTYPE_BYTES[raw.outDtype]));
  }

  static bytes(raw: RawTensorSpec): number {
    const n = raw.chunkElements;
    const inputs = raw.inputDtypes.reduce((s, d) => s + Math.ceil((n * DTYPE_BYTES[d]) / 16) * 16, 0);
    return (raw.inputSets ?? 2) * inputs + 2 * (Math.ceil((n * DTYPE_BYTES[raw.outDtype]) / 16) * 16);
  }

  input(set: number, index: number, elements: number): Uint8Array {
    return this.arena.bytes(this.inputPtr[set][index], elements * DTYPE_BYTES[this.raw.inputDtypes[index]]);
  }

  output(set: number, elements: number): Uint8Array {
    return this.arena.bytes(this.outPtr[set], elements * DTYPE_BYTES[this.raw.outDtype]);
  }
}

/** Counts produced chunks, to alternate the output buffers. */
function nextOutputSet(state: { produced: number }): number {
  return state.produced++ & 1;
}

/**
 * A streamed method's own passes, with its inputs decoded (and rounded to the working dtype) and
 * its output encoded by the kernels.
 */
class CodecChunkMerge implements RawChunkMerge {
  private readonly buffers: ChunkBuffers;
  private readonly decoded: number[];
  private readonly outF32: number;
  private readonly state = { produced: 0 };

  constructor(
    private readonly arena: KernelArena,
    private readonly raw: RawTensorSpec,
    private readonly job: StreamingMerge,
  ) {
    const n = raw.chunkElements;
    arena.reset(ChunkBuffers.bytes(raw) + (raw.inputDtypes.length + 1) * (n * 4 + 16));
    this.buffers = new ChunkBuffers(arena, raw);
    this.decoded = raw.inputDtypes.map(() => arena.alloc(n * 4));
    this.outF32 = arena.alloc(n * 4);
  }

  get passes(): number {
    return this.job.passes;
  }

  input(set: number, index: number, elements: number): Uint8Array {
    return this.buffers.input(set, index, elements);
  }

  accumulate(pass: number, set: number, start: number, elements: number): void {
    this.job.accumulate(pass, { start, values: this.decode(set, elements) });
  }

  produce(set: number, start: number, elements: number): Uint8Array {
    const values = this.decode(set, elements);
    const blend = this.job.passes > 0 ? this.job.blend?.() : undefined;
    if (blend) {
      // slerp's output step, decoded values to encoded output in one kernel (the statistics passes
      // have checked these same chunks).
      const outSet = nextOutputSet(this.state);
      this.arena.exports.blend(
        this.decoded[blend.a],
        this.decoded[blend.b],
        blend.s0,
        blend.s1,
        this.buffers.outPtr[outSet],
        DTYPE_CODE[this.raw.outDtype],
        elements,
      );
      return this.buffers.output(outSet, elements);
    }
    const out = this.arena.f32(this.outF32, elements);
    this.job.produce({ start, values }, out);
    const outSet = nextOutputSet(this.state);
    this.arena.exports.encode(
      this.outF32,
      this.buffers.outPtr[outSet],
      DTYPE_CODE[this.raw.outDtype],
      elements,
    );
    return this.buffers.output(outSet, elements);
  }

  private decode(set: number, elements: number): Float32Array[] {
    const { exports } = this.arena;
    const work = this.raw.workDtype;
    return this.raw.inputDtypes.map((dtype, i) => {
      const src = this.buffers.inputPtr[set][i];
      if (work && work !== dtype)
        exports.roundTo(src, DTYPE_CODE[dtype], this.decoded[i], DTYPE_CODE[work], elements);
      else exports.decode(src, DTYPE_CODE[dtype], this.decoded[i], elements);
      return this.arena.f32(this.decoded[i], elements);
    });
  }
}

/** linear: one kernel per chunk, straight from the stored bytes. */
class LinearChunkMerge implements RawChunkMerge {
  readonly passes = 0;
  private readonly buffers: ChunkBuffers;
  private readonly table: number;
  private readonly divisor: number;
  private readonly normalize: boolean;
  private readonly state = { produced: 0 };

  constructor(
    private readonly arena: KernelArena,
    private readonly raw: RawTensorSpec,
    weights: Float64Array,
    normalize: boolean,
  ) {
    arena.reset(ChunkBuffers.bytes(raw) + weights.length * ENTRY_BYTES + 16);
    this.buffers = new ChunkBuffers(arena, raw);
    this.table = arena.alloc(weights.length * ENTRY_BYTES);
    let divisor = weights[0];
    for (let m = 1; m < weights.length; m++) divisor = Math.fround(divisor + weights[m]);
    this.divisor = divisor;
    this.normalize = normalize;
    const ints = new Int32Array(
      arena.u32(this.table, weights.length * 3).buffer,
      this.table,
      weights.length * 3,
    );
    const floats = arena.f32(this.table, weights.length * 3);
    weights.forEach((w, m) => {
      ints[m * 3 + 1] = DTYPE_CODE[raw.inputDtypes[m]];
      floats[m * 3 + 2] = w;
    });
  }

  input(set: number, index: number, elements: number): Uint8Array {
    return this.buffers.input(set, index, elements);
  }

  accumulate(): void {}

  produce(set: number, _start: number, elements: number): Uint8Array {
    const models = this.raw.inputDtypes.length;
    const table = this.arena.u32(this.table, models * 3);
    for (let m = 0; m < models; m++) table[m * 3] = this.buffers.inputPtr[set][m];
    const outSet = nextOutputSet(this.state);
    this.arena.exports.linear(
      this.table,
      models,
      this.buffers.outPtr[outSet],
      DTYPE_CODE[this.raw.outDtype],
      elements,
      this.divisor,
      +this.normalize,
    );
    return this.buffers.output(outSet, elements);
  }
}

/**
 * The generalized task-arithmetic family (generalized-task-arithmetic.ts TaskArithmeticStream),
 * tile by tile: task vectors from the stored bytes, the reference's sparsifiers on tiles in the
 * arena, and one kernel for mixing, finishing and encoding.
 */
class TaskArithmeticChunkMerge implements RawChunkMerge {
  private readonly buffers: ChunkBuffers;
  private readonly tileLength: number;
  private readonly tilePtr: number[];
  private readonly tiles: Float32Array[];
  private readonly table: number;
  private readonly tableWords: Uint32Array;
  private readonly tableInts: Int32Array;
  private readonly divisor: number;
  private readonly state = { produced: 0 };

  /** Arena bytes of the buffers, tiles and table (the sparsifiers' own space comes on top). */
  static bytes(raw: RawTensorSpec, models: number): number {
    const tileBound = Math.max(TILE_BOUND, chunkRowLength(raw.spec.shape));
    return ChunkBuffers.bytes(raw) + Math.max(1, models) * (tileBound * 4 + 16 + ENTRY_BYTES) + 16;
  }

  /** `arena` was reset for at least `bytes(raw, models)` on top of what the plan's sparsifiers took. */
  constructor(
    private readonly arena: KernelArena,
    private readonly raw: RawTensorSpec,
    private readonly plan: TaskArithmeticPlan,
    private readonly sparsifyKernels: ArenaSparsifyKernels,
  ) {
    const { models } = plan;
    this.tileLength = Math.min(raw.chunkElements, taskTileLength(models, chunkRowLength(raw.spec.shape)));
    this.buffers = new ChunkBuffers(arena, raw);
    this.tilePtr = Array.from({ length: Math.max(1, models.length) }, () => arena.alloc(this.tileLength * 4));
    this.table = arena.alloc(Math.max(1, models.length) * ENTRY_BYTES);
    this.tiles = this.tilePtr.map((ptr) => arena.f32(ptr, this.tileLength));
    this.tableWords = arena.u32(this.table, Math.max(1, models.length) * 3);
    this.tableInts = new Int32Array(
      this.tableWords.buffer,
      this.tableWords.byteOffset,
      this.tableWords.length,
    );
    const weights = arena.f32(this.table, Math.max(1, models.length) * 3);
    plan.weights.forEach((w, m) => {
      weights[m * 3 + 2] = w;
    });
    this.divisor = models.length > 0 ? weightDivisor(Float64Array.from(plan.weights, Math.fround)) : 1;
  }

  get passes(): number {
    return this.plan.models.reduce((most, model) => Math.max(most, model.sparsifier?.passes ?? 0), 0);
  }

  input(set: number, index: number, elements: number): Uint8Array {
    return this.buffers.input(set, index, elements);
  }

  accumulate(pass: number, set: number, start: number, elements: number): void {
    const active = this.plan.models.filter((model) => model.sparsifier && pass < model.sparsifier.passes);
    for (let from = 0; from < elements; from += this.tileLength) {
      const to = Math.min(elements, from + this.tileLength);
      for (const model of active) {
        const m = this.plan.models.indexOf(model);
        const delta = this.tileDelta(m, set, from, to);
        (model.sparsifier as ChunkSparsifier).accumulate(pass, delta, start + from);
      }
    }
  }

  produce(set: number, start: number, elements: number): Uint8Array {
    const { exports } = this.arena;
    const { models, consensus, options } = this.plan;
    const base = this.raw.spec.baseIndex;
    const baseDtype = this.raw.inputDtypes[base];
    const baseElt = DTYPE_BYTES[baseDtype];
    const outDtype = this.raw.outDtype;
    const outElt = DTYPE_BYTES[outDtype];
    const outSet = nextOutputSet(this.state);
    const basePtr = this.buffers.inputPtr[set][base];
    const outPtr = this.buffers.outPtr[outSet];
    if (models.length === 0) {
      // No model but the base: the result is the base, rounded to the output dtype.
      for (let from = 0; from < elements; from += this.tileLength) {
        const n = Math.min(this.tileLength, elements - from);
        exports.decode(basePtr + from * baseElt, DTYPE_CODE[baseDtype], this.tilePtr[0], n);
        exports.encode(this.tilePtr[0], outPtr + from * outElt, DTYPE_CODE[outDtype], n);
      }
      return this.buffers.output(outSet, elements);
    }
    const scaleByLambda = options.lambda !== 1;
    const lambda = Math.fround(options.lambda);
    const divide = options.normalize && this.divisor !== 1;
    const only = models.length === 1 ? models[0] : undefined;
    if (
      consensus === null &&
      only !== undefined &&
      !only.sparsifier &&
      baseDtype === 'BF16' &&
      outDtype === 'BF16' &&
      this.raw.inputDtypes[only.index] === 'BF16'
    ) {
      // One bf16 model, bf16 in and out: the whole chunk in one kernel call.
      exports.mixSumOneBf16(
        this.buffers.inputPtr[set][only.index],
        basePtr,
        outPtr,
        elements,
        this.plan.weights[0],
        this.divisor,
        +divide,
        lambda,
        +scaleByLambda,
      );
      return this.buffers.output(outSet, elements);
    }
    if (consensus !== null && only?.sparsifier?.rankMask) {
      // TIES with one model: mask, consensus, mix and encode of the whole chunk in one kernel.
      const index = only.index;
      const bf16 = baseDtype === 'BF16' && outDtype === 'BF16' && this.raw.inputDtypes[index] === 'BF16';
      this.rankMasked(only.sparsifier, start, (mask, state, rescale) =>
        bf16 && !mask.hasBelow && rescale === null
          ? exports.tiesOneBf16(
              this.buffers.inputPtr[set][index],
              basePtr,
              outPtr,
              elements,
              mask.flip,
              mask.upToKey,
              mask.upToTiesTaken,
              state,
              this.plan.weights[0],
              +options.normalize,
              lambda,
              +scaleByLambda,
            )
          : exports.tiesOne(
              this.buffers.inputPtr[set][index],
              DTYPE_CODE[this.raw.inputDtypes[index]],
              basePtr,
              DTYPE_CODE[baseDtype],
              outPtr,
              DTYPE_CODE[outDtype],
              elements,
              mask.flip,
              mask.upToKey,
              mask.upToTiesTaken,
              +mask.hasBelow,
              mask.belowKey,
              mask.belowTiesTaken,
              state,
              rescale ?? 1,
              +(rescale !== null),
              this.plan.weights[0],
              +options.normalize,
              lambda,
              +scaleByLambda,
            ),
      );
      return this.buffers.output(outSet, elements);
    }
    for (let from = 0; from < elements; from += this.tileLength) {
      const to = Math.min(elements, from + this.tileLength);
      for (let m = 0; m < models.length; m++) {
        const sparsifier = models[m].sparsifier;
        if (sparsifier?.rankMask) {
          // The task vector and its TIES / breadcrumbs mask in one kernel, into the tile.
          const index = models[m].index;
          const dtype = this.raw.inputDtypes[index];
          this.rankMasked(sparsifier, start + from, (mask, state, rescale) =>
            exports.maskedDelta(
              this.buffers.inputPtr[set][index] + from * DTYPE_BYTES[dtype],
              DTYPE_CODE[dtype],
              basePtr + from * baseElt,
              DTYPE_CODE[baseDtype],
              this.tilePtr[m],
              to - from,
              mask.flip,
              mask.upToKey,
              mask.upToTiesTaken,
              +mask.hasBelow,
              mask.belowKey,
              mask.belowTiesTaken,
              state,
              rescale ?? 1,
              +(rescale !== null),
            ),
          );
          this.tableWords[m * 3] = this.tilePtr[m];
          this.tableInts[m * 3 + 1] = DELTA_VALUES;
          continue;
        }
        if (consensus === null && !sparsifier) {
          const index = models[m].index;
          const dtype = this.raw.inputDtypes[index];
          this.tableWords[m * 3] = this.buffers.inputPtr[set][index] + from * DTYPE_BYTES[dtype];
          this.tableInts[m * 3 + 1] = DTYPE_CODE[dtype];
          continue;
        }
        const delta = this.tileDelta(m, set, from, to);
        sparsifier?.apply(delta, start + from);
        this.tableWords[m * 3] = this.tilePtr[m];
        this.tableInts[m * 3 + 1] = DELTA_VALUES;
      }
      const baseTile = basePtr + from * baseElt;
      const outTile = outPtr + from * outElt;
      if (consensus === null) {
        exports.mixSum(
          this.table,
          models.length,
          baseTile,
          DTYPE_CODE[baseDtype],
          outTile,
          DTYPE_CODE[outDtype],
          to - from,
          this.divisor,
          +divide,
          lambda,
          +scaleByLambda,
        );
      } else {
        exports.mixConsensus(
          this.table,
          models.length,
          +(consensus === 'sum'),
          baseTile,
          DTYPE_CODE[baseDtype],
          outTile,
          DTYPE_CODE[outDtype],
          to - from,
          +options.normalize,
          lambda,
          +scaleByLambda,
        );
      }
    }
    return this.buffers.output(outSet, elements);
  }

  /**
   * Runs `kernel` on a rank mask's parameters (sparsify.ts rankMask) with its tie counts in the
   * arena, and hands the advanced counts back.
   */
  private rankMasked(
    sparsifier: ChunkSparsifier,
    start: number,
    kernel: (mask: RankMaskParameters, state: number, rescale: number | null) => void,
  ): void {
    const { mask, scale } = (sparsifier.rankMask as NonNullable<ChunkSparsifier['rankMask']>)(start);
    const state = this.sparsifyKernels.tieState();
    const counts = this.arena.f64(state, 2);
    counts[0] = mask.ties[0];
    counts[1] = mask.ties[1];
    kernel(mask, state, scale);
    mask.ties[0] = counts[0];
    mask.ties[1] = counts[1];
    sparsifier.endRankMask?.();
  }

  splitSelectors(): (MagnitudeRangeSelector | null)[] | null {
    let splittable = true;
    const selectors = this.plan.models.map((model) => {
      if (!model.sparsifier) return null;
      if (!model.sparsifier.splitSelector) splittable = false;
      return model.sparsifier.splitSelector ?? null;
    });
    return splittable && selectors.some((s) => s !== null) ? selectors : null;
  }

  chunkTies(set: number, elements: number): [number, number][] {
    const base = this.raw.spec.baseIndex;
    const baseDtype = this.raw.inputDtypes[base];
    const out = this.sparsifyKernels.tieState();
    const counts = this.arena.f64(out, 2);
    return this.plan.models.map((model) => {
      const selector = model.sparsifier?.splitSelector;
      if (!selector) return [0, 0];
      // Any start but 0: the running counts are left as they are.
      const mask = selector.beginMask(1);
      this.arena.exports.countTies(
        this.buffers.inputPtr[set][model.index],
        DTYPE_CODE[this.raw.inputDtypes[model.index]],
        this.buffers.inputPtr[set][base],
        DTYPE_CODE[baseDtype],
        elements,
        mask.flip,
        mask.upToKey,
        +mask.hasBelow,
        mask.belowKey,
        out,
      );
      return [counts[0], counts[1]];
    });
  }

  /** Model m's task vector for chunk elements [from, to), in its tile. */
  private tileDelta(m: number, set: number, from: number, to: number): Float32Array {
    const index = this.plan.models[m].index;
    const base = this.raw.spec.baseIndex;
    const dtype = this.raw.inputDtypes[index];
    const baseDtype = this.raw.inputDtypes[base];
    this.arena.exports.delta(
      this.buffers.inputPtr[set][index] + from * DTYPE_BYTES[dtype],
      DTYPE_CODE[dtype],
      this.buffers.inputPtr[set][base] + from * DTYPE_BYTES[baseDtype],
      DTYPE_CODE[baseDtype],
      this.tilePtr[m],
      to - from,
    );
    return to - from === this.tileLength ? this.tiles[m] : this.tiles[m].subarray(0, to - from);
  }
}

/**
 * Whether every chunk's output of `rawChunkMerge` depends on that chunk alone: no statistics passes
 * and no state carried from chunk to chunk (DARE's uniforms are keyed by element index, DELLA ranks
 * within rows). Such a tensor's chunks may be produced by different threads, each on its own
 * instance, with the bytes of one instance producing them all. TIES' and breadcrumbs' masks carry
 * the tie count from chunk to chunk, and the other methods' reductions span the tensor.
 */
export function chunksIndependent(
  method: MergeMethod,
  raw: Pick<RawTensorSpec, 'inputDtypes' | 'workDtype'>,
): boolean {
  if (raw.workDtype !== undefined && raw.inputDtypes.some((d) => d !== raw.workDtype)) return false;
  if (method instanceof LinearMerge) return true;
  if (!(method instanceof GeneralizedTaskArithmetic)) return false;
  const s = method.variant.sparsification;
  return s !== 'magnitude' && s !== 'magnitude_outliers';
}

/**
 * The raw-chunk merge of one tensor on the kernels, or null where the method has no streamed form.
 * Throws the method's own MergeMethodError for parameters it rejects.
 */
export function rawChunkMerge(
  arena: KernelArena,
  method: MergeMethod,
  raw: RawTensorSpec,
): RawChunkMerge | null {
  if (!method.stream) return null;
  const { spec } = raw;
  const rounded = raw.workDtype !== undefined && raw.inputDtypes.some((d) => d !== raw.workDtype);
  if (!rounded && method instanceof GeneralizedTaskArithmetic) {
    const models = spec.tensors.length - 1;
    const total = elementCount(spec.shape);
    const selection =
      method.variant.sparsification === 'magnitude' || method.variant.sparsification === 'magnitude_outliers';
    const della = method.variant.sparsification === 'della_magprune' && spec.shape.length > 0;
    const fiberLength = spec.shape.length === 1 ? total : spec.shape[1];
    const sparsifyBytes =
      SPARSIFY_SCRATCH_BYTES +
      (selection ? models * selectionArenaBytes(Math.min(total, SELECTION_SAMPLE)) : 0) +
      (della ? dellaArenaBytes(arena, Math.max(TILE_BOUND, chunkRowLength(spec.shape)), fiberLength) : 0);
    arena.reset(sparsifyBytes + TaskArithmeticChunkMerge.bytes(raw, models));
    const sparsifyKernels = new ArenaSparsifyKernels(arena);
    const plan = method.plan(spec, sparsifyKernels);
    return new TaskArithmeticChunkMerge(arena, raw, plan, sparsifyKernels);
  }
  if (!rounded && method instanceof LinearMerge) {
    // The reference checks the recipe (weights, a zero divisor) and is the spec of the sums.
    method.stream(spec);
    const weights = Float64Array.from(spec.tensors, (t) => Math.fround(Number(t.params.weight)));
    const normalize = spec.params.normalize !== false;
    return new LinearChunkMerge(arena, raw, weights, normalize);
  }
  if (elementCount(spec.shape) === 0) return null;
  const reduction = reductionChunkMerge(arena, method, raw);
  if (reduction) return reduction;
  return new CodecChunkMerge(arena, raw, method.stream(spec));
}
