/**
 * The merged folder on disk. Files go to a hidden sibling folder first (`.OUT.partial-<pid>-<hex>`);
 * `commit` renames it into place, so OUT_DIR either does not exist, holds what was there before, or
 * holds a finished merge.
 *
 * Replacing an earlier output (`--force`) takes two renames: OUT_DIR to `.OUT.old-<pid>-<hex>`, then
 * the new folder to OUT_DIR. A failed second rename puts the old folder back at once; a process killed
 * between the two leaves the old folder under its `.old-` name, and the next run for the same OUT_DIR
 * (`recoverOutputDir`) puts it back before doing anything else. Leftover `.partial-` folders of killed
 * runs are removed the same way.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, realpath, rename, rm, rmdir } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { FileSink, OutputTarget } from '../engine/io';
import { TOKENIZER_FILES } from '../engine/merge';
import { MODEL_INDEX_FILE } from '../formats/model-index';
import { processAlive } from './file-lock';
import { fsErrorText } from './fs-errors';
import { isInside } from './model-folder';

export class OutputDirError extends Error {
  override name = 'OutputDirError';
}

async function listOrUndefined(dir: string): Promise<string[] | undefined> {
  try {
    return await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR')
      throw new OutputDirError(`${dir}: exists and is not a folder`);
    throw new OutputDirError(`${dir}: cannot read the output folder (${fsErrorText(e)})`);
  }
}

/** The files a merge writes: only a folder holding these (and nothing else) is replaced by --force. */
const WRITTEN_FILES = new Set([
  'config.json',
  'generation_config.json',
  'mergekit_config.yml',
  'README.md',
  MODEL_INDEX_FILE,
  ...TOKENIZER_FILES,
]);
const SHARD_NAME = /^model(?:-\d{5,}-of-\d{5,})?\.safetensors$/;

/** `path` with symbolic links resolved, also when its last parts do not exist yet. */
async function canonicalPath(path: string): Promise<string> {
  const abs = resolve(path);
  try {
    return await realpath(abs);
  } catch {
    const parent = dirname(abs);
    return parent === abs ? abs : join(await canonicalPath(parent), basename(abs));
  }
}

export interface OutputGuard {
  /** Folders the merge reads models from. */
  inputs?: readonly string[];
  /** The recipe file. */
  recipeFile?: string;
}

/**
 * Why `outDir` must never be written or replaced, or undefined when it may be: the current folder,
 * `/`, the home folder, an input model's folder, the recipe's folder, or a folder that contains any
 * of them. Checked whether or not `--force` is given, since the output folder is renamed over.
 */
export async function protectedReason(outDir: string, guard: OutputGuard): Promise<string | undefined> {
  if (outDir.trim() === '') {
    return 'OUT_DIR is an empty string (an unset shell variable?); name the folder to write';
  }
  const target = await canonicalPath(outDir);
  if (dirname(target) === target) return 'is the root folder';
  const home = await canonicalPath(homedir());
  if (target === home) return 'is your home folder';
  const cwd = await canonicalPath(process.cwd());
  if (target === cwd) return 'is the current folder';
  if (isInside(cwd, target)) return 'contains the current folder';
  for (const input of guard.inputs ?? []) {
    const dir = await canonicalPath(input);
    if (dir === target) return `is the folder of an input model (${input})`;
    if (isInside(dir, target)) return `contains an input model (${input})`;
  }
  if (guard.recipeFile !== undefined) {
    const recipe = await canonicalPath(guard.recipeFile);
    if (dirname(recipe) === target) return `is the folder of the recipe ${guard.recipeFile}`;
    if (isInside(recipe, target)) return `contains the recipe ${guard.recipeFile}`;
  }
  return undefined;
}

/**
 * Why `--force` may not replace `dir`, or undefined when it holds an earlier l2s-merge output:
 * mergekit_config.yml, safetensors shards, and only files a merge writes, all plain files.
 */
async function notAnOutputReason(dir: string, entries: readonly string[]): Promise<string | undefined> {
  const unknown = entries.filter((e) => !WRITTEN_FILES.has(e) && !SHARD_NAME.test(e));
  const list = (names: string[]) =>
    names.length > 3 ? `${names.slice(0, 3).join(', ')} and ${names.length - 3} more` : names.join(', ');
  if (unknown.length > 0) return `it holds ${list(unknown.sort())}, which l2s-merge does not write`;
  if (!entries.includes('mergekit_config.yml')) return 'it has no mergekit_config.yml';
  if (!entries.some((e) => SHARD_NAME.test(e))) return 'it has no safetensors shard';
  for (const e of entries) {
    const st = await lstat(join(dir, e));
    if (!st.isFile()) return `${e} in it is not a plain file`;
  }
  return undefined;
}

/**
 * Refuse up front (before any work) an OUT_DIR that is protected, or non-empty without `force`, or
 * with `force` but not an earlier output of l2s-merge.
 */
export async function checkOutputDir(outDir: string, force: boolean, guard: OutputGuard = {}): Promise<void> {
  const reason = await protectedReason(outDir, guard);
  if (reason) throw new OutputDirError(`${outDir || '""'}: refusing it as the output folder: ${reason}`);
  const entries = await listOrUndefined(outDir);
  if (!entries || entries.length === 0) return;
  if (!force) {
    throw new OutputDirError(`${outDir}: the output folder is not empty (use --force to replace it)`);
  }
  const notOutput = await notAnOutputReason(outDir, entries);
  if (notOutput) {
    throw new OutputDirError(
      `${outDir}: --force replaces only a folder that l2s-merge wrote, and ${notOutput}; ` +
        'move those files away or choose another OUT_DIR',
    );
  }
}

const LEFTOVER = /^\.(.+)\.(partial|old)-(\d+)-[0-9a-f]+$/;

/**
 * Cleans up after runs for `outDir` that were killed: puts back an earlier output that a `--force`
 * run had moved aside (when OUT_DIR is missing), then removes the remaining `.old-` and `.partial-`
 * folders. Folders of a run that is still going are left alone. Each action is reported to `log`.
 */
export async function recoverOutputDir(outDir: string, log: (line: string) => void): Promise<void> {
  const target = resolve(outDir);
  const parent = dirname(target);
  const name = basename(target);
  const siblings = await readdir(parent).catch(() => [] as string[]);
  const found = siblings
    .map((entry) => ({ entry, m: LEFTOVER.exec(entry) }))
    .filter(({ m }) => m !== null && m[1] === name)
    .map(({ entry, m }) => ({ entry, kind: m![2] as 'partial' | 'old', pid: Number(m![3]) }));
  const olds: Array<{ entry: string; mtime: number }> = [];
  for (const f of found) {
    if (processAlive(f.pid)) {
      log(
        `left ${join(parent, f.entry)} alone: the run that is writing it (process ${f.pid}) is still going`,
      );
      continue;
    }
    if (f.kind === 'partial') {
      await rm(join(parent, f.entry), { recursive: true, force: true });
      log(`removed ${join(parent, f.entry)}, the unfinished output of an interrupted run`);
    } else {
      const st = await lstat(join(parent, f.entry));
      olds.push({ entry: f.entry, mtime: st.mtimeMs });
    }
  }
  // The most recently moved-aside output is the one that was in OUT_DIR last.
  olds.sort((a, b) => b.mtime - a.mtime);
  for (const old of olds) {
    const path = join(parent, old.entry);
    if ((await listOrUndefined(target)) === undefined) {
      await rename(path, target);
      log(`restored ${outDir} from ${path}, where an interrupted --force run had moved the earlier output`);
    } else {
      await rm(path, { recursive: true, force: true });
      log(`removed ${path}, an earlier output that an interrupted --force run had already replaced`);
    }
  }
}

export async function outputDir(
  outDir: string,
  options: { force?: boolean } = {},
): Promise<OutputTarget & { readonly tempDir: string }> {
  const target = resolve(outDir);
  await checkOutputDir(target, options.force ?? false);
  const tempDir = join(
    dirname(target),
    `.${basename(target)}.partial-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  try {
    await mkdir(dirname(target), { recursive: true });
    await mkdir(tempDir);
  } catch (e) {
    throw new OutputDirError(`${target}: cannot create the output folder (${fsErrorText(e)})`);
  }
  const names = new Set<string>();
  let finished = false;
  /** One line naming the output file; the run then aborts, so nothing reaches OUT_DIR. */
  const writeFailed = (name: string, e: unknown) =>
    new OutputDirError(
      `${join(target, name)}: writing failed (${fsErrorText(e)}); nothing was written to ${target}`,
    );
  return {
    tempDir,
    async createFile(name): Promise<FileSink> {
      if (finished) throw new OutputDirError(`${target}: the output was already committed or aborted`);
      if (name.includes('/') || name.includes('\\') || name === '..' || name === '.') {
        throw new OutputDirError(`${target}: refusing to write a file named ${JSON.stringify(name)}`);
      }
      if (names.has(name)) throw new OutputDirError(`${target}: ${name} written twice`);
      names.add(name);
      const handle = await open(join(tempDir, name), 'wx').catch((e) => {
        throw writeFailed(name, e);
      });
      return {
        async write(bytes) {
          let done = 0;
          try {
            while (done < bytes.byteLength) {
              const { bytesWritten } = await handle.write(bytes, done, bytes.byteLength - done);
              done += bytesWritten;
            }
          } catch (e) {
            throw writeFailed(name, e);
          }
        },
        async close() {
          try {
            await handle.sync();
            await handle.close();
          } catch (e) {
            await handle.close().catch(() => {});
            throw writeFailed(name, e);
          }
        },
      };
    },
    async commit() {
      finished = true;
      const existing = await listOrUndefined(target);
      try {
        if (existing === undefined) {
          await rename(tempDir, target);
          return;
        }
        if (existing.length === 0) {
          await rmdir(target);
          await rename(tempDir, target);
          return;
        }
      } catch (e) {
        throw new OutputDirError(`${target}: cannot move the finished output into place (${fsErrorText(e)})`);
      }
      if (!options.force)
        throw new OutputDirError(`${target}: the output folder is not empty (use --force to replace it)`);
      // Checked again: the folder may have changed during the merge.
      const notOutput = await notAnOutputReason(target, existing);
      if (notOutput) {
        throw new OutputDirError(
          `${target}: --force replaces only a folder that l2s-merge wrote, and ${notOutput} (it changed during the merge)`,
        );
      }
      const old = join(
        dirname(target),
        `.${basename(target)}.old-${process.pid}-${randomBytes(4).toString('hex')}`,
      );
      try {
        await rename(target, old);
      } catch (e) {
        throw new OutputDirError(
          `${target}: cannot move the earlier output aside (${fsErrorText(e)}); it is unchanged`,
        );
      }
      try {
        await rename(tempDir, target);
      } catch (e) {
        let restored = true;
        await rename(old, target).catch(() => {
          restored = false;
        });
        throw new OutputDirError(
          `${target}: cannot move the new output into place (${fsErrorText(e)}); ` +
            (restored
              ? 'the earlier output is back in place'
              : `the earlier output is in ${old}, and the next run for ${target} puts it back`),
        );
      }
      await rm(old, { recursive: true, force: true });
    },
    async abort() {
      finished = true;
      await rm(tempDir, { recursive: true, force: true });
    },
  };
}
