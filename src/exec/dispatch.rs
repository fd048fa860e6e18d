//! The dispatcher: which step may start next, and what the run's outcome is.
//!
//! It is a plain state machine, with no tasks, no clock and no network, so that the rules of a run can
//! be tested step by step: steps start in dependency order, at most `limit` at once; a dependent of a
//! step that failed or was skipped is itself skipped, with the reason; a failure stops the run
//! (fail-fast) unless the step has `continue_on_error`; an interruption stops it too; and the stop and
//! the failures decide the status and the exit code. [`runner::execute`](super::runner::execute) is the
//! async shell around it: it starts the tasks the dispatcher hands out and tells it how each ended.
//!
//! Readiness works by dependency counts: each step knows how many of its dependencies are unfinished,
//! and when one ends its dependents' counts drop, those at zero joining the ready queue. A run of
//! 10,000 steps therefore costs O(steps + edges), however the graph is shaped.

use std::collections::{HashMap, VecDeque};

use super::steps::StepFailure;
use crate::exit;
use crate::model::{RunStatus, StepState};
use crate::plan::status::Gate;

/// Why a run stopped starting steps before the end of its plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A step failed (fail-fast), or a step task ended abnormally.
    Failed,
    /// A step ran out of time (fail-fast).
    TimedOut,
    /// The coordinator could not be reached (fail-fast).
    Unreachable,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

/// The dependency counts, the ready queue and the stop state of one run. Steps are named by their
/// position in the plan (`CheckedPlan::steps`).
#[derive(Debug)]
pub struct Dispatcher {
    /// Step ids, for the reasons given to skipped dependents.
    ids: Vec<String>,
    /// For each step, the steps that need it.
    dependents: Vec<Vec<usize>>,
    /// For each step, how many of its dependencies have not finished.
    waiting: Vec<usize>,
    /// How each step ended; `None` while it has not.
    state: Vec<Option<StepState>>,
    /// Why a step will be skipped: a dependency did not succeed (the first such one is named).
    blocked: Vec<Option<String>>,
    /// Steps whose dependencies have all finished, in the order they became ready.
    ready: VecDeque<usize>,
    /// Steps handed out by [`Dispatcher::next_ready`] and not yet [`finished`](Dispatcher::finished).
    running: usize,
    /// Steps allowed to run at once.
    limit: usize,
    /// Stop at the first failure that `continue_on_error` does not cover.
    fail_fast: bool,
    /// Why the run stopped starting steps, if it did.
    stop: Option<Stop>,
    /// A step failed (not covered by `continue_on_error`).
    failed: bool,
    /// A step timed out.
    timed_out: bool,
    /// The coordinator refused our credentials (a kind of "unreachable").
    refused: bool,
    /// A step could not reach the coordinator.
    unreachable: bool,
    /// When each step may run, by the status functions of its `when` (see [`crate::plan::status`]).
    gates: Vec<Gate>,
    /// Steps handed out and not yet finished.
    started: Vec<bool>,
    /// Steps that will not run because the run stopped before their turn (they stay unfinished, for
    /// `resume`); what needs them is counted off as if they had ended.
    abandoned: Vec<bool>,
    /// The steps that failed, in the order they ended.
    failed_steps: Vec<usize>,
}

impl Dispatcher {
    /// A dispatcher for steps given as `(id, needs)` in plan order, running at most `limit` at once
    /// (at least one). A need that names no step is ignored: the plan's checks reject those.
    pub fn new<'a, S, N>(steps: S, limit: usize, fail_fast: bool) -> Dispatcher
    where
        S: IntoIterator<Item = (&'a str, N)>,
        N: IntoIterator<Item = &'a str>,
    {
        let steps: Vec<(&str, N)> = steps.into_iter().collect();
        let n = steps.len();
        let index: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
        let mut ids = Vec::with_capacity(n);
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut waiting = vec![0; n];
        for (i, (id, needs)) in steps.into_iter().enumerate() {
            ids.push(id.to_string());
            for need in needs {
                if let Some(&j) = index.get(need) {
                    dependents[j].push(i);
                    waiting[i] += 1;
                }
            }
        }
        let ready = (0..n).filter(|&i| waiting[i] == 0).collect();
        Dispatcher {
            ids,
            dependents,
            waiting,
            state: vec![None; n],
            blocked: vec![None; n],
            ready,
            running: 0,
            limit: limit.max(1),
            fail_fast,
            stop: None,
            failed: false,
            timed_out: false,
            refused: false,
            unreachable: false,
            gates: vec![Gate::Success; n],
            started: vec![false; n],
            abandoned: vec![false; n],
            failed_steps: Vec::new(),
        }
    }

    /// Gives the steps their gates, in plan order. A step gated by `failure()`, `cancelled()` or
    /// `always()` that needs nothing waits for every step of the default gate that does not come
    /// after it ([`crate::plan::status::implicit_waits`]): it runs last, seeing how the whole run went.
    pub fn with_gates(mut self, gates: Vec<Gate>) -> Dispatcher {
        let n = self.ids.len();
        if gates.len() != n {
            return self;
        }
        let mut needs: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (j, ds) in self.dependents.iter().enumerate() {
            for &d in ds {
                needs[d].push(j);
            }
        }
        for (p, g) in crate::plan::status::implicit_waits(&gates, &needs) {
            self.dependents[p].push(g);
            self.waiting[g] += 1;
        }
        let waiting = &self.waiting;
        self.ready.retain(|&i| waiting[i] == 0);
        self.gates = gates;
        self
    }

    /// The next step to take up, if the run is not stopping, a slot is free and a step is ready. The
    /// step holds its slot until [`finished`](Dispatcher::finished) is called for it — at once when
    /// the caller does not run it (kept from an earlier start, or [`blocked`](Dispatcher::blocked)).
    pub fn next_ready(&mut self) -> Option<usize> {
        if self.running >= self.limit {
            return None;
        }
        // After a stop the queue holds only steps that may run after it (see `wind_down`).
        let i = self.ready.pop_front()?;
        self.running += 1;
        self.started[i] = true;
        Some(i)
    }

    /// The run's status as `run.status` says it while steps still run (see
    /// [`crate::plan::status::run_status`]).
    pub fn run_status(&self) -> &'static str {
        use crate::plan::status::run_status as rs;
        if self.interrupted() {
            rs::CANCELLED
        } else if self.failed || self.timed_out || self.unreachable {
            rs::FAILED
        } else {
            rs::RUNNING
        }
    }

    /// The gate of step `i`.
    pub fn gate(&self, i: usize) -> Gate {
        self.gates[i]
    }

    /// The steps that failed so far, by id, in the order they ended.
    pub fn failed_steps(&self) -> Vec<String> {
        self.failed_steps
            .iter()
            .map(|&i| self.ids[i].clone())
            .collect()
    }

    /// True when step `i` may still start now that the run has stopped (or when it has not).
    fn may_start(&self, i: usize) -> bool {
        match self.stop {
            None => true,
            Some(Stop::Interrupted) => self.gates[i].runs_after_an_interrupt(),
            Some(_) => self.gates[i].runs_after_a_stop(),
        }
    }

    /// At a stop: every step not started that may not run after it is abandoned, and what needs it
    /// counted off, so that the steps that may run after the stop (a `failure()` notify, an
    /// `always()` clean-up) come to their turn.
    fn wind_down(&mut self) {
        let queued: Vec<usize> = self.ready.drain(..).collect();
        for i in queued {
            if self.may_start(i) {
                self.ready.push_back(i);
            } else {
                self.abandon(i);
            }
        }
        for i in 0..self.ids.len() {
            if self.state[i].is_none()
                && !self.started[i]
                && !self.abandoned[i]
                && self.waiting[i] > 0
                && !self.may_start(i)
            {
                self.abandon(i);
            }
        }
    }

    /// Step `i` will not run: its dependents are counted off as if it had not finished.
    fn abandon(&mut self, i: usize) {
        let mut todo = vec![i];
        while let Some(i) = todo.pop() {
            if self.abandoned[i] {
                continue;
            }
            self.abandoned[i] = true;
            for k in 0..self.dependents[i].len() {
                let d = self.dependents[i][k];
                if self.blocked[d].is_none() && self.gates[d] == Gate::Success {
                    self.blocked[d] = Some(format!(
                        "needs `{}`, which did not run: the run stopped",
                        self.ids[i]
                    ));
                }
                self.waiting[d] -= 1;
                if self.waiting[d] == 0 && !self.abandoned[d] {
                    if self.may_start(d) {
                        self.ready.push_back(d);
                    } else {
                        todo.push(d);
                    }
                }
            }
        }
    }

    /// Why step `i` must be skipped rather than run: a step it needs failed or was skipped.
    pub fn blocked(&self, i: usize) -> Option<&str> {
        self.blocked[i].as_deref()
    }

    /// True when later steps read step `i`'s outputs (so they are worth keeping).
    pub fn has_dependents(&self, i: usize) -> bool {
        !self.dependents[i].is_empty()
    }

    /// Records how step `i` ended and readies its dependents. A failure that `continue_on_error` does
    /// not cover counts against the run; with fail-fast, the first one stops it, and that stop is
    /// returned so that the caller can cancel what still runs. (A cancelled step was stopped by the run:
    /// it is a consequence of a stop, never a cause.)
    pub fn finished(
        &mut self,
        i: usize,
        state: StepState,
        failure: Option<StepFailure>,
        continue_on_error: bool,
    ) -> Option<Stop> {
        self.running = self.running.saturating_sub(1);
        self.state[i] = Some(state);
        self.release(i, state);
        let f = failure.filter(|f| !continue_on_error && *f != StepFailure::Cancelled)?;
        let stop = match f {
            StepFailure::TimedOut => {
                self.timed_out = true;
                Stop::TimedOut
            }
            StepFailure::Unreachable | StepFailure::Refused => {
                self.unreachable = true;
                self.refused |= f == StepFailure::Refused;
                Stop::Unreachable
            }
            StepFailure::Failed | StepFailure::Cancelled => {
                self.failed = true;
                Stop::Failed
            }
        };
        self.failed_steps.push(i);
        if self.fail_fast && self.stop.is_none() {
            self.stop = Some(stop);
            self.wind_down();
            return Some(stop);
        }
        None
    }

    /// A step task ended without a result (it panicked): the run fails and stops. The step and its
    /// dependents stay unfinished, and are reported among [`never_started`](Dispatcher::never_started).
    pub fn lost_task(&mut self) {
        self.running = self.running.saturating_sub(1);
        self.failed = true;
        if self.stop.is_none() {
            self.stop = Some(Stop::Failed);
            self.wind_down();
        }
    }

    /// Ctrl-C or SIGTERM: nothing more starts, and the run ends interrupted whatever else happened.
    pub fn interrupt(&mut self) {
        self.stop = Some(Stop::Interrupted);
        self.wind_down();
    }

    /// True once [`interrupt`](Dispatcher::interrupt) was called.
    pub fn interrupted(&self) -> bool {
        self.stop == Some(Stop::Interrupted)
    }

    /// Why the run stopped starting steps, if it did.
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// The steps that never ended, in plan order, each with the reason it would have been skipped
    /// (`None`: the run stopped before its turn).
    pub fn never_started(&self) -> impl Iterator<Item = (usize, Option<&str>)> + '_ {
        self.state
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(i, _)| (i, self.blocked(i)))
    }

    /// True when a step failed because the coordinator refused our credentials: the run's status is
    /// `unreachable` (exit 3), and this says which of the two it was.
    pub fn credentials_refused(&self) -> bool {
        self.refused
    }

    /// The run's status and exit code. An interruption outranks everything (the user asked to stop);
    /// then an unreachable coordinator (nothing else could have gone right), a timeout, a failure.
    pub fn outcome(&self) -> (RunStatus, i32) {
        match self.stop {
            Some(Stop::Interrupted) => (RunStatus::Interrupted, exit::INTERRUPTED),
            _ if self.unreachable => (RunStatus::Unreachable, exit::UNREACHABLE),
            _ if self.timed_out => (RunStatus::TimedOut, exit::TIMEOUT),
            _ if self.failed => (RunStatus::Failed, exit::STEP_FAILED),
            _ => (RunStatus::Succeeded, exit::SUCCESS),
        }
    }

    /// Counts step `i` off its dependents; a dependent of a step that did not succeed is marked to be
    /// skipped when its turn comes — even with `continue_on_error`, since the outputs it needs do not
    /// exist.
    fn release(&mut self, i: usize, state: StepState) {
        for k in 0..self.dependents[i].len() {
            let d = self.dependents[i][k];
            if state != StepState::Succeeded
                && self.blocked[d].is_none()
                && self.gates[d] == Gate::Success
            {
                let why = match state {
                    StepState::Skipped => "was skipped",
                    StepState::Failed => "failed",
                    _ => "did not finish",
                };
                self.blocked[d] = Some(format!("needs `{}`, which {why}", self.ids[i]));
            }
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 && !self.abandoned[d] {
                if self.may_start(d) {
                    self.ready.push_back(d);
                } else {
                    self.abandon(d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use StepFailure as F;
    use StepState as S;

    /// Steps as `(id, needs)`, in plan order.
    fn dispatcher(
        steps: &[(&'static str, &[&'static str])],
        limit: usize,
        fail_fast: bool,
    ) -> Dispatcher {
        Dispatcher::new(
            steps.iter().map(|(id, needs)| (*id, needs.iter().copied())),
            limit,
            fail_fast,
        )
    }

    /// Everything that may start now.
    fn take(d: &mut Dispatcher) -> Vec<usize> {
        std::iter::from_fn(|| d.next_ready()).collect()
    }

    fn succeed(d: &mut Dispatcher, i: usize) {
        assert_eq!(d.finished(i, S::Succeeded, None, false), None);
    }

    #[test]
    fn steps_start_when_what_they_need_has_finished() {
        // a → (b, c) → d, and e on its own.
        let mut d = dispatcher(
            &[
                ("a", &[]),
                ("b", &["a"]),
                ("c", &["a"]),
                ("d", &["b", "c"]),
                ("e", &[]),
            ],
            16,
            true,
        );
        assert_eq!(take(&mut d), [0, 4]);
        succeed(&mut d, 0);
        assert_eq!(take(&mut d), [1, 2]);
        succeed(&mut d, 2);
        assert_eq!(take(&mut d), [] as [usize; 0], "d still needs b");
        succeed(&mut d, 1);
        assert_eq!(take(&mut d), [3]);
        assert!(d.has_dependents(0) && !d.has_dependents(3));
        succeed(&mut d, 3);
        succeed(&mut d, 4);
        assert_eq!(d.never_started().count(), 0);
        assert_eq!(d.outcome(), (RunStatus::Succeeded, exit::SUCCESS));
    }

    #[test]
    fn no_more_than_the_limit_run_at_once() {
        let mut d = dispatcher(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[])], 2, true);
        assert_eq!(take(&mut d), [0, 1]);
        succeed(&mut d, 1);
        assert_eq!(take(&mut d), [2], "one slot came free");
        succeed(&mut d, 0);
        succeed(&mut d, 2);
        assert_eq!(take(&mut d), [3]);
        // A limit of 0 still runs one step at a time.
        let mut d = dispatcher(&[("a", &[]), ("b", &[])], 0, true);
        assert_eq!(take(&mut d), [0]);
    }

    #[test]
    fn a_failed_step_blocks_its_dependents_and_theirs_with_the_reason() {
        let mut d = dispatcher(
            &[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("x", &[])],
            16,
            false,
        );
        assert_eq!(take(&mut d), [0, 3]);
        assert_eq!(
            d.finished(0, S::Failed, Some(F::Failed), false),
            None,
            "keep going"
        );
        assert_eq!(take(&mut d), [1], "b's turn comes, to be skipped");
        assert_eq!(d.blocked(1), Some("needs `a`, which failed"));
        d.finished(1, S::Skipped, None, false);
        assert_eq!(take(&mut d), [2]);
        assert_eq!(d.blocked(2), Some("needs `b`, which was skipped"));
        d.finished(2, S::Skipped, None, false);
        succeed(&mut d, 3);
        assert_eq!(d.blocked(3), None);
        assert_eq!(d.outcome(), (RunStatus::Failed, exit::STEP_FAILED));
    }

    #[test]
    fn the_first_unfinished_dependency_is_the_one_named() {
        let mut d = dispatcher(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])], 16, false);
        take(&mut d);
        d.finished(1, S::Cancelled, Some(F::Cancelled), false);
        d.finished(0, S::Failed, Some(F::Failed), false);
        assert_eq!(take(&mut d), [2]);
        assert_eq!(d.blocked(2), Some("needs `b`, which did not finish"));
    }

    #[test]
    fn continue_on_error_keeps_the_run_going_and_its_exit_code_clean() {
        let mut d = dispatcher(&[("a", &[]), ("b", &["a"]), ("c", &[])], 1, true);
        assert_eq!(take(&mut d), [0]);
        assert_eq!(d.finished(0, S::Failed, Some(F::Failed), true), None);
        assert_eq!(d.stop(), None);
        assert_eq!(take(&mut d), [2], "one at a time: c, then b");
        succeed(&mut d, 2);
        assert_eq!(take(&mut d), [1]);
        // Its dependents are skipped all the same: the outputs they need do not exist.
        assert_eq!(d.blocked(1), Some("needs `a`, which failed"));
        d.finished(1, S::Skipped, None, false);
        assert_eq!(d.outcome(), (RunStatus::Succeeded, exit::SUCCESS));
    }

    #[test]
    fn fail_fast_stops_starting_steps_and_leaves_the_rest_unstarted() {
        let mut d = dispatcher(
            &[("a", &[]), ("b", &[]), ("c", &["a"]), ("d", &[])],
            2,
            true,
        );
        assert_eq!(take(&mut d), [0, 1]);
        assert_eq!(
            d.finished(0, S::Failed, Some(F::TimedOut), false),
            Some(Stop::TimedOut)
        );
        assert_eq!(
            take(&mut d),
            [] as [usize; 0],
            "a slot is free, but the run stops"
        );
        // The step still running was cancelled by the stop: that is no second cause.
        assert_eq!(d.finished(1, S::Cancelled, Some(F::Cancelled), false), None);
        assert_eq!(d.stop(), Some(Stop::TimedOut));
        let left: Vec<(usize, Option<&str>)> = d.never_started().collect();
        assert_eq!(left, [(2, Some("needs `a`, which failed")), (3, None)]);
        assert_eq!(d.outcome(), (RunStatus::TimedOut, exit::TIMEOUT));
    }

    #[test]
    fn only_the_first_failure_stops_the_run() {
        let mut d = dispatcher(&[("a", &[]), ("b", &[])], 2, true);
        take(&mut d);
        assert_eq!(
            d.finished(0, S::Failed, Some(F::Failed), false),
            Some(Stop::Failed)
        );
        assert_eq!(d.finished(1, S::Failed, Some(F::Unreachable), false), None);
        assert_eq!(d.stop(), Some(Stop::Failed));
        assert_eq!(d.outcome(), (RunStatus::Unreachable, exit::UNREACHABLE));
    }

    #[test]
    fn refused_credentials_are_unreachable_and_remembered_as_refused() {
        let mut d = dispatcher(&[("a", &[]), ("b", &[])], 2, false);
        take(&mut d);
        d.finished(0, S::Failed, Some(F::Unreachable), false);
        assert!(!d.credentials_refused());
        d.finished(1, S::Failed, Some(F::Refused), false);
        assert!(d.credentials_refused());
        assert_eq!(d.outcome(), (RunStatus::Unreachable, exit::UNREACHABLE));
    }

    #[test]
    fn an_interrupt_stops_starting_steps_and_outranks_every_failure() {
        let mut d = dispatcher(&[("a", &[]), ("b", &[]), ("c", &[])], 2, true);
        assert_eq!(take(&mut d), [0, 1]);
        assert!(!d.interrupted());
        d.interrupt();
        assert!(d.interrupted());
        assert_eq!(d.finished(0, S::Failed, Some(F::Unreachable), false), None);
        d.finished(1, S::Cancelled, Some(F::Cancelled), false);
        assert_eq!(take(&mut d), [] as [usize; 0]);
        assert_eq!(d.never_started().collect::<Vec<_>>(), [(2, None)]);
        assert_eq!(d.outcome(), (RunStatus::Interrupted, exit::INTERRUPTED));
        // An interrupt after a fail-fast stop still decides the outcome.
        let mut d = dispatcher(&[("a", &[])], 1, true);
        take(&mut d);
        d.finished(0, S::Failed, Some(F::Failed), false);
        d.interrupt();
        assert_eq!(d.outcome(), (RunStatus::Interrupted, exit::INTERRUPTED));
    }

    #[test]
    fn the_outcome_ranks_unreachable_then_timed_out_then_failed() {
        let cases: &[(&[StepFailure], RunStatus, i32)] = &[
            (&[], RunStatus::Succeeded, exit::SUCCESS),
            (&[F::Cancelled], RunStatus::Succeeded, exit::SUCCESS),
            (&[F::Failed], RunStatus::Failed, exit::STEP_FAILED),
            (
                &[F::Failed, F::TimedOut],
                RunStatus::TimedOut,
                exit::TIMEOUT,
            ),
            (
                &[F::TimedOut, F::Failed],
                RunStatus::TimedOut,
                exit::TIMEOUT,
            ),
            (
                &[F::Failed, F::Unreachable, F::TimedOut],
                RunStatus::Unreachable,
                exit::UNREACHABLE,
            ),
        ];
        for (failures, status, code) in cases {
            let ids = ["a", "b", "c"];
            let mut d = Dispatcher::new(
                ids[..failures.len()]
                    .iter()
                    .map(|id| (*id, std::iter::empty())),
                16,
                false,
            );
            take(&mut d);
            for (i, f) in failures.iter().enumerate() {
                d.finished(i, S::Failed, Some(*f), false);
            }
            assert_eq!(d.outcome(), (*status, *code), "{failures:?}");
        }
    }

    #[test]
    fn a_lost_task_fails_and_stops_the_run() {
        let mut d = dispatcher(&[("a", &[]), ("b", &["a"]), ("c", &[])], 1, false);
        assert_eq!(take(&mut d), [0]);
        d.lost_task();
        assert_eq!(d.stop(), Some(Stop::Failed), "even without fail-fast");
        assert_eq!(take(&mut d), [] as [usize; 0]);
        assert_eq!(
            d.never_started().collect::<Vec<_>>(),
            [(0, None), (1, None), (2, None)]
        );
        assert_eq!(d.outcome(), (RunStatus::Failed, exit::STEP_FAILED));
    }

    #[test]
    fn a_need_that_names_no_step_is_ignored() {
        let mut d = dispatcher(&[("a", &["nowhere"])], 1, true);
        assert_eq!(take(&mut d), [0]);
    }

    fn gated(steps: &[(&'static str, &[&'static str])], gates: &[Gate]) -> Dispatcher {
        dispatcher(steps, 16, true).with_gates(gates.to_vec())
    }

    #[test]
    fn a_failure_step_runs_after_fail_fast_stopped_the_rest() {
        // a fails; b (needs a) and c (independent, not started) are abandoned; notify (failure(),
        // needs nothing) waits for all of them and then runs; tidy (always(), needs b) runs too.
        let mut d = gated(
            &[
                ("a", &[]),
                ("b", &["a"]),
                ("c", &[]),
                ("notify", &[]),
                ("tidy", &["b"]),
            ],
            &[
                Gate::Success,
                Gate::Success,
                Gate::Success,
                Gate::Failure,
                Gate::Always,
            ],
        );
        assert_eq!(take(&mut d), [0, 2], "the gated steps wait");
        assert_eq!(d.run_status(), "running");
        assert_eq!(
            d.finished(0, S::Failed, Some(F::Failed), false),
            Some(Stop::Failed)
        );
        assert_eq!(d.run_status(), "failed");
        assert_eq!(d.failed_steps(), ["a"]);
        // c still runs (it is cancelled by the caller); until it ends, notify waits.
        assert_eq!(take(&mut d), [4], "tidy's need b was abandoned");
        assert_eq!(d.blocked(4), None, "a gated step is never blocked");
        d.finished(2, S::Cancelled, Some(F::Cancelled), false);
        assert_eq!(take(&mut d), [3]);
        succeed(&mut d, 3);
        succeed(&mut d, 4);
        let never: Vec<usize> = d.never_started().map(|(i, _)| i).collect();
        assert_eq!(never, [1], "b is left for resume");
        assert_eq!(d.outcome(), (RunStatus::Failed, exit::STEP_FAILED));
    }

    #[test]
    fn after_ctrl_c_only_always_and_cancelled_steps_start() {
        let mut d = gated(
            &[
                ("a", &[]),
                ("b", &["a"]),
                ("on_fail", &["a"]),
                ("cleanup", &["a"]),
                ("said", &["b"]),
            ],
            &[
                Gate::Success,
                Gate::Success,
                Gate::Failure,
                Gate::Always,
                Gate::Cancelled,
            ],
        );
        assert_eq!(take(&mut d), [0]);
        d.interrupt();
        assert_eq!(d.run_status(), "cancelled");
        assert_eq!(take(&mut d), [4], "`said` needs only b, which will not run");
        d.finished(0, S::Cancelled, Some(F::Cancelled), false);
        assert_eq!(take(&mut d), [3], "on_fail does not start on Ctrl-C");
        succeed(&mut d, 3);
        succeed(&mut d, 4);
        let never: Vec<usize> = d.never_started().map(|(i, _)| i).collect();
        assert_eq!(never, [1, 2]);
        assert_eq!(d.outcome(), (RunStatus::Interrupted, exit::INTERRUPTED));
    }

    #[test]
    fn without_a_failure_the_gated_steps_still_come_to_their_turn() {
        let mut d = gated(
            &[("a", &[]), ("notify", &[]), ("after", &["notify"])],
            &[Gate::Success, Gate::Failure, Gate::Success],
        );
        assert_eq!(take(&mut d), [0]);
        succeed(&mut d, 0);
        assert_eq!(
            take(&mut d),
            [1],
            "its `when` (false) is the caller's to evaluate"
        );
        d.finished(1, S::Skipped, None, false);
        assert_eq!(take(&mut d), [2]);
        assert_eq!(d.blocked(2), Some("needs `notify`, which was skipped"));
    }
}
