/**
 * AIM's statistics on WebGPU for Node (Dawn; SwiftShader where there is no GPU): the reduction kernel
 * against its TS twin bit for bit, and the GPU runner's statistics against the CPU reference's.
 * Skipped only when no adapter can be had.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/device';
import { ActivationAccumulator, cpuStatisticsSink, runStatisticsPass } from '../../src/model/calibration';
import { buildCalibrationBlocks, builtinCandidates } from '../../src/model/calibration-text';
import { GpuActivationStatistics } from '../../src/model/gpu/activation-stats';
import { createGpuRunner } from '../../src/model/gpu/runner';
import { createCpuRunner } from '../../src/model/reference';
import { ModelTokenizer } from '../../src/model/tokenizer';
import { openModelWeights } from '../../src/model/weights';
import { modelFolder } from '../../src/node/model-folder';
import { nodeGpu } from '../../src/node/webgpu';

const gpu = await nodeGpu().catch(() => null);
const adapter = gpu ? await gpu.requestAdapter() : null;

/** Inputs with the awkward values: zeros, negative zero, signs, large and tiny magnitudes, Inf. */
function input(rows: number, channels: number, seed: number): Float32Array {
  const x = new Float32Array(rows * channels);
  let s = seed >>> 0;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = s / 2 ** 32;
    x[i] = (u - 0.5) * 10 ** Math.floor(u * 7 - 3);
  }
  x[0] = 0;
  x[1] = -0;
  x[2] = -3.5;
  return x;
}

describe.skipIf(!adapter)('AIM statistics on WebGPU for Node', () => {
  let ctx: GpuContext;
  beforeAll(async () => {
    ctx = await GpuContext.create({ gpu: gpu!, label: 'aim-test' });
  });
  afterAll(() => ctx?.destroy());

  it('the reduction kernel equals ActivationAccumulator bit for bit (chunks, shared inputs, >256 channels)', async () => {
    const sink = new GpuActivationStatistics(ctx);
    const cpu = new ActivationAccumulator();
    // [module, channels, rows per chunk...]: chunked blocks as the GPU runner's prefill chunks them.
    const shapes: [string, number, number[]][] = [
      ['m.q_proj', 7, [5, 3]],
      ['m.k_proj', 7, [5, 3]],
      ['m.down_proj', 300, [4]],
      ['m.norm', 64, [1, 1, 6]],
    ];
    try {
      for (let block = 0; block < 3; block++) {
        for (const [module, channels, chunks] of shapes) {
          for (const [k, rows] of chunks.entries()) {
            const x = input(rows, channels, block * 100 + k + channels);
            // A leading pad checks the offset handling.
            const pad = 4;
            const buffer = ctx.device.createBuffer({ size: (pad + x.length) * 4, usage: 0x0080 | 0x0008 });
            ctx.device.queue.writeBuffer(
              buffer,
              pad * 4,
              x.buffer as ArrayBuffer,
              x.byteOffset,
              x.byteLength,
            );
            const encoder = ctx.device.createCommandEncoder();
            sink.hooks.onGpuModuleInput!({
              module,
              buffer,
              offset: pad * 4,
              tokens: rows,
              rows,
              channels,
              encoder,
            });
            ctx.device.queue.submit([encoder.finish()]);
            cpu.observe(module, x, channels);
          }
        }
        sink.endBlock();
        cpu.endBlock();
      }
      const got = await sink.result();
      for (const [module, a] of cpu.a) {
        const g = got.get(module)!;
        expect(g.length).toBe(a.length);
        expect(Buffer.from(g.buffer).equals(Buffer.from(a.buffer)), module).toBe(true);
      }
    } finally {
      sink.dispose();
    }
  });

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
});
