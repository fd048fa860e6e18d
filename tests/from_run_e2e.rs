//! `run --only ID --from-run RUN-ID` on the embedded coordinator: the steps the selection needs take
//! their outputs from the earlier run — nothing is submitted (or paid) for them — and the report
//! says where they came from; a step that did not succeed there, or whose request changed, is
//! refused by name before anything is sent.

mod support;

use std::time::Duration;

use support::*;

const PLAN: &str = r#"
version: 1
name: reused
vars: {say: "Summarize"}
steps:
  - id: fetch
    job: {job_type: inference, wallet: w, payment: 1, prompt: "fetch"}
  - id: summarize
    needs: [fetch]
    job: {job_type: inference, wallet: w, payment: 2, prompt: "${{ vars.say }}"}
  - id: report
    job: {job_type: inference, wallet: w, payment: 1, prompt: "report on ${{ steps.summarize.output }}"}
"#;

#[test]
fn the_steps_the_selection_needs_come_from_the_earlier_run_and_pay_nothing() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);
    let first = serve.run(&dir, &[]);
    assert_eq!(first.status.code(), Some(0));
    let first = report_of(&first);
    let first_id = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(serve.jobs().len(), 3);

    let out = serve.run(&dir, &["--only", "report", "--from-run", &first_id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report_of(&out);
    // Only `report` was submitted again.
    let jobs = serve.jobs();
    assert_eq!(jobs.len(), 4);
    assert!(
        jobs[0]["payload"]["prompt"]
            .as_str()
            .unwrap()
            .starts_with("report on ")
    );
    for id in ["fetch", "summarize"] {
        let s = step(&r, id);
        assert_eq!(s["state"], "succeeded");
        assert_eq!(s["cached_from"]["run_id"], first_id.as_str(), "{s}");
        assert_eq!(s["job_id"], step(&first, id)["job_id"]);
    }
    assert!(step(&r, "report")["cached_from"].is_null());
    // The report's output was made from the earlier run's `summarize`.
    let prompt = jobs[0]["payload"]["prompt"].as_str().unwrap();
    assert!(prompt.contains("\"Summarize\""), "{prompt}");
    assert_eq!(
        r["totals"]["spend_per_wallet"]["w"].to_string(),
        "1",
        "{}",
        r["totals"]
    );
    assert_eq!(r["inputs"]["from_run"], first_id.as_str());
    // The journal's header records it, so that `resume` takes the same steps from the same run.
    let run_dir = dir.runs().join(r["run_id"].as_str().unwrap());
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    let header = journal.lines().next().unwrap();
    assert!(
        header.contains(&format!(r#""from_run":"{first_id}""#)),
        "{header}"
    );
    // Resuming the finished run sends nothing: every step is kept from its own journal.
    let mut cmd = serve.command();
    cmd.args([
        "resume",
        r["run_id"].as_str().unwrap(),
        "--runs-dir",
        &dir.runs().display().to_string(),
        "--output",
        "json",
    ]);
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serve.jobs().len(), 4);
    let resumed = report_of(&out);
    assert_eq!(
        step(&resumed, "fetch")["cached_from"]["run_id"],
        first_id.as_str()
    );
}

#[test]
fn a_step_that_failed_there_or_whose_request_changed_is_refused_by_name() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);
    let failed = serve.run(&dir, &["--set", "say=FAIL here"]);
    assert_eq!(failed.status.code(), Some(1));
    let failed_id = report_of(&failed)["run_id"].as_str().unwrap().to_string();
    let before = serve.jobs().len();
    let out = serve.run(&dir, &["--only", "report", "--from-run", &failed_id]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "step `summarize` did not succeed in run `{failed_id}`"
        )),
        "{stderr}"
    );
    assert_eq!(serve.jobs().len(), before, "nothing may be submitted");

    // The plan changed: a step whose request is the same is taken, one whose request changed is not.
    let ok = serve.run(&dir, &[]);
    let ok_id = report_of(&ok)["run_id"].as_str().unwrap().to_string();
    std::fs::write(
        dir.plan(),
        PLAN.replace("\"${{ vars.say }}\"", "\"Summarize briefly\""),
    )
    .unwrap();
    let before = serve.jobs().len();
    let out = serve.run(&dir, &["--only", "report", "--from-run", &ok_id]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "step `summarize`: run `{ok_id}` ran another version of"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("step `fetch`"), "{stderr}");
    assert_eq!(serve.jobs().len(), before, "nothing may be submitted");
}

/// `plan … --from-run RUN-ID` (no coordinator needed): its output and exit code.
fn plan_from_run(dir: &PlanDir, run_id: &str, json: bool) -> std::process::Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("plan")
        .arg(dir.plan())
        .args(["--only", "report", "--from-run", run_id, "--runs-dir"])
        .arg(dir.runs());
    if json {
        cmd.args(["--output", "json"]);
    }
    output_within(cmd, Duration::from_secs(30))
}

#[test]
fn plan_shows_which_steps_would_be_taken_from_the_earlier_run_as_run_takes_them() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);
    let first = serve.run(&dir, &[]);
    assert_eq!(first.status.code(), Some(0));
    let first_id = report_of(&first)["run_id"].as_str().unwrap().to_string();

    let out = plan_from_run(&dir, &first_id, true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["from_run"],
        serde_json::json!({"run_id": first_id, "taken": ["fetch", "summarize"], "would_run": ["report"]})
    );
    // Only `report` pays (1 AITBC): the taken steps' 1 + 2 were paid in their run.
    assert_eq!(v["spend"]["per_wallet"], serde_json::json!({"w": 1}), "{v}");
    let out = plan_from_run(&dir, &first_id, false);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("\nfrom run {first_id} (--from-run)\n")),
        "{text}"
    );
    assert!(
        text.contains("nothing submitted or paid): fetch, summarize\n"),
        "{text}"
    );
    assert!(text.contains("  would run: report\n"), "{text}");
    assert!(text.contains("spend per wallet\n  w: 1 AITBC\n"), "{text}");
    // `run` takes the same steps: only `report` is submitted.
    let before = serve.jobs().len();
    let run = serve.run(&dir, &["--only", "report", "--from-run", &first_id]);
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(serve.jobs().len(), before + 1);

    // A run where `summarize` failed: `plan` refuses as `run` does, naming the step.
    let failed = serve.run(&dir, &["--set", "say=FAIL here"]);
    let failed_id = report_of(&failed)["run_id"].as_str().unwrap().to_string();
    let planned = plan_from_run(&dir, &failed_id, false);
    let ran = serve.run(&dir, &["--only", "report", "--from-run", &failed_id]);
    assert_eq!(planned.status.code(), Some(2));
    assert_eq!(ran.status.code(), Some(2));
    let said = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .find(|l| l.contains("--from-run"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        said(&planned).contains(&format!(
            "step `summarize` did not succeed in run `{failed_id}`"
        )),
        "{}",
        said(&planned)
    );
    assert_eq!(said(&planned), said(&ran));
}
