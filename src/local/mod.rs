//! The embedded local coordinator: the HTTP API of `aitbc-api.md` on axum, with a wallet ledger and
//! escrow, workers, signed receipts, in-memory or SQLite storage, and fault injection for tests.
//!
//! It is what `run` and the job commands start in-process when no coordinator is configured, and what
//! `coordinator serve` runs on its own. It matches the real service's shapes, status codes and quirks; it
//! does better on purpose where `aitbc-api.md` says "local" (idempotency keys, refunds on cancel,
//! failure and expiry).
//!
//! All mutable state sits behind one lock ([`store::Core`]): every request holds it for a few
//! microseconds, which keeps the ledger trivially race-free (a balance check and its escrow are one
//! step) and is far from being the bottleneck at the rates the benchmark asks for.
//!
//! ```no_run
//! # async fn demo() -> Result<(), aitbc_flow::local::LocalError> {
//! use aitbc_flow::local::{LocalConfig, start};
//! let handle = start(LocalConfig::for_tests()).await?;
//! println!("{} {}", handle.url(), handle.token());
//! handle.shutdown().await
//! # }
//! ```

mod faults;
mod jobs;
mod ledger;
mod login;
mod receipt;
mod server;
mod store;
mod throttle;
mod worker;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::RateLimits;
use crate::money::Money;

pub use faults::Faults;
pub use ledger::FAUCET_GRANT;
pub use worker::WorkerLatency;

use store::{Core, Op};

/// How to run the embedded coordinator. (`Debug` leaves the tokens out.)
#[derive(Clone)]
pub struct LocalConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port (the in-process default).
    pub listen: SocketAddr,
    /// A SQLite file to keep state across restarts; in memory when `None`.
    pub db: Option<PathBuf>,
    /// Wallet balances to set exactly at start (`--fund W=AMOUNT`).
    pub fund: Vec<(String, Money)>,
    /// Grant 10,000 AITBC to each wallet seen for the first time.
    pub faucet: bool,
    /// The client token to accept; generated (and, with `db`, remembered) when `None`.
    pub token: Option<String>,
    /// More client tokens; each is a separate client that sees only its own jobs.
    pub extra_tokens: Vec<String>,
    /// Ollama's base URL (`http://127.0.0.1:11434`); `ollama` jobs use the built-in worker when `None`.
    pub ollama: Option<String>,
    /// Built-in worker latency per job type.
    pub latency: WorkerLatency,
    /// Injected faults.
    pub faults: Faults,
    /// How many jobs run at once.
    pub workers: usize,
    /// Behave as the real service does where that would surprise a local user (`coordinator serve
    /// --real-quirks`): no refund on cancel, failure or expiry (the client asks for it, and the refund
    /// endpoint makes it); the job view keeps saying `escrowed` after a refund (only the payment view
    /// says `refunded`); a job paid 10 AITBC or more ends COMPLETED with the ZK `error` of the real
    /// service and its payment left in escrow; a result posted after a cancel turns the job COMPLETED.
    pub real_quirks: bool,
    /// The real service's sliding-window rate limits, reproduced (off by default).
    pub rate_limits: RateLimits,
    /// How long a session token from `POST /v1/login` is valid (24 h, as on the real service).
    pub token_ttl: Duration,
}

impl std::fmt::Debug for LocalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalConfig")
            .field("listen", &self.listen)
            .field("db", &self.db)
            .field("fund", &self.fund)
            .field("faucet", &self.faucet)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("extra_tokens", &self.extra_tokens.len())
            .field("ollama", &self.ollama)
            .field("latency", &self.latency)
            .field("faults", &self.faults)
            .field("workers", &self.workers)
            .field("real_quirks", &self.real_quirks)
            .field("rate_limits", &self.rate_limits)
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

impl Default for LocalConfig {
    /// Loopback on a free port, in memory, faucet on, a generated token, realistic worker latency.
    fn default() -> LocalConfig {
        LocalConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            db: None,
            fund: Vec::new(),
            faucet: true,
            token: None,
            extra_tokens: Vec::new(),
            ollama: None,
            latency: WorkerLatency::default(),
            faults: Faults::default(),
            workers: 64,
            real_quirks: false,
            rate_limits: RateLimits::off(),
            token_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl LocalConfig {
    /// The default with instant workers and the fixed token `test-token`: what tests and benchmarks use.
    pub fn for_tests() -> LocalConfig {
        LocalConfig {
            token: Some("test-token".into()),
            latency: WorkerLatency::instant(),
            ..LocalConfig::default()
        }
    }
}

/// Why the coordinator could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The SQLite file could not be opened, read or written.
    #[error("database {}: {reason}", path.display())]
    Db {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid coordinator setting: {0}")]
    Config(String),
    /// The HTTP server stopped with an error.
    #[error("the coordinator's server failed: {0}")]
    Serve(String),
}

/// The shared state of a running coordinator.
pub(crate) struct Shared {
    core: Mutex<Core>,
    /// Client ids (never tokens) by index; a wallet's first login adds one.
    clients: RwLock<Clients>,
    /// Configured token → client index.
    tokens: HashMap<String, u32>,
    /// Nonces and session tokens of wallet logins.
    logins: login::Logins,
    /// The rate limits' windows, when they are on.
    throttle: Option<Arc<throttle::Throttle>>,
    queue: mpsc::UnboundedSender<u32>,
    db: Option<std::sync::mpsc::Sender<Op>>,
    key: SigningKey,
    key_id: String,
    latency: WorkerLatency,
    ollama: Option<String>,
    http: reqwest::Client,
    /// [`LocalConfig::real_quirks`].
    real_quirks: bool,
    /// [`Faults::refuse_refunds`].
    refuse_refunds: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("clients", &self.clients_read().names)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Takes the state lock (a poisoned lock is still usable: every update is applied whole).
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a change to the database writer, if there is one.
    fn persist(&self, op: impl FnOnce() -> Op) {
        if let Some(db) = &self.db {
            let _ = db.send(op());
        }
    }

    /// Saves a job's current record.
    fn save_job(&self, core: &Core, pos: u32) {
        self.persist(|| {
            let job = core.jobs[pos as usize].clone();
            Op::Job {
                seq: pos,
                owner: self.client_id(job.owner),
                job: Box::new(job),
            }
        });
    }

    fn clients_read(&self) -> std::sync::RwLockReadGuard<'_, Clients> {
        self.clients.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The client index of a client id, added when new.
    fn intern_client(&self, id: String) -> u32 {
        if let Some(&i) = self.clients_read().index.get(&id) {
            return i;
        }
        self.clients
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .intern(id)
    }

    /// Saves a wallet's balance and the minted total.
    fn save_wallet(&self, core: &Core, name: &str) {
        if self.db.is_none() {
            return;
        }
        self.persist(|| Op::Wallet {
            name: name.to_string(),
            balance: core.ledger.peek(name),
        });
        self.persist(|| Op::Meta {
            key: "minted",
            value: core.ledger.minted().to_string(),
        });
    }

    /// Waits until every change sent so far is committed to the database.
    async fn sync(&self) {
        if let Some(db) = &self.db {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if db.send(Op::Sync(tx)).is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// The client id of a client index (used in receipts; never a token).
    fn client_id(&self, client: u32) -> String {
        self.clients_read()
            .names
            .get(client as usize)
            .cloned()
            .unwrap_or_else(|| "client".into())
    }
}

/// The clients known so far: ids by index, and the index of each id.
#[derive(Debug, Default)]
struct Clients {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Clients {
    fn intern(&mut self, id: String) -> u32 {
        if let Some(&i) = self.index.get(&id) {
            return i;
        }
        self.names.push(id.clone());
        let i = (self.names.len() - 1) as u32;
        self.index.insert(id, i);
        i
    }
}

/// A client's id derived from its token: stable across restarts, and reveals nothing of the token.
fn client_id(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("client-{}", &hex::encode(digest)[..12])
}

/// The client id of a wallet that logs in: the same for each of its session tokens.
fn wallet_client_id(address: &str) -> String {
    client_id(&format!("wallet:{}", address.to_ascii_lowercase()))
}

/// A running coordinator. Dropping it stops the server; [`LocalHandle::shutdown`] also waits for it.
pub struct LocalHandle {
    url: String,
    token: String,
    token_generated: bool,
    cancel: CancellationToken,
    tracker: TaskTracker,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    writer: Option<store::Writer>,
    db: Option<PathBuf>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHandle")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl LocalHandle {
    /// The base URL, e.g. `http://127.0.0.1:41235`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The client token the coordinator accepts (the first one, when several are configured).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// True when the token was not given in the configuration (generated now or by an earlier run).
    pub fn token_generated(&self) -> bool {
        self.token_generated
    }

    /// Stops accepting requests, finishes the ones in flight, stops the workers (a job in progress goes
    /// back to QUEUED and resumes on the next start with the same `db`) and flushes the database.
    pub async fn shutdown(mut self) -> Result<(), LocalError> {
        self.cancel.cancel();
        let served = match self.server.take() {
            Some(h) => match h.await {
                Ok(r) => r.map_err(|e| LocalError::Serve(e.to_string())),
                Err(e) => Err(LocalError::Serve(e.to_string())),
            },
            None => Ok(()),
        };
        self.tracker.close();
        self.tracker.wait().await;
        if let Some(db) = &self.shared.db {
            let _ = db.send(Op::Stop);
        }
        if let Some(writer) = self.writer.take() {
            let joined = tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(|e| LocalError::Serve(e.to_string()))?;
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    return Err(LocalError::Db {
                        path: self.db.clone().unwrap_or_default(),
                        reason,
                    });
                }
                Err(_) => return Err(LocalError::Serve("the database writer panicked".into())),
            }
        }
        served
    }
}

impl Drop for LocalHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts the coordinator: opens (or creates) the database, binds the address, and spawns the server
/// and the workers on the current tokio runtime.
pub async fn start(config: LocalConfig) -> Result<LocalHandle, LocalError> {
    let f = &config.faults;
    for (name, rate) in [
        ("503 rate", f.rate_503),
        ("429 rate", f.rate_429),
        ("drop rate", f.drop_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(LocalError::Config(format!(
                "the {name} must be between 0 and 1, not {rate}"
            )));
        }
    }
    for (wallet, amount) in &config.fund {
        if amount.is_negative() {
            return Err(LocalError::Config(format!(
                "cannot fund wallet {wallet} with a negative amount ({amount})"
            )));
        }
    }

    let (conn, loaded) = match &config.db {
        Some(path) => {
            let path = path.clone();
            let (conn, loaded) = tokio::task::spawn_blocking(move || store::open(&path))
                .await
                .map_err(|e| LocalError::Serve(e.to_string()))??;
            (Some(conn), loaded)
        }
        None => (None, store::Loaded::default()),
    };

    let key_is_new = loaded.key.is_none();
    let key = SigningKey::from_bytes(&loaded.key.unwrap_or_else(rand::random));
    let token_generated = config.token.is_none();
    let token = config
        .token
        .clone()
        .or(loaded.token.clone())
        .unwrap_or_else(|| format!("local-{}", hex::encode(rand::random::<[u8; 16]>())));

    let mut clients = Clients::default();
    let mut intern = |id: String| -> u32 { clients.intern(id) };
    let mut tokens = HashMap::new();
    for t in std::iter::once(&token).chain(config.extra_tokens.iter()) {
        let idx = intern(client_id(t));
        tokens.insert(t.clone(), idx);
    }

    let mut core = Core {
        jobs: Vec::with_capacity(loaded.jobs.len()),
        index: HashMap::with_capacity(loaded.jobs.len()),
        idempotency: HashMap::new(),
        ledger: ledger::Ledger::restore(
            config.faucet,
            loaded.wallets,
            loaded.escrow,
            loaded.minted,
        ),
    };
    let mut requeue = Vec::new();
    for (owner, mut job) in loaded.jobs {
        job.owner = intern(owner);
        if job.state == crate::api::JobState::Running {
            job.state = crate::api::JobState::Queued;
            job.started_at = None;
            job.miner = None;
        }
        let pos = core.jobs.len() as u32;
        if job.state == crate::api::JobState::Queued {
            requeue.push(pos);
        }
        core.index.insert(job.id, pos);
        core.jobs.push(job);
    }
    for (client, key, seq) in loaded.idempotency {
        let idx = intern(client);
        core.idempotency.insert((idx, key.into_boxed_str()), seq);
    }

    let (writer_tx, writer) = match conn {
        Some(conn) => {
            let path = config.db.clone().unwrap_or_default();
            let (tx, handle) =
                store::spawn_writer(path.clone(), conn).map_err(|e| LocalError::Db {
                    path,
                    reason: format!("cannot start the writer thread: {e}"),
                })?;
            (Some(tx), Some(handle))
        }
        None => (None, None),
    };
    let (queue, queue_rx) = mpsc::unbounded_channel();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| LocalError::Config(format!("HTTP client for Ollama: {e}")))?;
    let jwt_is_new = loaded.jwt_secret.is_none();
    let jwt_secret = loaded.jwt_secret.unwrap_or_else(rand::random);
    let ttl = i64::try_from(config.token_ttl.as_secs())
        .unwrap_or(i64::MAX / 2)
        .max(1);
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        clients: RwLock::new(clients),
        tokens,
        logins: login::Logins::new(jwt_secret, ttl),
        throttle: (!config.rate_limits.is_off())
            .then(|| throttle::Throttle::new(config.rate_limits)),
        queue,
        db: writer_tx,
        key_id: receipt::key_id(&key),
        key,
        latency: config.latency.clone(),
        ollama: config.ollama.clone(),
        http,
        real_quirks: config.real_quirks,
        refuse_refunds: config.faults.refuse_refunds,
    });
    {
        let mut core = shared.lock();
        for (wallet, amount) in &config.fund {
            core.ledger.set(wallet, *amount);
            shared.save_wallet(&core, wallet);
        }
    }
    if key_is_new {
        shared.persist(|| Op::Meta {
            key: "signing_key",
            value: hex::encode(shared.key.to_bytes()),
        });
    }
    if jwt_is_new {
        shared.persist(|| Op::Meta {
            key: "jwt_secret",
            value: hex::encode(jwt_secret),
        });
    }
    if token_generated && loaded.token.is_none() {
        shared.persist(|| Op::Meta {
            key: "token",
            value: token.clone(),
        });
    }
    shared.sync().await;
    for pos in requeue {
        let _ = shared.queue.send(pos);
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| LocalError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| LocalError::Bind {
        addr: config.listen,
        source,
    })?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let app = server::router(shared.clone(), &config.faults);
    let stop = cancel.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    tracker.spawn(worker::dispatch(
        shared.clone(),
        queue_rx,
        config.workers,
        cancel.clone(),
        tracker.clone(),
    ));
    Ok(LocalHandle {
        url: format!("http://{addr}"),
        token,
        token_generated,
        cancel,
        tracker,
        server: Some(server),
        writer,
        db: config.db.clone(),
        shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_leaves_tokens_out() {
        let config = LocalConfig {
            token: Some("very-secret".into()),
            extra_tokens: vec!["also-secret".into()],
            ..LocalConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn client_ids_hide_the_token() {
        let id = client_id("secret-token");
        assert!(id.starts_with("client-"));
        assert!(!id.contains("secret"));
        assert_eq!(id, client_id("secret-token"));
    }
}
