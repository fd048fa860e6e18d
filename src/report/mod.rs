//! Reporters fed by the run's event stream: the terminal view, `report.json`, `summary.md`,
//! `junit.xml` and `events.jsonl`; and the dry run of a plan, which shows what a run would do.

pub mod dry_run;
pub mod history;
pub mod model;
pub mod repro;
pub mod terminal;
pub mod writers;

pub use model::{Report, RunStatus, StepReport, StepState, report_schema};
