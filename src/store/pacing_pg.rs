//! The pacing windows of a remote coordinator shared by every host of a PostgreSQL store
//! (`client::pace::SharedWindow`): the service limits per client IP, and hosts behind one address
//! must stay under its limits together.
//!
//! A window is the rows of `aitbc_flow_pacing` under one key (the coordinator and the endpoint), one
//! row per request, as the file of `store::pacing` keeps them: a request holds its place from the
//! moment it may be sent until one window after its answer. Request rows, not a counter per fixed
//! window: a fixed window lets 2 × N through across one of its boundaries, in the service's sliding
//! window (docs/decisions.md). A row still in flight [`IN_FLIGHT`] after it was taken counts as
//! answered then, so the requests of a host that died expire.
//!
//! Taking a place is one call of the function `aitbc_flow_pace_take`, which holds a
//! transaction-scoped advisory lock on the key while it drops the old rows, counts the others and
//! inserts one: the store shares one connection, so no transaction may span statements. Every time
//! is the database's (`clock_timestamp()`), the one clock all hosts share.
//!
//! When the database does not answer within [`PATIENCE`], or fails, the run paces itself alone
//! (its own windows still hold) and says so once; it asks the database again [`RETRY`] later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::postgres::{PgStore, describe, on};
use crate::client::pace::SharedWindow;
use crate::limits::Endpoint;

/// The table and the function, version 5 of `store::postgres::MIGRATIONS`.
pub const MIGRATION: &str = "CREATE TABLE aitbc_flow_pacing (
         id bigserial PRIMARY KEY,
         key text NOT NULL,
         holder text NOT NULL,
         started_at timestamptz NOT NULL,
         answered_at timestamptz
     );
     CREATE INDEX aitbc_flow_pacing_key ON aitbc_flow_pacing (key);
     CREATE FUNCTION aitbc_flow_pace_take(
         p_key text, p_limit integer, p_window_ms bigint, p_in_flight_ms bigint, p_holder text,
         OUT ticket bigint, OUT wait_ms bigint)
     LANGUAGE plpgsql AS $$
     DECLARE
         now_ timestamptz := clock_timestamp();
         win interval := make_interval(secs => p_window_ms / 1000.0);
         flight interval := make_interval(secs => p_in_flight_ms / 1000.0);
         taken integer;
     BEGIN
         PERFORM pg_advisory_xact_lock(7312, hashtext(p_key));
         -- A request counts until one window after its answer; one still in flight past its bound
         -- counts as answered at that bound (its host may be gone).
         DELETE FROM aitbc_flow_pacing
         WHERE key = p_key
           AND coalesce(answered_at, started_at + flight) + win <= now_;
         SELECT count(*) INTO taken FROM aitbc_flow_pacing WHERE key = p_key;
         IF taken < p_limit THEN
             INSERT INTO aitbc_flow_pacing (key, holder, started_at)
             VALUES (p_key, p_holder, now_) RETURNING id INTO ticket;
             RETURN;
         END IF;
         SELECT greatest(1, ceil(extract(epoch FROM
                    min(coalesce(answered_at, started_at + flight)) + win - now_) * 1000))::bigint
         INTO wait_ms FROM aitbc_flow_pacing WHERE key = p_key;
     END $$;";

/// How long a request may count as in flight (longer than any request's timeout).
pub const IN_FLIGHT: Duration = Duration::from_secs(120);

/// How long a call of the database may take before the run paces itself alone.
const PATIENCE: Duration = Duration::from_secs(5);

/// How long a run that gave up on the database paces itself alone before it asks again.
const RETRY: Duration = Duration::from_secs(60);

/// The windows of one coordinator in the database.
pub struct PgPacing {
    url: String,
    client: Arc<Client>,
    rt: Arc<tokio::runtime::Runtime>,
    /// The coordinator's part of every key.
    coordinator: String,
    holder: String,
    /// Until when the run paces itself alone (the database failed).
    alone_until: Mutex<Option<Instant>>,
    /// Whether that was said.
    warned: AtomicBool,
}

impl std::fmt::Debug for PgPacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPacing")
            .field("url", &self.url)
            .field("coordinator", &self.coordinator)
            .finish()
    }
}

impl PgPacing {
    /// The windows of the coordinator at `base_url` in `store`'s database.
    pub fn new(store: &PgStore, base_url: &str) -> PgPacing {
        PgPacing {
            url: store.url.clone(),
            client: store.client.clone(),
            rt: store.rt.clone(),
            coordinator: super::pacing::coordinator_key(base_url),
            holder: format!("{}/{}", crate::exec::lock::hostname(), std::process::id()),
            alone_until: Mutex::new(None),
            warned: AtomicBool::new(false),
        }
    }

    fn key(&self, endpoint: Endpoint) -> String {
        format!(
            "{}/{}",
            self.coordinator,
            super::pacing::endpoint_name(endpoint)
        )
    }

    fn alone(&self) -> bool {
        let mut a = self.alone_until.lock().unwrap_or_else(|p| p.into_inner());
        match *a {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *a = None;
                false
            }
            None => false,
        }
    }

    /// The database failed: the run paces itself alone for a while, and says so the first time.
    fn give_up(&self, why: String) {
        *self.alone_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + RETRY);
        if !self.warned.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "the shared pacing in store {} cannot be used ({why}): this run paces itself alone, \
                 so the hosts together may exceed the service's limits",
                self.url
            );
        }
    }

    /// Runs `f` on the store's connection, for at most [`PATIENCE`].
    fn ask<T: Send, F>(&self, f: F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        // The timer is the store's runtime's (the caller may have none).
        match on(
            &self.rt,
            async move { tokio::time::timeout(PATIENCE, f).await },
        ) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {}s", PATIENCE.as_secs())),
        }
    }

    /// Takes a place in the window of `key` (for tests: `in_flight` is the bound of a request in
    /// flight).
    pub fn take_key(
        &self,
        key: &str,
        limit: usize,
        window: Duration,
        in_flight: Duration,
    ) -> Result<Result<u64, Duration>, String> {
        let client = self.client.clone();
        let (key, holder) = (key.to_string(), self.holder.clone());
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let window_ms = i64::try_from(
            window
                .saturating_add(crate::client::pace::MARGIN)
                .as_millis(),
        )
        .unwrap_or(i64::MAX / 2);
        let flight_ms = i64::try_from(in_flight.as_millis()).unwrap_or(i64::MAX / 2);
        let row = self.ask(async move {
            client
                .query_one(
                    "SELECT ticket, wait_ms FROM aitbc_flow_pace_take($1, $2, $3, $4, $5)",
                    &[&key, &limit, &window_ms, &flight_ms, &holder],
                )
                .await
        })?;
        let ticket: Option<i64> = row.get(0);
        let wait: Option<i64> = row.get(1);
        Ok(match ticket {
            Some(t) => Ok(t as u64),
            None => Err(Duration::from_millis(wait.unwrap_or(1).max(1) as u64)),
        })
    }

    /// The request of `ticket` was answered now (by the database's clock).
    pub fn answered_ticket(&self, ticket: u64) -> Result<(), String> {
        let client = self.client.clone();
        let id = ticket as i64;
        self.ask(async move {
            client
                .execute(
                    "UPDATE aitbc_flow_pacing SET answered_at = clock_timestamp() WHERE id = $1",
                    &[&id],
                )
                .await
        })
        .map(|_| ())
    }
}

impl SharedWindow for PgPacing {
    fn take(&self, endpoint: Endpoint, limit: usize, window: Duration) -> Result<u64, Duration> {
        if self.alone() {
            return Ok(0);
        }
        match self.take_key(&self.key(endpoint), limit, window, IN_FLIGHT) {
            Ok(taken) => taken,
            Err(why) => {
                self.give_up(why);
                Ok(0)
            }
        }
    }

    fn answered(&self, _endpoint: Endpoint, ticket: u64) {
        if ticket == 0 || self.alone() {
            return;
        }
        if let Err(why) = self.answered_ticket(ticket) {
            self.give_up(why);
        }
    }
}
