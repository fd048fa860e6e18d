//! `run`, `resume`, `runs`. (Being built: see issue 4.)

use std::path::PathBuf;

/// `run PLAN`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The plan file.
    pub plan: PathBuf,
}

/// Runs `run`.
pub fn run(_a: RunArgs) -> i32 {
    eprintln!("not built yet");
    crate::exit::INVALID
}
