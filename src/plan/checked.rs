//! The checked plan: the model that comes out of [`super::check::load`] when every load-time check
//! passed, and the only thing the executor, the dry run and the reports read. It lives apart from the
//! checks so that its readers see the shape of a plan ready to run (matrix-expanded, topologically
//! ordered steps, each with its level, effective timeout and retry policy, and the requests a step
//! renders to) without the machinery that builds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::diag::{Diagnostic, Location};
use super::source::{ParsedFile, Source};
use super::template::Templates;
use super::types::{
    BalanceSpec, FetchSpec, JobRef, JobSpec, ListSpec, NotifySpec, OnTimeout, OptimizeSpec, Plan,
    RetrySpec, SubmitSpec, WaitSpec, When,
};
use crate::api::JobId;
use crate::money::Money;

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
    /// POST a message to a webhook.
    Notify(NotifySpec),
    /// Run a sub-plan's steps as a group ([`super::uses`]): the path as written. The planned step
    /// of this kind ends the group: it waits for all of the group's steps and gives the sub-plan's
    /// `outputs:` as its own.
    Uses(String),
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
            StepKind::Notify(_) => "notify",
            StepKind::Uses(_) => "uses",
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
    /// Null once a run has kept it as text ([`CheckedPlan::shed_parse`]): read it with
    /// [`PlannedStep::spec`].
    pub(super) spec: Value,
    /// The spec as text, once a run has shed the tree (`None` until then).
    pub(super) spec_text: Option<crate::model::JsonText>,
    /// The prompt file the prompt came from, as written (errors in it point at `prompt_file`).
    pub prompt_file: Option<String>,
    /// What `steps.X` means to this step's templates, by the referenced id as written.
    pub views: BTreeMap<String, StepView>,
    /// The sub-plan this step comes from (`uses:`), whose vars, inputs and file its templates and
    /// run-time errors read; `None` for a step of the plan itself. A `uses` step has its sub-plan's:
    /// its outputs are templates of that file.
    pub group: Option<std::sync::Arc<super::uses::Included>>,
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

pub use crate::model::request::{JobRequest, OptimizeRequest};

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
    /// POST a message to a webhook.
    Notify {
        /// Where to (may hold a secret: shown redacted).
        url: String,
        /// The headers, names and values (values may hold secrets).
        headers: Vec<(String, String)>,
        /// The JSON body: `{"text": …}` or the step's `body`.
        body: Value,
    },
    /// The end of a sub-plan's group: nothing is sent; its outputs are the sub-plan's `outputs:`.
    Uses {
        /// The sub-plan, as written.
        path: String,
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
    /// How the run goes so far: `running`, `failed` or `cancelled` (see [`super::status`]).
    pub status: String,
    /// The steps that failed so far, in the order they ended.
    pub failed_steps: Vec<String>,
}

/// Outputs of finished steps, by expanded id; each value is a JSON object of named outputs.
pub type StepOutputs = BTreeMap<String, Value>;

/// A plan that passed every load-time check. Only [`super::check::load`] makes one.
#[derive(Clone, Debug)]
pub struct CheckedPlan {
    /// The plan file as the user named it.
    pub path: PathBuf,
    /// The plan's folder (prompt files and `save:` paths are relative to it).
    pub dir: PathBuf,
    /// SHA-256 of the file's bytes, hex; for a plan with `uses:` steps, the SHA-256 of that and of
    /// every sub-plan's ([`super::uses::plan_hash`]), so that a changed sub-plan changes it.
    pub content_hash: String,
    /// The plan as parsed, less its `steps`: the checked [`CheckedPlan::steps`] replace them, and
    /// the load drops them once checked (they were a third of a large plan's memory in a run).
    pub plan: Plan,
    /// Whether a step of the plan itself says `secrets_in_payload` (read before its steps go).
    pub own_secrets_in_payload: bool,
    /// `vars` after `--vars` and `--set`.
    pub vars: Map<String, Value>,
    /// Each `inputs:` value, checked against its type (an amount as its exact decimal text).
    pub inputs: Map<String, Value>,
    /// The environment variables the plan lists, with their values (missing ones are absent).
    pub env: BTreeMap<String, String>,
    /// Secret values by name. Never print these; use [`CheckedPlan::redact`].
    pub secrets: BTreeMap<String, String>,
    /// The steps, matrix-expanded, in a topological order (by level, then plan order).
    pub steps: Vec<PlannedStep>,
    /// Warnings that do not stop the plan (e.g. a bare `{{ }}` that is probably a mistake).
    pub warnings: Vec<Diagnostic>,
    /// The parsed file, for placing run-time errors ([`CheckedPlan::shed_parse`] drops the parse
    /// and keeps the text).
    pub source: ParsedFile,
    /// The plan's template environment.
    pub templates: Templates,
    /// Each step's position in `steps`, by (expanded) id.
    pub step_index: std::collections::HashMap<String, usize>,
    /// The files the load read (the plan file first, then its `--vars` files and prompt files),
    /// never a secret file: what a resume on another host needs besides the journal.
    pub files_read: Vec<super::files_read::FileRead>,
    /// The sub-plans its `uses:` steps read, nested ones too, each once, in the order read. The
    /// `content_hash` covers them all.
    pub included: Vec<super::uses::IncludedFile>,
}

/// What [`CheckedPlan::shed_parse`] took out of a plan, to be freed (on a thread, for a large plan).
pub struct Shed {
    /// The plan file's parse, if it was held.
    pub parse: Option<Source>,
    /// The steps' specs as trees.
    pub specs: Vec<Value>,
}

impl PlannedStep {
    /// The kind's spec ([`PlannedStep::spec`'s field): the tree, or parsed from its text once a run
    /// has shed the tree.
    pub fn spec(&self) -> std::borrow::Cow<'_, Value> {
        match &self.spec_text {
            Some(t) => std::borrow::Cow::Owned(t.to_value()),
            None => std::borrow::Cow::Borrowed(&self.spec),
        }
    }

    /// The step's `when` as written: a `uses` step's is kept with its group, whose steps it gates
    /// ([`super::uses::Included::when`]).
    pub fn written_when(&self) -> Option<&When> {
        match (&self.kind, &self.group) {
            (StepKind::Uses(_), Some(g)) => g.when.as_ref().map(|(w, _)| w),
            _ => self.when.as_ref(),
        }
    }
}

impl CheckedPlan {
    /// The step with this (expanded) id.
    pub fn step(&self, id: &str) -> Option<&PlannedStep> {
        self.step_index.get(id).and_then(|&i| self.steps.get(i))
    }

    /// The plan's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Drops the parsed plan file (its JSON tree and positions), keeping its name and text: a run
    /// needs a position only for a run-time error, and the text is parsed again then
    /// ([`ParsedFile`]). The sub-plans' parses are kept (they are shared by their steps, and small
    /// beside a large plan). Each step's spec is kept as text, parsed when the step is rendered: as
    /// a tree it is several times its text (~8 MB of a 10,000-step run), and a run renders a step
    /// once (`validate` and `plan`, which render every step, keep the trees). Returns what is
    /// dropped, for the caller to free.
    pub fn shed_parse(&mut self) -> Shed {
        let specs = self
            .steps
            .iter_mut()
            .filter(|s| s.spec_text.is_none())
            .map(|s| {
                s.spec_text = Some(crate::model::JsonText::of(&s.spec));
                std::mem::take(&mut s.spec)
            })
            .collect();
        Shed {
            parse: self.source.shed(),
            specs,
        }
    }

    /// Whether a step lets a value computed from a secret into its payload (`secrets_in_payload`).
    pub fn secrets_in_payload(&self) -> bool {
        self.own_secrets_in_payload
            || self
                .steps
                .iter()
                .any(|s| s.group.as_ref().is_some_and(|g| g.secrets_in_payload))
    }
}

/// The timeout of a step that sets none, when the plan's `defaults` set none either.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
