// The frame around the logged-in pages: a header with navigation and the user.

import { h } from "./dom";
import type { PageContext } from "./page";

/** Builds the frame into `root` and returns the element the page fills. */
export function frame(root: HTMLElement, ctx: PageContext, current: "workspaces" | "health" | null): HTMLElement {
  const main = h("main", { class: "content" });
  const link = (href: string, label: string, key: typeof current) =>
    h("a", { href, class: key === current ? "nav-link active" : "nav-link", "aria-current": key === current ? "page" : null }, label);
  const logout = h("button", { type: "button", class: "link-button" }, "Log out");
  logout.addEventListener("click", () => {
    logout.disabled = true;
    void ctx.logout();
  });
  const d = ctx.deployment;
  root.replaceChildren(
    h(
      "header",
      { class: "topbar" },
      h("a", { href: "/", class: "brand" }, "tether"),
      h("nav", {}, link("/", "Workspaces", "workspaces"), link("/health", "Health", "health")),
      h("div", { class: "spacer" }),
      d?.browser_only ? h("span", { class: "badge badge-warning", title: "Only browser connections are allowed on this deployment." }, "browser-only") : null,
      ctx.user ? h("span", { class: "user" }, ctx.user.username) : null,
      logout,
    ),
    main,
    h("footer", { class: "footer muted" }, d ? `tether ${d.version} · ${d.access_url}` : "tether"),
  );
  return main;
}
