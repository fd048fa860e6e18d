//! The report of a run (`runs/<run-id>/report.json`), as types. `schemas/report.schema.json` is generated
//! from these, and a test fails when the committed copy is stale.
//!
//! Each step carries the fields of the operator skill's output JSON (so a step of a report reads like
//! the answer of one `aitbc-flow op` call), plus its attempts, timings and receipt: that type,
//! [`StepReport`], is the shared model's, which the executor fills and the reporters read.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::money::Money;

pub use crate::model::step::{
    Attempt, CachedFrom, ReceiptCheck, RunInputs, RunStatus, StepReport, StepState,
};

/// Totals over the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Totals {
    /// What each wallet paid for jobs submitted in this run (before refunds).
    pub spend_per_wallet: BTreeMap<String, Money>,
    /// What was refunded to each wallet after cancels (as read back from the coordinator's payment view).
    pub refunded_per_wallet: BTreeMap<String, Money>,
    /// What the service still holds of each wallet's payments for jobs that are over: refunds refused or
    /// unconfirmed, payments left in escrow on completion. Neither spent on a result nor given back.
    #[serde(default)]
    pub held_per_wallet: BTreeMap<String, Money>,
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

/// The git provenance of a plan: what the run ran, as far as git can tell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanGit {
    /// The commit checked out (full object id); null on a branch without commits yet.
    pub commit: Option<String>,
    /// The branch checked out; null when HEAD is detached.
    pub branch: Option<String>,
    /// True when tracked files differed from the commit (untracked files do not count); null when
    /// it could not be told (git not installed, or it failed).
    pub dirty: Option<bool>,
    /// The plan file's path inside the work tree.
    pub path: String,
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
    /// The git work tree the plan file lives in, when it does: the commit checked out, and whether
    /// tracked files had changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_git: Option<PlanGit>,
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
    /// The vars and inputs the run used (secrets redacted).
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

/// The JSON Schema of one line of `events.jsonl`: one event of the run's stream, tagged by `event`.
pub fn events_schema() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<crate::model::Event>();
    let mut v = serde_json::to_value(schema).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "$id".into(),
            Value::String("https://aitbc-flow.dev/schemas/events.schema.json".into()),
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
