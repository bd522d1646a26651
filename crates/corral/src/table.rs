//! Text output for people: aligned tables that fit the terminal, short forms of
//! durations, ages and frame lists, and `for_terminal`, which every server-supplied string
//! passes through before it is printed for a person.

use chrono::{DateTime, Utc};
use console::measure_text_width;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

/// `text` made safe to print on a terminal: control characters (C0 including tab and
/// newline, DEL, C1) and the Unicode bidirectional embeddings, overrides and isolates
/// (U+202A-U+202E, U+2066-U+2069) are shown as escapes (`\x1b`, `\u{202e}`) instead of
/// being obeyed. A node's host name, Blender's log lines and every other string a server
/// sends could otherwise move the cursor, retitle the window, hide text or reorder it.
/// `--json` output does not need this: JSON escapes control characters itself.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

/// Characters a terminal acts on instead of showing.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A table printed with columns aligned; one column may shrink to fit the terminal.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// The column cut (from the left, keeping the end) when the table is too wide.
    flexible: Option<usize>,
    /// Columns aligned to the right (numbers).
    right: Vec<usize>,
}

/// Narrowest a flexible column gets before the table is left wider than the terminal.
const MIN_FLEXIBLE: usize = 12;
const GAP: &str = "  ";

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
            flexible: None,
            right: Vec::new(),
        }
    }

    pub fn flexible(mut self, column: usize) -> Self {
        self.flexible = Some(column);
        self
    }

    pub fn right(mut self, columns: &[usize]) -> Self {
        self.right = columns.to_vec();
        self
    }

    /// Adds a row; its cells are made safe for the terminal here ([`for_terminal`]), as
    /// they usually come from a server.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|cell| match for_terminal(&cell) {
                    Cow::Borrowed(_) => cell,
                    Cow::Owned(safe) => safe,
                })
                .collect(),
        );
    }

    /// The table as lines, at most `width` columns wide when a width is given (a terminal)
    /// and the flexible column can give enough room.
    pub fn render(&self, width: Option<usize>) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(measure_text_width(cell));
            }
        }
        if let (Some(limit), Some(flex)) = (width, self.flexible) {
            let total: usize = widths.iter().sum::<usize>() + GAP.len() * (columns - 1);
            if total > limit {
                let others = total - widths[flex];
                widths[flex] = limit.saturating_sub(others).max(MIN_FLEXIBLE);
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                let cell = if Some(i) == self.flexible {
                    cut_left(cell, *width)
                } else {
                    cell.to_string()
                };
                let pad = width.saturating_sub(measure_text_width(&cell));
                if i > 0 {
                    line.push_str(GAP);
                }
                if self.right.contains(&i) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(&cell);
                } else {
                    line.push_str(&cell);
                    if i + 1 < columns {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text` cut to `width` columns by dropping its start (paths say most at their end).
fn cut_left(text: &str, width: usize) -> String {
    if measure_text_width(text) <= width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let keep = width.saturating_sub(1);
    let tail: String = chars[chars.len().saturating_sub(keep)..].iter().collect();
    format!("…{tail}")
}

/// The terminal's width when stdout is one; `None` (no limit) for pipes and files.
pub fn terminal_width() -> Option<usize> {
    let term = console::Term::stdout();
    if !term.is_term() {
        return None;
    }
    term.size_checked().map(|(_, cols)| usize::from(cols))
}

/// `850 ms`, `14.2 s`, `3 min 05 s`, `2 h 04 min`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", d.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        let s = d.as_secs();
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        let s = d.as_secs();
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// `0:12`, `3:05`, `1:02:03`: compact, for the progress line.
pub fn clock(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, (secs % 3600) / 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// `12 s ago`, `3 min ago`, `2 h ago`, `4 days ago`.
pub fn age(at: DateTime<Utc>) -> String {
    let secs = (Utc::now() - at).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// Seconds from `from` to `to`, never negative.
pub fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// `s` when `n` is not one.
pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_fit() {
        let mut t = Table::new(&["ID", "N", "PATH"]).flexible(2).right(&[1]);
        t.row(vec![
            "a".into(),
            "1".into(),
            "/very/long/path/to/scene.blend".into(),
        ]);
        t.row(vec!["bbb".into(), "22".into(), "x.blend".into()]);
        let wide = t.render(None);
        assert_eq!(
            wide,
            "ID    N  PATH\na     1  /very/long/path/to/scene.blend\nbbb  22  x.blend\n"
        );
        let narrow = t.render(Some(25));
        assert!(
            narrow.lines().all(|l| measure_text_width(l) <= 25),
            "{narrow}"
        );
        assert!(narrow.contains("…/to/scene.blend"), "{narrow}");
    }

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        assert_eq!(
            for_terminal("plain text · ✔ ünïcode"),
            "plain text · ✔ ünïcode"
        );
        assert!(matches!(for_terminal("plain"), Cow::Borrowed(_)));
        assert_eq!(
            for_terminal("\u{1b}]0;pwned\u{7}\u{1b}[2J"),
            "\\x1b]0;pwned\\x07\\x1b[2J"
        );
        assert_eq!(for_terminal("a\tb\r\nc\u{7f}"), "a\\x09b\\x0d\\x0ac\\x7f");
        assert_eq!(for_terminal("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(
            for_terminal("abc\u{202e}fed\u{2066}x\u{2069}"),
            "abc\\u{202e}fed\\u{2066}x\\u{2069}"
        );
        let mut t = Table::new(&["HOST"]);
        t.row(vec!["evil\u{1b}[31m".into()]);
        assert_eq!(t.render(None), "HOST\nevil\\x1b[31m\n");
    }

    proptest::proptest! {
        /// Whatever a server sends, nothing a terminal acts on gets through, and text
        /// without such characters is left exactly as it was.
        #[test]
        fn nothing_a_terminal_obeys_gets_through(text in "(?s).{0,64}", plain in "[^\\p{Cc}]{0,64}") {
            let safe = for_terminal(&text);
            proptest::prop_assert!(!safe.chars().any(is_unsafe), "{:?}", safe);
            if !plain.chars().any(is_unsafe) {
                proptest::prop_assert_eq!(for_terminal(&plain), plain.as_str());
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(14_240)), "14.2 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(clock(75), "1:15");
        assert_eq!(clock(3723), "1:02:03");
    }
}
