//! Takeover of a dead host's runs: with a shared store, each pass of the scheduler asks the store for
//! runs whose lease lapsed and whose journal (in the database) does not end with an `end` (their host died
//! mid-run), and starts `resume RUN-ID` for each, here. Every host's scheduler may start one; the
//! plan's lock (a new fencing token) lets one of them resume it and the others skip, so each step's
//! job is still submitted once (docs/scaling.md).

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::daemon::{Clock, Options, Shared, log};
use crate::store::Orphan;

/// The runs this scheduler is resuming, and those whose resume failed (not tried again by this
/// process: a resume that cannot start — a plan that no longer loads, a secret missing here — would
/// fail the same way at every pass).
#[derive(Debug, Default)]
pub struct Takeovers {
    resuming: BTreeSet<String>,
    given_up: BTreeSet<String>,
}

/// Looks for runs to take over and starts a resume for each one not already being resumed here.
pub(super) fn look(
    opts: &Options,
    clock: &Clock,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let Some(store) = &shared.store else {
        return;
    };
    if shutdown.is_cancelled() {
        return;
    }
    let orphans = match store.store.orphans() {
        Ok(o) => o,
        Err(e) => {
            log(clock, &format!("cannot look for runs to take over: {e}"));
            return;
        }
    };
    for o in orphans {
        {
            let mut t = shared.takeovers.lock().unwrap_or_else(|p| p.into_inner());
            if t.resuming.contains(&o.run_id) || t.given_up.contains(&o.run_id) {
                continue;
            }
            t.resuming.insert(o.run_id.clone());
        }
        log(
            clock,
            &format!(
                "taking over run {} of {}: its lease lapsed and its journal has no end (its host \
                 died?); resuming it here",
                o.run_id, o.plan
            ),
        );
        let (opts, clock, shared) = (opts.clone(), *clock, shared.clone());
        tracker.spawn(async move { resume_child(&o, &opts, &clock, &shared).await });
    }
}

/// Runs one `resume RUN-ID` child and records how it ended.
async fn resume_child(o: &Orphan, opts: &Options, clock: &Clock, shared: &Shared) {
    let mut cmd = tokio::process::Command::new(&opts.exe);
    cmd.arg("resume")
        .arg(&o.run_id)
        .arg("--quiet")
        .arg("--runs-dir")
        .arg(&opts.runs_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    if let Some(store) = &shared.store {
        cmd.env("AITBC_FLOW_STORE", &store.url);
    }
    let status = match cmd.spawn() {
        Ok(mut child) => {
            shared.running.fetch_add(1, Ordering::SeqCst);
            log(
                clock,
                &format!(
                    "started resume of run {} of {} (pid {})",
                    o.run_id,
                    o.plan,
                    child.id().unwrap_or(0)
                ),
            );
            let s = child.wait().await;
            shared.running.fetch_sub(1, Ordering::SeqCst);
            s.map(|s| s.code().unwrap_or(crate::exit::STEP_FAILED))
        }
        Err(e) => Err(e),
    };
    let mut t = shared.takeovers.lock().unwrap_or_else(|p| p.into_inner());
    t.resuming.remove(&o.run_id);
    match status {
        // Resumed to its end, or another host's resume holds the lock (skipped).
        Ok(0) => log(
            clock,
            &format!("finished resume of run {} of {}: exit 0", o.run_id, o.plan),
        ),
        Ok(code) => {
            t.given_up.insert(o.run_id.clone());
            shared
                .worst_exit
                .fetch_max(crate::exit::STEP_FAILED, Ordering::SeqCst);
            log(
                clock,
                &format!(
                    "finished resume of run {} of {}: exit {code}; not tried again by this scheduler",
                    o.run_id, o.plan
                ),
            );
        }
        Err(e) => {
            t.given_up.insert(o.run_id.clone());
            log(
                clock,
                &format!("cannot resume run {} of {}: {e}", o.run_id, o.plan),
            );
        }
    }
}
