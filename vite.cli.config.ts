import { defineConfig } from 'vite';

// The Node CLI (main.js) and the Node API (index.js): ESM bundles (WGSL inlined through ?raw), dependencies left external.
export default defineConfig({
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
