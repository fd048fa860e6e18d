//! `aitbc-flow run`, end to end: the real binary against the embedded coordinator (in-process) or a
//! `coordinator serve` child, over HTTP on 127.0.0.1.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

fn embedded_run(dir: &PlanDir, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .args(extra)
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN");
    output_within(cmd, LIMIT)
}

#[test]
fn example_plan_succeeds_with_a_report_that_matches_its_schema() {
    let runs = tempfile::tempdir().unwrap();
    let plan = root().join("plans/feedback-analysis.yaml");
    let mut cmd = Command::new(bin());
    cmd.current_dir(root())
        .args(run_args(&plan, runs.path()))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL");
    let out = output_within(cmd, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(schema_errors(&report), Vec::<String>::new());
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["embedded_coordinator"], true);
    let hash = report["plan_hash"].as_str().unwrap();
    assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("embedded local coordinator"), "{stderr}");

    // Every fetched receipt verified, and the saved result is inside the run directory.
    let results = step(&report, "results");
    assert_eq!(results["receipt"]["verified"], true);
    let run_dir = runs.path().join(report["run_id"].as_str().unwrap());
    assert!(run_dir.join("out/analysis.json").is_file());
    for f in ["report.json", "summary.md", "junit.xml", "events.jsonl"] {
        assert!(run_dir.join(f).is_file(), "{f} missing");
    }
    // The file on disk is the report printed.
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk, report);

    // Where the plan came from depends on the checkout (tests/provenance.rs covers it).
    let mut redacted = report.clone();
    if let Some(git) = redacted.as_object_mut().unwrap().shift_remove("plan_git") {
        assert_eq!(git["path"], "plans/feedback-analysis.yaml", "{git}");
    }
    redact(&mut redacted);
    insta::assert_json_snapshot!("feedback_analysis_report", redacted);

    let summary = std::fs::read_to_string(run_dir.join("summary.md")).unwrap();
    insta::with_settings!({filters => vec![
        (r"\d{8}T\d{6}Z-[0-9a-f]{6}", "[run]"),
        (r"[0-9a-f]{32}", "[job]"),
        (r"\d{4}-\d\d-\d\dT[0-9:.]+Z", "[time]"),
        (r"http://127\.0\.0\.1:\d+", "[url]"),
        (r"\d+\.\d{3}s", "[secs]"),
        (r"- Plan: .*", "- Plan: [provenance]"),
        (r"- aitbc-flow .*", "- aitbc-flow [version]"),
    ]}, {
        insta::assert_snapshot!("feedback_analysis_summary", summary);
    });
    let junit = std::fs::read_to_string(run_dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 6);
    assert!(!junit.contains("<failure"));
}

#[test]
fn a_failed_result_fails_the_step_and_the_run() {
    let dir = PlanDir::new(
        r#"
version: 1
name: failing
steps:
  - id: bad
    job:
      job_type: inference
      wallet: w
      payment: 2
      prompt: "please FAIL_RESULT now"
"#,
    );
    let out = embedded_run(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let report = report_of(&out);
    let bad = step(&report, "bad");
    assert_eq!(bad["state"], "failed");
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["validation_status"], "failed");
    let issue = bad["issues"][0].as_str().unwrap();
    assert!(
        issue.contains("reported a failed result: simulated failure"),
        "{issue}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("simulated failure"), "{stderr}");
    assert_eq!(report["status"], "failed");
    assert_eq!(schema_errors(&report), Vec::<String>::new());
}

#[test]
fn retries_through_503_and_429_without_duplicate_jobs() {
    let serve = Serve::start(&[
        "--fault-503-rate",
        "0.3",
        "--fault-429-rate",
        "0.2",
        "--fault-retry-after",
        "0",
        "--fault-seed",
        "11",
    ]);
    let dir = PlanDir::new(
        r#"
version: 1
name: flaky
defaults:
  retry: {max_attempts: 12, backoff: exponential, initial: 10ms, max: 50ms}
steps:
  - id: a
    job: {job_type: inference, wallet: w, payment: 2, prompt: "first"}
  - id: b
    job: {job_type: inference, wallet: w, payment: 2, prompt: "second"}
  - id: c
    job: {job_type: training, wallet: w, payment: 10, prompt: "third"}
"#,
    );
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()));
    let out = output_within(cmd, LIMIT);
    let report = report_of(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed_attempts: usize = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a.get("error").is_some())
                .count()
        })
        .sum();
    assert!(
        failed_attempts > 0,
        "the faults should have cost some attempts"
    );
    let errors: Vec<String> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["attempts"].as_array().unwrap().clone())
        .filter_map(|a| a["error"].as_str().map(str::to_string))
        .collect();
    assert!(errors.iter().any(|e| e.contains("503")), "{errors:?}");
    // Exactly one job per step on the coordinator.
    let jobs = serve.jobs();
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    let mut refs: Vec<String> = jobs
        .iter()
        .map(|j| j["payload"]["client_ref"].as_str().unwrap().to_string())
        .collect();
    refs.sort();
    refs.dedup();
    assert_eq!(refs.len(), 3);
    assert_eq!(report["totals"]["jobs"], 3);
}

#[test]
fn dropped_responses_after_commit_do_not_duplicate_jobs() {
    let serve = Serve::start(&[
        "--fault-drop-rate",
        "0.5",
        "--fault-path",
        "/v1/jobs",
        "--fault-seed",
        "5",
    ]);
    let dir = PlanDir::new(
        r#"
version: 1
name: lossy
defaults:
  retry: {max_attempts: 15, initial: 10ms, max: 40ms}
steps:
  - id: a
    submit: {job_type: inference, wallet: w, payment: 2, prompt: "one"}
  - id: b
    submit: {job_type: inference, wallet: w, payment: 2, prompt: "two"}
  - id: c
    submit: {job_type: inference, wallet: w, payment: 2, prompt: "three"}
  - id: d
    submit: {job_type: inference, wallet: w, payment: 2, prompt: "four"}
"#,
    );
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()));
    let out = output_within(cmd, LIMIT);
    let report = report_of(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = serve.jobs();
    assert_eq!(jobs.len(), 4, "one job per step, whatever was lost");
    for id in ["a", "b", "c", "d"] {
        let job_id = step(&report, id)["job_id"].as_str().unwrap().to_string();
        assert!(jobs.iter().any(|j| j["job_id"] == job_id.as_str()));
    }
}

#[test]
fn a_wait_timeout_cancels_the_job_and_refunds_it() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(
        r#"
version: 1
name: slow
steps:
  - id: go
    submit: {job_type: training, wallet: w, payment: 40, prompt: "HANG until cancelled"}
  - id: hold
    wait: {job: "${{ steps.go.job_id }}", timeout: 1s}
"#,
    );
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()));
    let out = output_within(cmd, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(4),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["status"], "timed_out");
    let hold = step(&report, "hold");
    assert_eq!(hold["state"], "failed");
    assert!(
        hold["issues"][0]
            .as_str()
            .unwrap()
            .contains("did not finish within 1s")
    );
    let jobs = serve.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["state"], "CANCELED");
    assert_eq!(jobs[0]["payment_status"], "refunded");
    let bal = serve.get("/v1/wallets/w/balance");
    assert_eq!(bal["balance_ait"], "100 AIT");
}

#[test]
fn sigint_cancels_jobs_in_flight_writes_the_report_and_exits_130() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(
        r#"
version: 1
name: interrupted
steps:
  - id: long
    timeout: 10m
    job: {job_type: training, wallet: w, payment: 25, prompt: "HANG forever"}
"#,
    );
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = interrupt_once_submitted(&serve, cmd);
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
    assert_eq!(report["exit_code"], 130);
    assert_eq!(step(&report, "long")["state"], "cancelled");
    assert_eq!(report["totals"]["refunded_per_wallet"]["w"], 25);
    let jobs = serve.jobs();
    assert_eq!(jobs[0]["state"], "CANCELED");
    let bal = serve.get("/v1/wallets/w/balance");
    assert_eq!(bal["balance_ait"], "100 AIT");
    assert!(dir.run_dir().join("summary.md").is_file());
}

#[test]
fn a_plan_that_cannot_be_paid_is_refused_before_any_submission() {
    let serve = Serve::start(&["--fund", "trading-wallet=100", "--no-faucet"]);
    let runs = tempfile::tempdir().unwrap();
    let mut cmd = serve.command();
    cmd.current_dir(root()).args(run_args(
        &root().join("plans/feedback-analysis.yaml"),
        runs.path(),
    ));
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let report = report_of(&out);
    assert_eq!(report["status"], "refused");
    assert_eq!(report["totals"]["jobs"], 0);
    let issues = report["issues"].to_string();
    assert!(
        issues.contains("wallet trading-wallet holds 100 AITBC, the plan needs 504: 404 short"),
        "{issues}"
    );
    assert!(serve.jobs().is_empty());
}

#[test]
fn matrix_when_and_continue_on_error() {
    let dir = PlanDir::new(
        r#"
version: 1
name: control
steps:
  - id: fan
    job:
      job_type: inference
      wallet: w
      payment: 1
      prompt: "Say ${{ matrix.word }}"
    matrix: {word: [alpha, beta, gamma]}
  - id: never
    when: false
    balance: {wallet: w}
  - id: flaky
    continue_on_error: true
    job: {job_type: inference, wallet: w, payment: 1, prompt: "FAIL_RESULT please"}
  - id: after_flaky
    needs: [flaky]
    balance: {wallet: w}
  - id: last
    needs: [fan]
    balance: {wallet: w}
"#,
    );
    let out = embedded_run(&dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    for w in ["alpha", "beta", "gamma"] {
        let s = step(&report, &format!("fan[word={w}]"));
        assert_eq!(s["state"], "succeeded");
        assert!(s["result"].as_str().unwrap().contains(&format!("Say {w}")));
    }
    assert_eq!(step(&report, "never")["state"], "skipped");
    assert_eq!(step(&report, "flaky")["state"], "failed");
    let after = step(&report, "after_flaky");
    assert_eq!(after["state"], "skipped");
    assert!(after["summary"].as_str().unwrap().contains("needs `flaky`"));
    assert_eq!(step(&report, "last")["state"], "succeeded");
    assert_eq!(report["totals"]["jobs"], 4);
    assert_eq!(report["totals"]["skipped"], 2);
    let junit = std::fs::read_to_string(dir.run_dir().join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<skipped").count(), 2);
    assert_eq!(junit.matches("<failure").count(), 1);
}

#[test]
fn fail_fast_stops_the_run_and_skips_what_depends_on_the_failure() {
    let dir = PlanDir::new(
        r#"
version: 1
name: failfast
steps:
  - id: bad
    job: {job_type: inference, wallet: w, payment: 1, prompt: "FAIL please"}
  - id: later
    needs: [bad]
    balance: {wallet: w}
"#,
    );
    let out = embedded_run(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let report = report_of(&out);
    assert_eq!(step(&report, "bad")["state"], "failed");
    assert!(
        step(&report, "bad")["issues"][0]
            .as_str()
            .unwrap()
            .contains("ended FAILED")
    );
    assert_eq!(step(&report, "later")["state"], "skipped");
}

#[test]
fn an_unreachable_coordinator_exits_3_naming_the_url() {
    let dir = PlanDir::new(
        r#"
version: 1
name: nowhere
steps:
  - id: a
    job: {job_type: inference, wallet: w, payment: 1, prompt: "hello"}
"#,
    );
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .env("AITBC_COORDINATOR_URL", "http://127.0.0.1:9")
        .env("AITBC_TOKEN", "whatever");
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
    assert!(!stderr.contains("whatever"), "the token leaked: {stderr}");
    let report = report_of(&out);
    assert_eq!(report["status"], "unreachable");
}

#[test]
fn an_invalid_plan_exits_2_and_runs_nothing() {
    let dir = PlanDir::new(
        "version: 1\nname: x\nsteps:\n  - id: a\n    job: {job_type: inferense, wallet: w, payment: 1, prompt: p}\n",
    );
    let out = embedded_run(&dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("inference"), "{stderr}");
    assert!(!dir.runs().exists());
}

#[test]
fn secrets_never_reach_the_report_events_or_terminal() {
    let dir = PlanDir::new(
        r#"
version: 1
name: secretive
secrets:
  api_key: {env: E2E_SECRET_KEY}
steps:
  - id: ask
    secrets_in_payload: true
    job:
      job_type: inference
      wallet: w
      payment: 1
      prompt: "use key ${{ secrets.api_key }} please"
  - id: again
    job:
      job_type: inference
      wallet: w
      payment: 1
      prompt: "echo ${{ steps.ask.output }}"
"#,
    );
    let secret = "sk-live-8f2a91c4e7";
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL")
        .env("E2E_SECRET_KEY", secret);
    let out = output_within(cmd, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    assert!(stdout.contains("***"), "the redaction is visible");
    for f in [
        "report.json",
        "summary.md",
        "junit.xml",
        "events.jsonl",
        "journal.jsonl",
    ] {
        let text = std::fs::read_to_string(dir.run_dir().join(f)).unwrap();
        assert!(!text.contains(secret), "{f} holds the secret");
    }
}

/// With `secrets_in_payload`, a prompt computed from a secret (upper-cased: not the secret's own
/// bytes) goes to the job, and the whole rendered prompt is redacted: it is in no file of the run
/// and no output, and the result saved beside the plan, which quotes it, is readable only by its
/// owner, as the report says.
#[test]
fn a_value_computed_from_a_secret_is_redacted_whole_and_saved_privately() {
    let dir = PlanDir::new("");
    let saved = dir.dir.path().join("saved").join("ask.json");
    std::fs::write(
        dir.plan(),
        format!(
            r#"
version: 1
name: opted-in
secrets:
  api_key: {{env: E2E_SECRET_KEY}}
steps:
  - id: ask
    secrets_in_payload: true
    job:
      job_type: inference
      wallet: w
      payment: 1
      prompt: "Reference: ${{{{ secrets.api_key | upper }}}}"
      save: "{}"
"#,
            saved.display()
        ),
    )
    .unwrap();
    let secret = "sk-live-8f2a91c4e7";
    let rendered = "Reference: SK-LIVE-8F2A91C4E7";
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL")
        .env("E2E_SECRET_KEY", secret);
    let out = output_within(cmd, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for needle in [rendered, "SK-LIVE-8F2A91C4E7", secret] {
        assert!(
            !stdout.contains(needle) && !stderr.contains(needle),
            "{needle}"
        );
    }
    // Every file of the run directory, whatever it is called.
    let mut files = 0;
    for entry in std::fs::read_dir(dir.run_dir()).unwrap().flatten() {
        let Ok(text) = std::fs::read(entry.path()) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        files += 1;
        assert!(
            !text.contains("SK-LIVE-8F2A91C4E7") && !text.contains("Reference: "),
            "{} holds the rendered prompt",
            entry.path().display()
        );
    }
    assert!(
        files >= 5,
        "report, summary, junit, events and journal were read"
    );
    // The saved file keeps what the coordinator signed (the prompt in the receipt's payload) and is
    // not readable by others.
    let kept = std::fs::read_to_string(&saved).unwrap();
    assert!(kept.contains(rendered), "{kept}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let report = report_of(&out);
    let issues = step(&report, "ask")["issues"].to_string();
    assert!(issues.contains("mode 0600"), "{issues}");
}

#[test]
fn a_template_over_its_budget_at_run_time_fails_its_step_not_the_process() {
    // At load `steps.ask.output` is a 22-character placeholder, and the template fits its fuel; at
    // run time the real output makes it ask for far more than a render may do.
    let dir = PlanDir::new(
        r#"
version: 1
name: fuel-at-run-time
steps:
  - id: ask
    job: {job_type: inference, wallet: w, payment: 2, prompt: "say something long enough"}
  - id: louder
    job:
      job_type: inference
      wallet: w
      payment: 2
      prompt: "${{ steps.ask.output * 1000000 }}"
"#,
    );
    let out = embedded_run(&dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report = report_of(&out);
    assert_eq!(step(&report, "ask")["state"], "succeeded");
    let louder = step(&report, "louder");
    assert_eq!(louder["state"], "failed");
    let issue = louder["issues"][0].as_str().unwrap_or_default();
    assert!(
        issue.contains("does more work than one render may"),
        "{issue}"
    );
    assert!(issue.contains(".yaml:12:15)"), "{issue}");
}

const ONE_WALLET: &str = r#"
version: 1
name: one-wallet
vars:
  wallet: trading
steps:
  - id: a
    job: {job_type: inference, wallet: "${{ vars.wallet }}", payment: 1, prompt: hi}
"#;

/// A `--set` for a variable the plan does not have is a typo: refused before anything runs, with
/// the name it was probably meant to be.
#[test]
fn a_set_for_a_variable_the_plan_does_not_have_is_refused_with_a_suggestion() {
    let dir = PlanDir::new(ONE_WALLET);
    let out = embedded_run(&dir, &["--set", "walet=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.runs().exists() || std::fs::read_dir(dir.runs()).unwrap().next().is_none());
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr));
}

/// A `--fund` for a wallet no step uses funds nobody: the run goes on, with a warning.
#[test]
fn a_fund_for_a_wallet_the_plan_never_uses_is_a_warning() {
    let dir = PlanDir::new(ONE_WALLET);
    let out = embedded_run(&dir, &["--fund", "tradng=5", "--fund", "trading=5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(
        warnings,
        [
            "warning: --fund tradng=…: no step of the plan uses the wallet `tradng`; did you mean `trading`?"
        ],
        "{stderr}"
    );
}

/// A plan whose secret comes from a variable that is not set here (as in CI or a pre-commit hook).
const UNSET_SECRET: &str = r#"
version: 1
name: unset-secret
secrets:
  API_KEY: {env: AITBC_FLOW_TEST_UNSET_SECRET}
steps:
  - id: a
    job:
      job_type: ollama
      model: mistral
      wallet: trading
      payment: 1
      endpoint: "http://127.0.0.1:9/api?token=${{ secrets.API_KEY }}"
      prompt: hi
"#;

fn validate_without_the_secret(dir: &PlanDir) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(["validate", dir.plan().to_str().unwrap()])
        .env_remove("AITBC_FLOW_TEST_UNSET_SECRET");
    output_within(cmd, LIMIT)
}

/// `validate` lints a plan without its secrets: the unset one gets a placeholder (never shown) and
/// every other check still runs, the secret checks included.
#[test]
fn validate_checks_a_plan_whose_secrets_are_not_set() {
    let dir = PlanDir::new(UNSET_SECRET);
    let out = validate_without_the_secret(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("1 plan valid"), "{stderr}");

    let broken = UNSET_SECRET
        .replace("prompt: hi", "prompt: \"${{ secrets.API_KEY }}\"")
        .replace("  - id: a\n", "  - id: a\n    needs: [b]\n");
    let dir = PlanDir::new(&broken);
    let out = validate_without_the_secret(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error[AF0012]: `needs` names an unknown step `b`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error[AF0016]: step `a`: the job's `prompt` is computed from a secret"),
        "{stderr}"
    );
    assert!(!stderr.contains("AF0017"), "{stderr}");
    assert!(!stderr.contains("placeholder"), "{stderr}");
}

/// `run` still needs the secrets: refused before anything runs, naming the variable.
#[test]
fn run_refuses_a_plan_whose_secret_is_not_set() {
    let dir = PlanDir::new(UNSET_SECRET);
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN")
        .env_remove("AITBC_FLOW_TEST_UNSET_SECRET");
    let out = output_within(cmd, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "error[AF0017]: secret `API_KEY`: the environment variable \
             `AITBC_FLOW_TEST_UNSET_SECRET` is not set"
        ),
        "{stderr}"
    );
    assert!(!dir.runs().exists() || std::fs::read_dir(dir.runs()).unwrap().next().is_none());
}
