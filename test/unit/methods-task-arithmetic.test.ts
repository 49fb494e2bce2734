import { describe, expect, it } from 'vitest';
import { sumAbsF32 } from '../../src/methods/f32-reduce';
import { mixTaskVectors } from '../../src/methods/generalized-task-arithmetic';
import { getMethod } from '../../src/methods/index';
import type { MergeInputs, ResolvedParams } from '../../src/methods/types';
import { MergeMethodError } from '../../src/methods/types';

const f = Math.fround;

interface ModelSpec {
  readonly values: number[] | Float32Array;
  readonly params?: ResolvedParams;
}

/** Inputs with the base model last (mergekit's order when the base is not listed in `models`). */
function inputs(
  base: number[] | Float32Array,
  models: ModelSpec[],
  params: ResolvedParams = {},
  options: { seed?: number; tensorName?: string; shape?: number[] } = {},
): MergeInputs {
  const tensors = models.map((m, i) => ({
    model: `m${i + 1}`,
    values: Float32Array.from(m.values),
    params: m.params ?? {},
  }));
  tensors.push({ model: 'base', values: Float32Array.from(base), params: {} });
  return {
    tensorName: options.tensorName ?? 'model.layers.0.mlp.up_proj.weight',
    shape: options.shape ?? [base.length],
    tensors,
    baseIndex: tensors.length - 1,
    params,
    seed: options.seed ?? 0,
  };
}

const merge = (method: string, args: MergeInputs) => Array.from(getMethod(method).merge(args));

describe('task_arithmetic', () => {
  it('adds weighted task vectors to the base (hand-computed)', () => {
    const args = inputs(
      [1, 2, 3],
      [
        { values: [2, 2, 5], params: { weight: 0.5 } },
        { values: [0, 4, 3], params: { weight: 1 } },
      ],
    );
    // deltas [1, 0, 2] and [-1, 2, 0]; mixed [0.5 - 1, 2, 1]
    expect(merge('task_arithmetic', args)).toEqual([0.5, 4, 4]);
  });

  it('divides by the weight sum with normalize and scales by lambda', () => {
    const models = [
      { values: [2, 2, 5], params: { weight: 0.5 } },
      { values: [0, 4, 3], params: { weight: 1 } },
    ];
    const divisor = f(0.5 + 1);
    const normalized = [-0.5, 2, 1].map((m, i) => f([1, 2, 3][i] + f(m / divisor)));
    expect(merge('task_arithmetic', inputs([1, 2, 3], models, { normalize: true }))).toEqual(normalized);
    const scaled = [-0.5, 2, 1].map((m, i) => f([1, 2, 3][i] + f(m * f(0.3))));
    expect(merge('task_arithmetic', inputs([1, 2, 3], models, { lambda: 0.3 }))).toEqual(scaled);
  });

  it('returns the base when the only model has weight 0, normalized or not', () => {
    for (const method of ['task_arithmetic', 'ties', 'dare_linear', 'dare_ties', 'della', 'della_linear']) {
      const args = inputs([1, -2, 3, 4], [{ values: [5, 6, -7, 8], params: { weight: 0, density: 0.5 } }], {
        normalize: true,
      });
      expect(merge(method, args)).toEqual([1, -2, 3, 4]);
    }
  });

  it('keeps the divisor away from zero: weights summing to 0 divide by 1', () => {
    const args = inputs(
      [0, 0],
      [
        { values: [1, 2], params: { weight: 1 } },
        { values: [3, 5], params: { weight: -1 } },
      ],
      { normalize: true },
    );
    expect(merge('task_arithmetic', args)).toEqual([-2, -3]);
  });

  it('returns the base for all-zero task vectors', () => {
    const args = inputs([1, 2], [{ values: [1, 2], params: { weight: 1 } }], { normalize: true });
    expect(merge('task_arithmetic', args)).toEqual([1, 2]);
  });

  it('skips the base model when the recipe also lists it in models', () => {
    const tensors = [
      { model: 'base', values: new Float32Array([1, 1]), params: { weight: 7 } },
      { model: 'tuned', values: new Float32Array([3, 0]), params: { weight: 1 } },
    ];
    const args: MergeInputs = {
      tensorName: 't',
      shape: [2],
      tensors,
      baseIndex: 0,
      params: { normalize: true },
      seed: 0,
    };
    // Only the tuned model counts: delta [2, -1], divisor 1.
    expect(merge('task_arithmetic', args)).toEqual([3, 0]);
  });

  it('propagates NaN and Inf element by element', () => {
    const args = inputs(
      [0, 1, 2],
      [{ values: [Number.NaN, Number.POSITIVE_INFINITY, 3], params: { weight: 1 } }],
    );
    const out = merge('task_arithmetic', args);
    expect(out[0]).toBeNaN();
    expect(out[1]).toBe(Number.POSITIVE_INFINITY);
    expect(out[2]).toBe(3);
  });

  it('needs a base model and a numeric weight', () => {
    const args = inputs([1], [{ values: [2], params: { weight: 1 } }]);
    expect(() => getMethod('task_arithmetic').merge({ ...args, baseIndex: -1 })).toThrow(
      /needs a base_model/,
    );
    const noWeight = inputs([1], [{ values: [2], params: {} }]);
    expect(() => getMethod('task_arithmetic').merge(noWeight)).toThrow(/"weight" is required/);
    const badWeight = inputs([1], [{ values: [2], params: { weight: 'heavy' } }]);
    expect(() => getMethod('task_arithmetic').merge(badWeight)).toThrow(MergeMethodError);
  });
});

describe('sign consensus', () => {
  it("'sum' follows the sign of the weighted sum, 'count' the majority of signs", () => {
    const deltas = () => [new Float32Array([-5]), new Float32Array([1]), new Float32Array([1])];
    // sum: -5 + 1 + 1 = -3 < 0, only the first model agrees: -5 / 1.
    expect(
      Array.from(
        mixTaskVectors(new Float32Array([0]), deltas(), [1, 1, 1], {
          consensus: 'sum',
          normalize: true,
          lambda: 1,
        }),
      ),
    ).toEqual([-5]);
    // count: two positive signs against one, the last two agree: (1 + 1) / 2.
    expect(
      Array.from(
        mixTaskVectors(new Float32Array([0]), deltas(), [1, 1, 1], {
          consensus: 'count',
          normalize: true,
          lambda: 1,
        }),
      ),
    ).toEqual([1]);
  });

  it('breaks an exact tie toward positive and never counts zero deltas', () => {
    const out = mixTaskVectors(
      new Float32Array([10, 10]),
      [new Float32Array([2, 0]), new Float32Array([-2, 3])],
      [1, 1],
      { consensus: 'sum', normalize: true, lambda: 1 },
    );
    // Element 0: sum 0 >= 0, majority +, keep 2 / 1. Element 1: the zero delta has sign 0: 3 / 1.
    expect(Array.from(out)).toEqual([12, 13]);
  });

  it('uses divisor 1 where no model agrees', () => {
    const out = mixTaskVectors(new Float32Array([4]), [new Float32Array([0])], [2], {
      consensus: 'sum',
      normalize: true,
      lambda: 1,
    });
    expect(Array.from(out)).toEqual([4]);
  });
});

describe('ties', () => {
  const models = [
    { values: [1, -1, 0.5, 4], params: { weight: 1, density: 1 } },
    { values: [2, 3, 0.25, 2], params: { weight: 1, density: 1 } },
  ];

  it('at density 1 equals normalized task arithmetic where the signs agree', () => {
    const base = [0, 0, 0, 0];
    const ties = merge('ties', inputs(base, models));
    const average = merge('task_arithmetic', inputs(base, models, { normalize: true }));
    expect(ties[0]).toBe(average[0]);
    expect(ties[2]).toBe(average[2]);
    expect(ties[3]).toBe(average[3]);
    // Element 1 disagrees: sum -1 + 3 > 0, so only the second model's 3 counts.
    expect(ties[1]).toBe(3);
    expect(average[1]).toBe(1);
  });

  it('keeps the int(density * n) largest magnitudes of each task vector, ties to low indices', () => {
    const args = inputs(
      [0, 0, 0, 0, 0],
      [
        { values: [1, -5, 2, 2, 2], params: { weight: 1, density: 0.4 } },
        { values: [0.5, 0.5, 0.5, 0.5, 9], params: { weight: 1, density: 0.4 } },
      ],
    );
    // m1 keeps -5 (index 1) and the first 2 (index 2); m2 keeps 9 (index 4) and the first 0.5 (index 0).
    expect(merge('ties', args)).toEqual([0.5, -5, 2, 0, 9]);
  });

  it('scales the result by lambda after normalizing', () => {
    const args = inputs([1], [{ values: [3], params: { weight: 2, density: 1 } }], { lambda: 0.5 });
    // delta 2, weighted 4, divisor 2 -> 2, times 0.5 -> 1, plus base 1.
    expect(merge('ties', args)).toEqual([2]);
  });

  it('lets a NaN delta through (NaN counts as the largest magnitude and NaN * 0 is NaN)', () => {
    const args = inputs(
      [0, 0, 0],
      [
        { values: [Number.NaN, 1, 2], params: { weight: 1, density: 0.4 } },
        { values: [1, 1, 1], params: { weight: 1, density: 1 } },
      ],
    );
    const out = merge('ties', args);
    expect(out[0]).toBeNaN();
    expect(out[2]).toBe(1);
  });
});

describe('dare_linear and dare_ties', () => {
  const big = (n: number, value: number) => new Float32Array(n).fill(value);

  it('gives the same bytes for the same seed and other bytes for another seed or tensor', () => {
    const run = (seed: number, tensorName: string) =>
      getMethod('dare_linear').merge(
        inputs(
          big(2048, 0),
          [{ values: big(2048, 1), params: { weight: 1, density: 0.5 } }],
          {},
          { seed, tensorName },
        ),
      );
    const reference = run(1, 'a');
    expect(run(1, 'a')).toEqual(reference);
    expect(run(2, 'a')).not.toEqual(reference);
    expect(run(1, 'b')).not.toEqual(reference);
  });

  it('draws each model from its own stream (model index in the counter)', () => {
    const args = inputs(
      big(512, 0),
      [
        { values: big(512, 1), params: { weight: 1, density: 0.5 } },
        { values: big(512, 100), params: { weight: 1, density: 0.5 } },
      ],
      { rescale: false },
      { seed: 3 },
    );
    const out = getMethod('dare_linear').merge(args);
    const counts = new Map<number, number>();
    for (const v of out) counts.set(v, (counts.get(v) ?? 0) + 1);
    // Entries where exactly one model survives show both models drop independently.
    expect(counts.get(1)).toBeGreaterThan(50);
    expect(counts.get(100)).toBeGreaterThan(50);
    expect(counts.get(101)).toBeGreaterThan(50);
    expect(counts.get(0)).toBeGreaterThan(50);
  });

  it('rescales by default so each task vector keeps its L1 norm', () => {
    const args = inputs(
      big(4096, 0),
      [{ values: big(4096, 0.5), params: { weight: 1, density: 0.25 } }],
      {},
      { seed: 9 },
    );
    const out = getMethod('dare_linear').merge(args);
    expect(sumAbsF32(out)).toBeCloseTo(2048, 1);
    const kept = out.filter((v) => v !== 0).length;
    expect(Math.abs(kept - 1024)).toBeLessThan(3 * Math.sqrt(4096 * 0.25 * 0.75));
  });

  it('turns the whole task vector into NaN when it holds a NaN and rescale is on, as mergekit', () => {
    const values = big(64, 1);
    values[5] = Number.NaN;
    const out = getMethod('dare_linear').merge(
      inputs(big(64, 0), [{ values, params: { weight: 1, density: 0.5 } }]),
    );
    expect(Array.from(out).every(Number.isNaN)).toBe(true);
  });

  it('dare_ties applies sign consensus after dropping', () => {
    const args = inputs(
      [0],
      [
        { values: [-4], params: { weight: 1, density: 1 } },
        { values: [1], params: { weight: 1, density: 1 } },
      ],
    );
    // density 1 keeps all; sum -3 -> only -4 counts; dare_ties does not normalize by default.
    expect(merge('dare_ties', args)).toEqual([-4]);
    expect(merge('dare_linear', args)).toEqual([-3]);
  });
});

describe('breadcrumbs and breadcrumbs_ties', () => {
  it('drops the smallest and the outlier entries of each task vector', () => {
    const n = 100;
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = i + 1;
    const out = getMethod('breadcrumbs').merge(
      inputs(new Float32Array(n), [{ values, params: { weight: 1, density: 0.9, gamma: 0.01 } }]),
    );
    const expected = Array.from(values, (v, i) => (i < 9 || i === 99 ? 0 : v));
    expect(Array.from(out)).toEqual(expected);
  });

  it('uses gamma 0.01 by default and applies sign consensus in breadcrumbs_ties', () => {
    const n = 100;
    const a = new Float32Array(n).fill(2);
    const b = new Float32Array(n).fill(-1);
    const args = inputs(new Float32Array(n), [
      { values: a, params: { weight: 1, density: 0.95 } },
      { values: b, params: { weight: 1, density: 0.95 } },
    ]);
    const plain = getMethod('breadcrumbs').merge(args);
    const withTies = getMethod('breadcrumbs_ties').merge(args);
    // Equal magnitudes: ranks by index; bottom 4 (indices 0..3) and top 1 (index 99) cut.
    expect([plain[0], plain[50], plain[99]]).toEqual([0, 1, 0]);
    expect([withTies[0], withTies[50], withTies[99]]).toEqual([0, 2, 0]);
  });
});

describe('della and della_linear', () => {
  it('validates epsilon per model and names the model', () => {
    const args = inputs([0, 0], [{ values: [1, 2], params: { weight: 1, density: 0.9, epsilon: 0.2 } }]);
    expect(() => getMethod('della').merge(args)).toThrow(/model "m1".*density \+\/- epsilon/);
  });

  it('keeps about density of each row and rescales to the L1 norm', () => {
    const rows = 8;
    const cols = 512;
    const values = new Float32Array(rows * cols);
    for (let i = 0; i < values.length; i++) values[i] = ((i * 7919) % 1000) / 1000 + 0.001;
    const args = inputs(
      new Float32Array(values.length),
      [{ values, params: { weight: 1, density: 0.5, epsilon: 0.1 } }],
      {},
      { shape: [rows, cols], seed: 17 },
    );
    const out = getMethod('della_linear').merge(args);
    const kept = out.filter((v) => v !== 0).length;
    expect(Math.abs(kept - values.length / 2)).toBeLessThan(4 * Math.sqrt(values.length * 0.25));
    expect(sumAbsF32(out)).toBeCloseTo(sumAbsF32(values), 0);
    // Larger magnitudes are kept more often: compare the top and bottom fifths of magnitudes.
    let keptLarge = 0;
    let keptSmall = 0;
    values.forEach((v, i) => {
      if (v > 0.8 && out[i] !== 0) keptLarge++;
      if (v < 0.2 && out[i] !== 0) keptSmall++;
    });
    expect(keptLarge).toBeGreaterThan(keptSmall);
  });
});
