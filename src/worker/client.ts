/** The page's handle on the engine worker. */
import * as Comlink from 'comlink';
import type { EngineApi } from './engine.worker';

/**
 * Holds the comlink proxy in a plain object: the proxy answers every property read with another
 * proxy, so code that inspects values (Lit looks for directive markers on bound values) must not see it.
 */
export class Engine {
  constructor(
    readonly api: Comlink.Remote<EngineApi>,
    private readonly worker?: Worker,
  ) {}

  /**
   * Stops the worker at once, whatever it is doing (a cancelled merge); calls still pending never
   * settle. Its locks and file handles are let go by the browser a moment later.
   */
  terminate(): void {
    this.api[Comlink.releaseProxy]();
    this.worker?.terminate();
  }
}

/** Starts an engine worker. The run panel starts one per merge, so Cancel can terminate it alone. */
export function startEngine(name = 'l2s-engine'): Engine {
  const worker = new Worker(new URL('./engine.worker.ts', import.meta.url), { type: 'module', name });
  return new Engine(Comlink.wrap<EngineApi>(worker), worker);
}

/** Wraps a callback so the worker can call it back across the boundary. */
export const callback = Comlink.proxy;

export function newRunId(): string {
  return crypto.randomUUID();
}
