/**
 * For the specs of the browser GPU case pages (harness/case-runner.ts): waits for every case of a
 * page to finish and fails with the list of failing cases.
 */
import { expect, type Page } from '@playwright/test';
import type { CaseResult } from './harness/case-runner';

/** Opens `url`, waits up to `timeoutMs` for its cases, checks that all ran and passed, and returns them. */
export async function expectAllCasesPass(page: Page, url: string, timeoutMs: number): Promise<CaseResult[]> {
  await page.goto(url);
  const handle = await page.waitForFunction(
    () => window.gpuCaseResults?.done && window.gpuCaseResults,
    undefined,
    { timeout: timeoutMs, polling: 500 },
  );
  const state = (await handle.jsonValue()) as { total: number; results: CaseResult[]; fatal?: string };
  expect(state.fatal, 'the worker could not run the cases').toBeUndefined();
  for (const r of state.results) if (r.note) console.log(`${r.name}: ${r.note}`);
  const failures = state.results.filter((r) => !r.ok).map((r) => `${r.name}: ${r.error}`);
  expect(failures, `failing cases of ${url}`).toEqual([]);
  expect(state.results.length).toBe(state.total);
  return state.results;
}
