// Page routes (see notes/browser-contract.md): pure matching, plus history navigation.

/** A page and its parameters. */
export type Route =
  | { page: "workspaces" }
  | { page: "login" }
  | { page: "setup" }
  | { page: "health" }
  | { page: "workspace"; owner: string; workspace: string }
  | { page: "terminal"; owner: string; workspace: string }
  | { page: "notfound"; path: string };

function decode(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

/** The route of a path (no query string). */
export function matchRoute(path: string): Route {
  const trimmed = path.length > 1 ? path.replace(/\/+$/, "") : path;
  switch (trimmed) {
    case "/":
      return { page: "workspaces" };
    case "/login":
      return { page: "login" };
    case "/setup":
      return { page: "setup" };
    case "/health":
      return { page: "health" };
  }
  const segments = trimmed.split("/").slice(1).map(decode);
  const [first, second, third] = segments;
  if (first && first.startsWith("@") && first.length > 1 && second) {
    const owner = first.slice(1);
    if (segments.length === 2) return { page: "workspace", owner, workspace: second };
    if (segments.length === 3 && third === "terminal") return { page: "terminal", owner, workspace: second };
  }
  return { page: "notfound", path };
}

/** The path of a workspace's page. */
export function workspacePath(owner: string, workspace: string): string {
  return `/@${encodeURIComponent(owner)}/${encodeURIComponent(workspace)}`;
}

/** The path of a workspace's terminal page. */
export function terminalPath(owner: string, workspace: string): string {
  return `${workspacePath(owner, workspace)}/terminal`;
}

/**
 * Where to go after logging in: `target` if it is a path on this site, else "/". A
 * `//host` or `/\host` target would leave the site (an open redirect), so it is refused.
 */
export function safeRedirect(target: string | null): string {
  if (!target || !target.startsWith("/") || target.startsWith("//") || target.startsWith("/\\")) return "/";
  if (target.startsWith("/login") || target.startsWith("/setup")) return "/";
  return target;
}

/** The login page's path, remembering where the user wanted to go. */
export function loginPath(from: string): string {
  const target = safeRedirect(from);
  return target === "/" ? "/login" : `/login?redirect=${encodeURIComponent(target)}`;
}

type Listener = () => void;
let listener: Listener = () => {};

/** Sets what runs when the location changes. */
export function onNavigate(l: Listener): void {
  listener = l;
  window.addEventListener("popstate", () => listener());
  // Same-origin links navigate in the page, unless the user asked for a new tab.
  document.addEventListener("click", (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = (e.target as Element | null)?.closest?.("a");
    if (!a || a.target || a.hasAttribute("download")) return;
    const href = a.getAttribute("href");
    if (!href || !href.startsWith("/") || href.startsWith("//")) return;
    e.preventDefault();
    navigate(href);
  });
}

/** Goes to `path` in the page. */
export function navigate(path: string, opts: { replace?: boolean } = {}): void {
  if (opts.replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  listener();
}
