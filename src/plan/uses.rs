//! Sub-plans: a step `uses: path/to/plan.yaml` with `with:` inputs runs that plan's steps as a group.
//!
//! The sub-plan is read like a prompt file — relative to the including plan's folder, only inside the
//! repository of the top plan ([`super::inputs::repository_root`]) — and checked as a plan of its own
//! by the same checker ([`super::check`]), with three differences: its inputs are the `with:` values
//! (each checked here against its `inputs:` declaration, at the `with:` entry), the including plan's
//! `policy`, `defaults`, `env`, `secrets` and `limits` replace its own, and `--set`/`--vars` do not
//! reach it. An error inside it names its file and line, with a note per including step. Nesting is
//! bounded ([`super::limits::INCLUDE_DEPTH`]), a cycle of includes is refused naming it, and the steps
//! of every group count against the top plan's `limits.steps` as they are read.
//!
//! The checked sub-plan's steps are then spliced into the including plan ([`Checker::splice`]):
//! their ids (and `needs`, and what their `steps.X` mean) prefixed `ID.` ([`SEPARATOR`], which an id
//! as written cannot hold), the group's roots given the `uses` step's `needs`, and the `uses` step
//! itself kept as the end of the group: it waits for the group's last steps, sends nothing, and its
//! outputs are the sub-plan's `outputs:` (templates over the sub-plan's steps), so a step that needs
//! it or reads `steps.ID.NAME` waits for the whole group. Each spliced step carries its sub-plan
//! ([`Included`]): the vars and inputs its templates read at run time and the file its run-time
//! errors point into. The plan hash covers every file read ([`plan_hash`]).
//!
//! A `with:` value that reads `steps.*` or `run.*` (or an input that is itself known only at run
//! time) is *deferred* ([`Deferred`]): the sub-plan is checked without it, so that its templates
//! reading `inputs.NAME` are run-time templates, and a check there that needs the value at load (a
//! matrix over it) is refused at the `with:` entry ([`Checker::known_only_at_run`]). Its names are
//! checked at the `uses` step like a step's templates; the steps it reads become the `uses` step's
//! references, and every spliced step and the group's end wait for them. At run time the value is
//! rendered against the including plan and checked against the input's declaration
//! ([`super::checked::CheckedPlan::group_inputs`]).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::check::{BaseStep, Checker, ptr_seg};
use super::checked::{PlannedStep, StepKind, StepView};
use super::codes::Code;
use super::diag::{Diagnostic, Location};
use super::source::ParsedFile;
use super::types::{Defaults, Limits, Plan};
use crate::policy::settings::Policy;

/// Between the `uses` step's id and the id of a step of its sub-plan: `review.ask`.
pub const SEPARATOR: char = '.';

/// The sub-plan a spliced step comes from: what its templates read, and where its errors point.
#[derive(Clone, Debug)]
pub struct Included {
    /// The `uses` step's id, with the ids of the groups around it: `review`, `nightly.review`.
    pub step: String,
    /// The sub-plan's file, as messages name it.
    pub file: String,
    /// The sub-plan as parsed (run-time errors are placed in it).
    pub source: ParsedFile,
    /// Its `vars`.
    pub vars: Map<String, Value>,
    /// Its inputs known at load: the `with:` values, else its defaults.
    pub inputs: Map<String, Value>,
    /// Its inputs whose `with:` values are known only at run time (they read `steps` or `run`):
    /// rendered against the including plan when a step of the group needs them
    /// ([`super::checked::CheckedPlan::group_inputs`]).
    pub deferred: Vec<Deferred>,
    /// What `steps.X` means to the deferred values: the including plan's steps, by id as written.
    pub with_views: BTreeMap<String, StepView>,
    /// The group the `uses` step is in (whose vars and inputs the deferred values read), `None` for
    /// a `uses` step of the top plan.
    pub outer: Option<Arc<Included>>,
    /// The `uses` step's `when`, with where it is written: evaluated against the including plan
    /// (as the deferred values are rendered) for every step of the group and its end, which run
    /// only when it and their own `when` hold ([`super::checked::CheckedPlan::should_run`]).
    pub when: Option<(super::types::When, Location)>,
    /// Whether one of its steps lets a secret into its payload.
    pub secrets_in_payload: bool,
    /// Where the `uses` step is in the including plan.
    pub from: Location,
}

/// A `with:` value known only at run time: the input it gives, the value as written, the input's
/// declaration (checked when it is rendered) and where it is written.
#[derive(Clone, Debug)]
pub struct Deferred {
    /// The sub-plan's input.
    pub name: String,
    /// The value as written in the including plan (its templates rendered at run time).
    pub value: Value,
    /// The input's declaration.
    pub spec: super::types::InputSpec,
    /// The `with:` entry in the including plan.
    pub at: Location,
}

impl Included {
    /// The same sub-plan seen from one level up: its ids and those its deferred values read take
    /// `prefix`, and its outer group is `outer` (once rescoped) or the group being spliced.
    fn rescoped(
        &self,
        prefix: &str,
        top: &Arc<Included>,
        done: &mut HashMap<*const Included, Arc<Included>>,
    ) -> Arc<Included> {
        let key: *const Included = self;
        if let Some(r) = done.get(&key) {
            return r.clone();
        }
        let outer = Some(match &self.outer {
            None => top.clone(),
            Some(o) => o.rescoped(prefix, top, done),
        });
        let mut with_views = self.with_views.clone();
        for v in with_views.values_mut() {
            prefix_view(v, prefix);
        }
        let r = Arc::new(Included {
            step: format!("{prefix}{}", self.step),
            with_views,
            outer,
            ..self.clone()
        });
        done.insert(key, r.clone());
        r
    }
}

/// Puts `prefix` before the ids of a view.
fn prefix_view(v: &mut StepView, prefix: &str) {
    match v {
        StepView::One(id) => *id = format!("{prefix}{id}"),
        StepView::List(ids) => ids.iter_mut().for_each(|id| *id = format!("{prefix}{id}")),
    }
}

/// A file a plan read besides itself: a sub-plan, with the SHA-256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IncludedFile {
    /// The file, as messages name it.
    pub path: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// What an including plan passes to the sub-plan it checks.
pub(super) struct Inclusion {
    /// The plans that include the sub-plan and the sub-plan itself, outermost first: each file's
    /// canonical path and its name as shown.
    pub(super) chain: Vec<(PathBuf, String)>,
    /// The top plan's repository: every sub-plan and prompt file must be in it.
    pub(super) root: PathBuf,
    policy: Policy,
    defaults: Defaults,
    env: Vec<String>,
    secrets: Map<String, Value>,
    limits: Limits,
    /// The inputs, from `with:`, checked against their declarations.
    pub(super) given: Map<String, Value>,
    /// The inputs whose `with:` values are known only at run time, each with an empty diagnostic
    /// placed at its `with:` entry (in the including plan), for a check that needs the value at load.
    pub(super) deferred: BTreeMap<String, Diagnostic>,
    /// Steps the top plan may still take in: `limits.steps`, less every group read so far.
    pub(super) budget: Rc<Cell<usize>>,
}

impl Inclusion {
    /// Gives the sub-plan the including plan's policy, defaults, env, secrets and limits; a
    /// sub-plan's schedule means nothing when it is included.
    pub(super) fn adopt(&self, plan: &mut Plan) {
        plan.policy = self.policy.clone();
        plan.defaults = self.defaults.clone();
        plan.env = self.env.clone();
        plan.secrets = self.secrets.clone();
        plan.limits = self.limits.clone();
        plan.schedule = None;
    }
}

/// A checked sub-plan, waiting to be spliced into the including plan.
pub(super) struct Group {
    steps: Vec<PlannedStep>,
    outputs: Map<String, Value>,
    secrets: BTreeMap<String, String>,
    /// Shared once spliced (the deferred values' views are known then).
    included: Included,
    files: Vec<IncludedFile>,
}

/// The group a step belongs to (the id of the `uses` step that ends it), `None` for a step of the
/// plan itself. A `uses` step belongs to the group around it, if any.
pub fn group_of(step: &PlannedStep) -> Option<&str> {
    match step.kind {
        StepKind::Uses(_) => step.id.rsplit_once(SEPARATOR).map(|(g, _)| g),
        _ => step.group.as_ref().map(|g| g.step.as_str()),
    }
}

/// The hash `resume`, `--from-run` and the cache compare: the plan file's SHA-256 when it uses no
/// sub-plan, else the SHA-256 of that and of each sub-plan's, in the order they were read.
pub fn plan_hash(own: &str, included: &[IncludedFile]) -> String {
    if included.is_empty() {
        return own.to_string();
    }
    let mut text = own.to_string();
    for f in included {
        text.push('\n');
        text.push_str(&f.sha256);
    }
    super::check::content_hash(text.as_bytes())
}

/// The blocks of a sub-plan that the including plan's replace (a warning says so when it has them).
const REPLACED: &[&str] = &["policy", "defaults", "limits", "schedule"];

impl Checker<'_> {
    /// Reads and checks the sub-plan of every `uses` step, before the steps are checked (a step may
    /// read a group's outputs before the `uses` step comes).
    pub(super) fn load_groups(&mut self) {
        for i in 0..self.plan.steps.len() {
            if self.plan.steps[i].uses.is_some() {
                if self.full() || self.step_budget.get() == 0 {
                    return;
                }
                self.load_group(i);
            }
        }
    }

    /// The files from the top plan down to this one (canonical, as shown).
    fn chain(&self) -> Vec<(PathBuf, String)> {
        match self.inclusion {
            Some(inc) => inc.chain.clone(),
            None => vec![(
                std::fs::canonicalize(self.path).unwrap_or_else(|_| self.path.to_path_buf()),
                self.source.file.clone(),
            )],
        }
    }

    /// The note on a problem found in the sub-plan of step `i`.
    fn included_from(&self, i: usize) -> String {
        format!(
            "included from {} (step `{}`)",
            self.source.locate(&format!("/steps/{i}")),
            self.plan.steps[i].id
        )
    }

    /// Problems found in the sub-plan of step `i`, with the note that says where it is used.
    fn included_errors(&mut self, i: usize, ds: Vec<Diagnostic>) {
        let note = self.included_from(i);
        for d in ds {
            // A problem placed in this plan already (a `with:` value the sub-plan cannot take).
            let here = d
                .location
                .as_ref()
                .is_some_and(|l| l.file == self.source.file);
            let d = if d.code == Code::TooManyErrors || here {
                d
            } else {
                d.note(note.clone())
            };
            self.errors.push(d);
        }
    }

    /// Reads and checks the sub-plan of step `i`, keeping it for [`Checker::splice`].
    fn load_group(&mut self, i: usize) {
        let plan = self.plan;
        let step = &plan.steps[i];
        let Some(name) = step.uses.as_deref() else {
            return;
        };
        let at = format!("/steps/{i}/uses");
        if super::template::has_template(name) {
            return self.err(
                &at,
                Diagnostic::new("`uses` cannot be a template")
                    .code(Code::SubPlan)
                    .help("name the sub-plan's file; give it values with `with:`"),
            );
        }
        let mut chain = self.chain();
        let shown = std::path::Path::new(&self.source.file)
            .parent()
            .map_or_else(|| PathBuf::from(name), |p| p.join(name))
            .display()
            .to_string();
        let shown_name = crate::text::shown(name).into_owned();
        if chain.len() > super::limits::INCLUDE_DEPTH {
            let names: Vec<&str> = chain.iter().map(|(_, s)| s.as_str()).collect();
            return self.err(
                &at,
                Diagnostic::new(format!(
                    "sub-plans nest more than {} deep: {} → {shown_name}",
                    super::limits::INCLUDE_DEPTH,
                    names.join(" → ")
                ))
                .code(Code::Limit)
                .help("use fewer levels of sub-plans"),
            );
        }
        let root = self
            .input_root
            .get_or_init(|| super::inputs::repository_root(self.dir))
            .clone();
        let path = self.dir.join(name);
        let real = match std::fs::canonicalize(&path) {
            Ok(r) => r,
            Err(e) => {
                let why = super::inputs::InputError::from_io(&e);
                return self.err(
                    &at,
                    Diagnostic::new(format!(
                        "cannot read the sub-plan `{shown_name}` ({}): {why}",
                        crate::text::shown(&path.display().to_string())
                    ))
                    .code(Code::SubPlan)
                    .help("`uses` is relative to the plan's folder"),
                );
            }
        };
        if !real.starts_with(&root) {
            return self.err(
                &at,
                Diagnostic::new(format!(
                    "the sub-plan `{shown_name}` is refused: {}",
                    super::inputs::InputError::Outside
                ))
                .code(Code::SubPlan)
                .help("a plan uses plans from its own repository only; move the file there"),
            );
        }
        if let Some(k) = chain.iter().position(|(p, _)| *p == real) {
            let mut names: Vec<&str> = chain[k..].iter().map(|(_, s)| s.as_str()).collect();
            names.push(&chain[k].1);
            let cycle = names.join(" → ");
            return self.err(
                &at,
                Diagnostic::new(format!(
                    "the sub-plans include each other in a cycle: {cycle}"
                ))
                .code(Code::IncludeCycle)
                .help("a plan cannot use itself, directly or through another plan"),
            );
        }
        if !real.is_file() {
            return self.err(
                &at,
                Diagnostic::new(format!(
                    "the sub-plan `{shown_name}` is refused: {}",
                    super::inputs::InputError::NotAFile
                ))
                .code(Code::SubPlan),
            );
        }
        let bytes = match super::source::read(&real, &shown) {
            Ok(b) => b,
            Err(ds) => {
                for d in ds {
                    let d = d.code(Code::SubPlan);
                    self.err(&at, d);
                }
                return;
            }
        };
        let source = match super::source::parse(&shown, &bytes) {
            Ok(s) => s,
            Err(ds) => return self.included_errors(i, ds),
        };
        let sub = match super::schema::check(&source) {
            Ok(p) => p,
            Err(ds) => return self.included_errors(i, ds),
        };
        let Some((given, deferred)) = self.with_values(i, &sub, &shown_name) else {
            return;
        };
        let note = self.included_from(i);
        for key in REPLACED {
            if source.value.get(*key).is_some() {
                let d = source.at(
                    &format!("/{key}"),
                    Diagnostic::new(format!(
                        "the sub-plan's `{key}:` is not applied when another plan uses it: the including plan's is"
                    ))
                    .code(Code::SubPlanBlock)
                    .note(note.clone()),
                );
                self.warnings.push(d);
            }
        }
        let file_read = super::files_read::FileRead::new(
            super::files_read::FileRole::SubPlan,
            &root,
            &real,
            false,
            &bytes,
        );
        chain.push((real, shown.clone()));
        let inc = Inclusion {
            chain,
            root,
            policy: plan.policy.clone(),
            defaults: plan.defaults.clone(),
            env: plan.env.clone(),
            secrets: plan.secrets.clone(),
            limits: plan.limits.clone(),
            given,
            deferred: deferred
                .iter()
                .map(|d| {
                    let pointer = format!("/steps/{i}/with/{}", ptr_seg(&d.name));
                    (
                        d.name.clone(),
                        self.source.at(&pointer, Diagnostic::new("")),
                    )
                })
                .collect(),
            budget: self.step_budget.clone(),
        };
        let own_hash = super::check::content_hash(&bytes);
        let checked = match super::check::check_included(source, sub, &path, self.options, &inc) {
            Ok(c) => c,
            Err(ds) => return self.included_errors(i, ds),
        };
        // The sub-plan and what it read (its prompt files, its own sub-plans) are kept with the run's
        // files, for a resume on another host.
        super::files_read::add(&mut self.files_read, file_read);
        for f in &checked.files_read {
            super::files_read::add(&mut self.files_read, f.clone());
        }
        let own = checked.steps.iter().filter(|s| s.group.is_none()).count();
        let left = self.step_budget.get();
        if own > left {
            self.step_budget.set(0);
            return self.err(
                &at,
                Diagnostic::new(format!(
                    "the plan has more than {} steps once its sub-plans are expanded (`limits.steps`)",
                    self.limits.steps
                ))
                .code(Code::Limit)
                .help(format!(
                    "use smaller sub-plans, or raise `limits.steps` of the top plan (at most {})",
                    super::limits::STEPS_CEILING
                )),
            );
        }
        self.step_budget.set(left - own);
        let secrets_in_payload = checked.secrets_in_payload();
        for w in checked.warnings {
            self.warnings.push(w.note(note.clone()));
        }
        let included = Included {
            step: step.id.clone(),
            file: shown.clone(),
            secrets_in_payload,
            source: checked.source,
            vars: checked.vars,
            inputs: checked.inputs,
            deferred,
            with_views: BTreeMap::new(),
            outer: None,
            when: None,
            from: self.source.locate(&format!("/steps/{i}")),
        };
        let mut files = vec![IncludedFile {
            path: shown,
            sha256: own_hash,
        }];
        files.extend(checked.included);
        self.group_outputs
            .insert(i, checked.plan.outputs.keys().cloned().collect());
        self.groups.insert(
            i,
            Group {
                steps: checked.steps,
                outputs: checked.plan.outputs,
                secrets: checked.secrets,
                included,
                files,
            },
        );
    }

    /// The `with:` values of step `i`, rendered and checked against the sub-plan's `inputs:`, and
    /// those known only at run time (their names are checked by [`Checker::uses_base`]); `None`
    /// when one does not fit (each problem is reported at its entry).
    fn with_values(
        &mut self,
        i: usize,
        sub: &Plan,
        shown: &str,
    ) -> Option<(Map<String, Value>, Vec<Deferred>)> {
        let plan = self.plan;
        let step = &plan.steps[i];
        let declared = super::typed_inputs::declared(&sub.inputs);
        let mut given = Map::new();
        let mut deferred = Vec::new();
        let mut ok = true;
        for (k, v) in &step.with {
            let pointer = format!("/steps/{i}/with/{}", ptr_seg(k));
            let Some((_, spec)) = declared.iter().find(|(n, _)| n == k) else {
                let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
                let d = Diagnostic::new(format!(
                    "`with:` gives `{}`, but the sub-plan `{shown}` has no input `{}`",
                    crate::text::shown(k),
                    crate::text::shown(k)
                ))
                .code(Code::WithInput)
                .suggest(super::diag::suggest(k, names.iter().copied()));
                let d = if names.is_empty() {
                    d.help("the sub-plan declares no `inputs:`")
                } else {
                    d.help(format!("its inputs: {}", names.join(", ")))
                };
                self.err(&pointer, d);
                ok = false;
                continue;
            };
            // `validate` without a required input: a `with:` value that reads it is not known, so
            // the sub-plan's input is left out as well (and checked as missing there, if required).
            if self.options.allow_missing_inputs && self.reads_missing_input(v) {
                continue;
            }
            if self.known_at_run(v) {
                if self.with_secret(v, &pointer) {
                    ok = false;
                } else {
                    deferred.push(Deferred {
                        name: k.clone(),
                        value: v.clone(),
                        spec: spec.clone(),
                        at: self.source.locate(&pointer),
                    });
                }
                continue;
            }
            let Some(value) = self.with_value(v, &pointer, i) else {
                ok = false;
                continue;
            };
            match super::typed_inputs::from_value(spec, &value) {
                Ok(v) => {
                    given.insert(k.clone(), v);
                }
                Err(m) => {
                    self.err(
                        &pointer,
                        Diagnostic::new(format!("input `{k}` of the sub-plan `{shown}`: {m}"))
                            .code(Code::InputValue),
                    );
                    ok = false;
                }
            }
        }
        for (n, spec) in &declared {
            if spec.required && !step.with.contains_key(n) {
                self.err(
                    &format!("/steps/{i}/uses"),
                    Diagnostic::new(format!(
                        "the sub-plan `{shown}` needs input `{n}` ({}), and `with:` does not give it",
                        super::typed_inputs::type_name(spec.kind)
                    ))
                    .code(Code::InputRequired)
                    .help(format!("add `with: {{{n}: …}}` to step `{}`", step.id)),
                );
                ok = false;
            }
        }
        ok.then_some((given, deferred))
    }

    /// Whether a `with:` value is known only at run time: one of its templates reads `steps`,
    /// `run`, or an input of this plan that is itself known only at run time.
    fn known_at_run(&self, v: &Value) -> bool {
        let mut leaves = Vec::new();
        super::render::collect_strings(v, String::new(), &mut leaves);
        leaves.iter().any(|(_, text)| {
            super::template::has_template(text)
                && self.templates.names(text).is_ok_and(|names| {
                    names.iter().any(|n| {
                        let mut parts = n.split('.');
                        match (parts.next(), parts.next()) {
                            (Some("steps" | "run"), _) => true,
                            (Some("inputs"), Some(name)) => self.deferred_input(name),
                            _ => false,
                        }
                    })
                })
        })
    }

    /// Whether input `name` of this plan is given by a `with:` value known only at run time.
    pub(super) fn deferred_input(&self, name: &str) -> bool {
        self.inclusion
            .is_some_and(|inc| inc.deferred.contains_key(name))
    }

    /// The first input known only at run time that a template reads, if any.
    pub(super) fn deferred_input_in(&self, text: &str) -> Option<String> {
        if self.inclusion.is_none_or(|inc| inc.deferred.is_empty()) {
            return None;
        }
        let names = self.templates.names(text).ok()?;
        names.iter().find_map(|n| {
            let name = n.strip_prefix("inputs.")?;
            let name = name.split('.').next().unwrap_or(name);
            self.deferred_input(name).then(|| name.to_string())
        })
    }

    /// The error for a value of this sub-plan that must be known at load (`what` says why) but
    /// reads input `name`, whose `with:` value is known only at run time: placed at that `with:`
    /// entry, with a note naming the value here.
    pub(super) fn known_only_at_run(&mut self, name: &str, pointer: &str, what: &str) {
        let Some(stamp) = self.inclusion.and_then(|inc| inc.deferred.get(name)) else {
            return;
        };
        let placed = self.source.at(pointer, Diagnostic::new(""));
        let here = match (placed.location, placed.field) {
            (Some(at), Some(field)) => format!("{at} (`{field}`)"),
            (Some(at), None) => at.to_string(),
            (None, _) => self.source.file.clone(),
        };
        let d = Diagnostic {
            message: format!(
                "input `{name}` of the sub-plan `{}` is known only at run time (its `with:` value reads `steps` or `run`), but {what}",
                crate::text::shown(&self.source.file)
            ),
            help: Some(
                "give this input a value known at load (vars, inputs, env), or pass the run-time value to an input the sub-plan reads only in its steps' requests, `when` and outputs"
                    .into(),
            ),
            ..stamp.clone()
        }
        .code(Code::WithInput)
        .note(format!("the sub-plan needs it at {here}"));
        self.errors.push(d);
    }

    /// Refuses a `with:` value that reads a secret (a sub-plan reads the including plan's secrets
    /// itself, where a secret may go); true when it does.
    fn with_secret(&mut self, v: &Value, pointer: &str) -> bool {
        let mut leaves = Vec::new();
        super::render::collect_strings(v, String::new(), &mut leaves);
        let secret = leaves.iter().any(|(_, text)| {
            super::template::has_template(text)
                && self.templates.names(text).is_ok_and(|names| {
                    names
                        .iter()
                        .any(|n| n == "secrets" || n.starts_with("secrets."))
                })
        });
        if secret {
            self.err(
                pointer,
                Diagnostic::new("a `with:` value cannot read a secret")
                    .code(Code::SecretOutOfPlace)
                    .help(
                        "the sub-plan reads the including plan's secrets itself, as `${{ secrets.NAME }}`, where a secret may go",
                    ),
            );
        }
        secret
    }

    /// Whether a `with:` value's templates read an input that has no value (`validate` was not
    /// given a required one).
    fn reads_missing_input(&self, v: &Value) -> bool {
        let mut leaves = Vec::new();
        super::render::collect_strings(v, String::new(), &mut leaves);
        leaves.iter().any(|(_, text)| {
            super::template::has_template(text)
                && self.templates.names(text).is_ok_and(|names| {
                    names.iter().any(|n| {
                        n.strip_prefix("inputs.")
                            .map(|rest| rest.split('.').next().unwrap_or(rest))
                            .is_some_and(|name| {
                                self.plan.inputs.contains_key(name)
                                    && !self.inputs.contains_key(name)
                                    && !self.deferred_input(name)
                            })
                    })
                })
        })
    }

    /// One `with:` value with its templates rendered (they read what is known at load, never a
    /// secret: a sub-plan reads the including plan's secrets itself, where a secret may go).
    fn with_value(&mut self, v: &Value, pointer: &str, i: usize) -> Option<Value> {
        match v {
            Value::String(s) if super::template::has_template(s) => {
                if self.with_secret(v, pointer) {
                    return None;
                }
                self.static_render_checked(s, pointer, i, None)
            }
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (k, x) in a.iter().enumerate() {
                    out.push(self.with_value(x, &format!("{pointer}/{k}"), i)?);
                }
                Some(Value::Array(out))
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    let v = self.with_value(x, &format!("{pointer}/{}", ptr_seg(k)), i)?;
                    out.insert(k.clone(), v);
                }
                Some(Value::Object(out))
            }
            other => Some(other.clone()),
        }
    }

    /// A `uses` step as written: no key but `id`, `name`, `needs`, `uses` and `with`.
    pub(super) fn uses_base(&mut self, i: usize, kind: StepKind) -> Option<BaseStep> {
        let step = &self.plan.steps[i];
        let set: [(&str, bool); 7] = [
            ("timeout", step.timeout.is_some()),
            ("retry", step.retry.is_some()),
            ("continue_on_error", step.continue_on_error),
            ("matrix", step.matrix.is_some()),
            ("outputs", !step.outputs.is_empty()),
            ("cache", step.cache),
            ("secrets_in_payload", step.secrets_in_payload),
        ];
        let mut ok = true;
        for (key, on) in set {
            if on {
                self.err(
                    &format!("/steps/{i}/{key}"),
                    Diagnostic::new(format!(
                        "a `uses` step takes `id`, `name`, `needs`, `when`, `uses` and `with` only, not `{key}`"
                    ))
                    .code(Code::StepShape)
                    .help("set it on the sub-plan's steps; its outputs are the sub-plan's `outputs:`"),
                );
                ok = false;
            }
        }
        let mut refs = self.deferred_refs(i);
        for r in self.uses_when(i) {
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
        let mut deps = self.needs(i);
        for r in &refs {
            if !deps.contains(r) {
                deps.push(r.clone());
            }
        }
        ok.then(|| BaseStep {
            kname: kind.name(),
            kind: std::cell::RefCell::new(Some(kind)),
            spec: std::cell::RefCell::new(Value::Object(Map::new())),
            prompt_file: None,
            deps,
            refs,
            combos: vec![Map::new()],
            static_leaves: Vec::new(),
        })
    }

    /// Checks the `when` of `uses` step `i` as a step's (its names, the steps it reads, the
    /// filters it calls) and returns the ids of the steps it reads. It may not call a status
    /// function: the group's steps run or not as their own `when` says after a failure.
    fn uses_when(&mut self, i: usize) -> Vec<String> {
        let Some(super::types::When::Expr(w)) = &self.plan.steps[i].when else {
            return Vec::new();
        };
        let pointer = format!("/steps/{i}/when");
        let gate = super::status::gate_of(self.plan.steps[i].when.as_ref());
        if gate != super::status::Gate::Success {
            self.err(
                &pointer,
                Diagnostic::new(format!(
                    "a `uses` step's `when` cannot call `{}`: it is applied to every step of the group",
                    gate.name()
                ))
                .code(Code::StepShape)
                .help("call it in the `when` of the sub-plan's steps that should run after a failure"),
            );
            return Vec::new();
        }
        let scope = super::names::Scope {
            index: i,
            matrix_keys: None,
            own_outputs: None,
        };
        let before = self.errors.len();
        let refs: Vec<String> = self
            .check_text(w, &pointer, &scope, true)
            .into_iter()
            .filter_map(|u| match u {
                super::names::NameUse::Step(id) => Some(id),
                _ => None,
            })
            .collect();
        if self.errors.len() == before
            && let Err(super::template::TemplateError::Unknown(m)) =
                self.templates.lenient().try_callables(w, true)
        {
            let d = Diagnostic::new(m.clone())
                .code(Code::Template)
                .suggest(super::template::suggest_filter(&m));
            self.err(&pointer, d);
        }
        refs
    }

    /// Checks the names the `with:` values of step `i` known only at run time read, as a step's
    /// templates are checked (at the `uses` step, once every group's outputs are known), and returns
    /// the ids of the steps they read: the group waits for them.
    fn deferred_refs(&mut self, i: usize) -> Vec<String> {
        let Some(g) = self.groups.get(&i) else {
            return Vec::new();
        };
        let mut leaves = Vec::new();
        for d in &g.included.deferred {
            let pointer = format!("/steps/{i}/with/{}", ptr_seg(&d.name));
            super::render::collect_strings(&d.value, pointer, &mut leaves);
        }
        let scope = super::names::Scope {
            index: i,
            matrix_keys: None,
            own_outputs: None,
        };
        let mut refs: Vec<String> = Vec::new();
        let lenient = self.templates.lenient();
        for (pointer, text) in leaves {
            let before = self.errors.len();
            for u in self.check_text(&text, &pointer, &scope, false) {
                if let super::names::NameUse::Step(id) = u
                    && !refs.contains(&id)
                {
                    refs.push(id);
                }
            }
            // A filter, test or function that does not exist fails here, not when the group starts.
            if self.errors.len() == before
                && let Err(super::template::TemplateError::Unknown(m)) =
                    lenient.try_callables(&text, false)
            {
                let word = m.split(' ').nth(1).filter(|_| m.ends_with(" is unknown"));
                let part = super::template::wrong_template(&self.templates, &text, word);
                let d = Diagnostic::new(m.clone())
                    .code(Code::Template)
                    .suggest(super::template::suggest_filter(&m));
                self.err_part(&pointer, &text, part, d);
            }
        }
        refs
    }

    /// `with:` belongs to a `uses` step.
    pub(super) fn with_without_uses(&mut self, i: usize) {
        let step = &self.plan.steps[i];
        if !step.with.is_empty() && step.uses.is_none() {
            self.err(
                &format!("/steps/{i}/with"),
                Diagnostic::new("`with:` gives inputs to a sub-plan: it belongs to a `uses` step")
                    .code(Code::WithInput),
            );
        }
    }

    /// Puts each group's steps in place of its `uses` step, and that step after them as the group's
    /// end (see the module's documentation).
    pub(super) fn splice(&mut self, planned: &mut Vec<PlannedStep>) {
        if self.groups.is_empty() {
            return;
        }
        let mut out: Vec<PlannedStep> = Vec::with_capacity(planned.len());
        for mut p in std::mem::take(planned) {
            let group = match p.kind {
                StepKind::Uses(_) => self.groups.remove(&p.index),
                _ => None,
            };
            let Some(g) = group else {
                out.push(p);
                continue;
            };
            let prefix = format!("{}{SEPARATOR}", p.id);
            let pre = |id: &str| format!("{prefix}{id}");
            // What the deferred `with:` values read: every step of the group (and its end) waits
            // for it, so that its outputs are there when a step's inputs are rendered.
            let with_views = std::mem::take(&mut p.views);
            let producers: Vec<String> = with_views
                .values()
                .flat_map(|v| match v {
                    StepView::One(id) => std::slice::from_ref(id),
                    StepView::List(ids) => ids.as_slice(),
                })
                .cloned()
                .collect();
            let when = p.when.take().map(|w| {
                let at = self.source.locate(&format!("{}/when", p.pointer));
                (w, at)
            });
            let included = Arc::new(Included {
                with_views,
                when,
                ..g.included
            });
            let mut rescoped: HashMap<*const Included, Arc<Included>> = HashMap::new();
            let mut needed: HashSet<String> = HashSet::new();
            let mut views: BTreeMap<String, StepView> = BTreeMap::new();
            let mut steps = g.steps;
            for s in &mut steps {
                // A step of the sub-plan itself (a nested group's steps are prefixed already).
                let own = !s.base_id.contains(SEPARATOR);
                if own {
                    let id = pre(&s.id);
                    if s.matrix.is_empty() {
                        views.insert(s.base_id.clone(), StepView::One(id));
                    } else {
                        match views
                            .entry(s.base_id.clone())
                            .or_insert_with(|| StepView::List(Vec::new()))
                        {
                            StepView::List(ids) => ids.push(id),
                            StepView::One(_) => {}
                        }
                    }
                }
                s.id = pre(&s.id);
                s.base_id = pre(&s.base_id);
                for n in &mut s.needs {
                    *n = pre(n);
                }
                for v in s.views.values_mut() {
                    match v {
                        StepView::One(id) => *id = pre(id),
                        StepView::List(ids) => ids.iter_mut().for_each(|id| *id = pre(id)),
                    }
                }
                s.index = p.index;
                s.group = Some(match &s.group {
                    None => included.clone(),
                    Some(inner) => inner.rescoped(&prefix, &included, &mut rescoped),
                });
                if s.needs.is_empty() {
                    s.needs = p.needs.clone();
                } else {
                    needed.extend(s.needs.iter().cloned());
                    for id in &producers {
                        if !s.needs.contains(id) {
                            s.needs.push(id.clone());
                        }
                    }
                }
            }
            // The group's end waits for its last steps and for those its outputs may read (the
            // executor keeps a step's outputs only while a step that needs it has yet to run).
            let read: HashSet<&str> = views
                .values()
                .flat_map(|v| match v {
                    StepView::One(id) => std::slice::from_ref(id),
                    StepView::List(ids) => ids.as_slice(),
                })
                .map(String::as_str)
                .collect();
            let waits: Vec<String> = steps
                .iter()
                .filter(|s| !needed.contains(&s.id) || read.contains(s.id.as_str()))
                .map(|s| s.id.clone())
                .collect();
            if !waits.is_empty() {
                p.needs = waits;
                for id in &producers {
                    if !p.needs.contains(id) {
                        p.needs.push(id.clone());
                    }
                }
            }
            p.views = views;
            p.outputs = g.outputs;
            p.group = Some(included);
            for (k, v) in g.secrets {
                if !self.secrets.values().any(|x| *x == v) {
                    self.secrets.insert(pre(&k), v);
                }
            }
            self.included.extend(g.files);
            out.extend(steps);
            out.push(p);
        }
        if out.len() > self.limits.steps {
            self.err(
                "/steps",
                Diagnostic::new(format!(
                    "the plan has {} steps once its sub-plans are expanded; a plan may have at most {} (`limits.steps`)",
                    out.len(),
                    self.limits.steps
                ))
                .code(Code::Limit)
                .help(format!(
                    "use smaller sub-plans, or raise `limits.steps` (at most {})",
                    super::limits::STEPS_CEILING
                )),
            );
            return;
        }
        *planned = out;
    }

    /// Checks the names the plan's `outputs:` read: its steps and their outputs, vars, inputs, env,
    /// run; never a secret (outputs reach every report).
    pub(super) fn check_plan_outputs(&mut self) {
        let plan = self.plan;
        for (name, v) in &plan.outputs {
            let mut leaves = Vec::new();
            super::render::collect_strings(v, format!("/outputs/{}", ptr_seg(name)), &mut leaves);
            for (pointer, text) in leaves {
                if !super::template::has_template(&text) {
                    continue;
                }
                let names = match self.templates.names(&text) {
                    Ok(n) => n,
                    Err(e) => {
                        self.err(
                            &pointer,
                            Diagnostic::new(e.to_string()).code(Code::Template),
                        );
                        continue;
                    }
                };
                for n in names {
                    if let Err(d) = self.output_name(&n) {
                        self.err(&pointer, d);
                    }
                }
            }
        }
    }

    /// One name an output of the plan reads.
    fn output_name(&self, name: &str) -> Result<(), Diagnostic> {
        let plan = self.plan;
        let parts: Vec<&str> = name.split('.').collect();
        let unknown = |m: String| Diagnostic::new(m).code(Code::UnknownName);
        match parts[0] {
            "secrets" => Err(Diagnostic::new(
                "a plan's output cannot read a secret: outputs reach every report",
            )
            .code(Code::SecretOutOfPlace)),
            "run" | "env" => Ok(()),
            // The same rules as a step's templates.
            "vars" => self
                .check_vars_name(name, &parts[1..])
                .map_err(|d| d.code(Code::UnknownName)),
            "inputs" => self
                .check_input_name(parts.get(1).copied())
                .map(drop)
                .map_err(|d| d.code(Code::UnknownName)),
            "steps" => {
                let Some(id) = parts.get(1) else {
                    return Err(unknown("cannot tell which step `steps` refers to".into()));
                };
                let Some(&j) = self.ids.get(*id) else {
                    return Err(
                        unknown(format!("unknown step `{id}` in `steps.{id}`")).suggest(
                            super::diag::suggest(id, plan.steps.iter().map(|s| s.id.as_str())),
                        ),
                    );
                };
                let Some(out) = parts.get(2) else {
                    return Ok(());
                };
                let other = &plan.steps[j];
                if other.matrix.is_some() {
                    return Err(unknown(format!(
                        "`steps.{id}.{out}`: `{id}` is a matrix step, so `steps.{id}` is a list of its copies' outputs"
                    ))
                    .help(format!(
                        "use e.g. `steps.{id} | map(attribute='{out}') | join('\\n')`"
                    )));
                }
                match self.unknown_output(id, j, out) {
                    Some(d) => Err(d.code(Code::UnknownName)),
                    None => Ok(()),
                }
            }
            other => Err(unknown(format!(
                "unknown name `{other}`: a plan's outputs read steps, vars, inputs, env and run"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::{load_text, messages};

    const SUB: &str = r#"
version: 1
name: sub
inputs:
  n: {type: integer, default: 1}
steps:
  - id: a
    list: {limit: "${{ inputs.n }}"}
  - id: b
    needs: [a]
    list: {}
outputs:
  count: ${{ steps.a.count }}
"#;

    #[test]
    fn groups_are_prefixed_and_wait_as_one_step() {
        let plan = r#"
version: 1
name: t
steps:
  - id: pre
    list: {}
  - id: g
    needs: [pre]
    uses: sub.yaml
    with: {n: 3}
  - id: post
    status: {job: "${{ steps.g.count }}"}
"#;
        let p = load_text(plan, &[("sub.yaml", SUB)], &LoadOptions::default()).unwrap();
        let ids: Vec<(&str, &[String])> = p
            .steps
            .iter()
            .map(|s| (s.id.as_str(), s.needs.as_slice()))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("pre", &[][..]),
                ("g.a", &["pre".to_string()][..]),
                ("g.b", &["g.a".to_string()][..]),
                ("g", &["g.a".to_string(), "g.b".to_string()][..]),
                ("post", &["g".to_string()][..]),
            ]
        );
        // The `with:` value reached the sub-plan's templates at load.
        assert_eq!(p.step("g.a").unwrap().spec["limit"], 3);
        assert_eq!(p.included.len(), 1);
        assert_eq!(
            super::super::uses::group_of(p.step("g.b").unwrap()),
            Some("g")
        );
    }

    #[test]
    fn the_plan_hash_covers_the_sub_plan() {
        let plan = "version: 1\nname: t\nsteps:\n  - id: g\n    uses: sub.yaml\n";
        let one = load_text(plan, &[("sub.yaml", SUB)], &LoadOptions::default()).unwrap();
        let changed = format!("{SUB}# another comment\n");
        let two = load_text(plan, &[("sub.yaml", &changed)], &LoadOptions::default()).unwrap();
        assert_ne!(one.content_hash, two.content_hash);
        assert_ne!(
            one.content_hash,
            super::super::check::content_hash(plan.as_bytes())
        );
        assert_eq!(
            one.included[0].sha256,
            super::super::check::content_hash(SUB.as_bytes())
        );
    }

    #[test]
    fn a_sub_plans_outputs_read_vars_and_inputs_by_the_rules_of_step_templates() {
        let plan = "version: 1\nname: t\nsteps:\n  - id: g\n    uses: sub.yaml\n";
        let sub = "version: 1\nname: s\nvars: {topic: {name: x}}\ninputs:\n  n: {type: integer, default: 1}\nsteps:\n  - id: a\n    list: {}\noutputs:\n  one: ${{ vars.topc }}\n  two: ${{ vars.topic.nmae }}\n  three: ${{ inputs.m }}\n  fine: ${{ vars.topic.name }} ${{ inputs.n }}\n";
        let m = messages_with_sub(plan, sub);
        assert!(
            m.iter()
                .any(|l| l.contains("unknown variable `vars.topc` [vars.topic]")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|l| l.contains("unknown variable `vars.topic.nmae` [vars.topic.name]")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|l| l.contains("unknown input `inputs.m` [inputs.n]")),
            "{m:?}"
        );
        assert_eq!(m.len(), 3, "{m:?}");
    }

    #[test]
    fn the_files_a_run_read_list_the_sub_plan_and_its_prompt_files() {
        let plan = "version: 1\nname: t\nsteps:\n  - id: g\n    uses: sub.yaml\n";
        let sub = "version: 1\nname: s\nsteps:\n  - id: a\n    job: {job_type: inference, wallet: w, payment: 1, prompt_file: p.md}\n";
        let p = load_text(
            plan,
            &[("sub.yaml", sub), ("p.md", "hello")],
            &LoadOptions::default(),
        )
        .unwrap();
        let read: Vec<(&str, &str)> = p
            .files_read
            .iter()
            .map(|f| (f.role.word(), f.path.as_str()))
            .collect();
        assert!(read.contains(&("subplan", "sub.yaml")), "{read:?}");
        assert!(read.contains(&("prompt", "p.md")), "{read:?}");
        let kept = p.files_read.iter().find(|f| f.path == "sub.yaml").unwrap();
        assert_eq!(
            kept.sha256,
            super::super::check::content_hash(sub.as_bytes())
        );
        assert_eq!(
            super::super::files_read::FileRole::from_word("subplan"),
            Some(super::super::files_read::FileRole::SubPlan)
        );
    }

    #[test]
    fn nesting_is_bounded_and_a_secret_cannot_go_through_with() {
        // Each file uses the next: one level more than allowed.
        let depth = super::super::limits::INCLUDE_DEPTH + 1;
        let files: Vec<(String, String)> = (0..=depth)
            .map(|k| {
                let body = if k == depth {
                    "  - id: a\n    list: {}\n".to_string()
                } else {
                    format!("  - id: s{k}\n    uses: f{}.yaml\n", k + 1)
                };
                (
                    format!("f{k}.yaml"),
                    format!("version: 1\nname: f{k}\nsteps:\n{body}"),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let plan = "version: 1\nname: t\nsteps:\n  - id: top\n    uses: f0.yaml\n";
        let m = messages(load_text(plan, &refs, &LoadOptions::default()));
        assert_eq!(m.len(), 1, "{m:#?}");
        assert!(m[0].contains("sub-plans nest more than 8 deep"), "{m:#?}");

        let plan = r#"
version: 1
name: t
secrets:
  K: {env: K_VAR}
steps:
  - id: g
    uses: sub.yaml
    with: {n: "${{ secrets.K | length }}"}
"#;
        let options = LoadOptions {
            environment: Some([("K_VAR".to_string(), "sekrit".to_string())].into()),
            ..Default::default()
        };
        let m = messages(load_text(plan, &[("sub.yaml", SUB)], &options));
        assert_eq!(m, vec!["9: a `with:` value cannot read a secret []"]);
    }

    /// The messages of loading `plan` beside the sub-plan `sub.yaml`.
    fn messages_with_sub(plan: &str, sub: &str) -> Vec<String> {
        messages(load_text(
            plan,
            &[("sub.yaml", sub)],
            &LoadOptions::default(),
        ))
    }

    /// A sub-plan that uses another, passing its input on (`inputs.tone` + `!`).
    const NESTED_INNER: &str = r#"
version: 1
name: inner
inputs:
  tone: {type: string, default: plain}
steps:
  - id: a
    list: {}
  - id: b
    status: {job: "${{ inputs.tone }}-${{ steps.a.count }}"}
outputs:
  said: "${{ inputs.tone }}:${{ steps.b.state }}"
"#;
    const NESTED_OUTER: &str = r#"
version: 1
name: outer
inputs:
  tone: {type: string, required: true}
steps:
  - id: mid
    uses: inner.yaml
    with: {tone: "${{ inputs.tone }}!"}
outputs:
  said: ${{ steps.mid.said }}
"#;

    #[test]
    fn nested_groups_keep_their_own_inputs_at_run_time() {
        let (inner, outer) = (NESTED_INNER, NESTED_OUTER);
        let plan = r#"
version: 1
name: t
inputs:
  tone: {type: string, default: top}
steps:
  - id: o
    uses: outer.yaml
    with: {tone: formal}
"#;
        let files = [("inner.yaml", inner), ("outer.yaml", outer)];
        let p = load_text(plan, &files, &LoadOptions::default()).unwrap();
        let ids: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["o.mid.a", "o.mid.b", "o.mid", "o"]);
        assert_eq!(p.included.len(), 2);
        let b = p.step("o.mid.b").unwrap();
        assert_eq!(b.group.as_ref().unwrap().step, "o.mid");
        assert_eq!(
            b.views["a"],
            super::super::checked::StepView::One("o.mid.a".into())
        );
        // At run time the inner step reads the inner plan's input, not the top plan's, and what
        // it refuses is placed in the inner plan's file.
        let mut outputs = super::super::checked::StepOutputs::new();
        outputs.insert("o.mid.a".into(), serde_json::json!({"count": 2}));
        let run = super::super::checked::RunInfo::default();
        let d = p.render(b, &outputs, &run).unwrap_err();
        assert!(
            d.message.starts_with("`formal!-2` is not a job id"),
            "{d:?}"
        );
        let at = d.location.unwrap();
        assert_eq!((at.file.as_str(), at.line), ("inner.yaml", 10));
        outputs.insert("o.mid.b".into(), serde_json::json!({"state": "DONE"}));
        let said = p
            .group_outputs(p.step("o.mid").unwrap(), &outputs, &run)
            .unwrap();
        assert_eq!(said["said"], "formal!:DONE");
        outputs.insert("o.mid".into(), serde_json::Value::Object(said));
        let top = p
            .group_outputs(p.step("o").unwrap(), &outputs, &run)
            .unwrap();
        assert_eq!(top["said"], "formal!:DONE");
    }

    #[test]
    fn a_with_value_known_only_at_run_time_is_rendered_when_the_group_needs_it() {
        let sub = r#"
version: 1
name: sub
inputs:
  n: {type: integer, default: 1}
  tag: {type: string, default: none}
steps:
  - id: a
    list: {limit: "${{ inputs.n }}"}
  - id: b
    needs: [a]
    status: {job: "${{ inputs.tag }}"}
outputs:
  said: "${{ inputs.tag }}:${{ inputs.n }}"
"#;
        let plan = r#"
version: 1
name: t
steps:
  - id: pre
    list: {}
  - id: other
    list: {}
  - id: g
    uses: sub.yaml
    with: {n: "${{ steps.pre.count }}", tag: "${{ run.plan }}-x"}
"#;
        let p = load_text(plan, &[("sub.yaml", sub)], &LoadOptions::default()).unwrap();
        let needs = |id: &str| p.step(id).unwrap().needs.clone();
        // Every step of the group, and its end, waits for the step the values read.
        assert_eq!(needs("g.a"), vec!["pre"]);
        assert_eq!(needs("g.b"), vec!["g.a", "pre"]);
        assert!(needs("g").contains(&"pre".to_string()), "{:?}", needs("g"));
        assert!(!needs("g").contains(&"other".to_string()));
        // Left as templates at load: the input is not known yet.
        assert_eq!(p.step("g.a").unwrap().spec["limit"], "${{ inputs.n }}");
        let mut outputs = super::super::checked::StepOutputs::new();
        outputs.insert("pre".into(), serde_json::json!({"count": 4}));
        let run = super::super::checked::RunInfo {
            plan: "t".into(),
            ..Default::default()
        };
        match p.render(p.step("g.a").unwrap(), &outputs, &run).unwrap() {
            super::super::checked::RenderedStep::List { limit, .. } => assert_eq!(limit, Some(4)),
            other => panic!("{other:?}"),
        }
        outputs.insert("g.a".into(), serde_json::json!({"count": 4}));
        outputs.insert("g.b".into(), serde_json::json!({"state": "DONE"}));
        let said = p
            .group_outputs(p.step("g").unwrap(), &outputs, &run)
            .unwrap();
        assert_eq!(said["said"], "t-x:4");
        // A value of the wrong type fails the step that needs it, naming the `with:` entry.
        outputs.insert("pre".into(), serde_json::json!({"count": "many"}));
        let d = p
            .render(p.step("g.a").unwrap(), &outputs, &run)
            .unwrap_err();
        assert_eq!(
            d.message,
            "input `n` of the sub-plan `sub.yaml`: `many` is not an integer (the `with:` value at plan.yaml:11:15)"
        );
        assert_eq!(d.code, super::super::codes::Code::InputValue);
        assert_eq!(d.location.unwrap().line, 11);
    }

    #[test]
    fn a_run_time_with_value_is_refused_where_the_sub_plan_needs_it_at_load() {
        let sub = "version: 1\nname: s\ninputs:\n  tones: {type: list, default: [a]}\nsteps:\n  - id: a\n    matrix: {tone: \"${{ inputs.tones }}\"}\n    list: {}\n";
        let plan = "version: 1\nname: t\nsteps:\n  - id: pre\n    list: {}\n  - id: g\n    uses: sub.yaml\n    with: {tones: \"${{ steps.pre.count }}\"}\n";
        let r = load_text(plan, &[("sub.yaml", sub)], &LoadOptions::default());
        let ds = r.unwrap_err();
        assert_eq!(ds.len(), 1, "{ds:#?}");
        let d = &ds[0];
        assert!(
            d.message
                .starts_with("input `tones` of the sub-plan `sub.yaml` is known only at run time"),
            "{d:?}"
        );
        let at = d.location.as_ref().unwrap();
        assert_eq!((at.file.as_str(), at.line), ("plan.yaml", 8));
        assert_eq!(
            d.notes,
            vec!["the sub-plan needs it at sub.yaml:7:20 (`steps[0].matrix.tone`)"]
        );
        // A secret is refused in a run-time value as in one known at load.
        let plan = "version: 1\nname: t\nsecrets:\n  K: {env: K_VAR}\nsteps:\n  - id: pre\n    list: {}\n  - id: g\n    uses: sub.yaml\n    with: {tones: \"${{ steps.pre.count }}${{ secrets.K }}\"}\n";
        let options = LoadOptions {
            environment: Some([("K_VAR".to_string(), "sekrit".to_string())].into()),
            ..Default::default()
        };
        let m = messages(load_text(plan, &[("sub.yaml", sub)], &options));
        assert_eq!(m, vec!["10: a `with:` value cannot read a secret []"]);
        // A filter that does not exist is found at load.
        let plan = "version: 1\nname: t\nsteps:\n  - id: pre\n    list: {}\n  - id: g\n    uses: sub.yaml\n    with: {n: \"${{ steps.pre.count | intt }}\"}\n";
        let sub = "version: 1\nname: s\ninputs:\n  n: {type: integer, default: 1}\nsteps:\n  - id: a\n    list: {limit: \"${{ inputs.n }}\"}\n";
        let m = messages_with_sub(plan, sub);
        assert_eq!(m, vec!["8: filter intt is unknown [int]"]);
    }

    #[test]
    fn a_run_time_value_reaches_a_nested_group_through_its_inputs() {
        let (inner, outer) = (NESTED_INNER, NESTED_OUTER);
        let plan = r#"
version: 1
name: t
steps:
  - id: pre
    list: {}
  - id: o
    uses: outer.yaml
    with: {tone: "x${{ steps.pre.count }}"}
"#;
        let files = [("inner.yaml", inner), ("outer.yaml", outer)];
        let p = load_text(plan, &files, &LoadOptions::default()).unwrap();
        for id in ["o.mid.a", "o.mid.b", "o.mid", "o"] {
            assert!(
                p.step(id).unwrap().needs.contains(&"pre".to_string()),
                "{id}: {:?}",
                p.step(id).unwrap().needs
            );
        }
        let b = p.step("o.mid.b").unwrap();
        assert_eq!(b.group.as_ref().unwrap().step, "o.mid");
        let mut outputs = super::super::checked::StepOutputs::new();
        outputs.insert("pre".into(), serde_json::json!({"count": 7}));
        outputs.insert("o.mid.a".into(), serde_json::json!({"count": 2}));
        let run = super::super::checked::RunInfo::default();
        let d = p.render(b, &outputs, &run).unwrap_err();
        assert!(d.message.starts_with("`x7!-2` is not a job id"), "{d:?}");
    }

    #[test]
    fn a_uses_steps_when_gates_every_step_of_its_group() {
        let sub = r#"
version: 1
name: sub
vars: {limit: 2}
steps:
  - id: a
    list: {}
  - id: b
    when: "${{ steps.a.count > 0 }}"
    list: {limit: "${{ vars.limit }}"}
outputs:
  count: ${{ steps.a.count }}
"#;
        let plan = r#"
version: 1
name: t
vars: {limit: 5}
steps:
  - id: pre
    list: {}
  - id: g
    uses: sub.yaml
    when: "${{ steps.pre.count > vars.limit }}"
"#;
        let p = load_text(plan, &[("sub.yaml", sub)], &LoadOptions::default()).unwrap();
        for id in ["g.a", "g.b", "g"] {
            assert!(
                p.step(id).unwrap().needs.contains(&"pre".to_string()),
                "{id}"
            );
        }
        // The `uses` step's `when` reads the including plan (its `vars.limit` is 5, the
        // sub-plan's 2); the group's own `when` still holds besides it.
        let run = super::super::checked::RunInfo::default();
        let mut outputs = super::super::checked::StepOutputs::new();
        let runs = |outputs: &super::super::checked::StepOutputs, id: &str| {
            p.should_run(p.step(id).unwrap(), outputs, &run).unwrap()
        };
        outputs.insert("pre".into(), serde_json::json!({"count": 3}));
        outputs.insert("g.a".into(), serde_json::json!({"count": 1}));
        assert!(!runs(&outputs, "g.a"));
        assert!(!runs(&outputs, "g.b"));
        assert!(!runs(&outputs, "g"));
        outputs.insert("pre".into(), serde_json::json!({"count": 7}));
        assert!(runs(&outputs, "g.a"));
        assert!(runs(&outputs, "g.b"));
        assert!(runs(&outputs, "g"));
        outputs.insert("g.a".into(), serde_json::json!({"count": 0}));
        assert!(!runs(&outputs, "g.b"), "the step's own `when` is ANDed");
        assert!(runs(&outputs, "g.a"));

        // A status function would change when the group may run: refused.
        let plan = "version: 1\nname: t\nsteps:\n  - id: g\n    uses: sub.yaml\n    when: \"${{ failure() }}\"\n";
        let m = messages_with_sub(plan, sub);
        assert_eq!(
            m,
            vec![
                "6: a `uses` step's `when` cannot call `failure()`: it is applied to every step of the group []"
            ]
        );
        // Its names are checked as a step's.
        let plan = "version: 1\nname: t\nsteps:\n  - id: pre\n    list: {}\n  - id: g\n    uses: sub.yaml\n    when: \"${{ steps.pr.count > 1 }}\"\n";
        let m = messages_with_sub(plan, sub);
        assert_eq!(m, vec!["8: unknown step `pr` in `steps.pr` [pre]"]);
    }

    #[test]
    fn every_group_counts_against_the_top_plans_steps() {
        let plan = r#"
version: 1
name: t
limits: {steps: 5}
steps:
  - id: g1
    uses: sub.yaml
  - id: g2
    uses: sub.yaml
  - id: g3
    uses: sub.yaml
"#;
        let m = messages_with_sub(plan, SUB);
        assert_eq!(
            m,
            vec![
                "11: the plan has more than 5 steps once its sub-plans are expanded (`limits.steps`) []"
            ]
        );
    }
}
