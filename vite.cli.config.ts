import { defineConfig } from 'vite';
import { mergeKernelsWasm } from './wasm/vite-plugin';

// The Node CLI (main.js) and the Node API (index.js): ESM bundles (WGSL inlined through ?raw), dependencies left external.
export default defineConfig({
  plugins: [mergeKernelsWasm()],
  build: {
    outDir: 'dist/cli',
    ssr: true,
    target: 'node20',
    sourcemap: true,
    emptyOutDir: true,
    rollupOptions: {
      input: { main: 'src/cli/main.ts', index: 'src/node/index.ts' },
      output: { entryFileNames: '[name].js' },
    },
  },
  ssr: { noExternal: [] },
});
