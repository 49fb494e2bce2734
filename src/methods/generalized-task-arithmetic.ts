/**
 * mergekit's generalized task arithmetic: task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs,
 * breadcrumbs_ties, della and della_linear are one algorithm, parameterized by a sparsification
 * method and a sign-consensus method (mergekit/merge_methods/generalized_task_arithmetic.py).
 *
 * Per output tensor, all arithmetic in f32 (every step rounded with Math.fround):
 * 1. Task vectors: for every input other than the base, in input order,
 *    delta_m[i] = fround(x_m[i] - base[i]). The base model is skipped even when the recipe also lists it
 *    in `models` (its weight and density are ignored and it does not count in the divisor). With no other
 *    model, the result is the base tensor.
 * 2. Sparsification of each delta_m (sparsify.ts) with its own density/gamma/epsilon, the global
 *    rescale, and the random key (seed, tensor name, model index m = position in MergeInputs.tensors).
 * 3. w_m = fround(weight_m); wd_m[i] = fround(delta_m[i] * w_m).
 * 4. Mixing. Sums over models run in input order starting from the first model.
 *    Without consensus:
 *      mixed[i] = sum_m wd_m[i];  divisor = sum_m w_m (one scalar);
 *      if fround(|divisor|) < fround(1e-8) then divisor = 1.
 *    With consensus ('sum', TIES; 'count', a plain majority of signs):
 *      'sum':   s[i] = sum_m wd_m[i];               majority[i] = s[i] >= 0 ? +1 : -1
 *      'count': s[i] = sum_m sign(wd_m[i]);         majority[i] = s[i] >= 0 ? +1 : -1
 *      keep_m[i] = sign(wd_m[i]) == majority[i]   (sign(±0) = 0 and sign(NaN) = NaN are never kept; a
 *                                                  NaN sum compares false, so its majority is -1)
 *      mixed[i]   = sum_m fround(wd_m[i] * keep_m[i])   (a dropped NaN stays NaN, as torch's x * mask)
 *      divisor[i] = sum_m fround(w_m * keep_m[i]);  if divisor[i] == 0 then divisor[i] = 1.
 * 5. If normalize: mixed[i] = fround(mixed[i] / divisor[i]) (IEEE division, correctly rounded).
 * 6. If lambda != 1: mixed[i] = fround(mixed[i] * fround(lambda)).
 * 7. out[i] = fround(base[i] + mixed[i]).
 *
 * Defaults per method are mergekit's registry: ties normalizes; dare_* and della* rescale; della also
 * normalizes; task_arithmetic and breadcrumbs* do neither.
 */
import { fnv1a32 } from '../random/counter-rng';
import { readBoolean, readNumber } from './params';
import { type SparsificationMethod, sparsifyInPlace } from './sparsify';
import { type MergeInputs, type MergeMethod, MergeMethodError, type ParamSpec } from './types';

export type ConsensusMethod = 'sum' | 'count';

export interface TaskArithmeticVariant {
  readonly name: string;
  readonly summary: string;
  readonly consensus: ConsensusMethod | null;
  readonly sparsification: SparsificationMethod | null;
  readonly defaultNormalize: boolean;
  readonly defaultRescale: boolean;
}

export interface MixOptions {
  readonly consensus: ConsensusMethod | null;
  readonly normalize: boolean;
  readonly lambda: number;
}

const fround = Math.fround;

/** Divisors with |d| below this (compared in f32) become 1 when there is no sign consensus. */
export const DIVISOR_EPSILON = fround(1e-8);

/**
 * Steps 3 to 7 of the module comment: weights, sign consensus, mixing, normalize, lambda, base.
 * Multiplies `deltas` by their weights in place.
 */
export function mixTaskVectors(
  base: Float32Array,
  deltas: Float32Array[],
  weights: readonly number[],
  options: MixOptions,
): Float32Array {
  const n = base.length;
  const models = deltas.length;
  const w = weights.map(fround);
  for (let m = 0; m < models; m++) {
    const delta = deltas[m];
    for (let i = 0; i < n; i++) delta[i] = delta[i] * w[m];
  }
  const scaleByLambda = options.lambda !== 1;
  const lambda = fround(options.lambda);
  const out = new Float32Array(n);
  if (models === 0) {
    out.set(base);
    return out;
  }
  if (options.consensus === null) {
    let divisor = w[0];
    for (let m = 1; m < models; m++) divisor = fround(divisor + w[m]);
    if (Math.abs(divisor) < DIVISOR_EPSILON) divisor = 1;
    for (let i = 0; i < n; i++) {
      let mixed = deltas[0][i];
      for (let m = 1; m < models; m++) mixed = fround(mixed + deltas[m][i]);
      if (options.normalize) mixed = fround(mixed / divisor);
      if (scaleByLambda) mixed = fround(mixed * lambda);
      out[i] = base[i] + mixed;
    }
    return out;
  }
  const bySum = options.consensus === 'sum';
  for (let i = 0; i < n; i++) {
    let vote = bySum ? deltas[0][i] : Math.sign(deltas[0][i]);
    for (let m = 1; m < models; m++) {
      vote = bySum ? fround(vote + deltas[m][i]) : vote + Math.sign(deltas[m][i]);
    }
    const majority = vote >= 0 ? 1 : -1;
    let mixed = 0;
    let divisor = 0;
    for (let m = 0; m < models; m++) {
      const wd = deltas[m][i];
      const keep = Math.sign(wd) === majority ? 1 : 0;
      const term = fround(wd * keep);
      const weightTerm = fround(w[m] * keep);
      mixed = m === 0 ? term : fround(mixed + term);
      divisor = m === 0 ? weightTerm : fround(divisor + weightTerm);
    }
    if (divisor === 0) divisor = 1;
    if (options.normalize) mixed = fround(mixed / divisor);
    if (scaleByLambda) mixed = fround(mixed * lambda);
    out[i] = base[i] + mixed;
  }
  return out;
}

const WEIGHT: ParamSpec = {
  name: 'weight',
  type: 'number',
  required: true,
  doc: "Scale of this model's task vector.",
};
const DENSITY: ParamSpec = {
  name: 'density',
  type: 'number',
  default: 1.0,
  doc: 'Fraction of the task vector kept by sparsification.',
};
const GAMMA: ParamSpec = {
  name: 'gamma',
  type: 'number',
  default: 0.01,
  doc: 'Fraction of the largest-magnitude entries removed as outliers.',
};
const EPSILON: ParamSpec = {
  name: 'epsilon',
  type: 'number',
  default: 0.15,
  doc: 'Keep probabilities range over density ± epsilon by magnitude rank within each row.',
};

export class GeneralizedTaskArithmetic implements MergeMethod {
  readonly name: string;
  readonly summary: string;
  readonly baseModel = 'required' as const;
  readonly taskVector = true;
  readonly globalParams: readonly ParamSpec[];
  readonly modelParams: readonly ParamSpec[];

  constructor(readonly variant: TaskArithmeticVariant) {
    this.name = variant.name;
    this.summary = variant.summary;
    this.globalParams = [
      {
        name: 'int8_mask',
        type: 'boolean',
        default: false,
        doc: 'Store the sign mask as int8 to save memory in mergekit; the result is the same.',
      },
      {
        name: 'normalize',
        type: 'boolean',
        default: variant.defaultNormalize,
        doc: 'Divide the merged task vector by the sum of the weights that contributed.',
      },
      {
        name: 'rescale',
        type: 'boolean',
        default: variant.defaultRescale,
        doc: 'Rescale each sparsified task vector to the L1 norm it had before sparsification.',
      },
      {
        name: 'lambda',
        type: 'number',
        default: 1.0,
        doc: 'Scale of the merged task vector before it is added to the base model.',
      },
    ];
    const modelParams = [WEIGHT, DENSITY];
    if (variant.sparsification === 'magnitude_outliers') modelParams.push(GAMMA);
    if (variant.sparsification === 'della_magprune') modelParams.push(EPSILON);
    this.modelParams = modelParams;
  }

  merge(inputs: MergeInputs): Float32Array {
    const { name, sparsification, consensus } = this.variant;
    if (inputs.baseIndex < 0 || inputs.baseIndex >= inputs.tensors.length) {
      throw new MergeMethodError(`${name} works on task vectors and needs a base_model`);
    }
    readBoolean(name, inputs.params, this.globalParams, 'int8_mask');
    const normalize = readBoolean(name, inputs.params, this.globalParams, 'normalize');
    const rescale = readBoolean(name, inputs.params, this.globalParams, 'rescale');
    const lambda = readNumber(name, inputs.params, this.globalParams, 'lambda');
    const base = inputs.tensors[inputs.baseIndex].values;
    const nameHash = fnv1a32(inputs.tensorName);
    const deltas: Float32Array[] = [];
    const weights: number[] = [];
    inputs.tensors.forEach((tensor, modelIndex) => {
      if (modelIndex === inputs.baseIndex) return;
      if (tensor.values.length !== base.length) {
        throw new MergeMethodError(
          `${name}: model "${tensor.model}" has ${tensor.values.length} elements where the base has ${base.length}`,
        );
      }
      weights.push(readNumber(name, tensor.params, this.modelParams, 'weight', tensor.model));
      const delta = new Float32Array(base.length);
      const x = tensor.values;
      for (let i = 0; i < delta.length; i++) delta[i] = x[i] - base[i];
      if (sparsification !== null) {
        const read = (param: string) =>
          readNumber(name, tensor.params, this.modelParams, param, tensor.model);
        try {
          sparsifyInPlace(delta, {
            method: sparsification,
            density: read('density'),
            gamma: sparsification === 'magnitude_outliers' ? read('gamma') : undefined,
            epsilon: sparsification === 'della_magprune' ? read('epsilon') : undefined,
            rescale,
            shape: inputs.shape,
            random: { seed: inputs.seed, nameHash, modelIndex },
          });
        } catch (error) {
          if (error instanceof MergeMethodError) {
            throw new MergeMethodError(`${name}: model "${tensor.model}": ${error.message}`);
          }
          throw error;
        }
      }
      deltas.push(delta);
    });
    if (deltas.length === 0) return base.slice();
    return mixTaskVectors(base, deltas, weights, { consensus, normalize, lambda });
  }
}

/** mergekit's registered generalized task-arithmetic methods, with its defaults. */
export const TASK_ARITHMETIC_VARIANTS: readonly TaskArithmeticVariant[] = [
  {
    name: 'task_arithmetic',
    summary: 'Adds weighted task vectors (model - base) to the base model.',
    consensus: null,
    sparsification: null,
    defaultNormalize: false,
    defaultRescale: false,
  },
  {
    name: 'ties',
    summary: 'Keeps the largest-magnitude entries of each task vector, then merges those agreeing in sign.',
    consensus: 'sum',
    sparsification: 'magnitude',
    defaultNormalize: true,
    defaultRescale: false,
  },
  {
    name: 'dare_ties',
    summary: 'Drops task-vector entries at random and rescales, then merges those agreeing in sign.',
    consensus: 'sum',
    sparsification: 'random',
    defaultNormalize: false,
    defaultRescale: true,
  },
  {
    name: 'dare_linear',
    summary: 'Drops task-vector entries at random and rescales, then adds the weighted task vectors.',
    consensus: null,
    sparsification: 'random',
    defaultNormalize: false,
    defaultRescale: true,
  },
  {
    name: 'breadcrumbs',
    summary: 'Removes the smallest and the largest (outlier) task-vector entries, then adds the rest.',
    consensus: null,
    sparsification: 'magnitude_outliers',
    defaultNormalize: false,
    defaultRescale: false,
  },
  {
    name: 'breadcrumbs_ties',
    summary: 'Breadcrumbs sparsification followed by TIES sign consensus.',
    consensus: 'sum',
    sparsification: 'magnitude_outliers',
    defaultNormalize: false,
    defaultRescale: false,
  },
  {
    name: 'della',
    summary:
      'Drops entries at random, larger magnitudes kept more often, then merges those agreeing in sign.',
    consensus: 'sum',
    sparsification: 'della_magprune',
    defaultNormalize: true,
    defaultRescale: true,
  },
  {
    name: 'della_linear',
    summary:
      'Drops entries at random, larger magnitudes kept more often, then adds the weighted task vectors.',
    consensus: null,
    sparsification: 'della_magprune',
    defaultNormalize: false,
    defaultRescale: true,
  },
];
