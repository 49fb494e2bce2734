import { defineConfig } from 'vitest/config';
import { mergeKernelsWasm } from './wasm/vite-plugin';

export default defineConfig({
  plugins: [mergeKernelsWasm()],
  build: {
    outDir: 'dist/app',
    target: 'es2022',
    sourcemap: true,
  },
  worker: { format: 'es', plugins: () => [mergeKernelsWasm()] },
  // Pre-bundle every browser dependency at start-up: one found later (in a worker, or on a code
  // path a test reaches late) makes the dev server reload the page, which would cut a test short.
  optimizeDeps: {
    include: [
      'lit',
      'lit/decorators.js',
      'lit/directives/live.js',
      'yaml',
      'comlink',
      'idb-keyval',
      '@huggingface/hub',
      '@huggingface/tokenizers',
      '@huggingface/jinja',
      'client-zip',
    ],
  },
  // Browser tests set L2S_NO_HMR: a hot reload in the middle of a test (any source file saved)
  // would restart the page and its merge.
  server: { hmr: process.env.L2S_NO_HMR ? false : undefined },
  test: {
    include: ['test/unit/**/*.test.ts'],
    environment: 'node',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
