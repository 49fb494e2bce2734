/**
 * Pieces shared by the SVD-family merge methods: parameter reading, task vectors, and the truncated
 * SVD of one 2-D tensor with its spectral-energy report.
 */

import { frobeniusNormSquared, type LowRankFactors } from '../../linalg/index.js';
import {
  type MergeInputs,
  type MergeMethod,
  MergeMethodError,
  type ParamSpec,
  type ResolvedParams,
} from '../types.js';
import { type LowRankOps, type MethodSteps, step } from './ops.js';

export const OVERSAMPLE_PARAM: ParamSpec = {
  name: 'oversample',
  type: 'number',
  default: 10,
  doc: 'Extra random directions of the randomized SVD beyond the kept rank (more is more accurate and slower).',
};

export const POWER_ITERATIONS_PARAM: ParamSpec = {
  name: 'power_iterations',
  type: 'number',
  default: 2,
  doc: 'Power iterations of the randomized SVD (more is more accurate for slowly decaying spectra).',
};

/** A number parameter, or `fallback` when the recipe left it out; anything else is an error. */
export function numberParam(
  params: ResolvedParams,
  name: string,
  tensorName: string,
  fallback?: number,
): number {
  const value = params[name];
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new MergeMethodError(
      `parameter '${name}' for tensor ${tensorName} must be a finite number, got ${value === undefined ? 'nothing' : JSON.stringify(value)}`,
    );
  }
  return value;
}

/** A number parameter that may be absent (then undefined). */
export function optionalNumberParam(
  params: ResolvedParams,
  name: string,
  tensorName: string,
): number | undefined {
  return params[name] === undefined ? undefined : numberParam(params, name, tensorName);
}

/** A non-negative integer parameter (a rank, a count of iterations). */
export function countParam(
  params: ResolvedParams,
  name: string,
  tensorName: string,
  fallback?: number,
): number {
  const value = numberParam(params, name, tensorName, fallback);
  if (!Number.isInteger(value) || value < 0) {
    throw new MergeMethodError(
      `parameter '${name}' for tensor ${tensorName} must be an integer >= 0, got ${value}`,
    );
  }
  return value;
}

/** A fraction in [0, 1] (an energy share). */
export function fractionParam(value: number, name: string, tensorName: string): number {
  if (!(value >= 0 && value <= 1)) {
    throw new MergeMethodError(
      `parameter '${name}' for tensor ${tensorName} must be in [0, 1], got ${value}`,
    );
  }
  return value;
}

/** Shape as a matrix when the tensor is 2-D with both sides above 1; null for the plain (non-SVD) form. */
export function matrixShape(inputs: MergeInputs): { rows: number; cols: number } | null {
  const expected = inputs.shape.reduce((a, b) => a * b, 1);
  for (const t of inputs.tensors) {
    if (t.values.length !== expected) {
      throw new MergeMethodError(
        `tensor ${inputs.tensorName} of ${t.model} has ${t.values.length} values, shape [${inputs.shape.join(', ')}] needs ${expected}`,
      );
    }
  }
  if (inputs.shape.length !== 2 || inputs.shape[0] < 2 || inputs.shape[1] < 2) return null;
  return { rows: inputs.shape[0], cols: inputs.shape[1] };
}

export interface TaskVector {
  /** Position in `inputs.tensors` (the model index of the random key). */
  readonly index: number;
  readonly model: string;
  /** theta_model - theta_base, f32. */
  readonly delta: Float32Array;
  readonly params: ResolvedParams;
}

/** The base model's values; throws when the recipe has none. */
export function baseValues(inputs: MergeInputs, method: string): Float32Array {
  if (inputs.baseIndex < 0 || inputs.baseIndex >= inputs.tensors.length) {
    throw new MergeMethodError(`${method} needs a base_model (tensor ${inputs.tensorName})`);
  }
  return inputs.tensors[inputs.baseIndex].values;
}

/** Task vectors of every model but the base, in input order. */
export function taskVectors(inputs: MergeInputs, method: string): TaskVector[] {
  const base = baseValues(inputs, method);
  const out: TaskVector[] = [];
  inputs.tensors.forEach((t, index) => {
    if (index === inputs.baseIndex) return;
    const delta = new Float32Array(base.length);
    for (let j = 0; j < base.length; j++) delta[j] = t.values[j] - base[j];
    out.push({ index, model: t.model, delta, params: t.params });
  });
  return out;
}

export interface RsvdSettings {
  readonly oversample: number;
  readonly powerIterations: number;
}

export function rsvdSettings(inputs: MergeInputs): RsvdSettings {
  return {
    oversample: countParam(inputs.params, 'oversample', inputs.tensorName, 10),
    powerIterations: countParam(inputs.params, 'power_iterations', inputs.tensorName, 2),
  };
}

export interface Truncation {
  readonly factors: LowRankFactors;
  /** ||A||_F^2, the total spectral energy. */
  readonly total: number;
}

/** Leading `rank` singular triplets of one model's matrix, keyed by (seed, tensor, model index). */
export function* truncatedSvd(
  ops: LowRankOps,
  a: Float32Array,
  rows: number,
  cols: number,
  rank: number,
  inputs: MergeInputs,
  modelIndex: number,
  settings: RsvdSettings,
): MethodSteps<Truncation> {
  const factors = yield* step(
    ops.rsvd(a, rows, cols, rank, {
      seed: inputs.seed,
      name: inputs.tensorName,
      modelIndex,
      oversample: settings.oversample,
      powerIterations: settings.powerIterations,
    }),
  );
  return { factors, total: frobeniusNormSquared(a) };
}

/**
 * A method of the SVD family: `merge` runs `steps` with the CPU operations; a GPU backend runs the
 * same steps with its own operations.
 */
export interface LowRankMergeMethod extends MergeMethod {
  steps(inputs: MergeInputs, ops: LowRankOps): MethodSteps;
}

/** acc += scale * x, in f64. */
export function addScaled(acc: Float64Array, x: ArrayLike<number>, scale: number): void {
  if (scale === 0) return;
  for (let j = 0; j < acc.length; j++) acc[j] += scale * x[j];
}
