/**
 * "Keep a copy in the library" for a model a merge streams from the hub, without downloading any
 * byte twice: every range request the merge's reads send is also stored, as a piece Blob in
 * IndexedDB keyed by file and offset (`<import id>/<file>/@<offset>`, so the library's clean-up
 * counts it as the import's). When the merge has ended, the bytes it never read (files it does not
 * merge, tensors it skips, gaps) are fetched by exact Range reads, each file is assembled from its
 * pieces into the library's chunk layout and stored through the library's own import
 * (`ModelImport.appendChunk`), which checks the hub's sha256 (LFS) or git blob sha1 exactly as a
 * hub download does, and only then is the model listed, under the name a hub import gives it.
 *
 * A failure (a corrupt byte, a full quota, the hub out of reach) removes every piece and the
 * unfinished import; the merge never waits on the copy's outcome and its output does not depend on
 * it. The copy is not an import the import panel can resume on its own (`resumable: false`): it
 * lives as long as its merge's journal record (the start-up clean-up keeps the imports interrupted
 * runs name, and drops the others). A resumed merge goes on with the copy (`HubCopy.resume`): the
 * pieces stored before the reload are found again from their keys, the merge's reads they cover
 * are served from them (`readThrough`), and none of their bytes is fetched again.
 */
import type { ReadSpool } from '../engine/read-spool';
import type { ByteSource } from '../formats/byte-source';
import type { HubListedFile, HubModelFiles } from './hub-model';
import {
  ChecksumMismatchError,
  isQuotaError,
  type ModelImport,
  type ModelLibrary,
  type ModelRecord,
  StorageFullError,
} from './library';

/** Largest exact read while fetching what the merge skipped: one piece, never near the Blob trap. */
export const GAP_READ_BYTES = 16 << 20;

/** What the user can do when a copy's file fails its checksum: nothing is left to resume. */
const COPY_CHECKSUM_ADVICE = 'Nothing was added to the library; import the repo from the hub to try again.';

/** A stored range of one file: bytes [start, end). */
interface Piece {
  start: number;
  end: number;
  key: string;
  /**
   * Stored before a reload (found by `resume`): the merge's reads it covers are served from it. The
   * run's own pieces are not read back: the range source keeps its recent blocks in memory.
   */
  earlier?: boolean;
}

export function pieceKey(importId: string, file: string, start: number): string {
  return `${importId}/${file}/@${start}`;
}

/** The file and start a piece key names (`<import id>/<file>/@<start>`); undefined for other keys. */
export function parsePieceKey(importId: string, key: string): { file: string; start: number } | undefined {
  const prefix = `${importId}/`;
  const at = key.lastIndexOf('/@');
  if (!key.startsWith(prefix) || at < prefix.length) return undefined;
  const start = Number(key.slice(at + 2));
  if (!Number.isSafeInteger(start) || start < 0 || String(start) !== key.slice(at + 2)) return undefined;
  return { file: key.slice(prefix.length, at), start };
}

/** How a resumed run's copy went on: from its stored pieces, or afresh and why. */
export interface CopyResumption {
  copy: HubCopy;
  /** Bytes found stored from before the reload (0 when it began afresh). */
  bytesKept: number;
  /** Set when the earlier copy could not be continued and a new one began. */
  restartedBecause?: string;
}

/** The parts of [start, end) that no piece of `pieces` (sorted, disjoint) holds. */
export function uncoveredRanges(pieces: readonly Piece[], start: number, end: number): [number, number][] {
  const gaps: [number, number][] = [];
  let at = start;
  for (const p of pieces) {
    if (p.end <= at) continue;
    if (p.start >= end) break;
    if (p.start > at) gaps.push([at, p.start]);
    at = Math.max(at, p.end);
    if (at >= end) break;
  }
  if (at < end) gaps.push([at, end]);
  return gaps;
}

export class HubCopy {
  /** Per file, the pieces stored or being stored, sorted by start and disjoint. */
  private readonly pieces = new Map<string, Piece[]>();
  private readonly storing = new Set<Promise<void>>();
  private failure: Error | undefined;
  private ended = false;
  /** The model is in the library: nothing of it may be removed any more. */
  private listed = false;

  private constructor(
    private readonly library: ModelLibrary,
    private readonly job: ModelImport,
    readonly model: HubModelFiles,
  ) {}

  /**
   * Registers the copy as an unfinished import (not listed as a model until `finish`), to be listed
   * as `name`: the reference the recipe names it by (`owner/name`, or `owner/name@revision`, so that
   * the recipe finds it in the library next time).
   */
  static async begin(library: ModelLibrary, model: HubModelFiles, name = model.repo): Promise<HubCopy> {
    const job = await library.beginImport({
      name,
      source: { kind: 'hub', repo: model.repo, revision: model.commit },
      resumable: false,
      files: model.listing,
    });
    return new HubCopy(library, job, model);
  }

  /**
   * Goes on with the copy an interrupted run began (import `importId`), from the pieces it stored.
   * The import must be of the same repo at the same commit, listing the same files, with nothing
   * assembled yet; otherwise it is removed and a new copy begins, and the answer says why.
   */
  static async resume(
    library: ModelLibrary,
    model: HubModelFiles,
    importId: string,
    name = model.repo,
  ): Promise<CopyResumption> {
    const afresh = async (why: string): Promise<CopyResumption> => {
      await library.discardPendingImport(importId);
      return { copy: await HubCopy.begin(library, model, name), bytesKept: 0, restartedBecause: why };
    };
    const pending = (await library.pendingImports()).find((p) => p.id === importId);
    if (!pending) return afresh('the copy begun before the reload is gone from the library');
    const source = pending.source;
    if (source.kind !== 'hub' || source.repo !== model.repo || source.revision !== model.commit) {
      return afresh(`the copy begun before the reload is not of ${model.repo} at ${model.commit}`);
    }
    const listed = new Map(model.listing.map((f) => [f.name, f.size]));
    if (
      pending.files.length !== listed.size ||
      pending.files.some((f) => listed.get(f.name) !== f.size || f.chunksDone > 0 || f.done)
    ) {
      return afresh('the copy begun before the reload lists other files, or had begun assembling them');
    }
    const copy = new HubCopy(library, await library.resumeImport(importId), model);
    return { copy, bytesKept: await copy.findStoredPieces() };
  }

  /**
   * The pieces stored under this import, found again from their keys; a piece outside its file or
   * overlapping another (which `store` never writes) is removed. Returns the bytes they hold.
   */
  private async findStoredPieces(): Promise<number> {
    const found: { key: string; file: string; start: number }[] = [];
    for (const key of await this.library.kv.keys()) {
      const parsed = parsePieceKey(this.job.id, key);
      if (parsed) found.push({ key, ...parsed });
    }
    const blobs = await this.library.kv.getMany<Blob>(found.map((f) => f.key));
    const sizes = new Map(this.model.listing.map((f) => [f.name, f.size]));
    const stray: string[] = [];
    let bytes = 0;
    found.forEach((f, i) => {
      const end = f.start + (blobs[i]?.size ?? 0);
      const size = sizes.get(f.file);
      let list = this.pieces.get(f.file);
      if (!list) {
        list = [];
        this.pieces.set(f.file, list);
      }
      const overlaps = list.some((p) => p.start < end && f.start < p.end);
      if (!blobs[i] || size === undefined || end > size || end === f.start || overlaps) {
        stray.push(f.key);
        return;
      }
      list.push({ start: f.start, end, key: f.key, earlier: true });
      bytes += end - f.start;
    });
    for (const list of this.pieces.values()) list.sort((x, y) => x.start - y.start);
    if (stray.length > 0) await this.library.kv.write([], stray);
    return bytes;
  }

  /**
   * `source` (the streamed file `file`) with the parts of each read that stored pieces hold read
   * from them, and only the rest from the hub: a resumed run fetches none of those bytes again.
   */
  readThrough(file: string, source: ByteSource): ByteSource {
    return {
      name: source.name,
      size: source.size,
      read: async (offset, length) => {
        const stored = (this.pieces.get(file) ?? []).filter((p) => p.earlier);
        if (this.failure || stored.length === 0) return source.read(offset, length);
        const end = offset + length;
        const gaps = uncoveredRanges(stored, offset, end);
        if (gaps.length === 1 && gaps[0][0] === offset && gaps[0][1] === end) {
          return source.read(offset, length);
        }
        const out = new Uint8Array(length);
        const inRange = stored.filter((p) => p.end > offset && p.start < end);
        const blobs = await this.library.kv.getMany<Blob>(inRange.map((p) => p.key));
        await Promise.all([
          ...inRange.map(async (p, i) => {
            const blob = blobs[i];
            const from = Math.max(offset, p.start);
            const to = Math.min(end, p.end);
            // A piece gone from the store (its copy failed meanwhile) is read from the hub after all.
            const bytes = blob
              ? new Uint8Array(await blob.slice(from - p.start, to - p.start).arrayBuffer())
              : await source.read(from, to - from);
            out.set(bytes, from - offset);
          }),
          ...gaps.map(async ([a, b]) => out.set(await source.read(a, b - a), a - offset)),
        ]);
        return out;
      },
    };
  }

  /** The library name the model gets: the repo id, as a hub import names it. */
  get name(): string {
    return this.job.name;
  }

  /** The unfinished import in the library (ModelLibrary.discardPendingImport removes it and its pieces). */
  get importId(): string {
    return this.job.id;
  }

  /** Why the copy failed, once it has (its pieces are then removed). */
  get error(): Error | undefined {
    return this.failure;
  }

  /**
   * Stores the part of the fetched range no piece holds yet. Never throws: the merge's read goes on
   * whatever happens here, and a failure ends the copy.
   */
  async record(file: string, start: number, bytes: Uint8Array): Promise<void> {
    if (this.failure || this.ended) return;
    const stored = this.store(file, start, bytes).catch((e: unknown) => this.fail(file, e));
    this.storing.add(stored);
    await stored;
    this.storing.delete(stored);
  }

  /**
   * Fetches what the merge never read, assembles and verifies every file, and lists the model.
   * Throws what made the copy fail (then nothing was added and every piece is gone).
   */
  async finish(): Promise<ModelRecord> {
    await Promise.all(this.storing);
    if (this.failure) throw this.failure;
    let current = '';
    try {
      for (const f of this.model.listing) {
        current = f.name;
        if (f.size === 0) {
          await this.job.completeEmptyFile(f.name);
          continue;
        }
        await this.fetchGaps(f);
        await this.assemble(f);
      }
      const record = await this.job.finish();
      this.listed = true;
      this.ended = true;
      await this.removePieces();
      return record;
    } catch (e) {
      await this.fail(current, e);
      throw this.failure;
    }
  }

  /** Removes every piece and the unfinished import (a merge that failed or was cancelled). */
  async discard(): Promise<void> {
    if (this.listed) return;
    this.ended = true;
    await Promise.all(this.storing);
    await this.removePieces();
    await this.job.abort();
  }

  /**
   * Bytes [start, start + length) of `file` from the stored pieces, or undefined when they do not
   * hold all of them (the copy failed, or the merge has not read them yet): a merge's later passes
   * over a tensor read them here instead of from the hub or a second spool.
   */
  async readStored(file: string, start: number, length: number): Promise<Uint8Array | undefined> {
    if (this.failure || this.ended) return undefined;
    const end = start + length;
    const list = this.pieces.get(file) ?? [];
    if (uncoveredRanges(list, start, end).length > 0) return undefined;
    const inRange = list.filter((p) => p.end > start && p.start < end);
    const blobs = await this.library.kv.getMany<Blob>(inRange.map((p) => p.key));
    // A piece still being written (or removed by a failure meanwhile) is not there to read.
    if (blobs.some((b) => !b)) return undefined;
    const parts = inRange.map((p, i) =>
      blobs[i]!.slice(Math.max(0, start - p.start), Math.min(p.end, end) - p.start),
    );
    const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
    return bytes.byteLength === length ? bytes : undefined;
  }

  /**
   * A merge's spool for a tensor of `file` (read-spool.ts) that keeps nothing of its own: the bytes
   * the first pass fetches through `source` are stored by the copy, and later passes read them from
   * its pieces; where the copy does not hold them (it failed), they are fetched again.
   */
  spoolFor(file: string, source: ByteSource, onReused: (bytes: number) => void): ReadSpool {
    return {
      read: async (offset, length) => {
        const stored = await this.readStored(file, offset, length);
        if (!stored) return source.read(offset, length);
        onReused(length);
        return stored;
      },
      keep: async () => {},
      close: async () => {},
    };
  }

  private async store(file: string, start: number, bytes: Uint8Array): Promise<void> {
    let list = this.pieces.get(file);
    if (!list) {
      list = [];
      this.pieces.set(file, list);
    }
    for (const [a, b] of uncoveredRanges(list, start, start + bytes.byteLength)) {
      const piece: Piece = { start: a, end: b, key: pieceKey(this.job.id, file, a) };
      // Taken before the write, so a concurrent fetch of the same bytes does not store them again.
      list.push(piece);
      list.sort((x, y) => x.start - y.start);
      await this.library.kv.write([
        [piece.key, new Blob([bytes.subarray(a - start, b - start) as BlobPart])],
      ]);
      // The copy failed while this piece was written: it goes with the others.
      if (this.failure) await this.library.kv.write([], [piece.key]);
    }
  }

  private async fetchGaps(f: HubListedFile): Promise<void> {
    const gaps = uncoveredRanges(this.pieces.get(f.name) ?? [], 0, f.size);
    if (gaps.length === 0) return;
    const source = this.model.openExact(f.name);
    for (const [a, b] of gaps) {
      for (let at = a; at < b; at += GAP_READ_BYTES) {
        const length = Math.min(GAP_READ_BYTES, b - at);
        await this.store(f.name, at, await source.read(at, length));
      }
    }
  }

  /** Each chunk as one Blob of slices of the stored pieces, through the library's checked import. */
  private async assemble(f: HubListedFile): Promise<void> {
    const pieces = this.pieces.get(f.name) ?? [];
    const chunkBytes = this.job.pending.chunkBytes;
    for (let chunkStart = 0; chunkStart < f.size; chunkStart += chunkBytes) {
      const chunkEnd = Math.min(chunkStart + chunkBytes, f.size);
      const inChunk = pieces.filter((p) => p.end > chunkStart && p.start < chunkEnd);
      const blobs = await this.library.kv.getMany<Blob>(inChunk.map((p) => p.key));
      const parts = inChunk.map((p, i) => {
        const blob = blobs[i];
        if (!blob) throw new Error(`${this.name}/${f.name}: the stored bytes from ${p.start} are missing`);
        return blob.slice(Math.max(0, chunkStart - p.start), Math.min(p.end, chunkEnd) - p.start);
      });
      await this.job.appendChunk(f.name, new Blob(parts));
    }
  }

  private async fail(file: string, e: unknown): Promise<void> {
    if (!this.failure) {
      if (e instanceof ChecksumMismatchError) {
        this.failure = new ChecksumMismatchError(
          e.file,
          e.expected,
          e.actual,
          e.algorithm,
          COPY_CHECKSUM_ADVICE,
        );
      } else if (isQuotaError(e)) {
        this.failure = new StorageFullError(file, this.name);
      } else {
        this.failure = e instanceof Error ? e : new Error(String(e));
      }
    }
    this.ended = true;
    await this.removePieces().catch(() => undefined);
    await this.job.abort().catch(() => undefined);
  }

  private async removePieces(): Promise<void> {
    const keys = [...this.pieces.values()].flatMap((list) => list.map((p) => p.key));
    this.pieces.clear();
    if (keys.length > 0) await this.library.kv.write([], keys);
  }
}
