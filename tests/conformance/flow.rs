//! Running the real binary against the service, and reading what it reported.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::rc::Service;

/// The children running now (commands, `start.sh`, `coordinator serve`), killed on a signal.
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Remembers a child to kill on a signal.
pub fn track(pid: u32) {
    if let Ok(mut v) = CHILDREN.lock() {
        v.push(pid);
    }
}

/// Forgets a child that has ended.
pub fn untrack(pid: u32) {
    if let Ok(mut v) = CHILDREN.lock() {
        v.retain(|p| *p != pid);
    }
}

/// SIGKILL to every child still running.
pub fn kill_children() {
    if let Ok(v) = CHILDREN.lock() {
        for pid in v.iter() {
            // SAFETY: kill(2) of a child this process started and has not reaped, and of the process
            // group it leads when it was started in its own (`run_limited`).
            unsafe {
                libc::kill(-(*pid as i32), libc::SIGKILL);
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_aitbc-flow")
}

/// What a command did.
pub struct Out {
    /// The exit code (`-1` when killed: a timeout or a signal).
    pub code: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Out {
    /// stdout as JSON.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.stdout).map_err(|e| {
            format!(
                "stdout is not JSON ({e}); the command said:\n{}",
                self.show()
            )
        })
    }

    /// The exit code and the ends of both streams, for a failure message (of a report on stdout,
    /// only its status and issues).
    pub fn show(&self) -> String {
        let stdout = match serde_json::from_str::<Value>(&self.stdout) {
            Ok(r) if r.get("report_version").is_some() => format!(
                "a report: status {}, exit_code {}, issues {}",
                r["status"],
                r["exit_code"],
                Report(r.clone())
                    .issues()
                    .iter()
                    .map(|i| format!("\n  {i}"))
                    .collect::<String>()
            ),
            _ => clip(&self.stdout),
        };
        format!(
            "exit {} after {:.1}s\nstdout: {stdout}\nstderr: {}",
            self.code,
            self.elapsed.as_secs_f64(),
            clip(&self.stderr)
        )
    }

    /// stdout and stderr together (to look for words).
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= 1500 {
        return s.to_string();
    }
    let mut cut = s.len() - 1500;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &s[cut..])
}

/// A command of the binary under test, aimed at the service.
pub struct Flow {
    cmd: Command,
    stdin: Option<String>,
    limit: Duration,
}

impl Flow {
    /// `aitbc-flow ARGS` with the coordinator, the client token and the wallet URL in its environment
    /// (and no other `AITBC_*` setting of the caller's), in `cwd`.
    pub fn new<I, S>(svc: &Service, cwd: &Path, args: I) -> Flow
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut cmd = Command::new(bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AITBC_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env_remove("RUST_LOG")
            .env("AITBC_COORDINATOR_URL", svc.paths.url())
            .env("AITBC_TOKEN", &svc.token)
            .env("AITBC_WALLET_URL", svc.paths.wallet_url())
            .args(args.into_iter().map(Into::into))
            .current_dir(cwd);
        Flow {
            cmd,
            stdin: None,
            limit: Duration::from_secs(120),
        }
    }

    /// Sets a variable.
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Flow {
        self.cmd.env(k, v);
        self
    }

    /// Unsets a variable.
    pub fn unset(mut self, k: &str) -> Flow {
        self.cmd.env_remove(k);
        self
    }

    /// Feeds `text` on stdin.
    pub fn stdin(mut self, text: impl Into<String>) -> Flow {
        self.stdin = Some(text.into());
        self
    }

    /// Kills the command after `d` (default 120 s).
    pub fn limit(mut self, d: Duration) -> Flow {
        self.limit = d;
        self
    }

    /// Starts it and leaves it running (stdout and stderr discarded); [`untrack`] it once reaped.
    pub fn spawn(mut self) -> Result<Child, String> {
        let child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin()))?;
        track(child.id());
        Ok(child)
    }

    /// Runs it to the end (or the time limit).
    pub fn run(mut self) -> Out {
        run_limited(&mut self.cmd, self.stdin.take(), self.limit)
    }
}

/// Runs `cmd` with `stdin`, killing it (and its process group: `start.sh` starts children) after
/// `limit`.
pub fn run_limited(cmd: &mut Command, stdin: Option<String>, limit: Duration) -> Out {
    use std::os::unix::process::CommandExt;
    let start = Instant::now();
    let child = cmd
        .process_group(0)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Out {
                code: -1,
                stdout: String::new(),
                stderr: format!("cannot start {cmd:?}: {e}"),
                elapsed: start.elapsed(),
            };
        }
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let pid = child.id();
    track(pid);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        untrack(pid);
        let _ = tx.send(out);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(o)) => Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            elapsed: start.elapsed(),
        },
        Ok(Err(e)) => Out {
            code: -1,
            stdout: String::new(),
            stderr: format!("waiting for {cmd:?}: {e}"),
            elapsed: start.elapsed(),
        },
        Err(_) => {
            // SAFETY: kill(2) of the process group of the child this function started.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            let o = rx
                .recv_timeout(Duration::from_secs(10))
                .ok()
                .and_then(Result::ok);
            Out {
                code: -1,
                stdout: o
                    .as_ref()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default(),
                stderr: format!(
                    "killed after {limit:?} (it did not finish); stderr: {}",
                    o.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                        .unwrap_or_default()
                ),
                elapsed: start.elapsed(),
            }
        }
    }
}

/// A check's own folder under `$RC/work`, made empty.
pub fn workdir(svc: &Service, name: &str) -> PathBuf {
    let d = svc.paths.rc.join("work").join(name.replace('/', "-"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a work folder");
    d
}

/// The plans the suite itself needs (`tests/conformance/plans/NAME`).
pub fn suite_plan(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/plans")
        .join(name)
}

/// The example plans (`plans/*.yaml`), sorted.
pub fn example_plans() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("plans"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                    .collect()
            })
            .unwrap_or_default();
    v.sort();
    v
}

/// `run PLAN --runs-dir DIR/runs --output json -q EXTRA…` in `dir`.
pub fn run_plan(svc: &Service, dir: &Path, plan: &Path, extra: &[&str]) -> Flow {
    let mut args: Vec<OsString> = vec!["run".into(), plan.into()];
    args.extend(["--runs-dir", "runs", "--output", "json", "-q"].map(OsString::from));
    args.extend(extra.iter().map(OsString::from));
    Flow::new(svc, dir, args)
}

/// What a run's report says, read for the checks.
pub struct Report(pub Value);

impl Report {
    /// The steps.
    pub fn steps(&self) -> Vec<&Value> {
        self.0["steps"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        self.0["run_id"].as_str().unwrap_or("")
    }

    /// Every issue, the run's and each step's, as `step: text`.
    pub fn issues(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0["issues"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| format!("run: {s}"))
                    .collect()
            })
            .unwrap_or_default();
        for s in self.steps() {
            for i in s["issues"].as_array().into_iter().flatten() {
                v.push(format!(
                    "{}: {}",
                    s["id"].as_str().unwrap_or("?"),
                    i.as_str().unwrap_or("")
                ));
            }
        }
        v
    }

    /// The issues of the steps that name `job`, and the run's.
    pub fn issues_of_job(&self, job: &str) -> Vec<String> {
        let mut v: Vec<String> = self.0["issues"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for s in self.steps().into_iter().filter(|s| s["job_id"] == job) {
            v.extend(
                s["issues"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string),
            );
        }
        v
    }

    /// The job ids the steps name, with their step ids, each once.
    pub fn jobs(&self) -> Vec<(String, String)> {
        let mut seen = std::collections::BTreeMap::new();
        for s in self.steps() {
            if let Some(j) = s["job_id"].as_str() {
                seen.entry(j.to_string())
                    .or_insert_with(|| s["id"].as_str().unwrap_or("?").to_string());
            }
        }
        seen.into_iter().map(|(j, s)| (s, j)).collect()
    }

    /// Attempts that a 429 ended.
    pub fn rate_limited_attempts(&self) -> Vec<String> {
        let mut v = Vec::new();
        for s in self.steps() {
            for a in s["attempts"].as_array().into_iter().flatten() {
                let e = a["error"].as_str().unwrap_or("");
                if e.contains("rate limited") || e.contains("429") {
                    v.push(format!("{}: {e}", s["id"].as_str().unwrap_or("?")));
                }
            }
        }
        v
    }
}
