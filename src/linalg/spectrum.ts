/**
 * Spectral energy: the share of ||A||_F^2 = sum_i sigma_i^2 that the leading singular values hold.
 * All sums are f64, in index order.
 */

import { LinalgArgumentError } from './errors.js';

/** Relative slack when comparing cumulative energy to a target, so 9/25 of [3, 4] picks rank 1. */
const ENERGY_SLACK = 1e-12;

/** Sum of squares of all values (||A||_F^2), in f64. */
export function frobeniusNormSquared(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return s;
}

/** Sum of squares of the first `rank` singular values. */
export function leadingEnergy(s: ArrayLike<number>, rank: number): number {
  let e = 0;
  const r = Math.min(rank, s.length);
  for (let i = 0; i < r; i++) e += s[i] * s[i];
  return e;
}

/**
 * Share of the total energy kept by the first `rank` singular values, in [0, 1]. `total` defaults to
 * the energy of `s` itself; pass ||A||_F^2 when `s` holds only the leading values. An all-zero matrix
 * loses nothing, so its share is 1.
 */
export function energyKept(s: ArrayLike<number>, rank: number, total = leadingEnergy(s, s.length)): number {
  if (total <= 0) return 1;
  return Math.min(1, leadingEnergy(s, rank) / total);
}

/** Cumulative energy shares: entry i is the share kept by the first i + 1 singular values. */
export function cumulativeEnergy(s: ArrayLike<number>, total = leadingEnergy(s, s.length)): Float64Array {
  const out = new Float64Array(s.length);
  let e = 0;
  for (let i = 0; i < s.length; i++) {
    e += s[i] * s[i];
    out[i] = total > 0 ? Math.min(1, e / total) : 1;
  }
  return out;
}

/**
 * Smallest rank r such that the first r singular values (descending) keep at least `energy` of the
 * total sum of squares. `total` defaults to the energy of `s`; when it is larger (s holds only the
 * leading values of a bigger spectrum) and even all of `s` falls short, the result is s.length.
 * energy 0 gives 0; an all-zero spectrum gives 0.
 */
export function energyRank(s: ArrayLike<number>, energy: number, total = leadingEnergy(s, s.length)): number {
  if (!(energy >= 0 && energy <= 1)) {
    throw new LinalgArgumentError(`energy must be a fraction in [0, 1], got ${energy}`);
  }
  if (energy === 0 || total <= 0) return 0;
  const target = energy * total * (1 - ENERGY_SLACK);
  let e = 0;
  for (let i = 0; i < s.length; i++) {
    e += s[i] * s[i];
    if (e >= target) return i + 1;
  }
  return s.length;
}

/** Numerical rank: count of singular values above `relTol` times the largest. */
export function numericalRank(s: ArrayLike<number>, relTol = 1e-6): number {
  if (s.length === 0) return 0;
  let max = 0;
  for (let i = 0; i < s.length; i++) max = Math.max(max, s[i]);
  let r = 0;
  for (let i = 0; i < s.length; i++) if (s[i] > relTol * max) r++;
  return r;
}
