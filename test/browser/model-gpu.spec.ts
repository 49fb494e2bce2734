/**
 * The model runtime on WebGPU in headless Chromium, inside a module Web Worker: every model kernel
 * against its TS twin, and the GPU runner on the fixture pair against transformers' reference outputs
 * and the CPU reference runner (test/browser/harness/model-gpu-cases.ts, the cases the Node tests run).
 */
import { expect, test } from '@playwright/test';

interface CaseResult {
  name: string;
  ok: boolean;
  ms: number;
  error?: string;
  note?: string;
}

test('the model kernels and the GPU runner pass in a browser worker', async ({ page }) => {
  test.setTimeout(1_200_000);
  await page.goto('/test/browser/harness/model-gpu.html');
  const handle = await page.waitForFunction(
    () => window.gpuCaseResults?.done && window.gpuCaseResults,
    undefined,
    {
      timeout: 1_180_000,
      polling: 500,
    },
  );
  const state = (await handle.jsonValue()) as { total: number; results: CaseResult[]; fatal?: string };
  expect(state.fatal, 'the worker could not run the cases').toBeUndefined();
  for (const r of state.results) if (r.note) console.log(`${r.name}: ${r.note}`);
  const failures = state.results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.error}`);
  expect(failures, 'failing model GPU cases').toEqual([]);
  expect(state.results.length).toBe(state.total);
  expect(state.results.filter((r) => r.name.startsWith('model GPU runner')).length).toBe(5);
});
