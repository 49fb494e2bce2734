/**
 * Exact thin SVD by one-sided (Hestenes) Jacobi rotations, in f64.
 *
 * Used for small matrices and for the small factors inside the randomized SVD, so accuracy matters
 * more than speed: the whole factorization runs in f64 working precision (inputs are widened once),
 * which makes U and V orthonormal to ~1e-15 and the reconstruction exact to f32 rounding.
 *
 * Operation order (the specification a port must follow to get the same factors):
 * 1. Let r = min(m, n). Work on W, the r rows of length c = max(m, n): the rows of A when m <= n,
 *    else the rows of A^T. E starts as the r x r identity.
 * 2. Cyclic sweeps over pairs (p, q), p < q, in row-major order of the pair. For each pair:
 *    alpha = |w_p|^2, beta = |w_q|^2, gamma = w_p . w_q (f64 sums in index order). Skip the pair when
 *    |gamma| <= TOL * sqrt(alpha * beta). Otherwise zeta = (beta - alpha) / (2 gamma),
 *    t = sign(zeta) / (|zeta| + sqrt(1 + zeta^2)) (sign(0) = +1), c = 1 / sqrt(1 + t^2), s = c t, and
 *    w_p <- c w_p - s w_q, w_q <- s w_p + c w_q; the same rotation is applied to rows p, q of E.
 *    Sweeps stop after one with no rotation, or after MAX_SWEEPS.
 * 3. Now W = E * M (M = A or A^T) has orthogonal rows: M = E^T * W. sigma_i = |w_i|, and the unit
 *    rows w_i / sigma_i are the right singular vectors of M (rows with sigma_i <= r * eps * sigma_max
 *    count as zero and get an orthonormal completion instead, so both factors stay orthonormal).
 * 4. Sort by sigma descending (stable). For m <= n: U = E^T, V = unit rows of W transposed; for
 *    m > n the roles swap.
 */

import { LinalgShapeError } from './errors.js';

/** Relative orthogonality below which a pair is left alone; a few ulps of f64. */
const TOL = 1e-15;
/** One-sided Jacobi converges quadratically; 60 sweeps is far beyond any well-posed input. */
const MAX_SWEEPS = 60;

export interface SvdResult {
  /** Left singular vectors, m x r row-major (column j is the j-th vector). */
  readonly U: Float64Array;
  /** Singular values, descending, length r. */
  readonly S: Float64Array;
  /** Right singular vectors, n x r row-major (column j is the j-th vector). */
  readonly V: Float64Array;
  readonly rank: number;
}

/** Thin SVD A = U diag(S) V^T of an m x n row-major matrix, r = min(m, n). */
export function jacobiSvd(a: Float32Array | Float64Array, m: number, n: number): SvdResult {
  if (a.length !== m * n) throw new LinalgShapeError(`jacobiSvd: expected ${m}x${n} values, got ${a.length}`);
  const wide = m <= n;
  const r = Math.min(m, n);
  const c = Math.max(m, n);
  // W holds the r vectors that get orthogonalized, each contiguous.
  const w = new Float64Array(r * c);
  if (wide) {
    for (let i = 0; i < a.length; i++) w[i] = a[i];
  } else {
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[j * m + i] = a[i * n + j];
  }
  const e = new Float64Array(r * r);
  for (let i = 0; i < r; i++) e[i * r + i] = 1;

  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let rotated = false;
    for (let p = 0; p < r - 1; p++) {
      for (let q = p + 1; q < r; q++) {
        const po = p * c;
        const qo = q * c;
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let k = 0; k < c; k++) {
          const x = w[po + k];
          const y = w[qo + k];
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= TOL * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const cs = 1 / Math.sqrt(1 + t * t);
        const sn = cs * t;
        for (let k = 0; k < c; k++) {
          const x = w[po + k];
          const y = w[qo + k];
          w[po + k] = cs * x - sn * y;
          w[qo + k] = sn * x + cs * y;
        }
        const pe = p * r;
        const qe = q * r;
        for (let k = 0; k < r; k++) {
          const x = e[pe + k];
          const y = e[qe + k];
          e[pe + k] = cs * x - sn * y;
          e[qe + k] = sn * x + cs * y;
        }
      }
    }
    if (!rotated) break;
  }

  const sigma = new Float64Array(r);
  for (let i = 0; i < r; i++) {
    let s = 0;
    for (let k = 0; k < c; k++) s += w[i * c + k] * w[i * c + k];
    sigma[i] = Math.sqrt(s);
  }
  const order = Array.from({ length: r }, (_, i) => i).sort((x, y) => sigma[y] - sigma[x] || x - y);
  const sigmaMax = r > 0 ? sigma[order[0]] : 0;
  const zeroBelow = r * Number.EPSILON * sigmaMax;

  // Sorted unit rows of W (length c) and sorted rows of E (length r).
  const unitRows = new Float64Array(r * c);
  const eSorted = new Float64Array(r * r);
  const s = new Float64Array(r);
  const missing: number[] = [];
  for (let j = 0; j < r; j++) {
    const src = order[j];
    s[j] = sigma[src] > zeroBelow ? sigma[src] : 0;
    for (let k = 0; k < r; k++) eSorted[j * r + k] = e[src * r + k];
    if (s[j] > 0) {
      const inv = 1 / sigma[src];
      for (let k = 0; k < c; k++) unitRows[j * c + k] = w[src * c + k] * inv;
    } else {
      missing.push(j);
    }
  }
  completeOrthonormalRows(unitRows, r, c, missing);

  // Vectors of length max(m, n) come from W; those of length min(m, n) come from E.
  const long = new Float64Array(c * r);
  for (let j = 0; j < r; j++) for (let k = 0; k < c; k++) long[k * r + j] = unitRows[j * c + k];
  const short = new Float64Array(r * r);
  for (let j = 0; j < r; j++) for (let k = 0; k < r; k++) short[k * r + j] = eSorted[j * r + k];
  return wide ? { U: short, S: s, V: long, rank: r } : { U: long, S: s, V: short, rank: r };
}

/**
 * Fill rows `missing` of a rows x len matrix (whose other rows are orthonormal) with unit vectors
 * orthogonal to every other row: Gram-Schmidt, twice, of the standard basis vector with the largest
 * remaining component.
 */
function completeOrthonormalRows(
  m: Float64Array,
  rows: number,
  len: number,
  missing: readonly number[],
): void {
  if (missing.length === 0) return;
  const isMissing = new Uint8Array(rows);
  for (const j of missing) isMissing[j] = 1;
  const filled: number[] = [];
  for (let j = 0; j < rows; j++) if (!isMissing[j]) filled.push(j);
  const candidate = new Float64Array(len);
  for (const j of missing) {
    let best = -1;
    let bestNorm = 0;
    for (let basis = 0; basis < len; basis++) {
      candidate.fill(0);
      candidate[basis] = 1;
      const norm = orthogonalizeAgainst(candidate, m, len, filled);
      if (norm > bestNorm + 1e-12) {
        bestNorm = norm;
        best = basis;
      }
      if (bestNorm > 0.5) break;
    }
    candidate.fill(0);
    candidate[best] = 1;
    const norm = orthogonalizeAgainst(candidate, m, len, filled);
    for (let k = 0; k < len; k++) m[j * len + k] = candidate[k] / norm;
    filled.push(j);
  }
}

/** Remove from v its components along the given unit rows (twice, for stability); returns |v|. */
function orthogonalizeAgainst(
  v: Float64Array,
  m: Float64Array,
  len: number,
  rowsIdx: readonly number[],
): number {
  for (let pass = 0; pass < 2; pass++) {
    for (const j of rowsIdx) {
      let d = 0;
      for (let k = 0; k < len; k++) d += v[k] * m[j * len + k];
      for (let k = 0; k < len; k++) v[k] -= d * m[j * len + k];
    }
  }
  let s = 0;
  for (let k = 0; k < len; k++) s += v[k] * v[k];
  return Math.sqrt(s);
}
