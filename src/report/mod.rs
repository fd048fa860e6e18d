//! Reporters fed by the run's event stream: the terminal view, `report.json`, `summary.md`,
//! `junit.xml`, `report.html` and `events.jsonl`; what reads them back: the history of runs and
//! `runs show`'s rendering for the terminal; and the dry run of a plan, which shows what a run would do.

pub mod dry_run;
pub mod history;
pub mod html;
pub mod model;
pub mod provenance;
pub mod repro;
pub mod show;
pub mod style;
pub mod terminal;
pub mod text;
pub mod writers;

pub use model::{Report, RunStatus, StepReport, StepState, report_schema};
