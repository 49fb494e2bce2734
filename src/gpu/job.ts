/**
 * One tensor's merge on the GPU, as a method's GPU wiring (`MergeMethod.gpu`, beside each method's
 * CPU reference in src/methods) sees it: the inputs as a tile set sized to the GPU memory budget,
 * and the encoded output, which comes back a tile at a time and in order.
 *
 * Memory plan (`load`): when every model's f32 copy of the tensor fits the budget next to one
 * tile's scratch, the tiles stay on the device for the whole merge (a `TensorStack`); otherwise one
 * tile at a time streams through (a `StreamedStack`), re-read from the host for every pass. A
 * quarter of the budget stays free for whole-tensor statistics (block sums, histograms).
 */
import { DTYPE_BYTES, type FloatDType } from '../formats/dtype';
import type { ResolvedParams } from '../methods/types';
import type { CommandBatch } from './commands';
import { GpuBudgetError, type GpuContext } from './device';
import {
  encodeAndRead,
  MAX_TILES_IN_FLIGHT,
  type StackTile,
  StreamedStack,
  TensorStack,
  TILE_ALIGN,
  type TileSet,
  type TileSource,
  tileCapacity,
} from './stack';

/** One model's input to a GPU merge: where its elements come from. */
export interface GpuJobTensor extends TileSource {
  readonly model: string;
  readonly params: ResolvedParams;
  /** Elements of this model's tensor. */
  readonly elements: number;
}

/** What a GPU wiring is given: `MergeInputs` with tile sources in place of values. */
export interface GpuJobInputs {
  readonly tensorName: string;
  readonly shape: readonly number[];
  readonly tensors: readonly GpuJobTensor[];
  readonly baseIndex: number;
  readonly params: ResolvedParams;
  readonly seed: number;
  readonly outDtype: FloatDType;
}

/** Receives the encoded output of elements [start, start + bytes / outDtype size), in order. */
export type OutputSink = (start: number, bytes: Uint8Array) => void | Promise<void>;

/** Extra bytes per tile element a wiring needs beside the stack and the output (DELLA's ranks). */
export interface LoadOptions {
  readonly align?: number;
  readonly scratchPerElement?: number;
}

/** Pool size classes round buffers up by at most an eighth. */
const SIZE_CLASS_SLACK = 1.125;

/** Share of the budget kept for whole-tensor statistics. */
const STATISTICS_SHARE = 0.25;

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

export function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

export class GpuMergeJob {
  /** Elements of the first model's tensor (wirings check that the others match). */
  readonly count: number;
  private writes: Promise<void> = Promise.resolve();
  stack: TileSet | undefined;

  constructor(
    readonly ctx: GpuContext,
    readonly inputs: GpuJobInputs,
    private readonly sink: OutputSink,
  ) {
    this.count = inputs.tensors[0]?.elements ?? 0;
  }

  /** Bytes of GPU memory whole-tensor statistics of this job may take at once. */
  get statisticsBytes(): number {
    return Math.floor(this.ctx.memoryBudget * STATISTICS_SHARE);
  }

  /** Whether the tensor streams through the device a tile at a time (after `load`). */
  get streamed(): boolean {
    return this.stack instanceof StreamedStack;
  }

  /**
   * The inputs as a tile set whose tiles start at multiples of `align`: TILE_ALIGN for whole-tensor
   * sums, whole rows or slices for per-row work. Raw halves add a factor of 2 (a tile starts on a
   * 32-bit word). Resident or streamed by the memory plan (module comment).
   */
  async load(options: LoadOptions = {}): Promise<TileSet> {
    const { tensors } = this.inputs;
    const rows = tensors.length;
    const align = options.align ?? TILE_ALIGN;
    const step = tensors.some((t) => t.dtype !== 'F32') ? lcm(align, 2) : align;
    // Per element of a tile: the stack, the raw uploads, the output and its encoding, the staging
    // buffers of the readbacks in flight, and the wiring's own scratch.
    const perElement =
      SIZE_CLASS_SLACK * (rows * 8 + 8 + MAX_TILES_IN_FLIGHT * 4 + (options.scratchPerElement ?? 0));
    const room = this.ctx.memoryBudget - this.statisticsBytes;
    const bindingElements = tileCapacity(this.ctx.limits.maxBindingBytes, rows, 1);
    const residentTile = Math.min(this.count, bindingElements);
    const residentBytes = SIZE_CLASS_SLACK * rows * this.count * 4 + perElement * residentTile;
    if (residentBytes <= room) {
      // A tensor that fits one tile needs no alignment at all.
      const capacity =
        this.count <= bindingElements ? Math.max(this.count, 1) : Math.floor(bindingElements / step) * step;
      if (capacity === 0) throw this.tooSmall(step, rows);
      const stack = TensorStack.allocate(this.ctx, rows, this.count, capacity);
      this.stack = stack;
      this.ctx.onTilePlan?.({ tensor: this.inputs.tensorName, tiles: stack.tiles.length, streamed: false });
      await stack.loadFrom(tensors);
      return stack;
    }
    const fit = Math.min(bindingElements, Math.floor(room / perElement));
    const capacity = Math.floor(fit / step) * step;
    if (capacity === 0) throw this.tooSmall(step, rows);
    const stack = new StreamedStack(this.ctx, this.count, capacity, tensors);
    this.stack = stack;
    this.ctx.onTilePlan?.({ tensor: this.inputs.tensorName, tiles: stack.tiles.length, streamed: true });
    return stack;
  }

  private tooSmall(step: number, rows: number): GpuBudgetError {
    return new GpuBudgetError(
      `${this.inputs.tensorName}: a slice of ${step} elements of ${rows} models does not fit the GPU memory ` +
        `budget of ${this.ctx.memoryBudget} bytes (storage bindings of ${this.ctx.limits.maxBindingBytes} bytes); ` +
        'raise the budget (--gpu-memory)',
    );
  }

  /**
   * Schedules the encode and readback of `tile.count` f32 at element `offset` of `src` as the output
   * of `tile`; resolves once the bytes reached the sink (return it from a TileVisitor).
   */
  emit(batch: CommandBatch, tile: StackTile, src: GPUBuffer, offset = 0): Promise<void> {
    // A streamed stack keeps the tiles of passes without output for the passes after them.
    if (this.stack instanceof StreamedStack) this.stack.noteOutput();
    const read = encodeAndRead(batch, src, offset, tile.count, this.inputs.outDtype);
    const start = tile.start;
    // The read starts after the caller's submit (a microtask later); writes reach the sink in order.
    const bytes = Promise.resolve().then(read);
    bytes.catch(() => {});
    this.writes = this.writes.then(async () => this.sink(start, await bytes));
    return this.writes;
  }

  /** The output is row `row` unchanged (methods that return one input as is). */
  copyRow(row: number): Promise<void> {
    return this.stack!.visit('copy', (batch, tile) => this.emit(batch, tile, tile.buffer, row * tile.stride));
  }

  /** Resolves when every output byte reached the sink; rethrows a failed readback or write. */
  finish(): Promise<void> {
    return this.writes;
  }

  release(): void {
    this.stack?.release();
  }
}

/** Storage buffer of 32-bit words (u32 and f32 fields) for kernel tables. */
export function table(words: number, fill: (u: Uint32Array, f: Float32Array) => void): Uint32Array {
  const u = new Uint32Array(Math.max(words, 4));
  fill(u, new Float32Array(u.buffer));
  return u;
}

/** A tile source over a whole tensor's bytes held in memory. */
export function bytesSource(bytes: Uint8Array, dtype: FloatDType): TileSource & { elements: number } {
  const bpe = DTYPE_BYTES[dtype];
  return {
    dtype,
    elements: bytes.byteLength / bpe,
    read: (start, count) => bytes.subarray(start * bpe, (start + count) * bpe),
  };
}
