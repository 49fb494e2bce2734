/**
 * Merging straight from the hub: the trained fixture pair (test/fixtures/qwen2-tiny-l2s) served by
 * the local test hub under the paper's repo ids, streamed into a merge by Range requests with
 * nothing stored in IndexedDB, to the CLI's bytes; a bad recipe fails from the headers alone (the
 * server log shows no byte past any header was asked for); a reload mid-merge resumes from the last
 * finished tensor, streaming again at the pinned commit, to the CLI's bytes. With "Keep a copy in
 * the library" the streamed models land in the library byte for byte with no range fetched twice;
 * a corrupt byte fails the copy only; a reload keeps the copy under way, and the resumed run goes on
 * with it, requesting none of the bytes it stored before the reload again. A recipe naming a
 * revision (`owner/name@rev`, as mergekit writes it) is offered for streaming too, and merges that
 * revision to the CLI's bytes for it. A tensor larger than the engine's cache is read in several
 * passes from a spool in OPFS, so each weight byte is downloaded once (CPU and GPU), and the spool is
 * gone after the run and after a Cancel.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Page } from '@playwright/test';
import { makeTinyModel } from '../../src/demo/tiny-qwen';
import { formatBytes } from '../../src/formats/size';
import { dataStart, editModel } from '../fixtures/edit-model';
import {
  cliMerge,
  downloadAll,
  expect,
  libraryNames,
  openApp,
  ROOT,
  readFolder,
  runMergeInPage,
  setRecipe,
  test,
} from './app-harness';
import { ensureCliBuild } from './cli-build';
import { HubServer } from './hub-server';

const FIXTURES = join(ROOT, 'test/fixtures/qwen2-tiny-l2s');
const SYSTEM1 = 'Qwen/Qwen2.5-Math-1.5B';
const SYSTEM2 = 'deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B';
const BROKEN = 'test-org/broken-r1';

const RECIPE = `merge_method: ties
base_model: ${SYSTEM1}
models:
  - model: ${SYSTEM2}
    parameters:
      weight: 1.0
      density: 0.2
parameters:
  lambda: 1.0
dtype: bfloat16
`;

/** The folder's model files as the hub holds them (the reference outputs are test data only). */
async function repoFiles(folder: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const name of (await readdir(folder)).sort()) {
    if (name === 'reference.json') continue;
    files.set(name, new Uint8Array(await readFile(join(folder, name))));
  }
  return files;
}

async function pairHub(): Promise<{ hub: HubServer; files: Record<string, Map<string, Uint8Array>> }> {
  const files = {
    [SYSTEM1]: await repoFiles(join(FIXTURES, 'system1')),
    [SYSTEM2]: await repoFiles(join(FIXTURES, 'system2')),
  };
  const hub = new HubServer();
  for (const [repo, repoFilesMap] of Object.entries(files)) hub.addRepo(repo, { files: repoFilesMap });
  await hub.start();
  return { hub, files };
}

/** The CLI's merge of the same recipe, with the repos as folders beside it. */
async function cliBytes(files: Record<string, Map<string, Uint8Array>>): Promise<Map<string, Buffer>> {
  const dir = await mkdtemp(join(tmpdir(), 'l2s-stream-'));
  for (const [repo, repoFilesMap] of Object.entries(files)) {
    await mkdir(join(dir, repo), { recursive: true });
    for (const [name, bytes] of repoFilesMap) await writeFile(join(dir, repo, name), bytes);
  }
  await writeFile(join(dir, 'ties.yml'), RECIPE);
  return cliMerge(join(dir, 'ties.yml'), join(dir, 'cli-out'), ['--device', 'cpu']);
}

async function indexedDbBytes(page: Page): Promise<number> {
  return page.evaluate(async () => {
    const estimate = (await navigator.storage.estimate()) as StorageEstimate & {
      usageDetails?: { indexedDB?: number };
    };
    return estimate.usageDetails?.indexedDB ?? 0;
  });
}

/** Marks every hub repo the recipe names (and the library lacks) to be streamed. */
async function streamAll(page: Page, repos: string[]): Promise<void> {
  for (const repo of repos) {
    await page
      .locator(`[data-testid="recipe-missing-hub"][data-repo="${repo}"]`)
      .getByTestId('recipe-stream-hub')
      .click();
    await expect(page.locator(`[data-testid="recipe-streamed-hub"][data-repo="${repo}"]`)).toBeVisible();
  }
  await expect(page.getByTestId('merge-blocked')).toHaveCount(0);
}

async function expectSameBytes(page: Page, cli: Map<string, Buffer>): Promise<void> {
  const browser = await downloadAll(page, await mkdtemp(join(tmpdir(), 'l2s-stream-dl-')));
  expect([...browser.keys()].sort()).toEqual([...cli.keys()].sort());
  for (const [name, bytes] of cli)
    expect(browser.get(name)?.equals(bytes), `${name} differs from the CLI's`).toBe(true);
}

/** Every safetensors request the hub served: file, first and last byte. */
function weightRanges(hub: HubServer): { path: string; repo: string; start: number; end: number }[] {
  return hub.requests
    .filter((r) => r.path.endsWith('.safetensors'))
    .map((r) => {
      const m = /^bytes=(\d+)-(\d+)$/.exec(r.range ?? '');
      if (!m) throw new Error(`${r.repo}/${r.path}: a request without a bounded range (${r.range})`);
      return { repo: r.repo, path: r.path, start: Number(m[1]), end: Number(m[2]) };
    });
}

test('a merge streamed from the hub equals the CLI bytes and stores nothing in IndexedDB', async ({
  page,
}) => {
  const { hub, files } = await pairHub();
  try {
    const cli = await cliBytes(files);
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}`);
    const before = await indexedDbBytes(page);
    await setRecipe(page, RECIPE);
    await expect(page.getByTestId('recipe-missing-hub')).toHaveCount(2);
    await streamAll(page, [SYSTEM1, SYSTEM2]);
    await page.getByTestId('merge-device').selectOption('cpu');

    await page.getByTestId('merge-check').click();
    const check = page.getByTestId('merge-check-result');
    await expect(check).toHaveAttribute('data-state', 'ok', { timeout: 30_000 });
    await expect(check).toContainText('Check passed: 51 tensors from 2 models');

    const checkRequests = hub.requests.length;
    await runMergeInPage(page);
    const log = page.locator('l2s-run-panel .log');
    await expect(log).toContainText(`${SYSTEM1}: streamed from the hub at commit`);
    await expect(log).toContainText('read again by every run; nothing stored');
    await expectSameBytes(page, cli);

    expect(await libraryNames(page)).toEqual([]);
    const weights = [...Object.values(files)].flatMap((f) =>
      [...f].filter(([n]) => n.endsWith('.safetensors')),
    );
    const modelBytes = weights.reduce((s, [, b]) => s + b.length, 0);
    const grown = (await indexedDbBytes(page)) - before;
    expect(grown, `IndexedDB grew by ${grown} bytes`).toBeLessThan(modelBytes / 10);
    // Every weight request was a bounded Range read, and every byte of both models was read.
    const ranges = weightRanges(hub);
    const sizes = new Map(weights.map(([n, b]) => [n, b.length]));
    for (const [path, size] of sizes) {
      const covered = ranges.filter((r) => r.path === path).reduce((s, r) => s + (r.end - r.start + 1), 0);
      expect(covered).toBeGreaterThanOrEqual(size);
    }
    // The run reports what it downloaded: the weights (plus the side files), in a few requests each.
    const cost = /read ([\d.]+) MB from the hub in (\d+) range requests/.exec(
      (await log.textContent()) ?? '',
    );
    expect(cost, 'the run log reports the hub traffic').not.toBeNull();
    console.log(`streamed merge: ${cost?.[0]}; the weights are ${modelBytes} bytes`);
    // The merge read each shard's header once: the plan it validated with is the plan it merged by.
    const merged = weightRanges({ requests: hub.requests.slice(checkRequests) } as HubServer);
    for (const [repo, repoFilesMap] of Object.entries(files)) {
      for (const [name, bytes] of repoFilesMap) {
        if (!name.endsWith('.safetensors')) continue;
        const header = merged
          .filter((r) => r.repo === repo && r.path === name && r.start < dataStart(bytes))
          .sort((a, b) => a.start - b.start);
        expect(header.length, `${repo}/${name}: no header read`).toBeGreaterThan(0);
        for (let i = 1; i < header.length; i++) {
          expect(header[i].start, `${repo}/${name}: header bytes from ${header[i].start} read twice`).toBe(
            header[i - 1].end + 1,
          );
        }
        expect(header[0].start).toBe(0);
      }
    }
    // Each byte about once: the headers once, the base's side files.
    expect(Number(cost?.[1]) * 1e6).toBeGreaterThanOrEqual(modelBytes * 0.99);
    expect(Number(cost?.[1]) * 1e6).toBeLessThan(modelBytes * 1.1);
    expect(Number(cost?.[2])).toBeLessThan(40);
  } finally {
    await hub.stop();
  }
});

test('a bad recipe fails from the headers alone, listing every problem', async ({ page }) => {
  const system1 = await repoFiles(join(FIXTURES, 'system1'));
  const broken = await editModel(await repoFiles(join(FIXTURES, 'system2')), {
    drop: ['model.layers.1.mlp.up_proj.weight'],
    reshape: { 'model.layers.3.mlp.down_proj.weight': [128, 256] },
  });
  const hub = new HubServer();
  hub.addRepo(SYSTEM1, { files: system1 });
  hub.addRepo(BROKEN, { files: broken });
  await hub.start();
  try {
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}`);
    await setRecipe(page, RECIPE.replace(SYSTEM2, BROKEN));
    await streamAll(page, [SYSTEM1, BROKEN]);
    const problems = [
      `${BROKEN}: tensor model.layers.1.mlp.up_proj.weight is missing from model-00001-of-00002.safetensors and model-00002-of-00002.safetensors`,
      `tensor model.layers.3.mlp.down_proj.weight: ${BROKEN}/model-00002-of-00002.safetensors has shape [128, 256] but ${SYSTEM1} has [128, 512]`,
    ];
    const listed =
      "PlanError: 2 problems in the models' safetensors headers (found before any tensor data was read):\n" +
      problems.map((p) => `- ${p}`).join('\n');

    await page.getByTestId('merge-check').click();
    const check = page.getByTestId('merge-check-result');
    await expect(check).toHaveAttribute('data-state', 'error', { timeout: 30_000 });
    expect(await check.evaluate((e) => e.textContent)).toBe(listed);

    await page.getByTestId('merge-run').click();
    const status = page.getByTestId('merge-status');
    await expect(status).toHaveAttribute('data-state', 'error', { timeout: 30_000 });
    expect(await status.evaluate((e) => e.textContent)).toBe(listed);

    // The server log: the header of every shard was read, and not one byte past it.
    const ranges = weightRanges(hub);
    const shards = new Map([
      ...[...system1].map(([n, b]): [string, Uint8Array] => [`${SYSTEM1}/${n}`, b]),
      ...[...broken].map(([n, b]): [string, Uint8Array] => [`${BROKEN}/${n}`, b]),
    ]);
    const seen = new Set<string>();
    for (const r of ranges) {
      const bytes = shards.get(`${r.repo}/${r.path}`)!;
      expect(r.end, `${r.repo}/${r.path} bytes ${r.start}-${r.end}`).toBeLessThan(dataStart(bytes));
      seen.add(`${r.repo}/${r.path}`);
    }
    expect([...seen].sort()).toEqual([...shards.keys()].filter((k) => k.endsWith('.safetensors')).sort());
  } finally {
    await hub.stop();
  }
});

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

test('a streamed merge cut short by a reload resumes at the pinned commit to the CLI bytes', async ({
  page,
}) => {
  test.setTimeout(180_000);
  const { hub, files } = await pairHub();
  try {
    const cli = await cliBytes(files);
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&paceWrites=150`);
    await setRecipe(page, RECIPE);
    await streamAll(page, [SYSTEM1, SYSTEM2]);
    await page.getByTestId('merge-device').selectOption('cpu');
    await page.getByTestId('merge-run').click();
    await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'running');
    await expect
      .poll(async () => (await journal(page))[0]?.tensorsDone ?? 0, { intervals: [50], timeout: 60_000 })
      .toBeGreaterThanOrEqual(10);
    await page.reload();
    await openApp(page);
    const [record] = await journal(page);
    expect(record.tensorsDone).toBeLessThan(record.tensorsTotal);
    const interrupted = page.getByTestId('merge-interrupted');
    await expect(interrupted).toHaveCount(1);

    const before = hub.log.length;
    await page.getByTestId('merge-resume').click();
    const status = page.getByTestId('merge-status');
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 90_000 });
    await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
    await expect(page.locator('l2s-run-panel .log')).toContainText(
      `resuming after ${record.tensorsDone} of ${record.tensorsTotal} tensors`,
    );
    // The resumed run read the repos at the commits the run began with, not at `main`.
    const resolved = hub.log.slice(before).filter((r) => r.method === 'GET' && r.url.includes('/resolve/'));
    expect(resolved.length).toBeGreaterThan(0);
    for (const r of resolved) {
      const repo = r.url.includes(SYSTEM1) ? SYSTEM1 : SYSTEM2;
      expect(r.url).toContain(`/resolve/${hub.revisions(repo).get('main')!.sha}/`);
    }
    await expectSameBytes(page, cli);
    expect(await libraryNames(page)).toEqual([]);
  } finally {
    await hub.stop();
  }
});

test('a hub outage mid-merge keeps the merge, which resumes once the hub answers again', async ({ page }) => {
  test.setTimeout(180_000);
  const { hub, files } = await pairHub();
  try {
    const cli = await cliBytes(files);
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&paceWrites=150`);
    await setRecipe(page, RECIPE);
    await streamAll(page, [SYSTEM1, SYSTEM2]);
    await page.getByTestId('merge-device').selectOption('cpu');
    await page.getByTestId('merge-run').click();
    const status = page.getByTestId('merge-status');
    await expect(status).toHaveAttribute('data-state', 'running');
    await expect
      .poll(async () => (await journal(page))[0]?.tensorsDone ?? 0, { intervals: [50], timeout: 60_000 })
      .toBeGreaterThanOrEqual(10);
    hub.failFiles(503);
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 60_000 });
    await expect(status).toHaveAttribute('data-state', 'error');
    await expect(status).toContainText('the hub answered HTTP 503 (4 attempts)');
    await expect(status).toContainText(
      'The merge so far is kept: Resume continues after its last finished tensor once the hub answers again',
    );
    const interrupted = page.getByTestId('merge-interrupted');
    await expect(interrupted).toHaveCount(1);
    const [record] = await journal(page);
    expect(record.tensorsDone).toBeGreaterThanOrEqual(10);

    hub.failFiles(undefined);
    await page.getByTestId('merge-resume').click();
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 90_000 });
    await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
    await expect(page.locator('l2s-run-panel .log')).toContainText(`resuming after ${record.tensorsDone} of`);
    await expectSameBytes(page, cli);
  } finally {
    await hub.stop();
  }
});

/** Every model record's files as stored in the library, read back chunk by chunk: size and sha256. */
async function libraryFiles(
  page: Page,
): Promise<Record<string, Record<string, { size: number; sha256: string }>>> {
  return page.evaluate(async () => {
    const db = await new Promise<IDBDatabase>((resolvePromise, reject) => {
      const open = indexedDB.open('l2s-library');
      open.onsuccess = () => resolvePromise(open.result);
      open.onerror = () => reject(open.error);
    });
    const get = (key: string) =>
      new Promise<unknown>((resolvePromise, reject) => {
        const req = db.transaction('kv', 'readonly').objectStore('kv').get(key);
        req.onsuccess = () => resolvePromise(req.result);
        req.onerror = () => reject(req.error);
      });
    const keys = await new Promise<string[]>((resolvePromise) => {
      const req = db.transaction('kv', 'readonly').objectStore('kv').getAllKeys();
      req.onsuccess = () => resolvePromise(req.result as string[]);
    });
    const out: Record<string, Record<string, { size: number; sha256: string }>> = {};
    for (const key of keys.filter((k) => k.startsWith('model:'))) {
      const record = (await get(key)) as {
        id: string;
        name: string;
        files: { name: string; chunks: number }[];
      };
      out[record.name] = {};
      for (const f of record.files) {
        const chunks: Blob[] = [];
        for (let i = 0; i < f.chunks; i++) chunks.push((await get(`${record.id}/${f.name}/${i}`)) as Blob);
        const bytes = await new Blob(chunks).arrayBuffer();
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
        out[record.name][f.name] = {
          size: bytes.byteLength,
          sha256: [...digest].map((b) => b.toString(16).padStart(2, '0')).join(''),
        };
      }
    }
    db.close();
    return out;
  });
}

/** Every key of the library's store (models, imports under way, chunks, a copy's pieces). */
async function libraryKeys(page: Page): Promise<string[]> {
  return page.evaluate(
    () =>
      new Promise<string[]>((resolvePromise, reject) => {
        const open = indexedDB.open('l2s-library');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const req = open.result.transaction('kv', 'readonly').objectStore('kv').getAllKeys();
          req.onsuccess = () => {
            resolvePromise(req.result as string[]);
            open.result.close();
          };
        };
      }),
  );
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Ticks "Keep a copy in the library" for each streamed repo. */
async function keepCopies(page: Page, repos: string[]): Promise<void> {
  for (const repo of repos) {
    const row = page.locator(`[data-testid="recipe-streamed-hub"][data-repo="${repo}"]`);
    const box = row.getByTestId('recipe-stream-keep');
    await expect(box).not.toBeChecked();
    await box.check();
    await expect(row).toContainText('a copy is kept in the library');
  }
}

test('a streamed merge keeping a copy adds both models to the library whole, downloading no byte twice', async ({
  page,
}) => {
  const { hub, files } = await pairHub();
  try {
    const cli = await cliBytes(files);
    // Chunks of 300 kB: the stored pieces are cut and joined across chunk boundaries.
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&chunk=300000`);
    await setRecipe(page, RECIPE);
    await streamAll(page, [SYSTEM1, SYSTEM2]);
    await keepCopies(page, [SYSTEM1, SYSTEM2]);
    await page.getByTestId('merge-device').selectOption('cpu');
    await runMergeInPage(page);
    const status = page.getByTestId('merge-status');
    for (const repo of [SYSTEM1, SYSTEM2]) {
      await expect(status).toContainText(
        `The copy of ${repo} is in the library as ${repo} (every file checked against the hub's hashes).`,
      );
    }
    await expectSameBytes(page, cli);
    await expect.poll(async () => (await libraryNames(page)).sort()).toEqual([SYSTEM2, SYSTEM1].sort());

    // The library holds the hub's files byte for byte, read back from their chunks.
    const stored = await libraryFiles(page);
    for (const [repo, repoFilesMap] of Object.entries(files)) {
      const expected = Object.fromEntries(
        [...repoFilesMap].map(([name, bytes]) => [name, { size: bytes.length, sha256: sha256Hex(bytes) }]),
      );
      expect(stored[repo], repo).toEqual(expected);
    }
    // Nothing but the two models' records and chunks is left (no piece, no unfinished import).
    const keys = await libraryKeys(page);
    expect(keys.filter((k) => k.startsWith('import:') || k.includes('/@'))).toEqual([]);

    // No byte of any file was requested twice (the headers, config.json and the shard index, read by
    // the validation, are not read again by the merge), and every byte was requested.
    const byFile = new Map<string, [number, number][]>();
    for (const r of hub.requests) {
      const m = /^bytes=(\d+)-(\d+)$/.exec(r.range ?? '');
      if (!m) throw new Error(`${r.repo}/${r.path}: a request without a bounded range (${r.range})`);
      const key = `${r.repo}/${r.path}`;
      byFile.set(key, [...(byFile.get(key) ?? []), [Number(m[1]), Number(m[2]) + 1]]);
    }
    for (const [repo, repoFilesMap] of Object.entries(files)) {
      for (const [name, bytes] of repoFilesMap) {
        const ranges = (byFile.get(`${repo}/${name}`) ?? []).sort((a, b) => a[0] - b[0]);
        let coveredTo = 0;
        for (const [start, end] of ranges) {
          expect(start, `${repo}/${name}: bytes ${start}-${end - 1} requested again`).toBeGreaterThanOrEqual(
            coveredTo,
          );
          expect(
            start,
            `${repo}/${name}: bytes ${coveredTo}-${start - 1} never requested`,
          ).toBeLessThanOrEqual(coveredTo);
          coveredTo = Math.max(coveredTo, end);
        }
        expect(coveredTo, `${repo}/${name}`).toBe(bytes.length);
      }
    }
  } finally {
    await hub.stop();
  }
});

test('a corrupt byte fails the copy with the checksum message, keeps the merge output, adds nothing', async ({
  page,
}) => {
  const { hub, files } = await pairHub();
  try {
    const shard = 'model.safetensors';
    const original = files[SYSTEM1].get(shard)!;
    // The bytes the test hub serves for a corrupted file: its middle byte flipped.
    const served = original.slice();
    served[Math.floor(served.length / 2)] ^= 0xff;
    hub.corruptFile(SYSTEM1, shard);
    // The merge reads the bytes served, so its output is the CLI's on those bytes.
    const cli = await cliBytes({ ...files, [SYSTEM1]: new Map([...files[SYSTEM1], [shard, served]]) });
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}`);
    await setRecipe(page, RECIPE);
    await streamAll(page, [SYSTEM1, SYSTEM2]);
    await keepCopies(page, [SYSTEM1]);
    await page.getByTestId('merge-device').selectOption('cpu');
    await runMergeInPage(page);
    const status = page.getByTestId('merge-status');
    await expect(status).toContainText(
      `The copy of ${SYSTEM1} was not kept, and the merged output is not affected: ChecksumMismatchError: ` +
        `${SYSTEM1}/${shard}: sha256 is ${sha256Hex(served)} but the hub lists ${sha256Hex(original)}; ` +
        'the file is corrupt and was deleted. Nothing was added to the library; import the repo from the hub to try again.',
    );
    await expectSameBytes(page, cli);
    expect(await libraryNames(page)).toEqual([]);
    expect(await libraryKeys(page)).toEqual([]);
    await expect(page.getByTestId('pending-import')).toHaveCount(0);
  } finally {
    await hub.stop();
  }
});

/** The library's stored pieces of copies under way (`<import>/<file>/@<start>`), by file: [start, end). */
async function storedPieces(page: Page): Promise<Map<string, [number, number][]>> {
  const pieces = await page.evaluate(
    () =>
      new Promise<{ key: string; size: number }[]>((resolvePromise, reject) => {
        const open = indexedDB.open('l2s-library');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const store = open.result.transaction('kv', 'readonly').objectStore('kv');
          const out: { key: string; size: number }[] = [];
          const cursor = store.openCursor();
          cursor.onsuccess = () => {
            const c = cursor.result;
            if (!c) {
              open.result.close();
              resolvePromise(out);
              return;
            }
            const key = String(c.key);
            if (key.includes('/@')) out.push({ key, size: (c.value as Blob).size });
            c.continue();
          };
        };
      }),
  );
  const byFile = new Map<string, [number, number][]>();
  for (const { key, size } of pieces) {
    const at = key.lastIndexOf('/@');
    const file = key.slice(key.indexOf('/') + 1, at);
    const start = Number(key.slice(at + 2));
    byFile.set(file, [...(byFile.get(file) ?? []), [start, start + size]]);
  }
  return byFile;
}

const V1 = `${SYSTEM2}@v1`;
const RECIPE_V1 = RECIPE.replace(`model: ${SYSTEM2}`, `model: ${V1}`);

/**
 * The pair on the test hub with SYSTEM2's files as branch v1, and on `main` a changed copy of them
 * (one weight's exponent flipped, so a merge at `main` differs).
 */
async function revisionHub(): Promise<{ hub: HubServer; v1: Map<string, Uint8Array> }> {
  const system1 = await repoFiles(join(FIXTURES, 'system1'));
  const v1 = await repoFiles(join(FIXTURES, 'system2'));
  const changed = new Map(v1);
  const shard = 'model-00001-of-00002.safetensors';
  const bytes = changed.get(shard)!.slice();
  bytes[dataStart(bytes) + 101] ^= 0x40;
  changed.set(shard, bytes);
  const hub = new HubServer();
  hub.addRepo(SYSTEM1, { files: system1 });
  hub.addRepo(SYSTEM2, { files: changed, otherRevisions: new Map([['v1', v1]]) });
  await hub.start();
  return { hub, v1 };
}

/** The CLI's merge of `recipe` with its hub ids downloaded from `hub` into a fresh cache. */
async function cliFromHub(hub: HubServer, recipe: string): Promise<Map<string, Buffer>> {
  const dir = await mkdtemp(join(tmpdir(), 'l2s-stream-rev-'));
  await writeFile(join(dir, 'r.yml'), recipe);
  await ensureCliBuild();
  const home = join(dir, 'hf-home');
  await promisify(execFile)(
    'node',
    [join(ROOT, 'bin/l2s-merge.mjs'), join(dir, 'r.yml'), join(dir, 'out'), '--seed', '0', '--device', 'cpu'],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        HF_HOME: home,
        HF_HUB_CACHE: join(home, 'hub'),
        HF_ENDPOINT: hub.url,
        HF_TOKEN: '',
        HF_HUB_OFFLINE: '',
      },
    },
  );
  return readFolder(join(dir, 'out'));
}

test('a recipe naming a revision (owner/name@rev) is offered to stream, and merges that revision to the CLI bytes', async ({
  page,
}) => {
  const { hub } = await revisionHub();
  try {
    const cli = await cliFromHub(hub, RECIPE_V1);
    // The revision matters: at `main` the merge differs.
    const atMain = await cliFromHub(hub, RECIPE);
    expect(atMain.get('model.safetensors')?.equals(cli.get('model.safetensors')!)).toBe(false);
    const v1Sha = hub.revisions(SYSTEM2).get('v1')!.sha;
    const before = hub.log.length;
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}`);
    await setRecipe(page, RECIPE_V1);
    const offer = page.locator(`[data-testid="recipe-missing-hub"][data-repo="${V1}"]`);
    await expect(offer).toContainText(`${SYSTEM2} at revision v1 is not in the library.`);
    // The library names a download by its repo id, which this recipe would not find: stream only.
    await expect(offer.getByTestId('recipe-download-hub')).toHaveCount(0);
    await streamAll(page, [SYSTEM1, V1]);
    await expect(page.locator(`[data-testid="recipe-streamed-hub"][data-repo="${V1}"]`)).toContainText(
      `${SYSTEM2} at revision v1 streams from the hub when the merge runs (pinned to the commit v1 is at when the merge starts; no copy kept).`,
    );
    await page.getByTestId('merge-device').selectOption('cpu');
    await runMergeInPage(page);
    await expect(page.locator('l2s-run-panel .log')).toContainText(
      `${V1}: streamed from the hub at commit ${v1Sha.slice(0, 12)}`,
    );
    await expectSameBytes(page, cli);
    // Every file of the repo was read at v1's commit.
    const resolved = hub.log
      .slice(before)
      .filter((r) => r.method === 'GET' && r.url.includes(`/${SYSTEM2}/resolve/`));
    expect(resolved.length).toBeGreaterThan(0);
    for (const r of resolved) expect(r.url).toContain(`/${SYSTEM2}/resolve/${v1Sha}/`);
    expect(await libraryNames(page)).toEqual([]);
  } finally {
    await hub.stop();
  }
});

test('a reload mid-merge keeps the copy under way; the resumed merge goes on with it, requesting no stored byte again', async ({
  page,
}) => {
  test.setTimeout(180_000);
  const { hub, v1 } = await revisionHub();
  try {
    const cli = await cliFromHub(hub, RECIPE_V1);
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&paceWrites=150&chunk=300000`);
    await setRecipe(page, RECIPE_V1);
    await streamAll(page, [SYSTEM1, V1]);
    await keepCopies(page, [V1]);
    await page.getByTestId('merge-device').selectOption('cpu');
    await page.getByTestId('merge-run').click();
    await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'running');
    await expect
      .poll(async () => (await journal(page))[0]?.tensorsDone ?? 0, { intervals: [50], timeout: 60_000 })
      .toBeGreaterThanOrEqual(10);
    await page.reload();
    await openApp(page);
    await expect(page.getByTestId('merge-interrupted')).toHaveCount(1);
    // The start-up clean-up kept the copy of the interrupted run: its pieces are still stored.
    const stored = await storedPieces(page);
    const storedBytes = [...stored.values()].flat().reduce((n, [a, b]) => n + b - a, 0);
    expect(storedBytes).toBeGreaterThan(0);

    const before = hub.requests.length;
    const logBefore = hub.log.length;
    await page.getByTestId('merge-resume').click();
    const status = page.getByTestId('merge-status');
    await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 90_000 });
    await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
    await expect(page.locator('l2s-run-panel .log')).toContainText(
      `the copy goes on from ${formatBytes(storedBytes)} stored before the reload, not fetched again`,
    );
    await expect(status).toContainText(
      `The copy of ${V1} is in the library as ${V1} (every file checked against the hub's hashes).`,
    );
    await expectSameBytes(page, cli);
    // Named as the recipe names it, so the recipe now finds it in the library.
    await expect.poll(() => libraryNames(page)).toEqual([V1]);
    const library = await libraryFiles(page);
    expect(library[V1]).toEqual(
      Object.fromEntries(
        [...v1].map(([name, bytes]) => [name, { size: bytes.length, sha256: sha256Hex(bytes) }]),
      ),
    );
    expect((await libraryKeys(page)).filter((k) => k.startsWith('import:') || k.includes('/@'))).toEqual([]);
    // The resumed run kept the revision: SYSTEM2 was read at v1's commit, not at `main`.
    const v1Sha = hub.revisions(SYSTEM2).get('v1')!.sha;
    const resolved = hub.log
      .slice(logBefore)
      .filter((r) => r.method === 'GET' && r.url.includes(`/${SYSTEM2}/resolve/`));
    expect(resolved.length).toBeGreaterThan(0);
    for (const r of resolved) expect(r.url).toContain(`/${SYSTEM2}/resolve/${v1Sha}/`);
    // The server log: after the reload no byte the copy had stored was requested again.
    const after = hub.requests.slice(before).filter((r) => r.repo === SYSTEM2);
    expect(after.length).toBeGreaterThan(0);
    for (const r of after) {
      const m = /^bytes=(\d+)-(\d+)$/.exec(r.range ?? '');
      if (!m) throw new Error(`${r.repo}/${r.path}: a request without a bounded range (${r.range})`);
      const [a, b] = [Number(m[1]), Number(m[2]) + 1];
      for (const [p, q] of stored.get(r.path) ?? []) {
        expect(a < q && p < b, `${r.path}: bytes ${a}-${b - 1} requested again (stored ${p}-${q - 1})`).toBe(
          false,
        );
      }
    }
  } finally {
    await hub.stop();
  }
});

test('Cancel while the copy is completed keeps the committed merge output and removes the unfinished copy', async ({
  page,
}) => {
  test.setTimeout(120_000);
  const { hub, files } = await pairHub();
  try {
    const cli = await cliBytes(files);
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}`);
    await setRecipe(page, RECIPE);
    await streamAll(page, [SYSTEM1, SYSTEM2]);
    await keepCopies(page, [SYSTEM2]);
    await page.getByTestId('merge-device').selectOption('cpu');
    // The merge never reads the second model's tokenizer (side files come from the base): only the
    // copy's gap fetch asks for it, after the output was committed, and the hub holds it there.
    const held = hub.stallFile(SYSTEM2, 'tokenizer.json', 0, { resume: true });
    await page.getByTestId('merge-run').click();
    const status = page.getByTestId('merge-status');
    await held.reached;
    await expect(page.locator('l2s-run-panel .log')).toContainText(
      `${SYSTEM2}: completing the copy in the library (fetching the bytes the merge did not read)`,
    );
    // The copy under way: its unfinished import and the pieces the merge's reads stored.
    const during = await libraryKeys(page);
    expect(during.filter((k) => k.startsWith('import:'))).toHaveLength(1);
    expect(during.some((k) => k.includes('/@'))).toBe(true);
    await page.getByTestId('merge-cancel').click();
    await expect(status).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
    await expect(status).toHaveText(
      "Cancel came too late: the merge had already finished, and its output was kept in this browser's storage. " +
        `Keeping a copy of ${SYSTEM2} in the library was cancelled; nothing was added to the library.`,
    );
    held.release();
    // The output is the merge's, whole; the copy left nothing: no model, piece, import or journal record.
    await expectSameBytes(page, cli);
    expect(await libraryNames(page)).toEqual([]);
    expect(await libraryKeys(page)).toEqual([]);
    await expect(page.getByTestId('pending-import')).toHaveCount(0);
    expect(await journal(page)).toEqual([]);
    await expect(page.getByTestId('merge-interrupted')).toHaveCount(0);
    // A reload finds the output still there and nothing to clean up or resume.
    await page.reload();
    await openApp(page);
    await expect(page.getByTestId('pending-import')).toHaveCount(0);
    await expect(page.getByTestId('merge-interrupted')).toHaveCount(0);
    expect(await libraryKeys(page)).toEqual([]);
  } finally {
    await hub.stop();
  }
});

/**
 * A pair whose embedding (65536 x 64 bf16, 8 MiB per model) is larger than the CPU's cache across
 * passes and the spools' memory limit (both lowered to 1 MiB by `?streamCache=`) and than a 16 MB
 * GPU budget: a TIES merge reads it in several passes, so without the spool every pass downloads it.
 */
const WIDE_BASE = 'test-org/wide-base';
const WIDE_TUNED = 'test-org/wide-tuned';
const WIDE_RECIPE = `merge_method: ties
base_model: ${WIDE_BASE}
models:
  - model: ${WIDE_TUNED}
    parameters:
      weight: 1.0
      density: 0.3
dtype: bfloat16
`;

async function widePair(): Promise<Record<string, Map<string, Uint8Array>>> {
  const shape = { hiddenSize: 64, intermediateSize: 128, layers: 1, heads: 4, kvHeads: 2, vocabSize: 65536 };
  const [base, tuned] = await Promise.all([
    makeTinyModel(
      { name: 'wide-base', deltaSeed: 0, deltaScale: 0, tied: true, shards: 1, dtype: 'BF16' },
      shape,
    ),
    makeTinyModel(
      { name: 'wide-tuned', deltaSeed: 5, deltaScale: 0.1, tied: true, shards: 1, dtype: 'BF16' },
      shape,
    ),
  ]);
  return { [WIDE_BASE]: base.files, [WIDE_TUNED]: tuned.files };
}

/** The spool files in the origin private file system (`hub-spool/<run>/<file>`). */
async function spoolFiles(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    type Entries = { entries(): AsyncIterable<[string, FileSystemHandle]>; keys(): AsyncIterable<string> };
    const root = await navigator.storage.getDirectory();
    let spools: FileSystemDirectoryHandle;
    try {
      spools = await root.getDirectoryHandle('hub-spool');
    } catch {
      return [];
    }
    const found: string[] = [];
    for await (const [run, handle] of (spools as unknown as Entries).entries()) {
      if (handle.kind !== 'directory') {
        found.push(run);
        continue;
      }
      for await (const name of (handle as unknown as Entries).keys()) found.push(`${run}/${name}`);
    }
    return found;
  });
}

/** Every byte of each shard's data section was requested exactly once (the headers aside). */
function expectDataRequestedOnce(hub: HubServer, files: Record<string, Map<string, Uint8Array>>): void {
  for (const [repo, repoFilesMap] of Object.entries(files)) {
    const bytes = repoFilesMap.get('model.safetensors')!;
    const start = dataStart(bytes);
    const ranges = weightRanges(hub)
      .filter((r) => r.repo === repo && r.end >= start)
      .map((r) => [Math.max(r.start, start), r.end + 1] as const)
      .sort((a, b) => a[0] - b[0]);
    let coveredTo = start;
    for (const [a, b] of ranges) {
      expect(a, `${repo}: bytes ${a}-${Math.min(b, coveredTo) - 1} requested again`).toBeGreaterThanOrEqual(
        coveredTo,
      );
      expect(a, `${repo}: bytes ${coveredTo}-${a - 1} never requested`).toBe(coveredTo);
      coveredTo = b;
    }
    expect(coveredTo, repo).toBe(bytes.length);
  }
}

async function wideHub(files: Record<string, Map<string, Uint8Array>>): Promise<HubServer> {
  const hub = new HubServer();
  for (const [repo, repoFilesMap] of Object.entries(files)) hub.addRepo(repo, { files: repoFilesMap });
  await hub.start();
  return hub;
}

async function wideCliBytes(files: Record<string, Map<string, Uint8Array>>): Promise<Map<string, Buffer>> {
  const dir = await mkdtemp(join(tmpdir(), 'l2s-spool-'));
  for (const [repo, repoFilesMap] of Object.entries(files)) {
    await mkdir(join(dir, repo), { recursive: true });
    for (const [name, bytes] of repoFilesMap) await writeFile(join(dir, repo, name), bytes);
  }
  await writeFile(join(dir, 'ties.yml'), WIDE_RECIPE);
  return cliMerge(join(dir, 'ties.yml'), join(dir, 'cli-out'), ['--device', 'cpu']);
}

for (const device of ['cpu', 'gpu'] as const) {
  test(`a TIES merge on the ${device.toUpperCase()} streamed from the hub downloads each weight byte once, through a spool it removes`, async ({
    page,
  }) => {
    test.setTimeout(180_000);
    const files = await widePair();
    const hub = await wideHub(files);
    try {
      const cli = await wideCliBytes(files);
      await openApp(page, `?hub=${encodeURIComponent(hub.url)}&streamCache=${1 << 20}`);
      await setRecipe(page, WIDE_RECIPE);
      await streamAll(page, [WIDE_BASE, WIDE_TUNED]);
      await page.getByTestId('merge-device').selectOption(device);
      if (device === 'gpu') await page.getByTestId('merge-gpu-memory').fill('16M');
      await runMergeInPage(page);
      const log = page.locator('l2s-run-panel .log');
      if (device === 'gpu') await expect(log).toContainText('merging on the GPU');
      await expect(log).toContainText(/later passes read [\d.]+ MB again from the temporary spool/);
      console.log(
        `${device}: ${/read [\d.]+ MB from the hub in \d+ range requests[^\n]*/.exec((await log.textContent()) ?? '')?.[0]}`,
      );
      await expectSameBytes(page, cli);
      expectDataRequestedOnce(hub, files);
      expect(await spoolFiles(page)).toEqual([]);
    } finally {
      await hub.stop();
    }
  });
}

/**
 * Starts a TIES merge on the CPU streamed from `hub`, with writes paced so that it is caught while
 * the embedding's spools (one per model) are in OPFS; resolves once they are.
 */
async function startSpooledMerge(page: Page, hub: HubServer): Promise<void> {
  await openApp(page, `?hub=${encodeURIComponent(hub.url)}&streamCache=${1 << 20}&paceWrites=300`);
  await setRecipe(page, WIDE_RECIPE);
  await streamAll(page, [WIDE_BASE, WIDE_TUNED]);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-run').click();
  await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'running');
  await expect
    .poll(async () => (await spoolFiles(page)).length, { intervals: [25], timeout: 90_000 })
    .toBeGreaterThan(0);
}

test('Cancel during a spooled tensor removes its spool from OPFS', async ({ page }) => {
  test.setTimeout(180_000);
  const hub = await wideHub(await widePair());
  try {
    await startSpooledMerge(page, hub);
    const status = page.getByTestId('merge-status');
    await page.getByTestId('merge-cancel').click();
    await expect(status).toHaveAttribute('data-state', 'idle', { timeout: 30_000 });
    await expect(status).toHaveText('Merge cancelled; nothing was kept.');
    expect(await spoolFiles(page)).toEqual([]);
  } finally {
    await hub.stop();
  }
});

test('a reload during a spooled tensor leaves a spool that the next start removes', async ({ page }) => {
  test.setTimeout(180_000);
  const hub = await wideHub(await widePair());
  try {
    await startSpooledMerge(page, hub);
    await page.reload();
    await openApp(page);
    await expect.poll(() => spoolFiles(page), { timeout: 30_000 }).toEqual([]);
  } finally {
    await hub.stop();
  }
});

test('with a copy kept, later passes read the copy: no byte is requested twice and nothing is spooled', async ({
  page,
}) => {
  test.setTimeout(180_000);
  const files = await widePair();
  const hub = await wideHub(files);
  try {
    const cli = await wideCliBytes(files);
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}&streamCache=${1 << 20}`);
    await setRecipe(page, WIDE_RECIPE);
    await streamAll(page, [WIDE_BASE, WIDE_TUNED]);
    await keepCopies(page, [WIDE_BASE, WIDE_TUNED]);
    await page.getByTestId('merge-device').selectOption('cpu');
    // Spools would be written while the tensor is merged: watch OPFS throughout.
    let spooled = 0;
    const watching = (async () => {
      while ((await page.getByTestId('merge-status').getAttribute('data-state')) !== 'done') {
        spooled += (await spoolFiles(page)).length;
        await page.waitForTimeout(25);
      }
    })();
    await runMergeInPage(page);
    await watching;
    expect(spooled, 'spool files seen during the merge').toBe(0);
    const log = page.locator('l2s-run-panel .log');
    await expect(log).toContainText(/later passes read [\d.]+ MB again from the temporary spool/);
    await expectSameBytes(page, cli);
    for (const repo of [WIDE_BASE, WIDE_TUNED]) {
      await expect(page.getByTestId('merge-status')).toContainText(`The copy of ${repo} is in the library`);
    }
    // Every byte of every file requested exactly once, the copy's gap fetches included.
    for (const [repo, repoFilesMap] of Object.entries(files)) {
      for (const [name, bytes] of repoFilesMap) {
        const ranges = hub.requests
          .filter((r) => r.repo === repo && r.path === name)
          .map((r) => /^bytes=(\d+)-(\d+)$/.exec(r.range ?? '')!)
          .map((m) => [Number(m[1]), Number(m[2]) + 1] as const)
          .sort((a, b) => a[0] - b[0]);
        let coveredTo = 0;
        for (const [a, b] of ranges) {
          expect(a, `${repo}/${name}: bytes from ${a} requested again`).toBeGreaterThanOrEqual(coveredTo);
          coveredTo = b;
        }
        expect(coveredTo, `${repo}/${name}`).toBe(bytes.length);
      }
    }
  } finally {
    await hub.stop();
  }
});
