/**
 * `--device` / the page's device choice: the GPU when WebGPU gives a device and the method has GPU
 * wiring, else the CPU, and the caller is told which and why. Shared by the CLI and the worker.
 *
 * `auto` never picks a software adapter (SwiftShader, llvmpipe, WARP: a CPU pretending to be a GPU,
 * measured 23x slower than the CPU backend): it merges on the CPU and says so. `gpu` still uses one.
 */
import { cpuBackend, type MergeBackend } from '../engine/merge';
import { formatBytes } from '../formats/size';
import { GpuMergeBackend } from './backend';

export type DeviceChoice = 'auto' | 'cpu' | 'gpu';

export interface SelectedBackend {
  backend: MergeBackend;
  dispose(): void;
}

export class BackendUnavailableError extends Error {
  override name = 'BackendUnavailableError';
}

const CPU: SelectedBackend = { backend: cpuBackend, dispose() {} };

/** Adapter names of renderers that run on the CPU. */
const SOFTWARE_ADAPTER_NAMES = /swiftshader|llvmpipe|lavapipe|softpipe|\bwarp\b|microsoft basic render/i;

/** `isFallbackAdapter` moved from the adapter to its info (Chrome 136); older builds have only the first. */
interface AdapterFallbackFlags {
  isFallbackAdapter?: boolean;
  info?: GPUAdapterInfo & { isFallbackAdapter?: boolean };
}

/** A name for the adapter, e.g. `nvidia ampere` or `google swiftshader`. */
export function adapterName(adapter: GPUAdapter): string {
  const info = adapter.info;
  return [info?.vendor, info?.architecture || info?.device].filter(Boolean).join(' ') || 'unknown adapter';
}

/**
 * Why `adapter` is a software renderer (the reason, naming it), or undefined for a hardware GPU:
 * the adapter says so (`isFallbackAdapter`), or its info names a known software renderer.
 */
export function softwareAdapterReason(adapter: GPUAdapter): string | undefined {
  const flags = adapter as unknown as AdapterFallbackFlags;
  const info = adapter.info;
  const text = [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ');
  const named = SOFTWARE_ADAPTER_NAMES.exec(text)?.[0];
  if (flags.info?.isFallbackAdapter || flags.isFallbackAdapter || named) {
    return `the only WebGPU adapter is a software renderer (${named ?? adapterName(adapter)}), slower than the CPU; choose device gpu to use it anyway`;
  }
  return undefined;
}

export interface SelectBackendOptions {
  /** The method to be run: a method without GPU wiring runs on the CPU. */
  methodName: string;
  /** Where to get WebGPU; default `navigator.gpu`. Node passes Dawn's. */
  gpu?: () => Promise<GPU | undefined>;
  notice(line: string): void;
  label?: string;
  /** GPU memory the merge may hold at once, in bytes (default: from the adapter's limits). */
  memoryBudget?: number;
}

export async function selectBackend(
  choice: DeviceChoice,
  opts: SelectBackendOptions,
): Promise<SelectedBackend> {
  if (choice === 'cpu') return CPU;
  const fallback = (reason: string): SelectedBackend => {
    if (choice === 'gpu') throw new BackendUnavailableError(`cannot merge on the GPU: ${reason}`);
    opts.notice(`merging on the CPU: ${reason}`);
    return CPU;
  };
  let gpu: GPU | undefined;
  try {
    gpu = opts.gpu
      ? await opts.gpu()
      : typeof navigator !== 'undefined' && 'gpu' in navigator
        ? navigator.gpu
        : undefined;
  } catch (e) {
    return fallback((e as Error).message);
  }
  if (!gpu) return fallback('WebGPU is not available here (navigator.gpu is missing)');
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    return fallback((e as Error).message);
  }
  if (!adapter) return fallback('WebGPU found no GPU adapter (chrome://gpu says why)');
  const software = softwareAdapterReason(adapter);
  if (software && choice === 'auto') return fallback(software);
  let backend: GpuMergeBackend;
  try {
    backend = await GpuMergeBackend.create({
      gpu,
      adapter,
      label: opts.label ?? 'l2s-merge',
      memoryBudget: opts.memoryBudget,
    });
  } catch (e) {
    return fallback((e as Error).message);
  }
  if (!backend.supports(opts.methodName)) {
    backend.destroy();
    return fallback(`${opts.methodName} has no GPU implementation yet`);
  }
  opts.notice(
    `merging on the GPU (${adapterName(adapter)}) within ${formatBytes(backend.ctx.memoryBudget)} of GPU memory${software ? ': a software renderer, expect it to be slower than the CPU' : ''}`,
  );
  return {
    backend: gpuMergeBackend(backend),
    dispose: () => backend.destroy(),
  };
}

/** The engine's view of a GPU backend: whole tensors, raw bytes, and streamed tensors. */
export function gpuMergeBackend(backend: GpuMergeBackend): MergeBackend {
  return {
    kind: 'gpu',
    merge: (method, inputs) => backend.merge(method, inputs),
    mergeBytes: (method, inputs) => backend.mergeBytes(method, inputs),
    mergeStream: (method, inputs) => backend.mergeStream(method, inputs),
    streams: (method) => backend.streams(method),
  };
}
