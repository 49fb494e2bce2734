/**
 * Page side of the browser bench: reads the options from the query string, starts the bench worker
 * and hands every message to `window.l2sBenchReport` (bench/browser.mjs provides it), also showing
 * it on the page for anyone who opens the page by hand.
 *
 * While a run goes, the page samples `performance.measureUserAgentSpecificMemory` (only the page
 * has it, and its answer includes the page's dedicated workers and their ArrayBuffers; it needs the
 * cross-origin isolation that bench/browser.mjs's server sets up) and reports the run's peak.
 */
import type { BenchConfig, BenchMessage, CaseName, Device, OutputKind } from './bench.worker';
import { QWEN25_05B } from './synthetic-qwen';

declare global {
  interface Window {
    l2sBenchReport?: (message: BenchMessage) => Promise<void>;
  }
}

/**
 * Each sample is also a garbage collection of the worker's (small) JS heap; four a second did not
 * change the timings measurably and catch the peak of runs under a second.
 */
const MEMORY_SAMPLE_MS = 250;

const logElement = document.getElementById('log')!;
const report = (message: BenchMessage) => {
  logElement.textContent += `${JSON.stringify(message)}\n`;
  return window.l2sBenchReport?.(message);
};

type MeasureMemory = () => Promise<{ bytes: number }>;
const measureMemory: MeasureMemory | undefined =
  crossOriginIsolated && 'measureUserAgentSpecificMemory' in performance
    ? (
        performance as Performance & { measureUserAgentSpecificMemory: MeasureMemory }
      ).measureUserAgentSpecificMemory.bind(performance)
    : undefined;

/** The peak of the samples taken between `start` and `stop`. */
class MemorySampler {
  private peak: number | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private pending: Promise<void> = Promise.resolve();

  start(): void {
    if (!measureMemory) return;
    this.peak = undefined;
    this.sample();
    this.timer = setInterval(() => this.sample(), MEMORY_SAMPLE_MS);
  }

  private sample(): void {
    // One measurement at a time; a slow one is not queued behind.
    this.pending = this.pending
      .then(async () => {
        const { bytes } = await measureMemory!();
        this.peak = Math.max(this.peak ?? 0, bytes);
      })
      // A refused measurement leaves a gap in the samples, not a failed run.
      .catch(() => undefined);
  }

  async stop(): Promise<number | undefined> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.pending;
    return this.peak;
  }
}

function listOf<T extends string>(value: string | null, fallback: T[]): T[] {
  return value ? (value.split(',').filter(Boolean) as T[]) : fallback;
}

const query = new URLSearchParams(location.search);
const config: BenchConfig = {
  layers: Number(query.get('layers') ?? 2),
  vocab: Number(query.get('vocab') ?? QWEN25_05B.vocabSize),
  repeat: Number(query.get('repeat') ?? 3),
  gpuRepeat: Number(query.get('gpuRepeat') ?? 1),
  cases: listOf<CaseName>(query.get('cases'), ['floor', 'task_arithmetic', 'ties']),
  devices: listOf<Device>(query.get('devices'), ['cpu', 'gpu']),
  threads: listOf(query.get('threads'), ['1']).map(Number),
  output: (query.get('output') ?? 'opfs') as OutputKind,
};

const sampler = new MemorySampler();
// Messages are handled one after another: a run's report waits for its last memory sample.
let handled: Promise<unknown> = Promise.resolve();
const handle = async (message: BenchMessage) => {
  if (message.type === 'ready') {
    await report({ ...message, memorySource: measureMemory ? 'measureUserAgentSpecificMemory' : undefined });
  } else if (message.type === 'run-start') {
    sampler.start();
    await report(message);
  } else if (message.type === 'run') {
    const jsPeakBytes = await sampler.stop();
    await report({ ...message, result: { ...message.result, jsPeakBytes } });
  } else {
    await report(message);
  }
};

const worker = new Worker(new URL('./bench.worker.ts', import.meta.url), { type: 'module' });
worker.onmessage = (ev: MessageEvent<BenchMessage>) => {
  handled = handled
    .then(() => handle(ev.data))
    .catch((e: Error) => report({ type: 'fatal', error: e.message }));
};
worker.onerror = (ev) => {
  ev.preventDefault();
  void report({ type: 'fatal', error: `the bench worker failed: ${ev.message || 'it did not load'}` });
};
worker.postMessage(config);
