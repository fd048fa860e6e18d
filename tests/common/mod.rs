//! Shared by the end-to-end tests of `job` and `op`: an embedded coordinator in-process on
//! 127.0.0.1:0, the real binary run against it, and the snapshot filters for what varies.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use aitbc_flow::local::{LocalConfig, LocalHandle, WorkerLatency, start};

/// A running embedded coordinator and the runtime that hosts it.
pub struct Coord {
    pub handle: Option<LocalHandle>,
    pub rt: tokio::runtime::Runtime,
    pub url: String,
    pub token: String,
}

impl Coord {
    /// With instant workers, the faucet on and the real service's rate limits.
    pub fn instant() -> Coord {
        Coord::with(LocalConfig {
            rate_limits: aitbc_flow::limits::RateLimits::real_service(),
            ..LocalConfig::for_tests()
        })
    }

    /// With every job taking `d` to run (to catch jobs while they are queued or running).
    pub fn slow(d: Duration) -> Coord {
        Coord::with(LocalConfig {
            latency: WorkerLatency::uniform(d),
            rate_limits: aitbc_flow::limits::RateLimits::real_service(),
            ..LocalConfig::for_tests()
        })
    }

    /// With a custom config.
    pub fn with(config: LocalConfig) -> Coord {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.block_on(start(config)).unwrap();
        Coord {
            url: handle.url(),
            token: handle.token().to_string(),
            handle: Some(handle),
            rt,
        }
    }

    /// Runs the binary with `--coordinator` pointing here and the token in the environment.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--coordinator");
        all.push(&self.url);
        let out = run_with_env(&all, stdin, &[("AITBC_TOKEN", &self.token)]);
        // The token never shows, whatever the command printed.
        assert!(
            !out.stdout.contains(&self.token) && !out.stderr.contains(&self.token),
            "the token leaked: {out:?}"
        );
        out
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        // A command that got a 429 from the real limits did not pace itself: the test fails.
        if !std::thread::panicking() {
            let url = format!("{}/v1/local/limits", self.url);
            let refused = self.rt.block_on(async {
                let r = reqwest::get(&url).await.ok()?;
                r.json::<serde_json::Value>().await.ok()?["refused"].as_u64()
            });
            assert_eq!(refused.unwrap_or(0), 0, "the rate limits refused requests");
        }
        if let Some(h) = self.handle.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), h.shutdown()).await
            });
        }
    }
}

/// What a run of the binary printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs the binary with a clean AITBC environment plus `env`.
pub fn run_with_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aitbc-flow"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in [
        "AITBC_COORDINATOR_URL",
        "AITBC_TOKEN",
        "AITBC_TOKEN_FILE",
        "AITBC_API_KEY",
        "AITBC_WALLET_URL",
        "AITBC_RATE_LIMIT",
        "AITBC_SUBMIT_TIMEOUT",
        "AITBC_READ_TIMEOUT",
        "RUST_LOG",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Filters for what varies between runs: ids, times, ports, durations.
pub fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"0x[0-9a-f]{40}", "[ADDRESS]"),
        (r"[0-9a-f]{32}", "[JOB_ID]"),
        (r"alloc_[0-9a-f]+", "alloc_[ID]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?", "[TIME]"),
        (
            r#""execution_time": [0-9.e-]+"#,
            r#""execution_time": "[SECS]""#,
        ),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
    ]
}

/// A job id from an output JSON.
pub fn job_id(v: &serde_json::Value) -> String {
    v["job_id"].as_str().expect("a job_id").to_string()
}
