/// <reference lib="webworker" />
/**
 * Worker side of gpu-kernels.html: every case (kernels, methods, randomized SVD) with a fresh
 * GpuContext on navigator.gpu.
 */
import { GpuContext } from '../../../src/gpu/device';
import { AIM_GPU_CASES } from './aim-gpu-cases';
import { GPU_CASES } from './gpu-cases';
import { RSVD_CASES } from './gpu-rsvd-cases';

const ALL_CASES = [...GPU_CASES, ...RSVD_CASES, ...AIM_GPU_CASES];

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

const post = (m: WorkerReport) => (self as unknown as DedicatedWorkerGlobalScope).postMessage(m);

async function main(): Promise<void> {
  const only = new URLSearchParams(self.location.search).get('only');
  const cases = only ? ALL_CASES.filter((c) => c.name.includes(only)) : ALL_CASES;
  post({ type: 'start', total: cases.length });
  for (const c of cases) {
    const t0 = performance.now();
    let ctx: GpuContext | undefined;
    try {
      ctx = await GpuContext.create({ label: 'browser-test', ...c.options });
      const note = await c.run(ctx);
      post({
        type: 'result',
        result: {
          name: c.name,
          ok: true,
          ms: Math.round(performance.now() - t0),
          note: typeof note === 'string' ? note : undefined,
        },
      });
    } catch (e) {
      const err = e as Error;
      post({
        type: 'result',
        result: {
          name: c.name,
          ok: false,
          ms: Math.round(performance.now() - t0),
          error: `${err.name}: ${err.message}`,
        },
      });
    } finally {
      ctx?.destroy();
    }
  }
  post({ type: 'done' });
}

main().catch((e) => post({ type: 'fatal', error: String((e as Error)?.stack ?? e) }));
