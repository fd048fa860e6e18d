//! The report of a run (`runs/<run-id>/report.json`), as types. `schemas/report.schema.json` is generated
//! from these, and a test fails when the committed copy is stale.
//!
//! Each step carries the fields of the operator skill's output JSON (so a step of a report reads like
//! the answer of one `aitbc-flow op` call), plus its attempts, timings and receipt.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::money::Money;

/// The state of a step at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started (the run stopped before it).
    Pending,
    /// Finished successfully.
    Succeeded,
    /// Failed.
    Failed,
    /// Not run: its `when` was false, or a step it needs failed or was skipped.
    Skipped,
    /// Stopped by Ctrl-C, a fail-fast stop, or a timeout.
    Cancelled,
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still going (only in a partial report).
    Running,
    /// Every step succeeded or was skipped.
    Succeeded,
    /// A step failed.
    Failed,
    /// Refused before anything was submitted (the plan cannot be paid for).
    Refused,
    /// A step timed out.
    TimedOut,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted,
    /// The coordinator could not be reached or refused our credentials.
    Unreachable,
}

/// One attempt of a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The delay before the next attempt, in milliseconds, if one followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// The receipt of a job and whether its signature verified.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReceiptCheck {
    /// The receipt as the coordinator sent it (kept as JSON text: a report of 10,000 steps holds 10,000).
    pub receipt: Box<serde_json::value::RawValue>,
    /// True when the Ed25519 signature matched.
    pub verified: bool,
    /// Why it did not verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PartialEq for ReceiptCheck {
    fn eq(&self, other: &Self) -> bool {
        self.receipt.get() == other.receipt.get()
            && self.verified == other.verified
            && self.error == other.error
    }
}

/// One step of a run: the operator skill's output fields plus attempts, timings and receipt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepReport {
    /// The step's id (`summarize[tone=formal]` for a matrix copy).
    pub id: String,
    /// The step kind: submit, wait, fetch, job, optimize, status, list, cancel, balance.
    pub kind: String,
    /// How the step ended.
    pub state: StepState,
    /// One sentence on what happened.
    pub summary: String,
    /// The operator operation: submit, status, results, list, optimize, cancel, balance.
    pub operation: String,
    /// The job the step is about.
    pub job_id: Option<String>,
    /// The job's type.
    pub job_type: Option<String>,
    /// submitted, processing, completed, failed or cancelled.
    pub status: Option<String>,
    /// 0–100.
    pub progress: u8,
    /// Estimated seconds until the job completes.
    pub estimated_time: Option<f64>,
    /// The wallet that paid.
    pub wallet: Option<String>,
    /// What the job paid.
    pub payment: Option<Money>,
    /// The job's output text (or the result, for non-text results).
    pub result: Option<Value>,
    /// Jobs listed (list steps).
    pub jobs: Option<Value>,
    /// Resources granted (optimize steps).
    pub resource_allocation: Option<Value>,
    /// Execution time, tokens and other measurements the job reported.
    pub performance_metrics: Option<Value>,
    /// What went wrong or looks wrong.
    pub issues: Vec<String>,
    /// What to do about it.
    pub recommendations: Vec<String>,
    /// 1.0 when every check passed.
    pub confidence: f64,
    /// Seconds the step took.
    pub execution_time: f64,
    /// success, partial or failed.
    pub validation_status: String,
    /// Every attempt, with its error and the delay that followed.
    pub attempts: Vec<Attempt>,
    /// When the step started (RFC 3339).
    pub started_at: Option<String>,
    /// When it finished (RFC 3339).
    pub finished_at: Option<String>,
    /// The receipt and its verification (fetch and job steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptCheck>,
    /// The step's outputs, as later steps saw them (secrets redacted).
    pub outputs: Value,
    /// The request as rendered and sent (secrets redacted), for audits and repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    /// Set when the result was reused from an earlier run instead of paid for again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<CachedFrom>,
}

/// Where a cached step's result came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CachedFrom {
    /// The run that paid for the job.
    pub run_id: String,
    /// Its step.
    pub step_id: String,
    /// The job.
    pub job_id: String,
}

/// What the command line gave the run, besides the plan: enough to repeat it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunInputs {
    /// `--set KEY=VALUE` overrides, in order (secrets redacted).
    #[serde(default)]
    pub set: Vec<String>,
    /// `--vars FILE` files, in order.
    #[serde(default)]
    pub vars_files: Vec<String>,
    /// The run whose vars were the base (`--vars-from RUN-ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars_from: Option<String>,
    /// False when the run was made with `--no-cache`.
    #[serde(default = "yes")]
    pub cache: bool,
}

fn yes() -> bool {
    true
}

impl Default for RunInputs {
    fn default() -> Self {
        RunInputs {
            set: Vec::new(),
            vars_files: Vec::new(),
            vars_from: None,
            cache: true,
        }
    }
}

/// Totals over the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Totals {
    /// What each wallet paid for jobs submitted in this run (before refunds).
    pub spend_per_wallet: BTreeMap<String, Money>,
    /// What was refunded to each wallet after cancels (as read back from the coordinator).
    pub refunded_per_wallet: BTreeMap<String, Money>,
    /// Jobs submitted.
    pub jobs: u32,
    /// Steps that succeeded.
    pub succeeded: u32,
    /// Steps that failed.
    pub failed: u32,
    /// Steps skipped.
    pub skipped: u32,
    /// Steps cancelled or never started.
    pub cancelled: u32,
    /// Wall time of the run, in milliseconds.
    pub wall_time_ms: u64,
}

/// The report of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// The report format version (1).
    pub report_version: u32,
    /// The run's id.
    pub run_id: String,
    /// The plan's name.
    pub plan: String,
    /// The plan file.
    pub plan_path: String,
    /// SHA-256 of the plan file.
    pub plan_hash: String,
    /// The runner's version.
    pub runner_version: String,
    /// The coordinator's URL.
    pub coordinator: String,
    /// True when the run used the embedded local coordinator.
    pub embedded_coordinator: bool,
    /// How the run ended.
    pub status: RunStatus,
    /// The process exit code for this outcome.
    pub exit_code: i32,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: Option<String>,
    /// Problems of the run as a whole (preflight shortfalls, the reason it stopped).
    pub issues: Vec<String>,
    /// The vars the run used (secrets redacted).
    pub vars: Value,
    /// The overrides given on the command line (`--set`, `--vars`, `--vars-from`, `--no-cache`).
    #[serde(default)]
    pub inputs: RunInputs,
    /// Every step, in plan order.
    pub steps: Vec<StepReport>,
    /// Totals.
    pub totals: Totals,
}

/// The report's JSON Schema.
pub fn report_schema() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Report>();
    let mut v = serde_json::to_value(schema).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "$id".into(),
            Value::String("https://aitbc-flow.dev/schemas/report.schema.json".into()),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    #[ignore = "writes schemas/report.schema.json; run with --ignored to regenerate"]
    fn regenerate_report_schema() {
        let text = serde_json::to_string_pretty(&super::report_schema()).unwrap() + "\n";
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/report.schema.json"),
            text,
        )
        .unwrap();
    }
}
