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
 * Streaming (`stream`, and `merge` as one chunk): deltas are recomputed from the inputs in every pass
 * (a chunk of rows at a time), the sparsifications gather their statistics in the passes (sparsify.ts),
 * and steps 3 to 7 are element-wise, so the output pass needs nothing but the chunk.
 *
 * Defaults per method are mergekit's registry: ties normalizes; dare_* and della* rescale; della also
 * normalizes; task_arithmetic and breadcrumbs* do neither.
 */

import type { GpuMergeJob } from '../gpu/job';
import { fnv1a32 } from '../random/counter-rng';
import { chunkLength, chunkRowLength, mergeAsOneChunk, ScratchF32, specOf } from './chunks';
import { taskArithmeticOnGpu } from './generalized-task-arithmetic.gpu';
import { elementCount, readBoolean, readNumber } from './params';
import {
  type ChunkSparsifier,
  createSparsifier,
  type SparsificationMethod,
  type SparsifyKernels,
} from './sparsify';
import {
  type MergeInputs,
  type MergeMethod,
  MergeMethodError,
  type ParamSpec,
  type StreamingMerge,
  type TensorChunk,
  type TensorMergeSpec,
} from './types';

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

/** Elements per tile: the per-model deltas, masks and sums of a tile stay in the CPU caches. */
const TILE = 4096;

/**
 * Elements per tile of a tensor: TILE, or whole rows when a sparsification ranks within rows.
 * Shared with the WebAssembly path (src/kernels), which must visit the sparsifiers the same way.
 */
export function taskTileLength(models: readonly TaskModel[], rowLength: number): number {
  const wholeRows = models.some((model) => model.sparsifier?.wholeRows);
  return wholeRows && rowLength > 0 ? rowLength * Math.max(1, Math.floor(TILE / rowLength)) : TILE;
}

/** What one tensor's generalized task-arithmetic merge needs, before any values are seen. */
export interface TaskArithmeticPlan {
  readonly models: readonly TaskModel[];
  /** f32 weights of `models`, in order. */
  readonly weights: readonly number[];
  readonly consensus: ConsensusMethod | null;
  readonly options: MixOptions;
}

/** Steps 6 and 7 of the module comment, shared by the mixing loops. */
export interface Finish {
  readonly normalize: boolean;
  readonly scaleByLambda: boolean;
  readonly lambda: number;
}

export function finishOf(options: MixOptions): Finish {
  return {
    normalize: options.normalize,
    scaleByLambda: options.lambda !== 1,
    lambda: fround(options.lambda),
  };
}

/** The divisor without consensus: sum of the f32 weights in model order, 1 when near zero. */
export function weightDivisor(weights: Float64Array): number {
  let divisor = weights[0];
  for (let m = 1; m < weights.length; m++) divisor = fround(divisor + weights[m]);
  return Math.abs(divisor) < DIVISOR_EPSILON ? 1 : divisor;
}

/**
 * Steps 3 to 7 without sign consensus, for elements [from, to):
 * out[i] = base[i] + finish(sum_m fround(delta_m * w_m)). Model m's delta is deltas[m][i - from]
 * (sparsified, a tile), or fround(inputs[m][i] - base[i]) when deltas[m] is null. `out` accumulates
 * the sum (every store rounds to f32, in model order from the first model).
 */
function mixWithoutConsensus(
  base: Float32Array,
  inputs: readonly Float32Array[],
  deltas: readonly (Float32Array | null)[],
  weights: Float64Array,
  divisor: number,
  finish: Finish,
  out: Float32Array,
  from: number,
  to: number,
): void {
  const models = weights.length;
  const { normalize, scaleByLambda, lambda } = finish;
  // Every model but the last adds its weighted delta into out; the last one also finishes.
  for (let m = 0; m < models - 1; m++) {
    const w = weights[m];
    const x = inputs[m];
    const delta = deltas[m];
    if (m === 0) {
      if (delta) for (let i = from; i < to; i++) out[i] = delta[i - from] * w;
      else for (let i = from; i < to; i++) out[i] = fround(x[i] - base[i]) * w;
    } else {
      if (delta) for (let i = from; i < to; i++) out[i] = out[i] + fround(delta[i - from] * w);
      else for (let i = from; i < to; i++) out[i] = out[i] + fround(fround(x[i] - base[i]) * w);
    }
  }
  const w = weights[models - 1];
  const x = inputs[models - 1];
  const delta = deltas[models - 1];
  const first = models === 1;
  // Dividing by 1 is the identity.
  const divide = normalize && divisor !== 1;
  if (first && !divide && !scaleByLambda) {
    // One model and mergekit's defaults: the hottest loops, kept free of loop-invariant tests
    // (V8 compiles the general loop below markedly slower).
    if (delta === null) {
      for (let i = from; i < to; i++) {
        const b = base[i];
        out[i] = b + fround(fround(x[i] - b) * w);
      }
    } else {
      for (let i = from, j = 0; i < to; i++, j++) out[i] = base[i] + fround(delta[j] * w);
    }
    return;
  }
  for (let i = from, j = 0; i < to; i++, j++) {
    let mixed = fround((delta === null ? fround(x[i] - base[i]) : delta[j]) * w);
    if (!first) mixed = fround(out[i] + mixed);
    if (divide) mixed = fround(mixed / divisor);
    if (scaleByLambda) mixed = fround(mixed * lambda);
    out[i] = base[i] + mixed;
  }
}

/** Tile-sized sums of the consensus mixing. */
class ConsensusScratch {
  readonly vote = new ScratchF32();
  readonly divisor = new ScratchF32();
}

/**
 * Steps 3 to 7 with sign consensus for elements [from, to): deltas[m][i - from] holds model m's
 * (sparsified) delta, wd_m = fround(delta * w_m). Keep/drop is data-dependent and close to a coin
 * flip, so it is computed with +(comparison) and multiplications (wd * keep, w * keep: exactly the
 * module comment's terms) instead of branches.
 */
function mixWithConsensus(
  base: Float32Array,
  deltas: readonly Float32Array[],
  weights: Float64Array,
  bySum: boolean,
  finish: Finish,
  out: Float32Array,
  from: number,
  to: number,
  scratch: ConsensusScratch,
): void {
  const n = to - from;
  const models = deltas.length;
  const { normalize, scaleByLambda, lambda } = finish;
  if (models === 1) {
    // One model votes alone: sign(wd) agrees with the majority exactly where wd is a nonzero number.
    // The divisor is then w where kept and 1 where not; with w = 1 dividing is the identity.
    const delta = deltas[0];
    const w = weights[0];
    const divide = normalize && w !== 1;
    if (!divide && !scaleByLambda) {
      // The common case, without the loop-invariant tests that slow V8's code for the loop below.
      for (let i = from, j = 0; i < to; i++, j++) {
        const d = fround(delta[j] * w);
        out[i] = base[i] + d * (+(d > 0) | +(d < 0));
      }
      return;
    }
    for (let i = from, j = 0; i < to; i++, j++) {
      const d = fround(delta[j] * w);
      const keep = +(d > 0) | +(d < 0);
      let mixed = d * keep;
      if (divide) {
        const divisor = w * keep;
        mixed = fround(mixed / (divisor + +(divisor === 0)));
      }
      if (scaleByLambda) mixed = fround(mixed * lambda);
      out[i] = base[i] + mixed;
    }
    return;
  }
  const vote = scratch.vote.take(n);
  const first = deltas[0];
  const w0 = weights[0];
  if (bySum) {
    for (let j = 0; j < n; j++) vote[j] = first[j] * w0;
    for (let m = 1; m < models; m++) {
      const delta = deltas[m];
      const w = weights[m];
      for (let j = 0; j < n; j++) vote[j] = vote[j] + fround(delta[j] * w);
    }
  } else {
    // Sums of signs are small integers, exact in f32; a NaN sign makes the vote NaN.
    for (let j = 0; j < n; j++) vote[j] = Math.sign(fround(first[j] * w0));
    for (let m = 1; m < models; m++) {
      const delta = deltas[m];
      const w = weights[m];
      for (let j = 0; j < n; j++) vote[j] = vote[j] + Math.sign(fround(delta[j] * w));
    }
  }
  const divisors = scratch.divisor.take(n);
  for (let m = 0; m < models; m++) {
    const delta = deltas[m];
    const w = weights[m];
    const firstModel = m === 0;
    const lastModel = m === models - 1;
    for (let i = from, j = 0; i < to; i++, j++) {
      const d = fround(delta[j] * w);
      // The majority is +1 where vote >= 0 (a NaN vote counts as -1); sign(d) agrees iff d > 0 there,
      // d < 0 elsewhere: never for ±0 or NaN.
      const positive = +(vote[j] >= 0);
      const keep = (positive & +(d > 0)) | ((positive ^ 1) & +(d < 0));
      let mixed = d * keep;
      let divisor = w * keep;
      if (!firstModel) {
        mixed = fround(out[i] + mixed);
        divisor = fround(divisors[j] + divisor);
      }
      if (!lastModel) {
        out[i] = mixed;
        divisors[j] = divisor;
        continue;
      }
      // divisor + 1 where it is ±0: the module comment's `if divisor == 0 then divisor = 1`.
      if (normalize) mixed = fround(mixed / (divisor + +(divisor === 0)));
      if (scaleByLambda) mixed = fround(mixed * lambda);
      out[i] = base[i] + mixed;
    }
  }
}

/**
 * Steps 3 to 7 of the module comment on whole tensors: weights, sign consensus, mixing, normalize,
 * lambda, base.
 */
export function mixTaskVectors(
  base: Float32Array,
  deltas: Float32Array[],
  weights: readonly number[],
  options: MixOptions,
): Float32Array {
  const out = new Float32Array(base.length);
  if (deltas.length === 0) {
    out.set(base);
    return out;
  }
  const w = Float64Array.from(weights, fround);
  const finish = finishOf(options);
  if (options.consensus === null) {
    mixWithoutConsensus(base, deltas, deltas, w, weightDivisor(w), finish, out, 0, base.length);
  } else {
    const bySum = options.consensus === 'sum';
    mixWithConsensus(base, deltas, w, bySum, finish, out, 0, base.length, new ConsensusScratch());
  }
  return out;
}

/** One contributing model of a streamed task-arithmetic merge. */
export interface TaskModel {
  readonly index: number;
  readonly sparsifier: ChunkSparsifier | null;
  /** Its delta for one tile. */
  readonly tile: ScratchF32;
}

/**
 * A generalized task-arithmetic merge of one tensor as passes over chunks (module comment). Each
 * chunk is worked through in tiles of TILE elements (whole rows where a sparsification ranks within
 * rows), so a model's delta is computed into a cached tile, used and dropped, never written out.
 */
class TaskArithmeticStream implements StreamingMerge {
  private readonly rowLength: number;
  private readonly total: number;
  private readonly tileLength: number;
  private readonly weights: Float64Array;
  private readonly divisor: number;
  private readonly finish: Finish;
  private readonly inputs: Float32Array[];
  private readonly deltas: (Float32Array | null)[];
  private readonly sparsified: Float32Array[];
  private readonly consensusScratch = new ConsensusScratch();

  constructor(
    private readonly name: string,
    private readonly spec: TensorMergeSpec,
    private readonly models: readonly TaskModel[],
    weights: readonly number[],
    private readonly consensus: ConsensusMethod | null,
    options: MixOptions,
  ) {
    this.rowLength = chunkRowLength(spec.shape);
    this.total = elementCount(spec.shape);
    this.tileLength = taskTileLength(models, this.rowLength);
    this.weights = Float64Array.from(weights, fround);
    this.divisor = models.length > 0 ? weightDivisor(this.weights) : 1;
    this.finish = finishOf(options);
    this.inputs = models.map(() => new Float32Array(0));
    this.deltas = models.map(() => null);
    this.sparsified = models.map(() => new Float32Array(0));
  }

  /** The most passes any model's sparsification needs; may drop after pass 0 (rank-select.ts). */
  get passes(): number {
    return this.models.reduce((most, model) => Math.max(most, model.sparsifier?.passes ?? 0), 0);
  }

  accumulate(pass: number, chunk: TensorChunk): void {
    const length = this.checkedLength(chunk);
    const base = chunk.values[this.spec.baseIndex];
    const active = this.models.filter((model) => model.sparsifier && pass < model.sparsifier.passes);
    for (let from = 0; from < length; from += this.tileLength) {
      const to = Math.min(length, from + this.tileLength);
      for (const model of active) {
        const delta = this.tileDelta(model, chunk.values[model.index], base, from, to);
        (model.sparsifier as ChunkSparsifier).accumulate(pass, delta, chunk.start + from);
      }
    }
  }

  produce(chunk: TensorChunk, out: Float32Array): void {
    const length = this.checkedLength(chunk);
    if (out.length !== length) {
      throw new MergeMethodError(
        `${this.name}: output buffer of ${out.length} elements for a chunk of ${length}`,
      );
    }
    const base = chunk.values[this.spec.baseIndex];
    const models = this.models;
    if (models.length === 0) {
      out.set(base);
      return;
    }
    for (let m = 0; m < models.length; m++) this.inputs[m] = chunk.values[models[m].index];
    for (let from = 0; from < length; from += this.tileLength) {
      const to = Math.min(length, from + this.tileLength);
      if (this.consensus === null) {
        for (let m = 0; m < models.length; m++) {
          const sparsifier = models[m].sparsifier;
          if (!sparsifier) continue;
          const delta = this.tileDelta(models[m], this.inputs[m], base, from, to);
          sparsifier.apply(delta, chunk.start + from);
          this.deltas[m] = delta;
        }
        mixWithoutConsensus(
          base,
          this.inputs,
          this.deltas,
          this.weights,
          this.divisor,
          this.finish,
          out,
          from,
          to,
        );
        continue;
      }
      for (let m = 0; m < models.length; m++) {
        const delta = this.tileDelta(models[m], this.inputs[m], base, from, to);
        models[m].sparsifier?.apply(delta, chunk.start + from);
        this.sparsified[m] = delta;
      }
      const bySum = this.consensus === 'sum';
      mixWithConsensus(
        base,
        this.sparsified,
        this.weights,
        bySum,
        this.finish,
        out,
        from,
        to,
        this.consensusScratch,
      );
    }
  }

  private checkedLength(chunk: TensorChunk): number {
    return chunkLength(this.name, this.spec, chunk, this.rowLength, this.total, this.spec.baseIndex);
  }

  /** delta[j] = fround(x[from + j] - base[from + j]) in the model's tile buffer. */
  private tileDelta(
    model: TaskModel,
    x: Float32Array,
    base: Float32Array,
    from: number,
    to: number,
  ): Float32Array {
    const delta = model.tile.take(to - from);
    for (let j = 0, i = from; i < to; j++, i++) delta[j] = x[i] - base[i];
    return delta;
  }
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
    return mergeAsOneChunk(this.name, this.stream(specOf(inputs)), inputs);
  }

  gpu(job: GpuMergeJob): Promise<void> {
    return taskArithmeticOnGpu(this, job);
  }

  stream(spec: TensorMergeSpec): StreamingMerge {
    const { models, weights, consensus, options } = this.plan(spec);
    return new TaskArithmeticStream(this.name, spec, models, weights, consensus, options);
  }

  /**
   * The models, sparsifiers, weights and mixing options of one tensor (checks the parameters);
   * `kernels` gives the sparsifiers faster exact loops.
   */
  plan(spec: TensorMergeSpec, kernels?: SparsifyKernels): TaskArithmeticPlan {
    const { name, sparsification, consensus } = this.variant;
    if (spec.baseIndex < 0 || spec.baseIndex >= spec.tensors.length) {
      throw new MergeMethodError(`${name} works on task vectors and needs a base_model`);
    }
    readBoolean(name, spec.params, this.globalParams, 'int8_mask');
    const normalize = readBoolean(name, spec.params, this.globalParams, 'normalize');
    const rescale = readBoolean(name, spec.params, this.globalParams, 'rescale');
    const lambda = readNumber(name, spec.params, this.globalParams, 'lambda');
    const n = elementCount(spec.shape);
    const nameHash = fnv1a32(spec.tensorName);
    const models: TaskModel[] = [];
    const weights: number[] = [];
    spec.tensors.forEach((tensor, modelIndex) => {
      if (modelIndex === spec.baseIndex) return;
      const read = (param: string) => readNumber(name, tensor.params, this.modelParams, param, tensor.model);
      weights.push(read('weight'));
      let sparsifier: ChunkSparsifier | null = null;
      if (sparsification !== null) {
        try {
          sparsifier = createSparsifier(
            {
              method: sparsification,
              density: read('density'),
              gamma: sparsification === 'magnitude_outliers' ? read('gamma') : undefined,
              epsilon: sparsification === 'della_magprune' ? read('epsilon') : undefined,
              rescale,
              shape: spec.shape,
              random: { seed: spec.seed, nameHash, modelIndex },
              kernels,
            },
            n,
          );
        } catch (error) {
          if (error instanceof MergeMethodError) {
            throw new MergeMethodError(`${name}: model "${tensor.model}": ${error.message}`);
          }
          throw error;
        }
      }
      models.push({ index: modelIndex, sparsifier, tile: new ScratchF32() });
    });
    return { models, weights, consensus, options: { consensus, normalize, lambda } };
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
