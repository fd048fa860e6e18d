//! Typed inputs end to end: the real binary, the embedded coordinator over HTTP. A typed input
//! reaches the job; a value of the wrong type is refused at load, naming the flag or the file and
//! line, before anything is sent; `validate` does without a required input and `run` does not.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

/// A plan whose payment and prompt come from typed inputs; `budget` is required.
const PLAN: &str = r#"
version: 1
name: typed
inputs:
  budget: {type: amount, required: true, description: What the job may cost}
  tone: {type: string, enum: [formal, casual], default: formal}
steps:
  - id: analyze
    job:
      job_type: inference
      wallet: w
      payment: ${{ inputs.budget }}
      prompt: "Say hello in a ${{ inputs.tone }} tone"
"#;

fn validate(plan: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.arg("validate").arg(plan);
    output_within(cmd, Duration::from_secs(30))
}

#[test]
fn a_typed_input_reaches_the_job_and_a_wrong_one_is_refused_before_anything_is_sent() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);

    // Wrong type: refused at load, the flag named, nothing sent.
    let out = serve.run(&dir, &["--set", "budget=abc"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("error[AF0025]: `--set budget=abc`: input `budget`: `abc` is not an amount"),
        "{stderr}"
    );
    assert!(serve.jobs().is_empty(), "nothing may be submitted");

    // A required input not given: `run` refuses, naming it.
    let out = serve.run(&dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error[AF0026]: input `budget` is required and not given"),
        "{stderr}"
    );
    assert!(serve.jobs().is_empty(), "nothing may be submitted");

    // The right type: the exact amount and the enum's value reach the job.
    let out = serve.run(&dir, &["--set", "budget=3.250", "--set", "tone=casual"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    let step = step(&report, "analyze");
    assert_eq!(step["payment"].to_string(), "3.25", "{step}");
    assert_eq!(report["vars"]["budget"], "3.25");
    let jobs = serve.jobs();
    assert_eq!(jobs.len(), 1);
    let payload = jobs[0]["payload"].to_string();
    assert!(payload.contains("in a casual tone"), "{payload}");
}

#[test]
fn validate_does_without_a_required_input_but_checks_what_is_given() {
    let dir = PlanDir::new(PLAN);
    let out = validate(&dir.plan());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A default of the wrong type is still an error in `validate`.
    let dir = PlanDir::new(&PLAN.replace("default: formal", "default: rude"));
    let out = validate(&dir.plan());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the default of input `tone`: `rude` is not one of the allowed values"),
        "{stderr}"
    );
    // `plan` lists the inputs: a required one not given is refused like `run` does; given, it is
    // listed with its value.
    let mut cmd = Command::new(bin());
    cmd.arg("plan").arg(dir.plan());
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let dir = PlanDir::new(PLAN);
    let mut cmd = Command::new(bin());
    cmd.arg("plan").arg(dir.plan()).args(["--set", "budget=2"]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  budget (amount): 2  — What the job may cost\n  tone (string): formal\n"),
        "{stdout}"
    );
}

#[test]
fn wrong_values_name_the_flag_or_the_file_and_line() {
    let mut cmd = Command::new(bin());
    cmd.current_dir(root()).args([
        "plan",
        "tests/plans/valid/inputs.yaml",
        "--vars",
        "tests/plans/inputs/budget.yaml",
        "--set",
        "budget=abc",
        "--set",
        "tone=rude",
        "--set",
        "budget.cents=3",
        "--set",
        "budgte=3",
    ]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr));
}

#[test]
fn validate_checks_set_vars_and_vars_from_as_run_and_plan_do() {
    // The same wrong values as above: `validate` names the same flags and file:line:col as `plan`
    // (one code path), and exits 2.
    let args = [
        "tests/plans/valid/inputs.yaml",
        "--vars",
        "tests/plans/inputs/budget.yaml",
        "--set",
        "budget=abc",
        "--set",
        "tone=rude",
    ];
    let run = |cmd: &str| {
        let mut c = Command::new(bin());
        c.current_dir(root()).arg(cmd).args(args);
        output_within(c, Duration::from_secs(30))
    };
    let (planned, validated) = (run("plan"), run("validate"));
    assert_eq!(planned.status.code(), Some(2));
    assert_eq!(validated.status.code(), Some(2));
    let said = String::from_utf8_lossy(&validated.stderr).to_string();
    for line in String::from_utf8_lossy(&planned.stderr).lines() {
        assert!(said.contains(line), "`{line}` is not in:\n{said}");
    }
    assert!(said.contains("`--set budget=abc`"), "{said}");
    assert!(said.contains("tests/plans/inputs/budget.yaml:"), "{said}");
    insta::assert_snapshot!(said);

    // Right values pass; a required input left out still does (as `validate` alone).
    let dir = PlanDir::new(PLAN);
    let mut c = Command::new(bin());
    c.arg("validate")
        .arg(dir.plan())
        .args(["--set", "budget=2", "--set", "tone=casual"]);
    let out = output_within(c, Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `--vars-from RUN-ID`: the vars that run recorded, checked against the plan now.
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let ran = serve.run(&dir, &["--set", "budget=2", "--set", "tone=casual"]);
    assert_eq!(ran.status.code(), Some(0));
    let id = report_of(&ran)["run_id"].as_str().unwrap().to_string();
    let validate_from = |plan: &std::path::Path, id: &str| {
        let mut c = Command::new(bin());
        c.arg("validate")
            .arg(plan)
            .args(["--vars-from", id, "--runs-dir"])
            .arg(dir.runs());
        output_within(c, Duration::from_secs(30))
    };
    let out = validate_from(&dir.plan(), &id);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The plan no longer takes `casual`: the recorded value is refused.
    std::fs::write(dir.plan(), PLAN.replace("[formal, casual]", "[formal]")).unwrap();
    let out = validate_from(&dir.plan(), &id);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("input `tone`: `casual` is not one of the allowed values"),
        "{stderr}"
    );
    // An unknown run is named.
    let out = validate_from(&dir.plan(), "no-such-run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--vars-from no-such-run"), "{stderr}");
}
