/**
 * `model_stock` on the GPU (model-stock.ts is the reference): squared norms and pairwise dot
 * products of the offsets from the base, per segment (the whole tensor, or each row with
 * filter_wise), as blocked sums over the tiles; the ratios on the host; then one blend pass.
 * Kernels: shaders/block-sum.wgsl, shaders/blend.wgsl.
 */
import type { GpuMergeJob } from '../gpu/job';
import { rowSums } from '../gpu/reduce';
import { TILE_ALIGN } from '../gpu/stack';
import { blendOnGpu } from './blend.gpu';
import { MODEL_STOCK_NORM_FLOOR } from './model-stock';
import { readBoolean } from './params';
import { type MergeMethod, MergeMethodError } from './types';

const fround = Math.fround;

export async function modelStockOnGpu(method: MergeMethod, job: GpuMergeJob): Promise<void> {
  const { inputs } = job;
  const { tensors, baseIndex } = inputs;
  if (baseIndex < 0 || baseIndex >= tensors.length)
    throw new MergeMethodError('model_stock needs a base_model');
  if (tensors.length === 1) {
    await job.load();
    await job.copyRow(baseIndex);
    return;
  }
  if (tensors.length < 3) {
    throw new MergeMethodError('model_stock needs at least 3 models (the base plus two or more others)');
  }
  const filterWise = readBoolean(method.name, inputs.params, method.globalParams, 'filter_wise');
  const n = tensors[baseIndex].elements;
  const others: number[] = [];
  tensors.forEach((t, i) => {
    if (i === baseIndex) return;
    if (t.elements !== n) {
      throw new MergeMethodError(
        `model_stock: model "${t.model}" has ${t.elements} elements where the base has ${n}`,
      );
    }
    others.push(i);
  });
  if (n === 0) return;
  const { shape } = inputs;
  const rowLength = filterWise && shape.length >= 1 ? shape[shape.length - 1] : n;
  const stack = await job.load({ align: rowLength < n ? rowLength : TILE_ALIGN });
  // Sums of squares of every offset, then dot products of every pair j < k, per segment.
  const count = others.length;
  const pairs: Array<[number, number]> = [];
  for (let j = 0; j < count; j++) for (let k = j + 1; k < count; k++) pairs.push([j, k]);
  const sums = await rowSums(
    job.ctx,
    stack,
    [
      ...others.map((row) => ({ term: 'square' as const, row, baseRow: baseIndex })),
      ...pairs.map(([j, k]) => ({
        term: 'dot' as const,
        row: others[j],
        rowB: others[k],
        baseRow: baseIndex,
      })),
    ],
    rowLength,
    job.statisticsBytes,
  );
  const segments = Math.ceil(n / rowLength);
  const coefficients = new Float32Array(segments * 2);
  for (let s = 0; s < segments; s++) {
    const norms = others.map((_, k) => fround(Math.sqrt(sums[k * segments + s])));
    const dots = pairs.map((_, p) => sums[(count + p) * segments + s]);
    const t = modelStockRatioFromSums(count, norms, pairs, dots);
    coefficients[s * 2] = t;
    coefficients[s * 2 + 1] = fround(1 - t);
  }
  await blendOnGpu(job, baseIndex, others, coefficients, rowLength);
}

/**
 * model-stock.ts's `modelStockRatio` from the reduced norms and dot products of one vector: the same
 * f32 steps in the same order.
 */
export function modelStockRatioFromSums(
  count: number,
  norms: readonly number[],
  pairs: ReadonlyArray<readonly [number, number]>,
  dots: readonly number[],
): number {
  let cosSum = 0;
  pairs.forEach(([j, k], p) => {
    const normProduct = fround(norms[j] * norms[k]);
    const floored = Math.max(normProduct, MODEL_STOCK_NORM_FLOOR);
    let cos = fround(dots[p] / floored);
    if (cos < -1) cos = -1;
    else if (cos > 1) cos = 1;
    cosSum = p === 0 ? cos : fround(cosSum + cos);
  });
  const cos = fround(cosSum / pairs.length);
  return fround(fround(count * cos) / fround(1 + fround((count - 1) * cos)));
}
