/**
 * The randomized SVD on the GPU: the cases of test/browser/harness/gpu-rsvd-cases.ts on Node's
 * WebGPU (Dawn; skipped only when no adapter can be had), and the pure parts: row tiling and the
 * drivers that run one SVD-family method on either set of operations.
 */
import { describe, expect, it } from 'vitest';
import { GpuContext, GpuLimitError } from '../../src/gpu/device';
import { rowsPerTile } from '../../src/gpu/matmul';
import { type LowRankFactors, lowRankProduct, rsvd } from '../../src/linalg/index';
import {
  cpuLowRankOps,
  type LowRankOps,
  lowrankTaskArithmetic,
  runAsync,
  runSync,
  step,
} from '../../src/methods/svd/index';
import type { MergeInputs } from '../../src/methods/types';
import { nodeGpu } from '../../src/node/webgpu';
import { RSVD_CASES } from '../browser/harness/gpu-rsvd-cases';

describe('rowsPerTile', () => {
  it('fits whole rows under the binding limit', () => {
    expect(rowsPerTile(128 * 1024 * 1024, 1536)).toBe(21845);
    expect(rowsPerTile(4096, 70)).toBe(14);
  });

  it('names the limit when one row does not fit', () => {
    expect(() => rowsPerTile(4096, 2000)).toThrow(GpuLimitError);
    expect(() => rowsPerTile(4096, 2000)).toThrow(/2000 f32 values/);
  });
});

function inputs(): MergeInputs {
  const [rows, cols] = [12, 10];
  const base = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i));
  const model = Float32Array.from(base, (b, i) => b + 0.1 * Math.cos(i * 0.37) * ((i % 7) - 3));
  return {
    tensorName: 'model.layers.0.mlp.down_proj.weight',
    shape: [rows, cols],
    tensors: [
      { model: 'base', values: base, params: {} },
      { model: 'tuned', values: model, params: { weight: 0.5 } },
    ],
    baseIndex: 0,
    params: { rank: 3 },
    seed: 1,
  };
}

describe('SVD-family steps', () => {
  it('give the same bits whether driven synchronously or asynchronously', async () => {
    const asyncOps: LowRankOps = {
      rsvd: async (...args) => cpuLowRankOps.rsvd(...args),
      lowRankProduct: async (...args) => cpuLowRankOps.lowRankProduct(...args),
      polarFactor: async (...args) => cpuLowRankOps.polarFactor(...args),
    };
    const sync = lowrankTaskArithmetic.merge(inputs());
    const driven = await runAsync(lowrankTaskArithmetic.steps(inputs(), asyncOps));
    expect(Array.from(driven)).toEqual(Array.from(sync));
  });

  it('hand each heavy operation to the operations given', () => {
    const calls: string[] = [];
    const ops: LowRankOps = {
      rsvd: (a, m, n, r, o) => {
        calls.push(`rsvd ${m}x${n} rank ${r} model ${o.modelIndex}`);
        return rsvd(a, m, n, r, o);
      },
      lowRankProduct: (f: LowRankFactors, r?: number) => {
        calls.push(`product rank ${r}`);
        return lowRankProduct(f, r);
      },
      polarFactor: cpuLowRankOps.polarFactor,
    };
    runSync(lowrankTaskArithmetic.steps(inputs(), ops));
    expect(calls).toEqual(['rsvd 12x10 rank 3 model 1', 'product rank 3']);
  });

  it('refuse asynchronous operations in the synchronous driver, and pass failures into the method', async () => {
    function* steps() {
      return yield* step(Promise.resolve(1));
    }
    expect(() => runSync(steps())).toThrow(/runAsync/);
    function* failing() {
      try {
        return yield* step<number>(Promise.reject(new Error('device lost')));
      } catch (e) {
        return `caught ${(e as Error).message}`;
      }
    }
    await expect(runAsync(failing())).resolves.toBe('caught device lost');
  });
});

const gpu = await nodeGpu().catch(() => null);
const adapter = gpu ? await gpu.requestAdapter() : null;

describe.skipIf(!adapter)('randomized SVD on WebGPU for Node', () => {
  for (const c of RSVD_CASES) {
    it(c.name, async () => {
      const ctx = await GpuContext.create({ gpu: gpu!, label: 'test', ...c.options });
      try {
        const note = await c.run(ctx);
        if (typeof note === 'string') console.info(`${c.name}: ${note}`);
      } finally {
        ctx.destroy();
      }
    }, 300_000);
  }
});
