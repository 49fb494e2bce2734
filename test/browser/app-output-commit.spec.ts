/**
 * The commit of a merge's output is atomic from the user's view: a tab that dies while the files
 * are being moved into `outputs/` leaves nothing listed; at the next start the half-moved files go
 * back to the run, which resumes to the same bytes as an uninterrupted merge.
 */
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import { tinyTrioDir } from '../fixtures/tiny';
import {
  expect,
  importFolder,
  openApp,
  runMergeInPage,
  screenshot,
  setRecipe,
  TIES_RECIPE,
  test,
} from './app-harness';

/** Entries of `runs/` and `outputs/`, and of each output folder, read from OPFS directly. */
async function opfsTree(page: Page): Promise<{ runs: string[]; outputs: Record<string, string[]> }> {
  return page.evaluate(async () => {
    const names = async (d: FileSystemDirectoryHandle) => {
      const out: string[] = [];
      for await (const key of (d as unknown as { keys(): AsyncIterable<string> }).keys()) out.push(key);
      return out.sort();
    };
    const root = await navigator.storage.getDirectory();
    const outputsDir = await root.getDirectoryHandle('outputs', { create: true });
    const outputs: Record<string, string[]> = {};
    for (const id of await names(outputsDir))
      outputs[id] = await names(await outputsDir.getDirectoryHandle(id));
    return { runs: await names(await root.getDirectoryHandle('runs', { create: true })), outputs };
  });
}

/** sha256 of each file of a finished output (its manifest aside, which holds a time). */
async function outputHashes(page: Page, id: string): Promise<Record<string, string>> {
  return page.evaluate(async (outputId) => {
    const root = await navigator.storage.getDirectory();
    const d = await (await root.getDirectoryHandle('outputs')).getDirectoryHandle(outputId);
    const out: Record<string, string> = {};
    for await (const [name, handle] of (
      d as unknown as { entries(): AsyncIterable<[string, FileSystemFileHandle]> }
    ).entries()) {
      if (name === '.l2s-output.json') continue;
      const digest = await crypto.subtle.digest('SHA-256', await (await handle.getFile()).arrayBuffer());
      out[name] = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
    }
    return out;
  }, id);
}

test('a tab that dies mid-commit leaves no output listed; the run resumes to the same bytes', async ({
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
  const first = (await page.getByTestId('merge-status').getAttribute('data-output-id')) ?? '';
  const expected = await outputHashes(page, first);
  expect(Object.keys(expected).length).toBeGreaterThan(3);

  // The second merge's commit stops after moving two files, and the tab goes.
  await openApp(page, '?stallCommit=2');
  await setRecipe(page, TIES_RECIPE);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-run').click();
  await expect
    .poll(async () => Object.values((await opfsTree(page)).outputs).filter((f) => f.length === 2).length, {
      timeout: 60_000,
    })
    .toBe(1);
  const cut = Object.keys((await opfsTree(page)).outputs).find((id) => id !== first) ?? '';
  await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'running');
  await openApp(page);

  // Only the first output is listed, and the half-moved files are back in the run's folder.
  await expect(page.getByTestId('earlier-output')).toHaveCount(1);
  const tree = await opfsTree(page);
  expect(Object.keys(tree.outputs)).toEqual([first]);
  expect(tree.runs).toEqual([`${cut}.partial`]);
  const interrupted = page.getByTestId('merge-interrupted');
  await expect(interrupted).toHaveCount(1);
  await expect(interrupted).toHaveAttribute('data-run-id', cut);
  await screenshot(page, 'merge-commit-cut');

  await page.getByTestId('merge-resume').click();
  const status = page.getByTestId('merge-status');
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
  await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
  await expect(status).toHaveAttribute('data-output-id', cut);
  expect(await outputHashes(page, cut)).toEqual(expected);
  const after = await opfsTree(page);
  expect(after.runs).toEqual([]);
  expect(Object.keys(after.outputs).sort()).toEqual([first, cut].sort());
  await expect(page.getByTestId('earlier-output')).toHaveCount(1);
});

test('outputs written before manifests stay listed; a delete cut short and empty folders go', async ({
  page,
}) => {
  await openApp(page);
  await page.evaluate(async () => {
    const root = await navigator.storage.getDirectory();
    const outputs = await root.getDirectoryHandle('outputs', { create: true });
    const put = async (folder: string, name: string, bytes: Uint8Array) => {
      const d = await outputs.getDirectoryHandle(folder, { create: true });
      const w = await (await d.getFileHandle(name, { create: true })).createWritable();
      await w.write(bytes as Uint8Array<ArrayBuffer>);
      await w.close();
    };
    await put('legacy-output', 'model.safetensors', new Uint8Array(3000).fill(7));
    await put('legacy-output', 'config.json', new TextEncoder().encode('{}'));
    await put('deleting-output', '.l2s-deleting', new Uint8Array(0));
    await put('deleting-output', 'config.json', new TextEncoder().encode('{}'));
    await outputs.getDirectoryHandle('empty-output', { create: true });
  });
  await page.reload();
  await openApp(page);
  const earlier = page.getByTestId('earlier-output');
  await expect(earlier).toHaveCount(1);
  await expect(earlier).toContainText('2 files');
  expect((await opfsTree(page)).outputs).toEqual({
    'legacy-output': ['.l2s-output.json', 'config.json', 'model.safetensors'],
  });
  await earlier.getByRole('button', { name: 'Show' }).click();
  await expect(page.getByTestId('download-file')).toHaveText(['config.json', 'model.safetensors']);
  await page.getByRole('button', { name: 'Delete output' }).click();
  await page.getByTestId('output-delete-confirm').click();
  await expect(page.getByTestId('download-file')).toHaveCount(0);
  await expect(earlier).toHaveCount(0);
  expect((await opfsTree(page)).outputs).toEqual({});
});
