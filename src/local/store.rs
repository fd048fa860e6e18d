//! Where the coordinator keeps its state: the in-memory job table and ledger behind one lock, and, with
//! `--db`, a SQLite file written by a dedicated thread.
//!
//! Memory is the source of truth while the server runs. Each change is also sent, in order, to the
//! writer thread, which applies everything waiting in one transaction (group commit). A submit waits for
//! its transaction before it answers, so an acknowledged job survives a crash; worker progress does not
//! wait. On start the file is read back whole: jobs, wallets, escrow, receipts (their signed parts), the
//! signing key, the generated token and the idempotency keys.
//!
//! Jobs are stored compactly (payload and result as JSON text, times as microseconds, ids as bytes) so
//! that 100,000 finished jobs stay well under 100 MB.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::api::JobState;
use crate::money::Money;

use super::LocalError;
use super::ledger::Ledger;

/// A job id as bytes (32 hex characters on the wire).
pub type RawId = [u8; 16];

/// Parses a wire job id; `None` for anything that is not 32 lowercase hex characters.
pub fn parse_id(s: &str) -> Option<RawId> {
    if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Naive ISO-8601 (UTC) text of a time in microseconds, as the service writes job times.
pub fn iso(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// The `kind` of a job whose type is not one of the six.
pub const OTHER_TYPE: u8 = u8::MAX;

/// The `kind` of a job type.
pub fn kind_of(job_type: &str) -> u8 {
    crate::api::JOB_TYPES
        .iter()
        .position(|t| *t == job_type)
        .map_or(OTHER_TYPE, |i| i as u8)
}

/// Which worker ran a job (the `assigned_miner_id` and the receipt's `provider`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Miner {
    /// The deterministic built-in worker.
    #[serde(rename = "miner-local")]
    Builtin,
    /// The Ollama worker.
    #[serde(rename = "ollama-local")]
    Ollama,
}

impl Miner {
    /// The id shown on the wire.
    pub fn id(self) -> &'static str {
        match self {
            Miner::Builtin => "miner-local",
            Miner::Ollama => "ollama-local",
        }
    }
}

/// Where a payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayStatus {
    /// Held in escrow while the job runs.
    Escrowed,
    /// Paid to the provider on completion.
    Released,
    /// Given back on cancel, failure or expiry.
    Refunded,
}

impl PayStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PayStatus::Escrowed => "escrowed",
            PayStatus::Released => "released",
            PayStatus::Refunded => "refunded",
        }
    }
}

/// The currencies the service accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Currency {
    /// The network's token.
    #[serde(rename = "AITBC")]
    Aitbc,
    /// Bitcoin.
    #[serde(rename = "BTC")]
    Btc,
    /// Ether.
    #[serde(rename = "ETH")]
    Eth,
    /// Tether.
    #[serde(rename = "USDT")]
    Usdt,
}

impl Currency {
    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Currency> {
        Some(match s {
            "AITBC" => Currency::Aitbc,
            "BTC" => Currency::Btc,
            "ETH" => Currency::Eth,
            "USDT" => Currency::Usdt,
            _ => return None,
        })
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Currency::Aitbc => "AITBC",
            Currency::Btc => "BTC",
            Currency::Eth => "ETH",
            Currency::Usdt => "USDT",
        }
    }
}

/// An escrowed payment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paid {
    /// The payment id.
    #[serde(with = "hex_id")]
    pub id: RawId,
    /// The paying wallet (shared with the ledger's key).
    #[serde(with = "arc_str")]
    pub wallet: Arc<str>,
    /// The amount.
    #[serde(with = "money_text")]
    pub amount: Money,
    /// The currency.
    pub currency: Currency,
    /// Where it stands.
    pub status: PayStatus,
    /// When it was made (µs).
    pub created_at: i64,
    /// When it last changed (µs).
    pub updated_at: i64,
    /// What the job view says of it when that lags behind `status`: with the real quirks on, a refund
    /// made through the refund endpoint leaves the job view at `escrowed`, as on the real service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_status: Option<PayStatus>,
}

impl Paid {
    /// The status the job view shows.
    pub fn shown(&self) -> PayStatus {
        self.view_status.unwrap_or(self.status)
    }
}

/// A job's payment: none asked, one the service skipped (bad currency or bounds), or a real one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Payment {
    /// No amount, zero or negative: `payment_status: null`.
    None,
    /// Outside the bounds or an unknown currency: `payment_status: "skipped"`, `payment_id: null`.
    Skipped,
    /// Escrowed from a wallet.
    Paid(Box<Paid>),
}

/// The signed parts of a receipt; the rest is rebuilt from the job (see `receipt.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptCore {
    /// The receipt id.
    #[serde(with = "hex_id")]
    pub receipt_id: RawId,
    /// GPU seconds.
    pub units: f64,
    /// Price per GPU second.
    pub unit_price: f64,
    /// units × unit_price.
    pub price: f64,
    /// Epoch seconds.
    pub started_at: i64,
    /// Epoch seconds.
    pub completed_at: i64,
    /// Wall time of the work.
    pub duration_ms: u64,
    /// The Ed25519 signature.
    #[serde(with = "sig_b64")]
    pub sig: [u8; 64],
}

/// A job as the coordinator keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The id.
    #[serde(with = "hex_id")]
    pub id: RawId,
    /// Index of the owning client (not stored: the owner's client id is its own column).
    #[serde(skip)]
    pub owner: u32,
    /// The state.
    pub state: JobState,
    /// The worker that claimed it.
    pub miner: Option<Miner>,
    /// Submitted (µs).
    pub requested_at: i64,
    /// Expires (µs).
    pub expires_at: i64,
    /// Claimed by a worker (µs).
    pub started_at: Option<i64>,
    /// Reached a final state (µs).
    pub finished_at: Option<i64>,
    /// Why it ended badly.
    pub error: Option<Box<str>>,
    /// The payment.
    pub payment: Payment,
    /// The payload as JSON text.
    pub payload: Box<str>,
    /// `payload.type` as its position in [`crate::api::JOB_TYPES`] ([`OTHER_TYPE`] for anything else),
    /// so the list filter need not parse payloads.
    pub kind: u8,
    /// The constraints as JSON text.
    pub constraints: Option<Box<str>>,
    /// The posted result as JSON text.
    pub result: Option<Box<str>>,
    /// The receipt, once completed successfully.
    pub receipt: Option<Box<ReceiptCore>>,
}

/// The state behind the lock: jobs in submission order, their index, idempotency keys and the ledger.
#[derive(Debug)]
pub struct Core {
    /// Jobs, oldest first; a job's position is its sequence number.
    pub jobs: Vec<Job>,
    /// Job id → position.
    pub index: HashMap<RawId, u32>,
    /// (client, Idempotency-Key) → position.
    pub idempotency: HashMap<(u32, Box<str>), u32>,
    /// Balances and escrow.
    pub ledger: Ledger,
}

impl Core {
    /// The position of a job that `client` may see.
    pub fn find(&self, id: &str, client: u32) -> Option<u32> {
        let raw = parse_id(id)?;
        let pos = *self.index.get(&raw)?;
        (self.jobs.get(pos as usize)?.owner == client).then_some(pos)
    }
}

/// One change for the SQLite file.
#[derive(Debug)]
pub enum Op {
    /// Insert or replace a job.
    Job {
        /// Position.
        seq: u32,
        /// Owner's client id.
        owner: String,
        /// The job.
        job: Box<Job>,
    },
    /// Set a wallet's balance.
    Wallet {
        /// Name.
        name: String,
        /// Balance.
        balance: Money,
    },
    /// Set a meta value (minted total, escrow, key, token).
    Meta {
        /// Key.
        key: &'static str,
        /// Value.
        value: String,
    },
    /// Remember an idempotency key.
    Idempotency {
        /// Client id.
        client: String,
        /// The key.
        key: String,
        /// Job position.
        seq: u32,
    },
    /// Answer once everything before this is committed.
    Sync(tokio::sync::oneshot::Sender<()>),
    /// Commit and stop.
    Stop,
}

/// What a database holds when the coordinator starts.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Jobs in order, with their owners' client ids.
    pub jobs: Vec<(String, Job)>,
    /// Balances.
    pub wallets: Vec<(String, Money)>,
    /// Escrow total (the sum of escrowed payments).
    pub escrow: Money,
    /// Minted total.
    pub minted: Money,
    /// The signing key, 32 bytes.
    pub key: Option<[u8; 32]>,
    /// A token generated by an earlier run.
    pub token: Option<String>,
    /// The key that signs session tokens, 32 bytes (tokens from a login stay valid across restarts).
    pub jwt_secret: Option<[u8; 32]>,
    /// (client id, key, position).
    pub idempotency: Vec<(String, String, u32)>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wallets (name TEXT PRIMARY KEY, balance TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
    record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (client TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (client, key));
";

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> LocalError + '_ {
    move |source| LocalError::Db {
        path: path.to_path_buf(),
        reason: source.to_string(),
    }
}

/// Opens (creating if needed) the database and reads everything back. Blocking.
pub fn open(path: &Path) -> Result<(Connection, Loaded), LocalError> {
    let err = db_err(path);
    let conn = Connection::open(path).map_err(&err)?;
    conn.execute_batch(SCHEMA).map_err(&err)?;
    let mut loaded = Loaded::default();
    let meta = |key: &str| -> Result<Option<String>, LocalError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(&err)
    };
    let money = |text: Option<String>| -> Result<Money, LocalError> {
        text.map(|t| t.parse::<Money>())
            .transpose()
            .map(Option::unwrap_or_default)
            .map_err(|reason| LocalError::Db {
                path: path.to_path_buf(),
                reason,
            })
    };
    loaded.minted = money(meta("minted")?)?;
    loaded.token = meta("token")?;
    if let Some(k) = meta("signing_key")? {
        let mut key = [0u8; 32];
        hex::decode_to_slice(&k, &mut key).map_err(|e| LocalError::Db {
            path: path.to_path_buf(),
            reason: format!("bad signing key: {e}"),
        })?;
        loaded.key = Some(key);
    }
    if let Some(k) = meta("jwt_secret")? {
        let mut key = [0u8; 32];
        hex::decode_to_slice(&k, &mut key).map_err(|e| LocalError::Db {
            path: path.to_path_buf(),
            reason: format!("bad session token key: {e}"),
        })?;
        loaded.jwt_secret = Some(key);
    }
    {
        let mut stmt = conn
            .prepare("SELECT name, balance FROM wallets")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(&err)?;
        for row in rows {
            let (name, balance) = row.map_err(&err)?;
            loaded.wallets.push((name, money(Some(balance))?));
        }
    }
    {
        let mut stmt = conn
            .prepare("SELECT seq, owner, record FROM jobs ORDER BY seq")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(&err)?;
        for row in rows {
            let (seq, owner, record) = row.map_err(&err)?;
            if seq as usize != loaded.jobs.len() {
                return Err(LocalError::Db {
                    path: path.to_path_buf(),
                    reason: format!("job sequence has a gap at {seq}"),
                });
            }
            let job: Job = serde_json::from_str(&record).map_err(|e| LocalError::Db {
                path: path.to_path_buf(),
                reason: format!("job {seq}: {e}"),
            })?;
            if let Payment::Paid(p) = &job.payment
                && p.status == PayStatus::Escrowed
            {
                loaded.escrow += p.amount;
            }
            loaded.jobs.push((owner, job));
        }
    }
    {
        let mut stmt = conn
            .prepare("SELECT client, key, seq FROM idempotency")
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                ))
            })
            .map_err(&err)?;
        for row in rows {
            loaded.idempotency.push(row.map_err(&err)?);
        }
    }
    Ok((conn, loaded))
}

/// The writer thread; it ends with the first database error, if any.
pub type Writer = std::thread::JoinHandle<Result<(), String>>;

/// The writer thread: applies every waiting change in one transaction, then answers the `Sync`s.
pub fn spawn_writer(
    path: PathBuf,
    conn: Connection,
) -> std::io::Result<(mpsc::Sender<Op>, Writer)> {
    let (tx, rx) = mpsc::channel::<Op>();
    let handle = std::thread::Builder::new()
        .name("local-sqlite".into())
        .spawn(move || {
            let result = write_loop(conn, &rx).map_err(|e| format!("{}: {e}", path.display()));
            if let Err(e) = &result {
                // Later changes are not saved; the error is also returned by `LocalHandle::shutdown`.
                tracing::error!("local coordinator database writer stopped: {e}");
            }
            result
        })?;
    Ok((tx, handle))
}

/// Applies everything waiting in one transaction, answers the `Sync`s, until `Stop` or a closed channel.
fn write_loop(mut conn: Connection, rx: &mpsc::Receiver<Op>) -> Result<(), rusqlite::Error> {
    let mut acks = Vec::new();
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { break };
        let txn = conn.transaction()?;
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Sync(ack) => acks.push(ack),
                Op::Stop => stop = true,
                other => apply(&txn, other)?,
            }
            if !stop {
                next = rx.try_recv().ok();
            }
        }
        txn.commit()?;
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
    Ok(())
}

fn apply(txn: &rusqlite::Transaction<'_>, op: Op) -> Result<(), rusqlite::Error> {
    match op {
        Op::Job { seq, owner, job } => {
            let record = serde_json::to_string(&job).unwrap_or_default();
            txn.prepare_cached(
                "INSERT OR REPLACE INTO jobs (seq, id, owner, record) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![seq, hex::encode(job.id), owner, record])?;
        }
        Op::Wallet { name, balance } => {
            txn.prepare_cached("INSERT OR REPLACE INTO wallets (name, balance) VALUES (?1, ?2)")?
                .execute(params![name, balance.to_string()])?;
        }
        Op::Meta { key, value } => {
            txn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
                .execute(params![key, value])?;
        }
        Op::Idempotency { client, key, seq } => {
            txn.prepare_cached(
                "INSERT OR REPLACE INTO idempotency (client, key, seq) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![client, key, seq])?;
        }
        Op::Sync(_) | Op::Stop => {}
    }
    Ok(())
}

/// Job and payment ids as 32 hex characters in the database.
mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(id))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let text = String::deserialize(d)?;
        super::parse_id(&text).ok_or_else(|| serde::de::Error::custom("bad id"))
    }
}

/// A shared string in the database.
mod arc_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        Ok(Arc::from(String::deserialize(d)?))
    }
}

/// A signature as base64url text in the database.
mod sig_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = String::deserialize(d)?;
        URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("bad signature"))
    }
}

/// Money as exact decimal text in the database (never through `f64`).
mod money_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::money::Money;

    pub fn serialize<S: Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&m.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_bad_text() {
        let id = parse_id("ea05c15ab4f94d369c35d96c8fc39ac5").unwrap();
        assert_eq!(hex::encode(id), "ea05c15ab4f94d369c35d96c8fc39ac5");
        assert!(parse_id("EA05C15AB4F94D369C35D96C8FC39AC5").is_none());
        assert!(parse_id("nope").is_none());
    }

    #[test]
    fn iso_times_have_no_zone() {
        assert_eq!(iso(1_795_592_033_129_984), "2026-11-25T07:33:53.129984");
    }
}
