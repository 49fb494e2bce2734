/**
 * The sparsifications' hot loops (sparsify.ts SparsifyKernels, rank-select.ts SelectionKernels) on
 * the WebAssembly kernels, for task-vector tiles that lie in the kernel arena. Arrays the selection
 * asks for are carved from the arena, so the whole selection runs in WebAssembly; a call on arrays
 * elsewhere returns false and the TypeScript loop runs.
 */
import type { SelectionKernels } from '../methods/rank-select';
import type { DellaFibers, DellaScale, RandomKey, SparsifyKernels } from '../methods/sparsify';
import { RNG_STREAM_SPARSIFY } from '../random/counter-rng';
import type { KernelArena } from './wasm';

const BUCKET_BYTES = 65536 * 4;
/** Uniforms drawn per kernel call. */
const UNIFORM_TILE = 1 << 16;
const TWO_POW_32 = 4294967296;

/**
 * Arena bytes one task vector's selection may ask for: the high histogram, the sample of at most
 * `sampleElements` keys, the sample's histogram, two windows of at most 8 buckets, two low histograms.
 */
export function selectionArenaBytes(sampleElements: number): number {
  return BUCKET_BYTES * (1 + 1 + 2 * 8 + 2) + sampleElements * 4 + 6 * 16;
}

/**
 * Arena bytes of DELLA's scratch: the keep probabilities of a tile of at most `tileElements` and the
 * radix sort of one fiber of `fiberLength` elements (merge-kernels.ts dellaScratchBytes).
 */
export function dellaArenaBytes(arena: KernelArena, tileElements: number, fiberLength: number): number {
  return tileElements * 4 + arena.exports.dellaScratchBytes(fiberLength) + 2 * 16;
}

/** Keys inside a window that countWindowedGathered holds before counting them. */
const GATHER_KEYS = 4096;

/** Arena bytes of the uniform scratch, the gathered window keys and the tie counts. */
export const SPARSIFY_SCRATCH_BYTES = UNIFORM_TILE * 4 + GATHER_KEYS * 4 + 96;

export class ArenaSparsifyKernels implements SparsifyKernels {
  readonly selection: SelectionKernels;
  private uniformPtr = 0;
  private tiesPtr = 0;
  /** DELLA's probability and sort scratch, laid out on first use. */
  private della: { capacity: number; fiberLength: number; probabilities: number; scratch: number } | null =
    null;
  private gatherPtr = 0;

  constructor(private readonly arena: KernelArena) {
    const kernels = arena.exports;
    const at = (view: ArrayBufferView | null) =>
      view === null || view.byteLength === 0 ? 0 : arena.addressOf(view);
    const reachable = (...views: (ArrayBufferView | null)[]) =>
      views.every((view) => view === null || view.byteLength === 0 || arena.holds(view));
    this.selection = {
      counts: (length) => {
        const counts = arena.u32(arena.alloc(length * 4), length);
        counts.fill(0);
        return counts;
      },
      keyHistogram: (keys, histogram) => {
        if (!reachable(keys, histogram)) return false;
        kernels.keyHistogram(at(keys), keys.length, at(histogram));
        return true;
      },
      replay: (keys, window, start, buckets) => {
        if (!reachable(keys, window)) return false;
        kernels.replayKeys(at(keys), keys.length, at(window), start, buckets);
        return true;
      },
      countSampled: (bits, from, to, flip, high, sample, sampleOffset) => {
        if (!reachable(bits, high, sample)) return false;
        kernels.countSampled4(at(bits) + from * 4, to - from, flip, at(high), at(sample) + sampleOffset * 4);
        return true;
      },
      countWindowed: (bits, from, to, flip, high, [w0, s0, b0, w1, s1, b1]) => {
        if (!reachable(bits, high, w0, w1)) return false;
        if (this.gatherPtr === 0) this.gatherPtr = arena.alloc(GATHER_KEYS * 4);
        kernels.countWindowedGathered(
          at(bits) + from * 4,
          to - from,
          flip,
          at(high),
          at(w0),
          s0,
          b0,
          at(w1),
          s1,
          b1,
          this.gatherPtr,
          GATHER_KEYS,
        );
        return true;
      },
      countLow: (bits, from, to, flip, low0, bucket0, low1, bucket1) => {
        if (!reachable(bits, low0, low1)) return false;
        kernels.countLow(at(bits) + from * 4, to - from, flip, at(low0), bucket0, at(low1), bucket1);
        return true;
      },
      maskInPlace: (bits, from, to, flip, upToKey, upToTaken, hasBelow, belowKey, belowTaken, ties) => {
        if (!reachable(bits)) return false;
        const state = this.ties();
        const counts = arena.f64(state, 2);
        counts[0] = ties[0];
        counts[1] = ties[1];
        kernels.maskRange(
          at(bits) + from * 4,
          to - from,
          flip,
          upToKey,
          upToTaken,
          +hasBelow,
          belowKey,
          belowTaken,
          state,
        );
        ties[0] = counts[0];
        ties[1] = counts[1];
        return true;
      },
    };
  }

  fillUniform(out: Float32Array, random: RandomKey, start: number): boolean {
    for (let offset = 0; offset < out.length; ) {
      const count = this.uniformRun(start + offset, out.length - offset);
      this.drawUniforms(random, start + offset, count);
      out.set(this.arena.f32(this.uniformPtr, count), offset);
      offset += count;
    }
    return true;
  }

  bernoulliInPlace(delta: Float32Array, start: number, probability: number, random: RandomKey): boolean {
    if (!this.arena.holds(delta)) return false;
    const base = this.arena.addressOf(delta);
    for (let offset = 0; offset < delta.length; ) {
      const count = this.uniformRun(start + offset, delta.length - offset);
      this.drawUniforms(random, start + offset, count);
      this.arena.exports.bernoulliMask(this.uniformPtr, count, probability, base + offset * 4);
      offset += count;
    }
    return true;
  }

  /** Elements from `index` one kernel call draws: at most a tile, never across a multiple of 2^32. */
  private uniformRun(index: number, remaining: number): number {
    const toBoundary = TWO_POW_32 - (index % TWO_POW_32);
    return Math.min(remaining, UNIFORM_TILE, toBoundary);
  }

  private drawUniforms(random: RandomKey, index: number, count: number): void {
    if (this.uniformPtr === 0) this.uniformPtr = this.arena.alloc(UNIFORM_TILE * 4);
    this.arena.exports.uniforms(
      this.uniformPtr,
      count,
      random.seed >>> 0,
      random.nameHash >>> 0,
      random.modelIndex >>> 0,
      RNG_STREAM_SPARSIFY,
      index >>> 0,
      Math.floor(index / TWO_POW_32) >>> 0,
    );
  }

  dellaInPlace(
    delta: Float32Array,
    start: number,
    fibers: DellaFibers,
    scale: DellaScale,
    random: RandomKey,
  ): boolean {
    if (!this.arena.holds(delta)) return false;
    const n = delta.length;
    if (this.della === null) {
      // The first tile of a tensor is its longest (only a last chunk is short).
      this.della = {
        capacity: n,
        fiberLength: fibers.length,
        probabilities: this.arena.alloc(n * 4),
        scratch: this.arena.alloc(this.arena.exports.dellaScratchBytes(fibers.length)),
      };
    }
    const { capacity, fiberLength, probabilities, scratch } = this.della;
    if (n > capacity || fibers.length !== fiberLength) return false;
    const base = this.arena.addressOf(delta);
    const { exports } = this.arena;
    exports.dellaProbabilities(
      base,
      n,
      fibers.length,
      fibers.inner,
      scale.low,
      scale.epsilon,
      scale.rankSpan,
      probabilities,
      scratch,
    );
    for (let offset = 0; offset < n; ) {
      const count = this.uniformRun(start + offset, n - offset);
      this.drawUniforms(random, start + offset, count);
      exports.varyingBernoulliMask(this.uniformPtr, count, probabilities + offset * 4, base + offset * 4);
      offset += count;
    }
    return true;
  }

  /** The address of the two running tie counts a fused mask kernel advances. */
  tieState(): number {
    return this.ties();
  }

  private ties(): number {
    if (this.tiesPtr === 0) this.tiesPtr = this.arena.alloc(16);
    return this.tiesPtr;
  }
}
