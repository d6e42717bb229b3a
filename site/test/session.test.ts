import { describe, expect, it } from "vitest";
import { Backoff } from "../src/terminal/backoff";
import type { PtyStatus, SocketLike, Timers } from "../src/terminal/session";
import { ReconnectingPty, closeVerdict } from "../src/terminal/session";

class FakeSocket implements SocketLike {
  binaryType: BinaryType = "blob";
  readyState = 0;
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  sent: string[] = [];
  closedWith: number | undefined | null = null;
  constructor(readonly url: string) {}
  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(new TextDecoder().decode(data));
  }
  close(code?: number): void {
    this.closedWith = code;
    this.readyState = 3;
  }
  // What the server does:
  open(): void {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
  }
  output(s: string): void {
    this.onmessage?.(new MessageEvent("message", { data: new TextEncoder().encode(s).buffer }));
  }
  drop(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason } as CloseEvent);
  }
}

/** Timers run by hand: `fire()` runs the next one and returns its delay. */
class FakeTimers implements Timers {
  pending: { fn: () => void; ms: number; id: number }[] = [];
  private next = 1;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.pending.push({ fn, ms, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.pending = this.pending.filter((t) => t.id !== handle);
  }
  fire(): number {
    const t = this.pending.shift();
    if (!t) throw new Error("no timer pending");
    t.fn();
    return t.ms;
  }
}

function setup(size = { cols: 80, rows: 24 }) {
  const sockets: FakeSocket[] = [];
  const statuses: PtyStatus[] = [];
  const output: string[] = [];
  const opens: boolean[] = [];
  const timers = new FakeTimers();
  const pty = new ReconnectingPty({
    url: (cols, rows) => `ws://h/pty?reconnect=ID&width=${cols}&height=${rows}`,
    size: () => size,
    connect: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    onOutput: (b) => output.push(new TextDecoder().decode(b)),
    onStatus: (s) => statuses.push(s),
    onOpen: (reattach) => opens.push(reattach),
    timers,
    backoff: new Backoff(),
  });
  const last = () => sockets[sockets.length - 1]!;
  return { pty, sockets, statuses, output, opens, timers, last, size };
}

describe("ReconnectingPty", () => {
  it("connects, sends its size on open, relays input and output", () => {
    const t = setup();
    t.pty.start();
    expect(t.last().url).toBe("ws://h/pty?reconnect=ID&width=80&height=24");
    expect(t.last().binaryType).toBe("arraybuffer");
    expect(t.pty.sendInput("x")).toBe(false);
    t.last().open();
    expect(t.last().sent).toEqual(['{"height":24,"width":80}']);
    expect(t.pty.current).toEqual({ state: "connected" });
    t.last().output("hello");
    expect(t.output).toEqual(["hello"]);
    expect(t.pty.sendInput("ls\r")).toBe(true);
    t.pty.resize(100, 30);
    t.pty.resize(0, 30);
    expect(t.last().sent.slice(1)).toEqual(['{"data":"ls\\r"}', '{"height":30,"width":100}']);
  });

  it("reconnects with backoff after a drop, with the same URL and a fresh size", () => {
    const t = setup();
    t.pty.start();
    t.last().open();
    t.last().output("$ ");
    t.last().drop(1006);
    expect(t.pty.current).toMatchObject({ state: "waiting", retry: 1, maxRetries: 6, delayMs: 1000, lost: true });
    expect(t.timers.pending).toHaveLength(1);
    t.size.cols = 132;
    expect(t.timers.fire()).toBe(1000);
    expect(t.sockets).toHaveLength(2);
    expect(t.last().url).toBe("ws://h/pty?reconnect=ID&width=132&height=24");
    // Refused again and again: the delays double.
    const delays: number[] = [];
    // Those sockets never open: refused, not lost.
    const lost: boolean[] = [];
    for (let i = 0; i < 5; i++) {
      t.last().drop(1006);
      const s = t.pty.current;
      lost.push(s.state === "waiting" && s.lost);
      delays.push(t.timers.fire());
    }
    expect(delays).toEqual([2000, 4000, 8000, 16000, 30000]);
    expect(lost).toEqual([false, false, false, false, false]);
    t.last().drop(1006, "dial workspace agent: timed out");
    expect(t.pty.current).toEqual({
      state: "failed",
      reason: "dial workspace agent: timed out (gave up after 6 tries)",
    });
    expect(t.timers.pending).toHaveLength(0);
  });

  it("resets the backoff once a reattached socket delivers output", () => {
    const t = setup();
    t.pty.start();
    t.last().open();
    t.last().output("a");
    t.last().drop(1006);
    t.timers.fire();
    t.last().drop(1006);
    expect(t.pty.current).toMatchObject({ state: "waiting", delayMs: 2000 });
    t.timers.fire();
    t.last().open();
    expect(t.opens).toEqual([false, true]);
    t.last().output("repaint");
    t.last().drop(1001);
    expect(t.pty.current).toMatchObject({ state: "waiting", delayMs: 1000, reason: "the server went away" });
  });

  it("keeps backing off when the server accepts and closes at once", () => {
    const t = setup();
    t.pty.start();
    t.last().open();
    t.last().drop(1011, "dial workspace agent: connection refused");
    expect(t.pty.current).toMatchObject({ delayMs: 1000, reason: "dial workspace agent: connection refused" });
    t.timers.fire();
    t.last().open();
    t.last().drop(1011, "dial workspace agent: connection refused");
    expect(t.pty.current).toMatchObject({ delayMs: 2000 });
  });

  it("shows Disconnected and stops when the shell exits (1000)", () => {
    const t = setup();
    t.pty.start();
    t.last().open();
    t.last().output("exit\r\n");
    t.last().drop(1000, "process exited");
    expect(t.pty.current).toEqual({ state: "exited" });
    expect(t.timers.pending).toHaveLength(0);
    expect(t.sockets).toHaveLength(1);
  });

  it("does not retry a close that says the request is wrong", () => {
    const t = setup();
    t.pty.start();
    t.last().open();
    t.last().drop(1008, "not your agent");
    expect(t.pty.current).toEqual({ state: "failed", reason: "not your agent" });
    expect(t.timers.pending).toHaveLength(0);
    // The user may still ask again.
    t.pty.reconnectNow();
    expect(t.sockets).toHaveLength(2);
  });

  it("reconnects at once when asked, with a fresh set of tries", () => {
    const t = setup();
    t.pty.start();
    for (let i = 0; i < 3; i++) {
      t.last().drop(1006);
      t.timers.fire();
    }
    t.last().drop(1006);
    expect(t.pty.current).toMatchObject({ delayMs: 8000 });
    t.pty.reconnectNow();
    expect(t.timers.pending).toHaveLength(0);
    t.last().drop(1006);
    expect(t.pty.current).toMatchObject({ delayMs: 1000, retry: 1 });
    // Asking while connected does nothing.
    t.timers.fire();
    t.last().open();
    const n = t.sockets.length;
    t.pty.reconnectNow();
    expect(t.sockets).toHaveLength(n);
  });

  it("closes cleanly on dispose and ignores the socket after", () => {
    const t = setup();
    t.pty.start();
    t.last().open();
    const s = t.last();
    t.pty.dispose();
    expect(s.closedWith).toBe(1000);
    const before = t.statuses.length;
    s.drop(1006);
    expect(t.statuses).toHaveLength(before);
    expect(t.timers.pending).toHaveLength(0);
  });

  it("classifies closes", () => {
    expect(closeVerdict(1000)).toBe("exited");
    expect(closeVerdict(1008)).toBe("permanent");
    expect(closeVerdict(1006)).toBe("retry");
    expect(closeVerdict(1011)).toBe("retry");
  });
});
