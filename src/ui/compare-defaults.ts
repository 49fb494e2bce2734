/**
 * Which models Compare offers first, read from the current recipe as the paper sets a merge up: the
 * base model is System 1 (the quick thinker), the model merged into it is System 2 (the slow thinker),
 * and the merge output sits between them. With several merged models, System 2 is the one with the
 * largest scalar `weight` (the last of equals), as in the demo recipe where System 2 has weight 1.
 */
import { parseRecipe } from '../recipe';
import type { ParameterSetting } from '../recipe/recipe';

export interface CompareDefaults {
  system2?: string;
  system1?: string;
}

function scalarWeight(setting: ParameterSetting | undefined): number {
  if (typeof setting === 'number') return setting;
  if (typeof setting === 'boolean') return setting ? 1 : 0;
  // A gradient or a filtered list: its mean, enough to rank models by how much of them is merged.
  if (Array.isArray(setting) && setting.every((v) => typeof v === 'number')) {
    const values = setting as readonly number[];
    return values.length ? values.reduce((a, b) => a + b, 0) / values.length : 1;
  }
  return 1;
}

/** System 1 and System 2 of `recipeText`, each only when `libraryNames` has it. */
export function compareDefaults(recipeText: string, libraryNames: readonly string[]): CompareDefaults {
  let recipe: ReturnType<typeof parseRecipe>;
  try {
    recipe = parseRecipe(recipeText, 'recipe');
  } catch {
    return {};
  }
  const inLibrary = new Set(libraryNames);
  const base = recipe.baseModel;
  let system2: string | undefined;
  let best = Number.NEGATIVE_INFINITY;
  for (const entry of recipe.models) {
    if (entry.model === base || !inLibrary.has(entry.model)) continue;
    const w = scalarWeight(entry.parameters.weight);
    if (w >= best) {
      best = w;
      system2 = entry.model;
    }
  }
  return { system1: base !== undefined && inLibrary.has(base) ? base : undefined, system2 };
}
