//! Status functions in `when:` end to end: a `failure()` step and an `always()` clean-up run after a
//! failure stopped the run (fail-fast), an `always()` clean-up runs after Ctrl-C, and a `failure()` step
//! is skipped, saying why, when nothing failed. The real binary against the embedded coordinator (or a
//! `coordinator serve` child), over HTTP on 127.0.0.1.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Each step of a report with its state, and for a status step the function that gates it, why it
/// ran or was skipped, and the summary of one that did not run (what the snapshots show).
fn reasons(report: &Value) -> Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({
                "id": s["id"], "state": s["state"], "when": s["when"], "reason": s["reason"],
            });
            // The summary of a status step that did not run says why; others name a job (whose id
            // changes from run to run) or a balance.
            if s.get("when").is_some() && s["state"] != "succeeded" {
                v["summary"] = s["summary"].clone();
            }
            v
        })
        .collect()
}

fn embedded_run(dir: &PlanDir) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN");
    output_within(cmd, LIMIT)
}

/// A run on `serve` (with `E2E_PHASE=HANG`), sent SIGINT once its first job is submitted.
fn interrupted_run(serve: &Serve, dir: &PlanDir) -> std::process::Output {
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .env("E2E_PHASE", "HANG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    interrupt_once_submitted(serve, cmd)
}

#[test]
fn failure_and_always_steps_run_after_fail_fast_and_read_how_the_run_went() {
    let dir = PlanDir::new(
        r#"
version: 1
name: failing-nightly
steps:
  - id: bad
    job: {job_type: inference, wallet: w, payment: 1, prompt: "FAIL please"}
  - id: publish
    needs: [bad]
    balance: {wallet: w}
  - id: on_failure
    when: "${{ failure() }}"
    balance: {wallet: w}
    outputs:
      said: "${{ run.status }}: ${{ run.failed_steps | join(',') }}"
  - id: on_success
    when: "${{ success() }}"
    needs: [bad]
    balance: {wallet: w}
  - id: tidy
    needs: [publish]
    when: always()
    balance: {wallet: w}
"#,
    );
    let out = embedded_run(&dir);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the failure still fails the run; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["status"], "failed");
    assert_eq!(step(&report, "bad")["state"], "failed");
    let on_failure = step(&report, "on_failure");
    assert_eq!(on_failure["state"], "succeeded", "{on_failure}");
    assert_eq!(on_failure["outputs"]["said"], "failed: bad");
    assert_eq!(step(&report, "tidy")["state"], "succeeded");
    for id in ["publish", "on_success"] {
        assert_ne!(step(&report, id)["state"], "succeeded", "{id} must not run");
    }
    // Why each status step ran: in report.json, summary.md and the terminal.
    assert_eq!(on_failure["when"], "failure()");
    assert_eq!(on_failure["reason"], "ran: step bad failed");
    insta::assert_json_snapshot!("reasons_after_a_failure", reasons(&report));
    let summary = std::fs::read_to_string(dir.run_dir().join("summary.md")).unwrap();
    assert!(summary.contains("## Status steps"), "{summary}");
    assert!(
        summary.contains("- on_failure (`failure()`): ran: step bad failed"),
        "{summary}"
    );
    assert!(
        summary.contains("- tidy (`always()`): ran: step bad failed"),
        "{summary}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[ran: step bad failed]"), "{stderr}");
}

#[test]
fn a_failure_step_is_skipped_with_its_reason_when_nothing_failed() {
    let dir = PlanDir::new(
        r#"
version: 1
name: fine
steps:
  - id: good
    balance: {wallet: w}
  - id: on_failure
    when: "${{ failure() }}"
    balance: {wallet: w}
  - id: always_after
    when: "${{ always() }}"
    balance: {wallet: w}
    outputs:
      said: "${{ run.status }}"
"#,
    );
    let out = embedded_run(&dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    let skipped = step(&report, "on_failure");
    assert_eq!(skipped["state"], "skipped");
    assert_eq!(skipped["reason"], "skipped: no step failed");
    assert_eq!(skipped["summary"], "Step skipped: no step failed");
    let after = step(&report, "always_after");
    assert_eq!(after["state"], "succeeded");
    assert_eq!(after["outputs"]["said"], "running");
    assert_eq!(after["reason"], "ran: no step failed");
    // A plain step says nothing of the kind.
    assert!(step(&report, "good").get("reason").is_none());
    insta::assert_json_snapshot!("reasons_when_nothing_failed", reasons(&report));
    let summary = std::fs::read_to_string(dir.run_dir().join("summary.md")).unwrap();
    assert!(
        summary.contains("- on_failure (`failure()`): skipped: no step failed"),
        "{summary}"
    );
}

#[test]
fn an_always_cleanup_runs_after_ctrl_c_and_a_failure_step_does_not() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(
        r#"
version: 1
name: interrupted-cleanup
steps:
  - id: long
    timeout: 10m
    job: {job_type: training, wallet: w, payment: 25, prompt: "HANG forever"}
  - id: cleanup
    needs: [long]
    when: "${{ always() }}"
    timeout: 30s
    balance: {wallet: w}
    outputs:
      said: "${{ run.status }}"
  - id: on_failure
    needs: [long]
    when: "${{ failure() }}"
    balance: {wallet: w}
"#,
    );
    let out = interrupted_run(&serve, &dir);
    assert_eq!(
        out.status.code(),
        Some(130),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.run_dir().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["status"], "interrupted");
    assert_eq!(step(&report, "long")["state"], "cancelled");
    let cleanup = step(&report, "cleanup");
    assert_eq!(cleanup["state"], "succeeded", "{cleanup}");
    assert_eq!(cleanup["outputs"]["said"], "cancelled");
    assert_ne!(step(&report, "on_failure")["state"], "succeeded");
    assert_eq!(cleanup["reason"], "ran after Ctrl-C (always())");
    insta::assert_json_snapshot!("reasons_after_ctrl_c", reasons(&report));
    assert_eq!(serve.jobs()[0]["state"], "CANCELED");
}

#[test]
fn resume_after_ctrl_c_runs_each_status_step_once_and_submits_nothing_twice() {
    // Ctrl-C while `long` runs, before the status steps: `cleanup` (always()) runs on the way out,
    // `on_failure` does not; the resume submits `long` again (its job was cancelled and refunded),
    // keeps `cleanup` and skips `on_failure` (nothing failed now).
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(
        r#"
version: 1
name: resumed-cleanup
env: [E2E_PHASE]
steps:
  - id: long
    timeout: 10m
    job: {job_type: inference, wallet: w, payment: 2, prompt: "${{ env.E2E_PHASE }} long"}
  - id: cleanup
    needs: [long]
    when: always()
    timeout: 1m
    job: {job_type: inference, wallet: w, payment: 1, prompt: "cleanup after ${{ run.status }}"}
  - id: on_failure
    when: failure()
    balance: {wallet: w}
"#,
    );
    let out = interrupted_run(&serve, &dir);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = dir.run_dir();
    let first: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(step(&first, "cleanup")["state"], "succeeded");
    assert_eq!(step(&first, "on_failure")["state"], "cancelled");

    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let mut c = serve.command();
    c.args(["resume", &run_id, "--runs-dir"])
        .arg(dir.runs())
        .args(["--output", "json"])
        .env("E2E_PHASE", "go");
    let out = output_within(c, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = report_of(&out);
    assert_eq!(resumed["status"], "succeeded");
    for id in ["long", "cleanup"] {
        assert_eq!(step(&resumed, id)["state"], "succeeded", "{id}");
    }
    // `cleanup` is the first start's (its reason too), `on_failure` is skipped: nothing failed.
    assert_eq!(
        step(&resumed, "cleanup")["job_id"],
        step(&first, "cleanup")["job_id"]
    );
    assert_eq!(
        step(&resumed, "cleanup")["reason"],
        "ran after Ctrl-C (always())"
    );
    assert_eq!(
        step(&resumed, "on_failure")["reason"],
        "skipped: no step failed"
    );

    // The coordinator's job list: `cleanup` once, `long` twice (cancelled, then completed), and no
    // other job.
    let mut jobs: Vec<(String, String)> = serve
        .jobs()
        .iter()
        .map(|j| {
            (
                j["payload"]["prompt"].as_str().unwrap_or("?").to_string(),
                j["state"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        [
            ("HANG long".to_string(), "CANCELED".to_string()),
            (
                "cleanup after cancelled".to_string(),
                "COMPLETED".to_string()
            ),
            ("go long".to_string(), "COMPLETED".to_string()),
        ],
        "each job once"
    );
}
