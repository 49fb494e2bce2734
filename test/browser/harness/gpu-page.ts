/**
 * gpu-kernels.html: the GPU kernel cases in a module Web Worker (where the engine runs them in the
 * app), for test/browser/gpu-kernels.spec.ts.
 */
import { watchCases } from './case-runner';

watchCases(new Worker(new URL('./gpu-worker.ts', import.meta.url), { type: 'module' }));
