/**
 * Fetch once: a tensor the engine reads in several passes (TIES' and DELLA's statistics, slerp's and
 * model_stock's reductions, then the output pass) from a source that is slow and costly to read
 * again (a hub repo streamed by Range requests) is read from that source once; the bytes of the
 * passes before the last are kept in a temporary spool and the later passes read them there.
 *
 * Only a source that offers `openSpool` is spooled (a streamed hub file); a local file or a stored
 * copy is read again from where it is, which costs a page-cache or IndexedDB read, no download.
 * The engine opens a spool only for a tensor it will read more than once, and keeps only the reads
 * of passes that another pass follows: a single-pass merge (linear, task_arithmetic) never writes a
 * byte to a spool.
 *
 * Where a spool cannot be written (the browser's storage is full), the tensor's later passes fetch
 * their bytes from the source again, and the run log says so, naming the model file and tensor and
 * the space that was needed: the merge still finishes, it only downloads more.
 */
import type { ByteSource } from '../formats/byte-source';
import { formatBytes } from '../formats/size';

/** The bytes of one tensor's input that a merge reads in several passes. */
export interface SpoolRequest {
  /** The tensor being merged (named in the log line of a spool that could not be written). */
  readonly tensor: string;
  /** Bytes [offset, offset + length) of the file. */
  readonly offset: number;
  readonly length: number;
}

/** One tensor input's spool (`SpoolingSource.openSpool`). Offsets are the file's. */
export interface ReadSpool {
  /**
   * Bytes [offset, offset + length) (inside the spooled range): what the spool holds of them from
   * the spool, the rest from the source; with `keep`, the bytes from the source are kept.
   */
  read(offset: number, length: number, keep: boolean): Promise<Uint8Array>;
  /** Keeps bytes already read without `keep` (a pass that turned out to be followed by another). */
  keep(offset: number, bytes: Uint8Array): Promise<void>;
  /** Removes the spool and its bytes; reads after this go to the source. Safe to call twice. */
  close(): Promise<void>;
}

/** A source whose reads are slow to repeat, and which can keep a tensor's bytes for later passes. */
export interface SpoolingSource extends ByteSource {
  openSpool(request: SpoolRequest): Promise<ReadSpool>;
}

export function canSpool(source: ByteSource | undefined): source is SpoolingSource {
  return source !== undefined && typeof (source as Partial<SpoolingSource>).openSpool === 'function';
}

/** Where a spool keeps its bytes: memory, or a temporary file (src/worker/opfs-spool.ts). */
export interface SpoolFile {
  write(at: number, bytes: Uint8Array): Promise<void>;
  read(at: number, length: number): Promise<Uint8Array>;
  /** Deletes the bytes (and the file). */
  remove(): Promise<void>;
}

export interface SpoolStore {
  /**
   * A new spool file for up to `bytes` bytes of tensor `tensor` of `file` (the source's name);
   * rejects with SpoolSpaceError when the space is not there.
   */
  create(file: string, tensor: string, bytes: number): Promise<SpoolFile>;
}

/** There is no room for a spool: the tensor's later passes are fetched again (module comment). */
export class SpoolSpaceError extends Error {
  override name = 'SpoolSpaceError';
  constructor(
    readonly file: string,
    readonly tensor: string,
    readonly needed: number,
    readonly free?: number,
  ) {
    super(
      `${file}: no room to keep tensor ${tensor} for its later passes (${formatBytes(needed)} needed` +
        (free === undefined ? '' : `, ${formatBytes(Math.max(0, free))} free`) +
        " in this browser's storage); its later passes download it again from the hub. Free space " +
        '(delete outputs or library models you no longer need) to download each byte once',
    );
  }
}

/** Spools up to this size are held in memory (a few of them at a time: one per model of a tensor). */
export const SPOOL_MEMORY_BYTES = 16 << 20;

/** A spool store in memory, for small spools and for tests. */
export function memorySpoolStore(): SpoolStore {
  return {
    async create(_file, _tensor, bytes) {
      let held: Uint8Array | undefined = new Uint8Array(bytes);
      const buffer = () => {
        if (!held) throw new Error('the spool was removed');
        return held;
      };
      return {
        async write(at, data) {
          buffer().set(data, at);
        },
        async read(at, length) {
          return buffer().slice(at, at + length);
        },
        async remove() {
          held = undefined;
        },
      };
    },
  };
}

/** A range [start, end) of the file that the spool holds. */
type Held = [number, number];

/** The parts of [start, end) that `held` (sorted, disjoint) does not cover. */
function gapsIn(held: readonly Held[], start: number, end: number): Held[] {
  const gaps: Held[] = [];
  let at = start;
  for (const [a, b] of held) {
    if (b <= at) continue;
    if (a >= end) break;
    if (a > at) gaps.push([at, a]);
    at = Math.max(at, b);
    if (at >= end) break;
  }
  if (at < end) gaps.push([at, end]);
  return gaps;
}

export interface RangeSpoolOptions {
  source: ByteSource;
  request: SpoolRequest;
  /** Where the bytes go (created at the first byte kept). */
  store: SpoolStore;
  /** The run log: a spool that cannot be written says so here. */
  onLog?: (line: string) => void;
}

/**
 * A spool over one range of a source (module comment): reads are served from the kept bytes where
 * it holds them and fetched where it does not, so no byte of the range is fetched twice once kept.
 */
export class RangeSpool implements ReadSpool {
  private readonly source: ByteSource;
  private readonly start: number;
  private readonly end: number;
  private file: Promise<SpoolFile> | undefined;
  private readonly held: Held[] = [];
  /** Nothing more is kept: closed, or the spool could not be written. */
  private stopped = false;
  /** Bytes read from the source through this spool. */
  fetched = 0;
  /** Bytes served from the spool. */
  reused = 0;

  constructor(private readonly options: RangeSpoolOptions) {
    this.source = options.source;
    this.start = options.request.offset;
    this.end = options.request.offset + options.request.length;
  }

  async read(offset: number, length: number, keep: boolean): Promise<Uint8Array> {
    if (offset < this.start || offset + length > this.end) {
      throw new RangeError(
        `${this.source.name}: read of ${length} bytes at ${offset} is outside the spooled bytes ${this.start}-${this.end}`,
      );
    }
    const gaps = gapsIn(this.held, offset, offset + length);
    if (gaps.length === 1 && gaps[0][0] === offset && gaps[0][1] === offset + length) {
      const bytes = await this.fetch(offset, length);
      if (keep) await this.keep(offset, bytes);
      return bytes;
    }
    const out = new Uint8Array(length);
    let at = offset;
    for (const [a, b] of [...gaps, [offset + length, offset + length] as Held]) {
      if (a > at) out.set(await this.fromSpool(at, a - at), at - offset);
      if (b > a) {
        const bytes = await this.fetch(a, b - a);
        out.set(bytes, a - offset);
        if (keep) await this.keep(a, bytes);
      }
      at = b;
    }
    return out;
  }

  async keep(offset: number, bytes: Uint8Array): Promise<void> {
    if (this.stopped) return;
    for (const [a, b] of gapsIn(this.held, offset, offset + bytes.byteLength)) {
      try {
        const file = await this.open();
        await file.write(a - this.start, bytes.subarray(a - offset, b - offset));
      } catch (e) {
        await this.giveUp(e);
        return;
      }
      // The spool was closed while the bytes were written: they went with it.
      if (this.stopped) return;
      this.held.push([a, b]);
      this.held.sort((x, y) => x[0] - y[0]);
    }
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.held.length = 0;
    const file = this.file;
    this.file = undefined;
    if (file) await (await file.catch(() => undefined))?.remove();
  }

  private async fetch(offset: number, length: number): Promise<Uint8Array> {
    const bytes = await this.source.read(offset, length);
    this.fetched += bytes.byteLength;
    return bytes;
  }

  private async fromSpool(offset: number, length: number): Promise<Uint8Array> {
    const file = await this.open();
    const bytes = await file.read(offset - this.start, length);
    this.reused += bytes.byteLength;
    return bytes;
  }

  private open(): Promise<SpoolFile> {
    this.file ??= this.options.store.create(
      this.source.name,
      this.options.request.tensor,
      this.end - this.start,
    );
    return this.file;
  }

  /** The spool cannot be written: what it holds goes, and later reads fetch again (module comment). */
  private async giveUp(e: unknown): Promise<void> {
    if (this.stopped) return;
    const space =
      e instanceof SpoolSpaceError
        ? e
        : isQuotaError(e)
          ? new SpoolSpaceError(this.source.name, this.options.request.tensor, this.end - this.start)
          : undefined;
    await this.close();
    if (!space) throw e;
    this.options.onLog?.(space.message);
  }
}

function isQuotaError(e: unknown): boolean {
  const name = (e as { name?: unknown } | null)?.name;
  const message = String((e as { message?: unknown } | null)?.message ?? '');
  return name === 'QuotaExceededError' || (name === 'UnknownError' && /quota|space/i.test(message));
}
