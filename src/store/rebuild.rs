//! A run's folder rebuilt on this host from a shared store, for `resume RUN-ID --store …` on a host
//! that did not start the run (or whose copy is behind the database's): `journal.jsonl` from the
//! store's journal (in order), and the files the run read under `RUN/.plan/` in their layout relative
//! to the plan's repository root (so a prompt file is where the plan's folder says it is), with a
//! `.plan/files.json` that maps the paths the journal names onto the copies. Secrets are not in the
//! store; the resuming host's environment gives them (docs/scaling.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Store, StoredFile};
use crate::plan::files_read::stays_inside;

/// The folder of a run folder that holds the copies of the files the run read.
pub const COPY_DIR: &str = ".plan";

/// The map from the paths the journal names to the copies, in [`COPY_DIR`].
const MAP_FILE: &str = "files.json";

/// One file placed in [`COPY_DIR`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Placed {
    role: String,
    /// Relative to the repository root (or absolute, outside it), as stored.
    path: String,
    /// The path the run was given, as its journal names it.
    given: Option<String>,
    /// The copy, relative to the run folder.
    copy: PathBuf,
}

/// What [`sync`] did to the run folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synced {
    /// The folder already had every record the store has (or the store keeps no journal).
    Unchanged,
    /// The journal was behind the store's (the run went on on another host) and was rewritten.
    Journal,
    /// The folder was not here: it was rebuilt from the store.
    Folder,
}

/// The number of records in the journal file of `dir` (its non-empty lines), `None` without one.
pub fn local_records(dir: &Path) -> Option<usize> {
    let text = std::fs::read(dir.join("journal.jsonl")).ok()?;
    Some(
        text.split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count(),
    )
}

/// Brings the folder `dir` of run `run_id` up to the store: rebuilds it when it is missing, rewrites
/// its journal when the store has more records than the file. `Err` with a message naming the run.
pub fn sync(store: &dyn Store, run_id: &str, dir: &Path) -> Result<Synced, String> {
    if !store.shared() {
        return Ok(Synced::Unchanged);
    }
    let records = store.journal_records(run_id).map_err(|e| e.to_string())?;
    let here = local_records(dir);
    let Some(records) = records else {
        return Ok(Synced::Unchanged);
    };
    match here {
        Some(n) if n >= records.len() => Ok(Synced::Unchanged),
        Some(_) => {
            write_journal(dir, &records)?;
            Ok(Synced::Journal)
        }
        None => {
            let files = store.run_files(run_id).map_err(|e| e.to_string())?;
            if !files.iter().any(|f| f.role == "plan") {
                return Err(format!(
                    "{} has the journal of run {run_id} but not its plan file (a run started \
                     without the store's copy of its files, or by an older aitbc-flow): resume it on \
                     the host that started it",
                    store.describe()
                ));
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            place_files(dir, &files)?;
            write_journal(dir, &records)?;
            Ok(Synced::Folder)
        }
    }
}

/// Writes the journal atomically (a temporary file, synced, renamed).
fn write_journal(dir: &Path, records: &[String]) -> Result<(), String> {
    let path = dir.join("journal.jsonl");
    let tmp = dir.join(".journal.jsonl.rebuild");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        for r in records {
            f.write_all(r.trim_end_matches('\n').as_bytes())?;
            f.write_all(b"\n")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes each file under [`COPY_DIR`] and the map of their paths.
fn place_files(dir: &Path, files: &[StoredFile]) -> Result<(), String> {
    let copies = dir.join(COPY_DIR);
    let mut placed = Vec::with_capacity(files.len());
    for f in files {
        let rel = if stays_inside(&f.path) {
            PathBuf::from(&f.path)
        } else {
            // Outside the repository (a `--vars` file given by an absolute path): kept by its
            // hash, under its own name.
            let name = Path::new(&f.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| stays_inside(n))
                .unwrap_or_else(|| "file".into());
            PathBuf::from(".outside")
                .join(&f.sha256[..f.sha256.len().min(16)])
                .join(name)
        };
        let target = copies.join(&rel);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, &f.bytes)
        };
        write().map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        placed.push(Placed {
            role: f.role.clone(),
            path: f.path.clone(),
            given: f.given.clone(),
            copy: PathBuf::from(COPY_DIR).join(rel),
        });
    }
    // The copy is the plan's repository: a prompt file is read from inside it, as on the first host
    // (the marker is not a git work tree, so the report names no commit).
    let marker = copies.join(".git");
    let map = serde_json::to_vec_pretty(&placed).map_err(|e| e.to_string())?;
    std::fs::write(&marker, crate::plan::files_read::COPY_MARKER)
        .and_then(|()| std::fs::write(copies.join(MAP_FILE), map))
        .map_err(|e| format!("cannot write {}: {e}", copies.display()))
}

/// The plan path and `--vars` files of a journal, mapped onto the copies in the run folder `dir`
/// when the folder was rebuilt from a store (unchanged otherwise).
pub fn map_paths(dir: &Path, plan_path: &str, vars_files: &[PathBuf]) -> (String, Vec<PathBuf>) {
    let placed: Vec<Placed> = std::fs::read(dir.join(COPY_DIR).join(MAP_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if placed.is_empty() {
        return (plan_path.to_string(), vars_files.to_vec());
    }
    let find = |role: &str, given: &str| {
        placed
            .iter()
            .find(|p| p.role == role && p.given.as_deref() == Some(given))
            .map(|p| dir.join(&p.copy))
    };
    let plan = find("plan", plan_path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| plan_path.to_string());
    let vars = vars_files
        .iter()
        .map(|v| find("vars", &v.display().to_string()).unwrap_or_else(|| v.clone()))
        .collect();
    (plan, vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_placed_in_their_layout_and_the_journals_paths_map_onto_them() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("R1");
        std::fs::create_dir_all(&run).unwrap();
        let files = vec![
            StoredFile {
                role: "plan".into(),
                path: "plans/p.yaml".into(),
                given: Some("/host-a/repo/plans/p.yaml".into()),
                sha256: "aa".repeat(32),
                bytes: b"name: p".to_vec(),
            },
            StoredFile {
                role: "prompt".into(),
                path: "prompts/x.md".into(),
                given: None,
                sha256: "bb".repeat(32),
                bytes: b"hello".to_vec(),
            },
            StoredFile {
                role: "vars".into(),
                path: "/tmp/elsewhere/v.yaml".into(),
                given: Some("/tmp/elsewhere/v.yaml".into()),
                sha256: "cc".repeat(32),
                bytes: b"a: 1".to_vec(),
            },
            StoredFile {
                role: "prompt".into(),
                path: "../../etc/evil".into(),
                given: None,
                sha256: "dd".repeat(32),
                bytes: b"x".to_vec(),
            },
        ];
        place_files(&run, &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(run.join(".plan/prompts/x.md")).unwrap(),
            "hello"
        );
        assert!(!dir.path().join("etc/evil").exists());
        let (plan, vars) = map_paths(
            &run,
            "/host-a/repo/plans/p.yaml",
            &[PathBuf::from("/tmp/elsewhere/v.yaml")],
        );
        assert_eq!(PathBuf::from(plan), run.join(".plan/plans/p.yaml"));
        assert!(vars[0].starts_with(run.join(".plan/.outside")));
        assert_eq!(std::fs::read_to_string(&vars[0]).unwrap(), "a: 1");
        // A folder that was not rebuilt keeps its paths.
        let other = dir.path().join("R2");
        assert_eq!(map_paths(&other, "p.yaml", &[]).0, "p.yaml");
        write_journal(&run, &["{\"a\":1}".into(), "{\"b\":2}\n".into()]).unwrap();
        assert_eq!(local_records(&run), Some(2));
    }
}
