/** Where the worker's merge math runs: `navigator.gpu` when it gives a device, else the CPU. */
import { type DeviceChoice, type SelectedBackend, selectBackend } from '../gpu/select-backend';

export type BackendChoice = DeviceChoice;
export { BackendUnavailableError } from '../gpu/select-backend';
export type { SelectedBackend };

export function selectWorkerBackend(
  choice: BackendChoice,
  methodName: string,
  notice: (line: string) => void,
  memoryBudget?: number,
): Promise<SelectedBackend> {
  return selectBackend(choice, { methodName, notice, label: 'l2s-worker', memoryBudget });
}
