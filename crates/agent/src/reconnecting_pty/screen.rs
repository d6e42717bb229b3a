//! A session's terminal screen, kept on the agent (sans-IO): every byte of the program's
//! output goes through a VT parser ([`vt100`]), so the agent knows what a terminal
//! showing the session would show: the visible screen (main or alternate), cursor, input
//! modes, title and a bounded scrollback.
//!
//! History is kept in two parts: the newest [`PARSER_HISTORY`] rows inside the parser (so
//! a taller window pulls real rows back down, as terminals do), and older rows as compact
//! text with SGR attributes (`vt100` stores 32 bytes per cell, 2.5 KiB per 80-column row;
//! a text row is typically under 100 bytes), bounded in rows and in [`MAX_HISTORY_BYTES`].
//! `CSI 3 J` (what `clear` sends) and a full reset clear both parts.
//!
//! [`Screen::repaint`] turns that back into bytes for a terminal that attaches: a full
//! reset, then recent scrollback pushed into the terminal's own history, then the main
//! screen, and when a full-screen program is running its alternate screen on top (so the
//! main screen is right again when the program exits), then the input modes. Coder
//! replays the last 64 KiB of raw output instead, which breaks full-screen programs.
//!
//! Not reproduced (`vt100` keeps no public record of them): the scroll region, origin
//! mode, the cursor saved by `DECSC`, and character sets; history rows lose their
//! soft-wrap marks (each becomes a line of its own).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::num::NonZeroU16;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::pty::WindowSize;

/// Most rows and columns a session's terminal may have; larger requests are clamped, so a
/// resize cannot make the model allocate without bound.
pub const MAX_ROWS: u16 = 256;
/// See [`MAX_ROWS`].
pub const MAX_COLS: u16 = 512;

/// Longest window title kept, in bytes.
const MAX_TITLE: usize = 512;

/// History rows kept inside the parser, as cells; older ones are kept as text.
pub const PARSER_HISTORY: usize = 32;

/// Most bytes of history kept as text per session.
pub const MAX_HISTORY_BYTES: usize = 256 * 1024;

/// `size` within `1..=MAX_ROWS` × `1..=MAX_COLS`.
pub fn clamp_size(size: WindowSize) -> WindowSize {
    WindowSize {
        cols: size.cols.clamp(1, MAX_COLS),
        rows: size.rows.clamp(1, MAX_ROWS),
        ..size
    }
}

fn nonzero(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

/// Main-screen rows that left the parser's own history, oldest first, as `vt100`'s
/// "basic" format (text with SGR escapes only), bounded in rows and bytes.
#[derive(Debug, Default)]
struct History {
    rows: VecDeque<String>,
    bytes: usize,
    max_rows: usize,
}

impl History {
    fn push(&mut self, row: String) {
        self.bytes += row.len();
        self.rows.push_back(row);
        while self.rows.len() > self.max_rows || self.bytes > MAX_HISTORY_BYTES {
            let Some(old) = self.rows.pop_front() else {
                break;
            };
            self.bytes -= old.len();
        }
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
    }
}

/// What the parser reports besides the screen: the window title, rows leaving history.
#[derive(Debug, Default)]
struct Events {
    title: Vec<u8>,
    history: History,
}

impl vt100::Callbacks for Events {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        self.title = title.get(..MAX_TITLE).unwrap_or(title).to_vec();
    }

    fn on_scroll(&mut self, row: vt100::capture::RowContents<'_>, alternate: bool) {
        // A full-screen program's scrolled rows are no history (terminals keep none for
        // the alternate screen either).
        if alternate || self.history.max_rows == 0 {
            return;
        }
        let mut text = String::new();
        let mut state = vt100::capture::BasicFormattedCaptureState::new();
        let _ = row.write_formatted_basic(&mut text, &mut state);
        self.history.push(text);
    }
}

/// Finds, across chunk boundaries, the sequences after which a terminal has no history:
/// `CSI 3 J`, `CSI ? 3 J` and `ESC c` (`vt100` reports none of them).
#[derive(Debug, Default, Clone, Copy)]
struct HistoryClears {
    /// How much of a sequence the bytes so far end with.
    state: u8,
}

impl HistoryClears {
    /// The offset just past the first such sequence that ends in `bytes`.
    fn find(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            self.state = match (self.state, b) {
                (_, 0x1b) => 1,
                (1, b'c') | (4, b'J') => {
                    self.state = 0;
                    return Some(i + 1);
                }
                (1, b'[') => 2,
                (2, b'?') => 3,
                (2 | 3, b'3') => 4,
                _ => 0,
            };
        }
        None
    }
}

/// The terminal model of one session; see the [module docs](self).
pub struct Screen {
    parser: vt100::Parser<Events>,
    scrollback: usize,
    clears: HistoryClears,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (rows, cols) = self.parser.screen().size();
        f.debug_struct("Screen")
            .field("rows", &rows)
            .field("cols", &cols)
            .field("scrollback", &self.scrollback)
            .finish_non_exhaustive()
    }
}

impl Screen {
    /// A blank terminal of `size` (clamped) keeping up to `scrollback` rows of history.
    pub fn new(size: WindowSize, scrollback: usize) -> Self {
        let size = clamp_size(size);
        Self {
            parser: new_parser(nonzero(size.rows), nonzero(size.cols), scrollback),
            scrollback,
            clears: HistoryClears::default(),
        }
    }

    /// Apply program output.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // Up to and including a history clear, so the rows after it are kept.
            let cut = self.clears.find(bytes);
            let (now, rest) = bytes.split_at(cut.unwrap_or(bytes.len()));
            self.process(now);
            if cut.is_some() {
                self.parser.callbacks_mut().history.clear();
            }
            bytes = rest;
        }
    }

    fn process(&mut self, bytes: &[u8]) {
        let parser = &mut self.parser;
        if catch_unwind(AssertUnwindSafe(|| parser.process(bytes))).is_err() {
            // A parser bug must not take the session down: start from a blank screen,
            // which the program's next full redraw (or the user's Ctrl-L) repairs.
            tracing::warn!("terminal model failed on program output; it starts over blank");
            let (rows, cols) = self.parser.screen().size();
            self.parser = new_parser(rows, cols, self.scrollback);
        }
    }

    /// Resize to `size` (clamped), as the program's terminal was.
    pub fn resize(&mut self, size: WindowSize) {
        let size = clamp_size(size);
        self.parser.set_size(nonzero(size.rows), nonzero(size.cols));
    }

    /// The current size.
    pub fn size(&self) -> WindowSize {
        let (rows, cols) = self.parser.screen().size();
        WindowSize::new(cols.get(), rows.get())
    }

    /// The parser's screen (what is shown now, modes, cursor).
    pub fn screen(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    /// The window title last set by the program (`OSC 0` or `OSC 2`).
    pub fn title(&self) -> &[u8] {
        &self.parser.callbacks().title
    }

    /// The main screen's history as plain text rows, oldest first (trailing blanks
    /// trimmed).
    pub fn history_text(&mut self) -> Vec<String> {
        let mut rows: Vec<String> = self
            .parser
            .callbacks()
            .history
            .rows
            .iter()
            .map(|r| vt100::capture::basic_formatted_to_plain(r).collect())
            .collect();
        let screen = self.parser.screen_mut();
        let (height, cols) = screen.size();
        let mut remaining = screen.scrollback_len();
        while remaining > 0 {
            screen.set_scrollback(remaining);
            let take = remaining.min(usize::from(height.get()));
            rows.extend(screen.rows(0, cols.get()).take(take));
            remaining -= take;
        }
        screen.set_scrollback(0);
        for r in &mut rows {
            r.truncate(r.trim_end().len());
        }
        rows
    }

    /// Bytes of history kept as text.
    pub fn history_bytes(&self) -> usize {
        self.parser.callbacks().history.bytes
    }

    /// Bytes that make a freshly attached terminal of the same size show what this model
    /// shows, with up to `history` rows of scrollback before it (main screen history only;
    /// a full-screen program has none).
    pub fn repaint(&mut self, history: usize) -> Vec<u8> {
        let mut out = String::new();
        // A full reset (RIS): the attaching terminal may still show an older screen.
        out.push_str("\x1bc");
        let (screen, events) = self.parser.screen_and_callbacks_mut();
        let text_rows = &events.history.rows;
        let alternate = screen.alternate_screen();
        if alternate {
            // The main screen is kept underneath but `vt100` shows only the active one:
            // switch a copy back to look at it.
            let (rows, cols) = screen.size();
            let mut main = vt100::Parser::new(rows, cols, 0);
            *main.screen_mut() = screen.clone();
            main.process(b"\x1b[?47l");
            paint_history(text_rows, main.screen_mut(), history, &mut out);
            out.push_str(&main.screen().contents_formatted());
            // Saves the main cursor, as the program's own switch did, so its switch back
            // restores it; then the alternate screen, cleared.
            out.push_str("\x1b[?1049h");
            out.push_str(&self.parser.screen().contents_formatted());
        } else {
            paint_history(text_rows, screen, history, &mut out);
            out.push_str(&screen.contents_formatted());
        }
        let screen = self.parser.screen();
        out.push_str(&screen.input_mode_formatted());
        let mut bytes = out.into_bytes();
        let title = self.title();
        if !title.is_empty() {
            bytes.extend_from_slice(b"\x1b]2;");
            bytes.extend_from_slice(title);
            bytes.push(0x07);
        }
        bytes
    }
}

fn new_parser(rows: NonZeroU16, cols: NonZeroU16, scrollback: usize) -> vt100::Parser<Events> {
    let events = Events {
        history: History {
            max_rows: scrollback.saturating_sub(PARSER_HISTORY),
            ..History::default()
        },
        ..Events::default()
    };
    vt100::Parser::new_with_callbacks(rows, cols, scrollback.min(PARSER_HISTORY), events)
}

/// Push the newest `limit` history rows (the text rows, then `screen`'s own) into a blank
/// terminal's history: a screenful at a time, drawn at the top and then scrolled off by
/// line feeds at the bottom row, with autowrap off so a row wider than the terminal is
/// cut rather than spilling into the next. Leaves the terminal blank and `screen` at its
/// live view.
fn paint_history(
    text_rows: &VecDeque<String>,
    screen: &mut vt100::Screen,
    limit: usize,
    out: &mut String,
) {
    let own = screen.scrollback_len();
    let skip = (text_rows.len() + own).saturating_sub(limit);
    let (rows, cols) = screen.size();
    let rows = usize::from(rows.get());
    out.push_str("\x1b[?7l");
    let mut text = text_rows.iter().skip(skip).peekable();
    while text.peek().is_some() {
        paint_page(text.by_ref().take(rows).map(String::as_str), rows, out);
    }
    let mut remaining = own - skip.saturating_sub(text_rows.len()).min(own);
    while remaining > 0 {
        // The view `remaining` rows back starts at the oldest row still to paint.
        screen.set_scrollback(remaining);
        let take = remaining.min(rows);
        let page: Vec<String> = screen.rows_formatted(0, cols.get()).take(take).collect();
        paint_page(page.iter().map(String::as_str), rows, out);
        remaining -= take;
    }
    screen.set_scrollback(0);
    out.push_str("\x1b[?7h");
}

/// Draw `page` (at most `rows` rows, each starting at its row's first column with default
/// attributes) at the top of a blank terminal, then scroll it into history.
fn paint_page<'a>(page: impl Iterator<Item = &'a str>, rows: usize, out: &mut String) {
    let mut n = 0;
    for (i, row) in page.enumerate() {
        let _ = write!(out, "\x1b[m\x1b[{};1H", i + 1);
        out.push_str(row);
        n = i + 1;
    }
    let _ = write!(out, "\x1b[m\x1b[{rows};1H");
    out.extend(std::iter::repeat_n('\n', n));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A fresh parser of `model`'s size with `model`'s repaint applied.
    fn replay(model: &mut Screen, history: usize) -> vt100::Parser {
        let size = model.size();
        let mut fresh = vt100::Parser::new(nonzero(size.rows), nonzero(size.cols), 1000);
        fresh.process(&model.repaint(history));
        fresh
    }

    fn history_rows(screen: &mut vt100::Screen) -> Vec<String> {
        let total = screen.scrollback_len();
        let (rows, cols) = screen.size();
        let mut got = Vec::new();
        let mut remaining = total;
        while remaining > 0 {
            screen.set_scrollback(remaining);
            let take = remaining.min(usize::from(rows.get()));
            got.extend(screen.rows(0, cols.get()).take(take));
            remaining -= take;
        }
        screen.set_scrollback(0);
        for r in &mut got {
            r.truncate(r.trim_end().len());
        }
        got
    }

    fn assert_same_view(model: &Screen, fresh: &vt100::Screen) {
        let m = model.screen();
        assert_eq!(fresh.contents_formatted(), m.contents_formatted());
        assert_eq!(fresh.contents(), m.contents());
        assert_eq!(fresh.cursor_position(), m.cursor_position());
        assert_eq!(fresh.alternate_screen(), m.alternate_screen());
        assert_eq!(fresh.input_mode_formatted(), m.input_mode_formatted());
        assert_eq!(fresh.hide_cursor(), m.hide_cursor());
    }

    #[test]
    fn main_screen_with_colors_wide_characters_and_history() {
        // Short and long histories: within the parser's own rows only, and beyond them
        // (text rows first, then the parser's).
        for lines in [4, 12, 80] {
            let mut model = Screen::new(WindowSize::new(20, 5), 100);
            for i in 0..lines {
                model.feed(format!("\x1b[3{}mline {i}\x1b[m 漢字\r\n", i % 8).as_bytes());
            }
            model.feed(b"$ \x1b[1mbold\x1b[0m and a long line that wraps around");
            let mut fresh = replay(&mut model, 100);
            assert_same_view(&model, fresh.screen());
            let want = model.history_text();
            assert!(!want.is_empty());
            assert!(want.len() <= 100);
            assert_eq!(history_rows(fresh.screen_mut()), want, "{lines} lines");
            // Colours survive in history too.
            let (rows, _) = fresh.screen().size();
            fresh.screen_mut().set_scrollback(usize::from(rows.get()));
            let colored = (0..rows.get())
                .filter_map(|r| fresh.screen().cell(r, 0))
                .any(|c| c.fgcolor() != vt100::Color::Default);
            assert!(colored, "{lines} lines");
            // The model is back at its live view.
            assert_eq!(model.screen().scrollback(), 0);
        }
    }

    #[test]
    fn history_is_bounded_in_rows_and_bytes() {
        let mut model = Screen::new(WindowSize::new(10, 3), 50);
        for i in 0..400 {
            model.feed(format!("r{i}\r\n").as_bytes());
        }
        let all = model.history_text();
        assert_eq!(all.len(), 50);
        assert_eq!(all[49], "r397");
        let mut fresh = replay(&mut model, 7);
        assert_same_view(&model, fresh.screen());
        let got = history_rows(fresh.screen_mut());
        assert_eq!(got.len(), 7);
        assert_eq!(got, all[all.len() - 7..]);

        let mut wide = Screen::new(WindowSize::new(MAX_COLS, 3), 100_000);
        let row = "x".repeat(usize::from(MAX_COLS));
        for _ in 0..2000 {
            wide.feed(format!("{row}\r\n").as_bytes());
        }
        assert!(wide.history_bytes() <= MAX_HISTORY_BYTES);
        assert!(wide.history_bytes() > MAX_HISTORY_BYTES / 2);
    }

    #[test]
    fn clear_and_reset_clear_history() {
        for clear in [
            &b"\x1b[H\x1b[2J\x1b[3J"[..],
            b"\x1b[H\x1b[2J\x1b[?3J",
            b"\x1bc",
        ] {
            let mut model = Screen::new(WindowSize::new(10, 3), 100);
            for i in 0..60 {
                model.feed(format!("old{i}\r\n").as_bytes());
            }
            assert!(!model.history_text().is_empty());
            // Split anywhere, the sequence is still found; what follows it is kept.
            let mut bytes = clear.to_vec();
            bytes.extend_from_slice(b"new0\r\nnew1\r\nnew2\r\nnew3\r\n");
            let (a, b) = bytes.split_at(clear.len() - 1);
            model.feed(a);
            model.feed(b);
            let history = model.history_text();
            assert!(history.iter().all(|r| r.starts_with("new")), "{history:?}");
            assert!(!history.is_empty());
        }
        let mut c = HistoryClears::default();
        assert_eq!(c.find(b"ab\x1b[3J"), Some(6));
        assert_eq!(c.find(b"\x1b[33J\x1b[3;1J\x1b[13J"), None);
        assert_eq!(c.find(b"\x1b"), None);
        assert_eq!(c.find(b"c"), Some(1));
    }

    #[test]
    fn full_screen_program_on_the_alternate_screen() {
        let mut model = Screen::new(WindowSize::new(30, 6), 100);
        model.feed(b"$ echo before\r\nbefore\r\n$ vi notes");
        // What vim does: save cursor + alternate screen, app cursor keys, keypad,
        // bracketed paste, hidden cursor, a title, drawing with positioning.
        model.feed(b"\x1b[?1049h\x1b[?1h\x1b=\x1b[?2004h\x1b[?25l\x1b]2;notes - VIM\x07");
        model.feed(
            b"\x1b[H\x1b[2Jhello\x1b[2;1H\x1b[34m~\x1b[m\x1b[6;1H\"notes\" 1L\x1b[1;3H\x1b[?25h",
        );
        assert!(model.screen().alternate_screen());
        let mut fresh = replay(&mut model, 100);
        assert_same_view(&model, fresh.screen());
        assert!(fresh.screen().application_cursor());
        assert!(fresh.screen().bracketed_paste());
        // When the program leaves, both show the shell again, cursor where it was.
        model.feed(b"\x1b[?1049l\x1b[?1l\x1b>");
        fresh.process(b"\x1b[?1049l\x1b[?1l\x1b>");
        assert_same_view(&model, fresh.screen());
        assert!(fresh.screen().contents().contains("$ vi notes"));
        assert_eq!(model.title(), b"notes - VIM");
        assert!(model.repaint(0).ends_with(b"\x1b]2;notes - VIM\x07"));
    }

    #[test]
    fn cursor_left_at_the_end_of_a_full_row() {
        let mut model = Screen::new(WindowSize::new(8, 3), 10);
        model.feed(b"abcdefgh");
        let fresh = replay(&mut model, 10);
        assert_same_view(&model, fresh.screen());
        let mut m2 = Screen::new(WindowSize::new(8, 3), 10);
        m2.feed(b"abcdefgh");
        m2.feed(b"X");
        let mut fresh = fresh;
        fresh.process(b"X");
        assert_same_view(&m2, fresh.screen());
    }

    #[test]
    fn resize_and_clamp() {
        let mut model = Screen::new(WindowSize::new(0, 0), 10);
        assert_eq!(model.size(), WindowSize::new(1, 1));
        model.resize(WindowSize::new(u16::MAX, u16::MAX));
        assert_eq!(model.size(), WindowSize::new(MAX_COLS, MAX_ROWS));
        model.resize(WindowSize::new(40, 10));
        model.feed(b"hi");
        let fresh = replay(&mut model, 10);
        assert_same_view(&model, fresh.screen());
    }

    #[test]
    fn arbitrary_bytes_keep_the_model_usable() {
        let mut model = Screen::new(WindowSize::new(20, 4), 10);
        let mut x: u32 = 12345;
        let junk: Vec<u8> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u8
            })
            .collect();
        model.feed(&junk);
        model.feed(b"\x1b[m\x1b[?1049l\x1b[2J\x1b[Hok");
        assert!(model.screen().contents().starts_with("ok"));
        let fresh = replay(&mut model, 10);
        assert_eq!(fresh.screen().contents(), model.screen().contents());
    }
}
