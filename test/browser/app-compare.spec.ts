/**
 * The teacher's path through Compare: import the fixture pair (System 1, System 2), merge them with
 * TIES in the page, ask all three models one question with the text streaming, and get exactly the
 * tokens transformers (for the pair) and the Node CLI's CPU reference (for the merge) give for that
 * prompt; then "Run all questions" over a few built-in questions fills the paper's table; Stop ends a
 * run; GSM8K questions come from a dataset viewer endpoint, with a clear error when it is unreachable.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Page } from '@playwright/test';
import { BUILTIN_QUESTIONS } from '../../src/eval/questions';
import {
  cliMerge,
  expect,
  importFolder,
  openApp,
  ROOT,
  runMergeInPage,
  screenshot,
  setRecipe,
  test,
} from './app-harness';
import { ensureCliBuild } from './cli-build';

const run = promisify(execFile);
const FIXTURES = join(ROOT, 'test/fixtures/qwen2-tiny-l2s');
const MAX_NEW_TOKENS = 48;

/** The paper's 1.5B TIES setting (k = 0.8 trimmed, so density 0.2; alpha = lambda 1). */
const RECIPE = `merge_method: ties
base_model: system1
models:
  - model: system2
    parameters:
      weight: 1.0
      density: 0.2
parameters:
  lambda: 1.0
dtype: bfloat16
`;

interface ReferencePrompt {
  messages: { role: string; content: string }[];
  generated_ids: number[];
  generated_text: string;
}

function referencePrompt(model: string, index: number): ReferencePrompt {
  return JSON.parse(readFileSync(join(FIXTURES, model, 'reference.json'), 'utf8')).prompts[index];
}

/** The fixture pair in a temporary folder beside the recipe, as the CLI resolves model references. */
async function recipeFolder(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'l2s-compare-'));
  await symlink(join(FIXTURES, 'system1'), join(dir, 'system1'));
  await symlink(join(FIXTURES, 'system2'), join(dir, 'system2'));
  await writeFile(join(dir, 'ties.yml'), RECIPE);
  return dir;
}

/** The CLI's CPU reference for one prompt (built first, so it runs the code under test). */
async function cliGenerateIds(modelDir: string, question: string): Promise<number[]> {
  const { stdout } = await run(
    'node',
    [
      join(ROOT, 'bin/l2s-merge.mjs'),
      'generate',
      modelDir,
      '--prompt',
      question,
      '--max-new-tokens',
      String(MAX_NEW_TOKENS),
      '--device',
      'cpu',
      '--json',
    ],
    { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 },
  );
  return JSON.parse(stdout).token_ids;
}

async function importAndMerge(page: Page): Promise<string> {
  await openApp(page);
  await importFolder(page, join(FIXTURES, 'system1'));
  await importFolder(page, join(FIXTURES, 'system2'));
  await setRecipe(page, RECIPE);
  await runMergeInPage(page);
  const outputId = await page.getByTestId('merge-status').getAttribute('data-output-id');
  expect(outputId).toBeTruthy();
  return outputId as string;
}

async function waitForRun(page: Page, runsBefore: number): Promise<void> {
  const status = page.getByTestId('compare-status');
  await expect(status).toHaveAttribute('data-runs', String(runsBefore + 1));
  await expect(status).toHaveAttribute('data-state', /done|error/, { timeout: 120_000 });
  await expect(status, (await status.textContent()) ?? '').toHaveAttribute('data-state', 'done');
}

test.beforeAll(async () => {
  test.setTimeout(180_000);
  await ensureCliBuild();
});

test('Compare streams each model, counts the reference tokens, and fills the table', async ({ page }) => {
  test.setTimeout(300_000);
  const outputId = await importAndMerge(page);

  // Defaults from the recipe: System 2, the merge just made, System 1.
  await expect(page.getByTestId('compare-model-0')).toHaveValue('lib:system2');
  await expect(page.getByTestId('compare-model-1')).toHaveValue(`out:${outputId}`);
  await expect(page.getByTestId('compare-model-2')).toHaveValue('lib:system1');
  await expect(page.getByTestId('compare-system-prompt')).toHaveValue(
    'Please reason step by step, and put your final answer within \\boxed{}.',
  );
  // Every control has a label tied to it.
  for (const id of [
    'compare-model-0',
    'compare-system-prompt',
    'compare-question',
    'compare-max-tokens',
    'compare-count',
  ]) {
    expect(
      await page.getByTestId(id).evaluate((el) => (el as HTMLInputElement).labels?.length ?? 0),
      id,
    ).toBe(1);
  }

  // The reference prompts have no system message: the same chat gives the same prompt tokens.
  const s1 = referencePrompt('system1', 0);
  const s2 = referencePrompt('system2', 0);
  const question = s1.messages[0].content;
  expect(s2.messages[0].content).toBe(question);
  await page.getByTestId('compare-system-prompt').fill('');
  await page.getByTestId('compare-question').fill(question);
  await page.getByTestId('compare-max-tokens').fill(String(MAX_NEW_TOKENS));
  await page.getByTestId('compare-max-tokens').dispatchEvent('change');

  const folder = await recipeFolder();
  try {
    await cliMerge(join(folder, 'ties.yml'), join(folder, 'merged'));
    const mergedIds = await cliGenerateIds(join(folder, 'merged'), question);

    const status = page.getByTestId('compare-status');
    const runs = Number(await status.getAttribute('data-runs'));
    await page.getByTestId('compare-run').click();
    await waitForRun(page, runs);
    await screenshot(page, 'compare-question');

    const results = page.getByTestId('compare-result');
    await expect(results).toHaveCount(3);
    const webgpu = await page.getByTestId('webgpu-status').getAttribute('data-webgpu');
    for (let i = 0; i < 3; i++) {
      await expect(results.nth(i)).toHaveAttribute('data-backend', webgpu === 'true' ? 'gpu' : 'cpu');
    }
    const expected = [
      { model: 'system2', ids: s2.generated_ids, text: s2.generated_text },
      { model: 'merge', ids: mergedIds },
      { model: 'system1', ids: s1.generated_ids, text: s1.generated_text },
    ];
    for (const [i, want] of expected.entries()) {
      const result = results.nth(i);
      await expect(result).toHaveAttribute('data-state', 'done');
      expect(await result.getAttribute('data-model')).toContain(want.model);
      await expect(result).toHaveAttribute('data-token-ids', want.ids.join(','));
      await expect(result).toHaveAttribute('data-tokens', String(want.ids.length));
      // Every token reached the page while the model generated, not only in the final result.
      await expect(result).toHaveAttribute('data-streamed', String(want.ids.length));
      await expect(result.getByTestId('compare-tokens')).toHaveText(`${want.ids.length} tokens`);
      await expect(result.getByTestId('compare-tps')).toHaveText(/^\d+(\.\d)? tokens\/s$/);
      await expect(result.getByTestId('compare-time')).toHaveText(/^\d+\.\d+ s$/);
      if (want.text !== undefined) await expect(result.getByTestId('compare-text')).toHaveText(want.text);
      else await expect(result.getByTestId('compare-text')).not.toBeEmpty();
    }
    // System 1 answers "The answer is 23." (34 - 10 = 24 is right; the tiny model is not).
    await expect(results.nth(2)).toHaveAttribute('data-answer', '23');
    await expect(results.nth(2).getByTestId('compare-answer')).toContainText('23');
    // System 2 ran out of tokens inside its reasoning: its last number stands as the answer.
    await expect(results.nth(0)).toHaveAttribute('data-answer', '24');
  } finally {
    await rm(folder, { recursive: true, force: true });
  }

  // "Run all questions" on the first three built-in questions, with the paper's prompt again.
  await page
    .getByTestId('compare-system-prompt')
    .fill('Please reason step by step, and put your final answer within \\boxed{}.');
  await page.getByTestId('compare-count').fill('3');
  await page.getByTestId('compare-count').dispatchEvent('change');
  // The CPU reference in the worker this time (the question above ran where 'auto' chose).
  await page.getByTestId('compare-device').selectOption('cpu');
  const runs = Number(await page.getByTestId('compare-status').getAttribute('data-runs'));
  await page.getByTestId('compare-run-all').click();
  await waitForRun(page, runs);
  await screenshot(page, 'compare-table');
  const rows = page.getByTestId('compare-table-row');
  await expect(rows).toHaveCount(3);
  const table = await rows.evaluateAll((els) =>
    els.map((e) => ({
      model: e.getAttribute('data-model') ?? '',
      questions: Number(e.getAttribute('data-questions')),
      accuracy: Number(e.getAttribute('data-accuracy')),
      meanTokens: Number(e.getAttribute('data-mean-tokens')),
      lengthChange: e.getAttribute('data-length-change'),
      partial: e.getAttribute('data-partial'),
    })),
  );
  expect(table.map((r) => r.model.replace(/^merge output.*/, 'merge'))).toEqual([
    'system2',
    'merge',
    'system1',
  ]);
  for (const r of table) {
    expect(r.questions).toBe(3);
    expect(r.partial).toBe('false');
    expect(r.accuracy).toBeGreaterThanOrEqual(0);
    expect(r.accuracy).toBeLessThanOrEqual(1);
    expect(Number.isInteger(Math.round(r.accuracy * 3))).toBe(true);
    expect(r.meanTokens).toBeGreaterThan(0);
    expect(r.meanTokens).toBeLessThanOrEqual(MAX_NEW_TOKENS);
  }
  // System 2 is the reference; the others' length change is len / len_S2 - 1.
  expect(table[0].lengthChange).toBe('');
  for (const r of table.slice(1)) {
    expect(Number(r.lengthChange)).toBeCloseTo(r.meanTokens / table[0].meanTokens - 1, 9);
  }
  const answers = page.getByTestId('compare-answers');
  await expect(answers.locator('tbody tr')).toHaveCount(3);
  await expect(answers.locator('tbody tr').first()).toContainText(BUILTIN_QUESTIONS[0].answer);
});

test('Stop ends a run within a token and keeps only finished models in the table', async ({ page }) => {
  test.setTimeout(300_000);
  await importAndMerge(page);
  await page.getByTestId('compare-max-tokens').fill(String(MAX_NEW_TOKENS));
  await page.getByTestId('compare-max-tokens').dispatchEvent('change');
  const status = page.getByTestId('compare-status');

  // One question: stop System 2 while it streams; the models after it do not start.
  await page.getByTestId('compare-question').fill(referencePrompt('system2', 1).messages[0].content);
  await page.getByTestId('compare-system-prompt').fill('');
  let runs = Number(await status.getAttribute('data-runs'));
  await page.getByTestId('compare-run').click();
  await expect(status).toHaveAttribute('data-runs', String(runs + 1));
  const first = page.getByTestId('compare-result').first();
  await expect
    .poll(async () => Number(await first.getAttribute('data-streamed')), { timeout: 60_000 })
    .toBeGreaterThanOrEqual(3);
  // What the page has seen when the button is pressed; at most the token under way follows it.
  const seenAtStop = await page.evaluate(() => {
    const panel = document.querySelector('l2s-app')?.shadowRoot?.querySelector('l2s-compare-panel');
    const root = panel?.shadowRoot;
    const result = root?.querySelector('[data-testid="compare-result"]');
    const stop = root?.querySelector<HTMLButtonElement>('[data-testid="compare-stop"]');
    if (!result || !stop) throw new Error('the Stop button or the first result is missing');
    stop.click();
    return Number(result.getAttribute('data-streamed'));
  });
  await expect(status).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
  await expect(status).toHaveText('Stopped.');
  await expect(first).toHaveAttribute('data-state', 'stopped');
  const tokens = Number(await first.getAttribute('data-tokens'));
  expect(tokens).toBeGreaterThanOrEqual(seenAtStop);
  expect(tokens).toBeLessThanOrEqual(seenAtStop + 1);
  expect(tokens).toBeLessThan(MAX_NEW_TOKENS);
  expect((await first.getAttribute('data-token-ids'))?.split(',').map(Number)).toEqual(
    referencePrompt('system2', 1).generated_ids.slice(0, tokens),
  );
  for (const i of [1, 2]) {
    await expect(page.getByTestId('compare-result').nth(i)).toHaveAttribute('data-state', 'stopped');
    await expect(page.getByTestId('compare-result').nth(i)).toHaveAttribute('data-tokens', '0');
  }

  // Every question: stop after a few answers of System 2 (on the CPU, to keep the test short).
  await page.getByTestId('compare-device').selectOption('cpu');
  await page.getByTestId('compare-count').fill(String(BUILTIN_QUESTIONS.length));
  await page.getByTestId('compare-count').dispatchEvent('change');
  runs = Number(await status.getAttribute('data-runs'));
  await page.getByTestId('compare-run-all').click();
  await expect(status).toHaveAttribute('data-runs', String(runs + 1));
  const progress = page.getByTestId('compare-progress');
  await expect
    .poll(async () => Number(await progress.evaluate((p) => (p as HTMLProgressElement).value)), {
      timeout: 60_000,
    })
    .toBeGreaterThanOrEqual(2);
  await page.getByTestId('compare-stop').click();
  await expect(status).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
  await expect(status).toHaveText(/^Stopped after \d+ of \d+ answers\.$/);
  await expect(page.getByTestId('compare-stop')).toHaveCount(0);
  // System 2 had not answered every question: its row is marked unfinished and nothing is compared with it.
  const rows = page.getByTestId('compare-table-row');
  await expect(rows).toHaveCount(1);
  await expect(rows.first()).toHaveAttribute('data-partial', 'true');
  await expect(rows.first()).toHaveAttribute('data-length-change', '');
  const answered = Number(await rows.first().getAttribute('data-questions'));
  expect(answered).toBeGreaterThanOrEqual(2);
  expect(answered).toBeLessThan(BUILTIN_QUESTIONS.length);
  await expect(status).toHaveText(`Stopped after ${answered} of ${3 * BUILTIN_QUESTIONS.length} answers.`);

  // Stop while a model is still loading: the run ends (the worker is ended if loading takes long).
  await page.getByTestId('compare-device').selectOption('auto');
  runs = Number(await status.getAttribute('data-runs'));
  await page.getByTestId('compare-run').click();
  await expect(status).toHaveAttribute('data-runs', String(runs + 1));
  await expect(page.getByTestId('compare-result').first()).toHaveAttribute('data-state', /loading|running/);
  await page.getByTestId('compare-stop').click();
  await expect(status).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
  await expect(status).toHaveText('Stopped.');
  await expect(page.getByTestId('compare-result').first()).toHaveAttribute('data-state', 'stopped');

  // The runtime is free again: a question runs to the end.
  await page.getByTestId('compare-device').selectOption('cpu');
  await page.getByTestId('compare-model-1').selectOption('');
  await page.getByTestId('compare-model-2').selectOption('');
  runs = Number(await status.getAttribute('data-runs'));
  await page.getByTestId('compare-run').click();
  await waitForRun(page, runs);
  const only = page.getByTestId('compare-result');
  await expect(only).toHaveCount(1);
  await expect(only.first()).toHaveAttribute('data-state', 'done');
  await expect(only.first()).toHaveAttribute(
    'data-token-ids',
    referencePrompt('system2', 1).generated_ids.join(','),
  );
});

test.describe('GSM8K from the dataset viewer', () => {
  let server: Server;
  let endpoint: string;

  test.beforeAll(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const offset = Number(url.searchParams.get('offset'));
      const length = Number(url.searchParams.get('length'));
      const rows = Array.from({ length }, (_, i) => ({
        row_idx: offset + i,
        row: { question: `Viewer question ${offset + i}?`, answer: `Steps.\n#### ${offset + i + 100}` },
        truncated_cells: [],
      }));
      res.writeHead(200, { 'content-type': 'application/json', 'access-control-allow-origin': '*' });
      res.end(
        JSON.stringify({ features: [], rows, num_rows_total: 1319, num_rows_per_page: 100, partial: false }),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  test.afterAll(() => new Promise<void>((r) => server.close(() => r())));

  test('loads the first N test questions from the configured endpoint', async ({ page }) => {
    await openApp(page, `?datasets=${encodeURIComponent(endpoint)}`);
    await page.getByTestId('compare-count').fill('4');
    await page.getByTestId('compare-count').dispatchEvent('change');
    await page.getByTestId('compare-gsm8k-load').click();
    const gsm = page.getByTestId('compare-gsm8k-status');
    await expect(gsm).toHaveAttribute('data-state', 'done');
    await expect(gsm).toHaveText('4 GSM8K test questions loaded.');
    await expect(page.getByTestId('compare-question-set')).toHaveValue('gsm8k');
    await page.getByTestId('compare-question-pick').selectOption('gsm8k-test-2');
    await expect(page.getByTestId('compare-question')).toHaveValue('Viewer question 2?');
    await expect(page.getByTestId('compare-gold')).toHaveText('Expected answer: 102');
    // No accessibility violations axe can find in the panel (labels, names, contrast, roles).
    await page.addScriptTag({ path: join(ROOT, 'node_modules/axe-core/axe.min.js') });
    type AxeRule = { id: string; help: string; nodes: unknown[] };
    const audit = await page.evaluate(async () => {
      const axe = (
        window as unknown as {
          axe: { run(el: Element): Promise<{ violations: AxeRule[]; passes: AxeRule[] }> };
        }
      ).axe;
      const panel = document.querySelector('l2s-app')?.shadowRoot?.querySelector('l2s-compare-panel');
      if (!panel) throw new Error('no compare panel');
      const result = await axe.run(panel);
      return {
        violations: result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.length})`),
        labelled: result.passes.find((p) => p.id === 'label')?.nodes.length ?? 0,
      };
    });
    expect(audit.violations).toEqual([]);
    // axe looked inside the panel's shadow root: every text field is labelled (system, question, tokens, N).
    expect(audit.labelled).toBeGreaterThanOrEqual(4);
  });

  test('says what to do when the dataset viewer cannot be reached', async ({ page }) => {
    await openApp(page, `?datasets=${encodeURIComponent('http://127.0.0.1:1')}`);
    await page.getByTestId('compare-gsm8k-load').click();
    const gsm = page.getByTestId('compare-gsm8k-status');
    await expect(gsm).toHaveAttribute('data-state', 'error');
    await expect(gsm).toContainText(
      'DatasetFetchError: could not reach the dataset viewer at http://127.0.0.1:1/rows?',
    );
    await expect(gsm).toContainText('offline, use the built-in questions');
    await expect(page.getByTestId('compare-question-set')).toHaveValue('builtin');
  });
});
