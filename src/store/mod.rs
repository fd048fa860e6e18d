//! Where shared state lives: the plan locks and the run history, behind one [`Store`] trait.
//!
//! The default is the run folder itself ([`files::FileStore`]: `flock` under `RUNS/.locks/`, history
//! from each run's `report.json`), so nothing changes on one machine. `--store postgres://…` (or
//! `AITBC_FLOW_STORE`) chooses [`postgres::PgStore`], shared by every host that names the same
//! database (docs/scaling.md). A store URL is shown only through [`redact`]: its password never is.

pub mod blobs;
pub mod files;
mod locked_file;
pub mod pacing;
pub mod pacing_pg;
pub mod postgres;
pub mod rebuild;
pub mod reservations;
pub mod reservations_pg;
pub mod ticks;
pub mod tls;

use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::exec::journal::Mirror;
use crate::exec::lock::{LockInfo, RunLock};
use crate::report::Report;
use crate::report::history::RunEntry;

/// A lock held through a store; released on drop.
#[derive(Debug)]
pub enum HeldLock {
    /// A `flock` in the run folder.
    File(RunLock),
    /// A lease row in PostgreSQL, renewed by a heartbeat while held.
    Lease(postgres::Lease),
}

impl HeldLock {
    /// The fencing token of a lease (`None` for a file lock, which the kernel fences).
    pub fn token(&self) -> Option<i64> {
        match self {
            HeldLock::File(_) => None,
            HeldLock::Lease(l) => Some(l.token()),
        }
    }

    /// Whether the lock is still this holder's: a lease whose renewal found another holder's token
    /// is not (a file lock always is).
    pub fn still_held(&self) -> bool {
        match self {
            HeldLock::File(_) => true,
            HeldLock::Lease(l) => l.still_held(),
        }
    }
}

/// What one attempt to take a plan's lock gave.
#[derive(Debug)]
pub enum LockAttempt {
    /// Taken; with what a stale holder said and why it was stale, when one was taken over.
    Taken(HeldLock, Option<(Option<LockInfo>, String)>),
    /// Another run holds it.
    Held(Option<LockInfo>),
}

/// Why the store could not be used. Messages name the store by its redacted URL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not one this build knows.
    #[error("unknown store `{0}`: use a postgres://… URL, or leave --store out for the run folder")]
    Unknown(String),
    /// The database could not be reached or answered with an error.
    #[error("store {url}: {message}")]
    Database {
        /// The redacted URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The file backend failed.
    #[error("{0}")]
    Files(String),
    /// No such run in the store's history.
    #[error("no run `{0}` in store {1}")]
    NoRun(String, String),
}

/// A file a run read, as the store kept it.
#[derive(Clone, Debug)]
pub struct StoredFile {
    /// `plan`, `vars` or `prompt` ([`crate::plan::files_read::FileRole::word`]).
    pub role: String,
    /// Relative to the plan's repository root, or absolute when it was outside it.
    pub path: String,
    /// The path the run was given (the plan file and `--vars` files).
    pub given: Option<String>,
    /// SHA-256 of `bytes`, hex (checked when read back).
    pub sha256: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A run whose host died: it held its plan's lock, the lease lapsed, its journal has no end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    /// The run.
    pub run_id: String,
    /// Its plan's name.
    pub plan: String,
}

/// Shared state of runs: locks and history.
pub trait Store: Send + Sync {
    /// The store, for messages (redacted).
    fn describe(&self) -> String;
    /// Tries once to take the lock of `me.plan` for `me`.
    fn try_lock(&self, me: &LockInfo) -> Result<LockAttempt, StoreError>;
    /// Records the finished run in `run_dir` (its `report.json`) in the history.
    fn record_run(&self, run_dir: &Path) -> Result<(), StoreError>;
    /// Every recorded run, newest first.
    fn list_runs(&self) -> Result<Vec<RunEntry>, StoreError>;
    /// The report of run `id` (`latest`: the newest run) and where its folder is (on the host that
    /// ran it).
    fn find_report(&self, id: &str) -> Result<(Report, PathBuf), StoreError>;
    /// The runs `runs prune --keep KEEP` removes: all but the newest `keep`, never one still running.
    fn to_prune(&self, keep: usize) -> Result<Vec<RunEntry>, StoreError> {
        Ok(crate::report::history::prunable(self.list_runs()?, keep))
    }
    /// Removes `runs` from the history (their folders are the caller's).
    fn forget(&self, runs: &[RunEntry]) -> Result<(), StoreError>;
    /// The wallet reservations of run `run_id`, shared with every other run of this store
    /// (`exec::reserve`); released when the returned book is dropped.
    fn reservations(
        &self,
        run_id: &str,
    ) -> Result<Option<Arc<dyn crate::exec::reserve::Reservations>>, StoreError>;
    /// The pacing windows of the coordinator at `base_url`, shared with every other run of this
    /// store (`client::pace::SharedWindow`): files on this host, rows in the database.
    fn pacing(&self, base_url: &str) -> Arc<dyn crate::client::pace::SharedWindow>;
    /// Where the journal of run `run_id` (of plan `plan`, holding `lock` if any) is copied besides its
    /// file, each batch written only while `lock` is still this holder's (its fencing token); `None`
    /// when the file is the whole journal (the run folder store).
    fn journal_mirror(
        &self,
        _run_id: &str,
        _plan: &str,
        _lock: Option<&HeldLock>,
    ) -> Result<Option<Arc<dyn Mirror>>, StoreError> {
        Ok(None)
    }
    /// Keeps the files run `run_id` of plan `plan` read (content-addressed) and that it is a run of
    /// that plan (`locked`: holding its lock), so that another host can resume it. The run folder
    /// store keeps nothing: the files are on this host.
    fn keep_run_files(
        &self,
        _run_id: &str,
        _plan: &str,
        _locked: bool,
        _files: &[crate::plan::files_read::FileRead],
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// The files kept for run `run_id` (none for the run folder store).
    fn run_files(&self, _run_id: &str) -> Result<Vec<StoredFile>, StoreError> {
        Ok(Vec::new())
    }
    /// The journal of run `run_id` as the store has it, one record's text per line, in order;
    /// `None` when the store keeps no copy (the run folder store) or has none of this run.
    fn journal_records(&self, _run_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        Ok(None)
    }
    /// Claims the due time `due` of `plan` for this scheduler (`host`): `true` when it is this
    /// scheduler's to run. One host's scheduler claims everything.
    fn claim_tick(
        &self,
        _plan: &str,
        _due: chrono::DateTime<chrono::Utc>,
        _host: &str,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Runs whose host died mid-run, for a scheduler to resume (none on one host: its runs are
    /// resumed there).
    fn orphans(&self) -> Result<Vec<Orphan>, StoreError> {
        Ok(Vec::new())
    }
    /// The lease period, when locks are leases (how often a scheduler looks for orphans).
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }
    /// Whether runs of this store can be resumed on another host.
    fn shared(&self) -> bool {
        false
    }
}

/// Opens the store named by `url` (`None`: the run folder `runs_dir`).
pub fn open(url: Option<&str>, runs_dir: &Path) -> Result<Box<dyn Store>, StoreError> {
    match url.map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(Box::new(files::FileStore::new(runs_dir))),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(Box::new(postgres::PgStore::connect(u)?))
        }
        Some(u) => Err(StoreError::Unknown(redact(u))),
    }
}

/// The URL with its password (the user-info after `:`) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = authority.split_at(at);
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => userinfo.to_string(),
    };
    // A password given as a query parameter is hidden too.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{user}{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn the_password_is_never_shown() {
        assert_eq!(
            redact("postgres://flow:s3cret@db:5432/flow"),
            "postgres://flow:***@db:5432/flow"
        );
        assert_eq!(
            redact("postgres://flow@db/flow?password=s3cret&sslmode=disable"),
            "postgres://flow@db/flow?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://db/flow"), "postgres://db/flow");
        assert!(!redact("postgresql://a:p@ss@h/d").contains("ss@h/d?"));
        assert!(!redact("postgresql://a:p@ss@h/d").contains("p@ss"));
    }
}
