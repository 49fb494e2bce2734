/**
 * The hub from the merge side: pushing an output creates (then updates) a model repo on the chosen
 * hub with the token sent to it alone; errors say what to do; a recipe naming a hub id the library
 * lacks offers to download it.
 */

import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { downloadAll, expect, libraryNames, openApp, runMergeInPage, setRecipe, test } from './app-harness';
import { HubServer } from './hub-server';
import { checkView } from './ux-checks';

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test('Push to the hub creates, then updates, a repo; the token goes to the hub only', async ({ page }) => {
  const hub = new HubServer();
  const storage = new HubServer();
  await hub.start();
  await storage.start();
  hub.lfsStorage = storage;
  hub.writeTokens.add('hf_write');
  try {
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}`);
    await page.getByTestId('demo').click();
    await expect(page.getByTestId('library-model')).toHaveCount(3, { timeout: 30_000 });
    await runMergeInPage(page);
    const files = await downloadAll(page, await mkdtemp(join(tmpdir(), 'l2s-push-')));

    await page.getByTestId('push-repo').fill('me/tiny-l2s-merge');
    await page.getByTestId('push-token').fill('hf_wrong');
    // Not huggingface.co: the token goes only once the user says this hub may have it.
    await expect(page.getByTestId('push-hub-warning')).toContainText(hub.url);
    await page.getByTestId('push-run').click();
    await expect(page.getByTestId('push-status')).toContainText('The token was not sent');
    expect(hub.log.filter((c) => c.authorization !== null)).toEqual([]);
    await page.getByTestId('push-consent').check();
    await page.getByTestId('push-run').click();
    const status = page.getByTestId('push-status');
    await expect(status).toHaveAttribute('data-state', 'error', { timeout: 30_000 });
    await expect(status).toContainText(
      'the hub refused the token (HTTP 401); paste a token with write access',
    );

    await page.getByTestId('push-token').fill('hf_write');
    await page.getByTestId('push-run').click();
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
    await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
    await expect(status).toContainText(`Created me/tiny-l2s-merge: ${hub.url}/me/tiny-l2s-merge`);
    const pushView = await checkView(page, 'hub-push');
    expect(pushView.overflow).toBeLessThanOrEqual(0);
    expect(pushView.violations, JSON.stringify(pushView.violations, null, 1)).toEqual([]);
    const pushed = hub.repo('me/tiny-l2s-merge')?.files;
    expect([...(pushed?.keys() ?? [])].sort()).toEqual([...files.keys()].sort());
    for (const [name, bytes] of files) expect(Buffer.from(pushed!.get(name)!).equals(bytes), name).toBe(true);
    // The model card and the recipe went with the weights; the weights went through LFS storage.
    expect(files.has('README.md') && files.has('mergekit_config.yml')).toBe(true);
    expect(storage.uploaded.size).toBe(1);

    // Pushing again adds a commit to the existing repo.
    await page.getByTestId('push-run').click();
    await expect(status).toHaveAttribute('data-state', 'done', { timeout: 60_000 });
    await expect(status).toContainText('Updated me/tiny-l2s-merge');

    // The token went to the chosen hub and nowhere else.
    expect(hub.log.some((c) => c.authorization === 'Bearer hf_write')).toBe(true);
    expect(storage.log.filter((c) => c.method === 'PUT').length).toBe(1);
    expect(storage.log.filter((c) => c.authorization !== null)).toEqual([]);
    const stored = await page.evaluate(() => JSON.stringify(localStorage) + document.cookie);
    expect(stored).not.toContain('hf_write');
  } finally {
    await hub.stop();
    await storage.stop();
  }
});

test('an unreachable hub says so; a recipe naming a missing hub id offers to download it', async ({
  page,
}) => {
  const port = await closedPort();
  await openApp(page, `?hub=${encodeURIComponent(`http://127.0.0.1:${port}`)}`);
  await page.getByTestId('hub-repo').fill('test-org/tiny-qwen-system2');
  await page.getByTestId('hub-import').click();
  const status = page.getByTestId('import-status');
  await expect(status).toHaveAttribute('data-state', 'error', { timeout: 30_000 });
  await expect(status).toContainText(`cannot reach 127.0.0.1:${port} (offline?)`);
  await expect(status).not.toContainText('Failed to fetch');

  const hub = new HubServer();
  hub.addRepo('test-org/tiny-qwen-system2', { files: (await makeTinyModel(TINY_TRIO[2])).files });
  await hub.start();
  try {
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}`);
    await page.getByTestId('demo').click();
    await expect(page.getByTestId('library-model')).toHaveCount(3, { timeout: 30_000 });
    await setRecipe(
      page,
      'merge_method: ties\nbase_model: tiny-qwen-system1\nmodels:\n  - model: test-org/tiny-qwen-system2\n    parameters: {weight: 1.0, density: 0.2}\n',
    );
    await expect(page.getByTestId('merge-run')).toBeDisabled();
    const offer = page.getByTestId('recipe-missing-hub');
    await expect(offer).toHaveAttribute('data-repo', 'test-org/tiny-qwen-system2');
    const offerView = await checkView(page, 'recipe-missing-hub');
    expect(offerView.overflow).toBeLessThanOrEqual(0);
    expect(offerView.violations, JSON.stringify(offerView.violations, null, 1)).toEqual([]);
    await offer.getByTestId('recipe-download-hub').click();
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
    await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
    expect(await libraryNames(page)).toContain('test-org/tiny-qwen-system2');
    await expect(offer).toHaveCount(0);
    await expect(page.getByTestId('merge-run')).toBeEnabled();
  } finally {
    await hub.stop();
  }
});
