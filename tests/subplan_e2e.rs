//! Sub-plans end to end: the real binary, the embedded coordinator over HTTP. One sub-plan used twice
//! with different inputs runs as two groups whose jobs carry their own inputs; a later step reads both
//! groups' outputs; the report lists the prefixed ids; a run killed in the middle resumes to the end,
//! and a changed sub-plan makes `resume` refuse as a changed plan does.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// The sub-plan: one job in the tone asked for, then a status read; its outputs name both.
const SUMMARIZE: &str = r#"
version: 1
name: summarize
inputs:
  text: {type: string, required: true}
  tone: {type: string, enum: [formal, casual], default: formal}
  payment: {type: amount, default: 2}
steps:
  - id: ask
    job:
      job_type: inference
      wallet: w
      payment: ${{ inputs.payment }}
      prompt: "Summarize in a ${{ inputs.tone }} tone: ${{ inputs.text }}"
  - id: check
    status: {job: "${{ steps.ask.job_id }}"}
outputs:
  summary: ${{ steps.ask.output }}
  state: ${{ steps.check.state }}
  tone: ${{ inputs.tone }}
"#;

/// The plan: the sub-plan twice, after a first step, and a step that reads both groups' outputs.
const PLAN: &str = r#"
version: 1
name: twice
inputs:
  topic: {type: string, default: pricing}
steps:
  - id: first
    job: {job_type: inference, wallet: w, payment: 1, prompt: "List the topics"}
  - id: formal
    needs: [first]
    uses: lib/summarize.yaml
    with:
      text: "feedback about ${{ inputs.topic }}"
  - id: casual
    needs: [first]
    uses: lib/summarize.yaml
    with: {text: support tickets, tone: casual, payment: "3.5"}
  - id: compare
    job:
      job_type: inference
      wallet: w
      payment: 1
      prompt: "Compare [${{ steps.formal.summary }}] with [${{ steps.casual.summary }}] (${{ steps.casual.tone }}, ${{ steps.formal.state }})"
"#;

/// Every job-submitting step of the plan, as the run names them.
const JOB_STEPS: [&str; 4] = ["first", "formal.ask", "casual.ask", "compare"];

fn plan_dir() -> PlanDir {
    let dir = PlanDir::new(PLAN);
    std::fs::create_dir_all(dir.dir.path().join("lib")).unwrap();
    std::fs::write(dir.dir.path().join("lib/summarize.yaml"), SUMMARIZE).unwrap();
    dir
}

fn prompt_of(job: &Value) -> String {
    job["payload"]["prompt"].as_str().unwrap_or("").to_string()
}

fn ids(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_sub_plan_used_twice_runs_two_groups_with_their_own_inputs() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = plan_dir();

    // The dry run shows the groups.
    let mut cmd = Command::new(bin());
    cmd.arg("plan").arg(dir.plan());
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("formal.ask  [job]  in group formal  after first"),
        "{text}"
    );
    assert!(
        text.contains("casual  [uses]  end of the group of sub-plan"),
        "{text}"
    );

    let out = serve.run(&dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["status"], "succeeded");
    let mut got = ids(&report);
    got.sort();
    let mut want: Vec<String> = [
        "first",
        "formal.ask",
        "formal.check",
        "formal",
        "casual.ask",
        "casual.check",
        "casual",
        "compare",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(got, want, "the report lists the prefixed ids");

    // Each group's job reached the coordinator with its own inputs.
    let jobs = serve.jobs();
    assert_eq!(jobs.len(), 4, "{jobs:#?}");
    let prompts: Vec<String> = jobs.iter().map(prompt_of).collect();
    let find = |needle: &str| {
        jobs.iter()
            .find(|j| prompt_of(j).contains(needle))
            .unwrap_or_else(|| panic!("no job with {needle:?} in {prompts:#?}"))
    };
    let formal = find("Summarize in a formal tone: feedback about pricing");
    let casual = find("Summarize in a casual tone: support tickets");
    assert_ne!(formal["job_id"], casual["job_id"]);
    // What each group's job paid, as sent (the coordinator's job list does not show it).
    let paid = |id: &str| step(&report, id)["request"]["payment"].to_string();
    assert_eq!(paid("formal.ask"), "2");
    assert_eq!(paid("casual.ask"), "3.5");
    let run_id = report["run_id"].as_str().unwrap();
    assert_eq!(
        formal["payload"]["client_ref"],
        format!("{run_id}/formal.ask").as_str()
    );

    // The later step read both groups' outputs.
    let formal_out = step(&report, "formal.ask")["outputs"]["output"]
        .as_str()
        .unwrap()
        .to_string();
    let casual_out = step(&report, "casual.ask")["outputs"]["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(formal_out, casual_out);
    assert_eq!(
        step(&report, "formal")["outputs"]["summary"],
        formal_out.as_str()
    );
    assert_eq!(step(&report, "casual")["outputs"]["tone"], "casual");
    let compare = find("Compare [");
    assert_eq!(
        prompt_of(compare),
        format!("Compare [{formal_out}] with [{casual_out}] (casual, COMPLETED)")
    );
    // The groups waited for `first`, and `compare` for both groups.
    assert_eq!(
        step(&report, "formal.ask")["needs"],
        serde_json::json!(["first"])
    );
    let needs = step(&report, "compare")["needs"].to_string();
    assert!(
        needs.contains("\"formal\"") && needs.contains("\"casual\""),
        "{needs}"
    );
}

#[test]
fn a_run_with_sub_plans_resumes_and_a_changed_sub_plan_is_refused() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = plan_dir();
    // Killed right after the second job is submitted (one of the groups' jobs).
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .env("AITBC_FLOW_CRASH_AT", "submitted:2");
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the runner should have been killed; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = dir.run_dir();
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();

    // The sub-plan changes: resume refuses, as for a changed plan, and sends nothing.
    let sub = dir.dir.path().join("lib/summarize.yaml");
    let before = serve.jobs().len();
    std::fs::write(&sub, format!("{SUMMARIZE}# changed\n")).unwrap();
    let out = serve.resume(&dir, &run_id);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("changed since run"), "{stderr}");
    assert!(stderr.contains("lib/summarize.yaml"), "{stderr}");
    assert_eq!(serve.jobs().len(), before, "nothing may be sent");

    // As it was: resume runs the rest to the end.
    std::fs::write(&sub, SUMMARIZE).unwrap();
    let out = serve.resume(&dir, &run_id);
    assert_eq!(
        out.status.code(),
        Some(0),
        "resume failed; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report on stdout");
    assert_eq!(report["status"], "succeeded");
    for s in report["steps"].as_array().unwrap() {
        assert_eq!(s["state"], "succeeded", "{}", s["id"]);
    }
    assert_eq!(step(&report, "casual")["outputs"]["tone"], "casual");

    // Every job-submitting step submitted exactly once.
    let mut refs: Vec<String> = serve
        .jobs()
        .iter()
        .map(|j| j["payload"]["client_ref"].as_str().unwrap().to_string())
        .collect();
    refs.sort();
    let mut expected: Vec<String> = JOB_STEPS.iter().map(|s| format!("{run_id}/{s}")).collect();
    expected.sort();
    assert_eq!(refs, expected, "jobs on the coordinator");
}

/// A plan that feeds the sub-plan a value known only at run time: `draft`'s output.
const FED: &str = r#"
version: 1
name: fed
steps:
  - id: draft
    job: {job_type: inference, wallet: w, payment: 1, prompt: "Write a line about pricing"}
  - id: fixed
    uses: lib/summarize.yaml
    with: {text: support tickets}
  - id: fed
    uses: lib/summarize.yaml
    with:
      text: "${{ steps.draft.output }}"
      tone: casual
  - id: after
    job: {job_type: inference, wallet: w, payment: 1, prompt: "Print ${{ steps.fed.summary }}"}
"#;

fn fed_dir(plan: &str) -> PlanDir {
    let dir = PlanDir::new(plan);
    std::fs::create_dir_all(dir.dir.path().join("lib")).unwrap();
    std::fs::write(dir.dir.path().join("lib/summarize.yaml"), SUMMARIZE).unwrap();
    dir
}

#[test]
fn a_with_value_known_only_at_run_time_reaches_the_sub_plans_job() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = fed_dir(FED);
    let out = serve.run(&dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["status"], "succeeded");
    let drafted = step(&report, "draft")["outputs"]["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!drafted.is_empty());
    // The group fed at run time waited for `draft`; the other did not.
    let needs = step(&report, "fed.ask")["needs"].to_string();
    assert!(needs.contains("\"draft\""), "{needs}");
    assert!(
        step(&report, "fixed.ask")["needs"].is_null(),
        "a group fed at load waits for nothing"
    );
    // The job's prompt, as the coordinator got it and as the report records it, holds the output.
    let want = format!("Summarize in a casual tone: {drafted}");
    let jobs = serve.jobs();
    assert_eq!(jobs.len(), 4, "{jobs:#?}");
    assert!(
        jobs.iter().any(|j| prompt_of(j) == want),
        "no job with {want:?} in {:#?}",
        jobs.iter().map(prompt_of).collect::<Vec<_>>()
    );
    assert!(
        jobs.iter()
            .any(|j| prompt_of(j) == "Summarize in a formal tone: support tickets")
    );
    assert_eq!(step(&report, "fed.ask")["request"]["prompt"], want.as_str());
    // The group's outputs, and the step after it, read the rendered input too.
    let summary = step(&report, "fed.ask")["outputs"]["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(step(&report, "fed")["outputs"]["summary"], summary.as_str());
    assert_eq!(step(&report, "fed")["outputs"]["tone"], "casual");
    assert_eq!(
        step(&report, "after")["request"]["prompt"],
        format!("Print {summary}").as_str()
    );
}

#[test]
fn a_run_time_with_value_of_the_wrong_type_fails_the_step_with_the_with_line() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    // The tone is the draft's text: not one of the sub-plan's tones.
    let plan = FED.replace("tone: casual", "tone: \"${{ steps.draft.output }}\"");
    let dir = fed_dir(&plan);
    let out = serve.run(&dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["status"], "failed");
    let ask = step(&report, "fed.ask");
    assert_eq!(ask["state"], "failed", "{ask:#}");
    let issue = ask["issues"][0].as_str().unwrap_or_default();
    assert!(
        issue.starts_with("input `tone` of the sub-plan `")
            && issue.contains("lib/summarize.yaml`: `")
            && issue.ends_with(
                "is not one of the allowed values: `formal`, `casual` (the `with:` value at \
                 PLAN:14:13)"
                    .replace("PLAN", &dir.plan().display().to_string())
                    .as_str()
            ),
        "{ask:#}"
    );
    // Nothing was sent for the group fed the wrong value.
    let prompts: Vec<String> = serve.jobs().iter().map(prompt_of).collect();
    assert!(
        !prompts
            .iter()
            .any(|p| p.contains("Summarize in a") && !p.contains("support tickets")),
        "{prompts:#?}"
    );
}

#[test]
fn a_run_with_a_run_time_with_value_resumes_with_the_same_inputs() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = fed_dir(FED);
    // Killed right after the third job is submitted: the group fed `draft`'s output has sent its job.
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .env("AITBC_FLOW_CRASH_AT", "submitted:3");
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the runner should have been killed; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = dir.run_dir();
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let out = serve.resume(&dir, &run_id);
    assert_eq!(
        out.status.code(),
        Some(0),
        "resume failed; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report on stdout");
    assert_eq!(report["status"], "succeeded");
    let drafted = step(&report, "draft")["outputs"]["output"]
        .as_str()
        .unwrap()
        .to_string();
    let want = format!("Summarize in a casual tone: {drafted}");
    assert_eq!(step(&report, "fed.ask")["request"]["prompt"], want.as_str());
    // Every job-submitting step submitted exactly once, the fed group's with the draft's output.
    let jobs = serve.jobs();
    let mut refs: Vec<String> = jobs
        .iter()
        .map(|j| j["payload"]["client_ref"].as_str().unwrap().to_string())
        .collect();
    refs.sort();
    let mut expected: Vec<String> = ["draft", "fixed.ask", "fed.ask", "after"]
        .iter()
        .map(|s| format!("{run_id}/{s}"))
        .collect();
    expected.sort();
    assert_eq!(refs, expected, "jobs on the coordinator");
    let fed = jobs
        .iter()
        .find(|j| j["payload"]["client_ref"] == format!("{run_id}/fed.ask").as_str())
        .unwrap();
    assert_eq!(prompt_of(fed), want);
    let summary = step(&report, "fed.ask")["outputs"]["output"]
        .as_str()
        .unwrap();
    assert_eq!(
        step(&report, "after")["request"]["prompt"],
        format!("Print {summary}").as_str()
    );
}

#[test]
fn a_uses_steps_when_skips_its_whole_group() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    // `draft`'s output is never `nope`: the group fed it is skipped, and so is what needs it.
    let plan = FED.replace(
        "  - id: fed\n    uses: lib/summarize.yaml\n",
        "  - id: fed\n    uses: lib/summarize.yaml\n    when: \"${{ steps.draft.output == 'nope' }}\"\n",
    );
    assert_ne!(plan, FED);
    let dir = fed_dir(&plan);
    let out = serve.run(&dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["status"], "succeeded");
    for id in ["fed.ask", "fed.check", "fed", "after"] {
        assert_eq!(step(&report, id)["state"], "skipped", "{id}");
    }
    // The group's first step says why; the rest are skipped for what they need.
    let summary = |id: &str| {
        step(&report, id)["summary"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        summary("fed.ask").contains("the `when` of its group `fed` is false"),
        "{}",
        summary("fed.ask")
    );
    assert!(
        summary("fed").contains("needs `fed.ask`, which was skipped"),
        "{}",
        summary("fed")
    );
    for id in ["draft", "fixed.ask", "fixed.check", "fixed"] {
        assert_eq!(step(&report, id)["state"], "succeeded", "{id}");
    }
    let prompts: Vec<String> = serve.jobs().iter().map(prompt_of).collect();
    assert_eq!(prompts.len(), 2, "{prompts:#?}");

    // The same `when`, true: the group runs.
    let plan = plan.replace("== 'nope'", "!= 'nope'");
    let dir = fed_dir(&plan);
    let out = serve.run(&dir, &[]);
    assert_eq!(out.status.code(), Some(0));
    let report = report_of(&out);
    for id in ["fed.ask", "fed.check", "fed", "after"] {
        assert_eq!(step(&report, id)["state"], "succeeded", "{id}");
    }
}
