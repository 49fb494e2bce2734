import { describe, expect, it } from 'vitest';
import type { ModelFiles } from '../../src/engine/io';
import { type ByteSource, bytesByteSource } from '../../src/formats/byte-source';
import { ModelIndexError, readModelTensorBytes, readModelTensors } from '../../src/formats/model-index';
import {
  MAX_HEADER_BYTES,
  readSafetensorsHeader,
  readTensorBytes,
  SafetensorsError,
} from '../../src/formats/safetensors';

const FILE = 'm/model.safetensors';

/** A safetensors file: u64 LE length, the header text as given, then `data`. */
function stFile(header: string | object, data: Uint8Array | number = 0): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.byteLength + body.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(body, 8 + json.byteLength);
  return out;
}

function withLengthPrefix(length: bigint, rest: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(8 + rest.byteLength);
  new DataView(out.buffer).setBigUint64(0, length, true);
  out.set(rest, 8);
  return out;
}

async function parseError(bytes: Uint8Array, name = FILE): Promise<SafetensorsError> {
  try {
    await readSafetensorsHeader(bytesByteSource(bytes, name));
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    const err = e as SafetensorsError;
    expect(err.name).toBe('SafetensorsError');
    expect(err.file).toBe(name);
    expect(err.message.startsWith(`${name}: `)).toBe(true);
    if (err.tensor !== undefined) expect(err.message).toContain(`'${err.tensor}'`);
    return err;
  }
  throw new Error('expected a SafetensorsError');
}

describe('readSafetensorsHeader', () => {
  it('parses tensors, absolute offsets and metadata', async () => {
    const header = {
      __metadata__: { format: 'pt' },
      'a.weight': { dtype: 'BF16', shape: [2, 3], data_offsets: [0, 12] },
      b: { dtype: 'F32', shape: [], data_offsets: [12, 16] },
      empty: { dtype: 'F16', shape: [0, 4], data_offsets: [16, 16] },
    };
    const json = JSON.stringify(header);
    const data = new Uint8Array(16).map((_, i) => i + 1);
    const bytes = stFile(json, data);
    const source = bytesByteSource(bytes, FILE);
    const parsed = await readSafetensorsHeader(source);

    expect(parsed.file).toBe(FILE);
    expect(parsed.headerByteLength).toBe(json.length);
    expect(parsed.dataOffset).toBe(8 + json.length);
    expect(parsed.metadata).toEqual({ format: 'pt' });
    expect([...parsed.tensors.keys()]).toEqual(['a.weight', 'b', 'empty']);
    expect(parsed.tensors.get('a.weight')).toEqual({
      name: 'a.weight',
      dtype: 'BF16',
      shape: [2, 3],
      offset: 8 + json.length,
      byteLength: 12,
      file: FILE,
    });
    const b = parsed.tensors.get('b')!;
    expect(b.offset).toBe(8 + json.length + 12);
    expect(Array.from(await readTensorBytes(source, b))).toEqual([13, 14, 15, 16]);
    expect((await readTensorBytes(source, parsed.tensors.get('empty')!)).byteLength).toBe(0);
  });

  it('accepts a header without __metadata__, padded with trailing spaces', async () => {
    const bytes = stFile(
      '{"x":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}   ',
      new Uint8Array([7, 8, 9]),
    );
    const parsed = await readSafetensorsHeader(bytesByteSource(bytes, FILE));
    expect(parsed.metadata).toEqual({});
    expect(parsed.headerByteLength).toBe(56); // 53 bytes of JSON + 3 spaces
    expect(Array.from(await readTensorBytes(bytesByteSource(bytes, FILE), parsed.tensors.get('x')!))).toEqual(
      [7, 8, 9],
    );
  });

  it('lets zero-size tensors share offsets with each other and with real tensors', async () => {
    const parsed = await readSafetensorsHeader(
      bytesByteSource(
        stFile(
          {
            z1: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
            z2: { dtype: 'BF16', shape: [3, 0], data_offsets: [4, 4] },
            z3: { dtype: 'BF16', shape: [0], data_offsets: [2, 2] },
            x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
          },
          8,
        ),
        FILE,
      ),
    );
    expect(parsed.tensors.size).toBe(4);
  });

  it('rejects a file shorter than the length prefix', async () => {
    const err = await parseError(new Uint8Array(5));
    expect(err.tensor).toBeUndefined();
    expect(err.message).toMatch(/5 bytes, too short/);
  });

  it('rejects a header length over the limit without reading it', async () => {
    let biggestRead = 0;
    const inner = bytesByteSource(withLengthPrefix(0xffff_ffff_ffff_ffffn, new Uint8Array(64)), FILE);
    const source: ByteSource = {
      name: FILE,
      size: 1e12, // pretend to be a huge file: the limit, not the file size, must stop us
      read: (offset, length) => {
        biggestRead = Math.max(biggestRead, length);
        return inner.read(offset, Math.min(length, inner.size - offset));
      },
    };
    await expect(readSafetensorsHeader(source)).rejects.toThrow(
      /18446744073709551615 exceeds the 100000000-byte/,
    );
    expect(biggestRead).toBe(8);
    const justOver = await parseError(withLengthPrefix(BigInt(MAX_HEADER_BYTES + 1)));
    expect(justOver.message).toMatch(/100000001 exceeds/);
  });

  it('rejects a header length past the end of the file', async () => {
    const err = await parseError(withLengthPrefix(100n, new TextEncoder().encode('{}')));
    expect(err.message).toMatch(/header length 100 runs past the end of the file \(10 bytes\)/);
  });

  it('rejects headers that are not UTF-8 JSON objects', async () => {
    expect((await parseError(stFile('{"a": '))).message).toMatch(/not valid JSON/);
    expect((await parseError(stFile(''))).message).toMatch(/not valid JSON/);
    expect((await parseError(withLengthPrefix(2n, new Uint8Array([0xc3, 0x28])))).message).toMatch(
      /not valid UTF-8/,
    );
    expect((await parseError(stFile('[1,2]'))).message).toMatch(/must be a JSON object, found an array/);
    expect((await parseError(stFile('null'))).message).toMatch(/found null/);
    expect((await parseError(stFile('"x"'))).message).toMatch(/found the string "x"/);
    expect((await parseError(stFile('42'))).message).toMatch(/found number 42/);
  });

  it('rejects a malformed __metadata__', async () => {
    expect((await parseError(stFile({ __metadata__: [] }))).message).toMatch(
      /__metadata__ must be an object/,
    );
    expect((await parseError(stFile({ __metadata__: 'pt' }))).message).toMatch(
      /__metadata__ must be an object/,
    );
    const err = await parseError(stFile({ __metadata__: { format: 'pt', epochs: 3 } }));
    expect(err.message).toMatch(/__metadata__ entry 'epochs' must be a string, found number 3/);
  });

  const badEntries: [string, unknown, RegExp][] = [
    ['entry not an object', 5, /entry must be an object/],
    ['unknown dtype', { dtype: 'F128', shape: [1], data_offsets: [0, 16] }, /unknown dtype "F128"/],
    ['missing dtype', { shape: [1], data_offsets: [0, 4] }, /unknown dtype undefined/],
    ['lower-case dtype', { dtype: 'f32', shape: [1], data_offsets: [0, 4] }, /unknown dtype "f32"/],
    ['prototype key as dtype', { dtype: 'toString', shape: [1], data_offsets: [0, 4] }, /unknown dtype/],
    ['shape not an array', { dtype: 'F32', shape: 4, data_offsets: [0, 16] }, /shape must be an array/],
    [
      'negative dim',
      { dtype: 'F32', shape: [-1, 4], data_offsets: [0, 16] },
      /dimension 0 must be a non-negative integer/,
    ],
    ['fractional dim', { dtype: 'F32', shape: [2, 1.5], data_offsets: [0, 12] }, /dimension 1 must be/],
    ['string dim', { dtype: 'F32', shape: ['4'], data_offsets: [0, 16] }, /dimension 0 must be/],
    ['unsafe dim', { dtype: 'U8', shape: [2 ** 53], data_offsets: [0, 16] }, /dimension 0 must be/],
    [
      'offsets not a pair',
      { dtype: 'F32', shape: [1], data_offsets: [0] },
      /data_offsets must be \[begin, end\]/,
    ],
    ['offsets not integers', { dtype: 'F32', shape: [1], data_offsets: [0.5, 4.5] }, /must be integers/],
    ['offsets as strings', { dtype: 'F32', shape: [1], data_offsets: ['0', '4'] }, /must be integers/],
    ['negative begin', { dtype: 'F32', shape: [1], data_offsets: [-4, 0] }, /0 <= begin <= end/],
    ['end before begin', { dtype: 'F32', shape: [0], data_offsets: [8, 4] }, /0 <= begin <= end/],
    [
      'shape/bytes mismatch',
      { dtype: 'BF16', shape: [2, 3], data_offsets: [0, 16] },
      /needs 12 bytes.*span 16/,
    ],
    [
      'element count beyond any file',
      { dtype: 'F64', shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 8] },
      /more bytes than any file can hold/,
    ],
    [
      'range past EOF',
      { dtype: 'F32', shape: [8], data_offsets: [0, 32] },
      /run past the end of the data section \(16 bytes/,
    ],
  ];
  for (const [what, entry, pattern] of badEntries) {
    it(`rejects a tensor entry: ${what}`, async () => {
      const err = await parseError(
        stFile({ ok: { dtype: 'U8', shape: [0], data_offsets: [0, 0] }, 'model.layers.0.bad': entry }, 16),
      );
      expect(err.tensor).toBe('model.layers.0.bad');
      expect(err.message).toMatch(pattern);
      expect(err.message.startsWith(`${FILE}: tensor 'model.layers.0.bad': `)).toBe(true);
    });
  }

  it('rejects a NaN dimension (not expressible in JSON, so written literally)', async () => {
    const err = await parseError(stFile('{"t":{"dtype":"F32","shape":[NaN],"data_offsets":[0,0]}}'));
    expect(err.message).toMatch(/not valid JSON/);
    // 1e400 parses as Infinity.
    const inf = await parseError(stFile('{"t":{"dtype":"F32","shape":[1e400],"data_offsets":[0,0]}}'));
    expect(inf.tensor).toBe('t');
    expect(inf.message).toMatch(/dimension 0 must be a non-negative integer/);
  });

  it('rejects overlapping tensors, naming both', async () => {
    const err = await parseError(
      stFile(
        {
          a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
          b: { dtype: 'F32', shape: [2], data_offsets: [12, 20] },
        },
        20,
      ),
    );
    expect(err.tensor).toBe('b');
    expect(err.message).toMatch(/\[12, 20\] overlap tensor 'a' at \[0, 16\]/);
    // A tensor nested inside a larger one is caught too, whatever the header order.
    const nested = await parseError(
      stFile(
        {
          inner: { dtype: 'U8', shape: [2], data_offsets: [4, 6] },
          outer: { dtype: 'U8', shape: [10], data_offsets: [0, 10] },
          after: { dtype: 'U8', shape: [2], data_offsets: [10, 12] },
        },
        12,
      ),
    );
    expect(nested.message).toMatch(/'inner'.*overlap tensor 'outer'/);
  });

  it('rejects a header truncated in the data section', async () => {
    const bytes = stFile({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 16);
    const err = await parseError(bytes.subarray(0, bytes.byteLength - 1));
    expect(err.tensor).toBe('w');
    expect(err.message).toMatch(/data section \(15 bytes/);
  });

  it('readTensorBytes refuses a range outside the source', async () => {
    const source = bytesByteSource(new Uint8Array(10), FILE);
    await expect(
      readTensorBytes(source, { name: 'w', dtype: 'F32', shape: [4], offset: 0, byteLength: 16, file: FILE }),
    ).rejects.toThrow(SafetensorsError);
  });
});

/** A model held in memory: file name -> bytes. */
function memoryModel(name: string, files: Record<string, Uint8Array | string>): ModelFiles {
  return {
    name,
    files: () => Object.keys(files),
    async open(file) {
      const content = files[file];
      if (content === undefined) throw new Error(`${name}/${file}: no such file`);
      const bytes = typeof content === 'string' ? new TextEncoder().encode(content) : content;
      return bytesByteSource(bytes, `${name}/${file}`);
    },
  };
}

function shard(tensors: Record<string, number[]>): Uint8Array {
  // U8 tensors whose bytes are the given values.
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, values] of Object.entries(tensors)) {
    header[name] = { dtype: 'U8', shape: [values.length], data_offsets: [offset, offset + values.length] };
    offset += values.length;
  }
  return stFile(header, new Uint8Array(Object.values(tensors).flat()));
}

async function indexError(model: ModelFiles): Promise<ModelIndexError> {
  try {
    await readModelTensors(model);
  } catch (e) {
    expect(e).toBeInstanceOf(ModelIndexError);
    expect((e as Error).message.startsWith(model.name)).toBe(true);
    return e as ModelIndexError;
  }
  throw new Error('expected a ModelIndexError');
}

describe('readModelTensors', () => {
  const index = (map: Record<string, string>) =>
    JSON.stringify({ metadata: { total_size: 5 }, weight_map: map });

  it('follows model.safetensors.index.json across shards', async () => {
    const model = memoryModel('r1', {
      'config.json': '{}',
      'model.safetensors.index.json': index({
        a: 'model-00001-of-00002.safetensors',
        b: 'model-00002-of-00002.safetensors',
        c: 'model-00002-of-00002.safetensors',
      }),
      'model-00001-of-00002.safetensors': shard({ a: [1, 2] }),
      'model-00002-of-00002.safetensors': shard({ b: [3], c: [4, 5] }),
    });
    const idx = await readModelTensors(model);
    expect(idx.model).toBe('r1');
    expect([...idx.tensors.keys()].sort()).toEqual(['a', 'b', 'c']);
    expect(idx.tensors.get('c')!.file).toBe('model-00002-of-00002.safetensors');
    expect([...idx.sources.keys()].sort()).toEqual([
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
    ]);
    expect(Array.from(await readModelTensorBytes(idx, 'a'))).toEqual([1, 2]);
    expect(Array.from(await readModelTensorBytes(idx, 'c'))).toEqual([4, 5]);
    await expect(readModelTensorBytes(idx, 'zz')).rejects.toThrow(/r1: tensor 'zz': no such tensor/);
  });

  it('uses model.safetensors when there is no index', async () => {
    const idx = await readModelTensors(
      memoryModel('base', { 'model.safetensors': shard({ x: [9] }), 'other.safetensors': shard({ y: [1] }) }),
    );
    expect([...idx.tensors.keys()]).toEqual(['x']);
    expect(idx.tensors.get('x')!.file).toBe('model.safetensors');
  });

  it('otherwise uses the *.safetensors files at the model root', async () => {
    const idx = await readModelTensors(
      memoryModel('loose', {
        'weights.safetensors': shard({ x: [9, 8] }),
        'sub/extra.safetensors': shard({ y: [1] }),
        'README.md': 'hi',
      }),
    );
    expect([...idx.tensors.keys()]).toEqual(['x']);
    expect(Array.from(await readModelTensorBytes(idx, 'x'))).toEqual([9, 8]);
  });

  it('errors when there are no safetensors files', async () => {
    const err = await indexError(memoryModel('empty', { 'config.json': '{}', 'pytorch_model.bin': 'x' }));
    expect(err.message).toMatch(/no safetensors weights found/);
  });

  it('errors on a tensor present in two shards', async () => {
    const err = await indexError(
      memoryModel('dup', { 'a.safetensors': shard({ w: [1] }), 'b.safetensors': shard({ w: [2] }) }),
    );
    expect(err.message).toBe(
      "dup/b.safetensors: tensor 'w': is also in a.safetensors; a tensor must live in one shard",
    );
  });

  it('validates the index against the files and the shard headers', async () => {
    const bad = await indexError(
      memoryModel('m', {
        'model.safetensors.index.json': '{"weight_map": ',
        'model.safetensors': shard({ a: [1] }),
      }),
    );
    expect(bad.message).toMatch(/^m\/model.safetensors.index.json: is not valid UTF-8 JSON/);

    const noMap = await indexError(memoryModel('m', { 'model.safetensors.index.json': '{"metadata":{}}' }));
    expect(noMap.message).toMatch(/weight_map must be an object/);

    const notString = await indexError(
      memoryModel('m', { 'model.safetensors.index.json': '{"weight_map":{"a":3}}' }),
    );
    expect(notString.tensor).toBe('a');
    expect(notString.message).toMatch(/tensor 'a': weight_map value must be a file name/);

    const missingFile = await indexError(
      memoryModel('m', { 'model.safetensors.index.json': index({ a: 'model-00001-of-00002.safetensors' }) }),
    );
    expect(missingFile.message).toBe(
      "m/model.safetensors.index.json: tensor 'a': weight_map refers to model-00001-of-00002.safetensors, which is not in the model",
    );

    const wrongShard = await indexError(
      memoryModel('m', {
        'model.safetensors.index.json': index({ a: 's1.safetensors', b: 's1.safetensors' }),
        's1.safetensors': shard({ a: [1] }),
        's2.safetensors': shard({ b: [2] }),
      }),
    );
    expect(wrongShard.file).toBe('s1.safetensors');
    expect(wrongShard.message).toMatch(
      /^m\/s1.safetensors: tensor 'b': .*that shard's header does not contain it/,
    );
  });

  it('passes shard parsing errors through, naming the shard', async () => {
    const model = memoryModel('m', { 'model.safetensors': new Uint8Array(3) });
    await expect(readModelTensors(model)).rejects.toThrow(/^m\/model.safetensors: file is 3 bytes/);
  });
});
