/**
 * The merge-method registry: mergekit's `merge_method` names (and the randomized-SVD family's) to their
 * implementations. The engine, the recipe checks and the UI all look methods up here.
 */
import { GeneralizedTaskArithmetic, TASK_ARITHMETIC_VARIANTS } from './generalized-task-arithmetic';
import { LinearMerge } from './linear';
import { ModelStockMerge } from './model-stock';
import { SlerpMerge } from './slerp';
import { SVD_METHODS } from './svd/index';
import { type MergeMethod, MergeMethodError } from './types';

const ALL_METHODS: readonly MergeMethod[] = [
  new LinearMerge(),
  new SlerpMerge(),
  new ModelStockMerge(),
  ...TASK_ARITHMETIC_VARIANTS.map((variant) => new GeneralizedTaskArithmetic(variant)),
  ...SVD_METHODS,
];

export const METHODS: ReadonlyMap<string, MergeMethod> = new Map(
  ALL_METHODS.map((method) => [method.name, method]),
);

/** The method registered under mergekit's name `name`; throws MergeMethodError listing the known names. */
export function getMethod(name: string): MergeMethod {
  const method = METHODS.get(name);
  if (!method) {
    throw new MergeMethodError(
      `Unknown merge_method "${name}". Known methods: ${[...METHODS.keys()].join(', ')}`,
    );
  }
  return method;
}

export type { MergeInputs, MergeMethod, ModelTensor, ParamSpec, ResolvedParams } from './types';
export { MergeMethodError } from './types';
