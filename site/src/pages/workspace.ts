// `/@owner/workspace`: one workspace's agent, the server's path to it, its listening
// ports, its declared apps and the Terminal button.

import type { App, ListeningPort, Workspace } from "../api";
import { ApiError, api } from "../api";
import { h, notice, replace } from "../dom";
import { ago, lastSeen, latency, relayName } from "../format";
import { frame } from "../layout";
import type { PageContext } from "../page";
import { errorText, handledAuth } from "../page";
import { terminalPath } from "../router";
import { POLL_MS, statusBadge } from "./workspaces";

/** Listening ports are asked for less often: the agent reads /proc for them. */
const PORTS_POLL_MS = 15_000;

function facts(rows: [string, Node | string | null][]): HTMLElement {
  return h(
    "dl",
    { class: "facts" },
    rows.filter(([, v]) => v !== null).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}

/** The server ⇄ agent path, in words. */
export function serverPathFacts(ws: Workspace): HTMLElement {
  const p = ws.server_path;
  if (p === undefined) {
    return h("p", { class: "muted" }, "This server does not report its own path to agents yet.");
  }
  if (p === null) {
    return h(
      "p",
      { class: "muted" },
      ws.status === "connected" ? "The server has no tunnel to this agent right now." : "The agent is not connected.",
    );
  }
  return facts([
    ["Path", p.kind === "direct" ? "direct (p2p)" : "relayed (DERP)"],
    ["Latency", latency(p.latency_ms)],
    ["DERP region", p.derp_region],
    ["Endpoint", p.endpoint],
    ["Why not direct", p.kind === "derp" ? p.reason : null],
  ]);
}

/** The listening ports table, with how to reach each one. */
export function portsTable(ws: Workspace, ports: ListeningPort[]): HTMLElement {
  if (ports.length === 0) return h("p", { class: "muted" }, "Nothing is listening in the workspace.");
  const sorted = [...ports].sort((a, b) => a.port - b.port);
  return h(
    "table",
    { class: "table" },
    h("thead", {}, h("tr", {}, h("th", {}, "Port"), h("th", {}, "Process"), h("th", {}, "Reach it from your machine"))),
    h(
      "tbody",
      {},
      sorted.map((p) =>
        h(
          "tr",
          {},
          h("td", {}, `${p.port}/${p.network}`),
          h("td", {}, p.process_name || "-"),
          h("td", {}, h("code", {}, `tether port-forward ${ws.name} --tcp ${p.port}`)),
        ),
      ),
    ),
  );
}

/** The workspace's declared apps, each linked where it can be opened here. */
export function appsTable(ws: Workspace, apps: App[]): HTMLElement {
  if (apps.length === 0) {
    return h(
      "p",
      { class: "muted" },
      "No apps declared. Add one with ",
      h("code", {}, `tether apps add ${ws.name} SLUG --url http://127.0.0.1:PORT`),
      ".",
    );
  }
  const why = (a: App) => (a.subdomain ? "subdomain apps are not served yet" : "path apps are disabled on this server");
  return h(
    "table",
    { class: "table" },
    h("thead", {}, h("tr", {}, h("th", {}, "App"), h("th", {}, "URL in the workspace"), h("th", {}, "Kind"), h("th", {}, "Shared with"))),
    h(
      "tbody",
      {},
      apps.map((a) =>
        h(
          "tr",
          { "data-app": a.slug },
          h("td", {}, a.open_url ? h("a", { href: a.open_url, target: "_blank", rel: "noopener" }, a.display_name) : h("span", { title: why(a) }, a.display_name)),
          h("td", {}, h("code", {}, a.url)),
          h("td", {}, a.subdomain ? "subdomain" : "path"),
          h("td", {}, a.share === "owner" ? "only you" : a.share === "authenticated" ? "logged-in users" : "anyone"),
        ),
      ),
    ),
  );
}

/** `/@owner/workspace`. */
export function workspace(root: HTMLElement, ctx: PageContext, owner: string, name: string): void {
  ctx.title(name);
  const main = frame(root, ctx, null);
  if (ctx.user && owner !== ctx.user.username) {
    replace(main, notice("error", `Unknown workspace @${owner}/${name}: you can only open your own workspaces.`), h("p", {}, h("a", { href: "/" }, "Back to your workspaces")));
    return;
  }
  const head = h("div", { class: "page-head" }, h("h1", {}, name));
  const status = h("div", { class: "status-line" });
  const agent = h("section", { class: "panel" }, h("p", { class: "muted" }, "Loading…"));
  const path = h("section", { class: "panel" });
  const ports = h("section", { class: "panel" });
  const appsPanel = h("section", { class: "panel" }, h("h2", {}, "Apps"), h("p", { class: "muted" }, "Loading…"));
  replace(main, h("p", { class: "crumbs" }, h("a", { href: "/" }, "Workspaces"), " / ", name), head, status, agent, path, appsPanel, ports);
  let appsShown = false;

  const refreshApps = async (ws: Workspace) => {
    try {
      const list = await api.apps(ws.name);
      if (!ctx.live()) return;
      appsShown = true;
      replace(appsPanel, h("h2", {}, "Apps"), appsTable(ws, list));
    } catch (e) {
      if (!ctx.live() || handledAuth(ctx, e)) return;
      replace(appsPanel, h("h2", {}, "Apps"), h("p", { class: "muted" }, errorText(e)));
    }
  };

  let timer: number | undefined;
  let portsTimer: number | undefined;
  let current: Workspace | null = null;
  let portsStarted = false;

  const refreshPorts = async () => {
    const ws = current;
    if (!ws || !ctx.live()) return;
    if (!ports.querySelector("table")) replace(ports, h("h2", {}, "Listening ports"), h("p", { class: "muted" }, "Asking the agent…"));
    try {
      const r = await api.listeningPorts(ws.agent_id);
      if (!ctx.live()) return;
      replace(ports, h("h2", {}, "Listening ports"), portsTable(ws, r.ports));
    } catch (e) {
      if (!ctx.live() || handledAuth(ctx, e)) return;
      // 404 from an older server means it has no such route; 400 is the agent's state.
      const text =
        e instanceof ApiError && e.status === 404 && e.message === "No such API route."
          ? "This server cannot list listening ports yet."
          : errorText(e);
      replace(ports, h("h2", {}, "Listening ports"), h("p", { class: "muted" }, text));
    }
    if (ctx.live()) portsTimer = window.setTimeout(() => void refreshPorts(), PORTS_POLL_MS);
  };

  const render = (ws: Workspace) => {
    replace(
      head,
      h("h1", {}, ws.name, " ", statusBadge(ws.status)),
      h("div", { class: "spacer" }),
      ws.status === "connected"
        ? h("a", { href: terminalPath(ws.owner, ws.name), class: "button primary" }, "Terminal")
        : h("button", { type: "button", class: "button", disabled: true, title: "The agent is not connected." }, "Terminal"),
    );
    replace(
      agent,
      h("h2", {}, "Agent"),
      facts([
        ["Status", ws.status],
        ["Last seen", lastSeen(ws)],
        ["Version", ws.agent_version ?? null],
        ["Home relay", relayName(ws.relay)],
        ["Agent ID", h("code", {}, ws.agent_id)],
        ["Created", `${new Date(ws.created_at).toLocaleString()} (${ago(ws.created_at)})`],
      ]),
      ws.status === "connected"
        ? null
        : notice(
            "info",
            "The agent is not connected. Start it inside the workspace with the ",
            h("code", {}, "tether agent"),
            " command printed when the workspace was created.",
          ),
    );
    replace(path, h("h2", {}, "Server path"), serverPathFacts(ws));
    if (ws.status === "connected" && !portsStarted) {
      portsStarted = true;
      void refreshPorts();
    } else if (ws.status !== "connected") {
      portsStarted = false;
      window.clearTimeout(portsTimer);
      replace(ports, h("h2", {}, "Listening ports"), h("p", { class: "muted" }, "Shown when the agent is connected."));
    }
  };

  const refresh = async () => {
    try {
      const ws = await api.workspace(name);
      if (!ctx.live()) return;
      current = ws;
      render(ws);
      if (!appsShown) void refreshApps(ws);
      replace(status);
    } catch (e) {
      if (!ctx.live() || handledAuth(ctx, e)) return;
      if (e instanceof ApiError && e.status === 404) {
        replace(main, notice("error", `Unknown workspace: ${errorText(e)}`), h("p", {}, h("a", { href: "/" }, "Back to your workspaces")));
        return;
      }
      replace(status, notice(current ? "warning" : "error", current ? `Could not refresh: ${errorText(e)}` : errorText(e)));
    }
    if (ctx.live()) timer = window.setTimeout(() => void refresh(), POLL_MS);
  };
  void refresh();
  ctx.onLeave(() => {
    window.clearTimeout(timer);
    window.clearTimeout(portsTimer);
  });
}
