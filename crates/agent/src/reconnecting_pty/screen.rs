//! A session's terminal screen, kept on the agent (sans-IO): every byte of the program's
//! output goes through a VT parser ([`vt100`]), so the agent knows what a terminal
//! showing the session would show: the visible screen (main or alternate), cursor, input
//! modes, title and a bounded scrollback.
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

/// What the parser reports besides the screen: the window title.
#[derive(Debug, Default)]
struct Events {
    title: Vec<u8>,
}

impl vt100::Callbacks for Events {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        self.title = title.get(..MAX_TITLE).unwrap_or(title).to_vec();
    }
}

/// The terminal model of one session; see the [module docs](self).
pub struct Screen {
    parser: vt100::Parser<Events>,
    scrollback: usize,
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
            parser: vt100::Parser::new_with_callbacks(
                nonzero(size.rows),
                nonzero(size.cols),
                scrollback,
                Events::default(),
            ),
            scrollback,
        }
    }

    /// Apply program output.
    pub fn feed(&mut self, bytes: &[u8]) {
        let parser = &mut self.parser;
        if catch_unwind(AssertUnwindSafe(|| parser.process(bytes))).is_err() {
            // A parser bug must not take the session down: start from a blank screen,
            // which the program's next full redraw (or the user's Ctrl-L) repairs.
            tracing::warn!("terminal model failed on program output; it starts over blank");
            let (rows, cols) = self.parser.screen().size();
            self.parser =
                vt100::Parser::new_with_callbacks(rows, cols, self.scrollback, Events::default());
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

    /// Bytes that make a freshly attached terminal of the same size show what this model
    /// shows, with up to `history` rows of scrollback before it (main screen history only;
    /// a full-screen program has none).
    pub fn repaint(&mut self, history: usize) -> Vec<u8> {
        let mut out = String::new();
        // A full reset (RIS): the attaching terminal may still show an older screen.
        out.push_str("\x1bc");
        let live = self.parser.screen_mut();
        let alternate = live.alternate_screen();
        if alternate {
            // The main screen is kept underneath but `vt100` shows only the active one:
            // switch a copy back to look at it.
            let (rows, cols) = live.size();
            let mut main = vt100::Parser::new(rows, cols, 0);
            *main.screen_mut() = live.clone();
            main.process(b"\x1b[?47l");
            paint_history(main.screen_mut(), history, &mut out);
            out.push_str(&main.screen().contents_formatted());
            // Saves the main cursor, as the program's own switch did, so its switch back
            // restores it; then the alternate screen, cleared.
            out.push_str("\x1b[?1049h");
            out.push_str(&self.parser.screen().contents_formatted());
        } else {
            paint_history(live, history, &mut out);
            out.push_str(&live.contents_formatted());
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

/// Push up to `limit` of `screen`'s newest scrollback rows into a blank terminal's
/// history: a screenful at a time, drawn at the top and then scrolled off by line feeds
/// at the bottom row. Leaves the terminal blank and `screen` scrolled back to the live
/// view.
fn paint_history(screen: &mut vt100::Screen, limit: usize, out: &mut String) {
    let total = screen.scrollback_len();
    let (rows, cols) = screen.size();
    let rows = usize::from(rows.get());
    let mut remaining = total.min(limit);
    while remaining > 0 {
        // The view `remaining` rows back starts at the oldest row still to paint.
        screen.set_scrollback(remaining);
        let take = remaining.min(rows);
        for (i, row) in screen.rows_formatted(0, cols.get()).take(take).enumerate() {
            // Each row's escapes assume the cursor at its start and default attributes.
            let _ = write!(out, "\x1b[m\x1b[{};1H", i + 1);
            out.push_str(&row);
        }
        let _ = write!(out, "\x1b[m\x1b[{rows};1H");
        out.extend(std::iter::repeat_n('\n', take));
        remaining -= take;
    }
    screen.set_scrollback(0);
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
        let mut model = Screen::new(WindowSize::new(20, 5), 100);
        for i in 0..12 {
            model.feed(format!("\x1b[3{}mline {i}\x1b[m 漢字\r\n", i % 8).as_bytes());
        }
        model.feed(b"$ \x1b[1mbold\x1b[0m and a long line that wraps around");
        let mut fresh = replay(&mut model, 100);
        assert_same_view(&model, fresh.screen());
        let want = history_rows(model.parser.screen_mut());
        assert!(!want.is_empty());
        assert_eq!(history_rows(fresh.screen_mut()), want);
        // The model is back at its live view.
        assert_eq!(model.screen().scrollback(), 0);
    }

    #[test]
    fn history_is_bounded() {
        let mut model = Screen::new(WindowSize::new(10, 3), 50);
        for i in 0..40 {
            model.feed(format!("r{i}\r\n").as_bytes());
        }
        let mut fresh = replay(&mut model, 7);
        assert_same_view(&model, fresh.screen());
        let got = history_rows(fresh.screen_mut());
        let all = history_rows(model.parser.screen_mut());
        assert_eq!(got.len(), 7);
        assert_eq!(got, all[all.len() - 7..]);
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
