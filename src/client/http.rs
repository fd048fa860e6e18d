//! The HTTP implementation of [`super::Coordinator`], on reqwest (rustls, pooled connections).
//!
//! Every answer is classified into a [`ClientError`] here and nowhere else: the three error body shapes
//! of the service (`{"detail"}`, the 422 `{"error": {"code", "message", "details"}}` and the 500
//! `{"error": {"type", "message", "status_code"}}`) are read leniently, and a body that is not what the
//! API promises becomes [`ClientError::Protocol`] with enough of it to debug. The client never retries:
//! the executor owns retries, and it needs to see every failure to keep submits exactly-once. Two
//! exceptions, both below the executor: a request waits for its turn in the pacer ([`super::pace`]), and
//! a 401 with a token from `AITBC_TOKEN_FILE` re-reads the file once and sends again if it holds another
//! token (an external refresher may have rotated it).
//!
//! A server is not trusted to be well-behaved: every answer is read up to a limit (the answers that
//! carry a job — its view, result, receipt, a list of jobs — have a larger one), and a redirect is
//! followed only for a GET and only within the configured origin, so that a request's body (the job,
//! its prompt and wallet, the idempotency key) and its token never go anywhere else. Errors name the
//! URL that answered.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::config::{ClientConfig, ConfigError, Secret};
use super::pace::Pacer;
use super::{ClientError, Coordinator};
use crate::api::{
    AllocateRequest, Allocation, GpuOffer, JobCreate, JobId, JobList, JobResult, JobView,
    ListQuery, PaymentView, RefundRequest, RefundResponse, WalletBalance,
};
use crate::limits::Endpoint;
use crate::money::Money;

/// A coordinator reached over HTTP.
#[derive(Debug)]
pub struct HttpCoordinator {
    http: reqwest::Client,
    base: Url,
    base_text: String,
    wallet_base: Url,
    token: RwLock<Option<Secret>>,
    token_file: Option<PathBuf>,
    api_key: Option<Secret>,
    read_timeout: Duration,
    submit_timeout: Duration,
    max_response: u64,
    max_result: u64,
    pacer: Pacer,
}

/// Redirects followed for one GET, at most (within the same origin).
const MAX_REDIRECTS: usize = 5;

/// What is kept of an error answer's body: enough for its message.
const ERROR_BODY_LIMIT: u64 = 64 << 10;

/// The size limit of one answer, and the setting that raises it (for the message).
#[derive(Clone, Copy)]
struct Limit {
    bytes: u64,
    setting: &'static str,
}

/// One request, described for [`HttpCoordinator::send`].
struct Req<'a, B: Serialize> {
    method: Method,
    url: Url,
    /// The limited endpoint it goes to (`None`: not limited).
    endpoint: Option<Endpoint>,
    body: Option<&'a B>,
    idempotency_key: Option<&'a str>,
    timeout: Duration,
    limit: Limit,
    /// Headers of its own (a webhook's).
    headers: &'a [(String, String)],
    /// Whether the coordinator's token and API key go with it (not to a webhook).
    credentials: bool,
}

impl HttpCoordinator {
    /// A client for the configured coordinator ([`ConfigError::NoCoordinator`] when none is set).
    pub fn new(config: &ClientConfig) -> Result<HttpCoordinator, ConfigError> {
        let base = config
            .coordinator_url
            .clone()
            .ok_or(ConfigError::NoCoordinator)?;
        let wallet_base = config.wallet_url.clone().unwrap_or_else(|| base.clone());
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Redirects are followed by `send`, which knows the method and the origin.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("aitbc-flow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Http(e.to_string()))?;
        Ok(HttpCoordinator {
            http,
            base_text: base.as_str().trim_end_matches('/').to_string(),
            base,
            wallet_base,
            token: RwLock::new(config.token.clone()),
            token_file: config.token_file.clone(),
            api_key: config.api_key.clone(),
            read_timeout: config.read_timeout,
            submit_timeout: config.submit_timeout,
            max_response: config.max_response,
            max_result: config.max_result,
            pacer: Pacer::new(&config.pacing, config.max_in_flight),
        })
    }

    /// Shares the pacing windows with the other processes of `shared` (`client::pace::SharedWindow`).
    pub fn share_pacing(&mut self, shared: std::sync::Arc<dyn super::pace::SharedWindow>) {
        self.pacer.share(shared);
    }

    /// `base` with the path segments appended (each one percent-encoded).
    fn url(base: &Url, segments: &[&str]) -> Url {
        let mut u = base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        u
    }

    fn api(&self, segments: &[&str]) -> Url {
        Self::url(&self.base, segments)
    }

    /// The limit of answers that carry no job (balances, payments, allocations, offers).
    fn small(&self) -> Limit {
        Limit {
            bytes: self.max_response,
            setting: "AITBC_MAX_RESPONSE",
        }
    }

    /// The limit of answers that carry a job: its view, result or receipt, or a list of jobs.
    fn large(&self) -> Limit {
        Limit {
            bytes: self.max_result,
            setting: "AITBC_MAX_RESULT",
        }
    }

    /// A GET of an answer that carries no job, to `endpoint` (`None`: not rate-limited).
    fn read<'a>(&self, url: Url, endpoint: Option<Endpoint>) -> Req<'a, ()> {
        Req {
            method: Method::GET,
            url,
            endpoint,
            body: None,
            idempotency_key: None,
            timeout: self.read_timeout,
            limit: self.small(),
            headers: &[],
            credentials: true,
        }
    }

    /// A GET of an answer that carries a job.
    fn read_job<'a>(&self, url: Url, endpoint: Option<Endpoint>) -> Req<'a, ()> {
        Req {
            limit: self.large(),
            ..self.read(url, endpoint)
        }
    }

    /// `POST` a JSON body to a path of the coordinator and read the answer (the login routes).
    pub(super) async fn post_json<T: DeserializeOwned, B: Serialize>(
        &self,
        segments: &[&str],
        endpoint: Option<Endpoint>,
        body: &B,
    ) -> Result<T, ClientError> {
        let req = Req {
            method: Method::POST,
            url: self.api(segments),
            endpoint,
            body: Some(body),
            idempotency_key: None,
            timeout: self.read_timeout,
            limit: self.small(),
            headers: &[],
            credentials: true,
        };
        Ok(self.send(req).await?.1)
    }

    /// The token sent now.
    fn current_token(&self) -> Option<Secret> {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// After a 401: reads `AITBC_TOKEN_FILE` again and keeps what it holds if it is not the token that
    /// was refused. True when there is a new token to send.
    fn rotate_token(&self, refused: Option<&Secret>) -> bool {
        let Some(path) = &self.token_file else {
            return false;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return false;
        };
        let fresh = text.trim();
        if fresh.is_empty() || refused.is_some_and(|r| r.expose() == fresh) {
            return false;
        }
        tracing::info!("token refused; using the new token in {}", path.display());
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Some(Secret::new(fresh));
        true
    }

    /// Sends one request and classifies the answer: a 2xx body parsed as `T`, or a [`ClientError`]
    /// naming the URL that answered. It waits for its turn in the pacer; a GET follows redirects within
    /// the configured origin (anything else that redirects is an error); a 401 with a token from
    /// `AITBC_TOKEN_FILE` re-reads the file once and sends again when it holds another token.
    async fn send<T: DeserializeOwned, B: Serialize>(
        &self,
        req: Req<'_, B>,
    ) -> Result<(StatusCode, T), ClientError> {
        let mut rotated = false;
        let (url_text, status, headers, body) = loop {
            let token = self.current_token();
            let answer = {
                let _slot = self.pacer.acquire(req.endpoint).await;
                self.exchange(&req, token.as_ref()).await?
            };
            if answer.1 == StatusCode::UNAUTHORIZED && !rotated && self.rotate_token(token.as_ref())
            {
                rotated = true;
                continue;
            }
            break answer;
        };
        if status.is_success() {
            match serde_json::from_slice::<T>(&body) {
                Ok(v) => Ok((status, v)),
                Err(e) => Err(protocol(&url_text, status, &headers, &body, e.to_string())),
            }
        } else {
            let e = classify_error(&url_text, status, &headers, &body);
            if let ClientError::RateLimited { retry_after, .. } = &e {
                self.pacer.rate_limited(req.endpoint, *retry_after);
            }
            Err(e)
        }
    }

    /// One exchange, redirects followed: the URL that answered, its status, headers and body (read up
    /// to the request's limit; an error answer as far as its message needs).
    async fn exchange<B: Serialize>(
        &self,
        req: &Req<'_, B>,
        token: Option<&Secret>,
    ) -> Result<(String, StatusCode, HeaderMap, Vec<u8>), ClientError> {
        let mut url = req.url.clone();
        let mut hops = 0;
        // The request's timeout covers its redirects too.
        let started = std::time::Instant::now();
        loop {
            let url_text = url.to_string();
            let transport = |e: reqwest::Error| transport_error(&url_text, req.timeout, &e);
            let left = req
                .timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            let mut resp = self
                .request(req, url.clone(), left, token)
                .send()
                .await
                .map_err(transport)?;
            let status = resp.status();
            if status.is_redirection()
                && let Some(location) = resp.headers().get(LOCATION)
            {
                let next = self.redirect(req, &url, status, location, hops)?;
                hops += 1;
                url = next;
                continue;
            }
            let headers = resp.headers().clone();
            let body = if status.is_success() {
                read_body(&mut resp, &url_text, req.timeout, req.limit, false).await?
            } else {
                let cut = Limit {
                    bytes: ERROR_BODY_LIMIT.min(req.limit.bytes),
                    ..req.limit
                };
                read_body(&mut resp, &url_text, req.timeout, cut, true).await?
            };
            return Ok((url_text, status, headers, body));
        }
    }

    /// The request of `req`, sent to `url` (its own or one it was redirected to) within `timeout`.
    fn request<B: Serialize>(
        &self,
        req: &Req<'_, B>,
        url: Url,
        timeout: Duration,
        token: Option<&Secret>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(req.method.clone(), url)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = token.filter(|_| req.credentials) {
            rb = rb.bearer_auth(t.expose());
        }
        if let Some(k) = self.api_key.as_ref().filter(|_| req.credentials) {
            rb = rb.header("X-Api-Key", k.expose());
        }
        for (name, value) in req.headers {
            rb = rb.header(name.as_str(), value.as_str());
        }
        if let Some(key) = req.idempotency_key {
            rb = rb.header("Idempotency-Key", key);
        }
        if let Some(b) = req.body {
            rb = rb.json(b);
        }
        rb
    }

    /// Where a redirect from `from` leads, when it may be followed: only a GET, only within the origin
    /// asked (scheme, host and port), at most [`MAX_REDIRECTS`] times.
    fn redirect<B: Serialize>(
        &self,
        req: &Req<'_, B>,
        from: &Url,
        status: StatusCode,
        location: &reqwest::header::HeaderValue,
        hops: usize,
    ) -> Result<Url, ClientError> {
        let shown = String::from_utf8_lossy(location.as_bytes()).into_owned();
        let refuse = |why: String| ClientError::Redirect {
            url: from.to_string(),
            status: status.as_u16(),
            location: printable(&shown, 200),
            why,
        };
        let next = from
            .join(&shown)
            .map_err(|e| refuse(format!("the location is not a URL ({e})")))?;
        if req.method != Method::GET {
            return Err(refuse(format!(
                "a {} is never redirected (it would send its body again, elsewhere or as another request)",
                req.method
            )));
        }
        if next.origin() != req.url.origin() {
            return Err(refuse(format!(
                "it leaves {} (the token and the request stay with the configured coordinator)",
                req.url.origin().ascii_serialization()
            )));
        }
        if hops >= MAX_REDIRECTS {
            return Err(refuse(format!("more than {MAX_REDIRECTS} redirects")));
        }
        Ok(next)
    }
}

/// Reads a body up to `limit` bytes. Over the limit it fails naming the URL and the setting — or, with
/// `truncate` (error answers), keeps what was read. A declared `Content-Length` over the limit fails
/// before anything is read.
async fn read_body(
    resp: &mut reqwest::Response,
    url: &str,
    timeout: Duration,
    limit: Limit,
    truncate: bool,
) -> Result<Vec<u8>, ClientError> {
    let too_large = |declared: Option<u64>| ClientError::TooLarge {
        url: url.to_string(),
        limit: limit.bytes,
        declared,
        setting: limit.setting,
    };
    let declared = resp.content_length();
    if !truncate && let Some(n) = declared.filter(|n| *n > limit.bytes) {
        return Err(too_large(Some(n)));
    }
    let cap = usize::try_from(limit.bytes).unwrap_or(usize::MAX);
    let mut body = Vec::with_capacity(declared.map_or(0, |n| (n as usize).min(cap)));
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(body),
            // A body cut short after its headers: the answer is lost, as with a dropped connection.
            Err(e) if truncate => {
                tracing::debug!("error body from {url} cut short: {e}");
                return Ok(body);
            }
            Err(e) => return Err(transport_error(url, timeout, &e)),
        };
        if body.len() + chunk.len() > cap {
            if truncate {
                body.extend_from_slice(&chunk[..cap - body.len()]);
                return Ok(body);
            }
            return Err(too_large(declared));
        }
        body.extend_from_slice(&chunk);
    }
}

/// A failure below HTTP: a timeout, or a connection that could not be made or broke.
fn transport_error(url: &str, timeout: Duration, e: &reqwest::Error) -> ClientError {
    if e.is_timeout() {
        return ClientError::Timeout {
            url: url.to_string(),
            after: timeout,
        };
    }
    // reqwest's own message repeats the URL; the innermost cause says what happened.
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    ClientError::Unavailable {
        url: url.to_string(),
        reason,
        status: None,
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The first 200 bytes of a body, lossily decoded (messages show it with `{:?}`, which escapes it).
fn body_start(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// Text from a server made safe to print: control characters (a terminal's escape sequences) escaped,
/// and cut after `max` characters.
fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() && c != ' ' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn protocol(
    url: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    reason: String,
) -> ClientError {
    ClientError::Protocol {
        url: url.to_string(),
        status: status.as_u16(),
        content_type: content_type(headers),
        body_start: body_start(body),
        reason,
    }
}

/// What an error body says, whichever of the service's shapes it has.
#[derive(Debug, Default, PartialEq)]
struct ErrorBody {
    message: Option<String>,
    details: Vec<(String, String)>,
}

fn parse_error_body(body: &[u8]) -> ErrorBody {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return ErrorBody::default();
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let mut out = ErrorBody::default();
    match v.get("detail") {
        Some(Value::String(s)) => out.message = Some(s.clone()),
        // FastAPI's own 422: `{"detail": [{"loc": [...], "msg": "..."}]}`.
        Some(Value::Array(items)) => {
            out.message = Some("Request validation failed".into());
            for item in items {
                let field = item
                    .get("loc")
                    .and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .map(|p| match p {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .unwrap_or_default();
                let msg = text(item.get("msg")).unwrap_or_default();
                out.details.push((field, msg));
            }
        }
        Some(other) if !other.is_null() => out.message = Some(other.to_string()),
        _ => {}
    }
    if let Some(err) = v.get("error") {
        match err {
            Value::String(s) => out.message = out.message.take().or(Some(s.clone())),
            Value::Object(_) => {
                out.message = out.message.take().or_else(|| text(err.get("message")));
                if let Some(details) = err.get("details").and_then(Value::as_array) {
                    for d in details {
                        let field = text(d.get("field")).unwrap_or_default();
                        let msg = text(d.get("message")).unwrap_or_default();
                        out.details.push((field, msg));
                    }
                }
            }
            _ => {}
        }
    }
    if out.message.is_none() {
        out.message = text(v.get("message"));
    }
    out.message = out.message.map(|m| printable(&m, MESSAGE_CHARS));
    out.details = out
        .details
        .into_iter()
        .take(20)
        .map(|(f, m)| (printable(&f, 100), printable(&m, MESSAGE_CHARS)))
        .collect();
    out
}

/// The most of a server's message kept in an error.
const MESSAGE_CHARS: usize = 300;

/// Maps a non-2xx answer to its [`ClientError`].
fn classify_error(url: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ClientError {
    let parsed = parse_error_body(body);
    let code = status.as_u16();
    let reason_phrase = status.canonical_reason().unwrap_or("error");
    // When the body is not one of the service's shapes, show what it was instead.
    let message = parsed.message.clone().unwrap_or_else(|| {
        let start = body_start(body);
        let start = start.trim();
        if start.is_empty() {
            reason_phrase.to_string()
        } else {
            format!("{reason_phrase}; body starts {start:?}")
        }
    });
    let url = url.to_string();
    match code {
        401 | 403 => ClientError::Auth {
            url,
            status: code,
            detail: message,
        },
        402 => match parse_insufficient(&message) {
            Some((wallet, held, needed)) => ClientError::InsufficientBalance {
                wallet,
                needed,
                held,
            },
            None => ClientError::Invalid {
                url,
                status: code,
                message,
                details: parsed.details,
            },
        },
        404 => ClientError::NotFound {
            url,
            detail: message,
        },
        409 => ClientError::Conflict {
            url,
            detail: message,
        },
        425 => ClientError::NotReady { url },
        429 => ClientError::RateLimited {
            url,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
        },
        500..=599 => ClientError::Unavailable {
            url,
            reason: format!("HTTP {code}: {message}"),
            status: Some(code),
        },
        _ => ClientError::Invalid {
            url,
            status: code,
            message,
            details: parsed.details,
        },
    }
}

/// Reads `insufficient balance: wallet W holds H AITBC, job needs N` into (W, H, N).
pub fn parse_insufficient(detail: &str) -> Option<(String, Money, Money)> {
    let rest = &detail[detail.find("wallet ")? + "wallet ".len()..];
    let (wallet, rest) = rest.split_once(" holds ")?;
    let (held, rest) = rest.split_once(',')?;
    let needed = rest.rsplit_once("needs ")?.1;
    let num = |s: &str| -> Option<Money> {
        let t = s
            .trim()
            .trim_end_matches('.')
            .trim_end_matches("AITBC")
            .trim();
        t.parse().ok()
    };
    Some((wallet.trim().to_string(), num(held)?, num(needed)?))
}

/// Reads `Retry-After`: delay seconds or an HTTP date (a date in the past means now).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// `GET /v1/marketplace/gpu/list` answers a bare list; tolerate one wrapped in `items` or `offers` too.
///
/// Read by hand rather than as an untagged enum: serde buffers an untagged value before it tries a
/// shape, and the buffer holds a number as an `f64`, rounding a price of more than 15 digits.
struct OfferList(Vec<GpuOffer>);

impl<'de> serde::Deserialize<'de> for OfferList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OfferList, D::Error> {
        d.deserialize_any(OfferListVisitor)
    }
}

/// The visitor of [`OfferList`].
struct OfferListVisitor;

impl<'de> serde::de::Visitor<'de> for OfferListVisitor {
    type Value = OfferList;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of GPU offers, or an object with one in `items` or `offers`")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OfferList, A::Error> {
        let mut offers = Vec::new();
        while let Some(o) = seq.next_element::<GpuOffer>()? {
            offers.push(o);
        }
        Ok(OfferList(offers))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OfferList, A::Error> {
        let mut offers = None;
        while let Some(key) = map.next_key::<String>()? {
            if offers.is_none() && (key == "items" || key == "offers") {
                offers = Some(map.next_value::<Vec<GpuOffer>>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        offers
            .map(OfferList)
            .ok_or_else(|| serde::de::Error::missing_field("items"))
    }
}

impl Coordinator for HttpCoordinator {
    async fn notify(
        &self,
        url: &Url,
        headers: &[(String, String)],
        body: &Value,
    ) -> Result<u16, ClientError> {
        // The coordinator's rules for a body sent elsewhere: no token or API key, never redirected
        // (a POST is not), the answer read up to the small limit; only its status matters.
        let req = Req {
            method: Method::POST,
            url: url.clone(),
            endpoint: None,
            body: Some(body),
            idempotency_key: None,
            timeout: self.submit_timeout,
            limit: self.small(),
            headers,
            credentials: false,
        };
        let (url_text, status, headers, body) = self.exchange(&req, None).await?;
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(classify_error(&url_text, status, &headers, &body))
        }
    }

    fn base_url(&self) -> &str {
        &self.base_text
    }

    async fn submit(
        &self,
        job: &JobCreate,
        idempotency_key: Option<&str>,
    ) -> Result<(JobView, bool), ClientError> {
        let req = Req {
            method: Method::POST,
            url: self.api(&["v1", "jobs"]),
            endpoint: Some(Endpoint::Submit),
            body: Some(job),
            idempotency_key,
            timeout: self.submit_timeout,
            limit: self.large(),
            headers: &[],
            credentials: true,
        };
        let (status, view) = self.send::<JobView, _>(req).await?;
        Ok((view, status == StatusCode::CREATED))
    }

    async fn job(&self, id: &JobId) -> Result<JobView, ClientError> {
        let req = self.read_job(self.api(&["v1", "jobs", id.as_str()]), Some(Endpoint::Job));
        Ok(self.send(req).await?.1)
    }

    async fn poll(&self, id: &JobId) -> Result<JobView, ClientError> {
        self.pacer.poll_turn().await;
        self.job(id).await
    }

    async fn result(&self, id: &JobId) -> Result<JobResult, ClientError> {
        let req = self.read_job(
            self.api(&["v1", "jobs", id.as_str(), "result"]),
            Some(Endpoint::Result),
        );
        Ok(self.send(req).await?.1)
    }

    async fn cancel(&self, id: &JobId) -> Result<JobView, ClientError> {
        let req = Req::<()> {
            method: Method::POST,
            url: self.api(&["v1", "jobs", id.as_str(), "cancel"]),
            endpoint: Some(Endpoint::Cancel),
            body: None,
            idempotency_key: None,
            timeout: self.read_timeout,
            limit: self.large(),
            headers: &[],
            credentials: true,
        };
        Ok(self.send(req).await?.1)
    }

    async fn list(&self, query: &ListQuery) -> Result<JobList, ClientError> {
        let mut url = self.api(&["v1", "jobs"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(l) = query.limit {
                q.append_pair("limit", &l.to_string());
            }
            if let Some(o) = query.offset {
                q.append_pair("offset", &o.to_string());
            }
            if let Some(s) = &query.status {
                q.append_pair("status", s);
            }
            if let Some(t) = &query.job_type {
                q.append_pair("job_type", t);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(self.send(self.read_job(url, Some(Endpoint::List))).await?.1)
    }

    async fn receipt(&self, id: &JobId) -> Result<Value, ClientError> {
        let req = self.read_job(
            self.api(&["v1", "jobs", id.as_str(), "receipt"]),
            Some(Endpoint::Receipt),
        );
        Ok(self.send(req).await?.1)
    }

    async fn payment(&self, id: &JobId) -> Result<PaymentView, ClientError> {
        let req = self.read(self.api(&["v1", "jobs", id.as_str(), "payment"]), None);
        Ok(self.send(req).await?.1)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundResponse, ClientError> {
        let req = Req {
            method: Method::POST,
            url: self.api(&["v1", "payments", &request.payment_id, "refund"]),
            endpoint: None,
            body: Some(request),
            idempotency_key: None,
            timeout: self.submit_timeout,
            limit: self.small(),
            headers: &[],
            credentials: true,
        };
        Ok(self.send(req).await?.1)
    }

    async fn allocate(&self, request: &AllocateRequest) -> Result<Allocation, ClientError> {
        let req = Req {
            method: Method::POST,
            url: self.api(&["v1", "agent-performance", "resources", "allocate"]),
            endpoint: Some(Endpoint::Allocate),
            body: Some(request),
            idempotency_key: None,
            timeout: self.read_timeout,
            limit: self.small(),
            headers: &[],
            credentials: true,
        };
        Ok(self.send(req).await?.1)
    }

    async fn gpu_offers(&self, limit: Option<u32>) -> Result<Vec<GpuOffer>, ClientError> {
        let mut url = self.api(&["v1", "marketplace", "gpu", "list"]);
        if let Some(l) = limit {
            url.query_pairs_mut().append_pair("limit", &l.to_string());
        }
        let req = self.read(url, None);
        let (_, OfferList(offers)) = self.send::<OfferList, _>(req).await?;
        Ok(offers)
    }

    async fn balance(&self, wallet: &str) -> Result<WalletBalance, ClientError> {
        let req = self.read(
            Self::url(&self.wallet_base, &["v1", "wallets", wallet, "balance"]),
            None,
        );
        Ok(self.send(req).await?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_offer_list_bare_or_wrapped_with_exact_prices() {
        let one = r#"{"id": "g1", "price_per_hour": 0.50000000000000001, "status": "available"}"#;
        for body in [
            format!("[{one}]"),
            format!(r#"{{"items": [{one}], "total": 1}}"#),
            format!(r#"{{"total": 1, "offers": [{one}]}}"#),
        ] {
            let OfferList(offers) = serde_json::from_slice(body.as_bytes()).unwrap();
            assert_eq!(offers.len(), 1, "{body}");
            // Through a float (an untagged enum's buffer) this would read 0.5.
            assert_eq!(offers[0].price_per_hour.to_string(), "0.50000000000000001");
        }
        assert!(serde_json::from_str::<OfferList>(r#"{"total": 0}"#).is_err());
        assert!(serde_json::from_str::<OfferList>("7").is_err());
    }

    #[test]
    fn reads_the_insufficient_balance_detail() {
        let (w, h, n) = parse_insufficient(
            "insufficient balance: wallet trading-wallet holds 120 AITBC, job needs 500",
        )
        .unwrap();
        assert_eq!(w, "trading-wallet");
        assert_eq!(h, Money::from_int(120));
        assert_eq!(n, Money::from_int(500));
        let (_, h, n) = parse_insufficient(
            "insufficient balance: wallet w holds 0.5 AITBC, job needs 2.25 AITBC",
        )
        .unwrap();
        assert_eq!(h.to_string(), "0.5");
        assert_eq!(n.to_string(), "2.25");
        assert_eq!(parse_insufficient("insufficient balance"), None);
        assert_eq!(
            parse_insufficient("wallet w holds lots, job needs more"),
            None
        );
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        assert_eq!(parse_retry_after("60"), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn reads_every_error_shape() {
        let b = parse_error_body(br#"{"detail": "job not found"}"#);
        assert_eq!(b.message.as_deref(), Some("job not found"));
        let b = parse_error_body(
            br#"{"error": {"code": "VALIDATION_ERROR", "message": "Request validation failed", "status": 422,
                "details": [{"field": "body.payment_amount", "message": "bad", "code": "decimal_parsing"}]},
                "timestamp": "x", "request_id": null}"#,
        );
        assert_eq!(b.message.as_deref(), Some("Request validation failed"));
        assert_eq!(
            b.details,
            vec![("body.payment_amount".into(), "bad".into())]
        );
        let b = parse_error_body(
            br#"{"error": {"type": "internal_error", "message": "boom", "status_code": 500, "path": "/v1/jobs"}}"#,
        );
        assert_eq!(b.message.as_deref(), Some("boom"));
        let b = parse_error_body(
            br#"{"detail": [{"loc": ["body", "payload"], "msg": "field required"}]}"#,
        );
        assert_eq!(
            b.details,
            vec![("body.payload".into(), "field required".into())]
        );
        assert_eq!(parse_error_body(b"<html>"), ErrorBody::default());
    }

    #[test]
    fn paths_are_joined_under_a_base_path() {
        let base = Url::parse("http://h:1/api/").unwrap();
        assert_eq!(
            HttpCoordinator::url(&base, &["v1", "wallets", "my wallet/x", "balance"]).as_str(),
            "http://h:1/api/v1/wallets/my%20wallet%2Fx/balance"
        );
        let base = Url::parse("http://h:1").unwrap();
        assert_eq!(
            HttpCoordinator::url(&base, &["v1", "jobs"]).as_str(),
            "http://h:1/v1/jobs"
        );
    }
}
