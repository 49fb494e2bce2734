/**
 * "Run the paper's 1.5B experiment" end to end against the local test hub, which serves the trained
 * fixture pair (test/fixtures/qwen2-tiny-l2s) under the two paper repo ids: sizes, storage and the
 * GPU check shown before any weight is fetched, the download, the TIES merge, the Compare questions on
 * all three models, the user's table beside the paper's, and CSV and PNG exports.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, openApp, ROOT, screenshot, test } from './app-harness';
import { HubServer } from './hub-server';

const FIXTURES = join(ROOT, 'test/fixtures/qwen2-tiny-l2s');
const REPOS = {
  system1: 'Qwen/Qwen2.5-Math-1.5B',
  system2: 'deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B',
};

/** The folder's model files as the hub would hold them (the reference outputs are test data only). */
async function repoFiles(folder: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const name of (await readdir(folder)).sort()) {
    if (name === 'reference.json') continue;
    files.set(name, new Uint8Array(await readFile(join(folder, name))));
  }
  return files;
}

/** Requests for weights: a shard's resolve URL or the content-addressed LFS download it redirects to. */
function weightRequests(hub: HubServer): string[] {
  return hub.log
    .filter((r) => r.method === 'GET' && (r.url.includes('.safetensors') || r.url.startsWith('/lfs/')))
    .map((r) => r.url);
}

test('the guided 1.5B experiment: plan, download, merge, compare, export', async ({ page }) => {
  test.setTimeout(600_000);
  const hub = new HubServer();
  const system1 = await repoFiles(join(FIXTURES, 'system1'));
  const system2 = await repoFiles(join(FIXTURES, 'system2'));
  hub.addRepo(REPOS.system1, { files: system1 });
  hub.addRepo(REPOS.system2, { files: system2 });
  await hub.start();
  try {
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}`);
    const flow = page.locator('l2s-paper-experiment');
    await flow.scrollIntoViewIfNeeded();
    await flow.getByTestId('experiment-plan').click();
    await expect(flow.getByTestId('experiment-plan-table')).toBeVisible({ timeout: 30_000 });

    // Sizes from the hub's file list, before any weight is fetched.
    const sizes = await flow
      .getByTestId('experiment-size')
      .evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-bytes'))));
    const total = (files: Map<string, Uint8Array>) => [...files.values()].reduce((s, b) => s + b.length, 0);
    expect(sizes).toEqual([total(system1), total(system2)]);
    expect(weightRequests(hub), 'no weights fetched before the user says so').toEqual([]);
    await expect(flow.getByTestId('experiment-storage')).toContainText('of browser storage');
    await expect(flow.getByTestId('experiment-estimate')).toContainText('to download at');
    // SwiftShader's 1 GiB buffers hold the tiny models' largest tensor.
    await expect(flow.getByTestId('experiment-gpu')).toHaveAttribute('data-fits', 'true');
    await screenshot(page, 'experiment-plan');

    await flow.getByTestId('experiment-run').click();
    await expect(flow.getByTestId('experiment-status')).toHaveAttribute('data-phase', /merged|error/, {
      timeout: 180_000,
    });
    await expect(flow.getByTestId('experiment-status')).toHaveAttribute('data-phase', 'merged');
    await expect(page.getByTestId('library-model')).toHaveCount(2);
    await expect(page.getByTestId('recipe-yaml')).toHaveValue(/density: 0\.2/);

    // The Compare questions on System 2, the merge and System 1, on the CPU (quicker than SwiftShader).
    const compare = flow.locator('l2s-compare-panel');
    await compare.getByTestId('compare-count').fill('2');
    await compare.getByTestId('compare-count').dispatchEvent('change');
    await compare.getByTestId('compare-max-tokens').fill('64');
    await compare.getByTestId('compare-max-tokens').dispatchEvent('change');
    await compare.getByTestId('compare-device').selectOption('cpu');
    await compare.getByTestId('compare-run-all').click();
    const results = flow.getByTestId('experiment-results');
    await expect(results).toBeVisible({ timeout: 300_000 });
    const rows = flow.getByTestId('experiment-result-row');
    await expect(rows).toHaveCount(3);
    const cells = await rows.evaluateAll((els) =>
      els.map((e) => Array.from(e.querySelectorAll('td'), (td) => td.textContent?.trim() ?? '')),
    );
    expect(cells.map((c) => c[0].split(/\s/)[0])).toEqual(['System', 'Merged', 'System']);
    for (const c of cells) {
      expect(c[1]).toBe('2');
      expect(c[2]).toMatch(/^(0|50|100)\.0%$/);
      expect(Number(c[3])).toBeGreaterThan(0);
    }
    expect(cells[0].slice(5)).toEqual(['76.8', '2744']);
    expect(cells[1].slice(5)).toEqual(['75.9', '394']);
    expect(cells[1][4]).toMatch(/%$/);
    await screenshot(page, 'experiment-results');

    // CSV for slides.
    const [csv] = await Promise.all([
      page.waitForEvent('download'),
      flow.getByTestId('experiment-csv').click(),
    ]);
    expect(csv.suggestedFilename()).toBe('l2s-1.5b-experiment.csv');
    const lines = (await readFile(await csv.path(), 'utf8')).trim().split('\n');
    expect(lines[0]).toBe(
      'role,model,questions,accuracy_percent,mean_tokens,length_change_percent,paper_gsm8k_percent,paper_mean_tokens',
    );
    expect(lines).toHaveLength(4);
    expect(lines[1]).toMatch(/^System 2,.*,2,(0|50|100),[\d.]+,,76\.8,2744$/);
    expect(lines[2]).toMatch(/^Merged \(TIES\),.*,2,(0|50|100),[\d.]+,-?[\d.]+,75\.9,394$/);
    // And the chart as PNG.
    const chart = flow.locator('l2s-chart').last();
    const [png] = await Promise.all([page.waitForEvent('download'), chart.getByTestId('chart-png').click()]);
    const bytes = await readFile(await png.path());
    expect(bytes.subarray(1, 4).toString()).toBe('PNG');
    expect(bytes.length).toBeGreaterThan(3000);
  } finally {
    await hub.stop();
  }
});

test('where the GPU cannot hold the model, the flow says so before downloading', async ({ page }) => {
  test.setTimeout(120_000);
  const hub = new HubServer();
  hub.addRepo(REPOS.system1, { files: await repoFiles(join(FIXTURES, 'system1')) });
  hub.addRepo(REPOS.system2, { files: await repoFiles(join(FIXTURES, 'system2')) });
  await hub.start();
  try {
    // An adapter whose buffers are smaller than the model's embedding (128 kB of bf16).
    await page.addInitScript(() => {
      const gpu = navigator.gpu;
      if (!gpu) return;
      const request = gpu.requestAdapter.bind(gpu);
      gpu.requestAdapter = async (options?: GPURequestAdapterOptions) => {
        const adapter = await request(options);
        if (!adapter) return adapter;
        const limits = new Proxy(adapter.limits, {
          get: (target, key) =>
            key === 'maxBufferSize' || key === 'maxStorageBufferBindingSize'
              ? 65536
              : Reflect.get(target, key, target),
        });
        return new Proxy(adapter, {
          get: (target, key) => (key === 'limits' ? limits : Reflect.get(target, key, target)),
        });
      };
    });
    await openApp(page, `?hub=${encodeURIComponent(hub.url)}`);
    const flow = page.locator('l2s-paper-experiment');
    await flow.getByTestId('experiment-plan').click();
    const gpu = flow.getByTestId('experiment-gpu');
    await expect(gpu).toHaveAttribute('data-fits', 'false', { timeout: 30_000 });
    await expect(gpu).toContainText('Your GPU cannot run the models');
    await expect(gpu).toContainText('allows buffers of at most 65.5 kB');
    await expect(flow.getByTestId('experiment-run')).toBeDisabled();
    await flow.getByTestId('experiment-anyway').check();
    await expect(flow.getByTestId('experiment-run')).toBeEnabled();
    expect(weightRequests(hub)).toEqual([]);
  } finally {
    await hub.stop();
  }
});
