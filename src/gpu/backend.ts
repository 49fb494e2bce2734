/**
 * Merge methods on the GPU. Each method's wiring runs the same f32 operations in the same order as
 * its CPU reference in src/methods (the specification), so results are equal bit for bit (NaN
 * payloads aside). `mergeBytes` decodes raw tensor bytes on the GPU and reads back only the encoded
 * result.
 *
 * Per tensor: the inputs are uploaded into a tiled stack (one row per model, tiles under the
 * storage binding limit), whole-tensor statistics (TIES thresholds, L1 norms, dot products) are
 * computed on the device with only their small results read back, then each tile is combined,
 * encoded and read back; tiles are submitted back to back, so readback overlaps the next tile's work.
 */
import { DTYPE_BYTES, decodeToF32, encodeFromF32, type FloatDType } from '../formats/dtype';
import {
  DIVISOR_EPSILON,
  GeneralizedTaskArithmetic,
  type TaskArithmeticVariant,
} from '../methods/generalized-task-arithmetic';
import { MODEL_STOCK_NORM_FLOOR } from '../methods/model-stock';
import { readBoolean, readNumber } from '../methods/params';
import { SLERP_NORM_EPSILON, slerpCoefficients } from '../methods/slerp';
import { breadcrumbsCuts, RESCALE_EPSILON } from '../methods/sparsify';
import { isLowRankMethod, type LowRankMergeMethod, runAsync } from '../methods/svd/index';
import {
  type MergeInputs,
  type MergeMethod,
  MergeMethodError,
  type ParamSpec,
  type ResolvedParams,
} from '../methods/types';
import { fnv1a32 } from '../random/counter-rng';
import { CommandBatch } from './commands';
import { GpuContext, type GpuContextOptions, GpuError, GpuLimitError } from './device';
import { KERNELS } from './kernels';
import { type RankQuery, selectRanks } from './radix-select';
import { rowSums } from './reduce';
import { gpuLowRankOps } from './rsvd';
import { encodeAndRead, type StackTile, TensorStack, TILE_ALIGN, tileCapacity } from './stack';

/** One input tensor as stored: little-endian bytes of a float dtype. */
export interface RawModelTensor {
  readonly model: string;
  readonly bytes: Uint8Array;
  readonly dtype: FloatDType;
  readonly params: ResolvedParams;
}

export interface MergeBytesInputs extends Omit<MergeInputs, 'tensors'> {
  readonly tensors: readonly RawModelTensor[];
  /** dtype of the result bytes. */
  readonly outDtype: FloatDType;
}

/** The method has no GPU wiring; merge this tensor on the CPU. */
export class GpuUnsupportedMethodError extends GpuError {
  override name = 'GpuUnsupportedMethodError';
}

const fround = Math.fround;
const WORKGROUP = 256;
const NEG_ZERO = -0;

/** Methods with GPU wiring, by mergekit name. */
export const GPU_METHOD_NAMES: readonly string[] = [
  'linear',
  'slerp',
  'model_stock',
  'task_arithmetic',
  'ties',
  'dare_ties',
  'dare_linear',
  'breadcrumbs',
  'breadcrumbs_ties',
  'della',
  'della_linear',
  // The SVD family: randomized SVDs and low-rank products on the GPU, small factorizations in TS.
  'lowrank_task_arithmetic',
  'tsv',
  'lore',
  'twin',
];

/** One tensor being merged: its stack, and the encoded output as tiles come back. */
class MergeJob {
  readonly count: number;
  readonly output: Uint8Array;
  private readonly pending: Promise<void>[] = [];
  stack: TensorStack | undefined;

  constructor(
    readonly ctx: GpuContext,
    readonly inputs: MergeBytesInputs,
  ) {
    for (const t of inputs.tensors) {
      if (!Number.isInteger(this.elementCount(t))) {
        throw new RangeError(
          `${inputs.tensorName}: model "${t.model}" has ${t.bytes.byteLength} bytes, not a whole number of ${t.dtype} elements`,
        );
      }
    }
    const first = inputs.tensors[0];
    this.count = first ? this.elementCount(first) : 0;
    this.output = new Uint8Array(this.count * DTYPE_BYTES[inputs.outDtype]);
  }

  elementCount(t: RawModelTensor): number {
    return t.bytes.byteLength / DTYPE_BYTES[t.dtype];
  }

  /**
   * Uploads every input into a stack whose tiles start at multiples of `align`: TILE_ALIGN for
   * whole-tensor sums, whole rows or slices for per-row work. Raw halves add a factor of 2 (a tile
   * starts on a 32-bit word).
   */
  load(align = TILE_ALIGN): TensorStack {
    const rows = this.inputs.tensors.length;
    const step = this.inputs.tensors.some((t) => t.dtype !== 'F32') ? lcm(align, 2) : align;
    const elements = tileCapacity(this.ctx.limits.maxBindingBytes, rows, 1);
    // A tensor that fits one tile needs no alignment at all.
    const capacity = this.count <= elements ? Math.max(this.count, 1) : Math.floor(elements / step) * step;
    if (capacity === 0) {
      throw new GpuLimitError(
        `${this.inputs.tensorName}: a slice of ${step} elements per model does not fit one GPU storage binding ` +
          `(${this.ctx.limits.maxBindingBytes} bytes for ${rows} models); merge this tensor on the CPU.`,
      );
    }
    this.stack = TensorStack.allocate(this.ctx, rows, this.count, capacity);
    this.stack.load(this.inputs.tensors);
    return this.stack;
  }

  /** Schedules the encode and readback of `count` f32 at `offset` of `src` as the output of `tile`. */
  emit(batch: CommandBatch, tile: StackTile, src: GPUBuffer, offset = 0): void {
    const read = encodeAndRead(batch, src, offset, tile.count, this.inputs.outDtype);
    const at = tile.start * DTYPE_BYTES[this.inputs.outDtype];
    // Runs after the caller's submit (a microtask later); a failed merge never awaits it, so it is
    // marked handled here and rethrown by finish().
    const done = Promise.resolve().then(async () => this.output.set(await read(), at));
    done.catch(() => {});
    this.pending.push(done);
  }

  /** The output of row `row` unchanged (methods that return one input as is). */
  copyRow(row: number): void {
    for (const tile of this.stack!.tiles) {
      const batch = new CommandBatch(this.ctx, `copy.tile${tile.index}`);
      this.emit(batch, tile, tile.buffer, row * tile.stride);
      batch.submit();
    }
  }

  async finish(): Promise<Uint8Array> {
    await Promise.all(this.pending);
    return this.output;
  }

  release(): void {
    this.stack?.release();
  }
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

/** Storage buffer of 32-bit words (u32 and f32 fields) for kernel tables. */
function table(words: number, fill: (u: Uint32Array, f: Float32Array) => void): Uint32Array {
  const u = new Uint32Array(Math.max(words, 4));
  fill(u, new Float32Array(u.buffer));
  return u;
}

export class GpuMergeBackend {
  private constructor(readonly ctx: GpuContext) {}

  static async create(options: GpuContextOptions = {}): Promise<GpuMergeBackend> {
    return new GpuMergeBackend(await GpuContext.create(options));
  }

  /** A backend on an existing context (which `destroy()` then destroys). */
  static forContext(ctx: GpuContext): GpuMergeBackend {
    return new GpuMergeBackend(ctx);
  }

  supports(methodName: string): boolean {
    return GPU_METHOD_NAMES.includes(methodName);
  }

  /** The method's result for f32 inputs, as its CPU `merge` returns it. */
  async merge(method: MergeMethod, inputs: MergeInputs): Promise<Float32Array> {
    if (isLowRankMethod(method)) return this.mergeLowRank(method, inputs);
    const tensors = inputs.tensors.map((t) => ({
      model: t.model,
      params: t.params,
      dtype: 'F32' as const,
      bytes: new Uint8Array(t.values.buffer, t.values.byteOffset, t.values.byteLength),
    }));
    const bytes = await this.mergeBytes(method, { ...inputs, tensors, outDtype: 'F32' });
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }

  /** Decodes, merges and encodes on the GPU; returns the result's little-endian `outDtype` bytes. */
  async mergeBytes(method: MergeMethod, inputs: MergeBytesInputs): Promise<Uint8Array> {
    if (isLowRankMethod(method)) {
      // The SVD family works on whole f32 matrices on the host between its GPU steps.
      const { outDtype, tensors, ...rest } = inputs;
      const values = tensors.map((t) => ({
        model: t.model,
        params: t.params,
        values: decodeToF32(t.bytes, t.dtype),
      }));
      return encodeFromF32(await this.mergeLowRank(method, { ...rest, tensors: values }), outDtype);
    }
    const run = this.wiring(method);
    const job = new MergeJob(this.ctx, inputs);
    try {
      // Recording and submitting run in an error scope; the tile readbacks finish outside it, so
      // the next tensor's work can be recorded while this one's results come back.
      await this.ctx.scoped(`Merging ${inputs.tensorName} with ${method.name} on the GPU`, () => run(job));
      const out = await job.finish();
      this.ctx.throwIfFailed();
      return out;
    } finally {
      job.release();
    }
  }

  /**
   * The SVD family: the method's own steps (src/methods/svd) with the randomized SVDs, low-rank
   * products and polar factors on the GPU (src/gpu/rsvd.ts), so CPU and GPU share the algorithm.
   */
  private mergeLowRank(method: LowRankMergeMethod, inputs: MergeInputs): Promise<Float32Array> {
    return runAsync(method.steps(inputs, gpuLowRankOps(this.ctx)));
  }

  private wiring(method: MergeMethod): (job: MergeJob) => Promise<void> {
    if (method instanceof GeneralizedTaskArithmetic) {
      return (job) => taskArithmetic(job, method.variant, method.globalParams, method.modelParams);
    }
    switch (method.name) {
      case 'linear':
        return (job) => linear(job, method);
      case 'slerp':
        return (job) => slerp(job, method);
      case 'model_stock':
        return (job) => modelStock(job, method);
    }
    throw new GpuUnsupportedMethodError(
      `The merge method "${method.name}" has no GPU implementation; merge on the CPU.`,
    );
  }

  destroy(): void {
    this.ctx.destroy();
  }
}

// ---------------------------------------------------------------- linear

async function linear(job: MergeJob, method: MergeMethod): Promise<void> {
  const { inputs, ctx } = job;
  const { tensors } = inputs;
  const name = method.name;
  if (tensors.length === 0) throw new MergeMethodError('linear needs at least one model');
  const normalize = readBoolean(name, inputs.params, method.globalParams, 'normalize');
  const weights = tensors.map((t) =>
    fround(readNumber(name, t.params, method.modelParams, 'weight', t.model)),
  );
  for (const t of tensors) {
    if (job.elementCount(t) !== job.count) {
      throw new MergeMethodError(
        `linear: model "${t.model}" has ${job.elementCount(t)} elements where "${tensors[0].model}" has ${job.count}`,
      );
    }
  }
  let divisor = weights[0];
  for (let m = 1; m < weights.length; m++) divisor = fround(divisor + weights[m]);
  if (normalize && divisor === 0) {
    throw new MergeMethodError(
      'linear: the model weights sum to 0, so normalizing divides by zero; change the weights or set normalize: false',
    );
  }
  const stack = job.load();
  const terms = table(tensors.length * 2, (u, f) => {
    weights.forEach((w, m) => {
      u[m * 2] = m;
      f[m * 2 + 1] = w;
    });
  });
  for (const tile of stack.tiles) {
    const batch = new CommandBatch(ctx, `linear.tile${tile.index}`);
    const out = batch.scratch(tile.count * 4, 'linear.out');
    batch.dispatch({
      kernel: KERNELS.weightedSum,
      overrides: { WORKGROUP_SIZE: WORKGROUP },
      bindings: [
        table(8, (u, f) => {
          u.set([tile.count, tile.stride, tensors.length, normalize ? 1 : 0]);
          f[4] = divisor;
          f[5] = NEG_ZERO;
        }),
        batch.upload(terms, 'linear.terms'),
        tile.buffer,
        out,
      ],
      workgroups: Math.ceil(tile.count / WORKGROUP),
    });
    job.emit(batch, tile, out);
    batch.submit();
  }
}

// ---------------------------------------------------------------- slerp

async function slerp(job: MergeJob, method: MergeMethod): Promise<void> {
  const { inputs } = job;
  const { tensors, baseIndex } = inputs;
  if (tensors.length === 1) {
    job.load();
    job.copyRow(0);
    return;
  }
  if (tensors.length !== 2) {
    throw new MergeMethodError(
      `slerp merges exactly two models (the base and one other), got ${tensors.length}`,
    );
  }
  if (baseIndex !== 0 && baseIndex !== 1) {
    throw new MergeMethodError('slerp needs a base_model, which must be one of the two models');
  }
  const t = readNumber(method.name, inputs.params, method.globalParams, 't');
  const other = 1 - baseIndex;
  if (job.elementCount(tensors[other]) !== job.elementCount(tensors[baseIndex])) {
    throw new MergeMethodError(
      `slerp: model "${tensors[other].model}" has ${job.elementCount(tensors[other])} elements where the base has ${job.elementCount(tensors[baseIndex])}`,
    );
  }
  const stack = job.load();
  const squares = await rowSums(job.ctx, stack, [
    { term: 'square', row: baseIndex },
    { term: 'square', row: other },
  ]);
  const na = fround(Math.sqrt(squares[0]));
  const nb = fround(Math.sqrt(squares[1]));
  const [dot] = await rowSums(job.ctx, stack, [
    {
      term: 'dot',
      row: baseIndex,
      rowB: other,
      divA: na > SLERP_NORM_EPSILON ? na : undefined,
      divB: nb > SLERP_NORM_EPSILON ? nb : undefined,
    },
  ]);
  const { s0, s1 } = slerpCoefficients(dot, t);
  blend(job, baseIndex, [other], new Float32Array([s1, s0]), job.count);
}

/** out = round(c_avg * mean(others)) + round(c_base * base), coefficients per segment. */
function blend(
  job: MergeJob,
  baseRow: number,
  others: readonly number[],
  coefficients: Float32Array,
  segment: number,
) {
  const { ctx } = job;
  for (const tile of job.stack!.tiles) {
    const batch = new CommandBatch(ctx, `blend.tile${tile.index}`);
    const out = batch.scratch(tile.count * 4, 'blend.out');
    batch.dispatch({
      kernel: KERNELS.blend,
      overrides: { WORKGROUP_SIZE: WORKGROUP },
      bindings: [
        table(8, (u, f) => {
          u.set([tile.count, tile.stride, baseRow, others.length, tile.start, Math.max(segment, 1)]);
          f[6] = NEG_ZERO;
        }),
        batch.upload(new Uint32Array(others), 'blend.others'),
        batch.upload(coefficients, 'blend.coefficients'),
        tile.buffer,
        out,
      ],
      workgroups: Math.ceil(tile.count / WORKGROUP),
    });
    job.emit(batch, tile, out);
    batch.submit();
  }
}

// ---------------------------------------------------------------- model_stock

async function modelStock(job: MergeJob, method: MergeMethod): Promise<void> {
  const { inputs } = job;
  const { tensors, baseIndex } = inputs;
  if (baseIndex < 0 || baseIndex >= tensors.length)
    throw new MergeMethodError('model_stock needs a base_model');
  if (tensors.length === 1) {
    job.load();
    job.copyRow(baseIndex);
    return;
  }
  if (tensors.length < 3) {
    throw new MergeMethodError('model_stock needs at least 3 models (the base plus two or more others)');
  }
  const filterWise = readBoolean(method.name, inputs.params, method.globalParams, 'filter_wise');
  const n = job.elementCount(tensors[baseIndex]);
  const others: number[] = [];
  tensors.forEach((t, i) => {
    if (i === baseIndex) return;
    if (job.elementCount(t) !== n) {
      throw new MergeMethodError(
        `model_stock: model "${t.model}" has ${job.elementCount(t)} elements where the base has ${n}`,
      );
    }
    others.push(i);
  });
  if (n === 0) return;
  const { shape } = inputs;
  const rowLength = filterWise && shape.length >= 1 ? shape[shape.length - 1] : n;
  const stack = job.load(rowLength < n ? rowLength : TILE_ALIGN);
  // Sums of squares of every offset, then dot products of every pair j < k, per segment.
  const count = others.length;
  const pairs: Array<[number, number]> = [];
  for (let j = 0; j < count; j++) for (let k = j + 1; k < count; k++) pairs.push([j, k]);
  const sums = await rowSums(
    job.ctx,
    stack,
    [
      ...others.map((row) => ({ term: 'square' as const, row, baseRow: baseIndex })),
      ...pairs.map(([j, k]) => ({
        term: 'dot' as const,
        row: others[j],
        rowB: others[k],
        baseRow: baseIndex,
      })),
    ],
    rowLength,
  );
  const segments = Math.ceil(n / rowLength);
  const coefficients = new Float32Array(segments * 2);
  for (let s = 0; s < segments; s++) {
    const norms = others.map((_, k) => fround(Math.sqrt(sums[k * segments + s])));
    const dots = pairs.map((_, p) => sums[(count + p) * segments + s]);
    const t = modelStockRatioFromSums(count, norms, pairs, dots);
    coefficients[s * 2] = t;
    coefficients[s * 2 + 1] = fround(1 - t);
  }
  blend(job, baseIndex, others, coefficients, rowLength);
}

/**
 * model-stock.ts's `modelStockRatio` from the reduced norms and dot products of one vector: the same
 * f32 steps in the same order.
 */
export function modelStockRatioFromSums(
  count: number,
  norms: readonly number[],
  pairs: ReadonlyArray<readonly [number, number]>,
  dots: readonly number[],
): number {
  let cosSum = 0;
  pairs.forEach(([j, k], p) => {
    const normProduct = fround(norms[j] * norms[k]);
    const floored = Math.max(normProduct, MODEL_STOCK_NORM_FLOOR);
    let cos = fround(dots[p] / floored);
    if (cos < -1) cos = -1;
    else if (cos > 1) cos = 1;
    cosSum = p === 0 ? cos : fround(cosSum + cos);
  });
  const cos = fround(cosSum / pairs.length);
  return fround(fround(count * cos) / fround(1 + fround((count - 1) * cos)));
}

// ---------------------------------------------------------------- generalized task arithmetic

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

async function taskArithmetic(
  job: MergeJob,
  variant: TaskArithmeticVariant,
  globalParams: readonly ParamSpec[],
  modelParams: readonly ParamSpec[],
): Promise<void> {
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
  const n = job.elementCount(tensors[baseIndex]);
  const rows: number[] = [];
  const weights: number[] = [];
  const masks: MaskPlan[] = [];
  tensors.forEach((tensor, row) => {
    if (row === baseIndex) return;
    if (job.elementCount(tensor) !== n) {
      throw new MergeMethodError(
        `${name}: model "${tensor.model}" has ${job.elementCount(tensor)} elements where the base has ${n}`,
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
  const della = masks.some((m) => m.mode === MODE.della);
  const slice = della ? dellaFibers(inputs.shape, n) : undefined;
  const stack = job.load(slice ? lcm(TILE_ALIGN, Math.max(1, slice.length * slice.inner)) : TILE_ALIGN);
  if (rows.length === 0) {
    job.copyRow(baseIndex);
    return;
  }
  // Task vectors in place.
  {
    const batch = new CommandBatch(ctx, 'task-vectors');
    for (const tile of stack.tiles) {
      batch.dispatch({
        kernel: KERNELS.taskVectors,
        overrides: { WORKGROUP_SIZE: WORKGROUP },
        bindings: [new Uint32Array([tile.count, tile.stride, baseIndex, 0]), tile.buffer],
        workgroups: Math.ceil(tile.count / WORKGROUP),
        z: tensors.length,
      });
    }
    batch.submit();
  }
  const scales = new Map<number, number>();
  if (masks.length > 0) {
    const thresholds = await maskThresholds(job, masks);
    const rescaled = masks.filter((m) => m.rescale);
    const before = await rowSums(
      ctx,
      stack,
      rescaled.map((m) => ({ term: 'abs' as const, row: m.row })),
    );
    const probabilities = await dellaProbabilities(job, masks, inputs.shape, n);
    const nameHash = fnv1a32(inputs.tensorName);
    const dummy = ctx.pool.acquire(16, 0x0080 | 0x0008, 'sparsify.no-probabilities');
    try {
      const batch = new CommandBatch(ctx, 'sparsify');
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
          u[o + 8] = probabilities?.rowOf.get(m.row) ?? 0;
        });
      });
      const models = batch.upload(modelTable, 'sparsify.models');
      for (const tile of stack.tiles) {
        if (tile.count === 0) continue;
        batch.dispatch({
          kernel: KERNELS.sparsify,
          overrides: { WORKGROUP_SIZE: WORKGROUP },
          bindings: [
            new Uint32Array([tile.count, tile.stride, tile.start, inputs.seed >>> 0, nameHash, 0, 0, 0]),
            models,
            tile.buffer,
            probabilities?.buffers[tile.index] ?? dummy,
          ],
          workgroups: Math.ceil(tile.count / WORKGROUP),
          z: masks.length,
        });
      }
      batch.submit();
    } finally {
      ctx.pool.release(dummy);
      if (probabilities) ctx.pool.release(...probabilities.buffers);
    }
    const after = await rowSums(
      ctx,
      stack,
      rescaled.map((m) => ({ term: 'abs' as const, row: m.row })),
    );
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
  for (const tile of stack.tiles) {
    const batch = new CommandBatch(ctx, `mix.tile${tile.index}`);
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
    job.emit(batch, tile, out);
    batch.submit();
  }
}

interface Thresholds {
  tHi: number;
  cHi: number;
  tLo: number;
  cLo: number;
}

/** Radix-select the rank thresholds of every TIES and breadcrumbs mask, all in one set of passes. */
async function maskThresholds(job: MergeJob, masks: readonly MaskPlan[]): Promise<Map<number, Thresholds>> {
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
 * DELLA keep probabilities per tile (one row per DELLA model) from per-fiber bitonic sorts of the
 * magnitudes; undefined when no mask is DELLA.
 */
async function dellaProbabilities(
  job: MergeJob,
  masks: readonly MaskPlan[],
  shape: readonly number[],
  n: number,
): Promise<{ buffers: GPUBuffer[]; rowOf: Map<number, number> } | undefined> {
  const della = masks.filter((m) => m.mode === MODE.della);
  if (della.length === 0) return undefined;
  const { ctx } = job;
  const stack = job.stack!;
  const { length, inner } = dellaFibers(shape, n);
  const padded = 2 ** Math.ceil(Math.log2(length));
  const rowOf = new Map(della.map((m, k) => [m.row, k]));
  const buffers = stack.tiles.map((tile) =>
    ctx.pool.acquire(
      della.length * tile.stride * 4,
      0x0080 | 0x0008 | 0x0004,
      `della.probabilities${tile.index}`,
    ),
  );
  const span = fround(length - 1);
  for (const tile of stack.tiles) {
    if (tile.count === 0) continue;
    const fibers = (tile.count / (length * inner)) * inner;
    const batch = new CommandBatch(ctx, `della.tile${tile.index}`);
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
        bindings: [params(0, 0), order, null, buffers[tile.index]],
        workgroups: Math.ceil((fibers * length) / WORKGROUP),
      });
    }
    batch.submit();
  }
  return { buffers, rowOf };
}
