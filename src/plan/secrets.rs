//! The plan's `env:` and `secrets:`: the only values a plan takes from the machine it runs on, read
//! once at load, and the rule that a secret's value never reaches a message, a report or a file.
//! They live together because they are read the same way (from an environment the caller may pass
//! in, so tests need no process environment) and because everything the checker and the checked
//! plan say is redacted against the same secrets.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::check::{Checker, ptr_seg};
use super::checked::CheckedPlan;
use super::codes::Code;
use super::diag::Diagnostic;

/// Replaces every secret value in `text` with `***`.
/// The longest first, so that a value computed from a secret (`Reference: hunter2`) goes whole,
/// not as `Reference: ***`.
fn redact(secrets: &BTreeMap<String, String>, text: &str) -> String {
    let mut values: Vec<&str> = secrets
        .values()
        .map(String::as_str)
        .filter(|v| !v.is_empty() && text.contains(*v))
        .collect();
    if values.is_empty() {
        return text.to_string();
    }
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for v in values {
        out = out.replace(v, "***");
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

/// The fields of a step whose value may hold a secret, by kind and pointer inside the kind's spec:
/// an endpoint's address carries its credentials (`?token=…`) and goes to the runner's own HTTP
/// client, never into a job's payload; a notify's URL (a Slack webhook's path is its credential) and
/// its headers (`Authorization`) go to the webhook only, and are shown redacted. A notify's
/// message (`text`, `body`) is a payload: it is read by whoever reads the channel.
pub(super) fn credential_place(kind: &str, rel: &str) -> bool {
    match kind {
        "notify" => rel == "/url" || rel.starts_with("/headers/"),
        _ => rel == "/endpoint",
    }
}

/// The name under which a value computed from a secret is kept for redaction, beside the secrets
/// themselves: a name no `secrets:` entry can have, so it never meets a declared one.
fn derived_name(pointer: &str, n: usize) -> String {
    format!("{pointer}#{n}")
}

/// Whether the word `secrets` stands as a name anywhere in `text` (not as `x.secrets` or
/// `my_secrets`). MiniJinja's list of the names a template reads misses some places (the value
/// under a slice, `secrets.k[2:]`), so the text is read too; a `'secrets'` inside a string literal
/// counts as well, which errs on the safe side.
/// Only the template parts count: `Tell me about secrets` in a prompt's text is not a read.
fn mentions_secrets(text: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let in_code = |code: &str| {
        let bytes = code.as_bytes();
        code.match_indices("secrets").any(|(at, _)| {
            let before = at.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(at + "secrets".len()).copied();
            !before.is_some_and(|b| word(b) || b == b'.') && !after.is_some_and(word)
        })
    };
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let close = match after.as_bytes().first() {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        // An unclosed template runs to the end (its syntax error is reported elsewhere).
        let end = after[1..].find(close).map_or(after.len(), |e| e + 1);
        if in_code(&after[1..end]) {
            return true;
        }
        rest = &after[end..];
    }
    false
}

impl Checker<'_> {
    /// Whether a template reads a secret at all (`secrets.k`, `secrets['k']`, `secrets` itself): its
    /// value is then computed from one, whatever filters, slices or concatenations it goes through.
    /// Decided from the template's names, not from its value, so `secrets.k | reverse` is caught.
    pub(super) fn reads_secret(&mut self, text: &str) -> bool {
        if !super::template::has_template(text) {
            return false;
        }
        let names = match self.names_cache.get(text) {
            Some(n) => n.clone(),
            None => {
                let n = self.templates.names(text);
                self.names_cache.insert(text.to_string(), n.clone());
                n
            }
        };
        names.is_ok_and(|n| {
            n.iter()
                .any(|name| name == "secrets" || name.starts_with("secrets."))
        }) || mentions_secrets(text)
    }

    /// The error for a template that puts a secret where it does not belong. `what` names the place
    /// (`the job's \`prompt\``, `an output`).
    pub(super) fn secret_out_of_place(&mut self, i: usize, pointer: &str, what: &str) {
        let step = &self.plan.steps[i];
        let d = if step.secrets_in_payload {
            Diagnostic::new(format!(
                "step `{}`: {what} is computed from a secret at run time, where it cannot be \
                 redacted whole; a secret may go into a payload only in a template known at load",
                step.id
            ))
            .help("keep `steps.*` and `run.*` out of the template that reads the secret")
        } else if step.notify.is_some() {
            Diagnostic::new(format!(
                "step `{}`: {what} is computed from a secret; a notify may send a secret only in \
                 its `url` or its `headers`",
                step.id
            ))
            .help(
                "the message is read by everyone in the channel and reaches reports; put a token \
                 in a header (`Authorization: …`), or if this is meant, add \
                 `secrets_in_payload: true` to the step",
            )
        } else {
            Diagnostic::new(format!(
                "step `{}`: {what} is computed from a secret; a secret may go only into an \
                 endpoint's credentials (`endpoint`)",
                step.id
            ))
            .help(
                "a job's payload goes to whichever miner takes the job, and outputs and saved \
                 paths reach reports; if this is meant, add `secrets_in_payload: true` to the step",
            )
        };
        self.err(pointer, d.code(Code::SecretOutOfPlace));
    }

    /// Keeps a value computed from a secret (a step opted in with `secrets_in_payload`) so that it is
    /// redacted whole, like a secret, in every output of the run.
    pub(super) fn keep_derived(&mut self, pointer: &str, v: &Value) {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => return,
            other => other.to_string(),
        };
        if text.is_empty() || self.secrets.values().any(|s| *s == text) {
            return;
        }
        let mut n = 0;
        while self.secrets.contains_key(&derived_name(pointer, n)) {
            n += 1;
        }
        self.secrets.insert(derived_name(pointer, n), text);
    }

    /// Replaces every secret read so far in `text` with `***`.
    pub(super) fn redact(&self, text: &str) -> String {
        redact(&self.secrets, text)
    }

    /// The `env:` names and the `secrets:`, looked up in `environment` (the process environment
    /// when `None`). With `placeholders`, a secret whose variable is not set gets a placeholder
    /// value instead of an error (see [`placeholder`]).
    pub(super) fn read_environment(
        &mut self,
        environment: Option<&BTreeMap<String, String>>,
        placeholders: bool,
    ) {
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
                                .code(Code::SecretSource)
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
                    None if placeholders => {
                        let n = self.secrets.len();
                        self.secrets.insert(name.clone(), placeholder(n));
                    }
                    None => self.err(
                        &pointer,
                        Diagnostic::new(format!(
                            "secret `{name}`: the environment variable `{var}` is not set"
                        ))
                        .code(Code::SecretSource)
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
                        Err(e) => {
                            let d = Diagnostic::new(format!(
                                "secret `{}`: cannot read the file `{}`: {e}",
                                crate::text::shown(name),
                                crate::text::shown(&p.display().to_string())
                            ))
                            .code(Code::SecretSource);
                            // A run resumed on another host reads its plan from the copy the store
                            // kept, which never holds a secret file.
                            let d = if Path::new(file).is_relative()
                                && super::files_read::in_rebuilt_copy(self.dir)
                            {
                                d.help(format!(
                                    "this run's folder was rebuilt from the store on this host, and secret files are never copied: give `{}` from the environment (`{{env: VARIABLE}}`), or as a `file:` at an absolute path that exists on every host that may resume the run",
                                    crate::text::shown(name)
                                ))
                            } else {
                                d
                            };
                            self.err(&pointer, d)
                        }
                    }
                }
                _ => self.err(
                    &pointer,
                    Diagnostic::new(format!(
                        "secret `{name}` must name exactly one of `env` or `file`"
                    ))
                    .code(Code::SecretSource),
                ),
            }
        }
    }
}

/// The value `validate` gives a secret whose variable is not set: plain letters, digits and `-`, so
/// that it passes wherever a real secret would (an endpoint's `?token=…`), distinct per secret, and
/// redacted like any secret value (it is one, for the checker), so it is never shown either.
fn placeholder(n: usize) -> String {
    format!("aitbc-flow-placeholder-secret-{n}")
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::{load_text, messages};

    #[test]
    fn a_relative_secret_file_missing_from_a_rebuilt_copy_says_secret_files_are_never_copied() {
        let yaml = r#"
version: 1
name: t
secrets:
  KEY: {file: key.txt}
steps:
  - id: a
    submit: {job_type: inference, wallet: w, payment: 1, prompt: p}
"#;
        let help = |files: &[(&str, &str)]| {
            let ds = load_text(yaml, files, &LoadOptions::default()).unwrap_err();
            assert_eq!(ds.len(), 1, "{ds:?}");
            assert!(ds[0].message.contains("cannot read the file"), "{ds:?}");
            ds[0].help.clone().unwrap_or_default()
        };
        // On the host that started the run: only the file's error.
        assert!(!help(&[]).contains("rebuilt"));
        // In a folder `resume --store` rebuilt on another host.
        let marker = crate::plan::files_read::COPY_MARKER;
        assert!(help(&[(".git", marker)]).contains("secret files are never copied"));
        // Found there, it is read as anywhere.
        assert!(
            load_text(
                yaml,
                &[(".git", marker), ("key.txt", "k")],
                &LoadOptions::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn the_word_secrets_is_found_as_a_name() {
        for t in [
            "${{ secrets.k[2:] }}",
            "${{ 'a' ~ secrets['k'] }}",
            "${{ (secrets).k }}",
        ] {
            assert!(super::mentions_secrets(t), "{t}");
        }
        for t in [
            "${{ vars.my_secrets }}",
            "${{ vars.secrets }}",
            "${{ secretsx }}",
            "about secrets: ${{ vars.x }}",
        ] {
            assert!(!super::mentions_secrets(t), "{t}");
        }
    }

    #[test]
    fn secrets_never_reach_messages() {
        let yaml = r#"
version: 1
name: t
secrets:
  KIND: {env: T_KIND}
steps:
  - id: a
    secrets_in_payload: true
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
