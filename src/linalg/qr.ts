/**
 * Thin QR of a tall matrix: A (m x n, m >= n) = Q R with Q's columns orthonormal and R upper triangular.
 *
 * First choice is CholeskyQR2 (two rounds of: Gram matrix, Cholesky, triangular solve), which is two
 * passes over A of matrix-product work and maps directly onto GPU kernels. It is accurate when A is
 * well conditioned; when a Cholesky pivot is not positive or the first round's R shows a condition
 * number beyond CHOLESKY_QR_MAX_CONDITION, Householder QR (always backward stable, and it still
 * returns an orthonormal Q for rank-deficient A) is used instead.
 *
 * All arithmetic is f64: the Gram matrix accumulates in f64 and Q is kept in f64 between the rounds;
 * Q is rounded to f32 once at the end.
 *
 * Operation order of CholeskyQR2:
 * 1. G1 = A^T A (f64, sums over rows in order); G1 = R1^T R1 (Cholesky, row by row).
 *    Reject when a pivot <= 0 or max_i R1_ii / min_i R1_ii > CHOLESKY_QR_MAX_CONDITION.
 * 2. Q1 = A R1^{-1}: each row q solves q R1 = a by forward substitution over columns.
 * 3. G2 = Q1^T Q1; G2 = R2^T R2; Q = Q1 R2^{-1}; R = R2 R1.
 */

import { LinalgShapeError } from './errors.js';

/**
 * Largest R1 diagonal ratio CholeskyQR2 accepts. The Gram matrix squares the condition number, and
 * f64 Cholesky of it stays accurate up to about 1e16; 1e6 leaves a wide margin for the f32 inputs.
 */
const CHOLESKY_QR_MAX_CONDITION = 1e6;

export interface QrResult {
  /** m x n, orthonormal columns, row-major. */
  readonly Q: Float32Array;
  /** n x n upper triangular, row-major. */
  readonly R: Float64Array;
  readonly method: 'cholesky-qr2' | 'householder';
}

/** Orthonormalize the columns of a tall m x n matrix (m >= n); see the module comment. */
export function orthonormalize(a: Float32Array | Float64Array, m: number, n: number): QrResult {
  if (a.length !== m * n)
    throw new LinalgShapeError(`orthonormalize: expected ${m}x${n} values, got ${a.length}`);
  if (m < n) throw new LinalgShapeError(`orthonormalize: needs rows >= columns, got ${m}x${n}`);
  const a64 = Float64Array.from(a);
  const first = choleskyQrRound(a64, m, n, true);
  if (first) {
    const second = choleskyQrRound(first.q, m, n, false);
    if (second) {
      return {
        Q: Float32Array.from(second.q),
        R: multiplyUpper(second.r, first.r, n),
        method: 'cholesky-qr2',
      };
    }
  }
  const hh = householderQr(a64, m, n);
  return { Q: Float32Array.from(hh.q), R: hh.r, method: 'householder' };
}

/** One CholeskyQR round; null when the Gram matrix is too ill-conditioned for it. */
function choleskyQrRound(
  a: Float64Array,
  m: number,
  n: number,
  checkCondition: boolean,
): { q: Float64Array; r: Float64Array } | null {
  const g = new Float64Array(n * n);
  for (let i = 0; i < m; i++) {
    const row = i * n;
    for (let p = 0; p < n; p++) {
      const x = a[row + p];
      if (x === 0) continue;
      const gp = p * n;
      for (let q = p; q < n; q++) g[gp + q] += x * a[row + q];
    }
  }
  const r = choleskyUpper(g, n);
  if (r === null) return null;
  let minDiag = Number.POSITIVE_INFINITY;
  let maxDiag = 0;
  for (let p = 0; p < n; p++) {
    minDiag = Math.min(minDiag, r[p * n + p]);
    maxDiag = Math.max(maxDiag, r[p * n + p]);
  }
  if (checkCondition && maxDiag > CHOLESKY_QR_MAX_CONDITION * minDiag) return null;
  const q = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const row = i * n;
    for (let p = 0; p < n; p++) {
      let v = a[row + p];
      for (let k = 0; k < p; k++) v -= q[row + k] * r[k * n + p];
      q[row + p] = v / r[p * n + p];
    }
  }
  return { q, r };
}

/**
 * Cholesky factor of a symmetric n x n matrix G = R^T R, R upper triangular, in f64, row by row;
 * reads only the upper triangle of G. Null when a pivot is not positive (G is not numerically
 * positive definite, or holds NaN).
 */
export function choleskyUpper(g: Float64Array, n: number): Float64Array | null {
  const r = new Float64Array(n * n);
  for (let p = 0; p < n; p++) {
    let d = g[p * n + p];
    for (let k = 0; k < p; k++) d -= r[k * n + p] * r[k * n + p];
    if (!(d > 0)) return null;
    const rpp = Math.sqrt(d);
    r[p * n + p] = rpp;
    for (let q = p + 1; q < n; q++) {
      let v = g[p * n + q];
      for (let k = 0; k < p; k++) v -= r[k * n + p] * r[k * n + q];
      r[p * n + q] = v / rpp;
    }
  }
  return r;
}

/** Inverse of an n x n upper triangular matrix with a non-zero diagonal (back substitution, f64). */
export function invertUpper(r: Float64Array, n: number): Float64Array {
  const inv = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    inv[j * n + j] = 1 / r[j * n + j];
    for (let i = j - 1; i >= 0; i--) {
      let s = 0;
      for (let k = i + 1; k <= j; k++) s += r[i * n + k] * inv[k * n + j];
      inv[i * n + j] = -s / r[i * n + i];
    }
  }
  return inv;
}

/** Product of two n x n upper triangular matrices. */
export function multiplyUpper(x: Float64Array, y: Float64Array, n: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = i; k <= j; k++) s += x[i * n + k] * y[k * n + j];
      out[i * n + j] = s;
    }
  }
  return out;
}

/**
 * Householder QR in f64. Reflector j is H_j = I - tau_j v_j v_j^T with v_j[j] = 1, chosen so that
 * H_j maps column j (rows j..m-1) onto a multiple of e_j; a zero column gets H_j = I. Q is formed by
 * applying the reflectors in reverse order to the first n columns of the identity, so it is
 * orthonormal even when A is rank-deficient.
 */
export function householderQr(a: Float64Array, m: number, n: number): { q: Float64Array; r: Float64Array } {
  const w = Float64Array.from(a);
  const vs: Float64Array[] = [];
  const taus = new Float64Array(n);
  const dots = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let norm2 = 0;
    for (let i = j; i < m; i++) norm2 += w[i * n + j] * w[i * n + j];
    const v = new Float64Array(m - j);
    vs.push(v);
    if (norm2 === 0) continue;
    const x0 = w[j * n + j];
    const norm = Math.sqrt(norm2);
    const beta = x0 >= 0 ? -norm : norm;
    const v0 = x0 - beta;
    v[0] = 1;
    for (let i = j + 1; i < m; i++) v[i - j] = w[i * n + j] / v0;
    taus[j] = (beta - x0) / beta;
    applyReflector(w, m, n, j, j, v, taus[j], dots);
  }
  const r = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) r[i * n + j] = w[i * n + j];
  const q = new Float64Array(m * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  for (let j = n - 1; j >= 0; j--) if (taus[j] !== 0) applyReflector(q, m, n, j, 0, vs[j], taus[j], dots);
  return { q, r };
}

/** X[j.., col0..] -= tau v (v^T X[j.., col0..]), walking rows so memory access stays contiguous. */
function applyReflector(
  x: Float64Array,
  m: number,
  n: number,
  j: number,
  col0: number,
  v: Float64Array,
  tau: number,
  dots: Float64Array,
): void {
  dots.fill(0, col0, n);
  for (let i = j; i < m; i++) {
    const vi = v[i - j];
    if (vi === 0) continue;
    const row = i * n;
    for (let c = col0; c < n; c++) dots[c] += vi * x[row + c];
  }
  for (let i = j; i < m; i++) {
    const f = tau * v[i - j];
    if (f === 0) continue;
    const row = i * n;
    for (let c = col0; c < n; c++) x[row + c] -= f * dots[c];
  }
}
