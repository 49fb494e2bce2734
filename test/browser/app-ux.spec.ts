/**
 * The page as practitioners use it: a recipe editor that never loses typed YAML and never opens a
 * method into an error, Merge refused with its reason, state kept across reloads and shared as a
 * link, a phone-sized layout and axe-core's rules on every view.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTinyModel, TINY_TRIO } from '../../src/demo/tiny-qwen';
import { writeModel } from '../fixtures/tiny';
import { expect, importFolder, openApp, runMergeInPage, setRecipe, test } from './app-harness';
import { checkView, elementsPastViewport, horizontalOverflow, PHONE, viewShots } from './ux-checks';

const DEMO_TIES = `merge_method: ties
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-system2
    parameters:
      weight: 1.0
      density: 0.2
parameters:
  lambda: 1.0
dtype: bfloat16
`;

async function loadDemo(page: import('@playwright/test').Page): Promise<void> {
  await page.getByTestId('demo').click();
  await expect(page.getByTestId('library-model')).toHaveCount(3, { timeout: 30_000 });
}

test('every view fits 390 px and has no serious axe violations', async ({ page }) => {
  const favicon: number[] = [];
  page.on('response', (r) => {
    if (new URL(r.url()).pathname.startsWith('/favicon')) favicon.push(r.status());
  });
  await openApp(page);
  for (const [name, prepare] of [
    ['empty', async () => {}],
    ['demo', () => loadDemo(page)],
    ['recipe-parse-error', () => setRecipe(page, 'merge_method: ties\nmodels: [')],
    [
      'merged',
      async () => {
        await setRecipe(page, DEMO_TIES);
        await runMergeInPage(page);
      },
    ],
    [
      'inspect',
      async () => {
        await page.getByTestId('inspect-run').click();
        await expect(page.getByTestId('inspect-status')).toHaveAttribute('data-state', 'done', {
          timeout: 60_000,
        });
      },
    ],
  ] as const) {
    await prepare();
    const { overflow, violations } = await checkView(page, `view-${name}`);
    expect(
      overflow,
      `${name}: wider than 390 px: ${(await elementsPastViewport(page)).join(', ')}`,
    ).toBeLessThanOrEqual(0);
    expect(violations, `${name}: ${JSON.stringify(violations, null, 1)}`).toEqual([]);
  }
  // The icon is served (no 404 on every load).
  expect(favicon.length).toBeGreaterThan(0);
  expect(favicon.every((s) => s === 200 || s === 304)).toBe(true);
});

test('the recipe editor keeps typed YAML, follows the method, and Merge says what blocks it', async ({
  page,
}) => {
  await openApp(page);
  // An empty library still shows the form, with a prompt to import.
  await page.getByTestId('recipe-method').selectOption('ties');
  await expect(page.getByTestId('recipe-import-prompt')).toBeVisible();
  await expect(page.getByTestId('recipe-error')).toHaveCount(0);
  await expect(page.getByTestId('merge-run')).toBeDisabled();
  await expect(page.getByTestId('merge-blocked')).toContainText('Cannot merge yet');
  await viewShots(page, 'recipe-empty-library');

  await loadDemo(page);
  const yaml = page.getByTestId('recipe-yaml');
  const method = page.getByTestId('recipe-method');
  await expect(method).toHaveValue('ties');

  // (1) A syntax error locks the form; an edit there cannot replace what was typed.
  const broken = `${DEMO_TIES}models: [\n`;
  await yaml.fill(broken);
  await expect(page.getByTestId('recipe-parse-error')).toBeVisible();
  await expect(page.getByTestId('recipe-form-locked')).toBeVisible();
  await expect(page.getByTestId('param-0-density')).toBeDisabled();
  await expect(method).toBeDisabled();
  await page.getByTestId('param-0-density').evaluate((el: HTMLInputElement) => {
    // What a script or an assistive tool could still do to a disabled field.
    el.value = '0.9';
    el.dispatchEvent(new Event('change', { bubbles: true, composed: true }));
  });
  await expect(yaml).toHaveValue(broken);
  await expect(page.getByTestId('merge-blocked')).toContainText('recipe:');
  await viewShots(page, 'recipe-locked');
  await yaml.fill(DEMO_TIES);
  await expect(page.getByTestId('recipe-form-locked')).toHaveCount(0);
  await expect(page.getByTestId('param-0-density')).toBeEnabled();

  // (2) The dropdown shows the recipe's method after a form choice, a YAML edit and a preset.
  await method.selectOption('task_arithmetic');
  await expect(yaml).toHaveValue(/merge_method: task_arithmetic/);
  await yaml.fill(DEMO_TIES.replace('ties', 'dare_linear'));
  await expect(method).toHaveValue('dare_linear');
  await page.locator('[data-testid="preset"][data-preset="TIES 14B"]').click();
  await expect(method).toHaveValue('ties');
  await yaml.fill(DEMO_TIES.replace('merge_method: ties', 'merge_method: slerp'));
  await expect(method).toHaveValue('slerp');

  // (3) Switching from TIES keeps the shared parameters and fills required ones: never an error.
  for (const [name, check] of [
    ['dare_ties', /density: 0\.2/],
    ['linear', /weight: 1/],
    ['slerp', /t: 0\.5/],
    ['task_arithmetic', /weight: 1/],
    ['della', /density: 0\.2/],
    ['model_stock', /base_model: tiny-qwen-system1/],
  ] as const) {
    await yaml.fill(DEMO_TIES);
    await method.selectOption(name);
    await expect(yaml).toHaveValue(new RegExp(`merge_method: ${name}`));
    await expect(yaml).toHaveValue(check);
    await expect(page.getByTestId('recipe-error'), name).toHaveCount(0);
    await expect(page.getByTestId('merge-run'), name).toBeEnabled();
  }
  // Parameters a switch drops come back with a method that has them: TIES -> linear -> TIES.
  await yaml.fill(DEMO_TIES);
  await method.selectOption('linear');
  await expect(yaml).not.toHaveValue(/density|lambda/);
  await method.selectOption('ties');
  await expect(yaml).toHaveValue(/density: 0\.2/);
  await expect(yaml).toHaveValue(/lambda: 1/);
  // Going to slerp from three models keeps the base and the first other model (slerp takes two).
  await yaml.fill(DEMO_TIES.replace('models:\n', 'models:\n  - model: tiny-qwen-instruct\n'));
  await method.selectOption('slerp');
  await expect(yaml).toHaveValue(/models:\n {2}- model: tiny-qwen-instruct\nmerge_method: slerp/);
  await expect(page.getByTestId('merge-run')).toBeEnabled();

  // (4) Out-of-range values are flagged and block the merge, with the reason beside the button.
  await yaml.fill(DEMO_TIES.replace('density: 0.2', 'density: 1.7'));
  await expect(page.getByTestId('recipe-error')).toContainText(
    'models[0].parameters.density: density 1.7 is outside [0, 1]',
  );
  await expect(page.getByTestId('merge-run')).toBeDisabled();
  await expect(page.getByTestId('merge-blocked')).toContainText('density 1.7 is outside [0, 1]');
  await viewShots(page, 'recipe-out-of-range');
  await yaml.fill(
    'merge_method: slerp\nbase_model: tiny-qwen-system1\nmodels:\n  - model: tiny-qwen-system2\nparameters:\n  t: [0, 1.2]\n',
  );
  await expect(page.getByTestId('merge-blocked')).toContainText('parameters.t[1]: t 1.2 is outside [0, 1]');
  await yaml.fill(DEMO_TIES);
  await expect(page.getByTestId('merge-blocked')).toHaveCount(0);
  await expect(page.getByTestId('merge-run')).toBeEnabled();
});

test('the recipe and merge settings survive a reload; a shared link opens its recipe', async ({ page }) => {
  await openApp(page);
  await loadDemo(page);
  const custom = DEMO_TIES.replace('density: 0.2', 'density: 0.35');
  await setRecipe(page, custom);
  await page.getByTestId('merge-seed').fill('7');
  await page.getByTestId('merge-seed').press('Tab');
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-cpu-threads').selectOption('2');
  await page.getByTestId('merge-shard-size').fill('2M');
  await page.getByTestId('recipe-share').click();
  const link = await page.getByTestId('recipe-share-url').inputValue();
  expect(link).toContain('#recipe=');
  expect(decodeURIComponent(link.slice(link.indexOf('#recipe=') + 8))).toBe(custom);
  await viewShots(page, 'recipe-share');

  await page.reload();
  await openApp(page);
  await expect(page.getByTestId('recipe-yaml')).toHaveValue(custom);
  await expect(page.getByTestId('param-0-density')).toHaveValue('0.35');
  await expect(page.getByTestId('merge-seed')).toHaveValue('7');
  await expect(page.getByTestId('merge-device')).toHaveValue('cpu');
  await expect(page.getByTestId('merge-cpu-threads')).toHaveValue('2');
  await expect(page.getByTestId('merge-shard-size')).toHaveValue('2M');

  // A link from someone else replaces the kept recipe, once: the fragment is then dropped.
  const shared = DEMO_TIES.replace('lambda: 1.0', 'lambda: 0.5');
  await page.goto(`/#recipe=${encodeURIComponent(shared)}`);
  await expect(page.getByTestId('recipe-yaml')).toHaveValue(shared);
  await expect(page.getByTestId('param-global-lambda')).toHaveValue('0.5');
  expect(new URL(page.url()).hash).toBe('');
  await page.reload();
  await expect(page.getByTestId('recipe-yaml')).toHaveValue(shared);
});

test('on a phone, long model names wrap and Merge is one tap away from the top', async ({ page }) => {
  const long = 'tiny-qwen-system1-distilled-from-a-much-larger-reasoning-model-with-a-long-name';
  const dir = await mkdtemp(join(tmpdir(), 'l2s-long-'));
  await writeModel(dir, await makeTinyModel({ ...TINY_TRIO[0], name: long }));
  await writeModel(dir, await makeTinyModel(TINY_TRIO[2]));
  await page.setViewportSize(PHONE);
  await openApp(page);
  await importFolder(page, join(dir, long));
  await importFolder(page, join(dir, 'tiny-qwen-system2'));
  await setRecipe(page, DEMO_TIES.replace('base_model: tiny-qwen-system1', `base_model: ${long}`));
  expect(await horizontalOverflow(page), (await elementsPastViewport(page)).join('\n')).toBeLessThanOrEqual(
    0,
  );
  // The full name is there to read: wrapped in the library, as a tooltip on the recipe's select.
  const row = page.locator(`[data-testid="library-model"][data-name="${long}"]`);
  await expect(row.locator('td').first()).toHaveAttribute('title', long);
  await expect(page.getByTestId('recipe-base')).toHaveAttribute('title', long);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.getByTestId('jump-merge').click();
  await expect(page.getByTestId('merge-run')).toBeInViewport();
  await viewShots(page, 'phone-long-names');
  const { violations } = await checkView(page, 'phone-long-names');
  expect(violations, JSON.stringify(violations, null, 1)).toEqual([]);
});
