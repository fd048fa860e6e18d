//! The files a run read, kept in PostgreSQL content-addressed: each file's bytes once in
//! `aitbc_flow_blobs` (by SHA-256, inserted `ON CONFLICT DO NOTHING`, so a prompt shared by a
//! thousand runs is kept once) and one `aitbc_flow_run_files` row per run and file (its role, its
//! path relative to the plan's repository, the path the run was given). With them, `aitbc_flow_run_plans`
//! says which plan a run is of and whether it holds the plan's lock, for the scheduler's takeover
//! ([`super::ticks`]). Secret files are never kept: the checked plan does not list them.

use super::postgres::{PgStore, describe, on};
use super::{StoreError, StoredFile};
use crate::plan::files_read::FileRead;

impl PgStore {
    /// Keeps `files` for run `run_id` of `plan`, in one transaction.
    pub(super) fn keep_files(
        &self,
        run_id: &str,
        plan: &str,
        locked: bool,
        files: &[FileRead],
    ) -> Result<(), StoreError> {
        let client = self.client.clone();
        let (run_id, plan) = (run_id.to_string(), plan.to_string());
        let shas: Vec<String> = files.iter().map(|f| f.sha256.clone()).collect();
        let bytes: Vec<Vec<u8>> = files.iter().map(|f| f.bytes.to_vec()).collect();
        let roles: Vec<String> = files.iter().map(|f| f.role.word().to_string()).collect();
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let given: Vec<Option<String>> = files
            .iter()
            .map(|f| f.given.as_ref().map(|g| g.display().to_string()))
            .collect();
        on(&self.rt, async move {
            // One statement: the blobs, then the rows that name them (their foreign key is checked
            // at the statement's end, when the blobs are in).
            client
                .execute(
                    "WITH blobs AS (
                         INSERT INTO aitbc_flow_blobs (sha256, bytes)
                         SELECT * FROM unnest($3::text[], $4::bytea[])
                         ON CONFLICT (sha256) DO NOTHING),
                     files AS (
                         INSERT INTO aitbc_flow_run_files (run_id, role, path, given, sha256)
                         SELECT $1, * FROM unnest($5::text[], $6::text[], $7::text[], $3::text[])
                         ON CONFLICT (run_id, role, path) DO NOTHING)
                     INSERT INTO aitbc_flow_run_plans (run_id, plan, locked) VALUES ($1, $2, $8)
                     ON CONFLICT (run_id) DO NOTHING",
                    &[
                        &run_id, &plan, &shas, &bytes, &roles, &paths, &given, &locked,
                    ],
                )
                .await
        })
        .map(|_| ())
        .map_err(|e| self.err(&e))
    }

    /// The files kept for run `run_id`, their bytes checked against their hash.
    pub(super) fn files_of(&self, run_id: &str) -> Result<Vec<StoredFile>, StoreError> {
        let client = self.client.clone();
        let id = run_id.to_string();
        let rows = on(&self.rt, async move {
            client
                .query(
                    "SELECT f.role, f.path, f.given, f.sha256, b.bytes
                     FROM aitbc_flow_run_files f JOIN aitbc_flow_blobs b USING (sha256)
                     WHERE f.run_id = $1 ORDER BY f.role, f.path",
                    &[&id],
                )
                .await
        })
        .map_err(|e| self.err(&e))?;
        rows.into_iter()
            .map(|r| {
                let file = StoredFile {
                    role: r.get(0),
                    path: r.get(1),
                    given: r.get(2),
                    sha256: r.get(3),
                    bytes: r.get(4),
                };
                if crate::plan::check::content_hash(&file.bytes) != file.sha256 {
                    return Err(StoreError::Database {
                        url: self.url.clone(),
                        message: format!(
                            "the kept copy of {} (run {run_id}) does not match its SHA-256 {}",
                            file.path, file.sha256
                        ),
                    });
                }
                Ok(file)
            })
            .collect()
    }

    /// The journal of run `run_id` as the database has it, in order (`None` when it has none).
    pub(super) fn journal_of(&self, run_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let client = self.client.clone();
        let id = run_id.to_string();
        let rows = on(&self.rt, async move {
            client
                .query(
                    "SELECT record FROM aitbc_flow_journal WHERE run_id = $1 ORDER BY seq",
                    &[&id],
                )
                .await
        })
        .map_err(|e| StoreError::Database {
            url: self.url.clone(),
            message: describe(&e),
        })?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.into_iter().map(|r| r.get(0)).collect()))
    }
}
