/**
 * Runs the GPU kernel cases in a module Web Worker (where the engine runs them in the app) and
 * publishes the results on `window.gpuCaseResults` for test/browser/gpu-kernels.spec.ts.
 */
import type { CaseResult, WorkerReport } from './gpu-worker';

declare global {
  interface Window {
    gpuCaseResults?: { done: boolean; total: number; results: CaseResult[]; fatal?: string };
  }
}

const log = document.getElementById('log')!;
const state: NonNullable<Window['gpuCaseResults']> = { done: false, total: 0, results: [] };
window.gpuCaseResults = state;

const worker = new Worker(new URL('./gpu-worker.ts', import.meta.url), { type: 'module' });
worker.onmessage = (ev: MessageEvent<WorkerReport>) => {
  const msg = ev.data;
  if (msg.type === 'start') state.total = msg.total;
  else if (msg.type === 'result') {
    state.results.push(msg.result);
    const r = msg.result;
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
