//! Text shown to people: what a plan, a server or a file says can reach a terminal only through here.
//!
//! A plan or a coordinator can put any bytes into a value, and values end up in messages ("invalid job
//! type `…`"). Written raw, an ESC starts a terminal escape sequence (colours, cursor moves, a window
//! title, in some terminals a clipboard write), a BEL rings, a right-to-left override makes a line read
//! differently from what it says; a 100 MB value floods the screen. So every message escapes control
//! characters (they become `\u{1b}`, `\n`, …, which read the same in a terminal, a log and JSON) and cuts
//! long values, keeping their start and saying how much was left out.

use std::borrow::Cow;

/// How many characters of one value a message shows.
pub const VALUE_CHARS: usize = 120;

/// How many characters a whole message may have before it is cut.
pub const MESSAGE_CHARS: usize = 2000;

/// Whether `c` must not reach a terminal as it is: C0 and C1 controls, DEL, and the Unicode
/// bidirectional overrides and isolates (which reorder what a line shows).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// `text` with each unsafe character written as an escape (`\n`, `\t`, `\r`, `\u{1b}`).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` cut to at most `max` characters (plus a note of how many were left out).
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    // Byte length first: most texts are short, and counting characters of a huge one is linear anyway.
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let Some((end, _)) = text.char_indices().nth(max) else {
        return Cow::Borrowed(text);
    };
    let rest = text[end..].chars().count();
    Cow::Owned(format!("{}… ({rest} more characters)", &text[..end]))
}

/// A value as a message shows it: escaped, and cut to [`VALUE_CHARS`].
pub fn shown(text: &str) -> Cow<'_, str> {
    shown_max(text, VALUE_CHARS)
}

/// A value as a message shows it, cut to `max` characters.
pub fn shown_max(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max && !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    // Escape character by character until `max` characters are written; what is left is counted
    // in characters of the original text.
    let mut out = String::new();
    let mut written = 0;
    let mut rest = text.chars();
    for c in rest.by_ref() {
        let piece: Cow<'_, str> = if is_unsafe(c) {
            escape(c.encode_utf8(&mut [0; 4])).into_owned().into()
        } else {
            Cow::Owned(c.to_string())
        };
        written += piece.chars().count();
        out.push_str(&piece);
        if written >= max {
            break;
        }
    }
    let left = rest.count();
    if left > 0 {
        out.push_str(&format!("… ({left} more characters)"));
    }
    Cow::Owned(out)
}

/// A whole message as it is printed: escaped, and cut to [`MESSAGE_CHARS`] (the values in it should
/// have been cut to [`VALUE_CHARS`] already; this is the last guard).
pub fn message(text: &str) -> Cow<'_, str> {
    shown_max(text, MESSAGE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("x\u{1b}[31mred\u{7}"), "x\\u{1b}[31mred\\u{7}");
        assert_eq!(escape("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(escape("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(escape("\u{9b}"), "\\u{9b}");
        assert_eq!(escape("café ✓"), "café ✓");
    }

    #[test]
    fn cuts_long_values_and_says_so() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(300);
        let c = cut(&long, 100);
        assert!(c.starts_with(&"é".repeat(100)));
        assert!(c.ends_with("… (200 more characters)"), "{c}");
        let escapes = "\u{1b}".repeat(1000);
        let s = shown(&escapes);
        assert!(s.chars().count() < VALUE_CHARS + 80, "{s}");
        assert!(!s.contains('\u{1b}'));
    }
}
