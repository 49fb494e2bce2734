/**
 * The practitioner's path: import three model folders, merge with TIES from the YAML view, download
 * every file, and get exactly the bytes the Node CLI writes for the same recipe.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tinyTrioDir } from '../fixtures/tiny';
import {
  cliMerge,
  downloadAll,
  expect,
  importFolder,
  libraryNames,
  openApp,
  runMergeInPage,
  screenshot,
  setRecipe,
  TIES_RECIPE,
  test,
} from './app-harness';

test('three imported folders merged with TIES give the CLI output byte for byte', async ({ page }) => {
  const trio = await tinyTrioDir();
  await openApp(page);
  await expect(page.getByTestId('merge-status')).toHaveAttribute('data-state', 'idle');
  for (const name of ['tiny-qwen-system1', 'tiny-qwen-instruct', 'tiny-qwen-system2']) {
    await importFolder(page, join(trio, name));
  }
  expect(await libraryNames(page)).toEqual(['tiny-qwen-system1', 'tiny-qwen-instruct', 'tiny-qwen-system2']);
  const system2 = page.locator('[data-testid="library-model"][data-name="tiny-qwen-system2"]');
  await expect(system2).toContainText('Qwen2ForCausalLM');
  await expect(system2).toContainText('bfloat16');
  await expect(system2).toContainText('51');
  await screenshot(page, 'library');

  await setRecipe(page, TIES_RECIPE);
  // The form follows the YAML.
  await expect(page.getByTestId('recipe-method')).toHaveValue('ties');
  await expect(page.getByTestId('param-1-density')).toHaveValue('0.2');
  await screenshot(page, 'recipe');

  const status = page.getByTestId('webgpu-status');
  await expect(status).toHaveAttribute('data-webgpu', /true|false/, { timeout: 30_000 });
  const webgpu = await status.getAttribute('data-webgpu');
  // auto never merges on a software adapter (SwiftShader here); the GPU is still chosen by hand.
  const software = (await status.getAttribute('data-software')) === 'true';
  const recipePath = join(trio, 'ties.yml');
  await writeFile(recipePath, TIES_RECIPE);
  const cliFiles = await cliMerge(recipePath, join(trio, 'cli-out'));
  expect(cliFiles.has('model.safetensors')).toBe(true);

  // "auto" merges on a hardware GPU where WebGPU has one; every backend must give the same bytes.
  const devices = webgpu === 'true' ? (['auto', 'gpu', 'cpu'] as const) : (['auto', 'cpu'] as const);
  for (const device of devices) {
    await page.getByTestId('merge-device').selectOption(device);
    await runMergeInPage(page);
    const backend = device === 'gpu' || (device === 'auto' && webgpu === 'true' && !software) ? 'gpu' : 'cpu';
    await expect(page.getByTestId('merge-status')).toHaveAttribute('data-backend', backend);
    if (device === 'auto') await screenshot(page, 'merged');
    const browserFiles = await downloadAll(page, join(trio, `browser-out-${device}`));
    expect([...browserFiles.keys()].sort()).toEqual([...cliFiles.keys()].sort());
    for (const [name, bytes] of cliFiles) {
      expect(browserFiles.get(name)?.equals(bytes), `${name} (${backend}) differs from the CLI's`).toBe(true);
    }
  }
});
