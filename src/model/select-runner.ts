/**
 * The device choice for running a model, as merges make it (src/gpu/select-backend.ts): 'cpu' runs
 * the f32 reference; 'gpu' the WGSL runner and fails when WebGPU gives no device; 'auto' the GPU when
 * there is one, else the CPU with a notice saying why. Shared by the runtime worker and the CLI.
 */
import { BackendUnavailableError, type DeviceChoice } from '../gpu/select-backend';
import { createCpuRunner } from './reference';
import type { ModelRunner } from './runner';
import type { ModelWeights } from './weights';

export interface SelectRunnerOptions {
  device: DeviceChoice;
  /** KV cache positions; default the runner's. */
  maxContext?: number;
  /** Where to get WebGPU; default `navigator.gpu`. Node passes Dawn's. */
  gpu?: () => Promise<GPU | undefined>;
  notice(line: string): void;
}

export interface SelectedRunner {
  runner: ModelRunner;
  /** The GPU adapter's vendor and architecture, when on the GPU. */
  adapter?: string;
}

export async function selectRunner(
  weights: ModelWeights,
  opts: SelectRunnerOptions,
): Promise<SelectedRunner> {
  const cpu = async (): Promise<SelectedRunner> => ({
    runner: await createCpuRunner(weights, { maxContext: opts.maxContext }),
  });
  if (opts.device === 'cpu') return cpu();
  const fallback = (reason: string): Promise<SelectedRunner> => {
    if (opts.device === 'gpu')
      throw new BackendUnavailableError(`cannot run ${weights.files.name} on the GPU: ${reason}`);
    opts.notice(`running ${weights.files.name} on the CPU: ${reason}`);
    return cpu();
  };
  return fallback('the WebGPU model runner is not part of this build yet');
}
