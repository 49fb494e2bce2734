/**
 * Whole merges through the engine on the WebAssembly kernels (on this thread, and on two kernel
 * threads reading the files themselves) and on the TypeScript reference (forced with cpuKernels:
 * 'ts'): the same files, byte for byte, on the trained fixture pair, the tiny trio and a synthetic
 * model with Qwen2.5-0.5B's layer shapes.
 */
import { statSync, truncateSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTinyModel, TINY_TRIO, type TinyModelFiles } from '../../src/demo/tiny-qwen';
import type { ModelResolver } from '../../src/engine/io';
import { runMerge } from '../../src/engine/merge';
import type { CpuThreads, ThreadTensor } from '../../src/engine/threads';
import { NodeCpuThreads } from '../../src/node/kernel-threads';
import { folderResolver } from '../../src/node/model-folder';
import { parseRecipe } from '../../src/recipe';
import { mergeKernelsWasm } from '../../wasm/vite-plugin';
import { memoryOutput, memoryResolver } from '../fixtures/memory-merge';

let workDir: string;
let nodeThreads: NodeCpuThreads;
/** The tensors started on the threads, in order. */
const onThreads: ThreadTensor[] = [];
const countingThreads: CpuThreads = {
  get count() {
    return nodeThreads.count;
  },
  get splitsStatistics() {
    return nodeThreads.splitsStatistics;
  },
  reads: (source) => nodeThreads.reads(source),
  start: (tensor) => {
    onThreads.push(tensor);
    return nodeThreads.start(tensor);
  },
  cancel: () => nodeThreads.cancel(),
};

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'l2s-kernel-threads-'));
  // The threads' script as the CLI build makes it (dist/cli/kernel-worker.js), built afresh.
  await build({
    configFile: false,
    logLevel: 'error',
    plugins: [mergeKernelsWasm()],
    build: {
      ssr: 'src/node/kernel-worker.ts',
      outDir: join(workDir, 'worker'),
      target: 'node20',
      rollupOptions: { output: { entryFileNames: 'kernel-worker.js' } },
    },
    ssr: { noExternal: [] },
  });
  nodeThreads = NodeCpuThreads.start(2, pathToFileURL(join(workDir, 'worker', 'kernel-worker.js')));
}, 120_000);

afterAll(async () => {
  await nodeThreads?.close();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** The models as folders of files (the threads read files through their descriptors). */
async function onDisk(models: TinyModelFiles[]): Promise<string> {
  const root = await mkdtemp(join(workDir, 'models-'));
  for (const m of models) {
    await mkdir(join(root, m.name));
    for (const [file, bytes] of m.files) await writeFile(join(root, m.name, file), bytes);
  }
  return root;
}

/**
 * Every file the merge wrote, on the kernels and on the reference; with `folder`, also on two
 * kernel threads reading the models from there.
 */
async function bothWays(recipeText: string, resolveModel: ModelResolver, seed = 0, folder?: string) {
  const recipe = parseRecipe(recipeText, 'test');
  const run = async (cpuKernels: 'auto' | 'ts', threads?: CpuThreads) => {
    const out = memoryOutput();
    const resolver = threads ? folderResolver(folder!) : undefined;
    try {
      await runMerge({
        recipe,
        resolveModel: resolver ?? resolveModel,
        output: out.target,
        seed,
        outShardSize: 3_000_000,
        cpuKernels,
        cpuThreads: threads,
      });
    } finally {
      await resolver?.closeAll();
    }
    return new Map([...out.files].map(([name, parts]) => [name, Buffer.concat(parts)]));
  };
  const started = onThreads.length;
  const threads = folder ? await run('auto', countingThreads) : undefined;
  if (folder) expect(onThreads.length, 'tensors merged on the threads').toBeGreaterThan(started);
  return { kernels: await run('auto'), reference: await run('ts'), threads };
}

function expectSameFiles({ kernels, reference, threads }: Awaited<ReturnType<typeof bothWays>>) {
  expect([...kernels.keys()].sort()).toEqual([...reference.keys()].sort());
  for (const [name, bytes] of reference) {
    expect(Buffer.compare(kernels.get(name) as Buffer, bytes), name).toBe(0);
    if (threads) expect(Buffer.compare(threads.get(name) as Buffer, bytes), `${name} on two threads`).toBe(0);
  }
  if (threads) expect([...threads.keys()].sort()).toEqual([...reference.keys()].sort());
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
  let trioFolder: string;
  beforeAll(async () => {
    trio = await Promise.all(TINY_TRIO.map((s) => makeTinyModel(s)));
    trioFolder = await onDisk(trio);
  });

  for (const [name, recipe] of Object.entries(TRIO_RECIPES)) {
    it(`${name} on the tiny trio`, async () => {
      for (const seed of name.startsWith('dare') || name.startsWith('della') ? [0, 5] : [0]) {
        expectSameFiles(await bothWays(recipe, memoryResolver(trio), seed, trioFolder));
      }
    });
  }

  it('a run cancelled while tensors are on the threads leaves them ready for the next run', async () => {
    const recipe = parseRecipe(TRIO_RECIPES.ties, 'test');
    const controller = new AbortController();
    const resolver = folderResolver(trioFolder);
    const started = onThreads.length;
    try {
      const run = runMerge({
        recipe,
        resolveModel: resolver,
        output: memoryOutput().target,
        cpuThreads: countingThreads,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.tensorsDone >= 2) controller.abort();
        },
      });
      await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    } finally {
      await resolver.closeAll();
    }
    expect(onThreads.length).toBeGreaterThan(started + 2);
    expectSameFiles(await bothWays(TRIO_RECIPES.ties, memoryResolver(trio), 0, trioFolder));
  });

  it('a read that fails on a thread names the model file and the tensor', async () => {
    const folder = await onDisk(trio);
    const resolver = folderResolver(folder);
    const shard = join(folder, 'tiny-qwen-instruct', 'model.safetensors');
    try {
      const run = runMerge({
        recipe: parseRecipe(TRIO_RECIPES.task_arithmetic, 'test'),
        resolveModel: resolver,
        output: memoryOutput().target,
        cpuThreads: countingThreads,
        // Planned (the header is read) and no tensor read yet: the file loses its second half.
        onLog: () => truncateSync(shard, Math.floor(statSync(shard).size / 2)),
      });
      await expect(run).rejects.toThrow(
        /^tiny-qwen-instruct\/model\.safetensors: reading tensor \S+ failed: .*file ended at \d+/,
      );
    } finally {
      await resolver.closeAll();
    }
    // The threads go on with the next run.
    expectSameFiles(await bothWays(TRIO_RECIPES.task_arithmetic, memoryResolver(trio), 0, trioFolder));
  });

  it('ties, task_arithmetic, della and slerp on the trained fixture pair', async () => {
    const fixtures = join(__dirname, '../fixtures/qwen2-tiny-l2s');
    const resolver = folderResolver(fixtures);
    try {
      const recipes: [string, string][] = [
        ['ties', 'models:\n  - model: system2\n    parameters: {weight: 0.9, density: 0.3}\n'],
        ['task_arithmetic', 'models:\n  - model: system2\n    parameters: {weight: 0.9}\n'],
        ['della', 'models:\n  - model: system2\n    parameters: {weight: 0.9, density: 0.3, epsilon: 0.1}\n'],
        ['slerp', 'models:\n  - model: system2\nparameters: {t: 0.6}\n'],
      ];
      for (const [method, rest] of recipes) {
        const recipe = `merge_method: ${method}\nbase_model: system1\n${rest}dtype: bfloat16\n`;
        for (const seed of method === 'della' ? [0, 9] : [0]) {
          expectSameFiles(await bothWays(recipe, resolver, seed, fixtures));
        }
      }
    } finally {
      await resolver.closeAll();
    }
  });

  it('ties, task_arithmetic, dare_linear, della_linear and slerp on a model with Qwen2.5-0.5B layer shapes', async () => {
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
    const folder = await onDisk(models);
    const started = onThreads.length;
    for (const [method, params] of [
      ['ties', '{weight: 1.0, density: 0.2}'],
      ['task_arithmetic', '{weight: 0.7}'],
      ['dare_linear', '{weight: 0.7, density: 0.5}'],
      ['della_linear', '{weight: 0.7, density: 0.4, epsilon: 0.1}'],
      ['slerp', '{}'],
    ]) {
      const global = method === 'slerp' ? 'parameters: {t: 0.3}\n' : '';
      const recipe = `merge_method: ${method}\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: ${params}\n${global}dtype: bfloat16\n`;
      expectSameFiles(await bothWays(recipe, memoryResolver(models), 3, folder));
    }
    // The large tensors' chunks of task_arithmetic alternate between the threads; TIES' and
    // dare_linear's tensors go whole to one thread (the tie count and the L1 rescale span the tensor).
    const ran = onThreads.slice(started);
    const split = ran.filter((t) => t.split);
    expect(split.length).toBeGreaterThan(0);
    expect(new Set(split.map((t) => t.method))).toEqual(new Set(['task_arithmetic']));
    expect(ran.some((t) => t.method === 'ties' && !t.split)).toBe(true);
    expect(ran.some((t) => t.method === 'dare_linear' && !t.split)).toBe(true);
  }, 300_000);

  it('TIES and breadcrumbs_ties split across the threads, statistics summed, to the same bytes', async () => {
    // f32 inputs: the 20000 x 256 embedding (5.1M elements, 41 MB of inputs) is more than the
    // engine keeps, so its 5 chunks go to both threads, which sum their counts and tie counts.
    const shape = {
      hiddenSize: 256,
      intermediateSize: 512,
      layers: 1,
      heads: 4,
      kvHeads: 2,
      vocabSize: 20000,
    };
    const models = await Promise.all(
      [
        { name: 'base', deltaSeed: 0, deltaScale: 0, tied: true, shards: 1, dtype: 'F32' as const },
        { name: 'instruct', deltaSeed: 5, deltaScale: 0.05, tied: true, shards: 1, dtype: 'F32' as const },
        { name: 'reasoner', deltaSeed: 11, deltaScale: 0.1, tied: true, shards: 1, dtype: 'F32' as const },
      ].map((spec) => makeTinyModel(spec, shape)),
    );
    const folder = await onDisk(models);
    const started = onThreads.length;
    for (const recipe of [
      'merge_method: ties\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 1.0, density: 0.2}\ndtype: float32\n',
      'merge_method: ties\nbase_model: base\nmodels:\n  - model: instruct\n    parameters: {weight: 0.5, density: 0.5}\n  - model: reasoner\n    parameters: {weight: 0.7, density: 0.3}\ndtype: float32\nout_dtype: bfloat16\n',
      'merge_method: breadcrumbs_ties\nbase_model: base\nmodels:\n  - model: reasoner\n    parameters: {weight: 0.8, density: 0.6, gamma: 0.05}\ndtype: float32\n',
    ]) {
      expectSameFiles(await bothWays(recipe, memoryResolver(models), 0, folder));
    }
    const split = onThreads.slice(started).filter((t) => t.splitStatistics);
    expect(split.map((t) => `${t.method} ${t.spec.tensorName}`)).toEqual([
      'ties model.embed_tokens.weight',
      'ties model.embed_tokens.weight',
      'breadcrumbs_ties model.embed_tokens.weight',
    ]);
    expect(split.every((t) => t.split)).toBe(true);
  }, 300_000);
});
