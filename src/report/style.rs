//! Colours and cursor codes on the terminal, by the conventions users know: colour on a TTY, none with
//! `NO_COLOR` (<https://no-color.org>), colour even into a pipe with `CLICOLOR_FORCE`, none with
//! `CLICOLOR=0`; a `TERM=dumb` terminal gets neither colour nor cursor movement (the live view falls back
//! to one line per event). The environment is read once by the caller ([`TermEnv::from_env`]) and passed
//! in, so the views themselves read no global state.

use super::model::{RunStatus, StepState};

/// What the environment says about colours and cursor codes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TermEnv {
    /// `NO_COLOR` is set and not empty.
    pub no_color: bool,
    /// `CLICOLOR_FORCE` is set, not empty and not `0`.
    pub force: bool,
    /// `CLICOLOR=0`.
    pub clicolor_off: bool,
    /// `TERM=dumb`.
    pub dumb: bool,
}

impl TermEnv {
    /// Reads `NO_COLOR`, `CLICOLOR_FORCE`, `CLICOLOR` and `TERM` through `get`.
    pub fn from_fn(get: impl Fn(&str) -> Option<String>) -> TermEnv {
        let set = |k: &str| get(k).filter(|v| !v.is_empty());
        TermEnv {
            no_color: set("NO_COLOR").is_some(),
            force: set("CLICOLOR_FORCE").is_some_and(|v| v != "0"),
            clicolor_off: get("CLICOLOR").as_deref() == Some("0"),
            dumb: get("TERM").as_deref() == Some("dumb"),
        }
    }

    /// Reads the process's environment.
    pub fn from_env() -> TermEnv {
        TermEnv::from_fn(|k| std::env::var(k).ok())
    }

    /// Whether to colour a stream that is (or is not) a terminal. `NO_COLOR` wins over
    /// `CLICOLOR_FORCE`, as in the other tools that honour both.
    pub fn colour(&self, is_tty: bool) -> bool {
        if self.no_color {
            false
        } else if self.force {
            true
        } else {
            is_tty && !self.clicolor_off && !self.dumb
        }
    }

    /// Whether a terminal may be redrawn in place (cursor movement, clearing lines).
    pub fn cursor(&self, is_tty: bool) -> bool {
        is_tty && !self.dumb
    }
}

/// The width in columns of the terminal open on `fd`: `COLUMNS` when it is set, else the window size
/// the terminal reports; `None` when neither says.
pub fn width_of(fd: i32) -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|c| *c > 0)
    {
        return Some(c);
    }
    #[cfg(unix)]
    {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ only writes a `winsize` into the one passed; a descriptor that is not a
        // terminal makes it fail, which is checked.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
        if rc == 0 && size.ws_col > 0 {
            return Some(size.ws_col as usize);
        }
    }
    #[cfg(not(unix))]
    let _ = fd;
    None
}

/// The styles of one stream: plain text when colour is off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Palette {
    /// Colour on.
    pub colour: bool,
}

impl Palette {
    /// A palette with colour on or off.
    pub fn new(colour: bool) -> Palette {
        Palette { colour }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.colour && !s.is_empty() {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// Green.
    pub fn ok(&self, s: &str) -> String {
        self.paint("32", s)
    }
    /// Bold red.
    pub fn bad(&self, s: &str) -> String {
        self.paint("1;31", s)
    }
    /// Yellow.
    pub fn warn(&self, s: &str) -> String {
        self.paint("33", s)
    }
    /// Dim.
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    /// Bold.
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    /// Cyan (ids and commands to copy).
    pub fn id(&self, s: &str) -> String {
        self.paint("36", s)
    }

    /// `s` in the colour of a step state.
    pub fn state(&self, state: StepState, s: &str) -> String {
        match state {
            StepState::Succeeded => self.ok(s),
            StepState::Failed => self.bad(s),
            StepState::Cancelled => self.warn(s),
            StepState::Skipped | StepState::Pending => self.dim(s),
        }
    }

    /// `s` in the colour of a run status.
    pub fn status(&self, status: RunStatus, s: &str) -> String {
        match status {
            RunStatus::Succeeded => self.ok(s),
            RunStatus::Running | RunStatus::Interrupted => self.warn(s),
            _ => self.bad(s),
        }
    }

    /// A message line as the tools print them: a leading `error:`, `warning:` or `note:` coloured.
    pub fn message(&self, line: &str) -> String {
        if !self.colour {
            return line.to_string();
        }
        for (word, code) in [("error", "1;31"), ("warning", "1;33"), ("note", "1;36")] {
            let Some(rest) = line.strip_prefix(word) else {
                continue;
            };
            // `error:` or a diagnostic's `error[AF0003]:`.
            let head = match rest.as_bytes().first() {
                Some(b':') => 1,
                Some(b'[') => match rest.find("]:") {
                    Some(end) if rest[1..end].bytes().all(|b| b.is_ascii_alphanumeric()) => end + 2,
                    _ => continue,
                },
                _ => continue,
            };
            let prefix = &line[..word.len() + head];
            return format!("{}{}", self.paint(code, prefix), &rest[head..]);
        }
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> TermEnv {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TermEnv::from_fn(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn colour_follows_the_conventions() {
        assert!(env(&[]).colour(true));
        assert!(!env(&[]).colour(false));
        assert!(!env(&[("NO_COLOR", "1")]).colour(true));
        // An empty NO_COLOR does not count.
        assert!(env(&[("NO_COLOR", "")]).colour(true));
        assert!(env(&[("CLICOLOR_FORCE", "1")]).colour(false));
        assert!(!env(&[("CLICOLOR_FORCE", "0")]).colour(false));
        assert!(!env(&[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]).colour(true));
        assert!(!env(&[("CLICOLOR", "0")]).colour(true));
        assert!(!env(&[("TERM", "dumb")]).colour(true));
        assert!(env(&[("TERM", "dumb"), ("CLICOLOR_FORCE", "1")]).colour(true));
        assert!(!env(&[("TERM", "dumb")]).cursor(true));
        assert!(env(&[("TERM", "xterm-256color")]).cursor(true));
        assert!(!env(&[]).cursor(false));
    }

    #[test]
    fn a_palette_without_colour_leaves_text_alone() {
        let off = Palette::new(false);
        let on = Palette::new(true);
        assert_eq!(off.bad("x"), "x");
        assert_eq!(on.bad("x"), "\x1b[1;31mx\x1b[0m");
        assert_eq!(off.message("error: nope"), "error: nope");
        assert_eq!(on.message("error: nope"), "\x1b[1;31merror:\x1b[0m nope");
        assert_eq!(
            on.message("error[AF0003]: nope"),
            "\x1b[1;31merror[AF0003]:\x1b[0m nope"
        );
        assert_eq!(on.message("error[x y]: nope"), "error[x y]: nope");
        assert_eq!(on.message("plain"), "plain");
    }
}
