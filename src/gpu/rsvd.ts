/**
 * The randomized SVD (src/linalg/rsvd.ts) with its heavy products on the GPU.
 *
 * Same contract, operation order and result layout as the TS `rsvd`: the products with A, the
 * Gaussian test matrix and the tall orthonormalizations run on the device; the small l x l
 * factorizations (Cholesky, one-sided Jacobi) run in TS in f64, and only l x l Gram matrices come
 * back between the steps. The result matches the TS one to f32 rounding in the products, with two
 * differences that a randomized range finder absorbs: the Gaussian entries may differ by a few ulps
 * (shaders/gaussian.wgsl), and orthonormalization is CholeskyQR in f32 (below).
 *
 * Orthonormalization of a tall X (m x l) on the GPU, "CholeskyQR until orthonormal":
 *   repeat: G = X^T X (GPU, read back); G = R_k^T R_k (TS Cholesky, f64); X = X R_k^{-1} (GPU).
 * Stop after the first round whose R_k is within ORTHONORMAL_TOLERANCE of the identity: the X that
 * round started from was already orthonormal to that tolerance, so the X it produces is orthonormal
 * to f32 rounding. A well-conditioned X stops after two rounds (CholeskyQR2). The f32 Gram matrix
 * squares the condition number, so when a Cholesky pivot fails the round is shifted (G + s I, the
 * shifted CholeskyQR of Fukaya et al. 2020), which still makes progress. R = R_k ... R_1. When no
 * round converges within MAX_ROUNDS (X numerically rank-deficient, e.g. a zero task vector), X is
 * read back and orthonormalized by the TS `orthonormalize` (Householder for rank-deficient input),
 * so the result is what the CPU reference would give.
 *
 * Within a GPU memory budget (GpuContextOptions.memoryBudget): when A and its m x l sketches do not
 * fit on the device, they stay in host memory and every product with them streams through the
 * device a block of rows at a time (src/gpu/row-stream.ts): Y = A Omega and U = Q W block by block,
 * A^T Q and the Gram matrices X^T X summed over blocks; the n x l and l x l matrices stay on the
 * device. Same operations in the same order, so the streamed result meets the same bounds; only
 * where an f32 sum over rows is cut into blocks changes.
 */

import gaussianSource from '../../shaders/gaussian.wgsl?raw';
import philoxLib from '../../shaders/philox.lib.wgsl?raw';
import {
  choleskyUpper,
  emptyFactors,
  invertUpper,
  jacobiSvd,
  LinalgShapeError,
  type LowRankFactors,
  leadingColumns,
  lowRankOperands,
  multiplyUpper,
  orthonormalize,
  polarRotation,
  type RsvdOptions,
  rsvdDimensions,
  transpose,
} from '../linalg/index';
import type { LowRankOps } from '../methods/svd/ops';
import { fnv1a32 } from '../random/counter-rng';
import { CommandBatch } from './commands';
import type { GpuContext, KernelSource } from './device';
import { GpuMatrix, product } from './matmul';
import { fitsBudget, streamTimes, streamTransTimes } from './row-stream';

export const GAUSSIAN_KERNEL: KernelSource = { name: 'gaussian', code: `${philoxLib}\n${gaussianSource}` };

const WORKGROUP = 256;
/** A round whose Cholesky factor is this close to I (max entry-wise) ends the orthonormalization. */
const ORTHONORMAL_TOLERANCE = 1e-2;
/** CholeskyQR rounds before falling back to the CPU. */
const MAX_ROUNDS = 6;
/** f32 unit roundoff. */
const F32_UNIT_ROUNDOFF = 2 ** -24;

export interface GpuQrResult {
  /** m x l, orthonormal columns. */
  readonly q: GpuMatrix;
  /** l x l upper triangular, X = Q R. */
  readonly r: Float64Array;
  /** Where the orthonormalization ended up: on the GPU, or read back to the TS reference. */
  readonly method: 'cholesky-qr' | 'cpu';
  readonly rounds: number;
}

/** The counter-based Gaussian test matrix of src/linalg/gaussian.ts, generated on the GPU. */
export function gaussianMatrixGpu(ctx: GpuContext, rows: number, cols: number, key: RsvdOptions): GpuMatrix {
  const out = GpuMatrix.allocate(ctx, rows, cols, 'rsvd.omega');
  const batch = new CommandBatch(ctx, 'rsvd.gaussian');
  const nameHash = fnv1a32(key.name);
  for (const t of out.tiles) {
    const first = t.start * cols;
    const count = t.rows * cols;
    batch.dispatch({
      kernel: GAUSSIAN_KERNEL,
      overrides: { WORKGROUP_SIZE: WORKGROUP },
      bindings: [
        new Uint32Array([
          count,
          first >>> 0,
          Math.floor(first / 2 ** 32),
          (key.modelIndex ?? 0) >>> 0,
          key.seed >>> 0,
          nameHash,
          0,
          0,
        ]),
        t.buffer,
      ],
      workgroups: Math.ceil(count / WORKGROUP),
    });
  }
  batch.submit();
  return out;
}

function identity(n: number): Float32Array {
  const out = new Float32Array(n * n);
  for (let i = 0; i < n; i++) out[i * n + i] = 1;
  return out;
}

function nearIdentity(r: Float64Array, n: number): boolean {
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      if (Math.abs(r[i * n + j] - (i === j ? 1 : 0)) > ORTHONORMAL_TOLERANCE) return false;
    }
  }
  return true;
}

/** X^T X read back as f64. */
async function gram(ctx: GpuContext, x: GpuMatrix): Promise<Float64Array> {
  const g = product(ctx, x, x, true, 'rsvd.gram');
  try {
    return Float64Array.from(await g.read());
  } finally {
    g.release();
  }
}

/**
 * Cholesky factor of G, shifted when G is not numerically positive definite: the shifts cover the
 * f32 rounding of the Gram sums (about sqrt(m) ulps typically, m in the worst case).
 */
function shiftedCholesky(
  g: Float64Array,
  l: number,
  m: number,
): { r: Float64Array; shifted: boolean } | null {
  const plain = choleskyUpper(g, l);
  if (plain) return { r: plain, shifted: false };
  let trace = 0;
  for (let i = 0; i < l; i++) trace += g[i * l + i];
  if (!(trace > 0) || !Number.isFinite(trace)) return null;
  for (const factor of [Math.sqrt(m) + l, m + l]) {
    const shifted = Float64Array.from(g);
    const s = F32_UNIT_ROUNDOFF * factor * trace;
    for (let i = 0; i < l; i++) shifted[i * l + i] += s;
    const r = choleskyUpper(shifted, l);
    if (r) return { r, shifted: true };
  }
  return null;
}

/**
 * Q R of a tall X (m x l, m >= l) with Q on the GPU (see the module comment). X is left as it was;
 * the caller owns both X and the returned Q.
 */
export async function orthonormalizeGpu(ctx: GpuContext, x: GpuMatrix): Promise<GpuQrResult> {
  const { rows: m, cols: l } = x;
  if (m < l) throw new LinalgShapeError(`orthonormalize: needs rows >= columns, got ${m}x${l}`);
  let current = x;
  let r: Float64Array | null = null;
  let rounds = 0;
  try {
    while (rounds < MAX_ROUNDS) {
      const step = shiftedCholesky(await gram(ctx, current), l, m);
      if (!step) break;
      rounds++;
      const inverse = GpuMatrix.upload(ctx, Float32Array.from(invertUpper(step.r, l)), l, l, 'rsvd.rinv');
      let next: GpuMatrix;
      try {
        next = product(ctx, current, inverse, false, 'rsvd.q');
      } finally {
        inverse.release();
      }
      if (current !== x) current.release();
      current = next;
      r = r === null ? step.r : multiplyUpper(step.r, r, l);
      if (!step.shifted && nearIdentity(step.r, l)) {
        const q = current;
        current = x;
        return { q, r, method: 'cholesky-qr', rounds };
      }
    }
  } finally {
    if (current !== x) current.release();
  }
  const qr = orthonormalize(await x.read(), m, l);
  return { q: GpuMatrix.upload(ctx, qr.Q, m, l, 'rsvd.q'), r: qr.R, method: 'cpu', rounds };
}

/** Host Q R of a tall X (m x l) kept in host memory: `orthonormalizeGpu`'s rounds, streamed. */
export interface StreamedQrResult {
  readonly q: Float32Array;
  readonly r: Float64Array;
  readonly method: 'cholesky-qr' | 'cpu';
  readonly rounds: number;
}

/** `orthonormalizeGpu` for an X in host memory: its Gram matrices and X R^-1 stream by rows. */
export async function orthonormalizeStreamed(
  ctx: GpuContext,
  x: Float32Array,
  m: number,
  l: number,
): Promise<StreamedQrResult> {
  if (m < l) throw new LinalgShapeError(`orthonormalize: needs rows >= columns, got ${m}x${l}`);
  let current = x;
  let r: Float64Array | null = null;
  let rounds = 0;
  while (rounds < MAX_ROUNDS) {
    const g = (await streamTransTimes(ctx, current, m, l, current, l, 'rsvd.gram')).matrix;
    let gram: Float64Array;
    try {
      gram = Float64Array.from(await g.read());
    } finally {
      g.release();
    }
    const step = shiftedCholesky(gram, l, m);
    if (!step) break;
    rounds++;
    const inverse = GpuMatrix.upload(ctx, Float32Array.from(invertUpper(step.r, l)), l, l, 'rsvd.rinv');
    try {
      current = (await streamTimes(ctx, current, m, l, inverse, 'rsvd.q')).values;
    } finally {
      inverse.release();
    }
    r = r === null ? step.r : multiplyUpper(step.r, r, l);
    if (!step.shifted && nearIdentity(step.r, l)) return { q: current, r, method: 'cholesky-qr', rounds };
  }
  const qr = orthonormalize(x, m, l);
  return { q: qr.Q, r: qr.R, method: 'cpu', rounds };
}

/** Host Q (rows x l) times the first `take` columns of W (l x l, f64), streamed by rows. */
async function multiplyByLeadingStreamed(
  ctx: GpuContext,
  q: Float32Array,
  rows: number,
  w: Float64Array,
  l: number,
  take: number,
): Promise<Float32Array> {
  const lead = GpuMatrix.upload(ctx, leadingColumns(w, l, l, take), l, take, 'rsvd.rotation');
  try {
    return (await streamTimes(ctx, q, rows, l, lead, 'rsvd.factor')).values;
  } finally {
    lead.release();
  }
}

/** Split-K partial products of an (m x k) (k x n) product: one per 256 of k, one binding at most. */
function splitScratch(ctx: GpuContext, m: number, k: number, n: number): number {
  return Math.min(ctx.limits.maxBindingBytes, 4 * m * n * Math.floor(k / 256));
}

/**
 * Whether `rsvdGpu` keeps A (m x n) and its sketches on the device: A, Y and the two matrices of a
 * CholeskyQR round (m x l each), the n x l matrices, and the larger split-K scratch of A's products.
 */
export function rsvdResident(ctx: GpuContext, m: number, n: number, l: number): boolean {
  const bytes = 4 * (m * n + 3 * m * l + 3 * n * l + l * l);
  const scratch = Math.max(splitScratch(ctx, m, n, l), splitScratch(ctx, n, m, l));
  return fitsBudget(ctx, bytes + scratch);
}

/** `rsvdGpu` with A and the m x l sketches in host memory (module comment). */
async function rsvdStreamed(
  ctx: GpuContext,
  a: Float32Array,
  m: number,
  n: number,
  dims: { r: number; l: number; k: number; powerIterations: number },
  options: RsvdOptions,
): Promise<LowRankFactors> {
  const { r, l, k, powerIterations } = dims;
  // The tile plan counts the binding tiles of the first pass over A.
  let planned = false;
  const plan = (tiles: number) => {
    if (!planned) ctx.onTilePlan?.({ tensor: options.name, tiles, streamed: true });
    planned = true;
  };
  const orth = async (x: Float32Array) => (await orthonormalizeStreamed(ctx, x, m, l)).q;
  /** A^T X (n x l), orthonormalized on the device, as a device matrix the caller releases. */
  const orthTransposed = async (x: Float32Array) => {
    const { matrix: z, tiles } = await streamTransTimes(ctx, a, m, n, x, l, 'rsvd.Z');
    plan(tiles);
    try {
      return await orthonormalizeGpu(ctx, z);
    } finally {
      z.release();
    }
  };
  let q: Float32Array | null;
  if (l === k) {
    q = m <= n ? null : await orth(a);
  } else {
    const omega = gaussianMatrixGpu(ctx, n, l, options);
    let y: Float32Array;
    try {
      const sketch = await streamTimes(ctx, a, m, n, omega, 'rsvd.Y');
      plan(sketch.tiles);
      y = sketch.values;
    } finally {
      omega.release();
    }
    q = await orth(y);
    for (let it = 0; it < powerIterations; it++) {
      const qz = (await orthTransposed(q)).q;
      try {
        q = await orth((await streamTimes(ctx, a, m, n, qz, 'rsvd.Y')).values);
      } finally {
        qz.release();
      }
    }
  }
  // Bt = A^T Q, orthonormalized; in the exact case with m <= n, Q = I and Bt = A^T.
  const { q: qb, r: rb } = await orthTransposed(q ?? identity(m));
  try {
    const small = jacobiSvd(rb, l, l);
    const u =
      q === null
        ? leadingColumns(small.V, l, l, r)
        : await multiplyByLeadingStreamed(ctx, q, m, small.V, l, r);
    const v = await multiplyByLeading(ctx, qb, small.U, l, r);
    return { U: u, S: small.S.slice(0, r), V: v, rank: r, rows: m, cols: n };
  } finally {
    qb.release();
  }
}

/** Q (rows x l, GPU) times the first `take` columns of W (l x l, f64), read back as rows x take. */
async function multiplyByLeading(
  ctx: GpuContext,
  q: GpuMatrix,
  w: Float64Array,
  l: number,
  take: number,
): Promise<Float32Array> {
  const lead = GpuMatrix.upload(ctx, leadingColumns(w, l, l, take), l, take, 'rsvd.rotation');
  let out: GpuMatrix | undefined;
  try {
    out = product(ctx, q, lead, false, 'rsvd.factor');
    return await out.read();
  } finally {
    lead.release();
    out?.release();
  }
}

/** Matrices made during one factorization, released together at the end. */
class Scratch {
  private readonly live = new Set<GpuMatrix>();
  keep(m: GpuMatrix): GpuMatrix {
    this.live.add(m);
    return m;
  }
  drop(m: GpuMatrix): void {
    m.release();
    this.live.delete(m);
  }
  releaseAll(): void {
    for (const m of this.live) m.release();
    this.live.clear();
  }
}

/**
 * Randomized truncated SVD of A (m x n, row-major f32) on the GPU: the contract, options and result
 * of the TS `rsvd` (src/linalg/rsvd.ts), with the differences of the module comment.
 */
export async function rsvdGpu(
  ctx: GpuContext,
  a: Float32Array,
  m: number,
  n: number,
  rank: number,
  options: RsvdOptions,
): Promise<LowRankFactors> {
  if (a.length !== m * n) throw new LinalgShapeError(`rsvd: expected ${m}x${n} values, got ${a.length}`);
  const dims = rsvdDimensions(m, n, rank, options);
  const { r, l, k, powerIterations } = dims;
  if (r === 0) return emptyFactors(m, n);
  const what = `Randomized SVD of ${options.name || 'a matrix'} (${m}x${n}, rank ${r})`;
  if (!rsvdResident(ctx, m, n, l)) {
    return ctx.scoped(`${what}, streamed through the GPU`, () => rsvdStreamed(ctx, a, m, n, dims, options));
  }
  return ctx.scoped(`${what} on the GPU`, async () => {
    const scratch = new Scratch();
    try {
      const matA = scratch.keep(GpuMatrix.upload(ctx, a, m, n, 'rsvd.A'));
      const orth = async (x: GpuMatrix) => {
        const { q } = await orthonormalizeGpu(ctx, x);
        scratch.drop(x);
        return scratch.keep(q);
      };
      let q: GpuMatrix | null;
      if (l === k) {
        q = m <= n ? null : scratch.keep((await orthonormalizeGpu(ctx, matA)).q);
      } else {
        const omega = scratch.keep(gaussianMatrixGpu(ctx, n, l, options));
        q = await orth(scratch.keep(product(ctx, matA, omega, false, 'rsvd.Y')));
        scratch.drop(omega);
        for (let it = 0; it < powerIterations; it++) {
          const qz = await orth(scratch.keep(product(ctx, matA, q, true, 'rsvd.Z')));
          scratch.drop(q);
          q = await orth(scratch.keep(product(ctx, matA, qz, false, 'rsvd.Y')));
          scratch.drop(qz);
        }
      }
      // Bt = A^T Q; in the exact case with m <= n, Q = I and Bt = A^T.
      const right = q ?? scratch.keep(GpuMatrix.upload(ctx, identity(m), m, m, 'rsvd.I'));
      const bt = scratch.keep(product(ctx, matA, right, true, 'rsvd.Bt'));
      scratch.drop(matA);
      const { q: qb, r: rb } = await orthonormalizeGpu(ctx, bt);
      scratch.keep(qb);
      scratch.drop(bt);
      const small = jacobiSvd(rb, l, l);
      const u =
        q === null ? leadingColumns(small.V, l, l, r) : await multiplyByLeading(ctx, q, small.V, l, r);
      const v = await multiplyByLeading(ctx, qb, small.U, l, r);
      return { U: u, S: small.S.slice(0, r), V: v, rank: r, rows: m, cols: n };
    } finally {
      scratch.releaseAll();
    }
  });
}

/**
 * `lowRankProduct` of src/linalg/rsvd.ts with the m x r x n product on the GPU: diag(S) V^T stays
 * on the device, U and the product stream by rows (one pass when they fit the budget).
 */
export async function lowRankProductGpu(
  ctx: GpuContext,
  f: LowRankFactors,
  rank = f.rank,
  scale = 1,
): Promise<Float32Array> {
  const { u, svt, r } = lowRankOperands(f, rank, scale);
  if (r === 0 || f.rows === 0 || f.cols === 0) return new Float32Array(f.rows * f.cols);
  return ctx.scoped(`Low-rank product (${f.rows}x${f.cols}, rank ${r}) on the GPU`, async () => {
    const right = GpuMatrix.upload(ctx, svt, r, f.cols, 'lowrank.SVt');
    try {
      return (await streamTimes(ctx, u, f.rows, r, right, 'lowrank.product')).values;
    } finally {
      right.release();
    }
  });
}

/** `polarFactor` of src/linalg/rsvd.ts: the tall orthonormalization and product on the GPU. */
export async function polarFactorGpu(
  ctx: GpuContext,
  a: Float32Array,
  m: number,
  n: number,
): Promise<Float32Array> {
  if (a.length !== m * n)
    throw new LinalgShapeError(`polarFactor: expected ${m}x${n} values, got ${a.length}`);
  if (m < n) return transpose(await polarFactorGpu(ctx, transpose(a, m, n), n, m), n, m);
  if (n === 0) return new Float32Array(0);
  // Resident: X, two CholeskyQR matrices and the product, m x n each.
  if (!fitsBudget(ctx, 4 * (4 * m * n + 2 * n * n) + splitScratch(ctx, n, m, n))) {
    return ctx.scoped(`Polar factor (${m}x${n}), streamed through the GPU`, async () => {
      const qr = await orthonormalizeStreamed(ctx, a, m, n);
      return multiplyByLeadingStreamed(ctx, qr.q, m, polarRotation(qr.r, n), n, n);
    });
  }
  return ctx.scoped(`Polar factor (${m}x${n}) on the GPU`, async () => {
    const x = GpuMatrix.upload(ctx, a, m, n, 'polar.A');
    let q: GpuMatrix | undefined;
    try {
      const qr = await orthonormalizeGpu(ctx, x);
      q = qr.q;
      return await multiplyByLeading(ctx, q, polarRotation(qr.r, n), n, n);
    } finally {
      x.release();
      q?.release();
    }
  });
}

/** The SVD family's heavy operations on `ctx` (see src/methods/svd/ops.ts). */
export function gpuLowRankOps(ctx: GpuContext): LowRankOps {
  return {
    rsvd: (a, rows, cols, rank, options) => rsvdGpu(ctx, a, rows, cols, rank, options),
    lowRankProduct: (f, rank, scale) => lowRankProductGpu(ctx, f, rank, scale),
    polarFactor: (a, rows, cols) => polarFactorGpu(ctx, a, rows, cols),
  };
}
