//! The executor: runs a [`CheckedPlan`](crate::plan::CheckedPlan) against a
//! [`Coordinator`](crate::client::Coordinator).
//!
//! A scheduler ([`runner`]) starts each step when what it needs is done, up to a concurrency limit, and
//! lets at most one balance-changing submit per wallet be in flight, so that jobs of different wallets
//! run side by side while one wallet never races its own balance. Each step kind is carried out in
//! [`steps`], with the retry policy of [`retry`]. Everything that happens is an [`events::Event`]; the
//! reporters in [`crate::report`] turn the stream into the terminal view and the files of the run
//! directory.

pub mod cache;
pub mod crash;
pub mod events;
pub mod journal;
pub mod lock;
pub mod retry;
pub mod runner;
pub mod session;
pub mod steps;

pub use runner::{RunOptions, RunOutcome, execute};
