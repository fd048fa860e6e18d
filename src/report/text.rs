//! Short texts every reporter shows the same way: a step's output preview, clipped texts, the words for
//! states, and why a step that did not finish did not.

use serde_json::Value;

use super::model::{Report, RunStatus, StepReport, StepState};

/// `s` cut to at most `max` characters, with `…` when it was cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The step's output on one line (runs of white space as one space), at most `max` characters: the
/// job's output text, or the result as compact JSON when it is not text. `None` without a result.
pub fn output_preview(st: &StepReport, max: usize) -> Option<String> {
    let text = match st.outcome.result.as_ref()? {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut one_line = String::with_capacity(text.len().min(max * 4));
    for word in text.split_whitespace() {
        if !one_line.is_empty() {
            one_line.push(' ');
        }
        one_line.push_str(word);
        if one_line.len() > max * 4 {
            break;
        }
    }
    (!one_line.is_empty()).then(|| clip(&one_line, max))
}

/// The word for a step's state.
pub fn state_word(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "pending",
        StepState::Succeeded => "ok",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Cancelled => "cancelled",
    }
}

/// The name of a step state as the report writes it (and the class it is drawn in).
pub fn state_class(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "pending",
        StepState::Succeeded => "succeeded",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Cancelled => "cancelled",
    }
}

/// How each state is drawn in a graph (`graph --run`): class, fill and text colour, the colours of
/// report.html.
pub const STATE_STYLES: [(&str, &str, &str); 5] = [
    ("succeeded", "#1a7f37", "#ffffff"),
    ("failed", "#cf222e", "#ffffff"),
    ("skipped", "#d8dee4", "#1f2328"),
    ("cancelled", "#bf8700", "#ffffff"),
    ("pending", "#eaeef2", "#1f2328"),
];

/// The words for how a run ended.
pub fn status_word(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Refused => "refused (cannot be paid)",
        RunStatus::TimedOut => "timed out",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Unreachable => "coordinator unreachable",
    }
}

/// Why a step that was cancelled or never started did not finish, as the run as a whole says it — what
/// JUnit files it under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotFinished {
    /// Stopped because another step failed (fail-fast): not a failure of its own.
    FailFast(String),
    /// The run could not go on: interrupted, or the coordinator unreachable — an error, not a failure.
    Stopped(String),
    /// The run was refused before anything was submitted: the step fails with the refusal's reason.
    Refused(String),
}

/// How a step that did not finish is accounted for; `None` for a step that finished (succeeded, failed
/// or skipped).
pub fn not_finished(r: &Report, st: &StepReport) -> Option<NotFinished> {
    if !matches!(st.state, StepState::Cancelled | StepState::Pending) {
        return None;
    }
    let what = if st.outcome.summary.is_empty() {
        "not run".to_string()
    } else {
        st.outcome.summary.clone()
    };
    Some(match r.status {
        RunStatus::Refused => NotFinished::Refused(match r.issues.first() {
            Some(i) => format!("the run was refused before any submission: {i}"),
            None => "the run was refused before any submission".to_string(),
        }),
        RunStatus::Failed | RunStatus::TimedOut => {
            let failed: Vec<&str> = r
                .steps
                .iter()
                .filter(|s| s.state == StepState::Failed)
                .map(|s| s.id.as_str())
                .take(3)
                .collect();
            let cause = match failed.as_slice() {
                [] => "the run stopped at the first failure".to_string(),
                [one] => format!("step `{one}` failed and the run stops at the first failure"),
                many => format!(
                    "steps {} failed and the run stops at the first failure",
                    many.iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            NotFinished::FailFast(format!("{what} ({cause}; --keep-going runs the rest)"))
        }
        RunStatus::Interrupted => NotFinished::Stopped(format!("{what} (the run was interrupted)")),
        RunStatus::Unreachable => NotFinished::Stopped(match r.issues.first() {
            Some(i) => format!("{what} ({i})"),
            None => format!("{what} (the coordinator could not be reached)"),
        }),
        RunStatus::Running | RunStatus::Succeeded => NotFinished::Stopped(what),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_one_clipped_line() {
        let mut st = StepReport::blank("a", "job");
        assert_eq!(output_preview(&st, 10), None);
        st.outcome.result = Some(Value::String("line one\n\n  line   two and more".into()));
        assert_eq!(
            output_preview(&st, 100).unwrap(),
            "line one line two and more"
        );
        assert_eq!(output_preview(&st, 10).unwrap(), "line one …");
        st.outcome.result = Some(serde_json::json!({"k": [1, 2]}));
        assert_eq!(output_preview(&st, 100).unwrap(), r#"{"k":[1,2]}"#);
        assert_eq!(clip("héllo", 3), "hé…");
    }
}
