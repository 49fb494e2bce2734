/** Reading the recipe file: a regular file, at most MAX_RECIPE_BYTES, UTF-8. */
import { constants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { formatBytes } from '../formats/size';
import { fileKind } from '../node/file-source';
import { fsErrorText } from '../node/fs-errors';
import { RecipeError } from '../recipe';

/** Largest recipe file read; a real one is under 10 kB. */
export const MAX_RECIPE_BYTES = 1_000_000;

export async function readRecipeFile(path: string): Promise<string> {
  const fail = (detail: string) => new RecipeError(detail, { source: path });
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(path);
  } catch (e) {
    throw fail(`cannot read the recipe (${fsErrorText(e)})`);
  }
  // A FIFO or device would block the read or never end.
  if (!st.isFile()) throw fail(`is ${fileKind(st)}, not a recipe file`);
  if (st.size > MAX_RECIPE_BYTES) {
    throw fail(
      `is ${formatBytes(st.size)}, over the ${formatBytes(MAX_RECIPE_BYTES)} limit for a recipe file`,
    );
  }
  let bytes: Uint8Array;
  try {
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const buf = new Uint8Array(MAX_RECIPE_BYTES + 1);
      let n = 0;
      while (n < buf.byteLength) {
        const { bytesRead } = await handle.read(buf, n, buf.byteLength - n, n);
        if (bytesRead === 0) break;
        n += bytesRead;
      }
      if (n > MAX_RECIPE_BYTES)
        throw fail(`grew over the ${formatBytes(MAX_RECIPE_BYTES)} limit while being read`);
      bytes = buf.subarray(0, n);
    } finally {
      await handle.close();
    }
  } catch (e) {
    if (e instanceof RecipeError) throw e;
    throw fail(`cannot read the recipe (${fsErrorText(e)})`);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw fail('is not UTF-8 text');
  }
}
