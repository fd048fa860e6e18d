//! Static policy: the policy (job types, payment bounds, prompt length, resource caps, durations,
//! targets) applied at load to every value of a spec that is known then — written plainly or rendered
//! from `vars`, `env`, `secrets` or `matrix`. A plan that would be refused by the policy fails
//! `validate`, with the line of the value, before any job is paid for; the executor applies the same
//! rules again to what it renders at run time ([`super::render`]), with the same messages
//! ([`policy_diagnostic`]).

use serde_json::{Map, Value};

use super::check::{BaseStep, Checker};
use super::codes::Code;
use super::diag::Diagnostic;
use super::matrix::copy_id;
use crate::money::Money;

impl Checker<'_> {
    /// Records the policy errors of a copy's spec (rendered as far as it can be at load), naming the
    /// prompt file and the copy where there is one.
    pub(super) fn check_static_policy(
        &mut self,
        i: usize,
        b: &BaseStep,
        combo: &Map<String, Value>,
        spec: &Value,
    ) {
        let kname = b.kname;
        let from_file = b.prompt_file.is_some();
        let errs = static_policy(kname, spec, &self.plan.policy);
        for (rel, d) in errs {
            let pointer = self.spec_pointer(i, kname, &rel, from_file);
            let d = match (&b.prompt_file, rel.as_str()) {
                (Some(pf), "/prompt") => Diagnostic {
                    message: format!("{} (prompt file `{pf}`)", d.message),
                    ..d
                },
                _ => d,
            };
            let d = if combo.is_empty() {
                d
            } else {
                Diagnostic {
                    message: format!(
                        "{} in `{}`",
                        d.message,
                        copy_id(&self.plan.steps[i].id, combo)
                    ),
                    ..d
                }
            };
            self.err(&pointer, d);
        }
    }
}

/// A policy error as a diagnostic.
pub fn policy_diagnostic(e: &crate::policy::PolicyError) -> Diagnostic {
    use crate::policy::PolicyError as P;
    let d = Diagnostic::new(e.to_string())
        .code(Code::Policy)
        .suggest(e.suggestion());
    match e {
        P::PaymentBelowMinimum { .. } => {
            d.help("raise the payment, or lower the minimum with `policy.min_payment`")
        }
        P::PromptTooLong { .. } => {
            d.help("shorten the prompt (the limit counts characters after templating)")
        }
        P::OverCap { .. } => {
            d.help("ask for less, or see `policy.resources` (caps may be lowered, not raised)")
        }
        _ => d,
    }
}

/// A value of a spec that is known now: not a string holding a template.
fn known(v: Option<&Value>) -> Option<&Value> {
    match v {
        Some(Value::String(s)) if super::template::has_template(s) => None,
        other => other,
    }
}

/// An amount from a rendered value.
fn amount(v: &Value) -> Result<Money, String> {
    match v {
        Value::Number(n) => n.to_string().parse(),
        Value::String(s) => s.parse(),
        other => Err(format!(
            "expected an amount, found {}",
            super::source::describe_kind(other)
        )),
    }
}

/// A number from a rendered value.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The policy applied to the values of a spec that are known at load, as (pointer inside the spec,
/// diagnostic) pairs.
fn static_policy(
    kind: &str,
    spec: &Value,
    policy: &super::types::Policy,
) -> Vec<(String, Diagnostic)> {
    use crate::policy as p;
    let mut out = Vec::new();
    match kind {
        "submit" | "job" => {
            let job_type = known(spec.get("job_type")).and_then(Value::as_str);
            let type_ok = match job_type {
                Some(t) => match p::check_job_type(t) {
                    Ok(()) => true,
                    Err(e) => {
                        out.push(("/job_type".to_string(), policy_diagnostic(&e)));
                        false
                    }
                },
                None => false,
            };
            if let Some(pay) = known(spec.get("payment")) {
                match amount(pay) {
                    Ok(m) => {
                        let r = if type_ok {
                            p::check_payment(job_type.unwrap_or(""), m, policy)
                        } else {
                            p::check_payment("", m, policy)
                        };
                        if let Err(e) = r {
                            out.push(("/payment".to_string(), policy_diagnostic(&e)));
                        }
                    }
                    Err(e) => out.push((
                        "/payment".to_string(),
                        Diagnostic::new(format!("payment: {e}")).code(Code::InvalidValue),
                    )),
                }
            }
            if let Some(Value::String(prompt)) = known(spec.get("prompt"))
                && let Err(e) = p::check_prompt(prompt, policy)
            {
                out.push(("/prompt".to_string(), policy_diagnostic(&e)));
            }
        }
        "optimize" => {
            let (cpu, mem, gpu, _) = p::caps(policy);
            for (field, resource, cap, zero_ok) in [
                ("cpu", "cpu", cpu, false),
                ("memory", "memory", mem, false),
                ("gpu", "gpu", gpu, true),
            ] {
                if let Some(v) = known(spec.get(field)) {
                    match number(v) {
                        Some(n) => {
                            if let Err(e) = p::check_resource(resource, n, cap, zero_ok) {
                                out.push((format!("/{field}"), policy_diagnostic(&e)));
                            }
                        }
                        None => out.push((
                            format!("/{field}"),
                            Diagnostic::new(format!("`{field}` must be a number"))
                                .code(Code::TypeMismatch),
                        )),
                    }
                }
            }
            // A duration is never a template: `90000` (seconds) and `25h` are both known now.
            if let Some(d) = spec
                .get("duration")
                .and_then(|v| serde_json::from_value::<crate::duration::Dur>(v.clone()).ok())
                && let Err(e) = p::check_duration(d.get(), policy)
            {
                out.push(("/duration".to_string(), policy_diagnostic(&e)));
            }
            if let Some(Value::String(t)) = known(spec.get("target"))
                && let Err(e) = p::check_target(t)
            {
                out.push(("/target".to_string(), policy_diagnostic(&e)));
            }
            if let Some(Value::String(t)) = known(spec.get("task_type"))
                && let Err(e) = p::check_job_type(t)
            {
                out.push(("/task_type".to_string(), policy_diagnostic(&e)));
            }
        }
        "list" => {
            if let Some(Value::String(t)) = known(spec.get("job_type"))
                && let Err(e) = p::check_job_type(t)
            {
                out.push(("/job_type".to_string(), policy_diagnostic(&e)));
            }
            if let Some(limit) = known(spec.get("limit"))
                && let Err(e) = super::render::list_limit(Some(limit))
            {
                out.push((
                    "/limit".to_string(),
                    Diagnostic::new(e).code(Code::InvalidValue),
                ));
            }
        }
        "balance" => {
            if let Some(m) = known(spec.get("min"))
                && let Err(e) = amount(m)
            {
                out.push((
                    "/min".to_string(),
                    Diagnostic::new(format!("min: {e}")).code(Code::InvalidValue),
                ));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::{load_text, messages};

    #[test]
    fn policy_at_load() {
        let yaml = r#"
version: 1
name: t
vars: {long: "aaaaaaaaaa"}
steps:
  - id: a
    submit:
      job_type: inferense
      wallet: w
      payment: 2000000
      prompt: "${{ vars.long * 401 }}"
  - id: b
    submit: {job_type: training, wallet: w, payment: 5, prompt: p}
  - id: o
    optimize: {agent_id: x, cpu: 128, memory: 16, target: speeed}
"#;
        let m = messages(load_text(yaml, &[], &LoadOptions::default()));
        assert!(
            m.iter()
                .any(|x| x.starts_with("8: invalid job type `inferense`")),
            "{m:#?}"
        );
        assert!(
            m.iter()
                .any(|x| x.starts_with("10: payment 2000000 is above")),
            "{m:#?}"
        );
        assert!(
            m.iter()
                .any(|x| x.starts_with("11: prompt is 4010 characters")),
            "{m:#?}"
        );
        assert!(
            m.iter()
                .any(|x| x.starts_with("13: payment 5 is below the minimum of 10")),
            "{m:#?}"
        );
        assert!(
            m.iter()
                .any(|x| x.starts_with("15: cpu 128 is over the cap of 64")),
            "{m:#?}"
        );
        assert!(
            m.iter()
                .any(|x| x.contains("target `speeed`") && x.ends_with("[speed]")),
            "{m:#?}"
        );
    }
}
