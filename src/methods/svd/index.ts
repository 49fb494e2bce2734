/** The SVD family of merge methods. */

import type { MergeMethod } from '../types.js';
import { lore } from './lore.js';
import { lowrankTaskArithmetic } from './lowrank-task-arithmetic.js';
import { tsv } from './tsv.js';
import { twin } from './twin.js';

export { lore, lowrankTaskArithmetic, tsv, twin };

export const SVD_METHODS: readonly MergeMethod[] = [lowrankTaskArithmetic, tsv, lore, twin];
