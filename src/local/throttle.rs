//! The real service's rate limits, reproduced (`LocalConfig::rate_limits`, off unless asked for): each
//! limited endpoint has its own sliding window of N requests in any window, like the service's
//! `RateLimiter` (an arrival is allowed when fewer than N allowed arrivals are newer than `now − window`;
//! refused ones are not recorded), and over it the answer is 429 `{"detail": "Rate limit exceeded"}` with
//! `Retry-After` = the window in seconds (60). The service keys its windows by client IP; every client
//! of this one is on 127.0.0.1, so there is one window per endpoint.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::server::detail;
use crate::limits::{Endpoint, RateLimits};

/// The windows, and how many requests each refused.
#[derive(Debug)]
pub struct Throttle {
    limits: RateLimits,
    windows: Mutex<HashMap<Endpoint, VecDeque<Instant>>>,
    refused: Mutex<HashMap<Endpoint, u64>>,
    /// Requests let through per endpoint, and the most of them in any one window (what the clients
    /// together sent, measured here: `tests/shared_pacing_e2e.rs`).
    admitted: Mutex<HashMap<Endpoint, (u64, usize)>>,
}

impl Throttle {
    /// Windows for `limits`.
    pub fn new(limits: RateLimits) -> Arc<Throttle> {
        Arc::new(Throttle {
            limits,
            windows: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            admitted: Mutex::new(HashMap::new()),
        })
    }

    /// True when a request to `endpoint` arriving now is within the limit (and then records it).
    pub fn admit(&self, endpoint: Endpoint) -> bool {
        let Some(limit) = self.limits.of(endpoint) else {
            return true;
        };
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry(endpoint).or_default();
        while w
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.limits.window)
        {
            w.pop_front();
        }
        if w.len() < limit as usize {
            w.push_back(now);
            let in_window = w.len();
            drop(windows);
            let mut a = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
            let seen = a.entry(endpoint).or_default();
            seen.0 += 1;
            seen.1 = seen.1.max(in_window);
            return true;
        }
        drop(windows);
        *self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint)
            .or_default() += 1;
        false
    }

    /// The limits.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Per limited endpoint (by name): the requests let through so far, and the most of them in any
    /// one window.
    pub fn admitted(&self) -> std::collections::BTreeMap<String, (u64, usize)> {
        self.admitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(e, n)| (format!("{e:?}").to_lowercase(), *n))
            .collect()
    }

    /// Requests refused so far, in all.
    pub fn refused(&self) -> u64 {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

/// The middleware.
pub async fn limit(State(t): State<Arc<Throttle>>, req: Request, next: Next) -> Response {
    let endpoint = Endpoint::of(req.method() == Method::POST, req.uri().path());
    if let Some(e) = endpoint
        && !t.admit(e)
    {
        let mut resp = detail(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
        let secs = t.limits.window.as_secs_f64().ceil() as u64;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return resp;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn n_in_any_window_then_refused() {
        let t = Throttle::new(RateLimits {
            submit: Some(3),
            window: Duration::from_millis(200),
            ..RateLimits::off()
        });
        assert!((0..3).all(|_| t.admit(Endpoint::Submit)));
        assert!(!t.admit(Endpoint::Submit));
        assert!(
            t.admit(Endpoint::Job),
            "another endpoint has its own window"
        );
        assert_eq!(t.refused(), 1);
        std::thread::sleep(Duration::from_millis(210));
        assert!(t.admit(Endpoint::Submit));
    }
}
