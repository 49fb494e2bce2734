import { describe, expect, it } from 'vitest';
import { getMethod, METHODS } from '../../src/methods/index';
import { modelStockRatio } from '../../src/methods/model-stock';
import { slerpCoefficients } from '../../src/methods/slerp';
import type { MergeInputs, ResolvedParams } from '../../src/methods/types';
import { MergeMethodError } from '../../src/methods/types';

const f = Math.fround;

function inputs(
  tensors: Array<{ values: number[]; params?: ResolvedParams }>,
  baseIndex: number,
  params: ResolvedParams = {},
  shape?: number[],
): MergeInputs {
  return {
    tensorName: 'model.layers.0.self_attn.o_proj.weight',
    shape: shape ?? [tensors[0].values.length],
    tensors: tensors.map((t, i) => ({
      model: `m${i}`,
      values: Float32Array.from(t.values),
      params: t.params ?? {},
    })),
    baseIndex,
    params,
    seed: 0,
  };
}

const merge = (method: string, args: MergeInputs) => Array.from(getMethod(method).merge(args));

describe('linear', () => {
  it('averages with normalized weights (hand-computed)', () => {
    const args = inputs(
      [
        { values: [1, 2, -4], params: { weight: 1 } },
        { values: [5, 2, 4], params: { weight: 3 } },
      ],
      -1,
    );
    // (1*a + 3*b) / 4
    expect(merge('linear', args)).toEqual([4, 2, 2]);
  });

  it('sums without dividing when normalize is false', () => {
    const args = inputs(
      [
        { values: [1, 2], params: { weight: 0.5 } },
        { values: [3, 4], params: { weight: 0.25 } },
      ],
      -1,
      { normalize: false },
    );
    expect(merge('linear', args)).toEqual([f(0.5 + 0.75), f(1 + 1)]);
  });

  it('includes the base model with its own weight, and needs one', () => {
    const withBase = inputs(
      [
        { values: [2], params: { weight: 1 } },
        { values: [8], params: { weight: 1 } },
      ],
      1,
    );
    expect(merge('linear', withBase)).toEqual([5]);
    const baseWithoutWeight = inputs([{ values: [2], params: { weight: 1 } }, { values: [8] }], 1);
    expect(() => merge('linear', baseWithoutWeight)).toThrow(/model "m1".*"weight" is required/);
  });

  it('refuses weights that sum to 0 with normalize, naming the fix', () => {
    const args = inputs(
      [
        { values: [1], params: { weight: 1 } },
        { values: [2], params: { weight: -1 } },
      ],
      -1,
    );
    expect(() => merge('linear', args)).toThrow(/normalize: false/);
  });
});

describe('slerp', () => {
  const a = [3, 0, 4, 0];
  const b = [0, 2, 0, -1];

  it('gives the base at t = 0 and the other model at t = 1', () => {
    expect(merge('slerp', inputs([{ values: a }, { values: b }], 0, { t: 0 }))).toEqual(a);
    expect(merge('slerp', inputs([{ values: a }, { values: b }], 0, { t: 1 }))).toEqual(b);
    // The base is a whichever position it has in the inputs.
    expect(merge('slerp', inputs([{ values: b }, { values: a }], 1, { t: 0 }))).toEqual(a);
  });

  it('interpolates on the circle between orthogonal vectors (hand-computed)', () => {
    const out = merge('slerp', inputs([{ values: [2, 0] }, { values: [0, 2] }], 0, { t: 0.5 }));
    // theta0 = pi/2, s0 = s1 = sin(pi/4) / sin(pi/2)
    const theta0 = f(Math.acos(0));
    const s = f(f(Math.sin(f(theta0 - f(theta0 * 0.5)))) / f(Math.sin(theta0)));
    expect(out).toEqual([f(s * 2), f(s * 2)]);
    expect(out[0]).toBeCloseTo(Math.SQRT2, 6);
  });

  it('falls back to linear interpolation for nearly colinear vectors', () => {
    const out = merge('slerp', inputs([{ values: [1, 2, 3] }, { values: [2, 4, 6.001] }], 0, { t: 0.25 }));
    expect(out).toEqual([1, 2, 3].map((v, i) => f(f(0.75 * v) + f(0.25 * [2, 4, 6.001][i]))));
    expect(slerpCoefficients(-0.9999, 0.3)).toEqual({ s0: f(0.7), s1: f(0.3), colinear: true });
    // The dot product is an f32; the threshold is fround(0.9995) and must be exceeded.
    const threshold = f(0.9995);
    expect(slerpCoefficients(threshold, 0.3).colinear).toBe(false);
    expect(slerpCoefficients(f(threshold + 2 ** -24), 0.3).colinear).toBe(true);
  });

  it('returns a single input as it is and refuses three inputs or no base', () => {
    expect(merge('slerp', inputs([{ values: [7, 8] }], 0, { t: 0.5 }))).toEqual([7, 8]);
    expect(() =>
      merge('slerp', inputs([{ values: [1] }, { values: [2] }, { values: [3] }], 0, { t: 0.5 })),
    ).toThrow(/exactly two/);
    expect(() => merge('slerp', inputs([{ values: [1] }, { values: [2] }], -1, { t: 0.5 }))).toThrow(
      /base_model/,
    );
    expect(() => merge('slerp', inputs([{ values: [1] }, { values: [2] }], 0))).toThrow(/"t" is required/);
  });

  it('propagates NaN to every element, as numpy does', () => {
    const out = merge('slerp', inputs([{ values: [1, Number.NaN] }, { values: [0, 1] }], 0, { t: 0.5 }));
    expect(out.every(Number.isNaN)).toBe(true);
  });
});

describe('model_stock', () => {
  it('interpolates toward the average by the angle between offsets (hand-computed 2-model case)', () => {
    // base [1, 1]; offsets [1, 0] and [1, 1]: cos = 1/sqrt(2), t = 2cos / (1 + cos) = 2(sqrt(2) - 1).
    const args = inputs([{ values: [1, 1] }, { values: [2, 1] }, { values: [2, 2] }], 0);
    const out = merge('model_stock', args);
    const t = 2 * (Math.SQRT2 - 1);
    expect(out[0]).toBeCloseTo(t * 2 + (1 - t) * 1, 6);
    expect(out[1]).toBeCloseTo(t * 1.5 + (1 - t) * 1, 6);
    // The same in the documented f32 steps.
    const cos = f(1 / f(f(1) * f(Math.sqrt(2))));
    const t32 = f(f(2 * cos) / f(1 + f(1 * cos)));
    expect(out).toEqual([f(f(t32 * 2) + f(f(1 - t32) * 1)), f(f(t32 * 1.5) + f(f(1 - t32) * 1))]);
  });

  it('gives the average for identical offsets and the base for orthogonal ones', () => {
    const same = inputs([{ values: [0, 0] }, { values: [1, 2] }, { values: [1, 2] }], 0);
    expect(merge('model_stock', same)).toEqual([1, 2]);
    const orthogonal = inputs([{ values: [5, 5] }, { values: [6, 5] }, { values: [5, 6] }], 0);
    expect(merge('model_stock', orthogonal)).toEqual([5, 5]);
  });

  it('with filter_wise computes one ratio per row', () => {
    // Row 0: identical offsets (t = 1, average); row 1: orthogonal offsets (t = 0, base).
    const args = inputs(
      [{ values: [0, 0, 0, 0] }, { values: [1, 1, 1, 0] }, { values: [1, 1, 0, 1] }],
      0,
      { filter_wise: true },
      [2, 2],
    );
    expect(merge('model_stock', args)).toEqual([1, 1, 0, 0]);
    const whole = merge('model_stock', { ...args, params: { filter_wise: false } });
    expect(whole).not.toEqual([1, 1, 0, 0]);
  });

  it('averages pairwise cosines for three models and floors zero norms', () => {
    const offsets = [new Float32Array([1, 0]), new Float32Array([1, 0]), new Float32Array([0, 0])];
    // cos pairs: 1, 0 (norm product floored to 1e-6, dot 0), 0 -> mean 1/3; t = 1 / (1 + 2/3) = 0.6
    const cos = f(f(1) / 3);
    expect(modelStockRatio(offsets, 0, 2)).toBe(f(f(3 * cos) / f(1 + f(2 * cos))));
    expect(modelStockRatio(offsets, 0, 2)).toBeCloseTo(0.6, 6);
  });

  it('returns a lone base and refuses fewer than three models', () => {
    expect(merge('model_stock', inputs([{ values: [4, 5] }], 0))).toEqual([4, 5]);
    expect(() => merge('model_stock', inputs([{ values: [1] }, { values: [2] }], 0))).toThrow(/at least 3/);
  });
});

describe('registry', () => {
  it("registers mergekit's names and rejects unknown ones with the list", () => {
    expect([...METHODS.keys()]).toEqual(
      expect.arrayContaining([
        'breadcrumbs',
        'breadcrumbs_ties',
        'dare_linear',
        'dare_ties',
        'della',
        'della_linear',
        'linear',
        'model_stock',
        'slerp',
        'task_arithmetic',
        'ties',
      ]),
    );
    for (const [name, method] of METHODS) expect(method.name).toBe(name);
    expect(() => getMethod('frankenmerge')).toThrow(MergeMethodError);
    expect(() => getMethod('frankenmerge')).toThrow(/Known methods: .*ties/);
  });

  it("carries mergekit's defaults", () => {
    const defaults = (name: string) =>
      Object.fromEntries(
        getMethod(name).globalParams.map((p) => [p.name, p.default ?? (p.required ? 'required' : undefined)]),
      );
    expect(defaults('task_arithmetic')).toEqual({
      int8_mask: false,
      normalize: false,
      rescale: false,
      lambda: 1,
    });
    expect(defaults('ties')).toMatchObject({ normalize: true, rescale: false });
    expect(defaults('dare_ties')).toMatchObject({ normalize: false, rescale: true });
    expect(defaults('dare_linear')).toMatchObject({ normalize: false, rescale: true });
    expect(defaults('breadcrumbs')).toMatchObject({ normalize: false, rescale: false });
    expect(defaults('breadcrumbs_ties')).toMatchObject({ normalize: false, rescale: false });
    expect(defaults('della')).toMatchObject({ normalize: true, rescale: true });
    expect(defaults('della_linear')).toMatchObject({ normalize: false, rescale: true });
    expect(defaults('linear')).toEqual({ normalize: true });
    expect(defaults('slerp')).toEqual({ t: 'required' });
    expect(defaults('model_stock')).toEqual({ filter_wise: false });
    const modelParams = (name: string) =>
      getMethod(name).modelParams.map((p) => `${p.name}=${p.default ?? 'required'}`);
    expect(modelParams('ties')).toEqual(['weight=required', 'density=1']);
    expect(modelParams('breadcrumbs')).toEqual(['weight=required', 'density=1', 'gamma=0.01']);
    expect(modelParams('della')).toEqual(['weight=required', 'density=1', 'epsilon=0.15']);
    expect(modelParams('linear')).toEqual(['weight=required']);
    expect(getMethod('ties').baseModel).toBe('required');
    expect(getMethod('ties').taskVector).toBe(true);
    expect(getMethod('linear').taskVector).toBe(false);
  });
});
