// What the end-to-end scripts share: the `tether` binary they run, its processes (killed
// on every way out), a scratch directory (removed on every way out), Debian's Chromium
// with a fresh profile (playwright-core, never a downloaded browser), named steps, and a
// bound on the whole run so it never hangs.

import { spawn, spawnSync } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));

/** The `tether` binary: `$TETHER_BIN`, else the first argument, else the debug build. */
export const bin = resolve(process.env.TETHER_BIN || process.argv[2] || join(here, "..", "..", "target", "debug", "tether"));

/** Where PNGs go (outside git): `$E2E_OUT`, else `site/e2e/out/`. */
export const out = resolve(process.env.E2E_OUT || join(here, "out"));

/** A fresh directory for this run; gone when the run ends, however it ends. */
export const scratch = mkdtempSync(join(tmpdir(), "tether-e2e-"));

const children = [];
let browser = null;

function killAll(signal) {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill(signal);
  }
}

function removeScratch() {
  try {
    rmSync(scratch, { recursive: true, force: true, maxRetries: 3 });
  } catch (e) {
    console.error(`could not remove ${scratch}: ${e.message}`);
  }
}

let cleaning = null;

/**
 * Ends every process this run started (Chromium first, so it stops writing its profile)
 * and removes the scratch directory. Safe to call more than once: every caller waits
 * for the same cleanup.
 */
export function cleanup() {
  cleaning ??= (async () => {
    await Promise.race([browser?.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
    killAll("SIGTERM");
    const deadline = Date.now() + 3000;
    while (children.some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    killAll("SIGKILL");
    removeScratch();
  })();
  return cleaning;
}

// Whatever happens (an exception, the bound, Ctrl-C), nothing is left behind: `exit`
// handlers may only do synchronous work, which killing and removing are.
process.on("exit", () => {
  killAll("SIGKILL");
  removeScratch();
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));

/** Fails the run (after cleanup) if it has not ended within `ms`. */
export function bound(ms) {
  const timer = setTimeout(() => {
    console.error(`FAILED: the run did not end within ${ms / 1000} s`);
    dumpLogs();
    void cleanup().finally(() => process.exit(1));
  }, ms);
  timer.unref();
}

/** Runs `tether ARGS` to its end (bounded); returns its output, throws on a non-zero exit. */
export function run(args, env = {}) {
  const r = spawnSync(bin, args, { encoding: "utf8", timeout: 30_000, env: { ...process.env, ...env } });
  if (r.error) throw new Error(`tether ${args[0]}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`tether ${args.join(" ")} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

const logs = [];

/** Starts `tether ARGS` in the background, its stderr in a log file; `onLine` sees stdout. */
export function start(name, args, { env = {}, onLine } = {}) {
  if (!existsSync(bin)) throw new Error(`no tether binary at ${bin} (build it, or set TETHER_BIN)`);
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, TETHER_LOG: "info", ...env } });
  children.push(child);
  const log = join(scratch, `${name}.log`);
  logs.push(log);
  const file = createWriteStream(log);
  child.stderr.pipe(file);
  let buf = "";
  child.stdout.on("data", (d) => {
    file.write(d);
    buf += d;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      onLine?.(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  return child;
}

/** Prints the last lines of every process's log (after a failure). */
export function dumpLogs() {
  for (const log of logs) {
    let text = "";
    try {
      text = readFileSync(log, "utf8");
    } catch {
      continue;
    }
    // Logs are coloured when the terminal is; the escapes would only get in the way here.
    const lines = text.replace(/\x1b\[[0-9;]*m/g, "").trimEnd().split("\n").slice(-25);
    console.error(`--- last lines of ${log.split("/").pop()} ---\n${lines.join("\n")}`);
  }
}

/** `tether server` on free loopback ports with a fresh data dir; resolves to its URL. */
export function startServer(extra = []) {
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("the server did not start within 30 s")), 30_000);
    let url = null;
    const args = ["server", "--http-address", "127.0.0.1:0", "--stun-address", "127.0.0.1:0", "--data-dir", join(scratch, "data"), ...extra];
    start("server", args, {
      onLine: (line) => {
        const m = line.match(/^tether server listening on (http:\/\/\S+)/);
        if (m) url = m[1];
        if (url && line.includes("tether login")) {
          clearTimeout(timer);
          ok(url);
        }
      },
    }).on("exit", (code, signal) => {
      clearTimeout(timer);
      fail(new Error(`the server exited (${code ?? signal})`));
    });
  });
}

/** The chromium flags every run uses: headless, no sandbox (root in CI), nothing phoning home. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** Debian's Chromium (`$CHROMIUM`, else /usr/bin/chromium) with a fresh profile in the scratch dir. */
export async function launchBrowser(viewport = { width: 1200, height: 760 }) {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
  // launchPersistentContext passes this directory as --user-data-dir.
  const profile = mkdtempSync(join(scratch, "chromium-"));
  browser = await chromium.launchPersistentContext(profile, { executablePath, viewport, args: CHROMIUM_ARGS });
  return browser;
}

/** Saves a PNG of `page` (the viewport, or the whole page) as `out/NAME.png`. */
export async function shot(page, name, { fullPage = false } = {}) {
  mkdirSync(out, { recursive: true });
  const path = join(out, `${name}.png`);
  await page.screenshot({ path, fullPage });
  console.log(`  saved ${path}`);
}

let stepNo = 0;

/** Runs one named step, printing it and how long it took; its error names the step. */
export async function step(name, fn) {
  stepNo += 1;
  const t0 = Date.now();
  try {
    const v = await fn();
    console.log(`ok ${stepNo} - ${name} (${Date.now() - t0} ms)`);
    return v;
  } catch (e) {
    console.log(`not ok ${stepNo} - ${name} (${Date.now() - t0} ms)`);
    throw e;
  }
}

/**
 * Polls `probe` every 100 ms until `accept(value)` holds; throws after `ms` with what
 * was last seen (`describe` renders it), so a failure shows what was on screen.
 */
export async function until(what, probe, accept, { ms = 15_000, describe = (v) => JSON.stringify(v) } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (accept(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s; last seen:\n${describe(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
