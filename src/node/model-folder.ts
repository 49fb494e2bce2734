/** Models on disk: a folder of files, or a repository already in the local Hugging Face cache. */
import { lstat, readdir, realpath, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { ModelFiles, ModelResolver } from '../engine/io';
import { isHubRepoId } from '../recipe';
import { type FileByteSource, fileByteSource, ModelFileError } from './file-source';
import { fsErrorText } from './fs-errors';

export class ModelNotFoundError extends Error {
  override name = 'ModelNotFoundError';
}

/** True when `path` is `root` or lies below it (both absolute and without symbolic links). */
export function isInside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * A folder's files (top level only, as transformers saves them). Opened files are closed by `close`.
 *
 * Every entry is listed, so that a folder, FIFO or device under a model file's name is refused by
 * name when it is opened rather than silently skipped. Files other than safetensors shards are
 * copied into the output (tokenizer, configs) or parsed into it, so a symbolic link among them must
 * stay inside `root` (the model folder; for the Hugging Face cache, the repository's folder, whose
 * snapshots link into its blobs): a link to a private file elsewhere would be copied out. Shards may
 * link anywhere (weights often live on another disk); they are parsed and validated, never copied.
 */
export async function modelFolder(
  dir: string,
  name = dir,
  root = dir,
): Promise<ModelFiles & { close(): Promise<void> }> {
  let entries: string[];
  let realRoot: string;
  try {
    entries = (await readdir(dir)).sort();
    realRoot = await realpath(root);
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
      const path = join(dir, file);
      const link = await lstat(path).catch((e) => {
        throw new ModelFileError(`${name}/${file}: cannot open it (${fsErrorText(e)})`);
      });
      if (!file.endsWith('.safetensors') && link.isSymbolicLink()) {
        const target = await realpath(path).catch(() => undefined);
        if (target === undefined)
          throw new ModelFileError(`${name}/${file}: is a symbolic link that leads nowhere`);
        if (!isInside(target, realRoot)) {
          throw new ModelFileError(
            `${name}/${file}: is a symbolic link to ${target}, outside the model folder; ` +
              'l2s-merge copies this file into the output, so it must be a file inside the folder (copy it in instead of linking)',
          );
        }
      }
      const src = await fileByteSource(path, `${name}/${file}`);
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
async function cachedSnapshot(repo: string): Promise<{ snapshot: string; repoDir: string } | undefined> {
  const repoDir = cachedRepoDir(repo);
  const snapshot = await cachedSnapshotIn(repoDir);
  return snapshot === undefined ? undefined : { snapshot, repoDir };
}

function cachedRepoDir(repo: string): string {
  const hubCache =
    process.env.HF_HUB_CACHE ?? join(process.env.HF_HOME ?? join(homedir(), '.cache', 'huggingface'), 'hub');
  return join(hubCache, `models--${repo.replace('/', '--')}`);
}

async function cachedSnapshotIn(repoDir: string): Promise<string | undefined> {
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
export function folderResolver(baseDir: string): ModelResolver & {
  closeAll(): Promise<void>;
  /** The folder a reference resolves to, and the folder its symbolic links must stay inside. */
  locate(reference: string): Promise<{ dir: string; root: string }>;
} {
  const open: Array<{ close(): Promise<void> }> = [];
  const locate = async (reference: string) => {
    const path = isAbsolute(reference) ? reference : resolve(baseDir, reference);
    let found: { dir: string; root: string } | undefined;
    if (await isDirectory(path)) found = { dir: path, root: path };
    else if (isHubRepoId(reference)) {
      const cached = await cachedSnapshot(reference);
      if (cached) found = { dir: cached.snapshot, root: cached.repoDir };
    }
    if (!found) {
      throw new ModelNotFoundError(
        isHubRepoId(reference)
          ? `${reference}: no folder ${path} and not in the local Hugging Face cache (download it first, e.g. \`huggingface-cli download ${reference}\`)`
          : `${reference}: no model folder at ${path}`,
      );
    }
    return found;
  };
  const resolver = async (reference: string) => {
    const { dir, root } = await locate(reference);
    const model = await modelFolder(dir, reference, root);
    open.push(model);
    return model;
  };
  return Object.assign(resolver, {
    locate,
    async closeAll() {
      await Promise.all(open.splice(0).map((m) => m.close()));
    },
  });
}
