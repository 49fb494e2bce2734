/**
 * slerp and model_stock on the WebAssembly kernels (wasm.ts), chunk by chunk (fused.ts RawChunkMerge):
 * their reductions (f32-reduce.ts blocked sums of squares and products) and their outputs straight
 * from the stored bytes. The kernels give the level-0 block sums in the reference's order; the few
 * upper levels, the norms, the cosine and the coefficients stay in the reference's own TypeScript
 * (BlockedSumF32, slerpCoefficients, ModelStockStatistics.ratio), so the bytes are the reference's.
 */
import { DTYPE_BYTES } from '../formats/dtype';
import { BlockedSumF32, REDUCTION_BLOCK } from '../methods/f32-reduce';
import { ModelStockMerge, ModelStockStatistics } from '../methods/model-stock';
import { readBoolean, readNumber } from '../methods/params';
import { SLERP_NORM_EPSILON, SlerpMerge, slerpCoefficients } from '../methods/slerp';
import type { MergeMethod } from '../methods/types';
import type { RawChunkMerge, RawTensorSpec } from './fused';
import { DTYPE_CODE, type KernelArena } from './wasm';

const fround = Math.fround;
/** Offsets per kernel call in model_stock's statistics: small enough to stay in cache. */
const OFFSET_TILE = 4096;
/** Bytes of one model-table entry (fused.ts): pointer, dtype code, unused weight. */
const ENTRY_BYTES = 12;

/** Where a chunk's input lies for the kernels: its stored bytes, or its values rounded to the working dtype. */
interface KernelInput {
  readonly ptr: number;
  readonly dtype: number;
}

/**
 * A chunk's input buffers (RawTensorSpec.inputSets sets, default two), the two output buffers, and f32
 * buffers for rounded inputs.
 */
class ReductionBuffers {
  private readonly inputPtr: number[][];
  readonly outPtr: number[];
  private readonly roundedPtr: number[];
  private readonly rounded: boolean;
  private produced = 0;

  static bytes(raw: RawTensorSpec): number {
    const n = raw.chunkElements;
    const padded = (bytes: number) => Math.ceil(bytes / 16) * 16;
    const inputs = raw.inputDtypes.reduce((s, d) => s + padded(n * DTYPE_BYTES[d]), 0);
    const rounded = ReductionBuffers.rounds(raw) ? raw.inputDtypes.length * padded(n * 4) : 0;
    return (raw.inputSets ?? 2) * inputs + 2 * padded(n * DTYPE_BYTES[raw.outDtype]) + rounded;
  }

  private static rounds(raw: RawTensorSpec): boolean {
    return raw.workDtype !== undefined && raw.inputDtypes.some((d) => d !== raw.workDtype);
  }

  constructor(
    private readonly arena: KernelArena,
    private readonly raw: RawTensorSpec,
  ) {
    const n = raw.chunkElements;
    this.inputPtr = Array.from({ length: raw.inputSets ?? 2 }, () =>
      raw.inputDtypes.map((dtype) => arena.alloc(n * DTYPE_BYTES[dtype])),
    );
    this.outPtr = [0, 1].map(() => arena.alloc(n * DTYPE_BYTES[raw.outDtype]));
    this.rounded = ReductionBuffers.rounds(raw);
    this.roundedPtr = this.rounded ? raw.inputDtypes.map(() => arena.alloc(n * 4)) : [];
  }

  input(set: number, index: number, elements: number): Uint8Array {
    return this.arena.bytes(this.inputPtr[set][index], elements * DTYPE_BYTES[this.raw.inputDtypes[index]]);
  }

  /**
   * The chunk's inputs as the kernels read them. With a working dtype that differs from an input's,
   * its values are rounded to it first (the engine's roundTo), into the f32 buffers.
   */
  views(set: number, elements: number): KernelInput[] {
    const work = this.raw.workDtype;
    return this.raw.inputDtypes.map((dtype, i) => {
      const ptr = this.inputPtr[set][i];
      if (!this.rounded || work === undefined) return { ptr, dtype: DTYPE_CODE[dtype] };
      if (work === dtype) this.arena.exports.decode(ptr, DTYPE_CODE[dtype], this.roundedPtr[i], elements);
      else this.arena.exports.roundTo(ptr, DTYPE_CODE[dtype], this.roundedPtr[i], DTYPE_CODE[work], elements);
      return { ptr: this.roundedPtr[i], dtype: DTYPE_CODE.F32 };
    });
  }

  /** The next output buffer (they alternate, so one is written while the next is produced). */
  nextOutput(): number {
    return this.outPtr[this.produced++ & 1];
  }

  output(ptr: number, elements: number): Uint8Array {
    return this.arena.bytes(ptr, elements * DTYPE_BYTES[this.raw.outDtype]);
  }
}

/** The open-block state and the block sums of the kernels' blocked sums (one call at a time). */
class KernelSums {
  private readonly state: number;
  private readonly sums: number;

  static bytes(elements: number): number {
    return 16 + (Math.ceil(elements / REDUCTION_BLOCK) + 4) * 4 + 32;
  }

  /** `elements`: the most terms one call adds. */
  constructor(
    private readonly arena: KernelArena,
    elements: number,
  ) {
    this.state = arena.alloc(16);
    this.sums = arena.alloc((Math.ceil(elements / REDUCTION_BLOCK) + 4) * 4);
  }

  /** Runs `kernel(state, sums)`, which adds terms to `sum` from its open block on. */
  add(sum: BlockedSumF32, kernel: (state: number, sums: number) => number): void {
    const { sum: openSum, count } = sum.openBlock;
    this.arena.f32(this.state, 1)[0] = openSum;
    this.arena.u32(this.state + 4, 1)[0] = count;
    const closed = kernel(this.state, this.sums);
    const open = this.arena.f32(this.state, 1)[0];
    const openCount = this.arena.u32(this.state + 4, 1)[0];
    sum.addBlockSums(this.arena.f32(this.sums, closed), closed, open, openCount);
  }
}

/** slerp of two models (slerp.ts): pass 0 the squares, pass 1 the unit vectors' products, then the blend. */
class SlerpChunkMerge implements RawChunkMerge {
  readonly passes = 2;
  private readonly buffers: ReductionBuffers;
  private readonly sums: KernelSums;
  private readonly squaresA = new BlockedSumF32();
  private readonly squaresB = new BlockedSumF32();
  private readonly dot = new BlockedSumF32();
  private norms: { a: number; b: number } | null = null;
  private coefficients: { s0: number; s1: number } | null = null;
  private readonly otherIndex: number;

  constructor(
    private readonly arena: KernelArena,
    private readonly raw: RawTensorSpec,
    private readonly t: number,
  ) {
    arena.reset(ReductionBuffers.bytes(raw) + KernelSums.bytes(raw.chunkElements));
    this.buffers = new ReductionBuffers(arena, raw);
    this.sums = new KernelSums(arena, raw.chunkElements);
    this.otherIndex = 1 - raw.spec.baseIndex;
  }

  input(set: number, index: number, elements: number): Uint8Array {
    return this.buffers.input(set, index, elements);
  }

  accumulate(pass: number, set: number, _start: number, elements: number): void {
    const { exports } = this.arena;
    const views = this.buffers.views(set, elements);
    const a = views[this.raw.spec.baseIndex];
    const b = views[this.otherIndex];
    if (pass === 0) {
      this.sums.add(this.squaresA, (state, sums) =>
        exports.squareBlockSums(a.ptr, a.dtype, elements, state, sums),
      );
      this.sums.add(this.squaresB, (state, sums) =>
        exports.squareBlockSums(b.ptr, b.dtype, elements, state, sums),
      );
      return;
    }
    this.norms ??= {
      a: fround(Math.sqrt(this.squaresA.result())),
      b: fround(Math.sqrt(this.squaresB.result())),
    };
    // A norm too small to divide by leaves its vector as it is: dividing by 1 does exactly that.
    const divisorA = this.norms.a > SLERP_NORM_EPSILON ? this.norms.a : 1;
    const divisorB = this.norms.b > SLERP_NORM_EPSILON ? this.norms.b : 1;
    this.sums.add(this.dot, (state, sums) =>
      exports.unitProductBlockSums(a.ptr, a.dtype, divisorA, b.ptr, b.dtype, divisorB, elements, state, sums),
    );
  }

  produce(set: number, _start: number, elements: number): Uint8Array {
    this.coefficients ??= slerpCoefficients(this.dot.result(), this.t);
    const views = this.buffers.views(set, elements);
    const a = views[this.raw.spec.baseIndex];
    const b = views[this.otherIndex];
    const out = this.buffers.nextOutput();
    const { s0, s1 } = this.coefficients;
    this.arena.exports.blendStored(
      a.ptr,
      a.dtype,
      b.ptr,
      b.dtype,
      s0,
      s1,
      out,
      DTYPE_CODE[this.raw.outDtype],
      elements,
    );
    return this.buffers.output(out, elements);
  }
}

/**
 * model_stock of a base and N >= 2 models (model-stock.ts): the offsets' squares and pairwise
 * products (over the tensor in pass 0, or per row with filter_wise), then the interpolation.
 */
class ModelStockChunkMerge implements RawChunkMerge {
  readonly passes: number;
  private readonly buffers: ReductionBuffers;
  private readonly sums: KernelSums;
  private readonly others: number[];
  private readonly statistics: ModelStockStatistics;
  private readonly offsetPtr: number[];
  private readonly table: number;
  private readonly vectorLength: number;
  private tensorRatio: number | null = null;

  constructor(
    private readonly arena: KernelArena,
    private readonly raw: RawTensorSpec,
    private readonly filterWise: boolean,
  ) {
    const { spec } = raw;
    this.others = spec.tensors.map((_, i) => i).filter((i) => i !== spec.baseIndex);
    const count = this.others.length;
    const tile = Math.min(OFFSET_TILE, raw.chunkElements);
    arena.reset(
      ReductionBuffers.bytes(raw) +
        KernelSums.bytes(tile) +
        count * (tile * 4 + 16) +
        count * ENTRY_BYTES +
        16,
    );
    this.buffers = new ReductionBuffers(arena, raw);
    this.sums = new KernelSums(arena, tile);
    this.offsetPtr = this.others.map(() => arena.alloc(tile * 4));
    this.table = arena.alloc(count * ENTRY_BYTES);
    this.statistics = new ModelStockStatistics(count);
    this.passes = filterWise ? 0 : 1;
    const total = spec.shape.reduce((a, b) => a * b, 1);
    this.vectorLength = filterWise && spec.shape.length >= 1 ? spec.shape[spec.shape.length - 1] : total;
  }

  input(set: number, index: number, elements: number): Uint8Array {
    return this.buffers.input(set, index, elements);
  }

  accumulate(_pass: number, set: number, _start: number, elements: number): void {
    this.addStatistics(this.buffers.views(set, elements), 0, elements);
  }

  produce(set: number, _start: number, elements: number): Uint8Array {
    const views = this.buffers.views(set, elements);
    const out = this.buffers.nextOutput();
    if (!this.filterWise) {
      this.tensorRatio ??= this.statistics.ratio();
      this.interpolate(views, this.tensorRatio, 0, elements, out);
    } else if (this.vectorLength > 0) {
      for (let from = 0; from < elements; from += this.vectorLength) {
        this.statistics.reset();
        this.addStatistics(views, from, from + this.vectorLength);
        this.interpolate(views, this.statistics.ratio(), from, from + this.vectorLength, out);
      }
    }
    return this.buffers.output(out, elements);
  }

  /** Adds elements [from, to) of the offsets to the squares and pair products, a tile at a time. */
  private addStatistics(views: KernelInput[], from: number, to: number): void {
    const { exports } = this.arena;
    const base = views[this.raw.spec.baseIndex];
    const { squares, dots } = this.statistics;
    const f32 = DTYPE_CODE.F32;
    for (let tileFrom = from; tileFrom < to; tileFrom += OFFSET_TILE) {
      const n = Math.min(OFFSET_TILE, to - tileFrom);
      this.others.forEach((index, k) => {
        const x = views[index];
        exports.delta(
          x.ptr + tileFrom * this.elementBytes(x),
          x.dtype,
          base.ptr + tileFrom * this.elementBytes(base),
          base.dtype,
          this.offsetPtr[k],
          n,
        );
      });
      let pair = 0;
      for (let j = 0; j < this.others.length; j++) {
        const oj = this.offsetPtr[j];
        this.sums.add(squares[j], (state, sums) => exports.squareBlockSums(oj, f32, n, state, sums));
        for (let k = j + 1; k < this.others.length; k++) {
          const ok = this.offsetPtr[k];
          this.sums.add(dots[pair++], (state, sums) =>
            exports.productBlockSums(oj, f32, ok, f32, n, state, sums),
          );
        }
      }
    }
  }

  /** Output elements [from, to) for the ratio t. */
  private interpolate(views: KernelInput[], t: number, from: number, to: number, out: number): void {
    const table = this.arena.u32(this.table, this.others.length * 3);
    const tableInts = new Int32Array(table.buffer, table.byteOffset, table.length);
    this.others.forEach((index, k) => {
      const x = views[index];
      table[k * 3] = x.ptr + from * this.elementBytes(x);
      tableInts[k * 3 + 1] = x.dtype;
    });
    const base = views[this.raw.spec.baseIndex];
    const outDtype = this.raw.outDtype;
    this.arena.exports.stockBlend(
      this.table,
      this.others.length,
      base.ptr + from * this.elementBytes(base),
      base.dtype,
      t,
      fround(1 - t),
      out + from * DTYPE_BYTES[outDtype],
      DTYPE_CODE[outDtype],
      to - from,
    );
  }

  private elementBytes(input: KernelInput): number {
    return input.dtype === DTYPE_CODE.F32 ? 4 : 2;
  }
}

/**
 * slerp's or model_stock's raw-chunk merge on the kernels, or null for other methods and for a
 * tensor with one input (the reference's copy). The reference's `stream` checks the recipe first
 * and throws its MergeMethodError.
 */
export function reductionChunkMerge(
  arena: KernelArena,
  method: MergeMethod,
  raw: RawTensorSpec,
): RawChunkMerge | null {
  if (!(method instanceof SlerpMerge) && !(method instanceof ModelStockMerge)) return null;
  const { spec } = raw;
  method.stream(spec);
  if (spec.tensors.length === 1) return null;
  if (method instanceof SlerpMerge) {
    return new SlerpChunkMerge(arena, raw, readNumber(method.name, spec.params, method.globalParams, 't'));
  }
  const filterWise = readBoolean(method.name, spec.params, method.globalParams, 'filter_wise');
  return new ModelStockChunkMerge(arena, raw, filterWise);
}
