//! The plan's `env:` and `secrets:`: the only values a plan takes from the machine it runs on, read
//! once at load, and the rule that a secret's value never reaches a message, a report or a file.
//! They live together because they are read the same way (from an environment the caller may pass
//! in, so tests need no process environment) and because everything the checker and the checked
//! plan say is redacted against the same secrets.

use std::collections::BTreeMap;

use serde_json::Value;

use super::check::{Checker, ptr_seg};
use super::checked::CheckedPlan;
use super::diag::Diagnostic;

/// Replaces every secret value in `text` with `***`.
fn redact(secrets: &BTreeMap<String, String>, text: &str) -> String {
    let mut out = text.to_string();
    for v in secrets.values() {
        if !v.is_empty() {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

impl CheckedPlan {
    /// Replaces every secret value in `text` with `***`.
    pub fn redact(&self, text: &str) -> String {
        redact(&self.secrets, text)
    }

    /// Replaces every secret value in the strings of `v` with `***`, in place.
    pub fn redact_value(&self, v: &mut Value) {
        if self.secrets.values().all(|s| s.is_empty()) {
            return;
        }
        match v {
            Value::String(s)
                if self
                    .secrets
                    .values()
                    .any(|x| !x.is_empty() && s.contains(x.as_str())) =>
            {
                *s = self.redact(s);
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact_value(x)),
            Value::Object(m) => m.values_mut().for_each(|x| self.redact_value(x)),
            _ => {}
        }
    }
}

impl Checker<'_> {
    /// Replaces every secret read so far in `text` with `***`.
    pub(super) fn redact(&self, text: &str) -> String {
        redact(&self.secrets, text)
    }

    /// The `env:` names and the `secrets:`, looked up in `environment` (the process environment
    /// when `None`).
    pub(super) fn read_environment(&mut self, environment: Option<&BTreeMap<String, String>>) {
        let lookup = |name: &str| -> Option<String> {
            match environment {
                Some(env) => env.get(name).cloned(),
                None => std::env::var(name).ok(),
            }
        };
        for name in &self.plan.env {
            if let Some(v) = lookup(name) {
                self.env.insert(name.clone(), v);
            }
        }
        for (name, spec) in &self.plan.secrets {
            let pointer = format!("/secrets/{}", ptr_seg(name));
            let src: super::types::SecretSource = match spec {
                Value::String(var) => super::types::SecretSource {
                    env: Some(var.clone()),
                    file: None,
                },
                other => match serde_json::from_value(other.clone()) {
                    Ok(s) => s,
                    Err(e) => {
                        self.err(
                            &pointer,
                            Diagnostic::new(format!("secret `{name}`: {e}"))
                                .help("write `NAME: {env: VARIABLE}` or `NAME: {file: path}`"),
                        );
                        continue;
                    }
                },
            };
            match (&src.env, &src.file) {
                (Some(var), None) => match lookup(var) {
                    Some(v) => {
                        self.secrets.insert(name.clone(), v);
                    }
                    None => self.err(
                        &pointer,
                        Diagnostic::new(format!(
                            "secret `{name}`: the environment variable `{var}` is not set"
                        ))
                        .help(format!("export {var}=… before running the plan")),
                    ),
                },
                (None, Some(file)) => {
                    // The operator's file, anywhere; read with the same bound as a prompt file.
                    let p = self.dir.join(file);
                    match super::inputs::read_bounded(&p) {
                        Ok(v) => {
                            self.secrets.insert(name.clone(), v.trim().to_string());
                        }
                        Err(e) => self.err(
                            &pointer,
                            Diagnostic::new(format!(
                                "secret `{}`: cannot read the file `{}`: {e}",
                                crate::text::shown(name),
                                crate::text::shown(&p.display().to_string())
                            )),
                        ),
                    }
                }
                _ => self.err(
                    &pointer,
                    Diagnostic::new(format!(
                        "secret `{name}` must name exactly one of `env` or `file`"
                    )),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::{load_text, messages};

    #[test]
    fn secrets_never_reach_messages() {
        let yaml = r#"
version: 1
name: t
secrets:
  KIND: {env: T_KIND}
steps:
  - id: a
    submit: {job_type: "${{ secrets.KIND }}", wallet: w, payment: 1, prompt: p}
"#;
        let opts = LoadOptions {
            environment: Some([("T_KIND".to_string(), "hunter2".to_string())].into()),
            ..Default::default()
        };
        let m = messages(load_text(yaml, &[], &opts));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("invalid job type `***`"), "{m:?}");
        assert!(!m[0].contains("hunter2"));
    }
}
