/** The page's handle on the engine worker. */
import * as Comlink from 'comlink';
import type { EngineApi } from './engine.worker';

/**
 * Holds the comlink proxy in a plain object: the proxy answers every property read with another
 * proxy, so code that inspects values (Lit looks for directive markers on bound values) must not see it.
 */
export class Engine {
  constructor(readonly api: Comlink.Remote<EngineApi>) {}
}

export function startEngine(): Engine {
  const worker = new Worker(new URL('./engine.worker.ts', import.meta.url), {
    type: 'module',
    name: 'l2s-engine',
  });
  return new Engine(Comlink.wrap<EngineApi>(worker));
}

/** Wraps a callback so the worker can call it back across the boundary. */
export const callback = Comlink.proxy;

export function newRunId(): string {
  return crypto.randomUUID();
}
