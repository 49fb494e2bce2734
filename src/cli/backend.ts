/** `--device` in Node: the GPU through the optional `webgpu` package (Dawn), else the CPU. */
import { type DeviceChoice, type SelectedBackend, selectBackend as select } from '../gpu/select-backend';
import { nodeGpu } from '../node/webgpu';

export type { DeviceChoice, SelectedBackend };

export function selectBackend(
  device: DeviceChoice,
  methodName: string,
  notice: (line: string) => void,
  memoryBudget?: number,
) {
  return select(device, { methodName, gpu: () => nodeGpu(), notice, label: 'l2s-merge-cli', memoryBudget });
}
