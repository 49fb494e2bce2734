/** The GPU backend's pure parts: dispatch folding, tiling, pool size classes, adapter errors. */
import { describe, expect, it } from 'vitest';
import { modelStockRatioFromSums } from '../../src/gpu/backend';
import { sizeClass } from '../../src/gpu/buffer-pool';
import { foldWorkgroups, GpuContext, GpuLimitError, GpuUnavailableError } from '../../src/gpu/device';
import { TILE_ALIGN, tileCapacity, tileRanges } from '../../src/gpu/stack';
import { dotF32, normF32 } from '../../src/methods/f32-reduce';
import { modelStockRatio } from '../../src/methods/model-stock';

describe('foldWorkgroups', () => {
  it('keeps small dispatches one-dimensional', () => {
    expect(foldWorkgroups(1, 65535)).toEqual([1, 1]);
    expect(foldWorkgroups(65535, 65535)).toEqual([65535, 1]);
  });

  it('folds into two dimensions that cover every group with little waste', () => {
    // 151936 x 1536 f32 elements at 256 per workgroup.
    const groups = Math.ceil((151936 * 1536) / 256);
    const [x, y] = foldWorkgroups(groups, 65535);
    expect(x).toBeLessThanOrEqual(65535);
    expect(x * y).toBeGreaterThanOrEqual(groups);
    expect(x * y - groups).toBeLessThan(y);
  });

  it('names the limit when even two dimensions are not enough', () => {
    expect(() => foldWorkgroups(65535 * 65535 + 1, 65535)).toThrow(GpuLimitError);
    expect(() => foldWorkgroups(65535 * 65535 + 1, 65535)).toThrow(/65535x65535/);
  });
});

describe('tiling', () => {
  it('splits a 151936x1536 f32 tensor of 3 models under a 128 MiB binding', () => {
    const capacity = tileCapacity(128 * 1024 * 1024, 3);
    expect(capacity % TILE_ALIGN).toBe(0);
    expect(capacity * 3 * 4).toBeLessThanOrEqual(128 * 1024 * 1024);
    const count = 151936 * 1536;
    const tiles = tileRanges(count, capacity);
    expect(tiles.length).toBe(Math.ceil(count / capacity));
    expect(tiles.reduce((s, [, n]) => s + n, 0)).toBe(count);
    for (const [start] of tiles) expect(start % TILE_ALIGN).toBe(0);
  });

  it('refuses a binding too small for one aligned row per model', () => {
    expect(() => tileCapacity(4096, 8)).toThrow(GpuLimitError);
  });

  it('gives an empty tensor one empty tile', () => {
    expect(tileRanges(0, 1024)).toEqual([[0, 0]]);
  });
});

describe('sizeClass', () => {
  it('rounds small buffers to powers of two and large ones to eighths of an octave', () => {
    expect(sizeClass(1)).toBe(256);
    expect(sizeClass(300)).toBe(512);
    expect(sizeClass(65536)).toBe(65536);
    expect(sizeClass(100 * 1024 * 1024)).toBe(104 * 1024 * 1024); // steps of 8 MiB between 64 and 128 MiB
    const big = 933 * 1024 * 1024 + 5;
    expect(sizeClass(big)).toBeGreaterThanOrEqual(big);
    expect(sizeClass(big) / big).toBeLessThan(1.125);
    expect(sizeClass(big) % 4).toBe(0);
  });
});

describe('modelStockRatioFromSums', () => {
  it('gives the CPU reference ratio from reduced norms and dot products', () => {
    const n = 1000;
    const offsets = [0, 1, 2].map((k) =>
      Float32Array.from({ length: n }, (_, i) => Math.sin(i * (k + 1) * 0.37) + k * 0.1),
    );
    const pairs: Array<[number, number]> = [
      [0, 1],
      [0, 2],
      [1, 2],
    ];
    const got = modelStockRatioFromSums(
      3,
      offsets.map((o) => normF32(o)),
      pairs,
      pairs.map(([j, k]) => dotF32(offsets[j], offsets[k])),
    );
    expect(got).toBe(modelStockRatio(offsets, 0, n));
  });
});

describe('GpuContext.create', () => {
  it('reports a missing adapter as GpuUnavailableError', async () => {
    const noAdapter = { requestAdapter: async () => null } as unknown as GPU;
    await expect(GpuContext.create({ gpu: noAdapter })).rejects.toThrow(GpuUnavailableError);
  });

  it('reports a missing navigator.gpu as GpuUnavailableError', async () => {
    await expect(GpuContext.create()).rejects.toThrow(/navigator\.gpu is undefined/);
  });
});
