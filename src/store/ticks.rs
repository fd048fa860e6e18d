//! Schedulers on several hosts: each due time of a plan is one row of `aitbc_flow_ticks`, inserted
//! `ON CONFLICT DO NOTHING … RETURNING` by every host's scheduler when the plan is due; the host whose
//! insert took runs it, the others do nothing for it. And the runs to take over: those whose host
//! died mid-run (their lease lapsed, their journal's last record is not an `end`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::postgres::{PgStore, on};
use super::{Orphan, StoreError};

impl PgStore {
    /// Claims the due time `due` of `plan` for `host`: `true` when this insert took it.
    pub(super) fn claim(
        &self,
        plan: &str,
        due: DateTime<Utc>,
        host: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client.clone();
        let (plan, host) = (plan.to_string(), host.to_string());
        let due = due.to_rfc3339();
        let row = on(&self.rt, async move {
            client
                .query_opt(
                    "INSERT INTO aitbc_flow_ticks (plan, due, host) VALUES ($1, ($2::text)::timestamptz, $3)
                     ON CONFLICT (plan, due) DO NOTHING RETURNING host",
                    &[&plan, &due, &host],
                )
                .await
        })
        .map_err(|e| self.err(&e))?;
        Ok(row.is_some())
    }

    /// Runs that hold a plan's lock (`run --lock`), whose lease is absent or older than the lease
    /// period, and whose journal's last record is not its `end`: their process died. (One index
    /// lookup per run — its last record — so that the look at each pass stays cheap with a long
    /// history.) A run whose journal has no record yet in the database is not among them: nothing
    /// was sent for it, since the intent before a submit is durable and so copied first.
    pub(super) fn lapsed(&self) -> Result<Vec<Orphan>, StoreError> {
        let client = self.client.clone();
        let lease = self.lease.as_secs_f64();
        let rows = on(&self.rt, async move {
            client
                .query(
                    "SELECT p.run_id, p.plan FROM aitbc_flow_run_plans p
                     WHERE p.locked
                       AND NOT EXISTS (SELECT 1 FROM aitbc_flow_locks l
                           WHERE l.plan = p.plan
                             AND l.renewed_at >= now() - make_interval(secs => $1))
                       AND (SELECT j.record NOT LIKE '{\"end\"%'
                            FROM aitbc_flow_journal j WHERE j.run_id = p.run_id
                            ORDER BY j.seq DESC LIMIT 1)
                     ORDER BY p.started_at, p.run_id",
                    &[&lease],
                )
                .await
        })
        .map_err(|e| self.err(&e))?;
        Ok(rows
            .into_iter()
            .map(|r| Orphan {
                run_id: r.get(0),
                plan: r.get(1),
            })
            .collect())
    }

    /// The lease period every holder is judged by.
    pub(super) fn lease_period(&self) -> Duration {
        self.lease
    }
}
