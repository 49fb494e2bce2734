/**
 * The library and the outputs: deleting asks first, a model already in the library is not stored
 * twice, earlier outputs say what they are, and "Download all" gives one zip holding exactly the
 * output's files, streamed into a file where the browser can, else built in memory.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatBytes } from '../../src/formats/size';
import { tinyTrioDir } from '../fixtures/tiny';
import {
  downloadAll,
  expect,
  importFolder,
  libraryKeys,
  libraryNames,
  openApp,
  runMergeInPage,
  setRecipe,
  TIES_RECIPE,
  test,
} from './app-harness';
import { viewShots } from './ux-checks';

/**
 * The entries of a zip, read through its central directory (client-zip streams, so sizes follow
 * each entry in a data descriptor). Only stored entries: anything compressed fails the test.
 */
function readStoredZip(zip: Buffer): Map<string, Buffer> {
  let end = zip.length - 22;
  while (end >= 0 && zip.readUInt32LE(end) !== 0x06054b50) end--;
  if (end < 0) throw new Error('no end of central directory');
  const count = zip.readUInt16LE(end + 10);
  let at = zip.readUInt32LE(end + 16);
  const out = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error(`bad central directory entry ${i}`);
    const method = zip.readUInt16LE(at + 10);
    const size = zip.readUInt32LE(at + 20);
    const nameLength = zip.readUInt16LE(at + 28);
    const extraLength = zip.readUInt16LE(at + 30);
    const commentLength = zip.readUInt16LE(at + 32);
    const local = zip.readUInt32LE(at + 42);
    const name = zip.subarray(at + 46, at + 46 + nameLength).toString('utf8');
    if (method !== 0) throw new Error(`${name} is compressed (method ${method}), not stored`);
    const data = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    out.set(name, zip.subarray(data, data + size));
    at += 46 + nameLength + extraLength + commentLength;
  }
  return out;
}

test('deleting asks first; a model already in the library is not stored again', async ({ page }) => {
  const trio = await tinyTrioDir();
  await openApp(page);
  await importFolder(page, join(trio, 'tiny-qwen-system1'));
  const keys = (await libraryKeys(page)).sort();
  await page.getByTestId('import-folder').setInputFiles(join(trio, 'tiny-qwen-system1'));
  const status = page.getByTestId('import-status');
  await expect(status).toHaveAttribute('data-state', 'error', { timeout: 30_000 });
  await expect(status).toHaveText(
    'tiny-qwen-system1 is already in the library as tiny-qwen-system1 (the same files, sizes and bytes); nothing was stored',
  );
  expect(await libraryNames(page)).toEqual(['tiny-qwen-system1']);
  expect((await libraryKeys(page)).sort()).toEqual(keys);

  // Per-model storage; Delete asks, Keep keeps, Delete deletes.
  const row = page.locator('[data-testid="library-model"][data-name="tiny-qwen-system1"]');
  await expect(row.getByTestId('model-storage')).toHaveText(/\d+(\.\d+)? kB/);
  await row.getByTestId('model-delete').click();
  await expect(row).toContainText('Delete');
  await viewShots(page, 'library-delete-confirm');
  await row.getByTestId('model-delete-keep').click();
  expect(await libraryNames(page)).toEqual(['tiny-qwen-system1']);
  await row.getByTestId('model-delete').click();
  await row.getByTestId('model-delete-confirm').click();
  await expect(page.getByTestId('library-model')).toHaveCount(0);
});

test('earlier outputs list method, models, date and size; Download all is one stored zip', async ({
  page,
}) => {
  const trio = await tinyTrioDir();
  await openApp(page);
  for (const name of ['tiny-qwen-system1', 'tiny-qwen-instruct', 'tiny-qwen-system2']) {
    await importFolder(page, join(trio, name));
  }
  await setRecipe(page, TIES_RECIPE);
  await runMergeInPage(page);
  const files = await downloadAll(page, await mkdtemp(join(tmpdir(), 'l2s-files-')));
  expect(files.size).toBe(7);

  // Streamed into a file the user picked (here a stand-in picker returning a file in OPFS).
  await page.evaluate(() => {
    (window as unknown as { showSaveFilePicker: unknown }).showSaveFilePicker = async () =>
      (await navigator.storage.getDirectory()).getFileHandle('picked.zip', { create: true });
  });
  await page.getByTestId('download-zip').click();
  await expect(page.getByTestId('output-message')).toContainText('streamed into the file you chose');
  const streamed = Buffer.from(
    await page.evaluate(async () => {
      const file = await (
        await (await navigator.storage.getDirectory()).getFileHandle('picked.zip')
      ).getFile();
      const bytes = new Uint8Array(await file.arrayBuffer());
      let text = '';
      for (let j = 0; j < bytes.length; j += 0x8000)
        text += String.fromCharCode(...bytes.subarray(j, j + 0x8000));
      return btoa(text);
    }),
    'base64',
  );
  const fromStream = readStoredZip(streamed);
  expect([...fromStream.keys()].sort()).toEqual([...files.keys()].sort());
  for (const [name, bytes] of files) expect(fromStream.get(name)?.equals(bytes), name).toBe(true);

  // Without a save picker, a download of the zip built in memory.
  await page.evaluate(() => {
    (window as unknown as { showSaveFilePicker: unknown }).showSaveFilePicker = undefined;
  });
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByTestId('download-zip').click(),
  ]);
  expect(download.suggestedFilename()).toBe('merged-model.zip');
  const path = join(await mkdtemp(join(tmpdir(), 'l2s-zip-')), 'merged-model.zip');
  await download.saveAs(path);
  const fromBlob = readStoredZip(await readFile(path));
  expect([...fromBlob.keys()].sort()).toEqual([...files.keys()].sort());
  for (const [name, bytes] of files) expect(fromBlob.get(name)?.equals(bytes), name).toBe(true);
  await expect(page.getByTestId('output-message')).toContainText('Downloading merged-model.zip');

  // A second merge: the first is listed as an earlier output with what it was.
  await setRecipe(page, TIES_RECIPE.replace('merge_method: ties', 'merge_method: dare_ties'));
  await runMergeInPage(page);
  const earlier = page.getByTestId('earlier-output');
  await expect(earlier).toHaveCount(1);
  await expect(earlier.getByTestId('earlier-output-method')).toHaveText('ties');
  await expect(earlier.getByTestId('earlier-output-models')).toHaveText(
    'tiny-qwen-system1, tiny-qwen-instruct, tiny-qwen-system2',
  );
  const total = [...files.values()].reduce((s, b) => s + b.length, 0);
  await expect(earlier.getByTestId('earlier-output-size')).toHaveText(formatBytes(total));
  await viewShots(page, 'outputs');
  await earlier.getByTestId('output-delete').click();
  await earlier.getByTestId('output-delete-confirm').click();
  await expect(earlier).toHaveCount(0);
});
