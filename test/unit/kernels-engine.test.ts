/**
 * Whole merges through the engine on the WebAssembly kernels and on the TypeScript reference (forced
 * with cpuKernels: 'ts'): the same files, byte for byte, on the trained fixture pair, the tiny trio
 * and a synthetic model with Qwen2.5-0.5B's layer shapes.
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO, type TinyModelFiles } from '../../src/demo/tiny-qwen';
import type { ModelFiles, ModelResolver, OutputTarget } from '../../src/engine/io';
import { runMerge } from '../../src/engine/merge';
import { bytesByteSource } from '../../src/formats/byte-source';
import { folderResolver } from '../../src/node/model-folder';
import { parseRecipe } from '../../src/recipe';

function memoryResolver(models: TinyModelFiles[]): ModelResolver {
  return async (ref: string): Promise<ModelFiles> => {
    const m = models.find((x) => x.name === ref);
    if (!m) throw new Error(`no model ${ref}`);
    return {
      name: m.name,
      files: () => [...m.files.keys()],
      async open(file) {
        const bytes = m.files.get(file);
        if (!bytes) throw new Error(`${m.name}: no file ${file}`);
        return bytesByteSource(bytes, `${m.name}/${file}`);
      },
    };
  };
}

function memoryOutput() {
  const files = new Map<string, Uint8Array[]>();
  const target: OutputTarget = {
    async createFile(name) {
      files.set(name, []);
      return {
        async write(b) {
          files.get(name)!.push(b.slice());
        },
        async close() {},
      };
    },
    async commit() {},
    async abort() {},
  };
  return { target, files };
}

/** Every file the merge wrote, on the kernels and on the reference. */
async function bothWays(recipeText: string, resolveModel: ModelResolver, seed = 0) {
  const recipe = parseRecipe(recipeText, 'test');
  const run = async (cpuKernels: 'auto' | 'ts') => {
    const out = memoryOutput();
    await runMerge({ recipe, resolveModel, output: out.target, seed, outShardSize: 3_000_000, cpuKernels });
    return new Map([...out.files].map(([name, parts]) => [name, Buffer.concat(parts)]));
  };
  return { kernels: await run('auto'), reference: await run('ts') };
}

function expectSameFiles({ kernels, reference }: Awaited<ReturnType<typeof bothWays>>) {
  expect([...kernels.keys()].sort()).toEqual([...reference.keys()].sort());
  for (const [name, bytes] of reference) {
    expect(Buffer.compare(kernels.get(name) as Buffer, bytes), name).toBe(0);
  }
}

const TRIO_RECIPES: Record<string, string> = {
  task_arithmetic: `merge_method: task_arithmetic
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-instruct
    parameters: {weight: 0.3}
  - model: tiny-qwen-system2
    parameters: {weight: 0.7}
dtype: bfloat16
`,
  ties: `merge_method: ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-instruct
    parameters: {weight: 0.5, density: 0.5}
  - model: tiny-qwen-system2
    parameters: {weight: 1.0, density: 0.2}
dtype: bfloat16
`,
  dare_ties: `merge_method: dare_ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-instruct
    parameters: {weight: 0.4, density: 0.6}
  - model: tiny-qwen-system2
    parameters: {weight: 0.8, density: 0.3}
dtype: bfloat16
`,
  della_f16: `merge_method: della
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-system2
    parameters: {weight: 1.0, density: 0.4, epsilon: 0.1}
dtype: float16
`,
  breadcrumbs_out_f32: `merge_method: breadcrumbs_ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-system2
    parameters: {weight: 1.0, density: 0.9, gamma: 0.02}
dtype: bfloat16
out_dtype: float32
`,
  linear: `merge_method: linear
models:
  - model: tiny-qwen-system1
    parameters: {weight: 0.4}
  - model: tiny-qwen-system2
    parameters: {weight: 0.6}
dtype: bfloat16
`,
  slerp: `merge_method: slerp
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-system2
parameters: {t: 0.4}
dtype: bfloat16
`,
  model_stock: `merge_method: model_stock
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-instruct
  - model: tiny-qwen-system2
dtype: bfloat16
`,
};

describe('the engine on the kernels writes the reference bytes', () => {
  let trio: TinyModelFiles[];
  beforeAll(async () => {
    trio = await Promise.all(TINY_TRIO.map((s) => makeTinyModel(s)));
  });

  for (const [name, recipe] of Object.entries(TRIO_RECIPES)) {
    it(`${name} on the tiny trio`, async () => {
      for (const seed of name.startsWith('dare') || name.startsWith('della') ? [0, 5] : [0]) {
        expectSameFiles(await bothWays(recipe, memoryResolver(trio), seed));
      }
    });
  }

  it('ties and task_arithmetic on the trained fixture pair', async () => {
    const resolver = folderResolver(join(__dirname, '../fixtures/qwen2-tiny-l2s'));
    try {
      for (const method of ['ties', 'task_arithmetic']) {
        const recipe = `merge_method: ${method}
base_model: system1
models:
  - model: system2
    parameters: {weight: 0.9, density: 0.3}
dtype: bfloat16
`;
        expectSameFiles(await bothWays(recipe, resolver));
      }
    } finally {
      await resolver.closeAll();
    }
  });

  it('ties, task_arithmetic and dare_linear on a model with Qwen2.5-0.5B layer shapes', async () => {
    // Hidden 896, MLP 4864, 14/2 heads, 1 layer; an embedding of 8192 rows (7.3M elements, larger
    // than the selection sample, so TIES' windows are used).
    const shape = {
      hiddenSize: 896,
      intermediateSize: 4864,
      layers: 1,
      heads: 14,
      kvHeads: 2,
      vocabSize: 8192,
    };
    const models = await Promise.all(
      [
        { name: 'base', deltaSeed: 0, deltaScale: 0, tied: true, shards: 1, dtype: 'BF16' as const },
        { name: 'reasoner', deltaSeed: 11, deltaScale: 0.1, tied: true, shards: 2, dtype: 'BF16' as const },
      ].map((spec) => makeTinyModel(spec, shape)),
    );
    for (const [method, params] of [
      ['ties', '{weight: 1.0, density: 0.2}'],
      ['task_arithmetic', '{weight: 0.7}'],
      ['dare_linear', '{weight: 0.7, density: 0.5}'],
    ]) {
      const recipe = `merge_method: ${method}\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: ${params}\ndtype: bfloat16\n`;
      expectSameFiles(await bothWays(recipe, memoryResolver(models), 3));
    }
  }, 300_000);
});
