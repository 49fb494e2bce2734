/**
 * Models read in place from a folder the user linked (File System Access API): the library keeps
 * the folder's FileSystemDirectoryHandle (IndexedDB stores handles as they are) and the size and
 * lastModified of every model file at link time, never the bytes.
 *
 * A browser asks for permission again after a reload: `queryPermission` answers 'prompt' until the
 * page calls `requestPermission` from a click. A file whose size or lastModified differs from the
 * one recorded (or that is gone) may hold other weights than the ones summarized and checked, so a
 * merge refuses the model until the user re-links it.
 */
import type { ModelFiles } from '../engine/io';
import { blobByteSource } from '../formats/byte-source';
import { type FolderFile, selectModelFiles } from './import-folder';

export interface LinkedFile {
  name: string;
  size: number;
  /** File.lastModified at link time (ms since the epoch). */
  lastModified: number;
}

export interface LinkedFolder {
  handle: FileSystemDirectoryHandle;
  files: LinkedFile[];
}

export type LinkChange =
  | { file: string; kind: 'missing' }
  | { file: string; kind: 'size'; was: number; now: number }
  | { file: string; kind: 'modified'; was: number; now: number };

export type LinkState =
  | { state: 'ready' }
  /** The browser needs the user's permission to read the folder again (after a reload). */
  | { state: 'permission' }
  | { state: 'changed'; changes: LinkChange[] };

/** The permission calls of FileSystemHandle (Chromium); the DOM typings do not have them yet. */
interface PermissionHandle {
  queryPermission?(descriptor: { mode: 'read' | 'readwrite' }): Promise<PermissionState>;
  requestPermission?(descriptor: { mode: 'read' | 'readwrite' }): Promise<PermissionState>;
}

/** Reading the linked folder needs the user's permission again. */
export class LinkPermissionError extends Error {
  override name = 'LinkPermissionError';
  constructor(
    readonly model: string,
    readonly folder: string,
  ) {
    super(
      `${model}: this browser needs your permission again to read the linked folder ${folder} ` +
        '(it asks after a reload). Press "Allow reading" beside the model in the library, then try again.',
    );
  }
}

/** Files of a linked folder differ from the ones recorded when it was linked. */
export class LinkedFolderChangedError extends Error {
  override name = 'LinkedFolderChangedError';
  constructor(
    readonly model: string,
    readonly changes: readonly LinkChange[],
  ) {
    super(
      `${model}: the linked folder changed since it was linked (${changes.map(describeLinkChange).join('; ')}), ` +
        'so it was not read. If the folder holds the model you mean, press "Re-link" beside it in the library ' +
        'to accept the files as they are now; otherwise put the original files back.',
    );
  }
}

export function describeLinkChange(change: LinkChange): string {
  switch (change.kind) {
    case 'missing':
      return `${change.file} is missing`;
    case 'size':
      return `${change.file} is ${change.now} bytes, was ${change.was}`;
    case 'modified':
      return `${change.file} was modified at ${new Date(change.now).toISOString()} (linked: ${new Date(change.was).toISOString()})`;
  }
}

/** 'granted' where the browser has no permission calls (nothing to ask). */
export async function folderPermission(
  handle: FileSystemHandle,
  mode: 'read' | 'readwrite' = 'read',
): Promise<PermissionState> {
  const h = handle as unknown as PermissionHandle;
  if (typeof h.queryPermission !== 'function') return 'granted';
  return h.queryPermission({ mode });
}

/** Asks the user (only from a click or key press in the page); true when granted. */
export async function requestFolderPermission(
  handle: FileSystemHandle,
  mode: 'read' | 'readwrite' = 'read',
): Promise<boolean> {
  const h = handle as unknown as PermissionHandle;
  if ((await folderPermission(handle, mode)) === 'granted') return true;
  if (typeof h.requestPermission !== 'function') return false;
  return (await h.requestPermission({ mode })) === 'granted';
}

function isPermissionError(e: unknown): boolean {
  return e instanceof DOMException && (e.name === 'NotAllowedError' || e.name === 'SecurityError');
}

/** The top-level files of a folder the library keeps (as a copy import would), with their Files. */
export async function modelFilesOfFolder(handle: FileSystemDirectoryHandle): Promise<FolderFile[]> {
  const files: FolderFile[] = [];
  for await (const entry of (handle as unknown as { values(): AsyncIterable<FileSystemHandle> }).values()) {
    if (entry.kind !== 'file') continue;
    files.push({ name: entry.name, blob: await (entry as FileSystemFileHandle).getFile() });
  }
  return selectModelFiles(handle.name, files);
}

/** What a link records of the folder now. */
export async function recordLinkedFiles(handle: FileSystemDirectoryHandle): Promise<LinkedFile[]> {
  return (await modelFilesOfFolder(handle)).map((f) => ({
    name: f.name,
    size: f.blob.size,
    lastModified: (f.blob as File).lastModified,
  }));
}

async function currentFile(handle: FileSystemDirectoryHandle, name: string): Promise<File | undefined> {
  try {
    return await (await handle.getFileHandle(name)).getFile();
  } catch (e) {
    if (e instanceof DOMException && (e.name === 'NotFoundError' || e.name === 'TypeMismatchError')) {
      return undefined;
    }
    throw e;
  }
}

function changeOf(recorded: LinkedFile, file: File | undefined): LinkChange | undefined {
  if (!file) return { file: recorded.name, kind: 'missing' };
  if (file.size !== recorded.size) {
    return { file: recorded.name, kind: 'size', was: recorded.size, now: file.size };
  }
  if (file.lastModified !== recorded.lastModified) {
    return { file: recorded.name, kind: 'modified', was: recorded.lastModified, now: file.lastModified };
  }
  return undefined;
}

/** Permission first (nothing can be read without it), then every recorded file's size and mtime. */
export async function linkState(folder: LinkedFolder): Promise<LinkState> {
  if ((await folderPermission(folder.handle)) !== 'granted') return { state: 'permission' };
  const changes: LinkChange[] = [];
  try {
    for (const recorded of folder.files) {
      const change = changeOf(recorded, await currentFile(folder.handle, recorded.name));
      if (change) changes.push(change);
    }
  } catch (e) {
    if (isPermissionError(e)) return { state: 'permission' };
    throw e;
  }
  return changes.length > 0 ? { state: 'changed', changes } : { state: 'ready' };
}

/**
 * A linked model as the engine reads it. Opening it checks the whole folder (so every changed file
 * is named at once); each file is checked again as it is opened, since the folder may change later.
 */
export async function linkedModelFiles(name: string, folder: LinkedFolder): Promise<ModelFiles> {
  const state = await linkState(folder);
  if (state.state === 'permission') throw new LinkPermissionError(name, folder.handle.name);
  if (state.state === 'changed') throw new LinkedFolderChangedError(name, state.changes);
  const byName = new Map(folder.files.map((f) => [f.name, f]));
  return {
    name,
    files: () => folder.files.map((f) => f.name),
    async open(file) {
      const recorded = byName.get(file);
      if (!recorded) throw new LinkedFolderChangedError(name, [{ file, kind: 'missing' }]);
      let current: File | undefined;
      try {
        current = await currentFile(folder.handle, file);
      } catch (e) {
        if (isPermissionError(e)) throw new LinkPermissionError(name, folder.handle.name);
        throw e;
      }
      const change = changeOf(recorded, current);
      if (change) throw new LinkedFolderChangedError(name, [change]);
      // A File from getFile() is a snapshot: reading it after the file changes fails (NotReadableError).
      return blobByteSource(current as File, `${name}/${file}`);
    },
  };
}
