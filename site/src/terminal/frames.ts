// Page → server frames of the PTY WebSocket: binary, UTF-8 JSON, `{"data":"…"}` for
// input and `{"height":R,"width":C}` for a resize; fields omitted when empty.

const encoder = new TextEncoder();

/** Input longer than this many UTF-16 units is sent as several frames (a paste). */
export const MAX_INPUT_CHARS = 8192;

/** The frames carrying `data` (none when it is empty), split at code point boundaries. */
export function inputFrames(data: string, maxChars: number = MAX_INPUT_CHARS): Uint8Array[] {
  const frames: Uint8Array[] = [];
  let start = 0;
  while (start < data.length) {
    let end = Math.min(start + maxChars, data.length);
    // Never split a surrogate pair: it would become two replacement characters.
    const last = data.charCodeAt(end - 1);
    if (end < data.length && last >= 0xd800 && last <= 0xdbff && end - 1 > start) end -= 1;
    frames.push(encoder.encode(JSON.stringify({ data: data.slice(start, end) })));
    start = end;
  }
  return frames;
}

/** The resize frame, or null unless both sizes are positive whole numbers. */
export function resizeFrame(rows: number, cols: number): Uint8Array | null {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows <= 0 || cols <= 0) return null;
  return encoder.encode(JSON.stringify({ height: rows, width: cols }));
}
