//! The HTTP client against stub servers on 127.0.0.1: every status and error body shape the service
//! speaks, garbage answers, and transport failures, each classified into its `ClientError`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aitbc_flow::api::{JobCreate, JobId, ListQuery};
use aitbc_flow::client::config::ClientConfig;
use aitbc_flow::client::http::HttpCoordinator;
use aitbc_flow::client::{ClientError, Coordinator};
use aitbc_flow::money::Money;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode};

const ID: &str = "ea05c15ab4f94d369c35d96c8fc39ac5";

fn id() -> JobId {
    ID.parse().unwrap()
}

fn job_json(state: &str) -> String {
    format!(
        r#"{{"job_id": "{ID}", "state": "{state}", "assigned_miner_id": null, "requested_at": "2026-11-25T07:33:46.129984",
           "payload": {{"type": "inference", "prompt": "hi"}}, "result": null, "payment_status": "escrowed",
           "payment_id": "p1", "zk_status": null, "something_new": 1}}"#
    )
}

/// A server on 127.0.0.1:0 that answers every request with the same response, and records the
/// headers and body of what it was sent.
struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<(String, HeaderMap, String)>>>,
}

async fn stub(status: u16, headers: &[(&str, &str)], body: &str) -> Stub {
    let seen: Arc<Mutex<Vec<(String, HeaderMap, String)>>> = Arc::default();
    let (status, body) = (status, body.to_string());
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let record = seen.clone();
    let app = Router::new().fallback(move |req: Request<Body>| {
        let (status, body, headers, record) =
            (status, body.clone(), headers.clone(), record.clone());
        async move {
            let (parts, b) = req.into_parts();
            let bytes = axum::body::to_bytes(b, 1 << 20).await.unwrap_or_default();
            record.lock().unwrap().push((
                format!("{} {}", parts.method, parts.uri),
                parts.headers,
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
            let mut r = Response::builder().status(StatusCode::from_u16(status).unwrap());
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.body(Body::from(body)).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Stub { url, seen }
}

async fn json_stub(status: u16, body: &str) -> Stub {
    stub(status, &[("content-type", "application/json")], body).await
}

fn client(url: &str) -> HttpCoordinator {
    HttpCoordinator::new(&ClientConfig::for_url(url).unwrap()).unwrap()
}

/// The error of reading one job from a server that answers `status` with `body`.
async fn job_error(status: u16, headers: &[(&str, &str)], body: &str) -> ClientError {
    let s = stub(status, headers, body).await;
    client(&s.url).job(&id()).await.unwrap_err()
}

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

#[tokio::test]
async fn reads_a_job_tolerating_unknown_fields() {
    let s = json_stub(200, &job_json("QUEUED")).await;
    let view = client(&s.url).job(&id()).await.unwrap();
    assert_eq!(view.job_id, id());
    assert_eq!(view.extra.get("something_new"), Some(&serde_json::json!(1)));
    assert_eq!(s.seen.lock().unwrap()[0].0, format!("GET /v1/jobs/{ID}"));
}

#[tokio::test]
async fn submit_sends_token_idempotency_key_and_reports_created() {
    let s = json_stub(201, &job_json("QUEUED")).await;
    let config = ClientConfig::for_url(&s.url).unwrap().with_token("tok-123");
    let c = HttpCoordinator::new(&config).unwrap();
    let job = JobCreate {
        payment_amount: Some(Money::from_int(5)),
        payment_currency: Some("AITBC".into()),
        buyer_address: Some("w".into()),
        ..JobCreate::default()
    };
    let (view, created) = c.submit(&job, Some("key-1")).await.unwrap();
    assert!(created);
    assert_eq!(view.job_id, id());
    let (line, headers, body) = s.seen.lock().unwrap()[0].clone();
    assert_eq!(line, "POST /v1/jobs");
    assert_eq!(headers["authorization"], "Bearer tok-123");
    assert_eq!(headers["idempotency-key"], "key-1");
    assert!(headers.get("x-api-key").is_none());
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["payment_currency"], "AITBC");
    assert_eq!(body["payment_amount"], 5);

    // 200 means the key found an existing job.
    let s = json_stub(200, &job_json("QUEUED")).await;
    let (_, created) = client(&s.url).submit(&job, Some("key-1")).await.unwrap();
    assert!(!created);
}

#[tokio::test]
async fn list_sends_its_filters() {
    let s = json_stub(
        200,
        &format!(
            r#"{{"items": [{}], "total": 1, "limit": 5, "offset": 0}}"#,
            job_json("RUNNING")
        ),
    )
    .await;
    let q = ListQuery {
        limit: Some(5),
        status: Some("RUNNING".into()),
        job_type: Some("inference".into()),
        ..ListQuery::default()
    };
    let list = client(&s.url).list(&q).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        s.seen.lock().unwrap()[0].0,
        "GET /v1/jobs?limit=5&status=RUNNING&job_type=inference"
    );
}

#[tokio::test]
async fn balance_goes_to_the_wallet_url_and_reads_strings() {
    let wallet = json_stub(
        200,
        // The upstream wallet daemon's units: compute-seconds (a decimal string here) and "N AIT".
        r#"{"wallet_id": "w 1", "address": "0xabc", "balance": "433800", "balance_ait": "120.5000 AIT", "chain_id": "c"}"#,
    )
    .await;
    let mut config = ClientConfig::for_url("http://127.0.0.1:9").unwrap();
    config.wallet_url = Some(wallet.url.parse().unwrap());
    let b = HttpCoordinator::new(&config)
        .unwrap()
        .balance("w 1")
        .await
        .unwrap();
    assert_eq!(b.balance.to_string(), "120.5");
    assert_eq!(
        wallet.seen.lock().unwrap()[0].0,
        "GET /v1/wallets/w%201/balance"
    );
}

#[tokio::test]
async fn a_balance_without_balance_ait_is_refused_naming_the_url() {
    let wallet = json_stub(200, r#"{"wallet_id": "w", "balance": 36000}"#).await;
    let mut config = ClientConfig::for_url("http://127.0.0.1:9").unwrap();
    config.wallet_url = Some(wallet.url.parse().unwrap());
    let e = HttpCoordinator::new(&config)
        .unwrap()
        .balance("w")
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{}/v1/wallets/w/balance",
            wallet.url.trim_end_matches('/')
        )),
        "{text}"
    );
    assert!(text.contains("no `balance_ait`"), "{text}");
}

#[tokio::test]
async fn insufficient_balance_is_parsed() {
    let s = json_stub(
        402,
        r#"{"detail": "insufficient balance: wallet trading-wallet holds 120 AITBC, job needs 500"}"#,
    )
    .await;
    let e = client(&s.url)
        .submit(&JobCreate::default(), None)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ClientError::InsufficientBalance {
            wallet: "trading-wallet".into(),
            needed: Money::from_int(500),
            held: Money::from_int(120),
        }
    );
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let e = job_error(
        429,
        &[("content-type", "application/json"), ("retry-after", "60")],
        r#"{"detail": "Rate limit exceeded"}"#,
    )
    .await;
    assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));
    assert!(e.is_retryable());
    let e = job_error(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], "").await;
    assert_eq!(e.retry_after(), Some(Duration::ZERO));
}

/// Every status and body shape, classified; the messages are snapshotted with the port redacted.
#[tokio::test]
async fn every_error_shape_and_status() {
    type Case<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], &'a str);
    let cases: Vec<Case> = vec![
        (
            "401 no token",
            401,
            JSON,
            r#"{"detail": "Authentication required"}"#,
        ),
        ("403 wrong role", 403, JSON, r#"{"detail": "Forbidden"}"#),
        (
            "404 unknown job",
            404,
            JSON,
            r#"{"detail": "job not found"}"#,
        ),
        (
            "409 not cancelable",
            409,
            JSON,
            r#"{"detail": "job not cancelable"}"#,
        ),
        ("425 not ready", 425, JSON, r#"{"detail": "job not ready"}"#),
        (
            "429 no retry-after",
            429,
            JSON,
            r#"{"detail": "Rate limit exceeded"}"#,
        ),
        (
            "422 validation",
            422,
            JSON,
            r#"{"error": {"code": "VALIDATION_ERROR", "message": "Request validation failed", "status": 422,
                "details": [{"field": "body.payment_amount", "message": "Input should be a valid decimal", "code": "decimal_parsing"}]},
                "timestamp": "2026-11-25T07:00:00", "request_id": null}"#,
        ),
        (
            "400 bad request",
            400,
            JSON,
            r#"{"detail": "Failed to refund payment"}"#,
        ),
        (
            "402 unparseable",
            402,
            JSON,
            r#"{"detail": "payment required"}"#,
        ),
        (
            "500 internal error shape",
            500,
            JSON,
            r#"{"error": {"type": "internal_error", "message": "database is locked", "status_code": 500, "path": "/v1/jobs"}}"#,
        ),
        (
            "500 detail shape",
            500,
            JSON,
            r#"{"detail": "Internal server error"}"#,
        ),
        (
            "502 html page",
            502,
            &[("content-type", "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
        ),
        ("503 empty", 503, &[], ""),
        (
            "200 truncated json",
            200,
            JSON,
            r#"{"job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": "QUE"#,
        ),
        (
            "200 wrong content type",
            200,
            &[("content-type", "text/plain")],
            "OK",
        ),
        (
            "200 wrong shape",
            200,
            JSON,
            r#"{"job_id": "ai_job_1774883000", "state": "QUEUED"}"#,
        ),
        (
            "404 html",
            404,
            &[("content-type", "text/html")],
            "<h1>Not Found</h1>",
        ),
    ];
    let mut out = String::new();
    for (name, status, headers, body) in cases {
        let e = job_error(status, headers, body).await;
        out.push_str(&format!(
            "{name}\n  kind: {}\n  retryable: {}, may_have_committed: {}, exit: {}\n  {e}\n\n",
            kind(&e),
            e.is_retryable(),
            e.may_have_committed(),
            aitbc_flow::exit::for_client(&e)
        ));
    }
    insta::with_settings!({filters => vec![(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT")]}, {
        insta::assert_snapshot!(out);
    });
}

fn kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Unavailable { .. } => "Unavailable",
        ClientError::Timeout { .. } => "Timeout",
        ClientError::RateLimited { .. } => "RateLimited",
        ClientError::Auth { .. } => "Auth",
        ClientError::NotFound { .. } => "NotFound",
        ClientError::NotReady { .. } => "NotReady",
        ClientError::Conflict { .. } => "Conflict",
        ClientError::Invalid { .. } => "Invalid",
        ClientError::InsufficientBalance { .. } => "InsufficientBalance",
        ClientError::Protocol { .. } => "Protocol",
        ClientError::TooLarge { .. } => "TooLarge",
        ClientError::Redirect { .. } => "Redirect",
        ClientError::WrongJob { .. } => "WrongJob",
        ClientError::OutOfTime { .. } => "OutOfTime",
    }
}

#[tokio::test]
async fn protocol_error_keeps_status_type_and_first_200_bytes() {
    let body = format!("<!doctype html>{}", "é".repeat(300));
    let e = job_error(200, &[("content-type", "text/html; charset=utf-8")], &body).await;
    match e {
        ClientError::Protocol {
            status,
            content_type,
            body_start,
            ..
        } => {
            assert_eq!(status, 200);
            assert_eq!(content_type.as_deref(), Some("text/html; charset=utf-8"));
            // 200 bytes cut in the middle of a two-byte character, decoded lossily.
            assert!(body_start.starts_with("<!doctype html>é"));
            assert!(body_start.len() <= 203, "{}", body_start.len());
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_refused_is_unavailable_naming_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}");
    let e = client(&url).job(&id()).await.unwrap_err();
    match &e {
        ClientError::Unavailable {
            url: asked, status, ..
        } => {
            assert_eq!(asked, &format!("{url}/v1/jobs/{ID}"));
            assert_eq!(*status, None);
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert_eq!(
        aitbc_flow::exit::for_client(&e),
        aitbc_flow::exit::UNREACHABLE
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accept connections and hold them open without ever answering.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let mut config = ClientConfig::for_url(&url).unwrap();
    config.read_timeout = Duration::from_millis(300);
    let c = HttpCoordinator::new(&config).unwrap();
    let started = std::time::Instant::now();
    let e = c.job(&id()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        e,
        ClientError::Timeout {
            url: format!("{url}/v1/jobs/{ID}"),
            after: Duration::from_millis(300)
        }
    );
    assert!(e.may_have_committed());
    assert_eq!(aitbc_flow::exit::for_client(&e), aitbc_flow::exit::TIMEOUT);
}

#[tokio::test]
async fn api_key_is_sent_only_when_set() {
    let s = json_stub(200, &job_json("QUEUED")).await;
    let mut config = ClientConfig::for_url(&s.url).unwrap();
    config.api_key = Some(aitbc_flow::client::config::Secret::new("k-1"));
    HttpCoordinator::new(&config)
        .unwrap()
        .job(&id())
        .await
        .unwrap();
    let seen = s.seen.lock().unwrap();
    assert_eq!(seen[0].1["x-api-key"], "k-1");
    assert!(seen[0].1.get("authorization").is_none());
}

#[test]
fn debug_output_hides_secrets() {
    let mut config = ClientConfig::for_url("http://127.0.0.1:1")
        .unwrap()
        .with_token("SECRET-TOKEN");
    config.api_key = Some(aitbc_flow::client::config::Secret::new("SECRET-KEY"));
    let c = HttpCoordinator::new(&config).unwrap();
    let text = format!("{config:?} {c:?}");
    assert!(!text.contains("SECRET"), "{text}");
}

/// A server whose error answers never end and whose details carry terminal escapes: the client reads
/// as much as a message needs, classifies the answer by its status, and prints nothing raw.
#[tokio::test]
async fn an_endless_error_body_is_cut_and_its_escapes_are_not_printed() {
    let app = Router::new().fallback(|| async {
        let start = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(
                b"{\"detail\": \"\x1b[2J\x1b]0;pwned\x07 busy",
            ))
        });
        let rest = futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'x'; 64 * 1024]))
        });
        Response::builder()
            .status(503)
            .header("content-type", "application/json")
            .body(Body::from_stream(futures_util::StreamExt::chain(
                start, rest,
            )))
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let started = std::time::Instant::now();
    let e = client(&url).job(&id()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            e,
            ClientError::Unavailable {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(text.len() < 1000, "{} bytes", text.len());
}

#[tokio::test]
async fn a_limit_applies_to_ok_answers_naming_the_url_and_the_setting() {
    let big = format!(
        r#"{{"wallet_id": "w", "balance_ait": "1 AIT", "pad": "{}"}}"#,
        "x".repeat(4096)
    );
    let s = json_stub(200, &big).await;
    let mut config = ClientConfig::for_url(&s.url).unwrap();
    config.max_response = 2048;
    let e = HttpCoordinator::new(&config)
        .unwrap()
        .balance("w")
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ClientError::TooLarge {
            url: format!("{}/v1/wallets/w/balance", s.url),
            limit: 2048,
            declared: Some(big.len() as u64),
            setting: "AITBC_MAX_RESPONSE",
        }
    );
    assert!(!e.is_retryable());
    // A job read has the larger limit.
    let s = json_stub(200, &job_json("QUEUED")).await;
    let mut config = ClientConfig::for_url(&s.url).unwrap();
    config.max_response = 16;
    HttpCoordinator::new(&config)
        .unwrap()
        .job(&id())
        .await
        .unwrap();
}
