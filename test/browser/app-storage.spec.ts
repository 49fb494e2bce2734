/**
 * Storage edge cases: a full quota is reported naming the file and leaves the library as it was,
 * for an import and for a merge (whose earlier outputs stay as they were too); a cancelled merge
 * leaves nothing in the outputs or the library.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTinyModel, TINY_TRIO, type TinyQwenShape } from '../../src/demo/tiny-qwen';
import { tinyTrioDir, writeModel } from '../fixtures/tiny';
import {
  BASE_URL,
  expect,
  importFolder,
  libraryKeys,
  libraryNames,
  openApp,
  runMergeInPage,
  screenshot,
  setRecipe,
  TIES_RECIPE,
  test,
} from './app-harness';

test('a full quota is reported naming the file, and the library stays intact', async ({ page }) => {
  const trio = await tinyTrioDir();
  await openApp(page);
  await importFolder(page, join(trio, 'tiny-qwen-system1'));
  const keysBefore = (await libraryKeys(page)).sort();
  const usage = await page.evaluate(async () => (await navigator.storage.estimate()).usage ?? 0);
  const cdp = await page.context().newCDPSession(page);
  // Chromium's IndexedDB keeps the quota it opened the database with, and closes a database a
  // couple of seconds after its last connection: leave the page, wait, then shrink the quota.
  await page.goto('about:blank');
  await page.waitForTimeout(3000);
  // Room for well under the next model (~480 kB).
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: BASE_URL, quotaSize: usage + 150_000 });
  await openApp(page);

  await page.getByTestId('import-folder').setInputFiles(join(trio, 'tiny-qwen-system2'));
  const status = page.getByTestId('import-status');
  await expect(status).toContainText('tiny-qwen-system2', { timeout: 60_000 });
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
  await expect(status).toContainText('storage is full');
  await expect(status).toHaveAttribute('data-state', 'error');
  await expect(status).toContainText(/tiny-qwen-system2\/model-0000[12]-of-00002\.safetensors/);
  await screenshot(page, 'storage-full');
  expect(await libraryNames(page)).toEqual(['tiny-qwen-system1']);
  expect((await libraryKeys(page)).sort()).toEqual(keysBefore);

  // With room again, imports work as before.
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: BASE_URL });
  await page.reload();
  await expect(page.getByTestId('storage-use')).toContainText('used of');
  await importFolder(page, join(trio, 'tiny-qwen-instruct'));
  expect(await libraryNames(page)).toEqual(['tiny-qwen-system1', 'tiny-qwen-instruct']);
});

/** Names, sizes and sha256 of every file in OPFS `outputs/` and `runs/`, read directly. */
async function opfsFiles(page: import('@playwright/test').Page): Promise<Record<string, string>> {
  return page.evaluate(async () => {
    const out: Record<string, string> = {};
    const walk = async (d: FileSystemDirectoryHandle, prefix: string) => {
      for await (const [name, h] of (
        d as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }
      ).entries()) {
        if (h.kind === 'directory') {
          await walk(h as FileSystemDirectoryHandle, `${prefix}${name}/`);
          continue;
        }
        const file = await (h as FileSystemFileHandle).getFile();
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', await file.arrayBuffer()));
        out[prefix + name] =
          `${file.size} ${Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('')}`;
      }
    };
    const root = await navigator.storage.getDirectory();
    for (const top of ['outputs', 'runs'])
      await walk(await root.getDirectoryHandle(top, { create: true }), `${top}/`);
    return out;
  });
}

test('a merge over the quota is reported naming the file; library and earlier outputs stay', async ({
  page,
}) => {
  const trio = await tinyTrioDir();
  await openApp(page);
  for (const name of ['tiny-qwen-system1', 'tiny-qwen-instruct', 'tiny-qwen-system2']) {
    await importFolder(page, join(trio, name));
  }
  await setRecipe(page, TIES_RECIPE);
  await page.getByTestId('merge-device').selectOption('cpu');
  await runMergeInPage(page);
  const keysBefore = (await libraryKeys(page)).sort();
  const opfsBefore = await opfsFiles(page);
  expect(Object.keys(opfsBefore).filter((k) => k.endsWith('.safetensors')).length).toBeGreaterThan(0);
  const usage = await page.evaluate(async () => (await navigator.storage.estimate()).usage ?? 0);
  const cdp = await page.context().newCDPSession(page);
  // As for the import above: leave the page so storage is reopened under the new quota.
  await page.goto('about:blank');
  await page.waitForTimeout(3000);
  // Room for well under a second output (~480 kB).
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: BASE_URL, quotaSize: usage + 150_000 });
  await openApp(page);

  await setRecipe(page, TIES_RECIPE);
  await page.getByTestId('merge-device').selectOption('cpu');
  const status = page.getByTestId('merge-status');
  await page.getByTestId('merge-run').click();
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
  await expect(status).toHaveAttribute('data-state', 'error');
  await expect(status).toHaveText(
    /^OutputStorageFullError: Browser storage is full while writing model(-\d{5}-of-\d{5})?\.safetensors\. The merge was stopped and its partial files deleted; your models and earlier outputs are untouched\. Free space \(delete models or outputs you no longer need, or press "Keep storage" to allow more\) and run the merge again\.$/,
  );
  await screenshot(page, 'merge-storage-full');
  expect(await libraryNames(page)).toEqual(['tiny-qwen-system1', 'tiny-qwen-instruct', 'tiny-qwen-system2']);
  expect((await libraryKeys(page)).sort()).toEqual(keysBefore);
  // The earlier output is byte for byte as it was, still listed; nothing of the failed run is left.
  expect(await opfsFiles(page)).toEqual(opfsBefore);
  await expect(page.getByTestId('earlier-output')).toHaveCount(1);
  await expect(page.getByTestId('merge-interrupted')).toHaveCount(0);

  await cdp.send('Storage.overrideQuotaForOrigin', { origin: BASE_URL });
  await page.reload();
  await openApp(page);
  await setRecipe(page, TIES_RECIPE);
  await page.getByTestId('merge-device').selectOption('cpu');
  await runMergeInPage(page);
  await expect(page.getByTestId('earlier-output')).toHaveCount(1);
});

/** Large enough that a CPU merge takes seconds, so the cancel lands mid-way. */
const MEDIUM_SHAPE: TinyQwenShape = {
  hiddenSize: 512,
  intermediateSize: 1408,
  layers: 8,
  heads: 8,
  kvHeads: 2,
  vocabSize: 4096,
};

test('a cancelled merge leaves nothing in outputs or the library', async ({ page }) => {
  const dir = await mkdtemp(join(tmpdir(), 'l2s-medium-'));
  for (const spec of [TINY_TRIO[0], TINY_TRIO[1]])
    await writeModel(dir, await makeTinyModel(spec, MEDIUM_SHAPE));
  await openApp(page);
  await importFolder(page, join(dir, 'tiny-qwen-system1'));
  await importFolder(page, join(dir, 'tiny-qwen-instruct'));
  const keysBefore = (await libraryKeys(page)).sort();
  await setRecipe(
    page,
    'merge_method: ties\nbase_model: tiny-qwen-system1\nmodels:\n  - model: tiny-qwen-instruct\n    parameters: {weight: 1.0, density: 0.2}\ndtype: bfloat16\n',
  );
  await page.getByTestId('merge-run').click();
  const status = page.getByTestId('merge-status');
  await expect(status).toHaveAttribute('data-state', 'running');
  await expect(page.getByTestId('merge-progress')).toBeVisible();
  await screenshot(page, 'merge-running');
  await page.getByTestId('merge-cancel').click();
  await expect(status).toHaveAttribute('data-state', 'idle', { timeout: 30_000 });
  await expect(status).toContainText('cancelled');
  await expect(page.getByTestId('download-file')).toHaveCount(0);
  const opfs = await page.evaluate(async () => {
    const root = await navigator.storage.getDirectory();
    const names = async (name: string) => {
      const out: string[] = [];
      const d = await root.getDirectoryHandle(name, { create: true });
      for await (const key of (d as unknown as { keys(): AsyncIterable<string> }).keys()) out.push(key);
      return out;
    };
    return { runs: await names('runs'), outputs: await names('outputs') };
  });
  expect(opfs).toEqual({ runs: [], outputs: [] });
  expect((await libraryKeys(page)).sort()).toEqual(keysBefore);
});
