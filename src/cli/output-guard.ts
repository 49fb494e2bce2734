/**
 * Before a merge starts: lock OUT_DIR for this run (output-lock.ts), clean up after killed runs for
 * it, then refuse an OUT_DIR that the run must never write or replace (see checkOutputDir), knowing
 * the input folders.
 */
import { realpath } from 'node:fs/promises';
import type { FileLock } from '../node/file-lock';
import { checkOutputDir, protectedReason, recoverOutputDir } from '../node/output-dir';
import { type MergeRecipe, RecipeError, referencedModels } from '../recipe';
import { lockOutputDir } from './output-lock';

export class DuplicateModelError extends RecipeError {
  override name = 'DuplicateModelError';
}

/** Returns OUT_DIR's lock, which the caller releases once the run has ended. */
export async function guardOutputDir(options: {
  outDir: string;
  force: boolean;
  recipe: MergeRecipe;
  recipeFile: string;
  locate(reference: string): Promise<{ dir: string }>;
  log(line: string): void;
}): Promise<FileLock | undefined> {
  const { outDir, recipeFile } = options;
  // A folder that is never written gets no lock beside it: checkOutputDir refuses it below.
  const lock =
    (await protectedReason(outDir, { recipeFile })) === undefined
      ? await lockOutputDir(outDir, options.log)
      : undefined;
  try {
    if (lock) await recoverOutputDir(outDir, options.log);
    await checkInputsAndOutput(options);
    return lock;
  } catch (e) {
    await lock?.release();
    throw e;
  }
}

async function checkInputsAndOutput(options: {
  outDir: string;
  force: boolean;
  recipe: MergeRecipe;
  recipeFile: string;
  locate(reference: string): Promise<{ dir: string }>;
}): Promise<void> {
  const { outDir, force, recipe, recipeFile } = options;
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
