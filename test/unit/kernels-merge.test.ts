/**
 * The WebAssembly per-chunk step (src/kernels/fused.ts) against the TypeScript reference: every
 * method, input and output dtype, seed and chunking gives the reference's bytes exactly, on data
 * with NaN (several payloads and signs), ±Inf, subnormals, ±0 and runs of equal magnitudes at the
 * TIES threshold.
 */
import { describe, expect, it } from 'vitest';
import { DTYPE_BYTES, decodeToF32, encodeFromF32, type FloatDType } from '../../src/formats/dtype';
import { rawChunkMerge } from '../../src/kernels/fused';
import { type KernelArena, loadKernels } from '../../src/kernels/wasm';
import { getMethod } from '../../src/methods';
import { chunkRowLength } from '../../src/methods/chunks';
import type { MagnitudeRangeSelector } from '../../src/methods/rank-select';
import type { MergeInputs, ResolvedParams } from '../../src/methods/types';
import { parseRecipe, resolveParams } from '../../src/recipe';
import type { MergeRecipe } from '../../src/recipe/recipe';

const arena = loadKernels('auto') as KernelArena;

/** xorshift32 in [0, 1). */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

const SPECIALS = new Uint32Array([
  0x7fc00000, 0xffc00000, 0x7fa00001, 0xff812345, 0x7f800000, 0xff800000, 0x00000001, 0x80000003, 0x007fffff,
  0x00000000, 0x80000000, 0x00400000,
]);

/**
 * A base and `models` other tensors of `n` values: normal-ish values, task vectors drawn from a few
 * magnitudes (so that many tie at any threshold), and, with `specials`, one element in 50 a NaN,
 * an infinity, a subnormal or a zero.
 */
function tensors(n: number, models: number, seed: number, specials: boolean): Float32Array[] {
  const next = random(seed);
  const base = new Float32Array(n);
  for (let i = 0; i < n; i++) base[i] = (next() - 0.5) * 0.2;
  const out = [base];
  const levels = [0, 0.001, 0.002, 0.004, 0.004, 0.008, 0.016];
  for (let m = 0; m < models; m++) {
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const magnitude = levels[Math.floor(next() * levels.length)];
      x[i] = base[i] + (next() < 0.5 ? -magnitude : magnitude);
    }
    out.push(x);
  }
  if (specials) {
    for (const x of out) {
      const bits = new Uint32Array(x.buffer);
      for (let i = 0; i < n; i++) if (next() < 0.02) bits[i] = SPECIALS[Math.floor(next() * SPECIALS.length)];
    }
  }
  return out;
}

interface Case {
  method: string;
  params?: Record<string, unknown>;
  models: number;
  modelParams: (m: number) => Record<string, unknown>;
}

const CASES: Case[] = [
  // linear: the base (first of modelParams) is one of the weighted inputs.
  { method: 'linear', models: 2, modelParams: (m) => ({ weight: [0.3, 0.5, 0.9][m] }) },
  {
    method: 'linear',
    params: { normalize: false },
    models: 1,
    modelParams: (m) => ({ weight: [1.3, -0.4][m] }),
  },
  { method: 'task_arithmetic', models: 1, modelParams: () => ({ weight: 0.7 }) },
  {
    method: 'task_arithmetic',
    params: { normalize: true, lambda: 0.6 },
    models: 1,
    modelParams: () => ({ weight: 0.35 }),
  },
  {
    method: 'task_arithmetic',
    params: { normalize: true, lambda: 0.6 },
    models: 3,
    modelParams: (m) => ({ weight: [0.5, 1, -0.25][m] }),
  },
  { method: 'ties', models: 1, modelParams: () => ({ weight: 1, density: 0.2 }) },
  { method: 'ties', params: { lambda: 1.5 }, models: 1, modelParams: () => ({ weight: 0.8, density: 0.35 }) },
  { method: 'ties', models: 2, modelParams: (m) => ({ weight: [0.5, 1][m], density: [0.5, 0.2][m] }) },
  {
    method: 'ties',
    params: { rescale: true, normalize: false },
    models: 2,
    modelParams: (m) => ({ weight: [0.7, 0.4][m], density: [1, 0.3][m] }),
  },
  // One model: the fused output kernel, with the divide (weight 1 skips it), the rescale and the lower cut.
  { method: 'ties', params: { rescale: true }, models: 1, modelParams: () => ({ weight: 1, density: 0.4 }) },
  {
    method: 'breadcrumbs_ties',
    models: 1,
    modelParams: () => ({ weight: 0.6, density: 0.5, gamma: 0.1 }),
  },
  { method: 'dare_ties', models: 2, modelParams: (m) => ({ weight: [0.4, 0.8][m], density: [0.6, 0.3][m] }) },
  { method: 'dare_linear', models: 1, modelParams: () => ({ weight: 0.9, density: 0.5 }) },
  {
    method: 'dare_linear',
    params: { rescale: false },
    models: 2,
    modelParams: (m) => ({ weight: [0.5, 0.5][m], density: [0.7, 0.1][m] }),
  },
  { method: 'breadcrumbs', models: 1, modelParams: () => ({ weight: 1, density: 0.8, gamma: 0.05 }) },
  {
    method: 'breadcrumbs_ties',
    models: 2,
    modelParams: (m) => ({ weight: [1, 0.5][m], density: [0.7, 0.9][m], gamma: 0.02 }),
  },
  {
    method: 'della',
    models: 2,
    modelParams: (m) => ({ weight: [0.6, 1][m], density: [0.5, 0.4][m], epsilon: 0.1 }),
  },
  { method: 'della_linear', models: 1, modelParams: () => ({ weight: 1, density: 0.6, epsilon: 0.2 }) },
  { method: 'slerp', params: { t: 0.3 }, models: 1, modelParams: () => ({}) },
  { method: 'model_stock', models: 2, modelParams: () => ({}) },
  { method: 'model_stock', params: { filter_wise: true }, models: 3, modelParams: () => ({}) },
];

/** The recipe of a case: model "m0" is the base, then "m1".. with their parameters. */
function recipeOf(c: Case): MergeRecipe {
  const linear = c.method === 'linear';
  const entry = (model: string, m: number) =>
    `  - model: ${model}\n    parameters: ${JSON.stringify(c.modelParams(m))}\n`;
  const models = Array.from({ length: c.models }, (_, m) => entry(`m${m + 1}`, linear ? m + 1 : m)).join('');
  const base = linear ? entry('m0', 0) : '';
  return parseRecipe(
    `merge_method: ${c.method}\n${linear ? '' : 'base_model: m0\n'}models:\n${models}${base}` +
      `parameters: ${JSON.stringify(c.params ?? {})}\n`,
    'test',
  );
}

function inputsOf(c: Case, name: string, shape: number[], seed: number) {
  const method = getMethod(c.method);
  const recipe = recipeOf(c);
  const { global, perModel } = resolveParams(recipe, method, name, 24);
  const refs = [...Array.from({ length: c.models }, (_, m) => `m${m + 1}`), 'm0'];
  const spec = {
    tensorName: name,
    shape,
    tensors: refs.map((model) => ({ model, params: (perModel.get(model) ?? {}) as ResolvedParams })),
    baseIndex: c.method === 'linear' ? -1 : refs.length - 1,
    params: global,
    seed,
  };
  return { method, spec };
}

/** The reference: decode, method.merge on the whole tensor, encode. */
function referenceBytes(
  c: Case,
  name: string,
  shape: number[],
  seed: number,
  stored: Uint8Array[],
  dtypes: FloatDType[],
  outDtype: FloatDType,
): Uint8Array {
  const { method, spec } = inputsOf(c, name, shape, seed);
  const inputs: MergeInputs = {
    ...spec,
    tensors: spec.tensors.map((t, i) => ({ ...t, values: decodeToF32(stored[i], dtypes[i]) })),
  };
  return encodeFromF32(method.merge(inputs), outDtype);
}

/** The kernels, chunk by chunk as the engine drives them (two buffer sets, one-chunk tensors read once). */
function kernelBytes(
  c: Case,
  name: string,
  shape: number[],
  seed: number,
  stored: Uint8Array[],
  dtypes: FloatDType[],
  outDtype: FloatDType,
  rowsPerChunk: number,
  statistics: { passes?: number } = {},
  { workDtype, keepChunks = false }: { workDtype?: FloatDType; keepChunks?: boolean } = {},
): Uint8Array {
  const { method, spec } = inputsOf(c, name, shape, seed);
  const rowLen = chunkRowLength(shape);
  const rows = shape.reduce((a, b) => a * b, 1) / rowLen;
  const chunkRows = Math.min(rows, rowsPerChunk);
  const chunks = Math.ceil(rows / rowsPerChunk);
  // keepChunks: a buffer set per chunk, each filled once (the engine's cache of small tensors).
  const job = rawChunkMerge(arena, method, {
    spec,
    inputDtypes: dtypes,
    outDtype,
    workDtype,
    chunkElements: chunkRows * rowLen,
    inputSets: keepChunks ? Math.max(2, chunks) : 2,
  });
  if (!job) throw new Error(`no kernel form of ${c.method}`);
  const fill = (set: number, r0: number, r1: number) => {
    stored.forEach((bytes, i) => {
      const rowBytes = rowLen * DTYPE_BYTES[dtypes[i]];
      job.input(set, i, (r1 - r0) * rowLen).set(bytes.subarray(r0 * rowBytes, r1 * rowBytes));
    });
  };
  const kept = keepChunks || rows <= rowsPerChunk;
  if (kept)
    for (let r0 = 0, k = 0; r0 < rows; r0 += rowsPerChunk, k++)
      fill(k, r0, Math.min(rows, r0 + rowsPerChunk));
  const each = (visit: (set: number, r0: number, r1: number) => void) => {
    for (let r0 = 0, k = 0; r0 < rows; r0 += rowsPerChunk, k++) {
      const r1 = Math.min(rows, r0 + rowsPerChunk);
      if (!kept) fill(k % 2, r0, r1);
      visit(kept ? k : k % 2, r0, r1);
    }
  };
  for (let pass = 0; pass < job.passes; pass++) {
    each((set, r0, r1) => job.accumulate(pass, set, r0 * rowLen, (r1 - r0) * rowLen));
  }
  statistics.passes = job.passes;
  const parts: Uint8Array[] = [];
  each((set, r0, r1) => parts.push(job.produce(set, r0 * rowLen, (r1 - r0) * rowLen).slice()));
  return new Uint8Array(Buffer.concat(parts));
}

/** Whether the element of `dtype` at byte offset `at` is a NaN. */
function isNaNAt(bytes: Uint8Array, at: number, dtype: FloatDType): boolean {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  if (dtype === 'F32') return (view.getUint32(at, true) & 0x7fffffff) > 0x7f800000;
  const h = view.getUint16(at, true) & 0x7fff;
  return dtype === 'BF16' ? h > 0x7f80 : h > 0x7c00;
}

/**
 * Byte-identical, except that a NaN may differ from the reference's NaN in sign and payload: which
 * operand's payload survives an operation on two NaNs, and the sign of a NaN made by Inf - Inf,
 * follow the instructions V8 picks for the reference's loop (it may swap the operands of an
 * addition), so they are no property of the reference. NaNs must be at the same elements.
 */
function same(a: Uint8Array, b: Uint8Array, dtype: FloatDType = 'BF16'): boolean {
  if (a.byteLength !== b.byteLength) return false;
  if (Buffer.from(a).equals(Buffer.from(b))) return true;
  const elt = DTYPE_BYTES[dtype];
  for (let at = 0; at < a.byteLength; at += elt) {
    if (Buffer.from(a.subarray(at, at + elt)).equals(Buffer.from(b.subarray(at, at + elt)))) continue;
    if (!(isNaNAt(a, at, dtype) && isNaNAt(b, at, dtype))) return false;
  }
  return true;
}

/** Index of the first differing element, for a readable failure. */
function firstDifference(a: Uint8Array, b: Uint8Array, eltBytes: number): string {
  const dtype: FloatDType = eltBytes === 4 ? 'F32' : 'BF16';
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const e = Math.floor(i / eltBytes);
    if (a[i] !== b[i] && !(isNaNAt(a, e * eltBytes, dtype) && isNaNAt(b, e * eltBytes, dtype))) {
      const hex = (x: Uint8Array) =>
        Buffer.from(x.subarray(e * eltBytes, (e + 1) * eltBytes))
          .toString('hex')
          .padStart(2 * eltBytes, '0');
      return `element ${e}: reference ${hex(a)}, kernels ${hex(b)}`;
    }
  }
  return `lengths ${a.length} and ${b.length}`;
}

describe('WASM per-chunk merge equals the TypeScript reference byte for byte', () => {
  const DTYPE_MIXES: { inputs: FloatDType; out: FloatDType }[] = [
    { inputs: 'BF16', out: 'BF16' },
    { inputs: 'F16', out: 'F16' },
    { inputs: 'F32', out: 'F32' },
    { inputs: 'BF16', out: 'F32' },
    { inputs: 'F32', out: 'F16' },
    { inputs: 'F32', out: 'BF16' },
  ];
  for (const c of CASES) {
    const label = `${c.method} ${JSON.stringify(c.params ?? {})} with ${c.models} model(s)`;
    it(label, () => {
      // Odd lengths: rows of 37 (a tail of 1 after the 4-lane loop), 5 rows per chunk; a 1-D tensor.
      const shapes = [
        { shape: [41, 37], rowsPerChunk: 5 },
        { shape: [41, 37], rowsPerChunk: 1000 },
        { shape: [4099], rowsPerChunk: 1 },
      ];
      for (const { inputs: inputDtype, out } of DTYPE_MIXES) {
        for (const seed of [0, 7]) {
          for (const { shape, rowsPerChunk } of shapes) {
            if (c.method.startsWith('della') && shape.length === 1) continue;
            const n = shape.reduce((a, b) => a * b, 1);
            for (const specials of [false, true]) {
              const values = tensors(n, c.models, seed * 31 + n, specials);
              // m1.. then the base, as the engine orders them.
              const ordered = [...values.slice(1), values[0]];
              const dtypes = ordered.map((_, i) => (i === 0 && inputDtype === 'F32' ? 'BF16' : inputDtype));
              const stored = ordered.map((v, i) => encodeFromF32(v, dtypes[i]));
              const name = `model.layers.${seed}.mlp.up_proj.weight`;
              const expected = referenceBytes(c, name, shape, seed, stored, dtypes, out);
              const actual = kernelBytes(c, name, shape, seed, stored, dtypes, out, rowsPerChunk);
              const where = `${label}, ${dtypes.join('/')} -> ${out}, seed ${seed}, shape [${shape}], ${rowsPerChunk} rows a chunk${specials ? ', specials' : ''}`;
              expect(
                same(expected, actual, out),
                `${where}: ${firstDifference(expected, actual, DTYPE_BYTES[out])}`,
              ).toBe(true);
              const keptChunks = kernelBytes(
                c,
                name,
                shape,
                seed,
                stored,
                dtypes,
                out,
                rowsPerChunk,
                {},
                { keepChunks: true },
              );
              expect(
                same(expected, keptChunks, out),
                `${where}, every chunk kept: ${firstDifference(expected, keptChunks, DTYPE_BYTES[out])}`,
              ).toBe(true);
            }
          }
        }
      }
    });
  }

  it('selects the TIES and breadcrumbs cuts exactly on tensors larger than the selection sample', () => {
    // 1.1M elements: pass 0 samples the first 2^20 keys, then fills the windows around the guesses.
    const shape = [1100, 1000];
    const n = shape[0] * shape[1];
    for (const c of CASES.filter((x) => x.method === 'ties' || x.method === 'breadcrumbs')) {
      const values = tensors(n, c.models, 99, true);
      const ordered = [...values.slice(1), values[0]];
      const dtypes = ordered.map(() => 'BF16' as FloatDType);
      const stored = ordered.map((v) => encodeFromF32(v, 'BF16'));
      const name = 'model.embed_tokens.weight';
      const expected = referenceBytes(c, name, shape, 1, stored, dtypes, 'BF16');
      const actual = kernelBytes(c, name, shape, 1, stored, dtypes, 'BF16', 300);
      expect(same(expected, actual), `${c.method}: ${firstDifference(expected, actual, 2)}`).toBe(true);
    }
  });

  it('takes the fallback pass when the first rows mislead the guess, to the same bytes', () => {
    // The first 2^20 elements have small task vectors, the rest large ones: the threshold guessed
    // from the sample is far off, so the window misses and pass 1 runs.
    const shape = [1200, 1000];
    const n = shape[0] * shape[1];
    const [base, x] = tensors(n, 1, 5, false);
    for (let i = 0; i < n; i++) x[i] = base[i] + (x[i] - base[i]) * (i < 1 << 20 ? 0.01 : 10);
    const c = CASES.find((x) => x.method === 'ties') as Case;
    const stored = [x, base].map((v) => encodeFromF32(v, 'BF16'));
    const dtypes: FloatDType[] = ['BF16', 'BF16'];
    const name = 'model.embed_tokens.weight';
    const expected = referenceBytes(c, name, shape, 0, stored, dtypes, 'BF16');
    const statistics: { passes?: number } = {};
    const actual = kernelBytes(c, name, shape, 0, stored, dtypes, 'BF16', 300, statistics);
    expect(statistics.passes, 'pass 1 ran').toBe(2);
    expect(same(expected, actual), firstDifference(expected, actual, 2)).toBe(true);
  });

  /**
   * Split statistics as the kernel threads run them (kernel-worker.ts splitStatistics), here in
   * turn: `threads` instances, each on its own arena, count chunks k with k mod threads = t; their
   * counts are summed, and each chunk is produced after the ties of every chunk before it.
   */
  function splitBytes(
    c: Case,
    name: string,
    shape: number[],
    stored: Uint8Array[],
    rowsPerChunk: number,
    threads: number,
  ): { bytes: Uint8Array; passes: number } {
    const { method, spec } = inputsOf(c, name, shape, 0);
    const rowLen = chunkRowLength(shape);
    const rows = shape[0];
    const chunks = Math.ceil(rows / rowsPerChunk);
    const dtypes = stored.map(() => 'BF16' as FloatDType);
    const jobs = Array.from({ length: threads }, () => {
      const job = rawChunkMerge(loadKernels('auto') as KernelArena, method, {
        spec,
        inputDtypes: dtypes,
        outDtype: 'BF16',
        chunkElements: rowsPerChunk * rowLen,
      });
      if (!job) throw new Error('no kernel form');
      return job;
    });
    const elementsOf = (k: number) => (Math.min(rows, (k + 1) * rowsPerChunk) - k * rowsPerChunk) * rowLen;
    const fill = (t: number, k: number) =>
      stored.forEach((bytes, i) => {
        const from = k * rowsPerChunk * rowLen * 2;
        jobs[t].input(0, i, elementsOf(k)).set(bytes.subarray(from, from + elementsOf(k) * 2));
      });
    const visitMine = (pass: number) => {
      for (let k = 0; k < chunks; k++) {
        fill(k % threads, k);
        jobs[k % threads].accumulate(pass, 0, k * rowsPerChunk * rowLen, elementsOf(k));
      }
    };
    const selectors = jobs.map((job) => job.splitSelectors?.() ?? null);
    expect(selectors.every((s) => s !== null)).toBe(true);
    visitMine(0);
    const models = (selectors[0] as unknown[]).length;
    for (let m = 0; m < models; m++) {
      const parts = selectors.map((s) => s?.[m]?.partialCounts());
      if (parts[0] === undefined) continue;
      // Copies: every selector merges the same parts.
      const copies = parts.map((p) => ({
        high: (p as NonNullable<typeof p>).high.slice(),
        windows: (p as NonNullable<typeof p>).windows.map((w) => ({ ...w, counts: w.counts.slice() })),
      }));
      for (const s of selectors) s?.[m]?.mergeCounts(copies);
    }
    const passes = jobs[0].passes;
    if (passes > 1) {
      visitMine(1);
      for (let m = 0; m < models; m++) {
        const lows = selectors.map((s) => s?.[m]?.lowCounts().map((l) => l?.slice() ?? null) ?? []);
        for (const s of selectors) s?.[m]?.mergeLow(lows);
      }
    }
    const before = Array.from({ length: models }, () => [0, 0] as [number, number]);
    const parts: Uint8Array[] = [];
    for (let k = 0; k < chunks; k++) {
      const t = k % threads;
      fill(t, k);
      const own = jobs[t].chunkTies?.(0, elementsOf(k)) ?? [];
      (selectors[t] as (MagnitudeRangeSelector | null)[]).forEach((s, m) => {
        s?.setTiesBefore(before[m]);
      });
      parts.push(jobs[t].produce(0, k * rowsPerChunk * rowLen, elementsOf(k)).slice());
      own.forEach(([upTo, below], m) => {
        before[m][0] += upTo;
        before[m][1] += below;
      });
    }
    return { bytes: new Uint8Array(Buffer.concat(parts)), passes };
  }

  it('selects the same cuts with the statistics split among threads, the fallback pass included', () => {
    const shape = [2400, 1000];
    const n = shape[0] * shape[1];
    const split = CASES.filter(
      (x) => (x.method === 'ties' || x.method === 'breadcrumbs_ties') && !x.params?.rescale,
    );
    for (const misleading of [false, true]) {
      for (const c of split) {
        const values = tensors(n, c.models, 17, true);
        if (misleading) {
          // Small task vectors in the first 2^20 elements of each thread's chunks, large ones after.
          for (const x of values.slice(1))
            for (let i = 0; i < n; i++) {
              const row = Math.floor(i / 1000);
              const early = row % 600 < 300 && row < 1200;
              x[i] = values[0][i] + (x[i] - values[0][i]) * (early ? 0.01 : 10);
            }
        }
        const ordered = [...values.slice(1), values[0]];
        const stored = ordered.map((v) => encodeFromF32(v, 'BF16'));
        const dtypes = ordered.map(() => 'BF16' as FloatDType);
        const name = 'model.embed_tokens.weight';
        const expected = referenceBytes(c, name, shape, 0, stored, dtypes, 'BF16');
        for (const threads of misleading ? [2] : [2, 3]) {
          const { bytes, passes } = splitBytes(c, name, shape, stored, 300, threads);
          const where = `${c.method} with ${c.models} model(s) on ${threads} threads${misleading ? ', misleading rows' : ''}`;
          expect(same(expected, bytes), `${where}: ${firstDifference(expected, bytes, 2)}`).toBe(true);
          if (misleading && threads === 2 && c.models === 1) expect(passes, `${where}: pass 1 ran`).toBe(2);
        }
      }
    }
  }, 120_000);

  it('is off where the reference is asked for', () => {
    expect(loadKernels('ts')).toBeNull();
  });
});

describe('slerp and model_stock reductions in WebAssembly equal the reference byte for byte', () => {
  const REDUCTION_CASES: Case[] = [
    { method: 'slerp', params: { t: 0.3 }, models: 1, modelParams: () => ({}) },
    { method: 'slerp', params: { t: 1 }, models: 1, modelParams: () => ({}) },
    { method: 'model_stock', models: 2, modelParams: () => ({}) },
    { method: 'model_stock', models: 4, modelParams: () => ({}) },
    { method: 'model_stock', params: { filter_wise: true }, models: 3, modelParams: () => ({}) },
    // DELLA's per-fiber ranks (a radix sort in the kernels), with and without rescale.
    {
      method: 'della',
      models: 2,
      modelParams: (m) => ({ weight: [0.6, 1][m], density: [0.5, 0.3][m], epsilon: 0.1 }),
    },
    {
      method: 'della_linear',
      params: { rescale: false },
      models: 1,
      modelParams: () => ({ weight: 1, density: 0.6, epsilon: 0.2 }),
    },
  ];
  // Block sums of 256 terms, four blocks at a time in the kernels: one row over many blocks with a
  // tail, blocks split across chunks of 1 or 2 rows (rows not multiples of 4 or 8), a 1-D tensor,
  // rows shorter than a block, and rows longer than four blocks (filter_wise's per-row sums).
  const SHAPES = [
    { shape: [1, 5003], rowsPerChunk: 1 },
    { shape: [3, 1501], rowsPerChunk: 1 },
    { shape: [9, 1031], rowsPerChunk: 2 },
    { shape: [4099], rowsPerChunk: 1 },
    { shape: [67, 13], rowsPerChunk: 30 },
    { shape: [2, 3, 7], rowsPerChunk: 1 },
    { shape: [3, 301, 5], rowsPerChunk: 2 },
  ];
  const MIXES: { inputs: FloatDType[]; out: FloatDType }[] = [
    { inputs: ['BF16'], out: 'BF16' },
    { inputs: ['F16'], out: 'F32' },
    { inputs: ['F32'], out: 'F16' },
    { inputs: ['BF16', 'F32', 'F16'], out: 'BF16' },
  ];
  for (const c of REDUCTION_CASES) {
    it(`${c.method} ${JSON.stringify(c.params ?? {})} with ${c.models} model(s)`, () => {
      for (const { shape, rowsPerChunk } of SHAPES) {
        const n = shape.reduce((a, b) => a * b, 1);
        for (const mix of MIXES) {
          for (const seed of [3, 11]) {
            for (const specials of [false, true]) {
              const values = tensors(n, c.models, seed * 131 + n, specials);
              const ordered = [...values.slice(1), values[0]];
              const dtypes = ordered.map((_, i) => mix.inputs[i % mix.inputs.length]);
              const stored = ordered.map((v, i) => encodeFromF32(v, dtypes[i]));
              const name = 'model.layers.0.self_attn.q_proj.weight';
              const expected = referenceBytes(c, name, shape, seed, stored, dtypes, mix.out);
              const actual = kernelBytes(c, name, shape, seed, stored, dtypes, mix.out, rowsPerChunk);
              const where = `${dtypes.join('/')} -> ${mix.out}, seed ${seed}, shape [${shape}], ${rowsPerChunk} rows a chunk${specials ? ', specials' : ''}`;
              expect(
                same(expected, actual, mix.out),
                `${where}: ${firstDifference(expected, actual, DTYPE_BYTES[mix.out])}`,
              ).toBe(true);
              // A buffer set per chunk, as the engine's cache of small tensors lays them out.
              const keptChunks = kernelBytes(
                c,
                name,
                shape,
                seed,
                stored,
                dtypes,
                mix.out,
                rowsPerChunk,
                {},
                {
                  keepChunks: true,
                },
              );
              expect(
                same(expected, keptChunks, mix.out),
                `${where}, every chunk kept: ${firstDifference(expected, keptChunks, DTYPE_BYTES[mix.out])}`,
              ).toBe(true);
            }
          }
        }
      }
    });
  }

  it('takes the colinear and zero-norm branches as the reference does', () => {
    const shape = [5, 1029];
    const n = shape[0] * shape[1];
    const [base, other] = tensors(n, 1, 17, false);
    const zero = new Float32Array(n);
    const scaled = base.map((v) => v * 2);
    const slerp = REDUCTION_CASES[0];
    const stock = REDUCTION_CASES[2];
    for (const [label, c, inputs] of [
      ['slerp of colinear vectors', slerp, [scaled, base]],
      ['slerp from a zero base', slerp, [other, zero]],
      ['slerp to a zero model', slerp, [zero, base]],
      ['model_stock of identical models', stock, [other, other, base]],
      ['model_stock of unchanged models', stock, [base, base, base]],
    ] as [string, Case, Float32Array[]][]) {
      const dtypes = inputs.map(() => 'F32' as FloatDType);
      const stored = inputs.map((v) => encodeFromF32(v, 'F32'));
      const expected = referenceBytes(c, 'w', shape, 0, stored, dtypes, 'F32');
      const actual = kernelBytes(c, 'w', shape, 0, stored, dtypes, 'F32', 2);
      expect(same(expected, actual, 'F32'), `${label}: ${firstDifference(expected, actual, 4)}`).toBe(true);
    }
  });

  it('rounds the inputs to the working dtype first, as the reference does', () => {
    const shape = [4, 1300];
    const n = shape[0] * shape[1];
    for (const c of REDUCTION_CASES) {
      const values = tensors(n, c.models, 23, true);
      const ordered = [...values.slice(1), values[0]];
      const dtypes = ordered.map((_, i) => (['F32', 'BF16', 'F16'] as FloatDType[])[i % 3]);
      const stored = ordered.map((v, i) => encodeFromF32(v, dtypes[i]));
      for (const work of ['BF16', 'F16', 'F32'] as FloatDType[]) {
        // The reference: each input decoded, then rounded to the working dtype.
        const rounded = stored.map((bytes, i) => encodeFromF32(decodeToF32(bytes, dtypes[i]), work));
        const expected = referenceBytes(
          c,
          'w',
          shape,
          0,
          rounded,
          dtypes.map(() => work),
          'BF16',
        );
        const actual = kernelBytes(c, 'w', shape, 0, stored, dtypes, 'BF16', 1, {}, { workDtype: work });
        expect(
          same(expected, actual),
          `${c.method} in ${work}: ${firstDifference(expected, actual, 2)}`,
        ).toBe(true);
      }
    }
  });
});
