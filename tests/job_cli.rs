//! `aitbc-flow job …` end to end: the real binary against an embedded coordinator on 127.0.0.1,
//! human output and the operator skill's output JSON (snapshotted with ids and times redacted).

mod common;

use std::time::Duration;

use aitbc_flow::local::LocalConfig;
use common::{Coord, filters, job_id, run_with_env};

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({filters => filters()}, {
            insta::assert_snapshot!($name, $value);
        });
    };
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

#[test]
fn submit_status_results_list_with_json_output() {
    let c = Coord::instant();
    let sub = c.run(
        &[
            "job",
            "submit",
            "--type",
            "inference",
            "--prompt",
            "Say hello",
            "--payment",
            "2",
            "--wallet",
            "w1",
            "--model",
            "llama2",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(sub.code, 0, "{sub:?}");
    let v = sub.json();
    assert_eq!(v["status"], "submitted");
    snap!("submit_json", pretty(&v));
    let id = job_id(&v);

    // Instant workers: it completes quickly; poll status until it does.
    let mut status = serde_json::Value::Null;
    for _ in 0..50 {
        let out = c.run(&["job", "status", &id, "--output", "json"], None);
        assert_eq!(out.code, 0, "{out:?}");
        status = out.json();
        if status["status"] == "completed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    snap!("status_json", pretty(&status));

    let res = c.run(&["job", "results", &id, "--output", "json"], None);
    assert_eq!(res.code, 0, "{res:?}");
    let r = res.json();
    assert_eq!(r["performance_metrics"]["receipt_verified"], true);
    snap!("results_json", pretty(&r));

    let list = c.run(
        &[
            "job",
            "list",
            "--limit",
            "5",
            "--type",
            "inference",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(list.code, 0, "{list:?}");
    let l = list.json();
    assert_eq!(l["jobs"][0]["job_id"], id.as_str());
    snap!("list_json", pretty(&l));

    // Human output of the same.
    let text = c.run(&["job", "results", &id], None);
    assert_eq!(text.code, 0);
    snap!("results_text", text.stdout);
}

#[test]
fn submit_wait_fetches_and_verifies() {
    let c = Coord::instant();
    let out = c.run(
        &[
            "job",
            "submit",
            "--type",
            "multimodal",
            "--prompt",
            "Analyze customer feedback",
            "--payment",
            "5",
            "--wallet",
            "trading-wallet",
            "--wait",
            "--timeout",
            "30s",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["operation"], "submit");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["performance_metrics"]["receipt_verified"], true);
    snap!("submit_wait_json", pretty(&v));
}

#[test]
fn cancel_a_running_job_then_cancel_again_conflicts() {
    let c = Coord::slow(Duration::from_secs(30));
    let sub = c.run(
        &[
            "job",
            "submit",
            "--type",
            "training",
            "--prompt",
            "Fine-tune",
            "--payment",
            "10",
            "--wallet",
            "w1",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(sub.code, 0, "{sub:?}");
    let id = job_id(&sub.json());
    let cancel = c.run(&["job", "cancel", &id, "--output", "json"], None);
    assert_eq!(cancel.code, 0, "{cancel:?}");
    snap!("cancel_json", pretty(&cancel.json()));

    let again = c.run(&["job", "cancel", &id, "--output", "json"], None);
    assert_eq!(again.code, 1, "{again:?}");
    let v = again.json();
    assert_eq!(v["validation_status"], "failed");
    assert_eq!(v["status"], "cancelled");
    snap!("cancel_again_json", pretty(&v));
}

#[test]
fn optimize_and_balance() {
    let c = Coord::instant();
    let out = c.run(
        &[
            "job",
            "optimize",
            "--agent-id",
            "agent-7",
            "--cpu",
            "4",
            "--memory",
            "16",
            "--gpu",
            "1",
            "--duration",
            "1h",
            "--output",
            "json",
        ],
        None,
    );
    assert!(out.code == 0, "{out:?}");
    snap!("optimize_json", pretty(&out.json()));

    let bal = c.run(
        &["job", "balance", "fresh-wallet", "--output", "json"],
        None,
    );
    assert_eq!(bal.code, 0, "{bal:?}");
    assert_eq!(bal.json()["result"], "10000");
    snap!("balance_json", pretty(&bal.json()));
    let text = c.run(&["job", "balance", "fresh-wallet"], None);
    snap!("balance_text", text.stdout);
}

#[test]
fn insufficient_balance_names_the_required_amount() {
    let c = Coord::with(LocalConfig {
        faucet: false,
        fund: vec![("poor".into(), "1.5".parse().unwrap())],
        ..LocalConfig::for_tests()
    });
    let out = c.run(
        &[
            "job",
            "submit",
            "--type",
            "inference",
            "--prompt",
            "hi",
            "--payment",
            "2",
            "--wallet",
            "poor",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.code, aitbc_flow::exit::STEP_FAILED, "{out:?}");
    let v = out.json();
    assert_eq!(
        v["summary"],
        "Insufficient balance: the job requires 2 AITBC"
    );
    snap!("insufficient_json", pretty(&v));
    // Nothing was submitted.
    let list = c.run(&["job", "list", "--output", "json"], None);
    assert_eq!(list.json()["jobs"], serde_json::json!([]));
}

#[test]
fn invalid_job_type_lists_the_valid_ones() {
    let c = Coord::instant();
    let out = c.run(
        &[
            "job",
            "submit",
            "--type",
            "video-upscale",
            "--prompt",
            "hi",
            "--payment",
            "2",
            "--wallet",
            "w",
        ],
        None,
    );
    assert_eq!(out.code, aitbc_flow::exit::INVALID, "{out:?}");
    assert_eq!(out.stdout, "");
    snap!("invalid_type_text", out.stderr);
}

#[test]
fn unavailable_service_gives_status_and_retry_advice() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let out = run_with_env(
        &[
            "job",
            "status",
            "ea05c15ab4f94d369c35d96c8fc39ac5",
            "--output",
            "json",
            "--coordinator",
            &url,
        ],
        None,
        &[],
    );
    assert_eq!(out.code, aitbc_flow::exit::UNREACHABLE, "{out:?}");
    let v = out.json();
    assert_eq!(v["summary"], "Service unavailable");
    assert!(v["issues"][0].as_str().unwrap().contains(&url));
    snap!("unavailable_json", pretty(&v));
}

#[test]
fn wait_timeout_gives_troubleshooting_steps() {
    let c = Coord::slow(Duration::from_secs(60));
    let out = c.run(
        &[
            "job",
            "submit",
            "--type",
            "inference",
            "--prompt",
            "slow",
            "--payment",
            "1",
            "--wallet",
            "w",
            "--wait",
            "--timeout",
            "1s",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.code, aitbc_flow::exit::TIMEOUT, "{out:?}");
    let v = out.json();
    assert_eq!(v["summary"], "Job timed out after 1s");
    snap!("wait_timeout_json", pretty(&v));
}

#[test]
fn batch_file_submits_every_prompt() {
    let c = Coord::instant();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompts.jsonl");
    std::fs::write(
        &path,
        "\"first prompt\"\n{\"prompt\": \"second prompt\", \"payment\": 3}\n\"third prompt\"\n",
    )
    .unwrap();
    let out = c.run(
        &[
            "job",
            "submit",
            "--type",
            "inference",
            "--payment",
            "1",
            "--wallet",
            "batcher",
            "--batch-file",
            path.to_str().unwrap(),
            "--parallel",
            "2",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(v["payment"], 5);
    snap!("batch_json", pretty(&v));
}

#[test]
fn no_coordinator_starts_the_embedded_one_and_says_so() {
    let out = run_with_env(
        &[
            "job",
            "submit",
            "--type",
            "inference",
            "--prompt",
            "hello",
            "--payment",
            "1",
            "--wallet",
            "w",
            "--wait",
            "--output",
            "json",
        ],
        None,
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["status"], "completed");
    assert!(
        out.stderr.contains("no coordinator configured"),
        "{}",
        out.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    let c = Coord::instant();
    let bad_id = c.run(&["job", "status", "ai_job_1774883000"], None);
    assert_eq!(bad_id.code, 2, "{bad_id:?}");
    assert!(bad_id.stderr.contains("not a job id"), "{}", bad_id.stderr);
    let no_prompt = c.run(
        &[
            "job",
            "submit",
            "--type",
            "inference",
            "--payment",
            "1",
            "--wallet",
            "w",
        ],
        None,
    );
    assert_eq!(no_prompt.code, 2);
    let bad_url = run_with_env(
        &["job", "list", "--coordinator", "localhost:8203"],
        None,
        &[],
    );
    assert_eq!(bad_url.code, 2);
    assert!(
        bad_url.stderr.contains("--coordinator is not a usable URL"),
        "{}",
        bad_url.stderr
    );
}

#[test]
fn a_broken_rule_starts_nothing() {
    let out = run_with_env(
        &[
            "job",
            "submit",
            "--type",
            "inference",
            "--prompt",
            "hi",
            "--payment",
            "0.001",
            "--wallet",
            "w",
        ],
        None,
        &[],
    );
    assert_eq!(out.code, aitbc_flow::exit::INVALID, "{out:?}");
    assert!(
        !out.stderr.contains("no coordinator configured"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("outside the service's bounds 0.01 … 1000000"),
        "{}",
        out.stderr
    );
}
