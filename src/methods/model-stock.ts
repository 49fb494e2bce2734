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
 */
import { dotF32, normF32 } from './f32-reduce';
import { readBoolean } from './params';
import { type MergeInputs, type MergeMethod, MergeMethodError, type ParamSpec } from './types';

const fround = Math.fround;

/** Lower bound on the product of offset norms, mergekit's clamp(min=1e-6). */
export const MODEL_STOCK_NORM_FLOOR = fround(1e-6);

/** Clamp that keeps NaN, like torch.clamp. */
function clampKeepingNaN(x: number, lo: number, hi: number): number {
  if (x < lo) return lo;
  if (x > hi) return hi;
  return x;
}

/** The interpolation factor t of one vector (a range of every offset). */
export function modelStockRatio(offsets: readonly Float32Array[], offset: number, length: number): number {
  const count = offsets.length;
  let cosSum = 0;
  let pairs = 0;
  for (let j = 0; j < count; j++) {
    for (let k = j + 1; k < count; k++) {
      const normProduct = fround(normF32(offsets[j], offset, length) * normF32(offsets[k], offset, length));
      // Math.max keeps NaN, like torch's clamp(min=...).
      const floored = Math.max(normProduct, MODEL_STOCK_NORM_FLOOR);
      const cos = clampKeepingNaN(fround(dotF32(offsets[j], offsets[k], offset, length) / floored), -1, 1);
      cosSum = pairs === 0 ? cos : fround(cosSum + cos);
      pairs++;
    }
  }
  const cos = fround(cosSum / pairs);
  return fround(fround(count * cos) / fround(1 + fround((count - 1) * cos)));
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
    const { tensors, baseIndex } = inputs;
    if (baseIndex < 0 || baseIndex >= tensors.length) {
      throw new MergeMethodError('model_stock needs a base_model');
    }
    const base = tensors[baseIndex].values;
    if (tensors.length === 1) return base.slice();
    if (tensors.length < 3) {
      throw new MergeMethodError('model_stock needs at least 3 models (the base plus two or more others)');
    }
    const filterWise = readBoolean(this.name, inputs.params, this.globalParams, 'filter_wise');
    const n = base.length;
    const others = tensors.filter((_, index) => index !== baseIndex);
    for (const t of others) {
      if (t.values.length !== n) {
        throw new MergeMethodError(
          `model_stock: model "${t.model}" has ${t.values.length} elements where the base has ${n}`,
        );
      }
    }
    const offsets = others.map((t) => {
      const o = new Float32Array(n);
      for (let i = 0; i < n; i++) o[i] = t.values[i] - base[i];
      return o;
    });
    const count = others.length;
    const rowLength = filterWise && inputs.shape.length >= 1 ? inputs.shape[inputs.shape.length - 1] : n;
    const out = new Float32Array(n);
    if (n === 0) return out;
    for (let row = 0; row * rowLength < n; row++) {
      const start = row * rowLength;
      const t = modelStockRatio(offsets, start, rowLength);
      const baseShare = fround(1 - t);
      for (let i = start; i < start + rowLength; i++) {
        let sum = others[0].values[i];
        for (let k = 1; k < count; k++) sum = fround(sum + others[k].values[i]);
        const avg = fround(sum / count);
        out[i] = fround(t * avg) + fround(baseShare * base[i]);
      }
    }
    return out;
  }
}
