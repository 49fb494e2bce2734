/**
 * A lock between processes as a file: made with an exclusive create ('wx', O_CREAT|O_EXCL), holding
 * the owner's pid, host name, start time and a random token as JSON; the owner removes it when its
 * work ends. Used for a hub blob's download (hub-lock.ts) and for the CLI's output folder
 * (cli/output-lock.ts). A lock is stale, and may be taken over, when
 * - its pid is no longer alive and it was made on this host (a pid means nothing on another host), or
 * - neither it nor the owner's sign of progress (a file the work keeps changing) changed for
 *   `STALE_LOCK_MS` (a hung or vanished owner).
 * A lock file that is not ours (huggingface_hub's empty flock() file) carries no pid, so only the
 * second rule applies to it.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, link, open, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';

/** No change in the lock or the owner's sign of progress for this long: the owner is gone or hung. */
export const STALE_LOCK_MS = 5 * 60_000;

/** What a lock file made here holds. */
export interface LockOwner {
  pid: number;
  host: string;
  /** When the lock was taken, ISO 8601. */
  started: string;
  token: string;
}

export class FileLock {
  private heartbeat?: ReturnType<typeof setInterval>;

  constructor(
    readonly path: string,
    private readonly content: string,
  ) {}

  /** Whether the lock file is still this one (not taken over as stale by another process). */
  async held(): Promise<boolean> {
    return (await readFile(this.path, 'utf8').catch(() => undefined)) === this.content;
  }

  /**
   * Touches the lock every `everyMs` while it is held, for work that has no file of its own to show
   * progress by: the lock itself is then its owner's sign of progress.
   */
  keepFresh(everyMs: number): void {
    this.heartbeat ??= setInterval(() => {
      const now = new Date();
      utimes(this.path, now, now).catch(() => {});
    }, everyMs);
    // A held lock never keeps the process alive.
    this.heartbeat.unref();
  }

  /** Removes the lock, unless another process has taken it over. */
  async release(): Promise<void> {
    clearInterval(this.heartbeat);
    if (await this.held()) await rm(this.path, { force: true });
  }
}

/** A lock file found in place. */
export interface FoundLock {
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

/** The lock at `path`, or undefined when there is none. */
export async function readLock(path: string): Promise<FoundLock | undefined> {
  try {
    const [text, info] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    return { text, owner: parseOwner(text), mtimeMs: info.mtimeMs };
  } catch {
    return undefined;
  }
}

/** Whether process `pid` of this host is running. */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, owned by another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Who holds `lock`, for messages. */
export function describeHolder(lock: FoundLock): string {
  return lock.owner
    ? `process ${lock.owner.pid} on ${lock.owner.host}, since ${lock.owner.started}`
    : `a lock without a process id, such as huggingface_hub's, last changed ${new Date(lock.mtimeMs).toISOString()}`;
}

/**
 * Why the lock is stale, or undefined while its owner may still be at work; `progress` is the file
 * whose changes show the owner's progress (the lock itself where the owner keeps it fresh).
 */
export async function staleReason(lock: FoundLock, progress: string): Promise<string | undefined> {
  const owner = lock.owner;
  if (owner && owner.host === hostname() && !processAlive(owner.pid))
    return `its process ${owner.pid} is no longer running`;
  const progressChanged = (await stat(progress).catch(() => undefined))?.mtimeMs ?? 0;
  const lastSign = Math.max(owner ? Date.parse(owner.started) : lock.mtimeMs, progressChanged);
  const idle = Date.now() - lastSign;
  if (idle > STALE_LOCK_MS)
    return `no sign of progress for ${Math.round(idle / 1000)} s (${describeHolder(lock)})`;
  return undefined;
}

/**
 * Moves the stale lock aside and deletes it. When another process replaced it in the meantime
 * (the file moved is not the stale one), that lock is put back, unless a third one is there already.
 */
export async function takeOver(path: string, staleText: string): Promise<void> {
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

/** The lock made with an exclusive create, or undefined when the file exists already. */
export async function createLock(path: string): Promise<FileLock | undefined> {
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
  return new FileLock(path, content);
}

/**
 * Takes the lock at `path` without waiting: the lock, or the live lock that holds it. A stale one
 * (`progress` as in staleReason) is taken over, said through `notice`.
 */
export async function tryLock(
  path: string,
  progress: string,
  notice: (why: string) => void,
): Promise<FileLock | FoundLock> {
  // Each round ends with the lock released or taken over by someone: a few are a race, many a
  // lock file that cannot be read.
  for (let round = 0; round < LOCK_ROUNDS; round++) {
    const lock = await createLock(path);
    if (lock) return lock;
    const found = await readLock(path);
    if (!found) continue; // released between the two calls
    const stale = await staleReason(found, progress);
    if (!stale) return found;
    notice(stale);
    await takeOver(path, found.text);
  }
  throw new LockError(
    `${path}: cannot take this lock file, nor read who holds it; remove it if no run is using it`,
  );
}

/** Rounds of tryLock before it gives up. */
const LOCK_ROUNDS = 50;

/** A lock file that can be neither taken nor read. */
export class LockError extends Error {
  override name = 'LockError';
}
