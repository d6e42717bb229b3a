// How the pages write times, paths and relays.

import type { Relay, ServerPath, Workspace } from "./api";

/** "just now", "5s ago", "3m ago", "2h ago", "4d ago", or "never". */
export function ago(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return "never";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "unknown";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 2) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** Last seen: "now" for a connected agent. */
export function lastSeen(ws: Workspace, now: number = Date.now()): string {
  return ws.status === "connected" ? "now" : ago(ws.last_seen_at, now);
}

/** A relay's name, or "-". */
export function relayName(r: Relay | null | undefined): string {
  if (!r) return "-";
  return r.region_name || r.region_code || `region ${r.region_id}`;
}

/** A latency in milliseconds: "12 ms", "0.4 ms". */
export function latency(ms: number | null | undefined): string | null {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return null;
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** The server's path to an agent in a few words: "p2p, 3.1 ms" or "DERP (tether), 20 ms". */
export function pathSummary(p: ServerPath | null | undefined): string | null {
  if (!p) return null;
  const kind = p.kind === "direct" ? "p2p" : p.derp_region ? `DERP (${p.derp_region})` : "DERP";
  const l = latency(p.latency_ms);
  return l ? `${kind}, ${l}` : kind;
}
