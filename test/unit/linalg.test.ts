import { describe, expect, it } from 'vitest';
import {
  cumulativeEnergy,
  energyKept,
  energyRank,
  exactSvd,
  frobeniusNormSquared,
  gaussianMatrix,
  jacobiSvd,
  LinalgArgumentError,
  LinalgShapeError,
  lowRankProduct,
  matmul,
  matmulTransA,
  matmulTransB,
  numericalRank,
  orthonormalize,
  polarFactor,
  rsvd,
  transpose,
} from '../../src/linalg/index.js';
import { RNG_STREAM_GAUSSIAN, uniformAt } from '../../src/random/counter-rng.js';

/** Deterministic test data (mulberry32). */
function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < out.length; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  }
  return out;
}

function naiveMatmul(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  k: number,
  n: number,
): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
      c[i * n + j] = s;
    }
  return c;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function relativeError(approx: ArrayLike<number>, exact: ArrayLike<number>): number {
  let num = 0;
  for (let i = 0; i < exact.length; i++) num += (approx[i] - exact[i]) ** 2;
  return Math.sqrt(num / frobeniusNormSquared(exact));
}

/** Largest |(X^T X - I)_ij| for an rows x cols matrix X. */
function orthonormalityError(x: ArrayLike<number>, rows: number, cols: number): number {
  const xt = new Float64Array(cols * rows);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) xt[j * rows + i] = x[i * cols + j];
  const g = naiveMatmul(xt, x, cols, rows, cols);
  let e = 0;
  for (let i = 0; i < cols; i++)
    for (let j = 0; j < cols; j++) e = Math.max(e, Math.abs(g[i * cols + j] - (i === j ? 1 : 0)));
  return e;
}

/** U diag(S) V^T from row-major factors with `r` columns. */
function reconstruct(
  u: ArrayLike<number>,
  s: ArrayLike<number>,
  v: ArrayLike<number>,
  m: number,
  n: number,
  r: number,
) {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let x = 0;
      for (let p = 0; p < r; p++) x += u[i * r + p] * s[p] * v[j * r + p];
      out[i * n + j] = x;
    }
  return out;
}

/** A = Q1 diag(s) Q2^T with random orthonormal Q1 (m x k), Q2 (n x k), k = s.length. */
function matrixWithSpectrum(m: number, n: number, s: readonly number[], seed: number): Float32Array {
  const k = s.length;
  const q1 = orthonormalize(randomMatrix(m, k, seed), m, k).Q;
  const q2 = orthonormalize(randomMatrix(n, k, seed + 1), n, k).Q;
  const scaled = new Float32Array(m * k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) scaled[i * k + j] = q1[i * k + j] * s[j];
  return matmulTransB(scaled, q2, m, k, n);
}

describe('matrix products', () => {
  it('A*B, A^T*B and A*B^T match the naive triple loop on odd shapes', () => {
    const [m, k, n] = [7, 13, 5];
    const a = randomMatrix(m, k, 1);
    const b = randomMatrix(k, n, 2);
    expect(maxAbsDiff(matmul(a, b, m, k, n), naiveMatmul(a, b, m, k, n))).toBeLessThan(1e-6);
    const at = transpose(a, m, k);
    expect(maxAbsDiff(matmulTransA(at, b, k, m, n), naiveMatmul(a, b, m, k, n))).toBeLessThan(1e-6);
    const bt = transpose(b, k, n);
    expect(maxAbsDiff(matmulTransB(a, bt, m, k, n), naiveMatmul(a, b, m, k, n))).toBeLessThan(1e-6);
  });

  it('stays exact across panel boundaries of a long shared dimension', () => {
    const [m, k, n] = [3, 5003, 4];
    const a = randomMatrix(m, k, 3);
    const b = randomMatrix(k, n, 4);
    const exact = naiveMatmul(a, b, m, k, n);
    // f64 accumulation: the only error is the final rounding to f32.
    for (let i = 0; i < exact.length; i++) expect(matmul(a, b, m, k, n)[i]).toBe(Math.fround(exact[i]));
    const c = matmulTransA(transpose(a, m, k), b, k, m, n);
    for (let i = 0; i < exact.length; i++) expect(c[i]).toBe(Math.fround(exact[i]));
  });

  it('rejects arrays whose length does not match the shape', () => {
    expect(() => matmul(new Float32Array(5), new Float32Array(6), 2, 3, 2)).toThrow(LinalgShapeError);
  });
});

describe('jacobiSvd', () => {
  it('finds the singular values of a diagonal matrix, sorted', () => {
    const { S, U, V } = jacobiSvd(Float64Array.of(3, 0, 0, 4), 2, 2);
    expect(Array.from(S)).toEqual([4, 3]);
    expect(Math.abs(U[1])).toBeCloseTo(1, 15);
    expect(Math.abs(V[1])).toBeCloseTo(1, 15);
  });

  it.each([
    [9, 5],
    [5, 9],
    [12, 12],
  ])('is exact on a random %ix%i matrix', (m, n) => {
    const a = randomMatrix(m, n, m * 31 + n);
    const { U, S, V, rank } = jacobiSvd(a, m, n);
    expect(rank).toBe(Math.min(m, n));
    expect(orthonormalityError(U, m, rank)).toBeLessThan(1e-13);
    expect(orthonormalityError(V, n, rank)).toBeLessThan(1e-13);
    for (let i = 1; i < rank; i++) expect(S[i]).toBeLessThanOrEqual(S[i - 1]);
    expect(relativeError(reconstruct(U, S, V, m, n, rank), a)).toBeLessThan(1e-12);
  });

  it('is exact on rank-deficient matrices and keeps both factors orthonormal', () => {
    const [m, n] = [8, 6];
    // rank 2: outer products of two random pairs.
    const x = randomMatrix(m, 2, 5);
    const y = randomMatrix(n, 2, 6);
    const a = matmulTransB(x, y, m, 2, n);
    const { U, S, V } = jacobiSvd(a, m, n);
    expect(numericalRank(S, 1e-6)).toBe(2);
    for (let i = 2; i < 6; i++) expect(S[i]).toBeLessThan(1e-6 * S[0]);
    expect(orthonormalityError(U, m, 6)).toBeLessThan(1e-12);
    expect(orthonormalityError(V, n, 6)).toBeLessThan(1e-12);
    expect(relativeError(reconstruct(U, S, V, m, n, 6), a)).toBeLessThan(1e-6);
  });

  it('handles the zero matrix', () => {
    const { U, S, V } = jacobiSvd(new Float32Array(12), 4, 3);
    expect(Array.from(S)).toEqual([0, 0, 0]);
    expect(orthonormalityError(U, 4, 3)).toBeLessThan(1e-14);
    expect(orthonormalityError(V, 3, 3)).toBeLessThan(1e-14);
  });
});

describe('orthonormalize', () => {
  it('uses CholeskyQR2 on a well-conditioned matrix: Q orthonormal, QR = A', () => {
    const [m, n] = [200, 12];
    const a = randomMatrix(m, n, 7);
    const { Q, R, method } = orthonormalize(a, m, n);
    expect(method).toBe('cholesky-qr2');
    expect(orthonormalityError(Q, m, n)).toBeLessThan(1e-6);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) expect(R[i * n + j]).toBe(0);
    expect(relativeError(naiveMatmul(Q, R, m, n, n), a)).toBeLessThan(1e-6);
  });

  it('falls back to Householder QR when columns are dependent, still orthonormal', () => {
    const [m, n] = [50, 4];
    const a = randomMatrix(m, n, 8);
    for (let i = 0; i < m; i++) a[i * n + 3] = a[i * n + 0] + 1e-9 * a[i * n + 1];
    const { Q, R, method } = orthonormalize(a, m, n);
    expect(method).toBe('householder');
    expect(orthonormalityError(Q, m, n)).toBeLessThan(1e-6);
    expect(relativeError(naiveMatmul(Q, R, m, n, n), a)).toBeLessThan(1e-6);
  });

  it('returns an orthonormal Q for a zero column', () => {
    const a = randomMatrix(10, 3, 9);
    for (let i = 0; i < 10; i++) a[i * 3 + 1] = 0;
    expect(orthonormalityError(orthonormalize(a, 10, 3).Q, 10, 3)).toBeLessThan(1e-6);
  });
});

describe('gaussianMatrix', () => {
  it('applies Box-Muller to the uniforms at counters 2e and 2e+1 of stream 1', () => {
    const key = { seed: 42, name: 'model.layers.0.mlp.up_proj.weight', modelIndex: 3 };
    const g = gaussianMatrix(3, 5, key);
    for (const e of [0, 7, 14]) {
      const u1 = uniformAt(42, key.name, 3, RNG_STREAM_GAUSSIAN, 2 * e);
      const u2 = uniformAt(42, key.name, 3, RNG_STREAM_GAUSSIAN, 2 * e + 1);
      expect(g[e]).toBe(Math.fround(Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2)));
    }
  });

  it('has mean 0 and variance 1 and depends on seed, name and model index', () => {
    const g = gaussianMatrix(400, 500, { seed: 1, name: 't' });
    let mean = 0;
    let sq = 0;
    for (const x of g) {
      mean += x;
      sq += x * x;
    }
    mean /= g.length;
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(Math.abs(sq / g.length - 1)).toBeLessThan(0.01);
    const first = gaussianMatrix(2, 2, { seed: 1, name: 't' });
    expect(Array.from(first)).toEqual(Array.from(g.subarray(0, 4)));
    expect(gaussianMatrix(2, 2, { seed: 2, name: 't' })[0]).not.toBe(first[0]);
    expect(gaussianMatrix(2, 2, { seed: 1, name: 'u' })[0]).not.toBe(first[0]);
    expect(gaussianMatrix(2, 2, { seed: 1, name: 't', modelIndex: 1 })[0]).not.toBe(first[0]);
  });
});

describe('spectrum helpers', () => {
  it('energyRank picks the smallest rank reaching the share', () => {
    const s = [4, 3]; // energies 16, 9 of 25
    expect(energyRank(s, 0)).toBe(0);
    expect(energyRank(s, 16 / 25)).toBe(1);
    expect(energyRank(s, 0.65)).toBe(2);
    expect(energyRank(s, 1)).toBe(2);
    expect(energyRank([3, 2, 1], 0.9)).toBe(2); // 13/14 = 0.93
    expect(energyRank([3, 2, 1], 0.6)).toBe(1); // 9/14 = 0.64
    // Only the leading values known, total from ||A||_F^2 = 100: even both fall short.
    expect(energyRank(s, 0.5, 100)).toBe(2);
    expect(energyRank([0, 0], 0.5)).toBe(0);
    expect(() => energyRank(s, 1.5)).toThrow(LinalgArgumentError);
  });

  it('energyKept and cumulativeEnergy agree', () => {
    expect(energyKept([4, 3], 1)).toBeCloseTo(0.64, 15);
    expect(energyKept([4, 3], 1, 50)).toBeCloseTo(0.32, 15);
    expect(energyKept([], 0, 0)).toBe(1);
    expect(Array.from(cumulativeEnergy([4, 3]))).toEqual([0.64, 1]);
    expect(numericalRank([5, 1, 1e-9])).toBe(2);
  });
});

describe('rsvd', () => {
  it.each([
    ['geometric 0.8^i', (i: number) => 0.8 ** i, 10],
    ['harmonic 1/(i+1)', (i: number) => 1 / (i + 1), 20],
  ])('%s spectrum: the rank-r error is within 1 percent of the optimum', (_label, sigma, r) => {
    const [m, n] = [300, 160];
    const s = Array.from({ length: 160 }, (_, i) => sigma(i));
    const a = matrixWithSpectrum(m, n, s, 11);
    const exact = jacobiSvd(a, m, n);
    const optimum = Math.sqrt(1 - energyKept(exact.S, r));
    const f = rsvd(a, m, n, r, { seed: 5, name: 'test' });
    expect(f.rank).toBe(r);
    expect(orthonormalityError(f.U, m, r)).toBeLessThan(1e-5);
    expect(orthonormalityError(f.V, n, r)).toBeLessThan(1e-5);
    const err = relativeError(lowRankProduct(f), a);
    expect(err).toBeGreaterThanOrEqual(optimum * (1 - 1e-4));
    expect(err).toBeLessThanOrEqual(optimum * 1.01);
    for (let i = 0; i < r; i++) expect(f.S[i]).toBeCloseTo(exact.S[i], 3);
  });

  it('is exact, without randomness, when rank + oversample covers the smaller side', () => {
    const [m, n] = [20, 9];
    const a = randomMatrix(m, n, 12);
    const f = rsvd(a, m, n, 9, { seed: 1, name: 'a' });
    const g = rsvd(a, m, n, 9, { seed: 2, name: 'b' });
    expect(Array.from(f.S)).toEqual(Array.from(g.S));
    expect(relativeError(lowRankProduct(f), a)).toBeLessThan(1e-6);
    const wide = exactSvd(transpose(a, m, n), n, m);
    for (let i = 0; i < 9; i++) expect(wide.S[i]).toBeCloseTo(f.S[i], 5);
  });

  it('recovers a rank-1 matrix exactly even when asked for more rank', () => {
    const [m, n] = [60, 80];
    const u = randomMatrix(m, 1, 13);
    const v = randomMatrix(n, 1, 14);
    const a = matmulTransB(u, v, m, 1, n);
    const f = rsvd(a, m, n, 5, { seed: 3, name: 'r1', oversample: 2 });
    expect(f.S[1]).toBeLessThan(1e-5 * f.S[0]);
    expect(relativeError(lowRankProduct(f, 1), a)).toBeLessThan(1e-6);
    expect(orthonormalityError(f.U, m, 5)).toBeLessThan(1e-5);
  });

  it('returns empty factors for rank 0 and rejects a negative rank', () => {
    expect(rsvd(new Float32Array(6), 2, 3, 0, { seed: 0, name: '' }).rank).toBe(0);
    expect(() => rsvd(new Float32Array(6), 2, 3, -1, { seed: 0, name: '' })).toThrow(LinalgArgumentError);
  });

  it('handles a 1536x8960 task-vector shape at rank 64', { timeout: 120_000 }, () => {
    const [m, n, r] = [1536, 8960, 64];
    // Rank-64 signal with singular values 0.9^i plus small noise: the rank-64 error is the noise.
    const signalU = orthonormalize(randomMatrix(m, r, 21), m, r).Q;
    const signalV = randomMatrix(n, r, 22);
    for (let i = 0; i < m; i++) for (let j = 0; j < r; j++) signalU[i * r + j] *= 0.9 ** j * 30;
    const a = matmulTransB(signalU, signalV, m, r, n);
    const noise = randomMatrix(m, n, 23);
    for (let i = 0; i < a.length; i++) a[i] += 1e-3 * noise[i];
    const f = rsvd(a, m, n, r, { seed: 9, name: 'model.layers.0.mlp.down_proj.weight' });
    expect(f.U.length).toBe(m * r);
    expect(f.V.length).toBe(n * r);
    const noiseShare = Math.sqrt((1e-6 * frobeniusNormSquared(noise)) / frobeniusNormSquared(a));
    const err = relativeError(lowRankProduct(f), a);
    expect(err).toBeLessThan(noiseShare * 1.01);
  });
});

describe('polarFactor', () => {
  it('gives orthonormal columns P with P^T A symmetric positive definite', () => {
    const [m, n] = [12, 4];
    const a = randomMatrix(m, n, 15);
    const p = polarFactor(a, m, n);
    expect(orthonormalityError(p, m, n)).toBeLessThan(1e-6);
    const h = naiveMatmul(transpose(p, m, n), a, n, m, n);
    for (let i = 0; i < n; i++) {
      expect(h[i * n + i]).toBeGreaterThan(0);
      for (let j = 0; j < i; j++) expect(h[i * n + j]).toBeCloseTo(h[j * n + i], 6);
    }
  });

  it('rotates two unit columns 60 degrees apart to +-45 degrees around their bisector', () => {
    const c = Math.cos(Math.PI / 3);
    const s = Math.sin(Math.PI / 3);
    // columns at 0 and 60 degrees; polar columns at 30 -+ 45 degrees: -15 and 75.
    const p = polarFactor(Float32Array.of(1, c, 0, s), 2, 2);
    const deg = Math.PI / 180;
    expect(
      maxAbsDiff(p, [Math.cos(-15 * deg), Math.cos(75 * deg), Math.sin(-15 * deg), Math.sin(75 * deg)]),
    ).toBeLessThan(1e-6);
    // Wide input: the transpose of the tall case.
    const wide = polarFactor(Float32Array.of(1, 0, c, s), 2, 2);
    expect(maxAbsDiff(wide, transpose(p, 2, 2))).toBeLessThan(1e-6);
  });
});
