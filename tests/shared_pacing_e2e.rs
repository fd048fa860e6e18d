//! Pacing shared across processes, end to end: two `run` processes of one run folder against one
//! `coordinator serve` with its rate limits on (scaled down: a window of 3 s). Each process alone
//! would take the whole limit; together they stay within it — no 429 — and so need the least time the
//! limits allow for the jobs of both (`limits::RateLimits::least_time_for_jobs`). Two run folders do
//! not share their windows, and collect 429s, which shows that the check can fail.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use aitbc_flow::limits::RateLimits;
use support::{PlanDir, Serve, run_args};

const SPEC: &str = "submit=10,read=40,cancel=10,allocate=4,login=4,window=3s";

fn plan(jobs: usize) -> String {
    let mut s = format!("version: 1\nname: paced\ndefaults:\n  concurrency: {jobs}\nsteps:\n");
    for i in 0..jobs {
        s.push_str(&format!(
            "  - id: s{i}\n    job: {{job_type: inference, wallet: w, payment: 1, prompt: \"prompt {i}\"}}\n"
        ));
    }
    s
}

/// Two runs of 15 jobs each, started together, into `runs_a` and `runs_b`; their exit codes and
/// how long both took.
fn two_runs(
    serve: &Serve,
    dir: &PlanDir,
    runs_a: &std::path::Path,
    runs_b: &std::path::Path,
) -> (Vec<Option<i32>>, Duration) {
    let started = Instant::now();
    let children: Vec<_> = [runs_a, runs_b]
        .iter()
        .map(|runs| {
            let mut cmd = serve.command();
            cmd.args(run_args(&dir.plan(), runs))
                .env("AITBC_RATE_LIMIT", SPEC)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut codes = Vec::new();
    for c in children {
        let pid = c.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(c.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(out) => {
                let out = out.unwrap();
                if out.status.code() != Some(0) {
                    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                }
                codes.push(out.status.code());
            }
            Err(_) => {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
                panic!("a run did not finish within 120 s");
            }
        }
    }
    (codes, started.elapsed())
}

#[test]
fn two_runs_of_one_run_folder_share_the_rate_limit_and_get_no_429() {
    let serve = Serve::start(&["--rate-limits", SPEC, "--workers", "256"]);
    let dir = PlanDir::new(&plan(15));
    let (codes, elapsed) = two_runs(&serve, &dir, &dir.runs(), &dir.runs());
    assert_eq!(codes, vec![Some(0), Some(0)]);
    // Measured at the coordinator: every submit of both got through, none was refused (Serve's drop
    // checks the 429s too), and no window held more than the limit.
    let limits = serve.get("/v1/local/limits");
    assert_eq!(limits["refused"], 0, "{limits}");
    assert_eq!(limits["admitted"]["submit"], 30, "{limits}");
    let most = limits["most_in_a_window"]["submit"].as_u64().unwrap();
    assert!(most <= 10, "{limits}");
    // Together, the least time the limits allow for 30 jobs (each alone would need 3 s for 15).
    let t_min = RateLimits::parse(SPEC).unwrap().least_time_for_jobs(30);
    assert_eq!(t_min, Duration::from_secs(6));
    println!(
        "two runs of 15 jobs, {SPEC}: {elapsed:?} (T_min {t_min:?}), most submits in a window {most}"
    );
    assert!(elapsed >= t_min, "{elapsed:?}");
}

#[test]
fn two_run_folders_do_not_share_and_collect_429s() {
    let mut serve = Serve::start(&["--rate-limits", SPEC, "--workers", "256"]);
    serve.allow_refusals = true;
    let dir = PlanDir::new(&plan(15));
    let other = tempfile::tempdir().unwrap();
    let _ = two_runs(&serve, &dir, &dir.runs(), other.path());
    assert!(serve.refused() > 0, "the limits refused nothing");
}
