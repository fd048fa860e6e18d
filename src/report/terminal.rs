//! The terminal view of a run, on stderr. On a TTY: a live block with one line per running step (its
//! job, state and elapsed time) and a total (steps done, failed, running and waiting, and the spend so
//! far), redrawn in place, with finished steps and their issues printed above it as they happen.
//! Otherwise (cron, CI, a pipe, `TERM=dumb`): one plain line per event, no cursor codes.
//! Colours follow [`super::style`].

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use crate::model::Event;
use crate::money::Money;
use crate::report::model::{RunStatus, StepState};
use crate::report::style::Palette;

/// How to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Live view (a TTY).
    Live,
    /// One line per event.
    Plain,
    /// Nothing.
    Quiet,
}

/// How the terminal view draws: its mode and its colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// Live, plain or quiet.
    pub mode: Mode,
    /// Colours (off unless the caller turned them on).
    pub palette: Palette,
    /// The descriptor of the terminal drawn on, whose width the live view reads at each redraw (so
    /// that a resized window is followed); without one, `COLUMNS` or 100.
    pub tty_fd: Option<i32>,
}

impl From<Mode> for View {
    fn from(mode: Mode) -> View {
        View {
            mode,
            palette: Palette::default(),
            tty_fd: None,
        }
    }
}

/// A step in progress, as the live block shows it.
#[derive(Debug)]
struct Running {
    since: Instant,
    state: String,
    job: Option<String>,
}

/// The terminal reporter.
#[derive(Debug)]
pub struct Terminal<W: Write> {
    out: W,
    mode: Mode,
    palette: Palette,
    tty_fd: Option<i32>,
    running: BTreeMap<String, Running>,
    drawn: usize,
    total: usize,
    finished: usize,
    failed: usize,
    paid: Money,
    refunded: Money,
    started: Instant,
    done: bool,
}

fn clock() -> String {
    chrono::Utc::now().format("%H:%M:%S").to_string()
}

impl<W: Write> Terminal<W> {
    /// A reporter writing to `out`.
    pub fn new(out: W, view: impl Into<View>) -> Self {
        let view = view.into();
        Terminal {
            out,
            mode: view.mode,
            palette: view.palette,
            tty_fd: view.tty_fd,
            running: BTreeMap::new(),
            drawn: 0,
            total: 0,
            finished: 0,
            failed: 0,
            paid: Money::default(),
            refunded: Money::default(),
            started: Instant::now(),
            done: false,
        }
    }

    /// What the run has spent so far: paid, less what was refunded.
    fn spend(&self) -> String {
        if self.refunded == Money::default() {
            format!("{} AITBC paid", self.paid)
        } else {
            format!("{} AITBC paid, {} refunded", self.paid, self.refunded)
        }
    }

    fn line(&mut self, text: &str) {
        if self.mode == Mode::Quiet {
            return;
        }
        self.clear_block();
        let _ = writeln!(self.out, "{text}");
    }

    fn clear_block(&mut self) {
        if self.mode == Mode::Live && self.drawn > 0 {
            // Up to the start of the block, then clear to the end of the screen.
            let _ = write!(self.out, "\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    /// Redraws the live block (no-op unless live).
    pub fn tick(&mut self) {
        // Nothing to draw before the run has started, nor after it ended.
        if self.mode != Mode::Live || self.done || (self.total == 0 && self.running.is_empty()) {
            return;
        }
        self.clear_block();
        let mut lines = Vec::new();
        for (id, r) in &self.running {
            let job = r.job.as_deref().map_or(String::new(), |j| {
                format!("job {}", j.get(..8).unwrap_or(j))
            });
            // A long id is cut, so that the job, the state and the time stay in view.
            let id = crate::report::text::clip(id, 32);
            lines.push(format!(
                "  ⏳ {id:<32} {job:<12} {:<10} {:>6.1}s",
                r.state,
                r.since.elapsed().as_secs_f64()
            ));
        }
        let waiting = self
            .total
            .saturating_sub(self.finished + self.running.len());
        let failed = if self.failed > 0 {
            self.palette.bad(&format!("{} failed", self.failed))
        } else {
            "0 failed".to_string()
        };
        lines.push(format!(
            "  {}/{} steps done, {failed}, {} running, {waiting} waiting — {} — {:.1}s",
            self.finished,
            self.total,
            self.running.len(),
            self.spend(),
            self.started.elapsed().as_secs_f64()
        ));
        // Lines that wrap would throw the redraw off: keep them within the terminal's width.
        let width = match self.tty_fd {
            Some(fd) => crate::report::style::width_of(fd),
            None => std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()),
        }
        .unwrap_or(100)
        .max(20);
        for l in &lines {
            let _ = writeln!(self.out, "{}", fit(l, width - 1));
        }
        self.drawn = lines.len();
        let _ = self.out.flush();
    }

    /// Shows one event.
    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::RunStarted {
                run_id,
                plan,
                coordinator,
                embedded,
                steps,
                spend,
                ..
            } => {
                self.total = steps.len();
                let coord = if *embedded {
                    format!("the embedded local coordinator at {coordinator}")
                } else {
                    coordinator.clone()
                };
                self.line(&format!(
                    "{} run {run_id} of {plan}: {} steps on {coord}",
                    clock(),
                    steps.len()
                ));
                // What the run will pay, before its first submit.
                if !spend.is_empty() {
                    let per_wallet: Vec<String> = spend
                        .iter()
                        .map(|(w, m)| format!("{m} AITBC from {w}"))
                        .collect();
                    self.line(&format!("{} spend: {}", clock(), per_wallet.join(", ")));
                }
            }
            Event::RunIssue { message } => {
                let mark = self.palette.warn("!");
                self.line(&format!("{} {mark} {message}", clock()))
            }
            Event::StepStarted { id, .. } => {
                self.running.insert(
                    id.clone(),
                    Running {
                        since: Instant::now(),
                        state: "started".into(),
                        job: None,
                    },
                );
                if self.mode == Mode::Plain {
                    self.line(&format!("{} ▶ {id}", clock()));
                }
            }
            Event::AttemptFailed { id, attempt } => {
                // "↻" only when a retry follows.
                let (mark, delay) = match attempt.delay_ms {
                    Some(d) => (
                        self.palette.warn("↻"),
                        format!("; retrying in {:.1}s", d as f64 / 1000.0),
                    ),
                    None => ("·".to_string(), String::new()),
                };
                self.line(&format!(
                    "{} {mark} {id} attempt {}: {}{delay}",
                    clock(),
                    attempt.number,
                    attempt.error.as_deref().unwrap_or("failed")
                ));
            }
            Event::JobSubmitted {
                id,
                job_id,
                wallet,
                payment,
            } => {
                self.paid += *payment;
                if let Some(r) = self.running.get_mut(id) {
                    r.state = "submitted".into();
                    r.job = Some(job_id.clone());
                }
                if self.mode == Mode::Plain {
                    self.line(&format!(
                        "{}   {id}: job {job_id} submitted ({payment} AITBC from {wallet})",
                        clock()
                    ));
                }
            }
            Event::JobState { id, state, job_id } => {
                if let Some(r) = self.running.get_mut(id) {
                    r.state = state.to_lowercase();
                    r.job = Some(job_id.clone());
                }
            }
            Event::JobCancelled {
                job_id,
                state,
                payment_status,
                refunded,
                ..
            } => {
                if let Some(m) = refunded {
                    self.refunded += *m;
                }
                let text = format!("{} {}", clock(), cancel_note(job_id, state, payment_status));
                self.line(&text)
            }
            Event::PaymentRefunded {
                job_id,
                amount,
                wallet,
                ..
            } => {
                self.refunded += *amount;
                self.line(&format!(
                    "{}   job {job_id}: {amount} AITBC refunded to {wallet}",
                    clock()
                ))
            }
            Event::PaymentHeld {
                job_id,
                amount,
                wallet,
                ..
            } => {
                let mark = self.palette.warn("!");
                self.line(&format!(
                    "{} {mark} job {job_id}: {amount} AITBC of {wallet} still held by the service",
                    clock()
                ))
            }
            Event::StepFinished { report } => {
                // A step the run never reached was not running; it counts as done all the same.
                self.running.remove(&report.id);
                self.finished += 1;
                let p = self.palette;
                let mark = match report.state {
                    StepState::Succeeded => p.ok("✓"),
                    StepState::Skipped => p.dim("-"),
                    StepState::Failed => {
                        self.failed += 1;
                        p.bad("✗")
                    }
                    StepState::Cancelled | StepState::Pending => p.warn("✗"),
                };
                // A status step that ran says why (one that did not run says it in its summary).
                let why = match (&report.reason, report.state) {
                    (Some(r), StepState::Succeeded | StepState::Failed) => format!(" [{r}]"),
                    _ => String::new(),
                };
                self.line(&format!(
                    "{} {mark} {} ({:.1}s) {}{why}",
                    clock(),
                    report.id,
                    report.outcome.execution_time,
                    report.outcome.summary
                ));
                // Issues as they happen (an allocation below the request, a receipt that did not
                // verify), less the one the summary says already.
                for issue in &report.outcome.issues {
                    if !report.outcome.summary.contains(issue.as_str()) {
                        let mark = p.warn("!");
                        self.line(&format!("           {mark} {}: {issue}", report.id));
                    }
                }
            }
            Event::RunFinished {
                status,
                exit_code,
                credentials_refused,
                ..
            } => {
                let word = match status {
                    RunStatus::Succeeded => "succeeded",
                    RunStatus::Failed => "failed",
                    RunStatus::Refused => "refused",
                    RunStatus::TimedOut => "timed out",
                    RunStatus::Interrupted => "interrupted",
                    RunStatus::Unreachable if *credentials_refused => {
                        "stopped: the coordinator refused our credentials"
                    }
                    RunStatus::Unreachable => "stopped: coordinator unreachable",
                    RunStatus::Running => "running",
                };
                self.running.clear();
                self.done = true;
                let word = self.palette.status(*status, word);
                self.line(&format!(
                    "{} run {word} in {:.1}s, {} (exit {exit_code})",
                    clock(),
                    self.started.elapsed().as_secs_f64(),
                    self.spend()
                ));
            }
        }
        if self.mode == Mode::Live && !matches!(e, Event::RunFinished { .. }) {
            self.tick();
        }
        let _ = self.out.flush();
    }
}

/// `line` cut to `width` visible characters (escape codes do not count and are kept whole), so that
/// a line never wraps and throws the redraw off.
fn fit(line: &str, width: usize) -> String {
    let mut out = String::with_capacity(line.len());
    let mut shown = 0;
    let mut chars = line.chars();
    let mut cut = false;
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push(c);
            for e in chars.by_ref() {
                out.push(e);
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if shown >= width {
            cut = true;
            continue;
        }
        out.push(c);
        shown += 1;
    }
    if cut && out.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

/// What became of a job cancelled on the way out, as the terminal and the report say it: cancelled, had
/// ended already, or — when the coordinator did not answer or still shows it running — not cancelled.
pub fn cancel_note(
    job_id: &str,
    state: &Option<String>,
    payment_status: &Option<String>,
) -> String {
    let payment = payment_status.as_deref().unwrap_or("status unknown");
    match state.as_deref() {
        Some("CANCELED") => format!("✗ job {job_id} cancelled (payment {payment})"),
        None => format!(
            "! job {job_id} could not be cancelled: the coordinator did not answer, so the job may still run and hold its payment (`aitbc-flow job cancel {job_id}`)"
        ),
        Some(s @ ("QUEUED" | "RUNNING")) => format!(
            "! job {job_id} could not be cancelled: it is still {s} (payment {payment}; `aitbc-flow job cancel {job_id}`)"
        ),
        Some(s) => {
            format!("- job {job_id} had already ended {s} when the run stopped (payment {payment})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{RunStatus, StepState};

    fn started(id: &str) -> Event {
        Event::StepStarted {
            id: id.into(),
            at: String::new(),
        }
    }

    #[test]
    fn plain_mode_prints_one_line_per_event_and_no_escape_codes() {
        let mut t = Terminal::new(Vec::new(), Mode::Plain);
        t.on_event(&started("a"));
        let mut r = crate::model::StepReport::blank("a", "balance");
        r.state = StepState::Succeeded;
        r.outcome.summary = "done".into();
        t.on_event(&Event::StepFinished {
            report: Box::new(r),
        });
        t.on_event(&Event::RunFinished {
            status: RunStatus::Succeeded,
            exit_code: 0,
            credentials_refused: false,
            at: String::new(),
        });
        let out = String::from_utf8(t.out).unwrap();
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(!out.contains('\x1b'));
        assert!(out.contains("✓ a"));
    }

    #[test]
    fn a_job_the_coordinator_never_confirmed_is_not_called_cancelled() {
        let id = "ea05c15ab4f94d369c35d96c8fc39ac5";
        let note = |state: Option<&str>, pay: Option<&str>| {
            cancel_note(id, &state.map(str::to_string), &pay.map(str::to_string))
        };
        assert!(note(Some("CANCELED"), Some("refunded")).starts_with("✗ job ea05"));
        for n in [note(None, None), note(Some("RUNNING"), Some("escrowed"))] {
            assert!(n.contains("could not be cancelled"), "{n}");
            assert!(!n.contains(" cancelled ("), "{n}");
        }
        assert!(note(Some("COMPLETED"), Some("released")).contains("had already ended COMPLETED"));
    }

    #[test]
    fn live_mode_redraws_the_running_block_and_clears_it_at_the_end() {
        let mut t = Terminal::new(Vec::new(), Mode::Live);
        t.on_event(&started("a"));
        t.on_event(&started("b"));
        t.tick();
        t.on_event(&Event::RunFinished {
            status: RunStatus::Interrupted,
            exit_code: 130,
            credentials_refused: false,
            at: String::new(),
        });
        t.tick();
        let out = String::from_utf8(t.out).unwrap();
        assert!(out.contains("⏳ a"), "{out}");
        assert!(
            out.contains("\x1b[3F\x1b[J"),
            "the block of 3 lines is redrawn in place"
        );
        assert!(
            out.trim_end().ends_with("(exit 130)"),
            "nothing is drawn after the end: {out:?}"
        );
    }
}
