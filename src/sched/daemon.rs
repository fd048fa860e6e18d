//! The scheduler process: watches a folder of plans, runs each scheduled plan when it is due as a
//! `run PLAN --lock` child process (a crashing run cannot take the scheduler down, and the plan's
//! `overlap` is honoured by the lock), remembers what it did in the state file, and logs one line per
//! decision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{CronSpec, PlanState, State, decide};
use crate::plan::types::{CatchUp, Overlap};
use crate::store::Store;

/// A store shared with other hosts' schedulers (`scheduler --store postgres://…`).
#[derive(Clone)]
pub struct SharedStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Its URL, given to the runs this scheduler starts (in their environment, never their
    /// arguments, where other users could read the password).
    pub url: String,
}

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The folder of plans (`*.yaml`, `*.yml`; not recursive).
    pub plans_dir: PathBuf,
    /// The runs directory (children get `--runs-dir` this; the state lives under it).
    pub runs_dir: PathBuf,
    /// Evaluate once, wait for the runs, and return.
    pub once: bool,
    /// The clock's time at start (tests); it runs on from there.
    pub now: Option<DateTime<Utc>>,
    /// A due time no older than this is on time (not missed).
    pub grace: Duration,
    /// How long to wait for running children on shutdown before leaving them running.
    pub shutdown_wait: Duration,
    /// Extra arguments for every `run` child.
    pub run_args: Vec<String>,
    /// The executable to run (`std::env::current_exe()`).
    pub exe: PathBuf,
}

/// A scheduled plan, loaded.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    path: PathBuf,
    spec: CronSpec,
    overlap: Overlap,
    catch_up: CatchUp,
}

/// What a plan file was the last time it was read.
struct Known {
    stamp: (Option<SystemTime>, u64),
    read_at: DateTime<Utc>,
    entry: Result<Option<Entry>, String>,
}

/// The scheduler's clock: real time, shifted by `--now`.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    offset: chrono::Duration,
}

impl Clock {
    pub(super) fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

pub(super) fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Writes one log line to stderr, prefixed with the scheduler's time.
pub(super) fn log(clock: &Clock, line: &str) {
    // A closed stderr must not stop the scheduler: the line is dropped.
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("{} scheduler: {line}\n", stamp(clock.now())),
    );
}

/// Shared between the loop and the tasks that run children.
pub(super) struct Shared {
    state: Mutex<State>,
    state_path: PathBuf,
    pub(super) running: AtomicUsize,
    pub(super) worst_exit: AtomicI32,
    /// The store shared with other hosts, when given.
    pub(super) store: Option<SharedStore>,
    /// This scheduler, as the ticks it claims name it (host and process id).
    pub(super) host: String,
    /// The runs of dead hosts this scheduler is resuming or gave up on.
    pub(super) takeovers: Mutex<super::takeover::Takeovers>,
}

impl Shared {
    fn update(&self, clock: &Clock, plan: &str, f: impl FnOnce(&mut PlanState)) {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        f(s.plans.entry(plan.to_string()).or_default());
        if let Err(e) = s.save(&self.state_path) {
            log(
                clock,
                &format!(
                    "cannot write the state file {}: {e}",
                    self.state_path.display()
                ),
            );
        }
    }
}

/// Runs the scheduler until `shutdown` (or, with `once`, until the due runs are done). Returns the
/// exit code: 0 (always, for a long-lived scheduler stopped by a signal); with `once`, 1 when a run
/// exited with an error, or 2 when the plans folder cannot be read.
pub async fn run(opts: Options, store: Option<SharedStore>, shutdown: CancellationToken) -> i32 {
    let clock = Clock {
        offset: opts.now.map(|n| n - Utc::now()).unwrap_or_default(),
    };
    let state_path = State::path(&opts.runs_dir);
    let state = match State::load(&state_path) {
        Ok(s) => s,
        Err(e) => {
            log(
                &clock,
                &format!(
                    "the state file {} is unreadable ({e}); starting afresh",
                    state_path.display()
                ),
            );
            State::default()
        }
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        state_path,
        running: AtomicUsize::new(0),
        worst_exit: AtomicI32::new(0),
        store,
        host: format!(
            "{} pid {}",
            crate::exec::lock::hostname(),
            std::process::id()
        ),
        takeovers: Mutex::new(super::takeover::Takeovers::default()),
    });
    let tracker = TaskTracker::new();
    let mut known: BTreeMap<PathBuf, Known> = BTreeMap::new();
    let mut duplicates: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    log(
        &clock,
        &format!(
            "watching {} (runs in {})",
            opts.plans_dir.display(),
            opts.runs_dir.display()
        ),
    );
    loop {
        // Whole seconds: due times are whole minutes, and the state file reads better.
        let now = chrono::SubsecRound::trunc_subsecs(clock.now(), 0);
        if let Err(e) = scan(&opts.plans_dir, &mut known, &clock, now) {
            log(
                &clock,
                &format!(
                    "cannot read the plans folder {}: {e}",
                    opts.plans_dir.display()
                ),
            );
            if opts.once {
                return crate::exit::INVALID;
            }
        }
        let entries = unique_names(&known, &mut duplicates, &clock);
        for e in &entries {
            evaluate(e, now, &opts, &clock, &shared, &tracker, &shutdown);
        }
        super::takeover::look(&opts, &clock, &shared, &tracker, &shutdown);
        if opts.once {
            break;
        }
        let next = entries.iter().filter_map(|e| e.spec.next_after(now)).min();
        let mut wait = Duration::from_secs(60);
        if let Some(n) = next
            && let Ok(d) = (n - clock.now()).to_std()
        {
            wait = wait.min(d + Duration::from_millis(20));
        }
        // With a shared store, runs whose host died are looked for once per lease period.
        if let Some(lease) = shared.store.as_ref().and_then(|s| s.store.lease()) {
            wait = wait.min(lease);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracker.close();
    if opts.once && !shutdown.is_cancelled() {
        tokio::select! {
            _ = tracker.wait() => {}
            _ = shutdown.cancelled() => {}
        }
    }
    if !tracker.is_empty() {
        let running = shared.running.load(Ordering::SeqCst);
        log(
            &clock,
            &format!(
                "shutting down: waiting up to {}s for {running} running run(s)",
                opts.shutdown_wait.as_secs()
            ),
        );
        if tokio::time::timeout(opts.shutdown_wait, tracker.wait())
            .await
            .is_err()
        {
            log(
                &clock,
                &format!(
                    "leaving {} run(s) running; they hold their locks until they end",
                    shared.running.load(Ordering::SeqCst)
                ),
            );
        }
    }
    if !opts.once {
        log(&clock, "stopped");
        return crate::exit::SUCCESS;
    }
    shared.worst_exit.load(Ordering::SeqCst)
}

/// Reads the plan files that are new or changed (and the invalid ones again each minute), logging
/// each invalid plan once per problem.
fn scan(
    dir: &Path,
    known: &mut BTreeMap<PathBuf, Known>,
    clock: &Clock,
    now: DateTime<Utc>,
) -> std::io::Result<()> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    known.retain(|p, _| paths.contains(p));
    for path in paths {
        let meta = std::fs::metadata(&path).ok();
        let st = (
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.as_ref().map_or(0, |m| m.len()),
        );
        let fresh = known.get(&path).is_some_and(|k| {
            k.stamp == st && (k.entry.is_ok() || now - k.read_at < chrono::Duration::seconds(60))
        });
        if fresh {
            continue;
        }
        let entry = load_entry(&path);
        let old = known.remove(&path);
        let changed_message = match (&entry, old.as_ref().map(|k| &k.entry)) {
            (Err(a), Some(Err(b))) => a != b,
            _ => true,
        };
        match &entry {
            Err(m) if changed_message => log(clock, &format!("invalid plan {m}; skipped")),
            Ok(Some(e)) => log(
                clock,
                &format!(
                    "plan {} ({}): cron `{}` in {}, next at {}",
                    e.name,
                    path.display(),
                    e.spec.expr,
                    e.spec.timezone,
                    e.spec
                        .next_after(now)
                        .map(stamp)
                        .unwrap_or_else(|| "never".into())
                ),
            ),
            _ => {}
        }
        known.insert(
            path,
            Known {
                stamp: st,
                read_at: now,
                entry,
            },
        );
    }
    Ok(())
}

/// The scheduled plans, one per plan name (the state and the lock are per name): a later file with
/// a name already taken is reported (once) and skipped.
fn unique_names(
    known: &BTreeMap<PathBuf, Known>,
    reported: &mut BTreeMap<PathBuf, PathBuf>,
    clock: &Clock,
) -> Vec<Entry> {
    let mut by_name: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut out = Vec::new();
    let mut now_duplicate = BTreeMap::new();
    for e in known
        .values()
        .filter_map(|k| k.entry.as_ref().ok().and_then(Option::as_ref))
    {
        match by_name.get(e.name.as_str()) {
            Some(first) => {
                if reported.get(&e.path).map(PathBuf::as_path) != Some(*first) {
                    log(
                        clock,
                        &format!(
                            "invalid plan {}: the name `{}` is also the name of {}; skipped",
                            e.path.display(),
                            e.name,
                            first.display()
                        ),
                    );
                }
                now_duplicate.insert(e.path.clone(), first.to_path_buf());
            }
            None => {
                by_name.insert(&e.name, &e.path);
                out.push(e.clone());
            }
        }
    }
    *reported = now_duplicate;
    out
}

/// Loads one plan: `Ok(None)` when it has no schedule, `Err` with a one-line message when invalid.
fn load_entry(path: &Path) -> Result<Option<Entry>, String> {
    let plan = crate::plan::load(path, &crate::plan::LoadOptions::default()).map_err(|ds| {
        let first = ds.first().map_or_else(String::new, |d| match &d.location {
            Some(l) => format!("{}:{}:{}: {}", l.file, l.line, l.column, d.message),
            None => format!("{}: {}", path.display(), d.message),
        });
        if ds.len() > 1 {
            format!("{first} (and {} more problems)", ds.len() - 1)
        } else {
            first
        }
    })?;
    let Some(s) = &plan.plan.schedule else {
        return Ok(None);
    };
    let spec = CronSpec::new(s).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(Entry {
        name: plan.plan.name.clone(),
        path: path.to_path_buf(),
        spec,
        overlap: s.overlap.unwrap_or(Overlap::Skip),
        catch_up: s.catch_up.unwrap_or(CatchUp::None),
    }))
}

fn catch_up_word(c: CatchUp) -> &'static str {
    match c {
        CatchUp::None => "none",
        CatchUp::Latest => "latest",
        CatchUp::All => "all",
    }
}

/// Decides about one plan and starts its runs (one after the other, oldest first).
fn evaluate(
    e: &Entry,
    now: DateTime<Utc>,
    opts: &Options,
    clock: &Clock,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let cursor = {
        let s = match shared.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.plans.get(&e.name).and_then(PlanState::cursor)
    };
    let Some(cursor) = cursor else {
        // First sight: due times count from now on.
        shared.update(clock, &e.name, |p| p.checked_until = Some(now));
        return;
    };
    let mut d = decide(&e.spec, cursor, now, opts.grace, e.catch_up);
    if d.run.is_empty() && d.missed == 0 {
        if cursor < now {
            shared.update(clock, &e.name, |p| p.checked_until = Some(now));
        }
        return;
    }
    if let Some(store) = &shared.store {
        match claim(&store.store, e, cursor, now, &mut d, &shared.host) {
            Ok(true) => {}
            Ok(false) => {
                shared.update(clock, &e.name, |p| p.checked_until = Some(now));
                return;
            }
            Err(err) => {
                // Not decided: the next pass tries again (the cursor stays).
                log(
                    clock,
                    &format!("cannot claim the due time of {}: {err}", e.name),
                );
                return;
            }
        }
    }
    if d.missed > 0 {
        let since = format!(
            "{} missed time(s) since {} (catch_up: {})",
            d.missed,
            stamp(cursor),
            catch_up_word(e.catch_up)
        );
        let line = match e.catch_up {
            CatchUp::None => format!("skipped {}: {since}", e.name),
            CatchUp::Latest => format!("caught up {}: {since}, running the latest", e.name),
            CatchUp::All if d.skipped > 0 => format!(
                "caught up {}: {since}, running the latest {} ({} skipped)",
                e.name,
                d.run.len(),
                d.skipped
            ),
            CatchUp::All => format!("caught up {}: {since}, running {}", e.name, d.run.len()),
        };
        log(clock, &line);
    }
    shared.update(clock, &e.name, |p| p.checked_until = Some(now));
    if d.run.is_empty() {
        return;
    }
    let e = e.clone();
    let shared = shared.clone();
    let clock = *clock;
    let opts = opts.clone();
    let shutdown = shutdown.clone();
    tracker.spawn(async move {
        let n = d.run.len();
        for (i, t) in d.run.into_iter().enumerate() {
            if shutdown.is_cancelled() {
                log(
                    &clock,
                    &format!(
                        "not started {}: {} run(s) from {} on (shutting down)",
                        e.name,
                        n - i,
                        stamp(t)
                    ),
                );
                break;
            }
            run_child(&e, t, &opts, &clock, &shared).await;
        }
    });
}

/// Claims the latest due time in `(cursor, now]` of `e` in the shared store: the host whose claim
/// takes it makes the decision `d` (on time or catch-up), once for all hosts; `Ok(false)` when
/// another host's scheduler took it. The other times `d` runs (`catch_up: all`) are claimed one by
/// one and left out when another host has run them.
fn claim(
    store: &Arc<dyn Store>,
    e: &Entry,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    d: &mut super::Decision,
    host: &str,
) -> Result<bool, crate::store::StoreError> {
    let Some(latest) = e.spec.due_between(cursor, now, 1).0.last().copied() else {
        return Ok(true);
    };
    if !store.claim_tick(&e.name, latest, host)? {
        return Ok(false);
    }
    let mut kept = Vec::with_capacity(d.run.len());
    for t in std::mem::take(&mut d.run) {
        if t == latest || store.claim_tick(&e.name, t, host)? {
            kept.push(t);
        }
    }
    d.run = kept;
    Ok(true)
}

/// The run id in what `run` printed: its closing line (`run ID succeeded: …`), or the report with
/// `--output json`.
fn run_id_of(stdout: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(stdout) {
        return v["run_id"].as_str().map(str::to_string);
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

/// Runs one `run PLAN --lock` child for the scheduled time `t` and records how it ended.
async fn run_child(e: &Entry, t: DateTime<Utc>, opts: &Options, clock: &Clock, shared: &Shared) {
    log(
        clock,
        &format!(
            "due {} (scheduled {}, overlap: {})",
            e.name,
            stamp(t),
            match e.overlap {
                Overlap::Skip => "skip",
                Overlap::Queue => "queue",
                Overlap::Allow => "allow",
            }
        ),
    );
    // The run's stdout (its closing line, with the run id) goes to a file rather than a pipe, so that a
    // run left going when the scheduler exits does not write into a closed pipe.
    let out_dir = opts.runs_dir.join(".scheduler").join("out");
    let out_path = out_dir.join(format!(
        "{}.{}.{}.txt",
        crate::exec::lock::lock_path(Path::new(""), &e.name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        t.format("%Y%m%dT%H%M%SZ"),
        hex::encode(rand::random::<[u8; 3]>())
    ));
    let out_file =
        match std::fs::create_dir_all(&out_dir).and_then(|()| std::fs::File::create(&out_path)) {
            Ok(f) => f,
            Err(err) => {
                log(
                    clock,
                    &format!(
                        "cannot start a run of {}: {}: {err}",
                        e.name,
                        out_path.display()
                    ),
                );
                shared
                    .worst_exit
                    .fetch_max(crate::exit::STEP_FAILED, Ordering::SeqCst);
                return;
            }
        };
    let mut cmd = tokio::process::Command::new(&opts.exe);
    cmd.arg("run")
        .arg(&e.path)
        .arg("--lock")
        .arg("--quiet")
        .arg("--runs-dir")
        .arg(&opts.runs_dir)
        .args(&opts.run_args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_file))
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    if let Some(store) = &shared.store {
        cmd.env("AITBC_FLOW_STORE", &store.url);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(err) => {
            let _ = std::fs::remove_file(&out_path);
            log(clock, &format!("cannot start a run of {}: {err}", e.name));
            shared
                .worst_exit
                .fetch_max(crate::exit::STEP_FAILED, Ordering::SeqCst);
            return;
        }
    };
    shared.running.fetch_add(1, Ordering::SeqCst);
    log(
        clock,
        &format!(
            "started {} (scheduled {}, pid {})",
            e.name,
            stamp(t),
            child.id().unwrap_or(0)
        ),
    );
    shared.update(clock, &e.name, |p| p.last_run = Some(t));
    let status = child.wait().await;
    shared.running.fetch_sub(1, Ordering::SeqCst);
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let (code, run_id) = match status {
        Ok(s) => (
            s.code().unwrap_or(crate::exit::STEP_FAILED),
            run_id_of(&stdout),
        ),
        Err(err) => {
            log(clock, &format!("lost the run of {}: {err}", e.name));
            (crate::exit::STEP_FAILED, None)
        }
    };
    let what = match &run_id {
        Some(r) => format!("run {r}"),
        None if code == 0 => "no run (another run held the lock)".into(),
        None => "no run".into(),
    };
    log(
        clock,
        &format!(
            "finished {} (scheduled {}): exit {code}, {what}",
            e.name,
            stamp(t)
        ),
    );
    if code != 0 {
        shared
            .worst_exit
            .fetch_max(crate::exit::STEP_FAILED, Ordering::SeqCst);
    }
    shared.update(clock, &e.name, |p| {
        p.last_exit = Some(code);
        if run_id.is_some() {
            p.last_run_id = run_id;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_is_read_from_the_closing_line_or_the_json_report() {
        assert_eq!(
            run_id_of("run 20261125T020000Z-abc123 succeeded (1 succeeded): report in runs/x\n"),
            Some("20261125T020000Z-abc123".into())
        );
        assert_eq!(
            run_id_of("{\"run_id\": \"R9\", \"status\": \"failed\"}"),
            Some("R9".into())
        );
        assert_eq!(run_id_of(""), None);
    }
}
