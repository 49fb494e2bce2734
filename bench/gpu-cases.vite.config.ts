import { defineConfig } from 'vite';
import { mergeKernelsWasm } from '../wasm/vite-plugin';

// bench/gpu-cases.ts as one Node ESM bundle (WGSL inlined through ?raw); `webgpu` stays external.
export default defineConfig({
  plugins: [mergeKernelsWasm()],
  publicDir: false,
  build: {
    outDir: 'dist/gpu-cases',
    ssr: true,
    target: 'node20',
    emptyOutDir: true,
    rollupOptions: {
      input: { run: 'bench/gpu-cases.ts' },
      output: { entryFileNames: '[name].js', chunkFileNames: '[name]-[hash].js', inlineDynamicImports: true },
    },
  },
  ssr: { noExternal: true, external: ['webgpu'] },
});
