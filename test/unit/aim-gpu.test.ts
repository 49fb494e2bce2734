/**
 * AIM's statistics on WebGPU for Node (Dawn; SwiftShader where there is no GPU): the reduction kernel
 * against its TS twin bit for bit, and the GPU runner's statistics against the CPU reference's.
 * Skipped only when no adapter can be had.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main';
import { GpuContext } from '../../src/gpu/device';
import { encodeAimStatistics } from '../../src/model/aim-statistics';
import { cpuStatisticsSink, runAimCalibration, runStatisticsPass } from '../../src/model/calibration';
import { buildCalibrationBlocks, builtinCandidates } from '../../src/model/calibration-text';
import { GpuActivationStatistics } from '../../src/model/gpu/activation-stats';
import { createGpuRunner } from '../../src/model/gpu/runner';
import { createCpuRunner } from '../../src/model/reference';
import { ModelTokenizer } from '../../src/model/tokenizer';
import { openModelWeights } from '../../src/model/weights';
import { modelFolder } from '../../src/node/model-folder';
import { nodeGpu } from '../../src/node/webgpu';
import { AIM_GPU_CASES } from '../browser/harness/aim-gpu-cases';

const FIXTURE = resolve('test/fixtures/qwen2-tiny-l2s');
const gpu = await nodeGpu().catch(() => null);
const adapter = gpu ? await gpu.requestAdapter() : null;

describe.skipIf(!adapter)('AIM statistics on WebGPU for Node', () => {
  let ctx: GpuContext;
  beforeAll(async () => {
    ctx = await GpuContext.create({ gpu: gpu!, label: 'aim-test' });
  });
  afterAll(() => ctx?.destroy());

  for (const c of AIM_GPU_CASES) {
    it(c.name, async () => {
      await c.run(ctx);
    });
  }

  it('the GPU runner gives the CPU reference statistics within 1e-5 relative, every module', async () => {
    const files = await modelFolder('test/fixtures/qwen2-tiny-l2s/system1');
    try {
      const weights = await openModelWeights(files);
      const tokenizer = await ModelTokenizer.load(files);
      const calibration = await buildCalibrationBlocks(builtinCandidates(), tokenizer, {
        samples: 4,
        blockSize: 64,
        seed: 42,
      });
      expect(calibration.blocks.length).toBeGreaterThanOrEqual(2);
      const cpuRunner = await createCpuRunner(weights, { maxContext: 64 });
      const cpu = await runStatisticsPass(cpuRunner, calibration, cpuStatisticsSink());
      cpuRunner.dispose();
      // Chunks of 24 tokens: a block spans three prefill steps.
      const gpuRunner = await createGpuRunner(weights, { context: ctx, maxContext: 64, prefillChunk: 24 });
      const sink = new GpuActivationStatistics(ctx);
      try {
        const onGpu = await runStatisticsPass(gpuRunner, calibration, sink);
        expect([...onGpu.modules.keys()]).toEqual([...cpu.modules.keys()]);
        let worst = 0;
        for (const [module, a] of cpu.modules) {
          const g = onGpu.modules.get(module)!;
          for (let c = 0; c < a.length; c++) {
            const rel = Math.abs(g[c] - a[c]) / Math.max(Math.abs(a[c]), 1e-30);
            worst = Math.max(worst, rel);
            expect(rel, `${module}[${c}]`).toBeLessThan(1e-5);
          }
        }
        console.info(`GPU vs CPU statistics: largest relative difference ${worst.toExponential(2)}`);
      } finally {
        sink.dispose();
        gpuRunner.dispose();
      }
    } finally {
      await files.close();
    }
  }, 400_000);

  it('AIM-TIES on the GPU merge backend writes the CPU backend bytes (same statistics)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'l2s-aim-gpu-'));
    const files = await modelFolder(`${FIXTURE}/system1`);
    try {
      const stats = await runAimCalibration({
        base: files,
        settings: { source: { kind: 'builtin' }, samples: 4, blockSize: 64, seed: 42 },
        device: 'cpu',
      });
      await writeFile(join(dir, 'stats.safetensors'), encodeAimStatistics(stats));
      await writeFile(
        join(dir, 'aim.yml'),
        `merge_method: ties\nbase_model: ${FIXTURE}/system1\nmodels:\n  - model: ${FIXTURE}/system2\n` +
          '    parameters: {weight: 1.0, density: 0.2}\nparameters: {lambda: 1.0}\ndtype: bfloat16\n' +
          'aim: {omega: 0.4, statistics: stats.safetensors}\n',
      );
      for (const device of ['cpu', 'gpu']) {
        const code = await main([
          join(dir, 'aim.yml'),
          join(dir, `out-${device}`),
          '--device',
          device,
          '--quiet',
        ]);
        expect(code, device).toBe(0);
      }
      const cpu = await readFile(join(dir, 'out-cpu', 'model.safetensors'));
      const gpuOut = await readFile(join(dir, 'out-gpu', 'model.safetensors'));
      expect(gpuOut.equals(cpu)).toBe(true);
    } finally {
      await files.close();
      await rm(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
