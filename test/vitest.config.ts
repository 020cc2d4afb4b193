import { defineConfig } from "vitest/config";

// Integration tests start real agents on loopback ports; run files one at a time on a
// 2-core machine so that timing-sensitive tests (cancel within a second) stay honest.
export default defineConfig({
  test: {
    root: new URL("..", import.meta.url).pathname,
    include: ["test/**/*.test.ts"],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ["default"],
  },
});
