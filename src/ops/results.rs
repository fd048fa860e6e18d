//! `results`: fetch a finished job's result and verify its receipt. A 425 is also the service's answer
//! for FAILED, CANCELED and EXPIRED jobs, so the job is read to tell which.
//!
//! What "verified" means is decided here, once ([`check_receipt`]): the receipt's Ed25519 signature
//! holds with the key it names, the receipt is of this job, and the result it signs
//! (`metadata.result`) is the result served. A result changed after signing — by the coordinator or
//! anything between — keeps a valid signature on its receipt, so the comparison is what catches it.

use serde_json::{Map, Value};

use super::{Conn, Done, OpError};
use crate::api::{
    JobId, JobResult, JobView, ReceiptError, canonical_json, result_failed, verify_receipt,
};
use crate::client::{ClientError, Coordinator};
use crate::model::{OpStatus, Operation, Outcome, ValidationStatus};

/// A fetched result.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// What the provider posted; `None` while the job has no result yet.
    pub result: Option<Value>,
    /// The signed receipt, when the service sent one.
    pub receipt: Option<Value>,
    /// Whether the receipt verified (`None` without a receipt).
    pub receipt_check: Option<Result<(), ReceiptError>>,
    /// The job as read alongside.
    pub view: Option<JobView>,
}

impl Fetched {
    /// True when there is a result and it does not say `status: failed`.
    pub fn succeeded(&self) -> bool {
        self.result.is_some() && !result_failed(self.result.as_ref())
    }
}

/// Fetches the result of `job`. `known` is the job as the caller last read it (saves a read).
pub async fn results<C: Coordinator>(
    conn: &Conn<'_, C>,
    job: &JobId,
    known: Option<&JobView>,
) -> Result<Done<Fetched>, OpError> {
    crate::crash::point("fetch");
    let mut asked_again = false;
    loop {
        match conn.call(|c| c.result(job)).await {
            Ok(r) => {
                let view = match known {
                    Some(v) => Some(v.clone()),
                    None => conn.job(job).await.ok(),
                };
                return Ok(fetched(job, r, view));
            }
            Err(e @ ClientError::NotReady { .. }) => {
                let v = conn.job(job).await?;
                if v.succeeded() && !asked_again {
                    // It completed between the two requests: ask for the result once more.
                    asked_again = true;
                    continue;
                }
                if v.succeeded() {
                    // COMPLETED, yet "not ready" twice: the result is withheld, not failed.
                    return Err(OpError::ResultUnavailable {
                        last: Box::new(v),
                        error: Box::new(e),
                    });
                }
                if v.state.is_final() {
                    return Err(OpError::JobEnded { last: Box::new(v) });
                }
                let outcome = not_ready(job, &v);
                return Ok(Done {
                    answer: Fetched {
                        result: None,
                        receipt: None,
                        receipt_check: None,
                        view: Some(v),
                    },
                    outcome,
                });
            }
            Err(e) => {
                // A job known to be COMPLETED whose result cannot be read: say so, whatever the answer.
                if let Some(v) = known.filter(|v| v.succeeded()) {
                    return Err(OpError::ResultUnavailable {
                        last: Box::new(v.clone()),
                        error: Box::new(e),
                    });
                }
                return Err(e.into());
            }
        }
    }
}

/// Checks that `receipt` vouches for `result` of `job`: its signature holds, it is of this job, and
/// the result it signs is the one served (compared in the canonical form the signature covers).
pub fn check_receipt(job: &JobId, result: &Value, receipt: &Value) -> Result<(), ReceiptError> {
    verify_receipt(receipt)?;
    match receipt.get("job_id").and_then(Value::as_str) {
        Some(id) if id == job.as_str() => {}
        Some(other) => return Err(ReceiptError::OtherJob(other.to_string())),
        None => return Err(ReceiptError::Malformed("job_id")),
    }
    let signed = receipt
        .pointer("/metadata/result")
        .ok_or(ReceiptError::NoSignedResult)?;
    if canonical_json(signed) != canonical_json(result) {
        return Err(ReceiptError::ResultDiffers);
    }
    Ok(())
}

fn fetched(job: &JobId, r: JobResult, view: Option<JobView>) -> Done<Fetched> {
    let check = r
        .receipt
        .as_ref()
        .map(|receipt| check_receipt(job, &r.result, receipt));
    let outcome = outcome(
        job,
        view.as_ref(),
        &r.result,
        r.receipt.as_ref(),
        check.as_ref(),
    );
    Done {
        answer: Fetched {
            result: Some(r.result),
            receipt: r.receipt,
            receipt_check: check,
            view,
        },
        outcome,
    }
}

fn not_ready(job: &JobId, v: &JobView) -> Outcome {
    let mut out = Outcome::new(
        Operation::Results,
        format!("Job {job} has no result yet ({})", v.state),
    )
    .with_view(v);
    out.issues
        .push(format!("the job is still {}: no result yet", v.state));
    out.recommendations
        .push(crate::model::hints::fetch_again(job));
    out.validation_status = ValidationStatus::Partial;
    out
}

/// The output text of a result: its `output` when there is one, else the whole result.
pub fn output_of(result: &Value) -> Value {
    match result.get("output") {
        Some(o) => o.clone(),
        None => result.clone(),
    }
}

/// Execution time, tokens and the other measurements a result reports.
pub fn metrics_of(result: &Value) -> Map<String, Value> {
    let mut metrics = Map::new();
    for key in [
        "execution_time",
        "tokens_processed",
        "gpu_used",
        "model",
        "status",
    ] {
        if let Some(v) = result.get(key) {
            metrics.insert(key.into(), v.clone());
        }
    }
    metrics
}

/// The outcome of a fetched result.
pub fn outcome(
    job: &JobId,
    view: Option<&JobView>,
    result: &Value,
    receipt: Option<&Value>,
    check: Option<&Result<(), ReceiptError>>,
) -> Outcome {
    let failed = result_failed(Some(result));
    let mut out = Outcome::new(
        Operation::Results,
        if failed {
            format!("Job {job} completed with a failed result")
        } else {
            format!("Results retrieved for job {job}")
        },
    );
    if let Some(v) = view {
        out.set_view(v);
    }
    out.job_id = Some(job.clone());
    out.status = Some(if failed {
        OpStatus::Failed
    } else {
        OpStatus::Completed
    });
    out.progress = Some(100);
    out.estimated_time = Some(0.0);
    out.result = Some(output_of(result));
    let mut metrics = metrics_of(result);
    match (receipt, check) {
        (Some(receipt), Some(check)) => {
            metrics.insert("receipt_verified".into(), Value::Bool(check.is_ok()));
            for key in ["receipt_id", "price", "units", "unit_type"] {
                if let Some(v) = receipt.get(key) {
                    metrics.insert(key.into(), v.clone());
                }
            }
            if let Err(e) = check {
                out.issues.push(format!("receipt not verified: {e}"));
                out.recommendations.push(
                    "Do not rely on this result until the provider's receipt verifies".into(),
                );
            }
        }
        _ => {
            metrics.insert("receipt_verified".into(), Value::Bool(false));
            out.issues
                .push("the result came without a receipt: nothing to verify".into());
        }
    }
    out.performance_metrics = Some(crate::model::JsonText::of(&metrics));
    if let Some(v) = view
        && v.state == crate::api::JobState::Completed
        && let Some(e) = &v.error
    {
        // A job paid 10 or more whose ZK proof failed: the result is there, the payment is not paid
        // out. Neither is worth hiding behind a plain "completed".
        out.issues
            .push(format!("the job completed with an error: {e}"));
        if let Some(s @ ("escrowed" | "pending")) = v.payment_status.as_deref() {
            out.issues.push(format!(
                "its payment was not released to the provider: the service still holds it (payment status: {s})"
            ));
        }
    }
    if failed {
        let why = result
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        out.issues.insert(0, format!("the job failed: {why}"));
        out.validation_status = ValidationStatus::Failed;
        out.recommendations
            .push("Check the job type and model are supported by the providers".into());
    }
    out.settle()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::sign_receipt;

    const JOB: &str = "ea05c15ab4f94d369c35d96c8fc39ac5";

    fn signed(job: &str, result: &Value) -> Value {
        let mut r = json!({"version": "1.0", "job_id": job, "price": 0.002,
                           "metadata": {"job_payload": {"prompt": "hi"}, "result": result}});
        sign_receipt(&mut r, &ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]));
        r
    }

    #[test]
    fn a_receipt_vouches_only_for_the_result_it_signs_of_the_job_it_names() {
        let job: JobId = JOB.parse().unwrap();
        let result = json!({"status": "completed", "output": "héllo", "gpu_used": null});
        let receipt = signed(JOB, &result);
        assert_eq!(check_receipt(&job, &result, &receipt), Ok(()));
        // The same result in another key order, or without its nulls, is the same signed bytes.
        let reordered = json!({"output": "héllo", "status": "completed"});
        assert_eq!(check_receipt(&job, &reordered, &receipt), Ok(()));
        // The signature still holds on a receipt whose result was changed after signing.
        let tampered = json!({"status": "completed", "output": "forged"});
        assert_eq!(verify_receipt(&receipt), Ok(()));
        assert_eq!(
            check_receipt(&job, &tampered, &receipt),
            Err(ReceiptError::ResultDiffers)
        );
        // A genuine receipt of another job.
        let other = signed("00000000000000000000000000000001", &result);
        assert_eq!(
            check_receipt(&job, &result, &other),
            Err(ReceiptError::OtherJob(
                "00000000000000000000000000000001".into()
            ))
        );
        // A receipt that does not say what it signs vouches for nothing.
        let mut bare = json!({"version": "1.0", "job_id": JOB});
        sign_receipt(
            &mut bare,
            &ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
        );
        assert_eq!(
            check_receipt(&job, &result, &bare),
            Err(ReceiptError::NoSignedResult)
        );
    }

    #[test]
    fn an_outcome_with_a_tampered_result_is_not_verified() {
        let job: JobId = JOB.parse().unwrap();
        let genuine = json!({"status": "completed", "output": "real"});
        let served = json!({"status": "completed", "output": "forged"});
        let done = fetched(
            &job,
            JobResult {
                result: served,
                receipt: Some(signed(JOB, &genuine)),
            },
            None,
        );
        assert_eq!(
            done.answer.receipt_check,
            Some(Err(ReceiptError::ResultDiffers))
        );
        let metrics = done.outcome.performance_metrics.unwrap().to_value();
        assert_eq!(metrics["receipt_verified"], false);
        assert!(
            done.outcome
                .issues
                .iter()
                .any(|i| i.contains("differs from the result the receipt signs")),
            "{:?}",
            done.outcome.issues
        );
    }
}
