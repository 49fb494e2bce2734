import { describe, expect, it } from 'vitest';
import { jacobiSvd } from '../../src/linalg/index.js';
import { lore, lowrankTaskArithmetic, SVD_METHODS, tsv, twin } from '../../src/methods/svd/index.js';
import {
  type MergeInputs,
  type MergeMethod,
  MergeMethodError,
  type ResolvedParams,
  type SpectralReport,
} from '../../src/methods/types.js';

function randomValues(count: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  }
  return out;
}

interface Model {
  values: ArrayLike<number>;
  params?: ResolvedParams;
}

/** Inputs with the base first (index 0) unless baseIndex says otherwise. */
function inputs(
  shape: number[],
  models: Model[],
  params: ResolvedParams,
  baseIndex = 0,
): { inputs: MergeInputs; reports: SpectralReport[] } {
  const reports: SpectralReport[] = [];
  return {
    reports,
    inputs: {
      tensorName: 'model.layers.0.self_attn.q_proj.weight',
      shape,
      tensors: models.map((m, i) => ({
        model: `m${i}`,
        values: Float32Array.from(m.values),
        params: m.params ?? {},
      })),
      baseIndex,
      params,
      seed: 7,
      report: (e) => reports.push(e),
    },
  };
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst).toBeLessThan(tol);
}

/** base + sum_i scale_i * (theta_i - base). */
function taskArithmetic(
  base: ArrayLike<number>,
  thetas: ArrayLike<number>[],
  scales: number[],
): Float64Array {
  const out = Float64Array.from(base);
  thetas.forEach((t, i) => {
    for (let j = 0; j < out.length; j++) out[j] += scales[i] * (Math.fround(t[j] - base[j]) as number);
  });
  return out;
}

function outer(u: number[], v: number[], scale = 1): Float32Array {
  return Float32Array.from(
    { length: u.length * v.length },
    (_, k) => scale * u[Math.floor(k / v.length)] * v[k % v.length],
  );
}

function add(a: ArrayLike<number>, b: ArrayLike<number>, scale = 1): Float32Array {
  return Float32Array.from(a, (x, i) => x + scale * b[i]);
}

/** 2 x 2 or n x n diagonal matrix as a flat array. */
function diag(d: number[]): Float32Array {
  const n = d.length;
  const out = new Float32Array(n * n);
  d.forEach((x, i) => {
    out[i * n + i] = x;
  });
  return out;
}

describe('SVD_METHODS', () => {
  it('lists the four methods under their recipe names with documented parameters', () => {
    expect(SVD_METHODS.map((m) => m.name)).toEqual(['lowrank_task_arithmetic', 'tsv', 'lore', 'twin']);
    for (const method of SVD_METHODS as MergeMethod[]) {
      for (const p of [...method.globalParams, ...method.modelParams])
        expect(p.doc.length).toBeGreaterThan(10);
    }
  });
});

describe('lowrank_task_arithmetic', () => {
  const shape = [6, 5];
  const base = randomValues(30, 1);
  const theta1 = add(base, randomValues(30, 2), 0.1);
  const theta2 = add(base, randomValues(30, 3), 0.1);

  it('equals task arithmetic at full rank', () => {
    const { inputs: x, reports } = inputs(
      shape,
      [
        { values: base },
        { values: theta1, params: { weight: 0.7 } },
        { values: theta2, params: { weight: -0.2 } },
      ],
      { lambda: 0.5, rank: 5 },
    );
    expectClose(lowrankTaskArithmetic.merge(x), taskArithmetic(base, [theta1, theta2], [0.35, -0.1]), 1e-7);
    expect(reports).toEqual([
      { tensor: x.tensorName, model: 'm1', rank: 5, energyKept: 1 },
      { tensor: x.tensorName, model: 'm2', rank: 5, energyKept: 1 },
    ]);
  });

  it('recovers rank-1 task vectors exactly at rank 1', () => {
    const delta = outer([1, -2, 0.5, 3, 0, 1], [0.5, 1, -1, 2, 0.25], 0.1);
    const { inputs: x, reports } = inputs(
      shape,
      [{ values: base }, { values: add(base, delta), params: { weight: 1 } }],
      {
        lambda: 2,
        rank: 1,
      },
    );
    expectClose(lowrankTaskArithmetic.merge(x), add(base, delta, 2), 1e-6);
    expect(reports[0].rank).toBe(1);
    expect(reports[0].energyKept).toBeCloseTo(1, 6);
  });

  it('keeps the best rank-2 approximation, as the exact SVD gives it', () => {
    const delta = randomValues(30, 4);
    const { inputs: x, reports } = inputs(
      shape,
      [{ values: base }, { values: add(base, delta), params: { weight: 1 } }],
      {
        rank: 2,
      },
    );
    const exact = jacobiSvd(delta, 6, 5);
    const best = new Float64Array(30);
    for (let i = 0; i < 6; i++)
      for (let j = 0; j < 5; j++)
        for (let p = 0; p < 2; p++) best[i * 5 + j] += exact.U[i * 5 + p] * exact.S[p] * exact.V[j * 5 + p];
    expectClose(lowrankTaskArithmetic.merge(x), add(base, best), 1e-6);
    const total = exact.S.reduce((s, v) => s + v * v, 0);
    expect(reports[0].energyKept).toBeCloseTo((exact.S[0] ** 2 + exact.S[1] ** 2) / total, 6);
  });

  it('chooses the rank from the energy share', () => {
    // Singular values 3, 2, 1 on a 3x3 permutation-and-sign frame: energies 9, 4, 1 of 14.
    const delta = Float32Array.of(0, 3, 0, 0, 0, -2, 1, 0, 0);
    const b = new Float32Array(9);
    const run = (energy: number) => {
      const { inputs: x, reports } = inputs(
        [3, 3],
        [{ values: b }, { values: delta, params: { weight: 1 } }],
        {
          rank: 3,
          energy,
        },
      );
      return { out: lowrankTaskArithmetic.merge(x), report: reports[0] };
    };
    const r90 = run(0.9);
    expect(r90.report.rank).toBe(2);
    expect(r90.report.energyKept).toBeCloseTo(13 / 14, 6);
    expectClose(r90.out, [0, 3, 0, 0, 0, -2, 0, 0, 0]);
    const r60 = run(0.6);
    expect(r60.report.rank).toBe(1);
    expectClose(r60.out, [0, 3, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('uses plain task arithmetic for 1-D tensors and requires a base model', () => {
    const b = Float32Array.of(1, 2, 3);
    const t = Float32Array.of(2, 2, 5);
    const { inputs: x } = inputs([3], [{ values: b }, { values: t, params: { weight: 0.5 } }], {
      lambda: 1,
      rank: 1,
    });
    expectClose(lowrankTaskArithmetic.merge(x), [1.5, 2, 4]);
    const { inputs: noBase } = inputs([3], [{ values: t, params: { weight: 1 } }], {}, -1);
    expect(() => lowrankTaskArithmetic.merge(noBase)).toThrow(MergeMethodError);
    const { inputs: noWeight } = inputs([3], [{ values: b }, { values: t }], {});
    expect(() => lowrankTaskArithmetic.merge(noWeight)).toThrow(/weight/);
  });
});

describe('tsv', () => {
  it('with one task vector at full rank adds alpha * weight * delta', () => {
    const base = randomValues(12, 5);
    const theta = add(base, randomValues(12, 6));
    const { inputs: x, reports } = inputs(
      [3, 4],
      [{ values: base }, { values: theta, params: { weight: 0.5 } }],
      {
        alpha: 2,
      },
    );
    expectClose(tsv.merge(x), taskArithmetic(base, [theta], [1]), 1e-6);
    expect(reports).toHaveLength(1);
  });

  it('equals task arithmetic for task vectors with orthogonal singular vectors', () => {
    // delta1 = 2 e1 f1^T, delta2 = 3 e2 f2^T on 4x4; rank_fraction 0.5 keeps floor(0.5 * 4 / 2) = 1 each.
    const base = randomValues(16, 7);
    const d1 = outer([1, 0, 0, 0], [0, 1, 0, 0], 2);
    const d2 = outer([0, 0, 1, 0], [0, 0, 0, 1], 3);
    const { inputs: x, reports } = inputs(
      [4, 4],
      [{ values: base }, { values: add(base, d1) }, { values: add(base, d2) }],
      {
        rank_fraction: 0.5,
        alpha: 1,
      },
    );
    expectClose(tsv.merge(x), add(add(base, d1), d2), 1e-6);
    expect(reports.map((r) => r.rank)).toEqual([1, 1]);
    expect(reports[0].energyKept).toBeCloseTo(1, 6);
  });

  it('decorrelates overlapping left singular vectors through the polar factor', () => {
    // delta1 = u1 e1^T, delta2 = u2 e2^T with u1, u2 60 degrees apart; k = floor(2 / 2) = 1.
    // Polar of [u1 u2] puts the columns at 30 -+ 45 degrees; V stays the identity.
    const c = Math.cos(Math.PI / 3);
    const s = Math.sin(Math.PI / 3);
    const base = new Float32Array(4);
    const d1 = Float32Array.of(1, 0, 0, 0);
    const d2 = Float32Array.of(0, c, 0, s);
    const { inputs: x } = inputs([2, 2], [{ values: base }, { values: d1 }, { values: d2 }], {});
    const deg = Math.PI / 180;
    expectClose(
      tsv.merge(x),
      [Math.cos(-15 * deg), Math.cos(75 * deg), Math.sin(-15 * deg), Math.sin(75 * deg)],
      1e-6,
    );
  });

  it('averages weighted task vectors of 1-D tensors', () => {
    const { inputs: x } = inputs(
      [2],
      [
        { values: [1, 1] },
        { values: [3, 1], params: { weight: 1 } },
        { values: [1, 5], params: { weight: 0.5 } },
      ],
      { alpha: 1 },
    );
    expectClose(tsv.merge(x), [2, 2]);
  });
});

describe('lore', () => {
  const t1 = randomValues(12, 8);
  const t2 = randomValues(12, 9);
  const mean = Float32Array.from(t1, (x, i) => (x + t2[i]) / 2);

  it('with mu = 0 and full rank keeps theta_0 at the mean and delta_i = theta_i - mean', () => {
    const { inputs: x, reports } = inputs([3, 4], [{ values: t1 }, { values: t2 }], {
      mu: 0,
      iterations: 3,
      rank: 3,
    });
    // weights 1: mean + (t1 - mean) + (t2 - mean) = t1 + t2 - mean
    expectClose(
      lore.merge(x),
      Float32Array.from(t1, (v, i) => v + t2[i] - mean[i]),
      1e-6,
    );
    expect(reports.map((r) => r.rank)).toEqual([3, 3]);
    const { inputs: avg } = inputs(
      [3, 4],
      [
        { values: t1, params: { weight: 0.5 } },
        { values: t2, params: { weight: 0.5 } },
      ],
      { mu: 0, iterations: 2, rank: 3 },
    );
    expectClose(lore.merge(avg), mean, 1e-6);
  });

  it('with mu above every singular value drops the task vectors and returns the mean', () => {
    const { inputs: x, reports } = inputs([3, 4], [{ values: t1 }, { values: t2 }], {
      mu: 1e3,
      iterations: 2,
    });
    expectClose(lore.merge(x), mean, 1e-7);
    expect(reports.map((r) => r.rank)).toEqual([0, 0]);
  });

  it('shrinks singular values by mu: theta = +-diag(3, 1), mu = 1', () => {
    const plus = diag([3, 1]);
    const minus = diag([-3, -1]);
    const run = (w1: number, w2: number) => {
      const { inputs: x, reports } = inputs(
        [2, 2],
        [
          { values: plus, params: { weight: w1 } },
          { values: minus, params: { weight: w2 } },
        ],
        { mu: 1, iterations: 4 },
      );
      return { out: lore.merge(x), reports };
    };
    // theta_0 = 0, delta_1 = diag(2, 0), delta_2 = diag(-2, 0).
    const first = run(1, 0);
    expectClose(first.out, [2, 0, 0, 0], 1e-6);
    expect(first.reports[0].rank).toBe(1);
    expect(first.reports[0].energyKept).toBeCloseTo(9 / 10, 6);
    expectClose(run(1, 1).out, [0, 0, 0, 0], 1e-6);
  });

  it('uses the plain form for 1-D tensors and validates its parameters', () => {
    const { inputs: x } = inputs(
      [2],
      [
        { values: [0, 2], params: { weight: 1 } },
        { values: [2, 0], params: { weight: 0 } },
      ],
      { mu: 5 },
    );
    expectClose(lore.merge(x), [0, 2]);
    const { inputs: noMu } = inputs([2], [{ values: [0, 2] }], {});
    expect(() => lore.merge(noMu)).toThrow(/mu/);
    const { inputs: zeroIt } = inputs([2], [{ values: [0, 2] }], { mu: 1, iterations: 0 });
    expect(() => lore.merge(zeroIt)).toThrow(/iterations/);
  });
});

describe('twin', () => {
  const base = randomValues(20, 10);
  const theta1 = add(base, randomValues(20, 11), 0.2);
  const theta2 = add(base, randomValues(20, 12), 0.2);
  const models = [
    { values: base },
    { values: theta1, params: { weight: 0.6 } },
    { values: theta2, params: { weight: 0.3 } },
  ];

  it('with rank 0 equals task arithmetic', () => {
    const { inputs: x, reports } = inputs([4, 5], models, { lambda: 0.8, rank: 0 });
    expectClose(twin.merge(x), taskArithmetic(base, [theta1, theta2], [0.48, 0.24]), 1e-7);
    expect(reports).toEqual([]);
  });

  it('at full rank adds every exclusive part whole', () => {
    const { inputs: x } = inputs([4, 5], models, { lambda: 0.8, rank: 4 });
    const shared = taskArithmetic(base, [theta1, theta2], [0.48, 0.24]);
    const expected = Float64Array.from(shared, (s, j) => s + 0.6 * (theta1[j] - s) + 0.3 * (theta2[j] - s));
    expectClose(twin.merge(x), expected, 1e-6);
  });

  it('keeps the rank-1 exclusive part: delta = diag(3, 1), lambda 0.5', () => {
    // theta* = base + 0.5 delta; theta - theta* = diag(1.5, 0.5); rank 1 keeps diag(1.5, 0).
    const b = Float32Array.of(1, 2, 3, 4);
    const { inputs: x, reports } = inputs([2, 2], [{ values: b }, { values: add(b, diag([3, 1])) }], {
      lambda: 0.5,
      rank: 1,
    });
    expectClose(twin.merge(x), add(b, diag([3, 0.5])), 1e-6);
    expect(reports[0].rank).toBe(1);
    expect(reports[0].energyKept).toBeCloseTo(0.9, 6);
  });
});
