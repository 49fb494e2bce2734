import { defineConfig } from 'vite';
import { mergeKernelsWasm } from './wasm/vite-plugin';

// The Node CLI (main.js), the Node API (index.js) and the kernel threads' script (kernel-worker.js): ESM bundles (WGSL inlined through ?raw), dependencies left external.
export default defineConfig({
  plugins: [mergeKernelsWasm()],
  build: {
    outDir: 'dist/cli',
    ssr: true,
    target: 'node20',
    sourcemap: true,
    emptyOutDir: true,
    rollupOptions: {
      input: {
        main: 'src/cli/main.ts',
        index: 'src/node/index.ts',
        'kernel-worker': 'src/node/kernel-worker.ts',
      },
      // Shared chunks beside the entries: kernel-threads.ts finds kernel-worker.js next to its own chunk.
      output: { entryFileNames: '[name].js', chunkFileNames: '[name]-[hash].js' },
    },
  },
  ssr: { noExternal: [] },
});
