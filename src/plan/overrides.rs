//! `--vars FILE` and `--set key=value`: what the command line changes in a plan's `vars` before any
//! template is read. They live apart because they are the one input that comes from the user's shell
//! rather than the plan file, with their own reading rules (a `--set` value is a YAML scalar, a
//! dotted name reaches into mappings, a vars file merges deeply) and their own errors, which point at
//! the option rather than at a line of the plan.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::codes::Code;
use super::diag::Diagnostic;

/// Applies the `--vars` files, in order, then the `--set`s, in order, to `vars`; a name the plan
/// declares under `inputs:` goes to `inputs` instead, checked against its type
/// ([`super::typed_inputs`]). Returns the problems found (each option is applied or reported, and
/// the others still apply).
pub(super) fn apply(
    vars: &mut Map<String, Value>,
    inputs: &mut Map<String, Value>,
    declared: &super::typed_inputs::Declared,
    vars_files: &[PathBuf],
    set: &[(String, String)],
    read: &mut Vec<super::files_read::FileRead>,
    plan_dir: &std::path::Path,
) -> Vec<Diagnostic> {
    let root = std::cell::OnceCell::new();
    let spec_of = |name: &str| declared.iter().find(|(n, _)| n == name).map(|(_, s)| s);
    let mut errors = Vec::new();
    for file in vars_files {
        let name = file.display().to_string();
        // Read as a plan file is: at most 16 MiB, whatever the file is.
        let bytes = match super::source::read(file, &name) {
            Ok(b) => b,
            Err(ds) => {
                let shown = crate::text::shown(&name).into_owned();
                errors.extend(ds.into_iter().map(|d| {
                    let message = d
                        .message
                        .replacen(
                            &format!("cannot read {shown}"),
                            &format!("cannot read the vars file `{shown}`"),
                            1,
                        )
                        .replacen("the plan file is", "the vars file is", 1)
                        .replacen("a plan file", "a vars file", 1);
                    Diagnostic { message, ..d }
                }));
                continue;
            }
        };
        let root = root.get_or_init(|| super::inputs::repository_root(plan_dir));
        super::files_read::add(
            read,
            super::files_read::FileRead::new(
                super::files_read::FileRole::Vars,
                root,
                file,
                true,
                &bytes,
            ),
        );
        match super::source::parse(&name, &bytes) {
            Ok(src) => match src.value.clone() {
                Value::Object(mut m) => {
                    for (input, spec) in declared {
                        let Some(v) = m.shift_remove(input) else {
                            continue;
                        };
                        match super::typed_inputs::from_value(spec, &v) {
                            Ok(v) => {
                                inputs.insert(input.clone(), v);
                            }
                            Err(msg) => errors.push(
                                src.at(
                                    &format!("/{}", super::check::ptr_seg(input)),
                                    Diagnostic::new(format!("input `{input}`: {msg}"))
                                        .code(Code::InputValue),
                                ),
                            ),
                        }
                    }
                    merge(vars, m)
                }
                _ => errors.push(
                    Diagnostic::new(format!(
                        "the vars file `{name}` must hold a mapping of names to values"
                    ))
                    .code(Code::Override),
                ),
            },
            Err(ds) => errors.extend(ds),
        }
    }
    for (key, value) in set {
        if key.is_empty() || key.split('.').any(str::is_empty) {
            errors.push(
                Diagnostic::new(format!("`--set {key}={value}`: the name is empty"))
                    .code(Code::Override)
                    .help("write `--set name=value` or `--set parent.child=value`"),
            );
            continue;
        }
        let parts: Vec<&str> = key.split('.').collect();
        if let Some(spec) = spec_of(parts[0]) {
            let flag = format!("`--set {key}={value}`");
            let d = if parts.len() > 1 {
                Diagnostic::new(format!(
                    "{flag}: {}",
                    super::typed_inputs::not_whole(parts[0])
                ))
            } else {
                match super::typed_inputs::from_flag(spec, value) {
                    Ok(v) => {
                        inputs.insert(key.clone(), v);
                        continue;
                    }
                    Err(msg) => Diagnostic::new(format!("{flag}: input `{key}`: {msg}")),
                }
            };
            errors.push(d.code(Code::InputValue));
            continue;
        }
        if !vars.contains_key(parts[0]) {
            // A `--set` for a name no template can be meant to read is a typo, not a new variable.
            let what = if declared.is_empty() {
                "variable"
            } else {
                "variable or input"
            };
            let d = Diagnostic::new(format!(
                "`--set {key}={value}`: the plan has no {what} `{}`",
                parts[0]
            ))
            .code(Code::Override);
            let names = vars
                .keys()
                .map(String::as_str)
                .chain(declared.iter().map(|(n, _)| n.as_str()));
            let d = match super::diag::suggest(parts[0], names) {
                Some(s) => d.suggest(Some(s)),
                None => d.help(format!(
                    "declare it under `vars:` (the plan's variables: {})",
                    if vars.is_empty() {
                        "none".to_string()
                    } else {
                        vars.keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )),
            };
            errors.push(d);
            continue;
        }
        if let Err(at) = set_path(vars, &parts, yaml_scalar(value)) {
            errors.push(
                Diagnostic::new(format!(
                    "`--set {key}={value}`: `vars.{}` is not a mapping",
                    parts[..=at].join(".")
                ))
                .code(Code::Override),
            );
        }
    }
    errors
}

/// Reads a `--set` value as a YAML scalar: `3` is a number, `true` a boolean, `null`/`~` nothing,
/// `"3"` (quoted) the string 3; anything else is the text itself.
pub fn yaml_scalar(text: &str) -> Value {
    let t = text.trim();
    match t {
        "" | "null" | "Null" | "NULL" | "~" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return Value::String(t[1..t.len() - 1].to_string());
        }
    }
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    let numeric = t
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && t.bytes().any(|b| b.is_ascii_digit());
    if numeric
        && let Ok(f) = t.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        // A number an f64 would round (`0.0099999999999999999`) stays its text, as in a plan's
        // `vars`: an amount rendered from it is then exact.
        if !super::source::f64_is_exactly(t.strip_prefix('+').unwrap_or(t), f) {
            return Value::String(t.to_string());
        }
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

/// Sets `vars.a.b.c`, creating mappings on the way; `Err(i)` when `parts[..=i]` is not a mapping.
fn set_path(map: &mut Map<String, Value>, parts: &[&str], value: Value) -> Result<(), usize> {
    match parts {
        [] => Ok(()),
        [last] => {
            map.insert(last.to_string(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = map
                .entry(first.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(m) => set_path(m, rest, value).map_err(|i| i + 1),
                _ => Err(0),
            }
        }
    }
}

/// Deep-merges `over` into `base`: mappings merge key by key, anything else replaces.
fn merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::{FEEDBACK, load_text, messages};
    use super::*;

    #[test]
    fn overrides() {
        let opts = LoadOptions {
            set: vec![("pay".into(), "700".into())],
            ..Default::default()
        };
        let p = load_text(FEEDBACK, &[], &opts).unwrap();
        assert_eq!(p.steps[0].spec["payment"], serde_json::json!(700));
        let opts = LoadOptions {
            set: vec![("wallet.x".into(), "1".into())],
            ..Default::default()
        };
        let m = messages(load_text(FEEDBACK, &[], &opts));
        assert!(m[0].contains("`vars.wallet` is not a mapping"), "{m:?}");
    }

    #[test]
    fn a_set_for_a_variable_the_plan_does_not_have_is_refused() {
        let opts = LoadOptions {
            set: vec![
                ("walet".into(), "x".into()),
                ("extra.deep".into(), "x".into()),
            ],
            ..Default::default()
        };
        let m = messages(load_text(FEEDBACK, &[], &opts));
        assert_eq!(
            m,
            [
                "0: `--set walet=x`: the plan has no variable `walet` [wallet]",
                "0: `--set extra.deep=x`: the plan has no variable `extra` []",
            ],
            "{m:?}"
        );
    }

    #[test]
    fn yaml_scalars() {
        assert_eq!(yaml_scalar("3"), serde_json::json!(3));
        assert_eq!(yaml_scalar("2.5"), serde_json::json!(2.5));
        assert_eq!(yaml_scalar("true"), serde_json::json!(true));
        assert_eq!(yaml_scalar("'3'"), serde_json::json!("3"));
        assert_eq!(yaml_scalar("hello world"), serde_json::json!("hello world"));
        assert_eq!(yaml_scalar("1e"), serde_json::json!("1e"));
        assert_eq!(
            yaml_scalar("0.0099999999999999999"),
            serde_json::json!("0.0099999999999999999")
        );
    }
}
