//! Text from outside (mail subjects and bodies, contacts, names, server
//! messages) on the agent's terminal: control characters are shown, never
//! obeyed. A raw ESC, BEL or CSI lets a sender retitle the terminal, clear
//! the screen, or on some terminals inject input; a bare CR lets them
//! overwrite what the line showed.

use std::{borrow::Cow, fmt::Write};

/// Which layout characters pass through as they are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A field shown on one line: every control character is escaped, line
    /// breaks included, so a subject cannot forge the lines after it.
    Line,
    /// A body shown as a block: its line breaks and tabs are kept.
    Block,
}

/// `text` with every C0 and C1 control character and DEL written as a
/// visible `\u{1b}`, except LF and TAB in a [`Layout::Block`].
pub fn shown(text: &str, layout: Layout) -> Cow<'_, str> {
    let kept = |c: char| layout == Layout::Block && matches!(c, '\n' | '\t');
    if !text.chars().any(|c| c.is_control() && !kept(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && !kept(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One-line outside text: [`shown`] with [`Layout::Line`].
pub fn line(text: &str) -> Cow<'_, str> {
    shown(text, Layout::Line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        let hostile = "a\x1b]0;pwned\x07b\x1b[2Jc\rd\u{9b}31me\u{7f}f\0";
        let escaped = line(hostile);
        assert_eq!(
            escaped,
            "a\\u{1b}]0;pwned\\u{7}b\\u{1b}[2Jc\\u{d}d\\u{9b}31me\\u{7f}f\\u{0}"
        );
        assert!(!escaped.chars().any(char::is_control));
    }

    #[test]
    fn a_block_keeps_its_lines_and_tabs_and_a_line_does_not() {
        let body = "Hello,\n\tcamera 3\r\nis down\x1b[2J";
        assert_eq!(
            shown(body, Layout::Block),
            "Hello,\n\tcamera 3\\u{d}\nis down\\u{1b}[2J"
        );
        assert_eq!(line("one\ntwo\tthree"), "one\\u{a}two\\u{9}three");
    }

    #[test]
    fn plain_text_is_untouched_and_not_copied() {
        let text = "Kamera 3 außer Betrieb — 摄像机 ✓ \\u{1b} as typed";
        assert!(matches!(line(text), Cow::Borrowed(t) if t == text));
    }
}
