//! The coordinator's wire format (see `aitbc-api.md`): the JSON shapes shared by the HTTP client and the
//! embedded coordinator, the job states, and the receipt's canonical form and signature check.
//!
//! Every view type tolerates unknown fields (the real service adds fields over time) and keeps them in
//! `extra`, so what we read is what we can write back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::money::Money;

/// The `Serialize` and `Deserialize` of a type declared `#[serde(remote = "Self")]` whose unknown
/// fields are flattened into `extra`: written as derived, read with the named amounts taken from
/// their numbers' text first (a flattened object's buffer would hold a number as an `f64`; see
/// `money::object_with_exact_amounts`).
macro_rules! with_exact_amounts {
    ($t:ty, $($amount:literal),+) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = crate::money::object_with_exact_amounts(d, &[$($amount),+])?;
                <$t>::deserialize(v).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The six job types the operator skill defines; anything else is refused before it is sent.
pub const JOB_TYPES: [&str; 6] = [
    "inference",
    "training",
    "multimodal",
    "ollama",
    "streaming",
    "monitoring",
];

/// The only currency the runner sends. (The skill documents say "AIT"; the service wants "AITBC".)
pub const CURRENCY: &str = "AITBC";

/// A coordinator job id: 32 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// A fresh random id.
    pub fn random() -> JobId {
        JobId(hex::encode(rand::random::<[u8; 16]>()))
    }
}

impl FromStr for JobId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(JobId(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a job id (expected 32 lowercase hex characters)"
            ))
        }
    }
}
impl TryFrom<String> for JobId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}
impl From<JobId> for String {
    fn from(j: JobId) -> String {
        j.0
    }
}
impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's state as the coordinator spells it (`CANCELED` with one L).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker has it.
    Running,
    /// A result was posted (which may still say `status: failed`).
    Completed,
    /// The worker reported a failure.
    Failed,
    /// Cancelled by the client.
    Canceled,
    /// Past `expires_at` before it finished.
    Expired,
}

impl JobState {
    /// True for the states a job never leaves.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Canceled => "CANCELED",
            JobState::Expired => "EXPIRED",
        }
    }
    /// Parses the wire spelling; `None` for anything else (the list filter ignores unknown states).
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "QUEUED" => JobState::Queued,
            "RUNNING" => JobState::Running,
            "COMPLETED" => JobState::Completed,
            "FAILED" => JobState::Failed,
            "CANCELED" => JobState::Canceled,
            "EXPIRED" => JobState::Expired,
            _ => return None,
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/jobs` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobCreate {
    /// `type`, `prompt`, `model`, `client_ref` and any other keys; all are kept.
    pub payload: Map<String, Value>,
    /// Placement constraints (gpu, cuda, min_vram_gb, models, max_price, region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Map<String, Value>>,
    /// Seconds until the job expires (the service's default is 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// What the job pays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_amount: Option<Money>,
    /// `AITBC` (the runner never sends anything else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_currency: Option<String>,
    /// The paying wallet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_address: Option<String>,
    /// A chosen provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_address: Option<String>,
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// 32 hex characters.
    pub job_id: JobId,
    /// The state.
    pub state: JobState,
    /// The miner that claimed it.
    #[serde(default)]
    pub assigned_miner_id: Option<String>,
    /// Naive ISO-8601 (UTC) time of the submission.
    #[serde(default)]
    pub requested_at: Option<String>,
    /// Naive ISO-8601 (UTC) time of expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Why the job ended badly (`"job expired"`).
    #[serde(default)]
    pub error: Option<String>,
    /// The payment's id, when one was made.
    #[serde(default)]
    pub payment_id: Option<String>,
    /// `escrowed`, `pending`, `released`, `refunded`, `skipped`, or null.
    #[serde(default)]
    pub payment_status: Option<String>,
    /// The payload as submitted.
    #[serde(default)]
    pub payload: Map<String, Value>,
    /// The provider's result, once posted.
    #[serde(default)]
    pub result: Option<Value>,
    /// Fields we do not model (zk_status, tee_status, reinvest_*, …), kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl JobView {
    /// The `type` in the payload.
    pub fn job_type(&self) -> Option<&str> {
        self.payload.get("type").and_then(Value::as_str)
    }
    /// The `client_ref` in the payload, which the runner uses to find a job whose response was lost.
    pub fn client_ref(&self) -> Option<&str> {
        self.payload.get("client_ref").and_then(Value::as_str)
    }
    /// A job that succeeded: COMPLETED and its result does not say `status: failed`.
    pub fn succeeded(&self) -> bool {
        self.state == JobState::Completed && !result_failed(self.result.as_ref())
    }
}

/// True when a posted result reports failure (`{"status": "failed", "error": …}`).
pub fn result_failed(result: Option<&Value>) -> bool {
    result
        .and_then(|r| r.get("status"))
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("failed"))
}

/// `GET /v1/jobs` answer. `total` is the page size, not a grand total (a quirk of the real service).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    /// Newest first.
    pub items: Vec<JobView>,
    /// The number of items on this page.
    pub total: u64,
    /// The limit asked for.
    #[serde(default)]
    pub limit: u64,
    /// The offset asked for.
    #[serde(default)]
    pub offset: u64,
}

/// Filters of `GET /v1/jobs`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Page size (the service's default is 20).
    pub limit: Option<u64>,
    /// Items to skip.
    pub offset: Option<u64>,
    /// A state; an unknown one is ignored by the service.
    pub status: Option<String>,
    /// A job type.
    pub job_type: Option<String>,
}

/// `GET /v1/jobs/{id}/result` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// What the provider posted.
    pub result: Value,
    /// The signed receipt, when there is one.
    #[serde(default)]
    pub receipt: Option<Value>,
}

/// `GET /v1/jobs/{id}/receipts` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptList {
    /// Receipts, oldest first.
    pub items: Vec<Value>,
}

/// `task_requirements` of an allocation request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRequirements {
    /// CPU cores asked for.
    pub cpu_cores: f64,
    /// Memory in GB.
    pub memory_gb: f64,
    /// GPUs.
    pub gpu_count: f64,
    /// GPU memory in GB.
    #[serde(default)]
    pub gpu_memory_gb: f64,
    /// Storage in GB.
    #[serde(default)]
    pub storage_gb: f64,
    /// Network bandwidth in Mbit/s.
    #[serde(default)]
    pub network_bandwidth: f64,
    /// The job type it is for.
    #[serde(default)]
    pub task_type: String,
}

/// `POST /v1/agent-performance/resources/allocate` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocateRequest {
    /// The agent the resources are for.
    pub agent_id: String,
    /// What is asked for.
    pub task_requirements: TaskRequirements,
    /// `speed | accuracy | efficiency | cost | scalability | reliability`.
    pub optimization_target: String,
    /// `low | normal | high | critical`.
    #[serde(default = "default_priority")]
    pub priority_level: String,
}

fn default_priority() -> String {
    "normal".into()
}

/// The valid `optimization_target` values (anything else is a 422).
pub const OPTIMIZATION_TARGETS: [&str; 6] = [
    "speed",
    "accuracy",
    "efficiency",
    "cost",
    "scalability",
    "reliability",
];

/// An allocation as the coordinator granted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// `alloc_…`.
    pub allocation_id: String,
    /// The agent.
    pub agent_id: String,
    /// Granted cores.
    pub cpu_cores: f64,
    /// Granted memory.
    pub memory_gb: f64,
    /// Granted GPUs.
    pub gpu_count: f64,
    /// Granted GPU memory.
    #[serde(default)]
    pub gpu_memory_gb: f64,
    /// Granted storage.
    #[serde(default)]
    pub storage_gb: f64,
    /// Granted bandwidth.
    #[serde(default)]
    pub network_bandwidth: f64,
    /// The target asked for.
    pub optimization_target: String,
    /// `allocated`.
    pub status: String,
    /// Naive ISO time.
    #[serde(default)]
    pub allocated_at: Option<String>,
    /// Anything else the service sends.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A GPU offer from `GET /v1/marketplace/gpu/list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct GpuOffer {
    /// Offer id.
    pub id: String,
    /// The miner offering it.
    #[serde(default)]
    pub miner_id: Option<String>,
    /// GPU model.
    #[serde(default)]
    pub model: Option<String>,
    /// GPU memory.
    #[serde(default)]
    pub memory_gb: Option<f64>,
    /// Price per hour, a decimal string on the wire.
    pub price_per_hour: Money,
    /// `available`, …
    #[serde(default)]
    pub status: Option<String>,
    /// Anything else the service sends.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

with_exact_amounts!(GpuOffer, "price_per_hour");

/// Compute-seconds in one AITBC: the chain (and so the wallet daemon's `balance`) counts compute-seconds.
pub const COMPUTE_SECONDS_PER_AITBC: i64 = 3600;

/// A wallet's balance, read in AITBC from `GET /v1/wallets/{name}/balance` (the wallet daemon).
///
/// On the wire the daemon answers `{"balance": 36000, "balance_ait": "10 AIT"}`: `balance` is in
/// compute-seconds (1 AITBC = 3600) and `balance_ait` is the same amount in AITBC, as text with its
/// unit and rounded to 4 decimals. Taking `balance` for AITBC reads a wallet 3600 times too rich, so
/// [`WalletBalance::balance`] comes from `balance_ait` only, made exact from the compute-seconds when the
/// two agree; an answer without `balance_ait`, or where the two disagree, is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WalletBalanceWire", into = "WalletBalanceWire")]
pub struct WalletBalance {
    /// The wallet's name.
    pub wallet_id: String,
    /// Its address (the payer a submit must name).
    pub address: Option<String>,
    /// The balance in AITBC.
    pub balance: Money,
    /// The balance as the daemon counts it, in compute-seconds, when it said.
    pub compute_seconds: Option<Money>,
    /// The chain.
    pub chain_id: Option<String>,
    /// What the daemon says went wrong, when it answers anyway (the upstream daemon answers a wallet
    /// whose `address` is not a chain address with `"error": "Invalid address format"` and a balance of
    /// 0 that it never read from the chain).
    pub error: Option<String>,
}

impl WalletBalance {
    /// A balance of `aitbc`, which the wire form states in compute-seconds and as `"N AIT"`.
    pub fn in_aitbc(wallet_id: impl Into<String>, address: Option<String>, aitbc: Money) -> Self {
        WalletBalance {
            wallet_id: wallet_id.into(),
            address,
            balance: aitbc,
            compute_seconds: Some(Money(
                aitbc.0 * rust_decimal::Decimal::from(COMPUTE_SECONDS_PER_AITBC),
            )),
            chain_id: None,
            error: None,
        }
    }
}

/// True for a chain address as the contract wants it for `buyer_address`: `0x` and 40 hex digits.
pub fn is_address(s: &str) -> bool {
    s.len() == 42
        && (s.starts_with("0x") || s.starts_with("0X"))
        && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The wallet daemon's answer as it is on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WalletBalanceWire {
    wallet_id: String,
    #[serde(default)]
    address: Option<String>,
    /// Compute-seconds.
    #[serde(default)]
    balance: Option<Money>,
    /// AITBC, as `"10 AIT"` (or a plain number, read from its digits: see [`exact_amount`]).
    #[serde(default, deserialize_with = "exact_amount")]
    balance_ait: Option<Value>,
    #[serde(default)]
    chain_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// An amount as text, read exactly (a JSON number from its digits, not through an `f64`).
fn exact_amount<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Money>::deserialize(d)?.map(|m| Value::String(m.to_string())))
}

impl TryFrom<WalletBalanceWire> for WalletBalance {
    type Error = String;
    fn try_from(w: WalletBalanceWire) -> Result<Self, String> {
        let ait = match &w.balance_ait {
            Some(Value::String(s)) => s.parse::<Money>()?,
            Some(Value::Number(n)) => n.to_string().parse::<Money>()?,
            Some(other) => return Err(format!("`balance_ait` is {other}, not an amount")),
            None => {
                return Err(format!(
                    "the balance of wallet {} has no `balance_ait`: its `balance` is in \
                     compute-seconds (1 AITBC = {COMPUTE_SECONDS_PER_AITBC}), so it is not read as AITBC",
                    w.wallet_id
                ));
            }
        };
        let balance = match w.balance {
            Some(cs) => {
                // `balance_ait` is rounded to 4 decimals; the compute-seconds are exact. Use them when
                // they agree, rounded down (a balance is never read higher than it is).
                let exact = Money(
                    (cs.0 / rust_decimal::Decimal::from(COMPUTE_SECONDS_PER_AITBC))
                        .round_dp_with_strategy(8, rust_decimal::RoundingStrategy::ToZero)
                        .normalize(),
                );
                let tolerance = Money(rust_decimal::Decimal::new(5, 5));
                let gap = if exact > ait {
                    exact - ait
                } else {
                    ait - exact
                };
                if gap > tolerance {
                    return Err(format!(
                        "the balance of wallet {} does not add up: `balance` {cs} compute-seconds is \
                         {exact} AITBC, `balance_ait` says {ait}",
                        w.wallet_id
                    ));
                }
                exact
            }
            None => ait,
        };
        Ok(WalletBalance {
            wallet_id: w.wallet_id,
            address: w.address,
            balance,
            compute_seconds: w.balance,
            chain_id: w.chain_id,
            error: w.error,
        })
    }
}

impl From<WalletBalance> for WalletBalanceWire {
    fn from(b: WalletBalance) -> Self {
        let cs = b.compute_seconds.unwrap_or(Money(
            b.balance.0 * rust_decimal::Decimal::from(COMPUTE_SECONDS_PER_AITBC),
        ));
        WalletBalanceWire {
            wallet_id: b.wallet_id,
            address: b.address,
            balance: Some(cs),
            balance_ait: Some(Value::String(format_ait(b.balance))),
            chain_id: b.chain_id,
            error: b.error,
        }
    }
}

/// AITBC as the wallet daemon writes `balance_ait`: `"10 AIT"`, or 4 decimals (`"2.5000 AIT"`).
pub fn format_ait(m: Money) -> String {
    let d = m.0.normalize();
    if d.scale() == 0 {
        format!("{d} AIT")
    } else {
        let r = d.round_dp_with_strategy(4, rust_decimal::RoundingStrategy::MidpointNearestEven);
        format!("{r:.4} AIT")
    }
}

/// `GET /v1/jobs/{id}/payment` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct PaymentView {
    /// The job.
    pub job_id: String,
    /// The payment.
    pub payment_id: String,
    /// The amount.
    pub amount: Money,
    /// The currency.
    #[serde(default)]
    pub currency: Option<String>,
    /// `escrowed`, `released`, `refunded`, …
    pub status: String,
    /// Anything else the service sends.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

with_exact_amounts!(PaymentView, "amount");

/// `POST /v1/payments/{payment_id}/refund` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The job.
    pub job_id: String,
    /// The payment.
    pub payment_id: String,
    /// `buyer_requested`, …
    pub reason: String,
}

/// `POST /v1/payments/{payment_id}/refund` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundResponse {
    /// `refunded`.
    pub status: String,
    /// The payment.
    pub payment_id: String,
}

/// The current time as the service writes it on jobs: ISO-8601 without a zone, in UTC.
pub fn naive_now() -> String {
    chrono::Utc::now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// Fields left out of the signed bytes of a receipt: the signature itself, the coordinator's
/// attestations, and what the service adds after signing — `zk_status`, `tee_status`, the TEE
/// attestation of every job paid 10 or more (`tee_attestation_id`, `tee_quote`), a verified ZK proof
/// (`zk_proof`) and the `reinvest_*` fields.
fn unsigned_field(key: &str) -> bool {
    matches!(
        key,
        "signature"
            | "attestations"
            | "zk_status"
            | "zk_proof"
            | "tee_status"
            | "tee_attestation_id"
            | "tee_quote"
    ) || key.starts_with("reinvest_")
}

/// The canonical JSON of a receipt: without the fields of [`unsigned_field`], keys sorted, no spaces,
/// nulls removed everywhere (inside lists too), non-ASCII escaped as `\uXXXX`.
pub fn receipt_signing_bytes(receipt: &Value) -> Vec<u8> {
    let mut out = String::new();
    match receipt {
        Value::Object(map) => {
            let filtered: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| !unsigned_field(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            write_canonical(&Value::Object(filtered), &mut out);
        }
        other => write_canonical(other, &mut out),
    }
    out.into_bytes()
}

/// Canonical JSON as the service's Python `json.dumps(sort_keys=True, separators=(",", ":"))` writes it
/// after its `remove_none`: null values dropped from objects and from lists alike.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&python_number(n)),
        Value::String(s) => write_ascii_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().filter(|v| !v.is_null()).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_ascii_string(k, out);
                out.push(':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
    }
}

/// Python writes floats with `repr` (`0.1`, `1e-05`, `100.0`); serde_json writes `100.0` as `100.0` too.
fn python_number(n: &serde_json::Number) -> String {
    if n.is_f64() {
        let f = n.as_f64().unwrap_or(0.0);
        if f.fract() == 0.0 && f.abs() < 1e16 {
            return format!("{f:.1}");
        }
        let s = format!("{f}");
        if f != 0.0 && (f.abs() < 1e-4 || f.abs() >= 1e16) {
            // Python switches to exponent form here: 1e-05.
            let e = format!("{f:e}");
            if let Some((m, exp)) = e.split_once('e') {
                let exp: i32 = exp.parse().unwrap_or(0);
                let sign = if exp < 0 { '-' } else { '+' };
                return format!("{m}e{sign}{:02}", exp.abs());
            }
        }
        s
    } else {
        n.to_string()
    }
}

fn write_ascii_string(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why a receipt did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// No `signature` object, or one of another algorithm.
    #[error("the receipt carries no Ed25519 signature")]
    Unsigned,
    /// The key or signature is not valid base64url or has the wrong length.
    #[error("the receipt's {0} is malformed")]
    Malformed(&'static str),
    /// The signature does not match the receipt.
    #[error("the receipt's signature does not match its contents")]
    Mismatch,
    /// A signed receipt, but of another job.
    #[error("the receipt is signed for job {0}, not this one")]
    OtherJob(String),
    /// The receipt does not carry the result it signs (`metadata.result`).
    #[error("the receipt does not say which result it signs (no metadata.result)")]
    NoSignedResult,
    /// The result served is not the one the receipt signs.
    #[error(
        "the result served differs from the result the receipt signs (metadata.result): it was changed after signing"
    )]
    ResultDiffers,
}

/// Verifies a receipt's Ed25519 signature over its canonical JSON, with the key it names.
pub fn verify_receipt(receipt: &Value) -> Result<(), ReceiptError> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::{Signature, Verifier};

    let sig = receipt.get("signature").ok_or(ReceiptError::Unsigned)?;
    if sig.get("alg").and_then(Value::as_str) != Some("Ed25519") {
        return Err(ReceiptError::Unsigned);
    }
    let decode = |field: &'static str| -> Result<Vec<u8>, ReceiptError> {
        let text = sig
            .get(field)
            .and_then(Value::as_str)
            .ok_or(ReceiptError::Malformed(field))?;
        URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| ReceiptError::Malformed(field))
    };
    let key: [u8; 32] = decode("key_id")?
        .try_into()
        .map_err(|_| ReceiptError::Malformed("key_id"))?;
    let sig_bytes: [u8; 64] = decode("sig")?
        .try_into()
        .map_err(|_| ReceiptError::Malformed("sig"))?;
    let key = verifying_key(&key)?;
    key.verify(
        &receipt_signing_bytes(receipt),
        &Signature::from_bytes(&sig_bytes),
    )
    .map_err(|_| ReceiptError::Mismatch)
}

/// The verifying key of `bytes`. A coordinator signs every receipt with one key, and reading a key
/// decompresses a curve point (a field exponentiation, as costly as the inversion the verification
/// itself does): the last key read is kept, per thread, and used again only for the same bytes.
fn verifying_key(bytes: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey, ReceiptError> {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<ed25519_dalek::VerifyingKey>> = const { RefCell::new(None) };
    }
    if let Some(key) = LAST.with_borrow(|k| k.filter(|k| k.as_bytes() == bytes)) {
        return Ok(key);
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
        .map_err(|_| ReceiptError::Malformed("key_id"))?;
    LAST.set(Some(key));
    Ok(key)
}

/// Signs a receipt in place (adds `signature`), as the embedded coordinator does.
pub fn sign_receipt(receipt: &mut Value, key: &ed25519_dalek::SigningKey) {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::Signer;

    if let Value::Object(map) = receipt {
        map.remove("signature");
    }
    let sig = key.sign(&receipt_signing_bytes(receipt));
    if let Value::Object(map) = receipt {
        map.insert(
            "signature".into(),
            serde_json::json!({
                "alg": "Ed25519",
                "key_id": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
                "sig": URL_SAFE_NO_PAD.encode(sig.to_bytes()),
            }),
        );
    }
}

// ---- Error bodies and the local coordinator's ledger view (added for the embedded coordinator) ----

/// `{"detail": "…"}`: the body of 401, 403, 404, 409, 425 and 429 answers (and some 5xx).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The message.
    pub detail: String,
}

/// One field's problem in a 422 answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Where: `body.payment_amount`, `query.limit`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// A pydantic-style code: `decimal_parsing`, `missing`, `json_invalid`, …
    pub code: String,
}

/// The `error` object of a 422 answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    /// `VALIDATION_ERROR`.
    pub code: String,
    /// `Request validation failed`.
    pub message: String,
    /// 422.
    pub status: u16,
    /// One entry per field.
    pub details: Vec<FieldError>,
}

/// The body of a 422 answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationErrorBody {
    /// The error.
    pub error: ValidationError,
    /// When (naive ISO time).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Always null on the real service.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `GET /v1/local/ledger` (embedded coordinator only): every balance and the escrow, as decimal strings,
/// so that tests can check that `sum(wallets) + escrow` stays equal to `minted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerView {
    /// Wallet name → balance.
    #[serde(with = "money_map_text")]
    pub wallets: std::collections::BTreeMap<String, Money>,
    /// Money held in escrow for unfinished jobs.
    #[serde(with = "money_text")]
    pub escrow: Money,
    /// All money created by the faucet and `--fund` (constant between grants).
    #[serde(with = "money_text")]
    pub minted: Money,
    /// The number of jobs the coordinator holds.
    pub jobs: u64,
}

/// Money as a decimal string (reads numbers too).
mod money_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::money::Money;

    pub fn serialize<S: Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&m.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        Money::deserialize(d)
    }
}

/// A map of money as decimal strings.
mod money_map_text {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::money::Money;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, Money>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(k, &v.to_string())?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Money>, D::Error> {
        BTreeMap::<String, Money>::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_ids_are_32_lowercase_hex() {
        assert!("ea05c15ab4f94d369c35d96c8fc39ac5".parse::<JobId>().is_ok());
        assert!("EA05C15AB4F94D369C35D96C8FC39AC5".parse::<JobId>().is_err());
        assert!("ai_job_1774883000".parse::<JobId>().is_err());
        assert_eq!(JobId::random().as_str().len(), 32);
    }

    #[test]
    fn canonical_form_sorts_drops_nulls_and_escapes() {
        let v = json!({"b": 1, "a": {"z": null, "y": "é"}, "c": [1.0, 0.1, null]});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"y":"\u00e9"},"b":1,"c":[1.0,0.1]}"#
        );
    }

    #[test]
    fn signed_receipt_verifies_and_tampering_fails() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let mut r = json!({"version": "1.0", "job_id": "x", "price": 0.002, "zk_status": "not_required",
                           "metadata": {"result": {"output": "héllo"}}});
        sign_receipt(&mut r, &key);
        assert_eq!(verify_receipt(&r), Ok(()));
        r["zk_status"] = json!("changed"); // not signed
        assert_eq!(verify_receipt(&r), Ok(()));
        r["price"] = json!(0.003);
        assert_eq!(verify_receipt(&r), Err(ReceiptError::Mismatch));
        r.as_object_mut().unwrap().remove("signature");
        assert_eq!(verify_receipt(&r), Err(ReceiptError::Unsigned));
    }

    #[test]
    fn the_kept_key_is_used_only_for_the_same_bytes() {
        let a = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let b = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        let signed = |key: &ed25519_dalek::SigningKey| {
            let mut r = json!({"version": "1.0", "job_id": "x", "price": 1});
            sign_receipt(&mut r, key);
            r
        };
        let (ra, rb) = (signed(&a), signed(&b));
        // Read a's key first (it is kept), then b's, then a's again: each is checked with its own key.
        assert_eq!(verify_receipt(&ra), Ok(()));
        assert_eq!(verify_receipt(&rb), Ok(()));
        assert_eq!(verify_receipt(&ra), Ok(()));
        // b's signature under a's key (the key kept from the last read) does not verify.
        let mut forged = rb.clone();
        forged["signature"]["key_id"] = ra["signature"]["key_id"].clone();
        assert_eq!(verify_receipt(&forged), Err(ReceiptError::Mismatch));
        // Bytes that are no curve point are refused, whatever was kept.
        use base64::Engine;
        let no_point = (2u8..)
            .map(|i| [i; 32])
            .find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        let mut bad = ra.clone();
        bad["signature"]["key_id"] =
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(no_point));
        assert_eq!(verify_receipt(&bad), Err(ReceiptError::Malformed("key_id")));
    }

    /// Receipts signed by the upstream code itself (`tests/fixtures/receipts/make.py`), with the fields
    /// the service adds after signing: each verifies, and a change to a signed field does not.
    #[test]
    fn receipts_signed_upstream_verify() {
        let cases: Vec<Value> =
            serde_json::from_str(include_str!("../tests/fixtures/receipts/upstream.json")).unwrap();
        assert_eq!(cases.len(), 3);
        for case in &cases {
            let r = &case["receipt"];
            assert_eq!(verify_receipt(r), Ok(()), "{}", case["name"]);
            let mut forged = r.clone();
            forged["metadata"]["result"]["output"] = json!("forged");
            assert_eq!(verify_receipt(&forged), Err(ReceiptError::Mismatch));
        }
        let high = &cases[1]["receipt"];
        assert!(high.get("tee_quote").is_some() && high.get("zk_proof").is_some());
        let mut changed = high.clone();
        changed["tee_attestation_id"] = json!("att_other");
        assert_eq!(verify_receipt(&changed), Ok(()), "added after signing");
        let lists = &cases[2]["receipt"];
        assert_eq!(
            lists["metadata"]["job_payload"]["tags"],
            json!(["a", null, "b"])
        );
        let mut moved = lists.clone();
        moved["metadata"]["job_payload"]["tags"] = json!(["a", "b", null]);
        assert_eq!(
            verify_receipt(&moved),
            Ok(()),
            "nulls in lists are not signed"
        );
        moved["metadata"]["job_payload"]["tags"] = json!(["b", "a"]);
        assert_eq!(verify_receipt(&moved), Err(ReceiptError::Mismatch));
    }

    fn wallet(v: Value) -> Result<WalletBalance, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn balances_are_read_in_aitbc_never_in_compute_seconds() {
        // The upstream wallet daemon: 10 AIT held.
        let b = wallet(
            json!({"wallet_id": "w", "address": "0xab", "balance": 36000,
                              "balance_ait": "10 AIT", "chain_id": "c"}),
        )
        .unwrap();
        assert_eq!(b.balance, Money::from_int(10));
        assert_eq!(b.compute_seconds, Some(Money::from_int(36000)));
        assert_eq!(b.address.as_deref(), Some("0xab"));
        // balance_ait is rounded to 4 decimals; the compute-seconds give the exact amount, rounded down.
        let b =
            wallet(json!({"wallet_id": "w", "balance": 1, "balance_ait": "0.0003 AIT"})).unwrap();
        assert_eq!(b.balance.to_string(), "0.00027777");
        let b = wallet(json!({"wallet_id": "w", "balance": "9000", "balance_ait": "2.5000 AIT"}))
            .unwrap();
        assert_eq!(b.balance.to_string(), "2.5");
        // Only balance_ait, as a number.
        let b = wallet(json!({"wallet_id": "w", "balance_ait": 7.25})).unwrap();
        assert_eq!(b.balance.to_string(), "7.25");
        // No balance_ait: `balance` is never taken for AITBC.
        let e = wallet(json!({"wallet_id": "w", "balance": 36000})).unwrap_err();
        assert!(
            e.contains("no `balance_ait`") && e.contains("compute-seconds"),
            "{e}"
        );
        // The two disagree: refused rather than guessed.
        let e = wallet(json!({"wallet_id": "w", "balance": 36000, "balance_ait": "36000 AIT"}))
            .unwrap_err();
        assert!(e.contains("does not add up"), "{e}");
    }

    #[test]
    fn balances_go_out_in_the_daemons_units() {
        let b = WalletBalance::in_aitbc("w", None, "9997.5".parse().unwrap());
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["balance"], json!(35991000));
        assert_eq!(v["balance_ait"], json!("9997.5000 AIT"));
        assert_eq!(wallet(v).unwrap().balance, b.balance);
        let v =
            serde_json::to_value(WalletBalance::in_aitbc("w", None, Money::from_int(10))).unwrap();
        assert_eq!(v["balance_ait"], json!("10 AIT"));
    }

    #[test]
    fn failed_result_on_completed_job_is_not_success() {
        let v: JobView = serde_json::from_value(json!({
            "job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": "COMPLETED",
            "payload": {"type": "video"}, "result": {"status": "failed", "error": "Unsupported job type: video"},
            "zk_status": null
        }))
        .unwrap();
        assert!(!v.succeeded());
        assert!(v.extra.contains_key("zk_status"));
    }

    #[test]
    fn amounts_beside_unknown_fields_are_read_from_their_digits() {
        // A flattened `extra` would buffer these numbers as f64: 1000000 and 0.01.
        let p: PaymentView = serde_json::from_str(
            r#"{"job_id": "j", "payment_id": "p", "amount": 1000000.00000000001,
                "status": "escrowed", "escrow_address": "0xabc"}"#,
        )
        .unwrap();
        assert_eq!(p.amount.to_string(), "1000000.00000000001");
        assert_eq!(p.extra["escrow_address"], json!("0xabc"));
        let o: GpuOffer = serde_json::from_slice(
            br#"{"id": "g1", "price_per_hour": 0.0099999999999999999, "region": "eu"}"#,
        )
        .unwrap();
        assert!(o.price_per_hour < "0.01".parse().unwrap());
        assert_eq!(o.extra["region"], json!("eu"));
        // Written as read, and read back the same.
        let back: PaymentView = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        // A missing or wrong amount is still an error naming it.
        let e = serde_json::from_str::<PaymentView>(
            r#"{"job_id": "j", "payment_id": "p", "status": "escrowed"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("amount"), "{e}");
        let e = serde_json::from_str::<GpuOffer>(r#"{"id": "g1", "price_per_hour": true}"#)
            .unwrap_err();
        assert!(e.to_string().contains("expected an amount"), "{e}");
    }
}
