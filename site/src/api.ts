// The HTTP API the dashboard uses (see notes/browser-contract.md). The session is an
// HttpOnly cookie the server sets; the page never sees the token.

/** A user. */
export interface User {
  id: string;
  username: string;
  email: string;
  is_admin: boolean;
  created_at: string;
}

/** A DERP region reference. */
export interface Relay {
  region_id: number;
  region_code: string;
  region_name: string;
}

/** How the server's own tailnet node reaches an agent right now. */
export interface ServerPath {
  kind: "direct" | "derp";
  latency_ms: number | null;
  derp_region: string | null;
  endpoint: string | null;
  reason: string | null;
}

/** A workspace. `agent_version` and `server_path` come with the server's tailnet node. */
export interface Workspace {
  id: string;
  name: string;
  owner: string;
  agent_id: string;
  status: "connected" | "disconnected";
  last_seen_at: string | null;
  relay: Relay | null;
  created_at: string;
  agent_version?: string | null;
  server_path?: ServerPath | null;
}

/** Public facts about the deployment. */
export interface Deployment {
  access_url: string;
  browser_only: boolean;
  wildcard_access_url: string | null;
  disable_path_apps: boolean;
  version: string;
}

/** One listening port of an agent. */
export interface ListeningPort {
  process_name: string;
  network: string;
  port: number;
}

/** A web app declared on a workspace (`tether apps add`). */
export interface App {
  id: string;
  slug: string;
  display_name: string;
  url: string;
  subdomain: boolean;
  share: "owner" | "authenticated" | "public";
  /** Where a browser opens it here; null when it cannot be opened on this server. */
  open_url: string | null;
  created_at: string;
}

/** A health section: every key of the report whose value has a `severity`. */
export interface HealthSection {
  severity: Severity;
  code: string | null;
  message: string;
  details?: unknown;
}

/** Health severities, worst last. */
export type Severity = "ok" | "warning" | "error";

/** The health report: fixed fields plus any number of sections. */
export interface HealthReport {
  healthy: boolean;
  severity: Severity;
  time: string;
  [section: string]: unknown;
}

/** An API failure with the server's one-sentence message. Status 0: never reached it. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly detail: string = "",
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** Calls the API: JSON in, JSON out, errors as [`ApiError`] with the server's message. */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers = { ...init.headers, "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  let resp: Response;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `Could not reach the tether server: ${e instanceof Error ? e.message : String(e)}`);
  }
  const text = await resp.text();
  if (!resp.ok) {
    let message = `${method} ${path} failed: HTTP ${resp.status}`;
    let detail = "";
    try {
      const err = JSON.parse(text) as { message?: unknown; detail?: unknown };
      if (typeof err.message === "string" && err.message) message = err.message;
      if (typeof err.detail === "string") detail = err.detail;
    } catch {
      // Not our JSON (a proxy's error page): keep the status line.
    }
    throw new ApiError(resp.status, message, detail);
  }
  return (text ? JSON.parse(text) : undefined) as T;
}

/** The API calls the pages make. */
export const api = {
  me: () => call<User>("GET", "/api/v2/users/me"),
  /** Whether the first user exists (404 on a new server). */
  firstUserExists: async (): Promise<boolean> => {
    try {
      await call<void>("GET", "/api/v2/users/first");
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return false;
      throw e;
    }
  },
  login: (username: string, password: string) =>
    call<{ user: User; expires_at: string }>("POST", "/api/v2/users/login", { username, password, set_cookie: true }),
  createFirstUser: (username: string, email: string, password: string) =>
    call<{ user: User; expires_at: string }>("POST", "/api/v2/users/first", {
      username,
      email,
      password,
      set_cookie: true,
    }),
  logout: () => call<void>("POST", "/api/v2/users/logout"),
  deployment: () => call<Deployment>("GET", "/api/v2/deployment"),
  workspaces: () => call<Workspace[]>("GET", "/api/v2/workspaces"),
  workspace: (name: string) => call<Workspace>("GET", `/api/v2/workspaces/${encodeURIComponent(name)}`),
  listeningPorts: (agentId: string) =>
    call<{ ports: ListeningPort[] }>("GET", `/api/v2/workspaceagents/${encodeURIComponent(agentId)}/listening-ports`),
  apps: (workspace: string) => call<App[]>("GET", `/api/v2/workspaces/${encodeURIComponent(workspace)}/apps`),
  health: (force: boolean) => call<HealthReport>("GET", `/api/v2/debug/health${force ? "?force=true" : ""}`),
};
