// The dashboard's build. The server's build script passes --outDir (inside Cargo's
// OUT_DIR), so nothing is written into the source tree; `npm run dev` proxies the API to
// a `tether server` on its default address.
import { defineConfig } from "vitest/config";

const server = "http://127.0.0.1:3000";

export default defineConfig({
  build: {
    target: "es2022",
    sourcemap: false,
    // xterm.js alone is ~300 kB; one chunk per page is not worth the round trips.
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: {
      "/api": { target: server, ws: true, changeOrigin: false },
    },
  },
  test: {
    // Pure logic runs in Node; tests that need a DOM say `@vitest-environment jsdom`.
    environment: "node",
    include: ["test/**/*.test.ts"],
  },
});
