//! Repeating a run: `run PLAN --vars-from RUN-ID` starts from the vars an earlier run's report
//! recorded, and every report records the command line's overrides ([`RunInputs`]).
//!
//! A secret's value is never stored: a var that held one is `***` in the report. Such a var cannot be
//! reused (the run would send `***`), so it must be given again with `--set`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::history;
use super::model::RunInputs;
use crate::plan::CheckedPlan;
use crate::plan::files_read::{FileRead, FileRole};

/// The text a redacted secret becomes.
pub const REDACTED: &str = "***";

/// Why an earlier run's vars cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VarsFromError {
    /// No such run.
    #[error(transparent)]
    History(#[from] history::HistoryError),
    /// The report is unreadable.
    #[error("run `{0}` has no readable report.json")]
    Unreadable(String),
    /// The report's vars are not a mapping.
    #[error("run `{0}` recorded no vars")]
    NoVars(String),
    /// Vars that held secrets.
    #[error(
        "run `{run}` recorded {names} as `***`: {it} held a secret, whose value is never stored; give {it} again with {sets}"
    )]
    Redacted {
        /// The run.
        run: String,
        /// `vars.a`, `vars.b.c`.
        names: String,
        /// "it" or "them".
        it: &'static str,
        /// `--set a=…`.
        sets: String,
    },
}

/// The vars recorded by run `run_id` under `runs_dir`, to be used as the base vars of a new run.
/// Refuses when a var was redacted and `set` (the new run's `--set` keys) does not give it again.
pub fn vars_from(
    runs_dir: &Path,
    run_id: &str,
    set: &[(String, String)],
) -> Result<Map<String, Value>, VarsFromError> {
    let dir = history::find_run(runs_dir, run_id)?;
    let report =
        history::read_report(&dir).ok_or_else(|| VarsFromError::Unreadable(run_id.into()))?;
    let Value::Object(vars) = report.vars else {
        return Err(VarsFromError::NoVars(run_id.into()));
    };
    let mut redacted = Vec::new();
    redacted_paths(&Value::Object(vars.clone()), String::new(), &mut redacted);
    // A `--set` of the var itself or of a mapping above it replaces the redacted value.
    redacted.retain(|path| {
        !set.iter().any(|(k, _)| {
            path == k
                || path
                    .strip_prefix(k.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    });
    if !redacted.is_empty() {
        let names = redacted
            .iter()
            .map(|p| format!("`vars.{p}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let sets = redacted
            .iter()
            .map(|p| format!("`--set {p}=…`"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(VarsFromError::Redacted {
            run: run_id.into(),
            names,
            it: if redacted.len() == 1 { "it" } else { "them" },
            sets,
        });
    }
    Ok(vars)
}

/// Dotted paths of the string values that contain a redaction.
fn redacted_paths(v: &Value, path: String, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::String(s) if s.contains(REDACTED) => out.push(path),
        Value::Object(m) => m.iter().for_each(|(k, x)| redacted_paths(x, join(k), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| redacted_paths(x, join(&i.to_string()), out)),
        _ => {}
    }
}

/// Writes `vars` to a temporary file that a `--vars FILE` can read (JSON is YAML); removed on drop.
pub struct VarsFile {
    path: PathBuf,
}

impl VarsFile {
    /// Writes the file.
    pub fn write(vars: &Map<String, Value>) -> std::io::Result<VarsFile> {
        let r: [u8; 6] = rand::random();
        let path = std::env::temp_dir().join(format!(
            "aitbc-flow-vars-{}-{}.json",
            std::process::id(),
            hex::encode(r)
        ));
        let text = serde_json::to_vec(vars).map_err(std::io::Error::other)?;
        std::fs::write(&path, text)?;
        Ok(VarsFile { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Copies the file into the run directory as `vars-from.json` (absolute path returned), where it
    /// stays for `resume`; the temporary file is removed.
    pub fn keep_in(self, run_dir: &Path) -> std::io::Result<PathBuf> {
        let kept = kept_path(run_dir)?;
        std::fs::copy(&self.path, &kept)?;
        Ok(kept)
    }

    /// The files a load read, with this one named as [`VarsFile::keep_in`] keeps it in `run_dir` —
    /// the path the journal gives `resume` — so that a resume on another host, which rebuilds the
    /// run folder from the store, finds its copy by that name.
    pub fn named_as_kept(
        &self,
        files: &[FileRead],
        run_dir: &Path,
    ) -> std::io::Result<Vec<FileRead>> {
        let kept = kept_path(run_dir)?;
        Ok(files
            .iter()
            .map(|f| {
                let mut f = f.clone();
                if f.role == FileRole::Vars && f.given.as_deref() == Some(self.path.as_path()) {
                    f.given = Some(kept.clone());
                }
                f
            })
            .collect())
    }
}

/// Where the base vars of a `--vars-from` run are kept in its run directory (absolute).
fn kept_path(run_dir: &Path) -> std::io::Result<PathBuf> {
    std::path::absolute(run_dir.join(VARS_FROM_FILE))
}

/// The base vars of a `--vars-from` run, in its run directory.
pub const VARS_FROM_FILE: &str = "vars-from.json";

impl Drop for VarsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The record of the command line's overrides (`--set` values with secrets redacted).
pub fn inputs(
    plan: &CheckedPlan,
    set: &[(String, String)],
    vars_files: &[PathBuf],
    vars_from: Option<&str>,
    cache: bool,
) -> RunInputs {
    RunInputs {
        set: set
            .iter()
            .map(|(k, v)| plan.redact(&format!("{k}={v}")))
            .collect(),
        vars_files: vars_files.iter().map(|p| p.display().to_string()).collect(),
        vars_from: vars_from.map(str::to_string),
        cache,
        balance_check: true,
        from_run: None,
        only: Vec::new(),
        skip: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacted_vars_are_found_by_path() {
        let mut out = Vec::new();
        let v = json!({"a": "***", "b": {"c": "x *** y", "d": "fine"}, "e": ["ok", "***"], "f": 3});
        redacted_paths(&v, String::new(), &mut out);
        assert_eq!(out, vec!["a", "b.c", "e.1"]);
    }
}
