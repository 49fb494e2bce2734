/**
 * The merged folder on disk. Files go to a hidden sibling folder first; `commit` renames it into
 * place, so OUT_DIR either does not exist, holds what was there before, or holds a finished merge.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, rmdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { FileSink, OutputTarget } from '../engine/io';

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
    throw e;
  }
}

/** Refuse a non-empty OUT_DIR up front (before any work) unless `force`. */
export async function checkOutputDir(outDir: string, force: boolean): Promise<void> {
  const entries = await listOrUndefined(outDir);
  if (entries && entries.length > 0 && !force) {
    throw new OutputDirError(`${outDir}: the output folder is not empty (use --force to replace it)`);
  }
}

export async function outputDir(
  outDir: string,
  options: { force?: boolean } = {},
): Promise<OutputTarget & { readonly tempDir: string }> {
  const target = resolve(outDir);
  await checkOutputDir(target, options.force ?? false);
  await mkdir(dirname(target), { recursive: true });
  const tempDir = join(
    dirname(target),
    `.${basename(target)}.partial-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  await mkdir(tempDir);
  const names = new Set<string>();
  let finished = false;
  return {
    tempDir,
    async createFile(name): Promise<FileSink> {
      if (finished) throw new OutputDirError(`${target}: the output was already committed or aborted`);
      if (name.includes('/') || name.includes('\\') || name === '..' || name === '.') {
        throw new OutputDirError(`${target}: refusing to write a file named ${JSON.stringify(name)}`);
      }
      if (names.has(name)) throw new OutputDirError(`${target}: ${name} written twice`);
      names.add(name);
      const handle = await open(join(tempDir, name), 'wx');
      return {
        async write(bytes) {
          let done = 0;
          while (done < bytes.byteLength) {
            const { bytesWritten } = await handle.write(bytes, done, bytes.byteLength - done);
            done += bytesWritten;
          }
        },
        async close() {
          await handle.sync();
          await handle.close();
        },
      };
    },
    async commit() {
      finished = true;
      const existing = await listOrUndefined(target);
      if (existing === undefined) {
        await rename(tempDir, target);
        return;
      }
      if (existing.length === 0) {
        await rmdir(target);
        await rename(tempDir, target);
        return;
      }
      if (!options.force)
        throw new OutputDirError(`${target}: the output folder is not empty (use --force to replace it)`);
      // Swap: the old folder is moved aside first so that a crash leaves one complete folder.
      const old = join(
        dirname(target),
        `.${basename(target)}.old-${process.pid}-${randomBytes(4).toString('hex')}`,
      );
      await rename(target, old);
      await rename(tempDir, target);
      await rm(old, { recursive: true, force: true });
    },
    async abort() {
      finished = true;
      await rm(tempDir, { recursive: true, force: true });
    },
  };
}
