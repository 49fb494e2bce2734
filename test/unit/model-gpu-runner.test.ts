/**
 * The GPU model runner on Node's WebGPU (Dawn): the fixture pair (test/fixtures/qwen2-tiny-l2s)
 * against transformers' reference outputs and the CPU reference runner (the cases of
 * test/browser/harness/model-gpu-cases.ts, which the browser test runs too), and a TIES merge of the
 * pair made by the engine against the CPU runner on the same merge. Skipped only when no adapter can
 * be had.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMerge } from '../../src/engine/merge';
import { GpuContext } from '../../src/gpu/device';
import { createGpuRunner } from '../../src/model/gpu/runner';
import { createCpuRunner } from '../../src/model/reference';
import { GREEDY } from '../../src/model/sampling';
import { openModelWeights } from '../../src/model/weights';
import { folderResolver, modelFolder } from '../../src/node/model-folder';
import { outputDir } from '../../src/node/output-dir';
import { nodeGpu } from '../../src/node/webgpu';
import { parseRecipe } from '../../src/recipe';
import {
  type FixtureReference,
  type ModelFixtures,
  modelRunnerCases,
} from '../browser/harness/model-gpu-cases';

const FIXTURE_DIR = resolve('test/fixtures/qwen2-tiny-l2s');
const gpu = await nodeGpu().catch(() => null);
const adapter = gpu ? await gpu.requestAdapter() : null;

const fixtures: ModelFixtures = {
  open: (model) => modelFolder(join(FIXTURE_DIR, model)),
  reference: async (model) =>
    JSON.parse(await readFile(join(FIXTURE_DIR, model, 'reference.json'), 'utf8')) as FixtureReference,
};

describe.skipIf(!adapter)('the GPU model runner on WebGPU for Node', () => {
  for (const c of modelRunnerCases(fixtures)) {
    it(c.name, { timeout: 600_000 }, async () => {
      const ctx = await GpuContext.create({ gpu: gpu!, label: 'test', ...c.options });
      try {
        const note = await c.run(ctx);
        if (typeof note === 'string') console.info(`${c.name}: ${note}`);
      } finally {
        ctx.destroy();
      }
    });
  }
});

describe.skipIf(!adapter)('the GPU model runner on a TIES merge of the fixture pair', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'l2s-gpu-ties-'));
    const recipe = parseRecipe(`merge_method: ties
base_model: ${join(FIXTURE_DIR, 'system1')}
models:
  - model: ${join(FIXTURE_DIR, 'system2')}
    parameters: {weight: 1.0, density: 0.5}
parameters: {lambda: 1.0}
dtype: bfloat16
`);
    const resolver = folderResolver(dir);
    try {
      await runMerge({ recipe, resolveModel: resolver, output: await outputDir(join(dir, 'ties')) });
    } finally {
      await resolver.closeAll();
    }
    await writeFile(join(dir, 'done'), '');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('generates the CPU reference runner greedy tokens, top-5 log-probs within 2e-3', {
    timeout: 600_000,
  }, async () => {
    const folder = await modelFolder(join(dir, 'ties'));
    const weights = await openModelWeights(folder);
    const reference = await fixtures.reference('system2');
    const ctx = await GpuContext.create({ gpu: gpu!, label: 'test' });
    const gpuRunner = await createGpuRunner(weights, { context: ctx, maxContext: 128 });
    const cpuRunner = await createCpuRunner(weights, { maxContext: 128 });
    try {
      let worst = 0;
      for (const p of reference.prompts.slice(0, 3)) {
        gpuRunner.reset();
        cpuRunner.reset();
        const sampling = { ...GREEDY, topLogprobs: 5 };
        let g = await gpuRunner.prefill(p.prompt_ids, sampling);
        let c = await cpuRunner.prefill(p.prompt_ids, sampling);
        const gpuTokens = [g.token];
        const cpuTokens = [c.token];
        for (let i = 0; i < 16; i++) {
          expect(g.topLogprobs!.map((t) => t[0])).toEqual(c.topLogprobs!.map((t) => t[0]));
          g.topLogprobs!.forEach((t, j) => {
            worst = Math.max(worst, Math.abs(t[1] - c.topLogprobs![j][1]));
          });
          g = await gpuRunner.decode(g.token, sampling);
          c = await cpuRunner.decode(c.token, sampling);
          gpuTokens.push(g.token);
          cpuTokens.push(c.token);
        }
        expect(gpuTokens).toEqual(cpuTokens);
      }
      expect(worst).toBeLessThan(2e-3);
    } finally {
      gpuRunner.dispose();
      cpuRunner.dispose();
      ctx.destroy();
      await folder.close();
    }
  });
});
