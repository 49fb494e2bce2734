/**
 * tsv: Task Singular Vectors merge (TSV-M; Gargiulo et al., CVPR 2025, arXiv 2412.00081).
 *
 * Per 2-D tensor with T task vectors delta_i = theta_i - theta_base:
 * 1. k = max(1, floor(rank_fraction * min(rows, cols) / T)); delta_i ~ U_i diag(S_i) V_i^T, top k.
 * 2. Concatenate U = [U_1 .. U_T] (rows x Tk), V = [V_1 .. V_T] (cols x Tk),
 *    S = [weight_1 S_1 .. weight_T S_T].
 * 3. Decorrelate each concatenation through its own SVD: U = P diag() Q^T gives U_perp = P Q^T (the
 *    orthogonal polar factor, the nearest matrix with orthonormal columns), likewise V_perp.
 * 4. theta = theta_base + alpha * U_perp diag(S) V_perp^T.
 * 1-D tensors: theta = theta_base + alpha * mean_i(weight_i delta_i), as the reference code averages
 * non-matrix task vectors. The reference code keeps int(min(rows, cols) / T) components; the max(1, .)
 * only differs when T exceeds the matrix's smaller side. Column order of the concatenation does not
 * change the result (the polar factor commutes with column permutations).
 *
 * With one task vector U_1 and V_1 already have orthonormal columns, so step 3 is the identity and
 * the merge is theta_base + alpha * weight * (rank-k truncation of delta); at rank_fraction 1 that is
 * delta itself and no SVD runs.
 */

import { energyKept, type LowRankFactors } from '../../linalg/index.js';
import type { MergeInputs } from '../types.js';
import {
  addScaled,
  fractionParam,
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

const NAME = 'tsv';

function* steps(inputs: MergeInputs, ops: LowRankOps): MethodSteps {
  const { tensorName, params } = inputs;
  const deltas = taskVectors(inputs, NAME);
  const base = inputs.tensors[inputs.baseIndex].values;
  const alpha = numberParam(params, 'alpha', tensorName, 1);
  const acc = Float64Array.from(base);
  const tasks = deltas.length;
  if (tasks === 0) return Float32Array.from(acc);
  const matrix = matrixShape(inputs);
  if (matrix === null) {
    for (const tv of deltas)
      addScaled(acc, tv.delta, (alpha * numberParam(tv.params, 'weight', tensorName, 1)) / tasks);
    return Float32Array.from(acc);
  }
  const { rows, cols } = matrix;
  const full = Math.min(rows, cols);
  const fraction = fractionParam(
    numberParam(params, 'rank_fraction', tensorName, 1),
    'rank_fraction',
    tensorName,
  );
  const k = Math.min(full, Math.max(1, Math.floor((fraction * full) / tasks)));

  if (tasks === 1 && k === full) {
    const tv = deltas[0];
    addScaled(acc, tv.delta, alpha * numberParam(tv.params, 'weight', tensorName, 1));
    inputs.report?.({ tensor: tensorName, model: tv.model, rank: k, energyKept: 1 });
    return Float32Array.from(acc);
  }

  const settings = rsvdSettings(inputs);
  const width = tasks * k;
  const uCat = new Float32Array(rows * width);
  const vCat = new Float32Array(cols * width);
  const sCat = new Float64Array(width);
  for (let t = 0; t < deltas.length; t++) {
    const tv = deltas[t];
    const { factors, total } = yield* truncatedSvd(ops, tv.delta, rows, cols, k, inputs, tv.index, settings);
    const weight = numberParam(tv.params, 'weight', tensorName, 1);
    const got = factors.rank;
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < got; j++) uCat[i * width + t * k + j] = factors.U[i * got + j];
    for (let i = 0; i < cols; i++)
      for (let j = 0; j < got; j++) vCat[i * width + t * k + j] = factors.V[i * got + j];
    for (let j = 0; j < got; j++) sCat[t * k + j] = weight * factors.S[j];
    inputs.report?.({
      tensor: tensorName,
      model: tv.model,
      rank: got,
      energyKept: energyKept(factors.S, got, total),
    });
  }
  const merged: LowRankFactors = {
    U: tasks === 1 ? uCat : yield* step(ops.polarFactor(uCat, rows, width)),
    S: sCat,
    V: tasks === 1 ? vCat : yield* step(ops.polarFactor(vCat, cols, width)),
    rank: width,
    rows,
    cols,
  };
  addScaled(acc, yield* step(ops.lowRankProduct(merged)), alpha);
  return Float32Array.from(acc);
}

export const tsv: LowRankMergeMethod = {
  name: NAME,
  summary:
    'Task Singular Vectors merge: top singular vectors of each task vector, decorrelated across tasks.',
  baseModel: 'required',
  globalParams: [
    { name: 'alpha', type: 'number', default: 1, doc: 'Scale of the merged task vector.' },
    {
      name: 'rank_fraction',
      type: 'number',
      default: 1,
      doc: 'Share (0..1] of min(rows, cols) split evenly among the task vectors (each keeps floor(share * min / T)).',
    },
    OVERSAMPLE_PARAM,
    POWER_ITERATIONS_PARAM,
  ],
  modelParams: [
    {
      name: 'weight',
      type: 'number',
      default: 1,
      doc: 'Scale of this model’s singular values (1 in TSV-M).',
    },
  ],
  taskVector: true,
  steps,
  merge: (inputs) => runSync(steps(inputs, cpuLowRankOps)),
};
