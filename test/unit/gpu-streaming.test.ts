/**
 * Every GPU method through the engine with a GPU memory budget far below the models' size: the
 * embedding streams through the device in 20+ tiles, the output must be byte for byte the CPU
 * reference's, no tensor may be left to the CPU, and the pool never holds more than the budget.
 * By default: a 64-wide Qwen2-shaped trio (49152-token vocabulary), 16 MB budget, 1 MiB bindings.
 * L2S_QWEN05_STREAMING=1: Qwen2.5-0.5B's shapes (hidden 896, MLP 4864, 14 heads over 2 KV heads;
 * 1 layer and a 32768-token vocabulary), 64 MB budget, 16 MiB bindings (minutes per method on
 * SwiftShader).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { makeTinyModel, type TinyModelFiles, type TinyQwenShape } from '../../src/demo/tiny-qwen';
import type { FileSink, ModelFiles, OutputTarget } from '../../src/engine/io';
import { cpuBackend, type MergeBackend, type MergeResult, runMerge } from '../../src/engine/merge';
import { bytesByteSource } from '../../src/formats/byte-source';
import { GpuMergeBackend } from '../../src/gpu/backend';
import type { TilePlan } from '../../src/gpu/device';
import { gpuMergeBackend } from '../../src/gpu/select-backend';
import { nodeGpu } from '../../src/node/webgpu';
import { parseRecipe } from '../../src/recipe';

const gpu = await nodeGpu().catch(() => null);
const adapter = gpu ? await gpu.requestAdapter() : null;

/** The full Qwen2.5-0.5B-shaped run takes minutes per method on a software adapter: opt in. */
const FULL = process.env.L2S_QWEN05_STREAMING === '1';
const QWEN_05B_SHAPE: TinyQwenShape = !FULL
  ? { hiddenSize: 64, intermediateSize: 176, layers: 1, heads: 4, kvHeads: 2, vocabSize: 49152 }
  : {
      hiddenSize: 896,
      intermediateSize: 4864,
      layers: 1,
      heads: 14,
      kvHeads: 2,
      vocabSize: 32768,
    };
const BUDGET = FULL ? 64_000_000 : 16_000_000;
const BINDING = FULL ? 16 * 1024 * 1024 : 1024 * 1024;

function memoryResolver(models: TinyModelFiles[]) {
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
  const sink = (name: string): FileSink => ({
    async write(b) {
      files.get(name)!.push(b.slice());
    },
    async close() {},
  });
  const target: OutputTarget = {
    async createFile(name) {
      files.set(name, []);
      return sink(name);
    },
    async commit() {},
    async abort() {
      files.clear();
    },
  };
  const bytes = (name: string) => new Uint8Array(Buffer.concat(files.get(name) ?? []));
  return { target, bytes };
}

const BASE = 'qwen05-base';
const RECIPES: Record<string, string> = {
  linear: `merge_method: linear
models:
  - model: ${BASE}
    parameters: {weight: 0.2}
  - model: qwen05-a
    parameters: {weight: 0.5}
  - model: qwen05-b
    parameters: {weight: 0.3}`,
  slerp: `merge_method: slerp
base_model: ${BASE}
models:
  - model: ${BASE}
  - model: qwen05-b
parameters: {t: 0.3}`,
  model_stock: `merge_method: model_stock
base_model: ${BASE}
models:
  - model: qwen05-a
  - model: qwen05-b`,
  task_arithmetic: `merge_method: task_arithmetic
base_model: ${BASE}
models:
  - model: qwen05-a
    parameters: {weight: 0.7}
  - model: qwen05-b
    parameters: {weight: 0.5}`,
};
for (const method of [
  'ties',
  'dare_ties',
  'dare_linear',
  'breadcrumbs',
  'breadcrumbs_ties',
  'della',
  'della_linear',
]) {
  const extra = method.startsWith('della')
    ? ', epsilon: 0.1'
    : method.startsWith('breadcrumbs')
      ? ', gamma: 0.01'
      : '';
  RECIPES[method] = `merge_method: ${method}
base_model: ${BASE}
models:
  - model: qwen05-a
    parameters: {weight: 0.6, density: 0.4${extra}}
  - model: qwen05-b
    parameters: {weight: 0.5, density: 0.6${extra}}
parameters: {normalize: true}`;
}

let models: TinyModelFiles[];

async function merge(recipeText: string, backend: MergeBackend) {
  const out = memoryOutput();
  const result: MergeResult = await runMerge({
    recipe: parseRecipe(`${recipeText}\ndtype: bfloat16\n`),
    resolveModel: memoryResolver(models),
    output: out.target,
    seed: 5,
    backend,
  });
  return { result, bytes: out.bytes('model.safetensors') };
}

describe.skipIf(!adapter)('GPU streaming within a memory budget equals the CPU', () => {
  beforeAll(async () => {
    models = await Promise.all(
      [
        { name: BASE, deltaSeed: 0, deltaScale: 0 },
        { name: 'qwen05-a', deltaSeed: 3, deltaScale: 0.1 },
        { name: 'qwen05-b', deltaSeed: 11, deltaScale: 0.2 },
      ].map((m) => makeTinyModel({ ...m, tied: true, shards: 1, dtype: 'BF16' }, QWEN_05B_SHAPE)),
    );
  }, 120_000);

  for (const [method, recipe] of Object.entries(RECIPES)) {
    it(`${method}: GPU bytes = CPU bytes, 0 tensors on the CPU, within the budget`, async () => {
      const plans: TilePlan[] = [];
      const backend = await GpuMergeBackend.create({
        gpu: gpu!,
        label: 'test',
        memoryBudget: BUDGET,
        maxStorageBufferBindingSize: BINDING,
        onTilePlan: (p) => {
          plans.push(p);
          if (process.env.L2S_DEBUG) console.log(JSON.stringify(p));
        },
      });
      try {
        const onGpu = await merge(recipe, gpuMergeBackend(backend));
        const onCpu = await merge(recipe, cpuBackend);
        expect(onGpu.result.placement.cpu).toBe(0);
        expect(onGpu.result.placement.gpu + onGpu.result.placement.copied).toBe(onGpu.result.tensors);
        expect(onCpu.result.placement.gpu).toBe(0);
        expect(backend.ctx.pool.peakBytes).toBeLessThanOrEqual(BUDGET);
        const embedding = plans.find((p) => p.tensor === 'model.embed_tokens.weight');
        expect(embedding?.streamed).toBe(true);
        expect(onGpu.bytes.byteLength).toBe(onCpu.bytes.byteLength);
        expect(Buffer.from(onGpu.bytes).equals(Buffer.from(onCpu.bytes))).toBe(true);
        expect(embedding!.tiles).toBeGreaterThanOrEqual(20);
      } finally {
        backend.destroy();
      }
    }, 600_000);
  }
});
