/**
 * What stands between a recipe text and a merge, as the page shows it: a YAML syntax error, a recipe
 * its method refuses (src/recipe/validate.ts, the same check the engine makes), a value outside the
 * range a user would mean, or models that are not in the library yet. The recipe editor and the
 * Merge button read the same answer, so the button never offers a merge the editor flags.
 */
import { METHODS } from '../methods';
import type { MergeMethod } from '../methods/types';
import {
  type MergeRecipe,
  type ParameterSetting,
  parseHubModelRef,
  parseRecipe,
  validateRecipe,
} from '../recipe';
import { recipeError, type YamlPath } from '../recipe/recipe';

export interface RecipeCheck {
  /** The parsed recipe; undefined when the text is empty or not valid YAML for a recipe. */
  recipe?: MergeRecipe;
  /** The parser's message (file:line: what) when the YAML cannot be read. */
  parseError?: string;
  /** The first thing that keeps the recipe from merging (validation, a range, a missing model). */
  error?: string;
  /** Models the recipe names that the library does not hold. */
  missingModels: string[];
  /**
   * Of those, the ones that name a hub repo (`owner/name`, or `owner/name@revision` as mergekit
   * writes a branch, tag or commit): offered to stream, and the plain ids to download.
   */
  missingHubIds: string[];
}

/**
 * Ranges mergekit's semantics give a parameter, or what a user would mean by it: a density or an
 * interpolation factor outside [0, 1] is a typo (mergekit would silently clamp or extrapolate).
 */
const PARAM_RANGES: Readonly<Record<string, { min: number; max: number; meaning: string }>> = {
  density: { min: 0, max: 1, meaning: 'the share of the task vector kept' },
  gamma: { min: 0, max: 1, meaning: 'the share removed as outliers' },
  epsilon: { min: 0, max: 1, meaning: 'the spread of keep probabilities' },
  t: { min: 0, max: 1, meaning: '0 is the base model, 1 the other model' },
  rank_fraction: { min: 0, max: 1, meaning: 'the share of the rank kept' },
  energy: { min: 0, max: 1, meaning: 'the share of the spectrum kept' },
};

function* numbers(setting: ParameterSetting, path: YamlPath): Generator<[YamlPath, number]> {
  if (typeof setting === 'number') {
    yield [path, setting];
    return;
  }
  if (typeof setting === 'boolean') return;
  for (let i = 0; i < setting.length; i++) {
    const entry = setting[i];
    if (typeof entry === 'number') yield [[...path, i], entry];
    else yield* numbers(entry.value, [...path, i, 'value']);
  }
}

/** The first parameter value outside its range, as a message naming its place in the YAML. */
export function rangeProblem(recipe: MergeRecipe, method: MergeMethod): string | undefined {
  const blocks: [YamlPath, Readonly<Record<string, ParameterSetting>>][] = [
    [['parameters'], recipe.parameters],
    ...recipe.models.map((m, i): [YamlPath, Readonly<Record<string, ParameterSetting>>] => [
      ['models', i, 'parameters'],
      m.parameters,
    ]),
  ];
  const known = new Set([...method.globalParams, ...method.modelParams].map((p) => p.name));
  for (const [path, block] of blocks) {
    for (const [name, setting] of Object.entries(block)) {
      if (!known.has(name)) continue;
      for (const [at, value] of numbers(setting, [...path, name])) {
        if (!Number.isFinite(value))
          return recipeError(recipe, at, `${name} must be a finite number`).message;
        const range = PARAM_RANGES[name];
        if (range && (value < range.min || value > range.max)) {
          return recipeError(
            recipe,
            at,
            `${name} ${value} is outside [${range.min}, ${range.max}] (${range.meaning})`,
          ).message;
        }
      }
    }
  }
  return undefined;
}

export function checkRecipe(text: string, libraryNames: readonly string[]): RecipeCheck {
  const none: RecipeCheck = { missingModels: [], missingHubIds: [] };
  if (!text.trim()) return none;
  let recipe: MergeRecipe;
  try {
    recipe = parseRecipe(text, 'recipe');
  } catch (e) {
    return { ...none, parseError: (e as Error).message };
  }
  const method = METHODS.get(recipe.mergeMethod);
  if (!method) {
    return {
      ...none,
      recipe,
      error: `merge_method ${recipe.mergeMethod} is not one of: ${[...METHODS.keys()].join(', ')}`,
    };
  }
  const library = new Set(libraryNames);
  const missingModels = [recipe.baseModel, ...recipe.models.map((m) => m.model)].filter(
    (name): name is string => name !== undefined && name !== '' && !library.has(name),
  );
  const missingHubIds = missingModels.filter((name) => parseHubModelRef(name) !== undefined);
  let error: string | undefined;
  try {
    validateRecipe(recipe, method, 'recipe');
    error = rangeProblem(recipe, method);
  } catch (e) {
    error = (e as Error).message;
  }
  if (!error && missingModels.length) error = `not in the library yet: ${missingModels.join(', ')}`;
  return { recipe, error, missingModels, missingHubIds };
}
