//! YAML source: reads a plan file (once: [`read`]) and parses its bytes into a `serde_json::Value` and
//! a map from JSON pointers (`/steps/2/submit/payment`) to the positions of values and of mapping keys.
//!
//! Why JSON values and a side table of positions, instead of deserializing YAML straight into the plan
//! types: the JSON Schema validator reports errors by JSON pointer, serde reports them by path, and
//! templating works value by value; one tree of plain values plus one pointer → position map serves all
//! three, and every later error can point at the exact line and column. The tree is built from the
//! `saphyr-parser` event stream, which carries a span for every event, so duplicate keys (an error here,
//! never "last one wins"), anchors and aliases and the YAML 1.2 core schema for scalars are handled in
//! one pass.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, SpannedEventReceiver, Tag};
use serde_json::{Map, Number, Value};

use super::codes::Code;
use super::diag::{Diagnostic, Location};

/// The largest plan file accepted, in bytes (16 MiB).
pub const MAX_PLAN_BYTES: u64 = 16 * 1024 * 1024;

/// The most values (scalars, lists and mappings) a plan may hold, aliases counted as the copies they
/// make. A 10,000-step plan holds about 150,000.
pub const MAX_VALUES: u64 = 1_000_000;

/// The most text (scalars and keys, in bytes) a plan may hold, aliases counted as the copies they make.
pub const MAX_TEXT_BYTES: u64 = 32 * 1024 * 1024;

/// How deep a plan's mappings and lists may nest (aliases included). Plans need a dozen levels; the
/// limit keeps every recursive walk of a plan (the schema, serde, templates) far from the stack's end.
pub const MAX_DEPTH: usize = 64;

use super::diag::MAX_ERRORS;

/// A place in the text: 1-based line and column (in characters) and how many characters the text there
/// spans on that line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    line: u32,
    column: u32,
    width: u32,
}

/// The positions of one value and, below it, of its children, in the order of the value's entries (a
/// mapping's entries keep their order, so child `i` is the position of entry `i`). Walking this tree
/// beside the JSON value finds a pointer's position without a string per node.
#[derive(Clone, Debug)]
struct PosNode {
    pos: Pos,
    /// The key's position, when the value sits in a mapping.
    key: Option<Pos>,
    children: Vec<PosNode>,
}

impl PosNode {
    fn leaf(pos: Pos, key: Option<Pos>) -> PosNode {
        PosNode {
            pos,
            key,
            children: Vec::new(),
        }
    }
}

/// A parsed plan file: its text, its value as JSON, and where every value and key is in the text.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file, as the user named it.
    pub file: String,
    /// The file's text.
    pub text: String,
    /// The document as JSON (YAML 1.2 core schema: quoted scalars are always strings).
    pub value: Value,
    positions: PosNode,
    line_starts: Vec<usize>,
    /// Numbers an `f64` cannot hold exactly, kept as text in `value`: their pointers and places.
    inexact: Vec<(String, Location)>,
}

/// A parsed file kept for placing diagnostics after the load (run-time template errors name its file,
/// line and column): the parse itself, or, once [`ParsedFile::shed`] dropped it, only the file's name
/// and text, parsed again the first time a position is asked for. The parse of the same name and
/// bytes is the same [`Source`], so a diagnostic is placed alike either way; a run keeps the text
/// (a 10,000-step plan's JSON tree and positions were ~26 MB of its memory) and pays the parse only
/// when a run-time error needs a place.
#[derive(Clone, Debug)]
pub struct ParsedFile {
    parsed: std::sync::OnceLock<Source>,
    /// The file's name and text once the parse is shed (empty while it is kept: it holds them).
    file: String,
    text: String,
}

impl ParsedFile {
    /// A file's parse, kept.
    pub fn new(source: Source) -> ParsedFile {
        ParsedFile {
            parsed: std::sync::OnceLock::from(source),
            file: String::new(),
            text: String::new(),
        }
    }

    /// Drops the parse, keeping its file's name and text, and hands back what is dropped (for the
    /// caller to free where it likes). `None` when it is already shed.
    pub fn shed(&mut self) -> Option<Source> {
        let mut source = self.parsed.take()?;
        self.file = std::mem::take(&mut source.file);
        self.text = std::mem::take(&mut source.text);
        Some(source)
    }

    /// Whether the parse is held now (not shed, or parsed again since).
    pub fn is_parsed(&self) -> bool {
        self.parsed.get().is_some()
    }
}

impl std::ops::Deref for ParsedFile {
    type Target = Source;

    fn deref(&self) -> &Source {
        self.parsed.get_or_init(|| {
            // These bytes parsed before (that is how the text was kept), and the parse depends on
            // nothing else.
            parse(&self.file, self.text.as_bytes())
                .unwrap_or_else(|_| unreachable!("a file that parsed parses again"))
        })
    }
}

/// Reads a plan file's bytes, refusing a folder and a file over [`MAX_PLAN_BYTES`]. This is the only
/// place a plan file is read: what is parsed, checked and hashed are these bytes. At most
/// `MAX_PLAN_BYTES + 1` bytes are read, whatever the file is (a pipe, `/dev/zero`).
pub fn read(path: &Path, display_name: &str) -> Result<Vec<u8>, Vec<Diagnostic>> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| vec![io_error(display_name, &e)])?;
    if meta.is_dir() {
        return Err(vec![
            Diagnostic::new(format!(
                "{} is a directory, not a plan file",
                crate::text::shown(display_name)
            ))
            .code(Code::Unreadable),
        ]);
    }
    if meta.len() > MAX_PLAN_BYTES {
        return Err(vec![too_large(display_name, meta.len())]);
    }
    let file = std::fs::File::open(path).map_err(|e| vec![io_error(display_name, &e)])?;
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_PLAN_BYTES) as usize);
    file.take(MAX_PLAN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| vec![io_error(display_name, &e)])?;
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(vec![too_large(display_name, bytes.len() as u64)]);
    }
    Ok(bytes)
}

/// A plan file that cannot be read, in words.
fn io_error(file: &str, e: &std::io::Error) -> Diagnostic {
    let what = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    Diagnostic::new(format!("cannot read {}: {what}", crate::text::shown(file)))
        .code(Code::Unreadable)
}

/// Parses a plan file's bytes. Every problem that can be found is returned (duplicate keys all at once;
/// a YAML syntax error stops the parse, so it comes alone).
pub fn parse(file: &str, bytes: &[u8]) -> Result<Source, Vec<Diagnostic>> {
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(vec![too_large(file, bytes.len() as u64)]);
    }
    if bytes.contains(&0) {
        return Err(vec![
            Diagnostic::new("this is a binary file, not a YAML plan (it contains NUL bytes)")
                .code(Code::Unreadable)
                .at_file(file),
        ]);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            let mut d = Diagnostic::new(format!(
                "the plan is not valid UTF-8 (invalid byte 0x{:02x}); save it as UTF-8",
                bytes[e.valid_up_to()]
            ))
            .code(Code::Unreadable);
            d.location = Some(Location {
                file: file.to_string(),
                line,
                column,
            });
            let line_end = bytes[line_start..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |i| line_start + i);
            let line = String::from_utf8_lossy(&bytes[line_start..line_end]);
            return Err(vec![d.with_source_line(&line, column)]);
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let line_starts = line_starts(text);
    let lines = Lines {
        file,
        text,
        starts: &line_starts,
    };

    let mut builder = Builder::new(text);
    let mut parser = Parser::new_from_str(text);
    // Event by event, so that a limit stops the parse where it is passed.
    while !builder.stop {
        match parser.next_event() {
            None => break,
            Some(Ok((ev, span))) => builder.on_event(ev, span),
            Some(Err(e)) => return Err(vec![syntax_error(&lines, &builder, &e)]),
        }
    }
    if let Some(d) = builder.fatal.take() {
        return Err(vec![lines.place(d)]);
    }
    if !builder.errors.is_empty() {
        let mut errors: Vec<Diagnostic> =
            builder.errors.drain(..).map(|d| lines.place(d)).collect();
        super::diag::cap(&mut errors, builder.stop);
        return Err(errors);
    }
    let (value, positions) = match builder.root.take() {
        None | Some((Value::Null, _)) => {
            let msg = if text.trim().is_empty() {
                "the plan file is empty"
            } else {
                "the plan holds no YAML document (only comments)"
            };
            return Err(vec![
                Diagnostic::new(msg)
                    .code(Code::Syntax)
                    .at_file(file)
                    .help("a plan is a mapping with at least `version`, `name` and `steps`"),
            ]);
        }
        Some(root) => root,
    };
    if !value.is_object() {
        let d = Diagnostic::new(format!(
            "the top level of a plan must be a mapping (`version: 1`, `name: …`, `steps: …`), found {}",
            describe_kind(&value)
        ))
        .code(Code::Syntax);
        return Err(vec![lines.place_pos(d, Some(positions.pos))]);
    }
    let inexact = builder
        .inexact
        .iter()
        .map(|(p, pos)| {
            (
                p.clone(),
                lines.place_pos(Diagnostic::new("").code(Code::Syntax), Some(*pos)),
            )
        })
        .map(|(p, d)| {
            (
                p,
                d.location.unwrap_or_else(|| Location {
                    file: file.to_string(),
                    line: 1,
                    column: 1,
                }),
            )
        })
        .collect();
    Ok(Source {
        file: file.to_string(),
        text: text.to_string(),
        value,
        positions,
        line_starts,
        inexact,
    })
}

/// The error for a file larger than [`MAX_PLAN_BYTES`].
pub fn too_large(file: &str, len: u64) -> Diagnostic {
    let size = if len > MAX_PLAN_BYTES && len == MAX_PLAN_BYTES + 1 {
        "more than 16 MiB".to_string()
    } else {
        format!("{len} bytes")
    };
    Diagnostic::new(format!(
        "the plan file is too large ({size}; the limit is {MAX_PLAN_BYTES} bytes, 16 MiB)"
    ))
    .code(Code::Unreadable)
    .at_file(file)
}

impl Diagnostic {
    /// Places the diagnostic at the start of `file` when nothing better is known.
    pub(crate) fn at_file(mut self, file: &str) -> Diagnostic {
        self.location = Some(Location {
            file: file.to_string(),
            line: 1,
            column: 1,
        });
        self
    }
}

impl Source {
    /// Where the value at `pointer` is; for a path that does not exist, the deepest existing value on it
    /// (so a missing key points at the mapping that lacks it).
    pub fn locate(&self, pointer: &str) -> Location {
        self.location(self.node_pos(pointer))
    }

    /// Where the key of the value at `pointer` is (for unknown or misplaced keys); the value's position
    /// when it has no key (an item of a list), or the deepest existing value on the path.
    pub fn locate_key(&self, pointer: &str) -> Location {
        self.location(self.key_pos(pointer))
    }

    /// Fills in `d`'s location, source line and underline width from the value at `pointer`, and its
    /// field (`steps[2].submit.payment`) unless already set.
    pub fn at(&self, pointer: &str, d: Diagnostic) -> Diagnostic {
        self.fill(pointer, self.node_pos(pointer), d)
    }

    /// As [`Source::at`], but at the part `part` (a byte range) of the string at `pointer` — one
    /// template of a long string — when the string's text maps exactly onto the file: on one line of
    /// a plain, single- or double-quoted scalar, or of a block scalar (`|`, the first line of `>`),
    /// with no escape before it. Otherwise at the whole string, never at a wrong place: the file's
    /// text at the place found must be the part itself.
    /// `text` is the string the range is of: when it is not the value at `pointer` (a prompt read
    /// from a file), the whole value is underlined.
    pub fn at_part(
        &self,
        pointer: &str,
        text: &str,
        part: std::ops::Range<usize>,
        d: Diagnostic,
    ) -> Diagnostic {
        let (node, own) = self.entry(pointer);
        let whole = node.pos;
        let exact = own
            .then(|| self.value.pointer(pointer).and_then(Value::as_str))
            .flatten()
            .filter(|v| *v == text)
            .and_then(|v| self.part_pos(whole, v, part));
        self.fill(pointer, exact.unwrap_or(whole), d)
    }

    /// Where the bytes `part` of `value`, the scalar at `whole`, are in the file (see [`Source::at_part`]).
    fn part_pos(&self, whole: Pos, value: &str, part: std::ops::Range<usize>) -> Option<Pos> {
        let before = value.get(..part.start)?;
        let text = value.get(part.clone())?;
        if text.is_empty() || text.contains('\n') {
            return None;
        }
        let line = self.line(whole.line as usize)?;
        let (at, _) = line
            .char_indices()
            .nth((whole.column as usize).checked_sub(1)?)?;
        let raw = &line[at..];
        let chars = |s: &str| s.chars().count() as u32;
        let (line_no, column) = match raw.chars().next()? {
            // Double-quoted: the file's text after the quote is the value's, up to the part's end
            // (no escape before it).
            '"' => {
                let inner = &raw[1..];
                if before.contains('\n') || inner.get(..part.end)? != value.get(..part.end)? {
                    return None;
                }
                (whole.line, whole.column + 1 + chars(before))
            }
            // Single-quoted: the same, but for `''`, one quote in the value.
            '\'' => {
                let (mut rest, mut v, mut cols) = (&raw[1..], before, 0u32);
                while let Some(c) = v.chars().next() {
                    rest = match c {
                        '\n' => return None,
                        '\'' => rest.strip_prefix("''")?,
                        c => rest.strip_prefix(c)?,
                    };
                    cols += if c == '\'' { 2 } else { 1 };
                    v = &v[c.len_utf8()..];
                }
                (whole.line, whole.column + 1 + cols)
            }
            // Plain, or a block scalar (its position is its first line of text): a line of the
            // value is a line of the file, its indentation in the value (a folded or plain scalar
            // joins lines, which the check of the text found below refuses).
            _ => match before.rsplit_once('\n') {
                None => (whole.line, whole.column + chars(before)),
                Some((head, last)) => (
                    whole.line + head.matches('\n').count() as u32 + 1,
                    whole.column + chars(last),
                ),
            },
        };
        let found = self.line(line_no as usize)?;
        let (at, _) = found.char_indices().nth(column as usize - 1)?;
        found[at..].starts_with(text).then_some(Pos {
            line: line_no,
            column,
            width: chars(text),
        })
    }

    /// As [`Source::at`], but at the key of the value at `pointer`.
    pub fn at_key(&self, pointer: &str, d: Diagnostic) -> Diagnostic {
        self.fill(pointer, self.key_pos(pointer), d)
    }

    /// The source line with the given 1-based number, without its line break.
    pub fn line(&self, line: usize) -> Option<&str> {
        Lines {
            file: &self.file,
            text: &self.text,
            starts: &self.line_starts,
        }
        .line(line)
    }

    /// Whether a value exists at `pointer` in the file as written.
    pub fn has(&self, pointer: &str) -> bool {
        self.entry(pointer).1
    }

    /// The numbers of the file that an `f64` cannot hold exactly (`0.0099999999999999999`, a 30-digit
    /// integer), with their pointers and places. The parse keeps each as its text (a string) in
    /// [`Source::value`], so that nothing is rounded; the plan's schema check decides where that is
    /// what is wanted (amounts, `vars`) and refuses the others.
    pub fn inexact_numbers(&self) -> &[(String, Location)] {
        &self.inexact
    }

    fn fill(&self, pointer: &str, pos: Pos, mut d: Diagnostic) -> Diagnostic {
        if d.field.is_none() {
            let field = pointer_to_field(pointer);
            if !field.is_empty() {
                d.field = Some(field);
            }
        }
        Lines {
            file: &self.file,
            text: &self.text,
            starts: &self.line_starts,
        }
        .place_pos(d, Some(pos))
    }

    fn location(&self, pos: Pos) -> Location {
        Location {
            file: self.file.clone(),
            line: pos.line as usize,
            column: pos.column as usize,
        }
    }

    /// The deepest node on the pointer's path, and whether it is the pointer's own node.
    fn entry(&self, pointer: &str) -> (&PosNode, bool) {
        let mut node = &self.positions;
        let mut value = &self.value;
        for seg in pointer.split('/').skip(1) {
            let index = match value {
                Value::Object(m) => {
                    let key: Cow<'_, str> = if seg.contains('~') {
                        Cow::Owned(seg.replace("~1", "/").replace("~0", "~"))
                    } else {
                        Cow::Borrowed(seg)
                    };
                    // Entries keep their order (serde_json's `preserve_order`), so the key's index
                    // is its child's index.
                    m.iter()
                        .position(|(k, _)| k == key.as_ref())
                        .and_then(|i| m.get(key.as_ref()).map(|v| (i, v)))
                }
                Value::Array(a) => seg
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get(i).map(|v| (i, v))),
                _ => None,
            };
            match index.and_then(|(i, v)| node.children.get(i).map(|n| (n, v))) {
                Some((n, v)) => {
                    node = n;
                    value = v;
                }
                None => return (node, false),
            }
        }
        (node, true)
    }

    fn node_pos(&self, pointer: &str) -> Pos {
        self.entry(pointer).0.pos
    }

    fn key_pos(&self, pointer: &str) -> Pos {
        match self.entry(pointer) {
            (n, true) => n.key.unwrap_or(n.pos),
            (n, false) => n.pos,
        }
    }
}

const START: Pos = Pos {
    line: 1,
    column: 1,
    width: 1,
};

/// A JSON pointer as a readable field path: `/steps/2/submit/payment` → `steps[2].submit.payment`.
pub fn pointer_to_field(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// Escapes a key for use as a JSON pointer segment (RFC 6901).
pub fn escape_pointer_segment(key: &str) -> Cow<'_, str> {
    if key.contains(['~', '/']) {
        Cow::Owned(key.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(key)
    }
}

/// How many values a JSON value holds (itself included) and how many bytes of text (strings and keys).
pub fn size_of(v: &Value) -> (u64, u64) {
    match v {
        Value::String(s) => (1, s.len() as u64),
        Value::Array(a) => a.iter().fold((1, 0), |(n, t), x| {
            let (xn, xt) = size_of(x);
            (n + xn, t + xt)
        }),
        Value::Object(m) => m.iter().fold((1, 0), |(n, t), (k, x)| {
            let (xn, xt) = size_of(x);
            (n + xn, t + xt + k.len() as u64)
        }),
        _ => (1, 0),
    }
}

/// "a list", "a string `\"abc\"`", …: how a value is named in messages.
pub fn describe_kind(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_string(),
        Value::Bool(b) => format!("a boolean `{b}`"),
        Value::Number(n) => format!("a number `{n}`"),
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            let more = if s.chars().count() > 40 { "…" } else { "" };
            format!("a string `{:?}`", format!("{shown}{more}"))
        }
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(
        text.bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i + 1),
    );
    starts
}

/// The text split into lines, for drawing diagnostics.
struct Lines<'a> {
    file: &'a str,
    text: &'a str,
    starts: &'a [usize],
}

impl<'a> Lines<'a> {
    fn line(&self, line: usize) -> Option<&'a str> {
        let start = *self.starts.get(line.checked_sub(1)?)?;
        let end = self.starts.get(line).copied().unwrap_or(self.text.len());
        let l = &self.text[start..end];
        Some(l.trim_end_matches(['\n', '\r']))
    }

    /// Fills the source line and width of a diagnostic that has a location.
    fn place(&self, mut d: Diagnostic) -> Diagnostic {
        if let Some(loc) = &mut d.location {
            loc.file = self.file.to_string();
            if d.source_line.is_none()
                && let Some(line) = self.line(loc.line)
            {
                let column = loc.column;
                d = d.with_source_line(line, column);
            }
        }
        d
    }

    fn place_pos(&self, mut d: Diagnostic, pos: Option<Pos>) -> Diagnostic {
        let pos = pos.unwrap_or(START);
        let (line_no, column) = (pos.line as usize, pos.column as usize);
        d.location = Some(Location {
            file: self.file.to_string(),
            line: line_no,
            column,
        });
        d.width = (pos.width as usize).max(1);
        match self.line(line_no) {
            Some(line) => d.with_source_line(line, column),
            None => {
                d.width = 1;
                d.source_line = None;
                d
            }
        }
    }
}

/// Turns a YAML syntax error into a diagnostic with a human message.
fn syntax_error(lines: &Lines<'_>, builder: &Builder<'_>, e: &ScanError) -> Diagnostic {
    let m = e.marker();
    let mut line = m.line().max(1);
    let mut column = m.col() + 1;
    let info = e.info();
    let text_line = lines.line(line).unwrap_or("");
    // A tab in the indentation is the most common YAML mistake in hand-written files; the scanner's
    // wording varies with the context, so look at the line itself.
    let tab_indented = |l: &usize| {
        lines
            .line(*l)
            .is_some_and(|t| t.trim_start_matches(' ').starts_with('\t'))
    };
    // When the scanner names the tab, its marker is at the token it was reading: the tab is on that
    // line or a later one (a plain scalar read on into the next line). Otherwise a tab on the line
    // before can be what broke this one.
    let tab_line = if info.contains("tab") {
        (line..line.saturating_add(64)).find(tab_indented)
    } else {
        (line.saturating_sub(1).max(1)..=line).find(tab_indented)
    };
    let mut help = None;
    let message = if let Some(l) = tab_line {
        line = l;
        column = lines
            .line(l)
            .and_then(|t| t.find('\t'))
            .map_or(1, |i| i + 1);
        "tabs are not allowed for indentation in YAML; use spaces".to_string()
    } else if text_line.contains("${{") && (builder.in_flow() || flow_before(text_line, column)) {
        help = Some(
            "inside `{…}` or `[…]` YAML reads `{` as the start of a mapping; quote the value, \
             or write the mapping in block style"
                .to_string(),
        );
        if let Some(i) = text_line.find("${{") {
            column = text_line[..i].chars().count() + 1;
        }
        "a template inside `{…}` must be quoted: \"${{ … }}\"".to_string()
    } else if info.contains("tab") {
        "tabs are not allowed for indentation in YAML; use spaces".to_string()
    } else {
        humanize(info)
    };
    let mut d = Diagnostic::new(message).code(Code::Syntax);
    d.help = help;
    d.location = Some(Location {
        file: lines.file.to_string(),
        line,
        column,
    });
    match lines.line(line) {
        Some(text) => d.with_source_line(text, column),
        None => d,
    }
}

/// Whether an unclosed `{` or `[` comes before `column` on the line.
fn flow_before(line: &str, column: usize) -> bool {
    let before: String = line.chars().take(column.saturating_sub(1)).collect();
    let first_template = before.find("${{").unwrap_or(before.len());
    let head = &before[..first_template];
    let opens = head.matches(['{', '[']).count();
    let closes = head.matches(['}', ']']).count();
    opens > closes || line.trim_start().starts_with(['{', '['])
}

/// Rewords the scanner's messages that users meet most often.
fn humanize(info: &str) -> String {
    let reworded = match info {
        "mapping values are not allowed in this context" => {
            "a `key: value` is not allowed here; check the indentation of this line, or quote a value \
             that contains `: `"
        }
        "invalid indentation" | "invalid indentation in flow construct" => {
            "this line is not indented consistently with the lines around it"
        }
        "while parsing a block mapping, did not find expected key" => {
            "this line is not indented consistently with the mapping it belongs to"
        }
        "while parsing a block collection, did not find expected '-' indicator" => {
            "this line is not indented consistently with the list it belongs to (expected `- `)"
        }
        "simple key expected" | "simple key expect ':'" => "expected a `key: value` here",
        "while parsing a flow mapping, did not find expected ',' or '}'" => {
            "unclosed `{…}`: expected `,` or `}`"
        }
        "while parsing a flow sequence, expected ',' or ']'" => {
            "unclosed `[…]`: expected `,` or `]`"
        }
        "while scanning a quoted scalar, found unexpected end of stream" => {
            "a quoted string is not closed"
        }
        _ => "",
    };
    if reworded.is_empty() {
        format!("invalid YAML: {info}")
    } else {
        format!("invalid YAML: {reworded}")
    }
}

/// A collection being built, with the positions of its children in the same order as its entries.
enum Frame {
    Seq {
        items: Vec<Value>,
        nodes: Vec<PosNode>,
        anchor: usize,
        pos: Pos,
        /// What the document held when the collection started, to size it for its anchor.
        start: Size,
        /// The height of its tallest child.
        height: u32,
    },
    Map {
        map: Map<String, Value>,
        nodes: Vec<PosNode>,
        anchor: usize,
        pos: Pos,
        start: Size,
        height: u32,
        /// The key read, waiting for its value: text, position, and whether it is a plain `<<`.
        key: Option<(String, Pos, bool)>,
        /// Keys set by `<<` merges, which explicit keys may override, with their entry's index.
        merged: HashMap<String, usize>,
    },
}

impl Frame {
    fn pos(&self) -> Pos {
        match self {
            Frame::Seq { pos, .. } | Frame::Map { pos, .. } => *pos,
        }
    }
}

/// How much a document (or one value of it) holds: values (scalars and collections) and bytes of text
/// (scalars and keys), aliases counted as the copies they make.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Size {
    values: u64,
    text: u64,
}

/// An anchored value, with what each alias to it adds.
struct Anchored {
    value: Value,
    size: Size,
    /// 0 for a scalar, 1 + the tallest child for a collection.
    height: u32,
}

/// Builds JSON values and positions from parser events.
struct Builder<'a> {
    text: &'a str,
    stack: Vec<Frame>,
    root: Option<(Value, PosNode)>,
    anchors: HashMap<usize, Anchored>,
    errors: Vec<Diagnostic>,
    /// An error that ends the parse (a second document, a limit): reported alone.
    fatal: Option<Diagnostic>,
    /// Stop reading events (a fatal error, or too many errors).
    stop: bool,
    documents: usize,
    /// What the document holds so far.
    size: Size,
    /// Numbers an `f64` cannot hold exactly, kept as their text: pointer and position.
    inexact: Vec<(String, Pos)>,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str) -> Self {
        Builder {
            text,
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
            errors: Vec::new(),
            fatal: None,
            stop: false,
            documents: 0,
            size: Size::default(),
            inexact: Vec::new(),
        }
    }

    fn in_flow(&self) -> bool {
        self.stack
            .iter()
            .any(|f| self.char_at(f.pos()).is_some_and(|c| c == '{' || c == '['))
    }

    fn line_text(&self, line: usize) -> Option<&'a str> {
        self.text.lines().nth(line.checked_sub(1)?)
    }

    fn char_at(&self, pos: Pos) -> Option<char> {
        self.line_text(pos.line as usize)
            .and_then(|l| l.chars().nth(pos.column as usize - 1))
    }

    fn diagnostic_at(pos: Pos, msg: String) -> Diagnostic {
        let mut d = Diagnostic::new(msg).code(Code::Syntax);
        d.location = Some(Location {
            file: String::new(),
            line: pos.line as usize,
            column: pos.column as usize,
        });
        d.width = pos.width as usize;
        d
    }

    fn error_at(&mut self, pos: Pos, msg: String) {
        if self.errors.len() >= MAX_ERRORS {
            self.stop = true;
            return;
        }
        self.errors.push(Self::diagnostic_at(pos, msg));
    }

    /// Ends the parse with one error.
    fn fatal_at(&mut self, pos: Pos, msg: String, help: &str) {
        if self.fatal.is_none() {
            self.fatal = Some(Self::diagnostic_at(pos, msg).help(help));
        }
        self.stop = true;
    }

    /// Counts `add` into the document; false (and a fatal error at `pos`) when that passes a limit.
    fn grow(&mut self, add: Size, pos: Pos, what: &str) -> bool {
        let values = self.size.values.saturating_add(add.values);
        let text = self.size.text.saturating_add(add.text);
        if values > MAX_VALUES {
            self.fatal_at(
                pos,
                format!("{what} makes the plan hold more than {MAX_VALUES} values"),
                "a plan holds at most 1,000,000 values (aliases count as the copies they make); \
                 split it, or use fewer aliases of large anchors",
            );
            return false;
        }
        if text > MAX_TEXT_BYTES {
            self.fatal_at(
                pos,
                format!(
                    "{what} makes the plan hold more than {} MiB of text",
                    MAX_TEXT_BYTES >> 20
                ),
                "aliases count as the copies they make; use fewer aliases of large anchors",
            );
            return false;
        }
        self.size = Size { values, text };
        true
    }

    /// Whether a value `height` tall placed at the current level would nest deeper than allowed.
    fn too_deep(&mut self, height: u32, pos: Pos, what: &str) -> bool {
        let depth = self.stack.len() as u64 + u64::from(height) + 1;
        if depth > MAX_DEPTH as u64 {
            self.fatal_at(
                pos,
                format!("{what} nests the plan more than {MAX_DEPTH} levels deep"),
                "a plan's values may nest at most 64 mappings and lists deep",
            );
            return true;
        }
        false
    }

    /// The JSON pointer of the value being read now (the next item or the pending key's value).
    fn pointer(&self) -> String {
        let mut out = String::new();
        for f in &self.stack {
            out.push('/');
            match f {
                Frame::Seq { items, .. } => out.push_str(&items.len().to_string()),
                Frame::Map { key, .. } => {
                    if let Some((k, _, _)) = key {
                        out.push_str(&escape_pointer_segment(k));
                    }
                }
            }
        }
        out
    }

    /// Whether the next value read is a mapping key.
    fn expects_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    /// Attaches a finished value to its parent (or makes it the root). `size` and `height` are the
    /// value's own, for its anchor.
    fn finish(&mut self, value: Value, mut node: PosNode, anchor: usize, size: Size, height: u32) {
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    value: value.clone(),
                    size,
                    height,
                },
            );
        }
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some((value, node));
            return;
        };
        let (map, nodes, key, merged) = match frame {
            Frame::Seq {
                items,
                nodes,
                height: h,
                ..
            } => {
                items.push(value);
                nodes.push(node);
                *h = (*h).max(height + 1);
                return;
            }
            Frame::Map {
                map,
                nodes,
                key,
                merged,
                height: h,
                ..
            } => {
                *h = (*h).max(height + 1);
                (map, nodes, key, merged)
            }
        };
        let Some((k, kpos, is_merge)) = key.take() else {
            // A collection used as a key: reported when it started; keep parsing.
            *key = Some((value.to_string(), node.pos, false));
            return;
        };
        if is_merge {
            let sources = match value {
                Value::Object(m) => vec![m],
                Value::Array(a) => a
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Object(m) => Some(m),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for m in sources {
                for (mk, mv) in m {
                    if !map.contains_key(&mk) {
                        merged.insert(mk.clone(), nodes.len());
                        map.insert(mk, mv);
                        nodes.push(PosNode::leaf(kpos, Some(kpos)));
                    }
                }
            }
            return;
        }
        node.key = Some(kpos);
        let occupied = match map.entry(k) {
            serde_json::map::Entry::Vacant(slot) => {
                slot.insert(value);
                nodes.push(node);
                return;
            }
            serde_json::map::Entry::Occupied(slot) => slot,
        };
        let k = occupied.key().clone();
        if let Some(index) = merged.remove(&k) {
            // An explicit key overrides a merged one, in place.
            map.insert(k, value);
            if let Some(slot) = nodes.get_mut(index) {
                *slot = node;
            }
            return;
        }
        if self.errors.len() >= MAX_ERRORS {
            self.stop = true;
            return;
        }
        let first = map
            .keys()
            .position(|m| m == &k)
            .and_then(|i| nodes.get(i))
            .and_then(|n| n.key)
            .map(|p| p.line);
        let shown = crate::text::shown(&k);
        let msg = match first {
            Some(l) => format!("duplicate key `{shown}` (first given on line {l})"),
            None => format!("duplicate key `{shown}`"),
        };
        self.error_at(kpos, msg);
        if let Some(d) = self.errors.last_mut() {
            d.help = Some("each key may appear once in a mapping; remove or merge one".to_string());
        }
    }

    fn pos_of(&self, span: &Span) -> Pos {
        let s = span.start;
        let e = span.end;
        let width = if e.line() == s.line() && e.col() > s.col() {
            e.col() - s.col()
        } else {
            1
        };
        Pos {
            line: s.line().max(1) as u32,
            column: (s.col() + 1) as u32,
            width: width as u32,
        }
    }

    fn scalar(
        &mut self,
        text: Cow<'_, str>,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        span: Span,
    ) {
        let pos = self.pos_of(&span);
        let size = Size {
            values: 1,
            text: text.len() as u64,
        };
        if !self.grow(size, pos, "this value") {
            return;
        }
        if self.expects_key() {
            if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                let is_merge = style == ScalarStyle::Plain && text == "<<";
                *key = Some((text.into_owned(), pos, is_merge));
            }
            return;
        }
        let (value, exact) = resolve_scalar(&text, style, tag);
        if !exact {
            let pointer = self.pointer();
            self.inexact.push((pointer, pos));
        }
        self.finish(value, PosNode::leaf(pos, None), anchor, size, 0);
    }

    fn start(&mut self, seq: bool, anchor: usize, span: Span) {
        let pos = Pos {
            width: 1,
            ..self.pos_of(&span)
        };
        let what = if seq { "this list" } else { "this mapping" };
        if !self.grow(Size { values: 1, text: 0 }, pos, what) || self.too_deep(0, pos, what) {
            return;
        }
        if self.expects_key() {
            let braces = self
                .line_text(pos.line as usize)
                .is_some_and(|l| l.contains("{{") && !l.contains("${{"));
            let msg = if braces {
                "YAML reads `{{ … }}` as a mapping: templates are written `${{ … }}`, and a value \
                 that starts with `{` must be quoted"
            } else {
                "a mapping key must be text, not a list or a mapping"
            };
            self.error_at(pos, msg.to_string());
        }
        let start = self.size;
        let frame = if seq {
            Frame::Seq {
                items: Vec::new(),
                nodes: Vec::new(),
                anchor,
                pos,
                start,
                height: 0,
            }
        } else {
            Frame::Map {
                map: Map::new(),
                nodes: Vec::new(),
                anchor,
                pos,
                start,
                height: 0,
                key: None,
                merged: HashMap::new(),
            }
        };
        self.stack.push(frame);
    }

    fn end(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let (value, nodes, anchor, pos, start, height) = match frame {
            Frame::Seq {
                items,
                nodes,
                anchor,
                pos,
                start,
                height,
            } => (Value::Array(items), nodes, anchor, pos, start, height),
            Frame::Map {
                map,
                nodes,
                anchor,
                pos,
                start,
                height,
                ..
            } => (Value::Object(map), nodes, anchor, pos, start, height),
        };
        let node = PosNode {
            pos,
            key: None,
            children: nodes,
        };
        // The collection itself was counted when it started.
        let size = Size {
            values: self.size.values - start.values + 1,
            text: self.size.text - start.text,
        };
        self.finish(value, node, anchor, size, height);
    }

    fn alias(&mut self, id: usize, span: Span) {
        let pos = self.pos_of(&span);
        let Some(a) = self.anchors.get(&id) else {
            self.error_at(pos, "this alias refers to an unknown anchor".to_string());
            self.finish(Value::Null, PosNode::leaf(pos, None), 0, Size::default(), 0);
            return;
        };
        let (size, height) = (a.size, a.height);
        // Count the copy before making it: that is what keeps a "billion laughs" from being built.
        if !self.grow(size, pos, "this alias") || self.too_deep(height, pos, "this alias") {
            return;
        }
        let value = self
            .anchors
            .get(&id)
            .map_or(Value::Null, |a| a.value.clone());
        if self.expects_key() {
            if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                let k = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                *key = Some((k, pos, false));
            }
        } else {
            // The alias's content has no positions of its own: errors in it point here.
            self.finish(value, PosNode::leaf(pos, None), 0, size, height);
        }
    }
}

impl<'input> SpannedEventReceiver<'input> for Builder<'_> {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        if self.stop {
            return;
        }
        match ev {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents == 2 {
                    let pos = self.pos_of(&span);
                    self.fatal_at(
                        pos,
                        "a plan file holds one YAML document; remove the second `---`".to_string(),
                        "",
                    );
                    if let Some(d) = &mut self.fatal {
                        d.help = None;
                    }
                }
            }
            _ if self.documents > 1 => {}
            Event::Scalar(text, style, anchor, tag) => {
                self.scalar(text, style, anchor, tag.as_deref(), span);
            }
            Event::Alias(id) => self.alias(id, span),
            Event::SequenceStart(anchor, _) => self.start(true, anchor, span),
            Event::MappingStart(anchor, _) => self.start(false, anchor, span),
            Event::SequenceEnd | Event::MappingEnd => self.end(),
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

/// Resolves a scalar by the YAML 1.2 core schema: only plain scalars become null, booleans or numbers.
/// The flag is false for a number an `f64` cannot hold exactly (`0.0099999999999999999`, a 30-digit
/// integer): such a number is kept as its text, never rounded (see [`Source::inexact_numbers`]).
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> (Value, bool) {
    if style != ScalarStyle::Plain {
        return (Value::String(text.to_string()), true);
    }
    if let Some(tag) = tag
        && tag.is_yaml_core_schema()
        && tag.suffix == "str"
    {
        return (Value::String(text.to_string()), true);
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return (Value::Null, true),
        "true" | "True" | "TRUE" => return (Value::Bool(true), true),
        "false" | "False" | "FALSE" => return (Value::Bool(false), true),
        _ => {}
    }
    match resolve_number(text) {
        Some((n, true)) => (Value::Number(n), true),
        Some((_, false)) => (Value::String(text.to_string()), false),
        None => (Value::String(text.to_string()), true),
    }
}

/// A core-schema number, and whether its value is exactly the one written.
fn resolve_number(t: &str) -> Option<(Number, bool)> {
    let first = t.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return None;
    }
    if let Some(hex) = t.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16)
            .ok()
            .map(|n| (Number::from(n), true));
    }
    if let Some(oct) = t.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8)
            .ok()
            .map(|n| (Number::from(n), true));
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let unsigned = t.strip_prefix('+').unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = unsigned.parse::<i64>() {
            return Some((Number::from(i), true));
        }
        if let Ok(u) = unsigned.parse::<u64>() {
            return Some((Number::from(u), true));
        }
    } else if !is_core_float(digits) {
        return None;
    }
    let f = unsigned.parse::<f64>().ok()?;
    let n = Number::from_f64(f)?;
    Some((n, f64_is_exactly(unsigned, f)))
}

/// Whether `f` is exactly the decimal number written as `text` (digits, an optional point and
/// exponent): `0.1` is (its shortest text is `0.1`), `0.0099999999999999999` is not (it reads as 0.01).
pub(crate) fn f64_is_exactly(text: &str, f: f64) -> bool {
    match (decimal_digits(text), decimal_digits(&format!("{f:e}"))) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A decimal text as (negative, significant digits, exponent of the last digit), with leading and
/// trailing zeros removed; zero is `(false, "", 0)`. `None` for what is not such a text.
fn decimal_digits(text: &str) -> Option<(bool, String, i64)> {
    let (neg, t) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let all: String = format!("{int}{frac}");
    let exp = exp.checked_sub(frac.len() as i64)?;
    let trimmed_end = all.trim_end_matches('0');
    let exp = exp.checked_add((all.len() - trimmed_end.len()) as i64)?;
    let digits = trimmed_end.trim_start_matches('0');
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    Some((neg, digits.to_string(), exp))
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (sign already removed). `.inf` and `.nan` stay text,
/// since JSON has no such numbers.
fn is_core_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Source {
        match parse("p.yaml", text.as_bytes()) {
            Ok(s) => s,
            Err(e) => panic!("unexpected errors: {e:?}"),
        }
    }

    fn err(text: &[u8]) -> Vec<Diagnostic> {
        match parse("p.yaml", text) {
            Ok(s) => panic!("expected an error, got {:?}", s.value),
            Err(e) => e,
        }
    }

    fn at(d: &Diagnostic) -> (usize, usize) {
        let l = d.location.as_ref().map(|l| (l.line, l.column));
        l.unwrap_or((0, 0))
    }

    #[test]
    fn builds_json_and_positions() {
        let s = ok("version: 1\nname: x\nsteps:\n  - id: a\n    submit:\n      payment: 5\n");
        assert_eq!(
            s.value,
            json!({"version": 1, "name": "x", "steps": [{"id": "a", "submit": {"payment": 5}}]})
        );
        let l = s.locate("/steps/0/submit/payment");
        assert_eq!((l.line, l.column), (6, 16));
        let k = s.locate_key("/steps/0/submit/payment");
        assert_eq!((k.line, k.column), (6, 7));
        let item = s.locate("/steps/0");
        assert_eq!((item.line, item.column), (4, 5));
        // A missing path falls back to the deepest existing value.
        let missing = s.locate("/steps/0/submit/wallet");
        assert_eq!((missing.line, missing.column), (6, 7));
    }

    #[test]
    fn positions_follow_the_written_key_order() {
        // Relies on serde_json's `preserve_order`: child positions are kept by entry index.
        let s = ok("zeta: 1\nalpha: 2\nmid: {y: 3, b: 4}\n");
        assert_eq!(s.locate("/alpha").line, 2);
        assert_eq!(s.locate("/zeta").line, 1);
        assert_eq!(s.locate("/mid/b").column, 16);
        assert_eq!(s.locate_key("/mid/b").column, 13);
        assert!(s.has("/mid/y"));
        assert!(!s.has("/mid/x"));
    }

    #[test]
    fn at_fills_line_width_and_field() {
        let s = ok("name: hello\nsteps: []\n");
        let d = s.at("/name", Diagnostic::new("bad"));
        assert_eq!(d.field.as_deref(), Some("name"));
        assert_eq!(d.source_line.as_deref(), Some("name: hello"));
        assert_eq!(d.width, 5);
        assert_eq!(at(&d), (1, 7));
        let k = s.at_key("/name", Diagnostic::new("bad").field("custom"));
        assert_eq!(k.field.as_deref(), Some("custom"));
        assert_eq!((at(&k), k.width), ((1, 1), 4));
    }

    #[test]
    fn a_shed_parse_places_a_diagnostic_as_the_kept_one() {
        let text = "name: hello\nsteps:\n  - id: a\n    balance: {wallet: w}\n";
        let mut file = ParsedFile::new(ok(text));
        let kept = file.at("/steps/0/balance/wallet", Diagnostic::new("bad"));
        let dropped = file.shed();
        assert!(dropped.is_some() && !file.is_parsed());
        assert!(file.shed().is_none(), "a second shed has nothing to drop");
        let again = file.at("/steps/0/balance/wallet", Diagnostic::new("bad"));
        assert!(
            file.is_parsed(),
            "the first position asked for parses the text again"
        );
        assert_eq!((at(&again), again.width), (at(&kept), kept.width));
        assert_eq!(at(&again), (4, 23));
        assert_eq!(file.file, "p.yaml");
        assert_eq!(again.source_line, kept.source_line);
    }

    #[test]
    fn core_schema_scalars() {
        let s = ok(
            "a: yes\nb: true\nc: ~\nd: 0x1f\ne: 1.5e3\nf: '3'\ng: \"true\"\nh: -7\ni: .inf\nj: 1_000\nk: null\nl: !!str 12\nm: 00:10\n",
        );
        assert_eq!(
            s.value,
            json!({"a": "yes", "b": true, "c": null, "d": 31, "e": 1500.0, "f": "3", "g": "true",
                   "h": -7, "i": ".inf", "j": "1_000", "k": null, "l": "12", "m": "00:10"})
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let s = ok("base: &b {x: 1, y: 2}\nother: *b\nmerged:\n  <<: *b\n  y: 3\n");
        assert_eq!(s.value["other"], json!({"x": 1, "y": 2}));
        assert_eq!(s.value["merged"], json!({"x": 1, "y": 3}));
        let l = s.locate("/other/x");
        assert_eq!(l.line, 2);
    }

    #[test]
    fn duplicate_keys_are_errors_at_the_second_key() {
        let e = err(b"name: a\nsteps: []\nname: b\nsteps: []\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].message, "duplicate key `name` (first given on line 1)");
        assert_eq!(at(&e[0]), (3, 1));
        assert_eq!(e[0].source_line.as_deref(), Some("name: b"));
        assert_eq!(at(&e[1]), (4, 1));
    }

    #[test]
    fn rejects_bad_files() {
        assert!(err(b"")[0].message.contains("empty"));
        assert!(
            err(b"# only\n# comments\n")[0]
                .message
                .contains("only comments")
        );
        assert!(err(b"a: \0\0")[0].message.contains("binary"));
        let e = err(b"name: caf\xe9\n");
        assert!(e[0].message.contains("not valid UTF-8"), "{e:?}");
        assert_eq!(at(&e[0]), (1, 10));
        let e = err(b"- a\n- b\n");
        assert!(e[0].message.contains("found a list"), "{e:?}");
        let e = err(b"name: a\n---\nname: b\n");
        assert!(e[0].message.contains("one YAML document"), "{e:?}");
    }

    #[test]
    fn tabs_get_their_own_message() {
        let e = err(b"steps:\n\t- id: a\n");
        assert_eq!(
            e[0].message,
            "tabs are not allowed for indentation in YAML; use spaces"
        );
        assert_eq!(at(&e[0]).0, 2);
    }

    #[test]
    fn unquoted_template_in_flow_mapping() {
        let e = err(b"steps:\n  - id: b\n    wait: {job: ${{ steps.a.job_id }}}\n");
        assert_eq!(
            e[0].message,
            "a template inside `{…}` must be quoted: \"${{ … }}\""
        );
        assert_eq!(at(&e[0]), (3, 17));
    }

    #[test]
    fn block_templates_are_plain_strings() {
        let s = ok("job: ${{ steps.a.job_id }}\nq: \"${{ x }}\"\n");
        assert_eq!(s.value["job"], json!("${{ steps.a.job_id }}"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = err(b"name: a\nsteps:\n  - id: a\n   bad: 1\n");
        assert!(e[0].message.starts_with("invalid YAML"), "{e:?}");
        assert_eq!(at(&e[0]).0, 4);
    }

    #[test]
    fn too_large_is_rejected_before_parsing() {
        let big = vec![b' '; (MAX_PLAN_BYTES + 1) as usize];
        assert!(err(&big)[0].message.contains("too large"));
    }

    #[test]
    fn pointers_become_fields() {
        assert_eq!(
            pointer_to_field("/steps/2/submit/payment"),
            "steps[2].submit.payment"
        );
        assert_eq!(pointer_to_field(""), "");
        assert_eq!(pointer_to_field("/vars/a~1b"), "vars.a/b");
        assert_eq!(escape_pointer_segment("a/b~"), "a~1b~0");
    }
}
