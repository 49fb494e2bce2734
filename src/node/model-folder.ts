/** Models on disk: a folder of files, or a hub repository in the local Hugging Face cache. */
import { lstat, readdir, realpath, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { ModelFiles, ModelResolver } from '../engine/io';
import { parseHubModelRef } from '../recipe';
import { type FileByteSource, fileByteSource, ModelFileError } from './file-source';
import { fsErrorText } from './fs-errors';
import { type HubModelOptions, HubModels } from './hub-cache';
import { type HubSettings, hubSettings } from './hub-settings';

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

/** Finds model references: local folders first, then hub ids through the Hugging Face cache. */
export interface ModelLocator {
  /** The folder a reference resolves to, and the folder its symbolic links must stay inside. */
  locate(reference: string): Promise<{ dir: string; root: string }>;
}

/**
 * A locator for references relative to `baseDir`. As mergekit: a folder under the reference wins;
 * for `org/name@revision`, a folder under the whole string, then one under `org/name` (the revision
 * then does not apply, and `notice` says so); otherwise a hub id is looked up in the cache and
 * downloaded into it when missing (see hub-cache.ts), unless offline.
 */
export function modelLocator(
  baseDir: string,
  hub: () => Promise<HubModels>,
  notice?: (line: string) => void,
): ModelLocator {
  const found = new Map<string, Promise<{ dir: string; root: string }>>();
  const find = async (reference: string) => {
    const path = isAbsolute(reference) ? reference : resolve(baseDir, reference);
    if (await isDirectory(path)) return { dir: path, root: path };
    const hubRef = parseHubModelRef(reference);
    if (!hubRef) {
      throw new ModelNotFoundError(
        path === reference ? `${path}: no such model folder` : `${reference}: no model folder at ${path}`,
      );
    }
    if (hubRef.revision !== undefined) {
      const folder = resolve(baseDir, hubRef.repo);
      if (await isDirectory(folder)) {
        notice?.(
          `${reference}: using the folder ${folder}; the revision @${hubRef.revision} applies only to hub models`,
        );
        return { dir: folder, root: folder };
      }
    }
    const cached = await (await hub()).locate(hubRef);
    return { dir: cached.snapshotDir, root: cached.repoDir };
  };
  return {
    locate(reference) {
      let result = found.get(reference);
      if (!result) {
        result = find(reference);
        found.set(reference, result);
      }
      return result;
    },
  };
}

/**
 * Resolves recipe references (see modelLocator). `hub` gives the hub settings and download
 * options; without it they come from the environment (HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE,
 * HF_HUB_OFFLINE) and downloads are silent.
 */
export function folderResolver(
  baseDir: string,
  hub?: { settings?: HubSettings; options?: HubModelOptions },
): ModelResolver & ModelLocator & { closeAll(): Promise<void> } {
  const open: Array<{ close(): Promise<void> }> = [];
  let models: Promise<HubModels> | undefined;
  const hubModels = () => {
    models ??= (async () => new HubModels(hub?.settings ?? (await hubSettings()), hub?.options))();
    return models;
  };
  const { locate } = modelLocator(baseDir, hubModels, hub?.options?.notice);
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
