/**
 * Hub imports against a local hub over HTTP: a gated repo with a token, a download interrupted by a
 * reload and resumed with a Range request, a corrupted file refused by its sha256 (LFS) or git blob
 * sha1 (files kept in git), the token kept from a CDN on a second origin, hostile file names
 * refused, and the warning a hub other than huggingface.co gets before any token is used.
 */
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { expect, libraryKeys, libraryNames, openApp, screenshot, test } from './app-harness';
import { HubServer } from './hub-server';

const CHUNK = 4096;
const SHARD = 'model-00001-of-00002.safetensors';

async function hubWithSystem2(
  options: { token?: string; lfsBaseUrl?: string; extraFiles?: Record<string, Uint8Array> } = {},
): Promise<HubServer> {
  const model = await makeTinyModel(TINY_TRIO[2]);
  const files = new Map(model.files);
  for (const [name, bytes] of Object.entries(options.extraFiles ?? {})) files.set(name, bytes);
  const hub = new HubServer({ lfsBaseUrl: options.lfsBaseUrl });
  hub.addRepo('test-org/tiny-qwen-system2', { files, token: options.token });
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

    // A hub other than huggingface.co gets the token only once the user says it may.
    await expect(page.getByTestId('hub-warning')).toContainText(
      `This page downloads models from ${hub.url}, not from https://huggingface.co.`,
    );
    const requestsBefore = hub.log.length;
    await startHubImport(page, 'test-org/tiny-qwen-system2', 'hf_secret');
    await expect(status).toHaveAttribute('data-state', 'error');
    await expect(status).toHaveText(
      `The access token was not sent: this page is set to use the hub at ${hub.url}, not https://huggingface.co. ` +
        `Tick "Send my access token to ${hub.url}" if you trust that server, or clear the token.`,
    );
    expect(hub.log.slice(requestsBefore)).toEqual([]);
    await page.getByTestId('hub-token-consent').check();
    await page.getByTestId('hub-import').click();
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

test('the access token never reaches a CDN on another origin', async ({ page }) => {
  const model = await makeTinyModel(TINY_TRIO[2]);
  // The CDN answers as the hub's does (X-Cache: ... cloudfront), which makes @huggingface/hub hand
  // its URL back as the file's download URL.
  const cdn = new HubServer({ xCache: 'Hit from cloudfront' });
  cdn.addRepo('test-org/tiny-qwen-system2', { files: model.files });
  await cdn.start();
  const hub = await hubWithSystem2({ token: 'hf_secret', lfsBaseUrl: cdn.url });
  try {
    expect(new URL(cdn.url).origin).not.toBe(new URL(hub.url).origin);
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&chunk=${CHUNK}`);
    await page.getByTestId('hub-token-consent').check();
    await startHubImport(page, 'test-org/tiny-qwen-system2', 'hf_secret');
    const status = page.getByTestId('import-status');
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
    await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
    expect(await libraryNames(page)).toEqual(['test-org/tiny-qwen-system2']);
    // The shards came from the CDN, which never saw the token (nor was asked to accept one).
    expect(cdn.requests.filter((r) => r.path === SHARD).length).toBeGreaterThan(0);
    expect(cdn.log.filter((r) => r.authorization !== null)).toEqual([]);
    expect(cdn.log.filter((r) => /authorization/i.test(r.requestHeaders ?? ''))).toEqual([]);
    // The hub itself had it on every request that needs it.
    expect(hub.log.filter((r) => r.method === 'GET' && r.authorization !== 'Bearer hf_secret')).toEqual([]);
  } finally {
    await hub.stop();
    await cdn.stop();
  }
});

test('a file kept in git is checked by its git blob sha1', async ({ page }) => {
  const hub = await hubWithSystem2();
  try {
    hub.corruptFile('test-org/tiny-qwen-system2', 'tokenizer.json');
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&chunk=${CHUNK}`);
    await startHubImport(page, 'test-org/tiny-qwen-system2');
    const status = page.getByTestId('import-status');
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
    await expect(status).toHaveAttribute('data-state', 'error');
    await expect(status).toContainText(
      /^test-org\/tiny-qwen-system2\/tokenizer\.json: git blob sha1 is [0-9a-f]{40} but the hub lists [0-9a-f]{40}; the file is corrupt and was deleted\. Resume the import to download it again\./,
    );
    expect(await libraryNames(page)).toEqual([]);
    expect((await libraryKeys(page)).filter((k) => k.includes('/tokenizer.json/'))).toEqual([]);
  } finally {
    await hub.stop();
  }
});

test('hostile file names are refused naming the file; odd but valid names are encoded', async ({ page }) => {
  const hostile = await hubWithSystem2({ extraFiles: { '..\\model.safetensors': new Uint8Array(8) } });
  const odd = await hubWithSystem2({ extraFiles: { 'tokenizer %41#x.json': new Uint8Array(8) } });
  const encoded = await hubWithSystem2({
    extraFiles: { 'tokenizer %41.json': new TextEncoder().encode('{"odd": true}') },
  });
  try {
    const status = page.getByTestId('import-status');
    for (const [hub, name, why] of [
      [hostile, '..\\\\model.safetensors', "it contains '\\'"],
      [odd, 'tokenizer %41#x.json', "it contains '#'"],
    ] as const) {
      await openApp(page, `?hub=${encodeURIComponent(hub.url)}&chunk=${CHUNK}`);
      await startHubImport(page, 'test-org/tiny-qwen-system2');
      await expect(status).toHaveAttribute('data-state', 'error', { timeout: 30_000 });
      await expect(status).toHaveText(
        `test-org/tiny-qwen-system2@main: the hub lists a file named "${name}", which is refused: ${why}. ` +
          "File names with \\, ?, #, '.' or '..' segments, or control characters are never downloaded.",
      );
      expect(hub.requests).toEqual([]);
      expect(await libraryNames(page)).toEqual([]);
    }
    await screenshot(page, 'hub-file-name-refused');

    await openApp(page, `?hub=${encodeURIComponent(encoded.url)}&chunk=${CHUNK}`);
    await startHubImport(page, 'test-org/tiny-qwen-system2');
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
    await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
    expect(encoded.requests.some((r) => r.path === 'tokenizer %41.json')).toBe(true);
    expect(encoded.log.some((r) => r.url.endsWith('/resolve/main/tokenizer%20%2541.json'))).toBe(true);
    expect((await libraryKeys(page)).some((k) => k.endsWith('/tokenizer %41.json/0'))).toBe(true);
  } finally {
    await hostile.stop();
    await odd.stop();
    await encoded.stop();
  }
});

test('a plain-HTTP hub is warned about and never gets the token; the default hub needs no warning', async ({
  page,
}) => {
  await openApp(page);
  await expect(page.getByTestId('hub-repo')).toBeVisible();
  await expect(page.getByTestId('hub-warning')).toHaveCount(0);

  await openApp(page, `?hub=${encodeURIComponent('http://models.example.test')}`);
  const warning = page.getByTestId('hub-warning');
  await expect(warning).toHaveText(
    'This page downloads models from http://models.example.test, not from https://huggingface.co, over plain HTTP: ' +
      'anyone on the network can read or change what it sends. Your access token will not be sent to it.',
  );
  await expect(page.getByTestId('hub-token-consent')).toHaveCount(0);
  const requests: string[] = [];
  page.on('request', (r) => {
    if (r.url().startsWith('http://models.example.test')) requests.push(r.url());
  });
  await startHubImport(page, 'test-org/tiny-qwen-system2', 'hf_secret');
  const status = page.getByTestId('import-status');
  await expect(status).toHaveAttribute('data-state', 'error');
  await expect(status).toHaveText(
    'The access token was not sent: the hub http://models.example.test is plain HTTP, so anyone on the network ' +
      'could read the access token; the token is sent only over https (or to localhost). Clear the token to download public models from it.',
  );
  await screenshot(page, 'hub-insecure-warning');
  expect(requests).toEqual([]);
});
