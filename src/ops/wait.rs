//! `wait`: poll a job until it reaches a final state or the time is up. A poll that fails with a
//! retryable error is polled again — a failed poll never resubmits anything — and the delays come from
//! the one polling backoff, [`PollBackoff`]. A 429's `Retry-After` is honoured (polling earlier only
//! earns another 429), but never past the timeout: a wait the server asks to outlast its timeout ends
//! there, as a timeout that names the server's `Retry-After`. A job still unfinished at the timeout is
//! reported as stuck when what the wait saw says so (see [`OpError::WaitTimeout`]'s `stuck`). Polls go
//! through [`Coordinator::poll`], where the client budgets the polls of every job waited for together.

use std::time::Duration;

use super::conn::now;
use super::retry::PollBackoff;
use super::{Conn, OpError};
use crate::api::{JobId, JobState, JobView};
use crate::client::{ClientError, Coordinator};
use crate::duration::Dur;
use crate::model::{Attempt, JobType};

/// How long past the timeout the last poll may take to answer (a job that finished just then is not
/// given up on for a slow answer).
const LAST_LOOK: Duration = Duration::from_secs(1);

/// Polls `job` until it is final (returned) or `timeout` passes — or the connection's deadline, if
/// sooner — ([`OpError::WaitTimeout`] with the job as last seen, and why it looks stuck when it does).
/// Failed polls are traced as attempts; every change of state is traced too. A view of another job is
/// refused.
pub async fn wait<C: Coordinator>(
    conn: &Conn<'_, C>,
    job: &JobId,
    timeout: Duration,
) -> Result<JobView, OpError> {
    let mut deadline = tokio::time::Instant::now() + timeout;
    if let Some(d) = conn.deadline {
        deadline = deadline.min(d);
    }
    let conn = &conn.until(Some(deadline));
    let mut backoff = PollBackoff::with(conn.poll.0, conn.poll.1);
    let mut last: Option<JobView> = None;
    let mut seen = Seen::default();
    loop {
        let polled = conn.poll_job(job).await;
        crate::crash::point("wait");
        seen.polls += 1;
        // The delay the server asked for before the next poll, if it did.
        let asked_to_wait = match polled {
            Ok(view) => {
                if last.as_ref().map(|l| l.state) != Some(view.state) {
                    conn.trace.job_state(job, view.state);
                }
                if view.state.is_final() {
                    return Ok(view);
                }
                seen.saw(&view);
                last = Some(view);
                None
            }
            Err(ClientError::OutOfTime { .. }) => break,
            Err(e) if e.is_retryable() => {
                seen.failed(&e);
                conn.trace.attempt(Attempt {
                    number: seen.failed,
                    started_at: now(),
                    duration_ms: 0,
                    error: Some(format!("poll failed: {e}")),
                    delay_ms: None,
                });
                e.retry_after()
            }
            Err(e) => return Err(e.into()),
        };
        let mut pause = backoff.next().unwrap_or(conn.poll.1);
        let now_t = tokio::time::Instant::now();
        if now_t >= deadline {
            break;
        }
        if let Some(ra) = asked_to_wait {
            if now_t + ra > deadline {
                // The server asks not to come back before the time is up: end now, saying so.
                return Err(timed_out(conn, job, last, timeout, Some(ra), &seen));
            }
            pause = pause.max(ra);
        }
        tokio::time::sleep(pause.min(deadline - now_t)).await;
        if tokio::time::Instant::now() >= deadline {
            // One last look before giving up, given a moment past the deadline to answer.
            seen.polls += 1;
            match conn.until(Some(deadline + LAST_LOOK)).poll_job(job).await {
                Ok(view) => {
                    if view.state.is_final() {
                        conn.trace.job_state(job, view.state);
                        return Ok(view);
                    }
                    seen.saw(&view);
                    last = Some(view);
                }
                Err(e) => seen.failed(&e),
            }
            break;
        }
    }
    Err(timed_out(conn, job, last, timeout, None, &seen))
}

/// The timeout of a wait: the job as last seen, or when it was never seen, the poll's timeout.
fn timed_out<C: Coordinator>(
    conn: &Conn<'_, C>,
    job: &JobId,
    last: Option<JobView>,
    timeout: Duration,
    retry_after: Option<Duration>,
    seen: &Seen,
) -> OpError {
    let url = format!("{}/v1/jobs/{job}", conn.coord.base_url());
    match last {
        Some(v) => OpError::WaitTimeout {
            stuck: seen.stuck(&v),
            last: Box::new(v),
            after: timeout,
            retry_after,
        },
        None => match retry_after {
            Some(ra) => ClientError::OutOfTime {
                url,
                left: conn.left().unwrap_or_default(),
                wait: Some(ra),
                retry_after: true,
                last: None,
            },
            None => ClientError::Timeout {
                url,
                after: timeout,
            },
        }
        .into(),
    }
}

/// What a wait saw of its job, to tell a stuck job from a slow one when the time is up.
#[derive(Debug, Default)]
struct Seen {
    polls: u32,
    failed: u32,
    timed_out: u32,
    /// When the job was first seen RUNNING.
    running_since: Option<tokio::time::Instant>,
}

impl Seen {
    /// A poll that failed.
    fn failed(&mut self, e: &ClientError) {
        self.failed += 1;
        if matches!(e, ClientError::Timeout { .. }) {
            self.timed_out += 1;
        }
    }

    fn saw(&mut self, v: &JobView) {
        if v.state == JobState::Running {
            self.running_since
                .get_or_insert_with(tokio::time::Instant::now);
        } else {
            self.running_since = None;
        }
    }

    /// Why the job looks stuck at the timeout, if it does: RUNNING well past the time its type takes
    /// with nothing to show for it, or still QUEUED/RUNNING while the service failed polls (a blocked
    /// service can hand a job to a miner whose own poll then times out, and nobody ever runs it).
    fn stuck(&self, v: &JobView) -> Option<String> {
        let mut why = Vec::new();
        if v.state == JobState::Running
            && let Some(since) = self.running_since
        {
            let typical = v
                .job_type()
                .and_then(JobType::parse)
                .map_or(30.0, JobType::typical_seconds);
            let expected = Duration::from_secs_f64(typical * STUCK_FACTOR);
            let running = since.elapsed();
            if running >= expected && v.result.is_none() {
                let kind = v.job_type().unwrap_or("such");
                let a = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                why.push(format!(
                    "RUNNING{} for {} with no progress, past the ~{} {a} {kind} job takes",
                    v.assigned_miner_id
                        .as_deref()
                        .map(|m| format!(" on {m}"))
                        .unwrap_or_default(),
                    Dur(Duration::from_secs(running.as_secs())),
                    Dur(Duration::from_secs_f64(typical)),
                ));
            }
        }
        if self.failed > 0 {
            let timeouts = if self.timed_out > 0 {
                format!(", {} of them timed out", self.timed_out)
            } else {
                String::new()
            };
            why.push(format!(
                "still {} while the service was slow or failing: {} of {} polls failed{timeouts}",
                v.state, self.failed, self.polls
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// A RUNNING job is stuck once it has run this many times as long as its type typically takes.
const STUCK_FACTOR: f64 = 2.0;

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

    fn limited(secs: u64) -> ClientError {
        ClientError::RateLimited {
            url: "http://127.0.0.1:1/v1/jobs/x".into(),
            retry_after: Some(Duration::from_secs(secs)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_within_the_timeout() {
        let s = scripted(vec![
            Ok(JobState::Running),
            Err(limited(20)),
            Ok(JobState::Completed),
        ]);
        let v = wait(&Conn::new(&s), &id(), Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!(v.state, JobState::Completed);
        // 0.5 s after the first read, then the 20 s the server asked for (not the 1 s of the backoff).
        assert_eq!(gaps(&s), vec![500, 20_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_past_the_timeout_ends_the_wait_at_once_saying_so() {
        let s = scripted(vec![Ok(JobState::Running), Err(limited(31_536_000))]);
        let start = tokio::time::Instant::now();
        let e = wait(&Conn::new(&s), &id(), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(&e, OpError::WaitTimeout { retry_after: Some(ra), .. } if ra.as_secs() == 31_536_000)
        );
        assert!(e.to_string().contains("(Retry-After)"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_connections_deadline_ends_a_longer_wait() {
        let s = scripted(vec![Ok(JobState::Running)]);
        let start = tokio::time::Instant::now();
        let conn = Conn::new(&s).with_deadline(start + Duration::from_secs(7));
        let e = wait(&conn, &id(), Duration::from_secs(300))
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(7));
        assert!(matches!(e, OpError::WaitTimeout { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_view_of_another_job_is_refused() {
        let s = scripted(vec![Ok(JobState::Completed)]);
        let mine: JobId = "00000000000000000000000000000001".parse().unwrap();
        let e = wait(&Conn::new(&s), &mine, Duration::from_secs(300))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("answered with job ea05c15ab4f94d369c35d96c8fc39ac5, not job 00000000000000000000000000000001"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_running_twice_its_typical_time_is_stuck() {
        let s = scripted(vec![Ok(JobState::Running)]);
        let e = wait(&Conn::new(&s), &id(), Duration::from_secs(120))
            .await
            .unwrap_err();
        let OpError::WaitTimeout { stuck, .. } = &e else {
            panic!("{e:?}")
        };
        let why = stuck.as_deref().unwrap();
        assert!(
            why.starts_with(
                "RUNNING for 2m with no progress, past the ~30s an inference job takes"
            ),
            "{why}"
        );
        assert!(
            e.to_string().contains("; it looks stuck: RUNNING for 2m"),
            "{e}"
        );
        let out = e.outcome(Operation::Submit);
        assert!(out.summary.contains("looks stuck"), "{}", out.summary);
        assert!(out.recommendations[0].contains("never have reached its miner"));

        // Running for less than that is only slow.
        let s = scripted(vec![Ok(JobState::Running)]);
        let e = wait(&Conn::new(&s), &id(), Duration::from_secs(50))
            .await
            .unwrap_err();
        assert!(
            matches!(e, OpError::WaitTimeout { stuck: None, .. }),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_left_waiting_while_polls_failed_is_stuck() {
        let slow = ClientError::Timeout {
            url: "u".into(),
            after: Duration::from_secs(10),
        };
        let s = scripted(vec![Ok(JobState::Queued), Err(slow), Ok(JobState::Queued)]);
        let e = wait(&Conn::new(&s), &id(), Duration::from_secs(20))
            .await
            .unwrap_err();
        let OpError::WaitTimeout { stuck, .. } = &e else {
            panic!("{e:?}")
        };
        let why = stuck.as_deref().unwrap();
        assert!(
            why.starts_with("still QUEUED while the service was slow or failing: 1 of ")
                && why.ends_with("polls failed, 1 of them timed out"),
            "{why}"
        );
    }
}
