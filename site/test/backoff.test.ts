import { describe, expect, it } from "vitest";
import { Backoff } from "../src/terminal/backoff";

describe("Backoff", () => {
  it("doubles from 1 s for six tries (the last capped at 30 s), then gives up", () => {
    const b = new Backoff();
    const delays: (number | null)[] = [];
    for (let i = 0; i < 7; i++) delays.push(b.next());
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, null]);
    expect(b.attempt).toBe(6);
  });

  it("caps each delay", () => {
    const b = new Backoff(1000, 10, 5000);
    const delays = Array.from({ length: 5 }, () => b.next());
    expect(delays).toEqual([1000, 2000, 4000, 5000, 5000]);
  });

  it("starts over after a reset", () => {
    const b = new Backoff();
    b.next();
    b.next();
    b.reset();
    expect(b.attempt).toBe(0);
    expect(b.next()).toBe(1000);
  });
});
