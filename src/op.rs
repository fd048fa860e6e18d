//! The operator skill's JSON interface (`aitbc-ai-operator` v1.1): its input JSON ([`OpInput`]) is run
//! against a [`Coordinator`] and answered with its output JSON ([`OpOutput`]).
//!
//! The job commands (`aitbc-flow job …`) build an [`OpInput`] from their flags and print the same
//! [`OpOutput`], so the command line, `aitbc-flow op` and the executor's per-step report all say the
//! same thing in the same words. The client rules ([`crate::client::rules`]) are applied before
//! anything is sent; every failure is still an [`OpOutput`] (`validation_status: "failed"`, with
//! `issues` and `recommendations`) together with an exit code from [`crate::exit`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use crate::api::{
    AllocateRequest, Allocation, JOB_TYPES, JobId, JobList, JobResult, JobState, JobView,
    ListQuery, WalletBalance, verify_receipt,
};
use crate::client::rules::{self, OptimizeParams, RuleError, SubmitParams};
use crate::client::{ClientError, Coordinator};
use crate::exit;
use crate::money::Money;

/// The six operations of the skill, plus `balance` (our extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Submit a job (and with `wait`, wait for it and fetch its result).
    Submit,
    /// Read a job's status.
    Status,
    /// Fetch a finished job's result and verify its receipt.
    Results,
    /// List recent jobs.
    List,
    /// Ask for a resource allocation.
    Optimize,
    /// Cancel a job.
    Cancel,
    /// Read a wallet's balance.
    Balance,
}

impl Operation {
    /// The name as the skill writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Submit => "submit",
            Operation::Status => "status",
            Operation::Results => "results",
            Operation::List => "list",
            Operation::Optimize => "optimize",
            Operation::Cancel => "cancel",
            Operation::Balance => "balance",
        }
    }
}

/// A job's status in the skill's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpStatus {
    /// Accepted, waiting for a provider (QUEUED).
    Submitted,
    /// A provider is running it (RUNNING).
    Processing,
    /// Finished with a result.
    Completed,
    /// Failed, expired, or completed with a failed result.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl OpStatus {
    /// The skill's status of a job as the coordinator shows it.
    pub fn of(view: &JobView) -> OpStatus {
        match view.state {
            JobState::Queued => OpStatus::Submitted,
            JobState::Running => OpStatus::Processing,
            JobState::Completed if view.succeeded() => OpStatus::Completed,
            JobState::Completed | JobState::Failed | JobState::Expired => OpStatus::Failed,
            JobState::Canceled => OpStatus::Cancelled,
        }
    }
    /// The name as the skill writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::Submitted => "submitted",
            OpStatus::Processing => "processing",
            OpStatus::Completed => "completed",
            OpStatus::Failed => "failed",
            OpStatus::Cancelled => "cancelled",
        }
    }
}

/// `success | partial | failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationStatus {
    /// Everything checked out.
    Success,
    /// It worked, with issues worth reading.
    Partial,
    /// It did not work.
    Failed,
}

/// The skill's input JSON. Unknown fields are tolerated; numbers may be given as strings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct OpInput {
    /// What to do.
    pub operation: Option<Operation>,
    /// The paying wallet (submit), the wallet to read (balance), reported (optimize).
    #[serde(default)]
    pub wallet: Option<String>,
    /// One of the six job types (submit; a filter for list).
    #[serde(default)]
    pub job_type: Option<String>,
    /// The prompt (submit).
    #[serde(default)]
    pub prompt: Option<String>,
    /// The payment in AITBC (submit).
    #[serde(default)]
    pub payment: Option<Money>,
    /// The job (status, results, cancel).
    #[serde(default)]
    pub job_id: Option<String>,
    /// The agent (optimize).
    #[serde(default)]
    pub agent_id: Option<String>,
    /// CPU cores (optimize).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub cpu: Option<f64>,
    /// Memory in GB (optimize).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub memory: Option<f64>,
    /// GPUs (optimize).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub gpu: Option<f64>,
    /// Seconds (or `"1h"`) the resources are needed (optimize).
    #[serde(default, deserialize_with = "lenient_duration")]
    pub duration: Option<Duration>,
    /// Page size (list).
    #[serde(default)]
    pub limit: Option<u64>,
    /// The model (submit).
    #[serde(default)]
    pub model: Option<String>,
    /// A GPU provider (submit).
    #[serde(default)]
    pub provider_id: Option<String>,
    /// A custom Ollama endpoint (submit).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A JSON-lines or YAML list of prompts to submit (submit).
    #[serde(default)]
    pub batch_file: Option<PathBuf>,
    /// The most batch submits in flight at once (submit; default 4).
    #[serde(default)]
    pub parallel: Option<usize>,
    /// Extension: a status filter for list, in the skill's words or the coordinator's.
    #[serde(default)]
    pub status: Option<String>,
    /// Extension: wait for the job and fetch its result (submit).
    #[serde(default)]
    pub wait: Option<bool>,
    /// Extension: how long to wait (default 300 s).
    #[serde(default, deserialize_with = "lenient_duration")]
    pub timeout: Option<Duration>,
    /// Extension: the optimization target (default efficiency).
    #[serde(default)]
    pub target: Option<String>,
    /// Extension: the job type the resources are for (optimize; default inference).
    #[serde(default)]
    pub task_type: Option<String>,
    /// Extension: the currency; only AITBC (or the skill's "AIT") is accepted.
    #[serde(default)]
    pub currency: Option<String>,
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a number"))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a number, found {other}"
        ))),
    }
}

fn lenient_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| Some(Duration::from_secs_f64(f)))
            .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not a duration"))),
        Some(Value::String(s)) => crate::duration::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected seconds or a duration such as \"300s\", found {other}"
        ))),
    }
}

impl OpInput {
    /// Parses the input JSON; the error names the field that did not fit.
    pub fn from_json(text: &str) -> Result<OpInput, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let input: OpInput = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." || path.is_empty() {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })?;
        if input.operation.is_none() {
            return Err(
                "`operation` is required: one of submit, status, results, list, optimize, cancel, balance"
                    .into(),
            );
        }
        Ok(input)
    }
}

/// The skill's output JSON, field for field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpOutput {
    /// One sentence saying what happened.
    pub summary: String,
    /// The operation.
    pub operation: Operation,
    /// The job (submit, status, results, cancel).
    pub job_id: Option<String>,
    /// The job type.
    pub job_type: Option<String>,
    /// The job's status in the skill's words.
    pub status: Option<OpStatus>,
    /// 0 queued, 50 running, 100 final.
    pub progress: Option<u8>,
    /// Seconds still expected (0 once final).
    pub estimated_time: Option<f64>,
    /// The wallet (submit, optimize, balance).
    pub wallet: Option<String>,
    /// The payment in AITBC (submit).
    pub payment: Option<Money>,
    /// The job's output as text (results; the balance for balance).
    pub result: Option<String>,
    /// One entry per job (list; per batch item for a batch submit).
    pub jobs: Option<Vec<Value>>,
    /// What was granted (optimize).
    pub resource_allocation: Option<Value>,
    /// Measurements: execution time, tokens, receipt check, cost estimate, …
    pub performance_metrics: Option<Value>,
    /// What went wrong or looks wrong.
    pub issues: Vec<String>,
    /// What to do next.
    pub recommendations: Vec<String>,
    /// 1.0 when everything checked out.
    pub confidence: f64,
    /// Seconds the operation took.
    pub execution_time: f64,
    /// `success | partial | failed`.
    pub validation_status: ValidationStatus,
}

/// Typical run times per job type, in seconds, for `estimated_time`.
pub fn typical_seconds(job_type: &str) -> f64 {
    match job_type {
        "training" => 300.0,
        "multimodal" => 45.0,
        "ollama" => 30.0,
        "streaming" => 20.0,
        "monitoring" => 5.0,
        _ => 10.0,
    }
}

fn progress_of(state: JobState) -> u8 {
    match state {
        JobState::Queued => 0,
        JobState::Running => 50,
        _ => 100,
    }
}

/// The output text of a result: its `output` when that is a string, the compact JSON otherwise.
fn result_text(result: &Value) -> String {
    match result.get("output") {
        Some(Value::String(s)) => s.clone(),
        _ => result.to_string(),
    }
}

/// One line of a job list.
fn job_entry(v: &JobView) -> Value {
    json!({
        "job_id": v.job_id.as_str(),
        "job_type": v.job_type(),
        "status": OpStatus::of(v).as_str(),
        "state": v.state.as_str(),
        "payment_status": v.payment_status,
        "requested_at": v.requested_at,
    })
}

/// Issues every job view may carry: a skipped payment, a failed result, an expiry.
fn view_issues(v: &JobView, paid: bool) -> Vec<String> {
    let mut issues = Vec::new();
    if paid && v.payment_status.as_deref() == Some("skipped") {
        issues.push(
            "the service skipped the payment (payment_status: skipped): the job runs unpaid".into(),
        );
    }
    if v.state == JobState::Completed && !v.succeeded() {
        let why = v
            .result
            .as_ref()
            .and_then(|r| r.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        issues.push(format!("the job completed with a failed result: {why}"));
    }
    if matches!(v.state, JobState::Failed | JobState::Expired) {
        let why = v.error.as_deref().unwrap_or("no reason given");
        issues.push(format!("the job ended {}: {why}", v.state));
    }
    issues
}

impl OpOutput {
    /// An output with every optional field null.
    pub fn new(operation: Operation, summary: impl Into<String>) -> OpOutput {
        OpOutput {
            summary: summary.into(),
            operation,
            job_id: None,
            job_type: None,
            status: None,
            progress: None,
            estimated_time: None,
            wallet: None,
            payment: None,
            result: None,
            jobs: None,
            resource_allocation: None,
            performance_metrics: None,
            issues: Vec::new(),
            recommendations: Vec::new(),
            confidence: 1.0,
            execution_time: 0.0,
            validation_status: ValidationStatus::Success,
        }
    }

    /// Sets `execution_time` from a duration (rounded to milliseconds).
    pub fn with_execution_time(mut self, d: Duration) -> OpOutput {
        self.execution_time = (d.as_secs_f64() * 1000.0).round() / 1000.0;
        self
    }

    /// Marks the output `partial` when it carries issues but is otherwise a success.
    fn settle(mut self) -> OpOutput {
        if self.validation_status == ValidationStatus::Success && !self.issues.is_empty() {
            self.validation_status = ValidationStatus::Partial;
            self.confidence = 0.8;
        }
        self
    }

    /// Fills the job fields from a view.
    fn with_view(mut self, v: &JobView) -> OpOutput {
        self.job_id = Some(v.job_id.to_string());
        self.job_type = v.job_type().map(str::to_string);
        self.status = Some(OpStatus::of(v));
        self.progress = Some(progress_of(v.state));
        self.estimated_time = Some(if v.state.is_final() {
            0.0
        } else {
            typical_seconds(v.job_type().unwrap_or(""))
        });
        self
    }

    /// After a submit: the job as accepted (`created` is false when an idempotency key found it).
    pub fn submitted(v: &JobView, wallet: &str, payment: Money, created: bool) -> OpOutput {
        let kind = v.job_type().unwrap_or("AI");
        let verb = if created {
            "submitted"
        } else {
            "already submitted (same idempotency key)"
        };
        let mut out = OpOutput::new(
            Operation::Submit,
            format!(
                "{} job {} {verb}: {payment} AITBC from {wallet}",
                capitalize(kind),
                v.job_id
            ),
        )
        .with_view(v);
        out.wallet = Some(wallet.to_string());
        out.payment = Some(payment);
        out.issues = view_issues(v, true);
        if payment >= Money::from_int(10) && v.state == JobState::Queued {
            out.recommendations.push(
                "A job paid 10 AITBC or more may wait in QUEUED until a bonded provider takes it: \
                 choose one with --provider-id or lower the payment if it does not start"
                    .into(),
            );
        }
        out.recommendations.push(format!(
            "Monitor progress with `aitbc-flow job status {}`",
            v.job_id
        ));
        out.recommendations.push(format!(
            "Fetch the result with `aitbc-flow job results {}` once it completes",
            v.job_id
        ));
        out.settle()
    }

    /// After a status read.
    pub fn status(v: &JobView) -> OpOutput {
        let status = OpStatus::of(v);
        let mut out = OpOutput::new(
            Operation::Status,
            format!("Job {} is {} ({})", v.job_id, status.as_str(), v.state),
        )
        .with_view(v);
        out.issues = view_issues(v, false);
        out.performance_metrics = Some(json!({
            "state": v.state.as_str(),
            "payment_status": v.payment_status,
            "assigned_miner_id": v.assigned_miner_id,
            "requested_at": v.requested_at,
            "expires_at": v.expires_at,
        }));
        match status {
            OpStatus::Submitted | OpStatus::Processing => out.recommendations.push(format!(
                "Check again shortly, or wait with `aitbc-flow job submit … --wait`; fetch the result with `aitbc-flow job results {}` once it completes",
                v.job_id
            )),
            OpStatus::Completed => out.recommendations.push(format!(
                "Fetch the result with `aitbc-flow job results {}`",
                v.job_id
            )),
            _ => {}
        }
        if status == OpStatus::Failed {
            out.validation_status = ValidationStatus::Failed;
        }
        out.settle()
    }

    /// After fetching a result. `view` is the job as read alongside (for its type).
    pub fn results(id: &JobId, view: Option<&JobView>, r: &JobResult) -> OpOutput {
        let failed = crate::api::result_failed(Some(&r.result));
        let mut out = OpOutput::new(
            Operation::Results,
            if failed {
                format!("Job {id} completed with a failed result")
            } else {
                format!("Results retrieved for job {id}")
            },
        );
        if let Some(v) = view {
            out = out.with_view(v);
        }
        out.job_id = Some(id.to_string());
        out.status = Some(if failed {
            OpStatus::Failed
        } else {
            OpStatus::Completed
        });
        out.progress = Some(100);
        out.estimated_time = Some(0.0);
        out.result = Some(result_text(&r.result));
        let mut metrics = Map::new();
        for key in [
            "execution_time",
            "tokens_processed",
            "gpu_used",
            "model",
            "status",
        ] {
            if let Some(v) = r.result.get(key) {
                metrics.insert(key.into(), v.clone());
            }
        }
        match &r.receipt {
            Some(receipt) => {
                let check = verify_receipt(receipt);
                metrics.insert("receipt_verified".into(), Value::Bool(check.is_ok()));
                for key in ["receipt_id", "price", "units", "unit_type"] {
                    if let Some(v) = receipt.get(key) {
                        metrics.insert(key.into(), v.clone());
                    }
                }
                if let Err(e) = check {
                    out.issues.push(format!("receipt not verified: {e}"));
                    out.recommendations.push(
                        "Do not rely on this result until the provider's receipt verifies".into(),
                    );
                }
            }
            None => {
                metrics.insert("receipt_verified".into(), Value::Bool(false));
                out.issues
                    .push("the result came without a receipt: nothing to verify".into());
            }
        }
        out.performance_metrics = Some(Value::Object(metrics));
        if failed {
            let why = r
                .result
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            out.issues.insert(0, format!("the job failed: {why}"));
            out.validation_status = ValidationStatus::Failed;
            out.confidence = 1.0;
            out.recommendations
                .push("Check the job type and model are supported by the providers".into());
        }
        out.settle()
    }

    /// After a list.
    pub fn list(l: &JobList) -> OpOutput {
        let n = l.items.len();
        let mut out = OpOutput::new(
            Operation::List,
            format!("{n} job{} listed", if n == 1 { "" } else { "s" }),
        );
        out.jobs = Some(l.items.iter().map(job_entry).collect());
        out
    }

    /// After a cancel.
    pub fn cancelled(v: &JobView) -> OpOutput {
        let mut out =
            OpOutput::new(Operation::Cancel, format!("Job {} cancelled", v.job_id)).with_view(v);
        out.performance_metrics = Some(json!({"payment_status": v.payment_status}));
        if v.payment_status.as_deref() == Some("escrowed") {
            out.issues.push(
                "the payment is still escrowed: the service did not refund it on cancel".into(),
            );
            out.recommendations.push(
                "Ask for a refund (POST /v1/payments/{payment_id}/refund); the runner does this in plans"
                    .into(),
            );
        }
        out.settle()
    }

    /// After an allocation: what was granted against what was asked, and a cost estimate when one
    /// could be made (cheapest GPU offer × GPUs × duration).
    pub fn optimized(
        asked: &AllocateRequest,
        granted: &Allocation,
        wallet: Option<&str>,
        estimated_cost: Option<Money>,
        duration: Option<Duration>,
    ) -> OpOutput {
        let mut out = OpOutput::new(
            Operation::Optimize,
            format!(
                "Resources allocated to agent {} ({}, {})",
                granted.agent_id, granted.allocation_id, granted.optimization_target
            ),
        );
        out.wallet = wallet.map(str::to_string);
        out.resource_allocation = serde_json::to_value(granted).ok();
        let t = &asked.task_requirements;
        for (what, want, got) in [
            ("cpu cores", t.cpu_cores, granted.cpu_cores),
            ("memory GB", t.memory_gb, granted.memory_gb),
            ("GPUs", t.gpu_count, granted.gpu_count),
        ] {
            if got < want {
                out.issues
                    .push(format!("asked for {want} {what}, granted {got}"));
            }
        }
        if !out.issues.is_empty() {
            out.recommendations.push(
                "The service sizes allocations from the task type: plan for what was granted, or ask again with another target"
                    .into(),
            );
        }
        let mut metrics = Map::new();
        metrics.insert(
            "asked".into(),
            serde_json::to_value(t).unwrap_or(Value::Null),
        );
        if let Some(d) = duration {
            metrics.insert("duration_seconds".into(), json!(d.as_secs_f64()));
            out.estimated_time = Some(d.as_secs_f64());
        }
        match estimated_cost {
            Some(c) => {
                metrics.insert("estimated_cost".into(), json!(c));
            }
            None if duration.is_some() && t.gpu_count > 0.0 => out
                .issues
                .push("no cost estimate: no GPU offers were available".into()),
            None => {}
        }
        out.performance_metrics = Some(Value::Object(metrics));
        out.settle()
    }

    /// After a balance read.
    pub fn balance(b: &WalletBalance) -> OpOutput {
        let mut out = OpOutput::new(
            Operation::Balance,
            format!("Wallet {} holds {} AITBC", b.wallet_id, b.balance),
        );
        out.wallet = Some(b.wallet_id.clone());
        out.result = Some(b.balance.to_string());
        out.performance_metrics = Some(json!({
            "balance": b.balance,
            "address": b.address,
            "chain_id": b.chain_id,
        }));
        out
    }

    /// A failure, with the issues and recommendations the skill asks for.
    pub fn failed(operation: Operation, error: &OpError) -> OpOutput {
        let mut out = OpOutput::new(operation, error.summary(operation));
        out.validation_status = ValidationStatus::Failed;
        out.confidence = 1.0;
        out.issues = error.issues();
        out.recommendations = error.recommendations();
        if let OpError::WaitTimeout { last, .. } | OpError::JobEnded { last, .. } = error {
            out = out.with_view(last);
        }
        if let OpError::JobEnded { last, .. } = error {
            out.issues.extend(view_issues(last, false));
            out.issues.dedup();
        }
        out
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    /// The input does not say enough, or says it wrongly.
    #[error("{0}")]
    Input(String),
    /// Client rules broken before anything was sent.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Rules(Vec<RuleError>),
    /// The wallet's balance could not be read, so nothing was submitted.
    #[error("cannot check the balance of wallet {wallet}: {error}")]
    BalanceUnknown {
        /// The wallet.
        wallet: String,
        /// Why.
        error: Box<ClientError>,
    },
    /// The coordinator refused or could not be reached.
    #[error("{0}")]
    Client(Box<ClientError>),
    /// The job did not finish in time.
    #[error("job {} did not finish within {}s (last state {})", .last.job_id, .after.as_secs(), .last.state)]
    WaitTimeout {
        /// The job as last seen.
        last: Box<JobView>,
        /// The timeout.
        after: Duration,
    },
    /// The job ended without a result (FAILED, CANCELED, EXPIRED).
    #[error("job {} ended {}", .last.job_id, .last.state)]
    JobEnded {
        /// The job as last seen.
        last: Box<JobView>,
    },
}

impl From<ClientError> for OpError {
    fn from(e: ClientError) -> OpError {
        OpError::Client(Box::new(e))
    }
}

impl OpError {
    /// The exit code for a command that stops here.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpError::Input(_) => exit::INVALID,
            OpError::Rules(rules) => {
                if rules
                    .iter()
                    .all(|r| matches!(r, RuleError::InsufficientBalance { .. }))
                {
                    exit::STEP_FAILED
                } else {
                    exit::INVALID
                }
            }
            OpError::BalanceUnknown { error, .. } | OpError::Client(error) => error.exit_code(),
            OpError::WaitTimeout { .. } => exit::TIMEOUT,
            OpError::JobEnded { .. } => exit::STEP_FAILED,
        }
    }

    fn summary(&self, op: Operation) -> String {
        let what = op.as_str();
        match self {
            OpError::Input(_) => format!("Invalid {what} request"),
            OpError::Rules(rules) => {
                if let Some(RuleError::InsufficientBalance { needed, .. }) = rules
                    .iter()
                    .find(|r| matches!(r, RuleError::InsufficientBalance { .. }))
                {
                    format!("Insufficient balance: the job requires {needed} AITBC")
                } else if rules
                    .iter()
                    .any(|r| matches!(r, RuleError::UnknownJobType { .. }))
                {
                    "Invalid job type".to_string()
                } else {
                    format!("The {what} request breaks the client rules")
                }
            }
            OpError::BalanceUnknown { .. } => {
                "Balance check failed: nothing was submitted".to_string()
            }
            OpError::Client(e) => match &**e {
                ClientError::Unavailable { .. } => "Service unavailable".into(),
                ClientError::Timeout { .. } => "Request timed out".into(),
                ClientError::RateLimited { .. } => "Rate limited by the coordinator".into(),
                ClientError::Auth { .. } => "Authentication refused".into(),
                ClientError::NotFound { .. } => "Job not found".into(),
                ClientError::NotReady { .. } => "The job has no result yet".into(),
                ClientError::Conflict { .. } => format!("The job cannot be {what}ed now"),
                ClientError::InsufficientBalance { needed, .. } => {
                    format!("Insufficient balance: the job requires {needed} AITBC")
                }
                ClientError::Invalid { .. } => "The coordinator refused the request".into(),
                ClientError::Protocol { .. } => "Unexpected answer from the coordinator".into(),
            },
            OpError::WaitTimeout { after, .. } => {
                format!("Job timed out after {}s", after.as_secs())
            }
            OpError::JobEnded { last } => {
                format!("Job {} ended {}", last.job_id, last.state)
            }
        }
    }

    fn issues(&self) -> Vec<String> {
        match self {
            OpError::Rules(rules) => rules.iter().map(ToString::to_string).collect(),
            OpError::Client(e) => match &**e {
                ClientError::Unavailable {
                    url,
                    reason,
                    status,
                } => vec![
                    format!(
                        "service status: unavailable ({}) at {url}",
                        status.map_or("no answer".to_string(), |s| format!("HTTP {s}"))
                    ),
                    reason.clone(),
                ],
                other => vec![other.to_string()],
            },
            other => vec![other.to_string()],
        }
    }

    fn recommendations(&self) -> Vec<String> {
        let s = |t: &str| t.to_string();
        match self {
            OpError::Input(_) => vec![s(
                "See `aitbc-flow op --help` or docs/job-commands.md for the input fields of each operation",
            )],
            OpError::Rules(rules) => rules.iter().filter_map(rule_advice).collect(),
            OpError::BalanceUnknown { .. } => vec![
                s("Set AITBC_WALLET_URL to the wallet daemon that holds the wallet"),
                s("The balance is checked before every submit: no job is sent without it"),
            ],
            OpError::Client(e) => client_advice(e),
            OpError::WaitTimeout { last, .. } => vec![
                format!("Check the job with `aitbc-flow job status {}`", last.job_id),
                s("Wait longer with --timeout (e.g. --timeout 10m)"),
                s(
                    "A job paid 10 AITBC or more may stay QUEUED until a bonded provider takes it: lower the payment or choose a provider with --provider-id",
                ),
                s("Check that providers are online for this job type and model"),
                format!(
                    "Cancel it with `aitbc-flow job cancel {}` if it is no longer needed",
                    last.job_id
                ),
            ],
            OpError::JobEnded { last } => match last.state {
                JobState::Expired => vec![s(
                    "The job expired before a provider finished it: resubmit with a longer ttl or a smaller payment",
                )],
                JobState::Canceled => vec![s("The job was cancelled: resubmit it if still needed")],
                _ => vec![s(
                    "Check the job type and model are supported by the providers, then resubmit",
                )],
            },
        }
    }
}

fn rule_advice(r: &RuleError) -> Option<String> {
    Some(match r {
        RuleError::UnknownJobType { suggestion, .. } => match suggestion {
            Some(t) => format!("Use job type `{t}`"),
            None => format!("Use one of the job types: {}", JOB_TYPES.join(", ")),
        },
        RuleError::PromptTooLong { max, .. } => {
            format!("Shorten the prompt to {max} characters or split it into several jobs")
        }
        RuleError::EmptyPrompt => "Give a prompt with --prompt or --prompt-file".into(),
        RuleError::PaymentOutOfBounds { min, max, .. } => {
            format!("Pay between {min} and {max} AITBC")
        }
        RuleError::PaymentBelowMinimum { minimum, .. } => {
            format!("Raise the payment to at least {minimum} AITBC")
        }
        RuleError::Currency { .. } => "Pay in AITBC".into(),
        RuleError::NoWallet => "Name the paying wallet with --wallet".into(),
        RuleError::InsufficientBalance {
            wallet,
            held,
            needed,
        } => format!(
            "Fund wallet {wallet} with at least {} AITBC more, or lower the payment to at most {held} AITBC",
            *needed - *held
        ),
        RuleError::UnknownTarget { .. } => format!(
            "Use one of the targets: {}",
            crate::api::OPTIMIZATION_TARGETS.join(", ")
        ),
        RuleError::Resource { what, range, .. } => format!("Ask for {what} {range}"),
        RuleError::Missing(_) => return None,
    })
}

fn client_advice(e: &ClientError) -> Vec<String> {
    let s = |t: &str| t.to_string();
    match e {
        ClientError::Unavailable { .. } => vec![
            s("Retry in a few seconds: the service may be restarting or overloaded"),
            s(
                "Check that the coordinator is running and reachable (--coordinator or AITBC_COORDINATOR_URL)",
            ),
            s(
                "Before resubmitting a submit, list recent jobs: the first one may have been accepted",
            ),
        ],
        ClientError::Timeout { .. } => vec![
            s(
                "Retry: the service was slow to answer (a paid submit can take ~7 s when the chain is slow)",
            ),
            s(
                "Before resubmitting a submit, list recent jobs: the first one may have been accepted",
            ),
            s("Raise the request timeout with AITBC_SUBMIT_TIMEOUT or AITBC_READ_TIMEOUT"),
        ],
        ClientError::RateLimited { retry_after, .. } => vec![
            match retry_after {
                Some(d) => format!("Retry after {} s", d.as_secs()),
                None => s("Retry in a minute"),
            },
            s("Pace requests with AITBC_RATE_LIMIT (the service allows 50 submits a minute)"),
        ],
        ClientError::Auth { .. } => vec![
            s("Check AITBC_TOKEN or AITBC_TOKEN_FILE: client tokens are valid for 24 h"),
            s("Use a token with the client role"),
        ],
        ClientError::NotFound { .. } => vec![s(
            "Check the job id: unknown jobs and jobs of another client both answer 404",
        )],
        ClientError::NotReady { .. } => {
            vec![s("Wait for the job to complete, then fetch its result")]
        }
        ClientError::Conflict { .. } => vec![s("Read the job's status: it has already finished")],
        ClientError::InsufficientBalance {
            wallet,
            needed,
            held,
        } => vec![format!(
            "Fund wallet {wallet} with at least {} AITBC more",
            *needed - *held
        )],
        ClientError::Invalid { .. } => {
            vec![s("Fix the fields the coordinator names and try again")]
        }
        ClientError::Protocol { .. } => vec![s(
            "Check that the URL points at an AITBC coordinator (not a proxy or another service)",
        )],
    }
}

/// What the caller of [`execute`] can set.
#[derive(Clone, Debug)]
pub struct OpOptions {
    /// How long `wait` waits when the input does not say (300 s).
    pub wait_timeout: Duration,
    /// First poll interval (0.5 s).
    pub poll_initial: Duration,
    /// Longest poll interval (5 s).
    pub poll_max: Duration,
    /// Where a relative `batch_file` is found.
    pub base_dir: PathBuf,
}

impl Default for OpOptions {
    fn default() -> Self {
        OpOptions {
            wait_timeout: Duration::from_secs(300),
            poll_initial: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            base_dir: PathBuf::from("."),
        }
    }
}

/// An output and the exit code that goes with it.
#[derive(Clone, Debug, PartialEq)]
pub struct OpOutcome {
    /// The output JSON.
    pub output: OpOutput,
    /// From [`crate::exit`].
    pub exit_code: i32,
}

/// Runs one operation and answers with its output JSON and exit code. Never panics on bad input or
/// network trouble: every failure is an output with `validation_status: "failed"`.
pub async fn execute<C: Coordinator>(c: &C, input: &OpInput, opts: &OpOptions) -> OpOutcome {
    let started = Instant::now();
    let op = input.operation.unwrap_or(Operation::Status);
    let result = match check_offline(input) {
        Err(e) => Err(e),
        Ok(()) => match op {
            Operation::Submit if input.batch_file.is_some() => submit_batch(c, input, opts).await,
            Operation::Submit => submit(c, input, opts).await,
            Operation::Status => status(c, input).await,
            Operation::Results => results(c, input).await,
            Operation::List => list(c, input).await,
            Operation::Optimize => optimize(c, input).await,
            Operation::Cancel => cancel(c, input).await,
            Operation::Balance => balance(c, input).await,
        },
    };
    finish(op, input, result, started)
}

/// Checks what can be checked without a coordinator (required fields, job ids, the client rules).
/// `Some` is the failure to report: nothing needs to be started or sent for it.
pub fn precheck(input: &OpInput) -> Option<OpOutcome> {
    let op = input.operation.unwrap_or(Operation::Status);
    match check_offline(input) {
        Ok(()) => None,
        Err(e) => Some(finish(op, input, Err(e), Instant::now())),
    }
}

fn check_offline(input: &OpInput) -> Result<(), OpError> {
    let op = input.operation.unwrap_or(Operation::Status);
    match op {
        Operation::Submit if input.batch_file.is_some() => {
            required(&input.job_type, "job_type", op)?;
            Ok(())
        }
        Operation::Submit => {
            let broken = rules::check_submit(&submit_params(input)?);
            if broken.is_empty() {
                Ok(())
            } else {
                Err(OpError::Rules(broken))
            }
        }
        Operation::Status | Operation::Results | Operation::Cancel => job_id(input, op).map(drop),
        Operation::List => {
            if let Some(t) = &input.job_type {
                rules::check_job_type(t).map_err(|e| OpError::Rules(vec![e]))?;
            }
            input.status.as_deref().map(state_filter).transpose()?;
            Ok(())
        }
        Operation::Optimize => {
            let broken = rules::check_optimize(&optimize_params(input)?);
            if broken.is_empty() {
                Ok(())
            } else {
                Err(OpError::Rules(broken))
            }
        }
        Operation::Balance => required(&input.wallet, "wallet", op).map(drop),
    }
}

fn finish(
    op: Operation,
    input: &OpInput,
    result: Result<OpOutput, OpError>,
    started: Instant,
) -> OpOutcome {
    let (output, exit_code) = match result {
        Ok(out) => {
            let code = if out.validation_status == ValidationStatus::Failed {
                exit::STEP_FAILED
            } else {
                exit::SUCCESS
            };
            (out, code)
        }
        Err(e) => {
            let mut out = OpOutput::failed(op, &e);
            // A failed submit still says what was asked for.
            if op == Operation::Submit {
                out.wallet = out.wallet.or_else(|| input.wallet.clone());
                out.payment = out.payment.or(input.payment);
                out.job_type = out.job_type.or_else(|| input.job_type.clone());
            }
            (out, e.exit_code())
        }
    };
    OpOutcome {
        output: output.with_execution_time(started.elapsed()),
        exit_code,
    }
}

fn required<'a>(v: &'a Option<String>, name: &str, op: Operation) -> Result<&'a str, OpError> {
    v.as_deref()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| OpError::Input(format!("`{name}` is required for {}", op.as_str())))
}

fn job_id(input: &OpInput, op: Operation) -> Result<JobId, OpError> {
    required(&input.job_id, "job_id", op)?
        .trim()
        .parse()
        .map_err(OpError::Input)
}

/// The submit parameters of an input (the rules are checked separately).
pub fn submit_params(input: &OpInput) -> Result<SubmitParams, OpError> {
    let op = Operation::Submit;
    Ok(SubmitParams {
        job_type: required(&input.job_type, "job_type", op)?.to_string(),
        prompt: input.prompt.clone().unwrap_or_default(),
        payment: input
            .payment
            .ok_or_else(|| OpError::Input("`payment` is required for submit".into()))?,
        currency: input.currency.clone(),
        wallet: input.wallet.clone().unwrap_or_default(),
        model: input.model.clone(),
        provider_id: input.provider_id.clone(),
        endpoint: input.endpoint.clone(),
        client_ref: None,
        ttl: None,
        parameters: Map::new(),
    })
}

/// Checks the balance of `wallet` covers `needed`.
async fn preflight_balance<C: Coordinator>(
    c: &C,
    wallet: &str,
    needed: Money,
) -> Result<(), OpError> {
    let b = c
        .balance(wallet)
        .await
        .map_err(|error| OpError::BalanceUnknown {
            wallet: wallet.to_string(),
            error: Box::new(error),
        })?;
    rules::check_balance(wallet, b.balance, needed).map_err(|e| OpError::Rules(vec![e]))
}

/// A fresh key for `Idempotency-Key` and `payload.client_ref`.
fn fresh_ref() -> String {
    format!("aitbc-flow-{}", hex::encode(rand::random::<[u8; 8]>()))
}

async fn submit<C: Coordinator>(
    c: &C,
    input: &OpInput,
    opts: &OpOptions,
) -> Result<OpOutput, OpError> {
    let mut p = submit_params(input)?;
    let broken = rules::check_submit(&p);
    if !broken.is_empty() {
        return Err(OpError::Rules(broken));
    }
    preflight_balance(c, &p.wallet, p.payment).await?;
    let key = fresh_ref();
    p.client_ref = Some(key.clone());
    let (view, created) = c.submit(&rules::job_create(&p), Some(&key)).await?;
    let submitted = OpOutput::submitted(&view, &p.wallet, p.payment, created);
    if !input.wait.unwrap_or(false) {
        return Ok(submitted);
    }
    let timeout = input.timeout.unwrap_or(opts.wait_timeout);
    let last = wait_for(c, &view.job_id, timeout, opts).await?;
    let mut out = fetch_results(c, &last).await?;
    out.operation = Operation::Submit;
    out.wallet = Some(p.wallet.clone());
    out.payment = Some(p.payment);
    out.issues.splice(0..0, submitted.issues);
    out.summary = format!(
        "{} job {} {}: {} AITBC from {}",
        capitalize(&p.job_type),
        view.job_id,
        if out.validation_status == ValidationStatus::Failed {
            "failed"
        } else {
            "completed"
        },
        p.payment,
        p.wallet
    );
    Ok(out.settle())
}

/// Polls a job with backoff (0.5 s → 5 s) until it reaches a final state or `timeout` passes.
/// A poll that fails with a retryable error is simply polled again.
pub async fn wait_for<C: Coordinator>(
    c: &C,
    id: &JobId,
    timeout: Duration,
    opts: &OpOptions,
) -> Result<JobView, OpError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = opts.poll_initial;
    let mut last: Option<JobView> = None;
    loop {
        match c.job(id).await {
            Ok(v) if v.state.is_final() => return Ok(v),
            Ok(v) => last = Some(v),
            Err(e) if e.is_retryable() => {
                tracing::warn!("polling job {id}: {e}; polling again");
            }
            Err(e) => return Err(e.into()),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(match last {
                Some(v) => OpError::WaitTimeout {
                    last: Box::new(v),
                    after: timeout,
                },
                None => ClientError::Timeout {
                    url: format!("{}/v1/jobs/{id}", c.base_url()),
                    after: timeout,
                }
                .into(),
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 3 / 2).min(opts.poll_max);
    }
}

/// The results output for a job already read in a final state.
async fn fetch_results<C: Coordinator>(c: &C, view: &JobView) -> Result<OpOutput, OpError> {
    if view.state != JobState::Completed {
        return Err(OpError::JobEnded {
            last: Box::new(view.clone()),
        });
    }
    let r = c.result(&view.job_id).await?;
    Ok(OpOutput::results(&view.job_id, Some(view), &r))
}

async fn status<C: Coordinator>(c: &C, input: &OpInput) -> Result<OpOutput, OpError> {
    let id = job_id(input, Operation::Status)?;
    Ok(OpOutput::status(&c.job(&id).await?))
}

async fn results<C: Coordinator>(c: &C, input: &OpInput) -> Result<OpOutput, OpError> {
    let id = job_id(input, Operation::Results)?;
    match c.result(&id).await {
        Ok(r) => {
            let view = c.job(&id).await.ok();
            Ok(OpOutput::results(&id, view.as_ref(), &r))
        }
        // 425 answers for unfinished jobs and for FAILED/CANCELED/EXPIRED alike: read the job to tell.
        Err(ClientError::NotReady { .. }) => {
            let v = c.job(&id).await?;
            if v.state.is_final() {
                return Err(OpError::JobEnded { last: Box::new(v) });
            }
            let mut out = OpOutput::new(
                Operation::Results,
                format!("Job {id} has no result yet ({})", v.state),
            )
            .with_view(&v);
            out.issues
                .push(format!("the job is still {}: no result yet", v.state));
            out.recommendations.push(format!(
                "Fetch the result again once `aitbc-flow job status {id}` says completed"
            ));
            out.validation_status = ValidationStatus::Partial;
            out.confidence = 1.0;
            Ok(out)
        }
        Err(e) => Err(e.into()),
    }
}

/// Maps a status filter in the skill's words (or the coordinator's) to the coordinator's state.
pub fn state_filter(s: &str) -> Result<JobState, OpError> {
    let upper = s.trim().to_ascii_uppercase();
    let state = match upper.as_str() {
        "SUBMITTED" => Some(JobState::Queued),
        "PROCESSING" => Some(JobState::Running),
        // The service spells it with one L and silently ignores the other spelling.
        "CANCELLED" => Some(JobState::Canceled),
        other => JobState::parse(other),
    };
    state.ok_or_else(|| {
        OpError::Input(format!(
            "unknown status `{s}`: use submitted, processing, completed, failed, cancelled, expired \
             (or QUEUED, RUNNING, COMPLETED, FAILED, CANCELED, EXPIRED)"
        ))
    })
}

async fn list<C: Coordinator>(c: &C, input: &OpInput) -> Result<OpOutput, OpError> {
    if let Some(t) = &input.job_type {
        rules::check_job_type(t).map_err(|e| OpError::Rules(vec![e]))?;
    }
    let status = input
        .status
        .as_deref()
        .map(state_filter)
        .transpose()?
        .map(|s| s.as_str().to_string());
    let q = ListQuery {
        limit: Some(input.limit.unwrap_or(20)),
        offset: None,
        status,
        job_type: input.job_type.clone(),
    };
    Ok(OpOutput::list(&c.list(&q).await?))
}

async fn cancel<C: Coordinator>(c: &C, input: &OpInput) -> Result<OpOutput, OpError> {
    let id = job_id(input, Operation::Cancel)?;
    match c.cancel(&id).await {
        Ok(v) => Ok(OpOutput::cancelled(&v)),
        Err(e @ ClientError::Conflict { .. }) => {
            // Say what state it is in, when we can.
            match c.job(&id).await {
                Ok(v) => {
                    let mut out = OpOutput::failed(Operation::Cancel, &e.into()).with_view(&v);
                    out.summary = format!(
                        "Job {id} cannot be cancelled: it is already {}",
                        OpStatus::of(&v).as_str()
                    );
                    Ok(out)
                }
                Err(_) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The optimize parameters of an input (the rules are checked separately).
pub fn optimize_params(input: &OpInput) -> Result<OptimizeParams, OpError> {
    let op = Operation::Optimize;
    Ok(OptimizeParams {
        agent_id: required(&input.agent_id, "agent_id", op)?.to_string(),
        cpu: input
            .cpu
            .ok_or_else(|| OpError::Input("`cpu` is required for optimize".into()))?,
        memory_gb: input
            .memory
            .ok_or_else(|| OpError::Input("`memory` is required for optimize".into()))?,
        gpu: input.gpu.unwrap_or(0.0),
        duration: input.duration,
        task_type: input.task_type.clone().or_else(|| input.job_type.clone()),
        target: input.target.clone(),
    })
}

async fn optimize<C: Coordinator>(c: &C, input: &OpInput) -> Result<OpOutput, OpError> {
    let p = optimize_params(input)?;
    let broken = rules::check_optimize(&p);
    if !broken.is_empty() {
        return Err(OpError::Rules(broken));
    }
    let req = rules::allocate_request(&p);
    let granted = c.allocate(&req).await?;
    // The service gives no cost estimate: cheapest GPU offer × GPUs × hours.
    let cost = match p.duration {
        Some(d) if p.gpu > 0.0 => c.gpu_offers(Some(500)).await.ok().and_then(|offers| {
            let cheapest = offers.iter().map(|o| o.price_per_hour).min()?;
            let hours = Money::from_f64(d.as_secs_f64() / 3600.0)?;
            let gpus = Money::from_f64(p.gpu)?;
            Some(Money(
                (cheapest.0 * gpus.0 * hours.0).round_dp(8).normalize(),
            ))
        }),
        _ => None,
    };
    Ok(OpOutput::optimized(
        &req,
        &granted,
        input.wallet.as_deref(),
        cost,
        p.duration,
    ))
}

async fn balance<C: Coordinator>(c: &C, input: &OpInput) -> Result<OpOutput, OpError> {
    let wallet = required(&input.wallet, "wallet", Operation::Balance)?;
    Ok(OpOutput::balance(&c.balance(wallet).await?))
}

/// One entry of a batch file: a prompt, with optional overrides of the command's fields.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct BatchItem {
    /// The prompt.
    pub prompt: String,
    /// Overrides the job type.
    #[serde(default)]
    pub job_type: Option<String>,
    /// Overrides the payment.
    #[serde(default)]
    pub payment: Option<Money>,
    /// Overrides the model.
    #[serde(default)]
    pub model: Option<String>,
}

/// Reads a batch file: JSON lines (each a prompt string or an object with `prompt`) or a YAML list of
/// the same. Blank lines and `#` comments are skipped in JSON lines.
pub fn read_batch(text: &str, file_name: &str) -> Result<Vec<BatchItem>, String> {
    let is_yaml = file_name.ends_with(".yaml") || file_name.ends_with(".yml");
    let values: Vec<Value> = if is_yaml {
        yaml_list(text)?
    } else {
        let mut out = Vec::new();
        let mut json_error = None;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            match serde_json::from_str::<Value>(t) {
                Ok(v) => out.push(v),
                Err(e) => {
                    json_error = Some(format!("line {}: {e}", i + 1));
                    break;
                }
            }
        }
        match json_error {
            // Not JSON lines: perhaps a YAML list without the extension.
            Some(e) => yaml_list(text).map_err(|_| format!("{file_name}: not JSON lines ({e})"))?,
            None => out,
        }
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(prompt) => Ok(BatchItem {
                prompt,
                ..BatchItem::default()
            }),
            other => serde_json::from_value(other)
                .map_err(|e| format!("{file_name}: item {}: {e}", i + 1)),
        })
        .collect()
}

fn yaml_list(text: &str) -> Result<Vec<Value>, String> {
    use saphyr::LoadableYamlNode;
    let docs = saphyr::Yaml::load_from_str(text).map_err(|e| e.to_string())?;
    match docs.first().map(yaml_to_json) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err("expected a YAML list of prompts".into()),
    }
}

fn yaml_to_json(y: &saphyr::Yaml) -> Value {
    use saphyr::{Scalar, Yaml};
    match y {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        Yaml::Value(Scalar::Integer(i)) => json!(i),
        Yaml::Value(Scalar::FloatingPoint(f)) => json!(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => Value::String(s.to_string()),
        Yaml::Representation(s, _, _) => Value::String(s.to_string()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match yaml_to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Tagged(_, inner) => yaml_to_json(inner),
        Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

/// Submits every prompt of a batch file with at most `parallel` in flight, after checking every item
/// against the rules and the wallet's balance against the whole batch.
async fn submit_batch<C: Coordinator>(
    c: &C,
    input: &OpInput,
    opts: &OpOptions,
) -> Result<OpOutput, OpError> {
    use futures_util::StreamExt;

    let path = input.batch_file.clone().unwrap_or_default();
    let path = if path.is_absolute() {
        path
    } else {
        opts.base_dir.join(path)
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| OpError::Input(format!("cannot read {}: {e}", path.display())))?;
    let items = read_batch(&text, &path.to_string_lossy()).map_err(OpError::Input)?;
    if items.is_empty() {
        return Err(OpError::Input(format!(
            "{} holds no prompts",
            path.display()
        )));
    }
    let base = OpInput {
        prompt: Some(String::new()),
        ..input.clone()
    };
    let mut params = Vec::new();
    let mut broken = Vec::new();
    for item in &items {
        let mut one = base.clone();
        one.prompt = Some(item.prompt.clone());
        one.job_type = item.job_type.clone().or(one.job_type);
        one.payment = item.payment.or(one.payment);
        one.model = item.model.clone().or(one.model);
        let p = submit_params(&one)?;
        broken.extend(rules::check_submit(&p));
        params.push(p);
    }
    if !broken.is_empty() {
        broken.dedup();
        return Err(OpError::Rules(broken));
    }
    // One wallet's jobs never race its own balance: check the batch's total once, up front.
    let wallet = params[0].wallet.clone();
    let total: Money = params.iter().map(|p| p.payment).sum();
    preflight_balance(c, &wallet, total).await?;

    let parallel = input.parallel.unwrap_or(4).max(1);
    let outputs: Vec<OpOutput> =
        futures_util::stream::iter(params.into_iter().map(|mut p| async move {
            let key = fresh_ref();
            p.client_ref = Some(key.clone());
            let started = Instant::now();
            let out = match c.submit(&rules::job_create(&p), Some(&key)).await {
                Ok((view, created)) => OpOutput::submitted(&view, &p.wallet, p.payment, created),
                Err(e) => OpOutput::failed(Operation::Submit, &e.into()),
            };
            out.with_execution_time(started.elapsed())
        }))
        .buffered(parallel)
        .collect()
        .await;

    let ok = outputs
        .iter()
        .filter(|o| o.validation_status != ValidationStatus::Failed)
        .count();
    let mut out = OpOutput::new(
        Operation::Submit,
        format!(
            "{ok} of {} batch jobs submitted from {wallet}",
            outputs.len()
        ),
    );
    out.wallet = Some(wallet);
    out.payment = Some(total);
    out.status = Some(OpStatus::Submitted);
    out.progress = Some(0);
    for (i, o) in outputs.iter().enumerate() {
        for issue in &o.issues {
            out.issues.push(format!("item {}: {issue}", i + 1));
        }
    }
    if ok < outputs.len() {
        out.validation_status = if ok == 0 {
            ValidationStatus::Failed
        } else {
            ValidationStatus::Partial
        };
        out.recommendations.push(
            "List recent jobs before resubmitting the failed items: a lost answer may hide an accepted job"
                .into(),
        );
    }
    out.jobs = Some(
        outputs
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .collect(),
    );
    Ok(out.settle())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_parses_leniently_and_names_bad_fields() {
        let i = OpInput::from_json(
            r#"{"operation": "submit", "payment": "500", "cpu": "4", "duration": "1h", "whatever": 1}"#,
        )
        .unwrap();
        assert_eq!(i.payment, Some(Money::from_int(500)));
        assert_eq!(i.cpu, Some(4.0));
        assert_eq!(i.duration, Some(Duration::from_secs(3600)));
        let e = OpInput::from_json(r#"{"operation": "launch"}"#).unwrap_err();
        assert!(e.starts_with("operation: unknown variant `launch`"), "{e}");
        let e = OpInput::from_json(r#"{"operation": "submit", "payment": true}"#).unwrap_err();
        assert!(e.starts_with("payment:"), "{e}");
        assert!(
            OpInput::from_json("{}")
                .unwrap_err()
                .contains("`operation` is required")
        );
        assert!(OpInput::from_json("{\"operation\": ").is_err());
    }

    #[test]
    fn output_has_exactly_the_skill_fields() {
        let v = serde_json::to_value(OpOutput::new(Operation::Submit, "x")).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "summary",
                "operation",
                "job_id",
                "job_type",
                "status",
                "progress",
                "estimated_time",
                "wallet",
                "payment",
                "result",
                "jobs",
                "resource_allocation",
                "performance_metrics",
                "issues",
                "recommendations",
                "confidence",
                "execution_time",
                "validation_status"
            ]
        );
    }

    fn view(v: Value) -> JobView {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_failed_result_or_an_unverified_receipt_is_reported() {
        let id: JobId = "ea05c15ab4f94d369c35d96c8fc39ac5".parse().unwrap();
        let r = JobResult {
            result: json!({"status": "failed", "error": "Unsupported job type: video"}),
            receipt: None,
        };
        let out = OpOutput::results(&id, None, &r);
        assert_eq!(out.status, Some(OpStatus::Failed));
        assert_eq!(out.validation_status, ValidationStatus::Failed);
        assert_eq!(out.issues[0], "the job failed: Unsupported job type: video");

        let r = JobResult {
            result: json!({"status": "completed", "output": "hi"}),
            receipt: Some(
                json!({"receipt_id": "r", "signature": {"alg": "Ed25519", "key_id": "AAAA", "sig": "AAAA"}}),
            ),
        };
        let out = OpOutput::results(&id, None, &r);
        assert_eq!(out.result.as_deref(), Some("hi"));
        assert_eq!(out.validation_status, ValidationStatus::Partial);
        assert_eq!(out.performance_metrics.unwrap()["receipt_verified"], false);
        assert!(
            out.issues[0].starts_with("receipt not verified"),
            "{:?}",
            out.issues
        );
    }

    #[test]
    fn skipped_payments_and_escrow_after_cancel_are_issues() {
        let v = view(
            json!({"job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": "QUEUED",
                            "payload": {"type": "inference"}, "payment_status": "skipped"}),
        );
        let out = OpOutput::submitted(&v, "w", Money::from_int(2), true);
        assert_eq!(out.validation_status, ValidationStatus::Partial);
        assert!(out.issues[0].contains("skipped the payment"));

        let v = view(
            json!({"job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": "CANCELED",
                            "payload": {"type": "inference"}, "payment_status": "escrowed"}),
        );
        let out = OpOutput::cancelled(&v);
        assert_eq!(out.status, Some(OpStatus::Cancelled));
        assert!(out.issues[0].contains("still escrowed"));

        let v = view(
            json!({"job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": "EXPIRED",
                            "payload": {"type": "training"}, "error": "job expired"}),
        );
        let out = OpOutput::status(&v);
        assert_eq!(out.status, Some(OpStatus::Failed));
        assert_eq!(out.progress, Some(100));
        assert_eq!(out.issues, vec!["the job ended EXPIRED: job expired"]);
    }

    #[test]
    fn status_filters_accept_both_vocabularies() {
        assert_eq!(state_filter("cancelled").unwrap(), JobState::Canceled);
        assert_eq!(state_filter("CANCELED").unwrap(), JobState::Canceled);
        assert_eq!(state_filter("processing").unwrap(), JobState::Running);
        assert!(state_filter("done").is_err());
    }

    #[test]
    fn batch_files_read_as_json_lines_or_yaml() {
        let items = read_batch(
            "\"first\"\n\n# note\n{\"prompt\": \"second\", \"payment\": 3}\n",
            "b.jsonl",
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].payment, Some(Money::from_int(3)));
        let items = read_batch("- one\n- prompt: two\n  model: mistral\n", "b.yaml").unwrap();
        assert_eq!(items[1].model.as_deref(), Some("mistral"));
        let items = read_batch("- one\n- two\n", "prompts.txt").unwrap();
        assert_eq!(items.len(), 2);
        assert!(read_batch("{\"nope\": 1}\n", "b.jsonl").is_err());
    }
}

#[cfg(test)]
mod wait_tests {
    use std::sync::Mutex;

    use super::*;
    use crate::api::{
        AllocateRequest, Allocation, GpuOffer, JobCreate, PaymentView, RefundRequest,
        RefundResponse,
    };

    /// A coordinator whose job reads follow a script, recording when each read happened.
    struct Scripted {
        answers: Mutex<Vec<Result<JobState, ClientError>>>,
        reads: Mutex<Vec<tokio::time::Instant>>,
    }

    fn view(state: JobState) -> JobView {
        serde_json::from_value(json!({
            "job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": state, "payload": {"type": "inference"}
        }))
        .unwrap()
    }

    impl Coordinator for Scripted {
        fn base_url(&self) -> &str {
            "http://127.0.0.1:1"
        }
        async fn submit(
            &self,
            _: &JobCreate,
            _: Option<&str>,
        ) -> Result<(JobView, bool), ClientError> {
            unimplemented!()
        }
        async fn job(&self, _: &JobId) -> Result<JobView, ClientError> {
            self.reads.lock().unwrap().push(tokio::time::Instant::now());
            let mut a = self.answers.lock().unwrap();
            let next = if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            };
            next.map(view)
        }
        async fn result(&self, _: &JobId) -> Result<JobResult, ClientError> {
            unimplemented!()
        }
        async fn cancel(&self, _: &JobId) -> Result<JobView, ClientError> {
            unimplemented!()
        }
        async fn list(&self, _: &ListQuery) -> Result<JobList, ClientError> {
            unimplemented!()
        }
        async fn receipt(&self, _: &JobId) -> Result<Value, ClientError> {
            unimplemented!()
        }
        async fn payment(&self, _: &JobId) -> Result<PaymentView, ClientError> {
            unimplemented!()
        }
        async fn refund(&self, _: &RefundRequest) -> Result<RefundResponse, ClientError> {
            unimplemented!()
        }
        async fn allocate(&self, _: &AllocateRequest) -> Result<Allocation, ClientError> {
            unimplemented!()
        }
        async fn gpu_offers(&self, _: Option<u32>) -> Result<Vec<GpuOffer>, ClientError> {
            unimplemented!()
        }
        async fn balance(&self, _: &str) -> Result<WalletBalance, ClientError> {
            unimplemented!()
        }
    }

    fn scripted(answers: Vec<Result<JobState, ClientError>>) -> Scripted {
        Scripted {
            answers: Mutex::new(answers),
            reads: Mutex::new(Vec::new()),
        }
    }

    fn gaps(s: &Scripted) -> Vec<u64> {
        let r = s.reads.lock().unwrap();
        r.windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect()
    }

    fn id() -> JobId {
        "ea05c15ab4f94d369c35d96c8fc39ac5".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn polls_with_backoff_from_half_a_second_to_five() {
        let mut answers = vec![Ok(JobState::Queued); 9];
        answers.push(Ok(JobState::Completed));
        let s = scripted(answers);
        let v = wait_for(&s, &id(), Duration::from_secs(300), &OpOptions::default())
            .await
            .unwrap();
        assert_eq!(v.state, JobState::Completed);
        assert_eq!(
            gaps(&s),
            vec![500, 750, 1125, 1688, 2532, 3797, 5000, 5000, 5000]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_poll_failure_is_polled_again() {
        let down = ClientError::Unavailable {
            url: "u".into(),
            reason: "HTTP 503".into(),
            status: Some(503),
        };
        let s = scripted(vec![
            Ok(JobState::Running),
            Err(down),
            Ok(JobState::Canceled),
        ]);
        let v = wait_for(&s, &id(), Duration::from_secs(300), &OpOptions::default())
            .await
            .unwrap();
        assert_eq!(v.state, JobState::Canceled);
        let s = scripted(vec![Err(ClientError::NotFound {
            url: "u".into(),
            detail: "job not found".into(),
        })]);
        let e = wait_for(&s, &id(), Duration::from_secs(300), &OpOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), exit::STEP_FAILED);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_timeout_with_the_last_state() {
        let s = scripted(vec![Ok(JobState::Running)]);
        let start = tokio::time::Instant::now();
        let e = wait_for(&s, &id(), Duration::from_secs(20), &OpOptions::default())
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert!(matches!(&e, OpError::WaitTimeout { last, .. } if last.state == JobState::Running));
        assert_eq!(e.exit_code(), exit::TIMEOUT);
        let out = OpOutput::failed(Operation::Submit, &e);
        assert_eq!(out.status, Some(OpStatus::Processing));
        assert!(out.recommendations.iter().any(|r| r.contains("--timeout")));
    }
}
