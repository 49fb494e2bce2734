/**
 * The model library: models kept in the browser (IndexedDB) as chunk Blobs of at most 256 MiB.
 *
 * Keys of the one object store:
 * - `model:<id>`: a finished model's record; the library lists exactly these.
 * - `import:<id>`: an import under way, with per-file progress (chunks stored, hash state), so a
 *   download continues after a reload.
 * - `<id>/<file>/<i>`: chunk i of a file.
 * A model record is written only after every chunk of every file is stored, so a model is in the
 * library whole or not at all.
 */

import type { ModelFiles } from '../engine/io';
import type { ByteSource } from '../formats/byte-source';
import { readSafetensorsHeader } from '../formats/safetensors';
import { gitBlobSha1 } from './git-blob';
import type { KeyValueStore } from './kv';
import { type LinkedFolder, linkedModelFiles, recordLinkedFiles } from './linked-folder';
import { Sha256, type Sha256State } from './sha256';

/**
 * Largest chunk Blob. Chromium breaks on single Blobs of ~500 MiB created early after start-up, and
 * one IndexedDB put of 256 MiB takes about a second, so progress stays visible.
 */
export const MAX_CHUNK_BYTES = 256 * 1024 * 1024;

export type ModelSource =
  | { kind: 'folder' }
  | { kind: 'hub'; repo: string; revision: string }
  | { kind: 'merge'; recipe?: string }
  /** Read in place from a folder on the user's computer (see `ModelRecord.link`); nothing stored. */
  | { kind: 'linked' }
  /** The built-in demo's synthetic models (random weights generated in the page). */
  | { kind: 'demo' };

export interface StoredFile {
  name: string;
  size: number;
  chunks: number;
  /** Bytes of every chunk but the last. */
  chunkBytes: number;
  sha256?: string;
}

export interface ModelSummary {
  architecture?: string;
  /** torch_dtype from config.json, else the most common tensor dtype (e.g. `BF16`). */
  dtype?: string;
  tensorCount: number;
  totalBytes: number;
}

export interface ModelRecord {
  id: string;
  name: string;
  files: StoredFile[];
  summary: ModelSummary;
  source: ModelSource;
  createdAt: number;
  /** A linked model's folder and its files as they were at link time (`files` then have no chunks). */
  link?: LinkedFolder;
}

export interface PendingFile {
  name: string;
  size: number;
  /** The sha256 the file must have (the hub's LFS oid), checked when its last byte is stored. */
  expectedSha256?: string;
  /**
   * The git blob sha1 the file must have (the hub's oid of a file kept in git), checked when its
   * last byte is stored by reading the stored chunks back (such files are small: the hub keeps
   * files over 10 MB in LFS).
   */
  expectedGitSha1?: string;
  chunksDone: number;
  bytesDone: number;
  /** Hash of the bytes stored so far, so hashing continues after a reload. */
  hashState?: Sha256State;
  /** Set when the file is complete. */
  sha256?: string;
  done: boolean;
}

export interface PendingImport {
  id: string;
  name: string;
  source: ModelSource;
  /** Hub downloads continue after a reload; folder imports cannot (the files are gone) and are dropped. */
  resumable: boolean;
  chunkBytes: number;
  createdAt: number;
  files: PendingFile[];
}

/** The browser's storage is full; nothing of the import that hit it is left behind. */
export class StorageFullError extends Error {
  override name = 'StorageFullError';
  constructor(
    readonly file: string,
    readonly model: string,
  ) {
    super(
      `Browser storage is full while storing ${model}/${file}. The import was removed; delete models or ` +
        'outputs you no longer need, or allow more storage (press "Keep storage"), then import again.',
    );
  }
}

/** A downloaded file whose hash differs from the one the hub lists; its bytes were deleted. */
export class ChecksumMismatchError extends Error {
  override name = 'ChecksumMismatchError';
  constructor(
    readonly file: string,
    readonly expected: string,
    readonly actual: string,
    readonly algorithm: 'sha256' | 'git blob sha1' = 'sha256',
    /** What the user can do; an import that can be resumed by default. */
    advice = 'Resume the import to download it again.',
  ) {
    super(
      `${file}: ${algorithm} is ${actual} but the hub lists ${expected}; the file is corrupt and was deleted. ${advice}`,
    );
  }
}

export class ModelNotFoundError extends Error {
  override name = 'ModelNotFoundError';
}

export class LibraryError extends Error {
  override name = 'LibraryError';
}

const MODEL_PREFIX = 'model:';
const IMPORT_PREFIX = 'import:';

export function chunkKey(modelId: string, file: string, index: number): string {
  return `${modelId}/${file}/${index}`;
}

export function isQuotaError(e: unknown): boolean {
  return (
    e instanceof DOMException &&
    (e.name === 'QuotaExceededError' || (e.name === 'UnknownError' && /quota|space/i.test(e.message)))
  );
}

export class ModelLibrary {
  constructor(
    readonly kv: KeyValueStore,
    /** Chunk size of new imports; smaller only in tests that exercise chunk boundaries. */
    readonly chunkBytes = MAX_CHUNK_BYTES,
  ) {
    if (!(chunkBytes > 0 && chunkBytes <= MAX_CHUNK_BYTES)) {
      throw new RangeError(
        `chunk size must be between 1 byte and ${MAX_CHUNK_BYTES} bytes, got ${chunkBytes}`,
      );
    }
  }

  async list(): Promise<ModelRecord[]> {
    const ks = (await this.kv.keys()).filter((k) => k.startsWith(MODEL_PREFIX));
    const records = (await this.kv.getMany<ModelRecord>(ks)).filter((r): r is ModelRecord => r !== undefined);
    return records.sort((a, b) => a.createdAt - b.createdAt || a.name.localeCompare(b.name));
  }

  async get(id: string): Promise<ModelRecord | undefined> {
    return (await this.kv.getMany<ModelRecord>([MODEL_PREFIX + id]))[0];
  }

  async findByName(name: string): Promise<ModelRecord> {
    const models = await this.list();
    const found = models.find((m) => m.name === name);
    if (!found) {
      const names = models.map((m) => m.name).join(', ') || 'none';
      throw new ModelNotFoundError(`model '${name}' is not in the library (models there: ${names})`);
    }
    return found;
  }

  async pendingImports(): Promise<PendingImport[]> {
    const ks = (await this.kv.keys()).filter((k) => k.startsWith(IMPORT_PREFIX));
    const records = (await this.kv.getMany<PendingImport>(ks)).filter(
      (r): r is PendingImport => r !== undefined,
    );
    return records.sort((a, b) => a.createdAt - b.createdAt);
  }

  /** Removes a model and every chunk of it; a linked model's link only (its folder is not touched). */
  async delete(id: string): Promise<void> {
    const record = await this.get(id);
    if (!record) return;
    const chunkKeys = record.files.flatMap((f) =>
      Array.from({ length: f.chunks }, (_, i) => chunkKey(id, f.name, i)),
    );
    await this.kv.write([], [MODEL_PREFIX + id, ...chunkKeys]);
  }

  /**
   * Removes an unfinished import: its progress record and every key stored under its id (its chunks,
   * and a hub copy's pieces). A finished model of that id is left alone. Returns whether the import
   * was still unfinished (false: it had become a model, or was gone already).
   */
  async discardPendingImport(id: string): Promise<boolean> {
    if (await this.get(id)) return false;
    const keys = (await this.kv.keys()).filter((k) => k === IMPORT_PREFIX + id || k.startsWith(`${id}/`));
    if (keys.length > 0) await this.kv.write([], keys);
    return keys.includes(IMPORT_PREFIX + id);
  }

  /**
   * Chunks of imports that never finished and cannot continue (folder imports interrupted by a
   * reload), and chunks no record refers to. Returns the number of keys removed.
   */
  async removeAbandoned(keepImportIds: readonly string[] = []): Promise<number> {
    const all = await this.kv.keys();
    const pending = await this.pendingImports();
    const dropped = new Set(
      pending.filter((p) => !p.resumable && !keepImportIds.includes(p.id)).map((p) => p.id),
    );
    const live = new Set<string>();
    for (const k of all) {
      if (k.startsWith(MODEL_PREFIX)) live.add(k.slice(MODEL_PREFIX.length));
    }
    for (const p of pending) if (!dropped.has(p.id)) live.add(p.id);
    const remove = all.filter((k) => {
      if (k.startsWith(MODEL_PREFIX)) return false;
      if (k.startsWith(IMPORT_PREFIX)) return dropped.has(k.slice(IMPORT_PREFIX.length));
      return !live.has(k.slice(0, k.indexOf('/')));
    });
    if (remove.length > 0) await this.kv.write([], remove);
    return remove.length;
  }

  /** A name not taken by a model or an import under way: `name`, else `name-2`, `name-3`, ... */
  async uniqueName(name: string): Promise<string> {
    const taken = new Set([
      ...(await this.list()).map((m) => m.name),
      ...(await this.pendingImports()).map((p) => p.name),
    ]);
    if (!taken.has(name)) return name;
    for (let i = 2; ; i++) if (!taken.has(`${name}-${i}`)) return `${name}-${i}`;
  }

  async beginImport(init: {
    name: string;
    source: ModelSource;
    resumable: boolean;
    files: readonly { name: string; size: number; expectedSha256?: string; expectedGitSha1?: string }[];
  }): Promise<ModelImport> {
    if (init.files.length === 0) throw new LibraryError(`${init.name}: nothing to import`);
    const names = new Set<string>();
    for (const f of init.files) {
      if (names.has(f.name)) throw new LibraryError(`${init.name}: file ${f.name} is listed twice`);
      names.add(f.name);
    }
    const pending: PendingImport = {
      id: crypto.randomUUID(),
      name: await this.uniqueName(init.name),
      source: init.source,
      resumable: init.resumable,
      chunkBytes: this.chunkBytes,
      createdAt: Date.now(),
      files: init.files.map((f) => ({
        name: f.name,
        size: f.size,
        expectedSha256: f.expectedSha256?.toLowerCase(),
        expectedGitSha1: f.expectedGitSha1?.toLowerCase(),
        chunksDone: 0,
        bytesDone: 0,
        hashState: new Sha256().state(),
        done: false,
      })),
    };
    await this.kv.write([[IMPORT_PREFIX + pending.id, pending]]);
    return new ModelImport(this, pending);
  }

  async resumeImport(id: string): Promise<ModelImport> {
    const pending = (await this.kv.getMany<PendingImport>([IMPORT_PREFIX + id]))[0];
    if (!pending) throw new LibraryError(`no import ${id} is under way`);
    return new ModelImport(this, pending);
  }

  async openModel(idOrName: { id: string } | { name: string }): Promise<ModelFiles> {
    const record = 'id' in idOrName ? await this.get(idOrName.id) : await this.findByName(idOrName.name);
    if (!record)
      throw new ModelNotFoundError(`model ${'id' in idOrName ? idOrName.id : ''} is not in the library`);
    if (record.link) return linkedModelFiles(record.name, record.link);
    return storedModelFiles(this.kv, record);
  }

  /**
   * Adds a folder on the user's computer as a model read in place: only the folder's handle and
   * its files' sizes and mtimes are stored. The same folder linked twice is refused.
   */
  async link(handle: FileSystemDirectoryHandle, name: string = handle.name): Promise<ModelRecord> {
    for (const other of await this.list()) {
      if (other.link && (await other.link.handle.isSameEntry(handle))) {
        throw new LibraryError(`the folder ${handle.name} is already linked as ${other.name}`);
      }
    }
    const record = await this.linkedRecord(crypto.randomUUID(), await this.uniqueName(name), handle);
    await this.kv.write([[MODEL_PREFIX + record.id, record]]);
    return record;
  }

  /** Accepts a linked folder's files as they are now (after "Changed since linking"). */
  async relink(id: string): Promise<ModelRecord> {
    const old = await this.get(id);
    if (!old?.link) throw new ModelNotFoundError(`no linked model ${id} is in the library`);
    const record = await this.linkedRecord(id, old.name, old.link.handle);
    record.createdAt = old.createdAt;
    await this.kv.write([[MODEL_PREFIX + id, record]]);
    return record;
  }

  private async linkedRecord(
    id: string,
    name: string,
    handle: FileSystemDirectoryHandle,
  ): Promise<ModelRecord> {
    const link: LinkedFolder = { handle, files: await recordLinkedFiles(handle) };
    const summary = await summarizeModel(await linkedModelFiles(name, link));
    return {
      id,
      name,
      files: link.files.map((f) => ({ name: f.name, size: f.size, chunks: 0, chunkBytes: 0 })),
      summary,
      source: { kind: 'linked' },
      createdAt: Date.now(),
      link,
    };
  }
}

/** Writes one model's chunks; the model appears in the library when `finish` succeeds. */
export class ModelImport {
  constructor(
    private readonly library: ModelLibrary,
    readonly pending: PendingImport,
  ) {}

  get id(): string {
    return this.pending.id;
  }

  get name(): string {
    return this.pending.name;
  }

  file(name: string): PendingFile {
    const f = this.pending.files.find((x) => x.name === name);
    if (!f) throw new LibraryError(`${this.name}: ${name} is not part of this import`);
    return f;
  }

  /**
   * Stores the next chunk of `fileName` and its progress in one transaction. `data` must be a whole
   * chunk (`chunkBytes`), or the rest of the file. `hashed` says the bytes were already fed to the
   * file's hash (hub downloads hash while streaming); otherwise they are read and hashed here only
   * when the file has an expected sha256.
   */
  async appendChunk(fileName: string, data: Blob, hash?: Sha256): Promise<void> {
    const f = this.file(fileName);
    const remaining = f.size - f.bytesDone;
    if (f.done) throw new LibraryError(`${this.name}/${fileName}: file is already complete`);
    if (data.size !== Math.min(this.pending.chunkBytes, remaining) || data.size === 0) {
      throw new LibraryError(
        `${this.name}/${fileName}: chunk ${f.chunksDone} has ${data.size} bytes, expected ${Math.min(this.pending.chunkBytes, remaining)}`,
      );
    }
    let hasher = hash;
    if (!hasher && f.expectedSha256) {
      hasher = new Sha256(f.hashState);
      await hashBlob(data, hasher);
    }
    const next: PendingFile = {
      ...f,
      chunksDone: f.chunksDone + 1,
      bytesDone: f.bytesDone + data.size,
      hashState: hasher?.state(),
    };
    const complete = next.bytesDone === f.size;
    if (complete) {
      next.done = true;
      next.hashState = undefined;
      if (hasher) next.sha256 = hasher.hex();
    }
    if (complete && f.expectedSha256 && next.sha256 !== f.expectedSha256) {
      await this.discardFile(f);
      throw new ChecksumMismatchError(`${this.name}/${fileName}`, f.expectedSha256, next.sha256 ?? '');
    }
    if (complete && f.expectedGitSha1) {
      const earlier = await this.storedChunks(f);
      const sha1 = await gitBlobSha1(new Blob([...earlier, data]));
      if (sha1 !== f.expectedGitSha1) {
        await this.discardFile(f);
        throw new ChecksumMismatchError(`${this.name}/${fileName}`, f.expectedGitSha1, sha1, 'git blob sha1');
      }
    }
    const updated = this.withFile(next);
    try {
      await this.library.kv.write([
        [chunkKey(this.id, fileName, f.chunksDone), data],
        [IMPORT_PREFIX + this.id, updated],
      ]);
    } catch (e) {
      if (isQuotaError(e)) {
        await this.abort();
        throw new StorageFullError(fileName, this.name);
      }
      throw e;
    }
    Object.assign(f, next);
  }

  /** Stores a file with no bytes (the engine writes none, but configs may be empty). */
  async completeEmptyFile(fileName: string): Promise<void> {
    const f = this.file(fileName);
    if (f.size !== 0) throw new LibraryError(`${this.name}/${fileName}: file is not empty`);
    const sha = new Sha256().hex();
    if (f.expectedSha256 && f.expectedSha256 !== sha) {
      throw new ChecksumMismatchError(`${this.name}/${fileName}`, f.expectedSha256, sha);
    }
    const sha1 = f.expectedGitSha1 ? await gitBlobSha1(new Blob([])) : undefined;
    if (f.expectedGitSha1 && sha1 !== f.expectedGitSha1) {
      throw new ChecksumMismatchError(
        `${this.name}/${fileName}`,
        f.expectedGitSha1,
        sha1 ?? '',
        'git blob sha1',
      );
    }
    const next = { ...f, done: true, sha256: sha, hashState: undefined };
    await this.library.kv.write([[IMPORT_PREFIX + this.id, this.withFile(next)]]);
    Object.assign(f, next);
  }

  /** Makes the model visible in the library; every file must be complete. */
  async finish(): Promise<ModelRecord> {
    const missing = this.pending.files.filter((f) => !f.done);
    if (missing.length > 0) {
      throw new LibraryError(`${this.name}: ${missing.map((f) => f.name).join(', ')} not fully stored yet`);
    }
    const files: StoredFile[] = this.pending.files.map((f) => ({
      name: f.name,
      size: f.size,
      chunks: f.chunksDone,
      chunkBytes: this.pending.chunkBytes,
      ...(f.sha256 ? { sha256: f.sha256 } : {}),
    }));
    const record: ModelRecord = {
      id: this.id,
      name: this.name,
      files,
      summary: { tensorCount: 0, totalBytes: 0 },
      source: this.pending.source,
      createdAt: Date.now(),
    };
    record.summary = await summarizeModel(storedModelFiles(this.library.kv, record));
    await this.library.kv.write([[MODEL_PREFIX + this.id, record]], [IMPORT_PREFIX + this.id]);
    return record;
  }

  /** Removes every chunk stored so far and the progress record. */
  async abort(): Promise<void> {
    const chunkKeys = this.pending.files.flatMap((f) =>
      Array.from({ length: f.chunksDone }, (_, i) => chunkKey(this.id, f.name, i)),
    );
    await this.library.kv.write([], [IMPORT_PREFIX + this.id, ...chunkKeys]);
  }

  /** The chunks of `f` stored so far, in order. */
  private async storedChunks(f: PendingFile): Promise<Blob[]> {
    const keys = Array.from({ length: f.chunksDone }, (_, i) => chunkKey(this.id, f.name, i));
    const chunks = await this.library.kv.getMany<Blob>(keys);
    const missing = chunks.indexOf(undefined);
    if (missing >= 0) {
      throw new LibraryError(`${this.name}/${f.name}: chunk ${missing} is missing from browser storage`);
    }
    return chunks as Blob[];
  }

  private withFile(next: PendingFile): PendingImport {
    return { ...this.pending, files: this.pending.files.map((x) => (x.name === next.name ? next : x)) };
  }

  private async discardFile(f: PendingFile): Promise<void> {
    const reset: PendingFile = {
      ...f,
      chunksDone: 0,
      bytesDone: 0,
      hashState: new Sha256().state(),
      done: false,
    };
    reset.sha256 = undefined;
    const chunkKeys = Array.from({ length: f.chunksDone }, (_, i) => chunkKey(this.id, f.name, i));
    await this.library.kv.write([[IMPORT_PREFIX + this.id, this.withFile(reset)]], chunkKeys);
    Object.assign(f, reset);
  }
}

/** Feeds a Blob to a hash in slices, so a 256 MiB chunk is never one buffer. */
export async function hashBlob(blob: Blob, hash: Sha256, sliceBytes = 8 * 1024 * 1024): Promise<void> {
  for (let at = 0; at < blob.size; at += sliceBytes) {
    hash.update(new Uint8Array(await blob.slice(at, Math.min(at + sliceBytes, blob.size)).arrayBuffer()));
  }
}

/** Random access across a file's chunks; a read spanning a boundary is stitched from slices. */
export function chunkedByteSource(chunks: readonly Blob[], chunkBytes: number, name: string): ByteSource {
  const size = chunks.reduce((s, c) => s + c.size, 0);
  for (let i = 0; i < chunks.length - 1; i++) {
    if (chunks[i].size !== chunkBytes) {
      throw new LibraryError(`${name}: chunk ${i} has ${chunks[i].size} bytes, expected ${chunkBytes}`);
    }
  }
  return {
    name,
    size,
    blobs: { chunks, chunkBytes },
    async read(offset, length) {
      if (offset < 0 || length < 0 || offset + length > size) {
        throw new RangeError(
          `${name}: read of ${length} bytes at ${offset} is outside the file (${size} bytes)`,
        );
      }
      const first = Math.floor(offset / chunkBytes);
      const end = offset + length;
      if (length === 0) return new Uint8Array(0);
      if (Math.floor((end - 1) / chunkBytes) === first) {
        const at = offset - first * chunkBytes;
        return new Uint8Array(await chunks[first].slice(at, at + length).arrayBuffer());
      }
      const out = new Uint8Array(length);
      let pos = offset;
      while (pos < end) {
        const i = Math.floor(pos / chunkBytes);
        const at = pos - i * chunkBytes;
        const take = Math.min(chunkBytes - at, end - pos);
        out.set(new Uint8Array(await chunks[i].slice(at, at + take).arrayBuffer()), pos - offset);
        pos += take;
      }
      return out;
    },
  };
}

/** A library model as the engine reads it. */
export function storedModelFiles(kv: KeyValueStore, record: ModelRecord): ModelFiles {
  const byName = new Map(record.files.map((f) => [f.name, f]));
  return {
    name: record.name,
    files: () => record.files.map((f) => f.name),
    async open(file) {
      const stored = byName.get(file);
      if (!stored) throw new ModelNotFoundError(`${record.name}/${file}: no such file in the library model`);
      const keysOfFile = Array.from({ length: stored.chunks }, (_, i) => chunkKey(record.id, file, i));
      const chunks = await kv.getMany<Blob>(keysOfFile);
      const missing = chunks.indexOf(undefined);
      if (missing >= 0) {
        throw new LibraryError(
          `${record.name}/${file}: chunk ${missing} is missing from browser storage; re-import it`,
        );
      }
      return chunkedByteSource(chunks as Blob[], stored.chunkBytes, `${record.name}/${file}`);
    },
  };
}

/** Architecture and dtype from config.json; tensor count and dtypes from the safetensors headers. */
export async function summarizeModel(model: ModelFiles): Promise<ModelSummary> {
  const names = model.files();
  let totalBytes = 0;
  let architecture: string | undefined;
  let dtype: string | undefined;
  let tensorCount = 0;
  const dtypeCounts = new Map<string, number>();
  for (const name of names) {
    const source = await model.open(name);
    totalBytes += source.size;
    if (name === 'config.json') {
      try {
        const config = JSON.parse(new TextDecoder().decode(await source.read(0, source.size)));
        if (Array.isArray(config.architectures) && typeof config.architectures[0] === 'string') {
          architecture = config.architectures[0];
        }
        if (typeof config.torch_dtype === 'string') dtype = config.torch_dtype;
        else if (typeof config.dtype === 'string') dtype = config.dtype;
      } catch {
        throw new LibraryError(`${model.name}/config.json is not valid JSON`);
      }
    } else if (name.endsWith('.safetensors')) {
      const header = await readSafetensorsHeader(source);
      tensorCount += header.tensors.size;
      for (const t of header.tensors.values()) dtypeCounts.set(t.dtype, (dtypeCounts.get(t.dtype) ?? 0) + 1);
    }
  }
  if (!dtype && dtypeCounts.size > 0) dtype = [...dtypeCounts].sort((a, b) => b[1] - a[1])[0][0];
  return { architecture, dtype, tensorCount, totalBytes };
}

export interface StorageUse {
  usage: number;
  quota: number;
  persisted: boolean;
}

export async function storageUse(): Promise<StorageUse> {
  const estimate = await navigator.storage.estimate();
  const persisted =
    typeof navigator.storage.persisted === 'function' ? await navigator.storage.persisted() : false;
  return { usage: estimate.usage ?? 0, quota: estimate.quota ?? 0, persisted };
}
