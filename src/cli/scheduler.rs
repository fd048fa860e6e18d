//! `scheduler` (run scheduled plans as a long-lived process, or once from system cron) and the
//! `--lock` flags of `run`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::duration::Dur;
use crate::exec::journal::{Mirror, MirrorError};
use crate::exec::lock::{LockInfo, POLL};
use crate::exit;
use crate::plan::CheckedPlan;
use crate::plan::types::Overlap;
use crate::store::{HeldLock, LockAttempt, Store};

/// The lock flags of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct LockFlags {
    /// Take the plan's lock in RUNS/.locks/ for the run; while another run holds it, the plan's
    /// `schedule.overlap` decides: skip (default, exit 0), queue (wait) or allow (run anyway).
    #[arg(long)]
    pub lock: bool,
    /// With `--lock` and `overlap: queue`: how long to wait for the lock (then exit 4).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub lock_timeout: Dur,
    #[command(flatten)]
    pub store: StoreArg,
}

/// `--store`, of `run`, `resume` and `runs`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArg {
    /// Where locks, journals and run history are shared: a `postgres://user:password@host/db` URL
    /// shares them between hosts (docs/scaling.md); without it, the run folder of this host.
    #[arg(
        long,
        env = "AITBC_FLOW_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub store: Option<String>,
}

impl StoreArg {
    /// Opens the store (the run folder `runs_dir` without `--store`); `Err(code)` after saying why.
    pub fn open(&self, runs_dir: &Path) -> Result<Box<dyn Store>, i32> {
        crate::store::open(self.store.as_deref(), runs_dir).map_err(|e| {
            errln!("error: {e}");
            exit::INVALID
        })
    }
}

/// The store's copy of the run's journal (`None` for the run folder store), fenced by `lock`; a run
/// that loses its lock stops at once with [`exit::LOCK_LOST`], whether its next journal write finds
/// out or its heartbeat does (watched here). `Err(code)` after saying why.
pub fn journal_mirror(
    store: &dyn Store,
    plan: &str,
    run_id: &str,
    lock: Option<&HeldLock>,
) -> Result<Option<Arc<dyn Mirror>>, i32> {
    let mirror = store.journal_mirror(run_id, plan, lock).map_err(|e| {
        errln!("error: {e}");
        exit::INVALID
    })?;
    let Some(inner) = mirror else {
        return Ok(None);
    };
    if let Some(HeldLock::Lease(lease)) = lock {
        let held = lease.held_flag();
        let plan = plan.to_string();
        std::thread::spawn(move || {
            while held.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            lost_lock(&format!(
                "the lock of {plan} was taken over by another run (its lease was not renewed in time)"
            ));
        });
    }
    Ok(Some(Arc::new(StopOnFence(inner))))
}

/// Ends the process: another holder has the plan's lock, so this run must not write or send more.
fn lost_lock(why: &str) -> ! {
    errln!(
        "error: {why}; this run stops here and writes nothing more (exit {}): the new holder goes on",
        exit::LOCK_LOST
    );
    std::process::exit(exit::LOCK_LOST)
}

/// A journal copy whose fenced write ends the process.
#[derive(Debug)]
struct StopOnFence(Arc<dyn Mirror>);

impl Mirror for StopOnFence {
    fn write(&self, records: &[Vec<u8>]) -> Result<(), MirrorError> {
        match self.0.write(records) {
            Err(MirrorError::Fenced(why)) => lost_lock(&why),
            other => other,
        }
    }
}

/// Takes the run lock when `--lock` is given. `Ok(None)`: no lock taken, run anyway (no `--lock`,
/// or `overlap: allow` with the lock held). `Err(code)`: do not run; exit with `code` (0 for a
/// skipped run). Messages go to stderr.
pub fn take_run_lock(
    flags: &LockFlags,
    plan: &CheckedPlan,
    store: &dyn Store,
    run_id: &str,
) -> Result<Option<HeldLock>, i32> {
    if !flags.lock {
        return Ok(None);
    }
    let name = &plan.plan.name;
    let overlap = plan
        .plan
        .schedule
        .as_ref()
        .and_then(|s| s.overlap)
        .unwrap_or(Overlap::Skip);
    let me = LockInfo::current(name, run_id);
    let started = Instant::now();
    let mut said_waiting = false;
    loop {
        match store.try_lock(&me) {
            Err(e) => {
                errln!("error: {e}");
                return Err(exit::INVALID);
            }
            Ok(LockAttempt::Taken(lock, stale)) => {
                if let Some((info, reason)) = stale {
                    let who = info
                        .map(|i| format!(" ({})", i.describe()))
                        .unwrap_or_default();
                    errln!("note: taking over the stale lock of {name}{who}: {reason}",);
                }
                return Ok(Some(lock));
            }
            Ok(LockAttempt::Held(info)) => {
                let who = info
                    .map(|i| format!(" ({})", i.describe()))
                    .unwrap_or_default();
                match overlap {
                    Overlap::Skip => {
                        errln!(
                            "another run of {name}{who} holds the lock; skipping (overlap: skip)"
                        );
                        return Err(exit::SUCCESS);
                    }
                    Overlap::Allow => {
                        errln!(
                            "another run of {name}{who} holds the lock; running anyway (overlap: allow)"
                        );
                        return Ok(None);
                    }
                    Overlap::Queue => {
                        if started.elapsed() >= flags.lock_timeout.get() {
                            errln!(
                                "error: another run of {name}{who} still holds the lock after {}; giving up",
                                flags.lock_timeout
                            );
                            return Err(exit::TIMEOUT);
                        }
                        if !said_waiting {
                            errln!(
                                "another run of {name}{who} holds the lock; waiting up to {} (overlap: queue)",
                                flags.lock_timeout
                            );
                            said_waiting = true;
                        }
                        std::thread::sleep(POLL);
                    }
                }
            }
        }
    }
}

/// `scheduler --plans DIR`
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// The folder of plans; those with a `schedule:` block are run when due.
    #[arg(long, value_name = "DIR")]
    pub plans: PathBuf,
    /// Where run directories go (and the lock and state files, under `.locks/` and `.scheduler/`).
    #[arg(
        long,
        env = "AITBC_RUNS_DIR",
        default_value = "runs",
        value_name = "DIR"
    )]
    pub runs_dir: PathBuf,
    /// Run what is due now (catch-up included), wait for those runs, and exit.
    #[arg(long)]
    pub once: bool,
    /// Pretend the time is this (RFC 3339), for tests; the clock runs on from it.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// A due time no older than this is run even with `catch_up: none`.
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub grace: Dur,
    /// On SIGINT/SIGTERM, how long to wait for running runs before exiting (they go on).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub shutdown_wait: Dur,
    /// Share the schedule with the schedulers of other hosts through this store (a
    /// `postgres://…` URL): each due time runs once on one of them, and a run whose host died is
    /// resumed by another (docs/scaling.md).
    #[command(flatten)]
    pub store: StoreArg,
    /// Extra arguments for every `run` (after `--`), e.g. `-- --concurrency 4`.
    #[arg(last = true, value_name = "RUN-ARGS")]
    pub run_args: Vec<String>,
}

/// Runs `scheduler`.
pub fn scheduler(a: SchedulerArgs) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            errln!("error: cannot find this executable to start runs: {e}");
            return exit::INVALID;
        }
    };
    if !a.plans.is_dir() {
        errln!("error: {} is not a folder of plans", a.plans.display());
        return exit::INVALID;
    }
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
    let store = match a
        .store
        .store
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        None => None,
        Some(url) => match crate::store::open(Some(url), &a.runs_dir) {
            Ok(s) => Some(crate::sched::daemon::SharedStore {
                store: Arc::from(s),
                url: url.to_string(),
            }),
            Err(e) => {
                errln!("error: {e}");
                return exit::INVALID;
            }
        },
    };
    let opts = crate::sched::daemon::Options {
        plans_dir: a.plans,
        runs_dir: a.runs_dir,
        once: a.once,
        now: a.now.map(|t| t.with_timezone(&chrono::Utc)),
        grace: a.grace.get(),
        shutdown_wait: a.shutdown_wait.get(),
        run_args: a.run_args,
        exe,
    };
    // The store has a runtime of its own, which must not be dropped inside this one: this copy is
    // the last, dropped after the scheduler's runtime.
    let kept = store.as_ref().map(|s| s.store.clone());
    let code = runtime.block_on(async move {
        let shutdown = crate::exec::session::interrupt_on_signals();
        crate::sched::daemon::run(opts, store, shutdown).await
    });
    drop(runtime);
    drop(kept);
    code
}
