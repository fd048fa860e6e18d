//! Schedules end to end: `run --lock` (skip, queue, allow, a stale lock) and `scheduler --once` with
//! catch-up, with the real binary on the embedded coordinator (127.0.0.1 only).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// A plan whose job hangs (until cancelled) when `vars.mode` is `HANG`, else finishes at once.
fn plan_text(name: &str, schedule: &str) -> String {
    format!(
        r#"version: 1
name: {name}
{schedule}
vars:
  mode: quick
steps:
  - id: work
    timeout: 25s
    job:
      job_type: inference
      model: llama2
      wallet: w
      payment: 1
      prompt: "${{{{ vars.mode }}}} work"
"#
    )
}

fn write_plan(dir: &Path, file: &str, name: &str, schedule: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, plan_text(name, schedule)).unwrap();
    p
}

fn run_cmd(plan: &Path, runs: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(["run"])
        .arg(plan)
        .arg("--runs-dir")
        .arg(runs)
        .args([
            "--lock",
            "--embedded-latency",
            "instant",
            "--poll-start",
            "20ms",
            "--poll-max",
            "100ms",
            "--quiet",
        ])
        .args(extra)
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN")
        .env_remove("AITBC_RUNS_DIR");
    c
}

/// Run directories (not `.locks` or `.scheduler`).
fn run_dirs(runs: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(runs) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// A `run --lock` of the plan with a hanging job, started in the background; returns once it holds
/// the lock.
struct Holder {
    child: Child,
}

impl Holder {
    fn start(plan: &Path, runs: &Path, name: &str) -> Holder {
        let child = run_cmd(plan, runs, &["--set", "mode=HANG"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the first run");
        let lock = runs.join(".locks").join(format!("{name}.lock"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::fs::read_to_string(&lock).map_or(true, |s| s.trim().is_empty()) {
            assert!(
                Instant::now() < deadline,
                "the first run never took the lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The run directory exists once the run started.
        while run_dirs(runs).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the first run made no run directory"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Holder { child }
    }

    /// SIGINT, then its exit code.
    fn interrupt(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the first run did not stop on SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_second_locked_run_skips_with_exit_0_and_no_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let plan = write_plan(dir.path(), "p.yaml", "locked", "");
    let first = Holder::start(&plan, &runs, "locked");

    let out = output_within(run_cmd(&plan, &runs, &[]), LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("another run of locked (pid ")
            && stderr.contains("holds the lock; skipping"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert_eq!(run_dirs(&runs).len(), 1, "the skipped run made a directory");

    assert_eq!(first.interrupt(), Some(130));
    let lock = runs.join(".locks/locked.lock");
    assert_eq!(
        std::fs::read_to_string(lock).unwrap(),
        "",
        "lock not released"
    );
    // Free again: the next run runs.
    let out = output_within(run_cmd(&plan, &runs, &[]), LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run_dirs(&runs).len(), 2);
}

#[test]
fn a_queued_run_waits_for_the_lock_and_gives_up_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let plan = write_plan(
        dir.path(),
        "p.yaml",
        "queued",
        "schedule: {cron: \"0 2 * * *\", overlap: queue}",
    );
    let first = Holder::start(&plan, &runs, "queued");

    // A short bound: gives up with exit 4 and no run directory.
    let out = output_within(run_cmd(&plan, &runs, &["--lock-timeout", "300ms"]), LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("giving up"), "{stderr}");
    assert_eq!(run_dirs(&runs).len(), 1);

    // A long one: waits, and runs once the first is stopped.
    let waiter = run_cmd(&plan, &runs, &["--lock-timeout", "20s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(run_dirs(&runs).len(), 1, "the queued run did not wait");
    assert_eq!(first.interrupt(), Some(130));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.wait_with_output());
    });
    let out = rx
        .recv_timeout(LIMIT)
        .expect("the queued run finished")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("waiting up to 20s (overlap: queue)"),
        "{stderr}"
    );
    assert_eq!(run_dirs(&runs).len(), 2);
}

#[test]
fn overlap_allow_runs_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let plan = write_plan(
        dir.path(),
        "p.yaml",
        "allowed",
        "schedule: {cron: \"0 2 * * *\", overlap: allow}",
    );
    let first = Holder::start(&plan, &runs, "allowed");
    let out = output_within(run_cmd(&plan, &runs, &[]), LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("running anyway (overlap: allow)"),
        "{stderr}"
    );
    assert_eq!(run_dirs(&runs).len(), 2);
    // The first run still holds the lock: the second did not take or release it.
    let lock = std::fs::read_to_string(runs.join(".locks/allowed.lock")).unwrap();
    assert!(
        lock.contains(&format!("\"pid\":{}", first.child.id())),
        "{lock}"
    );
    assert_eq!(first.interrupt(), Some(130));
}

#[test]
fn a_stale_lock_of_a_dead_process_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let plan = write_plan(dir.path(), "p.yaml", "stale", "");
    let mut dead = aitbc_flow::exec::lock::LockInfo::current("stale", "20261125T000000Z-dead00");
    dead.pid = 999_999_999;
    std::fs::create_dir_all(runs.join(".locks")).unwrap();
    let lock = runs.join(".locks/stale.lock");
    std::fs::write(&lock, serde_json::to_string(&dead).unwrap()).unwrap();

    let out = output_within(run_cmd(&plan, &runs, &[]), LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "taking over the stale lock of stale (pid 999999999, run 20261125T000000Z-dead00"
        ) && stderr.contains("pid 999999999 is not running"),
        "{stderr}"
    );
    assert_eq!(run_dirs(&runs).len(), 1);
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "");
}

/// Runs `scheduler --once --now NOW` over `plans` and returns (exit code, stderr).
fn scheduler_once(plans: &Path, runs: &Path, now: &str) -> (Option<i32>, String) {
    let mut c = Command::new(bin());
    c.arg("scheduler")
        .arg("--plans")
        .arg(plans)
        .arg("--runs-dir")
        .arg(runs)
        .args(["--once", "--now", now, "--"])
        .args([
            "--embedded-latency",
            "instant",
            "--poll-start",
            "20ms",
            "--poll-max",
            "100ms",
        ])
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN")
        .env_remove("AITBC_RUNS_DIR");
    let out = output_within(c, LIMIT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_state(runs: &Path, plan: &str, last_run: &str) {
    let path = runs.join(".scheduler/state.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        format!(r#"{{"plans": {{"{plan}": {{"last_run": "{last_run}"}}}}}}"#),
    )
    .unwrap();
}

fn read_state(runs: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(runs.join(".scheduler/state.json")).unwrap())
        .unwrap()
}

fn lines_with<'a>(log: &'a str, word: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!("scheduler: {word} ")))
        .collect()
}

#[test]
fn scheduler_catches_up_after_three_days_as_the_plan_says() {
    for (catch_up, expected) in [("none", 0), ("latest", 1), ("all", 3)] {
        let dir = tempfile::tempdir().unwrap();
        let plans = dir.path().join("plans");
        std::fs::create_dir_all(&plans).unwrap();
        let runs = dir.path().join("runs");
        write_plan(
            &plans,
            "daily.yaml",
            "daily",
            &format!("schedule: {{cron: \"0 2 * * *\", catch_up: {catch_up}}}"),
        );
        write_state(&runs, "daily", "2026-11-22T02:00:00Z");
        let (code, log) = scheduler_once(&plans, &runs, "2026-11-25T03:00:00Z");
        assert_eq!(code, Some(0), "{catch_up}: {log}");
        assert_eq!(run_dirs(&runs).len(), expected, "{catch_up}: {log}");
        assert_eq!(
            lines_with(&log, "started").len(),
            expected,
            "{catch_up}: {log}"
        );
        let finished = lines_with(&log, "finished");
        assert_eq!(finished.len(), expected, "{catch_up}: {log}");
        assert!(finished.iter().all(|l| l.contains("exit 0, run ")), "{log}");
        let leftovers = std::fs::read_dir(runs.join(".scheduler/out"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 0, "the runs' stdout files are removed");
        let state = read_state(&runs);
        let daily = &state["plans"]["daily"];
        assert_eq!(daily["checked_until"], "2026-11-25T03:00:00Z", "{state}");
        match catch_up {
            "none" => {
                assert_eq!(lines_with(&log, "skipped").len(), 1, "{log}");
                assert!(
                    log.contains("3 missed time(s) since 2026-11-22T02:00:00Z"),
                    "{log}"
                );
                assert_eq!(daily["last_run"], "2026-11-22T02:00:00Z");
            }
            "latest" => {
                assert!(log.contains("caught up daily"), "{log}");
                assert!(
                    log.contains("started daily (scheduled 2026-11-25T02:00:00Z"),
                    "{log}"
                );
                assert_eq!(daily["last_run"], "2026-11-25T02:00:00Z");
                assert_eq!(daily["last_exit"], 0);
            }
            _ => {
                // In order, one after the other.
                let started = lines_with(&log, "started");
                for (l, day) in started.iter().zip(["23", "24", "25"]) {
                    assert!(
                        l.contains(&format!("scheduled 2026-11-{day}T02:00:00Z")),
                        "{log}"
                    );
                }
                assert_eq!(daily["last_run"], "2026-11-25T02:00:00Z");
            }
        }
    }
}

#[test]
fn scheduler_runs_nothing_that_is_not_due_and_reports_invalid_plans() {
    let dir = tempfile::tempdir().unwrap();
    let plans = dir.path().join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    let runs = dir.path().join("runs");
    write_plan(
        &plans,
        "daily.yaml",
        "daily",
        "schedule: {cron: \"0 2 * * *\", catch_up: all}",
    );
    write_plan(&plans, "new.yaml", "new", "schedule: {cron: \"0 2 * * *\"}");
    write_plan(&plans, "manual.yaml", "manual", "");
    write_plan(
        &plans,
        "zz-copy.yaml",
        "daily",
        "schedule: {cron: \"* * * * *\", catch_up: all}",
    );
    std::fs::write(
        plans.join("broken.yaml"),
        plan_text("broken", "schedule: {cron: \"0 2 * *\"}"),
    )
    .unwrap();
    write_state(&runs, "daily", "2026-11-25T02:00:00Z");
    let (code, log) = scheduler_once(&plans, &runs, "2026-11-25T10:00:00Z");
    assert_eq!(code, Some(0), "{log}");
    assert!(run_dirs(&runs).is_empty(), "{log}");
    assert!(lines_with(&log, "started").is_empty(), "{log}");
    let invalid = lines_with(&log, "invalid plan");
    assert_eq!(invalid.len(), 2, "{log}");
    assert!(
        invalid[0].contains("broken.yaml:3:18:") && invalid[0].contains("five-field"),
        "{log}"
    );
    assert!(
        invalid[1].contains("zz-copy.yaml: the name `daily` is also the name of"),
        "{log}"
    );
    assert!(
        !log.contains("manual"),
        "a plan without a schedule is not scheduled: {log}"
    );
    // A plan seen for the first time counts from now on.
    let state = read_state(&runs);
    assert_eq!(
        state["plans"]["new"]["checked_until"],
        "2026-11-25T10:00:00Z"
    );
    assert!(state["plans"]["new"].get("last_run").is_none());
}

#[test]
fn the_long_lived_scheduler_runs_a_due_plan_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let plans = dir.path().join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    let runs = dir.path().join("runs");
    write_plan(
        &plans,
        "minutely.yaml",
        "minutely",
        "schedule: {cron: \"* * * * *\"}",
    );
    // Seen a minute ago; the next due time is half a second after the scheduler's "now".
    write_state(&runs, "minutely", "2026-11-25T09:59:00Z");
    let mut child = Command::new(bin())
        .arg("scheduler")
        .arg("--plans")
        .arg(&plans)
        .arg("--runs-dir")
        .arg(&runs)
        .args(["--now", "2026-11-25T09:59:59.500Z", "--"])
        .args([
            "--embedded-latency",
            "instant",
            "--poll-start",
            "20ms",
            "--poll-max",
            "100ms",
        ])
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    while !log.contains("scheduler: finished minutely") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                log.push_str(&l);
                log.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no run finished in time:\n{log}");
            }
        }
    }
    assert!(
        log.contains("started minutely (scheduled 2026-11-25T10:00:00Z"),
        "{log}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the scheduler did not stop on SIGTERM:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
        log.push_str(&l);
        log.push('\n');
    }
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("scheduler: stopped"), "{log}");
    assert_eq!(run_dirs(&runs).len(), 1, "{log}");
}

/// Reads a child's stderr lines on a thread.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects lines until one contains `needle` (or panics after `limit`).
fn read_until(
    rx: &std::sync::mpsc::Receiver<String>,
    log: &mut String,
    needle: &str,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while !log.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                log.push_str(&l);
                log.push('\n');
            }
            Err(_) => panic!("no `{needle}` in time:\n{log}"),
        }
    }
}

#[test]
fn sigterm_during_catch_up_starts_no_more_runs_and_waits_for_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let plans = dir.path().join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    let runs = dir.path().join("runs");
    write_plan(
        &plans,
        "daily.yaml",
        "daily",
        "schedule: {cron: \"0 2 * * *\", catch_up: all}",
    );
    write_state(&runs, "daily", "2026-11-22T02:00:00Z");
    // Every run hangs until interrupted.
    let mut child = Command::new(bin())
        .arg("scheduler")
        .arg("--plans")
        .arg(&plans)
        .arg("--runs-dir")
        .arg(&runs)
        .args([
            "--now",
            "2026-11-25T03:00:00Z",
            "--shutdown-wait",
            "15s",
            "--",
        ])
        .args([
            "--embedded-latency",
            "instant",
            "--poll-start",
            "20ms",
            "--poll-max",
            "100ms",
        ])
        .args(["--set", "mode=HANG"])
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let mut log = String::new();
    read_until(
        &rx,
        &mut log,
        "scheduler: started daily",
        Duration::from_secs(15),
    );
    let run_pid: String = log
        .lines()
        .find(|l| l.contains("started daily"))
        .and_then(|l| l.split("pid ").nth(1))
        .map(|s| s.trim_end_matches(')').to_string())
        .unwrap();
    // Wait until the run holds its lock, then stop the scheduler, then the run.
    let lock = runs.join(".locks/daily.lock");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim().is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the run never took the lock:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    read_until(&rx, &mut log, "shutting down", Duration::from_secs(10));
    let _ = Command::new("kill").args(["-INT", &run_pid]).status();
    read_until(&rx, &mut log, "scheduler: stopped", Duration::from_secs(15));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("finished daily (scheduled 2026-11-23T02:00:00Z): exit 130"),
        "{log}"
    );
    assert!(
        log.contains("not started daily: 2 run(s) from 2026-11-24T02:00:00Z on (shutting down)"),
        "{log}"
    );
    assert_eq!(lines_with(&log, "started").len(), 1, "{log}");
    assert_eq!(run_dirs(&runs).len(), 1, "{log}");
}

#[test]
fn the_scheduler_honours_overlap_through_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let plans = dir.path().join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    let runs = dir.path().join("runs");
    let plan = write_plan(
        &plans,
        "daily.yaml",
        "daily",
        "schedule: {cron: \"0 2 * * *\", catch_up: latest}",
    );
    write_state(&runs, "daily", "2026-11-24T02:00:00Z");
    let first = Holder::start(&plan, &runs, "daily");
    let (code, log) = scheduler_once(&plans, &runs, "2026-11-25T02:00:30Z");
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("another run of daily (pid ") && log.contains("skipping (overlap: skip)"),
        "{log}"
    );
    assert!(
        log.contains("finished daily (scheduled 2026-11-25T02:00:00Z): exit 0, no run (another run held the lock)"),
        "{log}"
    );
    assert_eq!(run_dirs(&runs).len(), 1, "{log}");
    assert_eq!(first.interrupt(), Some(130));
}
