//! Diagnostics: one problem in a plan, pointing at the file, line, column and field it is about, drawn
//! the way `just` and rustc draw them (`--> file:line:col`, the source line, `^^^` under the text).

use std::fmt;

/// A place in a plan file. Lines and columns count from 1.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Location {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem found in a plan.
///
/// Its texts are kept as they were made (so that secrets can still be redacted from them); they are
/// escaped and cut when the diagnostic is printed or serialized ([`crate::text`]), so a value from a
/// plan never reaches a terminal raw.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Its stable code ([`super::codes::TABLE`]), by the kind of problem.
    pub code: super::codes::Code,
    /// Where it is, when it can be placed.
    pub location: Option<Location>,
    /// The field, as a path: `steps[2].submit.payment`.
    #[serde(serialize_with = "shown_opt")]
    pub field: Option<String>,
    /// What is wrong, in one sentence.
    #[serde(serialize_with = "shown_message")]
    pub message: String,
    /// The closest valid name, for a "did you mean" hint.
    #[serde(serialize_with = "shown_opt")]
    pub suggestion: Option<String>,
    /// A further hint (how to fix it).
    #[serde(serialize_with = "shown_opt")]
    pub help: Option<String>,
    /// Where it was seen from, for a problem in a sub-plan: `included from plan.yaml:12:5 (step
    /// `x`)`, the outermost last.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The source line the location is on (or the part of it around the location, for a long line),
    /// for drawing.
    #[serde(skip)]
    pub source_line: Option<String>,
    /// The column of the line where `source_line` starts (1 unless a long line was cut).
    #[serde(skip)]
    pub line_start: usize,
    /// How many characters to underline.
    #[serde(skip)]
    pub width: usize,
}

/// How many characters of a source line a diagnostic keeps: a longer line is cut around the column.
pub const LINE_CHARS: usize = 160;

fn shown_message<S: serde::Serializer>(m: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::text::message(m))
}

fn shown_opt<S: serde::Serializer>(m: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_some(&*crate::text::message(m)),
        None => s.serialize_none(),
    }
}

impl Diagnostic {
    /// A diagnostic with only a message.
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code: super::codes::Code::Other,
            location: None,
            field: None,
            message: message.into(),
            suggestion: None,
            help: None,
            notes: Vec::new(),
            source_line: None,
            line_start: 1,
            width: 1,
        }
    }
    /// Keeps the source line for drawing: the whole line, or [`LINE_CHARS`] characters of it around
    /// `column` (1-based) when it is longer. `width` is clamped to what is shown.
    pub fn with_source_line(mut self, line: &str, column: usize) -> Self {
        let column = column.max(1);
        let chars = if line.len() <= LINE_CHARS {
            line.chars().count()
        } else {
            LINE_CHARS + 1
        };
        if chars <= LINE_CHARS {
            self.source_line = Some(line.to_string());
            self.line_start = 1;
        } else {
            let start = column.saturating_sub(LINE_CHARS / 3).max(1);
            let window: String = line.chars().skip(start - 1).take(LINE_CHARS).collect();
            self.source_line = Some(window);
            self.line_start = start;
        }
        let shown = self.source_line.as_deref().map_or(0, |l| l.chars().count());
        let room = (shown + self.line_start).saturating_sub(column).max(1);
        self.width = self.width.clamp(1, room);
        self
    }
    /// Gives the code of its kind.
    pub fn code(mut self, code: super::codes::Code) -> Self {
        self.code = code;
        self
    }
    /// Names the field.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    /// Adds a "did you mean" suggestion.
    pub fn suggest(mut self, s: Option<String>) -> Self {
        self.suggestion = s;
        self
    }
    /// Adds a hint.
    pub fn help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }
    /// Adds a note (after the others).
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.notes.push(n.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.draw(f, Level::Error)
    }
}

/// How serious a diagnostic is: an error stops the plan, a warning does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Stops the plan.
    Error,
    /// Does not stop the plan.
    Warning,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
        }
    }
}

impl Diagnostic {
    /// The diagnostic drawn as a warning (`warning[AF0023]: …`).
    pub fn as_warning(&self) -> String {
        struct W<'a>(&'a Diagnostic);
        impl fmt::Display for W<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.draw(f, Level::Warning)
            }
        }
        W(self).to_string()
    }

    /// The diagnostic as one GitHub workflow command (`::error file=…,line=…,col=…,title=…::…`),
    /// the way actionlint prints them: the message, its "did you mean" and its help on one line.
    pub fn github_annotation(&self, level: Level) -> String {
        use crate::text::message;
        let mut props = Vec::new();
        if let Some(loc) = &self.location {
            props.push(format!("file={}", github_property(&message(&loc.file))));
            props.push(format!("line={}", loc.line));
            props.push(format!("col={}", loc.column));
        }
        props.push(format!("title={}", self.code));
        let mut text = message(&self.message).into_owned();
        if let Some(s) = &self.suggestion {
            text.push_str(&format!(" (did you mean `{}`?)", crate::text::shown(s)));
        }
        if let Some(h) = &self.help {
            text.push_str(&format!("\nhelp: {}", message(h)));
        }
        for n in &self.notes {
            text.push_str(&format!("\nnote: {}", message(n)));
        }
        format!(
            "::{} {}::{}",
            level.word(),
            props.join(","),
            github_data(&text)
        )
    }

    fn draw(&self, f: &mut fmt::Formatter<'_>, level: Level) -> fmt::Result {
        use crate::text::{message, shown};
        writeln!(
            f,
            "{}[{}]: {}",
            level.word(),
            self.code,
            message(&self.message)
        )?;
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len();
            let pad = " ".repeat(gutter);
            writeln!(f, "{pad}--> {}", shown_location(loc))?;
            if let Some(line) = &self.source_line {
                // One character per character, so that the caret stays under its column: a tab is a
                // space, any other control character a `?`.
                let drawn: String = line
                    .chars()
                    .take(LINE_CHARS)
                    .map(|c| match c {
                        '\t' => ' ',
                        c if crate::text::is_unsafe(c) => '?',
                        c => c,
                    })
                    .collect();
                let (lead, skip) = if self.line_start > 1 {
                    ("…", self.line_start - 1)
                } else {
                    ("", 0)
                };
                writeln!(f, "{pad} |")?;
                writeln!(f, "{} | {lead}{}", loc.line, drawn.trim_end())?;
                let col = loc.column.saturating_sub(1).saturating_sub(skip) + lead.chars().count();
                writeln!(
                    f,
                    "{pad} | {}{}",
                    " ".repeat(col.min(LINE_CHARS + 1)),
                    "^".repeat(self.width.clamp(1, LINE_CHARS))
                )?;
            }
        }
        if let Some(field) = &self.field {
            writeln!(f, "  = field: {}", message(field))?;
        }
        if let Some(s) = &self.suggestion {
            writeln!(f, "  = help: did you mean `{}`?", shown(s))?;
        }
        if let Some(h) = &self.help {
            writeln!(f, "  = help: {}", message(h))?;
        }
        for n in &self.notes {
            writeln!(f, "  = note: {}", message(n))?;
        }
        Ok(())
    }
}

/// Escapes the message of a GitHub workflow command (`%`, CR and LF), as GitHub's toolkit does.
fn github_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property of a GitHub workflow command: the message's escapes, and `:` and `,`.
fn github_property(s: &str) -> String {
    github_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// A location with its file name escaped (a file may be named anything).
fn shown_location(loc: &Location) -> String {
    format!(
        "{}:{}:{}",
        crate::text::message(&loc.file),
        loc.line,
        loc.column
    )
}

/// The most errors reported for one plan: past this many, the rest are counted, not drawn (a plan of
/// 100,000 mistakes would otherwise print, and hold, 100,000 copies of its lines).
pub const MAX_ERRORS: usize = 100;

/// Keeps the first [`MAX_ERRORS`] errors and says that there are more: `more` when the checker
/// stopped looking (the count is then not known).
pub fn cap(errors: &mut Vec<Diagnostic>, more: bool) {
    if errors.len() <= MAX_ERRORS && !more {
        return;
    }
    let dropped = errors.len().saturating_sub(MAX_ERRORS);
    errors.truncate(MAX_ERRORS);
    let file = errors
        .iter()
        .find_map(|d| d.location.as_ref().map(|l| l.file.clone()));
    let message = if more || dropped == 0 {
        format!("stopped after {MAX_ERRORS} errors; there may be more")
    } else {
        format!("{dropped} more errors not shown (the first {MAX_ERRORS} are)")
    };
    let mut d = Diagnostic::new(message)
        .code(super::codes::Code::TooManyErrors)
        .help("fix these first, then validate again");
    if let Some(file) = file {
        d.location = Some(Location {
            file,
            line: 1,
            column: 1,
        });
    }
    errors.push(d);
}

/// "Did you mean": the one helper, shared with the client rules.
pub use crate::model::suggest::closest as suggest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_annotations_escape_as_github_documents() {
        let mut d = Diagnostic::new("100% wrong")
            .code(super::super::codes::Code::UnknownKey)
            .suggest(Some("name".into()))
            .help("fix it");
        d.location = Some(Location {
            file: "dir,a:b.yaml".into(),
            line: 3,
            column: 7,
        });
        assert_eq!(
            d.github_annotation(Level::Error),
            "::error file=dir%2Ca%3Ab.yaml,line=3,col=7,title=AF0003::100%25 wrong \
             (did you mean `name`?)%0Ahelp: fix it"
        );
        let w = Diagnostic::new("a\nb");
        // A newline in a message is escaped for the terminal first, then nothing is left to encode.
        assert_eq!(
            w.github_annotation(Level::Warning),
            "::warning title=AF0000::a\\nb"
        );
        assert!(w.as_warning().starts_with("warning[AF0000]: a\\nb\n"));
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            suggest("inferense", crate::api::JOB_TYPES),
            Some("inference".into())
        );
        assert_eq!(suggest("video-upscale", crate::api::JOB_TYPES), None);
    }
}
