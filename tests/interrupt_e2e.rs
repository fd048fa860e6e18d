//! Ctrl-C (or SIGTERM), then `resume`: the jobs the run cancelled on its way out are unfinished work.
//! The runner is interrupted on a served coordinator while jobs run; the resume submits them again once
//! their refund is confirmed (with a new client reference), uses a result posted after the cancel, and
//! pays again for a refund it cannot confirm only with `--pay-again`. Every step's work completes once
//! and the coordinator's ledger balances — with the embedded coordinator as it is and with the real
//! service's quirks (no refund on cancel, refunds refused).
//!
//! The plans read `env.E2E_PHASE` into their prompts: `HANG` keeps a job running until it is cancelled
//! (the first start), `LATE` posts its result after the cancel, anything else completes at once (the
//! resume renders the prompt again).

mod support;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

const PLAN: &str = r#"
version: 1
name: interrupted
env: [E2E_PHASE]
steps:
  - id: a
    job: {job_type: inference, wallet: w, payment: 2, prompt: "alpha"}
  - id: t
    job: {job_type: inference, wallet: w, payment: 3, prompt: "${{ env.E2E_PHASE }} tee"}
  - id: s
    submit: {job_type: inference, wallet: v, payment: 1, prompt: "${{ env.E2E_PHASE }} split"}
  - id: s_wait
    wait: {job: "${{ steps.s.job_id }}", timeout: 10m}
  - id: s_fetch
    needs: [s_wait]
    fetch: {job: "${{ steps.s.job_id }}", save: out/s.json}
  - id: after
    job: {job_type: inference, wallet: w, payment: 1, prompt: "after ${{ steps.t.output }}"}
"#;

/// Starts `run` with `E2E_PHASE=phase`; returns the child once the coordinator holds a job for each
/// step in `running` (RUNNING), and for each in `completed` (COMPLETED).
fn start_run(
    serve: &Serve,
    dir: &PlanDir,
    phase: &str,
    running: &[&str],
    completed: &[&str],
) -> Child {
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .env("E2E_PHASE", phase)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = serve.jobs();
        let has = |step: &str, state: &str| {
            jobs.iter()
                .any(|j| step_of(j) == step && j["state"] == state)
        };
        if running.iter().all(|s| has(s, "RUNNING"))
            && completed.iter().all(|s| has(s, "COMPLETED"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the jobs never ran: {jobs:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the steps settle into their waits.
    std::thread::sleep(Duration::from_millis(200));
    child
}

/// Sends `signal` to the run and returns its output (it must stop by itself).
fn stop(child: Child, signal: &str) -> Output {
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(LIMIT)
        .expect("the runner did not stop after the signal")
        .unwrap()
}

/// `resume` of the plan's only run, with `E2E_PHASE=go` and these flags.
fn resume(serve: &Serve, dir: &PlanDir, flags: &[&str]) -> Output {
    let run_id = run_id(dir);
    let mut c = serve.command();
    c.args([
        "resume",
        run_id.as_str(),
        "--runs-dir",
        dir.runs().to_str().unwrap(),
        "--poll-start",
        "20ms",
        "--poll-max",
        "100ms",
        "--output",
        "json",
    ])
    .args(flags)
    .env("E2E_PHASE", "go");
    output_within(c, LIMIT)
}

fn run_id(dir: &PlanDir) -> String {
    dir.run_dir()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// The step of a job, from its client reference `<run-id>/<step>[#n]`.
fn step_of(job: &Value) -> String {
    let r = job["payload"]["client_ref"].as_str().unwrap_or_default();
    let step = r.split_once('/').map_or(r, |(_, s)| s);
    step.split('#').next().unwrap_or_default().to_string()
}

/// The client references of the coordinator's jobs, sorted, with their states.
fn jobs_by_ref(serve: &Serve) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = serve
        .jobs()
        .iter()
        .map(|j| {
            let r = j["payload"]["client_ref"].as_str().unwrap_or_default();
            let short = r.split_once('/').map_or(r, |(_, s)| s).to_string();
            (short, j["state"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    v.sort();
    v
}

fn report_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no report on stdout ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Null => 0.0,
        other => other.as_f64().unwrap(),
    }
}

/// The ledger: (wallet w, wallet v, escrow), checked to balance (sum of wallets + escrow = minted).
fn ledger(serve: &Serve) -> (f64, f64, f64) {
    let l = serve.get("/v1/local/ledger");
    let wallets: f64 = l["wallets"].as_object().unwrap().values().map(num).sum();
    let escrow = num(&l["escrow"]);
    assert_eq!(
        wallets + escrow,
        num(&l["minted"]),
        "the ledger balances: {l}"
    );
    (num(&l["wallets"]["w"]), num(&l["wallets"]["v"]), escrow)
}

/// The `cancel` records of the journal: (step, why, payment status read back).
fn journaled_cancels(dir: &PlanDir) -> Vec<(String, String, Option<String>)> {
    let text = std::fs::read_to_string(dir.run_dir().join("journal.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let c = v.get("cancel")?;
            Some((
                c["step"].as_str()?.to_string(),
                c["why"].as_str()?.to_string(),
                c["outcome"]["payment_status"].as_str().map(str::to_string),
            ))
        })
        .filter(|(_, _, status)| status.is_some())
        .collect()
}

fn interrupt_and_resume(serve_flags: &[&str], signal: &str) {
    let mut flags = vec!["--fund", "w=100", "--fund", "v=100", "--no-faucet"];
    flags.extend_from_slice(serve_flags);
    let serve = Serve::start(&flags);
    let dir = PlanDir::new(PLAN);
    let child = start_run(&serve, &dir, "HANG", &["t", "s"], &["a"]);
    let out = stop(child, signal);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{serve_flags:?}: {stderr}");
    let mut cancels = journaled_cancels(&dir);
    cancels.sort();
    assert_eq!(
        cancels,
        [
            (
                "s".to_string(),
                "interrupted".to_string(),
                Some("refunded".to_string())
            ),
            (
                "t".to_string(),
                "interrupted".to_string(),
                Some("refunded".to_string())
            ),
        ],
        "{serve_flags:?}"
    );
    assert_eq!(
        ledger(&serve),
        (100.0 - 2.0, 100.0, 0.0),
        "{serve_flags:?}: refunded on the way out"
    );

    let out = resume(&serve, &dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{serve_flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["status"], "succeeded");
    for s in report["steps"].as_array().unwrap() {
        assert_eq!(s["state"], "succeeded", "{serve_flags:?}: {s}");
    }
    let t = step(&report, "t");
    assert!(t["result"].as_str().unwrap().contains("go tee"), "{t}");
    let issues = t["issues"].to_string();
    assert!(
        issues.contains("was cancelled by the run when it was interrupted and its payment of 3 AITBC refunded: the step was submitted again"),
        "{issues}"
    );
    assert!(
        step(&report, "after")["result"]
            .as_str()
            .unwrap()
            .contains("after"),
        "after ran on t's new output"
    );
    assert!(dir.run_dir().join("out/s.json").is_file());

    // Each step's work completed once: the cancelled jobs stay cancelled, their steps submitted again
    // under a new client reference.
    let expect = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        jobs_by_ref(&serve),
        expect(&[
            ("a", "COMPLETED"),
            ("after", "COMPLETED"),
            ("s", "CANCELED"),
            ("s#2", "COMPLETED"),
            ("t", "CANCELED"),
            ("t#2", "COMPLETED"),
        ]),
        "{serve_flags:?}"
    );
    for j in serve.jobs().iter().filter(|j| j["state"] == "CANCELED") {
        let p = serve.get(&format!(
            "/v1/jobs/{}/payment",
            j["job_id"].as_str().unwrap()
        ));
        assert_eq!(p["status"], "refunded", "{serve_flags:?}: {p}");
    }
    // Each wallet paid each step once; nothing left in escrow.
    assert_eq!(
        ledger(&serve),
        (100.0 - 6.0, 100.0 - 1.0, 0.0),
        "{serve_flags:?}"
    );
    // The report's totals say the same: the cancelled jobs paid and were refunded.
    let totals = &report["totals"];
    assert_eq!(totals["spend_per_wallet"]["w"], 2 + 3 + 3 + 1, "{totals}");
    assert_eq!(totals["refunded_per_wallet"]["w"], 3, "{totals}");
    assert_eq!(totals["spend_per_wallet"]["v"], 2, "{totals}");
    assert_eq!(totals["refunded_per_wallet"]["v"], 1, "{totals}");
    assert_eq!(totals["held_per_wallet"], serde_json::json!({}), "{totals}");

    // A further resume has nothing left to do, and reports the same money.
    let out = resume(&serve, &dir, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(serve.jobs().len(), 6);
    let again = report_of(&out);
    for k in ["spend_per_wallet", "refunded_per_wallet", "held_per_wallet"] {
        assert_eq!(again["totals"][k], totals[k], "{k}");
    }
}

#[test]
fn ctrl_c_then_resume_completes_every_step_once() {
    interrupt_and_resume(&[], "-INT");
}

#[test]
fn ctrl_c_then_resume_with_the_real_services_quirks() {
    interrupt_and_resume(&["--real-quirks"], "-INT");
}

const ONE: &str = r#"
version: 1
name: one
env: [E2E_PHASE]
steps:
  - id: t
    job: {job_type: inference, wallet: w, payment: 3, prompt: "${{ env.E2E_PHASE }} tee"}
  - id: after
    job: {job_type: inference, wallet: w, payment: 1, prompt: "after t ${{ steps.t.state }}"}
"#;

/// The real service may refuse a refund: the resume asks again, and without `--pay-again` submits
/// nothing and says how much is held; with it, the step is paid again and the held amount reported.
#[test]
fn a_refund_refused_is_paid_again_only_with_pay_again() {
    let serve = Serve::start(&[
        "--fund",
        "w=100",
        "--no-faucet",
        "--real-quirks",
        "--fault-refuse-refunds",
    ]);
    let dir = PlanDir::new(ONE);
    let child = start_run(&serve, &dir, "HANG", &["t"], &[]);
    let out = stop(child, "-TERM");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.run_dir().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["totals"]["held_per_wallet"]["w"], 3);
    assert_eq!(
        journaled_cancels(&dir),
        [(
            "t".to_string(),
            "interrupted".to_string(),
            Some("escrowed".to_string())
        )]
    );

    let out = resume(&serve, &dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report = report_of(&out);
    let t = step(&report, "t");
    assert_eq!(t["state"], "failed");
    let issues = t["issues"].to_string();
    assert!(
        issues.contains("its refund is not confirmed: 3 AITBC may still be held by the service")
            && issues.contains("Failed to refund payment")
            && issues.contains("nothing was submitted again"),
        "{issues}"
    );
    assert!(t["recommendations"].to_string().contains("--pay-again"));
    assert!(
        stderr.contains("--pay-again"),
        "said on the terminal: {stderr}"
    );
    assert_eq!(step(&report, "after")["state"], "skipped");
    assert_eq!(report["totals"]["held_per_wallet"]["w"], 3);
    assert_eq!(serve.jobs().len(), 1, "nothing submitted again");
    assert_eq!(ledger(&serve), (97.0, 0.0, 3.0));

    let out = resume(&serve, &dir, &["--pay-again"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["totals"]["held_per_wallet"]["w"], 3);
    assert!(
        step(&report, "t")["issues"]
            .to_string()
            .contains("submitted again with --pay-again: job"),
    );
    let expect: Vec<(String, String)> = [
        ("after", "COMPLETED"),
        ("t", "CANCELED"),
        ("t#2", "COMPLETED"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(jobs_by_ref(&serve), expect);
    // Paid twice for t: once for the job that completed, once still held in escrow for the cancelled one.
    assert_eq!(ledger(&serve), (100.0 - 3.0 - 3.0 - 1.0, 0.0, 3.0));
}

/// A result posted after the cancel (the real service's quirk) turns the job COMPLETED: the resume
/// uses it, and pays nothing more.
#[test]
fn a_job_that_completed_after_the_cancel_is_used() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet", "--real-quirks"]);
    let dir = PlanDir::new(ONE);
    let child = start_run(&serve, &dir, "LATE", &["t"], &[]);
    let out = stop(child, "-INT");
    assert_eq!(out.status.code(), Some(130));
    let deadline = Instant::now() + Duration::from_secs(20);
    while serve.jobs()[0]["state"] != "COMPLETED" {
        assert!(Instant::now() < deadline, "the late result never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = resume(&serve, &dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    let t = step(&report, "t");
    assert_eq!(t["state"], "succeeded");
    assert!(t["result"].as_str().unwrap().contains("LATE tee"), "{t}");
    assert!(
        t["issues"]
            .to_string()
            .contains("completed after all: its result is used"),
        "{t}"
    );
    let expect: Vec<(String, String)> = [("after", "COMPLETED"), ("t", "COMPLETED")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(jobs_by_ref(&serve), expect);
    let (_, _, escrow) = ledger(&serve);
    assert_eq!(escrow, 0.0);
}
