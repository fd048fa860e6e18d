//! The real binary against a scripted hostile coordinator (`support/hostile.rs`) over HTTP on
//! 127.0.0.1: answers too large to hold, a tampered result under a genuine receipt, another job's view,
//! redirects elsewhere, a `Retry-After` of a year, a COMPLETED job whose result cannot be read, a
//! secret echoed back in an error, and a coordinator that goes down while the runner cancels. Each
//! test says what a user's adversary tried and what must hold.

#[path = "support/hostile.rs"]
mod hostile;
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hostile::{BrokenResult, GENUINE, Hostile, Scenario, TAMPERED};
use serde_json::Value;
use support::{PlanDir, output_within, run_args};

const LIMIT: Duration = Duration::from_secs(60);

/// One job step, with a timeout and extra step keys (YAML lines at step level).
fn job_plan(timeout: &str, extra: &str) -> PlanDir {
    PlanDir::new(&format!(
        r#"
version: 1
name: hostile
steps:
  - id: a
    timeout: {timeout}
{extra}
    job:
      job_type: inference
      wallet: w
      payment: 2
      prompt: "hello"
"#
    ))
}

fn run(h: &Hostile, dir: &PlanDir) -> (Output, Duration) {
    let mut cmd = h.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()));
    let t = Instant::now();
    let out = output_within(cmd, LIMIT);
    (out, t.elapsed())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn step_a(report: &Value) -> &Value {
    &report["steps"][0]
}

fn issues(step: &Value) -> String {
    step["issues"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

// ---- Response size ----

#[test]
fn job_balance_against_an_endless_body_stops_at_the_limit_naming_the_url() {
    let h = Hostile::start(Scenario::EndlessBody("/v1/wallets"));
    let mut cmd = h.command();
    cmd.args(["job", "balance", "w"]);
    let t = Instant::now();
    let out = output_within(cmd, LIMIT);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let url = format!("{}/v1/wallets/w/balance", h.url);
    assert!(all.contains(&url), "{all}");
    assert!(all.contains("larger than the 4 MiB limit"), "{all}");
    assert!(all.contains("AITBC_MAX_RESPONSE"), "{all}");
    // It stopped reading: the process stayed small (it reached 3 GB before).
    let rss_mib = hostile::max_child_rss_kib() / 1024;
    assert!(rss_mib < 300, "a child reached {rss_mib} MiB");
}

#[test]
fn a_declared_huge_body_is_refused_before_it_is_read() {
    let h = Hostile::start(Scenario::HugeBody("/v1/wallets"));
    let mut cmd = h.command();
    cmd.args(["job", "balance", "w"])
        .env("AITBC_MAX_RESPONSE", "64KiB");
    let out = output_within(cmd, LIMIT);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("larger than the 64 KiB limit for it (it declares 2 GiB)"),
        "{all}"
    );
}

#[test]
fn a_poll_answered_with_an_endless_body_fails_the_step_and_the_cancel_is_not_claimed() {
    let h = Hostile::start(Scenario::EndlessBody("/v1/jobs/"));
    let dir = job_plan("30s", "");
    let (out, took) = run(&h, &dir);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let r = report(&out);
    let a = step_a(&r);
    assert_eq!(a["state"], "failed");
    let why = issues(a);
    assert!(why.contains("larger than the 16 MiB limit"), "{why}");
    assert!(why.contains("AITBC_MAX_RESULT"), "{why}");
    assert!(why.contains(&format!("{}/v1/jobs/", h.url)), "{why}");
    // The job could not be cancelled (the cancel's answer is endless too): not called cancelled.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not be cancelled"), "{stderr}");
    assert!(!stderr.contains("cancelled (payment"), "{stderr}");
    let rss_mib = hostile::max_child_rss_kib() / 1024;
    assert!(rss_mib < 300, "a child reached {rss_mib} MiB");
}

// ---- What is verified about a result ----

#[test]
fn the_hostile_servers_honest_receipts_verify() {
    // The control: the same plan against the same server, untampered, verifies and saves the result.
    let h = Hostile::start(Scenario::Honest);
    let dir = job_plan("30s", "    cache: false");
    let (out, _) = run(&h, &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&out);
    assert_eq!(step_a(&r)["receipt"]["verified"], true);
    assert_eq!(step_a(&r)["result"], GENUINE);
}

#[test]
fn a_tampered_result_under_the_genuine_receipt_fails_the_step_and_is_not_saved() {
    let h = Hostile::start(Scenario::TamperedResult);
    let dir = PlanDir::new(
        r#"
version: 1
name: tampered
steps:
  - id: a
    job:
      job_type: inference
      wallet: w
      payment: 2
      prompt: "hello"
      save: out/a.json
"#,
    );
    let (out, _) = run(&h, &dir);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let r = report(&out);
    let a = step_a(&r);
    assert_eq!(a["state"], "failed");
    assert_eq!(a["receipt"]["verified"], false);
    let error = a["receipt"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("differs from the result the receipt signs"),
        "{a}"
    );
    assert!(issues(a).contains("did not verify"), "{a}");
    assert!(!dir.run_dir().join("out/a.json").exists());
}

#[test]
fn a_fetch_that_does_not_require_verification_marks_a_tampered_result_unverified() {
    let h = Hostile::start(Scenario::TamperedResult);
    let dir = PlanDir::new(
        r#"
version: 1
name: tampered
steps:
  - id: a
    submit: {job_type: inference, wallet: w, payment: 2, prompt: "hello"}
  - id: b
    wait: {job: "${{ steps.a.job_id }}"}
  - id: c
    fetch: {job: "${{ steps.b.job_id }}", verify_receipt: false}
"#,
    );
    let (out, _) = run(&h, &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = report(&out);
    let c = &r["steps"][2];
    assert_eq!(c["receipt"]["verified"], false);
    assert_eq!(c["performance_metrics"]["receipt_verified"], false);
    assert_eq!(c["result"], TAMPERED);
    assert!(
        issues(c).contains("receipt not verified: the result served differs"),
        "{c}"
    );
    assert_eq!(c["validation_status"], "partial", "{c}");
}

#[test]
fn a_poll_answered_with_another_jobs_id_is_refused() {
    let h = Hostile::start(Scenario::OtherJobId);
    let dir = job_plan("30s", "");
    let (out, _) = run(&h, &dir);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let r = report(&out);
    let a = step_a(&r);
    assert_eq!(a["state"], "failed");
    let why = issues(a);
    assert!(
        why.contains(&format!("answered with job {:032x}", 0xdead_0000u64)),
        "{why}"
    );
    assert!(why.contains("refused"), "{why}");
    // Nothing of the other job was fetched or taken as this one's result.
    assert!(a["result"].is_null(), "{a}");
    assert!(
        !h.lines().iter().any(|l| l.ends_with("/result")),
        "{:?}",
        h.lines()
    );
}

// ---- Redirects ----

#[test]
fn a_307_to_another_port_sends_nothing_there_and_names_the_url_that_answered() {
    let h = Hostile::start(Scenario::RedirectSubmit {
        status: 307,
        same_origin: false,
    });
    let dir = job_plan("30s", "");
    let (out, _) = run(&h, &dir);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert_eq!(
        *h.elsewhere_seen.lock().unwrap(),
        Vec::<String>::new(),
        "the job (prompt, wallet, idempotency key) went to the other port"
    );
    let r = report(&out);
    let why = issues(step_a(&r));
    assert!(
        why.contains(&format!("{}/v1/jobs answered HTTP 307", h.url)),
        "{why}"
    );
    assert!(why.contains("not followed"), "{why}");
}

#[test]
fn a_301_on_a_submit_is_not_turned_into_a_get() {
    let h = Hostile::start(Scenario::RedirectSubmit {
        status: 301,
        same_origin: true,
    });
    let dir = job_plan("30s", "");
    let (out, _) = run(&h, &dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        !h.lines().iter().any(|l| l.contains("/v1/jobs-moved")),
        "{:?}",
        h.lines()
    );
    let r = report(&out);
    assert!(
        issues(step_a(&r)).contains("a POST is never redirected"),
        "{}",
        issues(step_a(&r))
    );
}

#[test]
fn a_read_follows_a_redirect_within_the_origin_and_no_other() {
    let id = format!("{:032x}", 0xabc0_0000_0001u64);
    let h = Hostile::start(Scenario::RedirectReadSameOrigin);
    let mut cmd = h.command();
    cmd.args(["job", "status", &id]);
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(h.lines().contains(&format!("GET /v2/jobs/{id}")));

    let h = Hostile::start(Scenario::RedirectRead);
    let mut cmd = h.command();
    cmd.args(["job", "status", &id]);
    let out = output_within(cmd, LIMIT);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("not followed: it leaves"), "{all}");
    assert_eq!(*h.elsewhere_seen.lock().unwrap(), Vec::<String>::new());
}

// ---- Timeouts and Retry-After ----

#[test]
fn retry_after_past_the_step_timeout_ends_the_step_at_once_as_a_timeout_naming_it() {
    let h = Hostile::start(Scenario::RetryAfter {
        method: "POST",
        path: "/v1/jobs",
        secs: 31_536_000,
        times: u32::MAX,
    });
    let dir = job_plan("5s", "");
    let (out, took) = run(&h, &dir);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let r = report(&out);
    let a = step_a(&r);
    let why = issues(a);
    assert!(
        why.contains("asked to retry after 31536000 s (Retry-After), past the step's timeout"),
        "{why}"
    );
    // One submit was sent: the retry was never attempted.
    let posts = h
        .lines()
        .iter()
        .filter(|l| l.starts_with("POST /v1/jobs"))
        .count();
    assert_eq!(posts, 1);
}

#[test]
fn retry_after_within_the_step_timeout_is_honoured() {
    let h = Hostile::start(Scenario::RetryAfter {
        method: "POST",
        path: "/v1/jobs",
        secs: 2,
        times: 1,
    });
    let dir = job_plan(
        "30s",
        "    retry: {max_attempts: 3, initial: 100ms, jitter: none, on: [rate_limited]}",
    );
    let (out, _) = run(&h, &dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let posts: Vec<Duration> = h
        .seen()
        .iter()
        .filter(|s| s.line.starts_with("POST /v1/jobs"))
        .map(|s| s.at)
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(posts[1] - posts[0] >= Duration::from_secs(2), "{posts:?}");
}

#[test]
fn a_poll_the_server_asks_to_hold_past_the_timeout_ends_the_wait_at_once() {
    let h = Hostile::start(Scenario::RetryAfter {
        method: "GET",
        path: "/v1/jobs/",
        secs: 31_536_000,
        times: u32::MAX,
    });
    let dir = job_plan("20s", "");
    let (out, took) = run(&h, &dir);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let r = report(&out);
    let why = issues(step_a(&r));
    assert!(why.contains("31536000 s"), "{why}");
    assert!(why.contains("(Retry-After)"), "{why}");
    assert!(why.contains(&format!("{}/v1/jobs/", h.url)), "{why}");
}

#[test]
fn a_step_timeout_bounds_the_whole_step_retries_included() {
    // Two failed submits (1 s apart) and a job that never finishes: the wait gets what is left of the
    // step's 4 s, not 4 s of its own (the step ran 41.7 s of a 30 s timeout this way).
    let h = Hostile::start(Scenario::NeverFinishes { failing_submits: 2 });
    let dir = job_plan(
        "4s",
        "    retry: {max_attempts: 5, backoff: fixed, initial: 1s, jitter: none, on: [unavailable]}",
    );
    let (out, took) = run(&h, &dir);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(
        // (Before: 2 s of retries, then a wait of 4 s of its own: 6 s and more.)
        took >= Duration::from_secs(4) && took < Duration::from_millis(5900),
        "the run took {took:?} for a step of 4 s"
    );
    let r = report(&out);
    let a = step_a(&r);
    assert!(a["execution_time"].as_f64().unwrap() < 5.0, "{a}");
    // The job was cancelled on the timeout, and said so.
    assert!(h.lines().iter().any(|l| l.ends_with("/cancel")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled (payment"));
}

#[test]
fn retry_after_past_the_preflight_time_stops_the_run_before_anything_is_paid() {
    let h = Hostile::start(Scenario::RetryAfter {
        method: "GET",
        path: "/v1/",
        secs: 31_536_000,
        times: u32::MAX,
    });
    let dir = job_plan("30s", "");
    let (out, took) = run(&h, &dir);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(all.contains("(Retry-After)"), "{all}");
    assert!(
        !h.lines().iter().any(|l| l.starts_with("POST")),
        "{:?}",
        h.lines()
    );
}

// ---- Messages ----

#[test]
fn a_completed_job_whose_result_cannot_be_read_is_not_called_failed() {
    for (broken, expect) in [
        (BrokenResult::NotReady, "job not ready"),
        (BrokenResult::Html, "unexpected answer"),
        (BrokenResult::BrokenJson, "unexpected answer"),
    ] {
        let h = Hostile::start(Scenario::ResultBroken(broken));
        let dir = job_plan("30s", "");
        let (out, _) = run(&h, &dir);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{broken:?}: {all}");
        assert!(!all.contains("failed result"), "{broken:?}: {all}");
        let r = report(&out);
        let why = issues(step_a(&r));
        assert!(
            why.contains("is COMPLETED, but its result could not be read"),
            "{broken:?}: {why}"
        );
        assert!(why.contains(expect), "{broken:?}: {why}");
        assert!(
            why.contains(&format!("{}/v1/jobs/", h.url)),
            "{broken:?}: {why}"
        );
        // Each failed request is its own attempt of the step ("attempt 1" was printed twice).
        let numbers: Vec<&str> = all
            .lines()
            .filter_map(|l| l.split(" attempt ").nth(1))
            .filter_map(|rest| rest.split(':').next())
            .collect();
        let mut unique = numbers.clone();
        unique.dedup();
        assert_eq!(numbers, unique, "{broken:?}: {all}");
    }
}

#[test]
fn a_coordinator_down_during_the_cancel_is_not_reported_as_a_cancel() {
    let h = Hostile::start(Scenario::DownOnCancel);
    let dir = job_plan("2s", "");
    let (out, _) = run(&h, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("could not be cancelled"), "{stderr}");
    assert!(!stderr.contains("cancelled (payment"), "{stderr}");
    let r = report(&out);
    assert!(
        issues(step_a(&r)).contains("could not be cancelled on the way out")
            || r.to_string().contains("could not be cancelled"),
        "{r}"
    );
}

#[test]
fn a_missing_token_is_refused_before_anything_is_sent_naming_the_variable() {
    let h = Hostile::start(Scenario::Honest);
    let dir = job_plan("30s", "");
    let mut cmd = h.command();
    cmd.env_remove("AITBC_TOKEN")
        .args(run_args(&dir.plan(), &dir.runs()));
    let out = output_within(cmd, LIMIT);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("no credentials"), "{all}");
    assert!(all.contains("AITBC_TOKEN"), "{all}");
    assert_eq!(h.lines(), Vec::<String>::new());
}

#[test]
fn a_refused_token_stops_the_run_before_the_first_submit_saying_so() {
    let h = Hostile::start(Scenario::RefusesToken);
    // The balance comes from another server that does not check the token: only the probe sees the
    // refusal, before the first submit.
    let wallet = Hostile::start(Scenario::Honest);
    let dir = job_plan("30s", "");
    let mut cmd = h.command();
    cmd.env("AITBC_WALLET_URL", &wallet.url)
        .args(run_args(&dir.plan(), &dir.runs()));
    let out = output_within(cmd, LIMIT);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("credentials refused"), "{all}");
    assert!(all.contains("Invalid token"), "{all}");
    assert!(all.contains("AITBC_TOKEN"), "{all}");
    assert!(
        all.contains("run stopped: the coordinator refused our credentials"),
        "{all}"
    );
    assert!(
        !h.lines().iter().any(|l| l.starts_with("POST")),
        "{:?}",
        h.lines()
    );
}

// ---- Secrets ----

fn secret_plan() -> PlanDir {
    PlanDir::new(
        r#"
version: 1
name: echo
secrets:
  api: {env: HOSTILE_SECRET}
steps:
  - id: a
    retry: {max_attempts: 2, initial: 50ms, jitter: none, on: [unavailable]}
    job:
      job_type: inference
      wallet: w
      payment: 2
      prompt: "hello"
"#,
    )
}

fn assert_no_secret(secret: &str, what: &str, text: &str) {
    assert!(
        !text.contains(secret),
        "the secret leaked in {what}:\n{text}"
    );
}

fn assert_run_dir_clean(secret: &str, dir: &Path) {
    for f in ["report.json", "events.jsonl", "journal.jsonl", "summary.md"] {
        let t = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        assert_no_secret(secret, f, &t);
    }
}

#[test]
fn a_secret_echoed_in_an_error_detail_is_redacted_on_stderr_and_by_resume() {
    let secret = "s3cr3t-VALUE-42";
    for status in [422, 500] {
        let h = Hostile::start(Scenario::EchoSecret {
            status,
            secret: secret.into(),
        });
        let dir = secret_plan();
        let mut cmd = h.command();
        cmd.env("HOSTILE_SECRET", secret)
            .args(run_args(&dir.plan(), &dir.runs()));
        let out = output_within(cmd, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(if status == 500 { 3 } else { 1 }),
            "{stderr}"
        );
        // The echo did come back (so the test can fail): redacted where it shows.
        assert!(stderr.contains("***"), "{status}: {stderr}");
        assert_no_secret(secret, "stderr", &stderr);
        assert_no_secret(secret, "stdout", &String::from_utf8_lossy(&out.stdout));
        let run_dir = dir.run_dir();
        assert_run_dir_clean(secret, &run_dir);

        let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
        let mut cmd: Command = h.command();
        cmd.env("HOSTILE_SECRET", secret).args([
            "resume",
            &run_id,
            "--runs-dir",
            dir.runs().to_str().unwrap(),
            "--poll-start",
            "20ms",
        ]);
        let out = output_within(cmd, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains("***"), "{status}: {stderr}");
        assert_no_secret(secret, "resume's stderr", &stderr);
        assert_no_secret(
            secret,
            "resume's stdout",
            &String::from_utf8_lossy(&out.stdout),
        );
        assert_run_dir_clean(secret, &run_dir);
    }
}
