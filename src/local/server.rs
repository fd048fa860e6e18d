//! The HTTP routes, auth, and the three error body shapes of the real service: `{"detail": …}`, the 422
//! validation body, and `{"detail": "Not Found"}` for unknown routes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{
    AllocateRequest, Allocation, ErrorDetail, FieldError, JobCreate, JobResult, JobState,
    LedgerView, OPTIMIZATION_TARGETS, ReceiptList, RefundRequest, RefundResponse, ValidationError,
    ValidationErrorBody, WalletBalance, naive_now,
};

use super::Shared;
use super::faults::{FaultState, inject};
use super::jobs::{RefundError, SubmitError, Submitted, write_view};

type AppState = Arc<Shared>;

/// The router of every endpoint, with the rate limits and the fault layer when they are configured.
pub fn router(shared: Arc<Shared>, faults: &super::Faults) -> Router {
    let throttle = shared.throttle.clone();
    let app = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/receipt", get(receipt))
        .route("/v1/jobs/{id}/receipts", get(receipts))
        .route("/v1/jobs/{id}/payment", get(payment))
        .route("/v1/payments/{payment_id}/refund", post(refund))
        .route("/v1/agent-performance/resources/allocate", post(allocate))
        .route("/v1/marketplace/gpu/list", get(gpu_list))
        .route("/v1/wallets/{name}/balance", get(balance))
        .route("/v1/auth/nonce", post(auth_nonce))
        .route("/v1/login", post(login))
        .route("/v1/local/ledger", get(ledger))
        .route("/v1/local/limits", get(limits))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared);
    // The limits sit inside the faults: an injected fault is no request the service saw.
    let app = match throttle {
        None => app,
        Some(t) => app.layer(axum::middleware::from_fn_with_state(
            t,
            super::throttle::limit,
        )),
    };
    if faults.is_off() {
        app
    } else {
        app.layer(axum::middleware::from_fn_with_state(
            FaultState::new(faults.clone()),
            inject,
        ))
    }
}

// ---- Responses ----

/// A JSON response with a status.
fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
    }
}

/// Bytes that are already JSON, with a status.
fn raw_json(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// `{"detail": msg}` with a status.
pub fn detail(status: StatusCode, msg: &str) -> Response {
    json_response(
        status,
        &ErrorDetail {
            detail: msg.to_string(),
        },
    )
}

/// An error answer; already a complete response.
pub struct ApiError(Box<Response>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl ApiError {
    fn detail(status: StatusCode, msg: &str) -> ApiError {
        ApiError(Box::new(detail(status, msg)))
    }

    fn job_not_found() -> ApiError {
        ApiError::detail(StatusCode::NOT_FOUND, "job not found")
    }

    /// A 422 in the real service's shape.
    fn validation(details: Vec<FieldError>) -> ApiError {
        ApiError(Box::new(json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &ValidationErrorBody {
                error: ValidationError {
                    code: "VALIDATION_ERROR".into(),
                    message: "Request validation failed".into(),
                    status: 422,
                    details,
                },
                timestamp: Some(naive_now()),
                request_id: None,
            },
        )))
    }
}

fn field(field: &str, message: &str, code: &str) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
        code: code.into(),
    }
}

// ---- Extractors ----

/// The caller, authenticated as a client: its index.
pub struct Client(u32);

/// What a bearer token is.
enum Role {
    Client(u32),
    Miner,
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Role, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        let mut resp = detail(StatusCode::UNAUTHORIZED, "Authentication required");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(ApiError(Box::new(resp)));
    };
    let invalid = || ApiError::detail(StatusCode::UNAUTHORIZED, "Invalid token");
    let text = value.to_str().map_err(|_| invalid())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid());
    }
    let token = token.trim();
    if let Some(&idx) = shared.tokens.get(token) {
        return Ok(Role::Client(idx));
    }
    // A session token from a wallet login: the wallet is the client.
    if let Some(sub) = shared
        .logins
        .verify(token, chrono::Utc::now().timestamp())
        .and_then(|c| c.sub)
    {
        return Ok(Role::Client(
            shared.intern_client(super::wallet_client_id(&sub)),
        ));
    }
    if token.starts_with("miner-") && token.len() > "miner-".len() {
        return Ok(Role::Miner);
    }
    Err(invalid())
}

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(state, &parts.headers)? {
            Role::Client(idx) => Ok(Client(idx)),
            Role::Miner => Err(ApiError::detail(StatusCode::FORBIDDEN, "Forbidden")),
        }
    }
}

/// Any valid token, of any role (the allocation endpoint).
pub struct AnyRole;

impl FromRequestParts<AppState> for AnyRole {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(state, &parts.headers).map(|_| AnyRole)
    }
}

/// A JSON body whose errors come back as the real service's 422 shape (axum's own are plain text).
pub struct JsonBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::validation(vec![field("body", &e.body_text(), "body_error")]))?;
        parse_body(&bytes).map(JsonBody)
    }
}

fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let err = match parsed {
        Ok(v) => match de.end() {
            Ok(()) => return Ok(v),
            Err(e) => {
                return Err(ApiError::validation(vec![field(
                    "body",
                    &format!("JSON decode error: {}", strip_position(&e.to_string())),
                    "json_invalid",
                )]));
            }
        },
        Err(e) => e,
    };
    let inner = err.inner();
    if matches!(
        inner.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof
    ) {
        return Err(ApiError::validation(vec![field(
            "body",
            &format!("JSON decode error: {}", strip_position(&inner.to_string())),
            "json_invalid",
        )]));
    }
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = strip_position(&inner.to_string());
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or("");
        let full = if path.is_empty() {
            format!("body.{name}")
        } else {
            format!("body.{path}.{name}")
        };
        return Err(ApiError::validation(vec![field(
            &full,
            "Field required",
            "missing",
        )]));
    }
    let last = path.rsplit('.').next().unwrap_or("");
    let (msg, code) = match last {
        "payment_amount" => (
            "Input should be a valid decimal".to_string(),
            "decimal_parsing",
        ),
        "ttl_seconds" => ("Input should be a valid integer".to_string(), "int_parsing"),
        "payload" | "constraints" | "task_requirements" => (
            "Input should be a valid dictionary".to_string(),
            "dict_type",
        ),
        _ => (message, "value_error"),
    };
    let full = if path.is_empty() {
        "body".to_string()
    } else {
        format!("body.{path}")
    };
    Err(ApiError::validation(vec![field(&full, &msg, code)]))
}

/// serde_json's messages end with " at line 1 column 30": not useful to an API client.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

// ---- Jobs ----

async fn submit(
    State(shared): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonBody(req): JsonBody<JobCreate>,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::validation(vec![field(
                "header.idempotency-key",
                "Idempotency-Key must be visible ASCII",
                "string_type",
            )])
        })?),
        None => None,
    };
    let outcome = shared.submit(client, req, key).map_err(|e| match e {
        SubmitError::Insufficient {
            wallet,
            held,
            needed,
        } => ApiError::detail(
            StatusCode::PAYMENT_REQUIRED,
            &format!(
                "insufficient balance: wallet {wallet} holds {held} AITBC, job needs {needed}"
            ),
        ),
    })?;
    let (pos, status) = match outcome {
        Submitted::Created(pos) => (pos, StatusCode::CREATED),
        Submitted::Existing(pos) => (pos, StatusCode::OK),
    };
    let mut body = Vec::with_capacity(768);
    {
        let core = shared.lock();
        write_view(&core.jobs[pos as usize], &mut body);
    }
    if status == StatusCode::CREATED {
        shared.start(pos);
    }
    shared.sync().await;
    Ok(raw_json(status, body))
}

/// Runs `f` on a job the client may see, after lazy expiry.
fn with_job<R>(
    shared: &Shared,
    client: u32,
    id: &str,
    f: impl FnOnce(&Shared, &mut super::store::Core, u32) -> R,
) -> Result<R, ApiError> {
    let mut core = shared.lock();
    let pos = core.find(id, client).ok_or_else(ApiError::job_not_found)?;
    shared.expire_if_due(&mut core, pos);
    Ok(f(shared, &mut core, pos))
}

async fn get_job(
    State(shared): State<AppState>,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let body = with_job(&shared, client, &id, |_, core, pos| {
        let mut body = Vec::with_capacity(768);
        write_view(&core.jobs[pos as usize], &mut body);
        body
    })?;
    Ok(raw_json(StatusCode::OK, body))
}

async fn result(
    State(shared): State<AppState>,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let out = with_job(&shared, client, &id, |s, core, pos| {
        let job = &core.jobs[pos as usize];
        (job.state == JobState::Completed).then(|| JobResult {
            result: job
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null),
            receipt: s.receipt(job),
        })
    })?;
    match out {
        Some(r) => Ok(json_response(StatusCode::OK, &r)),
        None => Err(ApiError::detail(StatusCode::TOO_EARLY, "job not ready")),
    }
}

async fn cancel(
    State(shared): State<AppState>,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let view = with_job(&shared, client, &id, |s, core, pos| {
        s.cancel(core, pos).then(|| {
            let mut body = Vec::with_capacity(768);
            write_view(&core.jobs[pos as usize], &mut body);
            body
        })
    })?;
    match view {
        Some(body) => {
            shared.sync().await;
            Ok(raw_json(StatusCode::OK, body))
        }
        None => Err(ApiError::detail(StatusCode::CONFLICT, "job not cancelable")),
    }
}

fn query_map(q: Result<Query<HashMap<String, String>>, QueryRejection>) -> HashMap<String, String> {
    q.map(|Query(m)| m).unwrap_or_default()
}

fn query_int(q: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| {
            ApiError::validation(vec![field(
                &format!("query.{name}"),
                "Input should be a valid integer, unable to parse string as an integer",
                "int_parsing",
            )])
        }),
    }
}

async fn list(
    State(shared): State<AppState>,
    Client(client): Client,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_map(q);
    let limit = query_int(&q, "limit", 20)?;
    let offset = query_int(&q, "offset", 0)?;
    // An unknown status (CANCELLED with two Ls, say) is ignored, as on the real service.
    let status = q.get("status").and_then(|s| JobState::parse(s));
    let job_type = q.get("job_type").filter(|t| !t.is_empty());
    let mut core = shared.lock();
    // `{"items": [JobView…], "total": n, "limit": l, "offset": o}` (the shape of `JobList`), written
    // directly like a single job's view.
    let mut body = Vec::with_capacity(64 + 768 * limit.min(1000) as usize);
    body.extend_from_slice(b"{\"items\":[");
    let mut count = 0u64;
    let mut skipped = 0u64;
    for pos in (0..core.jobs.len() as u32).rev() {
        if count >= limit {
            break;
        }
        if core.jobs[pos as usize].owner != client {
            continue;
        }
        shared.expire_if_due(&mut core, pos);
        let job = &core.jobs[pos as usize];
        if status.is_some_and(|s| job.state != s)
            || job_type.is_some_and(|t| !Shared::has_type(job, t))
        {
            continue;
        }
        if skipped < offset {
            skipped += 1;
            continue;
        }
        if count > 0 {
            body.push(b',');
        }
        write_view(job, &mut body);
        count += 1;
    }
    drop(core);
    body.extend_from_slice(
        format!("],\"total\":{count},\"limit\":{limit},\"offset\":{offset}}}").as_bytes(),
    );
    Ok(raw_json(StatusCode::OK, body))
}

async fn receipt(
    State(shared): State<AppState>,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = with_job(&shared, client, &id, |s, core, pos| {
        s.receipt(&core.jobs[pos as usize])
    })?;
    match r {
        Some(r) => Ok(json_response(StatusCode::OK, &r)),
        None => Err(ApiError::detail(
            StatusCode::NOT_FOUND,
            "receipt not available",
        )),
    }
}

async fn receipts(
    State(shared): State<AppState>,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // The real service answers 500 for an unknown or foreign job here; the local one says 404.
    let items = with_job(&shared, client, &id, |s, core, pos| {
        s.receipt(&core.jobs[pos as usize]).into_iter().collect()
    })?;
    Ok(json_response(StatusCode::OK, &ReceiptList { items }))
}

// ---- Payments ----

async fn payment(
    State(shared): State<AppState>,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let p = with_job(&shared, client, &id, |s, core, pos| {
        s.payment_view(&core.jobs[pos as usize])
    })?;
    match p {
        Some(p) => Ok(json_response(StatusCode::OK, &p)),
        None => Err(ApiError::detail(
            StatusCode::NOT_FOUND,
            "Payment not found for this job",
        )),
    }
}

async fn refund(
    State(shared): State<AppState>,
    Client(client): Client,
    Path(payment_id): Path<String>,
    JsonBody(req): JsonBody<RefundRequest>,
) -> Result<Response, ApiError> {
    if req.payment_id != payment_id {
        return Err(ApiError::detail(
            StatusCode::BAD_REQUEST,
            "Failed to refund payment",
        ));
    }
    match shared.refund(client, &req.job_id, &payment_id) {
        Ok(()) => Ok(json_response(
            StatusCode::OK,
            &RefundResponse {
                status: "refunded".into(),
                payment_id,
            },
        )),
        Err(RefundError::NotFound) => {
            Err(ApiError::detail(StatusCode::NOT_FOUND, "Payment not found"))
        }
        Err(RefundError::Refused) => Err(ApiError::detail(
            StatusCode::BAD_REQUEST,
            "Failed to refund payment",
        )),
    }
}

// ---- Wallet login ----

async fn auth_nonce(
    State(shared): State<AppState>,
    JsonBody(req): JsonBody<crate::auth::NonceRequest>,
) -> Result<Response, ApiError> {
    let now = chrono::Utc::now().timestamp();
    let (nonce, expires_at) = shared
        .logins
        .nonce(&req.wallet_address, now)
        .map_err(refused)?;
    Ok(json_response(
        StatusCode::OK,
        &crate::auth::NonceResponse {
            wallet_address: req.wallet_address,
            nonce,
            expires_at: Some(expires_at),
        },
    ))
}

fn refused(r: super::login::LoginRefused) -> ApiError {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    ApiError::detail(status, r.detail())
}

async fn login(
    State(shared): State<AppState>,
    JsonBody(req): JsonBody<crate::auth::LoginRequest>,
) -> Result<Response, ApiError> {
    let now = chrono::Utc::now().timestamp();
    let (token, address) = shared
        .logins
        .login(&req.wallet_address, &req.nonce, &req.signature, now)
        .map_err(refused)?;
    let user = super::wallet_client_id(&address);
    shared.intern_client(user.clone());
    let mut extra = serde_json::Map::new();
    extra.insert("email".into(), json!(format!("{address}@aitbc.local")));
    extra.insert(
        "username".into(),
        json!(format!("user_{}", &address[address.len() - 8..])),
    );
    extra.insert("created_at".into(), json!(naive_now()));
    Ok(json_response(
        StatusCode::OK,
        &crate::auth::LoginResponse {
            user_id: Some(user),
            session_token: Some(token),
            extra,
        },
    ))
}

// ---- Allocation, GPUs, wallets ----

async fn allocate(
    AnyRole: AnyRole,
    JsonBody(req): JsonBody<AllocateRequest>,
) -> Result<Response, ApiError> {
    if !OPTIMIZATION_TARGETS.contains(&req.optimization_target.as_str()) {
        let expected = OPTIMIZATION_TARGETS
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::validation(vec![field(
            "body.optimization_target",
            &format!("Input should be {expected}"),
            "enum",
        )]));
    }
    // Like the real service: sized from the task type alone, whatever numbers were asked for.
    let (cpu, mem, gpu, gpu_mem, storage, net) = match req.task_requirements.task_type.as_str() {
        "training" => (8.0, 32.0, 1.0, 24.0, 200.0, 1000.0),
        "multimodal" => (6.0, 16.0, 1.0, 16.0, 100.0, 500.0),
        "inference" | "ollama" | "streaming" => (4.0, 8.0, 0.5, 0.0, 50.0, 200.0),
        _ => (2.0, 4.0, 0.0, 0.0, 20.0, 100.0),
    };
    let alloc = Allocation {
        allocation_id: format!("alloc_{}", hex::encode(rand::random::<[u8; 4]>())),
        agent_id: req.agent_id,
        cpu_cores: cpu,
        memory_gb: mem,
        gpu_count: gpu,
        gpu_memory_gb: gpu_mem,
        storage_gb: storage,
        network_bandwidth: net,
        optimization_target: req.optimization_target,
        status: "allocated".into(),
        allocated_at: Some(naive_now()),
        extra: Default::default(),
    };
    Ok(json_response(StatusCode::OK, &alloc))
}

async fn gpu_list(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_map(q);
    let limit = query_int(&q, "limit", 100)?;
    if limit > 500 {
        return Err(ApiError::validation(vec![field(
            "query.limit",
            "Input should be less than or equal to 500",
            "less_than_equal",
        )]));
    }
    let offers = [
        ("gpu_local_4090", "RTX 4090", 24.0, "12.4", "0.50000000"),
        ("gpu_local_a100", "A100", 80.0, "12.2", "2.10000000"),
        ("gpu_local_3090", "RTX 3090", 24.0, "12.1", "0.35000000"),
    ];
    // Built as JSON rather than `GpuOffer`: the wire carries `price_per_hour` as a decimal string.
    let list: Vec<Value> = offers
        .iter()
        .take(limit as usize)
        .map(|(id, model, mem, cuda, price)| {
            json!({
                "id": id, "miner_id": "miner-local", "model": model, "memory_gb": mem,
                "cuda_version": cuda, "region": "local", "price_per_hour": price,
                "status": "available", "capabilities": ["inference", "training", "multimodal"],
                "created_at": "2026-01-01T00:00:00Z", "average_rating": 4.8, "total_reviews": 12,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &list))
}

async fn balance(State(shared): State<AppState>, Path(name): Path<String>) -> Response {
    let (name, balance) = {
        let mut core = shared.lock();
        // A wallet's address stands for the wallet, as it does for a submit's `buyer_address`.
        let name = core.ledger.payer(&name).to_string();
        let (b, created) = core.ledger.touch(&name);
        if created {
            shared.save_wallet(&core, &name);
        }
        (name, b)
    };
    let address = super::ledger::address_of(&name);
    json_response(
        StatusCode::OK,
        // As the upstream wallet daemon answers: `balance` in compute-seconds, `balance_ait` as "N AIT".
        &WalletBalance {
            chain_id: Some("aitbc-local".into()),
            ..WalletBalance::in_aitbc(name, Some(address), balance)
        },
    )
}

async fn ledger(State(shared): State<AppState>) -> Response {
    let view = {
        let core = shared.lock();
        LedgerView {
            wallets: core
                .ledger
                .wallets()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<BTreeMap<_, _>>(),
            escrow: core.ledger.escrowed(),
            minted: core.ledger.minted(),
            jobs: core.jobs.len() as u64,
        }
    };
    json_response(StatusCode::OK, &view)
}

/// Local only: the rate limits in force and how many requests they refused (tests assert 0).
async fn limits(State(shared): State<AppState>) -> Response {
    let body = match &shared.throttle {
        Some(t) => {
            let admitted = t.admitted();
            json!({
                "limits": t.limits().to_string(),
                "refused": t.refused(),
                "admitted": admitted.iter().map(|(e, (n, _))| (e.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "most_in_a_window": admitted.iter().map(|(e, (_, m))| (e.clone(), json!(m))).collect::<serde_json::Map<_, _>>(),
            })
        }
        None => json!({"limits": "off", "refused": 0}),
    };
    json_response(StatusCode::OK, &body)
}

async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

async fn method_not_allowed() -> Response {
    detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}
