/**
 * One run at a time per output folder: a merge holds `<parent>/.<OUT_DIR name>.lock` (a
 * node/file-lock.ts lock) from before it cleans up after killed runs until it has committed or
 * given up, so two runs never clean up, write or rename over the same OUT_DIR at once. A second run
 * fails at once, naming the folder and the other run's process. The lock lies beside OUT_DIR, not
 * in it: OUT_DIR is renamed into place and replaced by `--force`. The owner touches it every
 * minute, so a lock whose process cannot be checked (another host) is stale after
 * STALE_LOCK_MS without a touch; one whose process is gone is stale at once.
 */
import { mkdir, realpath } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { describeHolder, type FileLock, tryLock } from '../node/file-lock';
import { fsErrorText } from '../node/fs-errors';

/** How often the owner touches its lock (well inside STALE_LOCK_MS). */
const LOCK_REFRESH_MS = 60_000;

/** Another run holds the output folder's lock. */
export class OutputLockedError extends Error {
  override name = 'OutputLockedError';
}

/** The lock file of output folder `outDir`: beside it, in its parent folder with links resolved. */
export async function outputLockPath(outDir: string): Promise<string> {
  const target = resolve(outDir);
  const parent = await realpath(dirname(target)).catch(() => dirname(target));
  return join(parent, `.${basename(target)}.lock`);
}

/**
 * Takes `outDir`'s lock for this run, creating its parent folder where it is missing; throws
 * OutputLockedError when another live run holds it. A stale lock is taken over, said to `log`.
 */
export async function lockOutputDir(outDir: string, log: (line: string) => void): Promise<FileLock> {
  await mkdir(dirname(resolve(outDir)), { recursive: true }).catch((e) => {
    throw new OutputLockedError(`${outDir}: cannot create the folder for its lock (${fsErrorText(e)})`);
  });
  const path = await outputLockPath(outDir);
  const found = await tryLock(path, path, (stale) =>
    log(`taking over the output folder's lock ${path}: ${stale}`),
  ).catch((e) => {
    throw new OutputLockedError(`${outDir}: cannot lock the output folder (${fsErrorText(e)})`);
  });
  if ('release' in found) {
    found.keepFresh(LOCK_REFRESH_MS);
    return found;
  }
  throw new OutputLockedError(
    `${outDir}: another l2s-merge run is writing this output folder (${describeHolder(found)}); ` +
      `wait for it to finish or choose another OUT_DIR (its lock is ${path})`,
  );
}
