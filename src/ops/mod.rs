//! The job operations, each written once: submit (and who pays), wait, results, status, list, cancel,
//! refund, optimize and balance. Each takes a typed request and a [`Conn`] (a [`Coordinator`] with the retry
//! policy to send with and a [`Trace`] to tell about attempts) and returns the coordinator's typed
//! answer together with the operator skill's [`Outcome`](crate::model::Outcome), or an [`OpError`].
//!
//! `aitbc-flow op`, the `job` commands and the executor all call these. What only a run has — client
//! references and idempotency keys, the journal's intent record, the per-wallet lock, re-attaching on
//! resume, the step's report — the executor wraps around them (`exec/steps.rs`); it never repeats them.
//!
//! [`Coordinator`]: crate::client::Coordinator

pub mod balance;
pub mod cancel;
mod conn;
mod error;
pub mod list;
pub mod optimize;
pub mod payer;
pub mod refund;
pub mod results;
pub mod retry;
pub mod status;
pub mod submit;
pub mod wait;

pub use conn::{Conn, Quiet, Trace};
pub use error::OpError;

use crate::model::Outcome;

/// What an operation answers: the coordinator's typed answer and the skill's outcome of it.
#[derive(Clone, Debug)]
pub struct Done<T> {
    /// What the coordinator said.
    pub answer: T,
    /// The operation's outcome in the skill's fields.
    pub outcome: Outcome,
}
