//! The conformance suite: the real `aitbc-flow` binary against the real AITBC coordinator (upstream
//! `coordinator-api`, its stand-in miner, the stand-in chain and wallet, the upstream wallet daemon),
//! all on 127.0.0.1 as `../shared/realcoord` sets them up; and the upstream `aitbc` CLI against
//! `aitbc-flow coordinator serve`. What it covers and how to run it: docs/real-coordinator.md.
//!
//! ```sh
//! RC=/tmp/rc-conf ../shared/realcoord/setup.sh     # once (~5 min: Python 3.13, PyPI)
//! RC=/tmp/rc-conf cargo test --locked --test conformance
//! ```
//!
//! Not part of a plain `cargo test` (the target has `test = false`). Without `../shared` beside the
//! clone it skips with one line, except under `CI=true`, where that is a failure. The checks run one
//! after the other: they share one coordinator whose rate limits (per client IP, sliding windows of
//! 60 s) are on, so the order matters — the 80-job run comes first, on empty windows, and the checks
//! after it wait until its windows have emptied. Everything it starts is stopped on the way out, on a
//! failure, and on SIGINT/SIGTERM.

mod checks;
mod flow;
mod rc;
mod suite;
#[path = "../support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use checks::{commands, login, money, pacing, plans, upstream_cli, wallet};
use rc::{Paths, Service};
use suite::Suite;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared");
    let realcoord = shared.join("realcoord");
    if !shared.join("upstream/aitbc").is_dir() || !realcoord.join("start.sh").is_file() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!(
                "conformance: FAILED: {} has no upstream/aitbc or realcoord, and CI=true: in CI the suite must run",
                shared.display()
            );
            return ExitCode::FAILURE;
        }
        println!(
            "conformance: skipped: no ../shared/upstream/aitbc beside this clone (the suite needs the upstream AITBC subset; see docs/real-coordinator.md)"
        );
        return ExitCode::SUCCESS;
    }
    let paths = Paths {
        realcoord: realcoord.canonicalize().unwrap_or(realcoord),
        rc: std::env::var_os("RC")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/rc-conf")),
        port: std::env::var("RC_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(8203),
    };
    for venv in ["venv", "clivenv"] {
        if !paths.rc.join(venv).join(".ok").is_file() {
            eprintln!(
                "conformance: FAILED: no Python environment at {}: run `RC={} ../shared/realcoord/setup.sh` first (about 5 minutes the first time)",
                paths.rc.join(venv).display(),
                paths.rc.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let left = rc::leftovers(&paths);
    if !left.is_empty() {
        println!(
            "conformance: stopping what an earlier run left in {}: {}",
            paths.rc.display(),
            left.join(", ")
        );
        rc::cleanup(&paths);
    }
    let busy = rc::busy_ports(&paths);
    if !busy.is_empty() {
        eprintln!(
            "conformance: FAILED: ports {busy:?} on 127.0.0.1 are taken; the suite needs {} (RC_PORT), {} and {}",
            paths.port,
            rc::CHAIN_PORT,
            rc::WALLET_PORT
        );
        return ExitCode::FAILURE;
    }
    stop_on_signals(paths.clone());
    let _stop = StopOnDrop(paths.clone());
    println!(
        "conformance: the real AITBC coordinator on {} (RC={}), aitbc-flow at {}",
        paths.url(),
        paths.rc.display(),
        flow::bin()
    );
    let mut suite = Suite::new(std::env::var("CONFORMANCE_ONLY").ok());
    run(&mut suite, &paths);
    suite.finish()
}

/// The phases, in the order the rate limits and the stand-ins need.
fn run(suite: &mut Suite, paths: &Paths) {
    // The service takes about a minute to start: meanwhile, the other direction, which needs only
    // the upstream CLI and `coordinator serve`.
    let starting = {
        let p = paths.clone();
        std::thread::spawn(move || Service::start(p))
    };
    suite.run("upstream-cli/against-coordinator-serve", |c| {
        upstream_cli::against_serve(c, paths)
    });
    let svc = match starting.join() {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return suite.environment_failed("start the service", e),
        Err(_) => {
            return suite.environment_failed("start the service", "the start panicked".into());
        }
    };

    // Stand-in chain and wallet, empty windows: the 80 jobs.
    let mut windows_busy_until: Option<Instant> = None;
    suite.run("pacing/80-jobs-no-429", |c| {
        windows_busy_until = Some(pacing::eighty_jobs(c, &svc) + Duration::from_secs(61));
    });

    // While those windows empty: what needs no submit. The real wallet daemon takes the stand-in
    // wallet's port.
    svc.stub_wallet_down();
    match svc.wallet_daemon_up() {
        Ok(()) => {
            suite.run("wallet-daemon/balance-in-aitbc", |c| {
                wallet::balance_in_aitbc(c, &svc)
            });
            suite.run("wallet-daemon/unknown-wallet", |c| {
                wallet::unknown_wallet(c, &svc)
            });
            suite.run("wallet-daemon/unpayable-plan-refused", |c| {
                wallet::unpayable_plan_refused(c, &svc)
            });
            suite.run("login/session-token", |c| login::session(c, &svc));
            wait_for_windows(windows_busy_until);
            suite.run("wallet-daemon/payer-address", |c| {
                wallet::payer_address(c, &svc)
            });
        }
        Err(e) => {
            suite.environment_failed("start the wallet daemon", e);
            wait_for_windows(windows_busy_until);
        }
    }
    svc.wallet_daemon_down();
    if let Err(e) = svc.stub_wallet_up() {
        return suite.environment_failed("start the stand-in wallet again", e);
    }

    // Stand-in chain and wallet: the example plans, each command, refunds, resume.
    for plan in flow::example_plans() {
        let name = plan
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        suite.run(&format!("plans/{name}"), |c| plans::example(c, &svc, &plan));
    }
    suite.run("job/commands", |c| commands::job_commands(c, &svc));
    suite.run("job/cancel-and-refund", |c| {
        commands::job_cancel_refund(c, &svc)
    });
    suite.run("op/operations", |c| commands::op_operations(c, &svc));
    suite.run("run/cancel-with-refund", |c| {
        money::run_cancel_refund(c, &svc)
    });
    suite.run("resume/after-kill-9", |c| plans::kill9_resume(c, &svc));
    suite.run("resume/after-crash-between-intent-and-submit", |c| {
        plans::crash_after_intent_resume(c, &svc)
    });
    suite.run("balance/no-wallet-daemon", |c| {
        money::balance_check_off(c, &svc)
    });
    suite.run("login/token-outlived-by-timeouts", |c| {
        login::token_lifetime(c, &svc)
    });

    // No chain behind the coordinator: paid submits block it ~7 s, refunds are refused.
    svc.chain_down();
    suite.run("no-chain/paid-jobs-and-refused-refund", |c| {
        money::no_chain(c, &svc)
    });
}

/// Sleeps until the service's windows hold nothing of the 80-job run.
fn wait_for_windows(until: Option<Instant>) {
    if let Some(t) = until
        && let Some(left) = t.checked_duration_since(Instant::now())
    {
        println!(
            "  ..    waiting {}s for the service's 60 s windows to empty after the 80 jobs",
            left.as_secs()
        );
        std::thread::sleep(left);
    }
}

/// Stops everything on the way out (also after a panic).
struct StopOnDrop(Paths);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        rc::cleanup(&self.0);
    }
}

/// On SIGINT or SIGTERM: stop everything, exit 130.
fn stop_on_signals(paths: Paths) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("conformance: interrupted: stopping everything it started");
        flow::kill_children();
        rc::cleanup(&paths);
        std::process::exit(130);
    });
}
