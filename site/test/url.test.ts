import { describe, expect, it } from "vitest";
import { loginPath, matchRoute, safeRedirect, terminalPath, workspacePath } from "../src/router";
import { freshSearch, isUuid, newUuid, ptyUrl, terminalParams } from "../src/terminal/url";

const ID = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b";
const fixed = () => "11111111-2222-4333-8444-555555555555";

describe("terminal page URL", () => {
  it("keeps a valid reconnect id and changes nothing", () => {
    const p = terminalParams(`?reconnect=${ID}`, fixed);
    expect(p.reconnect).toBe(ID);
    expect(p.replaceSearch).toBeNull();
    expect(p.command).toBeNull();
  });

  it("generates an id when there is none and puts it in the URL", () => {
    const p = terminalParams("", fixed);
    expect(p.reconnect).toBe(fixed());
    expect(p.replaceSearch).toBe(`?reconnect=${fixed()}`);
    // What a reload then reads is the same id.
    expect(terminalParams(p.replaceSearch!, () => "other").reconnect).toBe(fixed());
  });

  it("replaces a malformed id and keeps the command", () => {
    const p = terminalParams("?reconnect=not-a-uuid&command=htop", fixed);
    expect(p.reconnect).toBe(fixed());
    expect(p.command).toBe("htop");
    const q = new URLSearchParams(p.replaceSearch!);
    expect(q.get("reconnect")).toBe(fixed());
    expect(q.get("command")).toBe("htop");
  });

  it("normalises an upper-case id to lower case", () => {
    const p = terminalParams(`?reconnect=${ID.toUpperCase()}`, fixed);
    expect(p.reconnect).toBe(ID);
    expect(p.replaceSearch).toBe(`?reconnect=${ID}`);
  });

  it("treats an empty command as none", () => {
    expect(terminalParams(`?reconnect=${ID}&command=`, fixed).command).toBeNull();
  });

  it("starts a fresh session with a new id and the same command", () => {
    const q = new URLSearchParams(freshSearch(`?reconnect=${ID}&command=vim%20x`, fixed));
    expect(q.get("reconnect")).toBe(fixed());
    expect(q.get("command")).toBe("vim x");
  });

  it("builds the PTY WebSocket URL on the page's origin", () => {
    const u = new URL(ptyUrl({ protocol: "http:", host: "127.0.0.1:3000" }, "agent-1", { reconnect: ID, cols: 120, rows: 40, command: null }));
    expect(u.protocol).toBe("ws:");
    expect(u.host).toBe("127.0.0.1:3000");
    expect(u.pathname).toBe("/api/v2/workspaceagents/agent-1/pty");
    expect(Object.fromEntries(u.searchParams)).toEqual({ reconnect: ID, width: "120", height: "40" });
    const s = new URL(ptyUrl({ protocol: "https:", host: "t.example.com" }, "a", { reconnect: ID, cols: 80, rows: 24, command: "echo a&b=c" }));
    expect(s.protocol).toBe("wss:");
    expect(s.searchParams.get("command")).toBe("echo a&b=c");
  });

  it("makes v4 UUIDs without crypto.randomUUID", () => {
    const zeros = newUuid((b) => b.fill(0));
    expect(zeros).toBe("00000000-0000-4000-8000-000000000000");
    const ones = newUuid((b) => b.fill(0xff));
    expect(ones).toBe("ffffffff-ffff-4fff-bfff-ffffffffffff");
    const real = newUuid();
    expect(isUuid(real)).toBe(true);
    expect(real).not.toBe(newUuid());
  });
});

describe("routes", () => {
  it("matches every page", () => {
    expect(matchRoute("/")).toEqual({ page: "workspaces" });
    expect(matchRoute("/login")).toEqual({ page: "login" });
    expect(matchRoute("/setup/")).toEqual({ page: "setup" });
    expect(matchRoute("/health")).toEqual({ page: "health" });
    expect(matchRoute("/@alice/dev")).toEqual({ page: "workspace", owner: "alice", workspace: "dev" });
    expect(matchRoute("/@alice/dev/terminal")).toEqual({ page: "terminal", owner: "alice", workspace: "dev" });
  });

  it("does not match what is not a page", () => {
    for (const p of ["/alice/dev", "/@/dev", "/@alice", "/@alice/dev/other", "/@alice/dev/terminal/x", "/nope", "/@a/%E0%A4%A"]) {
      expect(matchRoute(p).page).toBe("notfound");
    }
  });

  it("round-trips names through paths", () => {
    expect(matchRoute(workspacePath("al ice", "dev"))).toEqual({ page: "workspace", owner: "al ice", workspace: "dev" });
    expect(terminalPath("alice", "dev")).toBe("/@alice/dev/terminal");
  });

  it("redirects only within the site", () => {
    expect(safeRedirect("/@alice/dev/terminal?reconnect=x")).toBe("/@alice/dev/terminal?reconnect=x");
    for (const bad of [null, "", "https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)", "/login", "/setup"]) {
      expect(safeRedirect(bad)).toBe("/");
    }
    expect(loginPath("/health")).toBe("/login?redirect=%2Fhealth");
    expect(loginPath("/")).toBe("/login");
  });
});
