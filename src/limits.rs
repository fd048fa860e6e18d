//! The coordinator's rate limits, as the real service applies them: per client IP and **per endpoint**
//! (each route has its own limiter, `aitbc.rate_limiting.rate_limit` on the handler), each a **sliding
//! window** of N requests in any `window` (60 s): `POST /v1/jobs` 50, each job read 200 (the job view, its
//! result, its receipt, its receipts and the list each count apart), cancel 50, allocate 20, the two login
//! routes 20. Over the limit: 429 `{"detail": "Rate limit exceeded"}` with `Retry-After: 60`.
//!
//! One table for both sides: the client paces itself by it (`client::pace`) and the embedded coordinator
//! enforces it when asked to (`local`), so that a pacing regression shows as a 429 in `cargo test`.
//!
//! **The least time a run's requests need** ([`RateLimits::least_time`]): at most N requests of one
//! endpoint fit in any window W, so R of them need at least `W · (⌈R / N⌉ − 1)` from the first to the last
//! (the first N at once, each further N a window later); a run needs at least the largest of these over
//! its endpoints. For a run of J independent `job` steps (a submit, at least one poll that sees the job
//! done, one result read each): `T_min = W · max(⌈J / 50⌉ − 1, ⌈J / 200⌉ − 1)` — 60 s for 80 jobs. The
//! time the jobs themselves take and the answers' latency come on top; the runner aims to stay within
//! 1.1 × `T_min` with no 429 (`tests/pacing_e2e.rs`; the figures are in `docs/performance.md`).

use std::time::Duration;

/// A route the service limits on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `POST /v1/jobs`.
    Submit,
    /// `GET /v1/jobs` (the list).
    List,
    /// `GET /v1/jobs/{id}` (every poll of a wait).
    Job,
    /// `GET /v1/jobs/{id}/result`.
    Result,
    /// `GET /v1/jobs/{id}/receipt`.
    Receipt,
    /// `GET /v1/jobs/{id}/receipts`.
    Receipts,
    /// `POST /v1/jobs/{id}/cancel`.
    Cancel,
    /// `POST /v1/agent-performance/resources/allocate`.
    Allocate,
    /// `POST /v1/auth/nonce`.
    Nonce,
    /// `POST /v1/login`.
    Login,
}

/// Which limit an endpoint's own window has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Submits (50).
    Submit,
    /// Job reads (200 each).
    Read,
    /// Cancels (50).
    Cancel,
    /// Allocations (20).
    Allocate,
    /// The login routes (20 each).
    Login,
}

impl Endpoint {
    /// Every limited endpoint.
    pub const ALL: [Endpoint; 10] = [
        Endpoint::Submit,
        Endpoint::List,
        Endpoint::Job,
        Endpoint::Result,
        Endpoint::Receipt,
        Endpoint::Receipts,
        Endpoint::Cancel,
        Endpoint::Allocate,
        Endpoint::Nonce,
        Endpoint::Login,
    ];

    /// The limit this endpoint's window has.
    pub fn class(self) -> Class {
        match self {
            Endpoint::Submit => Class::Submit,
            Endpoint::List
            | Endpoint::Job
            | Endpoint::Result
            | Endpoint::Receipt
            | Endpoint::Receipts => Class::Read,
            Endpoint::Cancel => Class::Cancel,
            Endpoint::Allocate => Class::Allocate,
            Endpoint::Nonce | Endpoint::Login => Class::Login,
        }
    }

    /// The limited endpoint a request goes to, if any (payments, balances, offers and health are not
    /// limited).
    pub fn of(post: bool, path: &str) -> Option<Endpoint> {
        let parts: Vec<&str> = path
            .trim_end_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        match (post, parts.as_slice()) {
            (true, ["v1", "jobs"]) => Some(Endpoint::Submit),
            (false, ["v1", "jobs"]) => Some(Endpoint::List),
            (false, ["v1", "jobs", _]) => Some(Endpoint::Job),
            (false, ["v1", "jobs", _, "result"]) => Some(Endpoint::Result),
            (false, ["v1", "jobs", _, "receipt"]) => Some(Endpoint::Receipt),
            (false, ["v1", "jobs", _, "receipts"]) => Some(Endpoint::Receipts),
            (true, ["v1", "jobs", _, "cancel"]) => Some(Endpoint::Cancel),
            (true, ["v1", "agent-performance", "resources", "allocate"]) => {
                Some(Endpoint::Allocate)
            }
            (true, ["v1", "auth", "nonce"]) => Some(Endpoint::Nonce),
            (true, ["v1", "login"]) => Some(Endpoint::Login),
            _ => None,
        }
    }
}

/// The seconds the real service sends in `Retry-After` with a 429.
pub const RETRY_AFTER_SECS: u64 = 60;

/// Limits per endpoint class (`None`: not limited), each applied to every endpoint of the class on its
/// own, over one sliding window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Submits per window.
    pub submit: Option<u32>,
    /// Reads per window, for each read endpoint.
    pub read: Option<u32>,
    /// Cancels per window.
    pub cancel: Option<u32>,
    /// Allocations per window.
    pub allocate: Option<u32>,
    /// Login requests per window, for each of the two routes.
    pub login: Option<u32>,
    /// The window (60 s on the real service).
    pub window: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::off()
    }
}

impl RateLimits {
    /// No limit at all.
    pub fn off() -> RateLimits {
        RateLimits {
            submit: None,
            read: None,
            cancel: None,
            allocate: None,
            login: None,
            window: Duration::from_secs(60),
        }
    }

    /// The real service's: 50 submits, 200 reads, 50 cancels, 20 allocations, 20 logins in any 60 s.
    pub fn real_service() -> RateLimits {
        RateLimits {
            submit: Some(50),
            read: Some(200),
            cancel: Some(50),
            allocate: Some(20),
            login: Some(20),
            window: Duration::from_secs(60),
        }
    }

    /// True when nothing is limited.
    pub fn is_off(&self) -> bool {
        [
            self.submit,
            self.read,
            self.cancel,
            self.allocate,
            self.login,
        ]
        .iter()
        .all(Option::is_none)
    }

    /// The limit of a class.
    pub fn of_class(&self, class: Class) -> Option<u32> {
        match class {
            Class::Submit => self.submit,
            Class::Read => self.read,
            Class::Cancel => self.cancel,
            Class::Allocate => self.allocate,
            Class::Login => self.login,
        }
    }

    /// The limit of an endpoint's window.
    pub fn of(&self, endpoint: Endpoint) -> Option<u32> {
        self.of_class(endpoint.class())
    }

    /// Parses `off`, `real`, or `submit=50,read=200,cancel=50,allocate=20,login=20,window=60s` (classes
    /// left out are not limited; `window` defaults to 60 s; `0` means not limited).
    pub fn parse(text: &str) -> Result<RateLimits, String> {
        let t = text.trim();
        match t {
            "off" | "none" | "unlimited" => return Ok(RateLimits::off()),
            "real" | "service" => return Ok(RateLimits::real_service()),
            _ => {}
        }
        let bad = || {
            format!(
                "`{text}` is not a rate limit (expected `off`, `real`, or e.g. `submit=50,read=200,window=60s`)"
            )
        };
        let mut p = RateLimits::off();
        for part in t.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            let v = v.trim();
            if k.trim() == "window" {
                let w =
                    crate::duration::parse_duration(v).map_err(|e| format!("{}: {e}", bad()))?;
                if w.is_zero() {
                    return Err(format!("{}: the window must be longer than 0", bad()));
                }
                p.window = w;
                continue;
            }
            let n: u32 = v.parse().map_err(|_| bad())?;
            let rate = (n > 0).then_some(n);
            match k.trim() {
                "submit" => p.submit = rate,
                "read" => p.read = rate,
                "cancel" => p.cancel = rate,
                "allocate" => p.allocate = rate,
                "login" => p.login = rate,
                _ => return Err(bad()),
            }
        }
        Ok(p)
    }

    /// The least time these limits allow for `count` requests to one endpoint: `W · (⌈count / N⌉ − 1)`.
    pub fn least_time_for(&self, endpoint: Endpoint, count: u64) -> Duration {
        match self.of(endpoint) {
            Some(n) if count > 0 => {
                let windows = count.div_ceil(u64::from(n)) - 1;
                self.window * u32::try_from(windows).unwrap_or(u32::MAX)
            }
            _ => Duration::ZERO,
        }
    }

    /// The least time these limits allow for a run's requests: the largest [`Self::least_time_for`]
    /// over its endpoints.
    pub fn least_time(&self, requests: impl IntoIterator<Item = (Endpoint, u64)>) -> Duration {
        requests
            .into_iter()
            .map(|(e, n)| self.least_time_for(e, n))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// The least time for `jobs` independent `job` steps: a submit, a poll and a result read each.
    pub fn least_time_for_jobs(&self, jobs: u64) -> Duration {
        self.least_time([
            (Endpoint::Submit, jobs),
            (Endpoint::Job, jobs),
            (Endpoint::Result, jobs),
        ])
    }
}

impl std::fmt::Display for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_off() {
            return f.write_str("off");
        }
        let mut parts = Vec::new();
        for (name, v) in [
            ("submit", self.submit),
            ("read", self.read),
            ("cancel", self.cancel),
            ("allocate", self.allocate),
            ("login", self.login),
        ] {
            if let Some(n) = v {
                parts.push(format!("{name}={n}"));
            }
        }
        write!(
            f,
            "{} per {}",
            parts.join(","),
            crate::duration::Dur(self.window)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_their_endpoints() {
        let id = "ea05c15ab4f94d369c35d96c8fc39ac5";
        assert_eq!(Endpoint::of(true, "/v1/jobs"), Some(Endpoint::Submit));
        assert_eq!(Endpoint::of(false, "/v1/jobs"), Some(Endpoint::List));
        assert_eq!(
            Endpoint::of(false, &format!("/v1/jobs/{id}")),
            Some(Endpoint::Job)
        );
        assert_eq!(
            Endpoint::of(false, &format!("/v1/jobs/{id}/result")),
            Some(Endpoint::Result)
        );
        assert_eq!(
            Endpoint::of(true, &format!("/v1/jobs/{id}/cancel")),
            Some(Endpoint::Cancel)
        );
        assert_eq!(Endpoint::of(false, &format!("/v1/jobs/{id}/payment")), None);
        assert_eq!(Endpoint::of(false, "/v1/wallets/w/balance"), None);
        assert_eq!(Endpoint::of(true, "/v1/login"), Some(Endpoint::Login));
        assert_eq!(Endpoint::Receipt.class(), Class::Read);
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(RateLimits::parse("off").unwrap(), RateLimits::off());
        assert_eq!(
            RateLimits::parse("real").unwrap(),
            RateLimits::real_service()
        );
        let p = RateLimits::parse("submit=10, read=0, window=2s").unwrap();
        assert_eq!(p.submit, Some(10));
        assert_eq!(p.read, None);
        assert_eq!(p.window, Duration::from_secs(2));
        assert_eq!(p.to_string(), "submit=10 per 2s");
        assert!(RateLimits::parse("submit=x").is_err());
        assert!(RateLimits::parse("fast=1").is_err());
        assert!(RateLimits::parse("submit=1,window=0s").is_err());
        assert_eq!(RateLimits::off().to_string(), "off");
    }

    #[test]
    fn the_least_time_formula() {
        let r = RateLimits::real_service();
        assert_eq!(r.least_time_for(Endpoint::Submit, 0), Duration::ZERO);
        assert_eq!(r.least_time_for(Endpoint::Submit, 50), Duration::ZERO);
        assert_eq!(
            r.least_time_for(Endpoint::Submit, 51),
            Duration::from_secs(60)
        );
        assert_eq!(
            r.least_time_for(Endpoint::Submit, 80),
            Duration::from_secs(60)
        );
        assert_eq!(
            r.least_time_for(Endpoint::Job, 401),
            Duration::from_secs(120)
        );
        assert_eq!(r.least_time_for_jobs(80), Duration::from_secs(60));
        assert_eq!(r.least_time_for_jobs(200), Duration::from_secs(180));
        assert_eq!(RateLimits::off().least_time_for_jobs(1000), Duration::ZERO);
    }
}
