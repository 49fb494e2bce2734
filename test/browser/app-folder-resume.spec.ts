/**
 * A merge written straight into a folder (`?opfsPicker`: an OPFS folder stands in for one on the
 * user's computer) survives a reload: the journal keeps the folder's handle, Resume asks for the
 * folder's permission again, reopens the temporary files with their data, cuts them to the last
 * recorded tensor and goes on, to the CLI's bytes, leaving no temporary file. Partial files that
 * were changed since are refused by name, and the run is offered to start again.
 */
import type { Page } from '@playwright/test';
import { expect, openApp, setRecipe, test } from './app-harness';
import {
  answerPicks,
  cliOutput,
  expectSameFiles,
  forgetPermissions,
  linkFixturePair,
  permissionRequests,
  readOpfsTree,
  stubPermissions,
  TIES_PAIR,
} from './opfs-folders';

/** The merge journal's records, read from IndexedDB (never creating the database). */
async function journal(page: Page): Promise<{ tensorsDone: number; tensorsTotal: number }[]> {
  return page.evaluate(
    () =>
      new Promise((resolvePromise) => {
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
            resolvePromise(req.result.filter((r) => typeof r === 'object' && r && 'tensorsDone' in r));
            db.close();
          };
        };
      }),
  );
}

/** Starts the merge into the folder, and reloads once the journal counts tensors a reload keeps. */
async function mergeAndReload(page: Page): Promise<{ tensorsDone: number; tensorsTotal: number }> {
  await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'running');
  await expect
    .poll(async () => (await journal(page))[0]?.tensorsDone ?? 0, { intervals: [50], timeout: 60_000 })
    .toBeGreaterThan(0);
  await page.reload();
  await expect(page.getByTestId('storage-use')).toContainText('used of', { timeout: 30_000 });
  const [record] = await journal(page);
  expect(record.tensorsDone).toBeLessThan(record.tensorsTotal);
  return record;
}

test('a merge into a folder cut short by a reload resumes there to the CLI bytes; changed partial files are refused and it starts again', async ({
  page,
}) => {
  test.setTimeout(240_000);
  const cliFiles = await cliOutput();
  answerPicks(page, ['picked/system1', 'picked/system2', 'out']);
  await stubPermissions(page, true);
  await openApp(page, '?opfsPicker&paceWrites=100');
  await page.evaluate(async () => {
    await (await navigator.storage.getDirectory()).getDirectoryHandle('out', { create: true });
  });
  await linkFixturePair(page);
  await setRecipe(page, TIES_PAIR);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-output-to').selectOption('folder');
  await page.getByTestId('merge-run').click();
  const first = await mergeAndReload(page);

  // The partial shard shortened behind the page's back: Resume refuses it by name and offers Start again.
  const interrupted = page.getByTestId('merge-interrupted');
  await expect(interrupted).toHaveAttribute('data-folder', 'out/merged-model', { timeout: 30_000 });
  await expect(interrupted).toContainText(
    `interrupted after ${first.tensorsDone} of ${first.tensorsTotal} tensors`,
  );
  await page.evaluate(async () => {
    const out = await (await navigator.storage.getDirectory()).getDirectoryHandle('out');
    const folder = await out.getDirectoryHandle('merged-model');
    const writable = await (await folder.getFileHandle('.model.safetensors.l2s-partial')).createWritable({
      keepExistingData: true,
    });
    await writable.truncate(100);
    await writable.close();
  });
  const status = page.getByTestId('merge-status');
  await interrupted.getByTestId('merge-resume').click();
  await expect(status).toHaveAttribute('data-state', 'error', { timeout: 30_000 });
  await expect(status).toContainText(
    'ResumeError: the merge into out/merged-model cannot continue: model.safetensors holds 100 bytes, fewer than the',
  );
  await expect(status).toContainText('Start it again (its partial files are removed first) or discard it.');
  await expect(interrupted).toHaveAttribute('data-state', 'cannot-resume');
  await expect(interrupted.getByTestId('merge-resume')).toHaveCount(0);
  await interrupted.getByTestId('merge-restart').click();
  await expect(status).toContainText('Merging into out/merged-model', { timeout: 30_000 });

  // The run started again is cut short too; this time Resume asks for the folder and goes on.
  const second = await mergeAndReload(page);
  await forgetPermissions(page);
  const asked = await permissionRequests(page);
  await expect(interrupted).toHaveAttribute('data-tensors-done', String(second.tensorsDone), {
    timeout: 30_000,
  });
  await interrupted.getByTestId('merge-resume').click();
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 120_000 });
  await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
  expect(await permissionRequests(page)).toBeGreaterThan(asked);
  await expect(page.locator('l2s-run-panel .log')).toContainText(
    `resuming after ${second.tensorsDone} of ${second.tensorsTotal} tensors`,
  );
  await expect(status).toContainText('Written to the folder out/merged-model on this computer.');
  await expect(page.getByTestId('merge-interrupted')).toHaveCount(0);
  expect(await journal(page)).toEqual([]);
  // The folder holds the output under its final names and nothing else: no temporary, no swap file.
  const out = await readOpfsTree(page, 'out');
  expect([...out.keys()].filter((n) => !n.startsWith('merged-model/') || /\/\.|\.crswap$/.test(n))).toEqual(
    [],
  );
  const files = new Map([...out].map(([n, b]) => [n.replace(/^merged-model\//, ''), b]));
  expectSameFiles(files, cliFiles, 'merge resumed in the folder');
});
