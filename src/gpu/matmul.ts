/**
 * Dense f32 matrices on the GPU and their products, for the randomized SVD.
 *
 * A `GpuMatrix` is row-major and cut into row tiles, each in its own buffer under the storage
 * binding limit, so a matrix larger than one binding (a 151936 x 1536 embedding) needs no special
 * case: a product runs one dispatch per pair of overlapping tiles, with element offsets and strides
 * in uniforms (one pipeline per tile configuration serves every shape).
 *
 * Products accumulate in f32 (the CPU reference, src/linalg/matmul.ts, accumulates in f64 and rounds
 * once), so a GPU product differs from the CPU's by the rounding of its sums: a relative error of a
 * few times 1e-7 times the square root of the shared dimension's length, in the usual case.
 * Long shared dimensions are split across workgroups (split-K) and the partial products are added
 * in split order, which keeps a thin output (a Gram matrix) from running on a handful of cores and
 * shortens every f32 running sum.
 */
import matmulSource from '../../shaders/matmul.wgsl?raw';
import sumSplitsSource from '../../shaders/matmul-sum-splits.wgsl?raw';
import { LinalgShapeError } from '../linalg/errors';
import { CommandBatch, readback, STORAGE_USAGE, writeView } from './commands';
import { type GpuContext, GpuLimitError, type KernelSource } from './device';

export const MATMUL_KERNELS = {
  matmul: { name: 'matmul', code: matmulSource },
  sumSplits: { name: 'matmul-sum-splits', code: sumSplitsSource },
} as const satisfies Record<string, KernelSource>;

/** Outputs per invocation along rows and columns (THREAD_M, THREAD_N in matmul.wgsl). */
const THREAD_BLOCK = 4;
/** Depth of the slabs staged in workgroup memory. */
const TILE_K = 16;
/**
 * Workgroup shapes (invocations along output rows x columns), the first that the device allows is
 * used. 128 x 32 output blocks suit the thin sketches (l <= ~100 columns) and are fine for wide
 * outputs; one shape per device keeps the pipelines to compile at two (A and A^T).
 */
const WORKGROUP_SHAPES: ReadonlyArray<readonly [number, number]> = [
  [32, 8],
  [16, 8],
  [8, 8],
];
/** Workgroups worth having in flight before splitting the shared dimension. */
const TARGET_WORKGROUPS = 1024;
/** Shortest shared-dimension chunk one split works on. */
const MIN_SPLIT_K = 256;
const SUM_WORKGROUP = 256;

export interface MatrixTile {
  readonly index: number;
  /** First row of the matrix held by this tile. */
  readonly start: number;
  readonly rows: number;
  readonly buffer: GPUBuffer;
}

/** Rows of `cols` f32 values that fit one storage binding. */
export function rowsPerTile(maxBindingBytes: number, cols: number): number {
  const rows = Math.floor(maxBindingBytes / (4 * Math.max(1, cols)));
  if (rows < 1) {
    throw new GpuLimitError(
      `A matrix row of ${cols} f32 values (${cols * 4} bytes) does not fit one GPU storage binding ` +
        `(${maxBindingBytes} bytes); this tensor is too wide for the GPU path, merge it on the CPU.`,
    );
  }
  return rows;
}

export class GpuMatrix {
  private released = false;

  private constructor(
    readonly ctx: GpuContext,
    readonly rows: number,
    readonly cols: number,
    readonly tiles: readonly MatrixTile[],
  ) {}

  /** Pooled, uninitialized storage for a rows x cols matrix in row tiles. */
  static allocate(ctx: GpuContext, rows: number, cols: number, label: string): GpuMatrix {
    if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 1) {
      throw new LinalgShapeError(`${label}: ${rows}x${cols} is not a matrix shape the GPU can hold`);
    }
    const per = rowsPerTile(ctx.limits.maxBindingBytes, cols);
    const tiles: MatrixTile[] = [];
    for (let start = 0; start < rows; start += per) {
      const count = Math.min(per, rows - start);
      const buffer = ctx.pool.acquire(count * cols * 4, STORAGE_USAGE, `${label}.tile${tiles.length}`);
      tiles.push({ index: tiles.length, start, rows: count, buffer });
    }
    return new GpuMatrix(ctx, rows, cols, tiles);
  }

  /** A matrix holding `values` (rows x cols, row-major). */
  static upload(ctx: GpuContext, values: Float32Array, rows: number, cols: number, label: string): GpuMatrix {
    if (values.length !== rows * cols) {
      throw new LinalgShapeError(`${label}: expected ${rows}x${cols} values, got ${values.length}`);
    }
    const m = GpuMatrix.allocate(ctx, rows, cols, label);
    for (const t of m.tiles) {
      writeView(ctx.device.queue, t.buffer, 0, values.subarray(t.start * cols, (t.start + t.rows) * cols));
    }
    return m;
  }

  /** The values, row-major, read back from every tile. */
  async read(): Promise<Float32Array> {
    const out = new Float32Array(this.rows * this.cols);
    const batch = new CommandBatch(this.ctx, 'matrix.read');
    const reads = this.tiles.map((t) => ({ t, read: readback(batch, t.buffer, 0, t.rows * this.cols * 4) }));
    batch.submit();
    for (const { t, read } of reads) {
      const bytes = await read();
      out.set(new Float32Array(bytes.buffer, bytes.byteOffset, t.rows * this.cols), t.start * this.cols);
    }
    return out;
  }

  /** Returns the tiles to the pool (after the submit that last used them). */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.ctx.pool.release(...this.tiles.map((t) => t.buffer));
  }
}

/** One dispatchable block: C[c_offset..] (+)= op(A)[a_offset..] * B[b_offset..], all strided. */
interface ProductBlock {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly a: GPUBuffer;
  readonly aOffset: number;
  readonly lda: number;
  readonly b: GPUBuffer;
  readonly bOffset: number;
  readonly ldb: number;
  readonly c: GPUBuffer;
  readonly cOffset: number;
  readonly ldc: number;
  readonly accumulate: boolean;
  readonly transA: boolean;
}

/** The first workgroup shape within the device's limits. */
function workgroupShape(ctx: GpuContext): readonly [number, number] {
  const { maxInvocationsPerWorkgroup, maxWorkgroupStorageBytes } = ctx.limits;
  const shape = WORKGROUP_SHAPES.find(
    ([wm, wn]) =>
      wm * wn <= maxInvocationsPerWorkgroup &&
      TILE_K * (wm + wn) * THREAD_BLOCK * 4 <= maxWorkgroupStorageBytes,
  );
  if (!shape) {
    throw new GpuLimitError(
      `The GPU allows ${maxInvocationsPerWorkgroup} invocations per workgroup; the matrix kernels need 64.`,
    );
  }
  return shape;
}

function recordBlock(batch: CommandBatch, block: ProductBlock): void {
  const { ctx } = batch;
  const { m, n, k } = block;
  if (m === 0 || n === 0) return;
  const [wm, wn] = workgroupShape(ctx);
  const colBlocks = Math.ceil(n / (wn * THREAD_BLOCK));
  const blocks = Math.ceil(m / (wm * THREAD_BLOCK)) * colBlocks;
  let splits = 1;
  if (k >= 2 * MIN_SPLIT_K) {
    splits = Math.min(
      Math.ceil(TARGET_WORKGROUPS / blocks),
      Math.floor(k / MIN_SPLIT_K),
      Math.floor(ctx.limits.maxBindingBytes / (m * n * 4)),
      ctx.limits.maxWorkgroupsPerDimension,
    );
  }
  let kChunk = k;
  if (splits > 1) {
    kChunk = Math.ceil(Math.ceil(k / splits) / TILE_K) * TILE_K;
    splits = Math.ceil(k / kChunk);
  } else {
    splits = 1;
  }
  const dispatch = (c: GPUBuffer, cOffset: number, ldc: number, splitStride: number, accumulate: boolean) =>
    batch.dispatch({
      kernel: MATMUL_KERNELS.matmul,
      overrides: { WG_M: wm, WG_N: wn, TILE_K, TRANS_A: block.transA ? 1 : 0 },
      bindings: [
        new Uint32Array([
          m,
          n,
          k,
          kChunk,
          block.aOffset,
          block.lda,
          block.bOffset,
          block.ldb,
          cOffset,
          ldc,
          splitStride,
          accumulate ? 1 : 0,
          colBlocks,
          blocks,
          0,
          0,
        ]),
        block.a,
        block.b,
        c,
      ],
      workgroups: blocks,
      z: splits,
    });
  if (splits === 1) {
    dispatch(block.c, block.cOffset, block.ldc, 0, block.accumulate);
    return;
  }
  const partial = batch.scratch(splits * m * n * 4, 'matmul.partial');
  dispatch(partial, 0, n, m * n, false);
  batch.dispatch({
    kernel: MATMUL_KERNELS.sumSplits,
    overrides: { WORKGROUP_SIZE: SUM_WORKGROUP },
    bindings: [
      new Uint32Array([m, n, splits, m * n, block.cOffset, block.ldc, block.accumulate ? 1 : 0, 0]),
      partial,
      block.c,
    ],
    workgroups: Math.ceil((m * n) / SUM_WORKGROUP),
  });
}

/**
 * Records C = op(A) * B into `batch`: op(A) = A (m x k) or, with `transA`, A^T for A stored k x m;
 * B is k x n; C must be m x n. Every pair of overlapping row tiles is one block; blocks after the
 * first that write the same outputs accumulate. With `accumulate`, C += op(A) * B (sums over
 * blocks of rows streamed through the device, src/gpu/row-stream.ts).
 */
export function recordProduct(
  batch: CommandBatch,
  a: GpuMatrix,
  b: GpuMatrix,
  c: GpuMatrix,
  transA: boolean,
  accumulate = false,
): void {
  const m = transA ? a.cols : a.rows;
  const k = transA ? a.rows : a.cols;
  if (b.rows !== k || c.rows !== m || c.cols !== b.cols) {
    throw new LinalgShapeError(
      `GPU product: ${transA ? 'A^T' : 'A'} is ${m}x${k}, B is ${b.rows}x${b.cols}, C is ${c.rows}x${c.cols}`,
    );
  }
  const n = b.cols;
  for (const ct of c.tiles) {
    if (k === 0) {
      if (!accumulate) batch.clear(ct.buffer, 0, ct.rows * n * 4);
      continue;
    }
    if (!transA) {
      // Output rows come from the same rows of A; B's row tiles cut the shared dimension.
      for (const at of a.tiles) {
        const r0 = Math.max(ct.start, at.start);
        const r1 = Math.min(ct.start + ct.rows, at.start + at.rows);
        if (r0 >= r1) continue;
        for (const bt of b.tiles) {
          recordBlock(batch, {
            m: r1 - r0,
            n,
            k: bt.rows,
            a: at.buffer,
            aOffset: (r0 - at.start) * k + bt.start,
            lda: k,
            b: bt.buffer,
            bOffset: 0,
            ldb: n,
            c: ct.buffer,
            cOffset: (r0 - ct.start) * n,
            ldc: n,
            accumulate: accumulate || bt.index > 0,
            transA,
          });
        }
      }
      continue;
    }
    // Output rows are columns of A; A's and B's row tiles both cut the shared dimension.
    let first = true;
    for (const at of a.tiles) {
      for (const bt of b.tiles) {
        const p0 = Math.max(at.start, bt.start);
        const p1 = Math.min(at.start + at.rows, bt.start + bt.rows);
        if (p0 >= p1) continue;
        recordBlock(batch, {
          m: ct.rows,
          n,
          k: p1 - p0,
          a: at.buffer,
          aOffset: (p0 - at.start) * m + ct.start,
          lda: m,
          b: bt.buffer,
          bOffset: (p0 - bt.start) * n,
          ldb: n,
          c: ct.buffer,
          cOffset: 0,
          ldc: n,
          accumulate: accumulate || !first,
          transA,
        });
        first = false;
      }
    }
  }
}

/** C = op(A) * B as a new matrix (see `recordProduct`); submitted before it returns. */
export function product(
  ctx: GpuContext,
  a: GpuMatrix,
  b: GpuMatrix,
  transA: boolean,
  label: string,
): GpuMatrix {
  const c = GpuMatrix.allocate(ctx, transA ? a.cols : a.rows, b.cols, label);
  try {
    const batch = new CommandBatch(ctx, label);
    recordProduct(batch, a, b, c, transA);
    batch.submit();
  } catch (e) {
    c.release();
    throw e;
  }
  return c;
}

function checkLength(what: string, values: Float32Array, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new LinalgShapeError(`${what}: shape ${rows}x${cols} is not a pair of non-negative integers`);
  }
  if (values.length !== rows * cols) {
    throw new LinalgShapeError(
      `${what}: expected ${rows}x${cols} = ${rows * cols} values, got ${values.length}`,
    );
  }
}

async function hostProduct(
  ctx: GpuContext,
  what: string,
  a: Float32Array,
  aRows: number,
  aCols: number,
  b: Float32Array,
  n: number,
  transA: boolean,
): Promise<Float32Array> {
  checkLength(`${what} A`, a, aRows, aCols);
  checkLength(`${what} B`, b, transA ? aRows : aCols, n);
  const m = transA ? aCols : aRows;
  if (m === 0 || n === 0) return new Float32Array(m * n);
  if ((transA ? aRows : aCols) === 0) return new Float32Array(m * n);
  return ctx.scoped(`${what} (${m}x${n}) on the GPU`, async () => {
    const ga = GpuMatrix.upload(ctx, a, aRows, aCols, `${what}.A`);
    const gb = GpuMatrix.upload(ctx, b, transA ? aRows : aCols, n, `${what}.B`);
    let c: GpuMatrix | undefined;
    try {
      c = product(ctx, ga, gb, transA, `${what}.C`);
      return await c.read();
    } finally {
      ga.release();
      gb.release();
      c?.release();
    }
  });
}

/** C = A * B with A m x k and B k x n (row-major), computed on the GPU; the TS `matmul`'s contract. */
export function matmulGpu(
  ctx: GpuContext,
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
): Promise<Float32Array> {
  return hostProduct(ctx, 'matmul', a, m, k, b, n, false);
}

/** C = A^T * B with A k x m and B k x n (row-major), on the GPU; the TS `matmulTransA`'s contract. */
export function matmulTransAGpu(
  ctx: GpuContext,
  a: Float32Array,
  b: Float32Array,
  k: number,
  m: number,
  n: number,
): Promise<Float32Array> {
  return hostProduct(ctx, 'matmulTransA', a, k, m, b, n, true);
}
