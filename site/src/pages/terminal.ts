// `/@owner/workspace/terminal?reconnect=<uuid>[&command=…]`: the web terminal, full
// window. The reconnect id lives in the URL, so a reload reattaches to the same shell.

import "@xterm/xterm/css/xterm.css";
import { FitAddon } from "@xterm/addon-fit";
import { Unicode11Addon } from "@xterm/addon-unicode11";
import { WebLinksAddon } from "@xterm/addon-web-links";
import { WebglAddon } from "@xterm/addon-webgl";
import { Terminal } from "@xterm/xterm";

import type { Workspace } from "../api";
import { ApiError, api } from "../api";
import { h, replace } from "../dom";
import { ago } from "../format";
import type { PageContext } from "../page";
import { errorText } from "../page";
import { loginPath, workspacePath } from "../router";
import { confirmCommand } from "../terminal/confirm";
import { clipboardAction } from "../terminal/keys";
import type { PtyStatus } from "../terminal/session";
import { ReconnectingPty } from "../terminal/session";
import { freshSearch, newUuid, ptyUrl, terminalParams } from "../terminal/url";

/** While the agent is not connected, the page looks again this often. */
const AGENT_WAIT_MS = 5000;

/** What end-to-end tests read from the page (`window.tetherTerminal`). */
export interface TerminalProbe {
  /** The terminal's buffer as text, one line per row, trailing blanks trimmed. */
  text(): string;
  /** The connection state. */
  state(): PtyStatus["state"];
  /** The terminal's size in cells. */
  size(): { cols: number; rows: number };
  /** Which screen is shown: full-screen programs switch to the alternate one. */
  screen(): "normal" | "alternate";
  /** Which renderer draws the terminal. */
  renderer: "webgl" | "dom";
}

declare global {
  interface Window {
    tetherTerminal?: TerminalProbe;
  }
}

/** Copies `text`: the Clipboard API where the page may use it, else the old way. */
async function copyText(text: string, fallback: boolean): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch {
    if (!fallback) return;
  }
  const area = h("textarea", { class: "offscreen", readonly: true });
  area.value = text;
  const focused = document.activeElement as HTMLElement | null;
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
  focused?.focus();
}

/** `/@owner/workspace/terminal`. */
export function terminal(root: HTMLElement, ctx: PageContext, owner: string, name: string): void {
  ctx.title(`${name} · Terminal`);
  const params = terminalParams(location.search, newUuid);
  if (params.replaceSearch) history.replaceState(null, "", `${location.pathname}${params.replaceSearch}`);

  const host = h("div", { class: "terminal-host" });
  const overlay = h("div", { class: "terminal-status", role: "status", "aria-live": "polite" });
  const page = h("div", { class: "terminal-page" }, host, overlay);
  replace(root, page);
  document.body.classList.add("full-window");
  ctx.onLeave(() => document.body.classList.remove("full-window"));

  const back = () => h("a", { href: workspacePath(owner, name), class: "button" }, `Back to ${name}`);
  const show = (kind: "info" | "warning" | "error", ...children: (Node | string | null)[]) => {
    overlay.className = `terminal-status terminal-status-${kind}`;
    replace(overlay, ...children);
  };
  const hide = () => {
    overlay.className = "terminal-status hidden";
    replace(overlay);
  };

  if (ctx.user && owner !== ctx.user.username) {
    show("error", h("p", {}, `Unknown workspace @${owner}/${name}: you can only open your own workspaces.`), h("a", { href: "/", class: "button" }, "Your workspaces"));
    return;
  }

  let waitTimer: number | undefined;
  ctx.onLeave(() => window.clearTimeout(waitTimer));

  // Find the workspace and wait for its agent; then ask about `command`, then connect.
  const prepare = async () => {
    let ws: Workspace;
    try {
      ws = await api.workspace(name);
    } catch (e) {
      if (!ctx.live()) return;
      if (e instanceof ApiError && e.status === 401) return ctx.loggedOut();
      if (e instanceof ApiError && e.status === 404) {
        show("error", h("p", {}, `Unknown workspace: ${e.message}`), h("a", { href: "/", class: "button" }, "Your workspaces"));
        return;
      }
      show("warning", h("p", {}, `Could not look up ${name}: ${errorText(e)} Trying again…`));
      waitTimer = window.setTimeout(() => void prepare(), AGENT_WAIT_MS);
      return;
    }
    if (!ctx.live()) return;
    if (ws.status !== "connected") {
      show(
        "warning",
        h("p", {}, `The agent of ${name} is not connected (last seen ${ago(ws.last_seen_at)}). Waiting for it…`),
        back(),
      );
      waitTimer = window.setTimeout(() => void prepare(), AGENT_WAIT_MS);
      return;
    }
    if (params.command !== null) {
      hide();
      const ok = await confirmCommand(page, params.command, name);
      if (!ctx.live()) return;
      if (!ok) {
        show("info", h("p", {}, "Cancelled; nothing was run."), back());
        return;
      }
    }
    start(ws);
  };

  const start = (ws: Workspace) => {
    const term = new Terminal({
      allowProposedApi: true,
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Cascadia Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      scrollback: 5000,
      theme: { background: "#0d1117", foreground: "#e6edf3", cursor: "#e6edf3", selectionBackground: "#264f78" },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.loadAddon(new WebLinksAddon());
    term.loadAddon(new Unicode11Addon());
    term.unicode.activeVersion = "11";
    term.open(host);

    let renderer: TerminalProbe["renderer"] = "dom";
    try {
      const webgl = new WebglAddon();
      webgl.onContextLoss(() => {
        // The GPU went away: xterm falls back to its DOM renderer.
        webgl.dispose();
        renderer = "dom";
        page.dataset["renderer"] = renderer;
      });
      term.loadAddon(webgl);
      renderer = "webgl";
    } catch {
      // No WebGL here: the default renderer draws instead.
    }
    page.dataset["renderer"] = renderer;
    fit.fit();

    let lastReason = "";
    const pty = new ReconnectingPty({
      url: (cols, rows) => ptyUrl(location, ws.agent_id, { reconnect: params.reconnect, cols, rows, command: params.command }),
      size: () => ({ cols: term.cols, rows: term.rows }),
      connect: (url) => new WebSocket(url),
      onOutput: (bytes) => term.write(bytes),
      // A reattach starts with the agent's repaint of the screen: draw it on a clean one.
      onOpen: (reattach) => {
        if (reattach) term.reset();
      },
      onStatus: (s) => {
        page.dataset["state"] = s.state;
        statusChanged(s);
      },
    });

    const explain = async (target: HTMLElement) => {
      try {
        const now = await api.workspace(name);
        if (now.status !== "connected") {
          replace(target, `The agent of ${name} is not connected (last seen ${ago(now.last_seen_at)}).`);
        }
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
          replace(target, "Your session has expired. ", h("a", { href: loginPath(location.pathname + location.search) }, "Log in again"));
        } else if (e instanceof ApiError && e.status === 404) {
          replace(target, `The workspace ${name} no longer exists.`);
        }
      }
    };

    const statusChanged = (s: PtyStatus) => {
      switch (s.state) {
        case "connecting":
          if (s.retry === 0) show("info", h("p", {}, `Connecting to ${name}…`));
          else show("warning", h("p", {}, `Reconnecting to ${name}: ${lastReason}…`));
          return;
        case "connected":
          hide();
          term.focus();
          return;
        case "waiting": {
          lastReason = s.reason;
          const now = h("button", { type: "button", class: "button" }, "Reconnect now");
          now.addEventListener("click", () => pty.reconnectNow());
          const why = h("p", { class: "muted" });
          show(
            "warning",
            h(
              "p",
              {},
              `${s.lost ? "Connection lost" : "Could not connect"}: ${s.reason}. Reconnecting in ${Math.round(s.delayMs / 1000)} s (try ${s.retry} of ${s.maxRetries})…`,
            ),
            why,
            now,
          );
          void explain(why);
          return;
        }
        case "exited": {
          const again = h("button", { type: "button", class: "button primary" }, "Start a new session");
          again.addEventListener("click", () => {
            // The old session is gone with its process; a new id starts a new one.
            location.search = freshSearch(location.search, newUuid);
          });
          show("info", h("p", { class: "strong" }, "Disconnected"), h("p", {}, "The shell exited."), h("div", { class: "buttons" }, back(), again));
          return;
        }
        case "failed": {
          const retry = h("button", { type: "button", class: "button primary" }, "Try again");
          retry.addEventListener("click", () => pty.reconnectNow());
          const why = h("p", { class: "muted" });
          show("error", h("p", { class: "strong" }, "Connection refused"), h("p", {}, s.reason), why, h("div", { class: "buttons" }, back(), retry));
          void explain(why);
          return;
        }
      }
    };

    term.onData((data) => {
      pty.sendInput(data);
    });
    term.onResize(({ cols, rows }) => pty.resize(cols, rows));

    // Ctrl/Cmd+Shift+C copies; Ctrl/Cmd+Shift+V pastes. The browser's own paste (which
    // these keys are in Chromium and Firefox) reaches xterm's textarea; where it does
    // not, the Clipboard API is asked instead.
    let pasteSeen = false;
    term.textarea?.addEventListener("paste", () => (pasteSeen = true), true);
    term.attachCustomKeyEventHandler((e) => {
      const action = clipboardAction(e);
      if (action === null) return true;
      if (e.type === "keydown") {
        if (action === "copy") {
          e.preventDefault();
          const sel = term.getSelection();
          if (sel) void copyText(sel, true);
        } else {
          pasteSeen = false;
          window.setTimeout(() => {
            if (pasteSeen || !navigator.clipboard?.readText) return;
            navigator.clipboard
              .readText()
              .then((t) => t && term.paste(t))
              .catch(() => {});
          }, 100);
        }
      }
      return false;
    });
    // Copy on select, quietly: the Clipboard API only, once the selection settles.
    let selTimer: number | undefined;
    term.onSelectionChange(() => {
      window.clearTimeout(selTimer);
      selTimer = window.setTimeout(() => {
        const sel = term.getSelection();
        if (sel) void copyText(sel, false);
      }, 150);
    });

    let frameReq = 0;
    const observer = new ResizeObserver(() => {
      cancelAnimationFrame(frameReq);
      frameReq = requestAnimationFrame(() => fit.fit());
    });
    observer.observe(host);
    const online = () => pty.reconnectNow();
    window.addEventListener("online", online);
    // The session outlives the page (the agent keeps it 5 minutes): close cleanly.
    const unload = () => pty.dispose();
    window.addEventListener("pagehide", unload);

    window.tetherTerminal = {
      text: () => {
        const buf = term.buffer.active;
        const lines: string[] = [];
        for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? "");
        return lines.join("\n").replace(/\n+$/, "");
      },
      state: () => pty.current.state,
      size: () => ({ cols: term.cols, rows: term.rows }),
      screen: () => term.buffer.active.type,
      get renderer() {
        return renderer;
      },
    };

    ctx.onLeave(() => {
      observer.disconnect();
      window.removeEventListener("online", online);
      window.removeEventListener("pagehide", unload);
      window.clearTimeout(selTimer);
      pty.dispose();
      term.dispose();
      delete window.tetherTerminal;
    });
    pty.start();
  };

  void prepare();
}
