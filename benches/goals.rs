//! Issue 11's table in one command: the release binary timed by `/usr/bin/time` (wall, user + sys CPU,
//! peak RSS), best of 3 per case, on generated plans. Every run is checked: all steps succeeded in
//! report.json, one journal record set per step, every receipt verified.
//!
//! `cargo bench --bench goals` (`-- --runs N` for other than 3, `-- --quick` for 1,000 instead of 10,000
//! jobs). Needs `/usr/bin/time` (Debian's `time` package).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_aitbc-flow");

/// What `/usr/bin/time` measured of one process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: f64,
    cpu: f64,
    rss_mb: f64,
}

/// Runs aitbc-flow with `args` under `/usr/bin/time`, fails loudly on a non-zero exit.
fn timed(args: &[&str], env: &[(&str, &str)]) -> Sample {
    timed_program(BIN, args, env)
}

/// Runs `program` with `args` under `/usr/bin/time`, fails loudly on a non-zero exit.
fn timed_program(program: &str, args: &[&str], env: &[(&str, &str)]) -> Sample {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(out.path())
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("AITBC_COORDINATOR_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("/usr/bin/time (apt-get install time)");
    let wall = started.elapsed().as_secs_f64();
    assert!(
        status.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    // The wall clock from here: /usr/bin/time's has a resolution of 10 ms.
    Sample {
        wall,
        ..parse_time(&std::fs::read_to_string(out.path()).expect("time output"))
    }
}

fn parse_time(s: &str) -> Sample {
    let line = s.lines().last().unwrap_or_default();
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    Sample {
        wall: f[0],
        cpu: f[1] + f[2],
        rss_mb: f[3] / 1024.0,
    }
}

fn best(samples: &[Sample]) -> Sample {
    let min = |g: fn(&Sample) -> f64| samples.iter().map(g).fold(f64::INFINITY, f64::min);
    Sample {
        wall: min(|s| s.wall),
        cpu: min(|s| s.cpu),
        rss_mb: min(|s| s.rss_mb),
    }
}

/// `steps` independent `job` steps over 50 wallets.
fn jobs_plan(steps: usize) -> String {
    let mut s = String::from("version: 1\nname: bench\nsteps:\n");
    for i in 0..steps {
        s.push_str(&format!(
            "  - id: s{i}\n    job: {{job_type: inference, wallet: w{}, payment: 1, prompt: \"prompt {i}\"}}\n",
            i % 50
        ));
    }
    s
}

/// A chain: each step needs the one before.
fn chain_plan(steps: usize) -> String {
    let mut s = String::from("version: 1\nname: chain\nsteps:\n");
    for i in 0..steps {
        s.push_str(&format!(
            "  - id: s{i}\n    job: {{job_type: inference, wallet: w{}, payment: 1, prompt: \"prompt {i}\"}}\n",
            i % 50
        ));
        if i > 0 {
            s.push_str(&format!("    needs: [s{}]\n", i - 1));
        }
    }
    s
}

/// Checks a finished run: every step succeeded in report.json and its receipt was verified, and the
/// journal holds each step's submit.
fn check_run(dir: &Path, steps: usize) {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json"))
            .expect("report.json parses");
    let list = report["steps"].as_array().expect("steps");
    assert_eq!(list.len(), steps, "every step in report.json");
    for s in list {
        assert_eq!(s["state"], "succeeded", "step {}", s["id"]);
        assert_eq!(
            s["receipt"]["verified"].as_bool(),
            Some(true),
            "receipt of step {} verified",
            s["id"]
        );
    }
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).expect("journal.jsonl");
    let submitted = journal.lines().filter(|l| l.contains("\"job_id\"")).count();
    assert!(
        submitted >= steps,
        "journal: {submitted} submits for {steps} steps"
    );
}

/// The only run directory under `runs`.
fn run_dir(runs: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs)
        .expect("runs dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("report.json").exists())
        .collect();
    assert_eq!(dirs.len(), 1, "one run in {}", runs.display());
    dirs.pop().expect("a run")
}

/// How many of a run's jobs a poll found unfinished (their first `job_state` event, which is what the
/// first poll after the submit saw, is QUEUED or RUNNING): each then waited a poll delay.
fn unfinished_at_first_poll(dir: &Path) -> usize {
    let events = std::fs::read_to_string(dir.join("events.jsonl")).expect("events.jsonl");
    let mut seen = std::collections::HashSet::new();
    let mut unfinished = 0;
    for line in events.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["event"] != "job_state" {
            continue;
        }
        let job = v["job_id"].as_str().unwrap_or_default().to_string();
        if seen.insert(job) && matches!(v["state"].as_str(), Some("QUEUED" | "RUNNING")) {
            unfinished += 1;
        }
    }
    unfinished
}

struct Case {
    name: String,
    goal: &'static str,
    samples: Vec<Sample>,
    note: String,
}

/// A coordinator `serve` child (instant workers); its CPU read from /proc before it stops.
struct Serve {
    child: std::process::Child,
    url: String,
}

impl Serve {
    fn start() -> Serve {
        use std::io::BufRead;
        let mut child = Command::new(BIN)
            .args(["coordinator", "serve", "--listen", "127.0.0.1:0"])
            .args(["--token", "bench-token-0123456789abcdef"])
            .args(["--latency", "instant"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("coordinator serve");
        let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(u) = l.split("listening on ").nth(1) {
                        break u.trim().to_string();
                    }
                }
                _ => panic!("coordinator serve did not start"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Serve { child, url }
    }

    /// user + sys seconds so far and peak RSS (MB).
    fn usage(&self) -> (f64, f64) {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        let tick = 100.0; // USER_HZ on Linux
        let cpu = (f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0))
            / tick;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let hwm = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        (cpu, hwm / 1024.0)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_args<'a>(plan: &'a str, runs: &'a str, conc: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        plan,
        "--runs-dir",
        runs,
        "--concurrency",
        conc,
        "--embedded-latency",
        "instant",
        "--progress",
        "none",
        "--poll-start",
        "10ms",
        "--poll-max",
        "100ms",
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let big = if quick { 1_000 } else { 10_000 };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let write = |name: &str, text: String| {
        let p = root.join(name);
        std::fs::write(&p, text).expect("write plan");
        p.to_string_lossy().into_owned()
    };
    let big_plan = write("jobs.yaml", jobs_plan(big));
    let small_jobs = write("jobs1000.yaml", jobs_plan(1_000));
    let chain = write("chain.yaml", chain_plan(1_000));
    let small_plan = write("small.yaml", jobs_plan(12));
    let mut cases: Vec<Case> = Vec::new();
    let mut counter = 0usize;
    let mut fresh_runs = || {
        counter += 1;
        let d = root.join(format!("runs{counter}"));
        std::fs::create_dir_all(&d).expect("runs dir");
        d
    };
    let mut kept_run: Option<(PathBuf, String)> = None;

    // The `run` cases.
    let run_cases: Vec<(String, &str, &str, usize, &'static str)> = vec![
        (
            format!("{big} jobs, --concurrency 64"),
            &big_plan,
            "64",
            big,
            "≤ 1.5 s, ≤ 100 MB",
        ),
        (
            format!("{big} jobs, --concurrency 16"),
            &big_plan,
            "16",
            big,
            "as at 64",
        ),
        (
            format!("{big} jobs, --concurrency 256"),
            &big_plan,
            "256",
            big,
            "as at 64",
        ),
        (
            "1,000 jobs, --concurrency 64".into(),
            &small_jobs,
            "64",
            1_000,
            "RSS not growing with concurrency",
        ),
        (
            "chain of 1,000, --concurrency 16".into(),
            &chain,
            "16",
            1_000,
            "≤ 0.5 s",
        ),
    ];
    for (name, plan, conc, steps, goal) in run_cases {
        let mut samples = Vec::new();
        let mut unfinished = Vec::new();
        for _ in 0..runs {
            let d = fresh_runs();
            let ds = d.to_string_lossy().into_owned();
            samples.push(timed(&run_args(plan, &ds, conc), &[]));
            let dir = run_dir(&d);
            check_run(&dir, steps);
            unfinished.push(unfinished_at_first_poll(&dir).to_string());
            if steps == big && conc == "64" && kept_run.is_none() {
                kept_run = Some((d.clone(), dir.file_name().unwrap().to_string_lossy().into()));
            } else {
                let _ = std::fs::remove_dir_all(&d);
            }
        }
        // A chain waits a poll delay (`--poll-start`) for each job its first poll finds unfinished:
        // say how many there were.
        let note = if plan == chain {
            format!(
                "jobs the first poll found unfinished (each waits 10 ms), each run: {}",
                unfinished.join(", ")
            )
        } else {
            String::new()
        };
        record(
            &mut cases,
            Case {
                name,
                goal,
                samples,
                note,
            },
        );
    }

    // The runner alone against `coordinator serve`.
    {
        let mut samples = Vec::new();
        let mut note = String::new();
        let mut best_ratio = f64::INFINITY;
        for _ in 0..runs {
            let serve = Serve::start();
            let d = fresh_runs();
            let ds = d.to_string_lossy().into_owned();
            // The run cases' arguments (their polling too), less the embedded coordinator's latency:
            // the served one is given its own.
            let mut a = run_args(&big_plan, &ds, "64");
            if let Some(i) = a.iter().position(|x| *x == "--embedded-latency") {
                a.drain(i..i + 2);
            }
            a.extend(["--coordinator", &serve.url]);
            // The served coordinator is ours: no pacing to the real service's limits, no cap in flight.
            let s = timed(
                &a,
                &[
                    ("AITBC_TOKEN", "bench-token-0123456789abcdef"),
                    ("AITBC_RATE_LIMIT", "off"),
                    ("AITBC_MAX_IN_FLIGHT", "0"),
                ],
            );
            let (ccpu, crss) = serve.usage();
            check_run(&run_dir(&d), big);
            let _ = std::fs::remove_dir_all(&d);
            let ratio = s.cpu / ccpu.max(0.001);
            if ratio < best_ratio {
                best_ratio = ratio;
                note = format!(
                    "coordinator {ccpu:.2} s CPU, {crss:.0} MB; runner/coordinator CPU {ratio:.2}"
                );
            }
            samples.push(s);
        }
        record(
            &mut cases,
            Case {
                name: format!("runner alone vs `coordinator serve`, {big} jobs at 64"),
                goal: "runner CPU ≤ coordinator's",
                samples,
                note,
            },
        );
    }

    // validate. Its wall clock includes starting a process under /usr/bin/time, which the note says.
    let floor = (0..runs.max(5))
        .map(|_| timed_program("/bin/true", &[], &[]).wall)
        .fold(f64::INFINITY, f64::min);
    for (name, plan, goal) in [
        (format!("validate, {big} steps"), &big_plan, "≤ 100 ms"),
        ("validate, 12 steps".to_string(), &small_plan, "≤ 5 ms"),
    ] {
        let samples = (0..runs.max(5))
            .map(|_| timed(&["validate", plan], &[]))
            .collect();
        record(
            &mut cases,
            Case {
                name,
                goal,
                samples,
                note: format!(
                    "of which {:.1} ms is starting a process under /usr/bin/time (`/bin/true`)",
                    floor * 1000.0
                ),
            },
        );
    }

    // resume of a finished run's journal (every step already succeeded: nothing is submitted).
    if let Some((d, id)) = &kept_run {
        let ds = d.to_string_lossy().into_owned();
        let samples = (0..runs)
            .map(|_| {
                timed(
                    &[
                        "resume",
                        id,
                        "--runs-dir",
                        &ds,
                        "--embedded-latency",
                        "instant",
                        "--progress",
                        "none",
                    ],
                    &[],
                )
            })
            .collect();
        check_run(&d.join(id), big);
        record(
            &mut cases,
            Case {
                name: format!("resume of a {big}-step journal"),
                goal: "≤ 0.5 s",
                samples,
                note: String::new(),
            },
        );
    }

    // runs list over 1,000 runs: one real 12-step run, copied under 1,000 ids.
    {
        let d = fresh_runs();
        let ds = d.to_string_lossy().into_owned();
        timed(&run_args(&small_plan, &ds, "16"), &[]);
        let one = run_dir(&d);
        let name = one.file_name().unwrap().to_string_lossy().into_owned();
        let started = Instant::now();
        for i in 1..1_000 {
            let to = d.join(format!("{name}-{i:04}"));
            let st = Command::new("cp")
                .arg("-r")
                .arg(&one)
                .arg(&to)
                .status()
                .expect("cp");
            assert!(st.success());
            if started.elapsed() > Duration::from_secs(120) {
                panic!("copying runs took too long");
            }
        }
        let samples = (0..runs.max(5))
            .map(|_| timed(&["runs", "list", "--runs-dir", &ds], &[]))
            .collect();
        record(
            &mut cases,
            Case {
                name: "runs list, 1,000 runs".into(),
                goal: "≤ 100 ms",
                samples,
                note: String::new(),
            },
        );
    }

    println!(
        "best of {runs} (validate and runs list: of {}), release build, /usr/bin/time",
        runs.max(5)
    );
    println!();
    println!("| case | wall | CPU (user+sys) | peak RSS | goal | note |");
    println!("|---|---:|---:|---:|---|---|");
    for c in &cases {
        println!("{}", row(c));
    }
}

/// One line of the table.
fn row(c: &Case) -> String {
    let b = best(&c.samples);
    let wall = if b.wall < 1.0 {
        format!("{:.0} ms", b.wall * 1000.0)
    } else {
        format!("{:.2} s", b.wall)
    };
    format!(
        "| {} | {wall} | {:.2} s | {:.0} MB | {} | {} |",
        c.name, b.cpu, b.rss_mb, c.goal, c.note
    )
}

/// Keeps a case for the table and shows its line at once on stderr (a long bench shows progress).
fn record(cases: &mut Vec<Case>, c: Case) {
    eprintln!("{}", row(&c));
    cases.push(c);
}
