/**
 * Page side of the runtime bench's browser rows: passes the query string's options to the worker and
 * publishes what it reports on `window.runtimeBench` for bench/runtime.mjs.
 */
import type { RuntimeBenchRow } from './measure';
import type { RuntimeWorkerMessage } from './worker';

declare global {
  interface Window {
    runtimeBench?: { done: boolean; rows: RuntimeBenchRow[]; errors: string[] };
  }
}

const log = document.getElementById('log')!;
const state: NonNullable<Window['runtimeBench']> = { done: false, rows: [], errors: [] };
window.runtimeBench = state;
const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
worker.onmessage = (ev: MessageEvent<RuntimeWorkerMessage>) => {
  const m = ev.data;
  log.textContent += `${JSON.stringify(m)}\n`;
  if (m.type === 'row') state.rows.push(m.row);
  else if (m.type === 'error') state.errors.push(m.error);
  else state.done = true;
};
worker.onerror = (ev) => {
  state.errors.push(ev.message || 'the worker failed to load');
  state.done = true;
};
worker.postMessage(Object.fromEntries(new URLSearchParams(location.search)));
