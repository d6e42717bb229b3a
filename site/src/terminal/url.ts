// The terminal page's URL (`?reconnect=<uuid>[&command=…]`) and the PTY WebSocket URL.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `s` is a UUID in its usual text form. */
export function isUuid(s: string): boolean {
  return UUID.test(s);
}

/** What the terminal page reads from its query string. */
export interface TerminalParams {
  /** The reconnecting PTY session's id. */
  reconnect: string;
  /** A command to run instead of the login shell, from a link (needs confirmation). */
  command: string | null;
  /** The query string to put in the page's URL, when it had no valid id yet. */
  replaceSearch: string | null;
}

/**
 * Reads `search`. A missing or malformed `reconnect` gets a fresh id from `newId`, and
 * `replaceSearch` is the query string carrying it, so that a reload reattaches.
 */
export function terminalParams(search: string, newId: () => string): TerminalParams {
  const q = new URLSearchParams(search);
  const given = q.get("reconnect");
  const command = q.get("command");
  const valid = given !== null && isUuid(given);
  const reconnect = valid ? given.toLowerCase() : newId();
  let replaceSearch: string | null = null;
  if (!valid || given !== reconnect) {
    q.set("reconnect", reconnect);
    replaceSearch = `?${q.toString()}`;
  }
  return { reconnect, command: command === "" ? null : command, replaceSearch };
}

/** The query string of a fresh session (after the last one exited), keeping `command`. */
export function freshSearch(search: string, newId: () => string): string {
  const q = new URLSearchParams(search);
  q.set("reconnect", newId());
  return `?${q.toString()}`;
}

/** The PTY WebSocket URL on the page's own origin. */
export function ptyUrl(
  page: { protocol: string; host: string },
  agentId: string,
  opts: { reconnect: string; cols: number; rows: number; command: string | null },
): string {
  const scheme = page.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams({
    reconnect: opts.reconnect,
    width: String(opts.cols),
    height: String(opts.rows),
  });
  if (opts.command) q.set("command", opts.command);
  return `${scheme}//${page.host}/api/v2/workspaceagents/${encodeURIComponent(agentId)}/pty?${q.toString()}`;
}

/** A random (v4) UUID; also in an insecure context, where `crypto.randomUUID` is missing. */
export function newUuid(rng: (bytes: Uint8Array) => void = (b) => crypto.getRandomValues(b)): string {
  const b = new Uint8Array(16);
  rng(b);
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
