/**
 * AIM's activation statistics on the GPU: the GPU runner's prefill hook hands over each module
 * input's buffer, and shaders/model/activation-stats.wgsl folds |x| into per-channel sums in the same
 * command stream (no readback until the end). The TS twin is ActivationAccumulator in
 * src/model/calibration.ts: same order of f32 additions, correctly rounded division, so equal inputs
 * give equal bits.
 */
import divideLib from '../../../shaders/divide.lib.wgsl?raw';
import activationStats from '../../../shaders/model/activation-stats.wgsl?raw';
import modelLib from '../../../shaders/model/model.lib.wgsl?raw';
import { foldWorkgroups, type GpuContext, type KernelSource } from '../../gpu/device';
import { CalibrationError, type StatisticsSink } from '../calibration';
import type { PrefillHooks } from '../runner';
import type { GpuModuleInput, GpuPrefillHooks } from './runner';

export const ACTIVATION_STATS_KERNEL: KernelSource = {
  name: 'model.activation-stats',
  code: [modelLib, divideLib, activationStats].join('\n'),
};
const WORKGROUP = 256;
const PARAMS_BYTES = 16;
const UNIFORM = 0x0040;
const STORAGE = 0x0080;
const COPY_SRC = 0x0004;
const COPY_DST = 0x0008;
const MAP_READ = 0x0001;

interface ModuleStats {
  readonly buffer: GPUBuffer;
  readonly channels: number;
  /** Rows folded into the block sum since the block began. */
  rows: number;
}

export class GpuActivationStatistics implements StatisticsSink {
  private readonly modules = new Map<string, ModuleStats>();
  private readonly uniforms = new Map<string, GPUBuffer>();
  private readonly accumulate: GPUComputePipeline;
  private readonly finish: GPUComputePipeline;
  readonly hooks: PrefillHooks & GpuPrefillHooks;

  constructor(private readonly ctx: GpuContext) {
    this.accumulate = ctx.pipeline(ACTIVATION_STATS_KERNEL, { WORKGROUP_SIZE: WORKGROUP }, 'accumulate');
    this.finish = ctx.pipeline(ACTIVATION_STATS_KERNEL, { WORKGROUP_SIZE: WORKGROUP }, 'finish');
    this.hooks = { onGpuModuleInput: (input) => this.record(input) };
  }

  /** A uniform [rows, channels, offset, 0], made once per distinct value (the runner's chunk sizes repeat). */
  private params(rows: number, channels: number, offset: number): GPUBuffer {
    const key = `${rows},${channels},${offset}`;
    let buffer = this.uniforms.get(key);
    if (!buffer) {
      buffer = this.ctx.device.createBuffer({
        label: `${this.ctx.label}.activation-stats.params`,
        size: PARAMS_BYTES,
        usage: UNIFORM | COPY_DST,
      });
      this.ctx.device.queue.writeBuffer(buffer, 0, new Uint32Array([rows, channels, offset, 0]));
      this.uniforms.set(key, buffer);
    }
    return buffer;
  }

  private stats(module: string, channels: number): ModuleStats {
    let stats = this.modules.get(module);
    if (!stats) {
      const buffer = this.ctx.device.createBuffer({
        label: `${this.ctx.label}.activation-stats.${module}`,
        size: 2 * channels * 4,
        usage: STORAGE | COPY_SRC | COPY_DST,
      });
      // New buffers are zeroed by WebGPU: a = 0 and block sum = 0.
      stats = { buffer, channels, rows: 0 };
      this.modules.set(module, stats);
    } else if (stats.channels !== channels) {
      throw new CalibrationError(`module ${module} reported ${channels} channels, earlier ${stats.channels}`);
    }
    return stats;
  }

  private dispatch(
    encoder: GPUCommandEncoder,
    pipeline: GPUComputePipeline,
    entries: GPUBindGroupEntry[],
    channels: number,
  ) {
    const bindGroup = this.ctx.device.createBindGroup({
      label: `${this.ctx.label}.activation-stats.bind`,
      layout: pipeline.getBindGroupLayout(0),
      entries,
    });
    const pass = encoder.beginComputePass({ label: `${this.ctx.label}.activation-stats` });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    const [x, y] = foldWorkgroups(Math.ceil(channels / WORKGROUP), this.ctx.limits.maxWorkgroupsPerDimension);
    pass.dispatchWorkgroups(x, y);
    pass.end();
  }

  /** The hook: block_sum += |x| over this chunk's rows, recorded into the runner's encoder. */
  private record(input: GpuModuleInput): void {
    const rows = input.rows;
    if (input.offset % 4 !== 0)
      throw new CalibrationError(`module ${input.module}: input offset ${input.offset} is not f32-aligned`);
    const stats = this.stats(input.module, input.channels);
    stats.rows += rows;
    this.dispatch(
      input.encoder,
      this.accumulate,
      [
        { binding: 0, resource: { buffer: this.params(rows, input.channels, input.offset / 4) } },
        { binding: 1, resource: { buffer: input.buffer } },
        { binding: 2, resource: { buffer: stats.buffer } },
      ],
      input.channels,
    );
  }

  /** a += block_sum / rows for every module seen in the block. */
  endBlock(): void {
    const encoder = this.ctx.device.createCommandEncoder({
      label: `${this.ctx.label}.activation-stats.finish`,
    });
    for (const stats of this.modules.values()) {
      if (stats.rows === 0) continue;
      this.dispatch(
        encoder,
        this.finish,
        [
          { binding: 0, resource: { buffer: this.params(stats.rows, stats.channels, 0) } },
          { binding: 2, resource: { buffer: stats.buffer } },
        ],
        stats.channels,
      );
      stats.rows = 0;
    }
    this.ctx.device.queue.submit([encoder.finish()]);
    this.ctx.throwIfFailed();
  }

  /** Reads every module's a back (one staging buffer, one map). */
  async result(): Promise<Map<string, Float32Array>> {
    const entries = [...this.modules];
    const total = entries.reduce((n, [, s]) => n + s.channels * 4, 0);
    const staging = this.ctx.device.createBuffer({
      label: `${this.ctx.label}.activation-stats.read`,
      size: Math.max(16, Math.ceil(total / 16) * 16),
      usage: MAP_READ | COPY_DST,
    });
    try {
      const encoder = this.ctx.device.createCommandEncoder({
        label: `${this.ctx.label}.activation-stats.copy`,
      });
      let at = 0;
      for (const [, s] of entries) {
        encoder.copyBufferToBuffer(s.buffer, 0, staging, at, s.channels * 4);
        at += s.channels * 4;
      }
      this.ctx.device.queue.submit([encoder.finish()]);
      await Promise.race([staging.mapAsync(MAP_READ), this.ctx.lost.then((e) => Promise.reject(e))]);
      const all = new Float32Array(staging.getMappedRange().slice(0, total));
      staging.unmap();
      this.ctx.throwIfFailed();
      const out = new Map<string, Float32Array>();
      at = 0;
      for (const [module, s] of entries) {
        out.set(module, all.slice(at, at + s.channels));
        at += s.channels;
      }
      return out;
    } finally {
      staging.destroy();
    }
  }

  dispose(): void {
    for (const s of this.modules.values()) s.buffer.destroy();
    for (const b of this.uniforms.values()) b.destroy();
    this.modules.clear();
    this.uniforms.clear();
  }
}
