//! `coordinator serve`. (Being built: see issue 3.)

/// Coordinator commands.
#[derive(Debug, clap::Subcommand)]
pub enum CoordinatorCommand {
    /// Serve the embedded coordinator's HTTP API.
    Serve,
}

/// Runs a coordinator command.
pub fn execute(_c: CoordinatorCommand) -> i32 {
    eprintln!("not built yet");
    crate::exit::INVALID
}
