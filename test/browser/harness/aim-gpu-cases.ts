/**
 * AIM's activation-statistics kernel (shaders/model/activation-stats.wgsl) against its TS twin,
 * ActivationAccumulator, bit for bit: chunked blocks (a block split over prefill steps), q/k/v sharing
 * one input, more channels than a workgroup, a row offset, and awkward values (±0, Inf, magnitudes
 * from 1e-3 to 1e3). Run in Node (test/unit/aim-gpu.test.ts) and in a browser worker
 * (test/browser/gpu-kernels.spec.ts).
 */
import { ActivationAccumulator } from '../../../src/model/calibration';
import { GpuActivationStatistics } from '../../../src/model/gpu/activation-stats';
import type { GpuCase } from './gpu-cases';
import { check, checkBits } from './gpu-check';

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

/** [module, channels, rows of each chunk of a block]. */
const SHAPES: readonly [string, number, readonly number[]][] = [
  ['m.q_proj', 7, [5, 3]],
  ['m.k_proj', 7, [5, 3]],
  ['m.down_proj', 300, [4]],
  ['m.norm', 64, [1, 1, 6]],
];

async function statisticsCase(ctx: Parameters<GpuCase['run']>[0], withInf: boolean): Promise<void> {
  const sink = new GpuActivationStatistics(ctx);
  const cpu = new ActivationAccumulator();
  const pad = 4; // x starts 4 floats into its buffer
  const buffers: GPUBuffer[] = [];
  try {
    for (let block = 0; block < 3; block++) {
      for (const [module, channels, chunks] of SHAPES) {
        for (const [k, rows] of chunks.entries()) {
          const x = input(rows, channels, block * 100 + k + channels);
          if (withInf && module === 'm.norm' && block === 1) x[5] = Number.POSITIVE_INFINITY;
          const buffer = ctx.device.createBuffer({ size: (pad + x.length) * 4, usage: 0x0080 | 0x0008 });
          buffers.push(buffer);
          ctx.device.queue.writeBuffer(buffer, pad * 4, x.buffer as ArrayBuffer, x.byteOffset, x.byteLength);
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
    check(got.size === cpu.a.size, `${got.size} modules, expected ${cpu.a.size}`);
    for (const [module, a] of cpu.a) checkBits(got.get(module)!, a, module);
  } finally {
    sink.dispose();
    for (const b of buffers) b.destroy();
  }
}

export const AIM_GPU_CASES: readonly GpuCase[] = [
  {
    name: 'aim activation statistics: chunks, shared inputs, 300 channels',
    run: (ctx) => statisticsCase(ctx, false),
  },
  { name: 'aim activation statistics: an Inf input', run: (ctx) => statisticsCase(ctx, true) },
];
