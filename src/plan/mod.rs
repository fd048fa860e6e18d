//! Plans: loading a YAML plan, checking it against the JSON Schema and the rules, templating, and the
//! step graph. Everything here happens before a coordinator is contacted, and is plain (not async) code.
//!
//! The flow, driven by [`check::load`]: [`source`] reads the file once and parses its bytes into JSON
//! values with a map of positions (the same bytes are hashed) → [`schema`] validates against
//! `schemas/plan.schema.json` and serde builds the [`types::Plan`] → [`check`] applies `--vars` and
//! `--set` ([`overrides`]), reads the environment and secrets, checks the [`schedule`], and checks each
//! step: its kind, its [`matrix`], the names its templates read, what it needs, the templates known now
//! (rendered with [`template`]) and the [`static_policy`] → a [`CheckedPlan`] ([`checked`]), the only
//! thing the executor accepts, which renders the rest at run time ([`render`]).
//!
//! `plan` depends on no module that runs plans: the scheduler ([`crate::sched`]) uses [`schedule`]
//! from here, never the other way.

pub mod check;
pub mod checked;
pub mod codes;
pub mod diag;
pub mod files_read;
pub mod graph;
pub mod inputs;
pub mod kinds;
pub mod limits;
pub mod matrix;
pub mod names;
pub mod needs;
pub mod overrides;
pub mod render;
pub mod render_static;
pub mod salvage;
pub mod schedule;
pub mod schema;
pub mod secrets;
pub mod select;
pub mod source;
pub mod spend;
pub mod static_policy;
pub mod status;
pub mod template;
pub mod typed_inputs;
pub mod types;
pub mod uses;

pub use check::{LoadOptions, load};
pub use checked::{CheckedPlan, PlannedStep, StepKind, StepView};
pub use codes::Code;
pub use diag::{Diagnostic, Location};
