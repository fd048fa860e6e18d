//! The PostgreSQL store: plan locks as lease rows and the run history as rows, shared by every host
//! that names the same database (docs/scaling.md).
//!
//! The connection is secured as the URL's `sslmode` says (`store::tls`: rustls; libpq's default
//! `prefer`). The schema is embedded ([`MIGRATIONS`]) and applied on first use, under a
//! transaction-scoped advisory lock so that hosts starting together apply it once.
//!
//! A lock is a row `(plan, token, holder, renewed_at)`. It is taken when absent or when its holder
//! has not renewed it for [`LEASE`]; each take draws a new fencing token from a sequence, so a
//! holder that lost its lease (a paused or partitioned host) can tell by its token that it no longer
//! holds it. The holder's heartbeat renews the row every [`LEASE`]/3.
//!
//! The journal of a run is copied into `aitbc_flow_journal` (one row per record, keyed by run id and
//! sequence number), a batch at each of the journal's flush points, by one statement that inserts the
//! batch only while the lock row still carries this holder's token ([`PgJournal`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::Client;

use super::{HeldLock, LockAttempt, Store, StoreError, redact};
use crate::exec::journal::{Mirror, MirrorError};
use crate::exec::lock::LockInfo;
use crate::report::Report;
use crate::report::history::{self, REPORT_VERSION, RunEntry};

/// A lock not renewed for this long is taken over by the next run that asks (docs/decisions.md);
/// `AITBC_FLOW_LEASE` sets another period (at least 1s), for tests.
pub const LEASE: Duration = Duration::from_secs(30);

/// The variable that sets the lease period.
pub const LEASE_VAR: &str = "AITBC_FLOW_LEASE";

/// The lease period: [`LEASE`], or `AITBC_FLOW_LEASE` when set.
fn lease_period() -> Result<Duration, String> {
    match std::env::var(LEASE_VAR) {
        Err(_) => Ok(LEASE),
        Ok(v) => match crate::duration::parse_duration(v.trim()) {
            Ok(d) if d >= Duration::from_secs(1) => Ok(d),
            Ok(_) => Err(format!(
                "{LEASE_VAR}={v}: the lease period must be at least 1s"
            )),
            Err(e) => Err(format!("{LEASE_VAR}={v}: {e}")),
        },
    }
}

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one step per version, applied in order; never edit a step that has shipped.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE SEQUENCE aitbc_flow_fence;
     CREATE TABLE aitbc_flow_locks (
         plan text PRIMARY KEY,
         token bigint NOT NULL,
         holder text NOT NULL,
         renewed_at timestamptz NOT NULL
     );
     CREATE TABLE aitbc_flow_runs (
         run_id text PRIMARY KEY,
         plan text NOT NULL,
         started_at text NOT NULL,
         entry text NOT NULL,
         report text NOT NULL
     );
     CREATE INDEX aitbc_flow_runs_started ON aitbc_flow_runs (started_at DESC, run_id DESC);",
    ),
    (
        2,
        "CREATE TABLE aitbc_flow_journal (
             run_id text NOT NULL,
             seq bigint NOT NULL,
             token bigint,
             record text NOT NULL,
             PRIMARY KEY (run_id, seq)
         );",
    ),
    (
        3,
        "CREATE TABLE aitbc_flow_ticks (
             plan text NOT NULL,
             due timestamptz NOT NULL,
             host text NOT NULL,
             taken_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (plan, due)
         );
         CREATE TABLE aitbc_flow_blobs (
             sha256 text PRIMARY KEY,
             bytes bytea NOT NULL
         );
         CREATE TABLE aitbc_flow_run_files (
             run_id text NOT NULL,
             role text NOT NULL,
             path text NOT NULL,
             given text,
             sha256 text NOT NULL REFERENCES aitbc_flow_blobs (sha256),
             PRIMARY KEY (run_id, role, path)
         );
         CREATE TABLE aitbc_flow_run_plans (
             run_id text PRIMARY KEY,
             plan text NOT NULL,
             locked boolean NOT NULL,
             started_at timestamptz NOT NULL DEFAULT now()
         );",
    ),
    (4, super::reservations_pg::MIGRATION),
    (5, super::pacing_pg::MIGRATION),
];

/// A connection to the shared database.
pub struct PgStore {
    pub(super) url: String,
    pub(super) lease: Duration,
    pub(super) client: Arc<Client>,
    pub(super) rt: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.url).finish()
    }
}

impl PgStore {
    /// Connects to `url` and brings its schema up to date.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let shown = redact(url);
        let err = |m: String| StoreError::Database {
            url: shown.clone(),
            message: m,
        };
        let lease = lease_period().map_err(&err)?;
        let (tls, url) = super::tls::split_url(url).map_err(&err)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| err(format!("not a valid URL: {e}")))?;
        config.ssl_mode(tls.pg_mode());
        let connector = tls.connector().map_err(&err)?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("aitbc-flow");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aitbc-flow-store")
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start its runtime: {e}")))?;
        let mut client = on(&rt, async {
            let (client, conn) = config.connect(connector).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!("the store's connection ended: {e}");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        })
        .map_err(|e| err(tls.explain(describe(&e))))?;
        on(&rt, migrate(&mut client))
            .map_err(|e| err(format!("cannot apply its schema: {}", describe(&e))))?;
        Ok(PgStore {
            url: shown,
            lease,
            client: Arc::new(client),
            rt: Arc::new(rt),
        })
    }

    pub(super) fn err(&self, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Database {
            url: self.url.clone(),
            message: describe(e),
        }
    }
}

/// Runs `f` on the store's runtime from any thread (also from inside another runtime).
pub(super) fn on<F: std::future::Future + Send>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F::Output: Send,
{
    let handle = rt.handle().clone();
    std::thread::scope(|s| {
        s.spawn(move || handle.block_on(f))
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The error with its cause (tokio-postgres keeps the server's message in the source).
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

async fn migrate(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // One host applies the schema; the others wait here and then find it applied.
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7312055261); \
         CREATE TABLE IF NOT EXISTS aitbc_flow_migrations ( \
             version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let done: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM aitbc_flow_migrations",
            &[],
        )
        .await?
        .get(0);
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > done) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO aitbc_flow_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
    }
    tx.commit().await
}

impl Store for PgStore {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn try_lock(&self, me: &LockInfo) -> Result<LockAttempt, StoreError> {
        let holder = serde_json::to_string(me).map_err(|e| StoreError::Files(e.to_string()))?;
        let lease = self.lease.as_secs_f64();
        let client = self.client.clone();
        let plan = me.plan.clone();
        let row = on(&self.rt, async move {
            // The old holder is read in the same statement, to say whose stale lease was taken.
            client
                .query_opt(
                    "WITH old AS (SELECT holder, renewed_at FROM aitbc_flow_locks WHERE plan = $1)
                     INSERT INTO aitbc_flow_locks AS l (plan, token, holder, renewed_at)
                     VALUES ($1, nextval('aitbc_flow_fence'), $2, now())
                     ON CONFLICT (plan) DO UPDATE
                         SET token = EXCLUDED.token, holder = EXCLUDED.holder, renewed_at = now()
                         WHERE l.renewed_at < now() - make_interval(secs => $3)
                     RETURNING l.token, (SELECT holder FROM old),
                         (SELECT extract(epoch FROM now() - renewed_at)::float8 FROM old)",
                    &[&plan, &holder, &lease],
                )
                .await
        })
        .map_err(|e| self.err(&e))?;
        let Some(row) = row else {
            let client = self.client.clone();
            let plan = me.plan.clone();
            let held = on(&self.rt, async move {
                client
                    .query_opt(
                        "SELECT holder FROM aitbc_flow_locks WHERE plan = $1",
                        &[&plan],
                    )
                    .await
            })
            .map_err(|e| self.err(&e))?;
            let info = held.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok());
            return Ok(LockAttempt::Held(info));
        };
        let token: i64 = row.get(0);
        let old: Option<String> = row.get(1);
        let silent: Option<f64> = row.get(2);
        let stale = old.map(|o| {
            (
                serde_json::from_str::<LockInfo>(&o).ok(),
                format!(
                    "its holder has not renewed its lease for {}s (lease {}s)",
                    silent.unwrap_or_default().round(),
                    self.lease.as_secs_f64()
                ),
            )
        });
        Ok(LockAttempt::Taken(
            HeldLock::Lease(Lease::start(self, &me.plan, token)),
            stale,
        ))
    }

    fn record_run(&self, run_dir: &Path) -> Result<(), StoreError> {
        let Some(r) = history::read_report(run_dir) else {
            return Ok(());
        };
        let report = serde_json::to_string(&r).map_err(|e| StoreError::Files(e.to_string()))?;
        let entry = RunEntry::from_report(&r, run_dir.to_path_buf());
        let text = serde_json::to_string(&entry).map_err(|e| StoreError::Files(e.to_string()))?;
        let client = self.client.clone();
        on(&self.rt, async move {
            client
                .execute(
                    "INSERT INTO aitbc_flow_runs (run_id, plan, started_at, entry, report)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (run_id) DO UPDATE SET entry = $4, report = $5",
                    &[
                        &entry.run_id,
                        &entry.plan,
                        &entry.started_at,
                        &text,
                        &report,
                    ],
                )
                .await
        })
        .map_err(|e| self.err(&e))?;
        Ok(())
    }

    fn list_runs(&self) -> Result<Vec<RunEntry>, StoreError> {
        let client = self.client.clone();
        let rows = on(&self.rt, async move {
            client
                .query(
                    "SELECT entry FROM aitbc_flow_runs ORDER BY started_at DESC, run_id DESC",
                    &[],
                )
                .await
        })
        .map_err(|e| self.err(&e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_str::<RunEntry>(row.get::<_, &str>(0)) {
                Ok(e) => out.push(e),
                Err(e) => tracing::warn!("{}: an unreadable run entry is left out: {e}", self.url),
            }
        }
        Ok(out)
    }

    fn find_report(&self, id: &str) -> Result<(Report, std::path::PathBuf), StoreError> {
        let client = self.client.clone();
        let wanted = id.to_string();
        let row = on(&self.rt, async move {
            client
                .query_opt(
                    "SELECT entry, report FROM aitbc_flow_runs
                     WHERE run_id = $1 OR ($1 = 'latest' AND NOT EXISTS (
                         SELECT 1 FROM aitbc_flow_runs WHERE run_id = 'latest'))
                     ORDER BY started_at DESC, run_id DESC LIMIT 1",
                    &[&wanted],
                )
                .await
        })
        .map_err(|e| self.err(&e))?;
        let Some(row) = row else {
            return Err(StoreError::NoRun(id.to_string(), self.url.clone()));
        };
        let unreadable = |what: String| StoreError::Database {
            url: self.url.clone(),
            message: format!("the report of run {id} is not readable: {what}"),
        };
        let entry: RunEntry =
            serde_json::from_str(row.get::<_, &str>(0)).map_err(|e| unreadable(e.to_string()))?;
        let report: Report =
            serde_json::from_str(row.get::<_, &str>(1)).map_err(|e| unreadable(e.to_string()))?;
        if report.report_version != REPORT_VERSION {
            return Err(unreadable(format!(
                "report format version {}, but aitbc-flow {} reads report format version \
                 {REPORT_VERSION} only",
                report.report_version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        Ok((report, entry.dir))
    }

    fn forget(&self, runs: &[RunEntry]) -> Result<(), StoreError> {
        let ids: Vec<String> = runs.iter().map(|r| r.run_id.clone()).collect();
        let client = self.client.clone();
        // One statement, so that a run is never left with its journal and without its entry; then
        // the blobs no run names any more.
        on(&self.rt, async move {
            client
                .execute(
                    "WITH journal AS (DELETE FROM aitbc_flow_journal WHERE run_id = ANY($1)),
                          files AS (DELETE FROM aitbc_flow_run_files WHERE run_id = ANY($1)),
                          plans AS (DELETE FROM aitbc_flow_run_plans WHERE run_id = ANY($1))
                     DELETE FROM aitbc_flow_runs WHERE run_id = ANY($1)",
                    &[&ids],
                )
                .await?;
            client
                .execute(
                    "DELETE FROM aitbc_flow_blobs b WHERE NOT EXISTS (
                         SELECT 1 FROM aitbc_flow_run_files f WHERE f.sha256 = b.sha256)",
                    &[],
                )
                .await
        })
        .map(|_| ())
        .map_err(|e| self.err(&e))
    }

    fn keep_run_files(
        &self,
        run_id: &str,
        plan: &str,
        locked: bool,
        files: &[crate::plan::files_read::FileRead],
    ) -> Result<(), StoreError> {
        self.keep_files(run_id, plan, locked, files)
    }

    fn run_files(&self, run_id: &str) -> Result<Vec<super::StoredFile>, StoreError> {
        self.files_of(run_id)
    }

    fn journal_records(&self, run_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.journal_of(run_id)
    }

    fn claim_tick(
        &self,
        plan: &str,
        due: chrono::DateTime<chrono::Utc>,
        host: &str,
    ) -> Result<bool, StoreError> {
        self.claim(plan, due, host)
    }

    fn orphans(&self) -> Result<Vec<super::Orphan>, StoreError> {
        self.lapsed()
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease_period())
    }

    fn shared(&self) -> bool {
        true
    }

    fn reservations(
        &self,
        run_id: &str,
    ) -> Result<Option<Arc<dyn crate::exec::reserve::Reservations>>, StoreError> {
        Ok(Some(Arc::new(
            super::reservations_pg::PgReservations::start(self, run_id),
        )))
    }

    fn pacing(&self, base_url: &str) -> Arc<dyn crate::client::pace::SharedWindow> {
        Arc::new(super::pacing_pg::PgPacing::new(self, base_url))
    }

    fn journal_mirror(
        &self,
        run_id: &str,
        plan: &str,
        lock: Option<&HeldLock>,
    ) -> Result<Option<Arc<dyn Mirror>>, StoreError> {
        let client = self.client.clone();
        let id = run_id.to_string();
        let last: i64 = on(&self.rt, async move {
            client
                .query_one(
                    "SELECT coalesce(max(seq), 0) FROM aitbc_flow_journal WHERE run_id = $1",
                    &[&id],
                )
                .await
        })
        .map_err(|e| self.err(&e))?
        .get(0);
        Ok(Some(Arc::new(PgJournal {
            url: self.url.clone(),
            client: self.client.clone(),
            rt: self.rt.clone(),
            run_id: run_id.to_string(),
            plan: plan.to_string(),
            token: lock.and_then(HeldLock::token),
            last: std::sync::Mutex::new(last),
        })))
    }
}

/// The journal of one run in `aitbc_flow_journal`, after the records already there.
pub struct PgJournal {
    url: String,
    client: Arc<Client>,
    rt: Arc<tokio::runtime::Runtime>,
    run_id: String,
    plan: String,
    /// The fencing token of the run's lease; `None` for a run without `--lock`, whose writes are not
    /// fenced.
    token: Option<i64>,
    /// The sequence number of the last record written.
    last: std::sync::Mutex<i64>,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal")
            .field("url", &self.url)
            .field("run_id", &self.run_id)
            .field("token", &self.token)
            .finish()
    }
}

impl Mirror for PgJournal {
    fn write(&self, records: &[Vec<u8>]) -> Result<(), MirrorError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let lines: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        let n = lines.len() as u64;
        let client = self.client.clone();
        let (id, plan, token, first) = (
            self.run_id.clone(),
            self.plan.clone(),
            self.token,
            *last + 1,
        );
        // One statement checks the lease and writes: FOR SHARE waits for a takeover in progress and
        // then sees its token, so no batch is written after the lease changed hands.
        let written = on(&self.rt, async move {
            client
                .execute(
                    "INSERT INTO aitbc_flow_journal (run_id, seq, token, record)
                     SELECT $1, $2::bigint + t.n - 1, $4::bigint, t.record
                     FROM unnest($3::text[]) WITH ORDINALITY AS t(record, n)
                     WHERE $4::bigint IS NULL OR EXISTS (
                         SELECT 1 FROM aitbc_flow_locks
                         WHERE plan = $5 AND token = $4::bigint FOR SHARE)",
                    &[&id, &first, &lines, &token, &plan],
                )
                .await
        })
        .map_err(|e| MirrorError::Failed(format!("store {}: {}", self.url, describe(&e))))?;
        if written != n {
            return Err(MirrorError::Fenced(format!(
                "the lock of {} was taken over by another run: this run's fencing token {} is no \
                 longer the lease's (store {})",
                self.plan,
                token.unwrap_or_default(),
                self.url
            )));
        }
        *last += n as i64;
        Ok(())
    }
}

/// A held lease: renewed every [`LEASE`]/3 until dropped, then deleted (if still ours).
pub struct Lease {
    token: i64,
    held: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    beat: Option<tokio::task::JoinHandle<()>>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("token", &self.token).finish()
    }
}

impl Lease {
    fn start(store: &PgStore, plan: &str, token: i64) -> Lease {
        let held = Arc::new(AtomicBool::new(true));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let client = store.client.clone();
        let plan = plan.to_string();
        let flag = held.clone();
        let period = store.lease / 3;
        let beat = store.rt.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let renewed = client
                    .execute(
                        "UPDATE aitbc_flow_locks SET renewed_at = now() WHERE plan = $1 AND token = $2",
                        &[&plan, &token],
                    )
                    .await;
                match renewed {
                    Ok(1) => {}
                    Ok(_) => {
                        flag.store(false, Ordering::SeqCst);
                        tracing::error!("the lease of {plan} was taken over by another run");
                        break;
                    }
                    // A failed renewal is tried again at the next beat; the lease lasts 3 beats.
                    Err(e) => tracing::warn!("cannot renew the lease of {plan}: {}", describe(&e)),
                }
            }
            if flag.load(Ordering::SeqCst) {
                let _ = client
                    .execute(
                        "DELETE FROM aitbc_flow_locks WHERE plan = $1 AND token = $2",
                        &[&plan, &token],
                    )
                    .await;
            }
        });
        Lease {
            token,
            held,
            stop: Some(stop),
            beat: Some(beat),
            rt: store.rt.clone(),
        }
    }

    /// The fencing token: larger for every later holder of the same plan's lock.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// Whether the last renewal found the lease still ours.
    pub fn still_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// The flag behind [`Lease::still_held`], to watch from another thread.
    pub fn held_flag(&self) -> Arc<AtomicBool> {
        self.held.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(beat) = self.beat.take() {
            // The release is waited for (bounded), so the next run finds the lock free.
            let _ = on(&self.rt, async move {
                tokio::time::timeout(CONNECT_TIMEOUT, beat).await
            });
        }
    }
}
