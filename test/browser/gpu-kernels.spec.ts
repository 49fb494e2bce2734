/**
 * The GPU kernel cases of test/browser/harness/gpu-cases.ts in headless Chromium's WebGPU, inside a
 * module Web Worker, served by the Vite dev server (playwright.config.ts). Cases marked nodeOnly (the
 * same WGSL on other tiles, or streamed by the same TS) run in the Node tests only; ?all=1 runs them here.
 */
import { expect, test } from '@playwright/test';
import { expectAllCasesPass } from './gpu-case-results';

test('every GPU kernel case passes in a browser worker', async ({ page }) => {
  // Minutes on a software adapter when the machine is busy; the cases themselves are checked, not their time.
  test.setTimeout(420_000);
  const results = await expectAllCasesPass(page, '/test/browser/harness/gpu-kernels.html', 400_000);
  expect(results.length).toBeGreaterThan(20);
});
