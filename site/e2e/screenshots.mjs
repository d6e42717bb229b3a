// Screenshots of the dashboard against a real `tether server` and `tether agent`, in
// Debian's Chromium driven by playwright-core (no browser download).
//
//   TETHER_BIN=path/to/tether npm run screenshots   (default: ../target/debug/tether)
//
// Starts a server on a free loopback port with a fresh data dir, goes through first-user
// setup in the page, creates a workspace, starts its agent, and saves PNGs of each page
// into $E2E_OUT (default e2e/out/). Fails on any page error, console error or CSP
// violation. The terminal's error paths run against a stand-in for the /pty endpoint;
// terminal.e2e.mjs drives the real one.

import { bound, cleanup, dumpLogs, launchBrowser, out, shot as save, start, startServer } from "./harness.mjs";

bound(Number(process.env.E2E_TIMEOUT_MS || 180_000));

const problems = [];
try {
  const url = await startServer();
  console.log(`server at ${url}`);
  const browser = await launchBrowser();
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error on ${page.url()}: ${m.text()}`);
  });
  const shot = async (name) => {
    await page.waitForTimeout(300);
    await save(page, name);
  };

  // A new server sends the visitor to first-user setup.
  await page.goto(url);
  await page.waitForURL("**/setup");
  await page.fill('input[name="username"]', "alice");
  await page.fill('input[name="email"]', "alice@example.com");
  await page.fill('input[name="password"]', "correct horse battery");
  await page.fill('input[name="confirm"]', "correct horse batteyy");
  await page.click('button[type="submit"]');
  await page.waitForSelector(".notice-error");
  await shot("setup-mismatch");
  await page.fill('input[name="confirm"]', "correct horse battery");
  await page.click('button[type="submit"]');
  await page.waitForSelector("text=You have no workspaces yet");
  await shot("workspaces-empty");

  // The page cannot read its session cookie.
  const visible = await page.evaluate(() => document.cookie);
  if (visible.includes("tether_session_token")) problems.push("the session cookie is visible to scripts");

  // A workspace (made through the API with the page's cookie) and its agent.
  const created = await page.evaluate(async () => {
    const r = await fetch("/api/v2/workspaces", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: "dev" }),
    });
    return { status: r.status, body: await r.json() };
  });
  if (created.status !== 201) throw new Error(`creating the workspace: ${JSON.stringify(created)}`);
  await page.evaluate(async () => {
    await fetch("/api/v2/workspaces", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: "idle" }) });
  });
  start("agent", ["agent", "--url", url], { env: { TETHER_AGENT_TOKEN: created.body.agent_token } });
  await page.waitForSelector('tr[data-workspace="dev"] .badge-ok', { timeout: 30_000 });
  await shot("workspaces");

  await page.click('tr[data-workspace="dev"] a');
  await page.waitForSelector("text=Agent ID");
  await page.waitForTimeout(1000);
  await shot("workspace");

  await page.goto(`${url}/@alice/nope`);
  await page.waitForSelector(".notice-error");
  await shot("workspace-unknown");

  await page.goto(`${url}/health`);
  await page.waitForSelector("section[data-section]");
  await shot("health");

  // The terminal: a link with command= asks first.
  await page.goto(`${url}/@alice/dev/terminal?command=${encodeURIComponent("htop")}`);
  await page.waitForSelector('[role="dialog"]');
  const search = new URL(page.url()).searchParams;
  if (!/^[0-9a-f-]{36}$/.test(search.get("reconnect") ?? "")) problems.push(`no reconnect id in ${page.url()}`);
  await shot("terminal-confirm");
  await page.click('[data-action="cancel"]');
  await page.waitForSelector("text=nothing was run");

  await page.goto(`${url}/@alice/dev/terminal`);
  await page.waitForFunction(() => document.querySelector(".terminal-page")?.getAttribute("data-state") !== "connecting", null, { timeout: 90_000 });
  const state = await page.evaluate(() => ({
    state: document.querySelector(".terminal-page")?.getAttribute("data-state"),
    renderer: document.querySelector(".terminal-page")?.getAttribute("data-renderer"),
    status: document.querySelector(".terminal-status")?.textContent,
  }));
  console.log(`terminal: ${JSON.stringify(state)}`);
  await shot("terminal-opened");

  await page.goto(`${url}/@alice/idle/terminal`);
  await page.waitForSelector("text=is not connected");
  await shot("terminal-agent-not-connected");

  // The terminal against a stand-in for the /pty endpoint (Playwright answers the
  // WebSocket in place of the server), until the server's own exists: frames, echo,
  // resize, reattach with the same id after a reload and after a drop, "Disconnected".
  const mock = { urls: [], frames: [], sockets: [] };
  await page.routeWebSocket(/\/pty\?/, (ws) => {
    mock.urls.push(ws.url());
    mock.sockets.push(ws);
    let line = "";
    ws.send(Buffer.from("\x1b[1;32malice@dev\x1b[0m:~$ "));
    ws.onMessage((m) => {
      if (typeof m === "string") return problems.push(`a text frame from the page: ${m}`);
      const f = JSON.parse(m.toString("utf8"));
      mock.frames.push(f);
      if (f.data === undefined) return;
      for (const ch of f.data) {
        if (ch !== "\r") {
          line += ch;
          ws.send(Buffer.from(ch));
          continue;
        }
        const cmd = line;
        line = "";
        if (cmd === "exit") return ws.close({ code: 1000, reason: "process exited" });
        const out = cmd === "echo hello-$((6*7))" ? "hello-42\r\n" : "";
        ws.send(Buffer.from(`\r\n${out}\x1b[1;32malice@dev\x1b[0m:~$ `));
      }
    });
  });
  const termState = () => page.evaluate(() => window.tetherTerminal?.state());
  const waitState = (s) => page.waitForFunction((s) => window.tetherTerminal?.state() === s, s, { timeout: 20_000 });
  await page.goto(`${url}/@alice/dev/terminal`);
  await waitState("connected");
  await page.keyboard.type("echo hello-$((6*7))");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => window.tetherTerminal?.text().includes("hello-42"));
  await shot("terminal-mock");
  const id = new URL(page.url()).searchParams.get("reconnect");
  if (!mock.urls[0]?.includes(`reconnect=${id}`)) problems.push(`the socket did not use the page's id: ${mock.urls[0]}`);
  if (!("height" in (mock.frames[0] ?? {}))) problems.push(`the first frame was not a resize: ${JSON.stringify(mock.frames[0])}`);
  const before = mock.frames.filter((f) => "height" in f).length;
  await page.setViewportSize({ width: 900, height: 600 });
  await page.waitForTimeout(500);
  const resizes = mock.frames.filter((f) => "height" in f);
  if (resizes.length <= before) problems.push("no resize frame after the window shrank");
  console.log(`terminal (stand-in): resize frames ${JSON.stringify(resizes)}; renderer ${await page.evaluate(() => window.tetherTerminal?.renderer)}`);
  await page.reload();
  await waitState("connected");
  if (!mock.urls[1]?.includes(`reconnect=${id}`)) problems.push(`the reload did not reattach with ${id}: ${mock.urls[1]}`);
  // The server drops the socket: the page says so and reattaches after 1 s, same id.
  mock.sockets[1].close({ code: 1011, reason: "the agent went away" });
  await page.waitForFunction(() => document.querySelector(".terminal-status")?.textContent?.includes("the agent went away"));
  await shot("terminal-mock-lost");
  await waitState("connected");
  if (!mock.urls[2]?.includes(`reconnect=${id}`)) problems.push(`the reconnect did not reuse ${id}: ${mock.urls[2]}`);
  await page.keyboard.type("exit");
  await page.keyboard.press("Enter");
  await waitState("exited");
  await shot("terminal-mock-disconnected");
  console.log(`terminal (stand-in): ${mock.urls.length} connections, final state ${await termState()}`);
  await page.setViewportSize({ width: 1200, height: 760 });

  // Logging out lands on the login page; a wrong password says so.
  await page.goto(url);
  await page.click("text=Log out");
  await page.waitForURL("**/login");
  await page.fill('input[name="username"]', "alice");
  await page.fill('input[name="password"]', "wrong password");
  await page.click('button[type="submit"]');
  await page.waitForSelector(".notice-error");
  await shot("login-refused");
  await page.fill('input[name="password"]', "correct horse battery");
  await page.click('button[type="submit"]');
  await page.waitForSelector('tr[data-workspace="dev"]');
} catch (e) {
  problems.push(`failed: ${e instanceof Error ? e.stack : e}`);
  dumpLogs();
} finally {
  await cleanup();
}
console.log(`screenshots in ${out}`);

// Chromium logs every 4xx answer as a console error; the API's 401s and 404s are part
// of the flow (who am I, is there a first user, an unknown workspace, a server without
// listening ports yet). The pty endpoint may not exist yet: its refused WebSocket too.
const expected = [/WebSocket connection to .*\/pty\?/, /Failed to load resource: the server responded with a status of 40[14]/];
const unexpected = problems.filter((p) => !expected.some((re) => re.test(p)));
for (const p of problems) console.log(unexpected.includes(p) ? `PROBLEM: ${p}` : `expected: ${p}`);
process.exit(unexpected.length ? 1 : 0);
