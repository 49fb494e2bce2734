import { describe, expect, it } from 'vitest';
import { blockedSumF32, REDUCTION_BLOCK, sumAbsF32 } from '../../src/methods/f32-reduce';
import { fiberMagnitudeRanks, magnitudeRankRangeMask } from '../../src/methods/rank-select';
import {
  bernoulliMask,
  breadcrumbsCuts,
  dellaKeepProbabilities,
  dellaMask,
  magnitudeMask,
  magnitudeOutliersMask,
  rescaledMaskedInPlace,
  sparsifyInPlace,
} from '../../src/methods/sparsify';
import { MergeMethodError } from '../../src/methods/types';
import { fnv1a32, uniformAt } from '../../src/random/counter-rng';

const f = Math.fround;

/** Deterministic pseudo-random values in [-1, 1) quantized to `levels` steps, so many ties occur. */
function quantized(n: number, levels: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let state = seed >>> 0;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = (Math.floor((state / 2 ** 32) * levels) - levels / 2) / levels;
  }
  return out;
}

/** Independent reference: positions [from, to) of a stable sort by |x| (NaN largest). */
function referenceRange(values: Float32Array, from: number, to: number, descending: boolean): Set<number> {
  const magnitude = (v: number) => (Number.isNaN(v) ? Number.POSITIVE_INFINITY * 2 : Math.abs(v));
  const rank = (v: number) => (Number.isNaN(v) ? 1 : 0);
  const indices = Array.from(values.keys());
  indices.sort((a, b) => {
    const va = values[a];
    const vb = values[b];
    const byNaN = rank(va) - rank(vb);
    const byMagnitude = byNaN !== 0 ? byNaN : magnitude(va) - magnitude(vb);
    const ordered = descending ? -byMagnitude : byMagnitude;
    return ordered !== 0 && !Number.isNaN(ordered) ? ordered : a - b;
  });
  return new Set(indices.slice(from, to));
}

function maskedSet(mask: Uint8Array): Set<number> {
  const out = new Set<number>();
  mask.forEach((keep, i) => {
    if (keep) out.add(i);
  });
  return out;
}

describe('blocked f32 sums', () => {
  it('sums short ranges sequentially in f32', () => {
    const x = new Float32Array([1e8, 1, 1, 1, 1, -1e8]);
    // Sequentially in f32, 1e8 + 1 rounds back to 1e8 each time.
    expect(sumAbsF32(new Float32Array([1e8, 1, 1, 1]))).toBe(1e8);
    expect(blockedSumF32(x.length, (i) => x[i])).toBe(0);
  });

  it('sums blocks of REDUCTION_BLOCK first, then the block sums', () => {
    // Block 0: 1e8 then 255 ones (each lost); block 1: 256 ones = 256. Total 1e8 + 256, representable.
    const x = new Float32Array(2 * REDUCTION_BLOCK).fill(1);
    x[0] = 1e8;
    expect(sumAbsF32(x)).toBe(1e8 + 256);
    const sequential = x.reduce((acc, v, i) => (i === 0 ? v : f(acc + v)), 0);
    expect(sequential).toBe(1e8);
  });

  it('matches a recursive reference on three levels and sums integers exactly', () => {
    const n = REDUCTION_BLOCK * REDUCTION_BLOCK * 2 + 37;
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = (i % 7) - 3;
    const reference = (terms: number[]): number => {
      if (terms.length <= REDUCTION_BLOCK) return terms.reduce((acc, v, i) => (i === 0 ? v : f(acc + v)), 0);
      const next: number[] = [];
      for (let s = 0; s < terms.length; s += REDUCTION_BLOCK)
        next.push(reference(terms.slice(s, s + REDUCTION_BLOCK)));
      return reference(next);
    };
    expect(sumAbsF32(x)).toBe(reference(Array.from(x, Math.abs)));
    let exact = 0;
    for (const v of x) exact += Math.abs(v);
    expect(sumAbsF32(x)).toBe(exact);
  });

  it('gives NaN when any term is NaN and 0 for an empty range', () => {
    expect(sumAbsF32(new Float32Array([1, Number.NaN, 2]))).toBeNaN();
    expect(sumAbsF32(new Float32Array(0))).toBe(0);
  });
});

describe('magnitude rank selection', () => {
  it('keeps the k largest, ties at the threshold to the lowest indices', () => {
    const values = new Float32Array([1, 3, -3, 3, 2, 3, 0]);
    expect(maskedSet(magnitudeRankRangeMask(values, 0, 3, 'descending'))).toEqual(new Set([1, 2, 3]));
    expect(maskedSet(magnitudeRankRangeMask(values, 0, 5, 'descending'))).toEqual(new Set([1, 2, 3, 5, 4]));
    expect(maskedSet(magnitudeRankRangeMask(values, 2, 4, 'ascending'))).toEqual(new Set([4, 1]));
  });

  it('orders NaN above +Inf and treats -0 like +0', () => {
    const values = new Float32Array([Number.NaN, Number.POSITIVE_INFINITY, -0, 0, 5, Number.NaN]);
    expect(maskedSet(magnitudeRankRangeMask(values, 0, 2, 'descending'))).toEqual(new Set([0, 5]));
    expect(maskedSet(magnitudeRankRangeMask(values, 0, 3, 'descending'))).toEqual(new Set([0, 5, 1]));
    expect(maskedSet(magnitudeRankRangeMask(values, 0, 1, 'ascending'))).toEqual(new Set([2]));
  });

  it('agrees with a stable sort on 20 000 values with many ties, every cut', () => {
    const values = quantized(20000, 16, 7);
    values[11] = Number.NaN;
    values[12] = Number.NEGATIVE_INFINITY;
    for (const [from, to] of [
      [0, 1],
      [0, 7777],
      [123, 19000],
      [0, 20000],
      [19999, 20000],
      [5000, 5000],
    ]) {
      for (const descending of [true, false]) {
        const mask = magnitudeRankRangeMask(values, from, to, descending ? 'descending' : 'ascending');
        expect(maskedSet(mask)).toEqual(referenceRange(values, from, to, descending));
      }
    }
  });

  it('ranks a strided fiber stably', () => {
    // Column 1 of a 4x2 matrix: 0.5, -0.5, 0.1, 0.5 -> ascending ranks 1, 2, 0, 3.
    const matrix = new Float32Array([9, 0.5, 9, -0.5, 9, 0.1, 9, 0.5]);
    const ranks = new Uint32Array(4);
    fiberMagnitudeRanks(matrix, 1, 4, 2, ranks);
    expect(Array.from(ranks)).toEqual([1, 2, 0, 3]);
  });
});

describe('magnitude (TIES) sparsification', () => {
  it('keeps exactly int(density * n) entries, with Python truncation of density * n', () => {
    const values = quantized(100, 8, 3);
    // 0.29 * 100 = 28.999999999999996 in double, so Python's int() gives 28.
    expect(maskedSet(magnitudeMask(values, 0.29)!).size).toBe(28);
    expect(maskedSet(magnitudeMask(values, 0.3)!).size).toBe(30);
    expect(magnitudeMask(values, 1)).toBeNull();
  });

  it('keeps the lowest indices among many equal magnitudes at the threshold', () => {
    const values = new Float32Array(10).fill(0.5);
    values[7] = -2;
    const kept = maskedSet(magnitudeMask(values, 0.4)!);
    expect(kept).toEqual(new Set([7, 0, 1, 2]));
  });

  it('refuses a density that keeps nothing, as mergekit asserts', () => {
    expect(() => magnitudeMask(new Float32Array(5), 0.1)).toThrow(MergeMethodError);
    expect(() => magnitudeMask(new Float32Array(5), 0)).toThrow(/keeps no element/);
  });
});

describe('rescaled masking', () => {
  it('matches the L1 norm of the original and keeps signed zeros', () => {
    const delta = new Float32Array([1, -2, 3, -4]);
    rescaledMaskedInPlace(delta, new Uint8Array([1, 0, 1, 0]), true);
    // before = 10, after = 4, scale = 2.5
    expect(Array.from(delta)).toEqual([2.5, -0, 7.5, -0]);
    expect(Object.is(delta[1], -0)).toBe(true);
  });

  it('leaves all-zero and fully dropped tensors unscaled', () => {
    const zeros = new Float32Array(4);
    rescaledMaskedInPlace(zeros, new Uint8Array([1, 1, 0, 0]), true);
    expect(Array.from(zeros)).toEqual([0, 0, 0, 0]);
    const dropped = new Float32Array([1, 2]);
    rescaledMaskedInPlace(dropped, new Uint8Array([0, 0]), true);
    expect(Array.from(dropped)).toEqual([0, 0]);
  });

  it('propagates NaN like torch: a dropped NaN stays NaN, a dropped Inf becomes NaN', () => {
    const delta = new Float32Array([Number.NaN, Number.POSITIVE_INFINITY, 1]);
    rescaledMaskedInPlace(delta, new Uint8Array([0, 0, 1]), false);
    expect(delta[0]).toBeNaN();
    expect(delta[1]).toBeNaN();
    expect(delta[2]).toBe(1);
    const withRescale = new Float32Array([Number.NaN, 2, 1]);
    rescaledMaskedInPlace(withRescale, new Uint8Array([0, 1, 1]), true);
    expect(Array.from(withRescale).every(Number.isNaN)).toBe(true);
  });
});

describe('magnitude_outliers (breadcrumbs) sparsification', () => {
  it('cuts int(gamma * n) from the top and the rest of 1 - density from the bottom', () => {
    expect(breadcrumbsCuts(100, 0.9, 0.01)).toEqual({ bottom: 9, top: 1 });
    // density + gamma > 1: the top cut shrinks so the target density is met.
    expect(breadcrumbsCuts(10, 0.5, 0.6)).toEqual({ bottom: 0, top: 5 });
    const values = new Float32Array(100);
    for (let i = 0; i < 100; i++) values[i] = (i % 2 ? -1 : 1) * (i + 1);
    const kept = maskedSet(magnitudeOutliersMask(values, 0.9, 0.01)!);
    expect(kept.size).toBe(90);
    // Smallest 9 magnitudes (indices 0..8) and the largest (index 99) are cut.
    for (let i = 0; i < 9; i++) expect(kept.has(i)).toBe(false);
    expect(kept.has(99)).toBe(false);
    expect(kept.has(9)).toBe(true);
    expect(kept.has(98)).toBe(true);
    expect(maskedSet(magnitudeOutliersMask(values.subarray(0, 10), 0.5, 0.6)!)).toEqual(
      new Set([0, 1, 2, 3, 4]),
    );
  });

  it('keeps nothing when int(gamma * n) is 0, as mergekit slices indices[bottom:-0]', () => {
    const values = new Float32Array(50).fill(1);
    expect(maskedSet(magnitudeOutliersMask(values, 0.9, 0.01)!).size).toBe(0);
    expect(maskedSet(magnitudeOutliersMask(values, 0.9, 0)!).size).toBe(0);
  });

  it('turns a cut Inf outlier into NaN (Inf * 0)', () => {
    const delta = new Float32Array(100).fill(1);
    delta[3] = Number.POSITIVE_INFINITY;
    sparsifyInPlace(delta, {
      method: 'magnitude_outliers',
      density: 0.9,
      gamma: 0.01,
      rescale: false,
      shape: [100],
    });
    expect(delta[3]).toBeNaN();
  });
});

describe('random (DARE) sparsification', () => {
  const random = { seed: 1234, nameHash: fnv1a32('model.layers.0.self_attn.q_proj.weight'), modelIndex: 1 };

  it('keeps each entry with probability density (within 3 sigma on 1e6 entries)', () => {
    const n = 1_000_000;
    const density = 0.3;
    const kept = bernoulliMask(n, density, random)!.reduce((acc, v) => acc + v, 0);
    expect(Math.abs(kept - n * density)).toBeLessThan(3 * Math.sqrt(n * density * (1 - density)));
  });

  it('keeps element i iff its counter-based uniform is below fround(density)', () => {
    const name = 'w';
    const mask = bernoulliMask(64, 0.5, { seed: 5, nameHash: fnv1a32(name), modelIndex: 2 })!;
    for (let i = 0; i < 64; i++) expect(mask[i]).toBe(uniformAt(5, name, 2, 0, i) < f(0.5) ? 1 : 0);
  });

  it('drops everything at density 0, rejects negative densities, keeps everything at 1', () => {
    expect(bernoulliMask(100, 0, random)!.every((v) => v === 0)).toBe(true);
    expect(() => bernoulliMask(100, -0.1, random)).toThrow(MergeMethodError);
    expect(bernoulliMask(100, 1, random)).toBeNull();
  });

  it('rescales the kept entries to the original L1 norm', () => {
    const delta = new Float32Array(4096).fill(0.25);
    sparsifyInPlace(delta, { method: 'random', density: 0.5, rescale: true, shape: [4096], random });
    const kept = delta.filter((v) => v !== 0);
    expect(kept.length).toBeGreaterThan(1800);
    // Every kept entry is 0.25 * before / after = 0.25 * 4096 / kept.length (f32 steps).
    const scale = f(f(1024) / f(0.25 * kept.length));
    expect(kept[0]).toBe(f(0.25 * scale));
    expect(sumAbsF32(delta)).toBeCloseTo(1024, 2);
  });
});

describe('della_magprune (DELLA) sparsification', () => {
  it('computes rank-based keep probabilities per row in f32', () => {
    const delta = new Float32Array([0.1, -0.5, 0.3, 2, 0, -1]);
    const p = dellaKeepProbabilities(delta, [2, 3], 0.5, 0.1);
    const low = f(0.5 - 0.1);
    const step = (norm: number) => f(low + f(f(norm * 2) * f(0.1)));
    // Row 0 ascending by |x|: 0.1, 0.3, -0.5 -> ranks 0, 2, 1. Row 1: 0, -1, 2 -> ranks 2, 0, 1.
    expect(Array.from(p)).toEqual([step(0), step(1), step(0.5), step(1), step(0), step(0.5)]);
    expect(p[0]).toBeCloseTo(0.4, 6);
    expect(p[1]).toBeCloseTo(0.6, 6);
  });

  it('treats a 1-D tensor as one row and keeps probabilities within density ± epsilon', () => {
    const delta = quantized(1000, 10, 11);
    const p = dellaKeepProbabilities(delta, [1000], 0.3, 0.2);
    let lowest = Number.POSITIVE_INFINITY;
    let highest = Number.NEGATIVE_INFINITY;
    for (const v of p) {
      lowest = Math.min(lowest, v);
      highest = Math.max(highest, v);
    }
    expect(lowest).toBe(f(0.3 - 0.2));
    expect(highest).toBeCloseTo(0.5, 6);
    // Larger magnitudes never get smaller probabilities.
    for (let i = 0; i < 1000; i++) {
      for (const j of [0, 17, 400, 999]) {
        if (Math.abs(delta[i]) > Math.abs(delta[j])) expect(p[i]).toBeGreaterThan(p[j]);
      }
    }
  });

  it('ranks along dimension 1 of a 3-D tensor', () => {
    // Shape [1, 3, 2]: fibers (x[0], x[2], x[4]) and (x[1], x[3], x[5]).
    const delta = new Float32Array([3, -1, 1, -3, 2, -2]);
    const p = dellaKeepProbabilities(delta, [1, 3, 2], 0.5, 0.25);
    const at = (norm: number) => f(f(0.25) + f(f(norm * 2) * f(0.25)));
    expect(Array.from(p)).toEqual([at(1), at(0), at(0), at(1), at(0.5), at(0.5)]);
  });

  it('rejects epsilon that takes density ± epsilon out of (0, 1), after the density shortcuts', () => {
    const delta = new Float32Array([1, 2, 3, 4]);
    const random = { seed: 0, nameHash: 0, modelIndex: 0 };
    const options = { method: 'della_magprune' as const, rescale: true, shape: [4], random };
    expect(() => sparsifyInPlace(delta.slice(), { ...options, density: 0.9, epsilon: 0.15 })).toThrow(
      /density \+\/- epsilon is in \(0, 1\)/,
    );
    expect(() => sparsifyInPlace(delta.slice(), { ...options, density: 0.1, epsilon: 0.1 })).toThrow(
      MergeMethodError,
    );
    expect(Array.from(sparsifyInPlace(delta.slice(), { ...options, density: 1, epsilon: 0.5 }))).toEqual([
      1, 2, 3, 4,
    ]);
    const withNaN = new Float32Array([Number.NaN, 1]);
    expect(
      Array.from(sparsifyInPlace(withNaN, { ...options, shape: [2], density: 0, epsilon: 0.5 })),
    ).toEqual([0, 0]);
  });

  it('rejects rows of length 1 (mergekit divides 0 by 0 there)', () => {
    expect(() => dellaKeepProbabilities(new Float32Array([1, 2]), [2, 1], 0.5, 0.1)).toThrow(/at least 2/);
  });

  it('keeps element i iff its uniform at the flat index is below its probability', () => {
    const delta = quantized(300, 50, 5);
    const name = 'model.layers.1.mlp.down_proj.weight';
    const key = { seed: 77, nameHash: fnv1a32(name), modelIndex: 3 };
    const p = dellaKeepProbabilities(delta, [10, 30], 0.4, 0.2);
    const mask = dellaMask(delta, [10, 30], 0.4, 0.2, key);
    for (let i = 0; i < 300; i++) expect(mask[i]).toBe(uniformAt(77, name, 3, 0, i) < p[i] ? 1 : 0);
  });
});
