//! The real binary: `coordinator serve` on a free port answers, prints its URL and generated token on
//! stderr, and exits 0 on SIGTERM.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn serve_answers_and_stops_on_sigterm() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
        .args(["coordinator", "serve", "--latency", "instant", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("AITBC_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/marketplace/gpu/list");
    let answered = rt.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(&url).send().await {
                return r.status().is_success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("coordinator did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        answered,
        "the coordinator never answered; stderr:\n{stderr}"
    );
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("token: local-"), "{stderr}");
    assert!(
        stderr.trim_end().ends_with("local coordinator stopped"),
        "{stderr}"
    );
}

#[test]
fn a_given_token_is_not_printed() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
        .args([
            "coordinator",
            "serve",
            "--token",
            "s3cret-value",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/v1/jobs");
        for _ in 0..300 {
            if let Ok(r) = http.get(&url).bearer_auth("s3cret-value").send().await {
                assert_eq!(r.status(), 200);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never answered");
    });
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("s3cret-value"), "{stderr}");
}

/// Starts `serve` with extra arguments on a free port and waits until it answers.
fn spawn_serve(extra: &[&str]) -> (std::process::Child, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
        .args(["coordinator", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let url = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..300 {
            if reqwest::get(format!("{url}/health")).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never answered");
    });
    (child, url)
}

fn stop(mut child: std::process::Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn sigterm_with_db_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let db = db.to_str().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();

    // A training job takes 2 s with the default latency: it is queued or running at SIGTERM.
    let (child, url) = spawn_serve(&["--db", db, "--token", "t", "--fund", "w=10"]);
    let job: serde_json::Value = rt.block_on(async {
        http.post(format!("{url}/v1/jobs"))
            .bearer_auth("t")
            .json(
                &serde_json::json!({"payload": {"type": "training", "prompt": "p"},
                "payment_amount": 4, "buyer_address": "w"}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let id = job["job_id"].as_str().unwrap().to_string();
    stop(child);

    let (child, url) = spawn_serve(&["--db", db, "--token", "t", "--latency", "instant"]);
    let (done, ledger) = rt.block_on(async {
        let mut done = serde_json::Value::Null;
        for _ in 0..200 {
            done = http
                .get(format!("{url}/v1/jobs/{id}"))
                .bearer_auth("t")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if done["state"] == "COMPLETED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let ledger: serde_json::Value = http
            .get(format!("{url}/v1/local/ledger"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (done, ledger)
    });
    stop(child);
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["payment_status"], "released");
    assert_eq!(ledger["wallets"]["w"], "6");
    assert_eq!(ledger["wallets"]["miner-local"], "4");
    assert_eq!(ledger["escrow"], "0");
}
