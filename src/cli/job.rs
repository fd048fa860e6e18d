//! `job …` and `op`. (Being built: see issue 3.)

/// Job commands.
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Submit a job.
    Submit,
}
/// `op`
#[derive(Debug, clap::Args)]
pub struct OpArgs {}

/// Runs a job command.
pub fn execute(_c: JobCommand) -> i32 {
    eprintln!("not built yet");
    crate::exit::INVALID
}
/// Runs `op`.
pub fn op(_a: OpArgs) -> i32 {
    eprintln!("not built yet");
    crate::exit::INVALID
}
