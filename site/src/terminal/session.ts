// The terminal's connection: one PTY WebSocket at a time, reattached with the same
// reconnect id after a drop, with backoff. Sockets and timers are injected, so the
// policy is tested without a browser.

import { Backoff } from "./backoff";
import { inputFrames, resizeFrame } from "./frames";

/** What the page shows about the connection. */
export type PtyStatus =
  | { state: "connecting"; retry: number }
  | { state: "connected" }
  | {
      state: "waiting";
      retry: number;
      maxRetries: number;
      delayMs: number;
      reason: string;
      /** The dropped socket had opened (a lost connection, not a refused one). */
      lost: boolean;
    }
  | { state: "exited" }
  | { state: "failed"; reason: string };

/** The part of `WebSocket` used here. */
export interface SocketLike {
  binaryType: BinaryType;
  readonly readyState: number;
  onopen: ((ev: Event) => void) | null;
  onmessage: ((ev: MessageEvent) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
  onerror: ((ev: Event) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** Timer functions (the page passes the window's). */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** What a [`ReconnectingPty`] needs. */
export interface PtyOptions {
  /** The WebSocket URL for the terminal's current size. */
  url: (cols: number, rows: number) => string;
  /** The terminal's current size. */
  size: () => { cols: number; rows: number };
  /** Opens a socket. */
  connect: (url: string) => SocketLike;
  /** PTY output. */
  onOutput: (bytes: Uint8Array) => void;
  /** Connection state changes. */
  onStatus: (status: PtyStatus) => void;
  /** A socket opened; `reattach` is true for every one after the first. */
  onOpen?: (reattach: boolean) => void;
  timers?: Timers;
  backoff?: Backoff;
}

const OPEN = 1;

/** Closes that are not worth retrying: the server refused what we sent. */
const PERMANENT = new Set([1003, 1007, 1008, 1009, 1010]);

/** A sentence for a close without a reason. */
export function describeClose(code: number): string {
  switch (code) {
    case 1001:
      return "the server went away";
    case 1006:
      return "the connection was lost or refused";
    case 1011:
      return "the server hit an error";
    case 1012:
      return "the server is restarting";
    default:
      return `the connection closed (code ${code})`;
  }
}

/** The policy for one close: exited, failed for good, or retry. */
export function closeVerdict(code: number): "exited" | "permanent" | "retry" {
  if (code === 1000) return "exited";
  if (PERMANENT.has(code)) return "permanent";
  return "retry";
}

/** One terminal session's connection, reconnecting with the same id. */
export class ReconnectingPty {
  private socket: SocketLike | null = null;
  private timer: unknown = null;
  private opens = 0;
  private receivedSinceOpen = false;
  private socketOpened = false;
  private disposed = false;
  private readonly timers: Timers;
  private readonly backoff: Backoff;
  private status: PtyStatus = { state: "connecting", retry: 0 };

  constructor(private readonly opts: PtyOptions) {
    this.timers = opts.timers ?? {
      setTimeout: (fn, ms) => window.setTimeout(fn, ms),
      clearTimeout: (h) => window.clearTimeout(h as number),
    };
    this.backoff = opts.backoff ?? new Backoff();
  }

  /** The current state. */
  get current(): PtyStatus {
    return this.status;
  }

  /** Opens the first connection. */
  start(): void {
    this.open();
  }

  /** Sends input; false when not connected (the input is dropped, not queued). */
  sendInput(data: string): boolean {
    const s = this.socket;
    if (!s || s.readyState !== OPEN) return false;
    for (const frame of inputFrames(data)) s.send(frame);
    return true;
  }

  /** Tells the server the terminal's new size (when connected and both are non-zero). */
  resize(cols: number, rows: number): void {
    const frame = resizeFrame(rows, cols);
    if (frame && this.socket?.readyState === OPEN) this.socket.send(frame);
  }

  /** Reconnects at once with a fresh set of tries (a button, or the network came back). */
  reconnectNow(): void {
    if (this.disposed || this.status.state === "connected" || this.status.state === "connecting") return;
    this.backoff.reset();
    this.open();
  }

  /** Closes for good. */
  dispose(): void {
    this.disposed = true;
    this.clearTimer();
    this.detach()?.close(1000, "page closed");
  }

  private setStatus(s: PtyStatus): void {
    this.status = s;
    this.opts.onStatus(s);
  }

  private clearTimer(): void {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  private detach(): SocketLike | null {
    const s = this.socket;
    if (s) {
      s.onopen = s.onmessage = s.onclose = s.onerror = null;
    }
    this.socket = null;
    return s;
  }

  private open(): void {
    this.clearTimer();
    this.detach()?.close();
    const { cols, rows } = this.opts.size();
    this.setStatus({ state: "connecting", retry: this.backoff.attempt });
    let socket: SocketLike;
    try {
      socket = this.opts.connect(this.opts.url(cols, rows));
    } catch (e) {
      this.setStatus({ state: "failed", reason: e instanceof Error ? e.message : String(e) });
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.receivedSinceOpen = false;
    this.socketOpened = false;
    socket.onopen = () => {
      this.socketOpened = true;
      this.opens += 1;
      this.opts.onOpen?.(this.opens > 1);
      const size = this.opts.size();
      this.resize(size.cols, size.rows);
      this.setStatus({ state: "connected" });
    };
    socket.onmessage = (ev) => {
      // Only a socket that delivered output proves the session works; one that the
      // server accepts and closes at once must keep backing off.
      if (!this.receivedSinceOpen) {
        this.receivedSinceOpen = true;
        this.backoff.reset();
      }
      // binaryType is "arraybuffer", so binary frames arrive as ArrayBuffers.
      const data = ev.data as ArrayBuffer | string;
      this.opts.onOutput(typeof data === "string" ? new TextEncoder().encode(data) : new Uint8Array(data));
    };
    socket.onclose = (ev) => this.closed(ev.code, ev.reason);
  }

  private closed(code: number, reason: string): void {
    this.detach();
    if (this.disposed) return;
    const why = reason || describeClose(code);
    switch (closeVerdict(code)) {
      case "exited":
        this.setStatus({ state: "exited" });
        return;
      case "permanent":
        this.setStatus({ state: "failed", reason: why });
        return;
      case "retry": {
        const delay = this.backoff.next();
        if (delay === null) {
          this.setStatus({
            state: "failed",
            reason: `${why} (gave up after ${this.backoff.maxTries} tries)`,
          });
          return;
        }
        this.setStatus({
          state: "waiting",
          retry: this.backoff.attempt,
          maxRetries: this.backoff.maxTries,
          delayMs: delay,
          reason: why,
          lost: this.socketOpened,
        });
        this.timer = this.timers.setTimeout(() => {
          this.timer = null;
          this.open();
        }, delay);
      }
    }
  }
}
