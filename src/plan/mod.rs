//! Plans: loading a YAML plan, checking it against the JSON Schema and the rules, templating, and the
//! step graph. Everything here happens before a coordinator is contacted, and is plain (not async) code.
//!
//! The flow is: [`source`] parses YAML into JSON values with a map of positions → [`schema`] validates
//! against `schemas/plan.schema.json` → serde builds the [`types::Plan`] → [`check`] renders what can be
//! rendered now ([`template`]), expands matrices, builds the [`graph`] and applies the static policy →
//! a [`CheckedPlan`], the only thing the executor accepts.
//!
//! `plan` depends on no module that runs plans: the scheduler ([`crate::sched`]) uses [`schedule`]
//! from here, never the other way.

pub mod check;
pub mod diag;
pub mod graph;
pub mod render;
pub mod schedule;
pub mod schema;
pub mod source;
pub mod template;
pub mod types;

pub use check::{CheckedPlan, LoadOptions, PlannedStep, StepKind, StepView, load};
pub use diag::{Diagnostic, Location};
