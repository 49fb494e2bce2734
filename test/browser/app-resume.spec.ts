/**
 * A merge cut short by a reload resumes from its last finished tensor and ends with exactly the
 * bytes the Node CLI writes; a discarded interrupted merge leaves nothing in OPFS or the journal.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import { makeTinyModel, TINY_TRIO, type TinyQwenShape } from '../../src/demo/tiny-qwen';
import { writeModel } from '../fixtures/tiny';
import {
  cliMerge,
  downloadAll,
  expect,
  importFolder,
  openApp,
  screenshot,
  setRecipe,
  TIES_RECIPE,
  test,
} from './app-harness';

/** The tiny trio at a size where a CPU merge takes a few seconds, so a reload lands mid-way. */
const MEDIUM_SHAPE: TinyQwenShape = {
  hiddenSize: 512,
  intermediateSize: 1408,
  layers: 8,
  heads: 8,
  kvHeads: 2,
  vocabSize: 4096,
};

/**
 * Small shards (32, 43 and 24 tensors), so the interruption leaves a finished shard behind and one
 * half written.
 */
const SHARD_SIZE = '20M';
const FIRST_SHARD_TENSORS = 32;

/** The merge journal's records, read directly from IndexedDB (never creating the database). */
async function journal(page: Page): Promise<{ runId: string; tensorsDone: number; tensorsTotal: number }[]> {
  return page.evaluate(
    () =>
      new Promise((resolvePromise, reject) => {
        const open = indexedDB.open('l2s-runs');
        open.onupgradeneeded = () => open.transaction?.abort();
        open.onerror = () => resolvePromise([]);
        open.onsuccess = () => {
          const db = open.result;
          if (!db.objectStoreNames.contains('kv')) {
            db.close();
            resolvePromise([]);
            return;
          }
          const req = db.transaction('kv', 'readonly').objectStore('kv').getAll();
          req.onsuccess = () => {
            resolvePromise(req.result);
            db.close();
          };
          req.onerror = () => reject(req.error);
        };
      }),
  );
}

async function opfsRuns(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const root = await navigator.storage.getDirectory();
    const runs = await root.getDirectoryHandle('runs', { create: true });
    const names: string[] = [];
    for await (const key of (runs as unknown as { keys(): AsyncIterable<string> }).keys()) names.push(key);
    return names;
  });
}

/** Starts a CPU merge and reloads the page once `minTensors` tensors are recorded as done. */
async function mergeThenReload(page: Page, minTensors: number): Promise<void> {
  await setRecipe(page, TIES_RECIPE);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-shard-size').fill(SHARD_SIZE);
  await page.getByTestId('merge-run').click();
  await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'running');
  await expect
    .poll(async () => (await journal(page))[0]?.tensorsDone ?? 0, { intervals: [20], timeout: 30_000 })
    .toBeGreaterThanOrEqual(minTensors);
  await page.reload();
  await openApp(page);
}

test('a merge cut short by a reload resumes to the CLI bytes; discard leaves nothing', async ({ page }) => {
  // Three merges and a CLI run: over 2 minutes when the 2 cores are shared with the unit tests.
  test.setTimeout(240_000);
  const dir = await mkdtemp(join(tmpdir(), 'l2s-resume-'));
  for (const spec of TINY_TRIO) await writeModel(dir, await makeTinyModel(spec, MEDIUM_SHAPE));
  const recipePath = join(dir, 'ties.yml');
  await writeFile(recipePath, TIES_RECIPE);
  const cliFiles = await cliMerge(recipePath, join(dir, 'cli-out'), [
    '--device',
    'cpu',
    '--out-shard-size',
    SHARD_SIZE,
  ]);
  expect(cliFiles.has('model-00003-of-00003.safetensors')).toBe(true);

  await openApp(page);
  for (const name of ['tiny-qwen-system1', 'tiny-qwen-instruct', 'tiny-qwen-system2']) {
    await importFolder(page, join(dir, name));
  }

  // Discard: the partial output and the journal record go.
  await mergeThenReload(page, 3);
  const discarded = page.getByTestId('merge-interrupted');
  await expect(discarded).toHaveCount(1);
  const discardedId = await discarded.getAttribute('data-run-id');
  expect(await opfsRuns(page)).toEqual([`${discardedId}.partial`]);
  await page.getByTestId('merge-discard').click();
  await expect(discarded).toHaveCount(0);
  expect(await opfsRuns(page)).toEqual([]);
  expect(await journal(page)).toEqual([]);

  // Resume: from the recorded tensor on, to the same bytes as an uninterrupted merge.
  await mergeThenReload(page, FIRST_SHARD_TENSORS + 8);
  const interrupted = page.getByTestId('merge-interrupted');
  await expect(interrupted).toHaveCount(1);
  const [record] = await journal(page);
  expect(record.tensorsTotal).toBe(99);
  expect(record.tensorsDone).toBeGreaterThan(FIRST_SHARD_TENSORS);
  expect(record.tensorsDone).toBeLessThan(record.tensorsTotal);
  await expect(interrupted).toContainText(
    `Merge interrupted after ${record.tensorsDone} of ${record.tensorsTotal} tensors`,
  );
  await screenshot(page, 'merge-interrupted');
  const status = page.getByTestId('merge-status');
  // The resumed merge puts its own recipe back in the editor, whatever is there now.
  await setRecipe(page, 'merge_method: linear\n');
  await page.getByTestId('merge-resume').click();
  await expect(page.getByTestId('recipe-yaml')).toHaveValue(TIES_RECIPE);
  await expect(status).toHaveAttribute('data-state', /running|done|error/);
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
  await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
  await expect(page.locator('l2s-run-panel .log')).toContainText(
    `resuming after ${record.tensorsDone} of ${record.tensorsTotal} tensors`,
  );
  await expect(interrupted).toHaveCount(0);
  expect(await opfsRuns(page)).toEqual([]);
  expect(await journal(page)).toEqual([]);

  const browserFiles = await downloadAll(page, join(dir, 'browser-out'));
  expect([...browserFiles.keys()].sort()).toEqual([...cliFiles.keys()].sort());
  for (const [name, bytes] of cliFiles) {
    expect(browserFiles.get(name)?.equals(bytes), `${name} differs from the CLI's`).toBe(true);
  }
});
