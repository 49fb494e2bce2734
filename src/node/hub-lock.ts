/**
 * One download per blob across processes, in the place huggingface_hub keeps its locks
 * (file_download.py: `<cache>/.locks/models--org--name/<etag>.lock`, the etag being the blob name).
 *
 * The lock is a file-lock.ts lock, which the owner removes when its transfer ends (finished or
 * failed). A process that finds it waits, polling, and then finds the blob (the other download
 * finished) or takes the lock itself (it failed; the `.incomplete` is then resumed). A lock is
 * stale, and taken over, as file-lock.ts says, the blob's `.incomplete` being the sign of progress
 * (a live transfer grows it all the time).
 *
 * huggingface_hub locks with flock() on the same path and leaves the (empty) file behind: such a
 * lock carries no pid, so only the second rule applies to it. flock() does not see our lock, so a
 * Python download running at the same moment is not kept out; the blob's hash check still keeps a
 * mixed-up transfer out of the cache.
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createLock, describeHolder, type FileLock, readLock, staleReason, takeOver } from './file-lock';

/** How often a waiting process looks at the lock, the `.incomplete` and the blob. */
export const LOCK_POLL_MS = 200;

/** `<cache>/.locks/<repo folder>/<blob>.lock`, as huggingface_hub names it. */
export function blobLockPath(cacheDir: string, repoFolder: string, blobName: string): string {
  return join(cacheDir, '.locks', repoFolder, `${blobName}.lock`);
}

/** A blob's download lock. */
export type BlobLock = FileLock;

export interface BlobLockOptions {
  /** `org/name@revision/file`, for the messages. */
  file: string;
  incomplete: string;
  blob: string;
  signal?: AbortSignal;
  notice: (line: string) => void;
  /** While waiting: the size of the other process's `.incomplete`. */
  onWait?: (incompleteBytes: number) => void;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const abort = () => {
      clearTimeout(timer);
      const error = new Error('cancelled');
      error.name = 'AbortError';
      reject(error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', abort);
      resolve();
    }, ms);
    if (signal?.aborted) abort();
    else signal?.addEventListener('abort', abort, { once: true });
  });
}

/**
 * Takes the blob's lock, waiting while another process holds it. Resolves with the lock, or with
 * 'done' when the blob is there (the other download finished; the blob is looked for again once
 * the lock is taken, since it may have been renamed into place just before the lock was free).
 */
export async function acquireBlobLock(path: string, options: BlobLockOptions): Promise<BlobLock | 'done'> {
  await mkdir(dirname(path), { recursive: true });
  let waited = false;
  const finished = async () => {
    if (!(await stat(options.blob).catch(() => undefined))) return false;
    if (waited) options.notice(`${options.file}: downloaded by the other process; using it`);
    return true;
  };
  for (;;) {
    if (options.signal?.aborted) await sleep(0, options.signal);
    if (await finished()) return 'done';
    const lock = await createLock(path);
    if (lock) {
      if (!(await finished())) return lock;
      await lock.release();
      return 'done';
    }
    const found = await readLock(path);
    if (!found) continue; // released between the two calls
    const stale = await staleReason(found, options.incomplete);
    if (stale) {
      options.notice(`${options.file}: taking over the download lock ${path}: ${stale}`);
      await takeOver(path, found.text);
      continue;
    }
    if (!waited) {
      options.notice(
        `${options.file}: waiting for another download of this file (${describeHolder(found)}); its lock is ${path}`,
      );
      waited = true;
    }
    options.onWait?.((await stat(options.incomplete).catch(() => undefined))?.size ?? 0);
    await sleep(LOCK_POLL_MS, options.signal);
  }
}
