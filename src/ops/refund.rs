//! `refund`: ask for a job's payment back, and say what became of it as the payment view reads.
//!
//! The real service refunds nothing by itself (not on cancel, failure or expiry), answers a refund it
//! cannot make with 400 `Failed to refund payment` (after ~14 s when no chain is reachable), and leaves
//! the job view saying `escrowed` after a refund that worked: only `GET /v1/jobs/{id}/payment` says
//! `refunded`. So the payment view is read before and after asking, a refused refund is reported with
//! the amount still held, and an answer that was lost is made good by reading the payment back (asking
//! twice is harmless: a payment that is no longer escrowed is refused, and the read says why).

use serde_json::{Value, json};

use super::{Conn, Done, OpError};
use crate::api::{JobId, JobState, JobView, PaymentView, RefundRequest};
use crate::client::{ClientError, Coordinator};
use crate::model::{JsonText, OpStatus, Operation, Outcome, ValidationStatus};
use crate::money::Money;

/// What became of a job's payment.
#[derive(Clone, Debug, PartialEq)]
pub enum Settled {
    /// The job paid nothing (no payment, or the service skipped it).
    Unpaid,
    /// Refunded; `already` when it was refunded before this call asked.
    Refunded {
        /// The amount given back.
        amount: Money,
        /// True when nothing had to be asked.
        already: bool,
    },
    /// Paid out to the provider: there is nothing to refund.
    Released {
        /// The amount paid.
        amount: Money,
    },
    /// Not refundable now: the job is still queued or running, or it completed (its payment belongs to
    /// the provider).
    NotRefundable {
        /// The amount held.
        amount: Money,
        /// The payment status.
        status: String,
        /// Why.
        why: String,
    },
    /// The refund was asked for and did not happen: the amount is still held by the service.
    Held {
        /// The amount still held.
        amount: Money,
        /// The payment status read back (or the job view's, when the payment could not be read).
        status: String,
        /// What the service answered.
        error: String,
    },
}

impl Settled {
    /// The amount refunded now or before, if any.
    pub fn refunded(&self) -> Option<Money> {
        match self {
            Settled::Refunded { amount, .. } => Some(*amount),
            _ => None,
        }
    }

    /// The amount the service still holds after a refund was asked for and refused.
    pub fn held(&self) -> Option<Money> {
        match self {
            Settled::Held { amount, .. } => Some(*amount),
            _ => None,
        }
    }

    /// The payment status as the payment view says it.
    pub fn status(&self) -> Option<&str> {
        match self {
            Settled::Unpaid => None,
            Settled::Refunded { .. } => Some("refunded"),
            Settled::Released { .. } => Some("released"),
            Settled::NotRefundable { status, .. } | Settled::Held { status, .. } => Some(status),
        }
    }

    /// One line for a report or a terminal, about job `job`.
    pub fn note(&self, job: &JobId) -> String {
        match self {
            Settled::Unpaid => format!("job {job} paid nothing: no refund needed"),
            Settled::Refunded {
                amount,
                already: false,
            } => format!("job {job}: its payment of {amount} AITBC was refunded"),
            Settled::Refunded {
                amount,
                already: true,
            } => format!("job {job}: its payment of {amount} AITBC was already refunded"),
            Settled::Released { amount } => {
                format!("job {job}: its payment of {amount} AITBC was released to the provider")
            }
            Settled::NotRefundable {
                amount,
                status,
                why,
            } => format!(
                "job {job}: its payment of {amount} AITBC was not refunded ({why}; payment status: {status})"
            ),
            Settled::Held {
                amount,
                status,
                error,
            } => format!(
                "the refund of job {job} was refused: {amount} AITBC still held by the service \
                 (payment status: {status}): {error}"
            ),
        }
    }
}

/// A refund's answer: the job, its payment as read last, and what became of the payment.
#[derive(Clone, Debug)]
pub struct Refunded {
    /// The job as read (or as the caller knew it).
    pub job: JobView,
    /// The payment view, when it could be read.
    pub payment: Option<PaymentView>,
    /// What became of the payment.
    pub settled: Settled,
}

/// True for payment statuses the service can still refund.
fn refundable_status(s: &str) -> bool {
    matches!(s, "escrowed" | "pending")
}

/// Asks for the refund of `job`'s payment when it ended without being paid out (CANCELED, FAILED,
/// EXPIRED, or COMPLETED with a failed result), and reads back what became of it. `known` is the job
/// as the caller last read it.
pub async fn refund<C: Coordinator>(
    conn: &Conn<'_, C>,
    job: &JobId,
    known: Option<&JobView>,
) -> Result<Done<Refunded>, OpError> {
    let view = match known {
        Some(v) => v.clone(),
        None => conn.call(|c| c.job(job)).await?,
    };
    let (payment, settled) = settle(conn, &view).await?;
    let outcome = outcome(&view, payment.as_ref(), &settled);
    Ok(Done {
        answer: Refunded {
            job: view,
            payment,
            settled,
        },
        outcome,
    })
}

/// Reads the payment of `view`'s job and asks for its refund when it may be refunded. `Err` only when
/// the payment could not be read before anything was asked.
pub async fn settle<C: Coordinator>(
    conn: &Conn<'_, C>,
    view: &JobView,
) -> Result<(Option<PaymentView>, Settled), OpError> {
    let job = &view.job_id;
    if view.payment_id.is_none() || view.payment_status.as_deref() == Some("skipped") {
        return Ok((None, Settled::Unpaid));
    }
    let payment = match conn.call(|c| c.payment(job)).await {
        Ok(p) => p,
        Err(ClientError::NotFound { .. }) => return Ok((None, Settled::Unpaid)),
        Err(e) => return Err(e.into()),
    };
    let amount = payment.amount;
    let status = payment.status.clone();
    let settled = match status.as_str() {
        "refunded" => Settled::Refunded {
            amount,
            already: true,
        },
        "released" => Settled::Released { amount },
        s if !refundable_status(s) => Settled::NotRefundable {
            amount,
            status: status.clone(),
            why: format!("the service refunds only escrowed or pending payments, not {s} ones"),
        },
        _ if !view.state.is_final() => Settled::NotRefundable {
            amount,
            status: status.clone(),
            why: format!(
                "the job is still {}: cancel it first (`aitbc-flow job cancel {job}`)",
                view.state
            ),
        },
        _ if view.succeeded() => Settled::NotRefundable {
            amount,
            status: status.clone(),
            why: match &view.error {
                Some(e) => format!(
                    "the job completed, so its payment belongs to the provider; the service holds it because: {e}"
                ),
                None => "the job completed, so its payment belongs to the provider".to_string(),
            },
        },
        _ => {
            let req = RefundRequest {
                job_id: job.to_string(),
                payment_id: payment.payment_id.clone(),
                reason: "buyer_requested".into(),
            };
            let asked = conn.call(|c| c.refund(&req)).await;
            // Read back either way: a refund whose answer was lost may have happened, and one the
            // service said it made is only believed once the payment view says so.
            let back = conn.call(|c| c.payment(job)).await.ok();
            let now = back.as_ref().map_or(status.clone(), |p| p.status.clone());
            let settled = if now == "refunded" {
                Settled::Refunded {
                    amount,
                    already: false,
                }
            } else {
                Settled::Held {
                    amount,
                    status: now.clone(),
                    error: match &asked {
                        Err(e) => e.to_string(),
                        Ok(r) => format!(
                            "the service answered `{}`, but the payment view still says `{now}`",
                            r.status
                        ),
                    },
                }
            };
            return Ok((back.or(Some(payment)), settled));
        }
    };
    Ok((Some(payment), settled))
}

/// The outcome of a refund.
pub fn outcome(v: &JobView, payment: Option<&PaymentView>, settled: &Settled) -> Outcome {
    let job = &v.job_id;
    let (summary, validation) = match settled {
        Settled::Unpaid => (
            format!("Job {job} paid nothing: there is nothing to refund"),
            ValidationStatus::Success,
        ),
        Settled::Refunded {
            amount,
            already: false,
        } => (
            format!("Refunded {amount} AITBC for job {job}"),
            ValidationStatus::Success,
        ),
        Settled::Refunded {
            amount,
            already: true,
        } => (
            format!("The payment of job {job} ({amount} AITBC) was already refunded"),
            ValidationStatus::Success,
        ),
        Settled::Released { amount } => (
            format!(
                "Job {job} cannot be refunded: its payment of {amount} AITBC was released to the provider"
            ),
            ValidationStatus::Failed,
        ),
        Settled::NotRefundable { amount, .. } => (
            format!("Job {job} cannot be refunded now: {amount} AITBC stays held"),
            ValidationStatus::Failed,
        ),
        Settled::Held { amount, .. } => (
            format!("The refund of job {job} was refused: {amount} AITBC still held"),
            ValidationStatus::Failed,
        ),
    };
    let mut out = Outcome::new(Operation::Refund, summary).with_view(v);
    out.validation_status = validation;
    if validation == ValidationStatus::Failed {
        out.confidence = 0.0;
    }
    out.payment = payment.map(|p| p.amount);
    out.result = settled.status().map(|s| json!(s));
    out.performance_metrics = Some(JsonText::of(&json!({
        "payment_id": payment.map(|p| p.payment_id.clone()).or_else(|| v.payment_id.clone()),
        "amount": payment.map(|p| p.amount),
        "payment_status": settled.status(),
        "job_view_payment_status": v.payment_status,
        "refunded": settled.refunded(),
        "held": match settled {
            Settled::Held { amount, .. } | Settled::NotRefundable { amount, .. } => Some(*amount),
            _ => None,
        },
    })));
    match settled {
        Settled::Unpaid | Settled::Refunded { .. } => {}
        Settled::Released { .. } => out.issues.push(settled.note(job)),
        Settled::NotRefundable { why, .. } => {
            out.issues.push(settled.note(job));
            if !v.state.is_final() {
                out.recommendations.push(format!(
                    "Cancel the job with `aitbc-flow job cancel {job}`, then ask again with `aitbc-flow job refund {job}`"
                ));
            } else if why.contains("belongs to the provider") {
                out.recommendations.push(
                    "A completed job is paid for: a payment held after completion is released to the provider once the service's checks pass (e.g. its ZK proof)"
                        .into(),
                );
            }
        }
        Settled::Held { .. } => {
            out.issues.push(settled.note(job));
            out.recommendations.push(format!(
                "Ask again later with `aitbc-flow job refund {job}`: the service refunds through the chain, and cannot while the chain is unreachable"
            ));
            out.recommendations.push(format!(
                "Check the payment with `aitbc-flow job status {job}` (it reads GET /v1/jobs/{{id}}/payment: the job view alone says `escrowed` even after a refund)"
            ));
        }
    }
    if v.state == JobState::Completed && !v.succeeded() {
        out.status = Some(OpStatus::Failed);
    }
    out
}

/// The fields of a payment worth showing in a status read.
pub fn payment_metrics(p: &PaymentView) -> Value {
    json!({"payment_id": p.payment_id, "amount": p.amount, "status": p.status})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JobCreate;
    use crate::client::fake::{Call, FakeCoordinator, JobScript};
    use crate::model::ValidationStatus;

    fn create(prompt: &str, payment: i64) -> JobCreate {
        let mut payload = serde_json::Map::new();
        payload.insert("type".into(), json!("inference"));
        payload.insert("prompt".into(), json!(prompt));
        payload.insert("client_ref".into(), json!("r1/a"));
        JobCreate {
            payload,
            payment_amount: Some(Money::from_int(payment)),
            buyer_address: Some("w".into()),
            ..JobCreate::default()
        }
    }

    async fn cancelled(c: &FakeCoordinator, payment: i64) -> JobView {
        c.fund("w", Money::from_int(10))
            .script_others(JobScript::never_finishes());
        let (v, _) = c.submit(&create("hi", payment), None).await.unwrap();
        c.cancel(&v.job_id).await.unwrap()
    }

    #[tokio::test]
    async fn a_refund_is_read_back_from_the_payment_view() {
        let c = FakeCoordinator::new();
        let v = cancelled(&c, 4).await;
        let done = refund(&Conn::new(&c), &v.job_id, None).await.unwrap();
        assert_eq!(
            done.answer.settled,
            Settled::Refunded {
                amount: Money::from_int(4),
                already: false
            }
        );
        assert_eq!(c.balance_of("w"), Money::from_int(10));
        let o = done.outcome;
        assert_eq!(o.operation, Operation::Refund);
        assert_eq!(o.validation_status, ValidationStatus::Success);
        assert_eq!(o.summary, format!("Refunded 4 AITBC for job {}", v.job_id));
        let m = o.performance_metrics.unwrap().to_value();
        // The job view still says escrowed; the payment view is what the outcome reports.
        assert_eq!(m["payment_status"], "refunded");
        assert_eq!(m["job_view_payment_status"], "escrowed");
        // Asking again asks nothing: the payment view says it is done.
        let again = refund(&Conn::new(&c), &v.job_id, None).await.unwrap();
        assert!(matches!(
            again.answer.settled,
            Settled::Refunded { already: true, .. }
        ));
        assert_eq!(c.calls(Call::Refund), 1);
    }

    #[tokio::test]
    async fn a_refused_refund_keeps_the_amount_held() {
        let c = FakeCoordinator::new();
        let v = cancelled(&c, 3).await;
        c.fail_next(
            Call::Refund,
            ClientError::Invalid {
                url: "u".into(),
                status: 400,
                message: "Failed to refund payment".into(),
                details: vec![],
            },
        );
        let done = refund(&Conn::new(&c), &v.job_id, None).await.unwrap();
        assert_eq!(done.answer.settled.held(), Some(Money::from_int(3)));
        let o = done.outcome;
        assert_eq!(o.validation_status, ValidationStatus::Failed);
        assert!(
            o.summary.contains("refused: 3 AITBC still held"),
            "{}",
            o.summary
        );
        assert!(
            o.issues[0].contains("Failed to refund payment") && o.issues[0].contains("escrowed"),
            "{:?}",
            o.issues
        );
        assert_eq!(c.balance_of("w"), Money::from_int(7));
    }

    #[tokio::test]
    async fn a_lost_answer_is_made_good_by_reading_the_payment() {
        let c = FakeCoordinator::new();
        let v = cancelled(&c, 2).await;
        c.lose_next_answer(
            Call::Refund,
            FakeCoordinator::unavailable("/v1/payments/x/refund"),
        );
        let done = refund(&Conn::new(&c), &v.job_id, None).await.unwrap();
        assert!(matches!(
            done.answer.settled,
            Settled::Refunded { already: false, .. }
        ));
    }

    #[tokio::test]
    async fn running_completed_and_unpaid_jobs_are_not_refunded() {
        let c = FakeCoordinator::new();
        c.fund("w", Money::from_int(10))
            .script_others(JobScript::never_finishes());
        let (v, _) = c.submit(&create("hi", 2), None).await.unwrap();
        let running = c.job(&v.job_id).await.unwrap();
        let done = refund(&Conn::new(&c), &v.job_id, Some(&running))
            .await
            .unwrap();
        assert!(
            matches!(&done.answer.settled, Settled::NotRefundable { why, .. } if why.contains("cancel it first"))
        );
        assert_eq!(done.outcome.validation_status, ValidationStatus::Failed);

        let c = FakeCoordinator::new();
        c.fund("w", Money::from_int(10));
        let (v, _) = c.submit(&create("hi", 2), None).await.unwrap();
        let done_job = c.job(&v.job_id).await.unwrap();
        let done = refund(&Conn::new(&c), &v.job_id, Some(&done_job))
            .await
            .unwrap();
        assert_eq!(
            done.answer.settled,
            Settled::Released {
                amount: Money::from_int(2)
            }
        );

        let (v, _) = c.submit(&create("free", 0), None).await.unwrap();
        let done = refund(&Conn::new(&c), &v.job_id, None).await.unwrap();
        assert_eq!(done.answer.settled, Settled::Unpaid);
        assert_eq!(done.outcome.validation_status, ValidationStatus::Success);
        assert_eq!(c.calls(Call::Refund), 0);
    }
}
