//! The client side of the coordinator API: the [`Coordinator`] trait that the job commands and the
//! executor use, its typed errors with a retryable class, and the HTTP implementation ([`http`]).
//!
//! The trait exists so that the executor can be tested against anything that speaks the API; in
//! practice that is [`http::HttpCoordinator`] pointed at either the real service or the embedded one.

pub mod config;
#[cfg(test)]
pub mod fake;
pub mod http;
pub mod login;
pub mod pace;

use std::future::Future;
use std::time::Duration;

use crate::api::{
    AllocateRequest, Allocation, GpuOffer, JobCreate, JobId, JobList, JobResult, JobView,
    ListQuery, PaymentView, RefundRequest, RefundResponse, WalletBalance,
};
use crate::money::Money;

pub use config::ClientConfig;

/// An error talking to the coordinator, classified so that callers know whether to retry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// Could not connect, the connection dropped, or the service answered 5xx.
    #[error("coordinator unavailable at {url}: {reason}")]
    Unavailable {
        /// The URL that was asked.
        url: String,
        /// What went wrong (`connection refused`, `HTTP 503: …`).
        reason: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
    },
    /// The request took longer than its timeout.
    #[error("request to {url} timed out after {after:?}")]
    Timeout {
        /// The URL that was asked.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// 429: over the service's rate limit.
    #[error("rate limited by {url}{}", fmt_retry_after(retry_after))]
    RateLimited {
        /// The URL that was asked.
        url: String,
        /// From `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 401 or 403: the token is missing, wrong, expired, or of the wrong role.
    #[error("authentication refused by {url} (HTTP {status}): {detail}")]
    Auth {
        /// The URL that was asked.
        url: String,
        /// 401 or 403.
        status: u16,
        /// The service's `detail`.
        detail: String,
    },
    /// 404: an unknown job, or another client's.
    #[error("not found: {detail} ({url})")]
    NotFound {
        /// The URL that was asked.
        url: String,
        /// The service's `detail`.
        detail: String,
    },
    /// 425: the job has no result (yet, or ever: FAILED, CANCELED and EXPIRED answer this too).
    #[error("job not ready ({url})")]
    NotReady {
        /// The URL that was asked.
        url: String,
    },
    /// 409: the job is not in a state that allows this (e.g. cancel a finished job).
    #[error("conflict: {detail} ({url})")]
    Conflict {
        /// The URL that was asked.
        url: String,
        /// The service's `detail`.
        detail: String,
    },
    /// 400/422 and other 4xx: the request was refused as invalid.
    #[error(
        "request refused by {url} (HTTP {status}): {message}{}",
        fmt_details(details)
    )]
    Invalid {
        /// The URL that was asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The service's message.
        message: String,
        /// `field: message` pairs from a 422.
        details: Vec<(String, String)>,
    },
    /// 402: the wallet cannot pay for the job.
    #[error("insufficient balance: wallet {wallet} holds {held} AITBC, job needs {needed}")]
    InsufficientBalance {
        /// The wallet.
        wallet: String,
        /// What the job needs.
        needed: Money,
        /// What the wallet holds.
        held: Money,
    },
    /// The answer was not what the API promises.
    #[error(
        "unexpected answer from {url}: HTTP {status}, content type {content_type:?}, body starts {body_start:?}: {reason}"
    )]
    Protocol {
        /// The URL that was asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The content type it said.
        content_type: Option<String>,
        /// The first 200 bytes of the body, lossily decoded.
        body_start: String,
        /// What did not fit.
        reason: String,
    },
    /// The answer was larger than the limit for its endpoint; it was not read further.
    #[error(
        "the answer from {url} is larger than the {} limit for it{}: refused (raise {setting} if such answers are expected)",
        fmt_bytes(*limit),
        declared.map(|n| format!(" (it declares {})", fmt_bytes(n))).unwrap_or_default()
    )]
    TooLarge {
        /// The URL that answered.
        url: String,
        /// The limit, in bytes.
        limit: u64,
        /// The size its `Content-Length` declared, when it declared one.
        declared: Option<u64>,
        /// The setting that raises the limit.
        setting: &'static str,
    },
    /// A redirect that was not followed: to another origin, of a request other than GET, or too many.
    #[error("{url} answered HTTP {status}, redirecting to {location}; not followed: {why}")]
    Redirect {
        /// The URL that answered.
        url: String,
        /// The 3xx status.
        status: u16,
        /// Where it pointed.
        location: String,
        /// Why it was not followed.
        why: String,
    },
    /// The answer is about another job than the one asked for.
    #[error("{url} answered with job {answered}, not job {asked}: refused")]
    WrongJob {
        /// The URL that answered.
        url: String,
        /// The job asked for.
        asked: String,
        /// The job the answer is about.
        answered: String,
    },
    /// The step's timeout ended the request, or the delay before the next attempt would pass it. Made
    /// by the operation layer's retry loop (`ops::Conn`), never by the transport.
    #[error("{}", fmt_out_of_time(url, *left, *wait, *retry_after, last.as_deref()))]
    OutOfTime {
        /// The URL asked.
        url: String,
        /// What was left of the step's timeout.
        left: Duration,
        /// The delay the next attempt needed, when one would have followed.
        wait: Option<Duration>,
        /// True when that delay is the server's `Retry-After`.
        retry_after: bool,
        /// The answer of the last attempt, when one came.
        last: Option<Box<ClientError>>,
    },
}

/// `4 MiB`, `512 KiB`, `1000 bytes`.
pub fn fmt_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    match n {
        n if n >= GIB && n % GIB == 0 => format!("{} GiB", n / GIB),
        n if n >= MIB && n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n >= KIB && n % KIB == 0 => format!("{} KiB", n / KIB),
        n if n >= MIB => format!("{:.1} MiB", n as f64 / MIB as f64),
        n => format!("{n} bytes"),
    }
}

fn fmt_out_of_time(
    url: &str,
    left: Duration,
    wait: Option<Duration>,
    retry_after: bool,
    last: Option<&ClientError>,
) -> String {
    let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
    let left = secs(left);
    let last = last
        .map(|e| format!("; last answer: {e}"))
        .unwrap_or_default();
    match wait {
        Some(w) if retry_after => format!(
            "{url} asked to retry after {} s (Retry-After), past the step's timeout ({left} left): gave up{last}",
            w.as_secs()
        ),
        Some(w) => format!(
            "the next attempt at {url} (in {}) would pass the step's timeout ({left} left): gave up{last}",
            secs(w)
        ),
        None => format!("the step's timeout passed while waiting for {url}{last}"),
    }
}

fn fmt_retry_after(d: &Option<Duration>) -> String {
    d.map(|d| format!("; retry after {}s", d.as_secs()))
        .unwrap_or_default()
}

fn fmt_details(details: &[(String, String)]) -> String {
    if details.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = details.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        format!(" ({})", parts.join("; "))
    }
}

impl ClientError {
    /// True for errors where sending the same request again may succeed: connection failure, 5xx,
    /// 429 and a request timeout.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. }
                | ClientError::RateLimited { .. }
                | ClientError::Timeout { .. }
        )
    }

    /// True when a request may have been committed by the service although no answer came back (a
    /// timeout, a dropped connection, a 5xx): a submit must then look the job up before it sends again.
    pub fn may_have_committed(&self) -> bool {
        match self {
            ClientError::Unavailable { .. } | ClientError::Timeout { .. } => true,
            ClientError::OutOfTime { last, .. } => {
                last.as_deref().is_none_or(ClientError::may_have_committed)
            }
            _ => false,
        }
    }

    /// The delay the service asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The URL the error is about, when it names one.
    pub fn url(&self) -> Option<&str> {
        match self {
            ClientError::Unavailable { url, .. }
            | ClientError::Timeout { url, .. }
            | ClientError::RateLimited { url, .. }
            | ClientError::Auth { url, .. }
            | ClientError::NotFound { url, .. }
            | ClientError::NotReady { url }
            | ClientError::Conflict { url, .. }
            | ClientError::Invalid { url, .. }
            | ClientError::Protocol { url, .. }
            | ClientError::TooLarge { url, .. }
            | ClientError::Redirect { url, .. }
            | ClientError::WrongJob { url, .. }
            | ClientError::OutOfTime { url, .. } => Some(url),
            ClientError::InsufficientBalance { .. } => None,
        }
    }
}

/// Everything the runner asks of a coordinator. Implemented over HTTP by [`http::HttpCoordinator`].
pub trait Coordinator: Send + Sync {
    /// The base URL, for messages and reports.
    fn base_url(&self) -> &str;

    /// `POST /v1/jobs`, with an `Idempotency-Key` when given. Returns the job and whether it was created
    /// now (201) or found by its key (200).
    fn submit(
        &self,
        job: &JobCreate,
        idempotency_key: Option<&str>,
    ) -> impl Future<Output = Result<(JobView, bool), ClientError>> + Send;

    /// `GET /v1/jobs/{id}`.
    fn job(&self, id: &JobId) -> impl Future<Output = Result<JobView, ClientError>> + Send;

    /// `GET /v1/jobs/{id}` as one poll of a wait: the polls of every job waited for share one budget
    /// (`pace::PollBudget`), so that they stay under the read limit however many jobs wait.
    fn poll(&self, id: &JobId) -> impl Future<Output = Result<JobView, ClientError>> + Send {
        self.job(id)
    }

    /// `GET /v1/jobs/{id}/result` (425 → [`ClientError::NotReady`]).
    fn result(&self, id: &JobId) -> impl Future<Output = Result<JobResult, ClientError>> + Send;

    /// `POST /v1/jobs/{id}/cancel` (409 → [`ClientError::Conflict`]).
    fn cancel(&self, id: &JobId) -> impl Future<Output = Result<JobView, ClientError>> + Send;

    /// `GET /v1/jobs`, newest first.
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<JobList, ClientError>> + Send;

    /// `GET /v1/jobs/{id}/receipt`.
    fn receipt(
        &self,
        id: &JobId,
    ) -> impl Future<Output = Result<serde_json::Value, ClientError>> + Send;

    /// `GET /v1/jobs/{id}/payment`.
    fn payment(&self, id: &JobId) -> impl Future<Output = Result<PaymentView, ClientError>> + Send;

    /// `POST /v1/payments/{payment_id}/refund`.
    fn refund(
        &self,
        request: &RefundRequest,
    ) -> impl Future<Output = Result<RefundResponse, ClientError>> + Send;

    /// `POST /v1/agent-performance/resources/allocate`.
    fn allocate(
        &self,
        request: &AllocateRequest,
    ) -> impl Future<Output = Result<Allocation, ClientError>> + Send;

    /// `GET /v1/marketplace/gpu/list`.
    fn gpu_offers(
        &self,
        limit: Option<u32>,
    ) -> impl Future<Output = Result<Vec<GpuOffer>, ClientError>> + Send;

    /// `POST` a JSON body to a webhook (a `notify` step), without the coordinator's credentials,
    /// never redirected; the answer's status when it is a success. A client that cannot reach
    /// webhooks refuses.
    fn notify(
        &self,
        url: &reqwest::Url,
        headers: &[(String, String)],
        body: &serde_json::Value,
    ) -> impl Future<Output = Result<u16, ClientError>> + Send {
        let _ = (headers, body);
        let url = url.to_string();
        async move {
            Err(ClientError::Unavailable {
                url,
                reason: "this client does not send webhooks".to_string(),
                status: None,
            })
        }
    }

    /// `GET /v1/wallets/{name}/balance` on the wallet daemon (or the embedded coordinator).
    fn balance(
        &self,
        wallet: &str,
    ) -> impl Future<Output = Result<WalletBalance, ClientError>> + Send;
}
