/**
 * The GPU kernel cases of test/browser/harness/gpu-cases.ts in headless Chromium's WebGPU, inside a
 * module Web Worker, served by the Vite dev server (playwright.config.ts).
 */
import { expect, test } from '@playwright/test';

interface CaseResult {
  name: string;
  ok: boolean;
  ms: number;
  error?: string;
  note?: string;
}

test('every GPU kernel case passes in a browser worker', async ({ page }) => {
  // Minutes on a software adapter when the machine is busy; the cases themselves are checked, not their time.
  test.setTimeout(420_000);
  await page.goto('/test/browser/harness/gpu-kernels.html');
  const handle = await page.waitForFunction(
    () => window.gpuCaseResults?.done && window.gpuCaseResults,
    undefined,
    {
      timeout: 400_000,
      polling: 250,
    },
  );
  const state = (await handle.jsonValue()) as { total: number; results: CaseResult[]; fatal?: string };
  expect(state.fatal, 'the worker could not run the cases').toBeUndefined();
  for (const r of state.results) if (r.note) console.log(`${r.name}: ${r.note}`);
  const failures = state.results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.error}`);
  expect(failures, 'failing GPU cases').toEqual([]);
  expect(state.results.length).toBe(state.total);
  expect(state.total).toBeGreaterThan(20);
});
