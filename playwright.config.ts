import { existsSync } from 'node:fs';
import { chromium, defineConfig } from '@playwright/test';

// Browser tests run against the Vite dev server. The browser is $L2S_CHROMIUM (scripts/env.sh finds
// one), else Playwright's own Chromium; --enable-unsafe-webgpu gives WebGPU on software adapters.
// Without either, Debian's chromium is used when Playwright has no browser of its own installed.
function chromiumPath(): string | undefined {
  if (process.env.L2S_CHROMIUM) return process.env.L2S_CHROMIUM;
  if (existsSync(chromium.executablePath())) return undefined;
  return existsSync('/usr/bin/chromium') ? '/usr/bin/chromium' : undefined;
}
const executablePath = chromiumPath();
// L2S_TEST_PORT lets several checkouts run their browser tests side by side.
const port = Number(process.env.L2S_TEST_PORT ?? 5174);

export default defineConfig({
  testDir: 'test/browser',
  // Rebuilds dist/cli when a source is newer (the tests compare the page with the CLI).
  globalSetup: './test/browser/global-setup.ts',
  timeout: 120_000,
  fullyParallel: false,
  workers: 1,
  reporter: [['list']],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    browserName: 'chromium',
    launchOptions: { executablePath, args: ['--enable-unsafe-webgpu'] },
  },
  webServer: {
    command: `L2S_NO_HMR=1 npx vite --host 127.0.0.1 --port ${port} --strictPort`,
    url: `http://127.0.0.1:${port}`,
    reuseExistingServer: !process.env.CI,
    timeout: 120_000,
  },
});
