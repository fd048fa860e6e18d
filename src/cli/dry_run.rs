//! `plan` (the dry run) and `graph`. (Being built: see issue 2.)

use std::path::PathBuf;

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
