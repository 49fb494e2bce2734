/**
 * Every GPU-wired merge method against its CPU reference (src/methods), on data with the edge cases
 * that break kernels: ties at the TIES threshold, all-zero task vectors, NaN and Inf, odd lengths,
 * and tensors split into tiles by a lowered binding limit.
 */
import { decodeToF32, encodeFromF32, type FloatDType } from '../../../src/formats/dtype';
import { GpuMergeBackend } from '../../../src/gpu/backend';
import type { GpuContext, TilePlan } from '../../../src/gpu/device';
import { getMethod } from '../../../src/methods/index';
import { type MergeInputs, MergeMethodError, type ResolvedParams } from '../../../src/methods/types';
import type { GpuCase } from './gpu-cases';
import { check, checkBits, mulberry32 } from './gpu-check';

interface ModelSpec {
  readonly params?: ResolvedParams;
  /** 'base' copies the base (an all-zero task vector). */
  readonly kind?: 'random' | 'base' | 'scaled-base';
}

interface MethodScenario {
  readonly method: string;
  readonly shape: readonly number[];
  readonly models: readonly ModelSpec[];
  readonly baseIndex: number;
  readonly params?: ResolvedParams;
  readonly seed?: number;
  /** Sprinkle NaN and ±Inf into the inputs. */
  readonly specials?: boolean;
  /** Magnitudes from a few values only, so thresholds fall on long runs of equal |delta|. */
  readonly ties?: boolean;
}

function makeInputs(s: MethodScenario): MergeInputs {
  const n = s.shape.reduce((a, b) => a * b, 1);
  const rnd = mulberry32(n * 31 + s.models.length);
  const base = Float32Array.from({ length: n }, () => (rnd() - 0.5) * 0.2);
  const tensors = s.models.map((spec, m) => {
    let values: Float32Array;
    if (m === s.baseIndex) values = base;
    else if (spec.kind === 'base') values = base.slice();
    else if (spec.kind === 'scaled-base') values = base.map((v) => v * 2);
    else
      values = base.map((b) => {
        const r = rnd();
        if (r < 0.05) return b; // zero delta
        const d = s.ties ? (Math.floor(rnd() * 7) - 3) * 0.015625 : (rnd() - 0.5) * 0.05;
        return b + d;
      });
    if (s.specials && m !== s.baseIndex) {
      values = values.slice();
      for (let i = 0; i < n; i += 97)
        values[i] = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY][(i / 97) % 3];
    }
    return { model: `model-${m}`, values, params: spec.params ?? {} };
  });
  return {
    tensorName: `model.layers.${s.models.length}.mlp.${s.method}.weight`,
    shape: s.shape,
    tensors,
    baseIndex: s.baseIndex,
    params: s.params ?? {},
    seed: s.seed ?? 1234,
  };
}

/** GPU result must equal the CPU result bit for bit (any NaN equals any NaN). */
async function compare(ctx: GpuContext, s: MethodScenario): Promise<void> {
  const method = getMethod(s.method);
  const inputs = makeInputs(s);
  const want = method.merge(inputs);
  const backend = GpuMergeBackend.forContext(ctx);
  const got = await backend.merge(method, inputs);
  checkBits(got, want, `${s.method} [${s.shape.join('x')}]`, undefined, true);
}

/** mergeBytes from `inDtype` to `outDtype` equals decode -> CPU merge -> encode. */
async function compareBytes(ctx: GpuContext, s: MethodScenario, inDtype: FloatDType, outDtype: FloatDType) {
  const method = getMethod(s.method);
  const f32 = makeInputs(s);
  const raw = f32.tensors.map((t) => ({ ...t, bytes: encodeFromF32(t.values, inDtype), dtype: inDtype }));
  const decoded: MergeInputs = {
    ...f32,
    tensors: raw.map((t) => ({ model: t.model, params: t.params, values: decodeToF32(t.bytes, inDtype) })),
  };
  const want = encodeFromF32(method.merge(decoded), outDtype);
  const got = await GpuMergeBackend.forContext(ctx).mergeBytes(method, {
    ...f32,
    tensors: raw.map(({ model, params, bytes, dtype }) => ({ model, params, bytes, dtype })),
    outDtype,
  });
  check(got.length === want.length, `${s.method} bytes: ${got.length} vs ${want.length}`);
  const halves = outDtype !== 'F32';
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      const e = Math.floor(i / (halves ? 2 : 4));
      throw new Error(`${s.method} ${inDtype}->${outDtype}: element ${e} differs`);
    }
  }
}

const w = (weight: number, extra: ResolvedParams = {}): ModelSpec => ({ params: { weight, ...extra } });

const TILED = { maxStorageBufferBindingSize: 16 * 1024 };

/** How the streamed cases' tensors were laid out (GpuContextOptions.onTilePlan). */
const streamPlans: TilePlan[] = [];
/** A 16 MB GPU memory budget and 1 MiB bindings: a few MB tensor streams in 20+ tiles. */
const STREAMED = {
  memoryBudget: 16_000_000,
  maxStorageBufferBindingSize: 1024 * 1024,
  onTilePlan: (plan: TilePlan) => {
    streamPlans.push(plan);
  },
};

/** compareBytes on a tensor that must stream through the budget in at least 20 tiles. */
async function compareStreamed(ctx: GpuContext, s: MethodScenario): Promise<void> {
  streamPlans.length = 0;
  await compareBytes(ctx, s, 'BF16', 'BF16');
  const plan = streamPlans.at(-1);
  check(plan?.streamed === true, `${s.method}: expected the tensor to stream, got ${JSON.stringify(plan)}`);
  check(plan!.tiles >= 20, `${s.method}: expected 20+ tiles, got ${plan!.tiles}`);
  check(
    ctx.pool.peakBytes <= ctx.memoryBudget,
    `${s.method}: GPU memory peaked at ${ctx.pool.peakBytes} bytes, over the budget of ${ctx.memoryBudget}`,
  );
}

export const METHOD_CASES: GpuCase[] = [
  {
    // Not nodeOnly: streaming within a budget must hold in a browser worker too, for TIES and DARE.
    name: 'ties and dare_ties stream through a 16 MB GPU memory budget in 20+ tiles, equal to the CPU',
    options: STREAMED,
    async run(ctx) {
      const models = [{}, w(0.6, { density: 0.3 }), w(0.5, { density: 0.6 })];
      await compareStreamed(ctx, { method: 'ties', shape: [2048, 1024], models, baseIndex: 0, ties: true });
      await compareStreamed(ctx, { method: 'dare_ties', shape: [2048, 1024], models, baseIndex: 0, seed: 3 });
    },
  },
  {
    name: 'linear equals the CPU (normalized, unnormalized, odd length)',
    async run(ctx) {
      await compare(ctx, {
        method: 'linear',
        shape: [1001],
        models: [w(0.5), w(0.3), w(0.2)],
        baseIndex: -1,
      });
      await compare(ctx, {
        method: 'linear',
        shape: [33, 7],
        models: [w(1.5), w(-0.25)],
        baseIndex: 0,
        params: { normalize: false },
        specials: true,
      });
    },
  },
  {
    name: 'task_arithmetic equals the CPU (lambda, normalize, zero deltas, NaN/Inf)',
    async run(ctx) {
      await compare(ctx, {
        method: 'task_arithmetic',
        shape: [17, 61],
        models: [{}, w(0.7), w(0.4), { ...w(0.2), kind: 'base' }],
        baseIndex: 0,
        params: { lambda: 0.8, normalize: true },
        specials: true,
      });
    },
  },
  {
    name: 'ties equals the CPU (ties at the threshold, all-zero task vector, NaN/Inf)',
    async run(ctx) {
      const models = [
        w(0.6, { density: 0.3 }),
        {},
        w(0.5, { density: 0.55 }),
        { ...w(0.3, { density: 0.2 }), kind: 'base' as const },
      ];
      await compare(ctx, { method: 'ties', shape: [29, 31], models, baseIndex: 1, ties: true });
      await compare(ctx, {
        method: 'ties',
        shape: [899],
        models,
        baseIndex: 1,
        specials: true,
        params: { lambda: 1.3 },
      });
    },
  },
  {
    name: 'ties on a tensor larger than the (lowered) binding limit equals the CPU',
    nodeOnly: 'ties equals the CPU',
    options: TILED,
    async run(ctx) {
      const models = [{}, w(1, { density: 0.4 }), w(0.5, { density: 0.7 })];
      await compare(ctx, { method: 'ties', shape: [53, 97], models, baseIndex: 0, ties: true });
    },
  },
  {
    name: 'dare_ties and dare_linear equal the CPU (same random mask, L1 rescale)',
    async run(ctx) {
      const models = [{}, w(0.6, { density: 0.4 }), w(0.4, { density: 0.7 }), w(0.3, { density: 0 })];
      await compare(ctx, { method: 'dare_ties', shape: [41, 43], models, baseIndex: 0, seed: 7 });
      await compare(ctx, { method: 'dare_linear', shape: [1763], models, baseIndex: 0, seed: 99 });
      await compare(ctx, { method: 'dare_linear', shape: [500], models, baseIndex: 0, specials: true });
      await compare(ctx, {
        method: 'dare_ties',
        shape: [300],
        models,
        baseIndex: 0,
        params: { rescale: false, normalize: true },
      });
    },
  },
  {
    name: 'dare_linear on tiles equals the CPU',
    nodeOnly: 'dare_ties and dare_linear equal the CPU',
    options: TILED,
    async run(ctx) {
      const models = [{}, w(0.6, { density: 0.4 }), w(0.4, { density: 0.7 })];
      await compare(ctx, { method: 'dare_linear', shape: [61, 89], models, baseIndex: 0 });
    },
  },
  {
    name: 'breadcrumbs and breadcrumbs_ties equal the CPU (window with ties, gamma 0 drops all)',
    async run(ctx) {
      const models = [{}, w(0.6, { density: 0.6, gamma: 0.05 }), w(0.4, { density: 0.9, gamma: 0.2 })];
      await compare(ctx, { method: 'breadcrumbs', shape: [37, 41], models, baseIndex: 0, ties: true });
      await compare(ctx, { method: 'breadcrumbs_ties', shape: [1517], models, baseIndex: 0, ties: true });
      await compare(ctx, {
        method: 'breadcrumbs',
        shape: [200],
        models: [{}, w(1, { density: 0.5, gamma: 0 }), w(1, { density: 0.99, gamma: 0.5 })],
        baseIndex: 0,
      });
    },
  },
  {
    name: 'della and della_linear equal the CPU (2-D, 1-D and 3-D rank fibers)',
    async run(ctx) {
      const models = [{}, w(0.6, { density: 0.5, epsilon: 0.1 }), w(0.4, { density: 0.3, epsilon: 0.2 })];
      await compare(ctx, { method: 'della', shape: [23, 37], models, baseIndex: 0, ties: true });
      await compare(ctx, { method: 'della_linear', shape: [777], models, baseIndex: 0 });
      await compare(ctx, { method: 'della', shape: [3, 5, 7], models, baseIndex: 0, seed: 5 });
      await compare(ctx, {
        method: 'della_linear',
        shape: [20, 12],
        models: [{}, w(1, { density: 0 }), w(0.5, { density: 0.5 })],
        baseIndex: 0,
      });
    },
  },
  {
    name: 'della on tiles of whole rows equals the CPU',
    nodeOnly: 'della and della_linear equal the CPU',
    options: TILED,
    async run(ctx) {
      const models = [{}, w(0.6, { density: 0.5, epsilon: 0.1 }), w(0.4, { density: 0.4 })];
      await compare(ctx, { method: 'della', shape: [40, 128], models, baseIndex: 0 });
    },
  },
  {
    name: 'slerp equals the CPU (general, colinear, single input)',
    async run(ctx) {
      await compare(ctx, {
        method: 'slerp',
        shape: [37, 23],
        models: [{}, {}],
        baseIndex: 0,
        params: { t: 0.3 },
      });
      await compare(ctx, {
        method: 'slerp',
        shape: [301],
        models: [{ kind: 'scaled-base' }, {}],
        baseIndex: 1,
        params: { t: 0.6 },
      });
      await compare(ctx, { method: 'slerp', shape: [5], models: [{}], baseIndex: 0, params: { t: 0.5 } });
    },
  },
  {
    name: 'model_stock equals the CPU (whole tensor and filter-wise rows, tiled)',
    options: TILED,
    async run(ctx) {
      const models = [{}, {}, {}, {}];
      await compare(ctx, { method: 'model_stock', shape: [71, 67], models, baseIndex: 0 });
      await compare(ctx, {
        method: 'model_stock',
        shape: [30, 201],
        models,
        baseIndex: 2,
        params: { filter_wise: true },
      });
    },
  },
  {
    name: 'mergeBytes decodes, merges and encodes on the GPU like decode + CPU merge + encode',
    async run(ctx) {
      const ties: MethodScenario = {
        method: 'ties',
        shape: [45, 23],
        models: [{}, w(0.6, { density: 0.3 }), w(0.5, { density: 0.5 })],
        baseIndex: 0,
      };
      await compareBytes(ctx, ties, 'BF16', 'BF16');
      await compareBytes(ctx, ties, 'F16', 'F32');
      await compareBytes(
        ctx,
        { method: 'linear', shape: [1001], models: [w(1), w(2)], baseIndex: -1 },
        'F32',
        'F16',
      );
    },
  },
  {
    name: 'a second merge of the same shape creates no buffers and no pipelines',
    nodeOnly: 'pipelines are cached per shader and constants; buffers are reused in steady state',
    options: TILED,
    async run(ctx) {
      const s: MethodScenario = {
        method: 'della',
        shape: [24, 128],
        models: [{}, w(0.6, { density: 0.5 }), w(0.4, { density: 0.4 })],
        baseIndex: 0,
      };
      await compare(ctx, s);
      const buffers = ctx.pool.createdCount;
      const pipelines = ctx.pipelineCount;
      await compare(ctx, s);
      await compare(ctx, { ...s, seed: 77 });
      check(
        ctx.pool.createdCount === buffers,
        `steady state created ${ctx.pool.createdCount - buffers} buffers`,
      );
      check(
        ctx.pipelineCount === pipelines,
        `steady state created ${ctx.pipelineCount - pipelines} pipelines`,
      );
    },
  },
  {
    name: 'invalid parameters fail with the CPU reference error',
    async run(ctx) {
      const s: MethodScenario = {
        method: 'ties',
        shape: [10],
        models: [{}, w(1, { density: 0.01 })],
        baseIndex: 0,
      };
      const method = getMethod(s.method);
      const inputs = makeInputs(s);
      let cpu: unknown;
      try {
        method.merge(inputs);
      } catch (e) {
        cpu = e;
      }
      let gpu: unknown;
      try {
        await GpuMergeBackend.forContext(ctx).merge(method, inputs);
      } catch (e) {
        gpu = e;
      }
      check(
        cpu instanceof MergeMethodError && gpu instanceof MergeMethodError,
        'both must throw MergeMethodError',
      );
      check((cpu as Error).message === (gpu as Error).message, `messages differ: ${(gpu as Error).message}`);
    },
  },
];
