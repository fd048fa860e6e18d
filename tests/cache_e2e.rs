//! The result cache and the reproducibility record, end to end: the real binary on the embedded
//! coordinator (in-process), two or more runs sharing one runs directory.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// A cached step `ask` (request known at load), a cached step `use` (request known at run time), and
/// an uncached step `other`.
const PLAN: &str = r#"
version: 1
name: cached
vars:
  topic: rivers
steps:
  - id: ask
    cache: true
    job:
      job_type: inference
      model: llama2
      wallet: w
      payment: 5
      prompt: "Tell me about ${{ vars.topic }}"
  - id: use
    cache: true
    job:
      job_type: inference
      model: llama2
      wallet: w
      payment: 3
      prompt: "Summarize: ${{ steps.ask.output }}"
"#;

fn run(dir: &PlanDir, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .args(extra)
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN")
        .env_remove("AITBC_RUNS_DIR");
    output_within(cmd, LIMIT)
}

fn report_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs and expects success; returns the report.
fn run_ok(dir: &PlanDir, extra: &[&str]) -> Value {
    let out = run(dir, extra);
    let report = report_of(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}\nreport:\n{report:#}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        schema_errors(&report).is_empty(),
        "{:?}",
        schema_errors(&report)
    );
    report
}

fn run_id(report: &Value) -> String {
    report["run_id"].as_str().unwrap().to_string()
}

/// The saved result files of a run's cached steps.
fn saved_results(runs: &Path, run: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(runs.join(run).join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_cached_step_pays_nothing_and_reports_its_source() {
    let dir = PlanDir::new(PLAN);
    let first = run_ok(&dir, &[]);
    let r1 = run_id(&first);
    assert_eq!(first["totals"]["jobs"], 2);
    assert!(step(&first, "ask")["cached_from"].is_null());
    let index = std::fs::read_to_string(dir.runs().join(".cache/index.jsonl")).unwrap();
    assert_eq!(index.lines().count(), 2, "{index}");

    let second = run_ok(&dir, &[]);
    assert_eq!(second["totals"]["jobs"], 0);
    assert_eq!(second["totals"]["spend_per_wallet"], serde_json::json!({}));
    for id in ["ask", "use"] {
        let (a, b) = (step(&first, id), step(&second, id));
        assert_eq!(b["state"], "succeeded");
        assert_eq!(b["cached_from"]["run_id"], r1.as_str());
        assert_eq!(b["cached_from"]["step_id"], id);
        assert_eq!(b["cached_from"]["job_id"], a["job_id"]);
        // The outputs of a normal job step: the original job, output, result, verified receipt.
        assert_eq!(b["job_id"], a["job_id"]);
        assert_eq!(b["result"], a["result"]);
        assert_eq!(b["receipt"], a["receipt"]);
        assert_eq!(b["receipt"]["verified"], true);
        assert_eq!(b["outputs"]["output"], a["outputs"]["output"]);
        assert_eq!(b["outputs"]["job_id"], a["job_id"]);
        assert_eq!(b["outputs"]["receipt_verified"], true);
        assert_eq!(b["payment"], 0);
        let summary = b["summary"].as_str().unwrap();
        assert!(
            summary.contains(&format!("Cached result from run {r1} step {id}"))
                && summary.ends_with("nothing paid"),
            "{summary}"
        );
        assert_eq!(b["request"], a["request"]);
    }
    // A reused result is not indexed again.
    let index = std::fs::read_to_string(dir.runs().join(".cache/index.jsonl")).unwrap();
    assert_eq!(index.lines().count(), 2, "{index}");

    // `--no-cache` pays again.
    let third = run_ok(&dir, &["--no-cache"]);
    assert_eq!(third["totals"]["jobs"], 2);
    assert_eq!(third["inputs"]["cache"], false);
    assert!(step(&third, "ask")["cached_from"].is_null());
    assert_ne!(step(&third, "ask")["job_id"], step(&first, "ask")["job_id"]);
}

#[test]
fn a_changed_prompt_misses() {
    let dir = PlanDir::new(PLAN);
    run_ok(&dir, &[]);
    let other = run_ok(&dir, &["--set", "topic=lakes"]);
    assert_eq!(other["totals"]["jobs"], 2);
    assert!(step(&other, "ask")["cached_from"].is_null());
    assert!(step(&other, "use")["cached_from"].is_null());
    assert_eq!(
        step(&other, "ask")["request"]["prompt"],
        "Tell me about lakes"
    );
}

#[test]
fn a_pruned_source_run_misses() {
    let dir = PlanDir::new(PLAN);
    let first = run_ok(&dir, &[]);
    let mut prune = Command::new(bin());
    prune
        .args(["runs", "prune", "--keep", "0", "--runs-dir"])
        .arg(dir.runs());
    let out = output_within(prune, LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert!(!dir.runs().join(run_id(&first)).exists());
    // The index forgets the pruned run's results.
    let index = std::fs::read_to_string(dir.runs().join(".cache/index.jsonl")).unwrap();
    assert_eq!(index, "");
    let second = run_ok(&dir, &[]);
    assert_eq!(second["totals"]["jobs"], 2);
    let ask = step(&second, "ask");
    assert!(ask["cached_from"].is_null());
    // A pruned run is an ordinary miss: nothing to warn about.
    assert_eq!(ask["issues"], serde_json::json!([]));
    // The new results are indexed, so a third run reuses them.
    let third = run_ok(&dir, &[]);
    assert_eq!(third["totals"]["jobs"], 0);
    assert_eq!(
        step(&third, "ask")["cached_from"]["run_id"],
        run_id(&second).as_str()
    );
}

#[test]
fn a_tampered_cached_receipt_or_result_is_not_used() {
    let dir = PlanDir::new(PLAN);
    let first = run_ok(&dir, &[]);
    let r1 = run_id(&first);
    let files = saved_results(&dir.runs(), &r1);
    assert_eq!(files.len(), 2);
    // Tamper with the receipt of `ask` (its price) in the saved result and in the source report alike,
    // so that only the signature can tell; and with the saved result of `use`.
    let report_path = dir.runs().join(&r1).join("report.json");
    let mut source: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    for s in source["steps"].as_array_mut().unwrap() {
        if s["id"] == "ask" {
            s["receipt"]["receipt"]["price"] = serde_json::json!(0.0001);
        }
    }
    std::fs::write(&report_path, serde_json::to_string(&source).unwrap()).unwrap();
    let ask_job = step(&first, "ask")["job_id"].as_str().unwrap().to_string();
    for f in &files {
        let mut saved: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        if saved["job_id"] == ask_job.as_str() {
            saved["receipt"]["price"] = serde_json::json!(0.0001);
        } else {
            saved["result"]["output"] = Value::String("something else".into());
        }
        std::fs::write(f, serde_json::to_string(&saved).unwrap()).unwrap();
    }
    let second = run_ok(&dir, &[]);
    assert_eq!(second["totals"]["jobs"], 2);
    let ask = step(&second, "ask");
    assert!(ask["cached_from"].is_null());
    let issues = ask["issues"].to_string();
    assert!(
        issues.contains(&format!("the cached result of run {r1} step ask"))
            && issues.contains("was not used: its receipt did not verify"),
        "{issues}"
    );
    // The result of `ask` was paid again, so `use` sees a new prompt and misses anyway; its tampered
    // entry is never looked at.
    assert!(step(&second, "use")["cached_from"].is_null());
}

#[test]
fn a_tampered_result_of_the_same_request_is_not_used() {
    // One step only, so the tampered result is the one looked up.
    let dir = PlanDir::new(
        r#"
version: 1
name: one
steps:
  - id: ask
    cache: true
    job: {job_type: inference, model: llama2, wallet: w, payment: 5, prompt: "Tell me about rivers"}
"#,
    );
    let first = run_ok(&dir, &[]);
    let r1 = run_id(&first);
    let files = saved_results(&dir.runs(), &r1);
    let mut saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    saved["result"]["output"] = Value::String("a forged answer".into());
    std::fs::write(&files[0], serde_json::to_string(&saved).unwrap()).unwrap();
    let second = run_ok(&dir, &[]);
    assert_eq!(second["totals"]["jobs"], 1);
    let ask = step(&second, "ask");
    assert!(ask["cached_from"].is_null());
    assert_ne!(ask["result"], "a forged answer");
    assert!(
        ask["issues"].to_string().contains("was not used"),
        "{}",
        ask["issues"]
    );
}

#[test]
fn the_preflight_does_not_count_cached_steps() {
    // `ask` (5, cached) + `other` (5, not cached): the second run needs 5, not 10.
    let dir = PlanDir::new(
        r#"
version: 1
name: preflight
steps:
  - id: ask
    cache: true
    job: {job_type: inference, model: llama2, wallet: w, payment: 5, prompt: "Tell me about rivers"}
  - id: other
    job: {job_type: inference, model: llama2, wallet: w, payment: 5, prompt: "Tell me about lakes"}
"#,
    );
    let first = run_ok(&dir, &["--fund", "w=10", "--no-faucet"]);
    assert_eq!(first["totals"]["jobs"], 2);

    // Without the cache, 5 does not cover the plan: refused before anything is submitted.
    let out = run(&dir, &["--fund", "w=5", "--no-faucet", "--no-cache"]);
    assert_eq!(out.status.code(), Some(1));
    let refused = report_of(&out);
    assert_eq!(refused["status"], "refused");
    assert!(
        refused["issues"]
            .to_string()
            .contains("wallet w holds 5 AITBC, the plan needs 10: 5 short"),
        "{}",
        refused["issues"]
    );

    // With the cache, only `other` is paid: it fits.
    let second = run_ok(&dir, &["--fund", "w=5", "--no-faucet"]);
    assert_eq!(second["status"], "succeeded");
    assert_eq!(second["totals"]["jobs"], 1);
    assert_eq!(second["totals"]["spend_per_wallet"]["w"], 5);
    assert_eq!(
        step(&second, "ask")["cached_from"]["run_id"],
        run_id(&first).as_str()
    );
}

#[test]
fn vars_from_repeats_a_run_and_refuses_a_redacted_secret() {
    let dir = PlanDir::new(
        r#"
version: 1
name: repeat
secrets:
  token: {env: REPEAT_TEST_TOKEN}
vars:
  topic: rivers
  depth: {level: 1, style: plain}
  key: none
steps:
  - id: ask
    job:
      job_type: inference
      model: llama2
      wallet: w
      payment: 2
      prompt: "Tell me about ${{ vars.topic }} at level ${{ vars.depth.level }} in a ${{ vars.depth.style }} style"
"#,
    );
    let vars_file = dir.dir.path().join("extra.yaml");
    std::fs::write(&vars_file, "depth: {level: 3}\n").unwrap();
    let vars_arg = vars_file.display().to_string();
    let with_secret = |extra: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(run_args(&dir.plan(), &dir.runs()))
            .args(["--embedded-latency", "instant"])
            .args(extra)
            .env_remove("AITBC_COORDINATOR_URL")
            .env_remove("AITBC_TOKEN")
            .env("REPEAT_TEST_TOKEN", "hunter2-secret");
        output_within(cmd, LIMIT)
    };

    let out = with_secret(&["--vars", &vars_arg, "--set", "topic=lakes"]);
    assert_eq!(out.status.code(), Some(0));
    let first = report_of(&out);
    let r1 = run_id(&first);
    assert_eq!(
        first["vars"]["depth"],
        serde_json::json!({"level": 3, "style": "plain"})
    );
    assert_eq!(first["inputs"]["set"], serde_json::json!(["topic=lakes"]));
    assert_eq!(first["inputs"]["vars_files"], serde_json::json!([vars_arg]));

    // The same vars, from the first run's report alone.
    let out = with_secret(&["--vars-from", &r1]);
    assert_eq!(out.status.code(), Some(0));
    let second = report_of(&out);
    assert_eq!(second["vars"], first["vars"]);
    assert_eq!(
        step(&second, "ask")["request"],
        step(&first, "ask")["request"]
    );
    assert_eq!(
        step(&second, "ask")["request"]["prompt"],
        "Tell me about lakes at level 3 in a plain style"
    );
    assert_eq!(second["inputs"]["vars_from"], r1.as_str());
    // The base vars stay in the run directory, so the run can be resumed (here: rebuilt) with them.
    let r2 = run_id(&second);
    assert!(dir.runs().join(&r2).join("vars-from.json").is_file());
    let mut cmd = Command::new(bin());
    cmd.args(["resume", &r2, "--runs-dir"])
        .arg(dir.runs())
        .args(["--output", "json", "--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN")
        .env("REPEAT_TEST_TOKEN", "hunter2-secret");
    let out = output_within(cmd, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report_of(&out)["vars"], first["vars"]);
    // `--set` still applies on top.
    let out = with_secret(&["--vars-from", &r1, "--set", "depth.style=terse"]);
    let third = report_of(&out);
    assert_eq!(third["vars"]["topic"], "lakes");
    assert_eq!(
        third["vars"]["depth"],
        serde_json::json!({"level": 3, "style": "terse"})
    );

    // A run whose var held the secret records it as `***`; repeating it without the value is refused.
    let out = with_secret(&["--set", "key=hunter2-secret"]);
    assert_eq!(out.status.code(), Some(0));
    let secret_run = report_of(&out);
    assert_eq!(secret_run["vars"]["key"], "***");
    assert_eq!(secret_run["inputs"]["set"], serde_json::json!(["key=***"]));
    let r4 = run_id(&secret_run);
    let report_text = std::fs::read_to_string(dir.runs().join(&r4).join("report.json")).unwrap();
    assert!(!report_text.contains("hunter2"));

    let runs_before = std::fs::read_dir(dir.runs()).unwrap().count();
    let out = with_secret(&["--vars-from", &r4]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`vars.key`") && stderr.contains("--set key="),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"));
    assert_eq!(
        std::fs::read_dir(dir.runs()).unwrap().count(),
        runs_before,
        "a refused --vars-from starts no run"
    );
    // Given again, it runs.
    let out = with_secret(&["--vars-from", &r4, "--set", "key=hunter2-secret"]);
    assert_eq!(out.status.code(), Some(0));

    // An unknown run is a usage error.
    let out = with_secret(&["--vars-from", "no-such-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run `no-such-run`"));
}

#[test]
fn two_steps_with_one_request_each_keep_their_own_result() {
    let dir = PlanDir::new(
        r#"
version: 1
name: twins
steps:
  - id: a
    cache: true
    job: {job_type: inference, model: llama2, wallet: w, payment: 1, prompt: "Same question"}
  - id: b
    cache: true
    job: {job_type: inference, model: llama2, wallet: w, payment: 1, prompt: "Same question"}
"#,
    );
    let first = run_ok(&dir, &[]);
    assert_eq!(first["totals"]["jobs"], 2);
    assert_eq!(saved_results(&dir.runs(), &run_id(&first)).len(), 2);
    let second = run_ok(&dir, &[]);
    assert_eq!(second["totals"]["jobs"], 0);
    for id in ["a", "b"] {
        let s = step(&second, id);
        assert_eq!(s["cached_from"]["run_id"], run_id(&first).as_str());
        assert_eq!(s["issues"], serde_json::json!([]), "{id}");
    }
}
