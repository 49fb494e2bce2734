/**
 * Before a merge starts: clean up after killed runs for the same OUT_DIR, then refuse an OUT_DIR
 * that the run must never write or replace (see checkOutputDir), knowing the input folders.
 */
import { realpath } from 'node:fs/promises';
import { checkOutputDir, recoverOutputDir } from '../node/output-dir';
import { type MergeRecipe, RecipeError, referencedModels } from '../recipe';

export class DuplicateModelError extends RecipeError {
  override name = 'DuplicateModelError';
}

export async function guardOutputDir(options: {
  outDir: string;
  force: boolean;
  recipe: MergeRecipe;
  recipeFile: string;
  locate(reference: string): Promise<{ dir: string }>;
  log(line: string): void;
}): Promise<void> {
  const { outDir, force, recipe, recipeFile } = options;
  if (outDir.trim() !== '') await recoverOutputDir(outDir, options.log);
  const inputs: string[] = [];
  const byFolder = new Map<string, string>();
  for (const reference of referencedModels(recipe)) {
    const { dir } = await options.locate(reference);
    const real = await realpath(dir);
    const earlier = byFolder.get(real);
    // Two spellings of one folder would merge a model with itself under two model indices.
    if (earlier !== undefined && earlier !== reference) {
      throw new DuplicateModelError(
        `${earlier} and ${reference} are the same folder (${real}); name it once`,
        {
          source: recipeFile,
        },
      );
    }
    byFolder.set(real, reference);
    inputs.push(dir);
  }
  await checkOutputDir(outDir, force, { inputs, recipeFile });
}
