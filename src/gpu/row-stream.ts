/**
 * Products of host matrices too large for the GPU memory budget, a block of rows at a time.
 *
 * The SVD family's large operands (a 152064 x 3584 embedding's task vector, its m x l sketches) stay
 * in host memory; each pass uploads one block of rows, multiplies it with a small matrix that stays
 * on the device, and either reads the block's product back (C = A B: rows of C come from rows of A)
 * or adds it to a device accumulator (C = A^T X: a sum over the rows). The kernels and their f32
 * sums are those of src/gpu/matmul.ts; the sum over blocks continues the in-kernel accumulation
 * across row tiles, so a streamed product is a resident one with other tile boundaries.
 */
import { LinalgShapeError } from '../linalg/errors';
import { CommandBatch } from './commands';
import { GpuBudgetError, type GpuContext } from './device';
import { GpuMatrix, product, recordProduct } from './matmul';

/** Pool size classes round buffers up by at most an eighth. */
const SIZE_CLASS_SLACK = 1.125;
/** Shortest shared-dimension chunk of a split-K product (MIN_SPLIT_K of src/gpu/matmul.ts). */
const MIN_SPLIT_K = 256;

/** Device bytes free for new buffers (idle pooled buffers are given up when room is needed). */
export function freeBytes(ctx: GpuContext): number {
  return ctx.memoryBudget - ctx.pool.inUseBytes;
}

/** Whether buffers of `bytes` in all (before size classes) fit what the budget leaves free. */
export function fitsBudget(ctx: GpuContext, bytes: number): boolean {
  return SIZE_CLASS_SLACK * bytes <= freeBytes(ctx);
}

/**
 * Rows per pass when each row takes `bytesPerRow` on the device and `reserve` bytes are needed
 * beside the blocks; a budget that cannot hold one row is named.
 */
export function rowsPerPass(ctx: GpuContext, bytesPerRow: number, reserve: number, what: string): number {
  const room = freeBytes(ctx) - SIZE_CLASS_SLACK * reserve;
  const rows = Math.floor(room / (SIZE_CLASS_SLACK * bytesPerRow));
  if (rows < 1) {
    throw new GpuBudgetError(
      `${what}: one row of ${bytesPerRow} bytes beside ${reserve} bytes of small matrices does not fit ` +
        `the GPU memory budget of ${ctx.memoryBudget} bytes (${ctx.pool.inUseBytes} in use); ` +
        'raise the budget (--gpu-memory)',
    );
  }
  return rows;
}

function checkHost(what: string, values: Float32Array, rows: number, cols: number): void {
  if (values.length !== rows * cols) {
    throw new LinalgShapeError(`${what}: expected ${rows}x${cols} values, got ${values.length}`);
  }
}

/**
 * C = A B with A on the host (m x k, row-major), B on the device (k x c); C comes back to the host.
 * `tiles` counts the storage-binding tiles A went through the device in (the tile plan).
 */
export async function streamTimes(
  ctx: GpuContext,
  a: Float32Array,
  m: number,
  k: number,
  b: GpuMatrix,
  label: string,
): Promise<{ values: Float32Array; tiles: number }> {
  checkHost(`${label} A`, a, m, k);
  if (b.rows !== k) throw new LinalgShapeError(`${label}: A is ${m}x${k}, B is ${b.rows}x${b.cols}`);
  const c = b.cols;
  const out = new Float32Array(m * c);
  if (m === 0) return { values: out, tiles: 0 };
  // Per row: the uploaded block, its product, the product's readback staging, and the split-K
  // partial products (at most one per MIN_SPLIT_K of the shared dimension).
  const splits = Math.floor(k / MIN_SPLIT_K);
  const block = rowsPerPass(ctx, 4 * (k + c * (2 + splits)), 0, label);
  let tiles = 0;
  for (let start = 0; start < m; start += block) {
    const rows = Math.min(block, m - start);
    const at = GpuMatrix.upload(ctx, a.subarray(start * k, (start + rows) * k), rows, k, `${label}.A`);
    tiles += at.tiles.length;
    let ct: GpuMatrix | undefined;
    try {
      ct = product(ctx, at, b, false, `${label}.C`);
      out.set(await ct.read(), start * c);
    } finally {
      at.release();
      ct?.release();
    }
  }
  return { values: out, tiles };
}

/**
 * C = A^T X with A (m x k) and X (m x c) on the host, summed over blocks of rows into a device
 * matrix (k x c) that the caller owns. Pass the same array as `a` and `x` for a Gram matrix A^T A.
 */
export async function streamTransTimes(
  ctx: GpuContext,
  a: Float32Array,
  m: number,
  k: number,
  x: Float32Array,
  c: number,
  label: string,
): Promise<{ matrix: GpuMatrix; tiles: number }> {
  checkHost(`${label} A`, a, m, k);
  checkHost(`${label} X`, x, m, c);
  const gram = a === x;
  const out = GpuMatrix.allocate(ctx, k, c, label);
  try {
    if (m === 0) {
      const batch = new CommandBatch(ctx, label);
      for (const t of out.tiles) batch.clear(t.buffer, 0, t.rows * c * 4);
      batch.submit();
      return { matrix: out, tiles: 0 };
    }
    // Per row: the uploaded blocks, and a share of the split-K partial sums (one k x c partial per
    // MIN_SPLIT_K rows of the block at most).
    const perRow = 4 * (gram ? k : k + c) + (4 * k * c) / MIN_SPLIT_K;
    const block = rowsPerPass(ctx, perRow, 0, label);
    let tiles = 0;
    for (let start = 0; start < m; start += block) {
      const rows = Math.min(block, m - start);
      const at = GpuMatrix.upload(ctx, a.subarray(start * k, (start + rows) * k), rows, k, `${label}.A`);
      const xt = gram
        ? at
        : GpuMatrix.upload(ctx, x.subarray(start * c, (start + rows) * c), rows, c, `${label}.X`);
      tiles += at.tiles.length;
      try {
        const batch = new CommandBatch(ctx, label);
        recordProduct(batch, at, xt, out, true, start > 0);
        batch.submit();
      } finally {
        at.release();
        if (xt !== at) xt.release();
      }
      // Uploads are staged by the implementation until the queue reaches them: wait, so a stream
      // of gigabytes does not pile up in host memory.
      await ctx.device.queue.onSubmittedWorkDone();
    }
    return { matrix: out, tiles };
  } catch (e) {
    out.release();
    throw e;
  }
}
