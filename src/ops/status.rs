//! `status`: read a job and say where it stands, with what its view shows that is worth an issue (a
//! skipped payment, a failed result, an expiry).

use serde_json::{Value, json};

use super::{Conn, Done, OpError};
use crate::api::{JobId, JobState, JobView};
use crate::client::Coordinator;
use crate::model::{OpStatus, Operation, Outcome, ValidationStatus};

/// Reads a job.
pub async fn status<C: Coordinator>(
    conn: &Conn<'_, C>,
    job: &JobId,
) -> Result<Done<JobView>, OpError> {
    let view = conn.job(job).await?;
    let outcome = outcome(&view);
    Ok(Done {
        answer: view,
        outcome,
    })
}

/// The outcome of a status read.
pub fn outcome(v: &JobView) -> Outcome {
    let status = OpStatus::of(v);
    let mut out = Outcome::new(
        Operation::Status,
        format!("Job {} is {} ({})", v.job_id, status.as_str(), v.state),
    )
    .with_view(v);
    out.issues = view_issues(v, false);
    out.performance_metrics = Some(json!({
        "state": v.state.as_str(),
        "payment_status": v.payment_status,
        "assigned_miner_id": v.assigned_miner_id,
        "requested_at": v.requested_at,
        "expires_at": v.expires_at,
    }));
    match status {
        OpStatus::Submitted | OpStatus::Processing => out.recommendations.push(format!(
            "Check again shortly, or wait with `aitbc-flow job submit … --wait`; fetch the result with `aitbc-flow job results {}` once it completes",
            v.job_id
        )),
        OpStatus::Completed => out.recommendations.push(format!(
            "Fetch the result with `aitbc-flow job results {}`",
            v.job_id
        )),
        _ => {}
    }
    if status == OpStatus::Failed {
        out.validation_status = ValidationStatus::Failed;
    }
    out.settle()
}

/// Issues a job's view may carry: a skipped payment (on a paid job), a failed result, an expiry.
pub fn view_issues(v: &JobView, paid: bool) -> Vec<String> {
    let mut issues = Vec::new();
    if paid && v.payment_status.as_deref() == Some("skipped") {
        issues.push(
            "the service skipped the payment (payment_status: skipped): the job runs unpaid".into(),
        );
    }
    if v.state == JobState::Completed && !v.succeeded() {
        let why = v
            .result
            .as_ref()
            .and_then(|r| r.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        issues.push(format!("the job completed with a failed result: {why}"));
    }
    if matches!(v.state, JobState::Failed | JobState::Expired) {
        let why = v.error.as_deref().unwrap_or("no reason given");
        issues.push(format!("the job ended {}: {why}", v.state));
    }
    issues
}
