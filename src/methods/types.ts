/**
 * The contract every merge method implements. A method is a pure function of f32 tensors:
 * the engine reads, decodes and slices inputs to equal shapes before calling it, and rounds the
 * result once when encoding. The CPU implementation of each method is the specification the GPU
 * kernels are tested against.
 */

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
}

/** A recipe or tensor that a method cannot merge; the engine adds the file and tensor names. */
export class MergeMethodError extends Error {
  override name = 'MergeMethodError';
}
