import { ensureCliBuild } from './cli-build';

/** Once per Playwright run, before any worker starts: the CLI the tests compare against is current. */
export default async function globalSetup(): Promise<void> {
  await ensureCliBuild();
}
