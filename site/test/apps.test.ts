// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import type { App, Workspace } from "../src/api";
import { appsTable } from "../src/pages/workspace";

const WS: Workspace = {
  id: "w1",
  name: "dev",
  owner: "alice",
  agent_id: "a1",
  status: "connected",
  last_seen_at: null,
  relay: null,
  created_at: "2025-12-01T00:00:00Z",
};

function app(over: Partial<App>): App {
  return {
    id: "x",
    slug: "code",
    display_name: "Code",
    url: "http://127.0.0.1:8080",
    subdomain: false,
    share: "owner",
    open_url: "http://tether.test/@alice/dev/apps/code/",
    created_at: "2025-12-01T00:00:00Z",
    ...over,
  };
}

describe("workspace apps", () => {
  it("lists each app, linking those that open here", () => {
    const table = appsTable(WS, [
      app({}),
      app({ slug: "jup", display_name: "Jupyter", url: "http://127.0.0.1:8888", subdomain: true, share: "public", open_url: null }),
    ]);
    const rows = [...table.querySelectorAll("tbody tr")].map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent));
    expect(rows).toEqual([
      ["Code", "http://127.0.0.1:8080", "path", "only you"],
      ["Jupyter", "http://127.0.0.1:8888", "subdomain", "anyone"],
    ]);
    const link = table.querySelector<HTMLAnchorElement>('tr[data-app="code"] a')!;
    expect(link.getAttribute("href")).toBe("http://tether.test/@alice/dev/apps/code/");
    expect(link.getAttribute("rel")).toBe("noopener");
    expect(table.querySelector('tr[data-app="jup"] a')).toBeNull();
    expect(table.querySelector('tr[data-app="jup"] span')!.getAttribute("title")).toContain("subdomain apps");
  });

  it("says how to add one when there are none", () => {
    const p = appsTable(WS, []);
    expect(p.textContent).toContain("tether apps add dev SLUG --url http://127.0.0.1:PORT");
  });
});
