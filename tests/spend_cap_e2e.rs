//! The run's spend cap: `policy.max_spend` (and `--max-spend`, which may only lower it) refuses a run
//! whose known spend does not fit before anything is sent, and fails a submit that would pass it —
//! every submission counts, a resubmission too, and a refund only when it is confirmed.

mod support;

use support::*;

#[test]
fn a_run_over_its_cap_is_refused_before_anything_is_sent_and_the_spend_is_shown() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(
        r#"
version: 1
name: capped
policy: {max_spend: 5}
steps:
  - id: a
    job: {job_type: inference, wallet: w, payment: 2, prompt: "one"}
  - id: b
    job: {job_type: inference, wallet: w, payment: 4, prompt: "two"}
"#,
    );
    let out = serve.run(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let r = report_of(&out);
    assert_eq!(r["status"], "refused");
    let issues = r["issues"].to_string();
    assert!(issues.contains("spend cap"), "{issues}");
    assert!(serve.jobs().is_empty(), "nothing may be submitted");

    // The command line lowers a plan's cap; it never raises it.
    let dir = PlanDir::new(
        r#"
version: 1
name: uncapped
policy: {max_spend: 100}
steps:
  - id: a
    job: {job_type: inference, wallet: w, payment: 2, prompt: "one"}
  - id: b
    job: {job_type: inference, wallet: w, payment: 2, prompt: "two"}
"#,
    );
    let out = serve.run(&dir, &["--max-spend", "w=3"]);
    assert_eq!(report_of(&out)["status"], "refused");
    assert!(serve.jobs().is_empty());
    let out = serve.run(&dir, &["--max-spend", "1000", "--progress", "plain"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The spend per wallet is said before the first submit.
    let spend_line = stderr
        .lines()
        .position(|l| l.contains("spend: 4 AITBC from w"))
        .unwrap_or_else(|| panic!("no spend line:\n{stderr}"));
    let first_submit = stderr
        .lines()
        .position(|l| l.contains("submitted"))
        .unwrap_or(usize::MAX);
    assert!(spend_line < first_submit, "{stderr}");
    assert_eq!(serve.jobs().len(), 2);
}

#[test]
fn resubmissions_count_and_only_a_confirmed_refund_gives_room_back() {
    // Refunds are refused: a failed job's payment stays held, so each resubmission adds to the spend.
    let serve = Serve::start(&[
        "--fund",
        "w=100",
        "--no-faucet",
        "--real-quirks",
        "--fault-refuse-refunds",
    ]);
    let dir = PlanDir::new(
        r#"
version: 1
name: resubmits
policy: {max_spend: 5}
steps:
  - id: a
    job: {job_type: inference, wallet: w, payment: 2, prompt: "FAIL please"}
    retry: {max_attempts: 5, initial: 10ms, max: 10ms, on: [job_failed]}
"#,
    );
    let out = serve.run(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let r = report_of(&out);
    let a = &r["steps"][0];
    assert_eq!(a["state"], "failed");
    assert!(
        a["issues"].to_string().contains("spend cap"),
        "{}",
        a["issues"]
    );
    // 2 + 2 paid and held; a third 2 would pass 5.
    assert_eq!(serve.jobs().len(), 2);

    // With refunds that work, a failed job's payment comes back: all five submissions fit under 5.
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let out = serve.run(&dir, &[]);
    let r = report_of(&out);
    let a = &r["steps"][0];
    assert!(
        !a["issues"].to_string().contains("spend cap"),
        "{}",
        a["issues"]
    );
    assert_eq!(serve.jobs().len(), 5);
}
