/**
 * A mergekit recipe (the `models:` form of mergekit's MergeConfiguration) as the engine uses it.
 * Shapes follow mergekit/config.py so recipes move freely between the two tools.
 */

import type { FloatDType } from '../formats/dtype';
import type { AimSettings } from './aim';

/** One value for every tensor. mergekit reads booleans as 1.0 / 0.0; they are kept as written. */
export type ScalarSetting = number | boolean;

/** Values spread evenly over the layers and interpolated linearly in between (mergekit's gradient). */
export type GradientSetting = readonly number[];

/** mergekit's ConditionalParameter: applies when `filter` is a substring of the tensor name. */
export interface ConditionalSetting {
  /** Absent or `*` matches every tensor. */
  readonly filter?: string;
  readonly value: ScalarSetting | GradientSetting;
}

export type ParameterSetting = ScalarSetting | GradientSetting | readonly ConditionalSetting[];

export type ParameterBlock = Readonly<Record<string, ParameterSetting>>;

export interface RecipeModel {
  /** A local folder (relative to the recipe) or a hub repo id, as written in the recipe. */
  readonly model: string;
  readonly parameters: ParameterBlock;
}

export interface MergeRecipe {
  readonly mergeMethod: string;
  readonly baseModel?: string;
  readonly models: readonly RecipeModel[];
  /** The top-level `parameters:` block: the method's global parameters, and fallbacks for per-model ones. */
  readonly parameters: ParameterBlock;
  /** Inputs are cast to this dtype before merging (mergekit's `dtype`). */
  readonly dtype?: FloatDType;
  /** dtype of the written tensors; mergekit writes the merge dtype when absent. */
  readonly outDtype?: FloatDType;
  /** `base` or a model reference. */
  readonly tokenizerSource?: string;
  /** Activation-informed merging applied to the method's result (l2s-merge's `aim:` block). */
  readonly aim?: AimSettings;
}

/** A recipe that cannot be read or merged as written. */
export class RecipeError extends Error {
  override name = 'RecipeError';
  /** The recipe file (or the name the caller gave it). */
  readonly source: string;
  /** YAML path at fault, e.g. `models[0].parameters.weight`; empty for the whole document. */
  readonly path: string;
  /** 1-based line in the source, when known. */
  readonly line: number | undefined;

  constructor(detail: string, where: { source: string; path?: string; line?: number }) {
    const path = where.path ?? '';
    const location = where.line === undefined ? where.source : `${where.source}:${where.line}`;
    super(`${location}: ${path ? `${path}: ` : ''}${detail}`);
    this.source = where.source;
    this.path = path;
    this.line = where.line;
  }
}

export type YamlPath = readonly (string | number)[];

/** `['models', 0, 'parameters', 'weight']` -> `models[0].parameters.weight`. */
export function formatPath(path: YamlPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${part}` : part;
  }
  return out;
}

/** Where a parsed recipe came from, so later checks can name the file and line at fault. */
export interface RecipeOrigin {
  readonly source: string;
  lineOf(path: YamlPath): number | undefined;
}

const origins = new WeakMap<MergeRecipe, RecipeOrigin>();

export function recordOrigin(recipe: MergeRecipe, origin: RecipeOrigin): void {
  origins.set(recipe, origin);
}

/** A RecipeError located in `recipe`'s source (file name and line) when it was parsed from text. */
export function recipeError(
  recipe: MergeRecipe,
  path: YamlPath,
  detail: string,
  source?: string,
): RecipeError {
  const origin = origins.get(recipe);
  return new RecipeError(detail, {
    source: source ?? origin?.source ?? 'recipe',
    path: formatPath(path),
    line: origin?.lineOf(path),
  });
}
