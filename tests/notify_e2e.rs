//! `notify` steps end to end: a failing job followed by a `when: failure()` notify whose message a
//! local HTTP sink on 127.0.0.1 receives (with a header from a secret that no file of the run holds),
//! and a notify to a dead port that leaves the run's exit code alone. The real binary against the
//! embedded coordinator.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);
const SECRET: &str = "hook-s3cr3t-7f1e9a";

fn embedded_run(dir: &PlanDir) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN")
        .env("T_HOOK_TOKEN", SECRET);
    output_within(cmd, LIMIT)
}

/// A one-request HTTP sink: answers the first request with 200 `ok` and hands over its raw text
/// (head and body). It gives up by itself after `LIMIT`.
fn sink() -> (u16, mpsc::Receiver<String>) {
    sink_answering(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec()
    })
}

/// A one-request HTTP sink that answers with `answer(its own port)`.
fn sink_answering(answer: fn(u16) -> Vec<u8>) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let end = Instant::now() + LIMIT;
        while Instant::now() < end {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = conn.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(h) = text.find("\r\n\r\n") {
                    let len = text[..h]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= h + 4 + len {
                        break;
                    }
                }
            }
            let _ = conn.write_all(&answer(port));
            let _ = tx.send(String::from_utf8_lossy(&buf).to_string());
            return;
        }
    });
    (port, rx)
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn a_failure_notify_reaches_the_sink_with_its_secret_header_and_the_run_keeps_its_exit_code() {
    let (port, rx) = sink();
    let dir = PlanDir::new(&format!(
        r#"
version: 1
name: nightly
secrets:
  HOOK_TOKEN: {{env: T_HOOK_TOKEN}}
steps:
  - id: bad
    job: {{job_type: inference, wallet: w, payment: 1, prompt: "FAIL please"}}
  - id: tell
    when: "${{{{ failure() }}}}"
    notify:
      url: "http://127.0.0.1:{port}/hooks/nightly"
      headers:
        Authorization: "Bearer ${{{{ secrets.HOOK_TOKEN }}}}"
      text: "${{{{ run.plan }}}} ${{{{ run.status }}}}: ${{{{ run.failed_steps | join(', ') }}}}"
"#
    ));
    let out = embedded_run(&dir);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the job's failure fails the run; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the sink received the notification");
    let (head, body) = got.split_once("\r\n\r\n").expect("an HTTP request");
    assert!(head.starts_with("POST /hooks/nightly "), "{head}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {SECRET}"))),
        "the header from the secret: {head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("x-api-key"),
        "no coordinator credentials go to a webhook: {head}"
    );
    let msg: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(msg, serde_json::json!({"text": "nightly failed: bad"}));

    let report = report_of(&out);
    assert_eq!(report["status"], "failed");
    let tell = step(&report, "tell");
    assert_eq!(tell["state"], "succeeded", "{tell}");
    assert_eq!(tell["kind"], "notify");
    assert_eq!(
        tell["operation"], "notify",
        "a webhook is no status read: {tell}"
    );
    assert_eq!(tell["outputs"]["http_status"], 200);
    assert_eq!(tell["reason"], "ran: step bad failed");

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    let mut files = Vec::new();
    files_under(&dir.runs(), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "the secret is in {}",
            f.display()
        );
    }
}

#[test]
fn a_notify_to_a_dead_port_is_reported_but_leaves_the_exit_code_alone() {
    // A port nobody listens on: bound, then let go.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let plan = |fail_run: bool| {
        format!(
            r#"
version: 1
name: quiet
steps:
  - id: good
    balance: {{wallet: w}}
  - id: tell
    needs: [good]
    timeout: 20s
    retry: {{max_attempts: 2, initial: 50ms, max: 100ms}}
    notify:
      url: "http://127.0.0.1:{port}/"
      text: "done"
      fail_run: {fail_run}
"#
        )
    };
    let dir = PlanDir::new(&plan(false));
    let out = embedded_run(&dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a failed notify does not fail the run; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["status"], "succeeded", "{report}");
    let tell = step(&report, "tell");
    assert_eq!(tell["operation"], "notify", "{tell}");
    assert_eq!(tell["state"], "failed", "{tell}");
    assert_eq!(tell["attempts"].as_array().unwrap().len(), 2, "{tell}");
    assert!(
        tell["issues"].to_string().contains("was not delivered"),
        "{tell}"
    );

    let dir = PlanDir::new(&plan(true));
    let out = embedded_run(&dir);
    assert_ne!(
        out.status.code(),
        Some(0),
        "with `fail_run: true` it fails the run; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report_of(&out)["status"], "failed");
}

#[test]
fn a_webhook_that_redirects_is_not_followed() {
    // The redirect points at a second sink on another port (another origin): it must hear nothing.
    let (other, other_rx) = sink();
    static OTHER: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    OTHER.set(other).unwrap();
    let (port, rx) = sink_answering(|_| {
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{}/stolen\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            OTHER.get().unwrap()
        )
        .into_bytes()
    });
    let dir = PlanDir::new(&format!(
        r#"
version: 1
name: redirected
secrets:
  HOOK_TOKEN: {{env: T_HOOK_TOKEN}}
steps:
  - id: tell
    retry: {{max_attempts: 1}}
    notify:
      url: "http://127.0.0.1:{port}/hook"
      headers: {{Authorization: "Bearer ${{{{ secrets.HOOK_TOKEN }}}}"}}
      text: "hello"
"#
    ));
    let out = embedded_run(&dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the webhook got the message");
    let tell = step(&report_of(&out), "tell").clone();
    assert_eq!(tell["state"], "failed", "{tell}");
    assert!(
        tell["issues"].to_string().contains("never redirected"),
        "{tell}"
    );
    assert!(
        other_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "the redirect was followed"
    );
}

#[test]
fn the_example_nightly_plan_alerts_the_chat_and_records_the_balance_when_a_step_fails() {
    // plans/nightly-with-alert.yaml as a team copies it, with its webhook pointed at the sink and a
    // wallet that holds too little for its `funds` check (but enough to pass the preflight).
    let (port, rx) = sink();
    let dir = PlanDir::new("version: 1\nname: runs-only\nsteps: [{id: x, balance: {wallet: w}}]\n");
    let plan = root().join("plans/nightly-with-alert.yaml");
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&plan, &dir.runs()))
        .args([
            "--embedded-latency",
            "instant",
            "--fund",
            "ops-wallet=3",
            "--no-faucet",
        ])
        .args([
            "--set",
            &format!("webhook=http://127.0.0.1:{port}/hooks/nightly"),
        ])
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN");
    let out = output_within(cmd, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the failed check fails the run; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the sink received the alert");
    let (head, body) = got.split_once("\r\n\r\n").expect("an HTTP request");
    assert!(head.starts_with("POST /hooks/nightly "), "{head}");
    let msg: Value = serde_json::from_str(body).expect("a JSON body");
    let text = msg["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("nightly-with-alert failed: funds (run "),
        "{text}"
    );
    let report = report_of(&out);
    assert_eq!(step(&report, "funds")["state"], "failed");
    assert_eq!(step(&report, "summary")["state"], "skipped");
    let alert = step(&report, "alert");
    assert_eq!(alert["state"], "succeeded", "{alert}");
    assert_eq!(alert["operation"], "notify");
    assert_eq!(alert["reason"], "ran: step funds failed");
    let after = step(&report, "balance_after");
    assert_eq!(after["state"], "succeeded", "{after}");
    assert_eq!(after["when"], "always()");
    assert_eq!(
        after["outputs"]["balance"].to_string().trim_matches('"'),
        "3"
    );
    assert!(
        !report.to_string().contains("Bearer"),
        "no header values in the report"
    );
}
