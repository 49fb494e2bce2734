/**
 * Where the browser tests' screenshots go. Any test run writes them under test-results/screenshots/
 * (ignored by git), so `npm test` leaves the work tree clean; only `npm run screenshots`, which sets
 * L2S_SCREENSHOTS=docs, writes the README's pictures in docs/screenshots/.
 */
import { join } from 'node:path';

export const SCREENSHOTS_ENV = 'L2S_SCREENSHOTS';

export function screenshotDir(root: string, env: Record<string, string | undefined> = process.env): string {
  const target = env[SCREENSHOTS_ENV];
  if (target === undefined || target === '') return join(root, 'test-results', 'screenshots');
  if (target === 'docs') return join(root, 'docs', 'screenshots');
  throw new Error(`${SCREENSHOTS_ENV}=${target}: the only value is 'docs' (npm run screenshots sets it)`);
}

/** The file of screenshot `name`: lowercase words and dashes, as the README links them. */
export function screenshotPath(
  root: string,
  name: string,
  env: Record<string, string | undefined> = process.env,
): string {
  if (!/^[a-z0-9]+(-[a-z0-9]+)*$/.test(name)) {
    throw new Error(`screenshot name '${name}': use lowercase letters, digits and dashes`);
  }
  return join(screenshotDir(root, env), `${name}.png`);
}
