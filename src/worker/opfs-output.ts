/**
 * Merge output in the origin private file system (OPFS), written from the worker with synchronous
 * access handles (the fastest OPFS writes, only allowed in workers).
 *
 * A run writes into `runs/<id>.partial/`; `abort` deletes that folder. `commit` moves the files one
 * by one into `outputs/<id>/` (OPFS has no atomic folder rename) and then, last, writes the
 * output's manifest (`.l2s-output.json`: every file and its size). An output is finished, listed
 * and downloadable only when its manifest is there and its files match it, so a commit cut short
 * by a crash never shows; `repairOutputs` (at the next start) moves such files back into the
 * run's partial folder, so the run can be resumed.
 * A partial folder left by a closed tab can be reopened (`openOpfsOutput`) to resume its run.
 */
import type { FileSink, OutputTarget } from '../engine/io';
import { parseRecipe } from '../recipe';

const RUNS_DIR = 'runs';
const OUTPUTS_DIR = 'outputs';
const PARTIAL_SUFFIX = '.partial';
/** Written last by `commit`; a leading dot keeps it apart from any file a merge writes. */
export const OUTPUT_MANIFEST = '.l2s-output.json';
/** Written first by `deleteOutput`, so a delete cut short is told from an output to keep. */
const DELETING_MARKER = '.l2s-deleting';

interface OutputManifest {
  id: string;
  files: OutputFileInfo[];
  committedAt: number;
}

/**
 * For the crash tests only: `commit` stops for good after moving this many files, as if the tab
 * died there (the test then reloads the page). Off unless the page asks (`?stallCommit=`).
 */
let commitStallAfterFiles: number | undefined;

export function stallCommitsAfter(files: number | undefined): void {
  commitStallAfterFiles = files;
}

/**
 * For tests of a merge under way (Cancel, a second tab): every write of merged bytes waits this many
 * milliseconds first, so a small merge lasts long enough to act on whatever the CPU's speed. Off
 * unless the page asks (`?paceWrites=`).
 */
let writePaceMs = 0;

export function paceWrites(ms: number | undefined): void {
  writePaceMs = ms ?? 0;
}

/** Waits as `paceWrites` asks before a write of merged bytes (every output target calls it). */
export async function writePace(): Promise<void> {
  if (writePaceMs > 0) await new Promise((resolve) => setTimeout(resolve, writePaceMs));
}

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
  return (
    e instanceof DOMException &&
    (e.name === 'QuotaExceededError' || (e.name === 'UnknownError' && /quota|space/i.test(e.message)))
  );
}

/** The message of a write that found the browser's storage full; the run's partial files are deleted. */
export class OutputStorageFullError extends OutputStorageError {
  override name = 'OutputStorageFullError';
  constructor(readonly file: string) {
    super(
      `Browser storage is full while writing ${file}. The merge was stopped and its partial files deleted; ` +
        'your models and earlier outputs are untouched. Free space (delete models or outputs you no longer need, ' +
        'or press "Keep storage" to allow more) and run the merge again.',
    );
  }
}

/** Runs `work` on OPFS, turning a full quota into OutputStorageFullError naming `file`. */
async function writingFile<T>(file: string, work: () => T | Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (isQuotaError(e)) throw new OutputStorageFullError(file);
    throw e;
  }
}

async function writeManifest(d: FileSystemDirectoryHandle, manifest: OutputManifest): Promise<void> {
  const bytes = new TextEncoder().encode(JSON.stringify(manifest));
  await writingFile(`the file list of output ${manifest.id}`, async () => {
    const handle = await d.getFileHandle(OUTPUT_MANIFEST, { create: true });
    const access = await openAccess(handle, `the manifest of output ${manifest.id}`);
    try {
      access.truncate(0);
      if (access.write(bytes, { at: 0 }) !== bytes.byteLength) {
        throw new OutputStorageError(`${OUTPUT_MANIFEST}: the browser stopped accepting bytes`);
      }
      access.flush();
    } finally {
      access.close();
    }
  });
}

async function readManifest(d: FileSystemDirectoryHandle): Promise<OutputManifest | undefined> {
  try {
    const text = await (await (await d.getFileHandle(OUTPUT_MANIFEST)).getFile()).text();
    const manifest = JSON.parse(text) as OutputManifest;
    if (!Array.isArray(manifest.files)) return undefined;
    return manifest;
  } catch {
    return undefined;
  }
}

/** The output's files as its manifest lists them, or undefined when it is not a finished output. */
async function finishedFiles(
  d: FileSystemDirectoryHandle,
): Promise<{ manifest: OutputManifest; files: File[] } | undefined> {
  const manifest = await readManifest(d);
  if (!manifest) return undefined;
  const files: File[] = [];
  for (const entry of manifest.files) {
    let file: File;
    try {
      file = await (await d.getFileHandle(entry.name)).getFile();
    } catch {
      return undefined;
    }
    if (file.size !== entry.size) return undefined;
    files.push(file);
  }
  return { manifest, files };
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
        await writePace();
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
          if (isQuotaError(e)) throw new OutputStorageFullError(name);
          throw e;
        }
      },
      async flush() {
        if (open.has(access)) await writingFile(name, () => access.flush());
      },
      async close() {
        if (!open.has(access)) return;
        await writingFile(name, () => access.flush());
        access.close();
        open.delete(access);
      },
    };
  };

  return {
    id,
    async createFile(name: string): Promise<FileSink> {
      checkName(name);
      const handle = await writingFile(name, () => partial.getFileHandle(name, { create: true }));
      const access = await writingFile(name, () => openAccess(handle, `${name} of output ${id}`));
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
      const names = (await entryNames(partial)).filter((n) => n !== OUTPUT_MANIFEST);
      const files: OutputFileInfo[] = [];
      for (const name of names) {
        files.push({ name, size: (await (await partial.getFileHandle(name)).getFile()).size });
      }
      const outputs = await dir(root, OUTPUTS_DIR);
      // Left by an earlier commit of this run that was cut short: never a finished output.
      await outputs.removeEntry(id, { recursive: true }).catch(() => undefined);
      const target = await outputs.getDirectoryHandle(id, { create: true });
      try {
        let moved = 0;
        for (const name of names) {
          const file = await partial.getFileHandle(name);
          await (file as unknown as MovableHandle).move(target);
          moved++;
          if (moved === commitStallAfterFiles) await new Promise<never>(() => {});
        }
        // The manifest, last: from here on the output is finished.
        await writeManifest(target, { id, files, committedAt: Date.now() });
      } catch (e) {
        // The run fails (and `abort` removes its partial folder): none of it may stay in outputs/.
        await target.removeEntry(OUTPUT_MANIFEST).catch(() => undefined);
        await outputs.removeEntry(id, { recursive: true }).catch(() => undefined);
        throw e;
      }
      finished = true;
      await runs.removeEntry(partialName, { recursive: true }).catch(() => undefined);
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

/** Finished merges in `outputs/` (those with a manifest their files match), newest first. */
export async function listOutputs(): Promise<OutputInfo[]> {
  const root = await navigator.storage.getDirectory();
  const outputs = await dir(root, OUTPUTS_DIR);
  const result: OutputInfo[] = [];
  for (const id of await entryNames(outputs)) {
    const d = await outputs.getDirectoryHandle(id).catch(() => undefined);
    const finished = d && (await finishedFiles(d));
    if (!finished) continue;
    const config = finished.files.find((f) => f.name === 'mergekit_config.yml');
    result.push({
      id,
      files: finished.manifest.files,
      createdAt: finished.manifest.committedAt,
      recipe: config ? await recipeSummary(config) : undefined,
    });
  }
  return result.sort((a, b) => b.createdAt - a.createdAt);
}

/** The files of a finished output, for downloads (works in windows and workers). */
export async function outputFiles(id: string): Promise<File[]> {
  const root = await navigator.storage.getDirectory();
  const outputs = await dir(root, OUTPUTS_DIR);
  const d = await outputs.getDirectoryHandle(id).catch(() => undefined);
  const finished = d && (await finishedFiles(d));
  if (!finished) throw new OutputStorageError(`output ${id} does not exist (it may have been deleted)`);
  return finished.files;
}

/** Whether `outputs/<id>` is a finished output (manifest present, files as it lists them). */
export async function outputIsFinished(id: string): Promise<boolean> {
  const root = await navigator.storage.getDirectory();
  const d = await (await dir(root, OUTPUTS_DIR)).getDirectoryHandle(id).catch(() => undefined);
  return d !== undefined && (await finishedFiles(d)) !== undefined;
}

export async function deleteOutput(id: string): Promise<void> {
  const root = await navigator.storage.getDirectory();
  const outputs = await dir(root, OUTPUTS_DIR);
  const d = await outputs.getDirectoryHandle(id).catch(() => undefined);
  // Marked, then the manifest goes: an output half deleted is never listed, nor taken for one
  // of the outputs written before manifests.
  await d?.getFileHandle(DELETING_MARKER, { create: true }).catch(() => undefined);
  await d?.removeEntry(OUTPUT_MANIFEST).catch(() => undefined);
  await outputs.removeEntry(id, { recursive: true }).catch(() => undefined);
}

/**
 * Output folders that are not finished outputs, except those of runs under way (`activeIds`):
 * - a commit cut short (the run's partial folder is still there): the files go back into it, so
 *   the run can be resumed;
 * - a delete cut short (its marker is there), an empty folder, or a manifest its files no longer
 *   match: removed;
 * - a folder of finished files without any manifest, as versions of this app before manifests
 *   left every output (their commit removed the partial folder last): kept, with a manifest
 *   written for the files it holds.
 */
export async function repairOutputs(
  activeIds: readonly string[] = [],
): Promise<{ restored: string[]; removed: string[]; adopted: string[] }> {
  const root = await navigator.storage.getDirectory();
  const outputs = await dir(root, OUTPUTS_DIR);
  const runs = await dir(root, RUNS_DIR);
  const result = { restored: [] as string[], removed: [] as string[], adopted: [] as string[] };
  for (const id of await entryNames(outputs)) {
    if (activeIds.includes(id)) continue;
    const d = await outputs.getDirectoryHandle(id).catch(() => undefined);
    if (!d) {
      // A stray file where an output folder belongs.
      await outputs.removeEntry(id).catch(() => undefined);
      result.removed.push(id);
      continue;
    }
    if (await finishedFiles(d)) continue;
    const names = await entryNames(d);
    const files = names.filter((n) => n !== OUTPUT_MANIFEST && n !== DELETING_MARKER);
    const partial = await runs.getDirectoryHandle(id + PARTIAL_SUFFIX).catch(() => undefined);
    if (partial) {
      for (const name of files) {
        const file = await d.getFileHandle(name).catch(() => undefined);
        if (file) await (file as unknown as MovableHandle).move(partial).catch(() => undefined);
      }
      await outputs.removeEntry(id, { recursive: true }).catch(() => undefined);
      result.restored.push(id);
      continue;
    }
    const legacy = !names.includes(OUTPUT_MANIFEST) && !names.includes(DELETING_MARKER) && files.length > 0;
    if (legacy) {
      const infos: OutputFileInfo[] = [];
      let committedAt = 0;
      for (const name of files) {
        const file = await (await d.getFileHandle(name)).getFile();
        infos.push({ name, size: file.size });
        committedAt = Math.max(committedAt, file.lastModified);
      }
      await writeManifest(d, { id, files: infos, committedAt });
      result.adopted.push(id);
      continue;
    }
    await outputs.removeEntry(id, { recursive: true }).catch(() => undefined);
    result.removed.push(id);
  }
  return result;
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
