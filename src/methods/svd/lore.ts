/**
 * lore: LoRE-Merging (Liu et al. 2025, arXiv 2502.10749), low-rank estimation without a base model.
 *
 * The models theta_1..theta_n are explained as a shared theta_0 plus low-rank task vectors:
 *   minimize over theta_0, delta_i   sum_i ||theta_0 + delta_i - theta_i||_F^2 + mu ||delta_i||_*
 * by coordinate descent, as the paper states it:
 *   start delta_i = 0; then `iterations` times:
 *     theta_0 = mean_i(theta_i - delta_i)
 *     delta_i = SVT_mu(theta_i - theta_0)   (singular values s -> max(s - mu, 0))
 * and the merged tensor is theta_0 + sum_i weight_i * delta_i (the paper follows the estimation with
 * an ordinary task-vector merge; weight_i = 1/n is its average merging, the default 1 is task
 * arithmetic with lambda 1 on the estimated task vectors).
 *
 * Reading of the paper: SVT_mu thresholds at mu, as the paper writes the update; for the objective as
 * written (squared loss without a 1/2) the exact minimizer would threshold at mu/2, so mu here is the
 * paper's mu. Every input model is a theta_i, the base model included when the recipe names one: the
 * method needs no base, and with the System-1 model as base_model and the System-2 model listed, both
 * are estimated together, as in the Long-to-Short experiments.
 *
 * Only the leading `rank` singular values of each theta_i - theta_0 are computed (randomized SVD), so
 * SVT keeps at most `rank` components; the report gives the components kept (singular values above
 * mu) and their share of ||theta_i - theta_0||_F^2. 1-D tensors use the plain form (no thresholding):
 * delta_i = theta_i - mean, so the result is mean + sum_i weight_i (theta_i - mean).
 * Sums over models accumulate in f64; theta_0 and delta_i are stored in f32 between steps.
 */

import { energyKept, type LowRankFactors } from '../../linalg/index.js';
import { type MergeInputs, MergeMethodError } from '../types.js';
import {
  addScaled,
  countParam,
  type LowRankMergeMethod,
  matrixShape,
  numberParam,
  OVERSAMPLE_PARAM,
  POWER_ITERATIONS_PARAM,
  rsvdSettings,
  truncatedSvd,
} from './common.js';
import { cpuLowRankOps, type LowRankOps, type MethodSteps, runSync, step } from './ops.js';

const NAME = 'lore';

/** mean_i(theta_i - delta_i), f64 sums, rounded to f32. */
function sharedPart(thetas: readonly Float32Array[], deltas: readonly Float32Array[]): Float32Array {
  const acc = new Float64Array(thetas[0].length);
  for (let i = 0; i < thetas.length; i++) {
    const theta = thetas[i];
    const delta = deltas[i];
    for (let j = 0; j < acc.length; j++) acc[j] += theta[j] - delta[j];
  }
  const inv = 1 / thetas.length;
  const out = new Float32Array(acc.length);
  for (let j = 0; j < acc.length; j++) out[j] = acc[j] * inv;
  return out;
}

function* steps(inputs: MergeInputs, ops: LowRankOps): MethodSteps {
  const { tensorName, params, tensors } = inputs;
  if (tensors.length === 0)
    throw new MergeMethodError(`${NAME} needs at least one model (tensor ${tensorName})`);
  const mu = numberParam(params, 'mu', tensorName);
  if (mu < 0) throw new MergeMethodError(`parameter 'mu' for tensor ${tensorName} must be >= 0, got ${mu}`);
  const iterations = countParam(params, 'iterations', tensorName, 10);
  if (iterations < 1) {
    throw new MergeMethodError(
      `parameter 'iterations' for tensor ${tensorName} must be at least 1, got ${iterations}`,
    );
  }
  const weights = tensors.map((t) => numberParam(t.params, 'weight', tensorName, 1));
  const thetas = tensors.map((t) => t.values);
  const size = thetas[0].length;
  const matrix = matrixShape(inputs);

  let deltas: Float32Array[] = thetas.map(() => new Float32Array(size));
  let theta0 = sharedPart(thetas, deltas);
  if (matrix === null) {
    deltas = thetas.map((theta) => Float32Array.from(theta, (x, j) => x - theta0[j]));
  } else {
    const { rows, cols } = matrix;
    const rank = Math.min(countParam(params, 'rank', tensorName, 64), rows, cols);
    const settings = rsvdSettings(inputs);
    const residual = new Float32Array(size);
    for (let it = 0; it < iterations; it++) {
      if (it > 0) theta0 = sharedPart(thetas, deltas);
      const last = it === iterations - 1;
      const next: Float32Array[] = [];
      for (let i = 0; i < thetas.length; i++) {
        const theta = thetas[i];
        for (let j = 0; j < size; j++) residual[j] = theta[j] - theta0[j];
        const { factors, total } = yield* truncatedSvd(ops, residual, rows, cols, rank, inputs, i, settings);
        const { thresholded, kept } = singularValueThreshold(factors, mu);
        if (last) {
          inputs.report?.({
            tensor: tensorName,
            model: tensors[i].model,
            rank: kept,
            energyKept: energyKept(factors.S, kept, total),
          });
        }
        next.push(yield* step(ops.lowRankProduct(thresholded, kept)));
      }
      deltas = next;
    }
  }
  const acc = Float64Array.from(theta0);
  deltas.forEach((delta, i) => {
    addScaled(acc, delta, weights[i]);
  });
  return Float32Array.from(acc);
}

/** Factors with singular values shrunk by mu (those at or below mu dropped); `kept` counts the rest. */
function singularValueThreshold(
  f: LowRankFactors,
  mu: number,
): { thresholded: LowRankFactors; kept: number } {
  const s = new Float64Array(f.rank);
  let kept = 0;
  for (let j = 0; j < f.rank; j++) {
    s[j] = Math.max(f.S[j] - mu, 0);
    if (s[j] > 0) kept = j + 1;
  }
  return { thresholded: { ...f, S: s }, kept };
}

export const lore: LowRankMergeMethod = {
  name: NAME,
  summary:
    'LoRE-Merging: estimate a shared model and low-rank task vectors, then add the task vectors to it.',
  baseModel: 'optional',
  globalParams: [
    {
      name: 'mu',
      type: 'number',
      required: true,
      doc: 'Nuclear-norm weight: singular values of each task vector are shrunk by mu (same units as the weights).',
    },
    {
      name: 'iterations',
      type: 'number',
      default: 10,
      doc: 'Coordinate-descent rounds (theta_0 update, SVT).',
    },
    { name: 'rank', type: 'number', default: 64, doc: 'Most singular components computed per task vector.' },
    OVERSAMPLE_PARAM,
    POWER_ITERATIONS_PARAM,
  ],
  modelParams: [
    {
      name: 'weight',
      type: 'number',
      default: 1,
      doc: 'Scale of this model’s estimated task vector (1/n averages them).',
    },
  ],
  taskVector: false,
  steps,
  merge: (inputs) => runSync(steps(inputs, cpuLowRankOps)),
};
