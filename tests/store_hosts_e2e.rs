//! Several hosts sharing one PostgreSQL store, end to end (issue 15): three scheduler processes with
//! separate plan folders and run dirs (as if three hosts) against one database and one `coordinator
//! serve`; each due time runs once; the run's process and its scheduler are killed with SIGKILL
//! mid-run and the host's folders removed; after the lease period another host's scheduler resumes
//! the run from the database (its journal and the files it read), each step's job exactly once on the
//! coordinator and the ledger balanced. Without PostgreSQL installed the test skips with one line,
//! except under `CI=true`, where it fails.

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::*;
use serde_json::Value;
use support::*;

/// The whole test ends within this (it stops by itself).
const LIMIT: Duration = Duration::from_secs(120);

/// Three steps in a chain, 2 s each on `coordinator serve --latency default` (training jobs): a
/// run is mid-way for a few seconds. The prompts come from a file of the repository.
const PLAN: &str = r#"version: 1
name: hosts-nightly
schedule:
  cron: "* * * * *"
steps:
  - id: a
    timeout: 60s
    job: {job_type: training, model: llama2, wallet: w, payment: 10, prompt_file: ../prompts/a.md}
  - id: b
    needs: [a]
    timeout: 60s
    job: {job_type: training, model: llama2, wallet: w, payment: 11, prompt: "b after ${{ steps.a.job_id }}"}
  - id: c
    needs: [b]
    timeout: 60s
    job: {job_type: training, model: llama2, wallet: w, payment: 12, prompt: "c after ${{ steps.b.job_id }}"}
"#;

/// One host: a repository with the plan and its prompt file, and a run dir.
struct Host {
    root: PathBuf,
}

impl Host {
    fn new(base: &Path, name: &str) -> Host {
        let root = base.join(name);
        std::fs::create_dir_all(root.join("repo/.git")).unwrap();
        std::fs::create_dir_all(root.join("repo/plans")).unwrap();
        std::fs::create_dir_all(root.join("repo/prompts")).unwrap();
        std::fs::write(root.join("repo/plans/nightly.yaml"), PLAN).unwrap();
        std::fs::write(root.join("repo/prompts/a.md"), "the first step's prompt").unwrap();
        Host { root }
    }
    fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }
}

/// A scheduler process and what it logged so far.
struct Scheduler {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Scheduler {
    fn start(serve: &Serve, host: &Host, url: &str, now: &str) -> Scheduler {
        let mut child = serve
            .command()
            .arg("scheduler")
            .arg("--plans")
            .arg(host.root.join("repo/plans"))
            .arg("--runs-dir")
            .arg(host.runs())
            .args(["--store", url, "--now", now])
            .args(["--", "--poll-start", "20ms", "--poll-max", "100ms"])
            .env("AITBC_FLOW_LEASE", "2s")
            .env_remove("AITBC_RUNS_DIR")
            .env_remove("AITBC_FLOW_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the scheduler");
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Scheduler { child, log }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The pid of the run child it started, from its `started … (pid N)` line.
    fn run_pid(&self) -> Option<u32> {
        self.lines().iter().find_map(|l| {
            l.split("started hosts-nightly (scheduled ")
                .nth(1)?
                .split("pid ")
                .nth(1)?
                .trim_end_matches(')')
                .parse()
                .ok()
        })
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// Waits (bounded by the test's deadline) until `f` gives something.
fn until<T>(
    deadline: Instant,
    what: &str,
    logs: &[&Scheduler],
    mut f: impl FnMut() -> Option<T>,
) -> T {
    loop {
        if let Some(v) = f() {
            return v;
        }
        let bad = logs
            .iter()
            .any(|s| s.lines().iter().any(|l| l.contains("invalid plan")));
        if Instant::now() > deadline || bad {
            let all: Vec<String> = logs.iter().flat_map(|s| s.lines()).collect();
            panic!(
                "{what} did not happen in time; the schedulers logged:\n{}",
                all.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Null => 0.0,
        other => other.as_f64().unwrap(),
    }
}

#[test]
fn three_schedulers_run_each_tick_once_and_a_dead_hosts_run_is_resumed_on_another_exactly_once() {
    let Some(pg) = cluster() else { return };
    let deadline = Instant::now() + LIMIT;
    let url = pg.url_of("hosts_e2e");
    let serve = Serve::start(&["--latency", "default", "--fund", "w=100", "--no-faucet"]);
    let base = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|n| Host::new(base.path(), n))
        .collect();
    // Three seconds before a due time, on every host's clock.
    let now = "2026-12-01T10:00:57Z";
    let mut scheds: Vec<Option<Scheduler>> = hosts
        .iter()
        .map(|h| Some(Scheduler::start(&serve, h, &url, now)))
        .collect();

    // The due time runs once: one scheduler starts it.
    let all: Vec<&Scheduler> = scheds.iter().flatten().collect();
    let (runner, pid) = until(deadline, "a scheduled run", &all, || {
        scheds
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.as_ref()?.run_pid().map(|p| (i, p)))
    });
    // Mid-run: the first job is on the coordinator (its 2 s are not over).
    until(deadline, "the first job", &all, || {
        (!serve.jobs().is_empty()).then_some(())
    });
    let run_id = pg.psql_in("hosts_e2e", "SELECT run_id FROM aitbc_flow_run_plans");
    assert!(
        !run_id.is_empty() && !run_id.contains('\n'),
        "one run: {run_id}"
    );
    // The files it read are in the database, content-addressed; no secret among them.
    assert_eq!(
        pg.psql_in(
            "hosts_e2e",
            &format!(
                "SELECT string_agg(role || ' ' || path, ', ' ORDER BY role) \
                 FROM aitbc_flow_run_files WHERE run_id = '{run_id}'"
            )
        ),
        "plan plans/nightly.yaml, prompt prompts/a.md"
    );

    drop(all);
    // The host dies: its run and its scheduler are killed, its folders are gone.
    kill9(pid);
    let dead = scheds[runner].take().unwrap();
    kill9(dead.child.id());
    let dead_log = dead.lines();
    drop(dead);
    std::fs::remove_dir_all(&hosts[runner].root).unwrap();

    // Another host takes it over after the lease period and resumes it to its end.
    let alive: Vec<&Scheduler> = scheds.iter().flatten().collect();
    until(deadline, "the resumed run's end", &alive, || {
        (pg.psql_in(
            "hosts_e2e",
            &format!("SELECT count(*) FROM aitbc_flow_runs WHERE run_id = '{run_id}'"),
        ) == "1")
            .then_some(())
    });
    // Every surviving scheduler may start a resume; the lock lets one through and the others skip.
    assert!(
        alive.iter().any(|s| s
            .lines()
            .iter()
            .any(|l| l.contains(&format!("taking over run {run_id}")))),
        "a scheduler took the run over"
    );
    let status = pg.psql_in(
        "hosts_e2e",
        &format!("SELECT report::json->>'status' FROM aitbc_flow_runs WHERE run_id = '{run_id}'"),
    );
    assert_eq!(status, "succeeded");

    // Each step's job exactly once on the coordinator, each completed.
    let jobs = serve.jobs();
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    let mut ids: Vec<&str> = jobs.iter().filter_map(|j| j["job_id"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{jobs:#?}");
    // The ledger balances: the wallet paid exactly the three prices, nothing is held.
    let l = serve.get("/v1/local/ledger");
    let wallets: f64 = l["wallets"].as_object().unwrap().values().map(num).sum();
    assert_eq!(wallets + num(&l["escrow"]), num(&l["minted"]), "{l}");
    assert_eq!(num(&l["wallets"]["w"]), 100.0 - (10.0 + 11.0 + 12.0), "{l}");
    assert_eq!(num(&l["escrow"]), 0.0, "{l}");

    // Each tick ran once: one start of a scheduled run per claimed due time, across all hosts.
    let ticks: usize = pg
        .psql_in("hosts_e2e", "SELECT count(*) FROM aitbc_flow_ticks")
        .parse()
        .unwrap();
    let starts = alive
        .iter()
        .map(|s| s.lines())
        .chain(std::iter::once(dead_log.clone()))
        .flatten()
        .filter(|l| l.contains("started hosts-nightly (scheduled"))
        .count();
    assert_eq!(starts, ticks, "{dead_log:#?}");
    let runs: usize = pg
        .psql_in("hosts_e2e", "SELECT count(*) FROM aitbc_flow_run_plans")
        .parse()
        .unwrap();
    assert_eq!(runs, ticks);

    // The taker rebuilt the run's folder from the database: the journal, the plan and its prompt
    // file in their layout; the journal has two starts, one intent per step (the resume re-attached
    // to the first job and submitted the others) and one end.
    let others: Vec<&Host> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != runner)
        .map(|(_, h)| h)
        .collect();
    let ended = |h: &Host| {
        std::fs::read_to_string(h.runs().join(&run_id).join("journal.jsonl"))
            .is_ok_and(|j| j.lines().any(|l| l.starts_with("{\"end\"")))
    };
    let taker = others
        .iter()
        .position(|h| ended(h))
        .expect("the resumed run's folder on one of the other hosts");
    assert!(
        !ended(others[1 - taker]),
        "the run was resumed on one host only"
    );
    let folder = others[taker].runs().join(&run_id);
    assert_eq!(
        std::fs::read_to_string(folder.join(".plan/prompts/a.md")).unwrap(),
        "the first step's prompt"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join(".plan/plans/nightly.yaml")).unwrap(),
        PLAN
    );
    let journal = std::fs::read_to_string(folder.join("journal.jsonl")).unwrap();
    let kinds: Vec<String> = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.as_object()?.keys().next().cloned())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "run").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "end").count(), 1, "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "intent").count(),
        3,
        "{kinds:?}"
    );

    // `runs list` on the third host shows the run; no output ever showed the password.
    let out = output_within(
        {
            let mut c = Command::new(bin());
            c.args(["runs", "list", "--store", &url, "--runs-dir"])
                .arg(others[1 - taker].runs())
                .env_remove("AITBC_FLOW_STORE");
            c
        },
        Duration::from_secs(30),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&run_id));
    for line in alive.iter().flat_map(|s| s.lines()).chain(dead_log) {
        assert!(!line.contains(PASSWORD), "{line}");
    }
}

/// A plan due every hour that makes up for the latest missed time, run by the embedded coordinator.
const HOURLY: &str = r#"version: 1
name: hosts-hourly
schedule:
  cron: "0 * * * *"
  catch_up: latest
steps:
  - id: work
    job: {job_type: inference, model: llama2, wallet: w, payment: 1, prompt: "hourly work"}
"#;

#[test]
fn the_catch_up_decision_is_taken_once_by_two_schedulers_that_were_both_down() {
    let Some(pg) = cluster() else { return };
    let url = pg.url_of("hosts_catch_up");
    let base = tempfile::tempdir().unwrap();
    // Two hosts whose schedulers last looked three hours ago (their state files say so).
    let mut children = Vec::new();
    for name in ["a", "b"] {
        let root = base.path().join(name);
        std::fs::create_dir_all(root.join("plans")).unwrap();
        std::fs::create_dir_all(root.join("runs/.scheduler")).unwrap();
        std::fs::write(root.join("plans/hourly.yaml"), HOURLY).unwrap();
        std::fs::write(
            root.join("runs/.scheduler/state.json"),
            r#"{"plans": {"hosts-hourly": {"checked_until": "2026-12-01T07:30:00Z"}}}"#,
        )
        .unwrap();
        let child = Command::new(bin())
            .arg("scheduler")
            .arg("--plans")
            .arg(root.join("plans"))
            .arg("--runs-dir")
            .arg(root.join("runs"))
            .args(["--store", &url, "--once", "--now", "2026-12-01T10:30:00Z"])
            .args([
                "--",
                "--embedded-latency",
                "instant",
                "--poll-start",
                "20ms",
            ])
            .env_remove("AITBC_COORDINATOR_URL")
            .env_remove("AITBC_TOKEN")
            .env_remove("AITBC_RUNS_DIR")
            .env_remove("AITBC_FLOW_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    let logs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let pid = c.id();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(c.wait_with_output());
            });
            let out = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    kill9(pid);
                    panic!("a scheduler --once did not finish within a minute");
                });
            let out = out.unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stderr).into_owned()
        })
        .collect();
    let all = logs.join("");
    // One host made the decision and ran the latest missed time; the other did nothing for it.
    assert_eq!(
        all.matches("caught up hosts-hourly: 3 missed time(s)")
            .count(),
        1,
        "{all}"
    );
    assert_eq!(
        all.matches("started hosts-hourly (scheduled 2026-12-01T10:00:00Z")
            .count(),
        1,
        "{all}"
    );
    assert_eq!(all.matches("started hosts-hourly").count(), 1, "{all}");
    assert_eq!(
        pg.psql_in(
            "hosts_catch_up",
            "SELECT string_agg(plan || ' ' || to_char(due AT TIME ZONE 'UTC', 'HH24:MI'), ',') FROM aitbc_flow_ticks"
        ),
        "hosts-hourly 10:00"
    );
    assert!(!all.contains(PASSWORD), "{all}");
}

/// Two steps whose first prompt comes from a file and a `--vars` file.
const WITH_VARS: &str = r#"version: 1
name: hosts-vars
vars: {topic: nothing}
steps:
  - id: a
    timeout: 60s
    job: {job_type: training, model: llama2, wallet: w, payment: 10, prompt_file: ../prompts/a.md}
  - id: b
    needs: [a]
    timeout: 60s
    job: {job_type: training, model: llama2, wallet: w, payment: 11, prompt: "b about ${{ vars.topic }}"}
"#;

/// How the first host starts the run that dies: with a `--vars` file, or with `--vars-from` an
/// earlier run of that host (whose folder dies with it).
enum Given {
    VarsFile,
    VarsFrom,
}

#[test]
fn resume_from_another_run_dir_rebuilds_the_run_from_the_database_with_its_vars_and_prompt_files() {
    resume_on_another_host("hosts_resume", Given::VarsFile);
}

#[test]
fn a_run_started_with_vars_from_is_resumed_on_another_host_with_the_earlier_runs_vars() {
    resume_on_another_host("hosts_vars_from", Given::VarsFrom);
}

/// Host `a` starts [`WITH_VARS`] with `topic: rust` (from a `--vars` file, or from an earlier run
/// through `--vars-from`) and dies after the first job; its folders go with it. Host `b` resumes the
/// run from the database alone: both prompts say `rust`, each job once, the ledger balanced.
fn resume_on_another_host(db: &str, given: Given) {
    let Some(pg) = cluster() else { return };
    let deadline = Instant::now() + LIMIT;
    let url = pg.url_of(db);
    let serve = Serve::start(&["--latency", "default", "--fund", "w=100", "--no-faucet"]);
    let base = tempfile::tempdir().unwrap();
    let a = base.path().join("a");
    for d in ["repo/.git", "repo/plans", "repo/prompts", "repo/vars"] {
        std::fs::create_dir_all(a.join(d)).unwrap();
    }
    std::fs::write(a.join("repo/plans/p.yaml"), WITH_VARS).unwrap();
    std::fs::write(a.join("repo/prompts/a.md"), "a about ${{ vars.topic }}").unwrap();
    std::fs::write(a.join("repo/vars/v.yaml"), "topic: rust\n").unwrap();
    let start = |extra: &[&str]| {
        let mut cmd = serve.command();
        cmd.arg("run")
            .arg(a.join("repo/plans/p.yaml"))
            .args(extra)
            .arg("--runs-dir")
            .arg(a.join("runs"))
            .args(["--quiet", "--poll-start", "20ms", "--poll-max", "100ms"])
            .env("AITBC_FLOW_LEASE", "2s")
            .env_remove("AITBC_FLOW_STORE")
            .env_remove("AITBC_RUNS_DIR")
            .stdin(Stdio::null());
        cmd
    };
    let vars_file = a.join("repo/vars/v.yaml").display().to_string();
    let mut earlier_jobs = 0;
    let extra: Vec<String> = match given {
        Given::VarsFile => vec!["--vars".into(), vars_file],
        Given::VarsFrom => {
            // An earlier run of host a, whose vars the run that dies starts from.
            let out = output_within(start(&["--set", "topic=rust"]), Duration::from_secs(60));
            assert_eq!(out.status.code(), Some(0), "{out:?}");
            earlier_jobs = serve.jobs().len();
            let earlier = std::fs::read_dir(a.join("runs"))
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| !n.starts_with('.'))
                .unwrap();
            vec!["--vars-from".into(), earlier]
        }
    };
    let mut first = start(&extra.iter().map(String::as_str).collect::<Vec<_>>())
        .args(["--lock", "--store", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until(deadline, "the first job", &[], || {
        (serve.jobs().len() > earlier_jobs).then_some(())
    });
    // The host dies mid-run; its folders go with it.
    kill9(first.id());
    let _ = first.wait();
    std::fs::remove_dir_all(&a).unwrap();
    let run_id = pg.psql_in(db, "SELECT run_id FROM aitbc_flow_run_plans");
    // After the lease period, from another host's run dir.
    std::thread::sleep(Duration::from_secs(3));
    let b = base.path().join("b");
    let mut cmd = serve.command();
    cmd.args(["resume", &run_id, "--store", &url, "--runs-dir"])
        .arg(b.join("runs"))
        .args(["--poll-start", "20ms", "--poll-max", "100ms"])
        .env("AITBC_FLOW_LEASE", "2s")
        .env_remove("AITBC_FLOW_STORE")
        .env_remove("AITBC_RUNS_DIR");
    let out = output_within(cmd, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("its folder is rebuilt from"), "{text}");
    assert!(text.contains("taking over the stale lock"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    // The vars and the prompt file were read from the copies: both prompts say `rust`.
    let jobs = serve.jobs();
    assert_eq!(jobs.len(), earlier_jobs + 2, "{jobs:#?}");
    let mut prompts: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j["payload"]["prompt"].as_str())
        .collect();
    prompts.sort();
    let runs = 1 + earlier_jobs / 2;
    let mut expected = vec!["a about rust"; runs];
    expected.extend(vec!["b about rust"; runs]);
    assert_eq!(prompts, expected, "{jobs:#?}");
    let l = serve.get("/v1/local/ledger");
    let paid = 21.0 * runs as f64;
    assert_eq!(num(&l["wallets"]["w"]), 100.0 - paid, "{l}");
    let copy = b.join("runs").join(&run_id).join(".plan");
    assert!(copy.join("prompts/a.md").is_file());
    if let Given::VarsFile = given {
        assert!(copy.join("vars/v.yaml").is_file());
    }
}
