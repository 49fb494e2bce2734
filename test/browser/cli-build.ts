/**
 * The Node CLI build the browser tests compare against (dist/cli). A build older than the sources
 * runs yesterday's code (and fails in odd ways, e.g. "cli.installFatalHandlers is not a function"),
 * so it is rebuilt whenever any source file is newer than it. Playwright's global setup does this
 * once per run; the lock keeps two processes (workers, or two checks at once) from building together.
 */
import { execFile } from 'node:child_process';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const CLI_MAIN = join(ROOT, 'dist/cli/main.js');
/** What the CLI bundle is built from (vite.cli.config.ts; wasm/build is the kernels' own output). */
const SOURCES = ['src', 'shaders', 'wasm/merge-kernels.ts', 'wasm/vite-plugin.ts', 'vite.cli.config.ts'];
const LOCK_DIR = join(ROOT, 'dist/.cli-build.lock');
/** A lock older than this was left by a killed process (a build takes well under a minute). */
const STALE_LOCK_MS = 5 * 60_000;
const LOCK_POLL_MS = 250;

/** The newest modification time under `path` (a file or a folder), 0 when it does not exist. */
async function newestMtime(path: string): Promise<number> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch {
    return 0;
  }
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const entry of await readdir(path)) newest = Math.max(newest, await newestMtime(join(path, entry)));
  return newest;
}

/** True when dist/cli is missing or older than a source file. */
export async function cliBuildIsStale(): Promise<boolean> {
  const built = await newestMtime(CLI_MAIN);
  if (built === 0) return true;
  for (const source of SOURCES) if ((await newestMtime(join(ROOT, source))) > built) return true;
  return false;
}

async function withBuildLock<T>(work: () => Promise<T>): Promise<T> {
  await mkdir(join(ROOT, 'dist'), { recursive: true });
  for (;;) {
    try {
      await mkdir(LOCK_DIR);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const held = await stat(LOCK_DIR).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (held > STALE_LOCK_MS) await rm(LOCK_DIR, { recursive: true, force: true });
      else await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
    }
  }
  try {
    return await work();
  } finally {
    await rm(LOCK_DIR, { recursive: true, force: true });
  }
}

let checked: Promise<void> | undefined;

/** Builds dist/cli when it is stale; once per process, under the lock (another may be building). */
export function ensureCliBuild(): Promise<void> {
  checked ??= (async () => {
    if (!(await cliBuildIsStale())) return;
    await withBuildLock(async () => {
      // Another process may have built it while this one waited for the lock.
      if (await cliBuildIsStale()) await run('npm', ['run', 'build:cli'], { cwd: ROOT });
    });
  })().catch((e) => {
    checked = undefined;
    throw e;
  });
  return checked;
}
