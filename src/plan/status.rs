//! Status functions in `when:` — `success()`, `failure()`, `always()`, `cancelled()`, as GitHub
//! Actions' `if:`.
//!
//! A step's *gate* says when it may run at all: by default (`success()`) only while the run goes well
//! and every step it needs succeeded; a step whose `when` calls `failure()`, `always()` or
//! `cancelled()` runs whatever became of the steps it needs, also after fail-fast stopped the rest
//! (and, for `always()` and `cancelled()`, after Ctrl-C), bounded by its own timeout. The functions
//! read `run.status` from the template's context, so a condition such as
//! `${{ failure() and run.failed_steps | length > 1 }}` is evaluated like any other.

use minijinja::{Environment, State};

use super::types::When;

/// When a step may run, by the status functions its `when` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Only while the run goes well and what it needs succeeded (the default, `success()`).
    Success,
    /// Also when a step failed (`failure()`).
    Failure,
    /// Also when the run was interrupted (`cancelled()`).
    Cancelled,
    /// Whatever happened (`always()`).
    Always,
}

impl Gate {
    /// True for a step that may run after a failure or a stop.
    pub fn runs_after_a_stop(self) -> bool {
        self != Gate::Success
    }

    /// True for a step that may run after Ctrl-C.
    pub fn runs_after_an_interrupt(self) -> bool {
        matches!(self, Gate::Always | Gate::Cancelled)
    }

    /// The function's name, as the report says why the step ran.
    pub fn name(self) -> &'static str {
        match self {
            Gate::Success => "success()",
            Gate::Failure => "failure()",
            Gate::Cancelled => "cancelled()",
            Gate::Always => "always()",
        }
    }
}

/// The status functions, for the checks of names.
pub const STATUS_FUNCTIONS: [&str; 4] = ["success", "failure", "always", "cancelled"];

/// The fields of `run` a template may read while the run goes on: its status so far and the steps
/// that failed.
pub const RUN_STATUS_FIELDS: [&str; 2] = ["status", "failed_steps"];

/// The run's status as `run.status` says it while steps still run.
pub mod run_status {
    /// Nothing failed and nothing stopped the run.
    pub const RUNNING: &str = "running";
    /// A step failed (or timed out, or could not reach the coordinator).
    pub const FAILED: &str = "failed";
    /// Ctrl-C or SIGTERM.
    pub const CANCELLED: &str = "cancelled";
}

/// The gate of a step's `when`: the widest status function it calls (`always()` over `cancelled()`
/// over `failure()`); none, or only `success()`, is the default.
pub fn gate_of(when: Option<&When>) -> Gate {
    let Some(When::Expr(e)) = when else {
        return Gate::Success;
    };
    let calls = |f: &str| {
        e.match_indices(f).any(|(at, _)| {
            let before = e[..at].chars().next_back();
            let after = e[at + f.len()..].trim_start();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                && after.starts_with('(')
        })
    };
    if calls("always") {
        Gate::Always
    } else if calls("cancelled") {
        Gate::Cancelled
    } else if calls("failure") {
        Gate::Failure
    } else {
        Gate::Success
    }
}

/// The waits a status step that needs nothing adds to the graph: it waits for every step of the
/// default gate that does not come after it, so that it runs last and sees how the whole run went (as
/// such a step at the end of a GitHub Actions job does). `needs[i]` are the positions step `i` waits
/// for; the answer is the `(waited for, waiting)` pairs to add. One rule for the run (the
/// dispatcher) and for the levels `plan` shows.
pub fn implicit_waits(gates: &[Gate], needs: &[Vec<usize>]) -> Vec<(usize, usize)> {
    let n = gates.len().min(needs.len());
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ns) in needs.iter().enumerate().take(n) {
        for &j in ns.iter().filter(|&&j| j < n) {
            dependents[j].push(i);
        }
    }
    let mut waits = Vec::new();
    for g in (0..n).filter(|&i| gates[i] != Gate::Success && needs[i].is_empty()) {
        // Not on what comes after it (that would be a cycle).
        let mut after = vec![false; n];
        let mut todo = vec![g];
        while let Some(i) = todo.pop() {
            for &d in &dependents[i] {
                if !after[d] {
                    after[d] = true;
                    todo.push(d);
                }
            }
        }
        waits.extend(
            (0..n)
                .filter(|&p| gates[p] == Gate::Success && !after[p])
                .map(|p| (p, g)),
        );
    }
    waits
}

/// The steps that failed, as a reason says them: `step build failed`, `steps a, b failed`.
fn failed_phrase(failed_steps: &[String]) -> String {
    match failed_steps {
        [] => "a step failed".to_string(),
        [one] => format!("step {one} failed"),
        many => format!("steps {} failed", many.join(", ")),
    }
}

/// Why a status step ran, from how the run went when it started (`run.status`, `run.failed_steps`):
/// `ran: step build failed`, `ran after Ctrl-C (always())`, `ran: no step failed`.
pub fn ran_because(gate: Gate, status: &str, failed_steps: &[String]) -> String {
    match status {
        run_status::CANCELLED => format!("ran after Ctrl-C ({})", gate.name()),
        run_status::FAILED => format!("ran: {}", failed_phrase(failed_steps)),
        _ => "ran: no step failed".to_string(),
    }
}

/// Why a status step whose `when` was false was skipped: `skipped: no step failed`, `skipped: the
/// run was not cancelled`, or the rest of its `when` being false.
pub fn skipped_because(gate: Gate, status: &str, failed_steps: &[String]) -> String {
    match (gate, status) {
        (Gate::Failure, run_status::RUNNING) => "skipped: no step failed".to_string(),
        (Gate::Cancelled, s) if s != run_status::CANCELLED => {
            "skipped: the run was not cancelled".to_string()
        }
        (_, run_status::FAILED) => format!(
            "skipped: its `when` was false ({})",
            failed_phrase(failed_steps)
        ),
        (_, run_status::CANCELLED) => "skipped: its `when` was false after Ctrl-C".to_string(),
        _ => "skipped: its `when` was false".to_string(),
    }
}

/// Why a status step did not run at all: the run stopped in a way its function does not run after
/// (a `failure()` step after Ctrl-C).
pub fn not_run_because(gate: Gate, interrupted: bool) -> String {
    if interrupted && !gate.runs_after_an_interrupt() {
        format!(
            "not run: the run was interrupted, and {} does not run after Ctrl-C",
            gate.name()
        )
    } else {
        "not run: the run stopped before this step started".to_string()
    }
}

/// Adds the four functions to a template environment. Each reads `run.status` from the context
/// (`running` when no context says otherwise, as at load).
pub fn register(env: &mut Environment<'_>) {
    fn status(state: &State) -> String {
        state
            .lookup("run")
            .and_then(|r| r.get_attr("status").ok())
            .and_then(|s| s.as_str().map(str::to_string))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| run_status::RUNNING.to_string())
    }
    env.add_function("success", |state: &State| {
        status(state) == run_status::RUNNING
    });
    env.add_function("failure", |state: &State| {
        status(state) == run_status::FAILED
    });
    env.add_function("cancelled", |state: &State| {
        status(state) == run_status::CANCELLED
    });
    env.add_function("always", |_: &State| true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(e: &str) -> Gate {
        gate_of(Some(&When::Expr(e.into())))
    }

    #[test]
    fn a_status_step_without_needs_waits_for_the_plain_steps_not_after_it() {
        use Gate::*;
        // 0 plain, 1 plain needs 0, 2 failure() free, 3 plain needs 2, 4 always() needs 1.
        let gates = [Success, Success, Failure, Success, Always];
        let needs = vec![vec![], vec![0], vec![], vec![2], vec![1]];
        let mut waits = implicit_waits(&gates, &needs);
        waits.sort();
        assert_eq!(waits, vec![(0, 2), (1, 2)]);
    }

    #[test]
    fn reasons_say_what_the_run_was_when_the_step_started() {
        let failed = vec!["build".to_string()];
        assert_eq!(
            ran_because(Gate::Failure, run_status::FAILED, &failed),
            "ran: step build failed"
        );
        assert_eq!(
            ran_because(Gate::Always, run_status::FAILED, &["a".into(), "b".into()]),
            "ran: steps a, b failed"
        );
        assert_eq!(
            ran_because(Gate::Always, run_status::CANCELLED, &[]),
            "ran after Ctrl-C (always())"
        );
        assert_eq!(
            skipped_because(Gate::Failure, run_status::RUNNING, &[]),
            "skipped: no step failed"
        );
        assert_eq!(
            skipped_because(Gate::Cancelled, run_status::FAILED, &failed),
            "skipped: the run was not cancelled"
        );
        assert_eq!(
            skipped_because(Gate::Failure, run_status::FAILED, &failed),
            "skipped: its `when` was false (step build failed)"
        );
        assert!(
            not_run_because(Gate::Failure, true).contains("failure() does not run after Ctrl-C")
        );
    }

    #[test]
    fn the_widest_function_called_is_the_gate() {
        assert_eq!(gate_of(None), Gate::Success);
        assert_eq!(gate_of(Some(&When::Bool(true))), Gate::Success);
        assert_eq!(gate("${{ success() }}"), Gate::Success);
        assert_eq!(gate("${{ failure() }}"), Gate::Failure);
        assert_eq!(gate("failure()"), Gate::Failure);
        assert_eq!(gate("${{ cancelled() or failure() }}"), Gate::Cancelled);
        assert_eq!(gate("${{ always ( ) }}"), Gate::Always);
        // A name that only contains one, or a field, is not a call.
        assert_eq!(gate("${{ steps.x.no_failure() }}"), Gate::Success);
        assert_eq!(gate("${{ vars.failure }}"), Gate::Success);
    }
}
