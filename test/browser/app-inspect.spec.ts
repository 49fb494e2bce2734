/**
 * The teacher's pictures: after "Try the L2S demo", Inspect draws the task-vector norms, sign
 * conflicts with what TIES keeps, and a singular spectrum, from the weights stored in the browser.
 */
import { expect, openApp, screenshot, test } from './app-harness';

test('the demo inspects its models: norms, sign conflicts, TIES keep share, spectrum', async ({ page }) => {
  test.setTimeout(40_000);
  await openApp(page);
  await page.getByTestId('demo').click();
  await expect(page.getByTestId('library-model')).toHaveCount(3, { timeout: 20_000 });
  await expect(page.getByTestId('recipe-yaml')).toHaveValue(/merge_method: ties/);

  // The recipe's reasoner and the demo's instruct model are compared with the System 1 base.
  const ticked = page.locator('[data-testid="inspect-model"]:checked');
  await expect(ticked).toHaveCount(2);
  await page.getByTestId('inspect-run').click();

  const norms = page.getByTestId('inspect-norms');
  const signs = page.getByTestId('inspect-signs');
  const spectrum = page.getByTestId('inspect-spectrum');
  for (const chart of [norms, signs, spectrum]) {
    await expect(chart).toHaveAttribute('data-state', 'done', { timeout: 20_000 });
  }
  await expect(page.getByTestId('inspect-status')).toHaveAttribute('data-state', 'done');

  // The demo builds the instruct model with a smaller delta (0.08) than the reasoner (0.2).
  const norm = async (model: string) =>
    Number(
      await page
        .locator(`[data-testid="inspect-norm-model"][data-model="${model}"]`)
        .getAttribute('data-value'),
    );
  const instruct = await norm('tiny-qwen-instruct');
  const reasoner = await norm('tiny-qwen-system2');
  expect(instruct).toBeGreaterThan(0.01);
  expect(instruct).toBeLessThan(reasoner);
  expect(reasoner).toBeLessThan(1);
  expect(await norms.locator('circle').count()).toBe(2 * 2 * 4); // 2 models x (attention, MLP) x 4 layers

  // Independent fine-tunes disagree in sign on a large share of weights; TIES keeps floor(0.2 n)
  // entries per tensor, the largest ones, so their share of the energy is far above 20%.
  const share = async (name: string) => Number(await signs.getAttribute(name));
  const conflicts = await share('data-conflicts');
  expect(conflicts).toBeGreaterThan(0.2);
  expect(conflicts).toBeLessThan(0.7);
  const entries = await share('data-kept-entries');
  const l1 = await share('data-kept-l1');
  const energy = await share('data-kept-energy');
  expect(entries).toBeGreaterThan(0.19);
  expect(entries).toBeLessThanOrEqual(0.2);
  expect(l1).toBeGreaterThan(entries);
  expect(energy).toBeGreaterThan(l1);
  await expect(page.getByTestId('inspect-ties-headline')).toContainText(
    /TIES keeps 20% of entries holding \d+%/,
  );

  // The spectrum of the first layer's down projection: low rank holds most of the energy.
  await expect(spectrum).toHaveAttribute('data-tensor', 'model.layers.0.mlp.down_proj.weight');
  await expect(spectrum).toHaveAttribute('data-model', 'tiny-qwen-system2');
  const rank90 = Number(await spectrum.getAttribute('data-rank90'));
  const rank99 = Number(await spectrum.getAttribute('data-rank99'));
  expect(rank90).toBeGreaterThanOrEqual(2);
  expect(rank90).toBeLessThan(rank99);
  expect(rank99).toBeLessThanOrEqual(64);
  await screenshot(page, 'inspect');

  // Another tensor recomputes only the spectrum.
  await page.getByTestId('inspect-spectrum-tensor').selectOption('model.layers.3.self_attn.q_proj.weight');
  await expect(spectrum).toHaveAttribute('data-tensor', 'model.layers.3.self_attn.q_proj.weight');
  await expect(spectrum).toHaveAttribute('data-state', 'done');
  await expect(spectrum).toHaveAttribute('data-full-rank', '64');
});
