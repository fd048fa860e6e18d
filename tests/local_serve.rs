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
