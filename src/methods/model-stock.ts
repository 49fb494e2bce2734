/**
 * mergekit's `model_stock` (Jang et al. 2024, arXiv 2403.19522; mergekit/merge_methods/model_stock.py).
 *
 * w0 = base, w_1..w_N the other inputs in input order (N >= 2). With only the base as input the result
 * is the base; with fewer than three inputs otherwise it is an error.
 * The tensor is one vector, or with `filter_wise` one vector per row (fibers along the last dimension;
 * a 1-D tensor is one row). Per vector, in f32:
 *   o_k[i] = fround(w_k[i] - w0[i])
 *   for each pair j < k, in lexicographic order:
 *     cos_jk = clamp(fround(dotF32(o_j, o_k) / max(fround(normF32(o_j) * normF32(o_k)), fround(1e-6))), -1, 1)
 *   cos = fround(sum of cos_jk, in pair order from the first / P), P = N(N-1)/2
 *   t   = fround(fround(N * cos) / fround(1 + fround((N - 1) * cos)))
 *   avg[i] = fround(sum_k w_k[i], in input order from the first / N)
 *   out[i] = fround(fround(t * avg[i]) + fround(fround(1 - t) * w0[i]))
 * NaN propagates (clamp and max keep NaN, as torch's clamp does). Identical offsets give cos = 1 and
 * t = 1 (the average); orthogonal offsets give t = 0 (the base).
 * Streaming: for one vector per tensor, pass 0 sums the squares and dot products of the offsets over
 * all chunks; with filter_wise, every row lies inside one chunk and no statistics pass is needed.
 */

import type { GpuMergeJob } from '../gpu/job';
import { chunkLength, chunkRowLength, mergeAsOneChunk, ScratchF32, specOf } from './chunks';
import { BlockedSumF32 } from './f32-reduce';
import { modelStockOnGpu } from './model-stock.gpu';
import { elementCount, readBoolean } from './params';
import {
  type MergeInputs,
  type MergeMethod,
  MergeMethodError,
  type ParamSpec,
  type StreamingMerge,
  type TensorChunk,
  type TensorMergeSpec,
} from './types';

const fround = Math.fround;

/** Lower bound on the product of offset norms, mergekit's clamp(min=1e-6). */
export const MODEL_STOCK_NORM_FLOOR = fround(1e-6);

/** Clamp that keeps NaN, like torch.clamp. */
function clampKeepingNaN(x: number, lo: number, hi: number): number {
  if (x < lo) return lo;
  if (x > hi) return hi;
  return x;
}

/**
 * The squared norms of N offsets and their pairwise dot products over one vector, fed in pieces
 * (here, or by the WebAssembly kernels through the sums themselves).
 */
export class ModelStockStatistics {
  readonly squares: BlockedSumF32[];
  /** Dot products of the pairs j < k in lexicographic order. */
  readonly dots: BlockedSumF32[];

  constructor(private readonly count: number) {
    this.squares = Array.from({ length: count }, () => new BlockedSumF32());
    this.dots = Array.from({ length: (count * (count - 1)) / 2 }, () => new BlockedSumF32());
  }

  reset(): void {
    for (const sum of this.squares) sum.reset();
    for (const sum of this.dots) sum.reset();
  }

  /** Adds elements [from, to) of every offset. */
  add(offsets: readonly Float32Array[], from: number, to: number): void {
    let pair = 0;
    for (let j = 0; j < this.count; j++) {
      this.squares[j].addSquares(offsets[j], from, to);
      for (let k = j + 1; k < this.count; k++)
        this.dots[pair++].addProducts(offsets[j], offsets[k], from, to);
    }
  }

  /** The interpolation factor t (module comment). */
  ratio(): number {
    const count = this.count;
    const norms = this.squares.map((sum) => fround(Math.sqrt(sum.result())));
    let cosSum = 0;
    let pair = 0;
    for (let j = 0; j < count; j++) {
      for (let k = j + 1; k < count; k++) {
        const normProduct = fround(norms[j] * norms[k]);
        // Math.max keeps NaN, like torch's clamp(min=...).
        const floored = Math.max(normProduct, MODEL_STOCK_NORM_FLOOR);
        const cos = clampKeepingNaN(fround(this.dots[pair].result() / floored), -1, 1);
        cosSum = pair === 0 ? cos : fround(cosSum + cos);
        pair++;
      }
    }
    const cos = fround(cosSum / pair);
    return fround(fround(count * cos) / fround(1 + fround((count - 1) * cos)));
  }
}

/** The interpolation factor t of one vector (a range of every offset). */
export function modelStockRatio(offsets: readonly Float32Array[], offset: number, length: number): number {
  const statistics = new ModelStockStatistics(offsets.length);
  statistics.add(offsets, offset, offset + length);
  return statistics.ratio();
}

export class ModelStockMerge implements MergeMethod {
  readonly name = 'model_stock';
  readonly summary = 'Moves from the base toward the average of the models by how well their changes agree.';
  readonly baseModel = 'required' as const;
  readonly taskVector = false;
  readonly globalParams: readonly ParamSpec[] = [
    {
      name: 'filter_wise',
      type: 'boolean',
      default: false,
      doc: 'Compute the ratio per row instead of per tensor (not generally recommended).',
    },
  ];
  readonly modelParams: readonly ParamSpec[] = [];

  merge(inputs: MergeInputs): Float32Array {
    return mergeAsOneChunk(this.name, this.stream(specOf(inputs)), inputs);
  }

  gpu(job: GpuMergeJob): Promise<void> {
    return modelStockOnGpu(this, job);
  }

  stream(spec: TensorMergeSpec): StreamingMerge {
    const { tensors, baseIndex } = spec;
    if (baseIndex < 0 || baseIndex >= tensors.length) {
      throw new MergeMethodError('model_stock needs a base_model');
    }
    const rowLength = chunkRowLength(spec.shape);
    const total = elementCount(spec.shape);
    const length = (chunk: TensorChunk) => chunkLength(this.name, spec, chunk, rowLength, total, baseIndex);
    if (tensors.length === 1) {
      return {
        passes: 0,
        accumulate: () => {},
        produce: (chunk: TensorChunk, out: Float32Array) => {
          length(chunk);
          out.set(chunk.values[baseIndex]);
        },
      };
    }
    if (tensors.length < 3) {
      throw new MergeMethodError('model_stock needs at least 3 models (the base plus two or more others)');
    }
    const filterWise = readBoolean(this.name, spec.params, this.globalParams, 'filter_wise');
    const otherIndices = tensors.map((_, index) => index).filter((index) => index !== baseIndex);
    const count = otherIndices.length;
    // The vectors t is computed over: rows along the last dimension, or the whole tensor.
    const vectorLength = filterWise && spec.shape.length >= 1 ? spec.shape[spec.shape.length - 1] : total;
    const statistics = new ModelStockStatistics(count);
    const scratch = otherIndices.map(() => new ScratchF32());
    const offsetsOf = (chunk: TensorChunk, n: number): Float32Array[] => {
      const base = chunk.values[baseIndex];
      return otherIndices.map((index, k) => {
        const x = chunk.values[index];
        const offset = scratch[k].take(n);
        for (let i = 0; i < n; i++) offset[i] = x[i] - base[i];
        return offset;
      });
    };
    let tensorRatio: number | null = null;
    /** out[i] = fround(t * avg[i]) + fround((1 - t) * base[i]) for i in [from, to). */
    const interpolate = (chunk: TensorChunk, t: number, from: number, to: number, out: Float32Array) => {
      const base = chunk.values[baseIndex];
      const first = chunk.values[otherIndices[0]];
      const baseShare = fround(1 - t);
      for (let i = from; i < to; i++) {
        let sum = first[i];
        for (let k = 1; k < count; k++) sum = fround(sum + chunk.values[otherIndices[k]][i]);
        const avg = fround(sum / count);
        out[i] = fround(t * avg) + fround(baseShare * base[i]);
      }
    };
    return {
      passes: filterWise ? 0 : 1,
      accumulate: (_pass: number, chunk: TensorChunk) => {
        const n = length(chunk);
        statistics.add(offsetsOf(chunk, n), 0, n);
      },
      produce: (chunk: TensorChunk, out: Float32Array) => {
        const n = length(chunk);
        if (!filterWise) {
          tensorRatio ??= statistics.ratio();
          interpolate(chunk, tensorRatio, 0, n, out);
          return;
        }
        if (vectorLength === 0) return;
        const offsets = offsetsOf(chunk, n);
        for (let start = 0; start < n; start += vectorLength) {
          statistics.reset();
          statistics.add(offsets, start, start + vectorLength);
          interpolate(chunk, statistics.ratio(), start, start + vectorLength, out);
        }
      },
    };
  }
}
