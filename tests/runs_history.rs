//! `runs list`, `runs show`, `runs prune` over real runs on the embedded coordinator.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const OK: &str = "version: 1\nname: hist-ok\nsteps:\n  - id: a\n    balance: {wallet: w}\n";
const BAD: &str =
    "version: 1\nname: hist-bad\nsteps:\n  - id: a\n    balance: {wallet: w, min: 1000000}\n";

fn run(plan: &std::path::Path, runs: &std::path::Path) -> i32 {
    let mut c = Command::new(bin());
    c.args(run_args(plan, runs))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL");
    output_within(c, Duration::from_secs(60))
        .status
        .code()
        .unwrap_or(-1)
}

fn runs_cmd(args: &[&str], runs: &std::path::Path) -> std::process::Output {
    let mut c = Command::new(bin());
    c.arg("runs")
        .args(args)
        .args(["--runs-dir", runs.to_str().unwrap()]);
    output_within(c, Duration::from_secs(30))
}

#[test]
fn list_show_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.yaml");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&ok, OK).unwrap();
    std::fs::write(&bad, BAD).unwrap();
    let runs = dir.path().join("runs");
    assert_eq!(run(&ok, &runs), 0);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(run(&bad, &runs), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(run(&ok, &runs), 0);

    let out = runs_cmd(&["list", "--output", "json"], &runs);
    assert_eq!(out.status.code(), Some(0));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 3);
    // Newest first.
    assert_eq!(list[0]["plan"], "hist-ok");
    assert_eq!(list[1]["plan"], "hist-bad");
    assert_eq!(list[1]["status"], "failed");

    let out = runs_cmd(&["list", "--status", "failed", "--output", "json"], &runs);
    let failed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failed.len(), 1);
    let out = runs_cmd(&["list", "--plan", "hist-ok", "--output", "json"], &runs);
    let oks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(oks.len(), 2);

    let bad_id = list[1]["run_id"].as_str().unwrap();
    // For the terminal: a table, not Markdown; `--markdown` gives summary.md as it is.
    let out = runs_cmd(&["show", bad_id], &runs);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("Run {bad_id} of hist-bad — failed")),
        "{text}"
    );
    assert!(!text.contains("# Run") && !text.contains("|---"), "{text}");
    assert!(text.contains("below the minimum"), "{text}");
    let out = runs_cmd(&["show", bad_id, "--markdown"], &runs);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("# Run"), "{text}");
    assert!(text.contains("below the minimum"), "{text}");

    let out = runs_cmd(&["show", "no-such-run"], &runs);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run `no-such-run`"));

    let out = runs_cmd(&["prune", "--keep", "1"], &runs);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 2 runs"));
    let out = runs_cmd(&["list", "--output", "json"], &runs);
    let left: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["run_id"], list[0]["run_id"]);
}

/// A report of another format version is neither listed nor shown, and the warning says why.
#[test]
fn a_report_of_another_version_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.yaml");
    std::fs::write(&ok, OK).unwrap();
    let runs = dir.path().join("runs");
    assert_eq!(run(&ok, &runs), 0);
    let run_dir = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("report.json").is_file())
        .unwrap();
    let id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let path = run_dir.join("report.json");
    let mut report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    report["report_version"] = 2.into();
    std::fs::write(&path, report.to_string()).unwrap();
    std::fs::remove_file(run_dir.join("summary.md")).unwrap();
    let warning = format!(
        "{}: report format version 2, but aitbc-flow {} reads report format version 1 only",
        path.display(),
        env!("CARGO_PKG_VERSION")
    );

    let out = runs_cmd(&["list", "--output", "json"], &runs);
    assert_eq!(out.status.code(), Some(0));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list.is_empty(), "{list:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&warning), "{stderr}");

    let out = runs_cmd(&["show", &id], &runs);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&warning), "{stderr}");
    assert!(stderr.contains("has no readable report"), "{stderr}");
}
