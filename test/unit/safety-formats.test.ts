/** Bounds on what model files can make the engine do, and the output checks that protect users. */
import { describe, expect, it } from 'vitest';
import { outputConfigJson, setJsonKeys } from '../../src/engine/config-json';
import type { ModelFiles } from '../../src/engine/io';
import { bytesByteSource } from '../../src/formats/byte-source';
import { countNonFinite, encodeFromF32 } from '../../src/formats/dtype';
import { jsonDepthOver } from '../../src/formats/json-text';
import { MAX_MODEL_TENSORS, readModelTensors } from '../../src/formats/model-index';
import { readSafetensorsHeader } from '../../src/formats/safetensors';

function safetensors(json: string): Uint8Array {
  const header = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + header.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.byteLength), true);
  out.set(header, 8);
  return out;
}

/** A header of `n` zero-size tensors named `<prefix>0`, `<prefix>1`, ... */
function emptyTensors(prefix: string, n: number): Uint8Array {
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(`"${prefix}${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`);
  return safetensors(`{${parts.join(',')}}`);
}

function memoryModel(files: Record<string, Uint8Array>): ModelFiles {
  return {
    name: 'm',
    files: () => Object.keys(files),
    open: async (f) => bytesByteSource(files[f], `m/${f}`),
  };
}

describe('model headers', () => {
  it('caps the tensors of one model over all its shards', async () => {
    const half = Math.ceil(MAX_MODEL_TENSORS / 2) + 1;
    const model = memoryModel({
      'model-00001-of-00002.safetensors': emptyTensors('a', half),
      'model-00002-of-00002.safetensors': emptyTensors('b', half),
    });
    await expect(readModelTensors(model)).rejects.toThrow(
      `m/model-00002-of-00002.safetensors: the shards hold more than 300000 tensors (${2 * half} so far), over the limit for one model; the headers are corrupt`,
    );
    const ok = memoryModel({ 'model.safetensors': emptyTensors('a', 10) });
    expect((await readModelTensors(ok)).tensors.size).toBe(10);
  }, 60_000);

  it('refuses deep nesting in a header before anything walks it', async () => {
    const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    const bytes = safetensors(`{"t": {"dtype": "F32", "shape": ${deep}, "data_offsets": [0, 0]}}`);
    await expect(readSafetensorsHeader(bytesByteSource(bytes, 'x.safetensors'))).rejects.toThrow(
      'x.safetensors: header nests JSON deeper than 64 levels; a safetensors header nests 3, so the file is corrupt or not safetensors',
    );
  });

  it('counts nesting outside strings only', () => {
    expect(jsonDepthOver('{"a": [[1]]}', 3)).toBeUndefined();
    expect(jsonDepthOver('{"a": [[[1]]]}', 3)).toBe(4);
    expect(jsonDepthOver(`{"a": "${'['.repeat(100)}\\"["}`, 3)).toBeUndefined();
  });
});

describe('non-finite outputs', () => {
  it('counts Inf and NaN in each dtype, aligned or not', () => {
    // An odd count, so the last value lies outside the pairs read as 32-bit words. 3.0e38 overflows
    // f16 (max 65504) to Inf, not bf16.
    const values = Float32Array.from([
      1,
      Number.POSITIVE_INFINITY,
      -0,
      Number.NaN,
      3.0e38,
      -Number.POSITIVE_INFINITY,
      2,
      5,
      Number.NaN,
    ]);
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const bytes = encodeFromF32(values, dtype);
      const expected = dtype === 'F16' ? 5 : 4;
      expect(countNonFinite(bytes, dtype), dtype).toBe(expected);
      const shifted = new Uint8Array(bytes.byteLength + 1);
      shifted.set(bytes, 1);
      expect(countNonFinite(shifted.subarray(1), dtype), `${dtype} unaligned`).toBe(expected);
    }
  });
});

describe("the output's config.json text", () => {
  const base =
    '{\n  "a": 0.0,\n  "eps": 1e-06,\n  "torch_dtype": "bfloat16",\n  "nested": {"torch_dtype": "x"},\n  "s": "}\\"{"\n}\n';

  it('replaces top-level values only, keeping everything else byte for byte', () => {
    expect(setJsonKeys(base, [['torch_dtype', 'float32']])).toBe(
      base.replace('"torch_dtype": "bfloat16"', '"torch_dtype": "float32"'),
    );
  });

  it('adds missing keys with the indentation of the first', () => {
    expect(setJsonKeys(base, [['tie_word_embeddings', false]])).toBe(
      base.replace('"s": "}\\"{"\n}', '"s": "}\\"{",\n  "tie_word_embeddings": false\n}'),
    );
    expect(setJsonKeys('{"a":1}', [['b', 2]])).toBe('{"a":1, "b": 2}');
    expect(setJsonKeys('{}', [['b', 2]])).toBe('{"b": 2}');
  });

  it('sets dtype for configs that use it, torch_dtype otherwise', () => {
    const newer = '{\n  "dtype": "bfloat16",\n  "rms_norm_eps": 1e-06\n}\n';
    expect(outputConfigJson(newer, JSON.parse(newer), 'F32', false)).toBe(
      newer.replace('bfloat16', 'float32'),
    );
    const both = '{"dtype": "bfloat16", "torch_dtype": "bfloat16"}';
    expect(JSON.parse(outputConfigJson(both, JSON.parse(both), 'F16', true))).toEqual({
      dtype: 'float16',
      torch_dtype: 'float16',
      tie_word_embeddings: false,
    });
    const older = '{"torch_dtype": "float32", "x": 1.50}';
    expect(outputConfigJson(older, JSON.parse(older), 'BF16', false)).toBe(
      '{"torch_dtype": "bfloat16", "x": 1.50}\n',
    );
    expect(JSON.parse(outputConfigJson(undefined, {}, 'BF16', false))).toEqual({ torch_dtype: 'bfloat16' });
  });
});
