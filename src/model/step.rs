//! A step of a run as the report shows it — the operation's [`Outcome`] plus what only a step has (its
//! id and kind, attempts, times, receipt, outputs, the request as sent, the cache source) — and the
//! states of a step and of a run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JsonText, OpStatus, Operation, Outcome, ValidationStatus};

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

impl RunStatus {
    /// The word as the report and the journal write it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Refused => "refused",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Unreachable => "unreachable",
        }
    }
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

/// One step of a run: the operation's outcome plus attempts, timings and receipt.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct StepReport {
    /// The step's id (`summarize[tone=formal]` for a matrix copy).
    pub id: String,
    /// The step kind: submit, wait, fetch, job, optimize, status, list, cancel, balance, notify.
    pub kind: String,
    /// How the step ended.
    pub state: StepState,
    /// The steps it waits for (ids of matrix copies as run), from the plan's graph.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// The operation's outcome, in the operator skill's fields.
    #[serde(flatten)]
    pub outcome: Outcome,
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
    pub outputs: JsonText,
    /// The request as rendered and sent (secrets redacted), for audits and repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<JsonText>,
    /// Set when the result was reused from an earlier run instead of paid for again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<CachedFrom>,
    /// The status function that gates a status step (`failure()`, `always()`, `cancelled()`); only
    /// on such steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Why a status step ran or was skipped: `ran: step build failed`, `skipped: no step failed`,
    /// `ran after Ctrl-C (always())`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// Read through [`StepReportFields`] (every field at one level) rather than with `#[serde(flatten)]`:
// a flattened field makes serde buffer the whole object first, which was most of the time a resume of
// 10,000 steps spent reading its journal.
impl<'de> Deserialize<'de> for StepReport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StepReport, D::Error> {
        StepReportFields::deserialize(d).map(StepReport::from)
    }
}

/// A [`StepReport`] as written, its outcome's fields beside its own (the same names, types and
/// defaults as [`StepReport`] and [`Outcome`]: a test reads back what was written).
#[derive(Deserialize)]
struct StepReportFields {
    id: String,
    kind: String,
    state: StepState,
    #[serde(default)]
    needs: Vec<String>,
    attempts: Vec<Attempt>,
    started_at: Option<String>,
    finished_at: Option<String>,
    #[serde(default)]
    receipt: Option<ReceiptCheck>,
    outputs: JsonText,
    #[serde(default)]
    request: Option<JsonText>,
    #[serde(default)]
    cached_from: Option<CachedFrom>,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    // The outcome's fields.
    summary: String,
    operation: Operation,
    job_id: Option<crate::api::JobId>,
    job_type: Option<crate::model::JobType>,
    status: Option<OpStatus>,
    progress: Option<u8>,
    estimated_time: Option<f64>,
    wallet: Option<String>,
    payment: Option<crate::money::Money>,
    result: Option<Value>,
    jobs: Option<Vec<Value>>,
    resource_allocation: Option<Value>,
    performance_metrics: Option<JsonText>,
    issues: Vec<String>,
    recommendations: Vec<String>,
    confidence: f64,
    execution_time: f64,
    validation_status: ValidationStatus,
}

impl From<StepReportFields> for StepReport {
    fn from(f: StepReportFields) -> StepReport {
        StepReport {
            id: f.id,
            kind: f.kind,
            state: f.state,
            needs: f.needs,
            outcome: Outcome {
                summary: f.summary,
                operation: f.operation,
                job_id: f.job_id,
                job_type: f.job_type,
                status: f.status,
                progress: f.progress,
                estimated_time: f.estimated_time,
                wallet: f.wallet,
                payment: f.payment,
                result: f.result,
                jobs: f.jobs,
                resource_allocation: f.resource_allocation,
                performance_metrics: f.performance_metrics,
                issues: f.issues,
                recommendations: f.recommendations,
                confidence: f.confidence,
                execution_time: f.execution_time,
                validation_status: f.validation_status,
            },
            attempts: f.attempts,
            started_at: f.started_at,
            finished_at: f.finished_at,
            receipt: f.receipt,
            outputs: f.outputs,
            request: f.request,
            cached_from: f.cached_from,
            when: f.when,
            reason: f.reason,
        }
    }
}

/// The operation a step kind performs.
pub fn operation_of(kind: &str) -> Operation {
    match kind {
        "submit" | "job" => Operation::Submit,
        "fetch" => Operation::Results,
        "optimize" => Operation::Optimize,
        "list" => Operation::List,
        "cancel" => Operation::Cancel,
        "balance" => Operation::Balance,
        "notify" => Operation::Notify,
        "uses" => Operation::Group,
        _ => Operation::Status,
    }
}

impl StepReport {
    /// An empty entry for a step of this id and kind.
    pub fn blank(id: &str, kind: &str) -> StepReport {
        let mut outcome = Outcome::new(operation_of(kind), String::new());
        outcome.progress = Some(0);
        StepReport {
            id: id.to_string(),
            kind: kind.to_string(),
            state: StepState::Pending,
            needs: Vec::new(),
            outcome,
            attempts: Vec::new(),
            started_at: None,
            finished_at: None,
            receipt: None,
            outputs: JsonText::empty_object(),
            request: None,
            cached_from: None,
            when: None,
            reason: None,
        }
    }

    /// The entry of a step that did not run because of its `when` or a dependency.
    pub fn skipped(id: &str, kind: &str, reason: &str) -> StepReport {
        let mut r = StepReport::blank(id, kind);
        r.state = StepState::Skipped;
        r.outcome.summary = format!("Step skipped: {reason}");
        r.outcome.validation_status = ValidationStatus::Partial;
        r
    }

    /// Says why a status step ran or was skipped (see [`StepReport::reason`]).
    pub fn gated(mut self, when: &str, reason: String) -> StepReport {
        self.when = Some(when.to_string());
        self.reason = Some(reason);
        self
    }

    /// The entry of a step the run never reached.
    pub fn not_started(id: &str, kind: &str, reason: &str) -> StepReport {
        let mut r = StepReport::blank(id, kind);
        r.state = StepState::Cancelled;
        r.outcome.summary = format!("Step not run: {reason}");
        r.outcome.status = Some(OpStatus::Cancelled);
        r.outcome.validation_status = ValidationStatus::Failed;
        r
    }
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
    /// False when this start of the run was made with `--no-balance-check` (shown only then).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub balance_check: bool,
    /// `--from-run RUN-ID`: the run whose outputs the steps `--only` needs were taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_run: Option<String>,
    /// `--only ID…`: the steps asked for (the run has them and what they need).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// `--skip ID…`: the steps left out (with what needs them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for RunInputs {
    fn default() -> Self {
        RunInputs {
            set: Vec::new(),
            vars_files: Vec::new(),
            vars_from: None,
            cache: true,
            balance_check: true,
            from_run: None,
            only: Vec::new(),
            skip: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field set, read back as written: the outcome's fields at the step's level.
    #[test]
    fn a_step_report_reads_back_as_written_with_its_outcome_beside_its_fields() {
        let mut r = StepReport::blank("s1", "job");
        r.state = StepState::Succeeded;
        r.needs = vec!["s0".into()];
        r.attempts = vec![Attempt {
            number: 1,
            started_at: "2026-12-03T07:00:00.000Z".into(),
            duration_ms: 12,
            error: Some("503 once".into()),
            delay_ms: Some(100),
        }];
        r.started_at = Some("2026-12-03T07:00:00.000Z".into());
        r.finished_at = Some("2026-12-03T07:00:01.000Z".into());
        r.receipt = Some(ReceiptCheck {
            receipt: serde_json::value::RawValue::from_string(r#"{"job_id":"j1"}"#.into()).unwrap(),
            verified: true,
            error: None,
        });
        r.outputs = JsonText::of(&serde_json::json!({"text": "hi"}));
        r.request = Some(JsonText::of(&serde_json::json!({"prompt": "p"})));
        r.cached_from = Some(CachedFrom {
            run_id: "r0".into(),
            step_id: "s1".into(),
            job_id: "j0".into(),
        });
        r.when = Some("always()".into());
        r.reason = Some("ran".into());
        let o = &mut r.outcome;
        o.summary = "done".into();
        o.job_id = Some(crate::api::JobId::random());
        o.job_type = crate::model::JobType::parse("inference");
        o.status = Some(OpStatus::Completed);
        o.progress = Some(100);
        o.estimated_time = Some(0.0);
        o.wallet = Some("w0".into());
        // More digits than a float keeps: read from its text, not through the f64 of a flattened buffer.
        o.payment = Some("1000000.00000000001".parse().unwrap());
        o.result = Some(serde_json::json!("hi"));
        o.jobs = Some(vec![serde_json::json!({"job_id": "j1"})]);
        o.resource_allocation = Some(serde_json::json!({"gpu": 1}));
        o.performance_metrics = Some(JsonText::of(&serde_json::json!({"tokens": 3})));
        o.issues = vec!["slow".into()];
        o.recommendations = vec!["wait".into()];
        o.confidence = 0.8;
        o.execution_time = 1.25;
        o.validation_status = ValidationStatus::Partial;

        let text = serde_json::to_string(&r).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value["summary"], "done",
            "the outcome is at the step's level"
        );
        let back: StepReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let blank = StepReport::blank("s2", "fetch");
        let back: StepReport =
            serde_json::from_str(&serde_json::to_string(&blank).unwrap()).unwrap();
        assert_eq!(back, blank);
    }
}
