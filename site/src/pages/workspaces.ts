// `/`: the user's workspaces, refreshed every 5 s.

import type { Workspace } from "../api";
import { api } from "../api";
import { h, notice, replace } from "../dom";
import { lastSeen, pathSummary, relayName } from "../format";
import { frame } from "../layout";
import type { PageContext } from "../page";
import { errorText, handledAuth } from "../page";
import { terminalPath, workspacePath } from "../router";

/** How often the list is refreshed. */
export const POLL_MS = 5000;

/** A status badge. */
export function statusBadge(status: Workspace["status"]): HTMLElement {
  return h("span", { class: `badge badge-${status === "connected" ? "ok" : "muted"}` }, status);
}

/** The table of workspaces (or the empty state). */
export function workspaceTable(list: Workspace[], now: number = Date.now()): HTMLElement {
  if (list.length === 0) {
    return h(
      "div",
      { class: "empty" },
      h("p", {}, "You have no workspaces yet. Create one from a terminal:"),
      h("pre", { class: "code" }, "tether create dev"),
      h("p", { class: "muted" }, "then run the agent command it prints inside the workspace."),
    );
  }
  const rows = list.map((ws) =>
    h(
      "tr",
      { "data-workspace": ws.name },
      h("td", {}, h("a", { href: workspacePath(ws.owner, ws.name), class: "strong" }, ws.name)),
      h("td", {}, statusBadge(ws.status)),
      h("td", {}, lastSeen(ws, now)),
      h("td", {}, relayName(ws.relay)),
      h("td", { title: ws.server_path?.reason ?? "" }, pathSummary(ws.server_path) ?? "-"),
      h(
        "td",
        { class: "actions" },
        ws.status === "connected" ? h("a", { href: terminalPath(ws.owner, ws.name), class: "button" }, "Terminal") : null,
      ),
    ),
  );
  return h(
    "table",
    { class: "table" },
    h(
      "thead",
      {},
      h("tr", {}, h("th", {}, "Name"), h("th", {}, "Status"), h("th", {}, "Last seen"), h("th", {}, "Relay"), h("th", {}, "Server path"), h("th", {}, "")),
    ),
    h("tbody", {}, rows),
  );
}

/** `/`. */
export function workspaces(root: HTMLElement, ctx: PageContext): void {
  ctx.title("Workspaces");
  const main = frame(root, ctx, "workspaces");
  const status = h("div", { class: "status-line" });
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace(main, h("div", { class: "page-head" }, h("h1", {}, "Workspaces"), status), body);

  let timer: number | undefined;
  let loaded = false;
  const refresh = async () => {
    try {
      const list = await api.workspaces();
      if (!ctx.live()) return;
      list.sort((a, b) => a.name.localeCompare(b.name));
      replace(body, workspaceTable(list));
      replace(status);
      loaded = true;
    } catch (e) {
      if (!ctx.live() || handledAuth(ctx, e)) return;
      // Keep the last good list on screen; say it is stale.
      const message = loaded ? `Could not refresh: ${errorText(e)}` : errorText(e);
      if (loaded) replace(status, notice("warning", message));
      else replace(body, notice("error", message));
    }
    if (ctx.live()) timer = window.setTimeout(() => void refresh(), POLL_MS);
  };
  void refresh();
  ctx.onLeave(() => window.clearTimeout(timer));
}
