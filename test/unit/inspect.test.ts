import { beforeAll, describe, expect, it } from 'vitest';
import { makeTinyTrio } from '../../src/demo/tiny-qwen';
import type { ModelFiles } from '../../src/engine/io';
import { bytesByteSource } from '../../src/formats/byte-source';
import { decodeToF32 } from '../../src/formats/dtype';
import { readModelTensorBytes, readModelTensors } from '../../src/formats/model-index';
import {
  InspectError,
  inspectSpectrum,
  inspectTaskVectors,
  resolveDensity,
  type TaskVectorInspection,
} from '../../src/inspect/inspect-models';
import { LEADING_SPECTRUM_RANK, taskVectorSpectrum } from '../../src/inspect/task-vector-spectrum';
import {
  addNormSums,
  addSignConflicts,
  conflictFraction,
  emptyNormSums,
  emptySignCounts,
  keptShares,
  relativeNorm,
  TiesKeptMass,
  taskVector,
  tiesKeepCount,
  tiesKeptMass,
} from '../../src/inspect/task-vector-stats';
import { defaultSpectrumTensor, tensorGroup } from '../../src/inspect/tensor-groups';
import { energyRank } from '../../src/linalg';
import { magnitudeMask } from '../../src/methods/sparsify';

const f32 = (values: number[]) => Float32Array.from(values);

describe('tensor groups', () => {
  it('places Qwen2 tensors in their layer and block', () => {
    expect(tensorGroup('model.layers.3.self_attn.q_proj.weight')).toEqual({ layer: 3, block: 'attention' });
    expect(tensorGroup('model.layers.12.mlp.down_proj.weight')).toEqual({ layer: 12, block: 'mlp' });
    expect(tensorGroup('model.layers.0.input_layernorm.weight')).toEqual({ layer: 0, block: 'other' });
    expect(tensorGroup('model.embed_tokens.weight')).toEqual({ layer: null, block: 'other' });
    expect(tensorGroup('transformer.h.5.attn.c_attn.weight')).toEqual({ layer: 5, block: 'attention' });
  });

  it('picks the first layer down projection for the spectrum by default', () => {
    const names = [
      'model.embed_tokens.weight',
      'model.layers.1.mlp.down_proj.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.0.mlp.down_proj.weight',
    ];
    expect(defaultSpectrumTensor(names)).toBe('model.layers.0.mlp.down_proj.weight');
    expect(defaultSpectrumTensor(names.slice(0, 3))).toBe('model.layers.0.self_attn.q_proj.weight');
    expect(defaultSpectrumTensor(['lm_head.weight'])).toBe('lm_head.weight');
    expect(defaultSpectrumTensor([])).toBeUndefined();
  });
});

describe('task-vector norms', () => {
  it('gives ||m - b|| / ||b||, summed over chunks', () => {
    // base (3, 4) has norm 5; model (3, 5) moves it by (0, 1): ratio 1/5.
    const sums = emptyNormSums();
    addNormSums(sums, f32([3, 4]), taskVector(f32([3, 5]), f32([3, 4])));
    expect(relativeNorm(sums)).toBeCloseTo(0.2, 15);
    // A second chunk: base (0, 12) with delta (-2, 0): sqrt(1 + 4) / sqrt(25 + 144) = sqrt(5) / 13.
    addNormSums(sums, f32([0, 12]), taskVector(f32([-2, 12]), f32([0, 12])));
    expect(sums).toEqual({ delta2: 5, base2: 169, elements: 4 });
    expect(relativeNorm(sums)).toBeCloseTo(Math.sqrt(5) / 13, 15);
  });

  it('handles zero bases and empty sums', () => {
    expect(relativeNorm({ delta2: 0, base2: 0, elements: 3 })).toBe(0);
    expect(relativeNorm({ delta2: 1, base2: 0, elements: 3 })).toBe(Number.POSITIVE_INFINITY);
    expect(relativeNorm(emptyNormSums())).toBeNaN();
  });

  it('rounds the task vector to f32 like the merge methods', () => {
    expect(taskVector(f32([1]), f32([1e-8]))[0]).toBe(Math.fround(1 - Math.fround(1e-8)));
    expect(() => taskVector(f32([1, 2]), f32([1]))).toThrow(RangeError);
  });
});

describe('sign conflicts', () => {
  it('counts coordinates where non-zero task vectors disagree in sign', () => {
    const counts = emptySignCounts();
    addSignConflicts(counts, [
      f32([1, -1, 0, 2, 0, Number.NaN, 5]),
      f32([2, 1, -3, 0, 0, 1, 0]),
      f32([0, 0, 1, -1, 0, -1, 0]),
    ]);
    // 0: +,+ agree; 1: -,+ conflict; 2: -,+ conflict; 3: +,- conflict; 4: all zero;
    // 5: NaN has no sign, +,- conflict; 6: one non-zero, not contested.
    expect(counts).toEqual({ elements: 7, contested: 5, conflicts: 4 });
    expect(conflictFraction(counts)).toBeCloseTo(4 / 7, 15);
  });

  it('finds none for one model or agreeing models', () => {
    const counts = emptySignCounts();
    addSignConflicts(counts, [f32([1, -2, 3])]);
    addSignConflicts(counts, [f32([1, -2, 0]), f32([4, -1, 0])]);
    expect(counts).toEqual({ elements: 6, contested: 2, conflicts: 0 });
    expect(conflictFraction(emptySignCounts())).toBeNaN();
  });
});

describe('what TIES keeps', () => {
  const delta = f32([1, -4, 2, 0, 3, -2, 0.5, 1]);

  it('keeps floor(density * n) entries, ties to the lowest index, and measures their mass', () => {
    // k = trunc(0.375 * 8) = 3: |-4|, |3| and the first of the two 2s (index 2, not index 5).
    const mass = tiesKeptMass(delta, 0.375);
    expect(mass).toEqual({ elements: 8, kept: 3, l1: 13.5, keptL1: 9, energy: 35.25, keptEnergy: 29 });
    const shares = keptShares(mass);
    expect(shares.entries).toBe(3 / 8);
    expect(shares.l1).toBeCloseTo(9 / 13.5, 15);
    expect(shares.energy).toBeCloseTo(29 / 35.25, 15);
    // The same entries as the merge methods' TIES mask.
    expect([...(magnitudeMask(delta, 0.375) ?? [])]).toEqual([0, 1, 1, 0, 1, 0, 0, 0]);
  });

  it('floors the count and keeps all at density 1, none below one entry', () => {
    expect(tiesKeepCount(10, 0.29)).toBe(2);
    expect(tiesKeepCount(10, 1)).toBe(10);
    expect(tiesKeepCount(10, 1.5)).toBe(10);
    expect(tiesKeepCount(10, 0.05)).toBe(0);
    expect(tiesKeptMass(delta, 1)).toMatchObject({ kept: 8, keptL1: 13.5, keptEnergy: 35.25 });
    expect(tiesKeptMass(delta, 0.1)).toMatchObject({ kept: 0, keptL1: 0, keptEnergy: 0, l1: 13.5 });
  });

  it('gives the same selection chunk by chunk as TIES on the whole tensor', () => {
    const n = 10_007;
    // Few distinct magnitudes, so the threshold falls inside a run of ties.
    const values = Float32Array.from({ length: n }, (_, i) => (((i * 7919) % 23) - 11) / 4);
    const density = 0.3;
    const whole = magnitudeMask(values, density);
    let keptL1 = 0;
    let kept = 0;
    for (let i = 0; i < n; i++) {
      if (whole?.[i]) {
        kept++;
        keptL1 += Math.abs(values[i]);
      }
    }
    const ties = new TiesKeptMass(n, density);
    const chunk = 333;
    for (let pass = 0; pass < ties.passes; pass++) {
      for (let s = 0; s < n; s += chunk) ties.count(pass, values.subarray(s, Math.min(n, s + chunk)));
    }
    for (let s = 0; s < n; s += chunk) ties.measure(values.subarray(s, Math.min(n, s + chunk)), s);
    const mass = ties.result();
    expect(mass.kept).toBe(Math.floor(density * n));
    expect(mass.kept).toBe(kept);
    expect(mass.keptL1).toBeCloseTo(keptL1, 9);
    expect(mass).toEqual(tiesKeptMass(values, density));
  });
});

/** A rows x cols matrix with singular value s[i] at (rowOf(i), colOf(i)): permutations keep them exact. */
function scatteredDiagonal(rows: number, cols: number, s: number[]): Float32Array {
  const a = new Float32Array(rows * cols);
  s.forEach((v, i) => {
    const r = (i * 7) % rows;
    const c = (i * 11) % cols;
    a[r * cols + c] = (i % 2 ? -1 : 1) * v;
  });
  return a;
}

describe('singular spectrum', () => {
  it('finds known singular values, energy shares and the 90% / 99% ranks', () => {
    // Singular values 4, 3, 1: energies 16, 9, 1 of 26.
    const a = f32([0, 0, 3, 0, -4, 0, 0, 0, 0, 0, 0, 1]);
    const spec = taskVectorSpectrum(a, 3, 4);
    expect(spec.exact).toBe(true);
    expect([...spec.singularValues].map((v) => Number(v.toFixed(12)))).toEqual([4, 3, 1]);
    expect([...spec.normalized].map((v) => Number(v.toFixed(12)))).toEqual([1, 0.75, 0.25]);
    expect(spec.totalEnergy).toBe(26);
    expect(spec.cumulativeEnergy[0]).toBeCloseTo(16 / 26, 12);
    expect(spec.cumulativeEnergy[1]).toBeCloseTo(25 / 26, 12);
    expect(spec.cumulativeEnergy[2]).toBeCloseTo(1, 12);
    expect(spec.rank90).toBe(2); // 25/26 = 0.96 >= 0.9
    expect(spec.rank99).toBe(3);
  });

  it('recovers singular values of a rotated (dense) matrix', () => {
    // A = R(0.3) diag(5, 2) R(-1.1)^T, a dense 2x2 with singular values 5 and 2.
    const rot = (t: number) => [Math.cos(t), -Math.sin(t), Math.sin(t), Math.cos(t)];
    const [u, v] = [rot(0.3), rot(-1.1)];
    const s = [5, 2];
    const a = new Float32Array(4);
    for (let i = 0; i < 2; i++)
      for (let j = 0; j < 2; j++)
        a[i * 2 + j] = u[i * 2] * s[0] * v[j * 2] + u[i * 2 + 1] * s[1] * v[j * 2 + 1];
    const spec = taskVectorSpectrum(a, 2, 2);
    expect(spec.singularValues[0]).toBeCloseTo(5, 5);
    expect(spec.singularValues[1]).toBeCloseTo(2, 5);
    expect(spec.rank90).toBe(2); // 25 / 29 = 0.862 < 0.9
  });

  it('gives a zero matrix rank 0 and rejects non-matrices', () => {
    const spec = taskVectorSpectrum(new Float32Array(6), 2, 3);
    expect(spec.rank90).toBe(0);
    expect([...spec.normalized]).toEqual([0, 0]);
    expect(() => taskVectorSpectrum(new Float32Array(5), 2, 3)).toThrow(/expects 6 values/);
  });

  it('uses the leading values of large matrices, with shares of the exact total energy', () => {
    const rows = 300;
    const cols = 260;
    const decaying = Array.from({ length: cols }, (_, i) => 0.97 ** i);
    const spec = taskVectorSpectrum(scatteredDiagonal(rows, cols, decaying), rows, cols, 'big');
    expect(spec.exact).toBe(false);
    expect(spec.singularValues.length).toBe(LEADING_SPECTRUM_RANK);
    for (let i = 0; i < 20; i++) expect(spec.singularValues[i]).toBeCloseTo(decaying[i], 4);
    const total = decaying.reduce((acc, v) => acc + Math.fround(v) ** 2, 0);
    expect(spec.totalEnergy).toBeCloseTo(total, 9);
    // (1 - 0.9409^r) / (1 - 0.9409^260) >= 0.9 first at r = 38; 0.99 at r = 76.
    expect(spec.rank90).toBe(energyRank(decaying, 0.9));
    expect(spec.rank90).toBe(38);
    expect(spec.rank99).toBe(76);
    // A flat spectrum needs 234 of 260 values for 90%: beyond the computed 128, so unknown.
    const flat = taskVectorSpectrum(scatteredDiagonal(rows, cols, Array(cols).fill(1)), rows, cols, 'flat');
    expect(flat.rank90).toBeNull();
    expect(flat.cumulativeEnergy[LEADING_SPECTRUM_RANK - 1]).toBeCloseTo(128 / 260, 4);
  });
});

describe('density from a recipe', () => {
  it('resolves gradients and conditions per tensor, falling back in order', () => {
    const settings = [[{ filter: 'mlp', value: [0.1, 0.5] }], 0.3];
    expect(resolveDensity(settings, 'model.layers.0.mlp.up_proj.weight', 3)).toBeCloseTo(0.1, 15);
    expect(resolveDensity(settings, 'model.layers.1.mlp.up_proj.weight', 3)).toBeCloseTo(0.3, 15);
    expect(resolveDensity(settings, 'model.layers.2.mlp.up_proj.weight', 3)).toBeCloseTo(0.5, 15);
    expect(resolveDensity(settings, 'model.layers.2.self_attn.q_proj.weight', 3)).toBe(0.3);
    expect(() => resolveDensity([[{ filter: 'mlp', value: 0.2 }]], 'model.norm.weight', 3)).toThrow(
      InspectError,
    );
  });
});

function memoryModel(name: string, files: Map<string, Uint8Array>): ModelFiles {
  return {
    name,
    files: () => [...files.keys()],
    open: async (file) => {
      const bytes = files.get(file);
      if (!bytes) throw new Error(`${name}/${file}: no such file`);
      return bytesByteSource(bytes, `${name}/${file}`);
    },
  };
}

describe('inspecting the tiny demo models', () => {
  let base: ModelFiles;
  let instruct: ModelFiles;
  let reasoner: ModelFiles;
  let report: TaskVectorInspection;

  beforeAll(async () => {
    const trio = await makeTinyTrio();
    [base, instruct, reasoner] = trio.map((m) => memoryModel(m.name, m.files));
    report = await inspectTaskVectors({ base, models: [reasoner, instruct], focus: 0, density: [0.2] });
  });

  it('shows the instruct model moving less than the reasoner, in every layer and block', () => {
    expect(report.models).toEqual(['tiny-qwen-system2', 'tiny-qwen-instruct']);
    expect(report.layers).toHaveLength(4);
    expect(report.skipped).toEqual([]);
    const [r, i] = report.totals.norms.map(relativeNorm);
    expect(i).toBeLessThan(r);
    for (const layer of report.layers) {
      for (const block of ['attention', 'mlp'] as const) {
        const reasonerNorm = relativeNorm(layer.norms[0][block]);
        const instructNorm = relativeNorm(layer.norms[1][block]);
        expect(instructNorm).toBeGreaterThan(0);
        expect(instructNorm).toBeLessThan(reasonerNorm);
      }
    }
  });

  it('matches norms, conflicts and TIES shares computed directly on whole tensors', async () => {
    const name = 'model.layers.2.mlp.down_proj.weight';
    const read = async (m: ModelFiles) => {
      const index = await readModelTensors(m);
      return decodeToF32(await readModelTensorBytes(index, name), 'BF16');
    };
    const [b, r, i] = await Promise.all([read(base), read(reasoner), read(instruct)]);
    const dr = taskVector(r, b);
    const di = taskVector(i, b);
    const norms = emptyNormSums();
    addNormSums(norms, b, dr);
    const signs = emptySignCounts();
    addSignConflicts(signs, [dr, di]);
    // Layer 2's MLP is three tensors; recompute the whole block the same way.
    let delta2 = 0;
    let base2 = 0;
    const block = { elements: 0, conflicts: 0, kept: 0, keptEnergy: 0, energy: 0 };
    for (const part of ['gate_proj', 'up_proj', 'down_proj']) {
      const tensor = `model.layers.2.mlp.${part}.weight`;
      const get = async (m: ModelFiles) =>
        decodeToF32(await readModelTensorBytes(await readModelTensors(m), tensor), 'BF16');
      const [pb, pr, pi] = await Promise.all([get(base), get(reasoner), get(instruct)]);
      const n = emptyNormSums();
      const pdr = taskVector(pr, pb);
      addNormSums(n, pb, pdr);
      delta2 += n.delta2;
      base2 += n.base2;
      const s = emptySignCounts();
      addSignConflicts(s, [pdr, taskVector(pi, pb)]);
      block.elements += s.elements;
      block.conflicts += s.conflicts;
      const mass = tiesKeptMass(pdr, 0.2);
      block.kept += mass.kept;
      block.keptEnergy += mass.keptEnergy;
      block.energy += mass.energy;
      expect(mass.kept).toBe(Math.floor(0.2 * pdr.length));
    }
    const mlp = report.layers[2].norms[0].mlp;
    expect(mlp.delta2).toBeCloseTo(delta2, 9);
    expect(mlp.base2).toBeCloseTo(base2, 9);
    expect(report.layers[2].signs.mlp.conflicts).toBe(block.conflicts);
    expect(report.layers[2].signs.mlp.elements).toBe(block.elements);
    expect(relativeNorm(norms)).toBeGreaterThan(0);
    // Independent fine-tunes disagree on about half of the coordinates.
    const fraction = conflictFraction(report.totals.signs);
    expect(fraction).toBeGreaterThan(0.3);
    expect(fraction).toBeLessThan(0.6);
    // The layer's TIES tally counts attention, MLP and norms: at least the MLP's kept entries.
    expect(report.layers[2].ties.kept).toBeGreaterThanOrEqual(block.kept);
    const shares = keptShares(report.totals.ties);
    expect(shares.entries).toBeGreaterThan(0.19);
    expect(shares.entries).toBeLessThanOrEqual(0.2);
    // Kept entries are the largest ones: their share of the energy far exceeds their share of entries.
    expect(shares.energy).toBeGreaterThan(0.4);
    expect(shares.l1).toBeGreaterThan(shares.entries);
    expect(shares.energy).toBeGreaterThan(shares.l1);
    expect(report.density).toEqual({ min: 0.2, max: 0.2 });
  });

  it('gives the same statistics read in small chunks', async () => {
    const chunked = await inspectTaskVectors({
      base,
      models: [reasoner, instruct],
      focus: 0,
      density: [0.2],
      chunkElements: 1000,
    });
    expect(chunked.totals.signs).toEqual(report.totals.signs);
    expect(chunked.totals.ties.kept).toBe(report.totals.ties.kept);
    expect(chunked.totals.ties.keptEnergy).toBeCloseTo(report.totals.ties.keptEnergy, 9);
    for (let m = 0; m < 2; m++) {
      expect(chunked.totals.norms[m].delta2).toBeCloseTo(report.totals.norms[m].delta2, 9);
    }
  });

  it('pairs the untied head with the tied models embeddings and lists 2-D tensors', () => {
    expect(report.matrices).toContain('lm_head.weight');
    expect(report.matrices).toContain('model.layers.0.mlp.down_proj.weight');
    expect(report.matrices).not.toContain('model.norm.weight');
    // 4 layers x 12 tensors, embeddings, final norm, lm_head.
    expect(report.tensors).toBe(4 * 12 + 3);
  });

  it('stops when cancelled and rejects a focus outside the models', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(
      inspectTaskVectors({ base, models: [instruct], focus: 0, density: [0.2], signal: controller.signal }),
    ).rejects.toMatchObject({ name: 'AbortError' });
    await expect(inspectTaskVectors({ base, models: [instruct], focus: 1, density: [0.2] })).rejects.toThrow(
      InspectError,
    );
  });

  it('reports a low-rank spectrum for a demo task vector', async () => {
    const result = await inspectSpectrum({
      base,
      model: reasoner,
      tensor: 'model.layers.0.mlp.down_proj.weight',
    });
    const spec = result.spectrum;
    expect([spec.rows, spec.cols]).toEqual([64, 176]);
    expect(spec.exact).toBe(true);
    expect(spec.singularValues).toHaveLength(64);
    // The demo deltas are rank 2 plus noise and outliers: two directions hold over 80% of the energy,
    // and a quarter of the rank holds 90%.
    expect(spec.cumulativeEnergy[1]).toBeGreaterThan(0.8);
    expect(spec.normalized[2]).toBeLessThan(0.2);
    expect(spec.rank90).toBeGreaterThan(2);
    expect(spec.rank90).toBeLessThanOrEqual(16);
    expect(spec.rank99 as number).toBeGreaterThan(spec.rank90 as number);
    await expect(inspectSpectrum({ base, model: reasoner, tensor: 'model.norm.weight' })).rejects.toThrow(
      /needs a 2-D tensor/,
    );
  });
});
