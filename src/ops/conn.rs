//! A connection for the operations: the coordinator, the retry policy each request is sent with, the
//! deadline the work must end by, and the [`Trace`] that hears about every attempt. The one retry loop
//! of the crate lives here, and the one check that a job's view is about the job asked for.
//!
//! A deadline (a step's timeout) bounds the retry loop: a request still unanswered at the deadline is
//! given up, and a retry whose delay — the policy's backoff or the server's `Retry-After` — would pass
//! it is not waited for. `Retry-After` is honoured otherwise: retrying earlier only earns another 429
//! on the service's sliding window.

use std::future::Future;
use std::time::{Duration, Instant};

use super::retry::{RetryPolicy, classify};
use crate::api::{JobId, JobState, JobView};
use crate::client::{ClientError, Coordinator};
use crate::model::Attempt;

/// What a caller hears while an operation runs. The executor records attempts in the step's report and
/// on the event stream and draws retry jitter from the run's seeded RNG; the job commands hear nothing.
pub trait Trace: Send + Sync {
    /// An attempt of a request ended, with its error or without.
    fn attempt(&self, _attempt: Attempt) {}
    /// The delay before attempt `next` of `policy` (jitter included).
    fn delay(&self, policy: &RetryPolicy, next: u32, retry_after: Option<Duration>) -> Duration {
        policy.delay(next, retry_after, &mut rand::rng())
    }
    /// A job being waited for was seen in a new state.
    fn job_state(&self, _job: &JobId, _state: JobState) {}
}

/// A trace that keeps nothing.
pub struct Quiet;

impl Trace for Quiet {}

static QUIET: Quiet = Quiet;

/// The coordinator and how to send to it.
pub struct Conn<'a, C> {
    /// The coordinator.
    pub coord: &'a C,
    /// How each request is retried.
    pub retry: RetryPolicy,
    /// The polling backoff range of `wait` (0.5 s → 5 s by default).
    pub poll: (Duration, Duration),
    /// Who hears about attempts.
    pub trace: &'a dyn Trace,
    /// When the work must be over (a step's timeout); `None`: no bound but each request's own timeout.
    pub deadline: Option<tokio::time::Instant>,
}

impl<'a, C> Conn<'a, C> {
    /// Each request sent once, the default polling, nobody told, no deadline.
    pub fn new(coord: &'a C) -> Conn<'a, C> {
        Conn {
            coord,
            retry: RetryPolicy::once(),
            poll: (Duration::from_millis(500), Duration::from_secs(5)),
            trace: &QUIET,
            deadline: None,
        }
    }

    /// The same connection with a deadline.
    pub fn with_deadline(mut self, deadline: tokio::time::Instant) -> Conn<'a, C> {
        self.deadline = Some(deadline);
        self
    }

    /// A copy of this connection with another deadline (or none).
    pub fn until(&self, deadline: Option<tokio::time::Instant>) -> Conn<'a, C> {
        Conn {
            coord: self.coord,
            retry: self.retry.clone(),
            poll: self.poll,
            trace: self.trace,
            deadline,
        }
    }

    /// What is left before the deadline (`None` without one).
    pub fn left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// The same connection with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Conn<'a, C> {
        self.retry = retry;
        self
    }

    /// The same connection telling `trace`.
    pub fn with_trace(mut self, trace: &'a dyn Trace) -> Conn<'a, C> {
        self.trace = trace;
        self
    }

    /// The delay before attempt `n + 1` after `e`, or `None` when the policy does not retry it.
    pub fn retry_delay(&self, n: u32, e: &ClientError) -> Option<Duration> {
        (n < self.retry.max_attempts() && self.retry.retries(classify(e)))
            .then(|| self.trace.delay(&self.retry, n + 1, e.retry_after()))
    }

    /// The error that ends the work when waiting `delay` after `e` would pass the deadline.
    pub fn past_deadline(&self, delay: Duration, e: &ClientError) -> Option<ClientError> {
        let left = self.left()?;
        (delay > left).then(|| ClientError::OutOfTime {
            url: e.url().unwrap_or_default().to_string(),
            left,
            wait: Some(delay),
            retry_after: e.retry_after().is_some_and(|ra| ra >= delay),
            last: Some(Box::new(e.clone())),
        })
    }
}

impl<'a, C: Coordinator> Conn<'a, C> {
    /// Sends a request with the retry policy: only retryable failures are retried, `Retry-After` is a
    /// floor under the delay, every attempt is traced, and nothing goes past the deadline (an attempt
    /// still unanswered there, or a delay that would pass it, ends with [`ClientError::OutOfTime`]).
    pub async fn call<T, F, Fut>(&self, mut request: F) -> Result<T, ClientError>
    where
        F: FnMut(&'a C) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut n = 1;
        loop {
            let started_at = now();
            let t = Instant::now();
            let answer = self.within_deadline(request(self.coord)).await;
            let duration_ms = t.elapsed().as_millis() as u64;
            match answer {
                Ok(v) => {
                    self.trace.attempt(Attempt {
                        number: n,
                        started_at,
                        duration_ms,
                        error: None,
                        delay_ms: None,
                    });
                    return Ok(v);
                }
                Err(e) => {
                    let delay = self.retry_delay(n, &e);
                    let out_of_time = delay.and_then(|d| self.past_deadline(d, &e));
                    self.trace.attempt(Attempt {
                        number: n,
                        started_at,
                        duration_ms,
                        error: Some(e.to_string()),
                        delay_ms: delay
                            .filter(|_| out_of_time.is_none())
                            .map(|d| d.as_millis() as u64),
                    });
                    if let Some(stop) = out_of_time {
                        return Err(stop);
                    }
                    match delay {
                        Some(d) => {
                            tokio::time::sleep(d).await;
                            n += 1;
                        }
                        None => return Err(e),
                    }
                }
            }
        }
    }

    /// `request`, given up at the deadline.
    async fn within_deadline<T>(
        &self,
        request: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let Some(deadline) = self.deadline else {
            return request.await;
        };
        tokio::time::timeout_at(deadline, request)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::OutOfTime {
                    url: self.coord.base_url().to_string(),
                    left: Duration::ZERO,
                    wait: None,
                    retry_after: false,
                    last: None,
                })
            })
    }

    /// `GET /v1/jobs/{id}` with the retry policy, refusing a view of another job.
    pub async fn job(&self, id: &JobId) -> Result<JobView, ClientError> {
        let v = self.call(|c| c.job(id)).await?;
        self.same_job(id, v, "")
    }

    /// One poll of a job (`Coordinator::poll`: the client budgets the polls of all waiting jobs
    /// together), not retried (a wait polls again by itself), given up at the deadline — its turn in
    /// the budget included — refusing a view of another job.
    pub async fn poll_job(&self, id: &JobId) -> Result<JobView, ClientError> {
        let v = self.within_deadline(self.coord.poll(id)).await?;
        self.same_job(id, v, "")
    }

    /// `POST /v1/jobs/{id}/cancel` with the retry policy, refusing a view of another job.
    pub async fn cancel_job(&self, id: &JobId) -> Result<JobView, ClientError> {
        let v = self.call(|c| c.cancel(id)).await?;
        self.same_job(id, v, "/cancel")
    }

    /// Every job view read goes through here: an answer about another job than the one asked for is
    /// refused, never taken for it (it would wait for, fetch or cancel the wrong job).
    fn same_job(&self, asked: &JobId, v: JobView, path: &str) -> Result<JobView, ClientError> {
        if v.job_id == *asked {
            return Ok(v);
        }
        Err(ClientError::WrongJob {
            url: format!("{}/v1/jobs/{asked}{path}", self.coord.base_url()),
            asked: asked.to_string(),
            answered: v.job_id.to_string(),
        })
    }
}

/// Now, as the report writes times.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake::{Call, FakeCoordinator};
    use crate::plan::types::{Backoff, Jitter, RetryOn, RetrySpec};

    fn limited(secs: u64) -> ClientError {
        ClientError::RateLimited {
            url: "http://fake/v1/wallets/w/balance".into(),
            retry_after: Some(Duration::from_secs(secs)),
        }
    }

    fn retrying(coord: &FakeCoordinator) -> Conn<'_, FakeCoordinator> {
        Conn::new(coord).with_retry(RetryPolicy::new(RetrySpec {
            max_attempts: 5,
            backoff: Backoff::Fixed,
            initial: crate::duration::Dur(Duration::from_millis(100)),
            max: crate::duration::Dur(Duration::from_millis(100)),
            jitter: Jitter::None,
            on: vec![RetryOn::RateLimited],
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_floor_within_the_deadline() {
        let fake = FakeCoordinator::new();
        fake.fail_next(Call::Balance, limited(20));
        let start = tokio::time::Instant::now();
        let conn = retrying(&fake).with_deadline(start + Duration::from_secs(30));
        conn.call(|c| c.balance("w")).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert_eq!(fake.calls(Call::Balance), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_past_the_deadline_is_not_waited_for() {
        let fake = FakeCoordinator::new();
        fake.fail_next(Call::Balance, limited(31_536_000));
        let start = tokio::time::Instant::now();
        let conn = retrying(&fake).with_deadline(start + Duration::from_secs(30));
        let e = conn.call(|c| c.balance("w")).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(fake.calls(Call::Balance), 1);
        assert!(
            matches!(&e, ClientError::OutOfTime { wait: Some(w), retry_after: true, .. } if w.as_secs() == 31_536_000),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.starts_with(
                "http://fake/v1/wallets/w/balance asked to retry after 31536000 s (Retry-After), past the step's timeout (30.0s left)"
            ),
            "{text}"
        );
        // Without a deadline (a single command sends once) nothing is waited for either.
        let fake = FakeCoordinator::new();
        fake.fail_next(Call::Balance, limited(31_536_000));
        let e = Conn::new(&fake).call(|c| c.balance("w")).await.unwrap_err();
        assert!(matches!(e, ClientError::RateLimited { .. }));
    }
}
