//! The default store: the run folder of this host (the `flock` of `exec::lock`, the history of
//! `report::history`), wrapped as it is.

use std::path::{Path, PathBuf};

use crate::report::Report;

use super::{HeldLock, LockAttempt, Store, StoreError};
use crate::exec::lock::{self, Attempt, LockInfo};
use crate::report::history::{self, RunEntry};

/// The run folder as a store.
#[derive(Debug)]
pub struct FileStore {
    runs_dir: PathBuf,
}

impl FileStore {
    /// The store of `runs_dir`.
    pub fn new(runs_dir: &Path) -> FileStore {
        FileStore {
            runs_dir: runs_dir.to_path_buf(),
        }
    }
}

impl Store for FileStore {
    fn describe(&self) -> String {
        self.runs_dir.display().to_string()
    }

    fn try_lock(&self, me: &LockInfo) -> Result<LockAttempt, StoreError> {
        let path = lock::lock_path(&self.runs_dir, &me.plan);
        match lock::try_acquire(&path, me) {
            Ok(Attempt::Taken(l, stale)) => Ok(LockAttempt::Taken(HeldLock::File(l), stale)),
            Ok(Attempt::Held(info)) => Ok(LockAttempt::Held(info)),
            Err(e) => Err(StoreError::Files(e.to_string())),
        }
    }

    fn record_run(&self, _run_dir: &Path) -> Result<(), StoreError> {
        // The run's own report.json is its record here.
        Ok(())
    }

    fn list_runs(&self) -> Result<Vec<RunEntry>, StoreError> {
        history::list_runs(&self.runs_dir).map_err(|e| StoreError::Files(e.to_string()))
    }

    fn find_report(&self, id: &str) -> Result<(Report, PathBuf), StoreError> {
        let dir =
            history::find_run(&self.runs_dir, id).map_err(|e| StoreError::Files(e.to_string()))?;
        match history::read_report(&dir) {
            Some(r) => Ok((r, dir)),
            None => Err(StoreError::Files(format!(
                "run {id} has no readable report"
            ))),
        }
    }

    fn reservations(
        &self,
        run_id: &str,
    ) -> Result<Option<std::sync::Arc<dyn crate::exec::reserve::Reservations>>, StoreError> {
        Ok(Some(std::sync::Arc::new(
            super::reservations::FileReservations::new(&self.runs_dir, run_id),
        )))
    }

    fn pacing(&self, base_url: &str) -> std::sync::Arc<dyn crate::client::pace::SharedWindow> {
        // Per user, not per run folder: the runs of every folder on this host pace together.
        std::sync::Arc::new(super::pacing::FilePacing::new(
            &super::pacing::user_dir(&self.runs_dir),
            base_url,
        ))
    }

    fn forget(&self, _runs: &[RunEntry]) -> Result<(), StoreError> {
        // A run's folder is its record here: removing the folder forgets it.
        Ok(())
    }
}
