/**
 * The teacher's path: "Try the L2S demo" loads the tiny models and a TIES recipe and merges them;
 * the recipe form and the YAML view stay in step; a merge can join the library and leave it again.
 */
import { expect, libraryKeys, libraryNames, openApp, runMergeInPage, screenshot, test } from './app-harness';

test('the demo merges out of the box; form and YAML round-trip; outputs join the library', async ({
  page,
}) => {
  await openApp(page);
  await page.getByTestId('demo').click();
  await expect(page.getByTestId('library-model')).toHaveCount(3, { timeout: 30_000 });
  expect(await libraryNames(page)).toEqual(['tiny-qwen-system1', 'tiny-qwen-instruct', 'tiny-qwen-system2']);
  const yaml = page.getByTestId('recipe-yaml');
  await expect(yaml).toHaveValue(/merge_method: ties/);
  await expect(yaml).toHaveValue(/density: 0\.2/);
  await expect(page.getByTestId('webgpu-status')).toHaveAttribute('data-webgpu', /true|false/);
  await screenshot(page, 'demo');

  await runMergeInPage(page);
  await expect(page.getByTestId('download-file')).toHaveCount(7);
  await expect(page.getByTestId('download-file').filter({ hasText: 'model.safetensors' })).toHaveCount(1);

  // Form -> YAML.
  await page.getByTestId('param-0-density').fill('0.35');
  await page.getByTestId('param-0-density').press('Tab');
  await expect(yaml).toHaveValue(/density: 0\.35/);
  await page.locator('[data-testid="preset"][data-preset="TIES 14B"]').click();
  // The paper's alpha is TIES' lambda (as a weight it would be normalized away).
  await expect(yaml).toHaveValue(/weight: 1(\.0)?\b/);
  await expect(yaml).toHaveValue(/density: 0\.8\b/);
  await expect(yaml).toHaveValue(/lambda: 0\.5\b/);
  await page.getByTestId('recipe-method').selectOption('task_arithmetic');
  await expect(yaml).toHaveValue(/merge_method: task_arithmetic/);
  // Parameters the chosen method does not have are dropped.
  await page.getByTestId('recipe-method').selectOption('linear');
  await expect(yaml).toHaveValue(/merge_method: linear/);
  await expect(yaml).not.toHaveValue(/density|lambda/);
  await page.getByTestId('recipe-method').selectOption('task_arithmetic');
  await expect(yaml).toHaveValue(/base_model: tiny-qwen-system1/);
  // A value that is not a number is marked and kept out of the YAML.
  await page.getByTestId('param-0-weight').selectText();
  await page.getByTestId('param-0-weight').pressSequentially('1e');
  await page.getByTestId('param-0-weight').press('Tab');
  await expect(page.getByTestId('param-0-weight')).toHaveClass(/invalid/);
  await expect(yaml).toHaveValue(/weight: 1(\.0)?\b/);

  // YAML -> form, and errors from the parser and the validator.
  await yaml.fill(
    'merge_method: dare_ties\nbase_model: tiny-qwen-system1\nmodels:\n  - model: tiny-qwen-system2\n    parameters: {weight: 0.9, density: 0.7}\n',
  );
  await expect(page.getByTestId('recipe-method')).toHaveValue('dare_ties');
  await expect(page.getByTestId('param-0-weight')).toHaveValue('0.9');
  await expect(page.getByTestId('param-0-density')).toHaveValue('0.7');
  await yaml.fill('merge_method: ties\nmodels: [');
  await expect(page.getByTestId('recipe-parse-error')).toBeVisible();
  await yaml.fill(
    'merge_method: ties\nbase_model: nowhere\nmodels:\n  - model: tiny-qwen-system2\n    parameters: {weight: 1.0}\n',
  );
  await expect(page.getByTestId('recipe-error')).toContainText('nowhere');

  // Merge is refused with the reason beside it; the output stays available, and "Keep" keeps it.
  await expect(page.getByTestId('merge-run')).toBeDisabled();
  await expect(page.getByTestId('merge-blocked')).toContainText('not in the library yet: nowhere');
  await screenshot(page, 'merge-error');
  await page.getByTestId('output-delete').click();
  await page.getByTestId('output-delete-keep').click();
  await expect(page.getByTestId('download-file')).toHaveCount(7);

  // The demo output joins the library as a model, and deleting it removes every chunk.
  const modelKeysBefore = new Set((await libraryKeys(page)).filter((k) => k.startsWith('model:')));
  await page.getByTestId('output-name').fill('demo-merge');
  await page.getByTestId('add-to-library').click();
  await expect(page.locator('[data-testid="library-model"][data-name="demo-merge"]')).toContainText('merge');
  const id = (await libraryKeys(page)).find((k) => k.startsWith('model:') && !modelKeysBefore.has(k));
  expect(id).toBeDefined();
  const row = page.locator('[data-testid="library-model"][data-name="demo-merge"]');
  await row.getByTestId('model-delete').click();
  await row.getByTestId('model-delete-confirm').click();
  await expect(page.locator('[data-testid="library-model"][data-name="demo-merge"]')).toHaveCount(0);
  const keys = await libraryKeys(page);
  expect(keys.filter((k) => k.includes(id!.slice('model:'.length)))).toEqual([]);
});
