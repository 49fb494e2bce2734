/**
 * model-gpu.html: the model runtime's GPU cases (model-gpu-cases.ts) in a module Web Worker, for
 * test/browser/model-gpu.spec.ts.
 */
import { watchCases } from './case-runner';

watchCases(new Worker(new URL('./model-gpu-worker.ts', import.meta.url), { type: 'module' }));
