//! Durability: the runner is killed with SIGKILL at many points (after the intent to submit is
//! journaled, after a job id is journaled, while waiting, while fetching, while writing the report),
//! then `resume`d. Every job is submitted exactly once (checked through the coordinator's job list),
//! every result is present, and the coordinator's ledger still balances.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const PLAN: &str = r#"
version: 1
name: durable
steps:
  - id: a
    job: {job_type: inference, wallet: w, payment: 2, prompt: "alpha"}
  - id: b
    job: {job_type: inference, wallet: w, payment: 3, prompt: "beta"}
  - id: c
    job: {job_type: training, wallet: v, payment: 10, prompt: "gamma"}
  - id: d
    submit: {job_type: inference, wallet: v, payment: 1, prompt: "delta"}
  - id: d_wait
    wait: {job: "${{ steps.d.job_id }}", timeout: 30s}
  - id: d_fetch
    needs: [d_wait]
    fetch: {job: "${{ steps.d.job_id }}", save: out/d.json}
  - id: e
    job: {job_type: inference, wallet: w, payment: 1, prompt: "after ${{ steps.a.output }}"}
"#;

const JOB_STEPS: [&str; 5] = ["a", "b", "c", "d", "e"];

fn crash_and_resume(point: &str, n: u32) {
    let serve = Serve::start(&["--fund", "w=100", "--fund", "v=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .env("AITBC_FLOW_CRASH_AT", format!("{point}:{n}"));
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}:{n}: the runner should have been killed; exit {:?}, stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = dir.run_dir();
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();

    let mut resume = serve.command();
    resume.args([
        "resume",
        &run_id,
        "--runs-dir",
        dir.runs().to_str().unwrap(),
        "--poll-start",
        "20ms",
        "--poll-max",
        "100ms",
        "--output",
        "json",
    ]);
    let out = output_within(resume, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{point}:{n}: resume failed; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report on stdout");
    assert_eq!(report["status"], "succeeded", "{point}:{n}");
    assert_eq!(report["run_id"], run_id.as_str());
    for s in report["steps"].as_array().unwrap() {
        assert_eq!(s["state"], "succeeded", "{point}:{n}: {}", s["id"]);
    }
    for id in ["a", "b", "c", "e", "d_fetch"] {
        let s = report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap();
        assert!(s["result"].is_string(), "{point}:{n}: no result for {id}");
    }
    assert!(run_dir.join("out/d.json").is_file(), "{point}:{n}");

    // Exactly one job per job-submitting step, each with its own client reference.
    let jobs = serve.jobs();
    let mut refs: Vec<String> = jobs
        .iter()
        .map(|j| j["payload"]["client_ref"].as_str().unwrap().to_string())
        .collect();
    refs.sort();
    let mut expected: Vec<String> = JOB_STEPS.iter().map(|s| format!("{run_id}/{s}")).collect();
    expected.sort();
    assert_eq!(refs, expected, "{point}:{n}: jobs on the coordinator");

    // The ledger balances and nothing is left in escrow; the wallets paid exactly once.
    let ledger = serve.get("/v1/local/ledger");
    let num = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let wallets: f64 = ledger["wallets"]
        .as_object()
        .unwrap()
        .values()
        .map(num)
        .sum();
    assert_eq!(wallets + num(&ledger["escrow"]), num(&ledger["minted"]));
    assert_eq!(num(&ledger["escrow"]), 0.0);
    assert_eq!(num(&ledger["wallets"]["w"]), 100.0 - 6.0, "{point}:{n}");
    assert_eq!(num(&ledger["wallets"]["v"]), 100.0 - 11.0, "{point}:{n}");
    assert_eq!(report["totals"]["jobs"], 5, "{point}:{n}");
}

#[test]
fn killed_after_the_intent() {
    for n in 1..=5 {
        crash_and_resume("intent", n);
    }
}

#[test]
fn killed_after_the_submit() {
    for n in 1..=5 {
        crash_and_resume("submitted", n);
    }
}

#[test]
fn killed_while_waiting() {
    for n in 1..=4 {
        crash_and_resume("wait", n);
    }
}

#[test]
fn killed_while_fetching() {
    for n in 1..=5 {
        crash_and_resume("fetch", n);
    }
}

#[test]
fn killed_while_writing_the_report() {
    for n in 1..=2 {
        crash_and_resume("report", n);
    }
}

#[test]
fn a_changed_plan_is_refused_unless_forced() {
    let serve = Serve::start(&[]);
    let dir = PlanDir::new(PLAN);
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .env("AITBC_FLOW_CRASH_AT", "submitted:2");
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.signal(), Some(9));
    let run_id = dir
        .run_dir()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    std::fs::write(dir.plan(), format!("{PLAN}\n# edited\n")).unwrap();
    let runs = dir.runs();
    let args = [
        "resume",
        run_id.as_str(),
        "--runs-dir",
        runs.to_str().unwrap(),
        "--poll-start",
        "20ms",
        "--output",
        "json",
    ];
    let mut resume = serve.command();
    resume.args(args);
    let out = output_within(resume, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("changed since run"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    let mut forced = serve.command();
    forced.args(args).arg("--force");
    let out = output_within(forced, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serve.jobs().len(), 5);
}

#[test]
fn a_resumed_run_can_be_resumed_again() {
    let serve = Serve::start(&[]);
    let dir = PlanDir::new(PLAN);
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .env("AITBC_FLOW_CRASH_AT", "intent:2");
    assert_eq!(
        output_within(cmd, Duration::from_secs(60)).status.signal(),
        Some(9)
    );
    let run_id = dir
        .run_dir()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let resume_args = |c: &mut Command| {
        c.args([
            "resume",
            run_id.as_str(),
            "--runs-dir",
            dir.runs().to_str().unwrap(),
            "--poll-start",
            "20ms",
            "--poll-max",
            "100ms",
        ]);
    };
    let mut first = serve.command();
    resume_args(&mut first);
    first.env("AITBC_FLOW_CRASH_AT", "fetch:2");
    assert_eq!(
        output_within(first, Duration::from_secs(60))
            .status
            .signal(),
        Some(9)
    );
    let mut second = serve.command();
    resume_args(&mut second);
    let out = output_within(second, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serve.jobs().len(), 5);
    let journal = std::fs::read_to_string(dir.run_dir().join("journal.jsonl")).unwrap();
    assert_eq!(journal.matches("{\"run\":").count(), 3);
}

/// A journal written before the header carried its format version resumes (it is version 1); one of a
/// newer version is refused, naming the file and both versions, and is left untouched.
#[test]
fn a_journal_of_another_format_version_resumes_or_is_refused() {
    let dir =
        PlanDir::new("version: 1\nname: versions\nsteps:\n  - id: a\n    balance: {wallet: w}\n");
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL");
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = dir.run_dir();
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let journal = run_dir.join("journal.jsonl");
    let written = std::fs::read_to_string(&journal).unwrap();
    assert!(written.starts_with("{\"run\":{\"version\":2,"), "{written}");
    let resume = || {
        let mut c = Command::new(bin());
        c.args([
            "resume",
            &run_id,
            "--runs-dir",
            dir.runs().to_str().unwrap(),
            "--output",
            "json",
        ])
        .env_remove("AITBC_COORDINATOR_URL");
        output_within(c, Duration::from_secs(60))
    };

    // As written before the header carried a version (version 1, which this build still reads).
    std::fs::write(&journal, written.replacen("\"version\":2,", "", 1)).unwrap();
    let out = resume();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "succeeded");

    let older = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(older.matches("{\"run\":").count(), 2);
    assert_eq!(
        older.matches("{\"run\":{\"version\":2,").count(),
        1,
        "{older}"
    );
    let newer = older.replacen("{\"run\":{", "{\"run\":{\"version\":3,", 1);
    std::fs::write(&journal, &newer).unwrap();
    let out = resume();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "error: cannot resume run {run_id}: {}:1: the journal is in format version 3, but aitbc-flow {} reads journal format versions 1 and 2 only",
        journal.display(),
        env!("CARGO_PKG_VERSION")
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap(),
        newer,
        "nothing appended"
    );
}

/// A resume repeats the run as it was started: `--no-cache` stays off for it, and a run made with
/// `--lock` takes the plan's lock again, so that it cannot overlap a scheduled run of the same plan.
#[test]
fn a_resume_keeps_the_runs_cache_setting_and_takes_its_lock() {
    let serve = Serve::start(&["--fund", "w=100", "--fund", "v=100", "--no-faucet"]);
    let dir = PlanDir::new(PLAN);
    let mut first = serve.command();
    first
        .args(run_args(&dir.plan(), &dir.runs()))
        .args(["--no-cache", "--lock"])
        .env("AITBC_FLOW_CRASH_AT", "submitted:2");
    let out = output_within(first, Duration::from_secs(60));
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = dir.run_dir();
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    let header: Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    assert_eq!(header["run"]["cache"], false);
    assert_eq!(header["run"]["lock"], true);

    // While another process holds the plan's lock, the resume does not run (overlap: skip).
    let lock_dir = dir.runs().join(".locks");
    let lock_file = std::fs::read_dir(&lock_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "lock"))
        .expect("the run's lock file");
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(&lock_file)
        .unwrap();
    // SAFETY: flock(2) on a descriptor we own; released when `held` is dropped.
    assert_eq!(
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&held),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        },
        0
    );
    let resume_args = |out: &str| {
        vec![
            "resume".to_string(),
            run_id.clone(),
            "--runs-dir".into(),
            dir.runs().to_str().unwrap().into(),
            "--poll-start".into(),
            "20ms".into(),
            "--poll-max".into(),
            "100ms".into(),
            "--output".into(),
            out.into(),
        ]
    };
    let mut blocked = serve.command();
    blocked.args(resume_args("text"));
    let out = output_within(blocked, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("skip"), "{stderr}");
    let journal_after = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    assert_eq!(journal_after, journal, "a skipped resume journals nothing");
    drop(held);

    let mut resume = serve.command();
    resume.args(resume_args("json"));
    let out = output_within(resume, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report on stdout");
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["inputs"]["cache"], false);
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    let resumed: Vec<Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("run").is_some())
        .collect();
    assert_eq!(resumed.len(), 2);
    assert_eq!(resumed[1]["run"]["cache"], false);
    assert_eq!(resumed[1]["run"]["lock"], true);
}

/// Outputs are journaled with secrets redacted; a step resumed after a kill -9 that reads an output
/// which had quoted a secret is still sent the secret's value (read again from its source), never
/// `***` — and the secret is in no file of the run and no output of either process.
#[test]
fn a_resumed_step_gets_the_secret_an_earlier_output_quoted_and_no_file_holds_it() {
    let secret = "sk-live-8f2a91c4e7";
    let plan = r#"
version: 1
name: secretive
secrets:
  api_key: {env: E2E_SECRET_KEY}
steps:
  - id: ask
    secrets_in_payload: true
    job: {job_type: inference, wallet: w, payment: 1, prompt: "use key ${{ secrets.api_key }} please"}
  - id: again
    job: {job_type: inference, wallet: w, payment: 1, prompt: "echo ${{ steps.ask.output }}"}
"#;
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet"]);
    let dir = PlanDir::new(plan);
    let mut first = serve.command();
    first
        .args(run_args(&dir.plan(), &dir.runs()))
        .env("E2E_SECRET_KEY", secret)
        // Killed once `again` is about to be submitted: `ask` is journaled as done.
        .env("AITBC_FLOW_CRASH_AT", "intent:2");
    let crashed = output_within(first, Duration::from_secs(60));
    assert_eq!(crashed.status.signal(), Some(9));
    let run_dir = dir.run_dir();
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    assert!(!journal.contains(secret));
    assert!(
        journal.contains(r#""redacted":{"/output":["#)
            // The whole prompt computed from the secret, redacted as one (`secrets_in_payload`).
            && journal.contains(r#"{"secret":"/steps/0/job/prompt#0"}"#),
        "{journal}"
    );

    let mut resume = serve.command();
    resume
        .args([
            "resume",
            &run_id,
            "--runs-dir",
            dir.runs().to_str().unwrap(),
            "--poll-start",
            "20ms",
            "--output",
            "json",
        ])
        .env("E2E_SECRET_KEY", secret);
    let resumed = output_within(resume, Duration::from_secs(60));
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    // What `again` was sent: ask's output with the secret in it, as the first start would have sent.
    let jobs = serve.jobs();
    let of = |step: &str| {
        jobs.iter()
            .find(|j| j["payload"]["client_ref"] == format!("{run_id}/{step}").as_str())
            .unwrap_or_else(|| panic!("no job of {step}"))
    };
    assert_eq!(jobs.len(), 2);
    let asked = of("ask")["result"]["output"].as_str().unwrap().to_string();
    assert!(
        asked.contains(secret),
        "the output quoted the secret: {asked}"
    );
    assert_eq!(
        of("again")["payload"]["prompt"],
        format!("echo {asked}").as_str()
    );

    // And the secret is nowhere in the run's files or the processes' outputs.
    for out in [&crashed, &resumed] {
        for text in [&out.stdout, &out.stderr] {
            assert!(!String::from_utf8_lossy(text).contains(secret));
        }
    }
    assert!(String::from_utf8_lossy(&resumed.stdout).contains("***"));
    let mut files = vec![dir.runs()];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            seen += 1;
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{} holds the secret",
                p.display()
            );
        }
    }
    assert!(seen >= 5, "the run's files were read");
}
