//! The command line: clap commands, each mapped to one library call, and the mapping of outcomes to
//! exit codes ([`crate::exit`]). Each group of commands lives in its own file.

/// Prints to stdout like `print!`, but a closed stdout (`… | head -1`) ends the output quietly instead of
/// panicking: what the command does goes on, only its printing stops.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `println!` that never panics on a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprint!` that never panics on a closed stderr; a leading `error:`, `warning:` or `note:` is
/// coloured when stderr takes colours.
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = $crate::cli::stderr_palette().message(&format!($($arg)*));
        let _ = write!(std::io::stderr(), "{text}");
    }};
}

/// `eprintln!` that never panics on a closed stderr; a leading `error:`, `warning:` or `note:` is
/// coloured when stderr takes colours.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = $crate::cli::stderr_palette().message(&format!($($arg)*));
        let _ = writeln!(std::io::stderr(), "{text}");
    }};
}

pub mod coordinator;
pub mod dry_run;
pub mod job;
pub mod login;
pub mod mcp;
pub mod plan_cmds;
pub mod run;
pub mod scheduler;

use std::io::IsTerminal as _;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::report::style::{Palette, TermEnv};

/// The colours of stderr: on a terminal unless `NO_COLOR`, or anywhere with `CLICOLOR_FORCE`. Read
/// when a message is printed (messages are few), so that nothing global is kept.
pub fn stderr_palette() -> Palette {
    Palette::new(TermEnv::from_env().colour(std::io::stderr().is_terminal()))
}

/// A declarative workflow runner for AI jobs on the AITBC compute network.
#[derive(Debug, Parser)]
#[command(name = "aitbc-flow", version, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check plans against the schema and the rules; report every problem in every file.
    Validate(plan_cmds::ValidateArgs),
    /// Dry run: the steps in order, rendered prompts (secrets redacted) and the spend per wallet.
    Plan(dry_run::PlanArgs),
    /// Draw a plan's step graph as Mermaid or Graphviz dot.
    Graph(dry_run::GraphArgs),
    /// Print a JSON Schema (`plan` or `report`).
    Schema(plan_cmds::SchemaArgs),
    /// Run a plan.
    Run(run::RunArgs),
    /// Resume a run that stopped: keep what succeeded, re-attach to submitted jobs, run the rest.
    Resume(run::ResumeArgs),
    /// The history of runs: list, show, prune.
    #[command(subcommand)]
    Runs(run::RunsCommand),
    /// Run the embedded local coordinator.
    #[command(subcommand)]
    Coordinator(coordinator::CoordinatorCommand),
    /// Operate on single jobs: submit, status, results, list, cancel, optimize, balance.
    Job(job::JobArgs),
    /// Read the operator skill's input JSON on stdin and print its output JSON.
    Op(job::OpArgs),
    /// Log in with the wallet's key and write a session token to AITBC_TOKEN_FILE.
    Login(login::LoginArgs),
    /// Serve the operator skill's operations and the plan commands as tools for AI agents (MCP over
    /// stdio), with a spend cap.
    Mcp(mcp::McpArgs),
    /// Run the plans of a folder on their `schedule:` (long-lived, or `--once` from system cron).
    Scheduler(scheduler::SchedulerArgs),
    /// Print a shell's completion script: `aitbc-flow completions bash > /etc/bash_completion.d/aitbc-flow`.
    Completions(CompletionsArgs),
    /// Print the man page (`aitbc-flow man | man -l -`), or write one per command into a folder.
    Man(ManArgs),
}

/// `completions SHELL`
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, powershell or elvish.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man [--dir DIR]`
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `aitbc-flow.1` and a page for every subcommand (`aitbc-flow-run.1`, …) into this folder.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

fn completions(a: CompletionsArgs) -> i32 {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "aitbc-flow", &mut out);
    out!("{}", String::from_utf8_lossy(&out));
    crate::exit::SUCCESS
}

fn man(a: ManArgs) -> i32 {
    let cmd = Cli::command();
    match a.dir {
        Some(dir) => {
            let written =
                std::fs::create_dir_all(&dir).and_then(|_| clap_mangen::generate_to(cmd, &dir));
            match written {
                Ok(()) => {
                    outln!("man pages written to {}", dir.display());
                    crate::exit::SUCCESS
                }
                Err(e) => {
                    errln!(
                        "error: cannot write the man pages to {}: {e}",
                        dir.display()
                    );
                    crate::exit::INVALID
                }
            }
        }
        None => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => {
                    out!("{}", String::from_utf8_lossy(&out));
                    crate::exit::SUCCESS
                }
                Err(e) => {
                    errln!("error: cannot render the man page: {e}");
                    crate::exit::INVALID
                }
            }
        }
    }
}

/// Parses the command line, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                crate::exit::INVALID
            } else {
                crate::exit::SUCCESS
            };
            let _ = e.print();
            return code;
        }
    };
    init_logging();
    match cli.command {
        Command::Validate(a) => plan_cmds::validate(a),
        Command::Plan(a) => dry_run::plan(a),
        Command::Graph(a) => dry_run::graph(a),
        Command::Schema(a) => plan_cmds::schema(a),
        Command::Run(a) => run::run(a),
        Command::Resume(a) => run::resume(a),
        Command::Runs(c) => run::runs(c),
        Command::Coordinator(c) => coordinator::execute(c),
        Command::Job(c) => job::execute(c),
        Command::Op(a) => job::op(a),
        Command::Login(a) => login::login(a),
        Command::Mcp(a) => mcp::mcp(a),
        Command::Scheduler(a) => scheduler::scheduler(a),
        Command::Completions(a) => completions(a),
        Command::Man(a) => man(a),
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A log line that cannot be written (stderr closed, `2>&1 | head`) is dropped: the subscriber's own
    // report of it would be an `eprintln!`, which panics in whatever task was logging.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .try_init();
}
