//! The outcome of one job operation, in the operator skill's output fields: what `aitbc-flow op` prints,
//! what the `job` commands show, and what each step of a run's report carries (flattened into
//! [`crate::model::StepReport`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::JobType;
use crate::api::{JobId, JobState, JobView};
use crate::money::Money;

/// The six operations of the skill, plus `balance` and `refund` (our extensions), `notify` (a
/// plan's `notify` step: a webhook) and `group` (a plan's `uses:` step), neither an operation of the
/// skill or of the MCP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Ask for a job's payment back (extension; the upstream CLI's `ai refund`).
    Refund,
    /// POST a message to a webhook (a plan's `notify` step only).
    Notify,
    /// A plan's `uses:` step: the end of its sub-plan's group, which calls nothing itself.
    Group,
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
            Operation::Refund => "refund",
            Operation::Notify => "notify",
            Operation::Group => "group",
        }
    }
}

/// A job's status in the skill's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValidationStatus {
    /// Everything checked out.
    Success,
    /// It worked, with issues worth reading.
    Partial,
    /// It did not work.
    Failed,
}

/// The skill's output JSON, field for field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Outcome {
    /// One sentence saying what happened.
    pub summary: String,
    /// The operation: submit, status, results, list, optimize, cancel, balance, refund.
    pub operation: Operation,
    /// The job the operation is about.
    #[schemars(with = "Option<String>")]
    pub job_id: Option<JobId>,
    /// The job's type.
    pub job_type: Option<JobType>,
    /// submitted, processing, completed, failed or cancelled.
    pub status: Option<OpStatus>,
    /// 0 queued, 50 running, 100 final.
    pub progress: Option<u8>,
    /// Seconds still expected until the job completes (0 once final).
    pub estimated_time: Option<f64>,
    /// The wallet (submit, optimize, balance).
    pub wallet: Option<String>,
    /// What the job paid, in AITBC.
    pub payment: Option<Money>,
    /// The job's output text (or the result, for results that are not text); the balance, for balance.
    pub result: Option<Value>,
    /// One entry per job (list; per batch item for a batch submit).
    pub jobs: Option<Vec<Value>>,
    /// What was granted (optimize).
    pub resource_allocation: Option<Value>,
    /// Measurements: execution time, tokens, receipt check, cost estimate, …
    pub performance_metrics: Option<super::JsonText>,
    /// What went wrong or looks wrong.
    pub issues: Vec<String>,
    /// What to do next.
    pub recommendations: Vec<String>,
    /// 1.0 when everything checked out.
    pub confidence: f64,
    /// Seconds the operation took.
    pub execution_time: f64,
    /// success, partial or failed.
    pub validation_status: ValidationStatus,
}

/// The progress the skill shows for a job state.
pub fn progress_of(state: JobState) -> u8 {
    match state {
        JobState::Queued => 0,
        JobState::Running => 50,
        _ => 100,
    }
}

impl Outcome {
    /// An outcome with every optional field null.
    pub fn new(operation: Operation, summary: impl Into<String>) -> Outcome {
        Outcome {
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
    pub fn with_execution_time(mut self, d: Duration) -> Outcome {
        self.set_execution_time(d);
        self
    }

    /// Sets `execution_time` from a duration (rounded to milliseconds).
    pub fn set_execution_time(&mut self, d: Duration) {
        self.execution_time = (d.as_secs_f64() * 1000.0).round() / 1000.0;
    }

    /// Marks a success that carries issues as `partial`.
    pub fn settle(mut self) -> Outcome {
        self.settle_in_place();
        self
    }

    /// Marks a success that carries issues as `partial`.
    pub fn settle_in_place(&mut self) {
        if self.validation_status == ValidationStatus::Success && !self.issues.is_empty() {
            self.validation_status = ValidationStatus::Partial;
            self.confidence = 0.8;
        }
    }

    /// Fills the job fields from a job as the coordinator shows it.
    pub fn with_view(mut self, v: &JobView) -> Outcome {
        self.set_view(v);
        self
    }

    /// Fills the job fields from a job as the coordinator shows it.
    pub fn set_view(&mut self, v: &JobView) {
        self.job_id = Some(v.job_id.clone());
        self.job_type = v.job_type().and_then(JobType::parse).or(self.job_type);
        self.status = Some(OpStatus::of(v));
        self.progress = Some(progress_of(v.state));
        self.estimated_time = Some(if v.state.is_final() {
            0.0
        } else {
            self.job_type.map_or(30.0, JobType::typical_seconds)
        });
    }

    /// True when the operation did not work.
    pub fn failed(&self) -> bool {
        self.validation_status == ValidationStatus::Failed
    }
}
