//! The plan's JSON Schema, and loading a plan file up to a typed [`Plan`].
//!
//! The schema is generated from [`super::types::Plan`] (so the doc comments become the descriptions an
//! editor shows), with a few rules added that the types cannot say: the version is 1, a step has exactly
//! one operation, a retry makes at least one attempt. `schemas/plan.schema.json` is this schema, committed.
//!
//! [`validate`] runs the `jsonschema` validator over the parsed [`Source`] and turns each error into a
//! [`Diagnostic`] in the user's words, placed at the file, line and column of the value (or of the key,
//! for an unknown key). The noise that `anyOf`/`oneOf` produce (one error per branch) is reduced to the
//! one error that matters. [`load_raw`] then adds the checks a schema cannot express and deserializes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, ValidationError, Validator};
use serde::Deserialize;
use serde_json::{Value, json};

use super::codes::Code;
use super::diag::{Diagnostic, suggest};
use super::source::{self, Source, describe_kind, escape_pointer_segment, pointer_to_field};
use super::types::{Plan, STEP_KINDS};
use crate::duration::parse_duration;

/// The `$id` of the plan schema.
pub const PLAN_SCHEMA_ID: &str = "urn:aitbc-flow:schema:plan";

/// The plan format's JSON Schema (draft 2020-12), generated from the Rust types.
pub fn plan_schema() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Plan>();
    let mut v = schema.to_value();
    if let Some(root) = v.as_object_mut() {
        // Put `$schema`, `$id` and `title` first, so the committed file reads well.
        let mut head = serde_json::Map::new();
        head.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        head.insert("$id".into(), json!(PLAN_SCHEMA_ID));
        head.insert("title".into(), json!("aitbc-flow plan"));
        root.remove("$schema");
        root.remove("title");
        let rest = std::mem::take(root);
        head.extend(rest);
        *root = head;
    }
    if let Some(version) = v.pointer_mut("/properties/version") {
        version["const"] = json!(1);
    }
    if let Some(attempts) = v.pointer_mut("/$defs/RetrySpec/properties/max_attempts") {
        attempts["minimum"] = json!(1);
    }
    if let Some(step) = v.pointer_mut("/$defs/Step") {
        step["oneOf"] = Value::Array(
            STEP_KINDS
                .iter()
                .map(|k| json!({"required": [k], "title": k}))
                .collect(),
        );
    }
    v
}

/// The committed `schemas/plan.schema.json`, built in. It is [`plan_schema`] as text (a test checks
/// that the two are equal), and parsing it is several times cheaper than generating the schema from the
/// types at every start of the process.
const COMMITTED_PLAN_SCHEMA: &str = include_str!("../../schemas/plan.schema.json");

/// The committed plan schema compiled into code when the crate is built (`jsonschema`'s `validator`
/// macro): it answers whether a plan is valid without compiling the schema at every start of the
/// process (~2.5 ms, most of a small plan's `validate`). Errors still come from the runtime
/// [`validator`], whose errors the messages below are written for; a test checks that the two agree
/// on every plan of the fixtures.
#[jsonschema::validator(
    path = "schemas/plan.schema.json",
    draft = Draft202012,
    methods = { is_valid = true, validate = false, iter_errors = false }
)]
struct BuiltPlanSchema;

/// Whether a parsed plan is valid by the plan schema (the build-time validator).
pub(super) fn is_valid(value: &Value) -> bool {
    BuiltPlanSchema::is_valid(value)
}

pub(super) fn validator() -> Option<&'static Validator> {
    static VALIDATOR: OnceLock<Option<Validator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| jsonschema::draft202012::new(schema()).ok())
        .as_ref()
}

/// The plan schema the validator uses and messages look up: the committed file, parsed once.
fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::from_str(COMMITTED_PLAN_SCHEMA).unwrap_or_else(|_| plan_schema())
    })
}

/// Checks a parsed plan against the schema and the rules the schema cannot express. Returns every
/// problem, sorted by position.
pub fn validate(source: &Source) -> Vec<Diagnostic> {
    let inexact = inexact_numbers(source);
    if !inexact.is_empty() {
        return finish(inexact);
    }
    let mut out = Vec::new();
    // Most plans are valid: the build-time validator says so without compiling the schema, which
    // is compiled only to say what is wrong.
    if !is_valid(&source.value) {
        match validator() {
            Some(v) => {
                // A hostile plan can break the schema a million times: the first errors are enough.
                for err in v
                    .iter_errors(&source.value)
                    .take(4 * super::diag::MAX_ERRORS)
                {
                    map_error(source, &err, &mut out);
                }
            }
            None => out.push(Diagnostic::new(
                "internal error: the plan schema does not compile",
            )),
        }
    }
    structural(source, &mut out);
    finish(out)
}

/// Sorts by position, drops repeats, and keeps the first [`super::diag::MAX_ERRORS`].
fn finish(mut out: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = HashSet::new();
    out.retain(|d| seen.insert((d.location.clone(), d.message.clone())));
    out.sort_by(|a, b| a.location.cmp(&b.location));
    super::diag::cap(&mut out, false);
    out
}

/// Whether a number written at `pointer` is read from its text, every digit kept: an amount (a
/// `payment`, a balance `min`, the policy's amounts) or a variable (templates read it as text, and an
/// amount rendered from it is exact).
fn keeps_every_digit(pointer: &str) -> bool {
    let segs: Vec<&str> = pointer.split('/').skip(1).collect();
    matches!(
        segs.as_slice(),
        ["vars", ..]
            | ["inputs", _, "default" | "enum", ..]
            | ["steps", _, "submit" | "job", "payment"]
            | ["steps", _, "balance", "min"]
            | ["policy", "min_payment", _]
            | ["policy", "max_payment"]
    )
}

/// Numbers an `f64` cannot hold exactly, outside the places that keep every digit: refused, since
/// they would be sent rounded.
fn inexact_numbers(src: &Source) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (pointer, _) in src.inexact_numbers() {
        if keeps_every_digit(pointer) {
            continue;
        }
        let text = src
            .value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("");
        let read = text
            .trim_start_matches('+')
            .parse::<f64>()
            .map(|f| format!(" (it would be read as {f})"))
            .unwrap_or_default();
        out.push(
            src.at(
                pointer,
                Diagnostic::new(format!(
                    "`{}` has more digits than a number here can hold exactly{read}",
                    crate::text::shown(text)
                ))
                .code(Code::InvalidValue)
                .help(
                    "write at most 15 significant digits; amounts (`payment`, `min`, the policy's \
                     amounts) and `vars` keep every digit",
                ),
            ),
        );
        if out.len() > super::diag::MAX_ERRORS {
            break;
        }
    }
    out
}

/// Reads, parses, validates and deserializes a plan file. `display_name` is how the file is named in
/// messages. Every problem found is returned.
pub fn load_raw(path: &Path, display_name: &str) -> Result<(Source, Plan), Vec<Diagnostic>> {
    let bytes = source::read(path, display_name)?;
    let src = source::parse(display_name, &bytes)?;
    let plan = check(&src)?;
    Ok((src, plan))
}

/// Validates a parsed plan and deserializes it.
pub fn check(src: &Source) -> Result<Plan, Vec<Diagnostic>> {
    let diags = validate(src);
    if !diags.is_empty() {
        return Err(diags);
    }
    // The plain deserializer is faster; the path is only needed to place an error.
    if let Ok(plan) = Plan::deserialize(&src.value) {
        return Ok(plan);
    }
    serde_path_to_error::deserialize::<_, Plan>(&src.value).map_err(|e| {
        let mut ptr = String::new();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => {
                    ptr.push('/');
                    ptr.push_str(&index.to_string());
                }
                serde_path_to_error::Segment::Map { key } => {
                    ptr.push('/');
                    ptr.push_str(&escape_pointer_segment(key));
                }
                _ => {}
            }
        }
        vec![src.at(&ptr, Diagnostic::new(e.inner().to_string()))]
    })
}

/// Where a pointer is, in words: "at the top level of the plan", "in step `a`", "in `submit` of step
/// `a`", "in `defaults.retry`".
fn context(src: &Source, ptr: &str) -> String {
    if ptr.is_empty() {
        return "at the top level of the plan".to_string();
    }
    let mut segs = ptr.split('/').skip(1);
    if segs.next() == Some("steps")
        && let Some(i) = segs.next()
    {
        let step = step_name(src, i);
        let rest: Vec<&str> = segs.collect();
        if rest.is_empty() {
            return format!("in {step}");
        }
        let field = pointer_to_field(&format!("/{}", rest.join("/")));
        return format!("in `{field}` of {step}");
    }
    format!("in `{}`", pointer_to_field(ptr))
}

/// "step `analyze`", or "steps[3]" when the step has no usable id.
fn step_name(src: &Source, index: &str) -> String {
    match src.value.pointer(&format!("/steps/{index}/id")) {
        Some(Value::String(id)) if !id.is_empty() => format!("step `{id}`"),
        _ => format!("steps[{index}]"),
    }
}

fn is_step_pointer(ptr: &str) -> bool {
    let mut segs = ptr.split('/').skip(1);
    segs.next() == Some("steps")
        && segs
            .next()
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        && segs.next().is_none()
}

/// Follows a schema path (`/properties/steps/items/$ref/properties/id`) through the plan schema.
/// Returns the node and the name of the last `$defs` entry passed through.
fn schema_at(path: &str) -> (Option<&'static Value>, Option<&'static str>) {
    let root = schema();
    let mut node = root;
    let mut def = None;
    let mut prev_defs = false;
    for seg in path.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg == "$ref" {
            let Some(target) = node.get("$ref").and_then(Value::as_str) else {
                return (None, def);
            };
            let Some(local) = target.strip_prefix('#') else {
                return (None, def);
            };
            def = local.rsplit('/').next();
            match root.pointer(local) {
                Some(n) => node = n,
                None => return (None, def),
            }
            continue;
        }
        let in_defs = prev_defs;
        prev_defs = seg == "$defs";
        let next = match node {
            Value::Object(m) => match m.get_key_value(&seg) {
                Some((k, n)) => {
                    if in_defs {
                        def = Some(k.as_str());
                    }
                    Some(n)
                }
                None => None,
            },
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return (None, def),
        }
    }
    (Some(node), def)
}

/// How the values a `$defs` entry accepts are named in messages.
fn def_label(def: &str) -> Option<&'static str> {
    Some(match def {
        "Duration" => "a duration such as `300s`",
        "Money" => "an amount such as `500`",
        "Amount" => "an amount such as `500` (or a template)",
        "Num" => "a number (or a template)",
        "When" => "`true`, `false` or a template expression",
        "Backoff" | "Jitter" | "RetryOn" | "OnTimeout" | "Overlap" | "CatchUp" => return None,
        _ => return None,
    })
}

fn type_name(t: JsonType) -> &'static str {
    match t {
        JsonType::Array => "a list",
        JsonType::Boolean => "a boolean",
        JsonType::Integer => "a whole number",
        JsonType::Null => "nothing",
        JsonType::Number => "a number",
        JsonType::Object => "a mapping",
        JsonType::String => "a string",
    }
}

/// Whether an error only says "this value has the wrong type" (for every branch, when it branches),
/// about the value itself rather than something inside it.
fn is_type_mismatch(err: &ValidationError<'_>) -> bool {
    let ptr = err.instance_path().as_str();
    let here = |e: &ValidationError<'_>| e.instance_path().as_str() == ptr && is_type_mismatch(e);
    match err.kind() {
        ValidationErrorKind::Type { .. } => true,
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            context
                .iter()
                .all(|branch| !branch.is_empty() && branch.iter().all(here))
        }
        _ => false,
    }
}

/// Whether an error says "not one of these fixed values" about the value itself.
fn is_constant(err: &ValidationError<'_>) -> bool {
    let ptr = err.instance_path().as_str();
    let here = |e: &ValidationError<'_>| e.instance_path().as_str() == ptr && is_constant(e);
    match err.kind() {
        ValidationErrorKind::Constant { .. } | ValidationErrorKind::Enum { .. } => true,
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            context
                .iter()
                .all(|branch| !branch.is_empty() && branch.iter().all(here))
        }
        _ => false,
    }
}

/// The names of what a type mismatch would have accepted.
fn expected_types(err: &ValidationError<'_>, out: &mut Vec<&'static str>) {
    match err.kind() {
        ValidationErrorKind::Type { kind } => {
            let (_, def) = schema_at(err.schema_path().as_str());
            if let Some(label) = def.and_then(def_label) {
                if !out.contains(&label) {
                    out.push(label);
                }
                return;
            }
            let types: Vec<JsonType> = match kind {
                TypeKind::Single(t) => vec![*t],
                TypeKind::Multiple(set) => set.iter().collect(),
            };
            for t in types {
                let name = type_name(t);
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            for e in context.iter().flatten() {
                expected_types(e, out);
            }
        }
        _ => {}
    }
}

fn constants(err: &ValidationError<'_>, out: &mut Vec<String>) {
    match err.kind() {
        ValidationErrorKind::Constant { expected_value } => out.push(show(expected_value)),
        ValidationErrorKind::Enum { options } => {
            if let Value::Array(a) = options.as_ref() {
                out.extend(a.iter().map(show));
            }
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            for e in context.iter().flatten() {
                constants(e, out);
            }
        }
        _ => {}
    }
}

/// A value as written in a message: `fixed`, `3`.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The last key of a pointer: `/defaults/retry/max` → `max`.
fn last_key(ptr: &str) -> String {
    ptr.rsplit('/')
        .next()
        .unwrap_or("")
        .replace("~1", "/")
        .replace("~0", "~")
}

fn map_error(src: &Source, err: &ValidationError<'_>, out: &mut Vec<Diagnostic>) {
    let ptr = err.instance_path().as_str();
    let found = src.value.pointer(ptr).unwrap_or(&Value::Null);
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let path = err.schema_path().as_str();
            let parent = path.strip_suffix("/additionalProperties").unwrap_or(path);
            let (node, _) = schema_at(parent);
            let valid: Vec<&str> = node
                .and_then(|n| n.get("properties"))
                .and_then(Value::as_object)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            for key in unexpected {
                let kptr = format!("{ptr}/{}", escape_pointer_segment(key));
                let suggestion = suggest(key, valid.iter().copied());
                let mut d = Diagnostic::new(format!("unknown key `{key}` {}", context(src, ptr)))
                    .code(Code::UnknownKey)
                    .suggest(suggestion.clone());
                if suggestion.is_none() && !valid.is_empty() {
                    d = d.help(format!(
                        "valid keys here: {}",
                        valid
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                out.push(src.at_key(&kptr, d));
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            let d = Diagnostic::new(format!(
                "missing required key `{name}` {}",
                context(src, ptr)
            ))
            .code(Code::MissingKey);
            let d = if ptr.is_empty() {
                d.help(
                    "a plan needs at least `version: 1`, a `name` and a list of `steps`"
                        .to_string(),
                )
            } else {
                d
            };
            out.push(src.at_key(ptr, d));
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. }
            if is_step_pointer(ptr) =>
        {
            // A step with no operation or with several: reported once by `structural`.
        }
        _ if is_constant(err) => {
            let mut options = Vec::new();
            constants(err, &mut options);
            let key = last_key(ptr);
            let what = if key.bytes().all(|b| b.is_ascii_digit()) {
                format!(
                    "`{}` value",
                    last_key(ptr.rsplit_once('/').map_or("", |(p, _)| p))
                )
            } else {
                format!("`{key}`")
            };
            if ptr == "/version" && !found.is_number() {
                // The type error already says it.
                return;
            }
            let d = if ptr == "/version" {
                Diagnostic::new(format!(
                    "unsupported plan version {}: this aitbc-flow reads version 1",
                    show(found)
                ))
                .code(Code::InvalidEnum)
            } else {
                Diagnostic::new(format!(
                    "{} is not a valid {what}: expected {}",
                    match found {
                        Value::String(s) => format!("`{}`", crate::text::shown(s)),
                        other => describe_kind(other),
                    },
                    join_or(&options)
                ))
                .code(Code::InvalidEnum)
                .suggest(found.as_str().and_then(|s| {
                    let opts: Vec<String> = options
                        .iter()
                        .map(|o| o.trim_matches('`').to_string())
                        .collect();
                    suggest(s, opts.iter().map(String::as_str))
                }))
            };
            out.push(src.at(ptr, d));
        }
        _ if is_type_mismatch(err) => {
            let mut expected = Vec::new();
            expected_types(err, &mut expected);
            if expected.len() > 1 {
                expected.retain(|t| *t != "nothing");
            }
            // An amount-or-template already says "an amount".
            if expected
                .iter()
                .any(|t| t.starts_with("an amount such as `500` ("))
            {
                expected.retain(|t| *t != "an amount such as `500`");
            }
            // A whole number is also a number: say "a number" once.
            if expected.contains(&"a number") {
                expected.retain(|t| *t != "a whole number");
            }
            let expected: Vec<String> = expected.into_iter().map(str::to_string).collect();
            let mut d = if found.is_null() && !ptr.is_empty() {
                Diagnostic::new(format!(
                    "`{}` has no value: expected {}",
                    last_key(ptr),
                    join_or(&expected)
                ))
                .code(Code::TypeMismatch)
            } else {
                Diagnostic::new(format!(
                    "expected {}, found {}",
                    join_or(&expected),
                    describe_kind(found)
                ))
                .code(Code::TypeMismatch)
            };
            if expected.iter().any(|t| t == "a boolean")
                && found.as_str().is_some_and(|s| {
                    ["yes", "no", "on", "off", "y", "n"].contains(&s.to_ascii_lowercase().as_str())
                })
            {
                d = d.help(
                    "YAML 1.2 reads `yes`, `no`, `on` and `off` as text: write `true` or `false`",
                );
            }
            out.push(src.at(ptr, d));
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // Report the branch that the value's type matched; the others only say "wrong type".
            let branch = context.iter().find(|b| {
                !b.is_empty()
                    && !b
                        .iter()
                        .all(|e| e.instance_path().as_str() == ptr && is_type_mismatch(e))
            });
            match branch {
                Some(errors) => {
                    for e in errors {
                        map_error(src, e, out);
                    }
                }
                None => out.push(src.at(ptr, Diagnostic::new(err.to_string()))),
            }
        }
        ValidationErrorKind::Pattern { pattern } => {
            let text = found.as_str().unwrap_or_default();
            let (_, def) = schema_at(err.schema_path().as_str());
            let d = match def {
                Some("Duration") => Diagnostic::new(
                    parse_duration(text)
                        .err()
                        .unwrap_or_else(|| format!("`{text}` is not a duration")),
                ),
                Some("Money") => Diagnostic::new(format!(
                    "`{text}` is not an amount (expected a decimal number such as 500 or 0.25)"
                )),
                _ if ptr.ends_with("/id") && ptr.starts_with("/steps/") => {
                    Diagnostic::new(format!(
                        "`{text}` is not a valid step id: use letters, digits, `_` and `-`, starting with a letter or `_`"
                    ))
                }
                _ if ptr == "/name" => Diagnostic::new(format!(
                    "`{text}` is not a valid plan name: use letters, digits, `-`, `_` and `.`, starting with a letter or digit"
                )),
                _ => Diagnostic::new(format!(
                    "`{text}` does not have the expected form (pattern `{pattern}`)"
                )),
            };
            out.push(src.at(ptr, d.code(Code::InvalidValue)));
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => {
            let key = last_key(ptr);
            let (_, def) = schema_at(err.schema_path().as_str());
            let d = if def == Some("Duration") {
                Diagnostic::new(format!(
                    "`{found}` is not a duration: a duration cannot be negative"
                ))
            } else if key == "max_attempts" {
                Diagnostic::new(format!(
                    "`max_attempts: {found}` makes no attempt: it counts the first attempt, so it must be at least 1"
                ))
                .help("use `max_attempts: 1` for no retry")
            } else {
                Diagnostic::new(format!("`{key}` must be at least {limit}, found {found}"))
            };
            out.push(src.at(ptr, d.code(Code::InvalidValue)));
        }
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => {
            let key = last_key(ptr);
            out.push(
                src.at(
                    ptr,
                    Diagnostic::new(format!("`{key}` must be at most {limit}, found {found}"))
                        .code(Code::InvalidValue),
                ),
            );
        }
        _ => out.push(src.at(ptr, Diagnostic::new(err.to_string()))),
    }
}

/// The checks a schema cannot express (or cannot express in words a user would understand).
fn structural(src: &Source, out: &mut Vec<Diagnostic>) {
    if let Some(Value::Object(retry)) = src.value.pointer("/defaults/retry") {
        check_retry(src, "/defaults/retry", retry, out);
    }
    if let Some(Value::Object(secrets)) = src.value.get("secrets") {
        for (name, spec) in secrets {
            check_secret(src, name, spec, out);
        }
    }
    let Some(Value::Array(steps)) = src.value.get("steps") else {
        return;
    };
    for (i, step) in steps.iter().enumerate() {
        let Value::Object(step) = step else { continue };
        // Pointers and names are written only for a problem: most steps have none.
        let sptr = || format!("/steps/{i}");
        let name = || step_name(src, &i.to_string());
        let all = || {
            STEP_KINDS
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut given = STEP_KINDS
            .iter()
            .copied()
            .filter(|k| step.get(*k).is_some_and(|v| !v.is_null()));
        match (given.next(), given.next()) {
            (None, _) => out.push(
                src.at(
                    &sptr(),
                    Diagnostic::new(format!("{} has no operation", name()))
                        .code(Code::StepShape)
                        .help(format!("give a step exactly one of {}", all())),
                ),
            ),
            (Some(_), None) => {}
            (Some(first), Some(second)) => {
                for k in std::iter::once(second).chain(given) {
                    out.push(
                        src.at_key(
                            &format!("{}/{k}", sptr()),
                            Diagnostic::new(format!(
                                "{} has more than one operation: `{first}` and `{k}`",
                                name()
                            ))
                            .code(Code::StepShape)
                            .help(format!(
                                "a step does exactly one of {}; split it into two steps",
                                all()
                            )),
                        ),
                    );
                }
            }
        }
        if let Some(Value::Object(retry)) = step.get("retry") {
            check_retry(src, &format!("{}/retry", sptr()), retry, out);
        }
        for kind in ["submit", "job"] {
            let Some(Value::Object(spec)) = step.get(kind) else {
                continue;
            };
            let kptr = || format!("{}/{kind}", sptr());
            let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
            match (has("prompt"), has("prompt_file")) {
                (true, true) => out.push(
                    src.at_key(
                        &format!("{}/prompt_file", kptr()),
                        Diagnostic::new(format!(
                            "`prompt` and `prompt_file` both given in `{kind}` of {}",
                            name()
                        ))
                        .code(Code::StepShape)
                        .help("give one: the prompt text, or the file that holds it"),
                    ),
                ),
                (false, false) => out.push(
                    src.at_key(
                        &kptr(),
                        Diagnostic::new(format!(
                            "missing `prompt` (or `prompt_file`) in `{kind}` of {}",
                            name()
                        ))
                        .code(Code::StepShape),
                    ),
                ),
                _ => {}
            }
        }
    }
}

/// Whether `id` is a valid step id (the schema's pattern for `id`).
pub(super) fn valid_step_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn duration_of(v: Option<&Value>) -> Option<std::time::Duration> {
    match v? {
        Value::String(s) => parse_duration(s).ok(),
        Value::Number(n) => n.as_u64().map(std::time::Duration::from_secs),
        _ => None,
    }
}

pub(super) fn check_retry(
    src: &Source,
    ptr: &str,
    retry: &serde_json::Map<String, Value>,
    out: &mut Vec<Diagnostic>,
) {
    let initial = duration_of(retry.get("initial"));
    let max = duration_of(retry.get("max"));
    let (initial, initial_given) = match (initial, retry.contains_key("initial")) {
        (Some(d), true) => (d, true),
        (None, true) => return, // not a duration: the schema said so
        (_, false) => (std::time::Duration::from_secs(1), false),
    };
    let (max, max_given) = match (max, retry.contains_key("max")) {
        (Some(d), true) => (d, true),
        (None, true) => return,
        (_, false) => (std::time::Duration::from_secs(30), false),
    };
    if initial > max {
        let show = |d: std::time::Duration, given: bool| {
            let s = crate::duration::Dur(d).to_string();
            if given {
                s
            } else {
                format!("{s}, the default")
            }
        };
        let at = if initial_given {
            format!("{ptr}/initial")
        } else {
            format!("{ptr}/max")
        };
        out.push(
            src.at(
                &at,
                Diagnostic::new(format!(
                    "retry delay `initial` ({}) is longer than `max` ({})",
                    show(initial, initial_given),
                    show(max, max_given)
                ))
                .code(Code::InvalidValue)
                .help("`max` caps every delay, so it must not be less than `initial`"),
            ),
        );
    }
}

pub(super) fn check_secret(src: &Source, name: &str, spec: &Value, out: &mut Vec<Diagnostic>) {
    let ptr = format!("/secrets/{}", escape_pointer_segment(name));
    let shape = "`{env: NAME}` or `{file: PATH}`";
    let Value::Object(m) = spec else {
        out.push(
            src.at(
                &ptr,
                Diagnostic::new(format!(
                    "secret `{name}` must be {shape}, found {}",
                    describe_kind(spec)
                ))
                .code(Code::SecretSource)
                .help("secret values never go in the plan itself"),
            ),
        );
        return;
    };
    for (k, v) in m {
        let kptr = format!("{ptr}/{}", escape_pointer_segment(k));
        if k != "env" && k != "file" {
            out.push(
                src.at_key(
                    &kptr,
                    Diagnostic::new(format!("unknown key `{k}` in secret `{name}`"))
                        .code(Code::UnknownKey)
                        .suggest(suggest(k, ["env", "file"])),
                ),
            );
        } else if !v.is_string() {
            out.push(
                src.at(
                    &kptr,
                    Diagnostic::new(format!("expected a string, found {}", describe_kind(v)))
                        .code(Code::TypeMismatch),
                ),
            );
        }
    }
    match (m.contains_key("env"), m.contains_key("file")) {
        (true, true) => out.push(
            src.at(
                &ptr,
                Diagnostic::new(format!(
                    "secret `{name}` gives both `env` and `file`; give one"
                ))
                .code(Code::SecretSource),
            ),
        ),
        (false, false) if m.keys().all(|k| k == "env" || k == "file") => out.push(src.at(
            &ptr,
            Diagnostic::new(format!("secret `{name}` must be {shape}")).code(Code::SecretSource),
        )),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diags(text: &str) -> Vec<Diagnostic> {
        let src = match source::parse("p.yaml", text.as_bytes()) {
            Ok(s) => s,
            Err(e) => panic!("parse failed: {e:?}"),
        };
        match check(&src) {
            Ok(_) => Vec::new(),
            Err(e) => e,
        }
    }

    fn messages(text: &str) -> Vec<String> {
        diags(text).into_iter().map(|d| d.message).collect()
    }

    const HEAD: &str = "version: 1\nname: t\n";

    #[test]
    fn the_schema_compiles_and_describes_every_field() {
        assert!(validator().is_some());
        // What the validator uses (the committed file, built in) is the schema of the types.
        assert_eq!(schema(), &plan_schema());
        let s = plan_schema();
        fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
            if let Some(props) = v.get("properties").and_then(Value::as_object) {
                for (k, p) in props {
                    if p.get("description").is_none() {
                        missing.push(format!("{path}/{k}"));
                    }
                }
            }
            match v {
                Value::Object(m) => m
                    .iter()
                    .for_each(|(k, c)| walk(c, &format!("{path}/{k}"), missing)),
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .for_each(|(i, c)| walk(c, &format!("{path}/{i}"), missing)),
                _ => {}
            }
        }
        let mut missing = Vec::new();
        walk(&s, "", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
        assert_eq!(s["$id"], json!(PLAN_SCHEMA_ID));
    }

    /// The build-time validator (which says whether a plan is valid) and the runtime one (whose errors
    /// the messages are written for) agree on every plan of the repository and on plans broken on
    /// purpose: a disagreement would let an invalid plan through or refuse a valid one without a word.
    #[test]
    fn the_built_validator_agrees_with_the_runtime_one() {
        let runtime = validator().expect("schema compiles");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        let mut dirs = vec![root.join("tests/plans"), root.join("plans")];
        dirs.push(root.join("tests/conformance/plans"));
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("fixture folder").flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml") {
                    files.push(p);
                }
            }
        }
        let mut values: Vec<(String, Value)> = Vec::new();
        for f in &files {
            let text = std::fs::read(f).expect("read fixture");
            if let Ok(src) = source::parse("p.yaml", &text) {
                values.push((f.display().to_string(), src.value));
            }
        }
        // The same plans with one value of the wrong kind, an unknown key or a missing field.
        let mut broken = Vec::new();
        for (name, v) in &values {
            let mut a = v.clone();
            a["version"] = json!(2);
            broken.push((format!("{name} version 2"), a));
            let mut b = v.clone();
            b["unknown_key"] = json!(true);
            broken.push((format!("{name} unknown key"), b));
            if let Some(step) = v.pointer("/steps/0").cloned() {
                let mut c = v.clone();
                c["steps"][0]["retry"] = json!({"max_attempts": 0});
                broken.push((format!("{name} retry 0"), c));
                let mut d = v.clone();
                d["steps"][0] = json!({"id": step.get("id").cloned().unwrap_or(json!("x"))});
                broken.push((format!("{name} no kind"), d));
                let mut e = v.clone();
                e["steps"][0]["timeout"] = json!([1]);
                broken.push((format!("{name} timeout list"), e));
            }
        }
        values.extend(broken);
        let (mut valid, mut invalid) = (0, 0);
        for (name, v) in &values {
            let built = is_valid(v);
            assert_eq!(built, runtime.is_valid(v), "{name}");
            if built { valid += 1 } else { invalid += 1 }
        }
        assert!(
            valid >= 15 && invalid >= 200,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn a_good_plan_loads() {
        let text = format!(
            "{HEAD}secrets:\n  token: {{env: TOKEN}}\ndefaults:\n  retry: {{max_attempts: 2, initial: 2s, max: 1m}}\nsteps:\n  - id: a\n    submit: {{job_type: inference, wallet: w, payment: 5, prompt: hi}}\n  - id: b\n    wait: {{job: \"${{{{ steps.a.job_id }}}}\", timeout: 10m}}\n"
        );
        assert_eq!(messages(&text), Vec::<String>::new());
    }

    #[test]
    fn unknown_keys_point_at_the_key_and_suggest() {
        let d = diags(&format!(
            "{HEAD}steps:\n  - id: analyze\n    timout: 5m\n    balance: {{wallet: w}}\n"
        ));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].message, "unknown key `timout` in step `analyze`");
        assert_eq!(d[0].suggestion.as_deref(), Some("timeout"));
        let loc = d[0].location.as_ref().map(|l| (l.line, l.column));
        assert_eq!(loc, Some((5, 5)));
        assert_eq!(d[0].width, 6);
    }

    #[test]
    fn wrong_types_are_said_plainly() {
        assert_eq!(
            messages(&format!(
                "{HEAD}defaults: {{concurrency: abc}}\nsteps: []\n"
            )),
            ["expected a whole number, found a string `\"abc\"`"]
        );
        assert_eq!(
            messages(&format!("{HEAD}defaults: {{timeout: true}}\nsteps: []\n")),
            ["expected a duration such as `300s`, found a boolean `true`"]
        );
        assert_eq!(
            messages(&format!(
                "{HEAD}defaults: {{timeout: 5 minutes}}\nsteps: []\n"
            )),
            ["`5 minutes` is not a duration (expected e.g. `300s`, `5m`, `1h30m` or `250ms`)"]
        );
    }

    #[test]
    fn enums_list_their_values() {
        assert_eq!(
            messages(&format!(
                "{HEAD}defaults: {{retry: {{backoff: linear}}}}\nsteps: []\n"
            )),
            ["`linear` is not a valid `backoff`: expected `fixed` or `exponential`"]
        );
    }

    #[test]
    fn step_kinds_are_exactly_one() {
        assert_eq!(
            messages(&format!("{HEAD}steps:\n  - id: a\n")),
            ["step `a` has no operation"]
        );
        assert_eq!(
            messages(&format!(
                "{HEAD}steps:\n  - id: a\n    status: {{job: x}}\n    cancel: {{job: x}}\n"
            )),
            ["step `a` has more than one operation: `status` and `cancel`"]
        );
    }

    #[test]
    fn contradictions_are_load_errors() {
        assert_eq!(
            messages(&format!(
                "{HEAD}defaults: {{retry: {{max_attempts: 0}}}}\nsteps: []\n"
            )),
            [
                "`max_attempts: 0` makes no attempt: it counts the first attempt, so it must be at least 1"
            ]
        );
        assert_eq!(
            messages(&format!(
                "{HEAD}defaults: {{retry: {{initial: 1m}}}}\nsteps: []\n"
            )),
            ["retry delay `initial` (1m) is longer than `max` (30s, the default)"]
        );
        assert_eq!(
            messages("version: 2\nname: t\nsteps: []\n"),
            ["unsupported plan version `2`: this aitbc-flow reads version 1"]
        );
        assert_eq!(
            messages(&format!(
                "{HEAD}secrets: {{a: {{env: A, file: f}}, b: x}}\nsteps: []\n"
            )),
            [
                "secret `a` gives both `env` and `file`; give one",
                "secret `b` must be `{env: NAME}` or `{file: PATH}`, found a string `\"x\"`"
            ]
        );
    }

    #[test]
    fn load_raw_checks_the_size_before_reading() {
        let dir = tempfile::tempdir().expect("temp dir");
        let big = dir.path().join("big.yaml");
        let f = std::fs::File::create(&big).expect("create");
        // Sparse: nothing is written, so the test stays cheap; reading it would be the bug.
        f.set_len(source::MAX_PLAN_BYTES + 1).expect("set_len");
        let e = load_raw(&big, "big.yaml").err().unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("too large"), "{e:?}");
        let missing = load_raw(&dir.path().join("nope.yaml"), "nope.yaml")
            .err()
            .unwrap_or_default();
        assert_eq!(missing[0].message, "cannot read nope.yaml: no such file");
        let e = load_raw(dir.path(), "plans/").err().unwrap_or_default();
        assert!(e[0].message.contains("is a directory"), "{e:?}");
    }

    #[test]
    fn every_problem_is_reported() {
        let m = messages("name: t\nstepz: []\ndefaults: {retry: {max_attempts: 0}}\n");
        assert_eq!(m.len(), 4, "{m:?}");
    }
}

#[cfg(test)]
mod robustness {
    use super::*;

    const SAMPLE: &str = "# yaml-language-server: $schema=../schemas/plan.schema.json
version: 1
name: sample
vars: {wallet: w, 'a/b~c': 1, n: 1e400}
secrets:
  token: {env: TOKEN}
defaults:
  timeout: 5m
  retry: &r {max_attempts: 2, backoff: fixed, initial: 1s, max: 2s, on: [timeout]}
steps:
  - id: a
    submit:
      job_type: inference
      wallet: ${{ vars.wallet }}
      payment: 0.5
      prompt: |
        Summarize:
          \"${{ vars.n }}\"
    retry: *r
  - id: b
    wait: {job: \"${{ steps.a.job_id }}\", timeout: 10m, on_timeout: keep}
  - id: c
    <<: {continue_on_error: true}
    fetch: {job: \"${{ steps.a.job_id }}\", save: out.json}
";

    fn run(text: &str) {
        if let Ok(src) = source::parse("p.yaml", text.as_bytes()) {
            let _ = check(&src);
        }
    }

    #[test]
    fn the_sample_is_valid() {
        let src = source::parse("p.yaml", SAMPLE.as_bytes()).expect("parses");
        if let Err(e) = check(&src) {
            panic!("{e:?}");
        }
    }

    #[test]
    fn no_prefix_or_missing_line_panics() {
        for (i, _) in SAMPLE.char_indices() {
            run(&SAMPLE[..i]);
        }
        let lines: Vec<&str> = SAMPLE.lines().collect();
        for skip in 0..lines.len() {
            let text: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect();
            run(&text.join("\n"));
            // And the line indented by one more space, or with a tab.
            let mut shifted = lines.clone();
            let moved = format!(" {}", lines[skip]);
            shifted[skip] = &moved;
            run(&shifted.join("\n"));
            let tabbed = format!("\t{}", lines[skip]);
            shifted[skip] = &tabbed;
            run(&shifted.join("\n"));
        }
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let deep = "[".repeat(5000);
        let deep_map = "a: ".to_string() + &"{b: ".repeat(3000);
        for text in [
            "\u{feff}version: 1\n",
            "? [a, b]\n: c\n",
            "a: *unknown\n",
            "&x a: 1\n",
            "steps: [{id: a, balance: {wallet: w}}, 3, null, [1]]\nversion: 1\nname: x\n",
            "version: 1\nname: x\nsteps:\n  - id: a\n    balance: {wallet: w, min: -1e999}\n",
            "\r\n\r\n",
            "version: 1\r\nname: x\r\nsteps: []\r\n",
            "'unterminated",
            &deep,
            &deep_map,
        ] {
            run(text);
        }
    }
}
