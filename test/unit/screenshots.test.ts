/**
 * A test run never rewrites the README's screenshots: they go to an ignored folder unless
 * `npm run screenshots` asks for docs/screenshots/, and every browser test takes them through the
 * harness's one helper.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SCREENSHOTS_ENV, screenshotDir, screenshotPath } from '../browser/screenshot-path';

const ROOT = resolve(import.meta.dirname, '../..');

function gitIgnores(path: string): boolean | undefined {
  try {
    execFileSync('git', ['check-ignore', '-q', path], { cwd: ROOT, stdio: 'ignore' });
    return true;
  } catch (e) {
    const status = (e as { status?: number }).status;
    if (status === 1) return false;
    return undefined; // no git, or not a checkout
  }
}

describe('screenshots', () => {
  it('go to an ignored folder in a test run, to docs/screenshots only when asked', () => {
    expect(screenshotDir(ROOT, {})).toBe(join(ROOT, 'test-results', 'screenshots'));
    expect(screenshotPath(ROOT, 'hub-import', {})).toBe(
      join(ROOT, 'test-results', 'screenshots', 'hub-import.png'),
    );
    expect(screenshotPath(ROOT, 'hub-import', { [SCREENSHOTS_ENV]: 'docs' })).toBe(
      join(ROOT, 'docs', 'screenshots', 'hub-import.png'),
    );
    expect(() => screenshotDir(ROOT, { [SCREENSHOTS_ENV]: 'src' })).toThrow(/the only value is 'docs'/);
    expect(() => screenshotPath(ROOT, '../README', {})).toThrow(/lowercase letters, digits and dashes/);
    const ignored = gitIgnores('test-results/screenshots/hub-import.png');
    if (ignored !== undefined) expect(ignored).toBe(true);
  });

  it('are taken only through the harness helper, and npm run screenshots refreshes them', () => {
    const dir = join(ROOT, 'test/browser');
    const direct = readdirSync(dir, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts') && f !== 'app-harness.ts')
      .filter((f) => /\.screenshot\s*\(/.test(readFileSync(join(dir, f), 'utf8')));
    expect(direct, 'call screenshot(page, name) from app-harness.ts instead').toEqual([]);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    expect(pkg.scripts.screenshots).toBe('bash scripts/screenshots.sh');
    expect(readFileSync(join(ROOT, 'scripts/screenshots.sh'), 'utf8')).toContain(`${SCREENSHOTS_ENV}=docs`);
  });
});
