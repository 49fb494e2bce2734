/**
 * lowrank_task_arithmetic: task arithmetic on low-rank task vectors.
 *
 *   theta = theta_base + lambda * sum_i weight_i * T(delta_i),   delta_i = theta_i - theta_base
 *
 * T is the best rank-r approximation (truncated SVD) of a 2-D task vector, r = min(rank, rows, cols);
 * when `energy` is set, r is instead the smallest rank whose singular values hold that share of
 * ||delta_i||_F^2, searched among the leading `rank` values (so `rank` caps it, and the report shows
 * the share actually kept when the cap binds). At full rank without `energy`, T is the identity and no
 * SVD runs, so the result is plain task arithmetic. 1-D tensors always use the plain form.
 * Deltas are f32 differences; the weighted sum accumulates in f64 and is rounded to f32 once.
 */

import { energyKept, energyRank } from '../../linalg/index.js';
import type { MergeInputs } from '../types.js';
import {
  addScaled,
  countParam,
  fractionParam,
  type LowRankMergeMethod,
  matrixShape,
  numberParam,
  OVERSAMPLE_PARAM,
  optionalNumberParam,
  POWER_ITERATIONS_PARAM,
  rsvdSettings,
  taskVectors,
  truncatedSvd,
} from './common.js';
import { cpuLowRankOps, type LowRankOps, type MethodSteps, runSync, step } from './ops.js';

const NAME = 'lowrank_task_arithmetic';

function* steps(inputs: MergeInputs, ops: LowRankOps): MethodSteps {
  const { tensorName, params } = inputs;
  const deltas = taskVectors(inputs, NAME);
  const base = inputs.tensors[inputs.baseIndex].values;
  const lambda = numberParam(params, 'lambda', tensorName, 1);
  const acc = Float64Array.from(base);
  const matrix = matrixShape(inputs);
  if (matrix === null) {
    for (const tv of deltas) addScaled(acc, tv.delta, lambda * numberParam(tv.params, 'weight', tensorName));
    return Float32Array.from(acc);
  }
  const { rows, cols } = matrix;
  const rankCap = Math.min(countParam(params, 'rank', tensorName, 64), rows, cols);
  const energyParam = optionalNumberParam(params, 'energy', tensorName);
  const energy = energyParam === undefined ? undefined : fractionParam(energyParam, 'energy', tensorName);
  const settings = rsvdSettings(inputs);
  for (const tv of deltas) {
    const scale = lambda * numberParam(tv.params, 'weight', tensorName);
    if (energy === undefined && rankCap === Math.min(rows, cols)) {
      addScaled(acc, tv.delta, scale);
      inputs.report?.({ tensor: tensorName, model: tv.model, rank: rankCap, energyKept: 1 });
      continue;
    }
    const { factors, total } = yield* truncatedSvd(
      ops,
      tv.delta,
      rows,
      cols,
      rankCap,
      inputs,
      tv.index,
      settings,
    );
    const rank = energy === undefined ? factors.rank : energyRank(factors.S, energy, total);
    addScaled(acc, yield* step(ops.lowRankProduct(factors, rank)), scale);
    inputs.report?.({
      tensor: tensorName,
      model: tv.model,
      rank,
      energyKept: energyKept(factors.S, rank, total),
    });
  }
  return Float32Array.from(acc);
}

export const lowrankTaskArithmetic: LowRankMergeMethod = {
  name: NAME,
  summary: 'Task arithmetic with every 2-D task vector cut to its best low-rank approximation.',
  baseModel: 'required',
  globalParams: [
    { name: 'lambda', type: 'number', default: 1, doc: 'Scale of the summed low-rank task vectors.' },
    {
      name: 'rank',
      type: 'number',
      default: 64,
      doc: 'Singular components kept per 2-D task vector (the cap when energy is set).',
    },
    {
      name: 'energy',
      type: 'number',
      doc: 'If set, keep the smallest rank holding this share (0..1) of each task vector’s squared singular values.',
    },
    OVERSAMPLE_PARAM,
    POWER_ITERATIONS_PARAM,
  ],
  modelParams: [
    { name: 'weight', type: 'number', required: true, doc: 'Scale of this model’s task vector.' },
  ],
  taskVector: true,
  steps,
  merge: (inputs) => runSync(steps(inputs, cpuLowRankOps)),
};
