//! What can still be checked in a plan whose shape is partly wrong, so that one `validate` reports
//! every mistake it can find rather than the schema's first and the rules' after those are fixed.
//!
//! When the schema check fails, [`salvage`] builds a copy of the plan with each wrong part taken out:
//! an unknown key is dropped, a wrong optional value is dropped (its default applies), a wrong
//! required value takes its parent out in turn, and a step whose shape is still wrong is replaced by
//! a stand-in that keeps only its id and its `needs` (the step is then "broken": its outputs and its
//! operation are not checked, so nothing downstream reports the same mistake again). The rules then
//! run on that copy. Where taking a part out would make other checks report something that is not a
//! mistake (`env:`, `secrets:`, `vars:` or `policy:` wrong, the steps not a list), nothing is
//! salvaged: the schema's errors are all that is reported, as before.
//!
//! Templates are checked on their own as well ([`template_problems`]): the syntax and the filters,
//! tests and functions of every template of every step, whatever else is wrong, so that an unknown
//! filter shows with the rest.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::codes::Code;
use super::diag::Diagnostic;
use super::source::{Source, escape_pointer_segment};
use super::template::{TemplateError, Templates, has_template};
use super::types::{Plan, STEP_KINDS};

/// A plan with its wrong parts taken out, and which steps were replaced by stand-ins.
pub(super) struct Salvaged {
    pub(super) plan: Plan,
    /// The plan as written with the wrong parts taken out (what the checker reads specs from).
    pub(super) value: Value,
    /// Indices of the steps replaced by a stand-in.
    pub(super) broken: BTreeSet<usize>,
}

/// Top-level keys whose loss would make other checks report what is not a mistake.
const KEEP_OR_GIVE_UP: &[&str] = &["env", "secrets", "vars", "inputs", "policy", "steps"];

/// How many rounds of taking parts out: each round takes out one level; plans nest far less.
const ROUNDS: usize = 12;

/// The plan with its wrong parts taken out, or `None` when that cannot be done without misleading
/// the other checks.
pub(super) fn salvage(src: &Source) -> Option<Salvaged> {
    let validator = super::schema::validator()?;
    let mut value = src.value.clone();
    let mut broken = BTreeSet::new();
    // The rules the schema cannot express, on the plan as written.
    structural_parts(src, &mut value, &mut broken)?;
    for _ in 0..ROUNDS {
        if validator.is_valid(&value) {
            break;
        }
        let mut wrong: Vec<String> = Vec::new();
        for err in validator
            .iter_errors(&value)
            .take(4 * super::diag::MAX_ERRORS)
        {
            wrong_parts(&err, &mut wrong);
        }
        // Deepest first, so that taking a part out does not move another one's path.
        wrong.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        wrong.dedup();
        for p in wrong {
            take_out(&mut value, &p, &mut broken)?;
        }
    }
    if !validator.is_valid(&value) {
        return None;
    }
    let plan = Plan::deserialize(&value).ok()?;
    Some(Salvaged {
        plan,
        value,
        broken,
    })
}

/// Where a schema error says the plan is wrong: an unknown key itself; inside an `anyOf`/`oneOf`,
/// the branch the value's type matched (as [`super::schema`] reports it); else the value.
fn wrong_parts(err: &jsonschema::ValidationError<'_>, out: &mut Vec<String>) {
    use jsonschema::error::ValidationErrorKind as K;
    let ptr = err.instance_path().as_str();
    match err.kind() {
        K::AdditionalProperties { unexpected } => {
            for key in unexpected {
                out.push(format!("{ptr}/{}", escape_pointer_segment(key)));
            }
        }
        K::AnyOf { context } | K::OneOfNotValid { context } => {
            let branch = context.iter().find(|b| {
                !b.is_empty()
                    && !b.iter().all(|e| {
                        e.instance_path().as_str() == ptr
                            && matches!(e.kind(), K::Type { .. } | K::AnyOf { .. })
                    })
            });
            match branch {
                Some(errors) => errors.iter().for_each(|e| wrong_parts(e, out)),
                None => out.push(ptr.to_string()),
            }
        }
        _ => out.push(ptr.to_string()),
    }
}

/// Takes out the parts that break the rules the schema cannot express: a step with no operation or
/// several, or a prompt problem, is broken; a wrong retry is dropped; a wrong secret gives up.
fn structural_parts(src: &Source, value: &mut Value, broken: &mut BTreeSet<usize>) -> Option<()> {
    let mut scratch = Vec::new();
    if let Some(Value::Object(secrets)) = src.value.get("secrets") {
        for (name, spec) in secrets {
            super::schema::check_secret(src, name, spec, &mut scratch);
        }
        if !scratch.is_empty() {
            return None;
        }
    }
    if let Some(Value::Object(retry)) = src.value.pointer("/defaults/retry") {
        super::schema::check_retry(src, "/defaults/retry", retry, &mut scratch);
        if !scratch.is_empty() {
            take_out(value, "/defaults/retry", broken)?;
            scratch.clear();
        }
    }
    let Some(Value::Array(steps)) = src.value.get("steps") else {
        return Some(());
    };
    for (i, step) in steps.iter().enumerate() {
        let Value::Object(step) = step else { continue };
        let kinds = STEP_KINDS
            .iter()
            .filter(|k| step.get(**k).is_some_and(|v| !v.is_null()))
            .count();
        let prompt_wrong = ["submit", "job"].iter().any(|kind| {
            let Some(Value::Object(spec)) = step.get(*kind) else {
                return false;
            };
            let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
            has("prompt") == has("prompt_file")
        });
        if kinds != 1 || prompt_wrong {
            take_out(value, &format!("/steps/{i}"), broken)?;
            continue;
        }
        if let Some(Value::Object(retry)) = step.get("retry") {
            let ptr = format!("/steps/{i}/retry");
            super::schema::check_retry(src, &ptr, retry, &mut scratch);
            if !scratch.is_empty() {
                take_out(value, &ptr, broken)?;
                scratch.clear();
            }
        }
    }
    Some(())
}

/// Takes out the part at `pointer`: a mapping's entry is removed; an element of a list takes the
/// list out; a step is replaced by its stand-in; `version` and `name` get a valid value. `None`
/// when the part is one whose loss would mislead ([`KEEP_OR_GIVE_UP`], the whole plan).
fn take_out(value: &mut Value, pointer: &str, broken: &mut BTreeSet<usize>) -> Option<()> {
    let segs: Vec<&str> = pointer.split('/').skip(1).collect();
    match segs.as_slice() {
        [] => None,
        [top] if KEEP_OR_GIVE_UP.contains(top) => None,
        ["env" | "secrets" | "vars" | "inputs" | "policy", ..] => None,
        ["version"] => {
            value["version"] = json!(1);
            Some(())
        }
        ["name"] => {
            value["name"] = json!("plan");
            Some(())
        }
        ["steps", i, rest @ ..] => {
            let i: usize = i.parse().ok()?;
            if broken.contains(&i) {
                return Some(());
            }
            // An element of a list (a `needs` entry, a matrix value) takes its list out; a matrix or
            // `outputs` that is wrong would make the step's templates and its readers report
            // names that are not mistakes, so the step is broken.
            let mut keep = rest.len();
            while keep > 0 && rest[keep - 1].parse::<usize>().is_ok() {
                keep -= 1;
            }
            let rest = &rest[..keep];
            if rest.is_empty() || matches!(rest[0], "id" | "matrix" | "outputs") {
                let step = value.get_mut("steps")?.get_mut(i)?;
                *step = stand_in(step, i);
                broken.insert(i);
                return Some(());
            }
            remove(value, &format!("/steps/{i}"), rest)
        }
        [first, rest @ ..] => remove(value, &format!("/{first}"), rest),
    }
}

/// Removes the entry `rest` (keys, the last maybe a list index taken as its list) below `base`.
fn remove(value: &mut Value, base: &str, rest: &[&str]) -> Option<()> {
    let mut keep = rest.len();
    while keep > 0 && rest[keep - 1].parse::<usize>().is_ok() {
        keep -= 1;
    }
    let rest = &rest[..keep];
    let Some((last, parents)) = rest.split_last() else {
        // The base itself: a top-level key (it has a default).
        let key = base.trim_start_matches('/');
        value.as_object_mut()?.remove(key);
        return Some(());
    };
    let mut ptr = base.to_string();
    for p in parents {
        ptr.push('/');
        ptr.push_str(p);
    }
    let key = last.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(m)) = value.pointer_mut(&ptr) {
        m.remove(&key);
    }
    Some(())
}

/// A step that keeps only its id (or one made up, when its id is wrong) and its `needs` (when they
/// are a list of ids), and lists jobs, which needs nothing: the checker sees a step of that id
/// where it was.
fn stand_in(step: &Value, i: usize) -> Value {
    let mut m = Map::new();
    let id = step
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| super::schema::valid_step_id(id))
        .map_or_else(|| format!("step-{i}"), str::to_string);
    m.insert("id".into(), json!(id));
    if let Some(Value::Array(needs)) = step.get("needs")
        && needs.iter().all(Value::is_string)
    {
        m.insert("needs".into(), Value::Array(needs.clone()));
    }
    m.insert("list".into(), json!({}));
    Value::Object(m)
}

/// The templates of every step, checked on their own: each that does not parse, and each that calls
/// a filter, test or function that does not exist. Values that are not strings and the step's id,
/// name, needs and matrix are not templates.
pub(super) fn template_problems(src: &Source, templates: &Templates) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(Value::Array(steps)) = src.value.get("steps") else {
        return out;
    };
    let lenient = templates.lenient();
    for (i, step) in steps.iter().enumerate() {
        let Value::Object(step) = step else { continue };
        for (key, v) in step {
            if matches!(key.as_str(), "id" | "name" | "needs" | "matrix") {
                continue;
            }
            let mut leaves = Vec::new();
            strings(
                v,
                format!("/steps/{i}/{}", escape_pointer_segment(key)),
                &mut leaves,
            );
            for (pointer, text) in leaves {
                if lenient.budget_spent() || out.len() > super::diag::MAX_ERRORS {
                    return out;
                }
                let condition = key == "when";
                if !condition && !has_template(text) {
                    continue;
                }
                let names = if condition {
                    lenient.condition_names(text)
                } else {
                    lenient.names(text)
                };
                let message = match names {
                    Err(e) => Some((e.to_string(), None, None)),
                    Ok(_) => match lenient.try_callables(text, condition) {
                        Err(TemplateError::Unknown(m)) => {
                            let s = super::template::suggest_filter(&m);
                            let word = m.split(' ').nth(1).map(str::to_string);
                            Some((m, s, word))
                        }
                        _ => None,
                    },
                };
                if let Some((m, s, word)) = message {
                    let d = Diagnostic::new(m).code(Code::Template).suggest(s);
                    let part = super::template::wrong_template(templates, text, word.as_deref());
                    out.push(match part {
                        Some(part) => src.at_part(&pointer, text, part, d),
                        None => src.at(&pointer, d),
                    });
                }
            }
        }
    }
    out
}

/// The strings of `v`, with their pointers.
fn strings<'v>(v: &'v Value, ptr: String, out: &mut Vec<(String, &'v str)>) {
    match v {
        Value::String(s) => out.push((ptr, s)),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, format!("{ptr}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                strings(x, format!("{ptr}/{}", escape_pointer_segment(k)), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salvaged(yaml: &str) -> Option<Salvaged> {
        let src = super::super::source::parse("plan.yaml", yaml.as_bytes()).unwrap();
        salvage(&src)
    }

    #[test]
    fn a_misspelled_optional_key_is_dropped_and_the_step_kept() {
        let s = salvaged(
            "version: 1\nname: t\nsteps:\n  - id: a\n    submit: {job_type: inference, wallet: w, payment: 1, prompt: p, modle: m}\n",
        )
        .unwrap();
        assert!(s.broken.is_empty());
        assert!(s.plan.steps[0].submit.is_some());
        assert!(s.value.pointer("/steps/0/submit/modle").is_none());
    }

    #[test]
    fn a_step_whose_shape_is_wrong_keeps_its_id_and_needs() {
        let s = salvaged(
            "version: 1\nname: 'bad name'\ndefaults: {timeout: soon}\nsteps:\n  - id: a\n    list: {}\n  - id: b\n    needs: [a]\n    submit: {job_type: 3}\n",
        )
        .unwrap();
        assert_eq!(s.broken, BTreeSet::from([1]));
        assert_eq!(s.plan.steps[1].id, "b");
        assert_eq!(s.plan.steps[1].needs, vec!["a"]);
        assert!(s.plan.defaults.timeout.is_none());
        assert_eq!(s.plan.name, "plan");
    }

    #[test]
    fn a_wrong_secret_or_steps_salvages_nothing() {
        assert!(salvaged("version: 1\nname: t\nsecrets: {k: 3}\nsteps: []\n").is_none());
        assert!(salvaged("version: 1\nname: t\nsteps: {a: 1}\n").is_none());
        assert!(salvaged("version: 1\nname: t\nenv: 3\nsteps: []\n").is_none());
    }

    #[test]
    fn half_valid_documents_do_not_panic() {
        for yaml in [
            "version: x\nname: [1]\nsteps: [1, 'a', null, {id: 3}]\n",
            "version: 1\nname: t\nsteps:\n  - {}\n  - id: a\n    needs: [1, 2]\n    list: 3\n",
            "version: 1\nname: t\nlimits: {steps: -1}\nschedule: 3\nsteps: [{id: a, wait: {job: [1]}}]\n",
            "{}\n",
        ] {
            let _ = salvaged(yaml);
        }
    }
}
