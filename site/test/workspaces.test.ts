// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import type { Workspace } from "../src/api";
import { ago, pathSummary } from "../src/format";
import { portsTable, serverPathFacts } from "../src/pages/workspace";
import { workspaceTable } from "../src/pages/workspaces";

const NOW = Date.parse("2026-01-01T12:00:00Z");

function ws(over: Partial<Workspace> = {}): Workspace {
  return {
    id: "w1",
    name: "dev",
    owner: "alice",
    agent_id: "a1",
    status: "connected",
    last_seen_at: "2026-01-01T12:00:00Z",
    relay: { region_id: 999, region_code: "tether", region_name: "tether embedded relay" },
    created_at: "2025-12-01T00:00:00Z",
    ...over,
  };
}

describe("workspace list", () => {
  it("shows name, status, last seen, relay and the server path when present", () => {
    const table = workspaceTable(
      [
        ws({ server_path: { kind: "direct", latency_ms: 3.2, derp_region: null, endpoint: "198.18.0.2:41641", reason: null } }),
        ws({ name: "ci", status: "disconnected", last_seen_at: "2026-01-01T11:57:00Z", relay: null }),
      ],
      NOW,
    );
    const rows = [...table.querySelectorAll("tbody tr")].map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent));
    expect(rows).toEqual([
      ["dev", "connected", "now", "tether embedded relay", "p2p, 3.2 ms", "Terminal"],
      ["ci", "disconnected", "3m ago", "-", "-", ""],
    ]);
    expect(table.querySelector<HTMLAnchorElement>('tr[data-workspace="dev"] a')!.getAttribute("href")).toBe("/@alice/dev");
  });

  it("has an empty state that says how to create a workspace", () => {
    expect(workspaceTable([]).textContent).toContain("tether create dev");
  });

  it("summarises paths", () => {
    expect(pathSummary({ kind: "derp", latency_ms: 21.6, derp_region: "tether", endpoint: null, reason: "UDP blocked" })).toBe("DERP (tether), 22 ms");
    expect(pathSummary({ kind: "direct", latency_ms: null, derp_region: null, endpoint: null, reason: null })).toBe("p2p");
    expect(pathSummary(null)).toBeNull();
    expect(ago(null)).toBe("never");
    expect(ago("2026-01-01T09:00:00Z", NOW)).toBe("3h ago");
  });
});

describe("workspace page pieces", () => {
  it("says when the server reports no path, and why a path is relayed", () => {
    expect(serverPathFacts(ws()).textContent).toContain("does not report");
    const facts = serverPathFacts(ws({ server_path: { kind: "derp", latency_ms: 20, derp_region: "tether", endpoint: null, reason: "UDP is blocked" } }));
    expect(facts.textContent).toContain("relayed (DERP)");
    expect(facts.textContent).toContain("UDP is blocked");
    expect(facts.textContent).not.toContain("Endpoint");
  });

  it("lists ports in order with how to forward each", () => {
    const t = portsTable(ws(), [
      { process_name: "python3", network: "tcp", port: 8000 },
      { process_name: "", network: "tcp", port: 5432 },
    ]);
    const rows = [...t.querySelectorAll("tbody tr")].map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent));
    expect(rows).toEqual([
      ["5432/tcp", "-", "tether port-forward dev --tcp 5432"],
      ["8000/tcp", "python3", "tether port-forward dev --tcp 8000"],
    ]);
  });
});
