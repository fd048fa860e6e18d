//! The PostgreSQL store end to end: a throwaway cluster (one per test binary, under a temp dir, as a
//! non-root user, 127.0.0.1 only), the real binary, the run's embedded coordinator. Without
//! PostgreSQL installed each test skips with one line, except under `CI=true`, where it fails.

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::*;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);
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

/// The only run directory under `runs` (its name is the run id).
fn only_run_id(runs: &Path) -> String {
    let mut ids: Vec<String> = std::fs::read_dir(runs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.pop().unwrap()
}

/// Waits (bounded) until `sql` answers something other than `not`.
fn wait_for(pg: &Cluster, sql: &str, not: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = pg.psql(sql);
        if got != not {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: still {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_journal_is_written_to_the_database_only_under_the_holders_fencing_token() {
    use aitbc_flow::exec::journal::MirrorError;
    use aitbc_flow::exec::lock::LockInfo;
    use aitbc_flow::store::{LockAttempt, Store};
    let Some(pg) = cluster() else { return };
    let store = aitbc_flow::store::postgres::PgStore::connect(&pg.url()).unwrap();
    let LockAttempt::Taken(lock, None) = store
        .try_lock(&LockInfo::current("fence-lib", "run-fence-lib"))
        .unwrap()
    else {
        panic!("the lock was not free")
    };
    let mirror = store
        .journal_mirror("run-fence-lib", "fence-lib", Some(&lock))
        .unwrap()
        .expect("the database keeps a copy");
    mirror
        .write(&[b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()])
        .unwrap();
    mirror.write(&[b"{\"c\":3}".to_vec()]).unwrap();
    let rows = "SELECT string_agg(seq || ':' || record, ' ' ORDER BY seq) FROM aitbc_flow_journal \
                WHERE run_id = 'run-fence-lib'";
    assert_eq!(pg.psql(rows), r#"1:{"a":1} 2:{"b":2} 3:{"c":3}"#);
    // Another holder took the lease over: the next batch is refused, and nothing of it is written.
    pg.psql(
        "UPDATE aitbc_flow_locks SET token = nextval('aitbc_flow_fence') WHERE plan = 'fence-lib'",
    );
    match mirror.write(&[b"{\"d\":4}".to_vec()]) {
        Err(MirrorError::Fenced(why)) => assert!(why.contains("taken over"), "{why}"),
        other => panic!("not fenced: {other:?}"),
    }
    assert_eq!(pg.psql(rows), r#"1:{"a":1} 2:{"b":2} 3:{"c":3}"#);
    // A copy opened later goes on after the records already there.
    pg.psql("DELETE FROM aitbc_flow_locks WHERE plan = 'fence-lib'");
    drop(lock);
    let again = store
        .journal_mirror("run-fence-lib", "fence-lib", None)
        .unwrap()
        .unwrap();
    again.write(&[b"{\"e\":5}".to_vec()]).unwrap();
    assert!(pg.psql(rows).ends_with(r#"3:{"c":3} 4:{"e":5}"#));
}

#[test]
fn a_holder_whose_lease_was_taken_over_stops_with_exit_5_and_writes_nothing_more() {
    let Some(pg) = cluster() else { return };
    let url = pg.url();
    let tmp = tempfile::tempdir().unwrap();
    let p = plan(tmp.path(), "fenced");
    let host_a = tmp.path().join("a");
    let mut first = run_cmd(&p, &host_a, &url, &["--set", "mode=HANG"])
        .env("AITBC_FLOW_LEASE", "2s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while run_dirs(&host_a) == 0 {
        assert!(Instant::now() < deadline, "the first run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = only_run_id(&host_a);
    let count = format!("SELECT count(*) FROM aitbc_flow_journal WHERE run_id = '{id}'");
    // Header, intent, submitted: the job runs (and hangs).
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.psql(&count).parse::<u32>().unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "the journal never reached the database"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let token_a = pg.psql("SELECT token FROM aitbc_flow_locks WHERE plan = 'fenced'");
    // The host pauses (as a long GC pause or a partition would): its lease lapses, another takes it.
    let pid = first.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let before = pg.psql(&count);
    std::thread::sleep(Duration::from_millis(2500));
    let second = run_cmd(&p, &tmp.path().join("b"), &url, &["--set", "mode=HANG"])
        .env("AITBC_FLOW_LEASE", "2s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        pg,
        "SELECT token FROM aitbc_flow_locks WHERE plan = 'fenced'",
        &token_a,
        "the second run did not take the lapsed lease over",
    );
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = first.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = first.kill();
            panic!("the fenced run went on");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut first.stderr.take().unwrap(), &mut said).unwrap();
    assert_eq!(status.code(), Some(5), "{said}");
    assert!(
        said.contains("the lock of fenced was taken over by another run")
            && said.contains("writes nothing more"),
        "{said}"
    );
    assert!(!said.contains(PASSWORD), "{said}");
    assert_eq!(pg.psql(&count), before, "the fenced run wrote more");
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM aitbc_flow_journal WHERE run_id = '{id}' AND token <> {token_a}"
        )),
        "0"
    );
    assert_eq!(interrupt(second), Some(130));
}

fn runs_cmd(runs: &Path, url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("runs")
        .args(args)
        .arg("--runs-dir")
        .arg(runs)
        .args(["--store", url])
        .env_remove("AITBC_RUNS_DIR")
        .env_remove("AITBC_FLOW_STORE")
        .env("NO_COLOR", "1");
    c
}

fn run_ids(runs: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(runs)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn runs_show_and_prune_read_the_database_from_another_host() {
    let Some(pg) = cluster() else { return };
    // A database of its own: pruning reaches every run of a store.
    let url = pg.url_of("history_hosts");
    let tmp = tempfile::tempdir().unwrap();
    let (host_a, host_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let p = plan(tmp.path(), "shown-elsewhere");
    for _ in 0..2 {
        let out = output_within(run_cmd(&p, &host_a, &url, &[]), LIMIT);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let out = output_within(run_cmd(&p, &host_b, &url, &[]), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let a_ids = run_ids(&host_a);
    let b_ids = run_ids(&host_b);
    assert_eq!((a_ids.len(), b_ids.len()), (2, 1));

    // Host b shows a run of host a, which it has no folder of.
    let out = output_within(runs_cmd(&host_b, &url, &["show", &a_ids[0]]), LIMIT);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("shown-elsewhere")
            && said.contains("work")
            && said.contains("on the host that ran it"),
        "{said}"
    );
    assert!(
        said.contains(&host_a.join(&a_ids[0]).display().to_string()),
        "{said}"
    );
    let out = output_within(
        runs_cmd(&host_b, &url, &["show", &a_ids[0], "--markdown"]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("shown-elsewhere"), "{}", text(&out));
    let out = output_within(
        runs_cmd(&host_b, &url, &["show", &a_ids[0], "--html"]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = host_b.join(".shared").join(&a_ids[0]).join("report.html");
    assert!(html.is_file(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        html.display().to_string()
    );
    let out = output_within(runs_cmd(&host_b, &url, &["show", "no-such-run"]), LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no run `no-such-run` in store postgres://postgres:***@"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(PASSWORD));

    // Pruning from host b to the newest run: host a's two runs leave the database (journal too);
    // their folders, on host a, are not b's to remove.
    let out = output_within(
        runs_cmd(&host_b, &url, &["prune", "--keep", "1", "--yes"]),
        LIMIT,
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("removed 2 runs from postgres://postgres:***@"),
        "{said}"
    );
    assert!(
        said.contains("(0 of their folders were on this host)"),
        "{said}"
    );
    let out = output_within(
        runs_cmd(&host_a, &url, &["list", "--output", "json"]),
        LIMIT,
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b_ids[0].as_str()]);
    assert_eq!(
        pg.psql_in(
            "history_hosts",
            &format!(
                "SELECT count(*) FROM aitbc_flow_journal WHERE run_id IN ('{}', '{}')",
                a_ids[0], a_ids[1]
            )
        ),
        "0"
    );
    assert!(
        pg.psql_in(
            "history_hosts",
            &format!(
                "SELECT count(*) FROM aitbc_flow_journal WHERE run_id = '{}'",
                b_ids[0]
            )
        )
        .parse::<u32>()
        .unwrap()
            > 2
    );
    assert_eq!(
        run_ids(&host_a),
        a_ids,
        "host a's folders were removed from host b"
    );
}

#[test]
fn two_runs_from_two_run_dirs_never_overspend_a_wallet_together() {
    // As tests/reservations_e2e.rs, with the reservations in the database: the wallet holds enough
    // for one run, the submits are slowed so that both runs check the balance while the first
    // payment is on its way, and the second fails before sending anything.
    let Some(pg) = cluster() else { return };
    let url = pg.url_of("reserve");
    let serve = Serve::enough_for_one();
    let dir = PlanDir::new(
        "version: 1\nname: pay\nsteps:\n  - id: work\n    job: {job_type: inference, wallet: w, payment: 5, prompt: \"work\"}\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|host| {
            let mut cmd = serve.command();
            cmd.args(run_args(&dir.plan(), &tmp.path().join(host)))
                .args(["--store", &url])
                .env_remove("AITBC_FLOW_STORE")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let codes: Vec<_> = outs.iter().map(|o| o.status.code()).collect();
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(1)),
        "{codes:?}: {}",
        outs.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );
    let refused = outs.iter().find(|o| o.status.code() == Some(1)).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    let issues = report["steps"][0]["issues"].to_string();
    assert!(
        issues.contains("wallet w holds 8 AITBC, of which other runs have reserved 5 AITBC"),
        "{issues}"
    );
    assert!(!text(refused).contains(PASSWORD));
    assert_eq!(serve.submits_seen(), 1, "the second run sent nothing");
    assert_eq!(serve.get("/v1/local/ledger")["jobs"], 1);
    // Released at the runs' ends.
    assert_eq!(
        pg.psql_in("reserve", "SELECT count(*) FROM aitbc_flow_reservations"),
        "0"
    );
}

/// Runs openssl with these arguments in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority `NAME.crt`/`NAME.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
        ],
    );
}

/// A second cluster with `ssl=on`, its certificate for 127.0.0.1 signed by `ca.crt` (made in the
/// test's folder, as is `other-ca.crt`, which signed nothing of it).
fn tls_cluster() -> Option<&'static Cluster> {
    TLS_CLUSTER
        .get_or_init(|| {
            start_cluster_with(|dir| {
                make_ca(dir, "ca");
                make_ca(dir, "other-ca");
                openssl(
                    dir,
                    &[
                        "req",
                        "-newkey",
                        "ec",
                        "-pkeyopt",
                        "ec_paramgen_curve:prime256v1",
                        "-nodes",
                        "-keyout",
                        "server.key",
                        "-out",
                        "server.csr",
                        "-subj",
                        "/CN=127.0.0.1",
                    ],
                );
                std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
                openssl(
                    dir,
                    &[
                        "x509",
                        "-req",
                        "-in",
                        "server.csr",
                        "-CA",
                        "ca.crt",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        "-out",
                        "server.crt",
                        "-days",
                        "2",
                        "-extfile",
                        "san.ext",
                    ],
                );
                use std::os::unix::fs::PermissionsExt;
                for f in ["server.crt", "server.key"] {
                    let p = dir.join(f);
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
                    // The server runs as `nobody` when the tests run as root: the key must be its own.
                    if unsafe { libc::geteuid() } == 0 {
                        let ok = Command::new("chown")
                            .arg("nobody")
                            .arg(&p)
                            .status()
                            .unwrap();
                        assert!(ok.success());
                    }
                }
                // TCP connections must be TLS: what connects shows that TLS was used.
                std::fs::write(
                    dir.join("data/pg_hba.conf"),
                    "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
                )
                .unwrap();
                format!(
                    " -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key",
                    d = dir.display()
                )
            })
        })
        .as_ref()
}

/// `runs list --store URL` from an empty run folder: connects, applies the schema, lists nothing.
fn list_with(url: &str) -> std::process::Output {
    let runs = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin());
    c.args(["runs", "list", "--runs-dir"])
        .arg(runs.path())
        .args(["--store", url])
        .env_remove("AITBC_FLOW_STORE")
        .env_remove("AITBC_RUNS_DIR");
    output_within(c, LIMIT)
}

#[test]
fn tls_require_and_verify_full_connect_and_a_wrong_root_is_refused_clearly() {
    let Some(pg) = tls_cluster() else { return };
    let base = pg.url();
    let dir = pg.dir.display();
    // The server takes TLS connections only (hostssl): each that connects is TLS.
    let out = list_with(&format!("{base}?sslmode=disable"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // TLS, its certificate not checked.
    let out = list_with(&format!("{base}?sslmode=require"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // libpq's default, prefer: TLS when offered.
    let out = list_with(&base);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = list_with(&format!(
        "{base}?sslmode=verify-full&sslrootcert={dir}/ca.crt"
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The certificate checked against roots that did not sign it: refused, saying what was checked.
    let out = list_with(&format!(
        "{base}?sslmode=verify-full&sslrootcert={dir}/other-ca.crt"
    ));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("invalid peer certificate"), "{msg}");
    assert!(
        msg.contains(&format!(
            "sslmode=verify-full: the server's certificate must chain to the roots in sslrootcert {dir}/other-ca.crt"
        )),
        "{msg}"
    );
    assert!(msg.contains("postgres:***@127.0.0.1"), "{msg}");
    assert!(!msg.contains(PASSWORD), "{msg}");
    // The host name is checked too: the certificate names 127.0.0.1, not localhost (verify-ca
    // checks the chain alone).
    let by_name = base.replace("127.0.0.1", "localhost");
    let out = list_with(&format!(
        "{by_name}?sslmode=verify-ca&sslrootcert={dir}/ca.crt"
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = list_with(&format!(
        "{by_name}?sslmode=verify-full&sslrootcert={dir}/ca.crt"
    ));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("certificate"), "{}", text(&out));
}

#[test]
fn a_reservation_whose_holder_stopped_renewing_it_does_not_count() {
    // A reservation of 5 left by a process that died (not renewed for an hour) on a wallet of 8:
    // a run paying 5 is not refused for it, and dropping it changed the wallet's version.
    let Some(pg) = cluster() else { return };
    let url = pg.url_of("reserve_dead");
    let serve = Serve::start(&["--fund", "w=8", "--no-faucet"]);
    // Applies the schema.
    assert_eq!(list_runs(&url), Some(0));
    pg.psql_in(
        "reserve_dead",
        "INSERT INTO aitbc_flow_wallets (wallet, version) VALUES ('w', 3);
         INSERT INTO aitbc_flow_reservations (wallet, run_id, holder, amount, renewed_at)
         VALUES ('w', 'dead-run', 'gone/1/0', 5, now() - interval '1 hour')",
    );
    let dir = PlanDir::new(
        "version: 1\nname: pay\nsteps:\n  - id: work\n    job: {job_type: inference, wallet: w, payment: 5, prompt: \"work\"}\n",
    );
    let out = serve.run(&dir, &["--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        pg.psql_in(
            "reserve_dead",
            "SELECT count(*) FROM aitbc_flow_reservations"
        ),
        "0"
    );
    let version: i64 = pg
        .psql_in(
            "reserve_dead",
            "SELECT version FROM aitbc_flow_wallets WHERE wallet = 'w'",
        )
        .parse()
        .unwrap();
    assert!(version > 3, "{version}");
}

/// `runs list --store URL` from an empty run folder; its exit code.
fn list_runs(url: &str) -> Option<i32> {
    list_with(url).status.code()
}
