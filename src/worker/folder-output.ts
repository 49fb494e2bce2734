/**
 * Merge output written straight into a folder on the user's computer (File System Access API), so
 * nothing is copied through browser storage.
 *
 * The run creates one new subfolder of the folder the user picked, under a name no entry there has
 * (an earlier output is never written over). Each file is streamed through `createWritable` under a
 * temporary name (`.model-00001-of-00002.safetensors.l2s-partial`); `commit` renames every file to
 * its final name, so a folder whose files all have their final names is a finished output.
 * Renaming uses `FileSystemFileHandle.move(newName)`; a browser without `move` gets each file
 * copied to its final name and the temporary file removed (twice the writes, same result).
 * `abort` (failure, cancel) removes the subfolder, which holds only what the run wrote.
 *
 * Resumable: a `createWritable` stream keeps what it is given in a swap file until it is closed, so
 * a reload loses everything written since the stream was opened. `flush` (called by the engine after
 * each finished tensor) therefore checkpoints the file now and then: it closes the stream, which
 * makes the bytes so far the file's, and opens it again with `keepExistingData`, which the browser
 * serves by copying the file into a new swap file. A checkpoint is taken once the bytes written
 * since the last one are at least the file's size then (and `CHECKPOINT_MIN_BYTES`), so the copies
 * add up to at most the file's final size. `durable()` says whether everything written so far has
 * been checkpointed (or closed): only then may the journal count the tensors as written. After a
 * reload `openFolderOutput` reopens the run's subfolder, and `reopenFile` opens a temporary file
 * with its existing data, cuts it to the last recorded tensor's end and appends from there.
 */
import type { FileSink, OutputTarget } from '../engine/io';
import type { OutputFileInfo } from './opfs-output';
import { writePace } from './opfs-output';

export const PARTIAL_FILE_SUFFIX = '.l2s-partial';
/** Chromium writes a createWritable stream into `<name>.crswap` and swaps it in on close. */
const BROWSER_SWAP_SUFFIX = '.crswap';

export function partialFileName(name: string): string {
  return `.${name}${PARTIAL_FILE_SUFFIX}`;
}

export class OutputFolderError extends Error {
  override name = 'OutputFolderError';
}

export interface FolderOutputTarget {
  parent: FileSystemDirectoryHandle;
  /** The subfolder the run creates in `parent`. */
  name: string;
}

export interface FolderOutput extends OutputTarget {
  readonly target: FolderOutputTarget;
  reopenFile(name: string, keepBytes: number): Promise<FileSink>;
  /** Whether every byte written so far would survive a reload (see the checkpoints above). */
  durable(): boolean;
  /** The finished files and their sizes (after `commit`). */
  files(): Promise<OutputFileInfo[]>;
}

/** Chromium's handles can be renamed; the DOM typings do not have it yet. */
interface RenamableHandle {
  move?(newName: string): Promise<void>;
}

function isPlainName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !/[/\\]/.test(name);
}

async function entryNames(d: FileSystemDirectoryHandle): Promise<string[]> {
  const names: string[] = [];
  for await (const key of (d as unknown as { keys(): AsyncIterable<string> }).keys()) names.push(key);
  return names.sort();
}

/** `base`, else `base-2`, `base-3`, ...: the first name no file or folder in `parent` has. */
export async function freeFolderName(parent: FileSystemDirectoryHandle, base: string): Promise<string> {
  if (!isPlainName(base)) throw new OutputFolderError(`'${base}' is not a plain folder name`);
  const taken = new Set(await entryNames(parent));
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) if (!taken.has(`${base}-${i}`)) return `${base}-${i}`;
}

/**
 * A checkpoint is not taken for fewer bytes than this: below it the copy the reopening costs is
 * small anyway, and a tiny model still gets checkpoints inside a shard.
 */
export const CHECKPOINT_MIN_BYTES = 1 << 20;

/** Creates the run's subfolder; refuses when anything of that name is already there. */
export async function createFolderOutput(target: FolderOutputTarget): Promise<FolderOutput> {
  const { parent, name } = target;
  const where = `${parent.name}/${name}`;
  if (!isPlainName(name)) throw new OutputFolderError(`'${name}' is not a plain folder name`);
  if ((await entryNames(parent)).includes(name)) {
    throw new OutputFolderError(
      `${where} already exists; a merge never writes over an earlier output. Choose another name or folder.`,
    );
  }
  return folderOutput(target, await parent.getDirectoryHandle(name, { create: true }));
}

/**
 * The subfolder of an interrupted run, to continue writing into it (`reopenFile`). Fails with an
 * OutputFolderError when the subfolder is gone.
 */
export async function openFolderOutput(target: FolderOutputTarget): Promise<FolderOutput> {
  const folder = await subfolder(target);
  if (!folder) {
    throw new OutputFolderError(
      `${target.parent.name}/${target.name} is gone (moved, renamed or deleted), so its partial files cannot be continued`,
    );
  }
  return folderOutput(target, folder);
}

/**
 * The temporary files of an interrupted run's subfolder by final name, with their sizes;
 * undefined when the subfolder is gone.
 */
export async function partialFolderFiles(target: FolderOutputTarget): Promise<OutputFileInfo[] | undefined> {
  const folder = await subfolder(target);
  if (!folder) return undefined;
  const files: OutputFileInfo[] = [];
  for (const entry of await entryNames(folder)) {
    const finalName = finalNameOf(entry);
    if (finalName === undefined) continue;
    files.push({ name: finalName, size: (await (await folder.getFileHandle(entry)).getFile()).size });
  }
  return files;
}

async function subfolder(target: FolderOutputTarget): Promise<FileSystemDirectoryHandle | undefined> {
  try {
    return await target.parent.getDirectoryHandle(target.name);
  } catch (e) {
    if (e instanceof DOMException && (e.name === 'NotFoundError' || e.name === 'TypeMismatchError')) {
      return undefined;
    }
    throw e;
  }
}

/** The final name a temporary file stands for (`.NAME.l2s-partial` -> NAME); undefined for others. */
function finalNameOf(entry: string): string | undefined {
  if (!entry.startsWith('.') || !entry.endsWith(PARTIAL_FILE_SUFFIX)) return undefined;
  const name = entry.slice(1, -PARTIAL_FILE_SUFFIX.length);
  return isPlainName(name) ? name : undefined;
}

function folderOutput(target: FolderOutputTarget, folder: FileSystemDirectoryHandle): FolderOutput {
  const { parent, name } = target;
  const where = `${parent.name}/${name}`;
  /** Final name -> the temporary file holding it, in the order written (this session). */
  const written = new Map<string, FileSystemFileHandle>();
  /** The files' streams open now; `pending` counts the bytes a reload would lose. */
  const open = new Set<{ stream: FileSystemWritableFileStream; pending: number }>();
  let finished = false;
  /** The final names committed (files() lists them). */
  let committed: string[] = [];

  const checkName = (file: string) => {
    if (finished) throw new OutputFolderError(`${where}: cannot add ${file} after the run ended`);
    if (!isPlainName(file)) throw new OutputFolderError(`${where}: '${file}' is not a plain file name`);
  };

  const rename = async (finalName: string, temp: FileSystemFileHandle): Promise<void> => {
    const movable = temp as unknown as RenamableHandle;
    if (typeof movable.move === 'function') {
      await movable.move(finalName);
      return;
    }
    const final = await folder.getFileHandle(finalName, { create: true });
    await (await temp.getFile()).stream().pipeTo(await final.createWritable());
    await folder.removeEntry(temp.name);
  };

  /** A sink over `handle`'s stream, which starts at byte `start` (the bytes before it are the file's). */
  const sink = (
    handle: FileSystemFileHandle,
    first: FileSystemWritableFileStream,
    start: number,
  ): FileSink => {
    const state = { stream: first, pending: 0 };
    open.add(state);
    /** The file's size at the last checkpoint (or when the stream was opened). */
    let durableBytes = start;
    let position = start;
    return {
      async write(bytes) {
        await writePace();
        await state.stream.write(bytes as Uint8Array<ArrayBuffer>);
        position += bytes.byteLength;
        state.pending += bytes.byteLength;
      },
      async flush() {
        if (!open.has(state)) return;
        if (state.pending < Math.max(CHECKPOINT_MIN_BYTES, durableBytes)) return;
        await state.stream.close();
        state.stream = await handle.createWritable({ keepExistingData: true });
        await state.stream.seek(position);
        durableBytes = position;
        state.pending = 0;
      },
      async close() {
        if (!open.has(state)) return;
        open.delete(state);
        await state.stream.close();
      },
    };
  };

  return {
    target,
    async createFile(file: string): Promise<FileSink> {
      checkName(file);
      if (written.has(file)) throw new OutputFolderError(`${where}: ${file} is written twice`);
      const handle = await folder.getFileHandle(partialFileName(file), { create: true });
      written.set(file, handle);
      return sink(handle, await handle.createWritable({ keepExistingData: false }), 0);
    },

    async reopenFile(file: string, keepBytes: number): Promise<FileSink> {
      checkName(file);
      let handle: FileSystemFileHandle;
      try {
        handle = await folder.getFileHandle(partialFileName(file));
      } catch {
        throw new OutputFolderError(`${where}: ${partialFileName(file)} is gone, so the run cannot continue`);
      }
      const size = (await handle.getFile()).size;
      if (size < keepBytes) {
        throw new OutputFolderError(
          `${where}: ${partialFileName(file)} holds ${size} bytes, fewer than the ${keepBytes} already recorded as written`,
        );
      }
      const stream = await handle.createWritable({ keepExistingData: true });
      // Bytes past the last recorded tensor belong to a tensor that never finished.
      await stream.truncate(keepBytes);
      await stream.seek(keepBytes);
      written.set(file, handle);
      return sink(handle, stream, keepBytes);
    },

    durable() {
      return [...open].every((s) => s.pending === 0);
    },

    async commit() {
      if (finished) throw new OutputFolderError(`${where}: the run already ended`);
      for (const state of [...open]) {
        open.delete(state);
        await state.stream.close();
      }
      // Every temporary file of the subfolder: a resumed run's earlier shards were written before the reload.
      const entries = await entryNames(folder);
      const names: string[] = [];
      for (const entry of entries) {
        const finalName = finalNameOf(entry);
        if (finalName === undefined) continue;
        await rename(finalName, await folder.getFileHandle(entry));
        names.push(finalName);
      }
      // Swap files a stream cut off by a reload left behind.
      for (const entry of entries) {
        if (isPartialEntry(entry) && finalNameOf(entry) === undefined) {
          await folder.removeEntry(entry).catch(() => undefined);
        }
      }
      committed = names;
      finished = true;
    },

    async abort() {
      if (finished) return;
      finished = true;
      for (const state of open) await state.stream.abort().catch(() => undefined);
      open.clear();
      await parent.removeEntry(name, { recursive: true }).catch(() => undefined);
    },

    async files() {
      const out: OutputFileInfo[] = [];
      for (const file of committed) {
        out.push({ name: file, size: (await (await folder.getFileHandle(file)).getFile()).size });
      }
      return out.sort((a, b) => a.name.localeCompare(b.name));
    },
  };
}

/** Whether `name` is something a run in progress writes (its temporary files, the browser's swaps). */
export function isPartialEntry(name: string): boolean {
  return (
    name.endsWith(PARTIAL_FILE_SUFFIX) ||
    (name.endsWith(BROWSER_SWAP_SUFFIX) &&
      name.slice(0, -BROWSER_SWAP_SUFFIX.length).endsWith(PARTIAL_FILE_SUFFIX))
  );
}

/**
 * What a run's subfolder holds: nothing (gone), its temporary files (a run under way or cut short),
 * or only final names (a committed output). Reading it needs the folder's permission.
 */
export async function folderOutputState(
  target: FolderOutputTarget,
): Promise<'absent' | 'partial' | 'finished'> {
  const folder = await subfolder(target);
  if (!folder) return 'absent';
  const entries = await entryNames(folder);
  return entries.length > 0 && !entries.some(isPartialEntry) ? 'finished' : 'partial';
}

/**
 * Removes the subfolder of a run that was cancelled (its worker terminated) or cut short by a
 * reload, but only while it holds nothing but that run's temporary files: a finished output (final
 * names) or anything the user put there is left alone. Retries for `waitMs` while a terminated
 * worker's streams still hold files. Returns what it did.
 */
export async function removePartialFolderOutput(
  target: FolderOutputTarget,
  waitMs = 0,
): Promise<'removed' | 'absent' | 'kept'> {
  const folder = await subfolder(target);
  if (!folder) return 'absent';
  if (!(await entryNames(folder)).every(isPartialEntry)) return 'kept';
  const deadline = performance.now() + waitMs;
  for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
    try {
      await target.parent.removeEntry(target.name, { recursive: true });
      return 'removed';
    } catch (e) {
      if (e instanceof DOMException && e.name === 'NotFoundError') return 'absent';
      if (performance.now() >= deadline) {
        throw new OutputFolderError(
          `${target.parent.name}/${target.name} is still held by the stopped merge; delete it yourself or reload and try again`,
        );
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
