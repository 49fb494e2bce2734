/**
 * Recording GPU work: a `CommandBatch` is one command encoder plus the pooled buffers (uniforms,
 * scratch) it uses; `submit()` sends it and returns those buffers to the pool.
 */
import { foldWorkgroups, type GpuContext, type KernelSource, type OverrideConstants } from './device';

/** A buffer, or a byte range of one, bound to a kernel's storage or uniform slot. */
export type Binding =
  | GPUBuffer
  | { readonly buffer: GPUBuffer; readonly offset?: number; readonly size: number };

export interface DispatchSpec {
  readonly kernel: KernelSource;
  readonly overrides?: OverrideConstants;
  readonly entryPoint?: string;
  /**
   * Bindings of group 0 in slot order; a typed array becomes a pooled uniform buffer; null leaves a
   * slot out (an entry point that does not use it has no such slot in its layout).
   */
  readonly bindings: readonly (Binding | Uint32Array | Float32Array | null)[];
  /** Workgroups in x before folding to the per-dimension limit; `z` is passed as is. */
  readonly workgroups: number;
  readonly z?: number;
}

const UNIFORM = 0x0040; // GPUBufferUsage.UNIFORM | COPY_DST, spelled out so this module loads before the globals exist
const COPY_DST = 0x0008;
const STORAGE = 0x0080;
const COPY_SRC = 0x0004;
const MAP_READ = 0x0001;

export const STORAGE_USAGE = STORAGE | COPY_DST | COPY_SRC;
export const READBACK_USAGE = MAP_READ | COPY_DST;

export class CommandBatch {
  readonly encoder: GPUCommandEncoder;
  private readonly borrowed: GPUBuffer[] = [];
  private dispatches = 0;

  constructor(
    readonly ctx: GpuContext,
    readonly label: string,
  ) {
    ctx.throwIfFailed();
    this.encoder = ctx.device.createCommandEncoder({ label: `${ctx.label}.${label}` });
  }

  /** A pooled buffer that returns to the pool when this batch is submitted. */
  scratch(bytes: number, label: string, usage = STORAGE_USAGE): GPUBuffer {
    const b = this.ctx.pool.acquire(bytes, usage, label);
    this.borrowed.push(b);
    return b;
  }

  /** A pooled buffer filled with `data` (written on the queue before this batch runs). */
  upload(data: ArrayBufferView, label: string, usage = STORAGE_USAGE): GPUBuffer {
    const b = this.scratch(data.byteLength, label, usage);
    writeView(this.ctx.device.queue, b, 0, data);
    return b;
  }

  dispatch(spec: DispatchSpec): void {
    const { ctx } = this;
    const pipeline = ctx.pipeline(spec.kernel, spec.overrides, spec.entryPoint);
    const entries: GPUBindGroupEntry[] = [];
    spec.bindings.forEach((b, binding) => {
      if (b !== null) entries.push(this.entry(spec.kernel.name, binding, b));
    });
    const bindGroup = ctx.device.createBindGroup({
      label: `${ctx.label}.${spec.kernel.name}.bind`,
      layout: pipeline.getBindGroupLayout(0),
      entries,
    });
    const z = spec.z ?? 1;
    if (spec.workgroups <= 0 || z <= 0) return;
    const [x, y] = foldWorkgroups(spec.workgroups, ctx.limits.maxWorkgroupsPerDimension);
    const pass = this.encoder.beginComputePass({ label: `${ctx.label}.${spec.kernel.name}.pass` });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    pass.end();
    this.dispatches++;
  }

  private entry(kernel: string, binding: number, b: Binding | Uint32Array | Float32Array): GPUBindGroupEntry {
    if (ArrayBuffer.isView(b)) {
      const u = this.upload(b, `${kernel}.params`, UNIFORM | COPY_DST);
      return { binding, resource: { buffer: u, size: Math.ceil(b.byteLength / 16) * 16 } };
    }
    // A pooled buffer may be a size class larger than the binding limit; kernels read only the
    // range their uniforms describe, which is never larger.
    if ('usage' in b)
      return { binding, resource: { buffer: b, size: Math.min(b.size, this.ctx.limits.deviceBindingBytes) } };
    return { binding, resource: { buffer: b.buffer, offset: b.offset ?? 0, size: b.size } };
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (bytes > 0) this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  clear(buffer: GPUBuffer, offset = 0, size?: number): void {
    this.encoder.clearBuffer(buffer, offset, size);
  }

  get dispatchCount(): number {
    return this.dispatches;
  }

  submit(): void {
    this.ctx.device.queue.submit([this.encoder.finish({ label: `${this.ctx.label}.${this.label}` })]);
    this.ctx.pool.release(...this.borrowed);
    this.borrowed.length = 0;
  }
}

/** queue.writeBuffer of a view, padded to a multiple of 4 bytes as WebGPU requires. */
export function writeView(queue: GPUQueue, dst: GPUBuffer, dstOffset: number, data: ArrayBufferView): void {
  const bytes = data.byteLength;
  if (bytes === 0) return;
  const aligned = bytes & ~3;
  if (aligned > 0) queue.writeBuffer(dst, dstOffset, data.buffer as ArrayBuffer, data.byteOffset, aligned);
  if (aligned < bytes) {
    const tail = new Uint8Array(4);
    tail.set(new Uint8Array(data.buffer, data.byteOffset + aligned, bytes - aligned));
    queue.writeBuffer(dst, dstOffset + aligned, tail);
  }
}

/**
 * Copies `bytes` bytes of `src` at `offset` into a pooled MAP_READ buffer in `batch`; after
 * `batch.submit()`, the returned function maps it, copies the bytes out and returns the buffer.
 */
export function readback(
  batch: CommandBatch,
  src: GPUBuffer,
  offset: number,
  bytes: number,
): () => Promise<Uint8Array> {
  const { ctx } = batch;
  const padded = Math.ceil(bytes / 4) * 4;
  const staging = ctx.pool.acquire(Math.max(padded, 4), READBACK_USAGE, 'readback');
  batch.copy(src, offset, staging, 0, padded);
  return async () => {
    try {
      await staging.mapAsync(0x0001, 0, Math.max(padded, 4));
      const out = new Uint8Array(bytes);
      out.set(new Uint8Array(staging.getMappedRange(0, Math.max(padded, 4)), 0, bytes));
      staging.unmap();
      return out;
    } catch (e) {
      ctx.throwIfFailed();
      throw e;
    } finally {
      ctx.pool.release(staging);
    }
  };
}
