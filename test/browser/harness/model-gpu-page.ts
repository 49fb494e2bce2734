/**
 * Runs the model runtime's GPU cases (model-gpu-cases.ts) in a module Web Worker and publishes the
 * results on `window.gpuCaseResults` for test/browser/model-gpu.spec.ts.
 */
import type { CaseResult, WorkerReport } from './gpu-worker';

const log = document.getElementById('log')!;
const state: NonNullable<Window['gpuCaseResults']> = { done: false, total: 0, results: [] };
window.gpuCaseResults = state;

const worker = new Worker(new URL('./model-gpu-worker.ts', import.meta.url), {
  type: 'module',
});
worker.onmessage = (ev: MessageEvent<WorkerReport>) => {
  const msg = ev.data;
  if (msg.type === 'start') state.total = msg.total;
  else if (msg.type === 'result') {
    const r: CaseResult = msg.result;
    state.results.push(r);
    log.textContent += `${r.ok ? 'ok  ' : 'FAIL'} ${r.name} (${r.ms} ms)${r.error ? `\n     ${r.error}` : ''}${r.note ? `\n     ${r.note}` : ''}\n`;
  } else if (msg.type === 'done') state.done = true;
  else {
    state.fatal = msg.error;
    state.done = true;
    log.textContent += `fatal: ${msg.error}\n`;
  }
};
worker.postMessage({ only: new URLSearchParams(location.search).get('only') });
worker.onerror = (ev) => {
  state.fatal = ev.message || 'the worker failed to load';
  state.done = true;
};
