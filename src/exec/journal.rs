//! The run journal, `runs/<run-id>/journal.jsonl`: an append-only record of what a run did, written by
//! the executor itself (not through the event stream) so that its order with the network is certain.
//!
//! Payments are real money, so the two records that guard them are fsync'd before the executor goes on:
//! the *intent* to submit is on disk before the request is sent, and the job id is on disk as soon as it
//! is known. A run killed at any point leaves either no intent (nothing was sent), an intent without a job
//! id (the request may or may not have reached the coordinator: `resume` looks the job up by its client
//! reference before it sends anything), or a job id (`resume` re-attaches to it). Finished steps are
//! recorded with their report entry and outputs, so `resume` keeps them and the report can be rebuilt
//! from the journal alone.
//!
//! A journal outlives the process that wrote it, and may be resumed by another build of aitbc-flow: its
//! header carries the format version ([`JOURNAL_VERSION`]), and [`read`] refuses a journal of a version
//! it does not know rather than guess at what its records mean.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::StepReport;
use crate::money::Money;

/// The journal format this build writes and reads. A header without a `version` (written before the
/// field existed, in the same format) is version 1; see `docs/decisions.md`.
pub const JOURNAL_VERSION: u32 = 1;

fn first_version() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// One line of the journal: `{"intent": {…}}`. (Externally tagged: an internally tagged enum would
/// buffer each record, which the receipts' raw JSON text does not survive.)
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A run (or a resumption of it) began.
    Run {
        /// The journal format ([`JOURNAL_VERSION`]); 1 when absent.
        #[serde(default = "first_version")]
        version: u32,
        /// The run's id.
        run_id: String,
        /// The plan file as given.
        plan_path: String,
        /// SHA-256 of the plan file.
        plan_hash: String,
        /// `--set` pairs, to load the plan the same way again.
        set: Vec<(String, String)>,
        /// `--vars` files, to load the plan the same way again.
        vars_files: Vec<PathBuf>,
        /// The coordinator's URL.
        coordinator: String,
        /// True for the embedded coordinator (whose jobs do not outlive the process).
        embedded: bool,
        /// 0 for the first start, then 1, 2, … for each `resume`.
        attempt: u32,
        /// RFC 3339.
        at: String,
        /// False when the run was made with `--no-cache` (a resume keeps it so).
        #[serde(default = "yes")]
        cache: bool,
        /// The run whose vars were the base (`--vars-from`), for the report of a resume.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vars_from: Option<String>,
        /// True when the run took the plan's lock (`--lock`): a resume takes it too.
        #[serde(default)]
        lock: bool,
    },
    /// About to send a submit (fsync'd before the request).
    Intent {
        /// The step.
        step: String,
        /// 1 for the first submission of the step, more after `retry.on: [job_failed]`.
        submission: u32,
        /// `payload.client_ref`.
        client_ref: String,
        /// The wallet that pays.
        wallet: String,
        /// The payment.
        payment: Money,
        /// What is sent as `buyer_address` (the wallet's address, or the wallet as given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        buyer_address: Option<String>,
    },
    /// The coordinator has the job (fsync'd).
    Submitted {
        /// The step.
        step: String,
        /// The submission.
        submission: u32,
        /// The job.
        job_id: String,
    },
    /// A step ended.
    Step {
        /// Its report entry.
        report: Box<StepReport>,
        /// Its outputs, for later templates.
        outputs: Map<String, Value>,
    },
    /// The run ended.
    End {
        /// The run's status word.
        status: String,
        /// The exit code.
        exit_code: i32,
    },
}

/// The journal file, open for appending. Appends from many tasks are serialized; durable appends share
/// their fsyncs (group commit): a task that finds its record already synced by another's fsync returns
/// at once, so 64 concurrent submits cost a handful of fsyncs, not 64.
#[derive(Debug)]
pub struct Journal {
    file: std::fs::File,
    path: PathBuf,
    /// Records written so far (a sequence number), under the lock that orders the writes.
    written: std::sync::Mutex<u64>,
    /// Records known to be on disk.
    synced: std::sync::Mutex<u64>,
    /// The file may end in a torn line (a crash or a full disk mid-write): the next record starts on a
    /// fresh line instead of being glued onto it.
    torn: std::sync::atomic::AtomicBool,
}

/// True when the file is not empty and its last byte is not a newline.
fn ends_torn(file: &std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

impl Journal {
    /// Opens (creating or appending to) `journal.jsonl` in a run directory.
    pub fn open(run_dir: &Path) -> std::io::Result<Journal> {
        let path = run_dir.join("journal.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let torn = ends_torn(&file)?;
        Ok(Journal {
            file,
            path,
            written: std::sync::Mutex::new(0),
            synced: std::sync::Mutex::new(0),
            torn: std::sync::atomic::AtomicBool::new(torn),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record; with `durable`, returns only once it is on disk.
    pub fn append(&self, record: &Record, durable: bool) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let record = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let seq = {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let mut line = Vec::with_capacity(record.len() + 2);
            if self.torn.load(Ordering::Relaxed) {
                line.push(b'\n');
            }
            line.extend_from_slice(&record);
            line.push(b'\n');
            // One write per record: a crash leaves at most a torn last line, which the reader skips. A
            // write that failed part-way (a full disk) may have left one too.
            if let Err(e) = (&self.file).write_all(&line) {
                self.torn.store(true, Ordering::Relaxed);
                return Err(e);
            }
            self.torn.store(false, Ordering::Relaxed);
            *written += 1;
            *written
        };
        if durable { self.sync_to(seq) } else { Ok(()) }
    }

    /// Makes every record up to `seq` durable, sharing the fsync with concurrent callers.
    fn sync_to(&self, seq: u64) -> std::io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= seq {
            return Ok(());
        }
        let target = *self.written.lock().unwrap_or_else(|p| p.into_inner());
        self.file.sync_data()?;
        *synced = target;
        Ok(())
    }
}

/// Reads every whole record of a journal. A torn last line (a crash mid-write) is skipped; a bad line
/// elsewhere is an error naming its line number. A journal whose header is of another format version is
/// refused, naming the file and both versions.
pub fn read(path: &Path) -> Result<Vec<Record>, String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::with_capacity(lines.len());
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => {
                if let Record::Run { version, .. } = &r
                    && *version != JOURNAL_VERSION
                {
                    return Err(version_error(path, i + 1, &version.to_string()));
                }
                out.push(r)
            }
            Err(e) => {
                // A line this build cannot read may be the header of a newer format (with records this
                // build does not know): say that, rather than "not a journal record" or skipping it.
                if let Some(found) = header_version(line)
                    && found != JOURNAL_VERSION
                {
                    return Err(version_error(path, i + 1, &found.to_string()));
                }
                // A torn write (a crash or a full disk mid-line) is an incomplete record: skip it
                // wherever it is, since the next record starts on a fresh line.
                if i != last && !e.is_eof() {
                    return Err(format!(
                        "{}:{}: not a journal record: {e}",
                        path.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The `version` of a line that is a `run` header (`1` when it has none), read without the rest of the
/// record; `None` for any other line.
fn header_version(line: &str) -> Option<Value> {
    #[derive(Deserialize)]
    struct Line {
        run: Option<Header>,
    }
    #[derive(Deserialize)]
    struct Header {
        version: Option<Value>,
    }
    let header = serde_json::from_str::<Line>(line).ok()?.run?;
    Some(header.version.unwrap_or_else(|| first_version().into()))
}

fn version_error(path: &Path, line: usize, found: &str) -> String {
    format!(
        "{}:{line}: the journal is in format version {found}, but aitbc-flow {} reads journal format \
         version {JOURNAL_VERSION} only; resume this run with the aitbc-flow that started it",
        path.display(),
        env!("CARGO_PKG_VERSION"),
    )
}

/// What a journal says about a run, folded for `resume`.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// The first `run` record's fields.
    pub run_id: String,
    /// The plan file.
    pub plan_path: String,
    /// Its hash when the run started.
    pub plan_hash: String,
    /// `--set` pairs.
    pub set: Vec<(String, String)>,
    /// `--vars` files.
    pub vars_files: Vec<PathBuf>,
    /// The coordinator URL.
    pub coordinator: String,
    /// True when the run used the embedded coordinator.
    pub embedded: bool,
    /// How many times the run has been started so far.
    pub attempts: u32,
    /// Steps that succeeded: kept as they are.
    pub done: BTreeMap<String, (StepReport, Map<String, Value>)>,
    /// Per step, its submissions: client reference, wallet, payment and the job id when known.
    pub submissions: BTreeMap<String, Vec<Submission>>,
    /// True when the journal has an `end` record (the run finished, possibly with failures).
    pub ended: bool,
    /// False when the run was made with `--no-cache`.
    pub cache: bool,
    /// `--vars-from` of the run.
    pub vars_from: Option<String>,
    /// True when the run took the plan's lock.
    pub lock: bool,
}

impl Replay {
    /// What the jobs this run already submitted (those with a job id) paid, per wallet.
    pub fn paid_per_wallet(&self) -> BTreeMap<String, Money> {
        let mut out: BTreeMap<String, Money> = BTreeMap::new();
        for s in self.submissions.values().flatten() {
            if s.job_id.is_some() {
                *out.entry(s.wallet.clone()).or_default() += s.payment;
            }
        }
        out
    }

    /// The journaled submission `number` of `step`.
    pub fn submission(&self, step: &str, number: u32) -> Option<&Submission> {
        self.submissions
            .get(step)
            .and_then(|v| v.iter().find(|s| s.number == number))
    }
}

/// One submission of a step, as journaled.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    /// 1, 2, …
    pub number: u32,
    /// `payload.client_ref`.
    pub client_ref: String,
    /// The wallet.
    pub wallet: String,
    /// The payment.
    pub payment: Money,
    /// What was sent as `buyer_address` (journals before it was recorded have none).
    pub buyer_address: Option<String>,
    /// The job id, once the coordinator gave it.
    pub job_id: Option<String>,
}

/// Folds a journal's records.
pub fn replay(records: &[Record]) -> Result<Replay, String> {
    let mut r = Replay::default();
    let mut seen_run = false;
    for rec in records {
        match rec {
            Record::Run {
                run_id,
                plan_path,
                plan_hash,
                set,
                vars_files,
                coordinator,
                embedded,
                cache,
                vars_from,
                lock,
                ..
            } => {
                if !seen_run {
                    r.run_id = run_id.clone();
                    r.plan_path = plan_path.clone();
                    r.plan_hash = plan_hash.clone();
                    r.set = set.clone();
                    r.vars_files = vars_files.clone();
                    r.cache = *cache;
                    r.vars_from = vars_from.clone();
                    r.lock = *lock;
                    seen_run = true;
                }
                r.coordinator = coordinator.clone();
                r.embedded = *embedded;
                r.attempts += 1;
                r.ended = false;
            }
            Record::Intent {
                step,
                submission,
                client_ref,
                wallet,
                payment,
                buyer_address,
            } => {
                let subs = r.submissions.entry(step.clone()).or_default();
                if !subs.iter().any(|s| s.number == *submission) {
                    subs.push(Submission {
                        number: *submission,
                        client_ref: client_ref.clone(),
                        wallet: wallet.clone(),
                        payment: *payment,
                        buyer_address: buyer_address.clone(),
                        job_id: None,
                    });
                }
            }
            Record::Submitted {
                step,
                submission,
                job_id,
            } => {
                if let Some(s) = r
                    .submissions
                    .get_mut(step)
                    .and_then(|v| v.iter_mut().find(|s| s.number == *submission))
                {
                    s.job_id = Some(job_id.clone());
                }
            }
            Record::Step { report, outputs } => {
                use crate::model::StepState;
                // Only successes are kept: a step skipped because a dependency failed must run when
                // the dependency is run again, and a `when` is cheap to evaluate again.
                match report.state {
                    StepState::Succeeded => {
                        r.done
                            .insert(report.id.clone(), ((**report).clone(), outputs.clone()));
                    }
                    _ => {
                        r.done.remove(&report.id);
                    }
                }
            }
            Record::End { .. } => r.ended = true,
        }
    }
    if !seen_run {
        return Err("the journal has no `run` record".into());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_skipped_and_replay_folds_submissions() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.append(
            &Record::Run {
                version: JOURNAL_VERSION,
                run_id: "r".into(),
                plan_path: "p.yaml".into(),
                plan_hash: "h".into(),
                set: vec![],
                vars_files: vec![],
                coordinator: "http://x".into(),
                embedded: false,
                attempt: 0,
                at: "t".into(),
                cache: true,
                vars_from: None,
                lock: false,
            },
            true,
        )
        .unwrap();
        j.append(
            &Record::Intent {
                step: "a".into(),
                submission: 1,
                client_ref: "r/a".into(),
                wallet: "w".into(),
                payment: Money::from_int(2),
                buyer_address: None,
            },
            true,
        )
        .unwrap();
        j.append(
            &Record::Intent {
                step: "b".into(),
                submission: 1,
                client_ref: "r/b".into(),
                wallet: "w".into(),
                payment: Money::from_int(3),
                buyer_address: None,
            },
            true,
        )
        .unwrap();
        j.append(
            &Record::Submitted {
                step: "a".into(),
                submission: 1,
                job_id: "ea05c15ab4f94d369c35d96c8fc39ac5".into(),
            },
            true,
        )
        .unwrap();
        drop(j);
        // A crash in the middle of a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal.jsonl"))
            .unwrap();
        f.write_all(b"{\"step\":{\"rep").unwrap();
        let records = read(&dir.path().join("journal.jsonl")).unwrap();
        assert_eq!(records.len(), 4);
        let r = replay(&records).unwrap();
        assert_eq!(r.attempts, 1);
        assert_eq!(
            r.submissions["a"][0].job_id.as_deref(),
            Some("ea05c15ab4f94d369c35d96c8fc39ac5")
        );
        assert_eq!(r.submissions["b"][0].job_id, None);
        assert!(!r.ended);
    }

    #[test]
    fn after_a_torn_line_the_next_record_starts_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        // What a full disk or a crash leaves: a record cut mid-line.
        std::fs::write(&path, "{\"end\":{\"status\":\"succ").unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let end = Record::End {
            status: "succeeded".into(),
            exit_code: 0,
        };
        j.append(&end, true).unwrap();
        j.append(&end, true).unwrap();
        drop(j);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        let records = read(&path).unwrap();
        assert_eq!(
            records.len(),
            2,
            "the torn line is skipped, both records read"
        );
        // Garbage that is not a cut record is still an error, wherever it is.
        std::fs::write(
            &path,
            "{\"end\": 1}\n{\"end\":{\"status\":\"x\",\"exit_code\":0}}\n",
        )
        .unwrap();
        assert!(read(&path).unwrap_err().contains("journal.jsonl:1"));
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("journal.jsonl"),
            "garbage\n{\"end\":{\"status\":\"succeeded\",\"exit_code\":0}}\n",
        )
        .unwrap();
        let e = read(&dir.path().join("journal.jsonl")).unwrap_err();
        assert!(e.contains("journal.jsonl:1"), "{e}");
    }

    const HEADER: &str = r#""run_id":"r","plan_path":"p.yaml","plan_hash":"h","set":[],"vars_files":[],"coordinator":"http://x","embedded":false,"attempt":0,"at":"t""#;

    fn journal(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        (dir, path)
    }

    #[test]
    fn a_header_without_a_version_is_version_1() {
        let (_dir, path) = journal(&[
            format!("{{\"run\":{{{HEADER}}}}}"),
            "{\"end\":{\"status\":\"succeeded\",\"exit_code\":0}}".into(),
        ]);
        let records = read(&path).unwrap();
        assert!(matches!(records[0], Record::Run { version: 1, .. }));
        assert!(replay(&records).unwrap().ended);
        // And what this build writes says so.
        let written = serde_json::to_string(&records[0]).unwrap();
        assert!(written.starts_with("{\"run\":{\"version\":1,"), "{written}");
    }

    #[test]
    fn a_journal_of_another_version_is_refused_naming_the_file_and_both_versions() {
        let end = "{\"end\":{\"status\":\"failed\",\"exit_code\":1}}".to_string();
        let cases = [
            // A newer header this build could parse: the version alone must stop it.
            vec![
                format!("{{\"run\":{{\"version\":2,{HEADER}}}}}"),
                end.clone(),
            ],
            // A newer header of another shape, then a record this build does not know.
            vec![
                "{\"run\":{\"version\":3,\"id\":\"r\"}}".into(),
                "{\"checkpoint\":{\"n\":1}}".into(),
            ],
            // As the only line: not taken for a torn write.
            vec!["{\"run\":{\"version\":3,\"id\":\"r\"}}".into()],
            // Resumed by a newer build after a start by this one.
            vec![
                format!("{{\"run\":{{{HEADER}}}}}"),
                format!("{{\"run\":{{\"version\":2,{HEADER}}}}}"),
            ],
            vec![format!("{{\"run\":{{\"version\":0,{HEADER}}}}}")],
        ];
        for lines in cases {
            let (_dir, path) = journal(&lines);
            let e = read(&path).unwrap_err();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains("journal is in format version "), "{e}");
            assert!(e.contains("reads journal format version 1 only"), "{e}");
        }
        let (_dir, path) = journal(&[format!("{{\"run\":{{\"version\":2,{HEADER}}}}}")]);
        let e = read(&path).unwrap_err();
        assert!(
            e.contains("journal.jsonl:1: the journal is in format version 2, but aitbc-flow "),
            "{e}"
        );
    }
}
