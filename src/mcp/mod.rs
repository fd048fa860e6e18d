//! `aitbc-flow mcp`: the operator skill as a tool for AI agents — a Model Context Protocol server over
//! stdio, on the official Rust SDK (`rmcp`).
//!
//! It is an entry point like `op`: each tool call becomes the same typed request `op` makes (the
//! skill's input fields, [`crate::op::OpInput`], whose JSON Schema is the tools' input schemas) and runs
//! the same operations ([`crate::ops`]) or the same executor ([`crate::exec`]); what it answers is the
//! skill's output JSON ([`crate::model::Outcome`]) as structured content, or a run's report. What only
//! the server has it wraps around them, as the executor does for a run: the spend cap
//! ([`crate::policy::spend`]) that refuses a payment past what the operator allowed, progress
//! notifications while a call waits, and the cancel (with its refund) of a job whose caller gave up.
//!
//! The files: [`tools`] (the catalogue: names, descriptions, schemas, which tools spend),
//! [`jobs`] (the skill's operations), [`plans`] (validate, dry run, run, run history), [`progress`]
//! (notifications), [`answer`] (a tool's result, with secrets kept out), [`server`] (the protocol
//! handler and the stdio loop).

pub mod answer;
pub mod jobs;
pub mod plans;
pub mod progress;
pub mod server;
pub mod tools;

pub use server::{Options, Server, serve_stdio};
