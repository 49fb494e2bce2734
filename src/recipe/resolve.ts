/**
 * Per-tensor parameter values, resolved as mergekit's planner and ConfigReader do
 * (mergekit/plan.py, mergekit/config.py: evaluate_setting, ConfigReader.parameter).
 */

import type { MergeMethod, ParamSpec, ParamValue, ResolvedParams } from '../methods/types';
import { mergeInputModels } from './model-ref';
import {
  formatPath,
  type MergeRecipe,
  type ParameterSetting,
  RecipeError,
  recipeError,
  type ScalarSetting,
} from './recipe';

/** Layer tensors as transformers names them, `model.layers.{i}.…`. */
const LAYER_TENSOR = /(?:^|\.)layers\.(\d+)\./;

/**
 * The value of one setting for one tensor at layer position `t` in [0, 1]:
 * a scalar as is; a gradient interpolated linearly between its evenly spaced points; a condition
 * list by its first entry whose `filter` is a substring of the tensor name (absent or `*` match all).
 * undefined when no condition matches: mergekit then falls back to the next parameter block.
 */
export function resolveSetting(
  setting: ParameterSetting,
  tensorName: string,
  t: number,
): ScalarSetting | undefined {
  if (typeof setting === 'number' || typeof setting === 'boolean') return setting;
  if (setting.length === 0) throw new RecipeError('an empty list has no value', { source: 'recipe' });
  if (isGradient(setting)) {
    // Same operations, in the same order and precision, as mergekit's evaluate_setting.
    const scaled = t * (setting.length - 1);
    const i0 = Math.trunc(scaled);
    const i1 = Math.min(setting.length - 1, i0 + 1);
    const frac = scaled - i0;
    return (1 - frac) * setting[i0] + frac * setting[i1];
  }
  for (const condition of setting) {
    const { filter } = condition;
    if (filter === undefined || filter === '*' || (tensorName !== '' && tensorName.includes(filter))) {
      return resolveSetting(condition.value, tensorName, t);
    }
  }
  return undefined;
}

function isGradient(setting: ParameterSetting): setting is readonly number[] {
  return Array.isArray(setting) && setting.every((entry) => typeof entry === 'number');
}

/**
 * The `t` mergekit evaluates gradients at for a tensor of a `models:` merge: layer i of n gets
 * i / (n - 1) (1 when n is 1); every other tensor (embeddings, final norm, lm_head) gets 0.
 */
export function tensorPosition(tensorName: string, numLayers: number): number {
  const match = LAYER_TENSOR.exec(tensorName);
  if (!match) return 0;
  const layer = Number(match[1]);
  if (layer >= numLayers) {
    throw new RangeError(`tensor ${tensorName} is in layer ${layer}, but the model has ${numLayers} layers`);
  }
  return numLayers > 1 ? layer / (numLayers - 1) : 1;
}

export interface TensorParams {
  /** The method's global parameters. */
  readonly global: ResolvedParams;
  /** Per-model parameters of every merge input (see mergeInputModels), keyed by model reference. */
  readonly perModel: Map<string, ResolvedParams>;
}

/**
 * Every parameter of `method` for one tensor, defaults filled in. Per-model parameters fall back
 * from the model's own block to the top-level `parameters:` block, then to the default, as in
 * mergekit; global parameters are read from the top-level block only. A required per-model
 * parameter may be missing for the base model (mergekit does not ask it), and is then left out.
 */
export function resolveParams(
  recipe: MergeRecipe,
  method: MergeMethod,
  tensorName: string,
  numLayers: number,
  source?: string,
): TensorParams {
  const t = tensorPosition(tensorName, numLayers);
  const at = (path: (string | number)[], detail: string) => recipeError(recipe, path, detail, source);

  const resolveOne = (
    spec: ParamSpec,
    modelIndex: number | undefined,
    isBase: boolean,
  ): ParamValue | undefined => {
    const candidates: [(string | number)[], ParameterSetting | undefined][] = [];
    if (modelIndex !== undefined) {
      const own = recipe.models[modelIndex].parameters;
      candidates.push([['models', modelIndex, 'parameters', spec.name], own[spec.name]]);
    }
    candidates.push([['parameters', spec.name], recipe.parameters[spec.name]]);
    let unmatched: string | undefined;
    for (const [path, setting] of candidates) {
      if (setting === undefined) continue;
      const value = resolveSetting(setting, tensorName, t);
      if (value === undefined) {
        unmatched ??= formatPath(path);
        continue;
      }
      return checkType(spec, value, path);
    }
    if (spec.required && !isBase) {
      const owner = modelIndex === undefined ? '' : ` of model ${recipe.models[modelIndex].model}`;
      const why = unmatched ? ` (no condition of ${unmatched} matches this tensor)` : '';
      throw at(
        modelIndex === undefined ? ['parameters'] : ['models', modelIndex],
        `${method.name} needs parameter ${spec.name}${owner} for tensor ${tensorName}${why}`,
      );
    }
    return spec.default;
  };

  const checkType = (spec: ParamSpec, value: ScalarSetting, path: (string | number)[]): ParamValue => {
    if (spec.type === 'boolean') return typeof value === 'boolean' ? value : value !== 0;
    if (typeof value !== 'number') {
      throw at(path, `parameter ${spec.name} must be a number, not ${value}, for tensor ${tensorName}`);
    }
    return value;
  };

  const global: Record<string, ParamValue> = {};
  for (const spec of method.globalParams) {
    const value = resolveOne(spec, undefined, false);
    if (value !== undefined) global[spec.name] = value;
  }

  const perModel = new Map<string, ResolvedParams>();
  for (const model of mergeInputModels(recipe)) {
    const index = recipe.models.findIndex((entry) => entry.model === model);
    const params: Record<string, ParamValue> = {};
    for (const spec of method.modelParams) {
      const value = resolveOne(spec, index >= 0 ? index : undefined, model === recipe.baseModel);
      if (value !== undefined) params[spec.name] = value;
    }
    perModel.set(model, params);
  }
  return { global, perModel };
}
