//! Fault injection for tests of clients and the executor: added latency, a rate of 503s, a rate of 429s
//! with `Retry-After`, a rate of responses dropped after the request was handled (the job is
//! committed, then the connection closes with no answer), and refunds refused.
//!
//! The draws come from one seeded RNG (`--fault-seed`), so a test sees the same faults in the same order
//! each run as long as its requests arrive in the same order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::server::detail;

/// Which faults to inject, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Added to every matching request before it is handled.
    pub latency: Duration,
    /// Share of matching requests answered 503 `{"detail": "Service Unavailable"}` (0.0 … 1.0).
    pub rate_503: f64,
    /// Share of matching requests answered 429 `{"detail": "Rate limit exceeded"}`.
    pub rate_429: f64,
    /// The `Retry-After` seconds sent with an injected 429.
    pub retry_after_secs: u64,
    /// Share of matching requests that are handled (a job is committed) and then get no answer.
    pub drop_rate: f64,
    /// Only requests whose path starts with this prefix are touched (all requests when `None`).
    pub path_prefix: Option<String>,
    /// Seed for the draws; random when `None`.
    pub seed: Option<u64>,
    /// Refuse every refund as the real service does when its chain is unreachable: 400 `Failed to
    /// refund payment`, the payment left as it was (after `latency`, when set).
    pub refuse_refunds: bool,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            latency: Duration::ZERO,
            rate_503: 0.0,
            rate_429: 0.0,
            retry_after_secs: 1,
            drop_rate: 0.0,
            path_prefix: None,
            seed: None,
            refuse_refunds: false,
        }
    }
}

impl Faults {
    /// True when no fault of the middleware is configured (it is then not installed at all; refused
    /// refunds are the refund endpoint's own).
    pub fn is_off(&self) -> bool {
        self.latency.is_zero()
            && self.rate_503 <= 0.0
            && self.rate_429 <= 0.0
            && self.drop_rate <= 0.0
    }
}

/// The faults and their RNG, shared by every request.
#[derive(Debug)]
pub struct FaultState {
    faults: Faults,
    rng: Mutex<StdRng>,
}

impl FaultState {
    /// Seeds the RNG.
    pub fn new(faults: Faults) -> Arc<FaultState> {
        let rng = match faults.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Arc::new(FaultState {
            faults,
            rng: Mutex::new(rng),
        })
    }

    /// Three draws for one request: 503, 429, drop.
    fn draw(&self) -> [f64; 3] {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        [rng.random(), rng.random(), rng.random()]
    }
}

/// The middleware.
pub async fn inject(State(state): State<Arc<FaultState>>, req: Request, next: Next) -> Response {
    let f = &state.faults;
    if let Some(prefix) = &f.path_prefix
        && !req.uri().path().starts_with(prefix.as_str())
    {
        return next.run(req).await;
    }
    let [d503, d429, ddrop] = state.draw();
    if !f.latency.is_zero() {
        tokio::time::sleep(f.latency).await;
    }
    if d503 < f.rate_503 {
        return detail(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    if d429 < f.rate_429 {
        let mut resp = detail(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(f.retry_after_secs));
        return resp;
    }
    let resp = next.run(req).await;
    if ddrop < f.drop_rate {
        tracing::debug!("fault injection: dropping a {} response", resp.status());
        return dropped();
    }
    resp
}

/// A response whose body fails before its first byte: hyper then closes the connection without
/// writing a status line, and the client sees a connection error.
fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("injected drop"))
    });
    (StatusCode::OK, Body::from_stream(stream)).into_response()
}
