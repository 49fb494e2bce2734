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
import { GpuMatrix, matmulGpu, product } from './matmul';

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
  const { r, l, k, powerIterations } = rsvdDimensions(m, n, rank, options);
  if (r === 0) return emptyFactors(m, n);
  const what = `Randomized SVD of ${options.name || 'a matrix'} (${m}x${n}, rank ${r})`;
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

/** `lowRankProduct` of src/linalg/rsvd.ts with the m x r x n product on the GPU. */
export async function lowRankProductGpu(
  ctx: GpuContext,
  f: LowRankFactors,
  rank = f.rank,
  scale = 1,
): Promise<Float32Array> {
  const { u, svt, r } = lowRankOperands(f, rank, scale);
  if (r === 0) return new Float32Array(f.rows * f.cols);
  return matmulGpu(ctx, u, svt, f.rows, r, f.cols);
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
