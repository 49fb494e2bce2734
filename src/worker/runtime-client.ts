/** The page's handle on the model runtime worker (src/worker/runtime.worker.ts). */
import * as Comlink from 'comlink';
import type { RuntimeApi } from './runtime.worker';

/** Holds the comlink proxy in a plain object, for the reason given in client.ts. */
export class Runtime {
  constructor(
    readonly api: Comlink.Remote<RuntimeApi>,
    private readonly worker: Worker,
  ) {}

  /** Ends the worker and everything it holds (the loaded model, its GPU device). */
  terminate(): void {
    this.api[Comlink.releaseProxy]();
    this.worker.terminate();
  }
}

export function startRuntime(): Runtime {
  const worker = new Worker(new URL('./runtime.worker.ts', import.meta.url), {
    type: 'module',
    name: 'l2s-runtime',
  });
  return new Runtime(Comlink.wrap<RuntimeApi>(worker), worker);
}
