/**
 * The GPU kernel cases (test/browser/harness/gpu-cases.ts) on Node's WebGPU (Dawn). Skipped only
 * when no adapter can be had; scripts/env.sh points Dawn at SwiftShader when there is no GPU.
 */
import { describe, it } from 'vitest';
import { GpuContext } from '../../src/gpu/device';
import { nodeGpu } from '../../src/node/webgpu';
import { GPU_CASES } from '../browser/harness/gpu-cases';

const gpu = await nodeGpu().catch(() => null);
const adapter = gpu ? await gpu.requestAdapter() : null;

describe.skipIf(!adapter)('GPU kernels on WebGPU for Node', () => {
  for (const c of GPU_CASES) {
    it(c.name, async () => {
      const ctx = await GpuContext.create({ gpu: gpu!, label: 'test', ...c.options });
      try {
        const note = await c.run(ctx);
        if (typeof note === 'string') console.info(`${c.name}: ${note}`);
      } finally {
        ctx.destroy();
      }
    }, 300_000); // the streamed cases take minutes when the 2 cores are shared with the browser tests
  }
});
