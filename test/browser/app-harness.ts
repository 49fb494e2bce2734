/**
 * What the app's browser tests share: a fresh persistent Chromium profile per test (real IndexedDB
 * and OPFS quotas), tiny model folders on disk, and steps that drive the page through its
 * data-testid contract.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { type BrowserContext, test as base, chromium, expect, type Page } from '@playwright/test';
import { ensureCliBuild } from './cli-build';
import { screenshotPath } from './screenshot-path';

export { expect };

const run = promisify(execFile);
export const ROOT = resolve(import.meta.dirname, '../..');
export const BASE_URL = `http://127.0.0.1:${process.env.L2S_TEST_PORT ?? 5174}`;

/** TIES over the tiny trio, as the merge and resume specs run it in the page and in the CLI. */
export const TIES_RECIPE = `merge_method: ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-instruct
    parameters:
      weight: 0.5
      density: 0.5
  - model: tiny-qwen-system2
    parameters:
      weight: 1.0
      density: 0.2
parameters:
  lambda: 1.0
dtype: bfloat16
`;

/** The browser as playwright.config.ts chooses it: $L2S_CHROMIUM, Playwright's own, Debian's. */
function chromiumPath(): string | undefined {
  if (process.env.L2S_CHROMIUM) return process.env.L2S_CHROMIUM;
  if (existsSync(chromium.executablePath())) return undefined;
  return existsSync('/usr/bin/chromium') ? '/usr/bin/chromium' : undefined;
}

export const test = base.extend<{ context: BrowserContext; page: Page; profileDir: string }>({
  // biome-ignore lint/correctness/noEmptyPattern: Playwright fixtures take their dependencies by destructuring.
  profileDir: async ({}, use) => {
    const dir = await mkdtemp(join(tmpdir(), 'l2s-profile-'));
    await use(dir);
    await rm(dir, { recursive: true, force: true });
  },
  context: async ({ profileDir }, use) => {
    const context = await chromium.launchPersistentContext(profileDir, {
      executablePath: chromiumPath(),
      args: ['--enable-unsafe-webgpu'],
      acceptDownloads: true,
      baseURL: BASE_URL,
      viewport: { width: 1200, height: 900 },
    });
    await use(context);
    await context.close();
  },
  page: async ({ context }, use) => {
    const page = context.pages()[0] ?? (await context.newPage());
    await use(page);
  },
});

/** Opens the app and waits until the engine worker has listed the library. */
export async function openApp(page: Page, query = ''): Promise<void> {
  await page.goto(`/${query}`);
  await expect(page.getByTestId('storage-use')).toContainText('used of', { timeout: 30_000 });
}

export async function importFolder(page: Page, folder: string): Promise<void> {
  await page.getByTestId('import-folder').setInputFiles(folder);
  const status = page.getByTestId('import-status');
  // The status still shows the previous import until this one starts.
  await expect(status).toContainText(basename(folder), { timeout: 60_000 });
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
  await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
}

export async function libraryNames(page: Page): Promise<string[]> {
  const rows = page.getByTestId('library-model');
  return rows.evaluateAll((els) => els.map((e) => e.getAttribute('data-name') ?? ''));
}

export async function setRecipe(page: Page, yaml: string): Promise<void> {
  await page.getByTestId('recipe-yaml').fill(yaml);
}

export async function runMergeInPage(page: Page): Promise<void> {
  const status = page.getByTestId('merge-status');
  // data-runs counts started merges: a finished earlier run must not pass for this one.
  const runs = Number(await status.getAttribute('data-runs'));
  await page.getByTestId('merge-run').click();
  await expect(status).toHaveAttribute('data-runs', String(runs + 1));
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 90_000 });
  await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
}

/** Downloads every output file through its link; returns name -> bytes. */
export async function downloadAll(page: Page, into: string): Promise<Map<string, Buffer>> {
  await mkdir(into, { recursive: true });
  // The links of the merge that just finished, not the previous output's (revoked as it is replaced).
  const outputId = await page.getByTestId('merge-status').getAttribute('data-output-id');
  const table = page.locator(`[data-testid="output-files"][data-output-id="${outputId}"]`);
  await expect(table).toBeVisible();
  const links = table.getByTestId('download-file');
  await expect(links.first()).toBeVisible();
  const out = new Map<string, Buffer>();
  for (let i = 0; i < (await links.count()); i++) {
    const link = links.nth(i);
    const name = (await link.getAttribute('download')) ?? `file-${i}`;
    const download = await Promise.all([
      page.waitForEvent('download', { timeout: 15_000 }),
      link.click(),
    ]).then(
      ([d]) => d,
      () => undefined,
    );
    const path = join(into, name);
    if (download) {
      expect(download.suggestedFilename()).toBe(name);
      await download.saveAs(path);
    } else {
      // Chromium's download limiter sometimes holds back one of a burst of downloads from a page
      // (headless, nobody can answer its prompt): read the bytes the link serves instead.
      const base64 = await link.evaluate(async (a: HTMLAnchorElement) => {
        const bytes = new Uint8Array(await (await fetch(a.href)).arrayBuffer());
        let text = '';
        for (let j = 0; j < bytes.length; j += 0x8000)
          text += String.fromCharCode(...bytes.subarray(j, j + 0x8000));
        return btoa(text);
      });
      await writeFile(path, Buffer.from(base64, 'base64'));
    }
    out.set(name, await readFile(path));
  }
  return out;
}

export async function readFolder(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of (await readdir(dir)).sort()) out.set(name, await readFile(join(dir, name)));
  return out;
}

/** The Node CLI's output for a recipe file (rebuilt first when a source is newer than it); `args` adds options such as --out-shard-size. */
export async function cliMerge(
  recipePath: string,
  outDir: string,
  args: readonly string[] = [],
): Promise<Map<string, Buffer>> {
  await ensureCliBuild();
  await run('node', [join(ROOT, 'bin/l2s-merge.mjs'), recipePath, outDir, '--seed', '0', ...args], {
    cwd: ROOT,
  });
  return readFolder(outDir);
}

/**
 * The one way a browser test takes a screenshot: under test-results/screenshots/ in a test run,
 * into docs/screenshots/ only under `npm run screenshots` (see screenshot-path.ts).
 */
/** Saves a screenshot: the whole page, or with `fullPage: false` the viewport (a lesson step). */
export async function screenshot(
  page: Page,
  name: string,
  options: { fullPage?: boolean } = {},
): Promise<void> {
  const path = screenshotPath(ROOT, name);
  await mkdir(dirname(path), { recursive: true });
  await page.screenshot({ path, fullPage: options.fullPage ?? true });
}

/** Keys of the library's IndexedDB store, read directly (to check that nothing leaked). */
export async function libraryKeys(page: Page): Promise<string[]> {
  return page.evaluate(
    () =>
      new Promise<string[]>((resolvePromise, reject) => {
        const open = indexedDB.open('l2s-library');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const db = open.result;
          const req = db.transaction('kv', 'readonly').objectStore('kv').getAllKeys();
          req.onsuccess = () => {
            resolvePromise(req.result.map(String));
            db.close();
          };
          req.onerror = () => reject(req.error);
        };
      }),
  );
}
