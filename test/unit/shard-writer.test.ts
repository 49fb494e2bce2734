import { describe, expect, it } from 'vitest';
import type { FileSink } from '../../src/engine/io';
import { bytesByteSource } from '../../src/formats/byte-source';
import { readModelTensorBytes, readModelTensors } from '../../src/formats/model-index';
import { readSafetensorsHeader, readTensorBytes } from '../../src/formats/safetensors';
import {
  type PlannedTensor,
  planShards,
  ShardWriteError,
  ShardWriter,
  shardFileName,
} from '../../src/formats/shard-writer';
import { ByteSizeError, formatBytes, parseByteSize } from '../../src/formats/size';

/** An output folder in memory; records the order of file operations. */
function memoryFolder() {
  const files = new Map<string, Uint8Array>();
  const log: string[] = [];
  const createFile = async (name: string): Promise<FileSink> => {
    if (files.has(name)) throw new Error(`${name} created twice`);
    log.push(`create ${name}`);
    const chunks: Uint8Array[] = [];
    let closed = false;
    files.set(name, new Uint8Array(0));
    return {
      async write(bytes) {
        if (closed) throw new Error(`${name}: write after close`);
        chunks.push(bytes.slice());
      },
      async close() {
        closed = true;
        const total = chunks.reduce((n, c) => n + c.byteLength, 0);
        const out = new Uint8Array(total);
        let at = 0;
        for (const c of chunks) {
          out.set(c, at);
          at += c.byteLength;
        }
        files.set(name, out);
        log.push(`close ${name}`);
      },
    };
  };
  return { files, log, createFile };
}

/** Deterministic bytes for a tensor, different per tensor. */
function tensorBytes(seed: number, length: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => (seed * 31 + i * 7) & 0xff);
}

// Hand-checked case, limit 48 bytes:
//   a F32 [2,3] 24 B -> shard 1 (24)
//   b BF16 [10] 20 B -> 44 <= 48, shard 1 (44)
//   c F16 [4]    8 B -> 52 > 48, shard 2 (8)
//   d F32 [10]  40 B -> 48 <= 48 (only exceeding splits), shard 2 (48)
//   e U8 [100] 100 B -> larger than the limit: a shard of its own (3)
//   f BF16 [1]   2 B -> 102 > 48, shard 4
const PLAN: PlannedTensor[] = [
  { name: 'a', dtype: 'F32', shape: [2, 3] },
  { name: 'b', dtype: 'BF16', shape: [10] },
  { name: 'c', dtype: 'F16', shape: [4] },
  { name: 'd', dtype: 'F32', shape: [10] },
  { name: 'e', dtype: 'U8', shape: [100] },
  { name: 'f', dtype: 'BF16', shape: [1] },
];

describe('planShards', () => {
  it('splits as mergekit does, with hand-checked sizes', () => {
    const layout = planShards(PLAN, 48);
    expect(layout.shards.map((s) => s.file)).toEqual([
      'model-00001-of-00004.safetensors',
      'model-00002-of-00004.safetensors',
      'model-00003-of-00004.safetensors',
      'model-00004-of-00004.safetensors',
    ]);
    expect(layout.shards.map((s) => s.tensors.map((t) => t.name))).toEqual([
      ['a', 'b'],
      ['c', 'd'],
      ['e'],
      ['f'],
    ]);
    expect(layout.shards[0].tensors.map((t) => t.byteLength)).toEqual([24, 20]);
    expect(layout.totalTensorBytes).toBe(194);

    // Shard 1's JSON is 145 bytes, padded with 7 spaces to 152; the file is 8 + 152 + 44 = 204 bytes.
    const json1 =
      '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},' +
      '"b":{"dtype":"BF16","shape":[10],"data_offsets":[24,44]}}';
    expect(json1.length).toBe(145);
    const h1 = layout.shards[0].headerBytes;
    expect(h1.byteLength).toBe(160);
    expect(new DataView(h1.buffer, h1.byteOffset).getBigUint64(0, true)).toBe(152n);
    expect(new TextDecoder().decode(h1.subarray(8))).toBe(`${json1}       `);
    expect(layout.shards[0].byteLength).toBe(204);
    // Shard 2's JSON is 140 bytes -> 144; 8 + 144 + 48 = 200.
    expect(layout.shards[1].headerBytes.byteLength).toBe(152);
    expect(layout.shards[1].byteLength).toBe(200);
    for (const s of layout.shards) expect((s.headerBytes.byteLength - 8) % 8).toBe(0);

    expect(JSON.parse(layout.indexJson!)).toEqual({
      metadata: { total_size: 194 },
      weight_map: {
        a: 'model-00001-of-00004.safetensors',
        b: 'model-00001-of-00004.safetensors',
        c: 'model-00002-of-00004.safetensors',
        d: 'model-00002-of-00004.safetensors',
        e: 'model-00003-of-00004.safetensors',
        f: 'model-00004-of-00004.safetensors',
      },
    });
  });

  it('writes a single model.safetensors without an index when everything fits', () => {
    const layout = planShards(PLAN, 5e9);
    expect(layout.shards.map((s) => s.file)).toEqual(['model.safetensors']);
    expect(layout.indexJson).toBeUndefined();
    expect(layout.totalTensorBytes).toBe(194);
  });

  it('treats a limit of 0 as no limit, as mergekit does', () => {
    expect(planShards(PLAN, 0).shards).toHaveLength(1);
  });

  it('a limit of 1 byte puts every tensor in its own shard', () => {
    const layout = planShards(PLAN, 1);
    expect(layout.shards.map((s) => s.tensors.length)).toEqual([1, 1, 1, 1, 1, 1]);
    expect(layout.shards[5].file).toBe('model-00006-of-00006.safetensors');
  });

  it('keeps tensor order even for integer-like names', () => {
    const layout = planShards(
      [
        { name: 'z', dtype: 'U8', shape: [1] },
        { name: '10', dtype: 'U8', shape: [1] },
        { name: '2', dtype: 'U8', shape: [1] },
      ],
      2,
    );
    const json = new TextDecoder().decode(layout.shards[0].headerBytes.subarray(8));
    expect(json.indexOf('"z"')).toBeLessThan(json.indexOf('"10"'));
    expect(layout.indexJson!.indexOf('"z"')).toBeLessThan(layout.indexJson!.indexOf('"10"'));
    expect(layout.indexJson!.indexOf('"10"')).toBeLessThan(layout.indexJson!.indexOf('"2"'));
  });

  it('rejects duplicate names, bad shapes and bad limits', () => {
    expect(() => planShards([PLAN[0], PLAN[0]], 100)).toThrow(/tensor 'a' is planned twice/);
    expect(() => planShards([{ name: 'x', dtype: 'F32', shape: [-1] }], 100)).toThrow(ShardWriteError);
    expect(() => planShards([{ name: 'x', dtype: 'F32', shape: [1.5] }], 100)).toThrow(/tensor 'x'/);
    expect(() => planShards([{ name: 'x', dtype: 'Q4' as 'F32', shape: [1] }], 100)).toThrow(/unknown dtype/);
    expect(() => planShards(PLAN, -1)).toThrow(/shard size -1/);
    expect(() => planShards(PLAN, Number.NaN)).toThrow(ShardWriteError);
  });

  it('names shards the Hugging Face way', () => {
    expect(shardFileName(3, 12)).toBe('model-00003-of-00012.safetensors');
  });
});

describe('ShardWriter', () => {
  it('round-trips: written shards parse back to the planned tensors and bytes', async () => {
    const layout = planShards(PLAN, 48);
    const out = memoryFolder();
    const writer = new ShardWriter(layout, out.createFile);
    const written = new Map<string, Uint8Array>();
    for (const [i, shard] of layout.shards.entries()) {
      for (const t of shard.tensors) {
        const bytes = tensorBytes(i * 10 + t.name.charCodeAt(0), t.byteLength);
        written.set(t.name, bytes);
        await writer.writeTensor(t.name, bytes);
      }
    }
    const files = await writer.finish();
    expect(files).toEqual([...layout.shards.map((s) => s.file), 'model.safetensors.index.json']);
    // Each shard is created, written and closed before the next one is created.
    expect(out.log).toEqual(files.flatMap((f) => [`create ${f}`, `close ${f}`]));

    for (const shard of layout.shards) {
      const bytes = out.files.get(shard.file)!;
      expect(bytes.byteLength).toBe(shard.byteLength);
      const source = bytesByteSource(bytes, shard.file);
      const header = await readSafetensorsHeader(source);
      expect(header.dataOffset % 8).toBe(0);
      expect(header.metadata).toEqual({ format: 'pt' });
      expect([...header.tensors.keys()]).toEqual(shard.tensors.map((t) => t.name));
      for (const t of shard.tensors) {
        const info = header.tensors.get(t.name)!;
        expect(info.dtype).toBe(t.dtype);
        expect(info.shape).toEqual(t.shape);
        expect(await readTensorBytes(source, info)).toEqual(written.get(t.name));
      }
    }

    // The folder reads back as one model through its index.
    const model = await readModelTensors({
      name: 'out',
      files: () => [...out.files.keys()],
      open: async (f) => bytesByteSource(out.files.get(f)!, `out/${f}`),
    });
    expect([...model.tensors.keys()].sort()).toEqual(PLAN.map((t) => t.name));
    for (const [name, bytes] of written) expect(await readModelTensorBytes(model, name)).toEqual(bytes);
  });

  it('writes a single model.safetensors and no index', async () => {
    const layout = planShards(PLAN.slice(0, 2), 5e9);
    const out = memoryFolder();
    const writer = new ShardWriter(layout, out.createFile);
    await writer.writeTensor('a', tensorBytes(1, 24));
    await writer.writeTensor('b', tensorBytes(2, 20));
    expect(await writer.finish()).toEqual(['model.safetensors']);
    const header = await readSafetensorsHeader(bytesByteSource(out.files.get('model.safetensors')!, 'x'));
    expect(header.tensors.get('b')!.offset).toBe(header.dataOffset + 24);
  });

  it('accepts writes issued without awaiting and keeps them in order', async () => {
    const layout = planShards(PLAN, 48);
    const out = memoryFolder();
    const writer = new ShardWriter(layout, out.createFile);
    const pending = layout.shards.flatMap((s) =>
      s.tensors.map((t) => writer.writeTensor(t.name, tensorBytes(t.name.charCodeAt(0), t.byteLength))),
    );
    await Promise.all(pending);
    await writer.finish();
    const second = out.files.get('model-00002-of-00004.safetensors')!;
    const header = await readSafetensorsHeader(bytesByteSource(second, 'second'));
    const d = header.tensors.get('d')!;
    expect(second.subarray(d.offset, d.offset + d.byteLength)).toEqual(tensorBytes('d'.charCodeAt(0), 40));
  });

  it('writes an empty plan as a valid header-only model.safetensors', async () => {
    const out = memoryFolder();
    const writer = new ShardWriter(planShards([], 100), out.createFile);
    expect(await writer.finish()).toEqual(['model.safetensors']);
    const header = await readSafetensorsHeader(bytesByteSource(out.files.get('model.safetensors')!, 'empty'));
    expect(header.tensors.size).toBe(0);
  });

  it('rejects tensors out of order, unknown, or of the wrong size', async () => {
    const writer = new ShardWriter(planShards(PLAN, 48), memoryFolder().createFile);
    await expect(writer.writeTensor('b', tensorBytes(0, 20))).rejects.toThrow(
      "tensor 'b' written out of order: 'a' comes next in model-00001-of-00004.safetensors",
    );
    await expect(writer.writeTensor('nope', tensorBytes(0, 20))).rejects.toThrow(
      /'nope' is not in the output plan/,
    );
    const wrongSize = await writer.writeTensor('a', tensorBytes(0, 20)).catch((e) => e);
    expect(wrongSize).toBeInstanceOf(ShardWriteError);
    expect(wrongSize.tensor).toBe('a');
    expect(wrongSize.file).toBe('model-00001-of-00004.safetensors');
    expect(wrongSize.message).toBe("tensor 'a' has 20 bytes, but its plan (F32 [2,3]) needs 24");
    // The rejected calls did not advance the writer.
    await writer.writeTensor('a', tensorBytes(0, 24));
  });

  it('finish() fails while planned tensors are missing, and nothing is accepted after it', async () => {
    const out = memoryFolder();
    const writer = new ShardWriter(planShards(PLAN, 48), out.createFile);
    await writer.writeTensor('a', tensorBytes(0, 24));
    await expect(writer.finish()).rejects.toThrow(
      "5 planned tensors not written, starting with 'b' in model-00001-of-00004.safetensors",
    );
    expect(out.files.has('model.safetensors.index.json')).toBe(false);

    const done = new ShardWriter(planShards(PLAN.slice(0, 1), 48), memoryFolder().createFile);
    await done.writeTensor('a', tensorBytes(0, 24));
    await done.finish();
    await expect(done.writeTensor('a', tensorBytes(0, 24))).rejects.toThrow(/after finish/);
    await expect(done.finish()).rejects.toThrow(/twice/);
  });

  it('a failed write fails every later write', async () => {
    let writes = 0;
    const createFile = async (): Promise<FileSink> => ({
      async write() {
        writes++;
        if (writes === 2) throw new Error('disk full');
      },
      async close() {},
    });
    const writer = new ShardWriter(planShards(PLAN, 48), createFile);
    const first = writer.writeTensor('a', tensorBytes(0, 24)); // header, then a: the second write fails
    const second = writer.writeTensor('b', tensorBytes(0, 20));
    await expect(first).rejects.toThrow('disk full');
    await expect(second).rejects.toThrow('disk full');
    expect(writes).toBe(2);
  });
});

describe('parseByteSize', () => {
  it('reads sizes as mergekit parse_kmb does', () => {
    expect(parseByteSize('5B')).toBe(5_000_000_000);
    expect(parseByteSize('5b')).toBe(5_000_000_000);
    expect(parseByteSize('500M')).toBe(500_000_000);
    expect(parseByteSize('1K')).toBe(1000);
    expect(parseByteSize('1k')).toBe(1000);
    expect(parseByteSize('123')).toBe(123);
    expect(parseByteSize('0')).toBe(0);
    expect(parseByteSize(' 2B ')).toBe(2e9);
    expect(parseByteSize('2 B')).toBe(2e9);
    expect(parseByteSize(4096)).toBe(4096);
  });

  it('rejects junk with a message that shows the accepted form', () => {
    for (const junk of ['', 'B', '1.5B', '5GB', '5T', '-5B', 'five', '5B5', '0x10']) {
      expect(() => parseByteSize(junk), junk).toThrow(ByteSizeError);
    }
    expect(() => parseByteSize('5GB')).toThrow(/"5GB" is not understood.*K, M or B/);
    expect(() => parseByteSize(-1)).toThrow(ByteSizeError);
    expect(() => parseByteSize(1.5)).toThrow(ByteSizeError);
    expect(() => parseByteSize(Number.NaN)).toThrow(ByteSizeError);
    expect(() => parseByteSize('99999999999B')).toThrow(/too large/);
  });
});

describe('formatBytes', () => {
  it('prints decimal units with three significant digits', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1000)).toBe('1.00 kB');
    expect(formatBytes(1500)).toBe('1.50 kB');
    expect(formatBytes(12_345_678)).toBe('12.3 MB');
    expect(formatBytes(500_000_000)).toBe('500 MB');
    expect(formatBytes(999_960_000)).toBe('1.00 GB');
    expect(formatBytes(5e9)).toBe('5.00 GB');
    expect(formatBytes(15.2e12)).toBe('15.2 TB');
  });
});
