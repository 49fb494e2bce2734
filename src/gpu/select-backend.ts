/**
 * `--device` / the page's device choice: the GPU when WebGPU gives a device and the method has GPU
 * wiring, else the CPU, and the caller is told which and why. Shared by the CLI and the worker.
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
  let backend: GpuMergeBackend;
  try {
    backend = await GpuMergeBackend.create({
      gpu,
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
  const info = backend.ctx.adapterInfo;
  const name = [info?.vendor, info?.architecture || info?.device].filter(Boolean).join(' ');
  opts.notice(
    `merging on the GPU${name ? ` (${name})` : ''} within ${formatBytes(backend.ctx.memoryBudget)} of GPU memory`,
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
