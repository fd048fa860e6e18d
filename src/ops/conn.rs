//! A connection for the operations: the coordinator, the retry policy each request is sent with, and
//! the [`Trace`] that hears about every attempt. The one retry loop of the crate lives here.

use std::future::Future;
use std::time::{Duration, Instant};

use super::retry::{RetryPolicy, classify};
use crate::api::{JobId, JobState};
use crate::client::ClientError;
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
}

impl<'a, C> Conn<'a, C> {
    /// Each request sent once, the default polling, nobody told.
    pub fn new(coord: &'a C) -> Conn<'a, C> {
        Conn {
            coord,
            retry: RetryPolicy::once(),
            poll: (Duration::from_millis(500), Duration::from_secs(5)),
            trace: &QUIET,
        }
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

    /// Sends a request with the retry policy: only retryable failures are retried, `Retry-After` is a
    /// floor under the delay, and every attempt is traced.
    pub async fn call<T, F, Fut>(&self, mut request: F) -> Result<T, ClientError>
    where
        F: FnMut(&'a C) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut n = 1;
        loop {
            let started_at = now();
            let t = Instant::now();
            let answer = request(self.coord).await;
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
                    self.trace.attempt(Attempt {
                        number: n,
                        started_at,
                        duration_ms,
                        error: Some(e.to_string()),
                        delay_ms: delay.map(|d| d.as_millis() as u64),
                    });
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

    /// The delay before attempt `n + 1` after `e`, or `None` when the policy does not retry it.
    pub fn retry_delay(&self, n: u32, e: &ClientError) -> Option<Duration> {
        (n < self.retry.max_attempts() && self.retry.retries(classify(e)))
            .then(|| self.trace.delay(&self.retry, n + 1, e.retry_after()))
    }
}

/// Now, as the report writes times.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
