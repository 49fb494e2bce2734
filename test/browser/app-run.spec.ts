/**
 * Running a merge: auto keeps off software adapters (and says why) while the GPU stays selectable;
 * Cancel stops the worker at once, shows "Cancelling…" until every file is gone; a second tab sees
 * the merge running and does not offer to resume it.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import { makeTinyModel, TINY_TRIO, type TinyQwenShape } from '../../src/demo/tiny-qwen';
import { writeModel } from '../fixtures/tiny';
import { expect, importFolder, libraryKeys, openApp, runMergeInPage, setRecipe, test } from './app-harness';
import { checkView, viewShots } from './ux-checks';

/** Large enough that a CPU merge takes seconds, so Cancel and the second tab land mid-way. */
const MEDIUM_SHAPE: TinyQwenShape = {
  hiddenSize: 512,
  intermediateSize: 1408,
  layers: 8,
  heads: 8,
  kvHeads: 2,
  vocabSize: 4096,
};

/** Merges that last: 150 ms before each write of merged bytes (about 100 tensors here). */
const PACED = '?paceWrites=150';

const MEDIUM_TIES =
  'merge_method: ties\nbase_model: tiny-qwen-system1\nmodels:\n  - model: tiny-qwen-instruct\n    parameters: {weight: 1.0, density: 0.2}\ndtype: bfloat16\n';

async function opfsState(page: Page): Promise<{ runs: string[]; outputs: string[] }> {
  return page.evaluate(async () => {
    const root = await navigator.storage.getDirectory();
    const names = async (name: string) => {
      const out: string[] = [];
      const d = await root.getDirectoryHandle(name, { create: true });
      for await (const key of (d as unknown as { keys(): AsyncIterable<string> }).keys()) out.push(key);
      return out;
    };
    return { runs: await names('runs'), outputs: await names('outputs') };
  });
}

async function journalKeys(page: Page): Promise<string[]> {
  return page.evaluate(
    () =>
      new Promise<string[]>((resolve) => {
        const open = indexedDB.open('l2s-runs');
        open.onupgradeneeded = () => open.transaction?.abort();
        open.onerror = () => resolve([]);
        open.onsuccess = () => {
          const db = open.result;
          if (!db.objectStoreNames.contains('kv')) {
            db.close();
            resolve([]);
            return;
          }
          const req = db.transaction('kv', 'readonly').objectStore('kv').getAllKeys();
          req.onsuccess = () => {
            resolve(req.result.map(String));
            db.close();
          };
        };
      }),
  );
}

async function importMedium(page: Page): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'l2s-medium-'));
  for (const spec of [TINY_TRIO[0], TINY_TRIO[1]])
    await writeModel(dir, await makeTinyModel(spec, MEDIUM_SHAPE));
  await importFolder(page, join(dir, 'tiny-qwen-system1'));
  await importFolder(page, join(dir, 'tiny-qwen-instruct'));
}

test('auto keeps off a software adapter and says why; the GPU is still chosen by hand', async ({ page }) => {
  await openApp(page);
  const webgpu = page.getByTestId('webgpu-status');
  await expect(webgpu).toHaveAttribute('data-webgpu', /true|false/, { timeout: 30_000 });
  test.skip((await webgpu.getAttribute('data-webgpu')) !== 'true', 'no WebGPU adapter in this browser');
  const adapter = await page.evaluate(async () => {
    const a = await navigator.gpu.requestAdapter();
    return a ? `${a.info.vendor} ${a.info.architecture}` : '';
  });
  test.skip(!/swiftshader|llvmpipe|warp/i.test(adapter), `the adapter is hardware (${adapter})`);
  await expect(webgpu).toHaveAttribute('data-software', 'true');
  await expect(webgpu).toContainText('software renderer');
  await page.getByTestId('demo').click();
  await expect(page.getByTestId('library-model')).toHaveCount(3, { timeout: 30_000 });
  await expect(page.getByTestId('device-note')).toContainText(
    'auto merges on the CPU: the only WebGPU adapter is a software renderer (swiftshader)',
  );
  await runMergeInPage(page);
  const status = page.getByTestId('merge-status');
  await expect(status).toHaveAttribute('data-backend', 'cpu');
  await expect(page.locator('l2s-run-panel .log')).toContainText(
    'merging on the CPU: the only WebGPU adapter is a software renderer (swiftshader), slower than the CPU',
  );
  await viewShots(page, 'merge-auto-software');
  await page.getByTestId('merge-device').selectOption('gpu');
  await expect(page.getByTestId('device-note')).toHaveCount(0);
  await runMergeInPage(page);
  await expect(status).toHaveAttribute('data-backend', 'gpu');
  await expect(page.locator('l2s-run-panel .log')).toContainText('merging on the GPU (google swiftshader)');
});

test('Cancel stops the merge at once and shows Cancelling… until everything is removed', async ({ page }) => {
  // Each write waits, so the merge is still running when Cancel is pressed however fast the CPU is.
  await openApp(page, PACED);
  await importMedium(page);
  const keysBefore = (await libraryKeys(page)).sort();
  await setRecipe(page, MEDIUM_TIES);
  await page.getByTestId('merge-device').selectOption('cpu');
  // Every text the status shows, in order, as the page renders it.
  await page.evaluate(() => {
    const app = document.querySelector('l2s-app')!.shadowRoot!;
    const status = app
      .querySelector('l2s-run-panel')!
      .shadowRoot!.querySelector('[data-testid="merge-status"]')!;
    const seen: string[] = [];
    (window as unknown as { statusSeen: string[] }).statusSeen = seen;
    new MutationObserver(() =>
      seen.push(`${status.getAttribute('data-state')}:${status.textContent}`),
    ).observe(status, { attributes: true, childList: true, characterData: true, subtree: true });
  });
  await page.getByTestId('merge-run').click();
  const status = page.getByTestId('merge-status');
  await expect(status).toHaveAttribute('data-state', 'running');
  const progress = page.getByTestId('merge-progress');
  await expect(progress).toBeVisible();
  // Progress moves, says which tensor and backend; the bar is labelled.
  await expect(page.getByTestId('merge-working')).toContainText('on the CPU');
  await expect(progress).toHaveAttribute('aria-label', /Merge progress/);
  await expect
    .poll(() => progress.evaluate((p: HTMLProgressElement) => p.value), { timeout: 30_000 })
    .toBeGreaterThan(0);
  const { overflow, violations } = await checkView(page, 'merge-running');
  expect(overflow).toBeLessThanOrEqual(0);
  expect(violations, JSON.stringify(violations, null, 1)).toEqual([]);

  const clicked = Date.now();
  await page.getByTestId('merge-cancel').click();
  await expect(status).toHaveAttribute('data-state', 'idle', { timeout: 30_000 });
  // Reported, not asserted (speed is for benchmarks): how long Cancel took to remove everything.
  test.info().annotations.push({ type: 'cancel-ms', description: String(Date.now() - clicked) });
  console.log(`cancel took ${Date.now() - clicked} ms`);
  await expect(status).toHaveText('Merge cancelled; nothing was kept.');
  const seen = await page.evaluate(() => (window as unknown as { statusSeen: string[] }).statusSeen);
  expect(seen).toContain('cancelling:Cancelling…');
  expect(seen.indexOf('cancelling:Cancelling…')).toBeLessThan(
    seen.indexOf('idle:Merge cancelled; nothing was kept.'),
  );
  // Nothing of the run is left: no partial or finished output, no journal record, no library key.
  expect(await opfsState(page)).toEqual({ runs: [], outputs: [] });
  expect(await journalKeys(page)).toEqual([]);
  expect((await libraryKeys(page)).sort()).toEqual(keysBefore);
  await expect(page.getByTestId('download-file')).toHaveCount(0);

  // A reload finds nothing to resume; a new merge runs to the end.
  await page.reload();
  await openApp(page);
  await expect(page.getByTestId('merge-interrupted')).toHaveCount(0);
  await runMergeInPage(page);
  expect((await opfsState(page)).outputs).toHaveLength(1);
});

test('a second tab sees the merge running in the first and does not offer to resume it', async ({
  page,
  context,
}) => {
  await openApp(page, PACED);
  await importMedium(page);
  await setRecipe(page, MEDIUM_TIES);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-run').click();
  await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'running');
  await expect(page.getByTestId('merge-progress')).toBeVisible();

  const second = await context.newPage();
  await openApp(second, PACED);
  await expect(second.getByTestId('merge-elsewhere')).toBeVisible();
  await expect(second.getByTestId('merge-interrupted')).toHaveCount(0);
  await viewShots(second, 'merge-elsewhere');
  await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'done', { timeout: 90_000 });
  // The first tab's end reaches the second.
  await expect(second.getByTestId('merge-elsewhere')).toHaveCount(0);
  await expect(second.getByTestId('merge-interrupted')).toHaveCount(0);
  await second.close();
});

test('Cancel pressed after a merge into browser storage committed keeps that output and says so', async ({
  page,
}) => {
  // The finished merge waits 60 s after its commit before it answers: Cancel lands in that moment.
  await openApp(page, '?holdReply=60000');
  await importMedium(page);
  await setRecipe(page, MEDIUM_TIES);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-run').click();
  const status = page.getByTestId('merge-status');
  await expect(status).toHaveAttribute('data-state', 'running');
  // Committed: the output folder holds its manifest and the partial folder is gone.
  const committed = () =>
    page.evaluate(async () => {
      const root = await navigator.storage.getDirectory();
      const outputs = await root.getDirectoryHandle('outputs', { create: true });
      for await (const [, d] of (
        outputs as unknown as { entries(): AsyncIterable<[string, FileSystemDirectoryHandle]> }
      ).entries()) {
        if (
          await d.getFileHandle('.l2s-output.json').then(
            () => true,
            () => false,
          )
        )
          return true;
      }
      return false;
    });
  await expect.poll(committed, { timeout: 60_000 }).toBe(true);
  await expect.poll(async () => (await opfsState(page)).runs).toEqual([]);
  await expect(status).toHaveAttribute('data-state', 'running');
  await page.getByTestId('merge-cancel').click();
  await expect(status).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
  await expect(status).toHaveText(
    "Cancel came too late: the merge had already finished, and its output was kept in this browser's storage.",
  );
  // The output is listed and shown with its files; nothing is left to resume or clean up.
  const { outputs } = await opfsState(page);
  expect(outputs).toHaveLength(1);
  await expect(status).toHaveAttribute('data-output-id', outputs[0]);
  await expect(
    page.locator(`[data-testid="output-files"][data-output-id="${outputs[0]}"]`).getByTestId('download-file'),
  ).not.toHaveCount(0);
  expect(await journalKeys(page)).toEqual([]);
  await expect(page.getByTestId('merge-interrupted')).toHaveCount(0);
  await page.reload();
  await openApp(page);
  expect((await opfsState(page)).outputs).toEqual(outputs);
});
