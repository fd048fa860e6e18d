//! Client-side pacing: a token bucket per endpoint class, so that the runner stays under the real
//! service's rate limits (50 submits a minute per IP) instead of collecting 429s.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::config::{Pacing, Rate};

/// Which limit a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointClass {
    /// `POST /v1/jobs`.
    Submit,
    /// Job reads.
    Read,
    /// Cancels.
    Cancel,
    /// Resource allocations.
    Allocate,
    /// Everything else (balances, offers, payments): unpaced.
    Other,
}

/// A token bucket: `capacity` tokens, refilled at `capacity` per minute.
#[derive(Debug)]
pub struct Bucket {
    capacity: f64,
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A full bucket for `rate`.
    pub fn new(rate: Rate) -> Bucket {
        let capacity = f64::from(rate.per_minute.max(1));
        Bucket {
            capacity,
            per_sec: capacity / 60.0,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
                s.0 = (s.0 + elapsed * self.per_sec).min(self.capacity);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.per_sec)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One bucket per paced endpoint class.
#[derive(Debug)]
pub struct Pacer {
    submit: Option<Bucket>,
    read: Option<Bucket>,
    cancel: Option<Bucket>,
    allocate: Option<Bucket>,
}

impl Pacer {
    /// Buckets for the configured rates.
    pub fn new(p: &Pacing) -> Pacer {
        Pacer {
            submit: p.submit.map(Bucket::new),
            read: p.read.map(Bucket::new),
            cancel: p.cancel.map(Bucket::new),
            allocate: p.allocate.map(Bucket::new),
        }
    }

    /// Waits for the class's turn (returns at once for an unpaced class).
    pub async fn acquire(&self, class: EndpointClass) {
        let bucket = match class {
            EndpointClass::Submit => &self.submit,
            EndpointClass::Read => &self.read,
            EndpointClass::Cancel => &self.cancel,
            EndpointClass::Allocate => &self.allocate,
            EndpointClass::Other => &None,
        };
        if let Some(b) = bucket {
            b.acquire().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces() {
        let b = Bucket::new(Rate { per_minute: 3 });
        let start = Instant::now();
        for _ in 0..3 {
            b.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        b.acquire().await;
        let e = start.elapsed();
        assert!(
            e >= Duration::from_secs(19) && e <= Duration::from_secs(21),
            "{e:?}"
        );
    }
}
