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
