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
 * Not resumable: after a reload the folder may hold files the page cannot account for (a writable
 * stream cut off by a reload leaves nothing of its last writes), so an interrupted run into a folder
 * is offered as a fresh start instead (see `removePartialFolderOutput`).
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
  const folder = await parent.getDirectoryHandle(name, { create: true });
  /** Final name -> the temporary file holding it, in the order written. */
  const written = new Map<string, FileSystemFileHandle>();
  const open = new Set<FileSystemWritableFileStream>();
  let finished = false;

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

  return {
    target,
    async createFile(file: string): Promise<FileSink> {
      checkName(file);
      if (written.has(file)) throw new OutputFolderError(`${where}: ${file} is written twice`);
      const handle = await folder.getFileHandle(partialFileName(file), { create: true });
      const stream = await handle.createWritable({ keepExistingData: false });
      open.add(stream);
      written.set(file, handle);
      return {
        async write(bytes) {
          await writePace();
          await stream.write(bytes as Uint8Array<ArrayBuffer>);
        },
        async close() {
          if (!open.has(stream)) return;
          open.delete(stream);
          await stream.close();
        },
      };
    },

    async commit() {
      if (finished) throw new OutputFolderError(`${where}: the run already ended`);
      for (const stream of [...open]) {
        open.delete(stream);
        await stream.close();
      }
      for (const [finalName, temp] of written) await rename(finalName, temp);
      finished = true;
    },

    async abort() {
      if (finished) return;
      finished = true;
      for (const stream of open) await stream.abort().catch(() => undefined);
      open.clear();
      await parent.removeEntry(name, { recursive: true }).catch(() => undefined);
    },

    async files() {
      const out: OutputFileInfo[] = [];
      for (const file of written.keys()) {
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
 * Removes the subfolder of a run that was cancelled (its worker terminated) or cut short by a
 * reload, but only while it holds nothing but that run's temporary files: a finished output (final
 * names) or anything the user put there is left alone. Retries for `waitMs` while a terminated
 * worker's streams still hold files. Returns what it did.
 */
export async function removePartialFolderOutput(
  target: FolderOutputTarget,
  waitMs = 0,
): Promise<'removed' | 'absent' | 'kept'> {
  let folder: FileSystemDirectoryHandle;
  try {
    folder = await target.parent.getDirectoryHandle(target.name);
  } catch (e) {
    if (e instanceof DOMException && (e.name === 'NotFoundError' || e.name === 'TypeMismatchError')) {
      return 'absent';
    }
    throw e;
  }
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
