//! `wait`: poll a job until it reaches a final state or the time is up. A poll that fails with a
//! retryable error is polled again — a failed poll never resubmits anything — and the delays come from
//! the one polling backoff, [`PollBackoff`] (never shorter than a `Retry-After` the service sent). Polls go
//! through [`Coordinator::poll`], where the client budgets the polls of every job waited for together.

use std::time::Duration;

use super::conn::now;
use super::retry::PollBackoff;
use super::{Conn, OpError};
use crate::api::{JobId, JobView};
use crate::client::{ClientError, Coordinator};
use crate::model::Attempt;

/// Polls `job` until it is final (returned) or `timeout` passes ([`OpError::WaitTimeout`] with the job
/// as last seen). Failed polls are traced as attempts; every change of state is traced too.
pub async fn wait<C: Coordinator>(
    conn: &Conn<'_, C>,
    job: &JobId,
    timeout: Duration,
) -> Result<JobView, OpError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = PollBackoff::with(conn.poll.0, conn.poll.1);
    let mut last: Option<JobView> = None;
    let mut poll_errors = 0u32;
    loop {
        let mut retry_after = None;
        // A poll waiting for its turn in the client's budget does not outlive the wait.
        let Ok(polled) = tokio::time::timeout_at(deadline, conn.coord.poll(job)).await else {
            break;
        };
        crate::crash::point("wait");
        match polled {
            Ok(view) => {
                if last.as_ref().map(|l| l.state) != Some(view.state) {
                    conn.trace.job_state(job, view.state);
                }
                if view.state.is_final() {
                    return Ok(view);
                }
                last = Some(view);
            }
            Err(e) if e.is_retryable() => {
                poll_errors += 1;
                retry_after = e.retry_after();
                conn.trace.attempt(Attempt {
                    number: poll_errors,
                    started_at: now(),
                    duration_ms: 0,
                    error: Some(format!("poll failed: {e}")),
                    delay_ms: None,
                });
            }
            Err(e) => return Err(e.into()),
        }
        let pause = backoff.next().unwrap_or(conn.poll.1);
        let pause = retry_after.map_or(pause, |r| pause.max(r));
        let now_t = tokio::time::Instant::now();
        if now_t >= deadline {
            break;
        }
        tokio::time::sleep(pause.min(deadline - now_t)).await;
        if tokio::time::Instant::now() >= deadline {
            // One last look before giving up.
            if let Ok(view) = conn.coord.job(job).await {
                if view.state.is_final() {
                    conn.trace.job_state(job, view.state);
                    return Ok(view);
                }
                last = Some(view);
            }
            break;
        }
    }
    Err(match last {
        Some(v) => OpError::WaitTimeout {
            last: Box::new(v),
            after: timeout,
        },
        None => ClientError::Timeout {
            url: format!("{}/v1/jobs/{job}", conn.coord.base_url()),
            after: timeout,
        }
        .into(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::{Value, json};

    use super::*;
    use crate::api::{
        AllocateRequest, Allocation, GpuOffer, JobCreate, JobList, JobResult, JobState, ListQuery,
        PaymentView, RefundRequest, RefundResponse, WalletBalance,
    };
    use crate::model::{OpStatus, Operation};

    /// A coordinator whose job reads follow a script, recording when each read happened.
    struct Scripted {
        answers: Mutex<Vec<Result<JobState, ClientError>>>,
        reads: Mutex<Vec<tokio::time::Instant>>,
    }

    fn view(state: JobState) -> JobView {
        serde_json::from_value(json!({
            "job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": state, "payload": {"type": "inference"}
        }))
        .unwrap()
    }

    impl Coordinator for Scripted {
        fn base_url(&self) -> &str {
            "http://127.0.0.1:1"
        }
        async fn submit(
            &self,
            _: &JobCreate,
            _: Option<&str>,
        ) -> Result<(JobView, bool), ClientError> {
            unimplemented!()
        }
        async fn job(&self, _: &JobId) -> Result<JobView, ClientError> {
            self.reads.lock().unwrap().push(tokio::time::Instant::now());
            let mut a = self.answers.lock().unwrap();
            let next = if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            };
            next.map(view)
        }
        async fn result(&self, _: &JobId) -> Result<JobResult, ClientError> {
            unimplemented!()
        }
        async fn cancel(&self, _: &JobId) -> Result<JobView, ClientError> {
            unimplemented!()
        }
        async fn list(&self, _: &ListQuery) -> Result<JobList, ClientError> {
            unimplemented!()
        }
        async fn receipt(&self, _: &JobId) -> Result<Value, ClientError> {
            unimplemented!()
        }
        async fn payment(&self, _: &JobId) -> Result<PaymentView, ClientError> {
            unimplemented!()
        }
        async fn refund(&self, _: &RefundRequest) -> Result<RefundResponse, ClientError> {
            unimplemented!()
        }
        async fn allocate(&self, _: &AllocateRequest) -> Result<Allocation, ClientError> {
            unimplemented!()
        }
        async fn gpu_offers(&self, _: Option<u32>) -> Result<Vec<GpuOffer>, ClientError> {
            unimplemented!()
        }
        async fn balance(&self, _: &str) -> Result<WalletBalance, ClientError> {
            unimplemented!()
        }
    }

    fn scripted(answers: Vec<Result<JobState, ClientError>>) -> Scripted {
        Scripted {
            answers: Mutex::new(answers),
            reads: Mutex::new(Vec::new()),
        }
    }

    fn gaps(s: &Scripted) -> Vec<u64> {
        let r = s.reads.lock().unwrap();
        r.windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect()
    }

    fn id() -> JobId {
        "ea05c15ab4f94d369c35d96c8fc39ac5".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn polls_with_backoff_from_half_a_second_to_five() {
        let mut answers = vec![Ok(JobState::Queued); 9];
        answers.push(Ok(JobState::Completed));
        let s = scripted(answers);
        let v = wait(&Conn::new(&s), &id(), Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!(v.state, JobState::Completed);
        assert_eq!(
            gaps(&s),
            vec![500, 1000, 2000, 4000, 5000, 5000, 5000, 5000, 5000]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_poll_failure_is_polled_again() {
        let down = ClientError::Unavailable {
            url: "u".into(),
            reason: "HTTP 503".into(),
            status: Some(503),
        };
        let s = scripted(vec![
            Ok(JobState::Running),
            Err(down),
            Ok(JobState::Canceled),
        ]);
        let v = wait(&Conn::new(&s), &id(), Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!(v.state, JobState::Canceled);
        let s = scripted(vec![Err(ClientError::NotFound {
            url: "u".into(),
            detail: "job not found".into(),
        })]);
        let e = wait(&Conn::new(&s), &id(), Duration::from_secs(300))
            .await
            .unwrap_err();
        assert!(matches!(&e, OpError::Client(c) if matches!(**c, ClientError::NotFound { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_timeout_with_the_last_state() {
        let s = scripted(vec![Ok(JobState::Running)]);
        let start = tokio::time::Instant::now();
        let e = wait(&Conn::new(&s), &id(), Duration::from_secs(20))
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert!(matches!(&e, OpError::WaitTimeout { last, .. } if last.state == JobState::Running));
        let out = e.outcome(Operation::Submit);
        assert_eq!(out.status, Some(OpStatus::Processing));
        assert!(out.recommendations.iter().any(|r| r.contains("--timeout")));
    }
}
