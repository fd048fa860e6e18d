//! A run from start to end: the run directory, the executor, and the reporters fed by its event stream
//! (terminal, `events.jsonl`, `report.json` rewritten as the run goes, then `summary.md`, `junit.xml`
//! and `report.html`). Whatever stops the run, the files are written on the way out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::runner::{RunOptions, RunOutcome, execute};
use crate::client::Coordinator;
use crate::model::Event;
use crate::plan::CheckedPlan;
use crate::report::model::Report;
use crate::report::terminal::{Terminal, View};
use crate::report::writers::{EventLog, ReportBuilder, write_all, write_report_json_so_far};

/// The result of a whole run.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub outcome: RunOutcome,
    /// The final report.
    pub report: Report,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// A new run id: UTC time to the second plus 6 random hex characters (sortable, unique enough).
pub fn new_run_id() -> String {
    let t = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let r: [u8; 3] = rand::random();
    format!("{t}-{}", hex::encode(r))
}

/// Creates `runs_dir/<run-id>/`.
pub fn create_run_dir(runs_dir: &Path, run_id: &str) -> std::io::Result<PathBuf> {
    let dir = runs_dir.join(run_id);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs a checked plan with every reporter attached. `interrupt` is cancelled on Ctrl-C or SIGTERM.
pub async fn run_with_reports<C: Coordinator + 'static>(
    plan: Arc<CheckedPlan>,
    coord: Arc<C>,
    options: RunOptions,
    terminal: impl Into<View>,
    interrupt: CancellationToken,
) -> std::io::Result<Finished> {
    run_with_reports_observed(plan, coord, options, terminal, interrupt, |_| {}).await
}

/// The most events the reporters take in one go, and the pause after a batch that emptied the queue.
const EVENT_BATCH: usize = 256;
const EVENT_PAUSE: Duration = Duration::from_millis(2);

/// [`run_with_reports`], with one more reporter: `observe` sees every event (secrets already out) as
/// the reporters do — the MCP server's progress notifications of a `run_plan`.
pub async fn run_with_reports_observed<C: Coordinator + 'static>(
    plan: Arc<CheckedPlan>,
    coord: Arc<C>,
    options: RunOptions,
    terminal: impl Into<View>,
    interrupt: CancellationToken,
    mut observe: impl FnMut(&Event) + Send,
) -> std::io::Result<Finished> {
    let run_dir = options.run_dir.clone();
    std::fs::create_dir_all(&run_dir)?;
    let mut builder =
        ReportBuilder::new(&plan, &options.run_id, coord.base_url(), options.embedded);
    builder.set_inputs(options.inputs.clone());
    let mut log = EventLog::open(&run_dir)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();

    let exec_plan = plan.clone();
    let runner = tokio::spawn(execute(exec_plan, coord, options, tx, interrupt));

    let mut term = Terminal::new(std::io::stderr(), terminal);
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_write = Instant::now();
    let mut dirty = false;
    let mut write_every = Duration::from_secs(1);
    let mut io_error: Option<std::io::Error> = None;
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, EVENT_BATCH) => {
                if n == 0 {
                    break;
                }
                for mut e in batch.drain(..) {
                    // Every reporter gets the event with the plan's secrets out: the terminal
                    // (stderr) as much as the files (a coordinator may echo a secret back in an
                    // error's detail).
                    redact_event(&plan, &mut e);
                    if let Err(err) = log.append(&e, |s| plan.redact(s)) {
                        io_error.get_or_insert(err);
                    }
                    term.on_event(&e);
                    observe(&e);
                    // The report exists from the start of the run (written once the journal has
                    // its header).
                    let first = matches!(e, Event::RunStarted { .. });
                    builder.apply(e);
                    dirty = true;
                    if first {
                        last_write = Instant::now() - write_every;
                    }
                }
                if rx.is_empty()
                    && let Err(err) = log.flush()
                {
                    io_error.get_or_insert(err);
                }
                // Caught up: let the next events gather for a moment. This loop runs on the thread
                // that started the run, and woken for each event of a busy run it took a core from
                // the runtime's workers thousands of times a second (24,000 involuntary context
                // switches in a 10,000-job run; docs/performance.md). A full batch means more are
                // waiting (a resume replays thousands at once): those are taken at once.
                if n < EVENT_BATCH {
                    tokio::time::sleep(EVENT_PAUSE).await;
                }
            }
            _ = ticker.tick() => {
                term.tick();
            }
        }
        // The report on disk follows the run, so that a crash leaves it behind: at most once a second,
        // and for a big report no more than a twentieth of the time (writing it must not slow the run).
        if dirty && last_write.elapsed() >= write_every {
            let t = Instant::now();
            if let Err(err) = write_report_json_so_far(&run_dir, builder.report()) {
                io_error.get_or_insert(err);
            }
            write_every = (t.elapsed() * 20).max(Duration::from_secs(1));
            last_write = Instant::now();
            dirty = false;
        }
    }
    if let Err(err) = log.flush() {
        io_error.get_or_insert(err);
    }
    let outcome = match runner.await {
        Ok(o) => o,
        Err(e) => {
            let o = RunOutcome {
                status: crate::report::RunStatus::Failed,
                exit_code: crate::exit::STEP_FAILED,
            };
            builder.apply(Event::RunIssue {
                message: format!("the executor ended abnormally: {e}"),
            });
            builder.apply(Event::RunFinished {
                status: o.status,
                exit_code: o.exit_code,
                credentials_refused: false,
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            });
            o
        }
    };
    let report = builder.into_report();
    write_all(&run_dir, &report)?;
    if let Some(e) = io_error {
        return Err(e);
    }
    Ok(Finished {
        outcome,
        report,
        run_dir,
    })
}

/// Replaces the plan's secrets in every text of an event. (A step's report was redacted when it was
/// made; its texts are redacted again here, cheaply, so that nothing printed depends on that.)
fn redact_event(plan: &CheckedPlan, e: &mut Event) {
    if plan.secrets.values().all(|s| s.is_empty()) {
        return;
    }
    let r = |s: &mut String| {
        if plan
            .secrets
            .values()
            .any(|v| !v.is_empty() && s.contains(v.as_str()))
        {
            *s = plan.redact(s);
        }
    };
    match e {
        Event::RunStarted {
            plan: name,
            coordinator,
            ..
        } => {
            r(name);
            r(coordinator);
        }
        Event::RunIssue { message } => r(message),
        Event::StepStarted { .. } | Event::JobState { .. } | Event::RunFinished { .. } => {}
        Event::AttemptFailed { attempt, .. } => {
            if let Some(error) = &mut attempt.error {
                r(error);
            }
        }
        Event::JobSubmitted { wallet, .. }
        | Event::JobCancelled { wallet, .. }
        | Event::PaymentRefunded { wallet, .. } => r(wallet),
        Event::PaymentHeld { wallet, note, .. } => {
            r(wallet);
            if let Some(n) = note {
                r(n);
            }
        }
        Event::StepFinished { report } => {
            let o = &mut report.outcome;
            r(&mut o.summary);
            o.issues.iter_mut().for_each(r);
            o.recommendations.iter_mut().for_each(r);
            for a in &mut report.attempts {
                if let Some(error) = &mut a.error {
                    r(error);
                }
            }
        }
    }
}

/// A token cancelled on Ctrl-C or SIGTERM. The handlers are in place when this returns (it must be
/// called inside a tokio runtime): a signal that arrives before the run's loop starts still cancels it,
/// instead of killing the process with the default action.
pub fn interrupt_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let streams =
            signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
        match streams {
            Ok((mut int, mut term)) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    t.cancel();
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                });
            }
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        t.cancel();
    });
    token
}
