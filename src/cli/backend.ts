/** `--device`: where the merge math runs in Node. */
import { cpuBackend, type MergeBackend } from '../engine/merge';

export type DeviceChoice = 'auto' | 'cpu' | 'gpu';

export interface SelectedBackend {
  backend: MergeBackend;
  dispose(): void;
}

export async function selectBackend(
  device: DeviceChoice,
  notice: (line: string) => void,
): Promise<SelectedBackend> {
  if (device === 'cpu') return { backend: cpuBackend, dispose() {} };
  const reason = 'the GPU backend is not built into this version';
  if (device === 'gpu') throw new Error(`--device gpu: ${reason}`);
  notice(`merging on the CPU (${reason})`);
  return { backend: cpuBackend, dispose() {} };
}
