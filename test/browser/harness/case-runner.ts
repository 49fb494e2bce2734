/// <reference lib="webworker" />
/**
 * The two sides of the browser GPU case harness, shared by gpu-kernels.html and model-gpu.html:
 * the worker runs cases one by one, each on a fresh GpuContext on navigator.gpu, and reports each
 * result; the page shows them and publishes them on `window.gpuCaseResults` for the specs
 * (test/browser/gpu-cases-spec.ts reads them).
 */
import { GpuContext } from '../../../src/gpu/device';
import type { GpuCase } from './gpu-cases';

export interface CaseResult {
  readonly name: string;
  readonly ok: boolean;
  readonly ms: number;
  readonly error?: string;
  readonly note?: string;
}

export type WorkerReport =
  | { type: 'start'; total: number }
  | { type: 'result'; result: CaseResult }
  | { type: 'done' }
  | { type: 'fatal'; error: string };

/**
 * What the page sends to start the worker: the `only` filter of its query string, or null, and
 * whether `?all=1` asks for the cases marked nodeOnly too.
 */
export interface CaseRequest {
  readonly only: string | null;
  readonly all: boolean;
}

declare global {
  interface Window {
    gpuCaseResults?: { done: boolean; total: number; results: CaseResult[]; fatal?: string };
  }
}

/**
 * Worker side: once the page sends its request, runs `setup` (e.g. fetching fixtures), then every
 * case of `cases()` whose name contains `only`, leaving out the nodeOnly ones unless `all`.
 */
export function serveCases(cases: () => readonly GpuCase[], setup?: () => Promise<void>): void {
  const scope = self as unknown as DedicatedWorkerGlobalScope;
  const post = (m: WorkerReport) => scope.postMessage(m);
  const run = async ({ only, all }: CaseRequest) => {
    const chosen = cases().filter((c) => (all || !c.nodeOnly) && (!only || c.name.includes(only)));
    await setup?.();
    post({ type: 'start', total: chosen.length });
    for (const c of chosen) {
      const t0 = performance.now();
      let ctx: GpuContext | undefined;
      try {
        ctx = await GpuContext.create({ label: 'browser-test', ...c.options });
        const note = await c.run(ctx);
        const ms = Math.round(performance.now() - t0);
        post({
          type: 'result',
          result: { name: c.name, ok: true, ms, note: typeof note === 'string' ? note : undefined },
        });
      } catch (e) {
        const err = e as Error;
        const ms = Math.round(performance.now() - t0);
        post({
          type: 'result',
          result: { name: c.name, ok: false, ms, error: `${err.name}: ${err.message}` },
        });
      } finally {
        ctx?.destroy();
      }
    }
    post({ type: 'done' });
  };
  scope.onmessage = (ev: MessageEvent<CaseRequest>) => {
    run(ev.data).catch((e) => post({ type: 'fatal', error: String((e as Error)?.stack ?? e) }));
  };
}

/** Page side: starts `worker` with the page's `?only=` filter and shows and publishes its reports. */
export function watchCases(worker: Worker): void {
  const log = document.getElementById('log')!;
  const state: NonNullable<Window['gpuCaseResults']> = { done: false, total: 0, results: [] };
  window.gpuCaseResults = state;
  worker.onmessage = (ev: MessageEvent<WorkerReport>) => {
    const msg = ev.data;
    if (msg.type === 'start') state.total = msg.total;
    else if (msg.type === 'result') {
      const r = msg.result;
      state.results.push(r);
      log.textContent += `${r.ok ? 'ok  ' : 'FAIL'} ${r.name} (${r.ms} ms)${r.error ? `\n     ${r.error}` : ''}${r.note ? `\n     ${r.note}` : ''}\n`;
    } else if (msg.type === 'done') state.done = true;
    else {
      state.fatal = msg.error;
      state.done = true;
      log.textContent += `fatal: ${msg.error}\n`;
    }
  };
  worker.onerror = (ev) => {
    state.fatal = ev.message || 'the worker failed to load';
    state.done = true;
  };
  const query = new URLSearchParams(location.search);
  const request: CaseRequest = { only: query.get('only'), all: query.get('all') === '1' };
  worker.postMessage(request);
}
