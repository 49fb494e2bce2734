/**
 * One download per blob across processes, in the place huggingface_hub keeps its locks
 * (file_download.py: `<cache>/.locks/models--org--name/<etag>.lock`, the etag being the blob name).
 *
 * The lock is the file itself, made with an exclusive create ('wx', O_CREAT|O_EXCL), holding the
 * owner's pid, host name, start time and a random token as JSON; the owner removes it when its
 * transfer ends (finished or failed). A process that finds it waits, polling, and then finds the
 * blob (the other download finished) or takes the lock itself (it failed; the `.incomplete` is then
 * resumed). A lock is stale, and taken over, when
 * - its pid is no longer alive and it was made on this host (a pid means nothing on another host), or
 * - neither it nor the blob's `.incomplete` changed for `STALE_LOCK_MS` (a hung or vanished owner;
 *   a live transfer grows its `.incomplete` all the time).
 *
 * huggingface_hub locks with flock() on the same path and leaves the (empty) file behind: such a
 * lock carries no pid, so only the second rule applies to it. flock() does not see our lock, so a
 * Python download running at the same moment is not kept out; the blob's hash check still keeps a
 * mixed-up transfer out of the cache.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, link, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';

/** No change in the lock or the `.incomplete` for this long: the owner is gone or hung. */
export const STALE_LOCK_MS = 5 * 60_000;
/** How often a waiting process looks at the lock, the `.incomplete` and the blob. */
export const LOCK_POLL_MS = 200;

/** What a lock file made here holds. */
export interface LockOwner {
  pid: number;
  host: string;
  /** When the lock was taken, ISO 8601. */
  started: string;
  token: string;
}

/** `<cache>/.locks/<repo folder>/<blob>.lock`, as huggingface_hub names it. */
export function blobLockPath(cacheDir: string, repoFolder: string, blobName: string): string {
  return join(cacheDir, '.locks', repoFolder, `${blobName}.lock`);
}

export class BlobLock {
  constructor(
    readonly path: string,
    private readonly content: string,
  ) {}

  /** Whether the lock file is still this one (not taken over as stale by another process). */
  async held(): Promise<boolean> {
    return (await readFile(this.path, 'utf8').catch(() => undefined)) === this.content;
  }

  /** Removes the lock, unless another process has taken it over. */
  async release(): Promise<void> {
    if (await this.held()) await rm(this.path, { force: true });
  }
}

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

interface FoundLock {
  text: string;
  owner?: LockOwner;
  mtimeMs: number;
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (
      Number.isSafeInteger(o.pid) &&
      typeof o.host === 'string' &&
      typeof o.started === 'string' &&
      Number.isFinite(Date.parse(o.started)) &&
      typeof o.token === 'string'
    )
      return o as LockOwner;
  } catch {
    // not ours: huggingface_hub's empty lock file, or one being written this instant
  }
  return undefined;
}

async function readLock(path: string): Promise<FoundLock | undefined> {
  try {
    const [text, info] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    return { text, owner: parseOwner(text), mtimeMs: info.mtimeMs };
  } catch {
    return undefined;
  }
}

function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, owned by another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function describeHolder(lock: FoundLock): string {
  return lock.owner
    ? `process ${lock.owner.pid} on ${lock.owner.host}, since ${lock.owner.started}`
    : `a lock without a process id, such as huggingface_hub's, last changed ${new Date(lock.mtimeMs).toISOString()}`;
}

/** Why the lock is stale, or undefined while its owner may still be at work. */
async function staleReason(lock: FoundLock, incomplete: string): Promise<string | undefined> {
  const owner = lock.owner;
  if (owner && owner.host === hostname() && !pidAlive(owner.pid))
    return `its process ${owner.pid} is no longer running`;
  const incompleteChanged = (await stat(incomplete).catch(() => undefined))?.mtimeMs ?? 0;
  const lastSign = Math.max(owner ? Date.parse(owner.started) : lock.mtimeMs, incompleteChanged);
  const idle = Date.now() - lastSign;
  if (idle > STALE_LOCK_MS)
    return `no sign of progress for ${Math.round(idle / 1000)} s (${describeHolder(lock)})`;
  return undefined;
}

/**
 * Moves the stale lock aside and deletes it. When another process replaced it in the meantime
 * (the file moved is not the stale one), that lock is put back, unless a third one is there already.
 */
async function takeOver(path: string, staleText: string): Promise<void> {
  const aside = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.stale`;
  try {
    await rename(path, aside);
  } catch {
    return; // gone already: released, or taken over by someone else
  }
  const moved = await readFile(aside, 'utf8').catch(() => undefined);
  if (moved !== staleText) await link(aside, path).catch(() => undefined);
  await rm(aside, { force: true });
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

/** The lock made with an exclusive create, or undefined when the file exists already. */
async function createLock(path: string): Promise<BlobLock | undefined> {
  // The time is the moment of taking it: a lock taken after a long wait is not old.
  const content = `${JSON.stringify({
    pid: process.pid,
    host: hostname(),
    started: new Date().toISOString(),
    token: randomBytes(8).toString('hex'),
  } satisfies LockOwner)}\n`;
  let handle: FileHandle;
  try {
    handle = await open(path, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw e;
  }
  try {
    await handle.writeFile(content);
  } finally {
    await handle.close();
  }
  return new BlobLock(path, content);
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
