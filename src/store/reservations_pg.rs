//! Wallet reservations across hosts: rows of `aitbc_flow_reservations`, one per reserved submit, and a
//! version per wallet in `aitbc_flow_wallets` that every reservation taken, released or dropped
//! increments (the protocol is `exec::reserve`'s).
//!
//! A reservation is live while its holder (one process: a random id drawn at the start) renews it:
//! a heartbeat renews every row of the holder each lease period / 3, and a row not renewed for a
//! lease period (`AITBC_FLOW_LEASE`, 30 s) does not count and is dropped by the next run that reads
//! the wallet. Each step is one statement (the store shares one connection, so no transaction spans
//! statements): the reserve updates the wallet's row only at the version read before the balance —
//! PostgreSQL re-checks the condition after waiting for another reserve's lock, so of two concurrent
//! reserves at one version exactly one succeeds — and sums and inserts in the same statement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::postgres::{PgStore, describe, on};
use crate::exec::reserve::{ReservationId, Reservations, Reserve, Seen};
use crate::money::Money;

/// The tables, version 4 of `store::postgres::MIGRATIONS`.
pub const MIGRATION: &str = "CREATE TABLE aitbc_flow_wallets (
         wallet text PRIMARY KEY,
         version bigint NOT NULL
     );
     CREATE TABLE aitbc_flow_reservations (
         id bigserial PRIMARY KEY,
         wallet text NOT NULL,
         run_id text NOT NULL,
         holder text NOT NULL,
         amount numeric NOT NULL,
         renewed_at timestamptz NOT NULL
     );
     CREATE INDEX aitbc_flow_reservations_wallet ON aitbc_flow_reservations (wallet);
     CREATE INDEX aitbc_flow_reservations_holder ON aitbc_flow_reservations (holder);";

/// The statement that deletes the reservations `which` selects and changes their wallets' versions.
fn release(which: &str) -> String {
    format!(
        "WITH gone AS (DELETE FROM aitbc_flow_reservations WHERE {which} RETURNING wallet)
         UPDATE aitbc_flow_wallets SET version = version + 1
         WHERE wallet IN (SELECT wallet FROM gone)"
    )
}

/// The reservations of one run in the database.
pub struct PgReservations {
    url: String,
    lease: Duration,
    client: Arc<Client>,
    rt: Arc<tokio::runtime::Runtime>,
    run_id: String,
    holder: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    beat: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PgReservations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReservations")
            .field("url", &self.url)
            .field("run_id", &self.run_id)
            .finish()
    }
}

impl PgReservations {
    /// The book of run `run_id` in `store`'s database, its heartbeat started.
    pub fn start(store: &PgStore, run_id: &str) -> PgReservations {
        let holder = format!(
            "{}/{}/{:016x}",
            crate::exec::lock::hostname(),
            std::process::id(),
            rand::random::<u64>()
        );
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let client = store.client.clone();
        let period = store.lease / 3;
        let h = holder.clone();
        let beat = store.rt.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = client
                    .execute(
                        "UPDATE aitbc_flow_reservations SET renewed_at = now() WHERE holder = $1",
                        &[&h],
                    )
                    .await
                {
                    tracing::warn!("cannot renew the wallet reservations: {}", describe(&e));
                }
            }
            // The run's end releases what is left (a lost answer's reservation among it).
            if let Err(e) = client.execute(&release("holder = $1"), &[&h]).await {
                tracing::warn!("cannot release the wallet reservations: {}", describe(&e));
            }
        });
        PgReservations {
            url: store.url.clone(),
            lease: store.lease,
            client: store.client.clone(),
            rt: store.rt.clone(),
            run_id: run_id.to_string(),
            holder,
            stop: Some(stop),
            beat: Some(beat),
        }
    }

    fn err(&self, e: &tokio_postgres::Error) -> String {
        format!("store {}: {}", self.url, describe(e))
    }
}

impl Reservations for PgReservations {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn version(&self, wallet: &str) -> Result<Seen, String> {
        let client = self.client.clone();
        let (wallet, lease) = (wallet.to_string(), self.lease.as_secs_f64());
        // Rows whose holder stopped renewing them are dropped here, which changes the version.
        let row = on(&self.rt, async move {
            client
                .query_one(
                    "WITH dead AS (
                         DELETE FROM aitbc_flow_reservations
                         WHERE wallet = $1 AND renewed_at < now() - make_interval(secs => $2)
                         RETURNING 1)
                     INSERT INTO aitbc_flow_wallets AS w (wallet, version) VALUES ($1, 0)
                     ON CONFLICT (wallet) DO UPDATE
                         SET version = w.version + (SELECT count(*) FROM dead)
                     RETURNING w.version",
                    &[&wallet, &lease],
                )
                .await
        })
        .map_err(|e| self.err(&e))?;
        Ok(Seen {
            version: row.get(0),
            at: Instant::now(),
        })
    }

    fn reserve(
        &self,
        wallet: &str,
        amount: Money,
        balance: Money,
        seen: Seen,
    ) -> Result<Reserve, String> {
        // A balance read that took longer than half a lease may predate the payment of a run whose
        // reservation lapsed meanwhile: read it again.
        if seen.at.elapsed() > self.lease / 2 {
            return Ok(Reserve::Changed);
        }
        let client = self.client.clone();
        let (wallet, run_id, holder) =
            (wallet.to_string(), self.run_id.clone(), self.holder.clone());
        let (amount_s, balance_s, lease) = (
            amount.to_string(),
            balance.to_string(),
            self.lease.as_secs_f64(),
        );
        let row = on(&self.rt, async move {
            client
                .query_one(
                    "WITH w AS (
                         UPDATE aitbc_flow_wallets SET version = version + 1
                         WHERE wallet = $1 AND version = $2 RETURNING version),
                     others AS (
                         SELECT coalesce(sum(amount), 0) AS s FROM aitbc_flow_reservations
                         WHERE wallet = $1 AND renewed_at >= now() - make_interval(secs => $3)),
                     ins AS (
                         INSERT INTO aitbc_flow_reservations (wallet, run_id, holder, amount, renewed_at)
                         SELECT $1, $4, $5, $6::text::numeric, now() FROM w, others
                         WHERE $7::text::numeric - others.s >= $6::text::numeric
                         RETURNING id)
                     SELECT (SELECT count(*) FROM w), (SELECT s::text FROM others),
                            (SELECT id FROM ins)",
                    &[
                        &wallet,
                        &seen.version,
                        &lease,
                        &run_id,
                        &holder,
                        &amount_s,
                        &balance_s,
                    ],
                )
                .await
        })
        .map_err(|e| self.err(&e))?;
        let updated: i64 = row.get(0);
        if updated == 0 {
            return Ok(Reserve::Changed);
        }
        let id: Option<i64> = row.get(2);
        match id {
            Some(id) => Ok(Reserve::Taken(id)),
            None => {
                let others: String = row.get(1);
                let others = others
                    .parse()
                    .map_err(|e| format!("store {}: a reserved sum {others}: {e}", self.url))?;
                Ok(Reserve::Short { others })
            }
        }
    }

    fn release(&self, _wallet: &str, id: ReservationId) -> Result<(), String> {
        let client = self.client.clone();
        on(&self.rt, async move {
            client.execute(&release("id = $1"), &[&id]).await
        })
        .map(|_| ())
        .map_err(|e| self.err(&e))
    }
}

impl Drop for PgReservations {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(beat) = self.beat.take() {
            let _ = on(&self.rt, async move {
                tokio::time::timeout(Duration::from_secs(10), beat).await
            });
        }
    }
}
