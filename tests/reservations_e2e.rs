//! Wallet reservations shared across processes, end to end: two `run` processes of one run folder
//! against one `coordinator serve` whose wallet holds enough for one of them. Each passes its
//! preflight (the wallet holds enough for its own plan); at the submit, the reservation of the first
//! is counted against the second, which fails before sending anything. The coordinator's submits are
//! slowed (`--fault-latency` on `/v1/jobs`), so that both runs check the balance while the first
//! payment is still on its way: without shared reservations both would send.
//! (The same with the PostgreSQL store: `tests/store_postgres.rs`.)

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{PlanDir, Serve, run_args};

const PLAN: &str = r#"version: 1
name: pay
steps:
  - id: work
    job: {job_type: inference, wallet: w, payment: 5, prompt: "work"}
"#;

/// Starts one run of `dir`'s plan into `runs` and returns its child.
fn spawn_run(serve: &Serve, dir: &PlanDir, runs: &std::path::Path) -> std::process::Child {
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), runs))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn run")
}

/// Waits (bounded) for a child and returns its exit code and report.
fn finish(child: std::process::Child) -> (Option<i32>, Value, String) {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("a run did not finish within 90 s");
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{stderr}"));
    (out.status.code(), report, stderr)
}

#[test]
fn two_runs_of_one_run_folder_never_overspend_a_wallet_together() {
    let serve = Serve::enough_for_one();
    let dir = PlanDir::new(PLAN);
    let started = Instant::now();
    let a = spawn_run(&serve, &dir, &dir.runs());
    let b = spawn_run(&serve, &dir, &dir.runs());
    let results = [finish(a), finish(b)];
    assert!(started.elapsed() < Duration::from_secs(60));
    let ok: Vec<_> = results.iter().filter(|r| r.0 == Some(0)).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 != Some(0)).collect();
    assert_eq!(ok.len(), 1, "exactly one run pays: {results:#?}");
    assert_eq!(refused.len(), 1, "{results:#?}");
    let (code, report, _) = refused[0];
    // The exit code of a refused balance preflight.
    assert_eq!(*code, Some(1), "{report}");
    let step = &report["steps"][0];
    assert_eq!(step["state"], "failed", "{step}");
    let issues = step["issues"].to_string();
    assert!(
        issues.contains("wallet w holds 8 AITBC, of which other runs have reserved 5 AITBC")
            && issues.contains("the job needs 5 AITBC (2 short), so nothing was submitted"),
        "{issues}"
    );
    assert!(step["job_id"].is_null(), "{step}");
    // One payment in the ledger; the second run never sent its submit.
    assert_eq!(serve.submits_seen(), 1);
    let ledger = serve.get("/v1/local/ledger");
    assert_eq!(ledger["jobs"], 1, "{ledger}");
    assert_eq!(ledger["wallets"]["w"], "3", "{ledger}");
    // Nothing is left reserved once both runs ended.
    let wallets = dir.runs().join(".wallets");
    for f in std::fs::read_dir(&wallets).unwrap().flatten() {
        let book: Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
        assert_eq!(book["reservations"], serde_json::json!([]), "{book}");
    }
}

#[test]
fn without_the_shared_folder_each_run_would_send_its_submit() {
    // Two run folders do not share a book: both runs pass the balance check and both send, and the
    // coordinator refuses the second payment. This shows what the test above guards against.
    let serve = Serve::enough_for_one();
    let dir = PlanDir::new(PLAN);
    let other = tempfile::tempdir().unwrap();
    let a = spawn_run(&serve, &dir, &dir.runs());
    let b = spawn_run(&serve, &dir, other.path());
    let results = [finish(a), finish(b)];
    assert_eq!(
        results.iter().filter(|r| r.0 == Some(0)).count(),
        1,
        "{results:#?}"
    );
    assert_eq!(serve.submits_seen(), 2);
    assert_eq!(serve.get("/v1/local/ledger")["jobs"], 1);
}
