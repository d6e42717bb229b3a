// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import type { HealthReport } from "../src/api";
import { label, renderHealth, sections } from "../src/health";

const NOW = Date.parse("2026-01-01T12:00:00Z");

function report(extra: Record<string, unknown> = {}): HealthReport {
  return {
    healthy: true,
    severity: "warning",
    time: "2026-01-01T11:59:50Z",
    database: { severity: "ok", code: null, message: "The database answers.", details: { latency_ms: 0.42 } },
    derp: { severity: "ok", code: null, message: "The built-in DERP relay is serving.", details: { regions: [{ id: 999, code: "tether", name: "tether embedded relay" }], clients: 2 } },
    stun: { severity: "warning", code: "ESTUN01", message: "No STUN server is configured.", details: {} },
    ...extra,
  };
}

describe("health rendering", () => {
  it("finds every section with a severity, in order, and nothing else", () => {
    const r = report({ notes: "not a section", weird: { severity: "purple" }, list: [{ severity: "ok" }] });
    expect(sections(r).map(([k]) => k)).toEqual(["database", "derp", "stun"]);
  });

  it("renders each section with its severity, code and message", () => {
    const el = renderHealth(report(), NOW);
    const secs = [...el.querySelectorAll<HTMLElement>("section[data-section]")];
    expect(secs.map((s) => s.dataset["section"])).toEqual(["database", "derp", "stun"]);
    const stun = el.querySelector('[data-section="stun"]')!;
    expect(stun.classList.contains("severity-warning")).toBe(true);
    expect(stun.querySelector("h2")!.textContent).toContain("STUN");
    expect(stun.querySelector(".badge")!.textContent).toBe("warning");
    expect(stun.querySelector(".health-code")!.textContent).toBe("ESTUN01");
    expect(stun.textContent).toContain("No STUN server is configured.");
    // Failing sections are named at the top, healthy ones are not.
    const summary = el.querySelector(".health-summary")!;
    expect(summary.textContent).toContain("Needs attention: STUN (warning)");
    expect(summary.textContent).not.toContain("DERP (");
    expect(summary.textContent).toContain("checked 10s ago");
  });

  it("renders a section it has never heard of, with nested details as tables", () => {
    const el = renderHealth(
      report({
        severity: "error",
        healthy: false,
        server_tailnet: {
          severity: "error",
          code: "ETAILNET02",
          message: "The server cannot reach 1 agent.",
          details: {
            agents: [
              { workspace: "dev", path: "direct", latency_ms: 3.14159 },
              { workspace: "ci", path: "derp", reason: "UDP is blocked" },
            ],
          },
        },
      }),
      NOW,
    );
    const sec = el.querySelector('[data-section="server_tailnet"]')!;
    expect(sec.querySelector("h2")!.textContent).toContain("Server tailnet");
    const table = sec.querySelector("table")!;
    expect([...table.querySelectorAll("th")].map((t) => t.textContent)).toEqual(["Workspace", "Path", "Latency ms", "Reason"]);
    const cells = [...table.querySelectorAll("tbody tr")].map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent));
    expect(cells).toEqual([
      ["dev", "direct", "3.14", "-"],
      ["ci", "derp", "-", "UDP is blocked"],
    ]);
    // Failing details are open, so the reason is visible at once.
    expect(sec.querySelector("details")!.hasAttribute("open")).toBe(true);
    expect(el.querySelector(".health-summary")!.textContent).toContain("Unhealthy");
  });

  it("escapes what the server says", () => {
    const el = renderHealth(report({ x: { severity: "error", code: "<b>", message: "<img src=x onerror=alert(1)>" } }), NOW);
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector('[data-section="x"]')!.textContent).toContain("<img src=x onerror=alert(1)>");
  });

  it("labels keys", () => {
    expect(label("access_url")).toBe("Access URL");
    expect(label("packets_dropped")).toBe("Packets dropped");
    expect(label("derp_region")).toBe("DERP region");
  });
});
