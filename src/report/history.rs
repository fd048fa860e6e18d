//! Run history: the run directories under a runs folder, read from their `report.json`.
//!
//! A runs folder outlives the build that wrote it: a report of another format version than the one this
//! build writes is left unread (with a warning naming the file and both versions) rather than read as if
//! its fields meant what they mean here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{Report, RunStatus};

/// One run, as `runs list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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

impl RunEntry {
    /// The entry of a run from its report; `dir` is where its folder is (on the host that ran it).
    pub fn from_report(r: &Report, dir: PathBuf) -> RunEntry {
        RunEntry {
            run_id: r.run_id.clone(),
            plan: r.plan.clone(),
            status: r.status,
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            jobs: r.totals.jobs,
            failed: r.totals.failed,
            dir,
        }
    }
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
    /// `latest` in a folder without runs.
    #[error("no runs in {0}, so no latest run")]
    NoRuns(PathBuf),
}

/// The report format this build reads: the `report_version` that `writers.rs` writes.
pub const REPORT_VERSION: u32 = 1;

/// Reads a run's report; `None` when it is missing, damaged, or of another format version (which is
/// also logged as a warning).
pub fn read_report(dir: &Path) -> Option<Report> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).ok()?;
    let found = match serde_json::from_str::<Report>(&text) {
        Ok(r) if r.report_version == REPORT_VERSION => return Some(r),
        Ok(r) => Value::from(r.report_version),
        // A report of another format may not parse here at all: tell that apart from a damaged file.
        Err(_) => report_version(&text).filter(|v| *v != REPORT_VERSION)?,
    };
    tracing::warn!(
        "{}: report format version {found}, but aitbc-flow {} reads report format version \
         {REPORT_VERSION} only, so it is not read",
        path.display(),
        env!("CARGO_PKG_VERSION")
    );
    None
}

/// What `runs list` shows of a report: read without building its steps (the parser skips them), so
/// that listing 1,000 runs reads their files but allocates next to nothing for them.
#[derive(Deserialize)]
struct Head {
    report_version: u32,
    run_id: String,
    plan: String,
    status: RunStatus,
    started_at: String,
    finished_at: Option<String>,
    totals: HeadTotals,
}

#[derive(Deserialize)]
struct HeadTotals {
    jobs: u32,
    failed: u32,
}

/// A run as `runs list` shows it, from its report's head; `None` as for [`read_report`] (another
/// version is warned about the same way).
fn read_entry(dir: PathBuf) -> Option<RunEntry> {
    let bytes = std::fs::read(dir.join("report.json")).ok()?;
    match serde_json::from_slice::<Head>(&bytes) {
        Ok(h) if h.report_version == REPORT_VERSION => Some(RunEntry {
            run_id: h.run_id,
            plan: h.plan,
            status: h.status,
            started_at: h.started_at,
            finished_at: h.finished_at,
            jobs: h.totals.jobs,
            failed: h.totals.failed,
            dir,
        }),
        // Another version, or damaged: the full reader tells them apart and warns.
        _ => read_report(&dir).map(|r| RunEntry::from_report(&r, dir)),
    }
}

/// The `report_version` of a report's text, read without the rest of it.
fn report_version(text: &str) -> Option<Value> {
    #[derive(Deserialize)]
    struct Versioned {
        report_version: Value,
    }
    serde_json::from_str::<Versioned>(text)
        .ok()
        .map(|v| v.report_version)
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
        out.extend(read_entry(dir));
    }
    out.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then(b.run_id.cmp(&a.run_id))
    });
    Ok(out)
}

/// The directory of run `id`; `latest` is the newest run with a readable report.
pub fn find_run(runs_dir: &Path, id: &str) -> Result<PathBuf, HistoryError> {
    if id == "latest" && !runs_dir.join(id).is_dir() {
        return list_runs(runs_dir)?
            .into_iter()
            .next()
            .map(|r| r.dir)
            .ok_or_else(|| HistoryError::NoRuns(runs_dir.to_path_buf()));
    }
    let dir = runs_dir.join(id);
    if id.contains('/') || id.contains("..") || !dir.join("report.json").is_file() {
        return Err(HistoryError::NotFound(
            id.to_string(),
            runs_dir.to_path_buf(),
        ));
    }
    Ok(dir)
}

/// The runs that `prune(runs_dir, keep)` would remove: all but the newest `keep`, less the runs still
/// going (status `running`), which are never removed.
pub fn to_prune(runs_dir: &Path, keep: usize) -> Result<Vec<RunEntry>, HistoryError> {
    Ok(prunable(list_runs(runs_dir)?, keep))
}

/// Of `runs` (newest first), those that pruning to the newest `keep` removes: never one still going.
pub fn prunable(runs: Vec<RunEntry>, keep: usize) -> Vec<RunEntry> {
    runs.into_iter()
        .skip(keep)
        .filter(|r| r.status != RunStatus::Running)
        .collect()
}

/// Removes all but the newest `keep` runs (per the whole folder); returns the removed ids. Runs still
/// going (status `running`) are never removed.
pub fn prune(runs_dir: &Path, keep: usize) -> Result<Vec<String>, HistoryError> {
    remove(runs_dir, &to_prune(runs_dir, keep)?)
}

/// Removes the folders of `runs` that are in `runs_dir` (a run of another host, in a shared history,
/// has none here and is left alone); returns the ids whose folder was removed.
pub fn remove(runs_dir: &Path, runs: &[RunEntry]) -> Result<Vec<String>, HistoryError> {
    let mut removed = Vec::new();
    for r in runs {
        let dir = runs_dir.join(&r.run_id);
        if r.run_id.contains('/') || r.run_id.contains("..") || !dir.is_dir() {
            continue;
        }
        std::fs::remove_dir_all(&dir).map_err(|e| HistoryError::Io {
            path: dir.clone(),
            source: e,
        })?;
        removed.push(r.run_id.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::Totals;

    fn report(run_id: &str) -> Report {
        Report {
            report_version: REPORT_VERSION,
            run_id: run_id.into(),
            plan: "p".into(),
            plan_path: "p.yaml".into(),
            plan_hash: "h".into(),
            runner_version: env!("CARGO_PKG_VERSION").into(),
            plan_git: None,
            coordinator: "http://x".into(),
            embedded_coordinator: true,
            status: RunStatus::Succeeded,
            exit_code: 0,
            started_at: format!("2026-12-01T00:00:0{}Z", run_id.len()),
            finished_at: None,
            issues: Vec::new(),
            vars: Value::Null,
            inputs: Default::default(),
            steps: Vec::new(),
            totals: Totals::default(),
        }
    }

    fn write(runs: &Path, id: &str, report: &Value) {
        let dir = runs.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("report.json"), report.to_string()).unwrap();
    }

    #[test]
    fn a_report_of_another_version_is_not_read() {
        let runs = tempfile::tempdir().unwrap();
        let ours = serde_json::to_value(report("a")).unwrap();
        write(runs.path(), "a", &ours);
        // Newer, in a shape this build could read: the version alone must keep it out.
        let mut newer = serde_json::to_value(report("bb")).unwrap();
        newer["report_version"] = 2.into();
        write(runs.path(), "bb", &newer);
        // Newer, in a shape this build cannot read.
        write(
            runs.path(),
            "ccc",
            &serde_json::json!({"report_version": 3, "run": {"id": "ccc"}}),
        );
        // Damaged.
        std::fs::create_dir_all(runs.path().join("dddd")).unwrap();
        std::fs::write(runs.path().join("dddd/report.json"), "{\"report_ver").unwrap();

        assert!(read_report(&runs.path().join("a")).is_some());
        for id in ["bb", "ccc", "dddd"] {
            assert!(read_report(&runs.path().join(id)).is_none(), "{id}");
        }
        assert_eq!(
            report_version("{\"report_version\": 3, \"x\": [1]}"),
            Some(3.into())
        );
        assert_eq!(report_version("{\"report_ver"), None);
        let listed: Vec<String> = list_runs(runs.path())
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(listed, ["a"]);
        // A run that cannot be read is not pruned either.
        assert_eq!(prune(runs.path(), 0).unwrap(), ["a"]);
        assert!(runs.path().join("bb/report.json").is_file());
    }
}
