//! The run's event stream. The executor emits these; every reporter (terminal, events.jsonl, the
//! report) consumes the same stream. They live in the shared model so that the reporters need not know
//! the executor.

use serde::Serialize;

use super::{Attempt, RunStatus, StepReport};
use crate::money::Money;

/// Something that happened in a run: one line of `events.jsonl`, tagged by `event`
/// (`schemas/events.schema.json`, docs/events.md).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run began.
    RunStarted {
        /// The run's id.
        run_id: String,
        /// The plan's name.
        plan: String,
        /// The coordinator URL.
        coordinator: String,
        /// True for the embedded coordinator.
        embedded: bool,
        /// Step ids and kinds, in order.
        steps: Vec<(String, String)>,
        /// What the run will pay per wallet, as far as the plan says before it runs (steps whose wallet
        /// or payment is only known at run time are not in it).
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        spend: std::collections::BTreeMap<String, crate::money::Money>,
        /// RFC 3339.
        at: String,
    },
    /// A problem of the run as a whole (preflight, interruption).
    RunIssue {
        /// The message.
        message: String,
    },
    /// A step started.
    StepStarted {
        /// The step.
        id: String,
        /// RFC 3339.
        at: String,
    },
    /// An attempt failed; another may follow after `delay_ms`.
    AttemptFailed {
        /// The step.
        id: String,
        /// The attempt.
        attempt: Attempt,
    },
    /// A job was submitted (or found again by its client reference).
    JobSubmitted {
        /// The step.
        id: String,
        /// The job.
        job_id: String,
        /// The paying wallet.
        wallet: String,
        /// The payment.
        payment: Money,
    },
    /// A job's state changed while waiting.
    JobState {
        /// The step.
        id: String,
        /// The job.
        job_id: String,
        /// The new state.
        state: String,
    },
    /// A step ended (succeeded, failed, skipped or cancelled).
    StepFinished {
        /// The step's report entry.
        report: Box<StepReport>,
    },
    /// A job this run submitted was cancelled by the run (a wait's timeout, or the run stopping), and
    /// what the payment status became as the payment view reads.
    JobCancelled {
        /// The step.
        id: String,
        /// The job.
        job_id: String,
        /// The job's state afterwards (`CANCELED`, or a final state it had reached first).
        state: Option<String>,
        /// The payment status read back.
        payment_status: Option<String>,
        /// The amount refunded, when a refund was confirmed.
        refunded: Option<Money>,
        /// The wallet.
        wallet: String,
    },
    /// A job this run submitted ended without being paid out — a `cancel` step cancelled it, or it
    /// failed or expired — and its refund was confirmed by the payment view.
    PaymentRefunded {
        /// The step that cancelled it.
        id: String,
        /// The job.
        job_id: String,
        /// The paying wallet.
        wallet: String,
        /// The amount refunded.
        amount: Money,
    },
    /// A payment of a job this run submitted is still held by the service although the job is over: its
    /// refund was refused (or could not be confirmed), or it was left in escrow on completion (a
    /// COMPLETED job with an `error`, such as a failed ZK proof).
    PaymentHeld {
        /// The step.
        id: String,
        /// The job.
        job_id: String,
        /// The paying wallet.
        wallet: String,
        /// The amount held.
        amount: Money,
        /// What to add to the step's issues, when its outcome does not say it already.
        note: Option<String>,
    },
    /// The run ended.
    RunFinished {
        /// How.
        status: RunStatus,
        /// The exit code.
        exit_code: i32,
        /// With status `unreachable`: true when the coordinator refused our credentials rather than
        /// could not be reached.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        credentials_refused: bool,
        /// RFC 3339.
        at: String,
    },
}
