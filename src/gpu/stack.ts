/**
 * The inputs of one merge on the GPU: a stack of rows (one per model, f32), cut into tiles along the
 * elements so that no binding exceeds the device's storage binding limit.
 */
import { DTYPE_BYTES, type FloatDType } from '../formats/dtype';
import { CommandBatch, readback, STORAGE_USAGE, writeView } from './commands';
import { type GpuContext, GpuLimitError } from './device';
import { KERNELS } from './kernels';

/** Tiles start at multiples of this: whole blocks of the blocked sums, whole words of halves. */
export const TILE_ALIGN = 256;

const WORKGROUP = 256;

export const DTYPE_CODE: Record<FloatDType, number> = { F32: 0, F16: 1, BF16: 2 };

/** One tensor's raw little-endian bytes. */
export interface RawTensor {
  readonly bytes: Uint8Array;
  readonly dtype: FloatDType;
}

export interface StackTile {
  readonly index: number;
  /** Global flat index of the tile's first element. */
  readonly start: number;
  readonly count: number;
  /** Elements between rows in `buffer` (row r starts at r * stride). */
  readonly stride: number;
  readonly buffer: GPUBuffer;
}

/** How many elements one tile of `rows` f32 rows may hold under the binding limit. */
export function tileCapacity(maxBindingBytes: number, rows: number, align = TILE_ALIGN): number {
  const cap = Math.floor(maxBindingBytes / 4 / Math.max(1, rows) / align) * align;
  if (cap < align) {
    throw new GpuLimitError(
      `${rows} models do not fit one GPU storage binding of ${maxBindingBytes} bytes; merge on the CPU.`,
    );
  }
  return cap;
}

/** Tile boundaries for `count` elements: [start, count] pairs, every start a multiple of `align`. */
export function tileRanges(count: number, capacity: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let start = 0; start < count; start += capacity) out.push([start, Math.min(capacity, count - start)]);
  if (out.length === 0) out.push([0, 0]);
  return out;
}

export class TensorStack {
  readonly tiles: StackTile[];

  private constructor(
    readonly ctx: GpuContext,
    readonly rows: number,
    readonly count: number,
    tiles: StackTile[],
  ) {
    this.tiles = tiles;
  }

  /** Pooled tile buffers for `rows` rows of `count` elements; `capacity` overrides the tile size. */
  static allocate(ctx: GpuContext, rows: number, count: number, capacity?: number): TensorStack {
    if (count >= 2 ** 32) {
      throw new GpuLimitError(
        `A tensor of ${count} elements is beyond the GPU kernels' 2^32 element indexing.`,
      );
    }
    const cap = capacity ?? tileCapacity(ctx.limits.maxBindingBytes, rows);
    const tiles = tileRanges(count, cap).map(([start, n], index) => {
      const stride = Math.max(n, 1);
      const buffer = ctx.pool.acquire(rows * stride * 4, STORAGE_USAGE, `stack.tile${index}`);
      return { index, start, count: n, stride, buffer };
    });
    return new TensorStack(ctx, rows, count, tiles);
  }

  /** Writes f32 values into `row` of every tile. */
  writeValues(row: number, values: Float32Array): void {
    const q = this.ctx.device.queue;
    for (const t of this.tiles) {
      writeView(q, t.buffer, row * t.stride * 4, values.subarray(t.start, t.start + t.count));
    }
  }

  /** Decodes raw bytes into `row` of `tile` (or writes them directly when already F32). */
  writeRaw(batch: CommandBatch, tile: StackTile, row: number, raw: RawTensor): void {
    const bpe = DTYPE_BYTES[raw.dtype];
    const slice = raw.bytes.subarray(tile.start * bpe, (tile.start + tile.count) * bpe);
    if (raw.dtype === 'F32') {
      writeView(this.ctx.device.queue, tile.buffer, row * tile.stride * 4, slice);
      return;
    }
    const src = batch.upload(slice, 'raw');
    batch.dispatch({
      kernel: KERNELS.decode,
      overrides: { DTYPE: DTYPE_CODE[raw.dtype], WORKGROUP_SIZE: WORKGROUP },
      bindings: [new Uint32Array([tile.count, row * tile.stride, 0, 0]), src, tile.buffer],
      workgroups: Math.ceil(tile.count / WORKGROUP),
    });
  }

  /** Loads every row from raw tensors, one submit per tile. */
  load(inputs: readonly RawTensor[]): void {
    if (inputs.length !== this.rows)
      throw new Error(`stack of ${this.rows} rows given ${inputs.length} inputs`);
    for (const tile of this.tiles) {
      const batch = new CommandBatch(this.ctx, `load.tile${tile.index}`);
      inputs.forEach((raw, row) => {
        this.writeRaw(batch, tile, row, raw);
      });
      batch.submit();
    }
  }

  release(): void {
    this.ctx.pool.release(...this.tiles.map((t) => t.buffer));
  }
}

/**
 * Encodes `count` f32 values at element `offset` of `src` to `dtype` and schedules their readback in
 * `batch`; after submit, the returned function resolves to the encoded little-endian bytes.
 */
export function encodeAndRead(
  batch: CommandBatch,
  src: GPUBuffer,
  offset: number,
  count: number,
  dtype: FloatDType,
): () => Promise<Uint8Array> {
  const bytes = count * DTYPE_BYTES[dtype];
  if (count === 0) return async () => new Uint8Array(0);
  if (dtype === 'F32') return readback(batch, src, offset * 4, bytes);
  const words = Math.ceil(count / 2);
  const dst = batch.scratch(words * 4, 'encoded');
  batch.dispatch({
    kernel: KERNELS.encode,
    overrides: { DTYPE: DTYPE_CODE[dtype], WORKGROUP_SIZE: WORKGROUP },
    bindings: [new Uint32Array([count, offset, words, 0]), src, dst],
    workgroups: Math.ceil(words / WORKGROUP),
  });
  return readback(batch, dst, 0, bytes);
}
