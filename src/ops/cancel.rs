//! `cancel`: stop a queued or running job. The real service does not refund on cancel, failure or
//! expiry by itself: the refund is its own operation ([`super::refund`]), which the executor asks for
//! after every cancel and `aitbc-flow job refund` asks for on its own.

use serde_json::json;

use super::{Conn, Done, OpError};
use crate::api::{JobId, JobView};
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
    out.performance_metrics = Some(json!({"payment_status": v.payment_status}).into());
    if let Some(s @ ("escrowed" | "pending")) = v.payment_status.as_deref() {
        out.issues.push(format!(
            "the payment is still {s}: the service did not refund it on cancel"
        ));
        out.recommendations.push(format!(
            "Ask for the refund with `aitbc-flow job refund {}` (plans ask for it after every cancel)",
            v.job_id
        ));
    }
    out.settle()
}
