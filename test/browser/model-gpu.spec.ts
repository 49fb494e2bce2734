/**
 * The model runtime on WebGPU in headless Chromium, inside a module Web Worker: every model kernel
 * against its TS twin, and the GPU runner on the fixture pair against transformers' reference outputs
 * and the CPU reference runner (test/browser/harness/model-gpu-cases.ts, the cases the Node tests run,
 * less those marked nodeOnly).
 */
import { expect, test } from '@playwright/test';
import { expectAllCasesPass } from './gpu-case-results';

test('the model kernels and the GPU runner pass in a browser worker', async ({ page }) => {
  test.setTimeout(1_200_000);
  const results = await expectAllCasesPass(page, '/test/browser/harness/model-gpu.html', 1_180_000);
  // The runner cases but system2 against transformers (nodeOnly: system2 is checked against the CPU
  // reference runner here, and against transformers in test/unit/model-gpu-runner.test.ts).
  expect(results.filter((r) => r.name.startsWith('model GPU runner')).length).toBe(4);
});
