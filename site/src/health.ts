// Rendering of the health report: every key whose value has a `severity` is a section,
// so sections the server adds later show up without page changes.

import type { HealthReport, HealthSection, Severity } from "./api";
import { h } from "./dom";
import { ago } from "./format";

const SEVERITIES: readonly Severity[] = ["ok", "warning", "error"];

const WORDS: Record<string, string> = {
  access_url: "Access URL",
  derp: "DERP",
  stun: "STUN",
  websocket: "WebSocket",
  server_tailnet: "Server tailnet",
  id: "ID",
  url: "URL",
  ms: "ms",
  ip: "IP",
  ipv4: "IPv4",
  ipv6: "IPv6",
};

/** "server_tailnet" → "Server tailnet"; "latency_ms" → "Latency ms". */
export function label(key: string): string {
  const known = WORDS[key];
  if (known) return known;
  const words = key.split("_").map((w) => WORDS[w] ?? w);
  const text = words.join(" ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function isSeverity(v: unknown): v is Severity {
  return typeof v === "string" && (SEVERITIES as readonly string[]).includes(v);
}

/** The sections of a report, in the server's order. */
export function sections(report: HealthReport): [string, HealthSection][] {
  const out: [string, HealthSection][] = [];
  for (const [key, value] of Object.entries(report)) {
    if (key === "severity" || value === null || typeof value !== "object" || Array.isArray(value)) continue;
    const v = value as Record<string, unknown>;
    if (!isSeverity(v["severity"])) continue;
    out.push([
      key,
      {
        severity: v["severity"],
        code: typeof v["code"] === "string" ? v["code"] : null,
        message: typeof v["message"] === "string" ? v["message"] : "",
        details: v["details"],
      },
    ]);
  }
  return out;
}

/** A severity badge. */
export function severityBadge(s: Severity): HTMLElement {
  return h("span", { class: `badge badge-${s === "ok" ? "ok" : s}` }, s);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Any JSON value as DOM: objects as definition lists, lists of objects as tables. */
export function renderValue(v: unknown, depth = 0): Node {
  if (v === null || v === undefined) return document.createTextNode("-");
  if (typeof v === "number") return document.createTextNode(Number.isInteger(v) ? String(v) : v.toFixed(2));
  if (typeof v !== "object") return document.createTextNode(String(v));
  if (depth > 4) return h("code", {}, JSON.stringify(v));
  if (Array.isArray(v)) {
    if (v.length === 0) return document.createTextNode("none");
    if (v.every(isPlainObject)) {
      const keys = [...new Set(v.flatMap((row) => Object.keys(row)))];
      return h(
        "table",
        { class: "table table-compact" },
        h("thead", {}, h("tr", {}, keys.map((k) => h("th", {}, label(k))))),
        h(
          "tbody",
          {},
          v.map((row) => h("tr", {}, keys.map((k) => h("td", {}, renderValue(row[k], depth + 1))))),
        ),
      );
    }
    return document.createTextNode(v.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(", "));
  }
  const entries = Object.entries(v);
  if (entries.length === 0) return document.createTextNode("-");
  return h("dl", { class: "facts" }, entries.flatMap(([k, x]) => [h("dt", {}, label(k)), h("dd", {}, renderValue(x, depth + 1))]));
}

/** The whole report. */
export function renderHealth(report: HealthReport, now: number = Date.now()): HTMLElement {
  const all = sections(report);
  const failing = all.filter(([, s]) => s.severity !== "ok");
  const overall = isSeverity(report.severity) ? report.severity : "error";
  return h(
    "div",
    { class: "health" },
    h(
      "div",
      { class: `health-summary severity-${overall}` },
      severityBadge(overall),
      h("strong", {}, report.healthy ? " Healthy" : " Unhealthy"),
      h("span", { class: "muted" }, ` · checked ${ago(report.time, now)}`),
      failing.length > 0
        ? h("p", {}, "Needs attention: ", failing.map(([k, s], i) => [i > 0 ? ", " : "", h("a", { href: `#health-${k}` }, label(k)), ` (${s.severity})`]).flat())
        : h("p", {}, "Every check passed."),
    ),
    all.map(([key, s]) =>
      h(
        "section",
        { class: `panel health-section severity-${s.severity}`, id: `health-${key}`, "data-section": key },
        h("h2", {}, label(key), " ", severityBadge(s.severity), s.code ? h("code", { class: "health-code" }, s.code) : null),
        h("p", {}, s.message),
        s.details !== undefined && !(isPlainObject(s.details) && Object.keys(s.details).length === 0)
          ? h("details", { open: s.severity !== "ok" }, h("summary", {}, "Details"), renderValue(s.details))
          : null,
      ),
    ),
  );
}
