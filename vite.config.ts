import { defineConfig } from 'vitest/config';

export default defineConfig({
  build: {
    outDir: 'dist/app',
    target: 'es2022',
    sourcemap: true,
  },
  worker: { format: 'es' },
  test: {
    include: ['test/unit/**/*.test.ts'],
    environment: 'node',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
