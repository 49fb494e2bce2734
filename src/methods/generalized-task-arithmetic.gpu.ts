/**
 * The generalized task arithmetic family on the GPU (generalized-task-arithmetic.ts and sparsify.ts
 * are the reference): task vectors in place, exact rank thresholds by radix select over the tiles
 * (TIES, breadcrumbs), counter-based Bernoulli masks (DARE), per-fiber ranks (DELLA), L1 rescaling
 * from blocked sums, then the sign-consensus mix. A streamed tile set replays the task vectors and
 * masks on every load, so every pass sees the same values as a resident one.
 * Kernels: shaders/task-vectors.wgsl, radix-histogram.wgsl, block-sum.wgsl, fiber-rank.wgsl,
 * sparsify.wgsl, mix.wgsl.
 */
import type { CommandBatch } from '../gpu/commands';
import { type GpuMergeJob, lcm, table } from '../gpu/job';
import { KERNELS } from '../gpu/kernels';
import { type RankQuery, selectRanks } from '../gpu/radix-select';
import { rowSums } from '../gpu/reduce';
import { type StackTile, TILE_ALIGN } from '../gpu/stack';
import { fnv1a32 } from '../random/counter-rng';
import { DIVISOR_EPSILON, type TaskArithmeticVariant } from './generalized-task-arithmetic';
import { readBoolean, readNumber } from './params';
import { breadcrumbsCuts, RESCALE_EPSILON } from './sparsify';
import { type MergeMethod, MergeMethodError } from './types';

const fround = Math.fround;
const WORKGROUP = 256;
const NEG_ZERO = -0;

// ---------------------------------------------------------------- masks

const MODE = { top: 1, window: 2, bernoulli: 3, della: 4, drop: 5, zero: 6 } as const;

interface MaskPlan {
  readonly row: number;
  readonly mode: (typeof MODE)[keyof typeof MODE];
  /** L1 rescale applies (a mask exists and the recipe rescales). */
  readonly rescale: boolean;
  p?: number;
  top?: number;
  lower?: number;
  upper?: number;
  della?: { low: number; epsilon: number };
}

/** Python slice bounds [start:stop] over n elements (sparsify.ts's pythonSliceRange). */
function pythonSliceRange(start: number, stop: number, n: number): [number, number] {
  const clamp = (index: number) => Math.max(0, Math.min(n, index < 0 ? index + n : index));
  return [clamp(start), clamp(stop)];
}

/** DELLA fibers along dimension 1 of [d0, d1, rest] (sparsify.ts's dellaFibers). */
function dellaFibers(shape: readonly number[], n: number): { outer: number; length: number; inner: number } {
  if (shape.length === 0) {
    throw new MergeMethodError('DELLA ranks magnitudes along dimension 1 and cannot prune a scalar tensor');
  }
  if (shape.length === 1) return { outer: 1, length: n, inner: 1 };
  const outer = shape[0];
  const length = shape[1];
  return { outer, length, inner: outer * length === 0 ? 0 : n / (outer * length) };
}

/** The sparsification of one task vector, validated as sparsify.ts validates it. */
function planMask(
  variant: TaskArithmeticVariant,
  row: number,
  n: number,
  shape: readonly number[],
  rescale: boolean,
  read: (param: string) => number,
): MaskPlan | null {
  const density = read('density');
  switch (variant.sparsification) {
    case null:
      return null;
    case 'magnitude': {
      if (density >= 1) return null;
      const k = Math.trunc(density * n);
      if (k <= 0) {
        throw new MergeMethodError(
          `density ${density} keeps no element of a tensor with ${n} elements (int(density * n) = ${k}); raise density`,
        );
      }
      return { row, mode: MODE.top, rescale, top: k - 1 };
    }
    case 'magnitude_outliers': {
      const gamma = read('gamma');
      if (density >= 1) return null;
      const { bottom, top } = breadcrumbsCuts(n, density, gamma);
      const [from, to] = pythonSliceRange(bottom, -top, n);
      if (from >= to) return { row, mode: MODE.drop, rescale };
      return {
        row,
        mode: MODE.window,
        rescale,
        lower: from > 0 ? from : undefined,
        upper: to < n ? to : undefined,
      };
    }
    case 'random': {
      if (density >= 1) return null;
      if (density < 0 || Number.isNaN(density)) {
        throw new MergeMethodError(`density must be between 0 and 1, got ${density}`);
      }
      return { row, mode: MODE.bernoulli, rescale, p: fround(density) };
    }
    case 'della_magprune': {
      const epsilon = read('epsilon');
      if (density >= 1) return null;
      if (density <= 0) return { row, mode: MODE.zero, rescale: false };
      if (density + epsilon >= 1 || density - epsilon <= 0) {
        throw new MergeMethodError(
          `epsilon must be chosen such that density +/- epsilon is in (0, 1); got density ${density}, epsilon ${epsilon}`,
        );
      }
      const { length } = dellaFibers(shape, n);
      if (length < 2 && n > 0) {
        throw new MergeMethodError(
          `DELLA ranks magnitudes along dimension 1, which has length ${length} in shape [${shape.join(', ')}]; ` +
            'it needs at least 2 (use another method for this tensor)',
        );
      }
      return {
        row,
        mode: MODE.della,
        rescale,
        della: { low: fround(density - epsilon), epsilon: fround(epsilon) },
      };
    }
  }
}

export async function taskArithmeticOnGpu(
  method: MergeMethod & { readonly variant: TaskArithmeticVariant },
  job: GpuMergeJob,
): Promise<void> {
  const { variant, globalParams, modelParams } = method;
  const { inputs, ctx } = job;
  const { name } = variant;
  const { tensors, baseIndex } = inputs;
  if (baseIndex < 0 || baseIndex >= tensors.length) {
    throw new MergeMethodError(`${name} works on task vectors and needs a base_model`);
  }
  readBoolean(name, inputs.params, globalParams, 'int8_mask');
  const normalize = readBoolean(name, inputs.params, globalParams, 'normalize');
  const rescale = readBoolean(name, inputs.params, globalParams, 'rescale');
  const lambda = readNumber(name, inputs.params, globalParams, 'lambda');
  const n = tensors[baseIndex].elements;
  const rows: number[] = [];
  const weights: number[] = [];
  const masks: MaskPlan[] = [];
  tensors.forEach((tensor, row) => {
    if (row === baseIndex) return;
    if (tensor.elements !== n) {
      throw new MergeMethodError(
        `${name}: model "${tensor.model}" has ${tensor.elements} elements where the base has ${n}`,
      );
    }
    weights.push(readNumber(name, tensor.params, modelParams, 'weight', tensor.model));
    rows.push(row);
    try {
      const plan = planMask(variant, row, n, inputs.shape, rescale, (param) =>
        readNumber(name, tensor.params, modelParams, param, tensor.model),
      );
      if (plan) masks.push(plan);
    } catch (error) {
      if (error instanceof MergeMethodError) {
        throw new MergeMethodError(`${name}: model "${tensor.model}": ${error.message}`);
      }
      throw error;
    }
  });
  // DELLA sorts whole fibers: tiles hold whole [d1, rest] slices (and whole blocks of the L1 sums).
  const dellaMasks = masks.filter((m) => m.mode === MODE.della);
  const slice = dellaMasks.length > 0 ? dellaFibers(inputs.shape, n) : undefined;
  const padded = slice ? 2 ** Math.ceil(Math.log2(Math.max(slice.length, 1))) : 0;
  const stack = await job.load({
    align: slice ? lcm(TILE_ALIGN, Math.max(1, slice.length * slice.inner)) : TILE_ALIGN,
    // DELLA's sort keys (padded fibers) and keep probabilities, per element of a tile.
    scratchPerElement: slice ? (4 * padded) / Math.max(slice.length, 1) + 4 * dellaMasks.length : 0,
  });
  if (rows.length === 0) {
    await job.copyRow(baseIndex);
    return;
  }
  // Task vectors in place.
  await stack.transform('task-vectors', (batch, tile) => {
    batch.dispatch({
      kernel: KERNELS.taskVectors,
      overrides: { WORKGROUP_SIZE: WORKGROUP },
      bindings: [new Uint32Array([tile.count, tile.stride, baseIndex, 0]), tile.buffer],
      workgroups: Math.ceil(tile.count / WORKGROUP),
      z: tensors.length,
    });
  });
  const scales = new Map<number, number>();
  if (masks.length > 0) {
    const thresholds = await maskThresholds(job, masks);
    const rescaled = masks.filter((m) => m.rescale);
    const l1 = () =>
      rowSums(
        ctx,
        stack,
        rescaled.map((m) => ({ term: 'abs' as const, row: m.row })),
        stack.count,
        job.statisticsBytes,
      );
    const before = await l1();
    const nameHash = fnv1a32(inputs.tensorName);
    const dellaRow = new Map(dellaMasks.map((m, k) => [m.row, k]));
    const modelTable = table(masks.length * 12, (u, f) => {
      masks.forEach((m, z) => {
        const o = z * 12;
        const th = thresholds.get(m.row);
        u[o] = m.row;
        u[o + 1] = m.mode;
        u[o + 2] = th?.tHi ?? 0;
        u[o + 3] = th?.cHi ?? 0;
        u[o + 4] = th?.tLo ?? 0;
        u[o + 5] = th?.cLo ?? 0;
        u[o + 6] = (m.lower !== undefined ? 1 : 0) | (m.upper !== undefined ? 2 : 0);
        f[o + 7] = m.p ?? 0;
        u[o + 8] = dellaRow.get(m.row) ?? 0;
      });
    });
    await stack.transform('sparsify', (batch, tile) => {
      if (tile.count === 0) return;
      // DELLA's keep probabilities come from this tile's task vectors, before any mask.
      const probabilities = slice
        ? dellaProbabilities(batch, tile, dellaMasks, dellaRow, slice, padded)
        : batch.scratch(16, 'sparsify.no-probabilities');
      batch.dispatch({
        kernel: KERNELS.sparsify,
        overrides: { WORKGROUP_SIZE: WORKGROUP },
        bindings: [
          new Uint32Array([tile.count, tile.stride, tile.start, inputs.seed >>> 0, nameHash, 0, 0, 0]),
          batch.upload(modelTable, 'sparsify.models'),
          tile.buffer,
          probabilities,
        ],
        workgroups: Math.ceil(tile.count / WORKGROUP),
        z: masks.length,
      });
    });
    const after = await l1();
    rescaled.forEach((m, k) => {
      if (before[k] < RESCALE_EPSILON || after[k] < RESCALE_EPSILON) return;
      scales.set(m.row, fround(before[k] / after[k]));
    });
  }
  // Mixing.
  const w = weights.map(fround);
  let divisor = w[0];
  for (let m = 1; m < w.length; m++) divisor = fround(divisor + w[m]);
  if (Math.abs(divisor) < DIVISOR_EPSILON) divisor = 1;
  const consensus = variant.consensus === null ? 0 : variant.consensus === 'sum' ? 1 : 2;
  const modelTable = table(rows.length * 4, (u, f) => {
    rows.forEach((row, m) => {
      const scale = scales.get(row);
      u[m * 4] = row;
      u[m * 4 + 1] = scale === undefined ? 0 : 1;
      f[m * 4 + 2] = scale ?? 1;
      f[m * 4 + 3] = w[m];
    });
  });
  await stack.visit('mix', (batch, tile) => {
    const out = batch.scratch(tile.count * 4, 'mix.out');
    batch.dispatch({
      kernel: KERNELS.mix,
      overrides: { WORKGROUP_SIZE: WORKGROUP, CONSENSUS: consensus },
      bindings: [
        table(12, (u, f) => {
          u.set([tile.count, tile.stride, baseIndex, rows.length, normalize ? 1 : 0, lambda !== 1 ? 1 : 0]);
          f[6] = fround(lambda);
          f[7] = divisor;
          f[8] = NEG_ZERO;
        }),
        batch.upload(modelTable, 'mix.models'),
        tile.buffer,
        out,
      ],
      workgroups: Math.ceil(tile.count / WORKGROUP),
    });
    return job.emit(batch, tile, out);
  });
}

interface Thresholds {
  tHi: number;
  cHi: number;
  tLo: number;
  cLo: number;
}

/** Radix-select the rank thresholds of every TIES and breadcrumbs mask, all in one set of passes. */
async function maskThresholds(
  job: GpuMergeJob,
  masks: readonly MaskPlan[],
): Promise<Map<number, Thresholds>> {
  const queries: RankQuery[] = [];
  const slots: Array<{ row: number; which: 'top' | 'lower' | 'upper' }> = [];
  for (const m of masks) {
    if (m.top !== undefined) {
      queries.push({ row: m.row, rank: m.top, order: 'desc' });
      slots.push({ row: m.row, which: 'top' });
    }
    if (m.lower !== undefined) {
      queries.push({ row: m.row, rank: m.lower, order: 'asc' });
      slots.push({ row: m.row, which: 'lower' });
    }
    if (m.upper !== undefined) {
      queries.push({ row: m.row, rank: m.upper, order: 'asc' });
      slots.push({ row: m.row, which: 'upper' });
    }
  }
  const found = await selectRanks(job.ctx, job.stack!, queries);
  const out = new Map<number, Thresholds>();
  slots.forEach(({ row, which }, s) => {
    const t = out.get(row) ?? { tHi: 0, cHi: 0, tLo: 0, cLo: 0 };
    const { absBits, index } = found[s];
    if (which === 'top') {
      // Keep larger magnitudes and equal ones up to this index; a unique threshold keeps all equal.
      t.tHi = absBits;
      t.cHi = index ?? 0xffffffff;
    } else if (which === 'lower') {
      // Keep (key, index) >= this element; when unique, any index of that key qualifies.
      t.tLo = absBits;
      t.cLo = index ?? 0;
    } else {
      // Keep (key, index) < this element; when unique, no index of that key qualifies.
      t.tHi = absBits;
      t.cHi = index ?? 0;
    }
    out.set(row, t);
  });
  return out;
}

/**
 * DELLA keep probabilities of one tile (one row per DELLA model, in a scratch buffer of `batch`)
 * from per-fiber bitonic sorts of the magnitudes.
 */
function dellaProbabilities(
  batch: CommandBatch,
  tile: StackTile,
  della: readonly MaskPlan[],
  rowOf: ReadonlyMap<number, number>,
  slice: { length: number; inner: number },
  padded: number,
): GPUBuffer {
  const { length, inner } = slice;
  const probabilities = batch.scratch(della.length * tile.stride * 4, 'della.probabilities');
  const span = fround(length - 1);
  const fibers = (tile.count / (length * inner)) * inner;
  const order = batch.scratch(fibers * padded * 4, 'della.order');
  for (const m of della) {
    const params = (k: number, j: number) =>
      table(16, (u, f) => {
        u.set([fibers, length, inner, padded, k, j, m.row, tile.stride]);
        f[8] = m.della!.low;
        f[9] = m.della!.epsilon;
        f[10] = span;
        f[11] = NEG_ZERO;
        u[12] = rowOf.get(m.row)!;
      });
    // Each entry point's layout has only the bindings it uses.
    batch.dispatch({
      kernel: KERNELS.fiberRank,
      entryPoint: 'init',
      overrides: { WORKGROUP_SIZE: WORKGROUP },
      bindings: [params(0, 0), order],
      workgroups: Math.ceil((fibers * padded) / WORKGROUP),
    });
    for (let k = 2; k <= padded; k *= 2) {
      for (let j = k / 2; j >= 1; j /= 2) {
        batch.dispatch({
          kernel: KERNELS.fiberRank,
          entryPoint: 'step',
          overrides: { WORKGROUP_SIZE: WORKGROUP },
          bindings: [params(k, j), order, tile.buffer],
          workgroups: Math.ceil((fibers * padded) / 2 / WORKGROUP),
        });
      }
    }
    batch.dispatch({
      kernel: KERNELS.fiberRank,
      entryPoint: 'probabilities_from_ranks',
      overrides: { WORKGROUP_SIZE: WORKGROUP },
      bindings: [params(0, 0), order, null, probabilities],
      workgroups: Math.ceil((fibers * length) / WORKGROUP),
    });
  }
  return probabilities;
}
