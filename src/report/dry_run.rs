//! The dry run of a checked plan: the steps in the order they would start, with their levels, the
//! rendered requests (secrets redacted; values that need another step's output are shown as their
//! `${{ steps.… }}` template) and the payment per wallet — as JSON (`plan --output json`, the MCP
//! server's `plan` tool) and as text for a person. Balances are not known offline: `run` compares them
//! before the first submit.

use serde_json::{Map, Value, json};
use std::collections::HashSet;

use crate::plan::StepKind;
use crate::plan::check::CheckedPlan;

/// Replaces every secret in every string of a value with `***`.
fn redact_value(plan: &CheckedPlan, v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(plan.redact(s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_value(plan, x)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), redact_value(plan, x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The dry run of a checked plan as JSON.
pub fn dry_run_value(plan: &CheckedPlan) -> Value {
    dry_run_value_except(plan, &HashSet::new())
}

/// [`dry_run_value`], the spend leaving out the steps in `paid_elsewhere` (`--from-run`).
pub fn dry_run_value_except(plan: &CheckedPlan, paid_elsewhere: &HashSet<String>) -> Value {
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert("id".into(), json!(s.id));
            m.insert("step".into(), json!(s.base_id));
            m.insert("kind".into(), json!(s.kind.name()));
            m.insert("level".into(), json!(s.level));
            m.insert("needs".into(), json!(s.needs));
            if let Some(g) = crate::plan::uses::group_of(s) {
                m.insert("group".into(), json!(g));
            }
            if let (StepKind::Uses(_), Some(g)) = (&s.kind, &s.group) {
                m.insert("uses".into(), json!(g.file));
            }
            if !s.matrix.is_empty() {
                m.insert("matrix".into(), Value::Object(s.matrix.clone()));
            }
            if let Some(w) = s.written_when() {
                m.insert(
                    "when".into(),
                    redact_value(plan, &serde_json::to_value(w).unwrap_or(Value::Null)),
                );
            }
            m.insert(
                "timeout".into(),
                json!(crate::duration::Dur(s.timeout).to_string()),
            );
            m.insert(
                "retry".into(),
                serde_json::to_value(&s.retry).unwrap_or(Value::Null),
            );
            if s.continue_on_error {
                m.insert("continue_on_error".into(), json!(true));
            }
            if let Some(pf) = &s.prompt_file {
                m.insert("prompt_file".into(), json!(pf));
            }
            m.insert("request".into(), redact_value(plan, &plan.preview(s)));
            if !s.outputs.is_empty() {
                m.insert(
                    "outputs".into(),
                    redact_value(plan, &Value::Object(s.outputs.clone())),
                );
            }
            Value::Object(m)
        })
        .collect();
    let (spend, runtime) = crate::plan::spend::spend_per_wallet_except(plan, paid_elsewhere);
    let levels = plan.steps.iter().map(|s| s.level + 1).max().unwrap_or(0);
    let mut v = json!({
        "plan": plan.plan.name,
        "file": plan.path.display().to_string(),
        "content_hash": plan.content_hash,
        "levels": levels,
        "steps": steps,
        "spend": {
            "per_wallet": spend,
            "known_at_run_time": runtime,
            "balances_checked": false,
        },
        "warnings": plan.warnings.iter().map(|w| json!({
            "message": w.message,
            "location": w.location.as_ref().map(|l| l.to_string()),
            "help": w.help,
        })).collect::<Vec<_>>(),
    });
    // Only a plan with inputs lists them (the dry run of other plans is as it was).
    if !plan.plan.inputs.is_empty()
        && let Value::Object(m) = &mut v
    {
        m.insert("inputs".into(), Value::Array(inputs_value(plan)));
    }
    v
}

/// The plan's inputs: name, type, description, and the value (or `required: true` when none is
/// given).
fn inputs_value(plan: &CheckedPlan) -> Vec<Value> {
    crate::plan::typed_inputs::declared(&plan.plan.inputs)
        .into_iter()
        .map(|(name, spec)| {
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            m.insert(
                "type".into(),
                json!(crate::plan::typed_inputs::type_name(spec.kind)),
            );
            match plan.inputs.get(&name) {
                Some(v) => m.insert("value".into(), redact_value(plan, v)),
                None => m.insert("required".into(), json!(true)),
            };
            if let Some(d) = &spec.description {
                m.insert("description".into(), json!(d));
            }
            Value::Object(m)
        })
        .collect()
}

/// The inputs as `plan` prints them, one line each.
fn inputs_text(plan: &CheckedPlan, out: &mut String) {
    use std::fmt::Write as _;
    let declared = crate::plan::typed_inputs::declared(&plan.plan.inputs);
    if declared.is_empty() {
        return;
    }
    let _ = writeln!(out, "\ninputs");
    for (name, spec) in declared {
        let value = match plan.inputs.get(&name) {
            Some(v) => plan.redact(&inline(v)),
            None => "required".to_string(),
        };
        let ty = crate::plan::typed_inputs::type_name(spec.kind);
        let _ = write!(out, "  {name} ({ty}): {value}");
        if let Some(d) = &spec.description {
            let _ = write!(out, "  — {}", plan.redact(d));
        }
        let _ = writeln!(out);
    }
}

/// A request value as one line of text (strings bare, others as JSON).
fn inline(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The dry run of a checked plan for a person.
pub fn dry_run_text(plan: &CheckedPlan) -> String {
    dry_run_text_except(plan, &HashSet::new())
}

/// [`dry_run_text`], the spend leaving out the steps in `paid_elsewhere` (`--from-run`).
pub fn dry_run_text_except(plan: &CheckedPlan, paid_elsewhere: &HashSet<String>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let levels = plan.steps.iter().map(|s| s.level + 1).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "plan `{}` ({}): {} step{} in {} level{}",
        plan.plan.name,
        plan.path.display(),
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" },
        levels,
        if levels == 1 { "" } else { "s" },
    );
    inputs_text(plan, &mut out);
    let mut level = usize::MAX;
    for s in &plan.steps {
        if s.level != level {
            level = s.level;
            let _ = writeln!(out, "\nlevel {level}");
        }
        let mut head = format!("  {}  [{}]", s.id, s.kind.name());
        if let (StepKind::Uses(_), Some(g)) = (&s.kind, &s.group) {
            let _ = write!(head, "  end of the group of sub-plan {}", g.file);
        } else if let Some(g) = crate::plan::uses::group_of(s) {
            let _ = write!(head, "  in group {g}");
        }
        if !s.needs.is_empty() {
            let _ = write!(head, "  after {}", s.needs.join(", "));
        }
        let _ = writeln!(out, "{head}");
        if let Some(w) = s.written_when() {
            let w = match w {
                crate::plan::types::When::Bool(b) => b.to_string(),
                crate::plan::types::When::Expr(e) => plan.redact(e),
            };
            let _ = writeln!(out, "      when: {w}");
        }
        if let Value::Object(m) = &plan.preview(s) {
            for (k, v) in m {
                let text = plan.redact(&inline(v));
                if text.contains('\n') {
                    let label = match (&s.prompt_file, k.as_str()) {
                        (Some(pf), "prompt") => format!("prompt (from {pf})"),
                        _ => k.clone(),
                    };
                    let _ = writeln!(out, "      {label}: |");
                    for line in text.trim_end().lines() {
                        let _ = writeln!(out, "        {line}");
                    }
                } else {
                    let _ = writeln!(out, "      {k}: {text}");
                }
            }
        }
    }
    let (spend, runtime) = crate::plan::spend::spend_per_wallet_except(plan, paid_elsewhere);
    let _ = writeln!(out, "\nspend per wallet");
    if spend.is_empty() {
        let _ = writeln!(out, "  (no payments known before the run)");
    }
    for (w, m) in &spend {
        let _ = writeln!(out, "  {w}: {m} AITBC");
    }
    if !runtime.is_empty() {
        let _ = writeln!(
            out,
            "  plus the payments of {} (known only at run time)",
            runtime.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  balances are not known offline: `run` checks them before the first submit"
    );
    out
}
