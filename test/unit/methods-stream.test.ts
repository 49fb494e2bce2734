import { describe, expect, it } from 'vitest';
import { chunkRowLength, specOf } from '../../src/methods/chunks';
import {
  BlockedSumF32,
  blockedSumF32,
  dotF32,
  REDUCTION_BLOCK,
  sumAbsF32,
} from '../../src/methods/f32-reduce';
import { getMethod } from '../../src/methods/index';
import {
  MagnitudeRangeSelector,
  magnitudeRankRangeMask,
  SELECTION_SAMPLE,
} from '../../src/methods/rank-select';
import type { MergeInputs, ResolvedParams } from '../../src/methods/types';
import { MergeMethodError } from '../../src/methods/types';

const f = Math.fround;

/** xorshift32: deterministic test data and splits. */
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}

type Pattern = 'smooth' | 'quantized' | 'specials';

/** Values in [-1, 1): continuous, or on a coarse grid (many equal magnitudes), or with NaN/±Inf. */
function values(n: number, pattern: Pattern, next: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = next() * 2 - 1;
    out[i] = pattern === 'quantized' ? Math.round(u * 4) / 8 : u;
  }
  if (pattern === 'specials' && n > 3) {
    out[Math.floor(next() * n)] = Number.NaN;
    out[Math.floor(next() * n)] = Number.POSITIVE_INFINITY;
    out[Math.floor(next() * n)] = Number.NEGATIVE_INFINITY;
    out[Math.floor(next() * n)] = -0;
  }
  return out;
}

/**
 * The first element whose bit pattern differs (so -0 differs from 0), or undefined when there is
 * none; a short message instead of a huge array diff. NaNs match any NaN: when both operands of an
 * operation are NaN, x86 returns the first one, and which operand comes first is the JIT's choice,
 * so a NaN's sign and payload may differ between two runs of the same code (as in the GPU checks).
 */
function firstBitDifference(got: Float32Array, want: Float32Array): string | undefined {
  if (got.length !== want.length) return `length ${got.length} instead of ${want.length}`;
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i] && !(Number.isNaN(got[i]) && Number.isNaN(want[i])))
      return `element ${i}: ${got[i]} (0x${a[i].toString(16)}) instead of ${want[i]} (0x${b[i].toString(16)})`;
  }
  return undefined;
}

/** Row boundaries of a random split into whole rows: [0, ..., rows], chunk sizes 1 to `rows`. */
function randomSplit(rows: number, next: () => number, largest: number): number[] {
  const bounds = [0];
  while (bounds[bounds.length - 1] < rows) {
    const size = 1 + Math.floor(next() * largest);
    bounds.push(Math.min(rows, bounds[bounds.length - 1] + size));
  }
  return bounds;
}

/** The whole-row splits tried for a tensor: one chunk, one row per chunk, and random ones. */
function splitsFor(rows: number, seed: number): number[][] {
  const next = random(seed);
  const splits = [[0, rows], Array.from({ length: rows + 1 }, (_, r) => r)];
  for (const largest of [2, Math.ceil(rows / 3), Math.ceil(rows / 2)])
    splits.push(randomSplit(rows, next, largest));
  return splits;
}

/** Runs `stream` over the chunks of `bounds`: every statistics pass over every chunk, then produce. */
function streamed(method: string, inputs: MergeInputs, bounds: number[]): Float32Array {
  const job = getMethod(method).stream!(specOf(inputs));
  const rowLength = chunkRowLength(inputs.shape);
  const n = inputs.tensors[0].values.length;
  const chunks = bounds.slice(1).map((end, k) => {
    const start = bounds[k] * rowLength;
    const stop = end * rowLength;
    // Copies on even chunks, offset views on odd ones: neither buffers nor offsets may matter.
    return {
      start,
      values: inputs.tensors.map((t) =>
        k % 2 === 0 ? t.values.slice(start, stop) : t.values.subarray(start, stop),
      ),
    };
  });
  for (let pass = 0; pass < job.passes; pass++) for (const chunk of chunks) job.accumulate(pass, chunk);
  const out = new Float32Array(n).fill(12345);
  for (const chunk of chunks) {
    const part = new Float32Array(chunk.values[0].length);
    job.produce(chunk, part);
    out.set(part, chunk.start);
  }
  return out;
}

interface StreamCase {
  readonly method: string;
  readonly shape: number[];
  /** Models before the base (the base is last), each with its parameters. */
  readonly models: ResolvedParams[];
  readonly params?: ResolvedParams;
  readonly pattern: Pattern;
  /** Make model `m`'s tensor equal to the base (an all-zero task vector). */
  readonly zeroDelta?: number;
  readonly noBase?: boolean;
}

function caseInputs(c: StreamCase, seed: number): MergeInputs {
  const next = random(seed);
  const n = c.shape.reduce((a, b) => a * b, 1);
  const base = values(n, c.pattern, next);
  const tensors = c.models.map((params, m) => {
    let x: Float32Array;
    if (m === c.zeroDelta) x = base.slice();
    else {
      // Near the base, as fine-tuned models are; on the grid the deltas keep many equal magnitudes.
      const offset = values(n, c.pattern, next);
      x = Float32Array.from(base, (b, i) => b + offset[i] * 0.25);
    }
    return { model: `m${m}`, values: x, params };
  });
  if (!c.noBase) tensors.push({ model: 'base', values: base, params: { weight: 0.5 } });
  return {
    tensorName: `model.layers.${seed}.mlp.up_proj.weight`,
    shape: c.shape,
    tensors,
    baseIndex: c.noBase ? -1 : tensors.length - 1,
    params: c.params ?? {},
    seed: 1000 + seed,
  };
}

const w = (weight: number, extra: ResolvedParams = {}): ResolvedParams => ({ weight, ...extra });

/** Every method with parameter sets that reach each code path. */
const CASES: StreamCase[] = [
  { method: 'linear', shape: [37, 29], models: [w(1), w(3)], pattern: 'smooth', noBase: true },
  {
    method: 'linear',
    shape: [211],
    models: [w(0.5), w(0.25)],
    params: { normalize: false },
    pattern: 'specials',
  },
  { method: 'linear', shape: [5, 3, 19], models: [w(2), w(-1), w(0.5)], pattern: 'quantized' },
  { method: 'slerp', shape: [301, 300], models: [{}], params: { t: 0.3 }, pattern: 'smooth' },
  { method: 'slerp', shape: [53, 7], models: [{}], params: { t: 0.7 }, pattern: 'specials' },
  { method: 'slerp', shape: [40, 9], models: [{}], params: { t: 0.4 }, pattern: 'quantized', zeroDelta: 0 },
  { method: 'model_stock', shape: [301, 300], models: [{}, {}], pattern: 'smooth' },
  {
    method: 'model_stock',
    shape: [31, 17],
    models: [{}, {}, {}],
    params: { filter_wise: true },
    pattern: 'quantized',
  },
  {
    method: 'model_stock',
    shape: [6, 4, 9],
    models: [{}, {}],
    params: { filter_wise: true },
    pattern: 'specials',
  },
  { method: 'model_stock', shape: [97], models: [{}, {}, {}], pattern: 'smooth', zeroDelta: 1 },
  { method: 'task_arithmetic', shape: [37, 29], models: [w(0.7), w(0.3)], pattern: 'smooth' },
  { method: 'task_arithmetic', shape: [77, 13], models: [w(0.7)], pattern: 'specials' },
  {
    method: 'ties',
    shape: [53, 11],
    models: [w(0.8, { density: 0.3 })],
    params: { lambda: 0.9 },
    pattern: 'specials',
  },
  {
    method: 'task_arithmetic',
    shape: [33, 5],
    models: [w(1), w(-1)],
    params: { normalize: true, lambda: 0.6 },
    pattern: 'specials',
  },
  {
    method: 'ties',
    shape: [64, 37],
    models: [w(1, { density: 0.2 }), w(0.5, { density: 0.5 })],
    pattern: 'quantized',
  },
  {
    method: 'ties',
    shape: [301, 300],
    models: [w(1, { density: 0.3 }), w(1, { density: 1 })],
    params: { rescale: true, lambda: 1.5 },
    pattern: 'quantized',
  },
  {
    method: 'ties',
    shape: [29, 3, 7],
    models: [w(1, { density: 0.4 }), w(2, { density: 0.1 })],
    params: { rescale: true, normalize: false },
    pattern: 'specials',
  },
  {
    method: 'ties',
    shape: [500],
    models: [w(1, { density: 0.5 }), w(1, { density: 0.5 })],
    pattern: 'quantized',
    zeroDelta: 0,
  },
  {
    method: 'dare_linear',
    shape: [301, 300],
    models: [w(1, { density: 0.3 }), w(0.5, { density: 0.6 })],
    pattern: 'smooth',
  },
  {
    method: 'dare_linear',
    shape: [41, 13],
    models: [w(1, { density: 0.5 })],
    params: { rescale: false },
    pattern: 'specials',
  },
  {
    method: 'dare_ties',
    shape: [64, 37],
    models: [w(1, { density: 0.4 }), w(1, { density: 0.4 })],
    pattern: 'quantized',
  },
  {
    method: 'dare_ties',
    shape: [19, 23],
    models: [w(1, { density: 0 }), w(1, { density: 0.7 })],
    params: { rescale: false, normalize: true },
    pattern: 'smooth',
    zeroDelta: 1,
  },
  {
    method: 'breadcrumbs',
    shape: [64, 37],
    models: [w(1, { density: 0.8, gamma: 0.05 }), w(0.5, { density: 0.6, gamma: 0.3 })],
    pattern: 'quantized',
  },
  {
    method: 'breadcrumbs',
    shape: [301, 300],
    models: [w(1, { density: 0.7, gamma: 0.01 })],
    params: { rescale: true },
    pattern: 'quantized',
  },
  // gamma * n < 1: mergekit's empty slice drops the whole task vector.
  { method: 'breadcrumbs', shape: [9, 7], models: [w(1, { density: 0.9, gamma: 0.01 })], pattern: 'smooth' },
  {
    method: 'breadcrumbs_ties',
    shape: [31, 3, 5],
    models: [w(1, { density: 0.9, gamma: 0.1 }), w(1, { density: 0.5, gamma: 0.6 })],
    params: { rescale: true },
    pattern: 'specials',
  },
  {
    method: 'della',
    shape: [64, 37],
    models: [w(1, { density: 0.5, epsilon: 0.1 }), w(0.7, { density: 0.3 })],
    pattern: 'quantized',
  },
  { method: 'della', shape: [17, 6, 5], models: [w(1, { density: 0.6, epsilon: 0.2 })], pattern: 'specials' },
  {
    method: 'della_linear',
    shape: [301, 300],
    models: [w(1, { density: 0.4, epsilon: 0.1 })],
    params: { rescale: true },
    pattern: 'smooth',
  },
  {
    method: 'della_linear',
    shape: [600],
    models: [w(1, { density: 0.4, epsilon: 0.1 }), w(1, { density: 0 })],
    params: { rescale: false },
    pattern: 'quantized',
    zeroDelta: 0,
  },
];

describe('streamed merges equal whole-tensor merges bit for bit', () => {
  it('covers every method that streams', () => {
    const covered = new Set(CASES.map((c) => c.method));
    for (const name of [
      'linear',
      'slerp',
      'model_stock',
      'task_arithmetic',
      'ties',
      'dare_linear',
      'dare_ties',
      'breadcrumbs',
      'breadcrumbs_ties',
      'della',
      'della_linear',
    ]) {
      expect(getMethod(name).stream, name).toBeTypeOf('function');
      expect(covered.has(name), name).toBe(true);
    }
  });

  CASES.forEach((c, index) => {
    const label = `${c.method} [${c.shape.join('x')}] ${c.pattern} ${JSON.stringify(c.params ?? {})} ${JSON.stringify(c.models)}`;
    it(label, () => {
      const inputs = caseInputs(c, index);
      const whole = getMethod(c.method).merge(inputs);
      expect(whole.length).toBe(inputs.tensors[0].values.length);
      const rows = inputs.tensors[0].values.length / chunkRowLength(c.shape);
      for (const bounds of splitsFor(rows, index + 77)) {
        const split = bounds.length > 12 ? `${bounds.length - 1} chunks` : bounds.join(',');
        expect(
          firstBitDifference(streamed(c.method, inputs, bounds), whole),
          `split ${split}`,
        ).toBeUndefined();
      }
    });
  });

  it('makes the ties at the TIES threshold go to the lowest indices across chunks', () => {
    // 12 rows of 5 equal magnitudes: k = 0.25 * 60 = 15 keeps exactly the first 15 elements.
    const n = 60;
    const x = Float32Array.from({ length: n }, (_, i) => (i % 2 ? -1 : 1));
    const inputs: MergeInputs = {
      tensorName: 't',
      shape: [12, 5],
      tensors: [
        { model: 'a', values: x, params: { weight: 1, density: 0.25 } },
        { model: 'base', values: new Float32Array(n), params: {} },
      ],
      baseIndex: 1,
      params: {},
      seed: 0,
    };
    const expected = Array.from(x, (v, i) => (i < 15 ? v : 0));
    for (const bounds of [
      [0, 12],
      [0, 1, 2, 3, 4, 12],
      [0, 2, 3, 7, 12],
    ]) {
      expect(Array.from(streamed('ties', inputs, bounds))).toEqual(expected);
    }
  });

  it('keeps exactly the top k of a tensor larger than the selection sample, however its first rows look', () => {
    // 3.2M elements, three times SELECTION_SAMPLE: the cut is guessed from the first rows, which here
    // are 1000 times smaller than the rest, so the guess is wrong and the exact second pass must run.
    const rows = 3200;
    const cols = 1000;
    const n = rows * cols;
    expect(n).toBeGreaterThan(3 * SELECTION_SAMPLE);
    const next = random(21);
    const x = values(n, 'smooth', next);
    for (let i = 0; i < 1100 * cols; i++) x[i] /= 1000;
    const inputs: MergeInputs = {
      tensorName: 'model.embed_tokens.weight',
      shape: [rows, cols],
      tensors: [
        { model: 'a', values: x, params: { weight: 1, density: 0.3 } },
        { model: 'base', values: new Float32Array(n), params: {} },
      ],
      baseIndex: 1,
      params: {},
      seed: 0,
    };
    // Pass 0 alone settles the cut on the smooth tensor but not on the misleading one.
    const passesAfterPass0 = (values: Float32Array) => {
      const job = getMethod('ties').stream!(specOf(inputs));
      expect(job.passes).toBe(2);
      job.accumulate(0, { start: 0, values: [values, inputs.tensors[1].values] });
      return job.passes;
    };
    expect(passesAfterPass0(values(n, 'smooth', random(22)))).toBe(1);
    expect(passesAfterPass0(x)).toBe(2);
    const whole = getMethod('ties').merge(inputs);
    let kept = 0;
    let smallestKept = Number.POSITIVE_INFINITY;
    let largestDropped = 0;
    whole.forEach((v, i) => {
      if (v !== 0) {
        kept++;
        smallestKept = Math.min(smallestKept, Math.abs(v));
      } else largestDropped = Math.max(largestDropped, Math.abs(x[i]));
    });
    expect(kept).toBe(Math.trunc(0.3 * n));
    expect(smallestKept).toBeGreaterThanOrEqual(largestDropped);
    for (const bounds of [[0, 1, 2, 1500, rows], randomSplit(rows, next, 1200)]) {
      expect(firstBitDifference(streamed('ties', inputs, bounds), whole)).toBeUndefined();
    }
  });

  it('rejects chunks that are not whole rows, naming the tensor', () => {
    const inputs = caseInputs(
      { method: 'task_arithmetic', shape: [37, 29], models: [w(1)], pattern: 'smooth' },
      3,
    );
    const job = getMethod('task_arithmetic').stream!(specOf(inputs));
    const chunk = { start: 3, values: inputs.tensors.map((t) => t.values.subarray(3, 3 + 29)) };
    expect(() => job.produce(chunk, new Float32Array(29))).toThrow(MergeMethodError);
    expect(() => job.produce(chunk, new Float32Array(29))).toThrow(/not whole rows of 29.*/);
  });

  it('reports parameter errors when the stream is created, before any chunk is read', () => {
    const inputs = caseInputs(
      { method: 'ties', shape: [64, 37], models: [w(1, { density: 0.2 })], pattern: 'smooth' },
      0,
    );
    const spec = specOf({
      ...inputs,
      tensors: inputs.tensors.map((t, i) => (i === 0 ? { ...t, params: { weight: 1, density: 0.0001 } } : t)),
    });
    expect(() => getMethod('ties').stream!(spec)).toThrow(/model "m0".*keeps no element/);
  });
});

describe('blocked f32 sums fed in pieces', () => {
  const lengths = [
    0,
    1,
    REDUCTION_BLOCK - 1,
    REDUCTION_BLOCK,
    REDUCTION_BLOCK + 1,
    REDUCTION_BLOCK * REDUCTION_BLOCK,
    REDUCTION_BLOCK * REDUCTION_BLOCK + 1,
    REDUCTION_BLOCK * REDUCTION_BLOCK * 2 + 37,
  ];

  it('gives the one-shot sum for any cut of the terms', () => {
    const next = random(5);
    for (const n of lengths) {
      const x = values(n, 'smooth', next);
      const y = values(n, 'smooth', next);
      for (const largest of [1, 7, 300, 70000]) {
        const abs = new BlockedSumF32();
        const products = new BlockedSumF32();
        const single = new BlockedSumF32();
        let from = 0;
        while (from < n) {
          const to = Math.min(n, from + 1 + Math.floor(next() * largest));
          abs.addAbs(x, from, to);
          products.addProducts(x, y, from, to);
          for (let i = from; i < to; i++) single.add(x[i] * y[i]);
          from = to;
        }
        expect(abs.result(), `abs n=${n}`).toBe(sumAbsF32(x));
        expect(products.result(), `dot n=${n}`).toBe(dotF32(x, y));
        expect(single.result(), `terms n=${n}`).toBe(dotF32(x, y));
      }
    }
  });

  it('matches the level-by-level definition on three levels', () => {
    const n = REDUCTION_BLOCK * REDUCTION_BLOCK * 2 + 37;
    const next = random(9);
    const x = values(n, 'smooth', next);
    const sequential = (terms: Float32Array) => terms.reduce((acc, v, i) => (i === 0 ? v : f(acc + v)), 0);
    let level = Float32Array.from(x, Math.abs);
    while (level.length > REDUCTION_BLOCK) {
      const next: number[] = [];
      for (let s = 0; s < level.length; s += REDUCTION_BLOCK)
        next.push(sequential(level.subarray(s, s + REDUCTION_BLOCK)));
      level = Float32Array.from(next);
    }
    expect(sumAbsF32(x)).toBe(sequential(level));
    expect(blockedSumF32(n, (i) => Math.abs(x[i]))).toBe(sequential(level));
  });
});

describe('magnitude range selection over chunks', () => {
  /**
   * Selects [from, to) with the selector over a random split and returns the mask and the number
   * of statistics passes it ran.
   */
  function selectInChunks(
    x: Float32Array,
    from: number,
    to: number,
    order: 'ascending' | 'descending',
    sampleSize: number | undefined,
    next: () => number,
  ): { masks: Uint8Array[]; passes: number } {
    const n = x.length;
    const bits = new Int32Array(x.buffer, x.byteOffset, n);
    const selector = new MagnitudeRangeSelector(n, from, to, order, sampleSize);
    const bounds = randomSplit(n, next, 700);
    let pass = 0;
    for (; pass < selector.passes; pass++) {
      for (let k = 1; k < bounds.length; k++) {
        if (pass === 0) selector.countHigh(bits, bounds[k - 1], bounds[k]);
        else selector.countLow(bits, bounds[k - 1], bounds[k]);
      }
    }
    // Twice, as a rescaled TIES does (once for the L1 norm, once for the output).
    const masks = [0, 1].map(() => {
      const ones = new Float32Array(n).fill(1);
      for (let k = 1; k < bounds.length; k++) {
        selector.maskValues(bits, bounds[k - 1], bounds[k], bounds[k - 1], ones, bounds[k - 1]);
      }
      return Uint8Array.from(ones);
    });
    return { masks, passes: pass };
  }

  const cuts = (n: number) => [
    [0, 1],
    [0, 1234],
    [100, n - 100],
    [0, n],
    [n - 1, n],
    [300, 300],
    [-5, 20],
  ];

  it('selects the same elements as on the whole tensor, in both orders and for any cut', () => {
    const next = random(11);
    const n = 5000;
    const x = values(n, 'quantized', next);
    x[17] = Number.NaN;
    x[4000] = Number.POSITIVE_INFINITY;
    x[99] = -0;
    for (const [from, to] of cuts(n)) {
      for (const order of ['ascending', 'descending'] as const) {
        const whole = magnitudeRankRangeMask(x, from, to, order);
        const kept = whole.reduce((a, b) => a + b, 0);
        expect(kept).toBe(Math.max(0, Math.min(n, to) - Math.max(0, from)));
        // A sample as large as the tensor, one that guesses right, and one misled by its first rows.
        for (const sampleSize of [undefined, 800, 40]) {
          const { masks, passes } = selectInChunks(x, from, to, order, sampleSize, next);
          for (const mask of masks) {
            expect(
              mask.findIndex((v, i) => v !== whole[i]),
              `${order} [${from}, ${to}) sample ${sampleSize}`,
            ).toBe(-1);
          }
          const needsKey = Math.max(0, from) > 0 || Math.min(n, to) < n;
          if (sampleSize === undefined) expect(passes).toBe(needsKey && to > from ? 1 : 0);
        }
      }
    }
  });

  it('skips pass 1 when the first elements predict the cut, and runs it when they mislead', () => {
    // A sample of 50000 keys: the windows (+-0.5% of the sample's order, at most 8 buckets) are wide
    // enough for the sampling noise of the guessed cut, as they are at the real sample size.
    const next = random(13);
    const n = 200_000;
    const sample = 50_000;
    const x = values(n, 'smooth', next);
    const predicted = selectInChunks(x, 0, 40_000, 'descending', sample, next);
    expect(predicted.passes).toBe(1);
    // The sampled elements are 1000 times smaller than the rest: the guess lands far too low.
    const misleading = x.map((v, i) => (i < sample ? v / 1000 : v));
    const whole = magnitudeRankRangeMask(misleading, 0, 40_000, 'descending');
    const misled = selectInChunks(misleading, 0, 40_000, 'descending', sample, next);
    expect(misled.passes).toBe(2);
    expect(misled.masks[1].findIndex((v, i) => v !== whole[i])).toBe(-1);
    const wholePredicted = magnitudeRankRangeMask(x, 0, 40_000, 'descending');
    expect(predicted.masks[0].findIndex((v, i) => v !== wholePredicted[i])).toBe(-1);
  });
});
