//! `mcp`: the MCP server over stdio ([`crate::mcp`]), on the coordinator the other commands use (the
//! embedded one when none is configured), with its spend cap and read-only mode.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::job::{ConnectArgs, Connection, connect};
use crate::cli::run::{EmbeddedLatency, parse_fund};
use crate::exit;
use crate::mcp::{Options, Server, serve_stdio};
use crate::money::Money;
use crate::policy::spend::Caps;

/// `mcp`
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Where the coordinator is.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Cap what the server's calls may pay: `AMOUNT` in total, or `WALLET=AMOUNT` for one wallet
    /// (repeatable). What was paid and not refunded counts, resubmissions included.
    #[arg(long = "max-spend", value_name = "[WALLET=]AMOUNT")]
    pub max_spend: Vec<String>,
    /// Offer only the tools that neither pay nor change anything (status, results, list, balance,
    /// validate_plan, plan, run_status, runs_list).
    #[arg(long)]
    pub read_only: bool,
    /// Where runs are written and read.
    #[arg(
        long,
        env = "AITBC_RUNS_DIR",
        default_value = "runs",
        value_name = "DIR"
    )]
    pub runs_dir: PathBuf,
    /// The only folder plans are read from (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub plans_dir: Option<PathBuf>,
    /// Embedded coordinator only: set a wallet's balance (`--fund trading-wallet=750`).
    #[arg(long, value_name = "WALLET=AMOUNT", value_parser = parse_fund)]
    pub fund: Vec<(String, Money)>,
    /// Embedded coordinator only: no 10,000 AITBC grant for new wallets.
    #[arg(long)]
    pub no_faucet: bool,
    /// Embedded coordinator only: worker latency.
    #[arg(long, value_enum, default_value_t = EmbeddedLatency::Default)]
    pub embedded_latency: EmbeddedLatency,
    /// First polling delay while waiting for a job.
    #[arg(long, default_value = "500ms", value_name = "DURATION", hide = true)]
    pub poll_start: crate::duration::Dur,
    /// Embedded coordinator only: every job takes this long (tests of cancelling a long wait).
    #[arg(long, value_name = "DURATION", hide = true)]
    pub embedded_job_time: Option<crate::duration::Dur>,
}

/// Runs `mcp` until the client closes stdin or a signal comes.
pub fn mcp(a: McpArgs) -> i32 {
    let mut caps = Caps::default();
    for v in &a.max_spend {
        if let Err(e) = caps.add(v) {
            errln!("error: --max-spend {e}");
            return exit::INVALID;
        }
    }
    let plans_dir = a.plans_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let plans_dir = match plans_dir.canonicalize() {
        Ok(d) if d.is_dir() => d,
        Ok(d) => {
            errln!("error: --plans-dir {} is not a folder", d.display());
            return exit::INVALID;
        }
        Err(e) => {
            errln!("error: --plans-dir {}: {e}", plans_dir.display());
            return exit::INVALID;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return exit::INVALID;
        }
    };
    let code = runtime.block_on(async {
        let stop = crate::exec::session::interrupt_on_signals();
        let mut local = crate::local::LocalConfig {
            fund: a.fund.clone(),
            faucet: !a.no_faucet,
            ..crate::local::LocalConfig::default()
        };
        if a.embedded_latency == EmbeddedLatency::Instant {
            local.latency = crate::local::WorkerLatency::instant();
        }
        if let Some(d) = a.embedded_job_time {
            local.latency = crate::local::WorkerLatency::uniform(d.get());
        }
        let conn = match connect(&a.connect, local, |url| {
            format!(
                "note: no coordinator configured (--coordinator or AITBC_COORDINATOR_URL): the MCP \
                 server uses an embedded one at {url} whose jobs and wallets live only as long as the \
                 server"
            )
        })
        .await
        {
            Ok(c) => c,
            Err(code) => return code,
        };
        let Connection {
            client,
            local,
            token,
        } = conn;
        if local.is_none() && token.is_none() {
            errln!(
                "error: no credentials for the coordinator at {}: set AITBC_TOKEN to a client token \
                 (or AITBC_TOKEN_FILE to a file that holds one)",
                crate::client::Coordinator::base_url(&client)
            );
            return exit::UNREACHABLE;
        }
        let mut options = Options::new(plans_dir);
        options.read_only = a.read_only;
        options.caps = caps;
        options.runs_dir = a.runs_dir.clone();
        options.embedded = local.as_ref().map(|h| h.url());
        options.secrets = token.iter().map(|t| t.expose().to_string()).collect();
        options.poll.0 = a.poll_start.get().min(options.poll.1);
        let served = serve_stdio(Server::new(Arc::new(client), options), stop).await;
        if let Some(handle) = local
            && let Err(e) = handle.shutdown().await
        {
            tracing::warn!("embedded coordinator did not stop cleanly: {e}");
        }
        match served {
            Ok(()) => exit::SUCCESS,
            Err(e) => {
                errln!("error: {e}");
                exit::INVALID
            }
        }
    });
    // Nothing may keep the process once the session is over (a blocking read of a terminal's stdin).
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}
