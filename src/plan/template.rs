//! Templating with MiniJinja and `${{ … }}` delimiters.
//!
//! Plans are parsed first and templates are rendered value by value afterwards, so a template never
//! changes the structure of the YAML and every error keeps the line and column of the value it is in.
//! A string that is exactly one `${{ expr }}` renders to the expression's value (a number stays a
//! number, a list stays a list); any other string renders to a string.
//!
//! Names are checked before anything is rendered: [`Templates::names`] lists the dotted names a
//! template reads (`vars.wallet`, `steps.analyze.job_id`), and the checker compares them with what the
//! context will hold, so that an unknown name gets a "did you mean" instead of MiniJinja's bare
//! "undefined value".

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior};

/// How deeply one `${{ … }}` or `${% … %}` may nest, counting operators, filters, attribute reads and
/// brackets as well as blocks (see [`nesting`]). MiniJinja walks a template's syntax tree recursively:
/// `${{ 1+1+…+1 }}` with 10,000 terms overflows a worker thread's stack (2 MiB) and aborts the
/// process. 200 levels need about 300 KB of stack in a debug build; plans need a dozen.
pub const MAX_TEMPLATE_DEPTH: usize = 200;

/// The fuel of a render that only checks a run-time template's names at load (against placeholders):
/// enough for any real template, small enough that thousands of them stay cheap.
pub const CHECK_FUEL: u64 = 50_000;

/// The names a template context has at its top level.
pub const ROOTS: [&str; 7] = ["vars", "inputs", "env", "secrets", "steps", "matrix", "run"];

/// The fields of `run` a template may read.
pub const RUN_FIELDS: [&str; 3] = ["id", "started_at", "plan"];

/// Global functions MiniJinja provides; a template may call them, so they are not unknown names.
pub const FUNCTIONS: [&str; 7] = [
    "range",
    "dict",
    "namespace",
    "debug",
    "lipsum",
    "cycler",
    "joiner",
];

/// The filters a plan's templates may use: MiniJinja's built-ins and `wordcount`.
pub const FILTERS: [&str; 50] = [
    "safe",
    "escape",
    "e",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "length",
    "count",
    "dictsort",
    "items",
    "reverse",
    "trim",
    "join",
    "split",
    "lines",
    "default",
    "d",
    "round",
    "abs",
    "int",
    "float",
    "attr",
    "first",
    "last",
    "min",
    "max",
    "sort",
    "list",
    "string",
    "bool",
    "batch",
    "slice",
    "sum",
    "indent",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "map",
    "groupby",
    "unique",
    "chain",
    "zip",
    "pprint",
    "format",
    "tojson",
    "urlencode",
    "wordcount",
];

/// The closest known filter to the one named in an "unknown filter" message.
pub fn suggest_filter(message: &str) -> Option<String> {
    let name = message
        .strip_prefix("filter ")?
        .strip_suffix(" is unknown")?;
    super::diag::suggest(name, FILTERS)
}

/// A template that cannot be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template does not parse.
    #[error("template syntax error: {0}")]
    Syntax(String),
    /// Rendering failed (a type error, a filter's error, an undefined value).
    #[error("{0}")]
    Render(String),
    /// The template calls a filter, test or function that does not exist.
    #[error("{0}")]
    Unknown(String),
    /// The template nests deeper than [`MAX_TEMPLATE_DEPTH`].
    #[error(
        "the template nests {0} levels deep (operators, filters, brackets and blocks); at most {MAX_TEMPLATE_DEPTH} are allowed"
    )]
    TooDeep(usize),
    /// The template did more work than one render may (its fuel ran out).
    #[error("the template does more work than one render may ({0} fuel, `limits.template_fuel`)")]
    OutOfFuel(u64),
    /// The plan's templates together did more work than loading a plan may.
    #[error("the plan's templates do more work than loading a plan may ({0} fuel in all)")]
    LoadBudget(u64),
}

/// One MiniJinja environment per plan, configured with the plan syntax and the extra filters, and
/// the budgets of its renders: fuel per render, and while the plan is loaded, fuel for all of them.
#[derive(Clone, Debug)]
pub struct Templates {
    env: Environment<'static>,
    fuel: u64,
    /// Fuel left for the renders of the load; `None` once loaded (a run's renders are bounded one
    /// by one, and by the steps' timeouts).
    budget: Option<Arc<AtomicU64>>,
    /// The load budget it started with, for messages.
    budget_total: u64,
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

/// Counts the words of a text (runs of non-whitespace).
fn wordcount(text: &str) -> usize {
    text.split_whitespace().count()
}

fn syntax_error(e: minijinja::Error) -> TemplateError {
    TemplateError::Syntax(e.detail().unwrap_or("cannot parse").to_string())
}

fn render_error(e: minijinja::Error, fuel: u64) -> TemplateError {
    use minijinja::ErrorKind as K;
    if e.kind() == K::OutOfFuel {
        return TemplateError::OutOfFuel(fuel);
    }
    if matches!(
        e.kind(),
        K::UnknownFilter | K::UnknownTest | K::UnknownFunction
    ) {
        return TemplateError::Unknown(e.detail().unwrap_or(kind_text(e.kind())).to_string());
    }
    let text = match e.detail() {
        Some(d) => format!("{}: {d}", kind_text(e.kind())),
        None => kind_text(e.kind()).to_string(),
    };
    TemplateError::Render(text)
}

fn kind_text(kind: minijinja::ErrorKind) -> &'static str {
    use minijinja::ErrorKind as K;
    match kind {
        K::UndefinedError => "undefined value",
        K::InvalidOperation => "invalid operation",
        K::UnknownFilter => "unknown filter",
        K::UnknownTest => "unknown test",
        K::UnknownFunction => "unknown function",
        K::UnknownMethod => "unknown method",
        K::SyntaxError => "syntax error",
        K::MissingArgument => "missing argument",
        K::TooManyArguments => "too many arguments",
        K::CannotUnpack => "cannot unpack",
        _ => "cannot render",
    }
}

impl Templates {
    /// A fresh environment: `${{ }}` for values, `${% %}` for blocks, `${# #}` for comments, strict
    /// undefined behaviour, and the `wordcount` filter (`tojson` is built in).
    pub fn new() -> Templates {
        Templates::with_fuel(super::limits::TEMPLATE_FUEL, None)
    }

    /// A fresh environment whose renders may use `fuel` each, and `load_budget` in all until
    /// [`Templates::end_load`].
    pub fn with_fuel(fuel: u64, load_budget: Option<u64>) -> Templates {
        let mut env = Environment::new();
        env.set_fuel(Some(fuel));
        let syntax = SyntaxConfig::builder()
            .variable_delimiters("${{", "}}")
            .block_delimiters("${%", "%}")
            .comment_delimiters("${#", "#}")
            .keep_trailing_newline(true)
            .build();
        // The delimiters are fixed and valid; should the builder ever reject them, the default syntax
        // is kept and every template fails its checks loudly rather than silently.
        if let Ok(syntax) = syntax {
            env.set_syntax(syntax);
        }
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("wordcount", |s: String| wordcount(&s));
        super::status::register(&mut env);
        Templates {
            env,
            fuel,
            budget: load_budget.map(|b| Arc::new(AtomicU64::new(b))),
            budget_total: load_budget.unwrap_or(0),
        }
    }

    /// The same environment for checks at load: renders of [`CHECK_FUEL`] each, on the same budget.
    pub fn for_checks(&self) -> Templates {
        let mut t = self.clone();
        t.fuel = self.fuel.min(CHECK_FUEL);
        t.env.set_fuel(Some(t.fuel));
        t
    }

    /// The same environment for checks that know no values ([`super::salvage::template_problems`]):
    /// a name that is not defined renders as nothing instead of failing, so that rendering goes on to
    /// the filters, tests and functions the template calls. Renders of [`CHECK_FUEL`] each, on the
    /// same budget.
    pub fn lenient(&self) -> Templates {
        let mut t = self.for_checks();
        t.env.set_undefined_behavior(UndefinedBehavior::Chainable);
        t
    }

    /// Renders `text` (a condition when `condition`) against no values, to find a filter, test or
    /// function that does not exist: that is the error to look at; others mean nothing here.
    pub fn try_callables(&self, text: &str, condition: bool) -> Result<(), TemplateError> {
        let ctx = minijinja::context! {};
        if condition {
            self.eval_condition(text, &ctx).map(drop)
        } else {
            self.render(text, &ctx).map(drop)
        }
    }

    /// Ends the load: from now on only each render's fuel bounds it.
    pub fn end_load(&mut self) {
        self.budget = None;
    }

    /// Whether the load's budget is spent (always false after the load).
    pub fn budget_spent(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| b.load(Ordering::Relaxed) == 0)
    }

    /// Refuses a render when the load's budget is spent.
    fn before_render(&self) -> Result<(), TemplateError> {
        if self.budget_spent() {
            return Err(TemplateError::LoadBudget(self.budget_total));
        }
        Ok(())
    }

    /// Charges a render to the load's budget: what it consumed, or its whole fuel when that is not
    /// known (it failed).
    fn charge(&self, consumed: Option<u64>) {
        if let Some(b) = &self.budget {
            let used = consumed.unwrap_or(self.fuel).max(1);
            let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(used))
            });
        }
    }

    /// Renders a template (not a lone expression) to text, within the budgets.
    fn render_text(&self, text: &str, ctx: &minijinja::Value) -> Result<String, TemplateError> {
        self.before_render()?;
        let env: &Environment<'_> = &self.env;
        let t = env.template_from_str(text).map_err(syntax_error)?;
        match t.render_captured(ctx.clone()) {
            Ok(c) => {
                self.charge(c.state().fuel_levels().map(|(used, _)| used));
                Ok(c.into_output())
            }
            Err(e) => {
                self.charge(None);
                Err(render_error(e, self.fuel))
            }
        }
    }

    /// Evaluates an expression, within the budgets. It is evaluated as `${% set … = expr %}`, which
    /// gives the same value and tells the fuel it used; an expression that holds `%}` (which would end
    /// that block) is evaluated as an expression, and charged its whole fuel.
    fn eval_expr(
        &self,
        expr: &str,
        ctx: &minijinja::Value,
    ) -> Result<minijinja::Value, TemplateError> {
        self.before_render()?;
        const SLOT: &str = "__aitbc_flow_value";
        if !expr.contains("%}") && !expr.contains("${") {
            let source = format!("${{% set {SLOT} = {expr} %}}");
            let env: &Environment<'_> = &self.env;
            let t = env.template_from_str(&source).map_err(syntax_error)?;
            return match t.render_captured(ctx.clone()) {
                Ok(c) => {
                    self.charge(c.state().fuel_levels().map(|(used, _)| used));
                    Ok(c.state()
                        .lookup(SLOT)
                        .unwrap_or(minijinja::Value::UNDEFINED))
                }
                Err(e) => {
                    self.charge(None);
                    Err(render_error(e, self.fuel))
                }
            };
        }
        let e = self
            .env
            .compile_expression_owned(expr.to_string())
            .map_err(syntax_error)?;
        let v = e.eval(ctx.clone());
        self.charge(None);
        v.map_err(|e| render_error(e, self.fuel))
    }

    /// The dotted names a template reads (`vars.wallet`, `steps.a.output`, `matrix.tone`), with
    /// `steps['some-id']` written as `steps.some-id`.
    pub fn names(&self, text: &str) -> Result<BTreeSet<String>, TemplateError> {
        check_nesting(text)?;
        if let Some(paths) = simple_paths(text) {
            return Ok(paths.into_iter().map(str::to_string).collect());
        }
        let mut out: BTreeSet<String> = match whole_expression(text) {
            Some(expr) => {
                let e = self
                    .env
                    .compile_expression_owned(expr.to_string())
                    .map_err(syntax_error)?;
                e.undeclared_variables(true).into_iter().collect()
            }
            None => {
                let env: &Environment<'_> = &self.env;
                let t = env.template_from_str(text).map_err(syntax_error)?;
                t.undeclared_variables(true).into_iter().collect()
            }
        };
        for id in bracket_step_refs(text) {
            out.remove("steps");
            out.insert(format!("steps.{id}"));
        }
        Ok(out)
    }

    /// Renders a string against `ctx`. A string that is exactly one `${{ expr }}` gives the
    /// expression's value; any other template gives a string; text without a template is returned
    /// as it is.
    pub fn render(
        &self,
        text: &str,
        ctx: &minijinja::Value,
    ) -> Result<serde_json::Value, TemplateError> {
        if !has_template(text) {
            return Ok(serde_json::Value::String(text.to_string()));
        }
        check_nesting(text)?;
        if let Some(expr) = whole_expression(text) {
            let v = self.eval_expr(expr, ctx)?;
            if v.is_undefined() {
                return Err(TemplateError::Render("undefined value".into()));
            }
            return serde_json::to_value(&v).map_err(|e| TemplateError::Render(e.to_string()));
        }
        self.render_text(text, ctx).map(serde_json::Value::String)
    }

    /// Evaluates a condition: `${{ expr }}`, or a bare expression, to true or false.
    pub fn eval_condition(
        &self,
        text: &str,
        ctx: &minijinja::Value,
    ) -> Result<bool, TemplateError> {
        check_nesting(text)?;
        let expr = condition_expression(text);
        match expr {
            Some(expr) => {
                let v = self.eval_expr(expr, ctx)?;
                Ok(v.is_true())
            }
            None => match self.render(text, ctx)? {
                serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => Ok(true),
                    "false" | "no" | "0" | "" => Ok(false),
                    _ => Err(TemplateError::Render(format!(
                        "a condition must render to true or false, not `{s}`"
                    ))),
                },
                v => Ok(truthy(&v)),
            },
        }
    }

    /// The names a condition reads (see [`Templates::names`]).
    pub fn condition_names(&self, text: &str) -> Result<BTreeSet<String>, TemplateError> {
        check_nesting(text)?;
        match condition_expression(text) {
            Some(expr) => {
                let e = self
                    .env
                    .compile_expression_owned(expr.to_string())
                    .map_err(syntax_error)?;
                let mut out: BTreeSet<String> = e.undeclared_variables(true).into_iter().collect();
                for id in bracket_step_refs(text) {
                    out.remove("steps");
                    out.insert(format!("steps.{id}"));
                }
                Ok(out)
            }
            None => self.names(text),
        }
    }
}

/// The byte ranges of the templates in a string: each `${{ … }}`, `${% … %}` and `${# … #}`, its
/// delimiters included. An unclosed one runs to the end.
pub fn template_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("${") {
        let start = from + i;
        let close = match text.as_bytes().get(start + 2) {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            Some(b'#') => "#}",
            _ => {
                from = start + 2;
                continue;
            }
        };
        let end = text[start + 3..]
            .find(close)
            .map_or(text.len(), |j| start + 3 + j + close.len());
        out.push(start..end);
        from = end;
    }
    out
}

/// The template of `text` that a problem is about: the only one; or the one that holds `word` (a
/// name or filter the message names), when only one does; or, for a syntax error, the first that
/// does not parse on its own. `None` when it cannot be told (blocks span templates).
pub fn wrong_template(
    templates: &Templates,
    text: &str,
    word: Option<&str>,
) -> Option<std::ops::Range<usize>> {
    let spans = template_spans(text);
    if spans.iter().any(|r| text[r.clone()].starts_with("${%")) {
        return None;
    }
    if let [only] = spans.as_slice() {
        return Some(only.clone());
    }
    match word {
        Some(w) => {
            let mut holding = spans.iter().filter(|r| text[(*r).clone()].contains(w));
            match (holding.next(), holding.next()) {
                (Some(r), None) => Some(r.clone()),
                _ => None,
            }
        }
        None => spans
            .into_iter()
            .find(|r| templates.names(&text[r.clone()]).is_err()),
    }
}

/// Refuses a template that nests deeper than [`MAX_TEMPLATE_DEPTH`].
pub fn check_nesting(text: &str) -> Result<(), TemplateError> {
    match nesting(text) {
        n if n > MAX_TEMPLATE_DEPTH => Err(TemplateError::TooDeep(n)),
        _ => Ok(()),
    }
}

/// An upper bound on how deep the syntax tree of a template is: the nesting of its blocks plus, in
/// each tag, the operators (`+`, `and`, `|`, `.`, `not`, …) of each expression between commas and the
/// brackets around them, since a chain `a + b + c` is as deep as it has operators. Counted without
/// parsing, so that it costs one pass over the text whatever the text is.
pub fn nesting(text: &str) -> usize {
    let b = text.as_bytes();
    let mut i = 0;
    let mut blocks: usize = 0;
    let mut deepest: usize = 0;
    while i + 2 < b.len() {
        if b[i] != b'$' || b[i + 1] != b'{' {
            i += 1;
            continue;
        }
        let (close, is_block) = match b[i + 2] {
            b'{' => (b'}', false),
            b'%' => (b'%', true),
            b'#' => {
                // A comment: skip to its end.
                i = text[i + 3..].find("#}").map_or(b.len(), |e| i + 3 + e + 2);
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let (depth, end) = tag_depth(b, i + 3, close);
        if is_block {
            let word = text[i + 3..end.min(b.len())]
                .trim_start_matches(['-', '+'])
                .split_whitespace()
                .next()
                .unwrap_or("");
            if word.starts_with("end") {
                blocks = blocks.saturating_sub(1);
            } else if matches!(
                word,
                "if" | "for" | "macro" | "call" | "filter" | "with" | "block" | "autoescape"
            ) || (word == "set" && !text[i + 3..end.min(b.len())].contains('='))
            {
                blocks += 1;
            }
        }
        deepest = deepest.max(blocks + depth);
        i = end + 2;
    }
    deepest
}

/// The depth of the expression(s) in one tag starting at `start`, and where the tag ends (the index of
/// its closing `}}` or `%}`, or the text's end).
fn tag_depth(b: &[u8], start: usize, close: u8) -> (usize, usize) {
    // Per open bracket: operators in the current comma-separated part, the deepest completed group
    // in it, and the deepest part so far.
    struct Level {
        ops: usize,
        inner: usize,
        best: usize,
    }
    let mut stack = vec![Level {
        ops: 0,
        inner: 0,
        best: 0,
    }];
    let mut i = start;
    let mut word_start: Option<usize> = None;
    let end_word = |stack: &mut Vec<Level>, w: &[u8]| {
        if matches!(w, b"and" | b"or" | b"not" | b"in" | b"is" | b"if" | b"else")
            && let Some(l) = stack.last_mut()
        {
            l.ops += 1;
        }
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' {
            word_start.get_or_insert(i);
            i += 1;
            continue;
        }
        if let Some(ws) = word_start.take() {
            end_word(&mut stack, &b[ws..i]);
        }
        if c == close && b.get(i + 1) == Some(&b'}') && stack.len() == 1 {
            break;
        }
        match c {
            b'"' | b'\'' => {
                // A string literal: nothing inside counts.
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                if let Some(l) = stack.last_mut() {
                    l.ops += 1;
                }
                stack.push(Level {
                    ops: 0,
                    inner: 0,
                    best: 0,
                });
            }
            b')' | b']' | b'}' if stack.len() > 1 => {
                if let Some(l) = stack.pop() {
                    let group = l.best.max(l.ops + l.inner) + 1;
                    if let Some(p) = stack.last_mut() {
                        p.inner = p.inner.max(group);
                    }
                }
            }
            b',' | b':' => {
                if let Some(l) = stack.last_mut() {
                    l.best = l.best.max(l.ops + l.inner);
                    l.ops = 0;
                    l.inner = 0;
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'|' | b'.' | b'<' | b'>' | b'=' | b'!' => {
                if let Some(l) = stack.last_mut() {
                    l.ops += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(ws) = word_start.take() {
        end_word(&mut stack, &b[ws..i.min(b.len())]);
    }
    // An unclosed bracket: fold the open levels into the first.
    while stack.len() > 1 {
        if let Some(l) = stack.pop() {
            let group = l.best.max(l.ops + l.inner) + 1;
            if let Some(p) = stack.last_mut() {
                p.inner = p.inner.max(group);
            }
        }
    }
    let top = &stack[0];
    (top.best.max(top.ops + top.inner), i)
}

/// The paths of a template whose every `${{ … }}` is a plain dotted name (`${{ vars.wallet }}`),
/// found without MiniJinja: most plan templates are of this kind, and a plan may hold thousands.
/// `None` for anything else (filters, operators, blocks), which MiniJinja then handles.
pub fn simple_paths(text: &str) -> Option<Vec<&str>> {
    if text.contains("${%") || text.contains("${#") {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        let end = after.find("}}")?;
        let inner = after[..end].trim();
        let simple = !inner.is_empty()
            && inner.split('.').all(|seg| {
                let mut chars = seg.chars();
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !simple {
            return None;
        }
        out.push(inner);
        rest = &after[end + 2..];
    }
    if rest.contains("}}") && out.is_empty() {
        return None;
    }
    Some(out)
}

/// Renders a template made only of plain dotted names by looking each up with `lookup`, without
/// MiniJinja. `None` when that is not possible (a name not found, a list or mapping inside text,
/// anything but plain names): the caller then renders with MiniJinja, which also words the errors.
pub fn render_simple(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    if let Some(expr) = whole_expression(text) {
        let paths = simple_paths(text)?;
        if paths.len() != 1 || paths[0] != expr {
            return None;
        }
        return lookup(expr);
    }
    let paths = simple_paths(text)?;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    for path in paths {
        let start = rest.find("${{")?;
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after.find("}}")?;
        match lookup(path)? {
            serde_json::Value::String(s) => out.push_str(&s),
            serde_json::Value::Number(n) => out.push_str(&n.to_string()),
            _ => return None,
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Some(serde_json::Value::String(out))
}

/// The expression of a condition: the inside of a lone `${{ … }}`, or the whole text when it holds
/// no template at all. `None` for a mixed template.
fn condition_expression(text: &str) -> Option<&str> {
    if let Some(e) = whole_expression(text) {
        return Some(e);
    }
    if !has_template(text) {
        return Some(text.trim());
    }
    None
}

/// JSON truthiness, as Jinja sees it.
fn truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
    }
}

/// A JSON value as a template value.
pub fn to_value(v: &serde_json::Value) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// True when the text holds a template (`${{`, or a `${%` block).
pub fn has_template(text: &str) -> bool {
    // One pass for both openers: two `str::contains` built two substring searchers for every string
    // of every step (5 % of a 10,000-step `validate`).
    let b = text.as_bytes();
    b.windows(3)
        .any(|w| w[0] == b'$' && w[1] == b'{' && matches!(w[2], b'{' | b'%'))
}

/// The expression inside a string that is exactly one `${{ expr }}` (surrounding whitespace allowed).
pub fn whole_expression(text: &str) -> Option<&str> {
    let t = text.trim();
    let inner = t.strip_prefix("${{")?.strip_suffix("}}")?;
    if inner.contains("${{") || inner.contains("}}") || inner.contains("${%") {
        return None;
    }
    Some(inner.trim())
}

/// True when the text holds a `{{ … }}` not preceded by `$`: almost always a template that lost
/// its `$`, which would be sent literally.
pub fn has_bare_braces(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("{{") {
        let at = i + pos;
        let dollar = at > 0 && b[at - 1] == b'$';
        if !dollar && text[at + 2..].contains("}}") {
            return true;
        }
        i = at + 2;
    }
    false
}

/// Ids referenced as `steps['id']` or `steps["id"]` (needed for ids with a `-`).
fn bracket_step_refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("steps[") {
        let after = &rest[pos + 6..];
        let mut chars = after.chars();
        if let Some(q @ ('\'' | '"')) = chars.next() {
            let body = &after[1..];
            if let Some(end) = body.find(q) {
                out.push(body[..end].to_string());
            }
        }
        rest = after;
    }
    out
}

/// Puts `vars`, `inputs`, `env` and `secrets` into a template context, as load-time and run-time
/// rendering both need them.
pub(crate) fn insert_base_context(
    m: &mut serde_json::Map<String, serde_json::Value>,
    vars: &serde_json::Map<String, serde_json::Value>,
    inputs: &serde_json::Map<String, serde_json::Value>,
    env: &std::collections::BTreeMap<String, String>,
    secrets: &std::collections::BTreeMap<String, String>,
) {
    use serde_json::Value;
    let strings = |x: &std::collections::BTreeMap<String, String>| {
        Value::Object(
            x.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    };
    m.insert("vars".into(), Value::Object(vars.clone()));
    m.insert("inputs".into(), Value::Object(inputs.clone()));
    m.insert("env".into(), strings(env));
    m.insert("secrets".into(), strings(secrets));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: serde_json::Value) -> minijinja::Value {
        to_value(&v)
    }

    #[test]
    fn a_template_is_told_by_its_opener_anywhere_in_the_text() {
        for t in [
            "${{ x }}",
            "a ${% if x %}b${% endif %}",
            "$${{x}}",
            "é ${{x}}",
            "${%",
        ] {
            assert!(has_template(t), "{t}");
        }
        for t in [
            "",
            "$",
            "${",
            "${x}",
            "{{ x }}",
            "{% if %}",
            "$ {{x}}",
            "price $5 {{",
        ] {
            assert!(!has_template(t), "{t}");
        }
    }

    #[test]
    fn renders_whole_expressions_to_values_and_mixed_to_text() {
        let t = Templates::new();
        let c = ctx(json!({"vars": {"n": 5, "xs": [1, 2], "name": "x"}}));
        assert_eq!(t.render("${{ vars.n }}", &c).unwrap(), json!(5));
        assert_eq!(t.render(" ${{ vars.xs }} ", &c).unwrap(), json!([1, 2]));
        assert_eq!(t.render("n=${{ vars.n }}", &c).unwrap(), json!("n=5"));
        assert_eq!(t.render("{{ vars.n }}", &c).unwrap(), json!("{{ vars.n }}"));
        assert_eq!(
            t.render("${{ vars.name | upper }}-${{ vars.n * 2 }}", &c)
                .unwrap(),
            json!("X-10")
        );
    }

    #[test]
    fn strict_undefined_fails() {
        let t = Templates::new();
        let c = ctx(json!({"vars": {}}));
        assert!(t.render("${{ vars.nope }}", &c).is_err());
        assert!(t.render("a ${{ vars.nope }}", &c).is_err());
        assert!(matches!(
            t.render("${{ vars. }}", &c),
            Err(TemplateError::Syntax(_))
        ));
    }

    #[test]
    fn filters() {
        let t = Templates::new();
        let c = ctx(json!({"output": "one two  three", "m": {"a": 1}}));
        assert_eq!(t.render("${{ output | wordcount }}", &c).unwrap(), json!(3));
        assert_eq!(
            t.render("${{ m | tojson }}", &c).unwrap(),
            json!("{\"a\": 1}")
        );
    }

    #[test]
    fn finds_dotted_names() {
        let t = Templates::new();
        let n = t
            .names("Summarize ${{ steps.results.output }} for ${{ vars.topic | upper }} ${{ steps['my-step'].job_id }}")
            .unwrap();
        let n: Vec<_> = n.into_iter().collect();
        assert_eq!(
            n,
            vec!["steps.my-step", "steps.results.output", "vars.topic"]
        );
        let n = t.condition_names("steps.check.balance > 100").unwrap();
        assert!(n.contains("steps.check.balance"));
    }

    #[test]
    fn conditions() {
        let t = Templates::new();
        let c = ctx(json!({"steps": {"b": {"balance": 150}}}));
        assert!(
            t.eval_condition("${{ steps.b.balance > 100 }}", &c)
                .unwrap()
        );
        assert!(!t.eval_condition("steps.b.balance > 200", &c).unwrap());
    }

    #[test]
    fn simple_templates_skip_minijinja_with_the_same_result() {
        let t = Templates::new();
        let v = json!({"vars": {"n": 5, "f": 0.5, "b": true, "name": "x", "xs": [1]}});
        let c = ctx(v.clone());
        let lookup = |path: &str| {
            let p = format!("/{}", path.replace('.', "/"));
            v.pointer(&p).cloned()
        };
        for text in [
            "${{ vars.n }}",
            "${{ vars.xs }}",
            "n=${{ vars.n }}, f=${{ vars.f }}, ${{vars.name}}!",
            "plain",
        ] {
            assert_eq!(
                render_simple(text, &lookup),
                Some(t.render(text, &c).unwrap()),
                "{text}"
            );
        }
        assert_eq!(render_simple("${{ vars.nope }}", &lookup), None);
        assert_eq!(render_simple("a ${{ vars.xs }}", &lookup), None);
        assert_eq!(render_simple("b=${{ vars.b }}", &lookup), None);
        assert_eq!(render_simple("${{ vars.n + 1 }}", &lookup), None);
        assert_eq!(
            simple_paths("${{ a.b }} and ${{ c }}"),
            Some(vec!["a.b", "c"])
        );
        assert_eq!(simple_paths("${{ a | upper }}"), None);
        assert_eq!(simple_paths("${% if a %}x${% endif %}"), None);
    }

    /// Runs `f` on a thread with a tokio worker's stack (2 MiB): a stack overflow aborts the test.
    fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn nesting_counts_chains_brackets_and_blocks() {
        assert_eq!(nesting("plain"), 0);
        assert_eq!(nesting("${{ a }}"), 0);
        assert_eq!(nesting("${{ 1+1+1 }}"), 2);
        assert_eq!(nesting("${{ a.b.c }}"), 2);
        assert_eq!(nesting("${{ x[0][0][0] }}"), 4);
        // A long list is wide, not deep.
        let list = format!("${{{{ [{}] }}}}", vec!["a.b"; 1000].join(", "));
        assert!(nesting(&list) < 5, "{}", nesting(&list));
        // Strings and comments do not count.
        assert_eq!(nesting("${{ '+ + + +' }}${# + + + #}"), 0);
        assert_eq!(
            nesting("${% if a %}${% if b %}${{ x + y }}${% endif %}${% endif %}"),
            3
        );
        assert_eq!(nesting(&format!("${{{{ {}1 }}}}", "not ".repeat(50))), 50);
    }

    #[test]
    fn templates_at_the_limit_fit_a_worker_stack_and_deeper_ones_are_refused() {
        let depth = MAX_TEMPLATE_DEPTH;
        let at_limit = [
            format!("${{{{ {} }}}}", vec!["1"; depth].join("+")),
            format!("${{{{ {}1 }}}}", "not ".repeat(depth)),
            format!("${{{{ {}1 }}}}", "-".repeat(depth)),
            format!("${{{{ x{} }}}}", ".b".repeat(depth)),
            format!("${{{{ 1{} }}}}", "|abs".repeat(depth)),
            format!(
                "{}${{{{ {} }}}}{}",
                "${% if true %}".repeat(100),
                vec!["1"; depth - 100].join("~"),
                "${% endif %}".repeat(100)
            ),
        ];
        for text in at_limit {
            assert!(
                nesting(&text) <= depth + 1,
                "{} for {text:.60}",
                nesting(&text)
            );
            on_small_stack(move || {
                let t = Templates::new();
                let c = to_value(&json!({"x": {"b": {}}}));
                // Errors are fine (an undefined attribute); crashing is not.
                let _ = t.names(&text);
                let _ = t.render(&text, &c);
                let _ = t.render(&format!("a {text}"), &c);
                let _ = t.eval_condition(&text, &c);
            });
        }
        on_small_stack(|| {
            let t = Templates::new();
            let c = to_value(&json!({}));
            let deep = format!("${{{{ {} }}}}", vec!["1"; 30_000].join("+"));
            assert!(matches!(t.names(&deep), Err(TemplateError::TooDeep(_))));
            assert!(matches!(
                t.render(&deep, &c),
                Err(TemplateError::TooDeep(_))
            ));
            assert!(matches!(
                t.eval_condition(&deep, &c),
                Err(TemplateError::TooDeep(_))
            ));
        });
    }

    #[test]
    fn fuel_bounds_each_render_and_the_load() {
        let c = to_value(&json!({"x": "x"}));
        let t = Templates::with_fuel(10_000, None);
        let loops =
            "${% for i in range(1000) %}${% for j in range(1000) %}${% endfor %}${% endfor %}";
        assert_eq!(t.render(loops, &c), Err(TemplateError::OutOfFuel(10_000)));
        assert_eq!(
            t.render("${{ x * 100000000 }}", &c),
            Err(TemplateError::OutOfFuel(10_000))
        );
        // Whole expressions keep their value, and tell the fuel they used.
        let t = Templates::with_fuel(10_000, Some(25_000));
        assert_eq!(t.render("${{ 2 * 3 }}", &c).unwrap(), json!(6));
        for _ in 0..100 {
            assert!(t.render("${{ x ~ 'y' }}", &c).is_ok());
        }
        // Each failed render is charged its whole fuel: three of them spend the load's budget.
        for _ in 0..3 {
            let _ = t.render(loops, &c);
        }
        assert!(t.budget_spent());
        assert_eq!(
            t.render("${{ x ~ 'y' }}", &c),
            Err(TemplateError::LoadBudget(25_000))
        );
        // After the load, only each render's fuel counts.
        let mut t = t;
        t.end_load();
        assert!(t.render("${{ x ~ 'y' }}", &c).is_ok());
    }

    #[test]
    fn bare_braces() {
        assert!(has_bare_braces("hello {{ vars.x }}"));
        assert!(!has_bare_braces("hello ${{ vars.x }}"));
        assert!(!has_bare_braces("a {{ b"));
        assert_eq!(whole_expression(" ${{ a.b }} "), Some("a.b"));
        assert_eq!(whole_expression("${{ a }} ${{ b }}"), None);
    }
}
