/**
 * GPU device acquisition and the per-device state every kernel shares: effective limits, the
 * pipeline cache and the buffer pool. A lost device or an uncaptured error becomes a named error
 * that the next GPU call throws; nothing is swallowed.
 */
import { BufferPool } from './buffer-pool';

export class GpuError extends Error {
  override name = 'GpuError';
}

/** No WebGPU, no adapter, or a missing feature: the caller can fall back to the CPU backend. */
export class GpuUnavailableError extends GpuError {
  override name = 'GpuUnavailableError';
}

/** The device went away (driver reset, tab in background too long, `destroy()`). */
export class GpuDeviceLostError extends GpuError {
  override name = 'GpuDeviceLostError';
  constructor(
    message: string,
    readonly reason: string,
  ) {
    super(message);
  }
}

/** A request the device cannot serve, even with tiling (e.g. too many workgroups, too many models). */
export class GpuLimitError extends GpuError {
  override name = 'GpuLimitError';
}

/** A merge step would take GPU memory past the budget (`--gpu-memory`, the app's GPU memory setting). */
export class GpuBudgetError extends GpuLimitError {
  override name = 'GpuBudgetError';
}

/** The compute limits the kernels depend on; asked of the adapter at their maximum. */
const COMPUTE_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxBindGroups',
  'maxUniformBufferBindingSize',
] as const;

/**
 * Chromium rejects a buffer of exactly 1 GiB although it reports 1 GiB as maxBufferSize; keeping
 * big buffers a little under the reported size costs nothing and avoids that edge.
 */
const BUFFER_SIZE_MARGIN = 4 * 1024 * 1024;

/** The largest buffer worth creating: maxBufferSize less the margin, for sizes large enough to have one. */
function usableBufferSize(maxBufferSize: number): number {
  return maxBufferSize >= 16 * BUFFER_SIZE_MARGIN ? maxBufferSize - BUFFER_SIZE_MARGIN : maxBufferSize;
}

export interface GpuLimits {
  /** Largest tile binding the kernels will use, in bytes (a multiple of 256; may be lowered for tests). */
  readonly maxBindingBytes: number;
  /** The device's own storage binding limit, in bytes (a multiple of 4). */
  readonly deviceBindingBytes: number;
  readonly maxBufferSize: number;
  readonly maxWorkgroupsPerDimension: number;
  readonly maxWorkgroupStorageBytes: number;
  readonly maxInvocationsPerWorkgroup: number;
  readonly maxStorageBuffersPerStage: number;
}

export interface GpuContextOptions {
  /** `navigator.gpu` in a browser or worker (the default); from `nodeGpu()` in Node. */
  readonly gpu?: GPU;
  /** Use this adapter instead of requesting one. */
  readonly adapter?: GPUAdapter;
  /**
   * Pretend storage bindings are at most this many bytes, so tests can exercise tiling with small
   * tensors. Never raises the device's own limit.
   */
  readonly maxStorageBufferBindingSize?: number;
  /** Prefix of every GPU object's label. */
  readonly label?: string;
  /** Bytes of idle pooled buffers kept for reuse (default 512 MiB, never above the budget). */
  readonly poolBytes?: number;
  /**
   * Device memory the merge may hold at once, in bytes (default: `defaultMemoryBudget` of the
   * device's limits). Tensors larger than this stream through the device a tile at a time.
   */
  readonly memoryBudget?: number;
  /** Told how each merged tensor was tiled (tests and benchmarks check the plan). */
  readonly onTilePlan?: (plan: TilePlan) => void;
}

/** How one tensor's merge was laid out on the device. */
export interface TilePlan {
  readonly tensor: string;
  readonly tiles: number;
  /** True when tiles streamed through one at a time; false when all stayed on the device. */
  readonly streamed: boolean;
}

/** The smallest budget worth merging with: a few tiles of a few models. */
export const MIN_MEMORY_BUDGET = 16_000_000;

/**
 * WebGPU does not say how much memory a GPU has; twice the largest buffer it allows is a share
 * that 4 GB consumer cards serve (their maxBufferSize is 256 MiB to 2 GiB), capped at 4 GiB.
 */
export function defaultMemoryBudget(maxBufferSize: number): number {
  return Math.max(256 * 1024 * 1024, Math.min(2 * maxBufferSize, 4 * 1024 * 1024 * 1024));
}

interface CachedPipeline {
  readonly pipeline: GPUComputePipeline;
}

/** Pipelines per device: a lost device takes its cache with it. */
const pipelineCaches = new WeakMap<GPUDevice, Map<string, CachedPipeline>>();

/** One WGSL program: a name for labels and its full source (libraries already prepended). */
export interface KernelSource {
  readonly name: string;
  readonly code: string;
}

export type OverrideConstants = Readonly<Record<string, number>>;

function defaultGpu(): GPU {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (!nav?.gpu) {
    throw new GpuUnavailableError(
      'WebGPU is not available here: navigator.gpu is undefined. Use a browser with WebGPU (Chrome or ' +
        'Edge 113+, Safari 26+), over https or http://localhost, or merge on the CPU.',
    );
  }
  return nav.gpu;
}

export class GpuContext {
  readonly pool: BufferPool;
  /** Settles with the loss, once; the context is unusable afterwards. */
  readonly lost: Promise<GpuDeviceLostError>;
  private failure: GpuError | undefined;
  private destroyed = false;
  /** Settles when the running scoped section ends. */
  private exclusive: Promise<void> = Promise.resolve();

  private constructor(
    readonly device: GPUDevice,
    readonly adapterInfo: GPUAdapterInfo | undefined,
    readonly limits: GpuLimits,
    readonly label: string,
    poolBytes: number,
    /** Device memory this context's buffers may take at once (GpuContextOptions.memoryBudget). */
    readonly memoryBudget: number,
    readonly onTilePlan?: (plan: TilePlan) => void,
  ) {
    this.pool = new BufferPool(
      device,
      `${label}.pool`,
      Math.min(poolBytes, memoryBudget),
      usableBufferSize(device.limits.maxBufferSize),
      memoryBudget,
    );
    this.lost = device.lost.then((info) => {
      const err = new GpuDeviceLostError(
        this.destroyed
          ? 'The GPU device was released.'
          : `The GPU device was lost (${info.reason}): ${info.message || 'no details'}. ` +
              'Reload the page or restart the merge; close other GPU-heavy tabs if this repeats.',
        String(info.reason),
      );
      this.failure ??= err;
      return err;
    });
    device.addEventListener('uncapturederror', (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      this.failure ??= new GpuError(`GPU error (${e.constructor.name}): ${e.message}`);
    });
  }

  static async create(options: GpuContextOptions = {}): Promise<GpuContext> {
    const label = options.label ?? 'l2s';
    let adapter = options.adapter;
    if (!adapter) {
      const gpu = options.gpu ?? defaultGpu();
      adapter = (await gpu.requestAdapter({ powerPreference: 'high-performance' })) ?? undefined;
      if (!adapter) {
        throw new GpuUnavailableError(
          'WebGPU found no GPU adapter. Enable hardware acceleration in the browser settings ' +
            '(chrome://gpu shows why), or merge on the CPU.',
        );
      }
    }
    const requiredLimits: Record<string, number> = {};
    const adapterLimits = adapter.limits as unknown as Record<string, number | undefined>;
    for (const name of COMPUTE_LIMITS) {
      const v = adapterLimits[name];
      if (typeof v === 'number') requiredLimits[name] = v;
    }
    let device: GPUDevice;
    try {
      device = await adapter.requestDevice({ label: `${label}.device`, requiredLimits });
    } catch (e) {
      throw new GpuUnavailableError(`The GPU adapter refused a device: ${(e as Error).message}`);
    }
    const dl = device.limits;
    const deviceBinding =
      Math.floor(Math.min(dl.maxStorageBufferBindingSize, usableBufferSize(dl.maxBufferSize)) / 4) * 4;
    let binding = deviceBinding;
    if (options.maxStorageBufferBindingSize !== undefined) {
      binding = Math.min(binding, options.maxStorageBufferBindingSize);
    }
    binding = Math.floor(binding / 256) * 256;
    if (binding < 4096) {
      device.destroy();
      throw new GpuLimitError(`A storage binding limit of ${binding} bytes is too small to merge with.`);
    }
    const limits: GpuLimits = {
      maxBindingBytes: binding,
      deviceBindingBytes: deviceBinding,
      maxBufferSize: dl.maxBufferSize,
      maxWorkgroupsPerDimension: dl.maxComputeWorkgroupsPerDimension,
      maxWorkgroupStorageBytes: dl.maxComputeWorkgroupStorageSize,
      maxInvocationsPerWorkgroup: dl.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerStage: dl.maxStorageBuffersPerShaderStage,
    };
    const budget = options.memoryBudget ?? defaultMemoryBudget(dl.maxBufferSize);
    if (!(budget >= MIN_MEMORY_BUDGET)) {
      device.destroy();
      throw new GpuLimitError(
        `A GPU memory budget of ${budget} bytes is too small to merge with; give at least 16M (16 million bytes).`,
      );
    }
    return new GpuContext(
      device,
      adapter.info,
      limits,
      label,
      options.poolBytes ?? 512 * 1024 * 1024,
      budget,
      options.onTilePlan,
    );
  }

  /** Throws the device loss or the first uncaptured GPU error seen so far. */
  throwIfFailed(): void {
    if (this.failure) throw this.failure;
    if (this.destroyed) throw new GpuDeviceLostError('The GPU context was destroyed.', 'destroyed');
  }

  /**
   * A compute pipeline for `kernel` with these override constants, created once per device.
   * Shapes never go here (they are uniforms), so one pipeline serves every tensor.
   */
  pipeline(kernel: KernelSource, overrides: OverrideConstants = {}, entryPoint = 'main'): GPUComputePipeline {
    let cache = pipelineCaches.get(this.device);
    if (!cache) {
      cache = new Map();
      pipelineCaches.set(this.device, cache);
    }
    const names = Object.keys(overrides).sort();
    const key = `${kernel.name}|${entryPoint}|${names.map((n) => `${n}=${overrides[n]}`).join(',')}|${kernel.code}`;
    let hit = cache.get(key);
    if (!hit) {
      const module = this.device.createShaderModule({
        label: `${this.label}.${kernel.name}`,
        code: kernel.code,
      });
      const pipeline = this.device.createComputePipeline({
        label: `${this.label}.${kernel.name}.${entryPoint}${names.length ? `(${names.map((n) => `${n}=${overrides[n]}`).join(',')})` : ''}`,
        layout: 'auto',
        compute: { module, entryPoint, constants: overrides },
      });
      hit = { pipeline };
      cache.set(key, hit);
    }
    return hit.pipeline;
  }

  /** Number of pipelines cached for this device (for tests of the cache). */
  get pipelineCount(): number {
    return pipelineCaches.get(this.device)?.size ?? 0;
  }

  /**
   * Runs `body` inside validation and out-of-memory error scopes and throws a `GpuError` naming
   * `what` when either caught something, so a failed kernel never yields silent garbage. Scopes are
   * a stack per device, so scoped sections run one at a time; put only the recording and submitting
   * of work inside (errors are raised when work is recorded), and await readbacks after it.
   */
  async scoped<T>(what: string, body: () => Promise<T>): Promise<T> {
    const previous = this.exclusive;
    let done!: () => void;
    this.exclusive = new Promise<void>((resolve) => {
      done = resolve;
    });
    await previous;
    try {
      this.throwIfFailed();
      this.device.pushErrorScope('out-of-memory');
      this.device.pushErrorScope('validation');
      let result: T | undefined;
      let failure: unknown;
      try {
        result = await body();
      } catch (e) {
        failure = e;
      }
      const validation = await this.device.popErrorScope();
      const oom = await this.device.popErrorScope();
      if (validation) throw new GpuError(`${what} failed GPU validation: ${validation.message}`);
      if (oom) throw new GpuError(`${what} ran out of GPU memory: ${oom.message}`);
      if (failure !== undefined) throw failure;
      this.throwIfFailed();
      return result as T;
    } finally {
      done();
    }
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.pool.destroy();
    pipelineCaches.delete(this.device);
    this.device.destroy();
  }
}

/**
 * Workgroup counts for `workgroups` groups, folded into two dimensions when one is not enough.
 * Kernels compute their linear group id as `wid.x + wid.y * nwg.x` and skip ids past the end.
 */
export function foldWorkgroups(workgroups: number, maxPerDimension: number): [number, number] {
  if (workgroups <= maxPerDimension) return [Math.max(1, workgroups), 1];
  const y = Math.ceil(workgroups / maxPerDimension);
  if (y > maxPerDimension) {
    throw new GpuLimitError(
      `A dispatch of ${workgroups} workgroups exceeds ${maxPerDimension}x${maxPerDimension}; ` +
        'the tensor tile is too large for this GPU.',
    );
  }
  return [Math.ceil(workgroups / y), y];
}
