//! `coordinator serve`: runs the embedded coordinator ([`crate::local`]) until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::exit;
use crate::local::{self, Faults, LocalConfig, LocalError, WorkerLatency};
use crate::money::Money;

/// Coordinator commands.
#[derive(Debug, clap::Subcommand)]
pub enum CoordinatorCommand {
    /// Serve the embedded coordinator's HTTP API.
    Serve(ServeArgs),
}

/// Worker latency presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LatencyPreset {
    /// Jobs finish at once (tests, benchmarks).
    Instant,
    /// 200 ms … 2 s by job type.
    Default,
}

/// `coordinator serve` options. (`Debug` leaves the tokens out.)
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8203")]
    pub listen: SocketAddr,
    /// SQLite file that keeps jobs, wallets, receipts and the signing key across restarts.
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Set a wallet's balance exactly (repeatable).
    #[arg(long, value_name = "WALLET=AMOUNT", value_parser = parse_fund)]
    pub fund: Vec<(String, Money)>,
    /// Do not grant 10,000 AITBC to new wallets.
    #[arg(long)]
    pub no_faucet: bool,
    /// Client token to accept (repeatable: each token is a separate client). Generated and printed when
    /// absent.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AITBC_TOKEN",
        hide_env_values = true
    )]
    pub token: Vec<String>,
    /// Ollama base URL for `ollama` jobs (e.g. http://127.0.0.1:11434).
    #[arg(long, value_name = "URL")]
    pub ollama: Option<String>,
    /// Built-in worker latency.
    #[arg(long, value_enum, default_value = "default")]
    pub latency: LatencyPreset,
    /// How many jobs run at once.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Fault injection: add this many milliseconds to each request.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub fault_latency: u64,
    /// Fault injection: share of requests answered 503 (0 … 1).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_503_rate: f64,
    /// Fault injection: share of requests answered 429 with `Retry-After` (0 … 1).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_429_rate: f64,
    /// Fault injection: the `Retry-After` seconds of an injected 429.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    pub fault_retry_after: u64,
    /// Fault injection: share of requests handled, then dropped without an answer (0 … 1).
    #[arg(long, value_name = "R", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_drop_rate: f64,
    /// Fault injection: only touch requests whose path starts with this prefix.
    #[arg(long, value_name = "PREFIX")]
    pub fault_path: Option<String>,
    /// Fault injection: seed for the draws, for repeatable runs.
    #[arg(long, value_name = "N")]
    pub fault_seed: Option<u64>,
    /// Fault injection: refuse every refund (400 `Failed to refund payment`), as the real service does
    /// when its chain is unreachable.
    #[arg(long)]
    pub fault_refuse_refunds: bool,
    /// Behave as the real service where that would surprise a local user: no refund on cancel,
    /// failure or expiry (ask with `POST /v1/payments/{id}/refund`), the job view still saying
    /// `escrowed` after a refund, jobs paid 10 AITBC or more ending COMPLETED with a ZK `error`
    /// and their payment left in escrow, and a result posted after a cancel turning the job COMPLETED.
    #[arg(long)]
    pub real_quirks: bool,
    /// The real service's rate limits: `real` (50 submits, 200 reads per endpoint, 50 cancels, 20
    /// allocations, 20 logins in any 60 s, 429 with `Retry-After: 60` past them), `off`, or e.g.
    /// `submit=10,read=40,window=5s`.
    #[arg(long, value_name = "LIMITS", default_value = "off", value_parser = crate::limits::RateLimits::parse)]
    pub rate_limits: crate::limits::RateLimits,
    /// How long a session token from `POST /v1/login` is valid.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub token_ttl: crate::duration::Dur,
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("db", &self.db)
            .field("tokens", &self.token.len())
            .finish_non_exhaustive()
    }
}

fn parse_fund(s: &str) -> Result<(String, Money), String> {
    let (wallet, amount) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not WALLET=AMOUNT"))?;
    let wallet = wallet.trim();
    if wallet.is_empty() {
        return Err(format!("`{s}` names no wallet"));
    }
    let amount: Money = amount.parse()?;
    if amount.is_negative() {
        return Err(format!("`{s}`: a balance cannot be negative"));
    }
    Ok((wallet.to_string(), amount))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number between 0 and 1"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("`{s}` is not between 0 and 1"))
    }
}

impl ServeArgs {
    /// The coordinator configuration these options describe.
    pub fn config(&self) -> LocalConfig {
        let mut tokens = self.token.iter().filter(|t| !t.is_empty()).cloned();
        LocalConfig {
            listen: self.listen,
            db: self.db.clone(),
            fund: self.fund.clone(),
            faucet: !self.no_faucet,
            token: tokens.next(),
            extra_tokens: tokens.collect(),
            ollama: self.ollama.clone(),
            latency: match self.latency {
                LatencyPreset::Instant => WorkerLatency::instant(),
                LatencyPreset::Default => WorkerLatency::realistic(),
            },
            faults: Faults {
                latency: Duration::from_millis(self.fault_latency),
                rate_503: self.fault_503_rate,
                rate_429: self.fault_429_rate,
                retry_after_secs: self.fault_retry_after,
                drop_rate: self.fault_drop_rate,
                path_prefix: self.fault_path.clone(),
                seed: self.fault_seed,
                refuse_refunds: self.fault_refuse_refunds,
            },
            workers: self.workers,
            real_quirks: self.real_quirks,
            rate_limits: self.rate_limits,
            token_ttl: self.token_ttl.get(),
        }
    }
}

/// Runs a coordinator command.
pub fn execute(c: CoordinatorCommand) -> i32 {
    match c {
        CoordinatorCommand::Serve(args) => serve(&args),
    }
}

fn serve(args: &ServeArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return exit::STEP_FAILED;
        }
    };
    runtime.block_on(async {
        let handle = match local::start(args.config()).await {
            Ok(h) => h,
            Err(e) => {
                errln!("error: {e}");
                return match e {
                    LocalError::Config(_) => exit::INVALID,
                    _ => exit::STEP_FAILED,
                };
            }
        };
        errln!("local coordinator listening on {}", handle.url());
        if !args.rate_limits.is_off() {
            errln!("rate limits: {}", args.rate_limits);
        }
        if handle.token_generated() {
            errln!(
                "token: {} (send `Authorization: Bearer <token>`; choose one with --token or AITBC_TOKEN)",
                handle.token()
            );
        }
        wait_for_signal().await;
        match handle.shutdown().await {
            Ok(()) => {
                errln!("local coordinator stopped");
                exit::SUCCESS
            }
            Err(e) => {
                errln!("error: local coordinator stopped uncleanly: {e}");
                exit::STEP_FAILED
            }
        }
    })
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve_args(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec!["aitbc-flow", "coordinator", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Coordinator(CoordinatorCommand::Serve(a)) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_become_a_config() {
        let a = serve_args(&[
            "--listen",
            "127.0.0.1:0",
            "--fund",
            "w=12.5",
            "--fund",
            "v=0",
            "--no-faucet",
            "--token",
            "a",
            "--token",
            "b",
            "--latency",
            "instant",
            "--fault-latency",
            "250",
            "--fault-503-rate",
            "0.1",
            "--fault-429-rate",
            "0.2",
            "--fault-retry-after",
            "3",
            "--fault-drop-rate",
            "0.3",
            "--fault-path",
            "/v1/jobs",
            "--fault-seed",
            "7",
            "--fault-refuse-refunds",
            "--real-quirks",
        ])
        .unwrap();
        let c = a.config();
        assert_eq!(
            c.fund,
            vec![
                ("w".into(), "12.5".parse().unwrap()),
                ("v".into(), Money::ZERO)
            ]
        );
        assert!(!c.faucet);
        assert_eq!(
            (c.token.as_deref(), c.extra_tokens.clone()),
            (Some("a"), vec!["b".to_string()])
        );
        assert_eq!(c.latency, WorkerLatency::instant());
        assert_eq!(
            c.faults,
            Faults {
                latency: Duration::from_millis(250),
                rate_503: 0.1,
                rate_429: 0.2,
                retry_after_secs: 3,
                drop_rate: 0.3,
                path_prefix: Some("/v1/jobs".into()),
                seed: Some(7),
                refuse_refunds: true,
            }
        );
        assert!(c.real_quirks);
    }

    #[test]
    fn defaults_and_bad_values() {
        let c = serve_args(&[]).unwrap().config();
        assert_eq!(c.listen, "127.0.0.1:8203".parse().unwrap());
        assert!(c.faucet);
        assert_eq!(c.latency, WorkerLatency::realistic());
        assert!(c.faults.is_off());
        assert!(!c.faults.refuse_refunds && !c.real_quirks);
        assert!(serve_args(&["--fund", "w"]).is_err());
        assert!(serve_args(&["--fund", "w=-1"]).is_err());
        assert!(serve_args(&["--fund", "=5"]).is_err());
        assert!(serve_args(&["--fault-503-rate", "1.5"]).is_err());
        assert!(serve_args(&["--latency", "slow"]).is_err());
    }
}
