/**
 * Merge methods on the GPU, dispatched through the method registry: a method with GPU wiring
 * (`MergeMethod.gpu`, beside its CPU reference in src/methods) runs the same f32 operations in the
 * same order as that reference, so results are equal bit for bit (NaN payloads aside). This module
 * only sets a job up: tile sources over the inputs, an output sink, the device's error scope.
 *
 * `mergeBytes` takes whole tensors' raw bytes; `mergeStream` takes tile sources that read the inputs
 * from the files a tile at a time and a sink that writes the output in order, so neither host nor
 * GPU memory holds a whole large tensor. Either way the job plans its tiles against the GPU memory
 * budget (src/gpu/job.ts): nothing is handed back to the CPU for its size.
 */
import { DTYPE_BYTES, decodeToF32, encodeFromF32, type FloatDType } from '../formats/dtype';
import { METHODS } from '../methods/index';
import { isLowRankMethod, type LowRankMergeMethod, runAsync } from '../methods/svd/index';
import type { MergeInputs, MergeMethod, ResolvedParams } from '../methods/types';
import { GpuContext, type GpuContextOptions, GpuError } from './device';
import { bytesSource, type GpuJobInputs, type GpuJobTensor, GpuMergeJob, type OutputSink } from './job';
import { gpuLowRankOps } from './rsvd';

/** One input tensor as stored: little-endian bytes of a float dtype. */
export interface RawModelTensor {
  readonly model: string;
  readonly bytes: Uint8Array;
  readonly dtype: FloatDType;
  readonly params: ResolvedParams;
}

export interface MergeBytesInputs extends Omit<MergeInputs, 'tensors'> {
  readonly tensors: readonly RawModelTensor[];
  /** dtype of the result bytes. */
  readonly outDtype: FloatDType;
}

/** `mergeStream`'s inputs: tile sources in place of bytes, and where the output goes. */
export interface StreamMergeInputs extends GpuJobInputs {
  readonly write: OutputSink;
}

/** The method has no GPU wiring; merge this tensor on the CPU. */
export class GpuUnsupportedMethodError extends GpuError {
  override name = 'GpuUnsupportedMethodError';
}

/** Methods with GPU wiring, by mergekit name, from the registry. */
export const GPU_METHOD_NAMES: readonly string[] = [...METHODS.values()]
  .filter((m) => m.gpu !== undefined || isLowRankMethod(m))
  .map((m) => m.name);

export class GpuMergeBackend {
  private constructor(readonly ctx: GpuContext) {}

  static async create(options: GpuContextOptions = {}): Promise<GpuMergeBackend> {
    return new GpuMergeBackend(await GpuContext.create(options));
  }

  /** A backend on an existing context (which `destroy()` then destroys). */
  static forContext(ctx: GpuContext): GpuMergeBackend {
    return new GpuMergeBackend(ctx);
  }

  supports(methodName: string): boolean {
    return GPU_METHOD_NAMES.includes(methodName);
  }

  /**
   * Whether `mergeStream` can run this method. The SVD family takes whole tensors from the host
   * (`mergeBytes`) and streams them through the device by rows itself (src/gpu/rsvd.ts).
   */
  streams(method: MergeMethod): boolean {
    return method.gpu !== undefined;
  }

  /** The method's result for f32 inputs, as its CPU `merge` returns it. */
  async merge(method: MergeMethod, inputs: MergeInputs): Promise<Float32Array> {
    if (isLowRankMethod(method)) return this.mergeLowRank(method, inputs);
    const tensors = inputs.tensors.map((t) => ({
      model: t.model,
      params: t.params,
      dtype: 'F32' as const,
      bytes: new Uint8Array(t.values.buffer, t.values.byteOffset, t.values.byteLength),
    }));
    const bytes = await this.mergeBytes(method, { ...inputs, tensors, outDtype: 'F32' });
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }

  /** Decodes, merges and encodes on the GPU; returns the result's little-endian `outDtype` bytes. */
  async mergeBytes(method: MergeMethod, inputs: MergeBytesInputs): Promise<Uint8Array> {
    if (isLowRankMethod(method)) {
      // The SVD family works on whole f32 matrices on the host between its GPU steps; its products
      // stream through the device within the memory budget.
      const { outDtype, tensors, ...rest } = inputs;
      const values = tensors.map((t) => ({
        model: t.model,
        params: t.params,
        values: decodeToF32(t.bytes, t.dtype),
      }));
      return encodeFromF32(await this.mergeLowRank(method, { ...rest, tensors: values }), outDtype);
    }
    const tensors: GpuJobTensor[] = inputs.tensors.map((t) => {
      const elements = t.bytes.byteLength / DTYPE_BYTES[t.dtype];
      if (!Number.isInteger(elements)) {
        throw new RangeError(
          `${inputs.tensorName}: model "${t.model}" has ${t.bytes.byteLength} bytes, not a whole number of ${t.dtype} elements`,
        );
      }
      return { model: t.model, params: t.params, ...bytesSource(t.bytes, t.dtype) };
    });
    const count = tensors[0]?.elements ?? 0;
    const bpe = DTYPE_BYTES[inputs.outDtype];
    const output = new Uint8Array(count * bpe);
    await this.mergeStream(method, {
      ...inputs,
      tensors,
      write: (start, bytes) => output.set(bytes, start * bpe),
    });
    return output;
  }

  /** Merges from tile sources into an ordered sink (module comment). */
  async mergeStream(method: MergeMethod, inputs: StreamMergeInputs): Promise<void> {
    if (!method.gpu) {
      throw new GpuUnsupportedMethodError(
        `The merge method "${method.name}" has no streamed GPU implementation; merge on the CPU.`,
      );
    }
    const { write, ...jobInputs } = inputs;
    const job = new GpuMergeJob(this.ctx, jobInputs, write);
    try {
      // Every pass waits for its tiles' results inside the scope, so an error is pinned on this tensor.
      await this.ctx.scoped(`Merging ${inputs.tensorName} with ${method.name} on the GPU`, () =>
        method.gpu!(job),
      );
      await job.finish();
      this.ctx.throwIfFailed();
    } finally {
      job.release();
    }
  }

  /**
   * The SVD family: the method's own steps (src/methods/svd) with the randomized SVDs, low-rank
   * products and polar factors on the GPU (src/gpu/rsvd.ts), so CPU and GPU share the algorithm.
   */
  private mergeLowRank(method: LowRankMergeMethod, inputs: MergeInputs): Promise<Float32Array> {
    return runAsync(method.steps(inputs, gpuLowRankOps(this.ctx)));
  }

  destroy(): void {
    this.ctx.destroy();
  }
}

export { modelStockRatioFromSums } from '../methods/model-stock.gpu';
