import { describe, expect, it } from "vitest";
import { clipboardAction } from "../src/terminal/keys";

const key = (k: string, mods: Partial<{ ctrlKey: boolean; metaKey: boolean; shiftKey: boolean; altKey: boolean }> = {}) => ({
  key: k,
  code: `Key${k.toUpperCase()}`,
  ctrlKey: false,
  metaKey: false,
  shiftKey: false,
  altKey: false,
  ...mods,
});

describe("clipboard keys", () => {
  it("copies and pastes with Ctrl+Shift or Cmd+Shift", () => {
    expect(clipboardAction(key("C", { ctrlKey: true, shiftKey: true }))).toBe("copy");
    expect(clipboardAction(key("V", { ctrlKey: true, shiftKey: true }))).toBe("paste");
    expect(clipboardAction(key("c", { metaKey: true, shiftKey: true }))).toBe("copy");
    expect(clipboardAction(key("v", { metaKey: true, shiftKey: true }))).toBe("paste");
  });

  it("leaves Ctrl+C and Ctrl+V to the terminal", () => {
    expect(clipboardAction(key("c", { ctrlKey: true }))).toBeNull();
    expect(clipboardAction(key("v", { ctrlKey: true }))).toBeNull();
    expect(clipboardAction(key("C", { shiftKey: true }))).toBeNull();
    expect(clipboardAction(key("C", { ctrlKey: true, shiftKey: true, altKey: true }))).toBeNull();
    expect(clipboardAction(key("X", { ctrlKey: true, shiftKey: true }))).toBeNull();
  });

  it("works on layouts where the key is not a latin letter", () => {
    expect(clipboardAction({ ...key("C", { ctrlKey: true, shiftKey: true }), key: "С" })).toBe("copy");
  });
});
