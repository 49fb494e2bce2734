import { beforeAll, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO, type TinyModelFiles } from '../../src/demo/tiny-qwen';
import { AIM_STATISTICS_FILE, MergeError, runMerge } from '../../src/engine/merge';
import { bytesByteSource } from '../../src/formats/byte-source';
import { decodeToF32, encodeFromF32 } from '../../src/formats/dtype';
import { readSafetensorsHeader } from '../../src/formats/safetensors';
import { getMethod } from '../../src/methods';
import {
  type ActivationStatistics,
  AimError,
  AimRelaxation,
  aimModuleOf,
  applyRelaxation,
  importanceOf,
  relaxationFactors,
} from '../../src/methods/aim';
import { decodeAimStatistics, encodeAimStatistics } from '../../src/model/aim-statistics';
import { parseRecipe, resolveParams } from '../../src/recipe';
import { memoryOutput, memoryResolver } from '../fixtures/memory-merge';

const BASE = 'tiny-qwen-system1';
const TIES = `merge_method: ties
base_model: ${BASE}
models:
  - model: tiny-qwen-system2
    parameters: {weight: 1.0, density: 0.2}
parameters: {lambda: 1.0}
dtype: bfloat16
`;
const aimRecipe = (omega: number) => parseRecipe(`${TIES}aim: {omega: ${omega}}\n`);

let models: TinyModelFiles[];

/** Every tensor of a single- or multi-shard output, by name, as raw bytes. */
async function outputTensors(out: ReturnType<typeof memoryOutput>): Promise<Map<string, Uint8Array>> {
  const tensors = new Map<string, Uint8Array>();
  for (const file of out.files.keys()) {
    if (!file.startsWith('model') || !file.endsWith('.safetensors')) continue;
    const bytes = out.bytes(file);
    const header = await readSafetensorsHeader(bytesByteSource(bytes, file));
    for (const [name, info] of header.tensors)
      tensors.set(name, bytes.subarray(info.offset, info.offset + info.byteLength));
  }
  return tensors;
}

async function tensorOf(model: TinyModelFiles, name: string): Promise<Float32Array> {
  for (const [file, bytes] of model.files) {
    if (!file.endsWith('.safetensors')) continue;
    const header = await readSafetensorsHeader(bytesByteSource(bytes, file));
    const info = header.tensors.get(name);
    if (info) return decodeToF32(bytes.subarray(info.offset, info.offset + info.byteLength), 'BF16');
  }
  throw new Error(`${model.name} has no ${name}`);
}

/** Statistics for every module of the tiny base: positive pseudo-random a, channel 3 the largest. */
async function syntheticStatistics(): Promise<ActivationStatistics> {
  const base = models.find((m) => m.name === BASE)!;
  const modules = new Map<string, Float32Array>();
  for (const [file, bytes] of base.files) {
    if (!file.endsWith('.safetensors')) continue;
    const header = await readSafetensorsHeader(bytesByteSource(bytes, file));
    for (const [name, info] of header.tensors) {
      const module = aimModuleOf(name);
      if (!module) continue;
      const a = new Float32Array(info.shape.at(-1)!);
      for (let c = 0; c < a.length; c++) a[c] = 0.05 + ((c * 37 + name.length) % 23) / 23;
      a[3] = 5;
      modules.set(module, a);
    }
  }
  // The base ties lm_head; the merged output has its own, whose input is model.norm's output.
  modules.set(
    'lm_head',
    modules.get('model.norm')!.map((v) => v * 2),
  );
  return { modules, blocks: 3, blockSize: 16, tokens: 48, textSha256: 'ab'.repeat(32) };
}

async function merge(
  recipe: ReturnType<typeof parseRecipe>,
  extra: Partial<Parameters<typeof runMerge>[0]> = {},
) {
  const out = memoryOutput();
  const result = await runMerge({
    recipe,
    resolveModel: memoryResolver(models),
    output: out.target,
    ...extra,
  });
  return { out, result, tensors: await outputTensors(out) };
}

beforeAll(async () => {
  models = await Promise.all(TINY_TRIO.map((s) => makeTinyModel(s)));
});

describe('AIM arithmetic', () => {
  it('I = a / max(a); a zero maximum gives I = 0; negative or non-finite a is refused', () => {
    expect([...importanceOf(new Float32Array([1, 4, 2]))]).toEqual([0.25, 1, 0.5]);
    expect([...importanceOf(new Float32Array([0, 0]))]).toEqual([0, 0]);
    expect(() => importanceOf(new Float32Array([1, Number.NaN]), 'lm_head')).toThrow(
      /lm_head .* NaN at channel 1/,
    );
    expect(() => importanceOf(new Float32Array([-1]))).toThrow(AimError);
  });

  it('factor 1 - (1 - omega) I in f32; omega outside [0, 1] refused', () => {
    const f = relaxationFactors(new Float32Array([0, 0.5, 1]), 0.4);
    expect(f[0]).toBe(1);
    expect(f[1]).toBe(Math.fround(1 - Math.fround(Math.fround(0.6) * 0.5)));
    expect(f[2]).toBe(Math.fround(1 - Math.fround(0.6)));
    expect(() => relaxationFactors(new Float32Array(1), 1.5)).toThrow(/omega must be a number from 0 to 1/);
  });

  it('relaxes along the last axis, from any start offset; factor 1 keeps merged exactly, 0 gives base', () => {
    const merged = new Float32Array([1e-8, 2, 3, 4, 5, 6]);
    const base = new Float32Array([1, 1, 1, 1, 1, 1]);
    const factors = new Float32Array([1, 0, 0.5]);
    const out = applyRelaxation(merged, base, factors, 0, new Float32Array(6));
    // 1 + (1e-8 - 1) * 1 would round to 0 in f32: factor 1 keeps the merged value itself.
    expect([...out]).toEqual([Math.fround(1e-8), 1, 2, 4, 1, 3.5]);
    const tail = applyRelaxation(merged.subarray(2), base.subarray(2), factors, 2, new Float32Array(4));
    expect([...tail]).toEqual([...out.subarray(2)]);
  });

  it('names the module of a weight; biases and embeddings are left alone', () => {
    expect(aimModuleOf('model.layers.0.self_attn.q_proj.weight')).toBe('model.layers.0.self_attn.q_proj');
    expect(aimModuleOf('model.norm.weight')).toBe('model.norm');
    expect(aimModuleOf('lm_head.weight')).toBe('lm_head');
    expect(aimModuleOf('model.layers.0.self_attn.q_proj.bias')).toBeUndefined();
    expect(aimModuleOf('model.embed_tokens.weight')).toBeUndefined();
  });

  it('refuses statistics of another model by module and shape', async () => {
    const stats = await syntheticStatistics();
    const aim = new AimRelaxation(stats, 0.4);
    expect(() => aim.factorsFor('model.layers.9.mlp.up_proj.weight', [176, 64])).toThrow(
      /no entry for module model.layers.9.mlp.up_proj/,
    );
    expect(() => aim.factorsFor('model.layers.0.mlp.up_proj.weight', [176, 65])).toThrow(
      /64 channels but tensor model.layers.0.mlp.up_proj.weight has 65 inputs/,
    );
  });
});

describe('AIM in the merge engine', () => {
  let stats: ActivationStatistics;
  let plain: Awaited<ReturnType<typeof merge>>;
  beforeAll(async () => {
    stats = await syntheticStatistics();
    plain = await merge(parseRecipe(TIES));
  });

  it('omega 1 gives the plain merge, byte for byte', async () => {
    const aim = await merge(aimRecipe(1), { aimStatistics: stats });
    expect([...aim.tensors.keys()]).toEqual([...plain.tensors.keys()]);
    for (const [name, bytes] of plain.tensors)
      expect(Buffer.compare(aim.tensors.get(name)!, bytes), name).toBe(0);
  });

  it('omega 0 gives the base on the channel where I = 1, and base + delta (1 - I) elsewhere', async () => {
    const aim = await merge(aimRecipe(0), { aimStatistics: stats });
    const name = 'model.layers.1.mlp.gate_proj.weight';
    const base = await tensorOf(models[0], name);
    const merged = decodeToF32(plain.tensors.get(name)!, 'BF16');
    const got = decodeToF32(aim.tensors.get(name)!, 'BF16');
    const cols = 64;
    const a = stats.modules.get('model.layers.1.mlp.gate_proj')!;
    let changed = 0;
    for (let r = 0; r < got.length / cols; r++) {
      expect(got[r * cols + 3]).toBe(base[r * cols + 3]);
      if (merged[r * cols + 3] !== base[r * cols + 3]) changed++;
    }
    expect(changed).toBeGreaterThan(0); // TIES did change that column, and AIM undid it
    // Embeddings and the untouched norm's neighbours: embeddings keep the merged values.
    expect(
      Buffer.compare(
        aim.tensors.get('model.embed_tokens.weight')!,
        plain.tensors.get('model.embed_tokens.weight')!,
      ),
    ).toBe(0);
    expect(a[3]).toBe(Math.max(...a));
  });

  it('AIM-TIES equals round(AIM(f32 TIES)) computed here from the method, for every tensor', async () => {
    const omega = 0.4;
    const recipe = aimRecipe(omega);
    const aim = await merge(recipe, { aimStatistics: stats });
    const ties = getMethod('ties');
    const system2 = models[2];
    for (const [name, bytes] of aim.tensors) {
      const base = await tensorOf(models[0], name === 'lm_head.weight' ? 'model.embed_tokens.weight' : name);
      const other = await tensorOf(system2, name);
      const { global, perModel } = resolveParams(recipe, ties, name, 4);
      const f32 = ties.merge({
        tensorName: name,
        shape: [base.length],
        tensors: [
          { model: 'tiny-qwen-system2', values: other, params: perModel.get('tiny-qwen-system2')! },
          { model: BASE, values: base, params: perModel.get(BASE)! },
        ],
        baseIndex: 1,
        params: global,
        seed: 0,
      });
      const module = aimModuleOf(name);
      const expected = new Float32Array(f32.length);
      if (module) {
        const a = stats.modules.get(module)!;
        let max = 0;
        for (const v of a) max = Math.max(max, v);
        for (let i = 0; i < f32.length; i++) {
          const c = i % a.length;
          const factor = Math.fround(
            1 - Math.fround(Math.fround(1 - Math.fround(omega)) * Math.fround(a[c] / max)),
          );
          expected[i] = factor === 1 ? f32[i] : base[i] + Math.fround(Math.fround(f32[i] - base[i]) * factor);
        }
      } else expected.set(f32);
      expect(Buffer.compare(Buffer.from(encodeFromF32(expected, 'BF16')), Buffer.from(bytes)), name).toBe(0);
    }
  });

  it('streamed tensors (chunks of rows) give the same bytes as whole ones', async () => {
    const whole = await merge(aimRecipe(0.4), { aimStatistics: stats });
    const streamed = await merge(aimRecipe(0.4), { aimStatistics: stats, streamElements: 500 });
    for (const [name, bytes] of whole.tensors)
      expect(Buffer.compare(streamed.tensors.get(name)!, bytes), name).toBe(0);
  });

  it('writes the statistics and the recipe with the text hash; the file reads back equal', async () => {
    const { out, result } = await merge(aimRecipe(0.4), { aimStatistics: stats });
    expect(result.files).toContain(AIM_STATISTICS_FILE);
    const again = await decodeAimStatistics(out.bytes(AIM_STATISTICS_FILE), AIM_STATISTICS_FILE);
    expect([...again.modules.keys()]).toEqual([...stats.modules.keys()]);
    for (const [m, a] of stats.modules) expect([...again.modules.get(m)!]).toEqual([...a]);
    expect(again.textSha256).toBe(stats.textSha256);
    const yml = new TextDecoder().decode(out.bytes('mergekit_config.yml'));
    const recorded = parseRecipe(yml, 'mergekit_config.yml');
    expect(recorded.aim?.omega).toBe(0.4);
    expect(recorded.aim?.calibration.sha256).toBe(stats.textSha256);
    expect(recorded.aim?.calibration.source).toEqual({ kind: 'builtin' });
  });

  it('refuses an AIM recipe without statistics, or with statistics of another model, before writing', async () => {
    await expect(merge(aimRecipe(0.4))).rejects.toThrow(/aim: block but no activation statistics/);
    const partial = new Map(stats.modules);
    partial.delete('model.layers.2.mlp.down_proj');
    const out = memoryOutput();
    const failing = runMerge({
      recipe: aimRecipe(0.4),
      resolveModel: memoryResolver(models),
      output: out.target,
      aimStatistics: { ...stats, modules: partial },
    });
    await expect(failing).rejects.toThrow(MergeError);
    await expect(failing).rejects.toThrow(/model.layers.2.mlp.down_proj.weight.*no entry for module/);
    expect(out.state.created).toBe(0);
  });

  it('round-trips statistics through the safetensors file with calibration settings', async () => {
    const withCalibration: ActivationStatistics = {
      ...stats,
      calibration: {
        source: {
          kind: 'hub',
          dataset: 'simplescaling/s1K',
          config: 'default',
          split: 'train',
          field: ['question', 'solution'],
        },
        samples: 100,
        blockSize: 512,
        seed: 42,
      },
    };
    const back = await decodeAimStatistics(encodeAimStatistics(withCalibration), 's.safetensors');
    expect(back.calibration).toEqual(withCalibration.calibration);
    expect(back.blocks).toBe(3);
    await expect(decodeAimStatistics(new Uint8Array(16), 'x.safetensors')).rejects.toThrow(/x.safetensors/);
  });
});
