import { defineConfig } from 'vite';

// The Node CLI: one ESM bundle (WGSL inlined through ?raw), dependencies left external.
export default defineConfig({
  build: {
    outDir: 'dist/cli',
    ssr: 'src/cli/main.ts',
    target: 'node20',
    sourcemap: true,
    emptyOutDir: true,
    rollupOptions: { output: { entryFileNames: 'main.js' } },
  },
  ssr: { noExternal: [] },
});
