/**
 * Model weights on the GPU in their stored dtype, uploaded one tensor at a time from
 * ModelWeights.raw() (so JS memory holds at most one tensor). A tensor larger than a storage binding
 * is split into row chunks, each its own buffer, each a multiple of 8 rows so that every chunk starts
 * on a 16-byte load of matvec.wgsl.
 */
import { DTYPE_BYTES, type FloatDType } from '../../formats/dtype';
import type { GpuContext } from '../../gpu/device';
import type { ModelWeights } from '../weights';
import { padded16 } from './kernels';

export interface WeightChunk {
  readonly buffer: GPUBuffer;
  /** First row of the tensor in this chunk, and how many. */
  readonly rowStart: number;
  readonly rows: number;
  /** Bytes bound (the chunk's data, padded to 16). */
  readonly bindBytes: number;
}

export interface GpuWeight {
  readonly name: string;
  readonly dtype: FloatDType;
  /** Rows x cols; a vector is one row. */
  readonly rows: number;
  readonly cols: number;
  readonly chunks: readonly WeightChunk[];
}

/** Rows per chunk for a tensor with rows of `rowBytes` bytes under a binding limit of `maxBytes`. */
export function rowsPerChunk(rowBytes: number, rows: number, maxBytes: number): number {
  if (rowBytes * rows <= maxBytes) return rows;
  const fit = Math.floor(maxBytes / rowBytes / 8) * 8;
  return Math.max(8, fit);
}

/** Bytes a tensor occupies on the GPU (chunks padded to 16 bytes). */
export function gpuWeightBytes(shape: readonly number[], dtype: FloatDType, maxBindingBytes: number): number {
  const rows = shape.length >= 2 ? shape[0] : 1;
  const cols = shape.length >= 2 ? shape.slice(1).reduce((a, b) => a * b, 1) : (shape[0] ?? 1);
  const rowBytes = cols * DTYPE_BYTES[dtype];
  const per = rowsPerChunk(rowBytes, rows, maxBindingBytes);
  let total = 0;
  for (let r = 0; r < rows; r += per) total += padded16(Math.min(per, rows - r) * rowBytes);
  return total;
}

/** Uploads one tensor (read through `weights.raw`), split into chunks when it exceeds `maxBindingBytes`. */
export async function uploadWeight(
  ctx: GpuContext,
  weights: ModelWeights,
  name: string,
  maxBindingBytes: number,
): Promise<GpuWeight> {
  const info = weights.info(name);
  const rows = info.shape.length >= 2 ? info.shape[0] : 1;
  const cols = info.shape.length >= 2 ? info.shape.slice(1).reduce((a, b) => a * b, 1) : info.shape[0];
  const bytes = await weights.raw(name);
  return uploadWeightBytes(ctx, name, info.dtype, rows, cols, bytes, maxBindingBytes);
}

export function uploadWeightBytes(
  ctx: GpuContext,
  name: string,
  dtype: FloatDType,
  rows: number,
  cols: number,
  bytes: Uint8Array,
  maxBindingBytes: number,
): GpuWeight {
  const rowBytes = cols * DTYPE_BYTES[dtype];
  if (bytes.byteLength !== rows * rowBytes) {
    throw new RangeError(`${name}: ${bytes.byteLength} bytes for a [${rows}, ${cols}] ${dtype} tensor`);
  }
  const per = rowsPerChunk(rowBytes, rows, maxBindingBytes);
  const chunks: WeightChunk[] = [];
  for (let r = 0; r < rows; r += per) {
    const n = Math.min(per, rows - r);
    const size = padded16(n * rowBytes);
    const buffer = ctx.device.createBuffer({
      label: `${ctx.label}.weight.${name}${rows > per ? `.rows${r}` : ''}`,
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      mappedAtCreation: true,
    });
    new Uint8Array(buffer.getMappedRange()).set(bytes.subarray(r * rowBytes, (r + n) * rowBytes));
    buffer.unmap();
    chunks.push({ buffer, rowStart: r, rows: n, bindBytes: size });
  }
  return { name, dtype, rows, cols, chunks };
}

export function destroyWeight(w: GpuWeight): void {
  for (const c of w.chunks) c.buffer.destroy();
}
