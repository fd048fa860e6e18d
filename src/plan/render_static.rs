//! Static rendering: the templates that read only what is known at load (`vars`, `env`, `secrets`,
//! `matrix`) are rendered when the plan is loaded, not when the step runs. That is what lets a dry run
//! show the real request, lets the policy judge a payment or a prompt before anything is spent, and
//! puts an error in such a template at its line in the plan rather than in the middle of a run.
//! Templates that read `steps.*` or `run.*` are left as written for [`super::render`].

use serde_json::{Map, Value};

use super::check::{BaseStep, Checker};
use super::codes::Code;
use super::diag::Diagnostic;
use super::names::{NameUse, Scope};
use super::template::TemplateError;

/// A load-time render of a template, or why it failed.
pub(super) type RenderResult = Result<Value, TemplateError>;

/// A template found in a step, with the JSON pointer of the value that holds it.
pub(super) struct Leaf {
    /// The pointer inside the spec (`/prompt`), or `None` for `when` and `outputs`.
    pub(super) rel: String,
    /// The pointer in the plan file.
    pub(super) pointer: String,
    /// The template reads a secret (the step opted in with `secrets_in_payload`): its value is
    /// kept for redaction once rendered.
    pub(super) tainted: bool,
}

/// The value at a pointer relative to `v`, mutably.
fn at_mut<'v>(v: &'v mut Value, rel: &str) -> Option<&'v mut Value> {
    if rel.is_empty() {
        Some(v)
    } else {
        v.pointer_mut(rel)
    }
}

impl Checker<'_> {
    /// The context for templates known at load: vars, env, secrets and a copy's matrix values.
    fn static_context(&mut self, matrix: Option<&Map<String, Value>>) -> minijinja::Value {
        if matrix.is_none()
            && let Some(c) = &self.base_context
        {
            return c.clone();
        }
        let mut m = Map::new();
        super::template::insert_base_context(
            &mut m,
            &self.vars,
            &self.inputs,
            &self.env,
            &self.secrets,
        );
        match matrix {
            Some(mx) => {
                m.insert("matrix".into(), Value::Object(mx.clone()));
                super::template::to_value(&Value::Object(m))
            }
            None => {
                let c = super::template::to_value(&Value::Object(m));
                self.base_context = Some(c.clone());
                c
            }
        }
    }

    /// Renders a template that must be known at load (a matrix list), checking its names first.
    pub(super) fn static_render_checked(
        &mut self,
        text: &str,
        pointer: &str,
        i: usize,
        matrix: Option<&Map<String, Value>>,
    ) -> Option<Value> {
        let scope = Scope {
            index: i,
            matrix_keys: None,
            own_outputs: None,
        };
        let before = self.errors.len();
        let uses = self.check_text(text, pointer, &scope, false);
        if self.errors.len() > before {
            return None;
        }
        if uses.iter().any(|u| !matches!(u, NameUse::Static)) {
            if let Some(name) = self.deferred_input_in(text) {
                self.known_only_at_run(
                    &name,
                    pointer,
                    "the sub-plan uses it where a value must be known before the run",
                );
                return None;
            }
            self.err(
                pointer,
                Diagnostic::new(
                    "this value must be known before the run: it cannot read `steps` or `run`",
                )
                .code(Code::Template),
            );
            return None;
        }
        let ctx = self.static_context(matrix);
        match self.templates.render(text, &ctx) {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = render_message(&e);
                let d = Diagnostic::new(self.redact(&msg))
                    .code(Code::Template)
                    .suggest(super::template::suggest_filter(&e.to_string()));
                self.err(pointer, d);
                None
            }
        }
    }

    /// The value of a dotted name known at load (`vars.a.b`, `env.X`, `secrets.X`, `matrix.k`).
    fn lookup(&self, path: &str, matrix: &Map<String, Value>) -> Option<Value> {
        let mut parts = path.split('.');
        let root = parts.next()?;
        let first = parts.next()?;
        let mut cur = match root {
            "vars" => self.vars.get(first)?,
            "inputs" => self.inputs.get(first)?,
            "matrix" => matrix.get(first)?,
            // Environment variables and secrets are strings: nothing below them.
            "env" | "secrets" => {
                let table = if root == "env" {
                    &self.env
                } else {
                    &self.secrets
                };
                return table
                    .get(first)
                    .map(|v| Value::String(v.clone()))
                    .filter(|_| parts.next().is_none());
            }
            _ => return None,
        };
        for p in parts {
            cur = cur.as_object()?.get(p)?;
        }
        Some(cur.clone())
    }

    /// A copy's spec with its load-time templates rendered, and the policy checked on every value
    /// known now.
    pub(super) fn render_static(
        &mut self,
        i: usize,
        b: &BaseStep,
        combo: &Map<String, Value>,
        last: bool,
    ) -> Value {
        let mut spec = if last {
            b.spec.take()
        } else {
            b.spec.borrow().clone()
        };
        let matrix = (!combo.is_empty()).then_some(combo);
        let ctx = self.static_context(matrix);
        for leaf in &b.static_leaves {
            let Some(slot) = at_mut(&mut spec, &leaf.rel) else {
                continue;
            };
            let Some(text) = slot.as_str() else { continue };
            let fast = super::template::render_simple(text, &|path| self.lookup(path, combo));
            let rendered = if let Some(v) = fast {
                Ok(v)
            } else if matrix.is_none() {
                match self.render_cache.get(text) {
                    Some(r) => r.clone(),
                    None => {
                        let r = self.templates.render(text, &ctx);
                        self.render_cache.insert(text.to_string(), r.clone());
                        r
                    }
                }
            } else {
                self.templates.render(text, &ctx)
            };
            match rendered {
                Ok(v) => {
                    if leaf.tainted {
                        self.keep_derived(&leaf.pointer, &v);
                    }
                    *slot = v;
                }
                Err(e) => {
                    let msg = render_message(&e);
                    let d = Diagnostic::new(self.redact(&msg))
                        .code(Code::Template)
                        .suggest(super::template::suggest_filter(&e.to_string()));
                    let part = match &e {
                        super::template::TemplateError::Unknown(m) => {
                            let word = m.split(' ').nth(1);
                            super::template::wrong_template(&self.templates, text, word)
                        }
                        _ => None,
                    };
                    self.err_part(&leaf.pointer, text, part, d);
                }
            }
        }
        self.check_static_policy(i, b, combo, &spec);
        spec
    }
}

/// The message for a template that failed to render at load.
fn render_message(e: &TemplateError) -> String {
    match e {
        TemplateError::Unknown(m) => m.clone(),
        e => format!("cannot render the template: {e}"),
    }
}
