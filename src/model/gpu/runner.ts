/**
 * The GPU model runner (backend 'gpu'): the forward pass of src/model/reference.ts in the WGSL
 * kernels of shaders/model/, weights in their stored dtype on the device, the KV cache on the
 * device, and the next token chosen on the device, so a step reads back only the token (and the top
 * log-probabilities when asked for).
 *
 * Every buffer and bind group is made once, at load: what changes per step (token count, start
 * position, sampling options) lives in one Step uniform written before each submit. A step is one
 * command encoder and one compute pass; prompts are run in chunks of `prefillChunk` tokens (the
 * activation buffers hold one chunk), decode uses the matrix-vector kernel, prefill the tiled matmul.
 *
 * Prefill hooks, called with the input of every module that has a weight, in the order of the CPU
 * reference's observer (src/model/runner.ts ModuleInputObserver: norms, projections, model.norm, lm_head):
 * - `onGpuModuleInput` is called while the step is being recorded, with no compute pass open: it may
 *   record its own passes on `encoder` (e.g. a reduction of the input); the buffer holds the input
 *   [tokens, channels] f32 row-major from `offset` and is overwritten by later commands of the same
 *   encoder, so it is only valid for commands recorded during the call. A prompt longer than
 *   `prefillChunk` calls it once per chunk.
 * - `onModuleInput` (the CPU runner's observer) gets a Float32Array copy: the step is submitted and
 *   read back at every module input, so it is slow and meant for calibration only.
 */
import { foldWorkgroups, GpuContext, GpuDeviceLostError, GpuError, GpuLimitError } from '../../gpu/device';
import { checkContextLength, type ModelConfig } from '../config';
import { DEFAULT_MAX_CONTEXT } from '../reference';
import {
  checkTokens,
  type ModelRunner,
  type ModuleInputObserver,
  type PrefillHooks,
  type SamplingOptions,
  type StepResult,
} from '../runner';
import { SamplingOptionsError, validateSampling } from '../sampling';
import { EMBED_TOKENS, FINAL_NORM, LM_HEAD, layerWeightNames, type ModelWeights } from '../weights';
import { destroyWeight, type GpuWeight, gpuWeightBytes, uploadWeight } from './gpu-weights';
import {
  ATTENTION_WORKGROUP,
  DTYPE_CODE,
  ELEMENTWISE_WORKGROUP,
  MATMUL_TILE,
  MATVEC_WORKGROUP,
  MAX_HEAD_DIM,
  MAX_TOP_LOGPROBS,
  MODEL_KERNELS,
  padded16,
  RESULT_WORDS,
  STEP_BYTES,
  stepBytes,
} from './kernels';
import { ropeTable } from './rope-table';

/** Tokens per prefill chunk when none is asked for. */
export const DEFAULT_PREFILL_CHUNK = 128;

/** The model (weights + KV cache + activations) does not fit the GPU; says what it needs and what the adapter allows. */
export class GpuModelMemoryError extends GpuLimitError {
  override name = 'GpuModelMemoryError';
}

/** The input of one linear module during prefill, on the GPU (see the module comment). */
export interface GpuModuleInput {
  /** Weight name without ".weight", e.g. model.layers.0.self_attn.q_proj, lm_head. */
  readonly module: string;
  readonly buffer: GPUBuffer;
  /** Byte offset of row 0. */
  readonly offset: number;
  readonly tokens: number;
  /** Rows of `channels` values: tokens, or tokens x heads for Qwen3's q_norm / k_norm. */
  readonly rows: number;
  readonly channels: number;
  /** The step's encoder; no pass is open during the call. */
  readonly encoder: GPUCommandEncoder;
}

export interface GpuPrefillHooks extends PrefillHooks {
  onGpuModuleInput?: (input: GpuModuleInput) => void;
}

export interface GpuRunnerOptions {
  /** A context to share (e.g. with merges); the runner then leaves it alive on dispose. */
  context?: GpuContext;
  /** Where to get an adapter when no context is given (Node passes Dawn's); default navigator.gpu. */
  gpu?: GPU;
  /** KV cache positions; default min(max_position_embeddings, DEFAULT_MAX_CONTEXT). */
  maxContext?: number;
  /** Tokens per prefill chunk (activation buffers hold one chunk); default DEFAULT_PREFILL_CHUNK. */
  prefillChunk?: number;
  /**
   * Invocations sharing one weight row in matvec.wgsl; default `matvecLanes(adapter)`: 32 on a GPU
   * (coalesced loads, a workgroup reduction), 1 on a CPU adapter such as SwiftShader, where a
   * workgroup barrier costs milliseconds.
   */
  matvecLanes?: number;
}

/** The matvec.wgsl row split for this device (see GpuRunnerOptions.matvecLanes). */
export function defaultMatvecLanes(ctx: GpuContext): number {
  const info = ctx.adapterInfo as (GPUAdapterInfo & { isFallbackAdapter?: boolean }) | undefined;
  const cpu =
    info?.isFallbackAdapter === true ||
    /swiftshader|llvmpipe|lavapipe/i.test(`${info?.architecture} ${info?.description} ${info?.device}`);
  return cpu ? 1 : 32;
}

/** What the runner will allocate on the device, in bytes. */
export interface GpuMemoryPlan {
  weights: number;
  kvCache: number;
  activations: number;
  total: number;
  /** The KV cache of one layer (one binding), K or V. */
  kvLayerBytes: number;
  /** The largest activation buffer (one binding). */
  largestActivation: number;
}

export function gpuMemoryPlan(
  config: ModelConfig,
  tensorBytes: number,
  maxContext: number,
  prefillChunk: number,
): GpuMemoryPlan {
  const { hiddenSize: h, numHeads, numKvHeads, headDim, intermediateSize: m, vocabSize, numLayers } = config;
  const kvLayerBytes = padded16(maxContext * numKvHeads * headDim * 4);
  const kvCache = 2 * numLayers * kvLayerBytes;
  const c = prefillChunk;
  // x, normed, tmp; q, q2, q-rope, attn; k, k2; gate, up; last; logits, sampling scratch.
  const qd = numHeads * headDim;
  const kvd = numKvHeads * headDim;
  const buffers = [
    c * h,
    c * h,
    c * h,
    c * qd,
    c * qd,
    c * qd,
    c * qd,
    c * kvd,
    c * kvd,
    c * m,
    c * m,
    h,
    vocabSize,
    vocabSize,
  ];
  const activations =
    buffers.reduce((a, n) => a + padded16(n * 4), 0) + padded16(maxContext * headDim * 4) + 4 * RESULT_WORDS;
  const largestActivation = Math.max(...buffers) * 4;
  return {
    weights: tensorBytes,
    kvCache,
    activations,
    total: tensorBytes + kvCache + activations,
    kvLayerBytes,
    largestActivation,
  };
}

function gib(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
}

interface Op {
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly workgroups: (tokens: number) => number;
}

/** A module-input hook point; `lm_head` also carries the op that norms every row for it. */
interface HookPoint {
  readonly hook: string;
  readonly buffer: GPUBuffer;
  readonly channels: number;
  /** Rows per token: heads for Qwen3's per-head q/k norms, else 1. */
  readonly rowsPerToken: number;
  readonly before?: Op;
}

type Item = Op | HookPoint;

interface LayerBuffers {
  k: GPUBuffer;
  v: GPUBuffer;
}

type Resource = GPUBuffer | { buffer: GPUBuffer; size: number };

const STORAGE = 0x0080 | 0x0008 | 0x0004; // STORAGE | COPY_DST | COPY_SRC

export class GpuModelRunner implements ModelRunner {
  readonly backend = 'gpu' as const;
  private cacheLength = 0;
  private disposed = false;
  private programs: { prefill?: Item[]; decode?: Item[] } = {};
  private readonly buffers: GPUBuffer[] = [];
  private readonly uniforms: GPUBuffer[] = [];
  private readonly stepBuffer: GPUBuffer;
  private readonly tokenBuffer: GPUBuffer;
  private readonly act: Record<
    | 'x'
    | 'normed'
    | 'tmp'
    | 'q'
    | 'q2'
    | 'qRot'
    | 'k'
    | 'k2'
    | 'attn'
    | 'gate'
    | 'up'
    | 'last'
    | 'logits'
    | 'scratch',
    GPUBuffer
  >;
  private readonly resultBuffer: GPUBuffer;
  private readonly staging: GPUBuffer;
  private readonly rope: GPUBuffer;
  private readonly kv: LayerBuffers[];
  private hasLogits = false;

  private constructor(
    readonly ctx: GpuContext,
    private readonly ownsContext: boolean,
    readonly config: ModelConfig,
    readonly maxContext: number,
    readonly prefillChunk: number,
    private readonly weights: Map<string, GpuWeight>,
    readonly memory: GpuMemoryPlan,
    private readonly matvecLanes: number,
  ) {
    const cfg = config;
    const c = prefillChunk;
    const qd = cfg.numHeads * cfg.headDim;
    const kvd = cfg.numKvHeads * cfg.headDim;
    const buf = (label: string, bytes: number, usage = STORAGE) => {
      const b = ctx.device.createBuffer({
        label: `${ctx.label}.model.${label}`,
        size: padded16(bytes),
        usage,
      });
      this.buffers.push(b);
      return b;
    };
    this.stepBuffer = buf('step', STEP_BYTES, 0x0040 | 0x0008);
    this.tokenBuffer = buf('tokens', c * 4);
    this.act = {
      x: buf('x', c * cfg.hiddenSize * 4),
      normed: buf('normed', c * cfg.hiddenSize * 4),
      tmp: buf('tmp', c * cfg.hiddenSize * 4),
      q: buf('q', c * qd * 4),
      q2: buf('q2', c * qd * 4),
      qRot: buf('q-rope', c * qd * 4),
      k: buf('k', c * kvd * 4),
      k2: buf('k2', c * kvd * 4),
      attn: buf('attn', c * qd * 4),
      gate: buf('gate', c * cfg.intermediateSize * 4),
      up: buf('up', c * cfg.intermediateSize * 4),
      last: buf('last', cfg.hiddenSize * 4),
      logits: buf('logits', cfg.vocabSize * 4),
      scratch: buf('sample-scratch', cfg.vocabSize * 4),
    };
    this.resultBuffer = buf('result', RESULT_WORDS * 4);
    this.staging = buf('readback', Math.max(RESULT_WORDS, cfg.vocabSize) * 4, 0x0001 | 0x0008);
    const table = ropeTable(cfg, maxContext);
    this.rope = buf('rope-table', table.byteLength);
    ctx.device.queue.writeBuffer(this.rope, 0, table.buffer as ArrayBuffer);
    this.kv = [];
    for (let l = 0; l < cfg.numLayers; l++) {
      this.kv.push({
        k: buf(`layer${l}.k-cache`, maxContext * kvd * 4),
        v: buf(`layer${l}.v-cache`, maxContext * kvd * 4),
      });
    }
  }

  static async create(weights: ModelWeights, options: GpuRunnerOptions = {}): Promise<GpuModelRunner> {
    const config = weights.config;
    const maxContext = options.maxContext ?? Math.min(config.maxPositionEmbeddings, DEFAULT_MAX_CONTEXT);
    if (!Number.isInteger(maxContext) || maxContext <= 0) {
      throw new RangeError(`the context must be a positive number of tokens, got ${maxContext}`);
    }
    checkContextLength(config, maxContext);
    if (config.headDim % 2 !== 0 || config.headDim > MAX_HEAD_DIM) {
      throw new GpuLimitError(
        `${config.configFile}: head_dim ${config.headDim} is not supported by the GPU attention kernel (an even number up to ${MAX_HEAD_DIM}); run on the CPU`,
      );
    }
    const ownsContext = !options.context;
    const ctx = options.context ?? (await GpuContext.create({ gpu: options.gpu, label: 'model' }));
    try {
      const limit = ctx.limits.maxBindingBytes;
      let chunk = Math.min(options.prefillChunk ?? DEFAULT_PREFILL_CHUNK, maxContext);
      // Activation buffers are single bindings: fewer tokens per chunk when a row set is too large.
      const widest =
        Math.max(config.intermediateSize, config.numHeads * config.headDim, config.hiddenSize) * 4;
      chunk = Math.max(1, Math.min(chunk, Math.floor(limit / widest)));
      const names = weightNames(config);
      let tensorBytes = 0;
      for (const n of names) {
        const info = weights.info(n);
        tensorBytes += gpuWeightBytes(info.shape, info.dtype, limit);
      }
      const plan = gpuMemoryPlan(config, tensorBytes, maxContext, chunk);
      const adapterLimits =
        `the adapter allows buffers of ${gib(ctx.device.limits.maxBufferSize)} and storage bindings of ${gib(limit)}` +
        (limit < ctx.limits.deviceBindingBytes
          ? ` (lowered from ${gib(ctx.limits.deviceBindingBytes)})`
          : '');
      const needs = `${weights.files.name} needs ${gib(plan.total)} of GPU memory (weights ${gib(plan.weights)}, KV cache for ${maxContext} tokens ${gib(plan.kvCache)}, activations ${gib(plan.activations)})`;
      if (plan.kvLayerBytes > limit) {
        const perToken = config.numKvHeads * config.headDim * 4;
        throw new GpuModelMemoryError(
          `${needs}; one layer's KV cache (${gib(plan.kvLayerBytes)}) is over the binding limit: ${adapterLimits}. ` +
            `Use a context of at most ${Math.floor(limit / perToken)} tokens.`,
        );
      }
      if (plan.largestActivation > limit || config.vocabSize * 4 > limit) {
        throw new GpuModelMemoryError(
          `${needs}; the logits or activations are over the binding limit: ${adapterLimits}.`,
        );
      }
      const uploaded = new Map<string, GpuWeight>();
      try {
        ctx.device.pushErrorScope('out-of-memory');
        let runner: GpuModelRunner | undefined;
        let failure: unknown;
        try {
          for (const n of names) uploaded.set(n, await uploadWeight(ctx, weights, n, limit));
          runner = new GpuModelRunner(
            ctx,
            ownsContext,
            config,
            maxContext,
            chunk,
            uploaded,
            plan,
            options.matvecLanes ?? defaultMatvecLanes(ctx),
          );
        } catch (e) {
          failure = e;
        }
        const oom = await ctx.device.popErrorScope();
        if (oom || (failure instanceof RangeError && /alloc|memory|mapp/i.test(failure.message))) {
          runner?.dispose();
          throw new GpuModelMemoryError(
            `${needs}; the GPU refused it (${oom?.message ?? (failure as Error).message}); ${adapterLimits}. ` +
              'Close other GPU work, use a shorter context or a smaller model, or run on the CPU.',
          );
        }
        if (failure !== undefined) throw failure;
        ctx.throwIfFailed();
        return runner!;
      } catch (e) {
        for (const w of uploaded.values()) destroyWeight(w);
        throw e;
      }
    } catch (e) {
      if (ownsContext) ctx.destroy();
      throw e;
    }
  }

  get length(): number {
    return this.cacheLength;
  }

  decode(token: number, sampling: SamplingOptions): Promise<StepResult> {
    return this.prefill([token], sampling);
  }

  async prefill(
    tokens: readonly number[],
    sampling: SamplingOptions,
    hooks?: GpuPrefillHooks,
  ): Promise<StepResult> {
    this.checkUsable();
    validateSampling(sampling);
    checkTokens(this.config, tokens, this.cacheLength, this.maxContext);
    const k = sampling.topLogprobs ?? 0;
    if (k > MAX_TOP_LOGPROBS) {
      throw new SamplingOptionsError(
        `the GPU runner reports at most ${MAX_TOP_LOGPROBS} log-probabilities, ${k} were asked for`,
      );
    }
    this.ctx.throwIfFailed();
    const { device } = this.ctx;
    let start = this.cacheLength;
    const end = start + tokens.length;
    let readResult: Promise<Uint32Array> | undefined;
    for (let from = 0; from < tokens.length; from += this.prefillChunk) {
      const chunk = tokens.slice(from, from + this.prefillChunk);
      const last = from + chunk.length === tokens.length;
      const n = chunk.length;
      device.queue.writeBuffer(this.tokenBuffer, 0, new Uint32Array(chunk));
      device.queue.writeBuffer(
        this.stepBuffer,
        0,
        stepBytes({
          tokens: n,
          start,
          seed: sampling.seed,
          samplePosition: end,
          temperature: sampling.temperature,
          topP: sampling.topP,
          topLogprobs: k,
        }),
      );
      const program = this.program(n === 1 ? 'decode' : 'prefill');
      let encoder = device.createCommandEncoder({ label: `${this.ctx.label}.model.step` });
      let pass: GPUComputePassEncoder | undefined = encoder.beginComputePass({
        label: `${this.ctx.label}.model.forward`,
      });
      const observe = hooks?.onModuleInput;
      const gpuHook = hooks?.onGpuModuleInput;
      for (const item of program) {
        if ('hook' in item) {
          if (!observe && !gpuHook) continue;
          if (item.before) this.dispatch(pass!, item.before, n);
          pass!.end();
          pass = undefined;
          gpuHook?.({
            module: item.hook,
            buffer: item.buffer,
            offset: 0,
            tokens: n,
            rows: n * item.rowsPerToken,
            channels: item.channels,
            encoder,
          });
          if (observe) encoder = await this.observeInput(encoder, item, n, observe);
          pass = encoder.beginComputePass({ label: `${this.ctx.label}.model.forward` });
          continue;
        }
        this.dispatch(pass!, item, n);
      }
      if (last) {
        for (const op of this.selection(sampling)) this.dispatch(pass!, op, n);
      }
      pass!.end();
      if (last) encoder.copyBufferToBuffer(this.resultBuffer, 0, this.staging, 0, RESULT_WORDS * 4);
      device.queue.submit([encoder.finish()]);
      start += n;
      if (last) readResult = this.read(RESULT_WORDS);
    }
    const words = await readResult!;
    this.cacheLength = end;
    this.hasLogits = true;
    const result: StepResult = { token: words[0] };
    if (k > 0) {
      const f = new Float32Array(words.buffer, words.byteOffset, words.length);
      result.topLogprobs = [];
      for (let i = 0; i < k && words[1 + 2 * i] !== 0xffffffff; i++)
        result.topLogprobs.push([words[1 + 2 * i], f[2 + 2 * i]]);
    }
    return result;
  }

  async lastLogits(): Promise<Float32Array> {
    this.checkUsable();
    if (!this.hasLogits) throw new Error('no logits yet: run prefill first');
    const encoder = this.ctx.device.createCommandEncoder({ label: `${this.ctx.label}.model.logits` });
    encoder.copyBufferToBuffer(this.act.logits, 0, this.staging, 0, this.config.vocabSize * 4);
    this.ctx.device.queue.submit([encoder.finish()]);
    const words = await this.read(this.config.vocabSize);
    return new Float32Array(words.buffer, words.byteOffset, words.length).slice();
  }

  reset(): void {
    this.cacheLength = 0;
    this.hasLogits = false;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const w of new Set(this.weights.values())) destroyWeight(w);
    for (const b of this.buffers) b.destroy();
    for (const b of this.uniforms) b.destroy();
    if (this.ownsContext) this.ctx.destroy();
  }

  private checkUsable(): void {
    if (this.disposed) throw new Error('the GPU runner was disposed');
  }

  private dispatch(pass: GPUComputePassEncoder, op: Op, tokens: number): void {
    const groups = op.workgroups(tokens);
    if (groups <= 0) return;
    const [x, y] = foldWorkgroups(groups, this.ctx.limits.maxWorkgroupsPerDimension);
    pass.setPipeline(op.pipeline);
    pass.setBindGroup(0, op.bindGroup);
    pass.dispatchWorkgroups(x, y);
  }

  /** Maps the staging buffer and copies `words` u32 out; a lost device rejects with its named error. */
  private async read(words: number): Promise<Uint32Array> {
    const bytes = words * 4;
    const lost = this.ctx.lost.then((e) => Promise.reject(e));
    try {
      await Promise.race([this.staging.mapAsync(0x0001, 0, bytes), lost]);
      const out = new Uint32Array(this.staging.getMappedRange(0, bytes).slice(0));
      this.staging.unmap();
      this.ctx.throwIfFailed();
      return out;
    } catch (e) {
      this.ctx.throwIfFailed();
      if (e instanceof GpuError) throw e;
      throw new GpuDeviceLostError(
        `reading the GPU runner's result failed: ${(e as Error).message}`,
        'unknown',
      );
    } finally {
      lost.catch(() => undefined);
    }
  }

  /** Submits what is recorded, reads the module input back for the CPU observer, returns a new encoder. */
  private async observeInput(
    encoder: GPUCommandEncoder,
    item: HookPoint,
    tokens: number,
    observe: ModuleInputObserver,
  ): Promise<GPUCommandEncoder> {
    const bytes = tokens * item.rowsPerToken * item.channels * 4;
    const staging = this.ctx.device.createBuffer({
      label: `${this.ctx.label}.model.observe`,
      size: padded16(bytes),
      usage: 0x0001 | 0x0008,
    });
    try {
      encoder.copyBufferToBuffer(item.buffer, 0, staging, 0, padded16(bytes));
      this.ctx.device.queue.submit([encoder.finish()]);
      await Promise.race([staging.mapAsync(0x0001), this.ctx.lost.then((e) => Promise.reject(e))]);
      const x = new Float32Array(staging.getMappedRange().slice(0, bytes));
      observe(item.hook, x, item.channels);
    } finally {
      staging.destroy();
    }
    return this.ctx.device.createCommandEncoder({ label: `${this.ctx.label}.model.step` });
  }

  // ---- program building (once per runner and mode) ----

  private uniform(words: ArrayBuffer): GPUBuffer {
    const b = this.ctx.device.createBuffer({
      label: `${this.ctx.label}.model.params`,
      size: padded16(words.byteLength),
      usage: 0x0040 | 0x0008,
    });
    this.ctx.device.queue.writeBuffer(b, 0, words);
    this.uniforms.push(b);
    return b;
  }

  private op(
    kernel: keyof typeof MODEL_KERNELS,
    params: ArrayBuffer,
    resources: Resource[],
    workgroups: (tokens: number) => number,
    overrides?: Record<string, number>,
    entryPoint = 'main',
  ): Op {
    const pipeline = this.ctx.pipeline(MODEL_KERNELS[kernel], overrides, entryPoint);
    const entries: GPUBindGroupEntry[] = [this.uniform(params), ...resources].map((r, binding) => ({
      binding,
      resource: 'usage' in r ? { buffer: r } : { buffer: r.buffer, size: r.size },
    }));
    const bindGroup = this.ctx.device.createBindGroup({
      label: `${this.ctx.label}.model.${kernel}.bind`,
      layout: pipeline.getBindGroupLayout(0),
      entries,
    });
    return { pipeline, bindGroup, workgroups };
  }

  private program(mode: 'prefill' | 'decode'): Item[] {
    const cached = this.programs[mode];
    if (cached) return cached;
    const built = this.build(mode);
    this.programs[mode] = built;
    return built;
  }

  private build(mode: 'prefill' | 'decode'): Item[] {
    const cfg = this.config;
    const { hiddenSize: h, numHeads, numKvHeads, headDim, intermediateSize: m } = cfg;
    const qd = numHeads * headDim;
    const kvd = numKvHeads * headDim;
    const step = this.stepBuffer;
    const a = this.act;
    const items: Item[] = [];
    const ew = (count: (t: number) => number) => (t: number) => Math.ceil(count(t) / ELEMENTWISE_WORKGROUP);
    const u32 = (...v: number[]) => new Uint32Array(v).buffer;
    const w = (name: string) => this.weights.get(name)!;
    const weightBinding = (wt: GpuWeight, chunk = 0): Resource => ({
      buffer: wt.chunks[chunk].buffer,
      size: wt.chunks[chunk].bindBytes,
    });

    const embed = w(EMBED_TOKENS);
    for (const [i, c] of embed.chunks.entries()) {
      items.push(
        this.op(
          'embedding',
          u32(h, DTYPE_CODE[embed.dtype], c.rowStart, c.rows),
          [step, weightBinding(embed, i), this.tokenBuffer, a.x],
          ew((t) => t * h),
        ),
      );
    }
    const norm = (
      weight: GpuWeight,
      src: GPUBuffer,
      dst: GPUBuffer,
      n: number,
      rowsPerToken: number,
      lastRow = false,
    ) => {
      const p = new ArrayBuffer(32);
      const pu = new Uint32Array(p);
      pu[0] = n;
      pu[1] = DTYPE_CODE[weight.dtype];
      new Float32Array(p)[2] = cfg.rmsNormEps;
      pu[3] = rowsPerToken;
      pu[6] = lastRow ? 1 : 0;
      return this.op('rmsnorm', p, [step, weightBinding(weight), src, dst], (t) =>
        lastRow ? 1 : t * rowsPerToken,
      );
    };
    /** dst[(start if stepRows) * ldc + t * ldc + n] = x[t] . W[n] over the weight's chunks. */
    const project = (weight: GpuWeight, x: GPUBuffer, dst: GPUBuffer, ldc: number, stepRows = false) => {
      for (const [i, c] of weight.chunks.entries()) {
        if (mode === 'decode') {
          items.push(
            this.op(
              'matvec',
              u32(
                c.rows,
                weight.cols,
                DTYPE_CODE[weight.dtype],
                0,
                0,
                c.rowStart,
                stepRows ? 1 : 0,
                ldc,
                0,
                0,
                0,
                0,
              ),
              [step, weightBinding(weight, i), x, dst],
              () => Math.ceil(c.rows / this.matvecRows()),
              this.matvecOverrides(),
            ),
          );
        } else {
          const colBlocks = Math.ceil(c.rows / MATMUL_TILE);
          items.push(
            this.op(
              'matmul',
              u32(
                c.rows,
                weight.cols,
                DTYPE_CODE[weight.dtype],
                0,
                0,
                c.rowStart,
                stepRows ? 1 : 0,
                ldc,
                colBlocks,
                0,
                0,
                0,
              ),
              [step, weightBinding(weight, i), x, dst],
              this.cpuAdapter
                ? (t) => Math.ceil((t * c.rows) / 64)
                : (t) => Math.ceil(t / MATMUL_TILE) * colBlocks,
              undefined,
              this.cpuAdapter ? 'direct' : 'main',
            ),
          );
        }
      }
    };
    const bias = (name: string | undefined, dst: GPUBuffer, n: number, stepRows = false) => {
      if (!name) return;
      const b = w(name);
      items.push(
        this.op(
          'biasAdd',
          u32(n, DTYPE_CODE[b.dtype], 0, stepRows ? 1 : 0),
          [step, weightBinding(b), dst],
          ew((t) => t * n),
        ),
      );
    };
    const rope = (src: GPUBuffer, dst: GPUBuffer, heads: number, stepRows: boolean) =>
      this.op(
        'rope',
        u32(heads, headDim, 0, 0, stepRows ? 1 : 0, 0, 0, 0),
        [step, this.rope, src, dst],
        ew((t) => (t * heads * headDim) / 2),
      );
    const hook = (module: string, buffer: GPUBuffer, channels: number, before?: Op, rowsPerToken = 1) =>
      items.push({ hook: module, buffer, channels, before, rowsPerToken });

    for (let layer = 0; layer < cfg.numLayers; layer++) {
      const names = layerWeightNames(cfg, layer);
      const prefix = `model.layers.${layer}`;
      const cache = this.kv[layer];
      hook(`${prefix}.input_layernorm`, a.x, h);
      items.push(norm(w(names.inputNorm), a.x, a.normed, h, 1));
      for (const proj of ['q_proj', 'k_proj', 'v_proj']) hook(`${prefix}.self_attn.${proj}`, a.normed, h);
      project(w(names.q), a.normed, a.q, qd);
      bias(names.qBias, a.q, qd);
      project(w(names.k), a.normed, a.k, kvd);
      bias(names.kBias, a.k, kvd);
      project(w(names.v), a.normed, cache.v, kvd, true);
      bias(names.vBias, cache.v, kvd, true);
      let qSrc = a.q;
      let kSrc = a.k;
      if (names.qNorm && names.kNorm) {
        hook(`${prefix}.self_attn.q_norm`, a.q, headDim, undefined, numHeads);
        hook(`${prefix}.self_attn.k_norm`, a.k, headDim, undefined, numKvHeads);
        items.push(norm(w(names.qNorm), a.q, a.q2, headDim, numHeads));
        items.push(norm(w(names.kNorm), a.k, a.k2, headDim, numKvHeads));
        qSrc = a.q2;
        kSrc = a.k2;
      }
      items.push(rope(qSrc, a.qRot, numHeads, false));
      items.push(rope(kSrc, cache.k, numKvHeads, true));
      const params = new ArrayBuffer(16);
      new Uint32Array(params, 0, 3).set([numHeads, numKvHeads, headDim]);
      new Float32Array(params)[3] = 1 / Math.sqrt(headDim);
      items.push(
        this.op('attention', params, [step, a.qRot, cache.k, cache.v, a.attn], (t) => t * numHeads, {
          WORKGROUP_SIZE: ATTENTION_WORKGROUP,
        }),
      );
      hook(`${prefix}.self_attn.o_proj`, a.attn, qd);
      project(w(names.o), a.attn, a.tmp, h);
      items.push(
        this.op(
          'residualAdd',
          u32(h, 0, 0, 0),
          [step, a.x, a.tmp],
          ew((t) => t * h),
        ),
      );
      hook(`${prefix}.post_attention_layernorm`, a.x, h);
      items.push(norm(w(names.postAttnNorm), a.x, a.normed, h, 1));
      hook(`${prefix}.mlp.gate_proj`, a.normed, h);
      hook(`${prefix}.mlp.up_proj`, a.normed, h);
      project(w(names.gate), a.normed, a.gate, m);
      project(w(names.up), a.normed, a.up, m);
      items.push(
        this.op(
          'siluGate',
          u32(m, 0, 0, 0),
          [step, a.gate, a.up],
          ew((t) => t * m),
        ),
      );
      hook(`${prefix}.mlp.down_proj`, a.gate, m);
      project(w(names.down), a.gate, a.tmp, h);
      items.push(
        this.op(
          'residualAdd',
          u32(h, 0, 0, 0),
          [step, a.x, a.tmp],
          ew((t) => t * h),
        ),
      );
    }
    const finalNorm = w(FINAL_NORM);
    hook(FINAL_NORM.replace(/\.weight$/, ''), a.x, h);
    hook(LM_HEAD.replace(/\.weight$/, ''), a.normed, h, norm(finalNorm, a.x, a.normed, h, 1));
    items.push(norm(finalNorm, a.x, a.last, h, 1, true));
    // The logits always come from the one normed row: the matrix-vector kernel whatever the mode.
    const head = cfg.tieWordEmbeddings ? embed : w(LM_HEAD);
    for (const [i, c] of head.chunks.entries()) {
      items.push(
        this.op(
          'matvec',
          u32(c.rows, head.cols, DTYPE_CODE[head.dtype], 0, 0, c.rowStart, 0, 0, 0, 0, 0, 0),
          [step, weightBinding(head, i), a.last, a.logits],
          () => Math.ceil(c.rows / this.matvecRows()),
          this.matvecOverrides(),
        ),
      );
    }
    return items;
  }

  /** On a CPU adapter (matvecLanes 1) the prefill matmul runs without workgroup memory (matmul.wgsl `direct`). */
  private get cpuAdapter(): boolean {
    return this.matvecLanes === 1;
  }

  /** Rows per matvec workgroup: 256 invocations in all. */
  private matvecRows(): number {
    return Math.max(1, Math.floor(MATVEC_WORKGROUP / this.matvecLanes));
  }

  private matvecOverrides(): Record<string, number> {
    return { LANES: this.matvecLanes, ROWS_PER_GROUP: this.matvecRows() };
  }

  private selectionOps?: { argmax: Op; sample: Op };

  /** The token choice (argmax or top-p) and, when asked, the top log-probabilities. */
  private selection(sampling: SamplingOptions): Op[] {
    if (!this.selectionOps) {
      const v = this.config.vocabSize;
      const a = this.act;
      const u32 = (...x: number[]) => new Uint32Array(x).buffer;
      this.selectionOps = {
        argmax: this.op('argmax', u32(v, 0, 0, 0), [a.logits, this.resultBuffer], () => 1),
        sample: this.op(
          'sampleTopP',
          u32(v, 0, 0, 0),
          [this.stepBuffer, a.logits, a.scratch, this.resultBuffer],
          () => 1,
        ),
      };
    }
    const ops = [sampling.temperature === 0 ? this.selectionOps.argmax : this.selectionOps.sample];
    const k = sampling.topLogprobs ?? 0;
    if (k > 0) ops.push(this.topOp(k));
    return ops;
  }

  private topOps = new Map<number, Op>();

  private topOp(k: number): Op {
    let op = this.topOps.get(k);
    if (!op) {
      op = this.op(
        'topLogprobs',
        new Uint32Array([this.config.vocabSize, k, 0, 0]).buffer,
        [this.act.logits, this.resultBuffer],
        () => 1,
      );
      this.topOps.set(k, op);
    }
    return op;
  }
}

/** Every tensor the GPU runner uploads (lm_head only when untied: tied models share the embedding). */
function weightNames(config: ModelConfig): string[] {
  const names = [EMBED_TOKENS];
  for (let l = 0; l < config.numLayers; l++) {
    const n = layerWeightNames(config, l);
    names.push(n.inputNorm, n.q, n.k, n.v, n.o, n.postAttnNorm, n.gate, n.up, n.down);
    for (const extra of [n.qBias, n.kBias, n.vBias, n.qNorm, n.kNorm]) if (extra) names.push(extra);
  }
  names.push(FINAL_NORM);
  if (!config.tieWordEmbeddings) names.push(LM_HEAD);
  return names;
}

/** A GPU runner over `weights`: uploads them tensor by tensor (see GpuModelRunner). */
export function createGpuRunner(weights: ModelWeights, options?: GpuRunnerOptions): Promise<GpuModelRunner> {
  return GpuModelRunner.create(weights, options);
}
