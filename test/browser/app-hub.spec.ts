/**
 * Hub imports against a local hub over HTTP: a gated repo with a token, a download interrupted by a
 * reload and resumed with a Range request, and a corrupted file refused by its sha256.
 */
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { expect, libraryKeys, libraryNames, openApp, screenshot, test } from './app-harness';
import { HubServer } from './hub-server';

const CHUNK = 4096;
const SHARD = 'model-00001-of-00002.safetensors';

async function hubWithSystem2(options: { token?: string } = {}): Promise<HubServer> {
  const model = await makeTinyModel(TINY_TRIO[2]);
  const hub = new HubServer();
  hub.addRepo('test-org/tiny-qwen-system2', { files: model.files, token: options.token });
  await hub.start();
  return hub;
}

async function startHubImport(
  page: import('@playwright/test').Page,
  repo: string,
  token?: string,
): Promise<void> {
  await page.getByTestId('hub-repo').fill(repo);
  if (token) await page.getByTestId('hub-token').fill(token);
  await page.getByTestId('hub-import').click();
}

test('a gated repo downloads with a token and every file is verified', async ({ page }) => {
  const hub = await hubWithSystem2({ token: 'hf_secret' });
  try {
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&chunk=${CHUNK}`);
    await startHubImport(page, 'test-org/tiny-qwen-system2');
    const status = page.getByTestId('import-status');
    await expect(status).toHaveAttribute('data-state', 'error');
    await expect(status).toContainText('access token');
    expect(await libraryNames(page)).toEqual([]);

    await startHubImport(page, 'test-org/tiny-qwen-system2', 'hf_secret');
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
    await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
    expect(await libraryNames(page)).toEqual(['test-org/tiny-qwen-system2']);
    const row = page.locator('[data-testid="library-model"]');
    await expect(row).toContainText('hub test-org/tiny-qwen-system2@main');
    await expect(row).toContainText('51');
    // The token is held in memory only: nothing stored mentions it.
    const stored = await page.evaluate(() => JSON.stringify(localStorage) + document.cookie);
    expect(stored).not.toContain('hf_secret');
    expect(JSON.stringify(await libraryKeys(page))).not.toContain('hf_secret');
    await screenshot(page, 'hub-import');
  } finally {
    await hub.stop();
  }
});

test('a download interrupted by a reload resumes with a Range request', async ({ page }) => {
  const hub = await hubWithSystem2();
  try {
    const stallAt = 3 * CHUNK + 1000;
    const stall = hub.stallFile('test-org/tiny-qwen-system2', SHARD, stallAt);
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&chunk=${CHUNK}`);
    await startHubImport(page, 'test-org/tiny-qwen-system2');
    await stall.reached;
    // Wait until the three whole chunks before the stall are stored.
    await expect
      .poll(async () => (await libraryKeys(page)).filter((k) => k.includes(`/${SHARD}/`)).length, {
        timeout: 20_000,
      })
      .toBe(3);
    await page.reload();
    await expect(page.getByTestId('storage-use')).toContainText('used of');
    const pending = page.getByTestId('pending-import');
    await expect(pending).toHaveAttribute('data-name', 'test-org/tiny-qwen-system2');
    await screenshot(page, 'hub-resume');
    stall.release();
    const before = hub.requests.length;
    await page.getByTestId('hub-resume').click();
    const status = page.getByTestId('import-status');
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
    await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
    // Besides the one-byte probe of @huggingface/hub, one request for the rest of the shard (the
    // browser's cache may spell out the end of the range).
    const resumed = hub.requests.slice(before).filter((r) => r.path === SHARD && r.range !== 'bytes=0-0');
    expect(resumed).toHaveLength(1);
    expect(resumed[0].range).toMatch(new RegExp(`^bytes=${3 * CHUNK}-(\\d+)?$`));
    expect(await libraryNames(page)).toEqual(['test-org/tiny-qwen-system2']);
    await expect(pending).toHaveCount(0);
    await expect(page.locator('[data-testid="library-model"]')).toContainText('51');
  } finally {
    await hub.stop();
  }
});

test('a corrupted download is refused by its sha256 and deleted', async ({ page }) => {
  const hub = await hubWithSystem2();
  try {
    hub.corruptFile('test-org/tiny-qwen-system2', SHARD);
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&chunk=${CHUNK}`);
    await startHubImport(page, 'test-org/tiny-qwen-system2');
    const status = page.getByTestId('import-status');
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
    await expect(status).toHaveAttribute('data-state', 'error');
    await expect(status).toContainText(`test-org/tiny-qwen-system2/${SHARD}: sha256 is`);
    expect(await libraryNames(page)).toEqual([]);
    expect((await libraryKeys(page)).filter((k) => k.includes(`/${SHARD}/`))).toEqual([]);
  } finally {
    await hub.stop();
  }
});
