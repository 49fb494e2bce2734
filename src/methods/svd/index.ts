/** The SVD family of merge methods. */

import type { MergeMethod } from '../types.js';
import type { LowRankMergeMethod } from './common.js';
import { lore } from './lore.js';
import { lowrankTaskArithmetic } from './lowrank-task-arithmetic.js';
import { tsv } from './tsv.js';
import { twin } from './twin.js';

export type { LowRankMergeMethod } from './common.js';
export {
  cpuLowRankOps,
  type LowRankOps,
  type MaybePromise,
  type MethodSteps,
  runAsync,
  runSync,
  step,
} from './ops.js';
export { lore, lowrankTaskArithmetic, tsv, twin };

const LOW_RANK_METHODS: readonly LowRankMergeMethod[] = [lowrankTaskArithmetic, tsv, lore, twin];

export const SVD_METHODS: readonly MergeMethod[] = LOW_RANK_METHODS;

/** Whether `method` is one of the SVD family (its steps can run on other operations than the CPU's). */
export function isLowRankMethod(method: MergeMethod): method is LowRankMergeMethod {
  return LOW_RANK_METHODS.some((m) => m === method);
}
