/**
 * AIM-TIES in the app: the fixture pair imported as folders, the recipe's AIM block shown in the form,
 * the calibration run in the worker (CPU reference), and every output file equal to the Node CLI's
 * for the same recipe and device.
 */
import { mkdtemp, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  cliMerge,
  downloadAll,
  expect,
  importFolder,
  openApp,
  ROOT,
  runMergeInPage,
  setRecipe,
  test,
} from './app-harness';

const AIM_TIES = `merge_method: ties
base_model: system1
models:
  - model: system2
    parameters: {weight: 1.0, density: 0.2}
parameters: {lambda: 1.0}
dtype: bfloat16
aim:
  omega: 0.4
  calibration: {source: builtin, samples: 8, block_size: 64, seed: 42}
`;

test('an AIM-TIES recipe calibrates in the worker and gives the CLI output byte for byte', async ({
  page,
}) => {
  test.setTimeout(240_000);
  // The fixture folders under their own names, beside the recipe, as the CLI resolves them.
  const dir = await mkdtemp(join(tmpdir(), 'l2s-aim-app-'));
  for (const name of ['system1', 'system2'])
    await symlink(join(ROOT, 'test/fixtures/qwen2-tiny-l2s', name), join(dir, name));
  await openApp(page);
  await importFolder(page, join(dir, 'system1'));
  await importFolder(page, join(dir, 'system2'));

  await setRecipe(page, AIM_TIES);
  await expect(page.getByTestId('recipe-aim')).toBeChecked();
  await expect(page.getByTestId('param-aim-omega')).toHaveValue('0.4');
  await expect(page.getByTestId('aim-calibration')).toHaveText('built-in questions');
  await expect(page.getByTestId('recipe-error')).toHaveCount(0);

  await writeFile(join(dir, 'aim.yml'), AIM_TIES);
  const cliFiles = await cliMerge(join(dir, 'aim.yml'), join(dir, 'cli-out'), ['--device', 'cpu']);
  expect(cliFiles.has('aim_statistics.safetensors')).toBe(true);

  await page.getByTestId('merge-device').selectOption('cpu');
  await runMergeInPage(page);
  await expect(page.locator('.log')).toContainText(/AIM calibration: block \d+\/\d+/);
  const browserFiles = await downloadAll(page, join(dir, 'browser-out'));
  expect([...browserFiles.keys()].sort()).toEqual([...cliFiles.keys()].sort());
  for (const [name, bytes] of cliFiles)
    expect(browserFiles.get(name)?.equals(bytes), `${name} differs from the CLI's`).toBe(true);

  // Unchecking AIM writes the plain recipe back; omega edits go to the YAML.
  await page.getByTestId('recipe-aim').check();
  await page.getByTestId('param-aim-omega').fill('0.25');
  await page.getByTestId('param-aim-omega').blur();
  await expect(page.getByTestId('recipe-yaml')).toHaveValue(/aim:\n {2}omega: 0.25\n/);
  await page.getByTestId('recipe-aim').uncheck();
  await expect(page.getByTestId('recipe-yaml')).not.toHaveValue(/aim:/);
});
