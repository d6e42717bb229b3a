// The browser end to end: Debian's Chromium (playwright-core, no browser download)
// against the real `tether` binary and a real agent, both started here on free loopback
// ports with a fresh data dir.
//
//   TETHER_BIN=target/debug/tether npm --prefix site run e2e
//
// First-user setup and login in the page; the workspace (made with `tether login` and
// `tether create`, its agent started with TETHER_AGENT_TOKEN) shows connected; the
// terminal runs `echo hello-$((6*7))`; a reload reattaches to the same shell with the
// output still on screen; `less` and `vi` are repainted exactly after a reload; resizing
// the window changes `stty size`; `exit` shows "Disconnected"; the health page renders.
// PNGs of the dashboard, the terminal and the health page go to $E2E_OUT (default
// site/e2e/out/). Each step is printed; any failure exits 1. The whole run is bounded
// ($E2E_TIMEOUT_MS, default 120 s), and every process and temp dir is gone at the end.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { bin, bound, cleanup, dumpLogs, launchBrowser, run, scratch, shot, start, startServer, step, until } from "./harness.mjs";

bound(Number(process.env.E2E_TIMEOUT_MS || 120_000));

const USER = "alice";
const PASSWORD = "correct horse battery";

// Chromium logs every 4xx answer as a console error; the API's 401s (who am I, before
// logging in) and 404s (no first user yet) are part of the flow. Anything else fails.
const EXPECTED_CONSOLE = [/Failed to load resource: the server responded with a status of 40[14]/];
const problems = [];

let failed = false;
try {
  console.log(`tether e2e: ${bin}`);
  const url = await step("the server starts on a free port", () => startServer());
  console.log(`  server at ${url}`);

  const ctx = await step("Chromium starts with a fresh profile", () => launchBrowser());
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !EXPECTED_CONSOLE.some((re) => re.test(m.text()))) {
      problems.push(`console error on ${page.url()}: ${m.text()}`);
    }
  });

  await step("first-user setup in the page", async () => {
    await page.goto(url);
    await page.waitForURL("**/setup");
    await page.fill('input[name="username"]', USER);
    await page.fill('input[name="email"]', "alice@example.com");
    await page.fill('input[name="password"]', PASSWORD);
    await page.fill('input[name="confirm"]', PASSWORD);
    await page.click('button[type="submit"]');
    await page.waitForSelector("text=You have no workspaces yet");
    const cookies = await page.evaluate(() => document.cookie);
    if (cookies.includes("session")) throw new Error(`the session cookie is visible to scripts: ${cookies}`);
  });

  await step("log out and log in again in the page", async () => {
    await page.click("text=Log out");
    await page.waitForURL("**/login");
    await page.fill('input[name="username"]', USER);
    await page.fill('input[name="password"]', PASSWORD);
    await page.click('button[type="submit"]');
    await page.waitForSelector("text=You have no workspaces yet");
  });

  const token = await step("tether login and tether create dev (the CLI)", () => {
    const cfg = join(scratch, "cli");
    run(["login", url, "--username", USER, "--global-config", cfg], { TETHER_PASSWORD: PASSWORD });
    const printed = run(["create", "dev", "--global-config", cfg]);
    const m = printed.match(/TETHER_AGENT_TOKEN=(\S+)/);
    if (!m) throw new Error(`tether create printed no agent token:\n${printed}`);
    return m[1];
  });

  await step("the agent starts (TETHER_AGENT_TOKEN) and the workspace shows connected", async () => {
    const agent = start("agent", ["agent", "--url", url], { env: { TETHER_AGENT_TOKEN: token } });
    agent.on("exit", (code, signal) => problems.push(`the agent exited (${code ?? signal})`));
    // The list polls every 5 s; the agent connects within a few.
    const badge = await page.waitForSelector('tr[data-workspace="dev"] .badge-ok', { timeout: 30_000 });
    const status = (await badge.textContent())?.trim();
    if (status !== "connected") throw new Error(`the workspace's status reads ${JSON.stringify(status)}`);
    await shot(page, "dashboard");
  });

  const text = () => page.evaluate(() => window.tetherTerminal?.text() ?? "");
  const state = () => page.evaluate(() => window.tetherTerminal?.state() ?? "no terminal");
  const size = () => page.evaluate(() => window.tetherTerminal?.size() ?? null);
  const screen = () => page.evaluate(() => window.tetherTerminal?.screen() ?? null);
  const connected = (what) => until(what, state, (s) => s === "connected", { ms: 30_000 });
  /** Waits until a line of the terminal matches `re` (the screen is shown on failure). */
  const seeLine = (re, ms = 15_000) => until(`a line matching ${re}`, text, (t) => t.split("\n").some((l) => re.test(l)), { ms, describe: (t) => t });
  const typeLine = async (line) => {
    await page.keyboard.type(line);
    await page.keyboard.press("Enter");
  };

  await step("the Terminal button opens a connected shell", async () => {
    await page.click('tr[data-workspace="dev"] a:text("Terminal")');
    await page.waitForURL(/\/@alice\/dev\/terminal\?reconnect=[0-9a-f-]{36}/);
    await connected("the terminal connects");
    // The shell's prompt (`$` or `#` last): typing before it would echo twice.
    await seeLine(/[$#] ?$/, 30_000);
  });
  const reconnectId = new URL(page.url()).searchParams.get("reconnect");

  await step("echo hello-$((6*7)) prints hello-42", async () => {
    await typeLine("echo hello-$((6*7))");
    await seeLine(/^hello-42$/);
    await shot(page, "terminal");
  });

  await step("export MARK=x1; a reload reattaches to the same shell with the output on screen", async () => {
    await typeLine("export MARK=x1; echo marked-$MARK");
    await seeLine(/^marked-x1$/);
    await page.reload();
    if (new URL(page.url()).searchParams.get("reconnect") !== reconnectId) throw new Error(`the reload changed the session id: ${page.url()}`);
    await connected("the terminal reconnects after the reload");
    // The agent's repaint: what was on screen before the reload.
    await seeLine(/^hello-42$/);
    await seeLine(/^marked-x1$/);
    await typeLine("echo mark-is-$MARK");
    await seeLine(/^mark-is-x1$/);
  });

  // A file a full-screen program shows: more lines than the screen, each one distinct.
  const file = join(scratch, "lines.txt");
  writeFileSync(file, Array.from({ length: 300 }, (_, i) => `line ${String(i + 1).padStart(3, "0")} ${"abcdefghij".repeat(1 + (i % 5))}`).join("\n") + "\n");

  for (const [program, command, ready, leave] of [
    ["less", `less ${file}`, (t) => t.includes("line 001") && /lines\.txt/.test(t), "q"],
    ["vi", `vi ${file}`, (t) => t.includes("line 001") && /"[^"]*lines\.txt"/.test(t), ":q\n"],
  ]) {
    await step(`${program} on a file; a reload repaints the same screen`, async () => {
      await typeLine(command);
      await until(`${program} shows the file`, text, ready, { describe: (t) => t });
      // The screen has settled when two reads 300 ms apart agree.
      let before = await text();
      await until(
        `${program}'s screen settles`,
        async () => {
          await page.waitForTimeout(300);
          const now = await text();
          const same = now === before;
          before = now;
          return same;
        },
        (same) => same,
      );
      if ((await screen()) !== "alternate") throw new Error(`${program} is not on the alternate screen`);
      await shot(page, `${program}-before-reload`);
      await page.reload();
      await connected(`the terminal reconnects with ${program} running`);
      await until(`the repaint of ${program}'s screen`, text, (t) => t === before, {
        describe: (t) => `expected:\n${before}\n--- got:\n${t}`,
      });
      if ((await screen()) !== "alternate") throw new Error(`after the reload, ${program} is not on the alternate screen`);
      await shot(page, `${program}-after-reload`);
      const lines = before.split("\n");
      console.log(`  ${lines.length} rows the same, from ${JSON.stringify(lines[0])} to ${JSON.stringify(lines.at(-1))}`);
      // Typed before the program has exited, the next line would go to the program.
      await page.keyboard.type(leave);
      await until(`${program} exits`, screen, (s) => s === "normal");
      await typeLine(`echo left-${program}-$((1+2))`);
      await seeLine(new RegExp(`^left-${program}-3$`));
    });
  }

  await step("resizing the window changes stty size", async () => {
    const a = await size();
    await typeLine("echo size-$(stty size | tr ' ' x)");
    await seeLine(new RegExp(`^size-${a.rows}x${a.cols}$`));
    await page.setViewportSize({ width: 900, height: 560 });
    const b = await until("xterm fits the smaller window", size, (s) => s.cols < a.cols && s.rows < a.rows);
    await typeLine("echo size-$(stty size | tr ' ' x)");
    await seeLine(new RegExp(`^size-${b.rows}x${b.cols}$`));
    console.log(`  ${a.rows}x${a.cols} -> ${b.rows}x${b.cols}`);
  });

  await step('exit shows "Disconnected"', async () => {
    await typeLine("exit");
    await until("the session ends", state, (s) => s === "exited");
    await page.waitForSelector('.terminal-status:has-text("Disconnected")');
  });

  await step("the dashboard shows how the server reaches the agent", async () => {
    await page.setViewportSize({ width: 1200, height: 760 });
    await page.goto(url);
    const cell = 'tr[data-workspace="dev"] td:nth-child(5)';
    await page.waitForFunction((sel) => /p2p|DERP/.test(document.querySelector(sel)?.textContent ?? ""), cell);
    console.log(`  server path: ${await page.innerText(cell)}`);
    await shot(page, "dashboard-server-path");
  });

  await step("the health page renders", async () => {
    await page.goto(`${url}/health`);
    await page.waitForSelector("section[data-section]");
    const sections = await page.$$eval("section[data-section]", (ss) => ss.map((s) => s.getAttribute("data-section")));
    for (const want of ["derp", "server_tailnet"]) {
      if (!sections.includes(want)) throw new Error(`no ${want} section on the health page: ${sections.join(", ")}`);
    }
    console.log(`  sections: ${sections.join(", ")}`);
    await page.click('section[data-section="server_tailnet"] summary');
    // The server ⇄ agent path of the one agent, in the details' table.
    const tailnet = await page.innerText('section[data-section="server_tailnet"]');
    if (!/tunnels to 1 agent/.test(tailnet) || !/\t(p2p|derp)\t/i.test(tailnet)) throw new Error(`the server tailnet section shows no agent path:\n${tailnet}`);
    await shot(page, "health", { fullPage: true });
  });

  if (problems.length) throw new Error(`the page had problems:\n${problems.join("\n")}`);
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e instanceof Error ? e.stack : e}`);
  dumpLogs();
} finally {
  await cleanup();
}
console.log(failed ? "tether e2e: FAILED" : "tether e2e: all steps passed");
process.exit(failed ? 1 : 0);
