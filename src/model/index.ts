/**
 * The model runtime's entry points: pick a runner for a device choice, as `--device` and the page's
 * device setting mean it (shared by the CLI and the worker): 'gpu' must run on the GPU, 'auto' runs
 * there when WebGPU gives a device that fits the model and says in one line why not otherwise.
 */
import type { DeviceChoice } from '../gpu/select-backend';
import { UnsupportedModelError } from './config';
import { createGpuRunner } from './gpu/runner';
import { createCpuRunner } from './reference';
import type { ModelRunner } from './runner';
import type { ModelWeights } from './weights';

export type { DeviceChoice };

export interface CreateRunnerOptions {
  /** Where to get WebGPU; default `navigator.gpu`. Node passes Dawn's (src/node/webgpu.ts). */
  gpu?: () => Promise<GPU | undefined>;
  /** KV cache positions; default min(max_position_embeddings, DEFAULT_MAX_CONTEXT). */
  maxContext?: number;
  /** Told where the model runs and, for 'auto' on the CPU, why. */
  notice?: (line: string) => void;
}

export class RunnerUnavailableError extends Error {
  override name = 'RunnerUnavailableError';
}

export async function createRunner(
  weights: ModelWeights,
  device: DeviceChoice,
  options: CreateRunnerOptions = {},
): Promise<ModelRunner> {
  const notice = options.notice ?? (() => {});
  const cpu = () => createCpuRunner(weights, { maxContext: options.maxContext });
  if (device === 'cpu') return cpu();
  let reason: string;
  try {
    const gpu = options.gpu
      ? await options.gpu()
      : typeof navigator !== 'undefined' && 'gpu' in navigator
        ? navigator.gpu
        : undefined;
    if (!gpu) {
      reason = 'WebGPU is not available here (navigator.gpu is missing)';
    } else {
      const runner = await createGpuRunner(weights, { gpu, maxContext: options.maxContext });
      notice(`running ${weights.files.name} on the GPU`);
      return runner;
    }
  } catch (e) {
    // The model itself is refused: the CPU would refuse it too, so say so rather than retry.
    if (e instanceof UnsupportedModelError) throw e;
    reason = (e as Error).message;
  }
  if (device === 'gpu')
    throw new RunnerUnavailableError(`cannot run ${weights.files.name} on the GPU: ${reason}`);
  notice(`running ${weights.files.name} on the CPU: ${reason}`);
  return cpu();
}
