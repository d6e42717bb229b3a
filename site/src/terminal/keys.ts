// Terminal copy and paste as users expect: Ctrl+Shift+C / Ctrl+Shift+V (Cmd on macOS),
// while Ctrl+C and Ctrl+V stay the terminal's own (interrupt, literal next).

/** What a key event means for the clipboard. */
export type ClipboardAction = "copy" | "paste" | null;

/** The fields of a key event that matter here. */
export interface KeyLike {
  key: string;
  code: string;
  ctrlKey: boolean;
  metaKey: boolean;
  shiftKey: boolean;
  altKey: boolean;
}

/** Whether `e` is the copy or the paste shortcut (the caller acts on key down only). */
export function clipboardAction(e: KeyLike): ClipboardAction {
  if (!e.shiftKey || e.altKey || !(e.ctrlKey || e.metaKey)) return null;
  if (e.code === "KeyC" || e.key.toLowerCase() === "c") return "copy";
  if (e.code === "KeyV" || e.key.toLowerCase() === "v") return "paste";
  return null;
}
