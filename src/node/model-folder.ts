/** Models on disk: a folder of files, or a repository already in the local Hugging Face cache. */
import { readdir, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import type { ModelFiles, ModelResolver } from '../engine/io';
import { isHubRepoId } from '../recipe';
import { type FileByteSource, fileByteSource } from './file-source';

export class ModelNotFoundError extends Error {
  override name = 'ModelNotFoundError';
}

/** A folder's files (top level only, as transformers saves them). Opened files are closed by `close`. */
export async function modelFolder(dir: string, name = dir): Promise<ModelFiles & { close(): Promise<void> }> {
  let entries: string[];
  try {
    const listing = await readdir(dir, { withFileTypes: true });
    entries = listing.filter((e) => e.isFile() || e.isSymbolicLink()).map((e) => e.name);
  } catch (e) {
    throw new ModelNotFoundError(
      `${name}: cannot read the model folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  const opened: FileByteSource[] = [];
  return {
    name,
    files: () => entries,
    async open(file) {
      if (!entries.includes(file)) throw new ModelNotFoundError(`${name}: no file ${file}`);
      const src = await fileByteSource(join(dir, file), `${name}/${file}`);
      opened.push(src);
      return src;
    },
    async close() {
      await Promise.all(opened.splice(0).map((s) => s.close()));
    },
  };
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

/** The snapshot folder of a hub repository in the local cache (HF_HUB_CACHE / HF_HOME layout). */
async function cachedSnapshot(repo: string): Promise<string | undefined> {
  const hubCache =
    process.env.HF_HUB_CACHE ?? join(process.env.HF_HOME ?? join(homedir(), '.cache', 'huggingface'), 'hub');
  const repoDir = join(hubCache, `models--${repo.replace('/', '--')}`);
  if (!(await isDirectory(repoDir))) return undefined;
  const { readFile } = await import('node:fs/promises');
  try {
    const ref = (await readFile(join(repoDir, 'refs', 'main'), 'utf8')).trim();
    const snap = join(repoDir, 'snapshots', ref);
    if (await isDirectory(snap)) return snap;
  } catch {
    // no refs/main: fall back to the only snapshot, if there is exactly one
  }
  const snaps = await readdir(join(repoDir, 'snapshots')).catch(() => [] as string[]);
  return snaps.length === 1 ? join(repoDir, 'snapshots', snaps[0]) : undefined;
}

/**
 * Resolves recipe references: paths relative to the recipe's folder, then hub ids found in the
 * local cache. Nothing is downloaded.
 */
export function folderResolver(baseDir: string): ModelResolver & { closeAll(): Promise<void> } {
  const open: Array<{ close(): Promise<void> }> = [];
  const resolver = async (reference: string) => {
    const path = isAbsolute(reference) ? reference : resolve(baseDir, reference);
    let dir: string | undefined;
    if (await isDirectory(path)) dir = path;
    else if (isHubRepoId(reference)) dir = await cachedSnapshot(reference);
    if (!dir) {
      throw new ModelNotFoundError(
        isHubRepoId(reference)
          ? `${reference}: no folder ${path} and not in the local Hugging Face cache (download it first, e.g. \`huggingface-cli download ${reference}\`)`
          : `${reference}: no model folder at ${path}`,
      );
    }
    const model = await modelFolder(dir, reference);
    open.push(model);
    return model;
  };
  return Object.assign(resolver, {
    async closeAll() {
      await Promise.all(open.splice(0).map((m) => m.close()));
    },
  });
}
