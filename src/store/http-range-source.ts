/**
 * A ByteSource over HTTP Range requests, so the engine reads a hub file in place: the header first,
 * then tensors a chunk of rows at a time, never the whole file.
 *
 * Every answer is checked: a Range request must come back 206 with the Content-Range asked for and
 * the file's listed size (a 200 with the whole body is a server that ignores ranges, and taking it
 * as the range would merge the wrong bytes), and the body must be exactly the range's length.
 * Network errors, 5xx, 429 and short bodies are retried a few times with backoff; anything else
 * fails at once with an error naming the file.
 *
 * Request sizes: the safetensors header is read exactly (the 8-byte length, then the JSON), so a
 * header-only check never asks for tensor bytes. Reads in the data section shorter than
 * `minRequestBytes` are served from blocks of that size on a fixed grid from the data section's
 * start, the last few kept: the engine reads small tensors one by one, near each other but not
 * strictly in file order, and a grid fetches each block once where widening each read from its
 * own offset would fetch overlapping bytes again. A block every byte of which has been read is
 * dropped before one that still holds unread bytes: a large tensor read in tiles under the block
 * size (the GPU's) runs through many blocks and must not push out the block of the small tensor
 * read ahead of it. Larger reads are sent as asked (split above `maxRequestBytes`).
 */
import type { ByteSource } from '../formats/byte-source';

/** The hub or its CDN answered a range read in a way that cannot be used; names the file. */
export class HubRangeError extends Error {
  override name = 'HubRangeError';
}

/** Widened read size in the data section: a few round trips per layer of a small model. */
export const DEFAULT_MIN_REQUEST_BYTES = 1 << 20;
/**
 * Largest single request. A GPU merge reads tensors of up to 2^28 elements whole; as one request a
 * dropped connection would cost the whole tensor again, so larger reads go as several requests,
 * a few at a time (which also keeps a long-distance link busy).
 */
export const DEFAULT_MAX_REQUEST_BYTES = 16 << 20;
/** Requests of one split read in flight at once. */
const PARALLEL_PARTS = 4;
/** Attempts per read, the first included. */
export const DEFAULT_READ_ATTEMPTS = 4;
const DEFAULT_RETRY_DELAY_MS = 500;

export interface HttpRangeSourceOptions {
  /** Shown in errors, e.g. `Qwen/Qwen2.5-Math-1.5B@<sha>/model.safetensors`. */
  name: string;
  url: string;
  /** The size the hub lists; every Content-Range must agree. */
  size: number;
  /** The token-scoped hub fetch (src/store/hub-fetch.ts). */
  fetch: typeof fetch;
  /**
   * The file is safetensors: reads before the end of its header (learned from the first 8 bytes)
   * are never widened, so validating from headers requests header bytes only.
   */
  safetensors?: boolean;
  minRequestBytes?: number;
  maxRequestBytes?: number;
  attempts?: number;
  /** Backoff before retry n is retryDelayMs * 2^(n-1). */
  retryDelayMs?: number;
  signal?: AbortSignal;
  /**
   * Called with the bytes of every request that succeeded, before the read that asked for them
   * goes on: a copy kept in the library stores them, so nothing is downloaded twice.
   */
  onFetched?: (start: number, bytes: Uint8Array) => Promise<void> | void;
}

/** What a read failed with, and whether another attempt may succeed. */
class ReadFailure extends Error {
  constructor(
    message: string,
    readonly transient: boolean,
  ) {
    super(message);
  }
}

/** Grid blocks kept per file: a layer's small tensors (norms, biases) lie within a few. */
const KEPT_BLOCKS = 4;

export interface HttpRangeSource extends ByteSource {
  /** Range requests sent so far (retries included): for tests and the run log. */
  readonly requests: number;
  /** Body bytes received so far (retries included). */
  readonly bytesFetched: number;
}

export function httpRangeSource(options: HttpRangeSourceOptions): HttpRangeSource {
  const { name, url, size } = options;
  const minRequest = options.minRequestBytes ?? DEFAULT_MIN_REQUEST_BYTES;
  const maxRequest = Math.max(1, options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES);
  const attempts = Math.max(1, options.attempts ?? DEFAULT_READ_ATTEMPTS);
  const retryDelay = options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
  /** Where widening may start: the data section of a safetensors file once known, else 0. */
  let widenFrom = options.safetensors ? Number.POSITIVE_INFINITY : 0;
  /** Grid block index -> its bytes and the parts read from it, least recently used first. */
  const blocks = new Map<number, { bytes: Promise<Uint8Array>; read: [number, number][] }>();
  let requests = 0;
  let bytesFetched = 0;
  /**
   * Where the hub's resolve URL last redirected (its CDN): later reads go there directly, saving a
   * round trip each; if that address stops answering (a signed URL that expired) reads go back to
   * the resolve URL.
   */
  let target = url;

  async function fetchOnce(start: number, length: number): Promise<Uint8Array> {
    const end = start + length - 1;
    requests++;
    let response: Response;
    try {
      response = await options.fetch(target, {
        headers: { Range: `bytes=${start}-${end}` },
        // Streamed inputs are read once per run: keeping them in the HTTP cache only fills the disk.
        cache: 'no-store',
        signal: options.signal,
      });
    } catch (e) {
      if (options.signal?.aborted) throw e;
      throw new ReadFailure(`the request failed (${(e as Error).message})`, true);
    }
    const discard = () => response.body?.cancel().catch(() => undefined);
    if (response.status === 200) {
      await discard();
      throw new ReadFailure(
        `the server answered the range request for bytes ${start}-${end} with the whole file (HTTP 200, not 206); ` +
          'it does not serve ranges, so the file cannot be streamed (import it into the library instead)',
        false,
      );
    }
    if (response.status !== 206) {
      await discard();
      if (target !== url && response.status >= 400 && response.status < 500) {
        target = url;
        return fetchOnce(start, length);
      }
      const transient = response.status >= 500 || response.status === 429;
      throw new ReadFailure(describeStatus(response.status), transient);
    }
    const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers.get('Content-Range') ?? '');
    if (!range || Number(range[1]) !== start || Number(range[2]) !== end) {
      await discard();
      throw new ReadFailure(
        `asked for bytes ${start}-${end}, the server sent ${response.headers.get('Content-Range') ?? 'no Content-Range'}`,
        false,
      );
    }
    if (range[3] !== '*' && Number(range[3]) !== size) {
      await discard();
      throw new ReadFailure(
        `the file is now ${range[3]} bytes, not the ${size} listed when the run began; it changed on the hub`,
        false,
      );
    }
    if (response.redirected && response.url) target = response.url;
    let body: Uint8Array;
    try {
      body = new Uint8Array(await response.arrayBuffer());
    } catch (e) {
      if (options.signal?.aborted) throw e;
      throw new ReadFailure(
        `the connection broke while reading bytes ${start}-${end} (${(e as Error).message})`,
        true,
      );
    }
    bytesFetched += body.byteLength;
    if (body.byteLength !== length) {
      throw new ReadFailure(
        `short read: ${body.byteLength} of the ${length} bytes from ${start} arrived`,
        true,
      );
    }
    return body;
  }

  /** `length` bytes from `start`, as one request or, above maxRequest, several into one buffer. */
  async function fetchRange(start: number, length: number): Promise<Uint8Array> {
    if (length <= maxRequest) return fetchPart(start, length);
    const out = new Uint8Array(length);
    let next = 0;
    const worker = async () => {
      while (next < length) {
        const at = next;
        const part = Math.min(maxRequest, length - at);
        next += part;
        out.set(await fetchPart(start + at, part), at);
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(PARALLEL_PARTS, Math.ceil(length / maxRequest)) }, worker),
    );
    return out;
  }

  async function fetchPart(start: number, length: number): Promise<Uint8Array> {
    for (let attempt = 1; ; attempt++) {
      let bytes: Uint8Array;
      try {
        bytes = await fetchOnce(start, length);
      } catch (e) {
        if (!(e instanceof ReadFailure)) throw e;
        if (!e.transient || attempt >= attempts) {
          const tries = e.transient ? ` (${attempt} attempts)` : '';
          throw new HubRangeError(`${name}: ${e.message}${tries}`);
        }
        await sleep(retryDelay * 2 ** (attempt - 1), options.signal);
        continue;
      }
      await options.onFetched?.(start, bytes);
      return bytes;
    }
  }

  /** Bytes [from, to) of block `index` (offsets in the block) are read, its bytes on their way. */
  function block(index: number, from: number, to: number): Promise<Uint8Array> {
    let kept = blocks.get(index);
    if (kept) {
      blocks.delete(index);
    } else {
      const start = widenFrom + index * minRequest;
      const bytes = fetchRange(start, Math.min(minRequest, size - start));
      const entry = { bytes, read: [] as [number, number][] };
      kept = entry;
      // A failed block is not kept: the next read asks again.
      bytes.catch(() => {
        if (blocks.get(index) === entry) blocks.delete(index);
      });
    }
    blocks.set(index, kept);
    kept.read = mergeRanges([...kept.read, [from, to]]);
    while (blocks.size > KEPT_BLOCKS) {
      // Every byte read: the block is not asked for again (module comment); else the oldest.
      const spent = [...blocks].find(([i, b]) => {
        const length = Math.min(minRequest, size - (widenFrom + i * minRequest));
        return b.read.length === 1 && b.read[0][0] === 0 && b.read[0][1] >= length;
      });
      blocks.delete(spent ? spent[0] : (blocks.keys().next().value as number));
    }
    return kept.bytes;
  }

  /** A read shorter than a block: from the one or two grid blocks it falls in. */
  async function readFromBlocks(offset: number, length: number): Promise<Uint8Array> {
    const first = Math.floor((offset - widenFrom) / minRequest);
    const last = Math.floor((offset + length - 1 - widenFrom) / minRequest);
    const firstStart = widenFrom + first * minRequest;
    const lastStart = widenFrom + last * minRequest;
    // Both blocks are asked for (and marked read) before either is awaited.
    const head = block(first, offset - firstStart, Math.min(minRequest, offset + length - firstStart));
    const tail = last === first ? undefined : block(last, 0, offset + length - lastStart);
    tail?.catch(() => {});
    const headBytes = await head;
    if (!tail) return headBytes.subarray(offset - firstStart, offset - firstStart + length);
    const tailBytes = await tail;
    const out = new Uint8Array(length);
    const fromHead = headBytes.byteLength - (offset - firstStart);
    out.set(headBytes.subarray(offset - firstStart), 0);
    out.set(tailBytes.subarray(0, length - fromHead), fromHead);
    return out;
  }

  async function read(offset: number, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new RangeError(`${name}: read of ${length} bytes at ${offset} is not a byte range`);
    }
    if (offset + length > size) {
      throw new RangeError(
        `${name}: read of ${length} bytes at ${offset} is outside the file (${size} bytes)`,
      );
    }
    if (length === 0) return new Uint8Array(0);
    if (offset >= widenFrom && length < minRequest) return readFromBlocks(offset, length);
    const bytes = await fetchRange(offset, length);
    if (options.safetensors && offset === 0 && length >= 8 && widenFrom === Number.POSITIVE_INFINITY) {
      // The first 8 bytes give the header's length; the data section starts after it.
      const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
      if (headerLength < BigInt(size)) widenFrom = 8 + Number(headerLength);
    }
    return bytes;
  }

  return {
    name,
    size,
    read,
    get requests() {
      return requests;
    },
    get bytesFetched() {
      return bytesFetched;
    },
  };
}

/** The union of `ranges`, sorted and disjoint. */
function mergeRanges(ranges: [number, number][]): [number, number][] {
  const sorted = ranges.sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [a, b] of sorted) {
    const top = out[out.length - 1];
    if (top && a <= top[1]) top[1] = Math.max(top[1], b);
    else out.push([a, b]);
  }
  return out;
}

function describeStatus(status: number): string {
  if (status === 401 || status === 403) {
    return `access denied (HTTP ${status}); the repo is gated or private: enter an access token that may read it`;
  }
  if (status === 404) return 'not found on the hub (HTTP 404) at the pinned revision';
  if (status === 416) return 'the hub refused the byte range (HTTP 416); the file changed on the hub';
  return `the hub answered HTTP ${status}`;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
