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

use super::diag::{Diagnostic, Location};

/// The largest plan file accepted, in bytes (16 MiB).
pub const MAX_PLAN_BYTES: u64 = 16 * 1024 * 1024;

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
}

/// Reads a plan file's bytes, refusing a folder and a file over [`MAX_PLAN_BYTES`] before reading
/// it. This is the only place a plan file is read: what is parsed, checked and hashed are these bytes.
pub fn read(path: &Path, display_name: &str) -> Result<Vec<u8>, Vec<Diagnostic>> {
    let meta = std::fs::metadata(path).map_err(|e| vec![io_error(display_name, &e)])?;
    if meta.is_dir() {
        return Err(vec![Diagnostic::new(format!(
            "{display_name} is a directory, not a plan file"
        ))]);
    }
    if meta.len() > MAX_PLAN_BYTES {
        return Err(vec![too_large(display_name, meta.len())]);
    }
    std::fs::read(path).map_err(|e| vec![io_error(display_name, &e)])
}

/// A plan file that cannot be read, in words.
fn io_error(file: &str, e: &std::io::Error) -> Diagnostic {
    let what = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    Diagnostic::new(format!("cannot read {file}: {what}"))
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
            ));
            d.location = Some(Location {
                file: file.to_string(),
                line,
                column,
            });
            let line_end = bytes[line_start..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |i| line_start + i);
            d.source_line =
                Some(String::from_utf8_lossy(&bytes[line_start..line_end]).into_owned());
            return Err(vec![d]);
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
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(vec![syntax_error(&lines, &builder, &e)]);
    }
    if let Some(d) = builder.errors.first()
        && builder.fatal
    {
        return Err(vec![lines.place(d.clone())]);
    }
    if !builder.errors.is_empty() {
        return Err(builder
            .errors
            .iter()
            .map(|d| lines.place(d.clone()))
            .collect());
    }
    let (value, positions) = match builder.root.take() {
        None | Some((Value::Null, _)) => {
            let msg = if text.trim().is_empty() {
                "the plan file is empty"
            } else {
                "the plan holds no YAML document (only comments)"
            };
            return Err(vec![Diagnostic::new(msg).at_file(file).help(
                "a plan is a mapping with at least `version`, `name` and `steps`",
            )]);
        }
        Some(root) => root,
    };
    if !value.is_object() {
        let d = Diagnostic::new(format!(
            "the top level of a plan must be a mapping (`version: 1`, `name: …`, `steps: …`), found {}",
            describe_kind(&value)
        ));
        return Err(vec![lines.place_pos(d, Some(positions.pos))]);
    }
    Ok(Source {
        file: file.to_string(),
        text: text.to_string(),
        value,
        positions,
        line_starts,
    })
}

/// The error for a file larger than [`MAX_PLAN_BYTES`].
pub fn too_large(file: &str, len: u64) -> Diagnostic {
    Diagnostic::new(format!(
        "the plan file is too large ({len} bytes; the limit is {MAX_PLAN_BYTES} bytes, 16 MiB)"
    ))
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
            if d.source_line.is_none() {
                d.source_line = self.line(loc.line).map(str::to_string);
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
        let line = self.line(line_no).map(str::to_string);
        let room = line
            .as_deref()
            .map_or(1, |l| l.chars().count().saturating_sub(column - 1));
        d.width = (pos.width as usize).clamp(1, room.max(1));
        d.source_line = line;
        d
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
    let tab_line = (line.saturating_sub(1)..=line)
        .filter(|l| *l >= 1)
        .find(|l| {
            lines
                .line(*l)
                .is_some_and(|t| t.trim_start_matches(' ').starts_with('\t'))
        });
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
    let mut d = Diagnostic::new(message);
    d.help = help;
    d.location = Some(Location {
        file: lines.file.to_string(),
        line,
        column,
    });
    d.source_line = lines.line(line).map(str::to_string);
    d
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
    },
    Map {
        map: Map<String, Value>,
        nodes: Vec<PosNode>,
        anchor: usize,
        pos: Pos,
        /// The key read, waiting for its value: text, position, and whether it is a plain `<<`.
        key: Option<(String, Pos, bool)>,
        /// Keys set by `<<` merges, which explicit keys may override.
        merged: Vec<String>,
    },
}

impl Frame {
    fn pos(&self) -> Pos {
        match self {
            Frame::Seq { pos, .. } | Frame::Map { pos, .. } => *pos,
        }
    }
}

/// Builds JSON values and positions from parser events.
struct Builder<'a> {
    text: &'a str,
    stack: Vec<Frame>,
    root: Option<(Value, PosNode)>,
    anchors: HashMap<usize, Value>,
    errors: Vec<Diagnostic>,
    fatal: bool,
    documents: usize,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str) -> Self {
        Builder {
            text,
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
            errors: Vec::new(),
            fatal: false,
            documents: 0,
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

    fn error_at(&mut self, pos: Pos, msg: String) {
        let mut d = Diagnostic::new(msg);
        d.location = Some(Location {
            file: String::new(),
            line: pos.line as usize,
            column: pos.column as usize,
        });
        d.width = pos.width as usize;
        self.errors.push(d);
    }

    /// Whether the next value read is a mapping key.
    fn expects_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    /// Attaches a finished value to its parent (or makes it the root).
    fn finish(&mut self, value: Value, mut node: PosNode, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some((value, node));
            return;
        };
        let (map, nodes, key, merged) = match frame {
            Frame::Seq { items, nodes, .. } => {
                items.push(value);
                nodes.push(node);
                return;
            }
            Frame::Map {
                map,
                nodes,
                key,
                merged,
                ..
            } => (map, nodes, key, merged),
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
                        merged.push(mk.clone());
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
        let index = map.keys().position(|m| m == &k);
        if merged.contains(&k) {
            // An explicit key overrides a merged one, in place.
            merged.retain(|m| m != &k);
            map.insert(k, value);
            if let Some(slot) = index.and_then(|i| nodes.get_mut(i)) {
                *slot = node;
            }
            return;
        }
        let first = index
            .and_then(|i| nodes.get(i))
            .and_then(|n| n.key)
            .map(|p| p.line);
        let msg = match first {
            Some(l) => format!("duplicate key `{k}` (first given on line {l})"),
            None => format!("duplicate key `{k}`"),
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
        if self.expects_key() {
            if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                let is_merge = style == ScalarStyle::Plain && text == "<<";
                *key = Some((text.into_owned(), pos, is_merge));
            }
            return;
        }
        let value = resolve_scalar(&text, style, tag);
        self.finish(value, PosNode::leaf(pos, None), anchor);
    }

    fn start(&mut self, seq: bool, anchor: usize, span: Span) {
        let pos = Pos {
            width: 1,
            ..self.pos_of(&span)
        };
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
        let frame = if seq {
            Frame::Seq {
                items: Vec::new(),
                nodes: Vec::new(),
                anchor,
                pos,
            }
        } else {
            Frame::Map {
                map: Map::new(),
                nodes: Vec::new(),
                anchor,
                pos,
                key: None,
                merged: Vec::new(),
            }
        };
        self.stack.push(frame);
    }

    fn end(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let (value, nodes, anchor, pos) = match frame {
            Frame::Seq {
                items,
                nodes,
                anchor,
                pos,
            } => (Value::Array(items), nodes, anchor, pos),
            Frame::Map {
                map,
                nodes,
                anchor,
                pos,
                ..
            } => (Value::Object(map), nodes, anchor, pos),
        };
        let node = PosNode {
            pos,
            key: None,
            children: nodes,
        };
        self.finish(value, node, anchor);
    }
}

impl<'input> SpannedEventReceiver<'input> for Builder<'_> {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        match ev {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents == 2 {
                    let pos = self.pos_of(&span);
                    self.error_at(
                        pos,
                        "a plan file holds one YAML document; remove the second `---`".to_string(),
                    );
                    self.fatal = true;
                }
            }
            _ if self.documents > 1 => {}
            Event::Scalar(text, style, anchor, tag) => {
                self.scalar(text, style, anchor, tag.as_deref(), span);
            }
            Event::Alias(id) => {
                let pos = self.pos_of(&span);
                let value = self.anchors.get(&id).cloned();
                if value.is_none() {
                    self.error_at(pos, "this alias refers to an unknown anchor".to_string());
                }
                let value = value.unwrap_or(Value::Null);
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
                    self.finish(value, PosNode::leaf(pos, None), 0);
                }
            }
            Event::SequenceStart(anchor, _) => self.start(true, anchor, span),
            Event::MappingStart(anchor, _) => self.start(false, anchor, span),
            Event::SequenceEnd | Event::MappingEnd => self.end(),
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

/// Resolves a scalar by the YAML 1.2 core schema: only plain scalars become null, booleans or numbers.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    if let Some(tag) = tag
        && tag.is_yaml_core_schema()
        && tag.suffix == "str"
    {
        return Value::String(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = resolve_number(text) {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

fn resolve_number(t: &str) -> Option<Number> {
    let first = t.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return None;
    }
    if let Some(hex) = t.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(Number::from);
    }
    if let Some(oct) = t.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).ok().map(Number::from);
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let unsigned = t.strip_prefix('+').unwrap_or(t);
        if let Ok(i) = unsigned.parse::<i64>() {
            return Some(Number::from(i));
        }
        if let Ok(u) = unsigned.parse::<u64>() {
            return Some(Number::from(u));
        }
        return unsigned.parse::<f64>().ok().and_then(Number::from_f64);
    }
    if is_core_float(digits) {
        return t
            .strip_prefix('+')
            .unwrap_or(t)
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64);
    }
    None
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
