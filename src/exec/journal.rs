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
//! A job the run cancels itself (on the way out after Ctrl-C or a failure, or at a wait's timeout) is
//! journaled too, before the cancel is sent and again with what became of its payment: `resume` treats
//! such a job as unfinished work (it is submitted again once its refund is confirmed), not as a job that
//! ended CANCELED for reasons of its own.
//!
//! Outputs are journaled with the plan's secrets replaced by `***`; where an output quoted a secret, the
//! record says which secret stood where ([`Piece`]), so that `resume` can give later steps the value
//! again, read from the secret's source, without the journal ever holding it.
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

/// The journal format this build writes. A header without a `version` (written before the field
/// existed, in the same format) is version 1; version 2 added the `cancel` record. See
/// `docs/decisions.md`, "Format versions".
pub const JOURNAL_VERSION: u32 = 2;

/// The oldest journal format this build reads (every version from it up to [`JOURNAL_VERSION`]).
pub const OLDEST_JOURNAL_VERSION: u32 = 1;

fn known_version(v: u32) -> bool {
    (OLDEST_JOURNAL_VERSION..=JOURNAL_VERSION).contains(&v)
}

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
        /// `--only` of the run: a resume selects the same steps.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        only: Vec<String>,
        /// `--skip` of the run: a resume leaves out the same steps.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skip: Vec<String>,
        /// `--from-run` of the run: a resume takes the same steps from it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_run: Option<String>,
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
    /// The coordinator has the job (written, durable at the next flush point: a resume that finds no
    /// such record reconciles the intent by its client reference).
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
        /// Its outputs, for later templates (secrets replaced by `***`).
        outputs: Outputs,
        /// Where an output quoted a secret: per JSON pointer into `outputs`, the string as it was, in
        /// pieces of text and secret names (never values). Absent when no output quoted one.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        redacted: BTreeMap<String, Vec<Piece>>,
    },
    /// The run cancelled a job it had submitted (since format version 2). Written, fsync'd, before
    /// the cancel is sent, then again with `outcome` once the job and its payment are read back.
    Cancel {
        /// The step that submitted the job.
        step: String,
        /// Its submission.
        submission: u32,
        /// The job.
        job_id: String,
        /// Why the run cancelled it.
        why: CancelWhy,
        /// What became of the job and its payment; absent in the record written before the cancel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<CancelOutcome>,
    },
    /// The run ended.
    End {
        /// The run's status word.
        status: String,
        /// The exit code.
        exit_code: i32,
    },
}

/// A step's journaled outputs, kept as their JSON text: a resume reads every step's record, and
/// parses the outputs only of a step a later one reads (a tree of a 10,000-step journal's outputs
/// was a third of the memory of its resume).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Outputs(Box<serde_json::value::RawValue>);

impl Outputs {
    /// The outputs as written.
    pub fn of(outputs: &Map<String, Value>) -> Outputs {
        Outputs(serde_json::value::to_raw_value(outputs).expect("a JSON map serializes"))
    }

    /// The outputs as a map (none when the text is not an object, which the runner never writes).
    pub fn map(&self) -> Map<String, Value> {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }
}

impl Default for Outputs {
    fn default() -> Outputs {
        Outputs::of(&Map::new())
    }
}

/// A piece of a journaled output string: text as it was, or the place of a secret's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Piece {
    /// Text without a secret.
    Text(String),
    /// The value of the plan's secret of this name.
    Secret {
        /// The secret's name in the plan's `secrets:`.
        secret: String,
    },
}

/// Why the run cancelled one of its jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelWhy {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The run stopped at another step's failure (fail-fast).
    Stopped,
    /// A wait ran out of time (`on_timeout: cancel`).
    Timeout,
    /// The run ended with the job still running.
    Leftover,
}

/// What became of a job the run cancelled, as read back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CancelOutcome {
    /// The job's state read afterwards (`CANCELED`, or a state it had reached first); absent when the
    /// coordinator did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The payment status, as the payment view read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<String>,
    /// The amount refunded, when the payment view confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded: Option<Money>,
    /// The amount still held by the service (a refund refused, or not confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Money>,
}

/// The journal file, open for appending. Appends from many tasks are serialized (one `write` per
/// record, under a lock). Durable appends share their fsyncs (group commit) on one thread of the
/// journal's own ([`Syncer`]): a task that needs its record on disk asks that thread and awaits the
/// answer, so 64 concurrent submits cost a handful of fsyncs, not 64, and no worker of the runtime
/// blocks in an fsync (blocking there made the runtime start a thread per waiting submit, each with
/// its own allocator heap: memory grew with `--concurrency`). With a [`Mirror`] (the PostgreSQL store),
/// each flush point also copies the records written since the last one, on that same thread.
#[derive(Debug)]
pub struct Journal {
    inner: std::sync::Arc<Inner>,
    path: PathBuf,
    syncer: Syncer,
    /// Callers of [`Journal::append_durable`] waiting now.
    waiting: std::sync::atomic::AtomicUsize,
}

/// What the journal's writers and its fsync thread share.
#[derive(Debug)]
struct Inner {
    file: std::fs::File,
    /// Records written so far (a sequence number), under the lock that orders the writes.
    written: std::sync::Mutex<u64>,
    /// Records known to be durable (on disk, and in the mirror when there is one).
    synced: std::sync::Mutex<u64>,
    /// The file may end in a torn line (a crash or a full disk mid-write): the next record starts on a
    /// fresh line instead of being glued onto it.
    torn: std::sync::atomic::AtomicBool,
    /// Where the records are copied too (the PostgreSQL store), at the flush points.
    mirror: Option<std::sync::Arc<dyn Mirror>>,
    /// Records written to the file but not yet to the mirror, in order (taken under `written`).
    pending: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Set once the mirror refused a write because this run no longer holds its lock: nothing more is
    /// written, to the file or the mirror.
    fenced: std::sync::atomic::AtomicBool,
    /// False when the file is not fsync'd at the flush points ([`Journal::set_fsync`]): records are
    /// still written (one `write` each) before what they describe, and copied to the mirror.
    fsync: std::sync::atomic::AtomicBool,
}

/// A copy of the journal kept elsewhere: the PostgreSQL store's `aitbc_flow_journal` rows, so that
/// another host can resume the run (docs/scaling.md). Records are handed over in order, a batch at each
/// of the journal's flush points (every durable append, so the run's end too), not one round trip per
/// record.
pub trait Mirror: Send + Sync + std::fmt::Debug {
    /// Writes `records` (each a JSON record without its newline), next in order after those written
    /// before.
    fn write(&self, records: &[Vec<u8>]) -> Result<(), MirrorError>;
}

/// Why a [`Mirror`] did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The run's lock was taken over by another holder (its fencing token is no longer the lease's):
    /// the batch was not written and nothing more may be.
    #[error("{0}")]
    Fenced(String),
    /// The copy could not be written (the database is unreachable); the batch is tried again at the
    /// next flush point.
    #[error("{0}")]
    Failed(String),
}

impl Inner {
    /// Writes one record (anything of a record's shape) as one line; its sequence number.
    fn write(&self, record: &impl Serialize) -> std::io::Result<u64> {
        use std::sync::atomic::Ordering;
        if self.fenced.load(Ordering::SeqCst) {
            return Err(std::io::Error::other(
                "this run no longer holds its lock, so it writes nothing more",
            ));
        }
        let mut line = Vec::with_capacity(512);
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let torn = self.torn.load(Ordering::Relaxed);
        if torn {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write per record: a crash leaves at most a torn last line, which the reader skips. A
        // write that failed part-way (a full disk) may have left one too.
        if let Err(e) = (&self.file).write_all(&line) {
            self.torn.store(true, Ordering::Relaxed);
            return Err(e);
        }
        self.torn.store(false, Ordering::Relaxed);
        if self.mirror.is_some() {
            line.pop();
            if torn {
                line.remove(0);
            }
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line);
        }
        *written += 1;
        Ok(*written)
    }

    /// Makes every record up to `seq` durable — fsync, then the mirror's copy — sharing the work with
    /// concurrent callers; how far the journal is durable now.
    fn flush_to(&self, seq: u64) -> std::io::Result<u64> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= seq {
            return Ok(*synced);
        }
        let (target, batch) = {
            let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            (*written, std::mem::take(&mut *pending))
        };
        let fsync = self.fsync.load(std::sync::atomic::Ordering::Relaxed);
        let synced_file = if fsync { self.file.sync_data() } else { Ok(()) };
        let flushed = synced_file.and_then(|()| match &self.mirror {
            Some(m) if !batch.is_empty() => m.write(&batch).map_err(|e| {
                if matches!(e, MirrorError::Fenced(_)) {
                    self.fenced.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                std::io::Error::other(e.to_string())
            }),
            _ => Ok(()),
        });
        if let Err(e) = flushed {
            // The batch goes first again at the next flush point, before the records written since.
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let later = std::mem::replace(&mut *pending, batch);
            pending.extend(later);
            return Err(e);
        }
        *synced = target;
        Ok(target)
    }
}

/// The journal's fsync thread: it flushes the journal whenever a record not yet durable is asked for,
/// and tells every waiter how far it is durable. Stops when the journal is dropped.
#[derive(Debug)]
struct Syncer {
    /// The highest sequence number asked to be durable, and whether the journal is closing.
    asked: std::sync::Arc<(std::sync::Mutex<(u64, bool)>, std::sync::Condvar)>,
    /// How far the journal is known to be durable, or the error of the flush that failed.
    synced: tokio::sync::watch::Receiver<Synced>,
}

/// What the fsync thread last did.
#[derive(Clone, Debug, Default)]
struct Synced {
    /// Records up to this sequence number are durable.
    upto: u64,
    /// The last flush failed (for the records up to that sequence number), with this error.
    failed: Option<(u64, String)>,
}

impl Syncer {
    fn start(inner: std::sync::Arc<Inner>) -> std::io::Result<Syncer> {
        let asked =
            std::sync::Arc::new((std::sync::Mutex::new((0, false)), std::sync::Condvar::new()));
        let (tx, rx) = tokio::sync::watch::channel(Synced::default());
        let a = asked.clone();
        std::thread::Builder::new()
            .name("journal-fsync".into())
            .spawn(move || {
                let (lock, cv) = &*a;
                let mut done = 0;
                loop {
                    let target = {
                        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
                        while g.0 <= done && !g.1 {
                            g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
                        }
                        if g.0 <= done {
                            return; // closing, nothing left to flush
                        }
                        g.0
                    };
                    let r = inner.flush_to(target);
                    tx.send_modify(|s| match r {
                        Ok(upto) => {
                            s.upto = s.upto.max(upto);
                            s.failed = None;
                        }
                        Err(e) => s.failed = Some((target, e.to_string())),
                    });
                    if tx.is_closed() {
                        return;
                    }
                    // A failed flush is tried again by the next record asked for (its batch first).
                    done = target;
                }
            })?;
        Ok(Syncer { asked, synced: rx })
    }

    /// Waits until every record up to `seq` is durable.
    async fn sync_to(&self, seq: u64) -> std::io::Result<()> {
        {
            let (lock, cv) = &*self.asked;
            let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
            if g.0 < seq {
                g.0 = seq;
                cv.notify_one();
            }
        }
        let mut rx = self.synced.clone();
        let got = rx
            .wait_for(|s| s.upto >= seq || s.failed.as_ref().is_some_and(|(n, _)| *n >= seq))
            .await
            .map_err(|_| std::io::Error::other("the journal's fsync thread stopped"))?;
        match &got.failed {
            Some((_, e)) if got.upto < seq => Err(std::io::Error::other(e.clone())),
            _ => Ok(()),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let (lock, cv) = &*self.asked;
        lock.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        cv.notify_one();
    }
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

/// A step's end record as written, borrowing what the executor has ([`Record::Step`]'s shape: no copy
/// of a report is made to journal it).
#[derive(Serialize)]
pub(crate) enum StepRecord<'a> {
    #[serde(rename = "step")]
    Step {
        report: &'a StepReport,
        outputs: &'a Map<String, Value>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        redacted: &'a BTreeMap<String, Vec<Piece>>,
    },
}

impl Journal {
    /// Opens (creating or appending to) `journal.jsonl` in a run directory.
    pub fn open(run_dir: &Path) -> std::io::Result<Journal> {
        Journal::open_mirrored(run_dir, None)
    }

    /// [`Journal::open`], with every record also written to `mirror` (when given) at the flush points.
    pub fn open_mirrored(
        run_dir: &Path,
        mirror: Option<std::sync::Arc<dyn Mirror>>,
    ) -> std::io::Result<Journal> {
        let path = run_dir.join("journal.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let torn = ends_torn(&file)?;
        let inner = std::sync::Arc::new(Inner {
            file,
            written: std::sync::Mutex::new(0),
            synced: std::sync::Mutex::new(0),
            torn: std::sync::atomic::AtomicBool::new(torn),
            mirror,
            pending: std::sync::Mutex::new(Vec::new()),
            fenced: std::sync::atomic::AtomicBool::new(false),
            fsync: std::sync::atomic::AtomicBool::new(true),
        });
        let syncer = Syncer::start(inner.clone())?;
        Ok(Journal {
            inner,
            path,
            syncer,
            waiting: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Whether the flush points fsync the file (on by default). A run on the embedded coordinator turns
    /// it off: that coordinator keeps its jobs and ledger in memory, so whatever an fsync would save
    /// from an operating-system crash is lost with the coordinator anyway, while a killed process loses
    /// nothing either way (each record is written before what it describes). The mirror, when there is
    /// one, is still written at every flush point (it is the lock's fencing check).
    pub fn set_fsync(&self, on: bool) {
        self.inner
            .fsync
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// True when the records are copied to a [`Mirror`] (the PostgreSQL store): a record another host
    /// needs to resume the run must reach a flush point, since a killed process leaves its copy behind.
    pub fn mirrored(&self) -> bool {
        self.inner.mirror.is_some()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record; with `durable`, returns only once it is durable (flushed on the caller's
    /// thread: for the header and the end of a run; steps use [`Journal::append_durable`]).
    pub fn append(&self, record: &Record, durable: bool) -> std::io::Result<()> {
        let seq = self.inner.write(record)?;
        if durable {
            self.inner.flush_to(seq)?;
        }
        Ok(())
    }

    /// Appends a record and waits until it is durable, sharing the flush with concurrent callers. A
    /// caller that finds nobody else waiting (a lone submit, as in a chain of steps) flushes on its own
    /// worker (`block_in_place`: no thread wake-ups to wait for); otherwise the fsync thread flushes
    /// for all who wait, so the runtime never starts a thread per waiting submit.
    pub async fn append_durable(&self, record: &Record) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let seq = self.inner.write(record)?;
        if self.inner.mirror.is_none() && !self.inner.fsync.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A current-thread runtime (the executor's tests, whose paused time would run ahead of the
        // thread's answer) flushes here, as a lone caller does.
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi {
            return self.inner.flush_to(seq).map(|_| ());
        }
        let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        let r = if waiting == 0 {
            tokio::task::block_in_place(|| self.inner.flush_to(seq)).map(|_| ())
        } else {
            self.syncer.sync_to(seq).await
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Writes one record (anything of a record's shape) as one line; its sequence number.
    pub(crate) fn write(&self, record: &impl Serialize) -> std::io::Result<u64> {
        self.inner.write(record)
    }
}

/// The replay of a journal's first record alone — the run's header: its plan, vars, `--set` and
/// step selection — read without the rest of the file, so that `resume` can load the plan before it
/// holds the journal. `None` when the first line is not a readable `run` record ([`read`] then
/// says why).
pub fn read_head(path: &Path) -> Option<Replay> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    // A header is a few hundred bytes; a first line of megabytes is no header.
    std::io::BufReader::new(f.take(1 << 20))
        .read_line(&mut line)
        .ok()?;
    let record: Record = serde_json::from_str(line.trim_end()).ok()?;
    if !matches!(record, Record::Run { .. }) {
        return None;
    }
    replay(&mut [record]).ok()
}

/// Reads every whole record of a journal. A torn last line (a crash mid-write) is skipped; a bad line
/// elsewhere is an error naming its line number. A journal whose header is of another format version is
/// refused, naming the file and both versions.
pub fn read(path: &Path) -> Result<Vec<Record>, String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    // Line by line into one buffer: a journal of 10,000 steps is tens of megabytes, not held twice.
    let mut reader = std::io::BufReader::with_capacity(1 << 16, f);
    let mut line = String::new();
    let mut out = Vec::new();
    // A line that did not parse, kept until it is known whether another line follows it.
    let mut bad: Option<String> = None;
    let mut number = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(cannot)? == 0 {
            break;
        }
        number += 1;
        if let Some(error) = bad.take() {
            return Err(error);
        }
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => {
                if let Record::Run { version, .. } = &r
                    && !known_version(*version)
                {
                    return Err(version_error(path, number, &version.to_string()));
                }
                out.push(r)
            }
            Err(e) => {
                // A line this build cannot read may be the header of a newer format (with records this
                // build does not know): say that, rather than "not a journal record" or skipping it.
                if let Some(found) = header_version(&line)
                    && found
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .is_none_or(|v| !known_version(v))
                {
                    return Err(version_error(path, number, &found.to_string()));
                }
                // A torn write (a crash or a full disk mid-line) is an incomplete record: skip it
                // wherever it is, since the next record starts on a fresh line. Any other bad line is
                // an error unless it is the last.
                if !e.is_eof() {
                    bad = Some(format!(
                        "{}:{}: not a journal record: {e}",
                        path.display(),
                        number
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
    let known: Vec<String> = (OLDEST_JOURNAL_VERSION..=JOURNAL_VERSION)
        .map(|v| v.to_string())
        .collect();
    let known = match known.split_last() {
        Some((last, [])) => format!("version {last}"),
        Some((last, rest)) => format!("versions {} and {last}", rest.join(", ")),
        None => String::new(),
    };
    format!(
        "{}:{line}: the journal is in format version {found}, but aitbc-flow {} reads journal format \
         {known} only; resume this run with the aitbc-flow that started it",
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
    pub done: BTreeMap<String, Kept>,
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
    /// `--only` and `--skip` of the run.
    pub selection: crate::plan::select::Selection,
    /// `--from-run` of the run.
    pub from_run: Option<String>,
}

/// A step that succeeded in an earlier start, as journaled.
#[derive(Debug)]
pub struct Kept {
    /// Its report entry, until the run takes it ([`Kept::take_report`]).
    report: std::sync::Mutex<Option<StepReport>>,
    /// Its outputs, with the plan's secrets replaced by `***`.
    pub outputs: Outputs,
    /// Where those outputs quoted a secret ([`Record::Step`]'s `redacted`).
    pub redacted: BTreeMap<String, Vec<Piece>>,
}

impl Clone for Kept {
    fn clone(&self) -> Kept {
        Kept {
            report: std::sync::Mutex::new(self.lock().clone()),
            outputs: self.outputs.clone(),
            redacted: self.redacted.clone(),
        }
    }
}

impl Kept {
    /// A step kept with this report entry and these outputs.
    pub fn new(
        report: StepReport,
        outputs: Outputs,
        redacted: BTreeMap<String, Vec<Piece>>,
    ) -> Kept {
        Kept {
            report: std::sync::Mutex::new(Some(report)),
            outputs,
            redacted,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StepReport>> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of its report entry (a blank one once the run has taken it).
    pub fn report(&self) -> StepReport {
        self.lock()
            .clone()
            .unwrap_or_else(|| StepReport::blank("", ""))
    }

    /// The request its report entry recorded (`None` once taken, or when it recorded none).
    pub fn request(&self) -> Option<Value> {
        self.lock()
            .as_ref()
            .and_then(|r| r.request.as_ref().map(crate::model::JsonText::to_value))
    }

    /// Its report entry, taken out by the run that keeps the step: the report of the run holds it
    /// from then on, and a resume of 10,000 steps does not hold each twice. A second take gets a copy
    /// of what the first left: a blank entry.
    pub fn take_report(&self) -> StepReport {
        self.lock()
            .take()
            .unwrap_or_else(|| StepReport::blank("", ""))
    }

    /// The outputs as the step produced them: each redacted string rebuilt with the secrets' values
    /// (`secrets`, the plan's, read from their sources at this start). `Err` names a secret the plan
    /// no longer has.
    pub fn outputs_with(
        &self,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Map<String, Value>, String> {
        let mut out = Value::Object(self.outputs.map());
        for (pointer, pieces) in &self.redacted {
            let mut text = String::new();
            for p in pieces {
                match p {
                    Piece::Text(t) => text.push_str(t),
                    Piece::Secret { secret } => match secrets.get(secret) {
                        Some(v) => text.push_str(v),
                        None => return Err(secret.clone()),
                    },
                }
            }
            if let Some(v) = out.pointer_mut(pointer) {
                *v = Value::String(text);
            }
        }
        match out {
            Value::Object(m) => Ok(m),
            _ => Ok(Map::new()),
        }
    }
}

/// The strings of `outputs` that quote a secret's value, each cut into [`Piece`]s (at each place the
/// longest secret that matches), keyed by JSON pointer; and `outputs` with every such string redacted
/// as `redact` does. Nothing returned holds a secret's value.
pub fn redact_outputs(
    outputs: &Map<String, Value>,
    secrets: &BTreeMap<String, String>,
    redact: impl Fn(&str) -> String,
) -> (Map<String, Value>, BTreeMap<String, Vec<Piece>>) {
    let mut spots = BTreeMap::new();
    let mut value = Value::Object(outputs.clone());
    if secrets.values().any(|v| !v.is_empty()) {
        let mut secrets: Vec<(&String, &String)> =
            secrets.iter().filter(|(_, v)| !v.is_empty()).collect();
        // Longest first: where one secret's value contains another's, the longer one is meant.
        secrets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        walk(
            &mut value,
            &mut String::new(),
            &secrets,
            &redact,
            &mut spots,
        );
    }
    match value {
        Value::Object(m) => (m, spots),
        _ => (Map::new(), spots),
    }
}

fn walk(
    v: &mut Value,
    pointer: &mut String,
    secrets: &[(&String, &String)],
    redact: &impl Fn(&str) -> String,
    spots: &mut BTreeMap<String, Vec<Piece>>,
) {
    match v {
        Value::String(s) => {
            if let Some(pieces) = pieces_of(s, secrets) {
                spots.insert(pointer.clone(), pieces);
                *s = redact(s);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                walk(x, pointer, secrets, redact, spots);
                pointer.truncate(len);
            }
        }
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                walk(x, pointer, secrets, redact, spots);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// `s` cut into text and secrets, or `None` when it quotes none.
fn pieces_of(s: &str, secrets: &[(&String, &String)]) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    let mut found = false;
    while let Some(c) = rest.chars().next() {
        match secrets.iter().find(|(_, v)| rest.starts_with(v.as_str())) {
            Some((name, v)) => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Secret {
                    secret: (*name).clone(),
                });
                rest = &rest[v.len()..];
                found = true;
            }
            None => {
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    found.then_some(pieces)
}

impl Replay {
    /// What the jobs this run already submitted (those with a job id) paid, per wallet. A job the run
    /// cancelled of a step still to do is not counted: the step pays again when it is submitted again.
    pub fn paid_per_wallet(&self) -> BTreeMap<String, Money> {
        let mut out: BTreeMap<String, Money> = BTreeMap::new();
        for (step, subs) in &self.submissions {
            let again = !self.done.contains_key(step);
            for s in subs {
                if s.job_id.is_none() || (again && s.cancelled.is_some()) {
                    continue;
                }
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
    /// Set when the run cancelled the job itself ([`Record::Cancel`]).
    pub cancelled: Option<RunCancel>,
}

/// A job the run cancelled itself, as journaled.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCancel {
    /// Why.
    pub why: CancelWhy,
    /// What became of it, when it was read back before the run stopped.
    pub outcome: Option<CancelOutcome>,
}

/// Folds a journal's records.
pub fn replay(records: &mut [Record]) -> Result<Replay, String> {
    let mut r = Replay::default();
    let mut seen_run = false;
    for rec in records.iter_mut() {
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
                only,
                skip,
                from_run,
                ..
            } => {
                if !seen_run {
                    r.from_run = from_run.clone();
                    r.selection = crate::plan::select::Selection {
                        only: only.clone(),
                        skip: skip.clone(),
                    };
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
                        cancelled: None,
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
            Record::Cancel {
                step,
                submission,
                job_id,
                why,
                outcome,
            } => {
                if let Some(s) = r
                    .submissions
                    .get_mut(step)
                    .and_then(|v| v.iter_mut().find(|s| s.number == *submission))
                {
                    s.job_id.get_or_insert_with(|| job_id.clone());
                    s.cancelled = Some(RunCancel {
                        why: *why,
                        outcome: outcome.clone(),
                    });
                }
                // A step whose job the run cancelled on its way out or at a timeout has not done its
                // work, even when it had ended (a `submit` step, whose job a later `wait` or the way out
                // cancelled). A job still running when the run ended is cancelled by design, and would
                // be again: its step stays done.
                if *why != CancelWhy::Leftover {
                    r.done.remove(step);
                }
            }
            Record::Step {
                report,
                outputs,
                redacted,
            } => {
                use crate::model::StepState;
                // Only successes are kept: a step skipped because a dependency failed must run when
                // the dependency is run again, and a `when` is cheap to evaluate again.
                match report.state {
                    StepState::Succeeded => {
                        r.done.insert(
                            report.id.clone(),
                            // Taken, not copied: a journal of 10,000 steps is tens of megabytes.
                            Kept::new(
                                std::mem::replace(&mut **report, StepReport::blank("", "")),
                                std::mem::take(outputs),
                                std::mem::take(redacted),
                            ),
                        );
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

    /// A mirror that keeps what it was given, and refuses as told.
    #[derive(Debug, Default)]
    struct Copy {
        batches: std::sync::Mutex<Vec<Vec<String>>>,
        refuse: std::sync::Mutex<Option<bool>>,
    }

    impl Mirror for Copy {
        fn write(&self, records: &[Vec<u8>]) -> Result<(), MirrorError> {
            match *self.refuse.lock().unwrap() {
                Some(true) => return Err(MirrorError::Fenced("taken over".into())),
                Some(false) => return Err(MirrorError::Failed("unreachable".into())),
                None => {}
            }
            let batch = records
                .iter()
                .map(|r| String::from_utf8(r.clone()).unwrap())
                .collect();
            self.batches.lock().unwrap().push(batch);
            Ok(())
        }
    }

    fn submitted(job: &str) -> Record {
        Record::Submitted {
            step: "a".into(),
            submission: 1,
            job_id: job.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_fsync_a_durable_append_is_written_at_once_and_still_reaches_the_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.set_fsync(false);
        j.append_durable(&submitted("j1")).await.unwrap();
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert!(text.ends_with("\n") && text.contains("j1"), "{text:?}");

        // The mirror is the lock's fencing check: it is written at every flush point, fsync or not.
        let dir = tempfile::tempdir().unwrap();
        let copy = std::sync::Arc::new(Copy::default());
        let j = Journal::open_mirrored(dir.path(), Some(copy.clone())).unwrap();
        j.set_fsync(false);
        j.append(&submitted("j1"), false).unwrap();
        j.append_durable(&submitted("j2")).await.unwrap();
        let batches = copy.batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 1, "{batches:?}");
        assert!(batches[0][0].contains("j1") && batches[0][1].contains("j2"));
        *copy.refuse.lock().unwrap() = Some(true);
        assert!(j.append_durable(&submitted("j3")).await.is_err());
    }

    #[test]
    fn a_mirror_gets_the_records_in_order_a_batch_per_flush_point_and_a_fenced_journal_writes_nothing_more()
     {
        let dir = tempfile::tempdir().unwrap();
        let copy = std::sync::Arc::new(Copy::default());
        let j = Journal::open_mirrored(dir.path(), Some(copy.clone())).unwrap();
        j.append(&submitted("j1"), false).unwrap();
        j.append(&submitted("j2"), false).unwrap();
        assert!(
            copy.batches.lock().unwrap().is_empty(),
            "no flush point yet"
        );
        j.append(&submitted("j3"), true).unwrap();
        let batches = copy.batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 1, "{batches:?}");
        let jobs: Vec<&str> = batches[0]
            .iter()
            .map(|l| {
                assert!(!l.contains('\n'));
                if l.contains("j1") {
                    "j1"
                } else if l.contains("j2") {
                    "j2"
                } else {
                    "j3"
                }
            })
            .collect();
        assert_eq!(jobs, ["j1", "j2", "j3"]);

        // The copy is down: the durable append fails and its batch is sent again first, next time.
        *copy.refuse.lock().unwrap() = Some(false);
        assert!(j.append(&submitted("j4"), true).is_err());
        *copy.refuse.lock().unwrap() = None;
        j.append(&submitted("j5"), true).unwrap();
        let last = copy.batches.lock().unwrap().last().unwrap().clone();
        assert_eq!(last.len(), 2);
        assert!(last[0].contains("j4") && last[1].contains("j5"), "{last:?}");

        // Taken over: refused, and nothing more reaches the file.
        *copy.refuse.lock().unwrap() = Some(true);
        assert!(j.append(&submitted("j6"), true).is_err());
        let before = std::fs::read_to_string(j.path()).unwrap();
        *copy.refuse.lock().unwrap() = None;
        let e = j.append(&submitted("j7"), true).unwrap_err();
        assert!(e.to_string().contains("no longer holds its lock"), "{e}");
        assert_eq!(std::fs::read_to_string(j.path()).unwrap(), before);
        assert_eq!(read(j.path()).unwrap().len(), 6);
    }

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
                only: vec![],
                skip: vec![],
                from_run: None,
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
        let mut records = read(&dir.path().join("journal.jsonl")).unwrap();
        assert_eq!(records.len(), 4);
        let r = replay(&mut records).unwrap();
        assert_eq!(r.attempts, 1);
        assert_eq!(
            r.submissions["a"][0].job_id.as_deref(),
            Some("ea05c15ab4f94d369c35d96c8fc39ac5")
        );
        assert_eq!(r.submissions["b"][0].job_id, None);
        assert!(!r.ended);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_appends_from_many_tasks_are_all_on_disk_in_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(Journal::open(dir.path()).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..64u32 {
            let j = j.clone();
            tasks.spawn(async move {
                j.append_durable(&Record::Submitted {
                    step: format!("s{n}"),
                    submission: 1,
                    job_id: format!("job{n}"),
                })
                .await
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join("journal.jsonl")).unwrap();
        let mut steps: Vec<String> = text
            .lines()
            .map(|l| match serde_json::from_str::<Record>(l).unwrap() {
                Record::Submitted { step, .. } => step,
                other => panic!("{other:?}"),
            })
            .collect();
        steps.sort();
        let mut want: Vec<String> = (0..64).map(|n| format!("s{n}")).collect();
        want.sort();
        assert_eq!(steps, want);
        // The fsync thread stops with the journal.
        drop(j);
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
        let mut records = read(&path).unwrap();
        assert!(matches!(records[0], Record::Run { version: 1, .. }));
        assert!(replay(&mut records).unwrap().ended);
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
                format!("{{\"run\":{{\"version\":3,{HEADER}}}}}"),
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
                format!("{{\"run\":{{\"version\":3,{HEADER}}}}}"),
            ],
            vec![format!("{{\"run\":{{\"version\":0,{HEADER}}}}}")],
            vec![format!("{{\"run\":{{\"version\":4294967297,{HEADER}}}}}")],
        ];
        for lines in cases {
            let (_dir, path) = journal(&lines);
            let e = read(&path).unwrap_err();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains("journal is in format version "), "{e}");
            assert!(
                e.contains("reads journal format versions 1 and 2 only"),
                "{e}"
            );
        }
        let (_dir, path) = journal(&[format!("{{\"run\":{{\"version\":3,{HEADER}}}}}")]);
        let e = read(&path).unwrap_err();
        assert!(
            e.contains("journal.jsonl:1: the journal is in format version 3, but aitbc-flow "),
            "{e}"
        );
    }

    /// A journal started by a build of version 1 and resumed by this one holds both headers, and the
    /// records of version 2: it reads, and the cancel record marks the submission.
    #[test]
    fn versions_1_and_2_read_together_and_a_cancel_marks_its_submission() {
        let cancel = |outcome: &str| {
            format!(
                "{{\"cancel\":{{\"step\":\"a\",\"submission\":1,\"job_id\":\"ea05c15ab4f94d369c35d96c8fc39ac5\",\"why\":\"interrupted\"{outcome}}}}}"
            )
        };
        let (_dir, path) = journal(&[
            format!("{{\"run\":{{{HEADER}}}}}"),
            "{\"intent\":{\"step\":\"a\",\"submission\":1,\"client_ref\":\"r/a\",\"wallet\":\"w\",\"payment\":2}}".into(),
            "{\"submitted\":{\"step\":\"a\",\"submission\":1,\"job_id\":\"ea05c15ab4f94d369c35d96c8fc39ac5\"}}".into(),
            "{\"end\":{\"status\":\"interrupted\",\"exit_code\":130}}".into(),
            format!("{{\"run\":{{\"version\":2,{HEADER}}}}}"),
            cancel(""),
            cancel(",\"outcome\":{\"state\":\"CANCELED\",\"payment_status\":\"escrowed\",\"held\":2}"),
        ]);
        let mut records = read(&path).unwrap();
        assert_eq!(records.len(), 7);
        let r = replay(&mut records).unwrap();
        assert_eq!(r.attempts, 2);
        let sub = r.submission("a", 1).unwrap();
        let cancelled = sub.cancelled.as_ref().unwrap();
        assert_eq!(cancelled.why, CancelWhy::Interrupted);
        assert_eq!(
            cancelled.outcome.as_ref().unwrap().held,
            Some(Money::from_int(2))
        );
        // Its step pays again when it is submitted again: not counted as paid.
        assert!(r.paid_per_wallet().is_empty());
    }

    fn step_record(id: &str, state: crate::model::StepState) -> Record {
        let mut report = StepReport::blank(id, "submit");
        report.state = state;
        Record::Step {
            report: Box::new(report),
            outputs: Outputs::default(),
            redacted: BTreeMap::new(),
        }
    }

    fn cancel_record(step: &str, why: CancelWhy) -> Record {
        Record::Cancel {
            step: step.into(),
            submission: 1,
            job_id: "ea05c15ab4f94d369c35d96c8fc39ac5".into(),
            why,
            outcome: None,
        }
    }

    #[test]
    fn a_step_whose_job_the_run_cancelled_on_its_way_out_is_done_no_more() {
        use crate::model::StepState::Succeeded;
        let header = serde_json::from_str::<Record>(&format!("{{\"run\":{{{HEADER}}}}}")).unwrap();
        for (why, done) in [
            (CancelWhy::Interrupted, false),
            (CancelWhy::Stopped, false),
            (CancelWhy::Timeout, false),
            // Cancelled by design when the run ended: it would be cancelled again.
            (CancelWhy::Leftover, true),
        ] {
            let mut records = [
                header.clone(),
                step_record("d", Succeeded),
                step_record("x", Succeeded),
                cancel_record("d", why),
            ];
            let r = replay(&mut records).unwrap();
            assert_eq!(r.done.contains_key("d"), done, "{why:?}");
            assert!(r.done.contains_key("x"));
        }
        // Done again once a later start finished it.
        let mut records = [
            header,
            step_record("d", Succeeded),
            cancel_record("d", CancelWhy::Interrupted),
            step_record("d", Succeeded),
        ];
        assert!(replay(&mut records).unwrap().done.contains_key("d"));
    }

    #[test]
    fn outputs_that_quote_a_secret_are_journaled_in_pieces_and_rebuilt_with_its_value() {
        let secrets: BTreeMap<String, String> = [
            ("key".to_string(), "sk-123".to_string()),
            ("longer".to_string(), "sk-1234".to_string()),
            ("empty".to_string(), String::new()),
        ]
        .into();
        let redact = |s: &str| s.replace("sk-1234", "***").replace("sk-123", "***");
        let outputs: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "output": "use sk-123 and sk-1234, é sk-123",
            "plain": "nothing here ***",
            "nested": {"a/b": ["x", "sk-123"], "n": 3},
        }))
        .unwrap();
        let (journaled, redacted) = redact_outputs(&outputs, &secrets, redact);
        let text = serde_json::to_string(&(&journaled, &redacted)).unwrap();
        assert!(!text.contains("sk-123"), "{text}");
        assert_eq!(journaled["output"], "use *** and ***, é ***");
        assert_eq!(journaled["plain"], "nothing here ***");
        assert_eq!(
            redacted.keys().collect::<Vec<_>>(),
            ["/nested/a~1b/1", "/output"]
        );
        assert_eq!(
            redacted["/output"],
            [
                Piece::Text("use ".into()),
                Piece::Secret {
                    secret: "key".into()
                },
                Piece::Text(" and ".into()),
                Piece::Secret {
                    secret: "longer".into()
                },
                Piece::Text(", é ".into()),
                Piece::Secret {
                    secret: "key".into()
                },
            ]
        );
        // Through the journal's text and back.
        let rec = Record::Step {
            report: Box::new(StepReport::blank("a", "job")),
            outputs: Outputs::of(&journaled),
            redacted,
        };
        let line = serde_json::to_string(&rec).unwrap();
        let Record::Step {
            report,
            outputs: back,
            redacted,
        } = serde_json::from_str(&line).unwrap()
        else {
            panic!("{line}")
        };
        let kept = Kept::new(*report, back, redacted);
        assert_eq!(kept.outputs_with(&secrets).unwrap(), outputs);
        // A secret the plan no longer has is named.
        let fewer: BTreeMap<String, String> =
            [("longer".to_string(), "sk-1234".to_string())].into();
        assert_eq!(kept.outputs_with(&fewer).unwrap_err(), "key");
        // Nothing quoted, nothing recorded (and the field is left out of the line).
        let (_, none) = redact_outputs(&kept.outputs.map(), &secrets, redact);
        assert!(none.is_empty());
        let line =
            serde_json::to_string(&step_record("a", crate::model::StepState::Succeeded)).unwrap();
        assert!(!line.contains("redacted"), "{line}");
    }
}
