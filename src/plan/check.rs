//! The checked plan: what comes out of [`load`] when every load-time check passed, and what the executor
//! and the dry run consume. Steps are matrix-expanded and topologically ordered; each knows its level in
//! the graph, its effective timeout and retry policy, and renders itself against the outputs of the
//! steps before it.

// A `Diagnostic` is large, but errors here are rare and end the step (or the load); the executor's
// API returns one by value as agreed.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::diag::{Diagnostic, Location};
use super::source::Source;
use super::template::Templates;
use super::types::{
    BalanceSpec, FetchSpec, JobRef, JobSpec, ListSpec, OnTimeout, OptimizeSpec, Plan, RetrySpec,
    SubmitSpec, WaitSpec, When,
};
use crate::api::JobId;
use crate::money::Money;

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
}

/// One kind of step, with its spec as written (templates not yet rendered).
#[derive(Clone, Debug)]
pub enum StepKind {
    /// Submit a job.
    Submit(SubmitSpec),
    /// Wait for a job.
    Wait(WaitSpec),
    /// Fetch a job's result.
    Fetch(FetchSpec),
    /// Submit, wait, fetch.
    Job(JobSpec),
    /// Allocate resources.
    Optimize(OptimizeSpec),
    /// Read a job's status.
    Status(JobRef),
    /// List jobs.
    List(ListSpec),
    /// Cancel a job.
    Cancel(JobRef),
    /// Read a wallet's balance.
    Balance(BalanceSpec),
}

impl StepKind {
    /// The kind's name as written in a plan (`submit`, `wait`, …).
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Submit(_) => "submit",
            StepKind::Wait(_) => "wait",
            StepKind::Fetch(_) => "fetch",
            StepKind::Job(_) => "job",
            StepKind::Optimize(_) => "optimize",
            StepKind::Status(_) => "status",
            StepKind::List(_) => "list",
            StepKind::Cancel(_) => "cancel",
            StepKind::Balance(_) => "balance",
        }
    }
}

/// A step of a checked plan, matrix-expanded.
#[derive(Clone, Debug)]
pub struct PlannedStep {
    /// The id, with the matrix values for an expanded step: `summarize[tone=formal]`.
    pub id: String,
    /// The id as written in the plan: `summarize`.
    pub base_id: String,
    /// The step's index in the plan's `steps`.
    pub index: usize,
    /// The operation.
    pub kind: StepKind,
    /// This copy's matrix values (empty without a matrix).
    pub matrix: Map<String, Value>,
    /// The (expanded) ids this step waits for: `needs` and `${{ steps.X }}` references.
    pub needs: Vec<String>,
    /// 0 for steps with no dependencies, else 1 + the highest level of what it needs.
    pub level: usize,
    /// The effective timeout (step, else `defaults.timeout`, else 300s).
    pub timeout: Duration,
    /// The effective retry policy (step, else `defaults.retry`, else the default).
    pub retry: RetrySpec,
    /// Whether a failure leaves the run going.
    pub continue_on_error: bool,
    /// The condition, if any.
    pub when: Option<When>,
    /// Named outputs (templates over the step's own outputs).
    pub outputs: Map<String, Value>,
    /// Reuse a cached result.
    pub cache: bool,
    /// Where the step starts in the plan file.
    pub location: Location,
    /// The JSON pointer of the step in the plan file (`/steps/3`).
    pub pointer: String,
    /// The kind's spec with every template that could be rendered at load rendered (run-time ones,
    /// which read `steps.*` or `run.*`, are left as written), and `prompt_file` read into `prompt`.
    pub spec: Value,
    /// The prompt file the prompt came from, as written (errors in it point at `prompt_file`).
    pub prompt_file: Option<String>,
    /// What `steps.X` means to this step's templates, by the referenced id as written.
    pub views: BTreeMap<String, StepView>,
}

/// What `${{ steps.X }}` is to a step: the outputs of one step (or of the paired copy of a matrix
/// step), or the list of the outputs of all copies of a matrix step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepView {
    /// One step's outputs (an object).
    One(String),
    /// The outputs of each copy, in expansion order (a list).
    List(Vec<String>),
}

/// A job request with every template rendered: what a `submit` or `job` step sends.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    /// One of the six job types.
    pub job_type: String,
    /// The paying wallet.
    pub wallet: String,
    /// The payment.
    pub payment: Money,
    /// The rendered prompt.
    pub prompt: String,
    /// The model.
    pub model: Option<String>,
    /// A chosen provider.
    pub provider_id: Option<String>,
    /// A custom Ollama endpoint.
    pub endpoint: Option<String>,
    /// Extra payload keys (rendered).
    pub parameters: Map<String, Value>,
    /// Constraints (rendered).
    pub constraints: Map<String, Value>,
    /// Time to live.
    pub ttl: Option<Duration>,
}

/// A resource request with every template rendered.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizeRequest {
    /// The agent.
    pub agent_id: String,
    /// Cores.
    pub cpu: f64,
    /// Memory in GB.
    pub memory_gb: f64,
    /// GPUs.
    pub gpu: f64,
    /// Duration of the allocation.
    pub duration: Option<Duration>,
    /// The job type.
    pub task_type: String,
    /// The optimization target.
    pub target: String,
    /// The wallet, for reports.
    pub wallet: Option<String>,
}

/// A step with every template rendered: exactly what the executor does.
#[derive(Clone, Debug, PartialEq)]
pub enum RenderedStep {
    /// Submit a job.
    Submit(JobRequest),
    /// Wait for a job.
    Wait {
        /// The job.
        job: JobId,
        /// How long to wait.
        timeout: Duration,
        /// What to do on timeout.
        on_timeout: OnTimeout,
    },
    /// Fetch a job's result.
    Fetch {
        /// The job.
        job: JobId,
        /// Where to save it, as written (checked by the executor against the run and plan folders).
        save: Option<String>,
        /// Verify the receipt.
        verify_receipt: bool,
    },
    /// Submit, wait, fetch.
    Job {
        /// The job to submit.
        request: JobRequest,
        /// What to do on timeout.
        on_timeout: OnTimeout,
        /// Where to save the result.
        save: Option<String>,
    },
    /// Allocate resources.
    Optimize(OptimizeRequest),
    /// Read a job's status.
    Status {
        /// The job.
        job: JobId,
    },
    /// List jobs.
    List {
        /// Page size.
        limit: Option<u64>,
        /// State filter.
        status: Option<String>,
        /// Type filter.
        job_type: Option<String>,
    },
    /// Cancel a job.
    Cancel {
        /// The job.
        job: JobId,
    },
    /// Read a balance.
    Balance {
        /// The wallet.
        wallet: String,
        /// The least it must hold.
        min: Option<Money>,
    },
}

/// The run a template sees as `${{ run.* }}`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunInfo {
    /// The run's id.
    pub id: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The plan's name.
    pub plan: String,
}

/// Outputs of finished steps, by expanded id; each value is a JSON object of named outputs.
pub type StepOutputs = BTreeMap<String, Value>;

/// A plan that passed every load-time check. Only [`load`] makes one.
#[derive(Clone, Debug)]
pub struct CheckedPlan {
    /// The plan file as the user named it.
    pub path: PathBuf,
    /// The plan's folder (prompt files and `save:` paths are relative to it).
    pub dir: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub content_hash: String,
    /// The plan as parsed.
    pub plan: Plan,
    /// `vars` after `--vars` and `--set`.
    pub vars: Map<String, Value>,
    /// The environment variables the plan lists, with their values (missing ones are absent).
    pub env: BTreeMap<String, String>,
    /// Secret values by name. Never print these; use [`CheckedPlan::redact`].
    pub secrets: BTreeMap<String, String>,
    /// The steps, matrix-expanded, in a topological order (by level, then plan order).
    pub steps: Vec<PlannedStep>,
    /// Warnings that do not stop the plan (e.g. a bare `{{ }}` that is probably a mistake).
    pub warnings: Vec<Diagnostic>,
    /// The parsed file, for placing run-time errors.
    pub source: Source,
    /// The plan's template environment.
    pub templates: Templates,
    /// Each step's position in `steps`, by (expanded) id.
    pub step_index: std::collections::HashMap<String, usize>,
}

impl CheckedPlan {
    /// Replaces every secret value in `text` with `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.secrets.values() {
            if !v.is_empty() {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
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

    /// The step with this (expanded) id.
    pub fn step(&self, id: &str) -> Option<&PlannedStep> {
        self.step_index.get(id).and_then(|&i| self.steps.get(i))
    }

    /// The plan's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The timeout of a step that sets none, when the plan's `defaults` set none either.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

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
    let plan = super::schema::check(&source)?;
    check(source, plan, content_hash, path, options)
}

/// SHA-256 of a plan file's bytes (a BOM included), hex.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Checks a plan that has been parsed and schema-validated: everything [`load`] does after reading.
/// `content_hash` is the hash of the bytes `source` was parsed from.
fn check(
    source: Source,
    plan: Plan,
    content_hash: String,
    path: &Path,
    options: &LoadOptions,
) -> Result<CheckedPlan, Vec<Diagnostic>> {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut c = Checker {
        source: &source,
        plan: &plan,
        dir: &dir,
        templates: Templates::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
        vars: plan.vars.clone(),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        ids: std::collections::HashMap::new(),
        base_context: None,
        names_cache: std::collections::HashMap::new(),
        render_cache: std::collections::HashMap::new(),
    };
    c.apply_overrides(options);
    c.read_environment(options);
    c.check_schedule();
    let steps = c.steps();
    let Checker {
        templates,
        mut errors,
        mut warnings,
        vars,
        env,
        secrets,
        ..
    } = c;
    dedup(&mut errors);
    dedup(&mut warnings);
    if !errors.is_empty() {
        return Err(errors);
    }
    let checked = CheckedPlan {
        path: path.to_path_buf(),
        dir,
        content_hash,
        plan,
        vars,
        env,
        secrets,
        step_index: steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect(),
        steps,
        warnings,
        source,
        templates,
    };
    // Templates rendered only at run time are tried once against placeholders, so that a filter,
    // test or function that does not exist fails here rather than in the middle of a run. One copy
    // of a matrix step stands for all.
    let mut seen = std::collections::HashSet::new();
    let mut errors: Vec<Diagnostic> = checked
        .steps
        .iter()
        .filter(|s| seen.insert(s.index))
        .flat_map(|s| checked.unknown_callables(s))
        .collect();
    if !errors.is_empty() {
        errors.sort_by(|a, b| a.location.cmp(&b.location));
        return Err(errors);
    }
    Ok(checked)
}

/// Drops repeated diagnostics (a matrix step's copies report the same problem once each), keeping
/// the first of each and the order.
fn dedup(d: &mut Vec<Diagnostic>) {
    let mut seen = std::collections::HashSet::new();
    d.retain(|x| seen.insert((x.location.clone(), x.message.clone())));
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

/// What a name in a template refers to.
enum NameUse {
    /// Known at load (vars, env, secrets, matrix).
    Static,
    /// Only known at run time (`run.*`).
    Runtime,
    /// Another step's outputs (known at run time): the id as written.
    Step(String),
}

/// A template found in a step, with the JSON pointer of the value that holds it.
struct Leaf {
    /// The pointer inside the spec (`/prompt`), or `None` for `when` and `outputs`.
    rel: String,
    /// The pointer in the plan file.
    pointer: String,
}

/// The load-time checker: holds what it has found so far.
struct Checker<'a> {
    source: &'a Source,
    plan: &'a Plan,
    dir: &'a Path,
    templates: Templates,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    vars: Map<String, Value>,
    env: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    /// Each step id as written → its index (the first, when an id is repeated).
    ids: std::collections::HashMap<String, usize>,
    /// The load-time template context without matrix values, built once (vars, env and secrets do
    /// not change once the overrides are applied).
    base_context: Option<minijinja::Value>,
    /// The names each template text reads (plans repeat the same templates: `${{ vars.wallet }}`).
    names_cache: std::collections::HashMap<String, NamesResult>,
    /// Load-time renders of templates outside a matrix, by text (the context is the same for all).
    render_cache: std::collections::HashMap<String, RenderResult>,
}

type NamesResult = Result<std::collections::BTreeSet<String>, super::template::TemplateError>;
type RenderResult = Result<Value, super::template::TemplateError>;

/// One step as written, with what the checker learnt about it.
struct BaseStep {
    /// The kind's name.
    kname: &'static str,
    /// The operation; the last copy takes it (the others clone it), so a plan without matrices
    /// copies no spec.
    kind: std::cell::RefCell<Option<StepKind>>,
    /// The spec as written (prompt file inlined); taken like `kind`.
    spec: std::cell::RefCell<Value>,
    prompt_file: Option<String>,
    /// Ids as written that the step waits for (needs and references), deduplicated.
    deps: Vec<String>,
    /// Ids referenced from templates (a subset of `deps`).
    refs: Vec<String>,
    /// Every matrix combination (one empty map without a matrix).
    combos: Vec<Map<String, Value>>,
    /// Spec leaves that hold a template and can be rendered at load.
    static_leaves: Vec<Leaf>,
}

fn ptr_seg(key: &str) -> String {
    super::source::escape_pointer_segment(key).into_owned()
}

impl Checker<'_> {
    fn err(&mut self, pointer: &str, mut d: Diagnostic) {
        // A value rendered from a secret can end up in a message (an unknown job type, say).
        if !self.secrets.is_empty() {
            d.message = self.redact(&d.message);
        }
        let d = self.source.at(pointer, d);
        self.errors.push(d);
    }

    /// `schedule.cron` is a five-field cron expression and `schedule.timezone` a known time zone.
    fn check_schedule(&mut self) {
        let Some(s) = &self.plan.schedule else {
            return;
        };
        if let Err(m) = super::schedule::parse_cron(&s.cron) {
            self.err(
                "/schedule/cron",
                Diagnostic::new(m).help(
                    "five fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" for 02:00 every day",
                ),
            );
        }
        if let Err(m) = super::schedule::parse_timezone(s.timezone.as_deref()) {
            self.err("/schedule/timezone", Diagnostic::new(m));
        }
    }

    /// `--vars FILE`s, then `--set key=value`s.
    fn apply_overrides(&mut self, options: &LoadOptions) {
        for file in &options.vars_files {
            let name = file.display().to_string();
            let bytes = match std::fs::read(file) {
                Ok(b) => b,
                Err(e) => {
                    self.errors.push(Diagnostic::new(format!(
                        "cannot read the vars file `{name}`: {e}"
                    )));
                    continue;
                }
            };
            match super::source::parse(&name, &bytes) {
                Ok(src) => match src.value {
                    Value::Object(m) => merge(&mut self.vars, m),
                    _ => self.errors.push(Diagnostic::new(format!(
                        "the vars file `{name}` must hold a mapping of names to values"
                    ))),
                },
                Err(ds) => self.errors.extend(ds),
            }
        }
        for (key, value) in &options.set {
            if key.is_empty() || key.split('.').any(str::is_empty) {
                self.errors.push(
                    Diagnostic::new(format!("`--set {key}={value}`: the name is empty"))
                        .help("write `--set name=value` or `--set parent.child=value`"),
                );
                continue;
            }
            let parts: Vec<&str> = key.split('.').collect();
            if let Err(at) = set_path(&mut self.vars, &parts, yaml_scalar(value)) {
                self.errors.push(Diagnostic::new(format!(
                    "`--set {key}={value}`: `vars.{}` is not a mapping",
                    parts[..=at].join(".")
                )));
            }
        }
    }

    /// The `env:` names and the `secrets:`.
    fn read_environment(&mut self, options: &LoadOptions) {
        let lookup = |name: &str| -> Option<String> {
            match &options.environment {
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
                    let p = self.dir.join(file);
                    match std::fs::read_to_string(&p) {
                        Ok(v) => {
                            self.secrets.insert(name.clone(), v.trim().to_string());
                        }
                        Err(e) => self.err(
                            &pointer,
                            Diagnostic::new(format!(
                                "secret `{name}`: cannot read the file `{}`: {}",
                                p.display(),
                                e.kind()
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

    /// Checks every step and builds the planned (expanded, ordered) steps.
    fn steps(&mut self) -> Vec<PlannedStep> {
        let plan = self.plan;
        // Ids: duplicates.
        let mut ids: std::collections::HashMap<String, usize> =
            std::collections::HashMap::with_capacity(plan.steps.len());
        for (i, step) in plan.steps.iter().enumerate() {
            if let Some(&first) = ids.get(&step.id) {
                let line = self.source.locate(&format!("/steps/{first}/id")).line;
                self.err(
                    &format!("/steps/{i}/id"),
                    Diagnostic::new(format!(
                        "duplicate step id `{}` (first used on line {line})",
                        step.id
                    ))
                    .help("step ids must be unique; rename one of them"),
                );
            } else {
                ids.insert(step.id.clone(), i);
            }
        }
        self.ids = ids;
        let mut bases: Vec<Option<BaseStep>> = Vec::with_capacity(plan.steps.len());
        for i in 0..plan.steps.len() {
            bases.push(self.base_step(i));
        }
        let ids = std::mem::take(&mut self.ids);
        if !self.errors.is_empty() || bases.iter().any(Option::is_none) {
            return Vec::new();
        }
        let bases: Vec<BaseStep> = bases.into_iter().flatten().collect();
        let first_index = |id: &str| ids.get(id).copied();

        // Cycles, between the steps as written.
        let deps: Vec<Vec<usize>> = bases
            .iter()
            .map(|b| b.deps.iter().filter_map(|d| first_index(d)).collect())
            .collect();
        if let Some(cycle) = super::graph::find_cycle(&deps) {
            let names: Vec<&str> = cycle.iter().map(|&i| plan.steps[i].id.as_str()).collect();
            let at = cycle[0];
            self.err(
                &format!("/steps/{at}/id"),
                Diagnostic::new(format!("the steps form a cycle: {}", names.join(" → ")))
                    .help("each step in the cycle waits for the one before it; remove one of the `needs` or references"),
            );
            return Vec::new();
        }

        // Expansion: the copies of each step, and what each copy waits for.
        let copies: Vec<Vec<String>> = bases
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.combos
                    .iter()
                    .map(|c| super::graph::copy_id(&plan.steps[i].id, c))
                    .collect()
            })
            .collect();
        let mut planned: Vec<PlannedStep> = Vec::new();
        for (i, b) in bases.iter().enumerate() {
            let step = &plan.steps[i];
            for (ci, combo) in b.combos.iter().enumerate() {
                let mut needs: Vec<String> = Vec::new();
                let mut views = BTreeMap::new();
                for d in &b.deps {
                    let Some(j) = first_index(d) else { continue };
                    let paired = self.paired(i, j);
                    let view = if paired {
                        let partner = bases[j].combos.iter().position(|c| c == combo);
                        match partner {
                            Some(p) => StepView::One(copies[j][p].clone()),
                            None => {
                                self.err(
                                    &format!("/steps/{i}/matrix"),
                                    Diagnostic::new(format!(
                                        "`{}` pairs with the matrix step `{d}` (same keys), but `{d}` has no copy for {}",
                                        copies[i][ci],
                                        super::graph::copy_id("", combo).trim_start_matches('[').trim_end_matches(']')
                                    )),
                                );
                                continue;
                            }
                        }
                    } else if plan.steps[j].matrix.is_some() {
                        StepView::List(copies[j].clone())
                    } else {
                        StepView::One(copies[j][0].clone())
                    };
                    match &view {
                        StepView::One(id) => needs.push(id.clone()),
                        StepView::List(ids) => needs.extend(ids.iter().cloned()),
                    }
                    if b.refs.contains(d) {
                        views.insert(d.clone(), view);
                    }
                }
                let mut seen = std::collections::HashSet::new();
                needs.retain(|n| seen.insert(n.clone()));
                let spec = self.render_static(i, b, combo, ci + 1 == b.combos.len());
                planned.push(PlannedStep {
                    id: copies[i][ci].clone(),
                    base_id: step.id.clone(),
                    index: i,
                    kind: if ci + 1 == b.combos.len() {
                        b.kind.borrow_mut().take()
                    } else {
                        b.kind.borrow().clone()
                    }
                    .unwrap_or_else(|| unreachable_kind(b.kname)),
                    matrix: combo.clone(),
                    needs,
                    level: 0,
                    timeout: step
                        .timeout
                        .or(plan.defaults.timeout)
                        .map_or(DEFAULT_TIMEOUT, |d| d.get()),
                    retry: step
                        .retry
                        .clone()
                        .or_else(|| plan.defaults.retry.clone())
                        .unwrap_or_default(),
                    continue_on_error: step.continue_on_error,
                    when: step.when.clone(),
                    outputs: step.outputs.clone(),
                    cache: step.cache,
                    location: self.source.locate(&format!("/steps/{i}")),
                    pointer: format!("/steps/{i}"),
                    spec,
                    prompt_file: b.prompt_file.clone(),
                    views,
                });
            }
        }
        // Levels and order: by level, then plan order (copies in expansion order).
        let pos: std::collections::HashMap<&str, usize> = planned
            .iter()
            .enumerate()
            .map(|(k, s)| (s.id.as_str(), k))
            .collect();
        let deps: Vec<Vec<usize>> = planned
            .iter()
            .map(|s| {
                s.needs
                    .iter()
                    .filter_map(|n| pos.get(n.as_str()).copied())
                    .collect()
            })
            .collect();
        let levels = super::graph::levels(&deps);
        for (s, l) in planned.iter_mut().zip(levels) {
            s.level = l;
        }
        planned.sort_by_key(|s| s.level); // stable: plan order within a level
        planned
    }

    /// Whether copies of step `i` pair with copies of matrix step `j` (both have a matrix with the
    /// same keys).
    fn paired(&self, i: usize, j: usize) -> bool {
        match (&self.plan.steps[i].matrix, &self.plan.steps[j].matrix) {
            (Some(a), Some(b)) if i != j => {
                let ka: std::collections::BTreeSet<&String> = a.keys().collect();
                let kb: std::collections::BTreeSet<&String> = b.keys().collect();
                ka == kb
            }
            _ => false,
        }
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

/// The value at a pointer relative to `v`, mutably.
fn at_mut<'v>(v: &'v mut Value, rel: &str) -> Option<&'v mut Value> {
    if rel.is_empty() {
        Some(v)
    } else {
        v.pointer_mut(rel)
    }
}

impl Checker<'_> {
    /// The pointer in the file of a spec value (`rel` inside the kind's spec).
    fn spec_pointer(&self, i: usize, kind: &str, rel: &str, from_file: bool) -> String {
        if from_file && rel == "/prompt" {
            format!("/steps/{i}/{kind}/prompt_file")
        } else {
            format!("/steps/{i}/{kind}{rel}")
        }
    }

    /// Checks one step as written: its kind, prompt file, templates, needs and matrix.
    fn base_step(&mut self, i: usize) -> Option<BaseStep> {
        let step = &self.plan.steps[i];
        let kind = match (
            &step.submit,
            &step.wait,
            &step.fetch,
            &step.job,
            &step.optimize,
            &step.status,
            &step.list,
            &step.cancel,
            &step.balance,
        ) {
            (Some(s), None, None, None, None, None, None, None, None) => {
                StepKind::Submit(s.clone())
            }
            (None, Some(s), None, None, None, None, None, None, None) => StepKind::Wait(s.clone()),
            (None, None, Some(s), None, None, None, None, None, None) => StepKind::Fetch(s.clone()),
            (None, None, None, Some(s), None, None, None, None, None) => StepKind::Job(s.clone()),
            (None, None, None, None, Some(s), None, None, None, None) => {
                StepKind::Optimize(s.clone())
            }
            (None, None, None, None, None, Some(s), None, None, None) => {
                StepKind::Status(s.clone())
            }
            (None, None, None, None, None, None, Some(s), None, None) => StepKind::List(s.clone()),
            (None, None, None, None, None, None, None, Some(s), None) => {
                StepKind::Cancel(s.clone())
            }
            (None, None, None, None, None, None, None, None, Some(s)) => {
                StepKind::Balance(s.clone())
            }
            _ => {
                self.err(
                    &format!("/steps/{i}"),
                    Diagnostic::new(format!(
                        "step `{}` must have exactly one operation ({})",
                        step.id,
                        super::types::STEP_KINDS.join(", ")
                    )),
                );
                return None;
            }
        };
        let kname = kind.name();
        let mut spec = self
            .source
            .value
            .get("steps")
            .and_then(|s| s.get(i))
            .and_then(|s| s.get(kname))
            .cloned()
            .unwrap_or_else(|| kind_spec(&kind));
        if spec.is_null() {
            spec = Value::Object(Map::new());
        }

        // The prompt: inline or from a file, not both, not neither.
        let mut prompt_file = None;
        if matches!(kind, StepKind::Submit(_) | StepKind::Job(_)) {
            let has_prompt = spec.get("prompt").is_some();
            let pf = spec.get("prompt_file").cloned();
            match (has_prompt, pf) {
                (true, Some(_)) => self.err(
                    &format!("/steps/{i}/{kname}/prompt_file"),
                    Diagnostic::new("give either `prompt` or `prompt_file`, not both"),
                ),
                (false, None) => self.err(
                    &format!("/steps/{i}/{kname}"),
                    Diagnostic::new(format!("step `{}` has no prompt", step.id)).help(
                        "add `prompt: …` or `prompt_file: path` (relative to the plan's folder)",
                    ),
                ),
                (false, Some(Value::String(pf))) => {
                    let pointer = format!("/steps/{i}/{kname}/prompt_file");
                    if super::template::has_template(&pf) {
                        self.err(
                            &pointer,
                            Diagnostic::new("`prompt_file` cannot be a template")
                                .help("the file's content is templated; its name is not"),
                        );
                    } else {
                        let path = self.dir.join(&pf);
                        match std::fs::read_to_string(&path) {
                            Ok(text) => {
                                if let Some(m) = spec.as_object_mut() {
                                    m.remove("prompt_file");
                                    m.insert("prompt".into(), Value::String(text));
                                }
                                prompt_file = Some(pf);
                            }
                            Err(e) => self.err(
                                &pointer,
                                Diagnostic::new(format!(
                                    "cannot read the prompt file `{pf}` ({}): {}",
                                    path.display(),
                                    io_reason(&e)
                                ))
                                .help("`prompt_file` is relative to the plan's folder"),
                            ),
                        }
                    }
                }
                _ => {}
            }
        }
        let from_file = prompt_file.is_some();

        // Matrix.
        let mut combos = vec![Map::new()];
        let mut matrix_keys: Option<Vec<String>> = None;
        if let Some(m) = &step.matrix {
            matrix_keys = Some(m.keys().cloned().collect());
            let mut rendered = Map::new();
            let mut ok = true;
            for (k, v) in m {
                let pointer = format!("/steps/{i}/matrix/{}", ptr_seg(k));
                let v = match v {
                    Value::String(s) if super::template::has_template(s) => {
                        match self.static_render_checked(s, &pointer, i, None) {
                            Some(v) => v,
                            None => {
                                ok = false;
                                continue;
                            }
                        }
                    }
                    other => other.clone(),
                };
                rendered.insert(k.clone(), v);
            }
            if ok {
                match super::graph::expand_matrix(&rendered) {
                    Ok(c) => combos = c,
                    Err(e) => {
                        let pointer = match e.key() {
                            Some(k) => format!("/steps/{i}/matrix/{}", ptr_seg(k)),
                            None => format!("/steps/{i}/matrix"),
                        };
                        self.err(
                            &pointer,
                            Diagnostic::new(format!("step `{}`: {e}", step.id)),
                        );
                        return None;
                    }
                }
            } else {
                return None;
            }
        }

        // Templates: in the spec, in `when`, in `outputs`.
        let mut refs: Vec<String> = Vec::new();
        let mut static_leaves = Vec::new();
        let mut leaves = Vec::new();
        string_leaves(&spec, String::new(), &mut leaves);
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
            if super::template::has_template(text) && !runtime {
                static_leaves.push(Leaf { rel, pointer });
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
                    for u in self.check_text(text, &pointer, &out_scope, false) {
                        if let NameUse::Step(id) = u {
                            refs.push(id);
                        }
                    }
                }
            }
        }

        // Needs.
        let mut deps: Vec<String> = Vec::new();
        for (j, need) in step.needs.iter().enumerate() {
            let pointer = format!("/steps/{i}/needs/{j}");
            if need == &step.id {
                self.err(
                    &pointer,
                    Diagnostic::new(format!("step `{need}` needs itself")),
                );
            } else if !self.ids.contains_key(need) {
                let base = need.split('[').next().unwrap_or(need);
                let mut d =
                    Diagnostic::new(format!("`needs` names an unknown step `{need}`")).suggest(
                        super::diag::suggest(need, self.plan.steps.iter().map(|s| s.id.as_str())),
                    );
                if base != need && self.ids.contains_key(base) {
                    d = d.help(format!(
                        "name the matrix step as written, `{base}`: a step that needs it waits for all its copies"
                    ));
                }
                self.err(&pointer, d);
            } else {
                deps.push(need.clone());
            }
        }
        let mut seen = std::collections::HashSet::new();
        refs.retain(|r| seen.insert(r.clone()));
        for r in &refs {
            if !deps.contains(r) {
                deps.push(r.clone());
            }
        }
        Some(BaseStep {
            kname: kind.name(),
            kind: std::cell::RefCell::new(Some(kind)),
            spec: std::cell::RefCell::new(spec),
            prompt_file,
            deps,
            refs,
            combos,
            static_leaves,
        })
    }
}

/// The spec of a step kind, for serialization.
fn kind_spec(kind: &StepKind) -> Value {
    let v = match kind {
        StepKind::Submit(s) => serde_json::to_value(s),
        StepKind::Wait(s) => serde_json::to_value(s),
        StepKind::Fetch(s) => serde_json::to_value(s),
        StepKind::Job(s) => serde_json::to_value(s),
        StepKind::Optimize(s) => serde_json::to_value(s),
        StepKind::Status(s) | StepKind::Cancel(s) => serde_json::to_value(s),
        StepKind::List(s) => serde_json::to_value(s),
        StepKind::Balance(s) => serde_json::to_value(s),
    };
    v.unwrap_or(Value::Null)
}

/// Never used: each copy but the last clones the kind, and only the last takes it. Kept total so
/// that a mistake here shows as a plain empty `list` step rather than a panic.
fn unreachable_kind(_kname: &str) -> StepKind {
    StepKind::List(super::types::ListSpec::default())
}

/// The name of a step's kind as written (the first one set; "" for none).
fn written_kind(step: &super::types::Step) -> &'static str {
    let set = [
        step.submit.is_some(),
        step.wait.is_some(),
        step.fetch.is_some(),
        step.job.is_some(),
        step.optimize.is_some(),
        step.status.is_some(),
        step.list.is_some(),
        step.cancel.is_some(),
        step.balance.is_some(),
    ];
    set.iter()
        .position(|x| *x)
        .map_or("", |i| super::types::STEP_KINDS[i])
}

/// An I/O error's reason in words.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Where a template is: which step, its matrix keys, and (in `outputs:`) the step's own outputs.
struct Scope<'s> {
    index: usize,
    matrix_keys: Option<&'s [String]>,
    own_outputs: Option<&'s [String]>,
}

impl Checker<'_> {
    /// Checks the templates in one string: syntax, names, and a bare `{{ }}` (a warning). Returns
    /// what the names refer to.
    fn check_text(
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
                self.err(pointer, Diagnostic::new(e.to_string()));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for name in names {
            match self.check_name(&name, scope) {
                Ok(u) => out.push(u),
                Err(d) => self.err(pointer, d),
            }
        }
        out
    }

    /// Checks one dotted name a template reads.
    fn check_name(&self, name: &str, scope: &Scope<'_>) -> Result<NameUse, Diagnostic> {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or("");
        let rest: Vec<&str> = parts.collect();
        let first = rest.first().copied();
        let step = &self.plan.steps[scope.index];
        match root {
            "vars" => {
                let mut cur = &self.vars;
                let mut path = String::from("vars");
                for part in &rest {
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
                                None => d.help(format!(
                                    "declare it under `vars:` or pass `--set {}=…`",
                                    &name[5..]
                                )),
                            };
                            return Err(d);
                        }
                    }
                }
                Ok(NameUse::Static)
            }
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
                {
                    return Err(Diagnostic::new(format!("unknown field `run.{f}`"))
                        .suggest(
                            super::diag::suggest(f, super::template::RUN_FIELDS)
                                .map(|v| format!("run.{v}")),
                        )
                        .help("`run` has `id`, `started_at` and `plan`"));
                }
                Ok(NameUse::Runtime)
            }
            "steps" => self.check_step_ref(first, rest.get(1).copied(), scope),
            other => {
                if super::template::FUNCTIONS.contains(&other) {
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
                            "an output template reads the step's own outputs ({}) and vars, env, secrets, steps, matrix, run",
                            own.join(", ")
                        )));
                }
                Err(
                    Diagnostic::new(format!("unknown name `{other}` in a template"))
                        .suggest(super::diag::suggest(other, super::template::ROOTS))
                        .help("a template reads vars, env, secrets, steps, matrix and run"),
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
                    super::diag::suggest(id, self.plan.steps.iter().map(|s| s.id.as_str())),
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
        let other = &self.plan.steps[j];
        let kind = written_kind(other);
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
            let mut known: Vec<&str> = super::types::kind_outputs(kind).to_vec();
            known.extend(other.outputs.keys().map(String::as_str));
            if !known.contains(&out) {
                return Err(Diagnostic::new(format!(
                    "step `{id}` (a `{kind}` step) has no output `{out}`"
                ))
                .suggest(
                    super::diag::suggest(out, known.iter().copied())
                        .map(|o| format!("steps.{id}.{o}")),
                )
                .help(format!(
                    "its outputs: {}; declare more under its `outputs:`",
                    known.join(", ")
                )));
            }
        }
        Ok(NameUse::Step(id.to_string()))
    }

    /// The context for templates known at load: vars, env, secrets and a copy's matrix values.
    fn static_context(&mut self, matrix: Option<&Map<String, Value>>) -> minijinja::Value {
        if matrix.is_none()
            && let Some(c) = &self.base_context
        {
            return c.clone();
        }
        let mut m = Map::new();
        super::template::insert_base_context(&mut m, &self.vars, &self.env, &self.secrets);
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
    fn static_render_checked(
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
            self.err(
                pointer,
                Diagnostic::new(
                    "this value must be known before the run: it cannot read `steps` or `run`",
                ),
            );
            return None;
        }
        let ctx = self.static_context(matrix);
        match self.templates.render(text, &ctx) {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = render_message(&e);
                let d = Diagnostic::new(self.redact(&msg))
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
            "matrix" => matrix.get(first)?,
            "env" => {
                return self
                    .env
                    .get(first)
                    .map(|v| Value::String(v.clone()))
                    .filter(|_| parts.next().is_none());
            }
            "secrets" => {
                return self
                    .secrets
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

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.secrets.values() {
            if !v.is_empty() {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }

    /// A copy's spec with its load-time templates rendered, and the policy checked on every value
    /// known now.
    fn render_static(
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
                Ok(v) => *slot = v,
                Err(e) => {
                    let msg = render_message(&e);
                    let d = Diagnostic::new(self.redact(&msg))
                        .suggest(super::template::suggest_filter(&e.to_string()));
                    self.err(&leaf.pointer, d);
                }
            }
        }
        let kname = b.kname;
        let from_file = b.prompt_file.is_some();
        let errs = static_policy(kname, &spec, &self.plan.policy);
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
                        super::graph::copy_id(&self.plan.steps[i].id, combo)
                    ),
                    ..d
                }
            };
            self.err(&pointer, d);
        }
        spec
    }
}

/// The message for a template that failed to render at load.
fn render_message(e: &super::template::TemplateError) -> String {
    match e {
        super::template::TemplateError::Unknown(m) => m.clone(),
        e => format!("cannot render the template: {e}"),
    }
}

/// A policy error as a diagnostic.
pub fn policy_diagnostic(e: &crate::policy::PolicyError) -> Diagnostic {
    use crate::policy::PolicyError as P;
    let d = Diagnostic::new(e.to_string()).suggest(e.suggestion());
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
                        Diagnostic::new(format!("payment: {e}")),
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
                            Diagnostic::new(format!("`{field}` must be a number")),
                        )),
                    }
                }
            }
            if let Some(Value::String(d)) = spec.get("duration")
                && let Ok(d) = crate::duration::parse_duration(d)
                && let Err(e) = p::check_duration(d, policy)
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
        }
        "balance" => {
            if let Some(m) = known(spec.get("min"))
                && let Err(e) = amount(m)
            {
                out.push(("/min".to_string(), Diagnostic::new(format!("min: {e}"))));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a plan written in a temporary folder (with extra files beside it).
    fn load_text(
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
        check(source, plan, content_hash(yaml.as_bytes()), &path, options)
    }

    fn messages(r: Result<CheckedPlan, Vec<Diagnostic>>) -> Vec<String> {
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

    const FEEDBACK: &str = r#"
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
        let (spend, runtime) = crate::policy::spend_per_wallet(&p);
        assert_eq!(spend["trading-wallet"], Money::from_int(504));
        assert!(runtime.is_empty());
    }

    #[test]
    fn renders_at_run_time() {
        let p = load_text(FEEDBACK, &[], &LoadOptions::default()).unwrap();
        let mut outputs = StepOutputs::new();
        let job = "0123456789abcdef0123456789abcdef";
        outputs.insert("analyze".into(), serde_json::json!({"job_id": job}));
        let run = RunInfo::default();
        match p.render(&p.steps[1], &outputs, &run).unwrap() {
            RenderedStep::Wait {
                job: j, timeout, ..
            } => {
                assert_eq!(j.as_str(), job);
                assert_eq!(timeout, DEFAULT_TIMEOUT);
            }
            other => panic!("{other:?}"),
        }
        outputs.insert("done".into(), serde_json::json!({"output": "great"}));
        match p.render(&p.steps[3], &outputs, &run).unwrap() {
            RenderedStep::Job { request, .. } => {
                assert_eq!(request.prompt, "Summarize (casual): great");
                assert_eq!(request.payment, Money::from_int(2));
            }
            other => panic!("{other:?}"),
        }
        // A bad job id from a step is a run-time error at the value.
        outputs.insert("analyze".into(), serde_json::json!({"job_id": "nope"}));
        let e = p.render(&p.steps[1], &outputs, &run).unwrap_err();
        assert!(e.message.contains("not a job id"), "{e}");
        assert_eq!(e.location.unwrap().line, 16);
    }

    #[test]
    fn overrides() {
        let opts = LoadOptions {
            set: vec![
                ("pay".into(), "700".into()),
                ("extra.deep".into(), "x".into()),
            ],
            ..Default::default()
        };
        let p = load_text(FEEDBACK, &[], &opts).unwrap();
        assert_eq!(p.steps[0].spec["payment"], serde_json::json!(700));
        assert_eq!(p.vars["extra"]["deep"], "x");
        let opts = LoadOptions {
            set: vec![("wallet.x".into(), "1".into())],
            ..Default::default()
        };
        let m = messages(load_text(FEEDBACK, &[], &opts));
        assert!(m[0].contains("`vars.wallet` is not a mapping"), "{m:?}");
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
                .any(|x| x.starts_with("8: unknown job type `inferense`")),
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

    #[test]
    fn cycles_and_duplicates() {
        let yaml = r#"
version: 1
name: t
steps:
  - id: a
    needs: [c]
    list: {}
  - id: b
    status: {job: "${{ steps.a.jobs }}"}
  - id: c
    needs: [b]
    list: {}
"#;
        let m = messages(load_text(yaml, &[], &LoadOptions::default()));
        assert_eq!(m, vec!["5: the steps form a cycle: a → b → c → a []"]);
        let yaml =
            "version: 1\nname: t\nsteps:\n  - id: a\n    list: {}\n  - id: a\n    list: {}\n";
        let m = messages(load_text(yaml, &[], &LoadOptions::default()));
        assert_eq!(
            m,
            vec!["6: duplicate step id `a` (first used on line 4) []"]
        );
    }

    #[test]
    fn prompt_files_secrets_and_warnings() {
        let yaml = r#"
version: 1
name: t
secrets:
  KEY: {env: T_KEY}
vars: {topic: fish}
steps:
  - id: a
    submit:
      job_type: inference
      wallet: w
      payment: 1
      prompt_file: p.md
      endpoint: "http://x/?k=${{ secrets.KEY }}"
      model: "{{ vars.topic }}"
"#;
        let opts = LoadOptions {
            environment: Some([("T_KEY".to_string(), "s3cr3t".to_string())].into()),
            ..Default::default()
        };
        let p = load_text(yaml, &[("p.md", "About ${{ vars.topic }}.\n")], &opts).unwrap();
        assert_eq!(p.steps[0].spec["prompt"], "About fish.\n");
        assert_eq!(
            p.redact(p.steps[0].spec["endpoint"].as_str().unwrap()),
            "http://x/?k=***"
        );
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].location.as_ref().unwrap().line, 15);
        let m = messages(load_text(yaml, &[], &opts));
        assert!(
            m[0].starts_with("13: cannot read the prompt file `p.md`"),
            "{m:?}"
        );
        let m = messages(load_text(
            yaml,
            &[("p.md", "x")],
            &LoadOptions {
                environment: Some(Default::default()),
                ..Default::default()
            },
        ));
        assert_eq!(
            m,
            vec!["5: secret `KEY`: the environment variable `T_KEY` is not set []"]
        );
    }

    #[test]
    fn matrix_pairing_and_outputs() {
        let yaml = r#"
version: 1
name: t
steps:
  - id: ask
    job: {job_type: ollama, wallet: w, payment: 1, model: "${{ matrix.model }}", prompt: hi}
    matrix: {model: [llama2, mistral]}
    outputs:
      words: "${{ output | wordcount }}"
  - id: judge
    job: {job_type: inference, wallet: w, payment: 1, prompt: "${{ steps.ask.words }}"}
    matrix: {model: [llama2, mistral]}
  - id: all
    job: {job_type: inference, wallet: w, payment: 1, prompt: "${{ steps.ask | map(attribute='words') | join(',') }}"}
"#;
        let p = load_text(yaml, &[], &LoadOptions::default()).unwrap();
        let judge = p.step("judge[model=mistral]").unwrap();
        assert_eq!(judge.needs, vec!["ask[model=mistral]"]);
        assert_eq!(p.step("all").unwrap().needs.len(), 2);
        let run = RunInfo::default();
        let own: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"output": "a b c"})).unwrap();
        let outs = p
            .render_outputs(p.step("ask[model=llama2]").unwrap(), &own, &run)
            .unwrap();
        assert_eq!(outs["words"], serde_json::json!(3));
        let mut so = StepOutputs::new();
        so.insert("ask[model=llama2]".into(), serde_json::json!({"words": 3}));
        so.insert("ask[model=mistral]".into(), serde_json::json!({"words": 5}));
        match p.render(judge, &so, &run).unwrap() {
            RenderedStep::Job { request, .. } => assert_eq!(request.prompt, "5"),
            o => panic!("{o:?}"),
        }
        match p.render(p.step("all").unwrap(), &so, &run).unwrap() {
            RenderedStep::Job { request, .. } => assert_eq!(request.prompt, "3,5"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn when_conditions() {
        let yaml = r#"
version: 1
name: t
steps:
  - id: b
    balance: {wallet: w}
  - id: s
    when: "${{ steps.b.balance > 100 }}"
    list: {}
"#;
        let p = load_text(yaml, &[], &LoadOptions::default()).unwrap();
        let s = p.step("s").unwrap();
        assert_eq!(s.needs, vec!["b"]);
        let mut o = StepOutputs::new();
        o.insert("b".into(), serde_json::json!({"balance": 150}));
        assert!(p.should_run(s, &o, &RunInfo::default()).unwrap());
        o.insert("b".into(), serde_json::json!({"balance": 50}));
        assert!(!p.should_run(s, &o, &RunInfo::default()).unwrap());
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
    submit: {job_type: "${{ secrets.KIND }}", wallet: w, payment: 1, prompt: p}
"#;
        let opts = LoadOptions {
            environment: Some([("T_KIND".to_string(), "hunter2".to_string())].into()),
            ..Default::default()
        };
        let m = messages(load_text(yaml, &[], &opts));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("unknown job type `***`"), "{m:?}");
        assert!(!m[0].contains("hunter2"));
    }

    #[test]
    fn yaml_scalars() {
        assert_eq!(yaml_scalar("3"), serde_json::json!(3));
        assert_eq!(yaml_scalar("2.5"), serde_json::json!(2.5));
        assert_eq!(yaml_scalar("true"), serde_json::json!(true));
        assert_eq!(yaml_scalar("'3'"), serde_json::json!("3"));
        assert_eq!(yaml_scalar("hello world"), serde_json::json!("hello world"));
        assert_eq!(yaml_scalar("1e"), serde_json::json!("1e"));
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
}
