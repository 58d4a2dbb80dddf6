import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // A napi addon inside worker threads can crash the runner; separate processes are safe.
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
