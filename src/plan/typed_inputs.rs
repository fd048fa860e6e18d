//! The plan's `inputs:` block: typed values that templates read as `${{ inputs.NAME }}`.
//!
//! An input is declared with a type (string, integer, number, boolean, amount, list) and may have a
//! default, be required, or be limited to an `enum`. Its value comes from, in order of strength,
//! `--set NAME=…`, a `--vars` file (or the earlier run of `--vars-from`), then the default; every
//! value is checked against the declaration when the plan is loaded, and an error names where the
//! value came from: the flag, or the file, line and column (of a vars file, or of the plan's
//! `default`). `vars` keep their untyped behaviour; a name is one or the other, so that a `--set`
//! means one thing. An `amount` is read from its digits (`money::Money`), never through a float,
//! and is held as its exact decimal text, which is what an amount template renders.
//!
//! (The files a plan reads, such as prompt files, are [`super::inputs`].)

use serde_json::{Map, Value};

use super::check::{Checker, ptr_seg};
use super::codes::Code;
use super::diag::Diagnostic;
use super::types::{InputSpec, InputType};
use crate::money::Money;

/// The declared inputs, in the plan's order.
pub type Declared = Vec<(String, InputSpec)>;

/// The inputs a plan declares (the block passed the schema, so each entry reads).
pub fn declared(inputs: &Map<String, Value>) -> Declared {
    inputs
        .iter()
        .filter_map(|(k, v)| {
            serde_json::from_value::<InputSpec>(v.clone())
                .ok()
                .map(|s| (k.clone(), s))
        })
        .collect()
}

/// The type's name as a plan writes it.
pub fn type_name(t: InputType) -> &'static str {
    match t {
        InputType::String => "string",
        InputType::Integer => "integer",
        InputType::Number => "number",
        InputType::Boolean => "boolean",
        InputType::Amount => "amount",
        InputType::List => "list",
    }
}

/// `a string`, `an amount`, … for messages.
fn a_type(t: InputType) -> String {
    let n = type_name(t);
    let article = if matches!(t, InputType::Integer | InputType::Amount) {
        "an"
    } else {
        "a"
    };
    format!("{article} {n}")
}

/// A value as a message shows it (cut, control characters escaped).
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{}`", crate::text::shown(s)),
        other => format!("`{}`", crate::text::shown(&other.to_string())),
    }
}

/// Checks a value read from YAML (a plan's default, a vars file) against the type; returns the
/// value as templates will read it (an amount as its exact text).
pub fn from_value(spec: &InputSpec, v: &Value) -> Result<Value, String> {
    let wrong = || {
        format!(
            "{} is not {}",
            shown(v),
            a_type(spec.kind) // e.g. "`abc` is not an amount"
        )
    };
    let value = match spec.kind {
        InputType::String => match v {
            Value::String(_) => v.clone(),
            _ => return Err(wrong()),
        },
        InputType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
            _ => return Err(wrong()),
        },
        InputType::Number => match v {
            Value::Number(_) => v.clone(),
            // A number an f64 would round is kept as its text (as in `vars`).
            Value::String(s) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => v.clone(),
            _ => return Err(wrong()),
        },
        InputType::Boolean => match v {
            Value::Bool(_) => v.clone(),
            _ => return Err(wrong()),
        },
        InputType::Amount => {
            let m: Money = match v {
                Value::Number(n) => n.to_string().parse()?,
                Value::String(s) => s.parse()?,
                _ => return Err(wrong()),
            };
            if m.is_negative() {
                return Err(format!("{} is negative; an amount is not", shown(v)));
            }
            Value::String(m.to_string())
        }
        InputType::List => match v {
            Value::Array(_) => v.clone(),
            _ => return Err(wrong()),
        },
    };
    if let Some(allowed) = &spec.allowed {
        let fits = allowed
            .iter()
            .any(|a| from_value(&unrestricted(spec), a).is_ok_and(|a| a == value));
        if !fits {
            return Err(format!(
                "{} is not one of the allowed values: {}",
                shown(&value),
                allowed.iter().map(shown).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    Ok(value)
}

/// The declaration without its `enum` (to read the enum's own values).
fn unrestricted(spec: &InputSpec) -> InputSpec {
    InputSpec {
        allowed: None,
        ..spec.clone()
    }
}

/// Checks the text of a `--set NAME=TEXT` against the type: a string input takes the text as it
/// is (`--set name=3` is the string 3), an amount reads the digits, the others read it as YAML.
pub fn from_flag(spec: &InputSpec, text: &str) -> Result<Value, String> {
    let v = match spec.kind {
        InputType::String => match super::overrides::yaml_scalar(text) {
            // Quotes are the shell's way to say "this is text"; they are not part of it.
            Value::String(s) if s != text => Value::String(s),
            _ => Value::String(text.to_string()),
        },
        InputType::Amount => Value::String(text.trim().to_string()),
        InputType::List => {
            // A plan file is a mapping at the top: the list is read as the value of one key.
            let not_a_list = || {
                format!(
                    "`{}` is not a list (write it as `[a, b]`)",
                    crate::text::shown(text)
                )
            };
            let doc = format!("value: {text}");
            let src = super::source::parse("--set", doc.as_bytes()).map_err(|_| not_a_list())?;
            src.value.get("value").cloned().ok_or_else(not_a_list)?
        }
        _ => super::overrides::yaml_scalar(text),
    };
    from_value(spec, &v)
}

/// The `--set` value of an input that is given the wrong way (`--set budget.x=1`).
pub fn not_whole(name: &str) -> String {
    format!("input `{name}` is set whole: write `--set {name}=…`")
}

impl Checker<'_> {
    /// Checks the declarations and settles each input's value: the one given on the command line
    /// (already checked by [`super::overrides`]), else the default, else none. A required input
    /// with no value is an error unless `allow_missing` (`validate`), when it is left out and the
    /// templates that read it are treated as known only at run time.
    pub(super) fn settle_inputs(&mut self, given: Map<String, Value>, allow_missing: bool) {
        let declared = declared(&self.plan.inputs);
        let mut values = Map::new();
        for (name, spec) in &declared {
            let at = format!("/inputs/{}", ptr_seg(name));
            if !is_identifier(name) {
                self.err(
                    &at,
                    Diagnostic::new(format!(
                        "input name `{}` is not a name a template can read",
                        crate::text::shown(name)
                    ))
                    .code(Code::InputDeclaration)
                    .help("use letters, digits and `_`, starting with a letter or `_`"),
                );
                continue;
            }
            if self.plan.vars.contains_key(name) {
                self.err(
                    &at,
                    Diagnostic::new(format!("`{name}` is both a var and an input"))
                        .code(Code::InputDeclaration)
                        .help("keep one: an input if its value should be typed and checked"),
                );
                continue;
            }
            if spec.required && spec.default.is_some() {
                self.err(
                    &format!("{at}/required"),
                    Diagnostic::new(format!(
                        "input `{name}` has a default, so it is never missing"
                    ))
                    .code(Code::InputDeclaration)
                    .help("drop `required: true`, or drop the default"),
                );
            }
            if let Some(allowed) = &spec.allowed {
                for (i, a) in allowed.iter().enumerate() {
                    if let Err(m) = from_value(&unrestricted(spec), a) {
                        self.err(
                            &format!("{at}/enum/{i}"),
                            Diagnostic::new(format!("input `{name}`: {m}"))
                                .code(Code::InputDeclaration),
                        );
                    }
                }
            }
            let default = spec.default.as_ref().and_then(|d| {
                from_value(spec, d)
                    .map_err(|m| {
                        self.err(
                            &format!("{at}/default"),
                            Diagnostic::new(format!("the default of input `{name}`: {m}"))
                                .code(Code::InputValue),
                        )
                    })
                    .ok()
            });
            // A `with:` value known only at run time: templates that read it are run-time ones.
            if self.deferred_input(name) {
                continue;
            }
            match (given.get(name), default) {
                (Some(v), _) => {
                    values.insert(name.clone(), v.clone());
                }
                (None, Some(d)) => {
                    values.insert(name.clone(), d);
                }
                (None, None) if spec.required => {
                    if !allow_missing {
                        self.err(
                            &at,
                            Diagnostic::new(format!("input `{name}` is required and not given"))
                                .code(Code::InputRequired)
                                .help(format!(
                                    "pass `--set {name}=…` ({}), or give it in a `--vars` file",
                                    a_type(spec.kind)
                                )),
                        );
                    }
                }
                (None, None) => {
                    values.insert(name.clone(), Value::Null);
                }
            }
        }
        self.inputs = values;
    }
}

/// Whether a name can be read as `inputs.NAME`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(kind: InputType) -> InputSpec {
        InputSpec {
            kind,
            default: None,
            required: false,
            allowed: None,
            description: None,
        }
    }

    #[test]
    fn values_are_checked_against_their_type() {
        let amount = spec(InputType::Amount);
        assert_eq!(from_flag(&amount, "12.50"), Ok(json!("12.5")));
        assert_eq!(
            from_flag(&amount, "0.0099999999999999999"),
            Ok(json!("0.0099999999999999999"))
        );
        assert!(
            from_flag(&amount, "abc")
                .unwrap_err()
                .contains("not an amount")
        );
        assert!(from_flag(&amount, "-1").unwrap_err().contains("negative"));
        assert_eq!(from_value(&amount, &json!(3)), Ok(json!("3")));
        let int = spec(InputType::Integer);
        assert_eq!(from_flag(&int, "3"), Ok(json!(3)));
        assert_eq!(
            from_flag(&int, "3.5"),
            Err("`3.5` is not an integer".into())
        );
        let s = spec(InputType::String);
        assert_eq!(from_flag(&s, "3"), Ok(json!("3")));
        assert_eq!(from_flag(&s, "'x y'"), Ok(json!("x y")));
        assert_eq!(from_value(&s, &json!(3)), Err("`3` is not a string".into()));
        let b = spec(InputType::Boolean);
        assert_eq!(from_flag(&b, "true"), Ok(json!(true)));
        assert!(from_flag(&b, "yes").is_err());
        let l = spec(InputType::List);
        assert_eq!(from_flag(&l, "[a, 2]"), Ok(json!(["a", 2])));
        assert!(from_flag(&l, "a").is_err());
        let n = spec(InputType::Number);
        assert_eq!(from_flag(&n, "2.5"), Ok(json!(2.5)));
        assert!(from_flag(&n, "two").is_err());
    }

    #[test]
    fn an_enum_limits_the_values() {
        let mut tone = spec(InputType::String);
        tone.allowed = Some(vec![json!("formal"), json!("casual")]);
        assert_eq!(from_flag(&tone, "formal"), Ok(json!("formal")));
        assert_eq!(
            from_flag(&tone, "rude"),
            Err("`rude` is not one of the allowed values: `formal`, `casual`".into())
        );
        let mut pay = spec(InputType::Amount);
        pay.allowed = Some(vec![json!(1), json!("2.50")]);
        assert_eq!(from_flag(&pay, "2.5"), Ok(json!("2.5")));
        assert!(from_flag(&pay, "3").is_err());
    }
}
