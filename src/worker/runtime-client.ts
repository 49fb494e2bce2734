/** The page's handle on the model runtime worker (src/worker/runtime.worker.ts). */
import * as Comlink from 'comlink';
import type { RuntimeApi } from './runtime.worker';

/** The runtime worker died (a crash, or out of memory) while a call was under way. */
export class RuntimeWorkerError extends Error {
  override name = 'RuntimeWorkerError';
}

/**
 * Holds the comlink proxy in a plain object, for the reason given in client.ts. A call through
 * `guard` settles even when the worker goes away: comlink's own promises would wait forever.
 */
export class Runtime {
  private fail!: (e: Error) => void;
  /** Rejects once the worker is terminated or fails. */
  private readonly gone = new Promise<never>((_, reject) => {
    this.fail = reject;
  });

  constructor(
    readonly api: Comlink.Remote<RuntimeApi>,
    private readonly worker: Worker,
  ) {
    this.gone.catch(() => undefined);
    worker.addEventListener('error', (e) => {
      this.fail(new RuntimeWorkerError(`the model runtime worker failed: ${e.message || 'no details'}`));
    });
  }

  guard<T>(call: Promise<T>): Promise<T> {
    return Promise.race([call, this.gone]);
  }

  /** Ends the worker and everything it holds (the loaded model, its GPU device); calls under way reject. */
  terminate(): void {
    this.api[Comlink.releaseProxy]();
    this.worker.terminate();
    this.fail(new DOMException('the model runtime was stopped', 'AbortError'));
  }
}

export function startRuntime(): Runtime {
  const worker = new Worker(new URL('./runtime.worker.ts', import.meta.url), {
    type: 'module',
    name: 'l2s-runtime',
  });
  return new Runtime(Comlink.wrap<RuntimeApi>(worker), worker);
}
