// Compiles the AssemblyScript kernels (wasm/merge-kernels.ts) to wasm/build/merge-kernels.wasm when the
// source is newer than the build. Run by `npm run build:wasm`, and by the Vite plugin (wasm/vite-plugin.ts)
// whenever the app, the CLI or the tests import the kernels, so no build or test can see a stale binary.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const KERNELS_SOURCE = join(here, 'merge-kernels.ts');
export const KERNELS_BINARY = join(here, 'build', 'merge-kernels.wasm');

/** asc flags: SIMD128, no runtime (the kernels never allocate), memory owned by the JavaScript side. */
const ASC_FLAGS = ['--enable', 'simd', '-O3', '--runtime', 'stub', '--noAssert', '--importMemory', '--initialMemory', '1'];

export function buildKernels({ force = false } = {}) {
  const fresh =
    !force && existsSync(KERNELS_BINARY) && statSync(KERNELS_BINARY).mtimeMs >= statSync(KERNELS_SOURCE).mtimeMs;
  if (fresh) return KERNELS_BINARY;
  mkdirSync(dirname(KERNELS_BINARY), { recursive: true });
  const asc = createRequire(import.meta.url).resolve('assemblyscript/bin/asc.js');
  execFileSync(process.execPath, [asc, KERNELS_SOURCE, '-o', KERNELS_BINARY, ...ASC_FLAGS], { stdio: 'inherit' });
  return KERNELS_BINARY;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  buildKernels({ force: process.argv.includes('--force') });
}
