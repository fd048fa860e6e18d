//! Helpers shared by the end-to-end tests: the real binary, a `coordinator serve` child process, plans in
//! temporary folders, and a redactor for snapshots of reports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_aitbc-flow")
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `coordinator serve` child on a free port; killed on drop.
pub struct Serve {
    pub child: Child,
    pub url: String,
    pub token: String,
    /// The test provokes 429s on purpose: do not fail it for them.
    pub allow_refusals: bool,
    /// The pacing folder of the runs of [`Serve::command`] (`AITBC_FLOW_PACING_DIR`), as if they were
    /// the runs of one user, kept out of the user's own.
    pub pacing: tempfile::TempDir,
}

impl Serve {
    /// Starts `coordinator serve` with these extra flags and waits until it listens. The real service's
    /// rate limits are on (`--rate-limits real`) unless the flags say otherwise, so that a pacing
    /// regression shows as a 429 in every end-to-end test.
    pub fn start(extra: &[&str]) -> Serve {
        let token = "e2e-token".to_string();
        let limits: &[&str] = if extra.contains(&"--rate-limits") {
            &[]
        } else {
            &["--rate-limits", "real"]
        };
        let mut child = Command::new(bin())
            .args([
                "coordinator",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token",
                &token,
            ])
            // Jobs finish at once unless the flags give another latency.
            .args(if extra.contains(&"--latency") {
                &[][..]
            } else {
                &["--latency", "instant"][..]
            })
            .args(limits)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coordinator serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut url = None;
        while Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line.split("listening on ").nth(1) {
                        url = Some(u.trim().to_string());
                        break;
                    }
                }
                _ => break,
            }
        }
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let url = url.expect("coordinator serve did not report its address");
        Serve {
            child,
            url,
            token,
            allow_refusals: false,
            pacing: tempfile::tempdir().expect("pacing dir"),
        }
    }

    /// A coordinator whose wallet `w` holds 8 AITBC (no faucet) and whose job routes answer 1.5 s
    /// late: two runs paying 5 from `w` each check the balance while the first payment is on its way
    /// (`tests/reservations_e2e.rs`).
    pub fn enough_for_one() -> Serve {
        Serve::start(&[
            "--fund",
            "w=8",
            "--no-faucet",
            "--fault-latency",
            "1500",
            "--fault-path",
            "/v1/jobs",
        ])
    }

    /// The submits the coordinator's throttle let through so far.
    pub fn submits_seen(&self) -> u64 {
        self.get("/v1/local/limits")["admitted"]["submit"]
            .as_u64()
            .unwrap_or(0)
    }

    /// GET a JSON document from the coordinator.
    pub fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.url);
        let token = self.token.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Injected faults hit the test's own requests too: ask again until a 2xx (bounded).
        rt.block_on(async move {
            let client = reqwest::Client::new();
            for _ in 0..100 {
                let sent = client
                    .get(&url)
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                if let Ok(r) = sent
                    && r.status().is_success()
                    && let Ok(v) = r.json::<Value>().await
                {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("GET {url} kept failing");
        })
    }

    /// Requests the coordinator's rate limits refused so far (429s).
    pub fn refused(&self) -> u64 {
        self.get("/v1/local/limits")["refused"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Every job of our client, newest first.
    pub fn jobs(&self) -> Vec<Value> {
        self.get("/v1/jobs?limit=100000")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A `run` command aimed at this coordinator.
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("AITBC_COORDINATOR_URL", &self.url)
            .env("AITBC_TOKEN", &self.token)
            .env("AITBC_FLOW_PACING_DIR", self.pacing.path());
        c
    }

    /// `aitbc-flow run` of the folder's plan against this coordinator, with the usual flags
    /// ([`run_args`]) and `extra`, in at most a minute.
    pub fn run(&self, dir: &PlanDir, extra: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(run_args(&dir.plan(), &dir.runs())).args(extra);
        output_within(cmd, Duration::from_secs(60))
    }
}

impl Serve {
    /// `aitbc-flow resume RUN-ID` of the folder's runs against this coordinator (fast polling, JSON
    /// report on stdout), in at most a minute.
    pub fn resume(&self, dir: &PlanDir, run_id: &str) -> Output {
        let mut cmd = self.command();
        cmd.args([
            "resume",
            run_id,
            "--runs-dir",
            dir.runs().to_str().unwrap_or_default(),
            "--poll-start",
            "20ms",
            "--poll-max",
            "100ms",
            "--output",
            "json",
        ]);
        output_within(cmd, Duration::from_secs(60))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // A run that got a 429 from the real limits paced itself wrongly: every test that used this
        // coordinator fails then (unless it provokes them on purpose and says so).
        let refused = if self.allow_refusals || std::thread::panicking() {
            0
        } else {
            self.refused()
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        assert_eq!(
            refused, 0,
            "the coordinator's rate limits refused {refused} requests: the client did not pace itself"
        );
    }
}

/// A temporary folder with a plan in it.
pub struct PlanDir {
    pub dir: tempfile::TempDir,
}

impl PlanDir {
    /// Writes `plan.yaml` with this text.
    pub fn new(plan: &str) -> PlanDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plan.yaml"), plan).unwrap();
        PlanDir { dir }
    }
    pub fn plan(&self) -> PathBuf {
        self.dir.path().join("plan.yaml")
    }
    pub fn runs(&self) -> PathBuf {
        self.dir.path().join("runs")
    }
    /// The only run directory.
    pub fn run_dir(&self) -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.runs())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        dirs.sort();
        dirs.pop().expect("a run directory")
    }
}

/// The usual flags of a test run: fast polling, quiet terminal, JSON report on stdout.
pub fn run_args<'a>(plan: &'a Path, runs: &'a Path) -> Vec<String> {
    vec![
        "run".into(),
        plan.display().to_string(),
        "--runs-dir".into(),
        runs.display().to_string(),
        "--poll-start".into(),
        "20ms".into(),
        "--poll-max".into(),
        "100ms".into(),
        "--seed".into(),
        "1".into(),
        "--output".into(),
        "json".into(),
    ]
}

/// Runs a command with a time limit; panics when it hangs.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// Replaces what varies between runs (ids, times, durations, ports, temp paths) with placeholders.
pub fn redact(v: &mut Value) {
    const KEYS: [&str; 15] = [
        "run_id",
        "plan_hash",
        "started_at",
        "finished_at",
        "duration_ms",
        "execution_time",
        "wall_time_ms",
        "coordinator",
        "plan_path",
        "receipt",
        "requested_at",
        "expires_at",
        "saved",
        "allocation_id",
        "allocated_at",
    ];
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if KEYS.contains(&k.as_str()) && !val.is_null() {
                    *val = Value::String(format!("[{k}]"));
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        Value::String(s) => {
            let re = regex_lite_hex32(s);
            *s = re;
        }
        _ => {}
    }
}

/// Replaces every run of 32 lowercase hex characters (a job id) with `[job]`.
pub fn regex_lite_hex32(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let run = b[i..]
            .iter()
            .take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            .count();
        if run == 32 {
            out.push_str("[job]");
            i += 32;
        } else if run > 0 {
            out.push_str(&s[i..i + run]);
            i += run;
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Validates a report against the committed report schema; returns the errors.
pub fn schema_errors(report: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/report.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// The report a `run --output json` printed on stdout (the panic shows stderr when there is none).
pub fn report_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The step `id` of a report.
pub fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id}: {report}"))
}

/// Starts `cmd` (a run against `serve`), sends it SIGINT once the coordinator has a job (and 200 ms
/// more, so the submit's answer is journaled), and returns its output; bounded at 30 s each way.
pub fn interrupt_once_submitted(serve: &Serve, mut cmd: Command) -> Output {
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while serve.jobs().is_empty() {
        assert!(Instant::now() < deadline, "the job was never submitted");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the runner did not stop after SIGINT")
        .unwrap()
}
