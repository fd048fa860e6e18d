//! Run history: the run directories under a runs folder, read from their `report.json`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::model::{Report, RunStatus};

/// One run, as `runs list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunEntry {
    /// The run's id (its directory's name).
    pub run_id: String,
    /// The plan's name.
    pub plan: String,
    /// How it ended.
    pub status: RunStatus,
    /// When it started.
    pub started_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Jobs submitted.
    pub jobs: u32,
    /// Steps failed.
    pub failed: u32,
    /// The run directory.
    pub dir: PathBuf,
}

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The runs folder could not be listed.
    #[error("cannot read the runs folder {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No run with that id.
    #[error("no run `{0}` in {1}")]
    NotFound(String, PathBuf),
}

/// Reads a run's report.
pub fn read_report(dir: &Path) -> Option<Report> {
    let text = std::fs::read_to_string(dir.join("report.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Every run under `runs_dir` with a readable report, newest first.
pub fn list_runs(runs_dir: &Path) -> Result<Vec<RunEntry>, HistoryError> {
    let rd = match std::fs::read_dir(runs_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(HistoryError::Io {
                path: runs_dir.to_path_buf(),
                source: e,
            });
        }
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        if let Some(r) = read_report(&dir) {
            out.push(RunEntry {
                run_id: r.run_id,
                plan: r.plan,
                status: r.status,
                started_at: r.started_at,
                finished_at: r.finished_at,
                jobs: r.totals.jobs,
                failed: r.totals.failed,
                dir,
            });
        }
    }
    out.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then(b.run_id.cmp(&a.run_id))
    });
    Ok(out)
}

/// The directory of run `id`.
pub fn find_run(runs_dir: &Path, id: &str) -> Result<PathBuf, HistoryError> {
    let dir = runs_dir.join(id);
    if id.contains('/') || id.contains("..") || !dir.join("report.json").is_file() {
        return Err(HistoryError::NotFound(
            id.to_string(),
            runs_dir.to_path_buf(),
        ));
    }
    Ok(dir)
}

/// Removes all but the newest `keep` runs (per the whole folder); returns the removed ids. Runs still
/// going (status `running`) are never removed.
pub fn prune(runs_dir: &Path, keep: usize) -> Result<Vec<String>, HistoryError> {
    let runs = list_runs(runs_dir)?;
    let mut removed = Vec::new();
    for r in runs.into_iter().skip(keep) {
        if r.status == RunStatus::Running {
            continue;
        }
        std::fs::remove_dir_all(&r.dir).map_err(|e| HistoryError::Io {
            path: r.dir.clone(),
            source: e,
        })?;
        removed.push(r.run_id);
    }
    Ok(removed)
}
