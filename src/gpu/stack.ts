/**
 * The inputs of one merge on the GPU: a stack of rows (one per model, f32), cut into tiles along the
 * elements so that no binding exceeds the device's storage binding limit.
 *
 * Two kinds of stack serve the same passes (`TileSet`): a `TensorStack` keeps every tile on the
 * device for the whole merge; a `StreamedStack` holds one tile at a time and uploads it again from
 * the host for every pass, so a tensor of any size merges within the GPU memory budget (a pass
 * that emits no output tells its sources it will be followed by another, `TileSource.keep`, so a
 * source slow to read again, a hub stream, keeps those bytes rather than downloading them again). Work that
 * changes the inputs in place (task vectors, sparsification masks) is a `transform`: applied once to
 * resident tiles, replayed on every load of a streamed one. Passes visit tiles in index order and
 * whole-tensor statistics accumulate across them in the same order either way, so the two kinds
 * give the same bits.
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

/** Where a tile lies in the tensor. */
export interface TileRange {
  readonly index: number;
  /** Global flat index of the tile's first element. */
  readonly start: number;
  readonly count: number;
  /** Elements between rows in the tile's buffer (row r starts at r * stride). */
  readonly stride: number;
}

export interface StackTile extends TileRange {
  readonly buffer: GPUBuffer;
}

/**
 * Records work on one tile while it is on the device, into `batch` (submitted right after). It may
 * return a promise of that work's results coming back (a readback); a pass keeps at most
 * `MAX_TILES_IN_FLIGHT` of them pending, which bounds the memory their staging buffers take.
 */
export type TileVisitor = (batch: CommandBatch, tile: StackTile) => void | Promise<void>;

export const MAX_TILES_IN_FLIGHT = 2;

/** The tiles of one tensor's inputs, resident or streamed (module comment). */
export interface TileSet {
  readonly rows: number;
  readonly count: number;
  readonly tiles: readonly TileRange[];
  /** Runs `visitor` on every tile in index order; resolves when every result it returned is back. */
  visit(label: string, visitor: TileVisitor): Promise<void>;
  /** Changes the inputs in place on every tile from now on (module comment). */
  transform(label: string, stage: (batch: CommandBatch, tile: StackTile) => void): Promise<void>;
  release(): void;
}

/** Keeps at most MAX_TILES_IN_FLIGHT results pending; `drain` waits for the rest. */
class InFlight {
  private readonly pending: Promise<void>[] = [];

  async add(result: void | Promise<void>): Promise<void> {
    if (!result) return;
    // A failure surfaces from drain() or the next add(); meanwhile it must not count as unhandled.
    result.catch(() => {});
    this.pending.push(result);
    while (this.pending.length > MAX_TILES_IN_FLIGHT) await this.pending.shift();
  }

  async drain(): Promise<void> {
    while (this.pending.length > 0) await this.pending.shift();
  }
}

/** Where a streamed stack reads one model's elements from: raw little-endian bytes of `dtype`. */
export interface TileSource {
  readonly dtype: FloatDType;
  /** Bytes of elements [start, start + count) of this model's tensor. */
  read(start: number, count: number): Uint8Array | Promise<Uint8Array>;
  /**
   * Elements [start, start + count), just read for a streamed tile, will be read again: the pass
   * that read them emitted no output, so another pass follows. A source that is slow to read again
   * (a hub stream) keeps their bytes; a pass that emits output is the last and keeps nothing.
   */
  keep?(start: number, count: number): void | Promise<void>;
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

export class TensorStack implements TileSet {
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
    writeRawRow(this.ctx, batch, tile, row, raw, tile.start);
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

  /** Loads every row from tile sources, a tile at a time (reading the next while this one uploads). */
  async loadFrom(sources: readonly TileSource[]): Promise<void> {
    if (sources.length !== this.rows)
      throw new Error(`stack of ${this.rows} rows given ${sources.length} inputs`);
    const read = (tile: StackTile) => Promise.all(sources.map(async (s) => s.read(tile.start, tile.count)));
    let next = read(this.tiles[0]);
    for (const tile of this.tiles) {
      const raw = await next;
      const following = this.tiles[tile.index + 1];
      if (following) {
        next = read(following);
        next.catch(() => {});
      }
      const batch = new CommandBatch(this.ctx, `load.tile${tile.index}`);
      raw.forEach((bytes, row) => {
        writeRawRow(this.ctx, batch, tile, row, { bytes, dtype: sources[row].dtype }, 0);
      });
      batch.submit();
    }
  }

  async visit(label: string, visitor: TileVisitor): Promise<void> {
    const inFlight = new InFlight();
    for (const tile of this.tiles) {
      const batch = new CommandBatch(this.ctx, `${label}.tile${tile.index}`);
      const result = visitor(batch, tile);
      batch.submit();
      await inFlight.add(result);
    }
    await inFlight.drain();
  }

  transform(label: string, stage: (batch: CommandBatch, tile: StackTile) => void): Promise<void> {
    return this.visit(label, (batch, tile) => stage(batch, tile));
  }

  release(): void {
    this.ctx.pool.release(...this.tiles.map((t) => t.buffer));
  }
}

/**
 * A stack with one tile on the device at a time: every pass reads each tile's inputs from the
 * sources again, decodes them into one pooled buffer, replays the transforms, runs the pass's work
 * and moves on (queue order keeps the reused buffer's uses apart). The next tile's bytes are read
 * on the host while the device works on this one.
 */
export class StreamedStack implements TileSet {
  readonly tiles: TileRange[];
  private readonly stages: Array<(batch: CommandBatch, tile: StackTile) => void> = [];
  /** The visit under way emitted output (`noteOutput`): it is the merge's last pass. */
  private emitted = false;

  constructor(
    readonly ctx: GpuContext,
    readonly count: number,
    readonly capacity: number,
    private readonly sources: readonly TileSource[],
  ) {
    if (count >= 2 ** 32) {
      throw new GpuLimitError(
        `A tensor of ${count} elements is beyond the GPU kernels' 2^32 element indexing.`,
      );
    }
    // One stride for every tile, so every pass reuses the same buffer.
    this.tiles = tileRanges(count, capacity).map(([start, n], index) => ({
      index,
      start,
      count: n,
      stride: Math.max(capacity, 1),
    }));
  }

  get rows(): number {
    return this.sources.length;
  }

  private read(tile: TileRange): Promise<Uint8Array[]> {
    return Promise.all(this.sources.map(async (s) => s.read(tile.start, tile.count)));
  }

  /** The visit under way emits output (GpuMergeJob.emit): no pass follows it. */
  noteOutput(): void {
    this.emitted = true;
  }

  async visit(label: string, visitor: TileVisitor): Promise<void> {
    const inFlight = new InFlight();
    this.emitted = false;
    let next = this.read(this.tiles[0]);
    for (const range of this.tiles) {
      const raw = await next;
      const following = this.tiles[range.index + 1];
      if (following) {
        next = this.read(following);
        next.catch(() => {});
      }
      const buffer = this.ctx.pool.acquire(this.rows * range.stride * 4, STORAGE_USAGE, 'stream.tile');
      const tile: StackTile = { ...range, buffer };
      try {
        const batch = new CommandBatch(this.ctx, `${label}.tile${range.index}`);
        raw.forEach((bytes, row) => {
          writeRawRow(this.ctx, batch, tile, row, { bytes, dtype: this.sources[row].dtype }, 0);
        });
        for (const stage of this.stages) stage(batch, tile);
        const result = visitor(batch, tile);
        batch.submit();
        // A pass without output is a statistics pass: the tile is read again by the passes after it.
        if (!this.emitted) {
          await Promise.all(this.sources.map(async (s) => s.keep?.(range.start, range.count)));
        }
        await inFlight.add(result);
      } finally {
        this.ctx.pool.release(buffer);
      }
    }
    await inFlight.drain();
  }

  async transform(_label: string, stage: (batch: CommandBatch, tile: StackTile) => void): Promise<void> {
    this.stages.push(stage);
  }

  release(): void {}
}

/**
 * Decodes the raw bytes of `tile`'s elements (from `at` elements into `raw`) into `row` of the
 * tile's buffer, or writes them directly when already F32.
 */
function writeRawRow(
  ctx: GpuContext,
  batch: CommandBatch,
  tile: StackTile,
  row: number,
  raw: RawTensor,
  at: number,
): void {
  const bpe = DTYPE_BYTES[raw.dtype];
  const slice = raw.bytes.subarray(at * bpe, (at + tile.count) * bpe);
  if (slice.byteLength !== tile.count * bpe) {
    throw new RangeError(
      `tile ${tile.index} needs ${tile.count * bpe} bytes of ${raw.dtype} for row ${row}, got ${slice.byteLength}`,
    );
  }
  if (raw.dtype === 'F32') {
    writeView(ctx.device.queue, tile.buffer, row * tile.stride * 4, slice);
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
