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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Where it is, when it can be placed.
    pub location: Option<Location>,
    /// The field, as a path: `steps[2].submit.payment`.
    pub field: Option<String>,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The closest valid name, for a "did you mean" hint.
    pub suggestion: Option<String>,
    /// A further hint (how to fix it).
    pub help: Option<String>,
    /// The source line the location is on, for drawing.
    #[serde(skip)]
    pub source_line: Option<String>,
    /// How many characters to underline.
    #[serde(skip)]
    pub width: usize,
}

impl Diagnostic {
    /// A diagnostic with only a message.
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: None,
            field: None,
            message: message.into(),
            suggestion: None,
            help: None,
            source_line: None,
            width: 1,
        }
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
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len();
            let pad = " ".repeat(gutter);
            writeln!(f, "{pad}--> {loc}")?;
            if let Some(line) = &self.source_line {
                let shown: String = line.replace('\t', " ");
                writeln!(f, "{pad} |")?;
                writeln!(f, "{} | {}", loc.line, shown.trim_end())?;
                let col = loc.column.saturating_sub(1);
                writeln!(
                    f,
                    "{pad} | {}{}",
                    " ".repeat(col),
                    "^".repeat(self.width.max(1))
                )?;
            }
        }
        if let Some(field) = &self.field {
            writeln!(f, "  = field: {field}")?;
        }
        if let Some(s) = &self.suggestion {
            writeln!(f, "  = help: did you mean `{s}`?")?;
        }
        if let Some(h) = &self.help {
            writeln!(f, "  = help: {h}")?;
        }
        Ok(())
    }
}

/// "Did you mean": the one helper, shared with the client rules.
pub use crate::model::suggest::closest as suggest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            suggest("inferense", crate::api::JOB_TYPES),
            Some("inference".into())
        );
        assert_eq!(suggest("video-upscale", crate::api::JOB_TYPES), None);
    }
}
