//! `validate`, `plan`, `graph`, `schema`. (Being built: see issue 2.)

use std::path::PathBuf;

/// `validate PLAN...`
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Plan files.
    #[arg(required = true)]
    pub plans: Vec<PathBuf>,
}
/// `plan PLAN`
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The plan file.
    pub plan: PathBuf,
}
/// `graph PLAN`
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The plan file.
    pub plan: PathBuf,
}
/// `schema plan|report`
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Which schema.
    pub which: String,
}

/// Runs `validate`.
pub fn validate(_a: ValidateArgs) -> i32 {
    eprintln!("not built yet");
    crate::exit::INVALID
}
/// Runs `plan`.
pub fn plan(_a: PlanArgs) -> i32 {
    eprintln!("not built yet");
    crate::exit::INVALID
}
/// Runs `graph`.
pub fn graph(_a: GraphArgs) -> i32 {
    eprintln!("not built yet");
    crate::exit::INVALID
}
/// Runs `schema`.
pub fn schema(_a: SchemaArgs) -> i32 {
    eprintln!("not built yet");
    crate::exit::INVALID
}
