//! aitbc-flow: a declarative workflow runner for AI jobs on the AITBC compute network.
//!
//! Data flows one way: plan file → loaded plan ([`plan`]) → checked plan → run ([`exec`]) → report
//! ([`report`]). The coordinator is reached through the [`client::Coordinator`] trait; the embedded
//! [`local`] coordinator serves the same HTTP API for a machine with nothing else started.

// Diagnostics are large and travel only on the cold path of a failed load or render.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod crash;
pub mod duration;
pub mod exec;
pub mod exit;
pub mod limits;
pub mod local;
pub mod mcp;
pub mod model;
pub mod money;
pub mod op;
pub mod ops;
pub mod plan;
pub mod policy;
pub mod report;
pub mod sched;
pub mod store;
pub mod text;
