/**
 * The contract every merge method implements. A method is a pure function of f32 tensors:
 * the engine reads, decodes and slices inputs to equal shapes before calling it, and rounds the
 * result once when encoding. The CPU implementation of each method is the specification the GPU
 * kernels are tested against.
 */

import type { GpuMergeJob } from '../gpu/job';

export type ParamValue = number | boolean | string;
export type ResolvedParams = Readonly<Record<string, ParamValue>>;

export interface ModelTensor {
  /** The model as the recipe names it (a folder or a hub id). */
  readonly model: string;
  /** Values in row-major order; all inputs of one call have the same length. */
  readonly values: Float32Array;
  /** Per-model parameters resolved for this tensor (defaults filled in). */
  readonly params: ResolvedParams;
}

export interface MergeInputs {
  /** Output tensor name, e.g. `model.layers.3.mlp.up_proj.weight`. Part of the random key. */
  readonly tensorName: string;
  readonly shape: readonly number[];
  /**
   * Every model that contributes, in mergekit's order (the recipe's `models`, then the base model
   * when it is not listed there). Position in this list is the model index of the random key.
   */
  readonly tensors: readonly ModelTensor[];
  /** Index of the base model in `tensors`, or -1 when the recipe has no base_model. */
  readonly baseIndex: number;
  /** Global (`parameters:`) values resolved for this tensor (defaults filled in). */
  readonly params: ResolvedParams;
  /** Seed of the counter-based generator (DARE, DELLA, random projections). */
  readonly seed: number;
  /**
   * Called by the SVD-family methods once per 2-D tensor and model (or once per tensor when the
   * factorization is not per model) with the rank kept and the share of spectral energy
   * (sum of squared singular values) that rank holds, in [0, 1].
   */
  readonly report?: (entry: SpectralReport) => void;
}

/** What an SVD-family method kept of one tensor's spectrum. */
export interface SpectralReport {
  readonly tensor: string;
  readonly model?: string;
  readonly rank: number;
  readonly energyKept: number;
}

export interface ParamSpec {
  readonly name: string;
  readonly type: 'number' | 'boolean';
  /** mergekit's default; undefined with `required` when the recipe must set it. */
  readonly default?: ParamValue;
  readonly required?: boolean;
  /** One line for forms and error messages. */
  readonly doc: string;
}

export interface MergeMethod {
  /** mergekit's `merge_method` name. */
  readonly name: string;
  /** One line for the UI. */
  readonly summary: string;
  readonly baseModel: 'required' | 'optional' | 'unused';
  readonly globalParams: readonly ParamSpec[];
  readonly modelParams: readonly ParamSpec[];
  /**
   * True for methods that work on task vectors (delta = model - base): their embedding inputs may be
   * larger than the base's and are cut to the base-sized submatrix, as mergekit does.
   */
  readonly taskVector: boolean;
  merge(inputs: MergeInputs): Float32Array;
  /**
   * The same merge visited a chunk of rows at a time, for tensors too large to hold whole (a 7B
   * model's embeddings are 2 GiB per model in f32). Absent for methods that need the whole tensor
   * at once (the SVD family); the engine then calls `merge`.
   */
  stream?(spec: TensorMergeSpec): StreamingMerge;
  /**
   * The same merge on the GPU, bit for bit (its wiring lives beside the method, in `<method>.gpu.ts`,
   * and names the kernels it runs): loads the job's tile set, runs its passes and emits every tile's
   * output. Absent for methods without GPU kernels; the SVD family runs its own steps on the GPU
   * through `LowRankMergeMethod.steps` instead.
   */
  gpu?(job: GpuMergeJob): Promise<void>;
}

/** What a streamed merge knows before it sees any values: `MergeInputs` without them. */
export interface TensorMergeSpec extends Omit<MergeInputs, 'tensors'> {
  readonly tensors: readonly Omit<ModelTensor, 'values'>[];
}

/**
 * Elements [start, start + values[i].length) of every input: whole rows (of `shape[1..]` elements;
 * a 1-D tensor is one row), in `MergeInputs.tensors` order.
 */
export interface TensorChunk {
  // The engine reuses the arrays for later chunks: keep statistics, never the arrays themselves.
  readonly start: number;
  readonly values: readonly Float32Array[];
}

/**
 * One tensor's merge as passes over its chunks. The engine calls `accumulate(p, chunk)` for every
 * chunk in order for each statistics pass p = 0 .. passes-1 (a pass may use what earlier passes
 * gathered: histograms for an exact top-k, norms for slerp), then `produce(chunk, out)` for every
 * chunk in order. The result must be bit for bit what `merge` gives on the whole tensor, for any
 * split into whole rows.
 *
 * `passes` may drop once a pass has made a later one unnecessary (an exact top-k whose threshold the
 * first pass already pinned down), never below the passes already run: read it before every pass.
 */
export interface StreamingMerge {
  readonly passes: number;
  accumulate(pass: number, chunk: TensorChunk): void;
  produce(chunk: TensorChunk, out: Float32Array): void;
  /**
   * Where `produce` is out[i] = fround(s0 * values[a][i]) + fround(s1 * values[b][i]) (slerp), its
   * coefficients once the statistics passes are done: kernels may do that step themselves.
   */
  blend?(): { a: number; b: number; s0: number; s1: number };
}

/** A recipe or tensor that a method cannot merge; the engine adds the file and tensor names. */
export class MergeMethodError extends Error {
  override name = 'MergeMethodError';
}
