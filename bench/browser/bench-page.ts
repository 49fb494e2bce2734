/**
 * Page side of the browser bench: reads the options from the query string, starts the bench worker
 * and hands every message to `window.l2sBenchReport` (bench/browser.mjs provides it), also showing
 * it on the page for anyone who opens the page by hand.
 */
import type { BenchConfig, BenchMessage, CaseName, Device, OutputKind } from './bench.worker';

declare global {
  interface Window {
    l2sBenchReport?: (message: BenchMessage) => Promise<void>;
  }
}

const logElement = document.getElementById('log')!;
const show = (line: string) => {
  logElement.textContent += `${line}\n`;
};
const report = (message: BenchMessage) => {
  show(JSON.stringify(message));
  void window.l2sBenchReport?.(message);
};

function listOf<T extends string>(value: string | null, fallback: T[]): T[] {
  return value ? (value.split(',').filter(Boolean) as T[]) : fallback;
}

const query = new URLSearchParams(location.search);
const config: BenchConfig = {
  layers: Number(query.get('layers') ?? 2),
  repeat: Number(query.get('repeat') ?? 3),
  cases: listOf<CaseName>(query.get('cases'), ['baseline', 'task_arithmetic', 'ties']),
  devices: listOf<Device>(query.get('devices'), ['cpu', 'gpu']),
  output: (query.get('output') ?? 'opfs') as OutputKind,
};

const worker = new Worker(new URL('./bench.worker.ts', import.meta.url), { type: 'module' });
worker.onmessage = (ev: MessageEvent<BenchMessage>) => report(ev.data);
worker.onerror = (ev) => {
  ev.preventDefault();
  report({ type: 'fatal', error: `the bench worker failed: ${ev.message || 'it did not load'}` });
};
worker.postMessage(config);
