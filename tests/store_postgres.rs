//! The PostgreSQL store end to end: a throwaway cluster (one per test binary, under a temp dir, as a
//! non-root user, 127.0.0.1 only), the real binary, the run's embedded coordinator. Without
//! PostgreSQL installed each test skips with one line, except under `CI=true`, where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::*;

const LIMIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "pw-never-shown-4711";

/// A running cluster: its URL (with a password, which `trust` ignores), socket dir and port.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// Runs SQL through psql over the cluster's socket.
    fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

/// The directory of `initdb`, `pg_ctl` and `psql` (the newest Debian `postgresql-N`).
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// `cmd` as the user `nobody` when this process is root (PostgreSQL refuses to run as root).
fn as_owner(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

extern "C" fn stop_cluster() {
    if let Some(Some(c)) = CLUSTER.get() {
        let _ = as_owner(&c.bin.join("pg_ctl"))
            .arg("-D")
            .arg(c.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

fn start_cluster() -> Option<Cluster> {
    let Some(bin) = pg_bin() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no PostgreSQL under /usr/lib/postgresql: .ci/run installs it"
        );
        eprintln!("skipped: no PostgreSQL installed (apt-get install postgresql)");
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("aitbc-pg-")
        .tempdir()
        .unwrap()
        .keep();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ok = |c: &mut Command, what: &str| {
        let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(
        as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]),
        "initdb",
    );
    ok(
        as_owner(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off",
                dir.display()
            ))
            .args(["-w", "-t", "30", "start"]),
        "pg_ctl start",
    );
    // SAFETY: registers a plain extern "C" function, run once at exit.
    unsafe { libc::atexit(stop_cluster) };
    Some(Cluster { bin, dir, port })
}

/// The cluster, started on first use; `None` (after one line) when PostgreSQL is not installed.
fn cluster() -> Option<&'static Cluster> {
    CLUSTER.get_or_init(start_cluster).as_ref()
}

fn plan(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            r#"version: 1
name: {name}
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
        ),
    )
    .unwrap();
    p
}

fn run_cmd(plan: &Path, runs: &Path, url: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("run")
        .arg(plan)
        .arg("--runs-dir")
        .arg(runs)
        .args(["--lock", "--store", url])
        .args(["--embedded-latency", "instant", "--poll-start", "20ms"])
        .args(["--poll-max", "100ms", "--quiet"])
        .args(extra)
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN")
        .env_remove("AITBC_RUNS_DIR")
        .env_remove("AITBC_FLOW_STORE");
    c
}

fn run_dirs(runs: &Path) -> usize {
    std::fs::read_dir(runs).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    })
}

/// A locked run whose job hangs, from `runs`; returns once its run directory exists (after the lock).
fn holder(plan: &Path, runs: &Path, url: &str) -> Child {
    let mut child = run_cmd(plan, runs, url, &["--set", "mode=HANG"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while run_dirs(runs) == 0 {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the first run never started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn interrupt(mut child: Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_second_locked_run_from_another_run_dir_skips_and_runs_list_sees_both_hosts() {
    let Some(pg) = cluster() else { return };
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let (host_a, host_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let p = plan(tmp.path(), "shared-lock");

    let first = holder(&p, &host_a, &url);
    let out = output_within(run_cmd(&p, &host_b, &url, &[]), LIMIT);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("another run of shared-lock (pid ")
            && said.contains("holds the lock; skipping"),
        "{said}"
    );
    assert_eq!(run_dirs(&host_b), 0, "the skipped run made a directory");
    assert_eq!(interrupt(first), Some(130));
    assert_eq!(
        pg.psql("SELECT count(*) FROM aitbc_flow_locks WHERE plan = 'shared-lock'"),
        "0",
        "the lease was not released"
    );

    // Free again: host b runs it.
    let out = output_within(run_cmd(&p, &host_b, &url, &[]), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A third run folder, which ran nothing, lists both hosts' runs from the database.
    let mut list = Command::new(bin());
    list.args([
        "runs",
        "list",
        "--output",
        "json",
        "--plan",
        "shared-lock",
        "--store",
        &url,
    ])
    .arg("--runs-dir")
    .arg(tmp.path().join("c"));
    let out = output_within(list, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "interrupted"], "{runs:#}");
}

#[test]
fn a_lease_not_renewed_for_the_lease_period_is_taken_over_with_a_new_fencing_token() {
    let Some(pg) = cluster() else { return };
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let p = plan(tmp.path(), "lapsed");
    let mut first = holder(&p, &tmp.path().join("a"), &url);
    // The first host dies hard: its lease stays until it lapses.
    first.kill().unwrap();
    first.wait().unwrap();
    let token_before = pg.psql("SELECT token FROM aitbc_flow_locks WHERE plan = 'lapsed'");
    assert!(!token_before.is_empty(), "no lease row");
    let out = output_within(run_cmd(&p, &tmp.path().join("b"), &url, &[]), LIMIT);
    assert!(text(&out).contains("skipping"), "{}", text(&out));
    // Thirty seconds without a heartbeat, as if they had passed.
    pg.psql("UPDATE aitbc_flow_locks SET renewed_at = now() - interval '31 seconds' WHERE plan = 'lapsed'");
    let out = output_within(run_cmd(&p, &tmp.path().join("b"), &url, &[]), LIMIT);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("taking over the stale lock of lapsed")
            && said.contains("has not renewed its lease"),
        "{said}"
    );
    let seq: i64 = pg
        .psql("SELECT last_value FROM aitbc_flow_fence")
        .parse()
        .unwrap();
    assert!(seq > token_before.parse::<i64>().unwrap());
}

#[test]
fn a_bad_store_names_the_redacted_url_and_never_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let p = plan(tmp.path(), "nowhere");
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://flow:{PASSWORD}@127.0.0.1:{port}/flow");
    let out = output_within(run_cmd(&p, &tmp.path().join("r"), &url, &[]), LIMIT);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("store postgres://flow:***@127.0.0.1:{port}/flow")),
        "{said}"
    );
    assert!(!said.contains(PASSWORD), "{said}");
}
