//! The shared model: the words every layer speaks — job types and their facts, the requests a plan
//! renders and the operations send, the operator skill's outcome of an operation, a step's report, the
//! run's status and its event stream.
//!
//! It sits below everything that produces or consumes these (the plan checker, the operation layer, the
//! executor and the reporters), so that each of those depends on the model and none on another: that is
//! what keeps the module graph one-way (plan file → checked plan → run → report).

pub mod events;
pub mod hints;
pub mod job_type;
pub mod json_text;
pub mod outcome;
pub mod request;
pub mod step;
pub mod suggest;

pub use events::Event;
pub use job_type::JobType;
pub use json_text::JsonText;
pub use outcome::{OpStatus, Operation, Outcome, ValidationStatus};
pub use request::{JobRequest, OptimizeRequest};
pub use step::{Attempt, CachedFrom, ReceiptCheck, RunInputs, RunStatus, StepReport, StepState};
