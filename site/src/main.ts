// The app shell: finds out who is logged in, routes, and mounts one page at a time.

import "./style.css";
import type { Deployment, User } from "./api";
import { ApiError, api } from "./api";
import { h, notice, replace } from "./dom";
import type { PageContext } from "./page";
import { errorText } from "./page";
import { health } from "./pages/health";
import { login, setup } from "./pages/login";
import { workspace } from "./pages/workspace";
import { workspaces } from "./pages/workspaces";
import { loginPath, matchRoute, navigate, onNavigate } from "./router";

const root = document.getElementById("app") ?? document.body;

/** Who is logged in: undefined until asked, null when nobody. */
let me: User | null | undefined;
let deployment: Deployment | null = null;
/** Bumped on every navigation, so a page left while loading stops itself. */
let generation = 0;
let leaving: (() => void)[] = [];

async function whoAmI(): Promise<User | null> {
  if (me !== undefined) return me;
  try {
    me = await api.me();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) throw e;
    me = null;
  }
  return me;
}

async function render(): Promise<void> {
  for (const fn of leaving.splice(0)) fn();
  const mine = ++generation;
  const route = matchRoute(location.pathname);
  const ctx: PageContext = {
    user: null,
    deployment,
    onLeave: (fn) => leaving.push(fn),
    title: (text) => (document.title = `${text} · tether`),
    loggedOut: () => {
      me = null;
      navigate(loginPath(location.pathname + location.search), { replace: true });
    },
    logout: async () => {
      try {
        await api.logout();
      } catch {
        // The cookie is cleared either way once the server answers; go on regardless.
      }
      me = null;
      navigate("/login");
    },
    live: () => generation === mine,
  };

  let user: User | null;
  try {
    user = await whoAmI();
  } catch (e) {
    if (generation !== mine) return;
    const retry = h("button", { type: "button", class: "button" }, "Try again");
    retry.addEventListener("click", () => void render());
    replace(root, h("main", { class: "auth" }, h("div", { class: "auth-card" }, h("div", { class: "brand brand-large" }, "tether"), notice("error", errorText(e)), retry)));
    return;
  }
  if (generation !== mine) return;

  if (route.page === "login" || route.page === "setup") {
    if (user) return navigate("/", { replace: true });
    return route.page === "login" ? login(root, ctx) : setup(root, ctx);
  }
  if (!user) {
    const exists = await api.firstUserExists().catch(() => true);
    if (generation !== mine) return;
    return navigate(exists ? loginPath(location.pathname + location.search) : "/setup", { replace: true });
  }
  ctx.user = user;
  switch (route.page) {
    case "workspaces":
      return workspaces(root, ctx);
    case "health":
      return health(root, ctx);
    case "workspace":
      return workspace(root, ctx, route.owner, route.workspace);
    case "terminal": {
      // xterm.js is most of the bundle's weight: only the terminal page loads it.
      const { terminal } = await import("./pages/terminal");
      if (generation !== mine) return;
      return terminal(root, ctx, route.owner, route.workspace);
    }
    case "notfound":
      ctx.title("Not found");
      replace(root, h("main", { class: "auth" }, h("div", { class: "auth-card" }, h("div", { class: "brand brand-large" }, "tether"), h("h1", {}, "Page not found"), h("p", { class: "muted" }, `Nothing lives at ${route.path}.`), h("a", { href: "/", class: "button" }, "Your workspaces"))));
  }
}

onNavigate(() => void render());
// Both at once; a failure of either shows up (or does not matter) in the first render.
void Promise.allSettled([api.deployment().then((d) => (deployment = d)), whoAmI()]).then(() => render());
