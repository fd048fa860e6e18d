//! The executor: runs a [`CheckedPlan`](crate::plan::CheckedPlan) against a
//! [`Coordinator`](crate::client::Coordinator).
//!
//! The [`dispatch::Dispatcher`] decides which step may start — each when what it needs is done, up to a
//! concurrency limit — and what the run's outcome is; [`runner`] is the async shell that starts the step
//! tasks it hands out, after the balance [`preflight`]. At most one balance-changing submit per wallet is
//! in flight, so that jobs of different wallets run side by side while one wallet never races its own
//! balance. Each step kind is carried out in [`steps`] by the operation layer ([`crate::ops`]), wrapped in what
//! only a run has: the journal, client references, the per-wallet lock, re-attaching on resume, the
//! step's retry policy and its attempt records. Everything that happens is a
//! [`crate::model::Event`]; the reporters in [`crate::report`] turn the stream into the terminal view and
//! the files of the run directory.

pub mod cache;
pub mod dispatch;
#[cfg(test)]
mod execute_tests;
pub mod from_run;
pub mod journal;
pub mod lock;
pub mod preflight;
pub mod reserve;
pub mod runner;
pub mod session;
pub mod steps;

pub use runner::{RunOptions, RunOutcome, execute};
