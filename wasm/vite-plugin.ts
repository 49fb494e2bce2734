import { readFileSync } from 'node:fs';
import type { Plugin } from 'vite';
// @ts-expect-error: a plain .mjs build script, shared with `npm run build:wasm`
import { buildKernels, KERNELS_SOURCE } from './build-kernels.mjs';

/** The module's name; a virtual id, so no other plugin takes it for the AssemblyScript source. */
export const KERNELS_MODULE = 'virtual:merge-kernels-wasm';
const RESOLVED = `\0${KERNELS_MODULE}`;

/**
 * `import bytes from 'virtual:merge-kernels-wasm'` gives the compiled WebAssembly kernels as
 * a Uint8Array, inlined in the bundle (the module is small), for the app, the worker, the CLI and the
 * tests alike. The source is compiled with asc when it is newer than the build.
 */
export function mergeKernelsWasm(): Plugin {
  return {
    name: 'l2s-merge-kernels-wasm',
    enforce: 'pre',
    resolveId(id) {
      return id === KERNELS_MODULE ? RESOLVED : null;
    },
    load(id) {
      if (id !== RESOLVED) return null;
      const binary: string = buildKernels();
      this.addWatchFile(KERNELS_SOURCE);
      const base64 = readFileSync(binary).toString('base64');
      return `export default Uint8Array.from(atob(${JSON.stringify(base64)}), (c) => c.charCodeAt(0));\n`;
    },
  };
}
