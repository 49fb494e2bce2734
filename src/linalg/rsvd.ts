/**
 * Truncated SVD of large matrices by a randomized range finder (Halko, Martinsson & Tropp 2011,
 * Algorithms 4.4 and 5.1), plus the exact thin SVD and polar factor built from the same pieces.
 *
 * Contract of `rsvd(A, m, n, rank, options)` with A m x n row-major f32:
 * - returns { U: m x r, S: r (descending), V: n x r } with r = min(rank, m, n), U and V with
 *   orthonormal columns (to f32 rounding), so that U diag(S) V^T approximates A;
 * - with k = min(m, n) and l = min(r + oversample, k): when l = k the result is the exact thin SVD
 *   truncated to r (no randomness is used); otherwise the error of the rank-r reconstruction is close
 *   to the optimum sqrt(sum_{i>r} sigma_i^2) for spectra that decay, closer with more power iterations;
 * - deterministic for a given (seed, name, modelIndex) and shape.
 *
 * Operation order (randomized case, l < k); products in f64 accumulation, matrices stored f32:
 * 1. Omega = gaussianMatrix(n, l, key)                       (n x l)
 * 2. Q = orth(A Omega)                                       (m x l)
 * 3. powerIterations times: Q' = orth(A^T Q) (n x l); Q = orth(A Q') (m x l)
 * 4. Bt = A^T Q  (n x l, the transpose of B = Q^T A)
 * 5. Bt = Qb Rb  (orth, Rb l x l upper triangular)
 * 6. Rb = Ur diag(sigma) Vr^T by one-sided Jacobi (f64)
 * 7. A ~ Q B = (Q Vr) diag(sigma) (Qb Ur)^T: U = Q Vr[:, :r], V = Qb Ur[:, :r], S = sigma[:r].
 * Exact case (l = k): Q = I when m <= n (so Bt = A^T), Q = orth(A) when m > n; then steps 4-7.
 * orth is `orthonormalize` (CholeskyQR2, Householder fallback).
 */

import { LinalgArgumentError, LinalgShapeError } from './errors.js';
import { type GaussianKey, gaussianMatrix } from './gaussian.js';
import { jacobiSvd } from './jacobi-svd.js';
import { matmul, matmulTransA, transpose } from './matmul.js';
import { orthonormalize } from './qr.js';

export interface LowRankFactors {
  /** m x rank, orthonormal columns, row-major. */
  readonly U: Float32Array;
  /** Singular values, descending, length rank (f64: energy sums use them directly). */
  readonly S: Float64Array;
  /** n x rank, orthonormal columns, row-major. */
  readonly V: Float32Array;
  readonly rank: number;
  readonly rows: number;
  readonly cols: number;
}

export interface RsvdOptions extends GaussianKey {
  /** Extra random directions beyond `rank` (Halko et al. suggest 5-10). */
  readonly oversample?: number;
  /** Rounds of (A A^T) applied to the range, each re-orthonormalized. */
  readonly powerIterations?: number;
}

export const RSVD_DEFAULT_OVERSAMPLE = 10;
export const RSVD_DEFAULT_POWER_ITERATIONS = 2;

/** The sizes a randomized SVD of an m x n matrix works with; see the module comment. */
export interface RsvdDimensions {
  /** Rank returned: min(rank, m, n). */
  readonly r: number;
  /** Width of the sketch: min(r + oversample, k); l = k is the exact (non-random) case. */
  readonly l: number;
  /** min(m, n). */
  readonly k: number;
  readonly oversample: number;
  readonly powerIterations: number;
}

/** Validates the options of `rsvd` and derives its sizes (shared by the CPU and GPU versions). */
export function rsvdDimensions(
  m: number,
  n: number,
  rank: number,
  options: Pick<RsvdOptions, 'oversample' | 'powerIterations'>,
): RsvdDimensions {
  const oversample = options.oversample ?? RSVD_DEFAULT_OVERSAMPLE;
  const powerIterations = options.powerIterations ?? RSVD_DEFAULT_POWER_ITERATIONS;
  if (!Number.isInteger(rank) || rank < 0)
    throw new LinalgArgumentError(`rsvd: rank must be an integer >= 0, got ${rank}`);
  if (!Number.isInteger(oversample) || oversample < 0) {
    throw new LinalgArgumentError(`rsvd: oversample must be an integer >= 0, got ${oversample}`);
  }
  if (!Number.isInteger(powerIterations) || powerIterations < 0) {
    throw new LinalgArgumentError(`rsvd: powerIterations must be an integer >= 0, got ${powerIterations}`);
  }
  const k = Math.min(m, n);
  const r = Math.min(rank, k);
  return { r, l: Math.min(r + oversample, k), k, oversample, powerIterations };
}

/** Randomized truncated SVD; see the module comment for the contract and operation order. */
export function rsvd(
  a: Float32Array,
  m: number,
  n: number,
  rank: number,
  options: RsvdOptions,
): LowRankFactors {
  if (a.length !== m * n) throw new LinalgShapeError(`rsvd: expected ${m}x${n} values, got ${a.length}`);
  const { r, l, k, powerIterations } = rsvdDimensions(m, n, rank, options);
  if (r === 0) return emptyFactors(m, n);

  let q: Float32Array | null;
  if (l === k) {
    q = m <= n ? null : orthonormalize(a, m, n).Q;
  } else {
    const omega = gaussianMatrix(n, l, options);
    q = orthonormalize(matmul(a, omega, m, n, l), m, l).Q;
    for (let it = 0; it < powerIterations; it++) {
      const qz: Float32Array = orthonormalize(matmulTransA(a, q, m, n, l), n, l).Q;
      q = orthonormalize(matmul(a, qz, m, n, l), m, l).Q;
    }
  }
  const bt = q === null ? transpose(a, m, n) : matmulTransA(a, q, m, n, l);
  const { Q: qb, R: rb } = orthonormalize(bt, n, l);
  const small = jacobiSvd(rb, l, l);
  const u = q === null ? leadingColumns(small.V, l, l, r) : multiplyByLeading(q, m, l, small.V, l, r);
  const v = multiplyByLeading(qb, n, l, small.U, l, r);
  return { U: u, S: small.S.slice(0, r), V: v, rank: r, rows: m, cols: n };
}

/** Exact thin SVD of an m x n f32 matrix (rank min(m, n)), without randomness. */
export function exactSvd(a: Float32Array, m: number, n: number): LowRankFactors {
  const k = Math.min(m, n);
  return rsvd(a, m, n, k, { seed: 0, name: '', oversample: 0 });
}

/** Factors of rank 0 for an m x n matrix. */
export function emptyFactors(m: number, n: number): LowRankFactors {
  return {
    U: new Float32Array(0),
    S: new Float64Array(0),
    V: new Float32Array(0),
    rank: 0,
    rows: m,
    cols: n,
  };
}

/** The first `take` columns of a rows x cols f64 matrix, as f32. */
export function leadingColumns(x: Float64Array, rows: number, cols: number, take: number): Float32Array {
  const out = new Float32Array(rows * take);
  for (let i = 0; i < rows; i++) for (let j = 0; j < take; j++) out[i * take + j] = x[i * cols + j];
  return out;
}

/** X (rows x inner, f32) times the first `take` columns of W (inner x wCols, f64), f64 accumulation. */
function multiplyByLeading(
  x: Float32Array,
  rows: number,
  inner: number,
  w: Float64Array,
  wCols: number,
  take: number,
): Float32Array {
  const out = new Float32Array(rows * take);
  const acc = new Float64Array(take);
  for (let i = 0; i < rows; i++) {
    acc.fill(0);
    for (let p = 0; p < inner; p++) {
      const s = x[i * inner + p];
      if (s === 0) continue;
      const wRow = p * wCols;
      for (let j = 0; j < take; j++) acc[j] += s * w[wRow + j];
    }
    for (let j = 0; j < take; j++) out[i * take + j] = acc[j];
  }
  return out;
}

/**
 * The two operands of `lowRankProduct`: U[:, :r] (m x r) and diag(S[:r] * scale) V[:, :r]^T (r x n),
 * r = min(rank, f.rank), so that the product is one matrix product (on the CPU or the GPU).
 */
export function lowRankOperands(
  f: LowRankFactors,
  rank = f.rank,
  scale = 1,
): { u: Float32Array; svt: Float32Array; r: number } {
  const r = Math.min(rank, f.rank);
  const { rows: m, cols: n } = f;
  const u =
    r === f.rank
      ? f.U
      : Float32Array.from({ length: m * r }, (_, idx) => f.U[Math.floor(idx / r) * f.rank + (idx % r)]);
  // Rows of Vt scaled by the singular values, so the product is one matmul.
  const svt = new Float32Array(r * n);
  for (let j = 0; j < r; j++) {
    const s = f.S[j] * scale;
    for (let c = 0; c < n; c++) svt[j * n + c] = s * f.V[c * f.rank + j];
  }
  return { u, svt, r };
}

/**
 * U[:, :rank] diag(S[:rank] * scale) V[:, :rank]^T as an m x n f32 matrix (f64 accumulation).
 * `rank` defaults to all of the factors.
 */
export function lowRankProduct(f: LowRankFactors, rank = f.rank, scale = 1): Float32Array {
  const { rows: m, cols: n } = f;
  const { u, svt, r } = lowRankOperands(f, rank, scale);
  if (r === 0) return new Float32Array(m * n);
  return matmul(u, svt, m, r, n);
}

/**
 * The rotation Ur Vr^T (n x n, f64) of the SVD R = Ur diag(sigma) Vr^T: with A = Q R, the polar
 * factor of A is Q (Ur Vr^T).
 */
export function polarRotation(r: Float64Array, n: number): Float64Array {
  const small = jacobiSvd(r, n, n);
  const rotation = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += small.U[i * n + k] * small.V[j * n + k];
      rotation[i * n + j] = s;
    }
  }
  return rotation;
}

/**
 * The orthogonal polar factor P Q^T of A = P diag(sigma) Q^T (thin SVD), m x n: the nearest matrix
 * with orthonormal columns (m >= n) or rows (m < n). Computed as A = Qa Ra (orth), Ra = Ur S Vr^T
 * (Jacobi), polar = Qa (Ur Vr^T); for m < n, the transpose of the polar factor of A^T.
 */
export function polarFactor(a: Float32Array, m: number, n: number): Float32Array {
  if (a.length !== m * n)
    throw new LinalgShapeError(`polarFactor: expected ${m}x${n} values, got ${a.length}`);
  if (m < n) return transpose(polarFactor(transpose(a, m, n), n, m), n, m);
  const { Q, R } = orthonormalize(a, m, n);
  return multiplyByLeading(Q, m, n, polarRotation(R, n), n, n);
}
