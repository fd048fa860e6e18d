//! Template names: what each `${{ … }}` in a step reads, checked against what the plan declares —
//! `vars` (with `--set` applied), the `env:` it lists, its `secrets:`, the step's `matrix` keys,
//! `run`, and `steps.ID.OUTPUT` for a step and an output that exist. A wrong name is found here, at
//! load, with a "did you mean"; a reference to another step's outputs is also what makes a step wait
//! for it, and a template that reads only names known at load is marked to be rendered now.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value;

use super::check::{Checker, ptr_seg};
use super::codes::Code;
use super::diag::Diagnostic;
use super::kinds::written_kind;
use super::render_static::Leaf;
use super::template::TemplateError;
use super::types::When;

/// The names a template text reads, or why it cannot be read.
pub(super) type NamesResult = Result<BTreeSet<String>, TemplateError>;

/// What a name in a template refers to.
pub(super) enum NameUse {
    /// Known at load (vars, env, secrets, matrix).
    Static,
    /// Only known at run time (`run.*`).
    Runtime,
    /// Another step's outputs (known at run time): the id as written.
    Step(String),
}

/// Where a template is: which step, its matrix keys, and (in `outputs:`) the step's own outputs.
pub(super) struct Scope<'s> {
    pub(super) index: usize,
    pub(super) matrix_keys: Option<&'s [String]>,
    pub(super) own_outputs: Option<&'s [String]>,
}

impl Checker<'_> {
    /// Checks the templates of step `i` — in its spec, in `when`, in `outputs` — and returns the ids
    /// (as written, each once) of the steps they read, and the spec values that can be rendered at
    /// load. `from_file` says the prompt came from `prompt_file` (its errors point there).
    pub(super) fn step_templates(
        &mut self,
        i: usize,
        kname: &str,
        spec: &Value,
        from_file: bool,
    ) -> (Vec<String>, Vec<Leaf>) {
        let step = &self.plan.steps[i];
        let matrix_keys: Option<Vec<String>> =
            step.matrix.as_ref().map(|m| m.keys().cloned().collect());
        let mut refs: Vec<String> = Vec::new();
        let mut static_leaves = Vec::new();
        let mut leaves = Vec::new();
        string_leaves(spec, String::new(), &mut leaves);
        let scope = Scope {
            index: i,
            matrix_keys: matrix_keys.as_deref(),
            own_outputs: None,
        };
        for (rel, text) in leaves {
            if !super::template::has_template(text) && !text.contains("{{") {
                continue;
            }
            let pointer = self.spec_pointer(i, kname, &rel, from_file);
            let uses = self.check_text(text, &pointer, &scope, false);
            let runtime = uses
                .iter()
                .any(|u| matches!(u, NameUse::Runtime | NameUse::Step(_)));
            for u in uses {
                if let NameUse::Step(id) = u {
                    refs.push(id);
                }
            }
            let tainted = !super::secrets::credential_place(kname, &rel) && self.reads_secret(text);
            if tainted
                && runtime
                && self.plan.steps[i].secrets_in_payload
                && let Some(name) = self.deferred_input_in(text)
            {
                self.known_only_at_run(
                    &name,
                    &pointer,
                    "the sub-plan puts it into a payload with a secret, which only a template known at load may do",
                );
                continue;
            }
            if tainted && (runtime || !self.plan.steps[i].secrets_in_payload) {
                let field = rel.trim_start_matches('/').replace('/', ".");
                let what = match rel.as_str() {
                    "/save" => "the saved path `save`".to_string(),
                    _ if kname == "notify" => format!("the message's `{field}`"),
                    _ => format!("the job's `{field}`"),
                };
                self.secret_out_of_place(i, &pointer, &what);
                continue;
            }
            if super::template::has_template(text) && !runtime {
                static_leaves.push(Leaf {
                    rel,
                    pointer,
                    tainted,
                });
            }
        }
        if let Some(When::Expr(w)) = &step.when {
            let pointer = format!("/steps/{i}/when");
            for u in self.check_text(w, &pointer, &scope, true) {
                if let NameUse::Step(id) = u {
                    refs.push(id);
                }
            }
        }
        if !step.outputs.is_empty() {
            let mut own: Vec<String> = super::types::kind_outputs(kname)
                .iter()
                .map(|s| s.to_string())
                .collect();
            own.extend(step.outputs.keys().cloned());
            let out_scope = Scope {
                index: i,
                matrix_keys: matrix_keys.as_deref(),
                own_outputs: Some(&own),
            };
            for (name, v) in &step.outputs {
                let mut leaves = Vec::new();
                string_leaves(v, String::new(), &mut leaves);
                for (rel, text) in leaves {
                    let pointer = format!("/steps/{i}/outputs/{}{rel}", ptr_seg(name));
                    if self.reads_secret(text) {
                        // Outputs are rendered at run time: never computed from a secret.
                        self.secret_out_of_place(i, &pointer, &format!("the output `{name}`"));
                        continue;
                    }
                    for u in self.check_text(text, &pointer, &out_scope, false) {
                        if let NameUse::Step(id) = u {
                            refs.push(id);
                        }
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        refs.retain(|r| seen.insert(r.clone()));
        (refs, static_leaves)
    }

    /// Checks the templates in one string: syntax, names, and a bare `{{ }}` (a warning). Returns
    /// what the names refer to.
    pub(super) fn check_text(
        &mut self,
        text: &str,
        pointer: &str,
        scope: &Scope<'_>,
        condition: bool,
    ) -> Vec<NameUse> {
        if super::template::has_bare_braces(text) {
            let d = self.source.at(
                pointer,
                Diagnostic::new(
                    "this value holds `{{ … }}` without a `$`: it is sent as written, not rendered",
                )
                .code(Code::BareBraces)
                .help("templates are written `${{ … }}`"),
            );
            self.warnings.push(d);
        }
        if !condition && !super::template::has_template(text) {
            return Vec::new();
        }
        let simple = if condition {
            None
        } else {
            super::template::simple_paths(text)
        };
        let names = match (simple, self.names_cache.get(text)) {
            (Some(paths), _) => Ok(paths.into_iter().map(str::to_string).collect()),
            (None, Some(n)) => n.clone(),
            (None, None) => {
                let n = if condition {
                    self.templates.condition_names(text)
                } else {
                    self.templates.names(text)
                };
                if !condition {
                    self.names_cache.insert(text.to_string(), n.clone());
                }
                n
            }
        };
        let names = match names {
            Ok(n) => n,
            Err(e) => {
                let part = super::template::wrong_template(&self.templates, text, None);
                self.err_part(
                    pointer,
                    text,
                    part,
                    Diagnostic::new(e.to_string()).code(Code::Template),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for name in names {
            match self.check_name(&name, scope) {
                Ok(u) => out.push(u),
                Err(d) => {
                    let word = name.rsplit('.').next().filter(|w| !w.is_empty());
                    let part = super::template::wrong_template(&self.templates, text, word);
                    self.err_part(pointer, text, part, d.code(Code::UnknownName));
                }
            }
        }
        out
    }

    /// Checks a `vars.…` name (`rest`: its parts after `vars`): each part must be there, down to a
    /// value that is not a map. Used for step templates and a sub-plan's `outputs:` alike.
    pub(super) fn check_vars_name(&self, name: &str, rest: &[&str]) -> Result<(), Diagnostic> {
        let mut cur = &self.vars;
        let mut path = String::from("vars");
        for part in rest {
            match cur.get(*part) {
                Some(Value::Object(m)) => {
                    cur = m;
                    path = format!("{path}.{part}");
                }
                Some(_) => break,
                None => {
                    let keys: Vec<&str> = cur.keys().map(String::as_str).collect();
                    let d = Diagnostic::new(format!("unknown variable `{path}.{part}`"));
                    let d = match super::diag::suggest(part, keys.iter().copied()) {
                        Some(k) => d.suggest(Some(format!("{path}.{k}"))),
                        // `--set` gives a value to a variable the plan has, or
                        // below one; a new name is declared in the plan.
                        None if path == "vars" => d.help("declare it under `vars:`"),
                        None => d.help(format!(
                            "declare it under `vars:` or pass `--set {}=…`",
                            &name[5..]
                        )),
                    };
                    return Err(d);
                }
            }
        }
        Ok(())
    }

    /// Checks an `inputs.NAME` name (`input`: NAME): declared under `inputs:`; known only when the
    /// plan runs when it is a required input `validate` was not given.
    pub(super) fn check_input_name(&self, input: Option<&str>) -> Result<NameUse, Diagnostic> {
        let Some(input) = input else {
            return Ok(NameUse::Static);
        };
        if !self.plan.inputs.contains_key(input) {
            let d = Diagnostic::new(format!("unknown input `inputs.{input}`"));
            return Err(
                match super::diag::suggest(input, self.plan.inputs.keys().map(String::as_str)) {
                    Some(k) => d.suggest(Some(format!("inputs.{k}"))),
                    None => d.help("declare it under `inputs:`"),
                },
            );
        }
        // A required input `validate` was not given is known only when the plan runs.
        Ok(if self.inputs.contains_key(input) {
            NameUse::Static
        } else {
            NameUse::Runtime
        })
    }

    /// Checks one dotted name a template reads.
    fn check_name(&self, name: &str, scope: &Scope<'_>) -> Result<NameUse, Diagnostic> {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or("");
        let rest: Vec<&str> = parts.collect();
        let first = rest.first().copied();
        let step = &self.plan.steps[scope.index];
        match root {
            "vars" => self.check_vars_name(name, &rest).map(|()| NameUse::Static),
            "inputs" => self.check_input_name(first),
            "env" => {
                let Some(var) = first else {
                    return Ok(NameUse::Static);
                };
                if !self.plan.env.iter().any(|e| e == var) {
                    return Err(Diagnostic::new(format!(
                        "`env.{var}` is not listed under `env:`"
                    ))
                    .suggest(
                        super::diag::suggest(var, self.plan.env.iter().map(String::as_str))
                            .map(|v| format!("env.{v}")),
                    )
                    .help(format!(
                        "a plan sees only the environment variables it lists; add `{var}` to `env:`"
                    )));
                }
                if !self.env.contains_key(var) {
                    return Err(Diagnostic::new(format!(
                        "the environment variable `{var}` (listed under `env:`) is not set"
                    ))
                    .help(format!(
                        "export {var}=… or use `${{{{ env.{var} | default(…) }}}}`"
                    )));
                }
                Ok(NameUse::Static)
            }
            "secrets" => {
                let Some(s) = first else {
                    return Ok(NameUse::Static);
                };
                if !self.plan.secrets.contains_key(s) {
                    return Err(Diagnostic::new(format!("unknown secret `secrets.{s}`"))
                        .suggest(
                            super::diag::suggest(s, self.plan.secrets.keys().map(String::as_str))
                                .map(|v| format!("secrets.{v}")),
                        )
                        .help("declare it under `secrets:` as `NAME: {env: VARIABLE}` or `NAME: {file: path}`"));
                }
                Ok(NameUse::Static)
            }
            "matrix" => {
                let Some(keys) = scope.matrix_keys else {
                    return Err(Diagnostic::new(format!(
                        "`{name}` is used, but step `{}` has no `matrix:`",
                        step.id
                    )));
                };
                if let Some(k) = first
                    && !keys.iter().any(|x| x == k)
                {
                    let d = Diagnostic::new(format!("unknown matrix key `matrix.{k}`"));
                    return Err(
                        match super::diag::suggest(k, keys.iter().map(String::as_str)) {
                            Some(s) => d.suggest(Some(format!("matrix.{s}"))),
                            None => d.help(format!("the step's matrix keys: {}", keys.join(", "))),
                        },
                    );
                }
                Ok(NameUse::Static)
            }
            "run" => {
                if let Some(f) = first
                    && !super::template::RUN_FIELDS.contains(&f)
                    && !super::status::RUN_STATUS_FIELDS.contains(&f)
                {
                    return Err(Diagnostic::new(format!("unknown field `run.{f}`"))
                        .suggest(
                            super::diag::suggest(
                                f,
                                super::template::RUN_FIELDS
                                    .iter()
                                    .chain(super::status::RUN_STATUS_FIELDS.iter())
                                    .copied(),
                            )
                            .map(|v| format!("run.{v}")),
                        )
                        .help(
                            "`run` has `id`, `started_at`, `plan`, `status` and `failed_steps`",
                        ));
                }
                Ok(NameUse::Runtime)
            }
            "steps" => self.check_step_ref(first, rest.get(1).copied(), scope),
            other => {
                if super::template::FUNCTIONS.contains(&other)
                    || super::status::STATUS_FUNCTIONS.contains(&other)
                {
                    return Ok(NameUse::Static);
                }
                if let Some(own) = scope.own_outputs {
                    if own.iter().any(|o| o == other) {
                        return Ok(NameUse::Runtime);
                    }
                    let cands = own.iter().map(String::as_str).chain(super::template::ROOTS);
                    return Err(Diagnostic::new(format!("unknown name `{other}` in an output template"))
                        .suggest(super::diag::suggest(other, cands))
                        .help(format!(
                            "an output template reads the step's own outputs ({}) and vars, inputs, env, secrets, steps, matrix, run",
                            own.join(", ")
                        )));
                }
                Err(
                    Diagnostic::new(format!("unknown name `{other}` in a template"))
                        .suggest(super::diag::suggest(other, super::template::ROOTS))
                        .help("a template reads vars, inputs, env, secrets, steps, matrix and run"),
                )
            }
        }
    }

    /// Checks `steps.ID.OUTPUT`.
    fn check_step_ref(
        &self,
        id: Option<&str>,
        output: Option<&str>,
        scope: &Scope<'_>,
    ) -> Result<NameUse, Diagnostic> {
        let me = &self.plan.steps[scope.index];
        let Some(id) = id else {
            return Err(Diagnostic::new("cannot tell which step `steps` refers to")
                .help("write `steps.ID.NAME`, or `steps['ID'].NAME` for an id with a `-`"));
        };
        let Some(&j) = self.ids.get(id) else {
            return Err(
                Diagnostic::new(format!("unknown step `{id}` in `steps.{id}`")).suggest(
                    (!self.full())
                        .then(|| {
                            super::diag::suggest(id, self.plan.steps.iter().map(|s| s.id.as_str()))
                        })
                        .flatten(),
                ),
            );
        };
        if j == scope.index {
            let mut d = Diagnostic::new(format!("step `{id}` refers to its own outputs"));
            if scope.own_outputs.is_some() {
                d = d.help(
                    "in `outputs:`, the step's own outputs are read by name: `${{ output }}`",
                );
            }
            return Err(d);
        }
        // A sub-plan that could not be checked (reported once): its outputs are not known.
        if self.broken.contains(&j)
            || (self.plan.steps[j].uses.is_some() && !self.group_outputs.contains_key(&j))
        {
            // Its shape is wrong (reported once): what it outputs is not known.
            return Ok(NameUse::Step(id.to_string()));
        }
        let other = &self.plan.steps[j];
        if let Some(out) = output {
            if other.matrix.is_some() && !self.paired(scope.index, j) {
                return Err(Diagnostic::new(format!(
                    "`steps.{id}.{out}`: `{id}` is a matrix step, so `steps.{id}` is a list of its copies' outputs"
                ))
                .help(format!(
                    "use e.g. `steps.{id} | map(attribute='{out}') | join('\\n')`, or give `{}` the same matrix keys to pair the copies",
                    me.id
                )));
            }
            if let Some(d) = self.unknown_output(id, j, out) {
                return Err(d);
            }
        }
        Ok(NameUse::Step(id.to_string()))
    }
}

impl Checker<'_> {
    /// The error for `steps.ID.OUT` when step `j` (`id`) has no output `out`: its kind's outputs,
    /// those it declares, and for a `uses` step its sub-plan's `outputs:` ([`super::uses`]).
    pub(super) fn unknown_output(&self, id: &str, j: usize, out: &str) -> Option<Diagnostic> {
        let other = &self.plan.steps[j];
        let kind = written_kind(other);
        let mut known: Vec<&str> = super::types::kind_outputs(kind).to_vec();
        known.extend(other.outputs.keys().map(String::as_str));
        known.extend(
            self.group_outputs
                .get(&j)
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
        if known.contains(&out) {
            return None;
        }
        Some(
            Diagnostic::new(format!(
                "step `{id}` (a `{kind}` step) has no output `{out}`"
            ))
            .suggest(
                super::diag::suggest(out, known.iter().copied()).map(|o| format!("steps.{id}.{o}")),
            )
            .help(format!(
                "its outputs: {}; declare more under its `outputs:`",
                known.join(", ")
            )),
        )
    }
}

/// Collects the string values of `v` (with their pointers relative to `v`).
fn string_leaves<'v>(v: &'v Value, rel: String, out: &mut Vec<(String, &'v str)>) {
    let mut path = rel;
    leaves_into(v, &mut path, out);
}

/// [`string_leaves`] with one path buffer, allocating only for strings that may hold a template
/// (`{{` or `${%`): the others need no checking.
fn leaves_into<'v>(v: &'v Value, path: &mut String, out: &mut Vec<(String, &'v str)>) {
    match v {
        Value::String(s) if s.contains("{{") || s.contains("${%") => {
            out.push((path.clone(), s));
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                leaves_into(x, path, out);
                path.truncate(len);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let len = path.len();
                path.push('/');
                path.push_str(&super::source::escape_pointer_segment(k));
                leaves_into(x, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}
