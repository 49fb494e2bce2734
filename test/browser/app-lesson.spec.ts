/**
 * The lesson a lecturer presents: every step by keyboard at 1280 x 720 (screenshots of each), legible
 * at 150% zoom, pictures computed from the loaded (synthetic, and labelled so) demo models, chart
 * export, captions that follow the data, and no serious accessibility violations.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import { expect, openApp, ROOT, screenshot, test } from './app-harness';

/** Critical and serious axe-core violations inside the lesson (the dialog over the app). */
async function lessonAxeViolations(
  page: Page,
): Promise<{ id: string; impact: string; nodes: number; help: string }[]> {
  await page.addScriptTag({
    content: await readFile(join(ROOT, 'node_modules/axe-core/axe.min.js'), 'utf8'),
  });
  return page.evaluate(async () => {
    const axe = (
      window as unknown as {
        axe: {
          run: (
            context: unknown,
          ) => Promise<{ violations: { id: string; impact: string; nodes: unknown[]; help: string }[] }>;
        };
      }
    ).axe;
    const result = await axe.run({ include: { fromShadowDom: ['l2s-app', 'l2s-lesson'] } });
    return result.violations
      .filter((v) => v.impact === 'critical' || v.impact === 'serious')
      .map((v) => ({
        id: v.id,
        impact: v.impact,
        nodes: v.nodes.length,
        help: v.help,
        html: (v.nodes as { html: string }[]).map((n) => n.html.slice(0, 120)),
      }));
  });
}

test('the lesson walks by keyboard, pictures the loaded models, exports charts, passes axe', async ({
  page,
}) => {
  test.setTimeout(120_000);
  await page.setViewportSize({ width: 1280, height: 720 });
  await openApp(page);
  await page.getByTestId('demo').click();
  await expect(page.getByTestId('library-model')).toHaveCount(3, { timeout: 20_000 });
  // The demo's models say what they are wherever they appear.
  await expect(page.getByTestId('demo-note')).toContainText('synthetic (random weights)');
  await expect(page.getByTestId('library-model').first()).toContainText('synthetic demo');

  // Compare says plainly that synthetic models cannot generate text, instead of failing on them.
  const compare = page.locator('#compare');
  await compare.getByTestId('compare-run').click();
  await expect(compare.getByTestId('compare-status')).toContainText('synthetic demo models');
  await expect(compare.getByTestId('compare-status')).toContainText('cannot generate text');

  await page.getByTestId('lesson-open').click();
  const lesson = page.getByTestId('lesson');
  await expect(lesson).toBeVisible();
  await expect(lesson).toHaveAttribute('data-index', '0');

  const ids: string[] = [];
  const count = await lesson.evaluate(
    () => document.querySelector('l2s-app')?.shadowRoot?.querySelector('l2s-lesson')?.stepCount ?? 0,
  );
  expect(count).toBeGreaterThanOrEqual(10);
  for (let i = 0; i < count; i++) {
    await expect(lesson).toHaveAttribute('data-index', String(i));
    ids.push((await lesson.getAttribute('data-step')) ?? '');
    expect(page.url()).toContain(`#learn/${i + 1}`);
    // Pictures are computed from the models in the library, not drawn from fixed data.
    const picture = lesson.getByTestId('lesson-picture');
    if (await picture.count())
      await expect(picture).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
    await screenshot(page, `lesson-${String(i + 1).padStart(2, '0')}-${ids[i]}`, { fullPage: false });
    // Nothing of a step hides off the side of a projected 1280 x 720 screen.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await page.keyboard.press('ArrowRight');
  }
  expect(new Set(ids).size).toBe(count);
  // Past the end stays at the end; Home and End jump; ArrowLeft goes back.
  await expect(lesson).toHaveAttribute('data-index', String(count - 1));
  await page.keyboard.press('Home');
  await expect(lesson).toHaveAttribute('data-index', '0');
  await page.keyboard.press('End');
  await expect(lesson).toHaveAttribute('data-index', String(count - 1));
  await page.keyboard.press('ArrowLeft');
  await expect(lesson).toHaveAttribute('data-index', String(count - 2));

  // The task-vector step pictures the demo's task vectors, labelled synthetic, with a computed caption.
  await page.goto('/#learn/4');
  await expect(page.getByTestId('lesson')).toHaveAttribute('data-step', 'task-vector');
  const picture = page.getByTestId('lesson-picture');
  await expect(picture).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
  await expect(picture).toContainText('synthetic demo models');
  await expect(page.getByTestId('lesson-caption')).toContainText(
    /tiny-qwen-system2 moves the base by [\d.]+% overall/,
  );
  expect(await picture.locator('circle').count()).toBe(2 * 2 * 4);

  // A chart exports as PNG and SVG, legend included.
  const [png] = await Promise.all([page.waitForEvent('download'), picture.getByTestId('chart-png').click()]);
  expect(png.suggestedFilename()).toBe('task-vector-size-per-layer.png');
  const pngBytes = await readFile(await png.path());
  expect(pngBytes.subarray(1, 4).toString()).toBe('PNG');
  expect(pngBytes.length).toBeGreaterThan(5000);
  const [svg] = await Promise.all([page.waitForEvent('download'), picture.getByTestId('chart-svg').click()]);
  const svgText = await readFile(await svg.path(), 'utf8');
  expect(svgText).toMatch(/^<\?xml/);
  expect(svgText).toContain('tiny-qwen-system2');
  expect(svgText.match(/<circle/g)?.length).toBe(16);

  // The 7B results step charts the paper's Table 1 and cites it.
  await page.goto('/#learn/8');
  await expect(page.getByTestId('lesson')).toHaveAttribute('data-step', 'results-7b');
  await expect(page.getByTestId('lesson')).toContainText('arXiv 2503.20641');
  await expect(page.getByTestId('lesson').getByTestId('chart').locator('circle')).toHaveCount(9);

  // Legible at 150% zoom: the same screen at two thirds of the CSS pixels.
  await page.setViewportSize({ width: 853, height: 480 });
  await expect(page.getByTestId('lesson-title')).toBeInViewport();
  expect(
    await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth),
  ).toBeLessThanOrEqual(0);
  const titleSize = await page
    .getByTestId('lesson-title')
    .evaluate((e) => Number.parseFloat(getComputedStyle(e).fontSize));
  expect(titleSize).toBeGreaterThanOrEqual(24);
  await screenshot(page, 'lesson-zoom-150', { fullPage: false });
  await page.setViewportSize({ width: 1280, height: 720 });

  expect(await lessonAxeViolations(page)).toEqual([]);

  // A link goes to the part of the app that does it; Escape closes.
  await page.goto('/#learn/4');
  await page.getByTestId('lesson-link').click();
  await expect(page.getByTestId('lesson')).toHaveCount(0);
  await expect(page.locator('#inspect')).toBeInViewport();
  await page.getByTestId('lesson-open').click();
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('lesson')).toHaveCount(0);
});

test('an Inspect caption follows the data it describes', async ({ page }) => {
  test.setTimeout(60_000);
  await openApp(page);
  await page.getByTestId('demo').click();
  await expect(page.getByTestId('library-model')).toHaveCount(3, { timeout: 20_000 });
  const caption = page.getByTestId('inspect-ties-caption');
  const inspect = async (density: string) => {
    await page.getByTestId('inspect-density').fill(density);
    await page.getByTestId('inspect-run').click();
    await expect(page.getByTestId('inspect-status')).toHaveAttribute('data-state', 'done', {
      timeout: 30_000,
    });
  };
  await inspect('0.2');
  await expect(caption).toContainText("TIES keeps 20% of tiny-qwen-system2's entries");
  const sparse = await caption.textContent();
  await inspect('0.9');
  await expect(caption).toContainText("TIES keeps 90% of tiny-qwen-system2's entries");
  expect(await caption.textContent()).not.toBe(sparse);
  // At 90% density the kept entries cannot hold a much larger share of the energy than of the entries.
  await expect(caption).not.toContainText('sits in the largest entries');
  const spectrum = page.getByTestId('inspect-spectrum');
  await expect(spectrum).toHaveAttribute('data-state', 'done', { timeout: 30_000 });
  const rank90 = Number(await spectrum.getAttribute('data-rank90'));
  await expect(page.getByTestId('inspect-spectrum-caption')).toContainText(`rank ${rank90} of 64 holds 90%`);
});
