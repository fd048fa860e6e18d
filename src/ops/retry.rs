//! Retry policy: which failures are retried, and how long to wait before each new attempt.
//!
//! `max_attempts` counts the first attempt. Delays grow exponentially from `initial` and are capped at
//! `max`; with full jitter each delay is drawn uniformly from zero to the computed one, so that many
//! runners retrying the same coordinator do not retry in step. A `Retry-After` from the service is a
//! floor under the delay.

use std::time::Duration;

use rand::Rng;

use crate::client::ClientError;
use crate::plan::types::{Backoff, Jitter, RetryOn, RetrySpec};

/// Why an attempt failed, in the classes a retry policy speaks of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Retryable by class.
    Retry(RetryOn),
    /// Never retried (4xx, a refused request, a policy violation).
    Permanent,
}

/// The class of a client error.
pub fn classify(e: &ClientError) -> FailureClass {
    match e {
        ClientError::Unavailable { .. } => FailureClass::Retry(RetryOn::Unavailable),
        ClientError::RateLimited { .. } => FailureClass::Retry(RetryOn::RateLimited),
        ClientError::Timeout { .. } => FailureClass::Retry(RetryOn::Timeout),
        _ => FailureClass::Permanent,
    }
}

/// A retry policy ready to use.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    spec: RetrySpec,
}

impl RetryPolicy {
    /// The policy a plan's spec describes.
    pub fn new(spec: RetrySpec) -> RetryPolicy {
        RetryPolicy { spec }
    }

    /// One attempt, never retried: what a single command sends.
    pub fn once() -> RetryPolicy {
        RetryPolicy::new(RetrySpec {
            max_attempts: 1,
            ..RetrySpec::default()
        })
    }

    /// Attempts in all, the first included (at least 1).
    pub fn max_attempts(&self) -> u32 {
        self.spec.max_attempts.max(1)
    }

    /// True when failures of this class are retried.
    pub fn retries(&self, class: FailureClass) -> bool {
        match class {
            FailureClass::Retry(on) => self.spec.on.contains(&on),
            FailureClass::Permanent => false,
        }
    }

    /// The delay before attempt `next` (2 for the first retry), before jitter.
    pub fn base_delay(&self, next: u32) -> Duration {
        let initial = self.spec.initial.get();
        let max = self.spec.max.get().max(initial);
        match self.spec.backoff {
            Backoff::Fixed => initial,
            Backoff::Exponential => {
                let exp = next.saturating_sub(2).min(30);
                initial.checked_mul(1u32 << exp).map_or(max, |d| d.min(max))
            }
        }
    }

    /// The delay before attempt `next`, with jitter drawn from `rng` and a `Retry-After` floor.
    pub fn delay(&self, next: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let base = self.base_delay(next);
        let d = match self.spec.jitter {
            Jitter::None => base,
            Jitter::Full => {
                let ms = base.as_millis() as u64;
                Duration::from_millis(if ms == 0 { 0 } else { rng.random_range(0..=ms) })
            }
        };
        retry_after.map_or(d, |ra| d.max(ra))
    }

    /// The delays this policy would wait between attempts, without jitter (for reports and tests).
    pub fn schedule(&self) -> impl Iterator<Item = Duration> + '_ {
        (2..=self.max_attempts()).map(|n| self.base_delay(n))
    }
}

/// Backoff for polling a job: 0.5 s doubling up to 5 s (every wait polls through this, so the reads
/// of a long wait stay few: five a minute once at the cap).
#[derive(Clone, Debug)]
pub struct PollBackoff {
    next: Duration,
    max: Duration,
}

impl PollBackoff {
    /// 0.5 s → 5 s.
    pub fn new() -> PollBackoff {
        PollBackoff::with(Duration::from_millis(500), Duration::from_secs(5))
    }
    /// A custom range (tests use short ones).
    pub fn with(start: Duration, max: Duration) -> PollBackoff {
        PollBackoff { next: start, max }
    }
}

impl Default for PollBackoff {
    fn default() -> Self {
        PollBackoff::new()
    }
}

impl Iterator for PollBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Dur;
    use rand::SeedableRng;

    fn spec(backoff: Backoff, jitter: Jitter) -> RetrySpec {
        RetrySpec {
            max_attempts: 5,
            backoff,
            initial: Dur::secs(1),
            max: Dur::secs(5),
            jitter,
            on: vec![RetryOn::Unavailable, RetryOn::RateLimited],
        }
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let p = RetryPolicy::new(spec(Backoff::Exponential, Jitter::None));
        let s: Vec<u64> = p.schedule().map(|d| d.as_secs()).collect();
        assert_eq!(s, vec![1, 2, 4, 5]);
    }

    #[test]
    fn fixed_stays() {
        let p = RetryPolicy::new(spec(Backoff::Fixed, Jitter::None));
        assert!(p.schedule().all(|d| d == Duration::from_secs(1)));
        assert_eq!(p.schedule().count(), 4);
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_honours_retry_after() {
        let p = RetryPolicy::new(spec(Backoff::Exponential, Jitter::Full));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen_below = false;
        for _ in 0..200 {
            let d = p.delay(4, None, &mut rng);
            assert!(d <= Duration::from_secs(4));
            seen_below |= d < Duration::from_secs(4);
        }
        assert!(seen_below, "jitter never lowered the delay");
        let d = p.delay(2, Some(Duration::from_secs(9)), &mut rng);
        assert_eq!(d, Duration::from_secs(9));
    }

    #[test]
    fn only_listed_classes_retry() {
        let p = RetryPolicy::new(spec(Backoff::Fixed, Jitter::None));
        assert!(p.retries(FailureClass::Retry(RetryOn::Unavailable)));
        assert!(!p.retries(FailureClass::Retry(RetryOn::Timeout)));
        assert!(!p.retries(FailureClass::Retry(RetryOn::JobFailed)));
        assert!(!p.retries(FailureClass::Permanent));
    }

    #[test]
    fn poll_backoff_goes_from_half_a_second_to_five() {
        let d: Vec<u128> = PollBackoff::new().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(d, vec![500, 1000, 2000, 4000, 5000, 5000]);
    }
}
