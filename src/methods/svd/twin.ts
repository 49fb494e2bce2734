/**
 * twin: static Twin-Merging (Lu et al., NeurIPS 2024, arXiv 2406.15479) without its router.
 *
 *   theta*      = theta_base + lambda * sum_t weight_t * delta_t        (task arithmetic: shared part)
 *   exclusive_t = best rank-r approximation of (theta_t - theta*)      (what theta* misses of model t)
 *   theta       = theta* + sum_t weight_t * exclusive_t
 *
 * Twin-Merging picks the exclusive parts per input with a router; without one, every exclusive part
 * is added with the model's own weight, as the Long-to-Short paper's "Twin without router" does.
 * rank 0 gives plain task arithmetic. 1-D tensors use the plain form: exclusive_t = theta_t - theta*
 * uncompressed (any rank >= 1 of a 1 x n matrix is the matrix itself). Sums accumulate in f64; theta*
 * is rounded to f32 before the differences are formed.
 */

import { energyKept } from '../../linalg/index.js';
import type { MergeInputs } from '../types.js';
import {
  addScaled,
  countParam,
  type LowRankMergeMethod,
  matrixShape,
  numberParam,
  OVERSAMPLE_PARAM,
  POWER_ITERATIONS_PARAM,
  rsvdSettings,
  taskVectors,
  truncatedSvd,
} from './common.js';
import { cpuLowRankOps, type LowRankOps, type MethodSteps, runSync, step } from './ops.js';

const NAME = 'twin';

function* steps(inputs: MergeInputs, ops: LowRankOps): MethodSteps {
  const { tensorName, params, tensors } = inputs;
  const deltas = taskVectors(inputs, NAME);
  const base = tensors[inputs.baseIndex].values;
  const lambda = numberParam(params, 'lambda', tensorName, 1);
  const rankParam = countParam(params, 'rank', tensorName, 64);
  const weights = deltas.map((tv) => numberParam(tv.params, 'weight', tensorName, 1));

  const shared64 = Float64Array.from(base);
  deltas.forEach((tv, i) => {
    addScaled(shared64, tv.delta, lambda * weights[i]);
  });
  const shared = Float32Array.from(shared64);
  if (rankParam === 0) return shared;

  const acc = Float64Array.from(shared);
  const matrix = matrixShape(inputs);
  const difference = new Float32Array(base.length);
  const settings = matrix === null ? null : rsvdSettings(inputs);
  for (let i = 0; i < deltas.length; i++) {
    const tv = deltas[i];
    const theta = tensors[tv.index].values;
    for (let j = 0; j < difference.length; j++) difference[j] = theta[j] - shared[j];
    if (matrix === null || settings === null) {
      addScaled(acc, difference, weights[i]);
      continue;
    }
    const { rows, cols } = matrix;
    const rank = Math.min(rankParam, rows, cols);
    if (rank === Math.min(rows, cols)) {
      addScaled(acc, difference, weights[i]);
      inputs.report?.({ tensor: tensorName, model: tv.model, rank, energyKept: 1 });
      continue;
    }
    const { factors, total } = yield* truncatedSvd(
      ops,
      difference,
      rows,
      cols,
      rank,
      inputs,
      tv.index,
      settings,
    );
    addScaled(acc, yield* step(ops.lowRankProduct(factors)), weights[i]);
    inputs.report?.({
      tensor: tensorName,
      model: tv.model,
      rank: factors.rank,
      energyKept: energyKept(factors.S, factors.rank, total),
    });
  }
  return Float32Array.from(acc);
}

export const twin: LowRankMergeMethod = {
  name: NAME,
  summary: 'Twin-Merging without router: task arithmetic plus each model’s low-rank exclusive part.',
  baseModel: 'required',
  globalParams: [
    { name: 'lambda', type: 'number', default: 1, doc: 'Scale of the task-arithmetic shared part.' },
    {
      name: 'rank',
      type: 'number',
      default: 64,
      doc: 'Rank of each model’s exclusive part (0: task arithmetic only).',
    },
    OVERSAMPLE_PARAM,
    POWER_ITERATIONS_PARAM,
  ],
  modelParams: [
    {
      name: 'weight',
      type: 'number',
      default: 1,
      doc: 'Scale of this model’s task vector and of its exclusive part.',
    },
  ],
  taskVector: true,
  steps,
  merge: (inputs) => runSync(steps(inputs, cpuLowRankOps)),
};
