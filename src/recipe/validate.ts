/**
 * Checks of a recipe against its merge method's parameter list, before any tensor is read.
 * mergekit reads only the parameters a method asks for and ignores the rest; here a misspelt or
 * misplaced parameter is an error, since ignoring it would silently change the result.
 */

import type { MergeMethod, ParamSpec } from '../methods/types';
import { mergeInputModels, normalizeModelRef } from './model-ref';
import {
  type MergeRecipe,
  type ParameterBlock,
  type ParameterSetting,
  recipeError,
  type YamlPath,
} from './recipe';

function names(specs: readonly ParamSpec[]): string {
  return specs.length ? specs.map((s) => s.name).join(', ') : 'none';
}

/** Every scalar written in a setting, with its path, for type checks. */
function* leaves(setting: ParameterSetting, path: YamlPath): Generator<[YamlPath, number | boolean]> {
  if (typeof setting === 'number' || typeof setting === 'boolean') {
    yield [path, setting];
    return;
  }
  for (let i = 0; i < setting.length; i++) {
    const entry = setting[i];
    if (typeof entry === 'number') yield [[...path, i], entry];
    else yield* leaves(entry.value, [...path, i, 'value']);
  }
}

/** Throws a RecipeError naming the file, YAML path and line at fault when `recipe` cannot run with `method`. */
export function validateRecipe(recipe: MergeRecipe, method: MergeMethod, source?: string): void {
  function fail(path: YamlPath, detail: string): never {
    throw recipeError(recipe, path, detail, source);
  }
  if (recipe.mergeMethod !== method.name) {
    fail(
      ['merge_method'],
      `is ${recipe.mergeMethod}, but the recipe is being checked against ${method.name}`,
    );
  }
  if (method.baseModel === 'required' && recipe.baseModel === undefined) {
    fail([], `${method.name} needs base_model: the model the task vectors are taken against`);
  }
  if (method.baseModel === 'unused' && recipe.baseModel !== undefined) {
    fail(['base_model'], `${method.name} does not use base_model; list that model under models: instead`);
  }
  if (recipe.models.length === 0) fail(['models'], 'list at least one model to merge');
  const seen = new Set<string>();
  recipe.models.forEach((entry, i) => {
    if (seen.has(normalizeModelRef(entry.model)))
      fail(['models', i, 'model'], `model ${entry.model} is listed more than once`);
    seen.add(normalizeModelRef(entry.model));
  });

  if (recipe.aim !== undefined) {
    // AIM pulls the merged weights back toward the base model's, where the base's activations are large.
    if (method.baseModel === 'unused')
      fail(
        ['aim'],
        `AIM needs a base model, and ${method.name} takes none; use a method with base_model (e.g. ties)`,
      );
    if (recipe.baseModel === undefined)
      fail(
        ['aim'],
        'AIM needs base_model: the model (System 1) whose activations are measured and whose weights the merge is relaxed toward',
      );
  }

  const inputs = mergeInputModels(recipe);
  // The method contract has no input-count field; slerp is the one method with a fixed count.
  if (method.name === 'slerp' && (inputs.length !== 2 || recipe.baseModel === undefined)) {
    fail(
      ['models'],
      `slerp interpolates exactly two models, one of them base_model; this recipe has ${inputs.length}`,
    );
  }

  const globalByName = new Map(method.globalParams.map((s) => [s.name, s]));
  const modelByName = new Map(method.modelParams.map((s) => [s.name, s]));
  const accepted = `${method.name} takes ${names(method.globalParams)} under parameters:, and ${names(method.modelParams)} per model`;

  const checkTypes = (spec: ParamSpec, setting: ParameterSetting, path: YamlPath) => {
    if (spec.type !== 'number') return; // mergekit reads a number as a boolean by its truth
    for (const [leafPath, value] of leaves(setting, path)) {
      if (typeof value === 'boolean') fail(leafPath, `${spec.name} must be a number, not ${value}`);
    }
  };

  const checkBlock = (block: ParameterBlock, path: YamlPath, perModel: boolean) => {
    for (const [name, setting] of Object.entries(block)) {
      const spec = perModel ? modelByName.get(name) : (globalByName.get(name) ?? modelByName.get(name));
      if (!spec) {
        if (perModel && globalByName.has(name)) {
          fail(
            [...path, name],
            `${name} is a global parameter of ${method.name}; move it to the top-level parameters:`,
          );
        }
        fail([...path, name], `unknown parameter ${name}; ${accepted}`);
      }
      checkTypes(spec, setting, [...path, name]);
    }
  };
  checkBlock(recipe.parameters, ['parameters'], false);
  recipe.models.forEach((entry, i) => {
    checkBlock(entry.parameters, ['models', i, 'parameters'], true);
  });

  for (const spec of method.globalParams) {
    if (spec.required && !(spec.name in recipe.parameters)) {
      fail([], `${method.name} needs parameter ${spec.name} (${spec.doc}) under parameters:`);
    }
  }
  // mergekit asks required per-model parameters of every input except the base model.
  for (const model of inputs) {
    if (model === recipe.baseModel) continue;
    const index = recipe.models.findIndex((entry) => entry.model === model);
    const own = recipe.models[index].parameters;
    for (const spec of method.modelParams) {
      if (spec.required && !(spec.name in own) && !(spec.name in recipe.parameters)) {
        fail(
          ['models', index],
          `${method.name} needs parameter ${spec.name} (${spec.doc}) for model ${model}, ` +
            'in its parameters: or the top-level parameters:',
        );
      }
    }
  }
}
