/**
 * Two CPU kernel workers in the browser (src/worker/kernel-threads.ts): the merge worker starts them,
 * they read the library's Blobs themselves, and the files are the CLI's byte for byte. Cancel
 * terminates the merge worker, and its kernel workers with it.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tinyTrioDir } from '../fixtures/tiny';
import {
  cliMerge,
  downloadAll,
  expect,
  importFolder,
  openApp,
  runMergeInPage,
  setRecipe,
  TIES_RECIPE,
  test,
} from './app-harness';

const TASK_ARITHMETIC_RECIPE = `merge_method: task_arithmetic
base_model: tiny-qwen-system1
models:
  - model: tiny-qwen-instruct
    parameters: {weight: 0.6}
  - model: tiny-qwen-system2
    parameters: {weight: 0.9}
dtype: bfloat16
`;

async function importTrio(page: Parameters<typeof importFolder>[0], trio: string): Promise<void> {
  for (const name of ['tiny-qwen-system1', 'tiny-qwen-instruct', 'tiny-qwen-system2']) {
    await importFolder(page, join(trio, name));
  }
}

test('task_arithmetic and ties on two CPU threads give the CLI output byte for byte', async ({ page }) => {
  const trio = await tinyTrioDir();
  await openApp(page);
  await importTrio(page, trio);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-cpu-threads').selectOption('2');
  const status = page.getByTestId('merge-status');
  for (const [name, recipe] of [
    ['task_arithmetic', TASK_ARITHMETIC_RECIPE],
    ['ties', TIES_RECIPE],
  ]) {
    const recipePath = join(trio, `${name}-threads.yml`);
    await writeFile(recipePath, recipe);
    const cliFiles = await cliMerge(recipePath, join(trio, `cli-out-${name}-threads`));
    await setRecipe(page, recipe);
    await runMergeInPage(page);
    await expect(status).toHaveAttribute('data-backend', 'cpu');
    await expect(status).toHaveAttribute('data-cpu-threads', '2');
    await expect(status).toContainText('on the CPU (2 threads)');
    // Every tensor of these merges has a kernel form, and the workers read every library model.
    await expect(status).toHaveAttribute('data-tensors-on-threads', '51');
    const browserFiles = await downloadAll(page, join(trio, `browser-out-${name}-threads`));
    expect([...browserFiles.keys()].sort()).toEqual([...cliFiles.keys()].sort());
    for (const [file, bytes] of cliFiles) {
      expect(browserFiles.get(file)?.equals(bytes), `${name}: ${file} differs from the CLI's`).toBe(true);
    }
  }
  // One thread: the kernels in the merge worker, the same bytes.
  await page.getByTestId('merge-cpu-threads').selectOption('1');
  await runMergeInPage(page);
  await expect(status).toHaveAttribute('data-cpu-threads', '1');
  await expect(status).toHaveAttribute('data-tensors-on-threads', '0');
  await expect(status).toContainText('on the CPU (1 thread)');
});

test('Cancel ends the kernel workers with the merge worker', async ({ page }) => {
  const trio = await tinyTrioDir();
  // Paced writes: the merge is still running when Cancel is clicked.
  await openApp(page, '?paceWrites=150');
  await importTrio(page, trio);
  await page.getByTestId('merge-device').selectOption('cpu');
  await page.getByTestId('merge-cpu-threads').selectOption('2');
  await setRecipe(page, TIES_RECIPE);
  const kernelWorkers = () => page.workers().filter((w) => w.url().includes('kernel.worker')).length;
  await page.getByTestId('merge-run').click();
  await expect(page.getByTestId('merge-working')).toBeVisible();
  await expect.poll(kernelWorkers, { timeout: 30_000 }).toBe(2);
  await page.getByTestId('merge-cancel').click();
  const status = page.getByTestId('merge-status');
  await expect(status).toHaveAttribute('data-state', 'idle', { timeout: 30_000 });
  await expect(status).toHaveText('Merge cancelled; nothing was kept.');
  await expect.poll(kernelWorkers, { timeout: 10_000 }).toBe(0);
});
