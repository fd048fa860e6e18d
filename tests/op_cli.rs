//! `aitbc-flow op` end to end: each file in `tests/inputs/op/` is the operator skill's input JSON, fed
//! on stdin to the real binary against an embedded coordinator; the exit code and the output JSON are
//! snapshotted (ids, times and ports redacted). A new case is a new file.
//!
//! Placeholders in the inputs: `$COMPLETED_JOB` (an inference job that finished), `$RUNNING_JOB` and
//! `$OTHER_RUNNING_JOB` (training jobs that run for a minute).

mod common;

use std::time::Duration;

use aitbc_flow::local::{LocalConfig, WorkerLatency};
use common::{Coord, filters, job_id};

fn submit(c: &Coord, job_type: &str) -> String {
    let input = format!(
        r#"{{"operation": "submit", "wallet": "setup", "job_type": "{job_type}", "prompt": "setup", "payment": 10}}"#
    );
    let out = c.run(&["op"], Some(&input));
    assert_eq!(out.code, 0, "{out:?}");
    job_id(&out.json())
}

#[test]
fn fixtures() {
    let c = Coord::with(LocalConfig {
        latency: WorkerLatency {
            training: Duration::from_secs(60),
            ..WorkerLatency::instant()
        },
        ..LocalConfig::for_tests()
    });
    let completed = submit(&c, "inference");
    let running = submit(&c, "training");
    let other_running = submit(&c, "training");
    // Let the inference job finish.
    for _ in 0..50 {
        let s = c.run(
            &["op"],
            Some(&format!(
                r#"{{"operation": "status", "job_id": "{completed}"}}"#
            )),
        );
        if s.json()["status"] == "completed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    insta::glob!("inputs/op/*.json", |path| {
        let input = std::fs::read_to_string(path)
            .unwrap()
            .replace("$COMPLETED_JOB", &completed)
            .replace("$OTHER_RUNNING_JOB", &other_running)
            .replace("$RUNNING_JOB", &running);
        let out = c.run(&["op"], Some(&input));
        let mut snap = format!("exit: {}\n", out.code);
        if !out.stdout.is_empty() {
            // Whatever the outcome, stdout is the output JSON.
            let v = out.json();
            snap.push_str(&serde_json::to_string_pretty(&v).unwrap());
            snap.push('\n');
        }
        if !out.stderr.is_empty() {
            snap.push_str("--- stderr\n");
            snap.push_str(&out.stderr);
        }
        insta::with_settings!({filters => filters()}, {
            insta::assert_snapshot!(snap);
        });
    });
}

#[test]
fn malformed_stdin_is_a_clear_error() {
    let c = Coord::instant();
    for (input, expect) in [
        ("not json", "expected ident"),
        ("", "EOF while parsing"),
        (
            r#"{"operation": "launch"}"#,
            "operation: unknown variant `launch`",
        ),
        (r#"{"wallet": "w"}"#, "`operation` is required"),
        (r#"{"operation": "list", "limit": "many"}"#, "limit:"),
    ] {
        let out = c.run(&["op"], Some(input));
        assert_eq!(out.code, aitbc_flow::exit::INVALID, "{input}: {out:?}");
        assert_eq!(out.stdout, "", "{input}");
        assert!(
            out.stderr
                .contains("the input JSON on stdin is not a valid operator request")
                && out.stderr.contains(expect),
            "{input}: {}",
            out.stderr
        );
    }
}
