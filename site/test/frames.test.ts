import { describe, expect, it } from "vitest";
import { inputFrames, resizeFrame } from "../src/terminal/frames";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("PTY frames", () => {
  it("encodes input as UTF-8 JSON with only the data field", () => {
    const frames = inputFrames("ls -l\r");
    expect(frames).toHaveLength(1);
    expect(text(frames[0]!)).toBe('{"data":"ls -l\\r"}');
    expect(frames[0]).toBeInstanceOf(Uint8Array);
  });

  it("sends nothing for empty input", () => {
    expect(inputFrames("")).toEqual([]);
  });

  it("escapes control characters and keeps non-ASCII as UTF-8", () => {
    const [frame] = inputFrames('\x1b[A"é😀\\');
    expect(text(frame!)).toBe('{"data":"\\u001b[A\\"é😀\\\\"}');
    expect(JSON.parse(text(frame!))).toEqual({ data: '\x1b[A"é😀\\' });
    // é is 2 bytes and 😀 4 in UTF-8.
    expect(frame!.includes(0xc3)).toBe(true);
  });

  it("splits a long paste without breaking a surrogate pair", () => {
    const paste = "a".repeat(9) + "😀" + "b".repeat(10);
    const frames = inputFrames(paste, 10);
    const parts = frames.map((f) => (JSON.parse(text(f)) as { data: string }).data);
    expect(parts.join("")).toBe(paste);
    expect(parts[0]).toBe("a".repeat(9));
    expect(parts[1]!.startsWith("😀")).toBe(true);
    for (const p of parts) expect(p.length).toBeLessThanOrEqual(10);
  });

  it("encodes a resize as height then width", () => {
    expect(text(resizeFrame(24, 80)!)).toBe('{"height":24,"width":80}');
  });

  it("refuses a resize unless both sizes are positive integers", () => {
    for (const [r, c] of [
      [0, 80],
      [24, 0],
      [-1, 80],
      [24.5, 80],
      [Number.NaN, 80],
    ] as const) {
      expect(resizeFrame(r, c)).toBeNull();
    }
  });
});
