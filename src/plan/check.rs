//! Loading a plan: the one pipeline from a plan file to a [`CheckedPlan`], kept short so that the
//! order of the checks can be read in one place. The file is read once; those bytes are hashed (the
//! hash a run records and `resume` compares), parsed ([`super::source`]: saphyr events and positions),
//! validated against the JSON Schema and deserialized ([`super::schema`]), then checked: `--vars` and
//! `--set` ([`super::overrides`]), the environment and secrets ([`super::secrets`]), the schedule
//! ([`super::schedule`]), and each step — its operation ([`super::kinds`]), its matrix
//! ([`super::matrix`]), the names its templates read ([`super::names`]), what it waits for
//! ([`super::needs`]), the templates known at load ([`super::render_static`]) and the policy on the
//! values known now ([`super::static_policy`]). Every problem found is returned, not only the first.
//!
//! The model this builds is in [`super::checked`]; it is re-exported here, where callers have always
//! named it.

// A `Diagnostic` is large, but errors here are rare and end the step (or the load); the executor's
// API returns one by value as agreed.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::codes::Code;
use super::diag::Diagnostic;
use super::names::NamesResult;
use super::render_static::{Leaf, RenderResult};
use super::source::Source;
use super::template::Templates;
use super::types::Plan;

pub use super::checked::{
    CheckedPlan, DEFAULT_TIMEOUT, JobRequest, OptimizeRequest, PlannedStep, RenderedStep, RunInfo,
    StepKind, StepOutputs, StepView,
};

/// What the command line adds to a plan.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--set key=value`, in order; a later one wins. Values are read as YAML scalars (`3` is a number).
    pub set: Vec<(String, String)>,
    /// `--vars FILE`, in order, applied before `--set`.
    pub vars_files: Vec<PathBuf>,
    /// The environment the plan may read from (only names listed in the plan's `env:` and the
    /// variables its `secrets` name are looked up). `None` means the process environment.
    pub environment: Option<BTreeMap<String, String>>,
    /// Check the plan without its secrets (`validate`): a secret whose environment variable is not
    /// set gets a placeholder value, so that every other check still runs. Never for a run: a
    /// checked plan made this way is only looked at, never executed.
    pub placeholder_secrets: bool,
    /// Check the plan without its required inputs (`validate`): an input that is required and not
    /// given is left out, and the templates that read it are checked as run-time templates. The
    /// values that are given (defaults included) are still checked against their types.
    pub allow_missing_inputs: bool,
}

/// Loads, validates and checks a plan file. Returns every problem found, not only the first.
pub fn load(path: &Path, options: &LoadOptions) -> Result<CheckedPlan, Vec<Diagnostic>> {
    let bytes = super::source::read(path, &path.display().to_string())?;
    load_bytes(path, &bytes, options)
}

/// [`load`] for a plan file already read: `bytes` are its content, `path` is where it is (prompt
/// files, secret files and `save:` paths are relative to its folder). The hash, the parse and every
/// check see these bytes; the plan file is not read again.
pub fn load_bytes(
    path: &Path,
    bytes: &[u8],
    options: &LoadOptions,
) -> Result<CheckedPlan, Vec<Diagnostic>> {
    let content_hash = content_hash(bytes);
    let source = super::source::parse(&path.display().to_string(), bytes)?;
    match super::schema::check(&source) {
        Ok(plan) => check(
            source,
            plan,
            None,
            content_hash.clone(),
            path,
            options,
            None,
        )
        .map(|mut p| {
            let root = super::inputs::repository_root(&p.dir);
            // The file's own hash, computed once above (`content_hash` of a plan with sub-plans
            // covers them too).
            let file = super::files_read::FileRead::hashed(
                super::files_read::FileRole::Plan,
                &root,
                path,
                true,
                bytes,
                content_hash,
            );
            p.files_read.insert(0, file);
            p
        }),
        Err(schema_errors) => Err(with_the_rest(
            source,
            schema_errors,
            content_hash,
            path,
            options,
        )),
    }
}

/// The schema's errors and what the other checks find on the rest of the plan
/// ([`super::salvage`]): one pass reports every mistake it can, sorted by position. A problem the
/// other checks find where the schema already found one is the same mistake seen again: dropped.
fn with_the_rest(
    source: Source,
    mut schema_errors: Vec<Diagnostic>,
    content_hash: String,
    path: &Path,
    options: &LoadOptions,
) -> Vec<Diagnostic> {
    let Some(salvaged) = super::salvage::salvage(&source) else {
        return schema_errors;
    };
    let written = Written {
        value: &salvaged.value,
        broken: &salvaged.broken,
    };
    let more = match check(
        source,
        salvaged.plan.clone(),
        Some(written),
        content_hash,
        path,
        options,
        None,
    ) {
        Err(more) => more,
        Ok(checked) => super::salvage::template_problems(&checked.source, &checked.templates),
    };
    let placed: HashSet<Option<super::diag::Location>> =
        schema_errors.iter().map(|d| d.location.clone()).collect();
    schema_errors.extend(
        more.into_iter()
            .filter(|d| d.code != Code::TooManyErrors && !placed.contains(&d.location)),
    );
    let mut seen = HashSet::new();
    schema_errors.retain(|x| seen.insert((x.location.clone(), x.message.clone())));
    schema_errors.sort_by(|a, b| a.location.cmp(&b.location));
    super::diag::cap(&mut schema_errors, false);
    schema_errors
}

/// The plan as the checker reads it when the schema found mistakes: the value with the wrong parts
/// taken out, and the steps replaced by stand-ins ([`super::salvage`]).
#[derive(Clone, Copy)]
struct Written<'w> {
    value: &'w Value,
    broken: &'w std::collections::BTreeSet<usize>,
}

/// Adds the problems of templates checked on their own ([`super::salvage::template_problems`]) at
/// places where nothing is reported yet: the checks that render templates with values run only on
/// a plan without other errors.
fn add_template_problems(source: &Source, templates: &Templates, errors: &mut Vec<Diagnostic>) {
    // One message per value: a value with an error already is not reported again.
    let placed: HashSet<Option<String>> = errors.iter().map(|d| d.field.clone()).collect();
    let before = errors.len();
    errors.extend(
        super::salvage::template_problems(source, templates)
            .into_iter()
            .filter(|d| !placed.contains(&d.field)),
    );
    if errors.len() > before {
        errors.sort_by(|a, b| a.location.cmp(&b.location));
        super::diag::cap(errors, false);
    }
}

/// SHA-256 of a plan file's bytes (a BOM included), hex.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Checks a sub-plan (parsed and schema-validated) for the plan that uses it ([`super::uses`]): its
/// inputs are the `with:` values, and the including plan's policy, defaults, env, secrets and limits
/// replace its own. `--set` and `--vars` are the top plan's.
pub(super) fn check_included(
    source: Source,
    plan: Plan,
    path: &Path,
    options: &LoadOptions,
    inclusion: &super::uses::Inclusion,
) -> Result<CheckedPlan, Vec<Diagnostic>> {
    let hash = content_hash(source.text.as_bytes());
    check(source, plan, None, hash, path, options, Some(inclusion))
}

/// Checks a plan that has been parsed and schema-validated: everything [`load`] does after reading.
/// `content_hash` is the hash of the bytes `source` was parsed from. `inclusion` is set when the
/// plan is a sub-plan another plan uses.
fn check(
    source: Source,
    mut plan: Plan,
    written: Option<Written<'_>>,
    content_hash: String,
    path: &Path,
    options: &LoadOptions,
    inclusion: Option<&super::uses::Inclusion>,
) -> Result<CheckedPlan, Vec<Diagnostic>> {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    if let Some(inc) = inclusion {
        inc.adopt(&mut plan);
    }
    let mut vars = plan.vars.clone();
    let mut given_inputs = Map::new();
    let mut files_read = Vec::new();
    let errors = match inclusion {
        Some(inc) => {
            given_inputs = inc.given.clone();
            Vec::new()
        }
        None => {
            let declared = super::typed_inputs::declared(&plan.inputs);
            super::overrides::apply(
                &mut vars,
                &mut given_inputs,
                &declared,
                &options.vars_files,
                &options.set,
                &mut files_read,
                &dir,
            )
        }
    };
    let limits = super::limits::InForce::of(&plan.limits);
    let no_broken = std::collections::BTreeSet::new();
    let input_root = std::cell::OnceCell::new();
    if let Some(inc) = inclusion {
        let _ = input_root.set(inc.root.clone());
    }
    let mut c = Checker {
        source: &source,
        written: written.map_or(&source.value, |w| w.value),
        broken: written.map_or(&no_broken, |w| w.broken),
        plan: &plan,
        dir: &dir,
        limits,
        input_root,
        path,
        options,
        inclusion,
        groups: HashMap::new(),
        group_outputs: HashMap::new(),
        included: Vec::new(),
        step_budget: inclusion.map_or_else(
            || std::rc::Rc::new(std::cell::Cell::new(limits.steps)),
            |inc| inc.budget.clone(),
        ),
        files_read,
        templates: Templates::with_fuel(limits.template_fuel, Some(limits.load_fuel())),
        errors,
        warnings: Vec::new(),
        vars,
        inputs: Map::new(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        ids: HashMap::new(),
        base_context: None,
        names_cache: HashMap::new(),
        render_cache: HashMap::new(),
    };
    c.settle_inputs(given_inputs, options.allow_missing_inputs);
    c.read_environment(options.environment.as_ref(), options.placeholder_secrets);
    c.check_schedule();
    let steps = c.steps();
    let Checker {
        templates,
        mut errors,
        mut warnings,
        vars,
        inputs,
        env,
        secrets,
        files_read,
        included,
        ..
    } = c;
    let content_hash = super::uses::plan_hash(&content_hash, &included);
    dedup(&mut errors);
    dedup(&mut warnings);
    if !errors.is_empty() {
        if !errors.iter().any(|d| d.code == Code::TooManyErrors) {
            add_template_problems(&source, &templates, &mut errors);
        }
        return Err(errors);
    }
    let mut checked = CheckedPlan {
        path: path.to_path_buf(),
        dir,
        content_hash,
        own_secrets_in_payload: plan.steps.iter().any(|s| s.secrets_in_payload),
        plan,
        vars,
        inputs,
        env,
        secrets,
        step_index: steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect(),
        steps,
        warnings,
        source: super::source::ParsedFile::new(source),
        templates,
        files_read,
        included,
    };
    // Templates rendered only at run time are tried once against placeholders, so that a filter,
    // test or function that does not exist fails here rather than in the middle of a run. One copy
    // of a matrix step stands for all.
    // These checks are best effort: once the load's template budget is spent, they stop.
    let checks = checked.templates.for_checks();
    let mut seen = HashSet::new();
    let mut errors: Vec<Diagnostic> = checked
        .steps
        .iter()
        .filter(|s| seen.insert(s.index))
        .take_while(|_| !checks.budget_spent())
        .flat_map(|s| checked.unknown_callables(s, &checks))
        .collect();
    // What is known whole is rendered as the run will render it: validate refuses what run refuses.
    if errors.is_empty() {
        let mut seen = HashSet::new();
        errors = checked
            .steps
            .iter()
            .filter_map(|s| checked.refused_at_run(s))
            .filter(|d| seen.insert((d.location.clone(), d.message.clone())))
            .take(super::diag::MAX_ERRORS + 1)
            .collect();
    }
    if !errors.is_empty() {
        if written.is_some() {
            add_template_problems(&checked.source, &checked.templates, &mut errors);
        }
        errors.sort_by(|a, b| a.location.cmp(&b.location));
        super::diag::cap(&mut errors, false);
        return Err(errors);
    }
    checked.templates.end_load();
    // The steps as written are checked and expanded into `steps`; nothing reads them any more.
    checked.plan.steps = Vec::new();
    Ok(checked)
}

/// Drops repeated diagnostics (a matrix step's copies report the same problem once each), keeping
/// the first of each and the order, and at most [`super::diag::MAX_ERRORS`] of them.
fn dedup(d: &mut Vec<Diagnostic>) {
    let mut seen = HashSet::new();
    d.retain(|x| seen.insert((x.location.clone(), x.message.clone())));
    // The checker stops looking once it has found this many (see `Checker::full`).
    let stopped = d.len() >= super::diag::MAX_ERRORS;
    super::diag::cap(d, stopped);
}

/// The load-time checker: the plan being checked and what has been found so far. Each concept's
/// checks are an `impl Checker` in the concept's own file.
pub(super) struct Checker<'a> {
    pub(super) source: &'a Source,
    /// The plan as written, or with its wrong parts taken out when the schema found mistakes
    /// ([`super::salvage`]); specs are read from here.
    pub(super) written: &'a Value,
    /// Steps replaced by a stand-in because their shape is wrong: what they output is not checked.
    pub(super) broken: &'a std::collections::BTreeSet<usize>,
    pub(super) plan: &'a Plan,
    pub(super) dir: &'a Path,
    /// The limits in force (the plan's `limits:` within the ceilings).
    pub(super) limits: super::limits::InForce,
    /// The plan's repository, which the files it reads must be in (found when first needed; a
    /// sub-plan's is the top plan's).
    pub(super) input_root: std::cell::OnceCell<PathBuf>,
    /// The files read so far (`--vars` files, prompt files).
    pub(super) files_read: Vec<super::files_read::FileRead>,
    /// The plan file.
    pub(super) path: &'a Path,
    /// What the command line adds (a sub-plan is checked with the same).
    pub(super) options: &'a LoadOptions,
    /// Set when this plan is a sub-plan another uses ([`super::uses`]).
    pub(super) inclusion: Option<&'a super::uses::Inclusion>,
    /// The checked sub-plan of each `uses` step, by step index, until it is spliced in.
    pub(super) groups: HashMap<usize, super::uses::Group>,
    /// The `outputs:` names of each `uses` step's sub-plan, by step index.
    pub(super) group_outputs: HashMap<usize, Vec<String>>,
    /// The sub-plans read, nested ones too, in order.
    pub(super) included: Vec<super::uses::IncludedFile>,
    /// Steps the top plan may still take in from sub-plans (shared by every level).
    pub(super) step_budget: std::rc::Rc<std::cell::Cell<usize>>,
    pub(super) templates: Templates,
    pub(super) errors: Vec<Diagnostic>,
    pub(super) warnings: Vec<Diagnostic>,
    pub(super) vars: Map<String, Value>,
    /// Each input's value (a required input not given is absent when that is allowed).
    pub(super) inputs: Map<String, Value>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) secrets: BTreeMap<String, String>,
    /// Each step id as written → its index (the first, when an id is repeated).
    pub(super) ids: HashMap<String, usize>,
    /// The load-time template context without matrix values, built once (vars, env and secrets do
    /// not change once the overrides are applied).
    pub(super) base_context: Option<minijinja::Value>,
    /// The names each template text reads (plans repeat the same templates: `${{ vars.wallet }}`).
    pub(super) names_cache: HashMap<String, NamesResult>,
    /// Load-time renders of templates outside a matrix, by text (the context is the same for all).
    pub(super) render_cache: HashMap<String, RenderResult>,
}

/// One step as written, with what the checker learnt about it.
pub(super) struct BaseStep {
    /// The kind's name.
    pub(super) kname: &'static str,
    /// The operation; the last copy takes it (the others clone it), so a plan without matrices
    /// copies no spec.
    pub(super) kind: RefCell<Option<StepKind>>,
    /// The spec as written (prompt file inlined); taken like `kind`.
    pub(super) spec: RefCell<Value>,
    pub(super) prompt_file: Option<String>,
    /// Ids as written that the step waits for (needs and references), deduplicated.
    pub(super) deps: Vec<String>,
    /// Ids referenced from templates (a subset of `deps`).
    pub(super) refs: Vec<String>,
    /// Every matrix combination (one empty map without a matrix).
    pub(super) combos: Vec<Map<String, Value>>,
    /// Spec leaves that hold a template and can be rendered at load.
    pub(super) static_leaves: Vec<Leaf>,
}

/// A mapping key as a JSON pointer segment.
pub(super) fn ptr_seg(key: &str) -> String {
    super::source::escape_pointer_segment(key).into_owned()
}

impl Checker<'_> {
    /// Records an error at a pointer in the plan file.
    pub(super) fn err(&mut self, pointer: &str, mut d: Diagnostic) {
        // A value rendered from a secret can end up in a message (an unknown job type, say).
        if !self.secrets.is_empty() {
            d.message = self.redact(&d.message);
        }
        let d = self.source.at(pointer, d);
        self.errors.push(d);
    }

    /// Records an error at one template (`part`, a byte range) of the string at `pointer`, or at
    /// the whole string when `part` is `None` ([`Source::at_part`]).
    pub(super) fn err_part(
        &mut self,
        pointer: &str,
        text: &str,
        part: Option<std::ops::Range<usize>>,
        mut d: Diagnostic,
    ) {
        let Some(part) = part else {
            return self.err(pointer, d);
        };
        if !self.secrets.is_empty() {
            d.message = self.redact(&d.message);
        }
        let d = self.source.at_part(pointer, text, part, d);
        self.errors.push(d);
    }

    /// Whether the errors found so far are as many as are reported: checks that cost something (a
    /// "did you mean" over every step) stop then.
    pub(super) fn full(&self) -> bool {
        self.errors.len() >= super::diag::MAX_ERRORS
    }

    /// Records that the plan has more steps than the limit allows (`copies` when a matrix made them).
    fn too_many_steps(&mut self, count: usize, biggest: Option<(usize, usize)>) {
        let mut d = Diagnostic::new(format!(
            "the plan has {count} steps{}; a plan may have at most {} (`limits.steps`)",
            if biggest.is_some() {
                " once its matrices are expanded"
            } else {
                ""
            },
            self.limits.steps
        ))
        .code(Code::Limit)
        .help(format!(
            "split the plan, or raise `limits.steps` (at most {})",
            super::limits::STEPS_CEILING
        ));
        let pointer = match biggest {
            Some((i, copies)) => {
                d.message.push_str(&format!(
                    "; the largest matrix, of step `{}`, makes {copies}",
                    self.plan.steps[i].id
                ));
                format!("/steps/{i}/matrix")
            }
            None => "/steps".to_string(),
        };
        self.err(&pointer, d);
    }

    /// Whether the copies the matrices make fit the limits: steps in all, and the values and text
    /// they hold (a matrix of 1,000 copies of a step with a 1 MB value would hold 1 GB).
    fn expansion_fits(&mut self, bases: &[BaseStep]) -> bool {
        let total: usize = bases.iter().map(|b| b.combos.len()).sum();
        if total > self.limits.steps {
            let biggest = bases
                .iter()
                .enumerate()
                .max_by_key(|(_, b)| b.combos.len())
                .map(|(i, b)| (i, b.combos.len()));
            self.too_many_steps(total, biggest);
            return false;
        }
        let (mut values, mut text) = (0u64, 0u64);
        for (i, b) in bases.iter().enumerate() {
            if b.combos.len() < 2 {
                continue;
            }
            let (v, t) = super::source::size_of(&b.spec.borrow());
            let copies = b.combos.len() as u64;
            values = values.saturating_add(v.saturating_mul(copies));
            text = text.saturating_add(t.saturating_mul(copies));
            if values > super::source::MAX_VALUES || text > super::source::MAX_TEXT_BYTES {
                self.err(
                    &format!("/steps/{i}/matrix"),
                    Diagnostic::new(format!(
                        "the {copies} copies of step `{}` make the plan hold more than {}",
                        self.plan.steps[i].id,
                        if values > super::source::MAX_VALUES {
                            format!("{} values", super::source::MAX_VALUES)
                        } else {
                            format!("{} MiB of text", super::source::MAX_TEXT_BYTES >> 20)
                        }
                    ))
                    .code(Code::Limit)
                    .help("make fewer copies, or make the step smaller"),
                );
                return false;
            }
        }
        true
    }

    /// `schedule.cron` is a five-field cron expression and `schedule.timezone` a known time zone.
    fn check_schedule(&mut self) {
        let Some(s) = &self.plan.schedule else {
            return;
        };
        if let Err(m) = super::schedule::parse_cron(&s.cron) {
            self.err(
                "/schedule/cron",
                Diagnostic::new(m).code(Code::Schedule).help(
                    "five fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" for 02:00 every day",
                ),
            );
        }
        if let Err(m) = super::schedule::parse_timezone(s.timezone.as_deref()) {
            self.err(
                "/schedule/timezone",
                Diagnostic::new(m).code(Code::Schedule),
            );
        }
    }

    /// Checks every step and builds the planned steps: each step as written, then the graph between
    /// them, then the copies, in order.
    fn steps(&mut self) -> Vec<PlannedStep> {
        if self.plan.steps.len() > self.limits.steps {
            self.too_many_steps(self.plan.steps.len(), None);
            return Vec::new();
        }
        self.index_ids();
        self.load_groups();
        let mut bases: Vec<Option<BaseStep>> = Vec::with_capacity(self.plan.steps.len());
        for i in 0..self.plan.steps.len() {
            bases.push(self.base_step(i));
            if self.errors.len() > super::diag::MAX_ERRORS {
                return Vec::new();
            }
        }
        if !self.errors.is_empty() || bases.iter().any(Option::is_none) {
            return Vec::new();
        }
        // Every entry is `Some` here; sized once (a flattening `collect` grows the vector by doubling,
        // moving every step spec each time).
        let mut all = Vec::with_capacity(bases.len());
        all.extend(bases.into_iter().flatten());
        let bases: Vec<BaseStep> = all;
        if !self.expansion_fits(&bases) || self.report_cycle(&bases) {
            return Vec::new();
        }
        let mut planned = self.expand(&bases);
        self.splice(&mut planned);
        self.check_plan_outputs();
        if !self.errors.is_empty() {
            return Vec::new();
        }
        super::needs::order(&mut planned);
        planned
    }

    /// Checks one step as written: its operation and prompt, its matrix, the names its templates
    /// read, and what it needs.
    fn base_step(&mut self, i: usize) -> Option<BaseStep> {
        self.with_without_uses(i);
        let kind = self.step_kind(i)?;
        if let StepKind::Uses(_) = kind {
            return self.uses_base(i, kind);
        }
        let kname = kind.name();
        let mut spec = self.spec_as_written(i, &kind);
        let prompt_file = self.read_prompt(i, &kind, &mut spec);
        self.notify_message(i, &kind);
        let combos = self.matrix_combos(i)?;
        let (refs, static_leaves) = self.step_templates(i, kname, &spec, prompt_file.is_some());
        let mut deps = self.needs(i);
        for r in &refs {
            if !deps.contains(r) {
                deps.push(r.clone());
            }
        }
        Some(BaseStep {
            kname,
            kind: RefCell::new(Some(kind)),
            spec: RefCell::new(spec),
            prompt_file,
            deps,
            refs,
            combos,
            static_leaves,
        })
    }
}

#[cfg(test)]
pub(super) mod test_support {
    //! What the tests of each check share: a plan checked from text, and its problems as lines.

    use super::*;

    /// Checks a plan written in a temporary folder (with extra files beside it).
    pub(in crate::plan) fn load_text(
        yaml: &str,
        files: &[(&str, &str)],
        options: &LoadOptions,
    ) -> Result<CheckedPlan, Vec<Diagnostic>> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, yaml).unwrap();
        let source = super::super::source::parse("plan.yaml", yaml.as_bytes())?;
        let plan: Plan = serde_json::from_value(source.value.clone())
            .map_err(|e| vec![Diagnostic::new(e.to_string())])?;
        check(
            source,
            plan,
            None,
            content_hash(yaml.as_bytes()),
            &path,
            options,
            None,
        )
    }

    /// Each problem as `line: message [suggestion]`.
    pub(in crate::plan) fn messages(r: Result<CheckedPlan, Vec<Diagnostic>>) -> Vec<String> {
        match r {
            Ok(_) => vec![],
            Err(ds) => ds
                .iter()
                .map(|d| {
                    let loc = d.location.as_ref().map_or(0, |l| l.line);
                    let s = d.suggestion.as_deref().unwrap_or("");
                    format!("{loc}: {} [{s}]", d.message)
                })
                .collect(),
        }
    }

    pub(in crate::plan) const FEEDBACK: &str = r#"
version: 1
name: t
vars:
  wallet: trading-wallet
  pay: 500
steps:
  - id: analyze
    submit:
      job_type: multimodal
      wallet: ${{ vars.wallet }}
      payment: ${{ vars.pay }}
      prompt: "Analyze feedback"
  - id: done
    wait:
      job: ${{ steps.analyze.job_id }}
  - id: summarize
    job:
      job_type: inference
      wallet: ${{ vars.wallet }}
      payment: 2
      prompt: "Summarize (${{ matrix.tone }}): ${{ steps.done.output }}"
    matrix: {tone: [formal, casual]}
  - id: report
    needs: [summarize]
    balance:
      wallet: ${{ vars.wallet }}
"#;
}

#[cfg(test)]
mod tests {
    use super::test_support::{FEEDBACK, load_text, messages};
    use super::*;
    use crate::money::Money;

    #[test]
    fn expands_orders_and_renders_static_values() {
        let p = load_text(FEEDBACK, &[], &LoadOptions::default()).unwrap();
        let ids: Vec<(&str, usize)> = p.steps.iter().map(|s| (s.id.as_str(), s.level)).collect();
        assert_eq!(
            ids,
            vec![
                ("analyze", 0),
                ("done", 1),
                ("summarize[tone=formal]", 2),
                ("summarize[tone=casual]", 2),
                ("report", 3)
            ]
        );
        assert_eq!(p.steps[0].spec["payment"], serde_json::json!(500));
        assert_eq!(p.steps[0].spec["wallet"], "trading-wallet");
        assert_eq!(p.steps[1].spec["job"], "${{ steps.analyze.job_id }}");
        assert_eq!(
            p.steps[4].needs,
            vec!["summarize[tone=formal]", "summarize[tone=casual]"]
        );
        let (spend, runtime) = crate::plan::spend::spend_per_wallet(&p);
        assert_eq!(spend["trading-wallet"], Money::from_int(504));
        assert!(runtime.is_empty());
    }

    #[test]
    fn reports_every_problem() {
        let yaml = r#"
version: 1
name: t
env: [HOME_DIR]
vars: {wallet: w}
steps:
  - id: a
    submit:
      job_type: inferense
      wallet: ${{ vars.walet }}
      payment: 0.5
      prompt: "${{ env.PATH }} ${{ secrets.KEY }}"
  - id: b
    needs: [aa]
    wait: {job: "${{ steps.a.joob_id }}"}
  - id: c
    status: {job: "${{ steps.zz.job_id }}"}
    when: "${{ steps.b.nope }}"
"#;
        let m = messages(load_text(yaml, &[], &LoadOptions::default()));
        let expected = [
            "10: unknown variable `vars.walet` [vars.wallet]",
            "12: `env.PATH` is not listed under `env:` []",
            "12: unknown secret `secrets.KEY` []",
            "15: step `a` (a `submit` step) has no output `joob_id` [steps.a.job_id]",
            "14: `needs` names an unknown step `aa` [a]",
            "17: unknown step `zz` in `steps.zz` [a]",
            "18: step `b` (a `wait` step) has no output `nope` []",
        ];
        for e in expected {
            assert!(m.iter().any(|x| x == e), "missing {e} in {m:#?}");
        }
    }

    #[test]
    fn an_unknown_filter_shows_with_the_other_errors() {
        let yaml = r#"
version: 1
name: t
steps:
  - id: a
    needs: [zz]
    wait: {job: "${{ 'x' | upperr }}"}
  - id: b
    fetch: {job: "${{ steps.a.job_id | nofilter }}"}
"#;
        let m = messages(load_text(yaml, &[], &LoadOptions::default()));
        assert_eq!(
            m,
            vec![
                "6: `needs` names an unknown step `zz` [a]",
                "7: filter upperr is unknown [upper]",
                "9: filter nofilter is unknown []",
            ],
        );
    }

    /// A plan whose bytes differ from the file's text: a BOM (dropped from the text the parser
    /// sees) and CRLF line ends.
    const WITH_BOM: &[u8] =
        b"\xef\xbb\xbfversion: 1\r\nname: parsed\r\nsteps:\r\n  - id: a\r\n    list: {}\r\n";

    #[test]
    fn the_hash_is_of_the_bytes_that_were_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.yaml");
        // The file on disk says something else: a loader that read the file again to hash it would
        // describe these bytes, not the ones it ran.
        std::fs::write(&path, "version: 1\nname: on-disk\nsteps: []\n").unwrap();
        let p = load_bytes(&path, WITH_BOM, &LoadOptions::default()).unwrap();
        assert_eq!(p.plan.name, "parsed");
        assert_eq!(p.content_hash, content_hash(WITH_BOM));
        assert_ne!(p.content_hash, content_hash(&std::fs::read(&path).unwrap()));
        // The BOM is hashed though the parsed text does not hold it.
        assert_ne!(p.content_hash, content_hash(p.source.text.as_bytes()));
    }

    #[test]
    fn load_hashes_the_file_as_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, WITH_BOM).unwrap();
        let p = load(&path, &LoadOptions::default()).unwrap();
        assert_eq!(p.plan.name, "parsed");
        // `sha256sum` of WITH_BOM, worked out apart from this crate.
        assert_eq!(
            p.content_hash,
            "4ca5880b8ad3f82992d19d655d393bb79097629f443c660170df750b87662c8c"
        );
    }

    #[test]
    fn the_checked_plan_lists_the_files_it_read_and_never_a_secret_file() {
        use super::super::files_read::FileRole;
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().canonicalize().unwrap();
        for d in [".git", "plans", "prompts", "vars", "secrets"] {
            std::fs::create_dir_all(repo.join(d)).unwrap();
        }
        std::fs::write(repo.join("prompts/a.md"), "summarise ${{ vars.topic }}").unwrap();
        std::fs::write(repo.join("vars/v.yaml"), "topic: rust\n").unwrap();
        std::fs::write(repo.join("secrets/token.txt"), "s3cret-value").unwrap();
        let plan = "version: 1\nname: files\nvars: {topic: x}\nsecrets:\n  TOKEN: {file: ../secrets/token.txt}\n\
                    steps:\n  - id: a\n    job: {job_type: inference, wallet: w, payment: 1, prompt_file: ../prompts/a.md}\n\
                    \x20 - id: b\n    job: {job_type: inference, wallet: w, payment: 1, prompt_file: ../prompts/a.md}\n";
        let path = repo.join("plans/p.yaml");
        std::fs::write(&path, plan).unwrap();
        let options = LoadOptions {
            vars_files: vec![repo.join("vars/v.yaml")],
            ..LoadOptions::default()
        };
        let p = load(&path, &options).unwrap_or_else(|d| panic!("{d:?}"));
        let listed: Vec<(FileRole, &str)> = p
            .files_read
            .iter()
            .map(|f| (f.role, f.path.as_str()))
            .collect();
        assert_eq!(
            listed,
            vec![
                (FileRole::Plan, "plans/p.yaml"),
                (FileRole::Vars, "vars/v.yaml"),
                (FileRole::Prompt, "prompts/a.md"),
            ]
        );
        assert_eq!(p.files_read[0].sha256, p.content_hash);
        assert_eq!(p.files_read[0].given.as_deref(), Some(path.as_path()));
        assert_eq!(&*p.files_read[2].bytes, b"summarise ${{ vars.topic }}");
        assert!(
            p.files_read
                .iter()
                .all(|f| !String::from_utf8_lossy(&f.bytes).contains("s3cret-value"))
        );
    }
}
