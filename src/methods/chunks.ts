/**
 * What every method shares to run as passes over chunks of rows (types.ts `StreamingMerge`): the row
 * length chunks are cut by, the checks on a chunk, reusable scratch buffers, and `merge` as the same
 * streaming merge over a single chunk holding the whole tensor, so each method has one implementation.
 */
import { elementCount } from './params';
import {
  type MergeInputs,
  MergeMethodError,
  type StreamingMerge,
  type TensorChunk,
  type TensorMergeSpec,
} from './types';

/** Elements per row as chunks see them: shape[1..]; a 1-D tensor (or a scalar) is a single row. */
export function chunkRowLength(shape: readonly number[]): number {
  return shape.length >= 2 ? elementCount(shape.slice(1)) : elementCount(shape);
}

/** A merge's inputs without their values. */
export function specOf(inputs: MergeInputs): TensorMergeSpec {
  return { ...inputs, tensors: inputs.tensors.map(({ model, params }) => ({ model, params })) };
}

/**
 * Runs a streaming merge over the whole tensor as one chunk: every statistics pass, then the output.
 * Checks that every input holds the elements of `inputs.shape`.
 */
export function mergeAsOneChunk(methodName: string, job: StreamingMerge, inputs: MergeInputs): Float32Array {
  const n = elementCount(inputs.shape);
  for (const tensor of inputs.tensors) {
    if (tensor.values.length !== n) {
      throw new MergeMethodError(
        `${methodName}: model "${tensor.model}" has ${tensor.values.length} elements where the tensor's ` +
          `shape [${inputs.shape.join(', ')}] holds ${n}`,
      );
    }
  }
  const chunk: TensorChunk = { start: 0, values: inputs.tensors.map((t) => t.values) };
  for (let pass = 0; pass < job.passes; pass++) job.accumulate(pass, chunk);
  const out = new Float32Array(n);
  job.produce(chunk, out);
  return out;
}

/**
 * The number of elements in a chunk, after checking that every input has that many, that the chunk is
 * whole rows of `rowLength`, and that it lies inside the tensor of `total` elements. `referenceIndex`
 * names the input the others are compared with (the base model, where there is one).
 */
export function chunkLength(
  methodName: string,
  spec: TensorMergeSpec,
  chunk: TensorChunk,
  rowLength: number,
  total: number,
  referenceIndex = 0,
): number {
  if (chunk.values.length !== spec.tensors.length) {
    throw new MergeMethodError(
      `${methodName}: a chunk of tensor ${spec.tensorName} has ${chunk.values.length} inputs for ${spec.tensors.length} models`,
    );
  }
  const length = chunk.values[referenceIndex].length;
  for (let m = 0; m < chunk.values.length; m++) {
    if (chunk.values[m].length !== length) {
      throw new MergeMethodError(
        `${methodName}: model "${spec.tensors[m].model}" has ${chunk.values[m].length} elements where ` +
          `"${spec.tensors[referenceIndex].model}" has ${length}`,
      );
    }
  }
  const wholeRows = rowLength === 0 || (chunk.start % rowLength === 0 && length % rowLength === 0);
  if (!wholeRows || chunk.start < 0 || chunk.start + length > total) {
    throw new MergeMethodError(
      `${methodName}: elements [${chunk.start}, ${chunk.start + length}) of tensor ${spec.tensorName} ` +
        `are not whole rows of ${rowLength} inside its ${total} elements`,
    );
  }
  return length;
}

/** A Float32Array reused from chunk to chunk, grown when a chunk is longer than any before. */
export class ScratchF32 {
  private buffer = new Float32Array(0);

  /** A view of `length` elements; its contents are whatever the last user left. */
  take(length: number): Float32Array {
    if (this.buffer.length < length) this.buffer = new Float32Array(length);
    return this.buffer.length === length ? this.buffer : this.buffer.subarray(0, length);
  }
}

/** Uint8Array counterpart of ScratchF32. */
export class ScratchU8 {
  private buffer = new Uint8Array(0);

  take(length: number): Uint8Array {
    if (this.buffer.length < length) this.buffer = new Uint8Array(length);
    return this.buffer.length === length ? this.buffer : this.buffer.subarray(0, length);
  }
}
