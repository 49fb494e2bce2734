/**
 * The heavy operations of the SVD family behind one interface, so that each method's algorithm is
 * written once and runs on the CPU (src/linalg, synchronous) or on the GPU (src/gpu/rsvd.ts,
 * asynchronous).
 *
 * A method is written as a generator of its steps: each heavy operation is handed to the driver with
 * `yield* step(ops.rsvd(...))`, and the driver resumes the method with the result. `runSync` drives
 * it with operations that return values (the CPU `merge`); `runAsync` awaits operations that return
 * promises (the GPU backend). Everything between the steps (parameters, rank choices, reports, the
 * f64 sums) is the same code on both.
 */

import {
  type LowRankFactors,
  lowRankProduct,
  polarFactor,
  type RsvdOptions,
  rsvd,
} from '../../linalg/index.js';

export type MaybePromise<T> = T | Promise<T>;

export interface LowRankOps {
  /** Truncated SVD with the contract of src/linalg/rsvd.ts's `rsvd`. */
  rsvd(
    a: Float32Array,
    rows: number,
    cols: number,
    rank: number,
    options: RsvdOptions,
  ): MaybePromise<LowRankFactors>;
  /** U[:, :rank] diag(S[:rank] * scale) V[:, :rank]^T, m x n. */
  lowRankProduct(f: LowRankFactors, rank?: number, scale?: number): MaybePromise<Float32Array>;
  /** The orthogonal polar factor of an m x n matrix. */
  polarFactor(a: Float32Array, rows: number, cols: number): MaybePromise<Float32Array>;
}

/** The TS reference operations. */
export const cpuLowRankOps: LowRankOps = { rsvd, lowRankProduct, polarFactor };

/** A method's steps: yields the work of each heavy operation, returns the merged tensor. */
export type MethodSteps<T = Float32Array> = Generator<unknown, T, unknown>;

/** Hands `work` to the driver and resumes with its result. */
export function* step<T>(work: MaybePromise<T>): Generator<unknown, T, unknown> {
  return (yield work) as T;
}

/** Runs steps whose operations return values; a promise means the operations were asynchronous. */
export function runSync<T>(steps: MethodSteps<T>): T {
  let next = steps.next();
  while (!next.done) {
    if (next.value instanceof Promise) {
      throw new TypeError('runSync was given asynchronous operations; use runAsync');
    }
    next = steps.next(next.value);
  }
  return next.value;
}

/** Runs steps, awaiting each operation; a failed operation is thrown into the method. */
export async function runAsync<T>(steps: MethodSteps<T>): Promise<T> {
  let next = steps.next();
  while (!next.done) {
    let value: unknown;
    try {
      value = await next.value;
    } catch (e) {
      next = steps.throw(e);
      continue;
    }
    next = steps.next(value);
  }
  return next.value;
}
