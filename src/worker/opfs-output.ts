/**
 * Merge output in the origin private file system (OPFS), written from the worker with synchronous
 * access handles (the fastest OPFS writes, only allowed in workers).
 *
 * A run writes into `runs/<id>.partial/`; `commit` moves the files to `outputs/<id>/`, `abort`
 * deletes the partial folder. So `outputs/` only ever holds finished merges. A partial folder left
 * by a closed tab can be reopened (`openOpfsOutput`) to resume the run it belongs to.
 */
import type { FileSink, OutputTarget } from '../engine/io';
import { parseRecipe } from '../recipe';

const RUNS_DIR = 'runs';
const OUTPUTS_DIR = 'outputs';
const PARTIAL_SUFFIX = '.partial';

export class OutputStorageError extends Error {
  override name = 'OutputStorageError';
}

/** Chromium's OPFS handles can move; the DOM typings do not have it yet. */
interface MovableHandle {
  move(destination: FileSystemDirectoryHandle, newName?: string): Promise<void>;
}

interface SyncAccessHandle {
  write(buffer: BufferSource, options?: { at?: number }): number;
  getSize(): number;
  truncate(size: number): void;
  flush(): void;
  close(): void;
}

interface SyncFileHandle {
  createSyncAccessHandle(): Promise<SyncAccessHandle>;
}

async function dir(parent: FileSystemDirectoryHandle, name: string): Promise<FileSystemDirectoryHandle> {
  return parent.getDirectoryHandle(name, { create: true });
}

async function entryNames(d: FileSystemDirectoryHandle): Promise<string[]> {
  const names: string[] = [];
  for await (const key of (d as unknown as { keys(): AsyncIterable<string> }).keys()) names.push(key);
  return names.sort();
}

function isQuotaError(e: unknown): boolean {
  return e instanceof DOMException && e.name === 'QuotaExceededError';
}

/**
 * A file keeps the lock of its access handle until the worker that held it is gone; after a reload
 * the old worker may take a moment to go, so a locked file is tried again for a while.
 */
const LOCKED_FILE_WAIT_MS = 10_000;

async function openAccess(handle: FileSystemFileHandle, what: string): Promise<SyncAccessHandle> {
  const deadline = performance.now() + LOCKED_FILE_WAIT_MS;
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    try {
      return await (handle as unknown as SyncFileHandle).createSyncAccessHandle();
    } catch (e) {
      const locked = e instanceof DOMException && e.name === 'NoModificationAllowedError';
      if (!locked) throw e;
      if (performance.now() >= deadline) {
        throw new OutputStorageError(`${what} is held open by another tab or worker; close it and try again`);
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

export interface OpfsOutput extends OutputTarget {
  readonly id: string;
}

/** A new run writing into `runs/<id>.partial/`. */
export async function createOpfsOutput(id: string = crypto.randomUUID()): Promise<OpfsOutput> {
  const root = await navigator.storage.getDirectory();
  const runs = await dir(root, RUNS_DIR);
  const partial = await runs.getDirectoryHandle(id + PARTIAL_SUFFIX, { create: true });
  return partialOutput(id, root, runs, partial);
}

/** The partial folder of an interrupted run, to continue writing into it (see `reopenFile`). */
export async function openOpfsOutput(id: string): Promise<OpfsOutput> {
  const root = await navigator.storage.getDirectory();
  const runs = await dir(root, RUNS_DIR);
  let partial: FileSystemDirectoryHandle;
  try {
    partial = await runs.getDirectoryHandle(id + PARTIAL_SUFFIX);
  } catch {
    throw new OutputStorageError(`the partial output of run ${id} is gone from the browser storage`);
  }
  return partialOutput(id, root, runs, partial);
}

function partialOutput(
  id: string,
  root: FileSystemDirectoryHandle,
  runs: FileSystemDirectoryHandle,
  partial: FileSystemDirectoryHandle,
): OpfsOutput {
  const partialName = id + PARTIAL_SUFFIX;
  const open = new Set<SyncAccessHandle>();
  let finished = false;

  const checkName = (name: string) => {
    if (finished) throw new OutputStorageError(`output ${id}: cannot add ${name} after the run ended`);
    if (name.includes('/') || name === '' || name === '.' || name === '..') {
      throw new OutputStorageError(`output ${id}: '${name}' is not a plain file name`);
    }
  };

  const sink = (name: string, access: SyncAccessHandle, start: number): FileSink => {
    open.add(access);
    let position = start;
    return {
      async write(bytes) {
        try {
          let done = 0;
          while (done < bytes.byteLength) {
            const wrote = access.write(bytes.subarray(done) as Uint8Array<ArrayBuffer>, {
              at: position + done,
            });
            if (wrote <= 0) throw new OutputStorageError(`${name}: the browser stopped accepting bytes`);
            done += wrote;
          }
          position += bytes.byteLength;
        } catch (e) {
          if (isQuotaError(e)) {
            throw new OutputStorageError(
              `${name}: browser storage is full while writing the merged model; free space (delete models or outputs) and run again`,
            );
          }
          throw e;
        }
      },
      async flush() {
        if (open.has(access)) access.flush();
      },
      async close() {
        if (!open.has(access)) return;
        access.flush();
        access.close();
        open.delete(access);
      },
    };
  };

  return {
    id,
    async createFile(name: string): Promise<FileSink> {
      checkName(name);
      const handle = await partial.getFileHandle(name, { create: true });
      const access = await openAccess(handle, `${name} of output ${id}`);
      // A run resumed after a crash may find this file begun: start it afresh.
      access.truncate(0);
      return sink(name, access, 0);
    },

    async reopenFile(name: string, keepBytes: number): Promise<FileSink> {
      checkName(name);
      let handle: FileSystemFileHandle;
      try {
        handle = await partial.getFileHandle(name);
      } catch {
        throw new OutputStorageError(`output ${id}: ${name} is missing, so the run cannot continue`);
      }
      const access = await openAccess(handle, `${name} of output ${id}`);
      const size = access.getSize();
      if (size < keepBytes) {
        access.close();
        throw new OutputStorageError(
          `output ${id}: ${name} holds ${size} bytes, fewer than the ${keepBytes} already recorded as written`,
        );
      }
      // Bytes past the last recorded tensor belong to a tensor that never finished.
      access.truncate(keepBytes);
      return sink(name, access, keepBytes);
    },

    async commit() {
      if (finished) throw new OutputStorageError(`output ${id}: the run already ended`);
      for (const access of open) access.close();
      open.clear();
      const outputs = await dir(root, OUTPUTS_DIR);
      const target = await outputs.getDirectoryHandle(id, { create: true });
      for (const name of await entryNames(partial)) {
        const file = await partial.getFileHandle(name);
        await (file as unknown as MovableHandle).move(target);
      }
      await runs.removeEntry(partialName, { recursive: true });
      finished = true;
    },

    async abort() {
      if (finished) return;
      finished = true;
      for (const access of open) {
        try {
          access.close();
        } catch {
          // already closed by a failed write
        }
      }
      open.clear();
      await runs.removeEntry(partialName, { recursive: true }).catch(() => undefined);
    },
  };
}

export interface OutputFileInfo {
  name: string;
  size: number;
}

export interface OutputInfo {
  id: string;
  files: OutputFileInfo[];
  createdAt: number;
  /** From the output's mergekit_config.yml; undefined when it is missing or unreadable. */
  recipe?: { method: string; models: string[] };
}

/** merge_method and the models (base first) of a mergekit_config.yml, read without validating. */
async function recipeSummary(file: File): Promise<OutputInfo['recipe']> {
  try {
    const recipe = parseRecipe(await file.text(), file.name);
    const models = [recipe.baseModel, ...recipe.models.map((m) => m.model)].filter(
      (m): m is string => m !== undefined,
    );
    return { method: recipe.mergeMethod, models: [...new Set(models)] };
  } catch {
    return undefined;
  }
}

/** Finished merges in `outputs/`, newest first. */
export async function listOutputs(): Promise<OutputInfo[]> {
  const root = await navigator.storage.getDirectory();
  const outputs = await dir(root, OUTPUTS_DIR);
  const result: OutputInfo[] = [];
  for (const id of await entryNames(outputs)) {
    const d = await outputs.getDirectoryHandle(id);
    const files: OutputFileInfo[] = [];
    let createdAt = 0;
    let recipe: OutputInfo['recipe'];
    for (const name of await entryNames(d)) {
      const file = await (await d.getFileHandle(name)).getFile();
      files.push({ name, size: file.size });
      createdAt = Math.max(createdAt, file.lastModified);
      if (name === 'mergekit_config.yml') recipe = await recipeSummary(file);
    }
    result.push({ id, files, createdAt, recipe });
  }
  return result.sort((a, b) => b.createdAt - a.createdAt);
}

/** The files of a finished output, for downloads (works in windows and workers). */
export async function outputFiles(id: string): Promise<File[]> {
  const root = await navigator.storage.getDirectory();
  const outputs = await dir(root, OUTPUTS_DIR);
  let d: FileSystemDirectoryHandle;
  try {
    d = await outputs.getDirectoryHandle(id);
  } catch {
    throw new OutputStorageError(`output ${id} does not exist (it may have been deleted)`);
  }
  const files: File[] = [];
  for (const name of await entryNames(d)) files.push(await (await d.getFileHandle(name)).getFile());
  return files;
}

export async function deleteOutput(id: string): Promise<void> {
  const root = await navigator.storage.getDirectory();
  const outputs = await dir(root, OUTPUTS_DIR);
  await outputs.removeEntry(id, { recursive: true }).catch(() => undefined);
}

/**
 * Partial runs left by a closed tab or a crash that nothing will resume: every partial folder but
 * those of `keepIds` (runs under way, runs the journal can resume).
 */
export async function removeAbandonedRuns(keepIds: readonly string[] = []): Promise<string[]> {
  const root = await navigator.storage.getDirectory();
  const runs = await dir(root, RUNS_DIR);
  const removed: string[] = [];
  for (const name of await entryNames(runs)) {
    if (keepIds.some((id) => name === id + PARTIAL_SUFFIX)) continue;
    await runs.removeEntry(name, { recursive: true }).catch(() => undefined);
    removed.push(name);
  }
  return removed;
}

/** The files of a run's partial folder with their sizes; undefined when the folder is gone. */
export async function partialRunFiles(id: string): Promise<OutputFileInfo[] | undefined> {
  const root = await navigator.storage.getDirectory();
  const runs = await dir(root, RUNS_DIR);
  let partial: FileSystemDirectoryHandle;
  try {
    partial = await runs.getDirectoryHandle(id + PARTIAL_SUFFIX);
  } catch {
    return undefined;
  }
  const files: OutputFileInfo[] = [];
  for (const name of await entryNames(partial)) {
    files.push({ name, size: (await (await partial.getFileHandle(name)).getFile()).size });
  }
  return files;
}

/** Deletes a run's partial folder (a discarded interrupted run). */
export async function removePartialRun(id: string): Promise<void> {
  const root = await navigator.storage.getDirectory();
  const runs = await dir(root, RUNS_DIR);
  await runs.removeEntry(id + PARTIAL_SUFFIX, { recursive: true }).catch(() => undefined);
}

/**
 * Deletes a run's partial folder, retrying while a terminated worker's access handles still hold
 * its files (they are let go a moment after the worker goes); throws if it is still there after
 * `waitMs`.
 */
export async function removePartialRunWithin(id: string, waitMs: number): Promise<void> {
  const root = await navigator.storage.getDirectory();
  const runs = await dir(root, RUNS_DIR);
  const deadline = performance.now() + waitMs;
  for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
    try {
      await runs.removeEntry(id + PARTIAL_SUFFIX, { recursive: true });
      return;
    } catch (e) {
      if (e instanceof DOMException && e.name === 'NotFoundError') return;
      if (performance.now() >= deadline) {
        throw new OutputStorageError(
          `the cancelled merge ${id} still holds its files; reload the page to remove them`,
        );
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Names in `runs/` (unfinished) and `outputs/` (finished), for checks that nothing leaked. */
export async function outputDirectoryState(): Promise<{ runs: string[]; outputs: string[] }> {
  const root = await navigator.storage.getDirectory();
  return {
    runs: await entryNames(await dir(root, RUNS_DIR)),
    outputs: await entryNames(await dir(root, OUTPUTS_DIR)),
  };
}
