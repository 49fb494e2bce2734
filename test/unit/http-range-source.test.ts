import { describe, expect, it } from 'vitest';
import { readSafetensorsHeader } from '../../src/formats/safetensors';
import { HubRangeError, httpRangeSource } from '../../src/store/http-range-source';

type Fault = 'ignore-range' | 'network' | '503' | 'short' | 'wrong-range' | 'other-size' | '404';

/** A file served over fetch: answers Range requests, with the next faults from `faults` first. */
function server(bytes: Uint8Array, faults: Fault[] = []) {
  const ranges: string[] = [];
  const fetchFn = (async (_input: RequestInfo | URL, init?: RequestInit) => {
    const range = new Headers(init?.headers).get('Range') ?? '';
    ranges.push(range);
    const fault = faults.shift();
    if (fault === 'network') throw new TypeError('fetch failed');
    if (fault === '503') return new Response('busy', { status: 503 });
    if (fault === '404') return new Response('gone', { status: 404 });
    if (fault === 'ignore-range') return new Response(bytes.slice(), { status: 200 });
    const m = /^bytes=(\d+)-(\d+)$/.exec(range);
    if (!m) throw new Error(`unexpected Range ${range}`);
    const start = Number(m[1]);
    const end = Number(m[2]);
    let body = bytes.slice(start, end + 1);
    if (fault === 'short') body = body.slice(0, body.length - 1);
    const shown = fault === 'wrong-range' ? `bytes ${start + 1}-${end}` : `bytes ${start}-${end}`;
    const total = fault === 'other-size' ? bytes.length + 1 : bytes.length;
    return new Response(body, { status: 206, headers: { 'Content-Range': `${shown}/${total}` } });
  }) as typeof fetch;
  return { fetchFn, ranges };
}

function pattern(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);
}

function source(
  bytes: Uint8Array,
  faults: Fault[] = [],
  extra: { minRequestBytes?: number; maxRequestBytes?: number; safetensors?: boolean } = {},
) {
  const s = server(bytes, faults);
  const src = httpRangeSource({
    name: 'org/model/model.safetensors',
    url: 'http://127.0.0.1:1/org/model/resolve/abc/model.safetensors',
    size: bytes.length,
    fetch: s.fetchFn,
    retryDelayMs: 1,
    minRequestBytes: extra.minRequestBytes ?? 1,
    maxRequestBytes: extra.maxRequestBytes,
    safetensors: extra.safetensors,
  });
  return { src, ranges: s.ranges };
}

/** A safetensors file: one F32 tensor of `n` values after a JSON header. */
function safetensors(n: number): { bytes: Uint8Array; headerEnd: number } {
  const json = new TextEncoder().encode(
    JSON.stringify({ w: { dtype: 'F32', shape: [n], data_offsets: [0, 4 * n] } }),
  );
  const bytes = new Uint8Array(8 + json.length + 4 * n);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
  bytes.set(json, 8);
  bytes.set(pattern(4 * n), 8 + json.length);
  return { bytes, headerEnd: 8 + json.length };
}

describe('httpRangeSource', () => {
  it('reads exactly the bytes asked for with one Range request', async () => {
    const bytes = pattern(1000);
    const { src, ranges } = source(bytes);
    expect(await src.read(100, 50)).toEqual(bytes.slice(100, 150));
    expect(ranges).toEqual(['bytes=100-149']);
  });

  it('refuses a 200 with the whole file instead of the range, without retrying', async () => {
    const { src, ranges } = source(pattern(1000), ['ignore-range']);
    const read = src.read(100, 50);
    await expect(read).rejects.toThrow(HubRangeError);
    await expect(read).rejects.toThrow(
      'org/model/model.safetensors: the server answered the range request for bytes 100-149 with the whole file (HTTP 200, not 206)',
    );
    expect(ranges).toHaveLength(1);
  });

  it('retries network errors, 5xx and short reads, then succeeds', async () => {
    const bytes = pattern(1000);
    const { src, ranges } = source(bytes, ['network', '503', 'short']);
    expect(await src.read(10, 20)).toEqual(bytes.slice(10, 30));
    expect(ranges).toEqual(Array(4).fill('bytes=10-29'));
  });

  it('gives up after its attempts, saying how often it tried', async () => {
    const { src, ranges } = source(pattern(1000), ['short', 'short', 'short', 'short']);
    await expect(src.read(0, 100)).rejects.toThrow(
      'org/model/model.safetensors: short read: 99 of the 100 bytes from 0 arrived (4 attempts)',
    );
    expect(ranges).toHaveLength(4);
  });

  it('refuses a Content-Range other than the one asked for, or a file whose size changed', async () => {
    await expect(source(pattern(1000), ['wrong-range']).src.read(5, 10)).rejects.toThrow(
      'asked for bytes 5-14, the server sent bytes 6-14/1000',
    );
    await expect(source(pattern(1000), ['other-size']).src.read(5, 10)).rejects.toThrow(
      'the file is now 1001 bytes, not the 1000 listed when the run began',
    );
  });

  it('does not retry a 404', async () => {
    const { src, ranges } = source(pattern(1000), ['404']);
    await expect(src.read(5, 10)).rejects.toThrow('not found on the hub (HTTP 404)');
    expect(ranges).toHaveLength(1);
  });

  it('refuses reads outside the file before sending anything', async () => {
    const { src, ranges } = source(pattern(100));
    await expect(src.read(90, 20)).rejects.toThrow(RangeError);
    expect(ranges).toEqual([]);
  });

  it('reads a safetensors header in two exact requests, then widens small data reads', async () => {
    const { bytes, headerEnd } = safetensors(4096);
    const { src, ranges } = source(bytes, [], { safetensors: true, minRequestBytes: 4096 });
    const header = await readSafetensorsHeader(src);
    expect(header.dataOffset).toBe(headerEnd);
    expect(ranges).toEqual(['bytes=0-7', `bytes=8-${headerEnd - 1}`]);
    // Small reads in the data section: one widened request serves the following ones.
    for (let i = 0; i < 8; i++) {
      expect(await src.read(headerEnd + i * 16, 16)).toEqual(
        bytes.slice(headerEnd + i * 16, headerEnd + i * 16 + 16),
      );
    }
    expect(ranges.slice(2)).toEqual([`bytes=${headerEnd}-${headerEnd + 4095}`]);
    // Blocks lie on a grid from the data section's start; the last one stops at the end of the file.
    const tail = bytes.length - 10;
    expect(await src.read(tail, 10)).toEqual(bytes.slice(tail));
    expect(ranges.at(-1)).toBe(`bytes=${headerEnd + 3 * 4096}-${bytes.length - 1}`);
    // A read across two blocks takes both; one of them was already fetched.
    const across = headerEnd + 4096 - 8;
    expect(await src.read(across, 16)).toEqual(bytes.slice(across, across + 16));
    expect(ranges.slice(4)).toEqual([`bytes=${headerEnd + 4096}-${headerEnd + 8191}`]);
    // A read of a block or more is sent as asked.
    expect(await src.read(headerEnd + 100, 5000)).toEqual(bytes.slice(headerEnd + 100, headerEnd + 5100));
    expect(ranges.at(-1)).toBe(`bytes=${headerEnd + 100}-${headerEnd + 5099}`);
    expect(src.requests).toBe(6);
  });

  it('keeps a partly read block while a large tensor read in small tiles runs through the grid', async () => {
    const { bytes, headerEnd } = safetensors(16 * 1024);
    const { src, ranges } = source(bytes, [], { safetensors: true, minRequestBytes: 4096 });
    await readSafetensorsHeader(src);
    // A small tensor in the last block, read ahead of the large one before it.
    const small = headerEnd + 15 * 4096 + 100;
    expect(await src.read(small, 16)).toEqual(bytes.slice(small, small + 16));
    // The large tensor in tiles of 3000 bytes: 15 blocks, each fetched once.
    for (let at = headerEnd; at < headerEnd + 15 * 4096; at += 3000) {
      const length = Math.min(3000, headerEnd + 15 * 4096 - at);
      expect(await src.read(at, length)).toEqual(bytes.slice(at, at + length));
    }
    // The small tensor's neighbour in the block read ahead: still kept, not fetched again.
    expect(await src.read(small + 16, 16)).toEqual(bytes.slice(small + 16, small + 32));
    const data = ranges.slice(2);
    expect(data).toHaveLength(16);
    expect(new Set(data).size).toBe(16);
  });

  it('splits a read larger than maxRequestBytes into several requests', async () => {
    const bytes = pattern(1000);
    const { src, ranges } = source(bytes, [], { maxRequestBytes: 300 });
    expect(await src.read(50, 700)).toEqual(bytes.slice(50, 750));
    expect([...ranges].sort()).toEqual(['bytes=350-649', 'bytes=50-349', 'bytes=650-749']);
    expect(src.bytesFetched).toBe(700);
  });
});
