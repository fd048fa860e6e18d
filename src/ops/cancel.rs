//! `cancel`: stop a queued or running job, and ask for the refund of its payment (the real service does
//! not refund on cancel, failure or expiry by itself).

use serde_json::json;

use super::{Conn, Done, OpError};
use crate::api::{JobId, JobState, JobView, RefundRequest};
use crate::client::{ClientError, Coordinator};
use crate::model::{OpStatus, Operation, Outcome};

/// Cancels a job. A job that is already final (409) is read, and the outcome says what it is.
pub async fn cancel<C: Coordinator>(
    conn: &Conn<'_, C>,
    job: &JobId,
) -> Result<Done<JobView>, OpError> {
    match conn.cancel_job(job).await {
        Ok(v) => {
            let outcome = outcome(&v);
            Ok(Done { answer: v, outcome })
        }
        Err(e @ ClientError::Conflict { .. }) => match conn.job(job).await {
            Ok(v) => {
                let mut outcome = OpError::from(e).outcome(Operation::Cancel).with_view(&v);
                outcome.summary = format!(
                    "Job {job} cannot be cancelled: it is already {}",
                    OpStatus::of(&v).as_str()
                );
                Ok(Done { answer: v, outcome })
            }
            Err(_) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The outcome of a cancel.
pub fn outcome(v: &JobView) -> Outcome {
    let mut out =
        Outcome::new(Operation::Cancel, format!("Job {} cancelled", v.job_id)).with_view(v);
    out.performance_metrics = Some(json!({"payment_status": v.payment_status}));
    if v.payment_status.as_deref() == Some("escrowed") {
        out.issues
            .push("the payment is still escrowed: the service did not refund it on cancel".into());
        out.recommendations.push(
            "Ask for a refund (POST /v1/payments/{payment_id}/refund); the runner does this in plans"
                .into(),
        );
    }
    out.settle()
}

/// What became of a payment after asking for its refund.
#[derive(Clone, Debug, PartialEq)]
pub struct Refund {
    /// The payment status read back (`refunded`, `escrowed`, …).
    pub payment_status: Option<String>,
    /// True when the refund is confirmed.
    pub refunded: bool,
}

/// Asks for the refund of a job that ended without being paid out (cancelled, failed, expired), unless
/// it is refunded already.
pub async fn refund<C: Coordinator>(conn: &Conn<'_, C>, v: &JobView) -> Refund {
    let mut payment_status = v.payment_status.clone();
    if matches!(
        v.state,
        JobState::Canceled | JobState::Failed | JobState::Expired
    ) && payment_status.as_deref() != Some("refunded")
        && let Some(pid) = &v.payment_id
    {
        let req = RefundRequest {
            job_id: v.job_id.to_string(),
            payment_id: pid.clone(),
            reason: "buyer_requested".into(),
        };
        if let Ok(r) = conn.call(|c| c.refund(&req)).await {
            payment_status = Some(r.status);
        }
    }
    let refunded = matches!(
        v.state,
        JobState::Canceled | JobState::Failed | JobState::Expired
    ) && payment_status.as_deref() == Some("refunded");
    Refund {
        payment_status,
        refunded,
    }
}
