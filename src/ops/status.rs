//! `status`: read a job and say where it stands, with what its view shows that is worth an issue (a
//! skipped payment, a failed result, an expiry, an `error` on a completed job, a payment still held).
//!
//! The job view's `payment_status` is not to be trusted once a job is over: after a refund the real
//! service still shows `escrowed` there, and only `GET /v1/jobs/{id}/payment` says `refunded`. A final
//! job whose view says its payment is still escrowed or pending is therefore read through its payment
//! view too, and the outcome reports that one.

use serde_json::{Value, json};

use super::{Conn, Done, OpError};
use crate::api::{JobId, JobState, JobView, PaymentView};
use crate::client::Coordinator;
use crate::model::{OpStatus, Operation, Outcome, ValidationStatus};

/// Reads a job (and, when it is over with a payment the view says is still held, its payment).
pub async fn status<C: Coordinator>(
    conn: &Conn<'_, C>,
    job: &JobId,
) -> Result<Done<JobView>, OpError> {
    let view = conn.job(job).await?;
    let mut unread = None;
    let payment = if payment_worth_reading(&view) {
        match conn.call(|c| c.payment(job)).await {
            Ok(p) => Some(p),
            Err(e) => {
                unread = Some(e);
                None
            }
        }
    } else {
        None
    };
    let mut outcome = outcome_with(&view, payment.as_ref());
    if let Some(e) = unread {
        outcome.issues.push(format!(
            "the payment could not be read, so its status is the job view's, which lags behind refunds: {e}"
        ));
        outcome.settle_in_place();
    }
    Ok(Done {
        answer: view,
        outcome,
    })
}

/// True when a job is over and its view says the payment is still escrowed or pending: the view may be
/// stale (after a refund), and the payment view says what it is.
pub fn payment_worth_reading(v: &JobView) -> bool {
    v.state.is_final()
        && v.payment_id.is_some()
        && matches!(v.payment_status.as_deref(), Some("escrowed" | "pending"))
}

/// The outcome of a status read, from the job view alone.
pub fn outcome(v: &JobView) -> Outcome {
    outcome_with(v, None)
}

/// The outcome of a status read; `payment`, when read, says what the payment is.
pub fn outcome_with(v: &JobView, payment: Option<&PaymentView>) -> Outcome {
    let status = OpStatus::of(v);
    let mut out = Outcome::new(
        Operation::Status,
        format!("Job {} is {} ({})", v.job_id, status.as_str(), v.state),
    )
    .with_view(v);
    out.issues = view_issues(v, false);
    out.issues.extend(held_issues(v, payment));
    let payment_status = payment.map_or(v.payment_status.clone(), |p| Some(p.status.clone()));
    let mut metrics = json!({
        "state": v.state.as_str(),
        "payment_status": payment_status,
        "assigned_miner_id": v.assigned_miner_id,
        "requested_at": v.requested_at,
        "expires_at": v.expires_at,
    });
    if let (Some(p), Value::Object(m)) = (payment, &mut metrics) {
        m.insert("payment".into(), super::refund::payment_metrics(p));
        if v.payment_status.as_deref() != Some(p.status.as_str()) {
            m.insert("job_view_payment_status".into(), json!(v.payment_status));
        }
    }
    out.performance_metrics = Some(metrics.into());
    out.payment = payment.map(|p| p.amount);
    if held(v, payment).is_some() && v.state != JobState::Completed {
        out.recommendations.push(format!(
            "Ask for the refund with `aitbc-flow job refund {}`",
            v.job_id
        ));
    }
    match status {
        OpStatus::Submitted | OpStatus::Processing => out
            .recommendations
            .push(crate::model::hints::check_again(&v.job_id)),
        OpStatus::Completed => out
            .recommendations
            .push(crate::model::hints::fetch(&v.job_id)),
        _ => {}
    }
    if status == OpStatus::Failed {
        out.validation_status = ValidationStatus::Failed;
    }
    out.settle()
}

/// The status of a payment still held by the service for a job that is over (escrowed or pending),
/// as the payment view says it when read, else as the job view does.
fn held<'a>(v: &'a JobView, payment: Option<&'a PaymentView>) -> Option<&'a str> {
    let status = match payment {
        Some(p) => p.status.as_str(),
        None => v.payment_status.as_deref()?,
    };
    (v.state.is_final() && v.payment_id.is_some() && matches!(status, "escrowed" | "pending"))
        .then_some(status)
}

/// The issue of a payment still held for a job that is over: not refunded after a cancel, a failure or
/// an expiry, or not released to the provider after a completion.
fn held_issues(v: &JobView, payment: Option<&PaymentView>) -> Vec<String> {
    let Some(status) = held(v, payment) else {
        return Vec::new();
    };
    let amount = payment.map_or(String::new(), |p| format!(" of {} AITBC", p.amount));
    match v.state {
        // A completed job's payment is only worth an issue when the service says why it held it (a
        // pending payment after completion is what a service without a chain shows for every job).
        JobState::Completed if v.error.is_some() => vec![format!(
            "its payment{amount} was not released to the provider: the service still holds it (payment status: {status})"
        )],
        JobState::Completed => Vec::new(),
        s => vec![format!(
            "its payment{amount} is still held by the service (payment status: {status}): it was not refunded when the job ended {s}"
        )],
    }
}

/// Issues a job's view may carry: a skipped payment (on a paid job), a failed result, an expiry, an
/// `error` on a completed job (a job paid 10 or more whose ZK proof failed ends COMPLETED with its
/// payment left in escrow).
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
    if v.state == JobState::Completed
        && let Some(e) = &v.error
    {
        issues.push(format!("the job completed with an error: {e}"));
    }
    if matches!(v.state, JobState::Failed | JobState::Expired) {
        let why = v.error.as_deref().unwrap_or("no reason given");
        issues.push(format!("the job ended {}: {why}", v.state));
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JobCreate;
    use crate::client::fake::{Call, FakeCoordinator, JobScript};
    use crate::money::Money;

    fn create(payment: i64) -> JobCreate {
        let mut payload = serde_json::Map::new();
        payload.insert("type".into(), json!("inference"));
        payload.insert("prompt".into(), json!("hi"));
        JobCreate {
            payload,
            payment_amount: Some(Money::from_int(payment)),
            buyer_address: Some("w".into()),
            ..JobCreate::default()
        }
    }

    #[tokio::test]
    async fn a_finished_job_reports_its_payment_from_the_payment_view() {
        let c = FakeCoordinator::new();
        c.fund("w", Money::from_int(10))
            .script_others(JobScript::never_finishes());
        let (v, _) = c.submit(&create(4), None).await.unwrap();
        let conn = Conn::new(&c);
        c.cancel(&v.job_id).await.unwrap();

        // Cancelled, not refunded: the payment is held, and the outcome says how to get it back.
        let o = status(&conn, &v.job_id).await.unwrap().outcome;
        assert!(
            o.issues[0].starts_with("its payment of 4 AITBC is still held by the service"),
            "{:?}",
            o.issues
        );
        assert!(o.recommendations.iter().any(|r| r.contains("job refund")));

        // Refunded: the job view still says escrowed; the status says refunded, and no issue.
        super::super::refund::refund(&conn, &v.job_id, None)
            .await
            .unwrap();
        let o = status(&conn, &v.job_id).await.unwrap().outcome;
        let m = o.performance_metrics.unwrap().to_value();
        assert_eq!(m["payment_status"], "refunded");
        assert_eq!(m["job_view_payment_status"], "escrowed");
        assert!(o.issues.is_empty(), "{:?}", o.issues);
        assert_eq!(o.validation_status, ValidationStatus::Success);

        // A job still running is not worth a payment read.
        let (r, _) = c.submit(&create(1), None).await.unwrap();
        let before = c.calls(Call::Payment);
        status(&conn, &r.job_id).await.unwrap();
        assert_eq!(c.calls(Call::Payment), before);
    }

    #[test]
    fn a_completed_job_with_an_error_is_partial_with_its_payment_held() {
        let v: JobView = serde_json::from_value(json!({
            "job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": "COMPLETED",
            "payload": {"type": "inference"}, "payment_id": "p", "payment_status": "escrowed",
            "error": "ZK proof required before escrow release (status: generation_failed)",
            "result": {"status": "completed", "output": "ok"}
        }))
        .unwrap();
        let o = outcome(&v);
        assert_eq!(o.status, Some(OpStatus::Completed));
        assert_eq!(o.validation_status, ValidationStatus::Partial);
        assert_eq!(
            o.issues,
            vec![
                "the job completed with an error: ZK proof required before escrow release (status: generation_failed)",
                "its payment was not released to the provider: the service still holds it (payment status: escrowed)"
            ]
        );
        // A pending payment after a plain completion (a service without a chain) is no issue.
        let mut plain = v.clone();
        plain.error = None;
        plain.payment_status = Some("pending".into());
        assert!(outcome(&plain).issues.is_empty());
    }
}
