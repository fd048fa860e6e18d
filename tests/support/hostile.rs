//! A scripted hostile coordinator for the end-to-end tests: it speaks enough of the API for a plan to
//! run (submit, job reads, results with signed receipts, lists, cancel, payment, refund, balance) and
//! misbehaves in the one way its [`Scenario`] says. It serves on 127.0.0.1:0 from its own runtime, so a
//! test drives the real binary against it synchronously; it records every request it gets.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

/// What the answer of a COMPLETED job's result endpoint is.
#[derive(Clone, Copy, Debug)]
pub enum BrokenResult {
    /// 425 `{"detail": "job not ready"}`, every time.
    NotReady,
    /// 200 with an HTML page.
    Html,
    /// 200 with JSON cut short.
    BrokenJson,
}

/// How the server misbehaves.
#[derive(Clone, Debug)]
pub enum Scenario {
    /// Not at all.
    Honest,
    /// Requests whose path starts with this answer 200 with a chunked body that never ends.
    EndlessBody(&'static str),
    /// Requests whose path starts with this answer 200 declaring a 2 GiB body.
    HugeBody(&'static str),
    /// The result's output is changed; the genuine receipt (which signs the genuine result) is kept.
    TamperedResult,
    /// A job read answers with another job's view (same state, another `job_id`).
    OtherJobId,
    /// `POST /v1/jobs` answers this status (307, 301, …) pointing at the other listener, on another
    /// port, or — with `same_origin` — at another path here.
    RedirectSubmit { status: u16, same_origin: bool },
    /// `GET /v1/jobs/{id}` answers 307 to another port.
    RedirectRead,
    /// `GET /v1/jobs/{id}` answers 307 to `/v2/jobs/{id}` here, which serves the job.
    RedirectReadSameOrigin,
    /// Requests of this method whose path starts with `path` answer 429 with this `Retry-After`, the
    /// first `times` times (`u32::MAX`: always).
    RetryAfter {
        method: &'static str,
        path: &'static str,
        secs: u64,
        times: u32,
    },
    /// The result endpoint of a COMPLETED job answers this.
    ResultBroken(BrokenResult),
    /// `POST /v1/jobs` answers this status with the secret in the error's detail.
    EchoSecret { status: u16, secret: String },
    /// Jobs never finish (stay RUNNING); the first `failing_submits` submits answer 503.
    NeverFinishes { failing_submits: u32 },
    /// Every request is refused: 401 `{"detail": "Invalid token"}`.
    RefusesToken,
    /// Jobs never finish, and from the first cancel on, the coordinator is down (every request 503).
    DownOnCancel,
}

/// A request the server got.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `METHOD /path?query`.
    pub line: String,
    /// When, since the server started.
    pub at: Duration,
}

/// The server's state.
pub struct Script {
    pub scenario: Scenario,
    pub seen: Mutex<Vec<Seen>>,
    /// Jobs by id: their payload.
    jobs: Mutex<HashMap<String, Value>>,
    next: AtomicU64,
    key: ed25519_dalek::SigningKey,
    started: Instant,
    /// The other listener's URL (a redirect target on another port).
    pub elsewhere: String,
    down: std::sync::atomic::AtomicBool,
    limited: AtomicU64,
}

/// A running hostile coordinator and a second listener on another port that records what reaches it.
pub struct Hostile {
    pub url: String,
    pub script: Arc<Script>,
    /// What reached the other listener.
    pub elsewhere_seen: Arc<Mutex<Vec<String>>>,
    rt: tokio::runtime::Runtime,
}

/// The output a genuine provider posted.
pub const GENUINE: &str = "the genuine answer";
/// What the tampering server serves instead.
pub const TAMPERED: &str = "TAMPERED answer";
/// The token the tests send.
pub const TOKEN: &str = "hostile-token";

impl Hostile {
    /// Starts the server with a scenario.
    pub fn start(scenario: Scenario) -> Hostile {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let elsewhere_seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (url, script) = rt.block_on(async {
            // The other listener answers anything as a coordinator would (201 with a job), so that a
            // client that followed a redirect there would seem to succeed.
            let seen = elsewhere_seen.clone();
            let other = Router::new().fallback(move |req: Request<Body>| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .push(format!("{} {}", req.method(), req.uri()));
                    json_response(
                        201,
                        json!({"job_id": "0".repeat(32), "state": "QUEUED", "payload": {}}),
                    )
                }
            });
            let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let elsewhere = format!("http://{}", l2.local_addr().unwrap());
            tokio::spawn(async move {
                let _ = axum::serve(l2, other).await;
            });

            let script = Arc::new(Script {
                scenario,
                seen: Mutex::default(),
                jobs: Mutex::default(),
                next: AtomicU64::new(1),
                key: ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
                started: Instant::now(),
                elsewhere,
                down: Default::default(),
                limited: AtomicU64::new(0),
            });
            let app = Router::new().fallback(handle).with_state(script.clone());
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", l.local_addr().unwrap());
            tokio::spawn(async move {
                let _ = axum::serve(l, app).await;
            });
            (url, script)
        });
        Hostile {
            url,
            script,
            elsewhere_seen,
            rt,
        }
    }

    /// The requests seen, as `METHOD /path?query`.
    pub fn lines(&self) -> Vec<String> {
        self.script
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.line.clone())
            .collect()
    }

    /// The requests seen with their times.
    pub fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    /// A command of the binary aimed at this server (token set, unpaced).
    pub fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-flow"));
        c.env("AITBC_COORDINATOR_URL", &self.url)
            .env("AITBC_TOKEN", TOKEN)
            .env("AITBC_RATE_LIMIT", "off")
            .env_remove("AITBC_WALLET_URL")
            .env_remove("AITBC_TOKEN_FILE");
        c
    }
}

fn json_response(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn raw(status: u16, content_type: &str, body: impl Into<Body>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

fn redirect(status: u16, location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("location", location)
        .body(Body::empty())
        .unwrap()
}

/// A body that never ends: the start of a JSON string, then digits forever.
fn endless() -> Body {
    let start = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(Bytes::from_static(br#"{"balance_ait": ""#))
    });
    let rest = futures_util::stream::repeat_with(|| {
        Ok::<_, std::io::Error>(Bytes::from(vec![b'9'; 64 * 1024]))
    });
    Body::from_stream(futures_util::StreamExt::chain(start, rest))
}

fn genuine_result() -> Value {
    json!({"status": "completed", "output": GENUINE, "execution_time": 0.1, "gpu_used": "RTX 4090",
           "model": "llama2", "tokens_processed": 3})
}

impl Script {
    fn view(&self, id: &str, state: &str) -> Value {
        let payload = self
            .jobs
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_else(|| json!({"type": "inference"}));
        let result = (state == "COMPLETED").then(genuine_result);
        json!({"job_id": id, "state": state, "assigned_miner_id": "miner-h",
               "requested_at": "2026-11-25T07:33:46.129984", "expires_at": "2026-11-25T07:48:46.129984",
               "error": null, "payment_id": format!("p-{id}"), "payment_status": "escrowed",
               "payload": payload, "result": result})
    }

    fn receipt(&self, id: &str) -> Value {
        let payload = self
            .jobs
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default();
        let mut r = json!({"version": "1.0", "receipt_id": format!("r-{id}"), "job_id": id,
            "provider": "miner-h", "client": "client-1", "status": "COMPLETED", "units": 0.1,
            "unit_type": "gpu_seconds", "unit_price": 0.02, "price": 0.002,
            "started_at": 1795592033, "completed_at": 1795592033,
            "metadata": {"job_payload": payload, "job_constraints": {}, "result": genuine_result(),
                         "metrics": {"duration_ms": 100}}});
        aitbc_flow::api::sign_receipt(&mut r, &self.key);
        r.as_object_mut().unwrap().extend([
            ("zk_status".to_string(), json!("not_required")),
            ("tee_status".to_string(), json!("not_required")),
        ]);
        r
    }

    fn state_of(&self) -> &'static str {
        match self.scenario {
            Scenario::NeverFinishes { .. } | Scenario::DownOnCancel => "RUNNING",
            _ => "COMPLETED",
        }
    }
}

async fn handle(State(s): State<Arc<Script>>, req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = uri.path().to_string();
    s.seen.lock().unwrap().push(Seen {
        line: format!("{method} {uri}"),
        at: s.started.elapsed(),
    });
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    if s.down.load(Ordering::SeqCst) {
        return json_response(503, json!({"detail": "Service Unavailable"}));
    }
    match &s.scenario {
        Scenario::EndlessBody(prefix) if path.starts_with(prefix) => {
            return raw(200, "application/json", endless());
        }
        Scenario::HugeBody(prefix) if path.starts_with(prefix) => {
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("content-length", (2u64 << 30).to_string())
                .body(endless())
                .unwrap();
        }
        Scenario::RefusesToken => {
            return json_response(401, json!({"detail": "Invalid token"}));
        }
        Scenario::NeverFinishes { failing_submits }
            if method == Method::POST
                && path == "/v1/jobs"
                && s.limited.fetch_add(1, Ordering::SeqCst) < u64::from(*failing_submits) =>
        {
            return json_response(503, json!({"detail": "Service Unavailable"}));
        }
        Scenario::RetryAfter {
            method: m,
            path: p,
            secs,
            times,
        } if method.as_str() == *m && path.starts_with(p) => {
            let n = s.limited.fetch_add(1, Ordering::SeqCst);
            if n < u64::from(*times) {
                return Response::builder()
                    .status(429)
                    .header("content-type", "application/json")
                    .header("retry-after", secs.to_string())
                    .body(Body::from(r#"{"detail": "Rate limit exceeded"}"#))
                    .unwrap();
            }
        }
        _ => {}
    }

    match (method.clone(), segs.as_slice()) {
        (Method::POST, ["v1", "jobs"]) => {
            match &s.scenario {
                Scenario::RedirectSubmit {
                    status,
                    same_origin,
                } => {
                    let to = if *same_origin {
                        "/v1/jobs-moved".to_string()
                    } else {
                        format!("{}/v1/jobs", s.elsewhere)
                    };
                    return redirect(*status, &to);
                }
                Scenario::EchoSecret { status, secret } => {
                    return if *status == 422 {
                        json_response(
                            422,
                            json!({"error": {"code": "VALIDATION_ERROR", "message": "Request validation failed",
                                   "status": 422, "details": [{"field": "body.payload.prompt",
                                   "message": format!("unexpected value `{secret}`"), "code": "value_error"}]},
                                   "timestamp": "2026-11-25T07:00:00", "request_id": null}),
                        )
                    } else {
                        json_response(
                            *status,
                            json!({"error": {"type": "internal_error",
                                   "message": format!("cannot parse token={secret}"), "status_code": status,
                                   "path": "/v1/jobs"}}),
                        )
                    };
                }
                _ => {}
            }
            let job: Value = serde_json::from_slice(&body).unwrap_or_default();
            let n = s.next.fetch_add(1, Ordering::SeqCst);
            let id = format!("{:032x}", 0xabc0_0000_0000u64 + n);
            s.jobs
                .lock()
                .unwrap()
                .insert(id.clone(), job["payload"].clone());
            json_response(201, s.view(&id, "QUEUED"))
        }
        (Method::GET, ["v1", "jobs"]) => json_response(
            200,
            json!({"items": [], "total": 0, "limit": 1, "offset": 0}),
        ),
        (Method::GET, ["v1", "jobs", id]) | (Method::GET, ["v2", "jobs", id]) => {
            match &s.scenario {
                Scenario::OtherJobId => {
                    let mut v = s.view(id, s.state_of());
                    v["job_id"] = json!(format!("{:032x}", 0xdead_0000u64));
                    json_response(200, v)
                }
                Scenario::RedirectRead if segs[0] == "v1" => {
                    redirect(307, &format!("{}/v1/jobs/{id}", s.elsewhere))
                }
                Scenario::RedirectReadSameOrigin if segs[0] == "v1" => {
                    redirect(307, &format!("/v2/jobs/{id}"))
                }
                _ => json_response(200, s.view(id, s.state_of())),
            }
        }
        (Method::GET, ["v1", "jobs", id, "result"]) => match &s.scenario {
            Scenario::ResultBroken(BrokenResult::NotReady) => {
                json_response(425, json!({"detail": "job not ready"}))
            }
            Scenario::ResultBroken(BrokenResult::Html) => raw(
                200,
                "text/html",
                "<html><body><h1>Welcome to nginx!</h1></body></html>",
            ),
            Scenario::ResultBroken(BrokenResult::BrokenJson) => raw(
                200,
                "application/json",
                r#"{"result": {"status": "completed", "output": "the gen"#,
            ),
            Scenario::TamperedResult => {
                let mut result = genuine_result();
                result["output"] = json!(TAMPERED);
                json_response(200, json!({"result": result, "receipt": s.receipt(id)}))
            }
            _ if s.state_of() != "COMPLETED" => {
                json_response(425, json!({"detail": "job not ready"}))
            }
            _ => json_response(
                200,
                json!({"result": genuine_result(), "receipt": s.receipt(id)}),
            ),
        },
        (Method::POST, ["v1", "jobs", id, "cancel"]) => {
            if matches!(s.scenario, Scenario::DownOnCancel) {
                s.down.store(true, Ordering::SeqCst);
                return json_response(503, json!({"detail": "Service Unavailable"}));
            }
            let mut v = s.view(id, "CANCELED");
            v["error"] = json!("canceled by client");
            json_response(200, v)
        }
        (Method::GET, ["v1", "jobs", id, "payment"]) => json_response(
            200,
            json!({"job_id": id, "payment_id": format!("p-{id}"), "amount": "2", "currency": "AITBC",
                   "status": "refunded"}),
        ),
        (Method::POST, ["v1", "payments", pid, "refund"]) => {
            json_response(200, json!({"status": "refunded", "payment_id": pid}))
        }
        (Method::GET, ["v1", "wallets", w, "balance"]) => json_response(
            200,
            json!({"wallet_id": w, "address": "0x00000000000000000000000000000000000abc01", "balance": 3_600_000, "balance_ait": "1000 AIT",
                   "chain_id": "c"}),
        ),
        _ => json_response(404, json!({"detail": "Not Found"})),
    }
}

/// The largest resident set of any child process this test process has waited for, in KiB.
pub fn max_child_rss_kib() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss
}
