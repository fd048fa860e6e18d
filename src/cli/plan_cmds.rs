//! `validate` and `schema`. (Being built: see issue 2.)

use std::path::PathBuf;

/// `validate PLAN...`
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Plan files.
    #[arg(required = true)]
    pub plans: Vec<PathBuf>,
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
/// Runs `schema`.
pub fn schema(_a: SchemaArgs) -> i32 {
    eprintln!("not built yet");
    crate::exit::INVALID
}
