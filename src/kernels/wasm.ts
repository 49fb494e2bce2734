/**
 * The WebAssembly (SIMD128) merge kernels compiled from wasm/merge-kernels.ts, and the memory they
 * work in. The TypeScript reference (src/methods, src/formats/dtype.ts) is the specification: every
 * kernel gives its bytes exactly. Where WebAssembly SIMD is missing (or L2S_CPU_KERNELS=ts in Node),
 * `loadKernels` returns null and the engine runs the reference.
 */
import kernelBytes from 'virtual:merge-kernels-wasm';
import { DTYPE_BYTES, type FloatDType } from '../formats/dtype';

/** The kernels' dtype codes. */
export const DTYPE_CODE: Record<FloatDType, number> = { F32: 0, F16: 1, BF16: 2 };

/** A model-table entry's dtype for f32 task-vector values (rather than a stored tensor). */
export const DELTA_VALUES = -1;

// The kernels' arguments that several of them share, in their order (wasm/merge-kernels.ts).
/** A task vector's inputs: a model's stored tensor and the base's (addresses, dtype codes). */
type TaskVectorInputs = [x: number, xDtype: number, base: number, baseDtype: number];
/** The two cut windows of TIES' pass 0: each a counts address, its first bucket and its width. */
type CutWindows = [
  window0: number,
  start0: number,
  buckets0: number,
  window1: number,
  start1: number,
  buckets1: number,
];
/** Where pass 0 gathers keys inside a window before counting them (countWindowedGathered). */
type GatherScratch = [scratch: number, capacity: number];
/** maskRange's cuts, with the running tie counts (two f64) at `state`. */
type MaskCuts = [
  flip: number,
  upToKey: number,
  upToTaken: number,
  hasBelow: number,
  belowKey: number,
  belowTaken: number,
  state: number,
];
/** The mask's rescale (breadcrumbs, DARE), applied when `hasRescale`. */
type MaskRescale = [rescale: number, hasRescale: number];
/** A model table (12-byte entries: address, dtype, weight) of `models` models. */
type ModelTable = [table: number, models: number];
/** An encoded output of n values. */
type EncodedOut = [out: number, outDtype: number, n: number];

export interface KernelExports {
  decode(src: number, dtype: number, dst: number, n: number): void;
  encode(src: number, dst: number, dtype: number, n: number): void;
  roundTo(src: number, srcDtype: number, dst: number, workDtype: number, n: number): void;
  delta(...args: [...TaskVectorInputs, dst: number, n: number]): void;
  mixSum(
    ...args: [
      ...ModelTable,
      base: number,
      baseDtype: number,
      ...EncodedOut,
      divisor: number,
      divide: number,
      lambda: number,
      scale: number,
    ]
  ): void;
  mixConsensus(
    ...args: [
      ...ModelTable,
      bySum: number,
      base: number,
      baseDtype: number,
      ...EncodedOut,
      normalize: number,
      lambda: number,
      scale: number,
    ]
  ): void;
  linear(...args: [...ModelTable, ...EncodedOut, divisor: number, normalize: number]): void;
  blend(a: number, b: number, s0: number, s1: number, ...out: EncodedOut): void;
  countSampled(values: number, n: number, flip: number, high: number, sample: number): void;
  countWindowed(values: number, n: number, flip: number, high: number, ...windows: CutWindows): void;
  countLow(
    values: number,
    n: number,
    flip: number,
    low0: number,
    bucket0: number,
    low1: number,
    bucket1: number,
  ): void;
  maskRange(values: number, n: number, ...cuts: MaskCuts): void;
  uniforms(
    dst: number,
    n: number,
    seed: number,
    nameHash: number,
    model: number,
    stream: number,
    offsetLow: number,
    offsetHigh: number,
  ): void;
  bernoulliMask(uniform: number, n: number, p: number, values: number): void;
  mixSumOneBf16(
    x: number,
    base: number,
    out: number,
    n: number,
    weight: number,
    divisor: number,
    divide: number,
    lambda: number,
    scale: number,
  ): void;
  keyHistogram(keys: number, n: number, histogram: number): void;
  countNonFinite(src: number, dtype: number, n: number): number;
  replayKeys(keys: number, n: number, window: number, start: number, buckets: number): void;
  // slerp's and model_stock's blocked sums and outputs (reduce-kernels.ts)
  squareBlockSums(x: number, xDtype: number, n: number, state: number, sums: number): number;
  productBlockSums(
    x: number,
    xDtype: number,
    y: number,
    yDtype: number,
    n: number,
    state: number,
    sums: number,
  ): number;
  unitProductBlockSums(
    x: number,
    xDtype: number,
    xNorm: number,
    y: number,
    yDtype: number,
    yNorm: number,
    n: number,
    state: number,
    sums: number,
  ): number;
  blendStored(
    ...args: [a: number, aDtype: number, b: number, bDtype: number, s0: number, s1: number, ...EncodedOut]
  ): void;
  // DELLA's keep probabilities and mask (sparsify-kernels.ts)
  dellaScratchBytes(length: number): number;
  dellaProbabilities(
    values: number,
    n: number,
    length: number,
    inner: number,
    low: number,
    epsilon: number,
    rankSpan: number,
    probabilities: number,
    scratch: number,
  ): void;
  varyingBernoulliMask(uniform: number, n: number, probabilities: number, values: number): void;
  stockBlend(
    ...args: [
      table: number,
      count: number,
      base: number,
      baseDtype: number,
      t: number,
      baseShare: number,
      ...EncodedOut,
    ]
  ): void;
  // TIES / breadcrumbs, fused passes
  countWindowedGathered(
    ...args: [values: number, n: number, flip: number, high: number, ...CutWindows, ...GatherScratch]
  ): void;
  countWindowedDelta(
    ...args: [...TaskVectorInputs, n: number, flip: number, high: number, ...CutWindows, ...GatherScratch]
  ): void;
  countSampled4(values: number, n: number, flip: number, high: number, sample: number): void;
  maskedDelta(...args: [...TaskVectorInputs, dst: number, n: number, ...MaskCuts, ...MaskRescale]): void;
  countTies(
    ...args: [
      ...TaskVectorInputs,
      n: number,
      flip: number,
      upToKey: number,
      hasBelow: number,
      belowKey: number,
      out: number,
    ]
  ): void;
  tiesOneBf16(
    x: number,
    base: number,
    out: number,
    n: number,
    flip: number,
    upToKey: number,
    upToTaken: number,
    state: number,
    weight: number,
    normalize: number,
    lambda: number,
    scale: number,
  ): void;
  tiesOne(
    ...args: [
      ...TaskVectorInputs,
      ...EncodedOut,
      ...MaskCuts,
      ...MaskRescale,
      weight: number,
      normalize: number,
      lambda: number,
      scale: number,
    ]
  ): void;
}

const PAGE = 65536;
/**
 * The first page is never a buffer: address 0 is never one, and the kernels keep their vector
 * constants there (merge-kernels.ts CONSTANTS).
 */
const ARENA_BASE = PAGE;

let compiled: WebAssembly.Module | null | undefined;

function compileKernels(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    // Small enough to compile synchronously (the engine runs in Node or in a worker).
    compiled = new WebAssembly.Module(kernelBytes as Uint8Array<ArrayBuffer>);
  } catch {
    // No WebAssembly, or no SIMD128: the module does not validate.
    compiled = null;
  }
  return compiled;
}

/** Whether the engine is told to use the TypeScript reference (L2S_CPU_KERNELS=ts in Node). */
function referenceForced(): boolean {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return env?.L2S_CPU_KERNELS === 'ts';
}

/**
 * One instance of the kernels with its own memory: a bump arena that a tensor's merge lays its
 * buffers out in. `reset` starts a new layout; buffers are views, valid until the next `reset`
 * (growing the memory detaches views, so it only grows in `reset`).
 */
export class KernelArena {
  readonly exports: KernelExports;
  private readonly memory: WebAssembly.Memory;
  private top = ARENA_BASE;
  private limit = ARENA_BASE;

  constructor(module: WebAssembly.Module) {
    this.memory = new WebAssembly.Memory({ initial: 16 });
    const instance = new WebAssembly.Instance(module, {
      env: {
        memory: this.memory,
        abort: () => {
          throw new Error('merge kernel aborted');
        },
      },
    });
    this.exports = instance.exports as unknown as KernelExports;
  }

  /** Starts a layout of at most `bytes` bytes; earlier views must no longer be used. */
  reset(bytes: number): void {
    const needed = ARENA_BASE + bytes + 64;
    const have = this.memory.buffer.byteLength;
    if (needed > have) this.memory.grow(Math.ceil((needed - have) / PAGE));
    this.top = ARENA_BASE;
    this.limit = ARENA_BASE + bytes + 64;
  }

  /** The address of `bytes` bytes, 16-byte aligned. */
  alloc(bytes: number): number {
    const ptr = this.top;
    const end = ptr + Math.ceil(bytes / 16) * 16;
    if (end > this.limit)
      throw new RangeError(`kernel arena overflow: ${end - ARENA_BASE} > ${this.limit - ARENA_BASE}`);
    this.top = end;
    return ptr;
  }

  bytes(ptr: number, length: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, length);
  }

  f32(ptr: number, length: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, length);
  }

  u32(ptr: number, length: number): Uint32Array {
    return new Uint32Array(this.memory.buffer, ptr, length);
  }

  f64(ptr: number, length: number): Float64Array {
    return new Float64Array(this.memory.buffer, ptr, length);
  }

  /** The address of a view into this arena's memory. */
  addressOf(view: ArrayBufferView): number {
    if (view.buffer !== this.memory.buffer) throw new RangeError('the view is not in the kernel arena');
    return view.byteOffset;
  }

  /** dtype.ts countNonFinite of encoded values in this arena's memory. */
  countNonFinite(bytes: Uint8Array, dtype: FloatDType): number {
    return this.exports.countNonFinite(
      this.addressOf(bytes),
      DTYPE_CODE[dtype],
      bytes.byteLength / DTYPE_BYTES[dtype],
    );
  }

  /** Whether `view` lies in this arena's memory (kernels can read it in place). */
  holds(view: ArrayBufferView): boolean {
    return view.buffer === this.memory.buffer;
  }
}

/**
 * A fresh kernel arena, or null where the kernels cannot run (no WebAssembly SIMD) or the reference
 * is asked for (`preference` 'ts', or L2S_CPU_KERNELS=ts).
 */
export function loadKernels(preference: 'auto' | 'ts' = 'auto'): KernelArena | null {
  if (preference === 'ts' || referenceForced()) return null;
  const module = compileKernels();
  return module ? new KernelArena(module) : null;
}
