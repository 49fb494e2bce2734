/**
 * Checks the practitioner-facing specs share: screenshots at a desktop and a phone width (through
 * the harness's `screenshot`: test-results/screenshots/ in a test run, docs/screenshots/ under
 * `npm run screenshots`), horizontal overflow at the phone width, and axe-core's accessibility rules
 * run in the page.
 */
import { join } from 'node:path';
import type { Page } from '@playwright/test';
import { ROOT, screenshot } from './app-harness';

export const DESKTOP = { width: 1440, height: 900 };
export const PHONE = { width: 390, height: 844 };

/** How far the page is wider than its viewport (0 when it does not scroll sideways). */
export async function horizontalOverflow(page: Page): Promise<number> {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}

/** Elements (in open shadow roots too) whose right edge is past the viewport, for failure messages. */
export async function elementsPastViewport(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const out: string[] = [];
    const walk = (root: Document | ShadowRoot) => {
      for (const el of root.querySelectorAll('*')) {
        const right = el.getBoundingClientRect().right;
        if (right > width + 0.5) {
          out.push(
            `${el.tagName.toLowerCase()} ${el.getAttribute('data-testid') ?? el.className}: ${Math.round(right)} px`,
          );
        }
        if (el.shadowRoot) walk(el.shadowRoot);
      }
    };
    walk(document);
    return out;
  });
}

/**
 * Screenshots of the page as it is at 1440 px and at 390 px; returns the overflow at 390 px. The
 * viewport goes back to what it was.
 */
export async function viewShots(page: Page, name: string): Promise<{ phoneOverflow: number }> {
  const before = page.viewportSize();
  await page.setViewportSize(DESKTOP);
  await screenshot(page, `${name}-1440`);
  await page.setViewportSize(PHONE);
  const phoneOverflow = await horizontalOverflow(page);
  await screenshot(page, `${name}-390`);
  if (before) await page.setViewportSize(before);
  return { phoneOverflow };
}

export interface AxeViolation {
  id: string;
  impact: string;
  help: string;
  targets: string[];
}

/** axe-core's critical and serious violations on the page as it is now (open shadow roots included). */
export async function seriousAxeViolations(page: Page): Promise<AxeViolation[]> {
  await page.addScriptTag({ path: join(ROOT, 'node_modules/axe-core/axe.min.js') });
  return page.evaluate(async () => {
    const axe = (
      window as unknown as { axe: { run(context: unknown, options: unknown): Promise<AxeResults> } }
    ).axe;
    interface AxeResults {
      violations: { id: string; impact: string | null; help: string; nodes: { target: unknown[] }[] }[];
    }
    const results = await axe.run(document, { resultTypes: ['violations'] });
    return results.violations
      .filter((v) => v.impact === 'critical' || v.impact === 'serious')
      .map((v) => ({
        id: v.id,
        impact: v.impact ?? '',
        help: v.help,
        targets: v.nodes.map((n) => JSON.stringify(n.target)),
      }));
  });
}

/** Both widths: no sideways scrolling at 390 px and no serious axe violations at either. */
export async function checkView(
  page: Page,
  name: string,
): Promise<{ overflow: number; violations: AxeViolation[] }> {
  const { phoneOverflow } = await viewShots(page, name);
  const before = page.viewportSize();
  await page.setViewportSize(PHONE);
  const phone = await seriousAxeViolations(page);
  await page.setViewportSize(DESKTOP);
  const desktop = await seriousAxeViolations(page);
  if (before) await page.setViewportSize(before);
  const seen = new Set<string>();
  const violations = [...phone, ...desktop].filter((v) => {
    const key = `${v.id} ${v.targets.join()}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return { overflow: phoneOverflow, violations };
}
