//! Step selection end to end: `run --only`/`--skip` on the embedded coordinator submits only the
//! selected jobs (the coordinator's job list says so), `plan` shows the selection, an unknown id is
//! refused with a "did you mean", and `resume` repeats the selection.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

/// `report` needs `summarize`, which needs `fetch`; `audit` stands alone. The prompt of
/// `summarize` comes from a var, so a run can make it fail.
const PLAN: &str = r#"
version: 1
name: selected
vars: {say: "Summarize"}
steps:
  - id: fetch
    job: {job_type: inference, wallet: w, payment: 1, prompt: "fetch"}
  - id: summarize
    needs: [fetch]
    job: {job_type: inference, wallet: w, payment: 1, prompt: "${{ vars.say }}"}
  - id: report
    needs: [summarize]
    job: {job_type: inference, wallet: w, payment: 1, prompt: "report"}
  - id: audit
    job: {job_type: inference, wallet: w, payment: 1, prompt: "audit"}
"#;

/// The prompts of the jobs the coordinator received, sorted.
fn prompts(serve: &Serve) -> Vec<String> {
    let mut p: Vec<String> = serve
        .jobs()
        .iter()
        .map(|j| j["payload"]["prompt"].as_str().unwrap_or("?").to_string())
        .collect();
    p.sort();
    p
}

/// The ids of a report's steps, in its order.
fn step_ids(report: &serde_json::Value) -> Vec<&str> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

#[test]
fn only_runs_the_steps_and_what_they_need() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);
    let out = serve.run(&dir, &["--only", "summarize"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(prompts(&serve), ["Summarize", "fetch"]);
    let report = report_of(&out);
    assert_eq!(step_ids(&report), ["fetch", "summarize"]);
    assert_eq!(report["inputs"]["only"], serde_json::json!(["summarize"]));
}

#[test]
fn skip_leaves_out_the_step_and_what_needs_it() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);
    let out = serve.run(&dir, &["--skip", "summarize"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(prompts(&serve), ["audit", "fetch"]);
}

#[test]
fn unknown_ids_and_contradictions_are_refused_before_anything_is_sent() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);
    let out = serve.run(&dir, &["--only", "sumarize", "--skip", "fetch,audti"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error[AF0027]: `--only sumarize`: the plan has no step `sumarize`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `summarize`?"), "{stderr}");
    assert!(stderr.contains("did you mean `audit`?"), "{stderr}");
    let out = serve.run(&dir, &["--only", "report", "--skip", "fetch"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "`--only report`: the step cannot run: it needs `summarize`, which --skip leaves out"
        ),
        "{stderr}"
    );
    assert!(serve.jobs().is_empty(), "nothing may be submitted");
}

#[test]
fn plan_shows_the_selection() {
    let dir = PlanDir::new(PLAN);
    let mut cmd = Command::new(bin());
    cmd.arg("plan")
        .arg(dir.plan())
        .args(["--only", "report", "--skip", "audit"]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0));
    let text =
        String::from_utf8_lossy(&out.stdout).replace(&dir.plan().display().to_string(), "[plan]");
    insta::assert_snapshot!(text);
}

/// `plan PLAN ARGS… --output json`, parsed.
fn plan_json(dir: &PlanDir, args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(bin());
    cmd.arg("plan")
        .arg(dir.plan())
        .args(args)
        .args(["--output", "json"]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn plan_json_lists_the_steps_left_out_and_why() {
    let dir = PlanDir::new(PLAN);
    let only = plan_json(&dir, &["--only", "summarize"]);
    let ids: Vec<&str> = step_ids(&only);
    assert_eq!(ids, ["fetch", "summarize"]);
    let skip = plan_json(&dir, &["--skip", "summarize"]);
    assert_eq!(step_ids(&skip), ["fetch", "audit"]);
    insta::assert_json_snapshot!(
        "left_out",
        serde_json::json!({"only summarize": only["left_out"], "skip summarize": skip["left_out"]})
    );
    // Every step is either shown or left out, never both.
    for v in [&only, &skip] {
        let left: Vec<&str> = v["left_out"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap())
            .collect();
        assert_eq!(left.len() + step_ids(v).len(), 4, "{v}");
        assert!(left.iter().all(|id| !step_ids(v).contains(id)), "{v}");
    }
    // Without a selection there is no such key.
    assert!(plan_json(&dir, &[]).get("left_out").is_none());
    // A selection that leaves nothing out says so with an empty list.
    let all = plan_json(&dir, &["--only", "report,audit"]);
    assert_eq!(all["left_out"], serde_json::json!([]));
}

#[test]
fn resume_repeats_the_selection() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);
    let out = serve.run(&dir, &["--only", "summarize", "--set", "say=FAIL now"]);
    assert_eq!(out.status.code(), Some(1));
    let run_id = report_of(&out)["run_id"].as_str().unwrap().to_string();
    let journal = std::fs::read_to_string(dir.run_dir().join("journal.jsonl")).unwrap();
    assert!(
        journal
            .lines()
            .next()
            .unwrap()
            .contains(r#""only":["summarize"]"#),
        "{journal}"
    );
    let mut cmd = serve.command();
    cmd.args([
        "resume",
        &run_id,
        "--runs-dir",
        &dir.runs().display().to_string(),
        "--poll-start",
        "20ms",
        "--poll-max",
        "100ms",
        "--output",
        "json",
    ]);
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `fetch` was kept, `summarize` re-attached to its job (never submitted twice); `report` and
    // `audit`, which the selection leaves out, were never sent, and the report has only the two.
    assert_eq!(prompts(&serve), ["FAIL now", "fetch"]);
    let report = report_of(&out);
    assert_eq!(step_ids(&report), ["fetch", "summarize"]);
    assert_eq!(report["inputs"]["only"], serde_json::json!(["summarize"]));
}
