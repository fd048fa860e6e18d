//! Benchmark of report.html for big runs: its size, the time to write it, and the time headless
//! Chromium takes to open it and draw it. Two reports of N steps (default 10,000):
//!
//! - **run**: a real run of N independent `job` steps on the embedded coordinator (instant workers,
//!   in another process), its report.html as the run wrote it;
//! - **worst case**: a report made up to be as heavy as a run can make one — every step with long
//!   issues, advice, a long output and 30 failed attempts, a third of them failed, chained so that
//!   the graph has N levels.
//!
//! For each it prints a table: bytes, the render in Rust, then in Chromium (over the DevTools
//! protocol, a new page per load) the time from navigation to the load event and to the page's script
//! having drawn everything (`data-rendered`), and the elements in the page after drawing (the
//! timeline and the table draw the rows in view only). Median of 3 loads; the browser's own start is
//! timed apart.
//!
//! `cargo bench --bench report -- [STEPS]` (Chromium: `chromium` on the PATH, or AITBC_CHROMIUM).

#[path = "../tests/support/browser.rs"]
mod browser;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aitbc_flow::client::config::{ClientConfig, Pacing, Secret};
use aitbc_flow::client::http::HttpCoordinator;
use aitbc_flow::exec::RunOptions;
use aitbc_flow::exec::session::run_with_reports;
use aitbc_flow::model::{Attempt, StepReport, StepState};
use aitbc_flow::report::Report;
use aitbc_flow::report::terminal::Mode;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Serve {
    child: std::process::Child,
    url: String,
}

impl Serve {
    fn start() -> Serve {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
            .args([
                "coordinator",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token",
                "bench",
            ])
            .args(["--latency", "instant", "--workers", "256"])
            .stderr(std::process::Stdio::piped())
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
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real run of `steps` independent job steps; its report.
fn real_run(steps: usize, dir: &std::path::Path) -> (Report, std::path::PathBuf, Duration) {
    let mut text =
        String::from("version: 1\nname: bench-report\ndefaults:\n  concurrency: 64\nsteps:\n");
    for i in 0..steps {
        text.push_str(&format!(
            "  - id: s{i}\n    job: {{job_type: inference, wallet: w{}, payment: 1, prompt: \"prompt {i}\"}}\n",
            i % 8
        ));
    }
    let plan_path = dir.join("bench.yaml");
    std::fs::write(&plan_path, text).expect("write plan");
    let plan = Arc::new(
        aitbc_flow::plan::load(&plan_path, &Default::default())
            .unwrap_or_else(|d| panic!("plan does not load: {}", d[0])),
    );
    let serve = Serve::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let run_dir = dir.join("runs/bench");
    let started = Instant::now();
    let report = rt.block_on(async {
        let mut c = ClientConfig::for_url(&serve.url).expect("url");
        c.token = Some(Secret::new("bench"));
        c.pacing = Pacing::off();
        let coord = Arc::new(HttpCoordinator::new(&c).expect("client"));
        let mut options = RunOptions::new("bench", &run_dir);
        options.poll = (Duration::from_millis(10), Duration::from_millis(100));
        options.embedded = true;
        run_with_reports(plan, coord, options, Mode::Quiet, CancellationToken::new())
            .await
            .expect("run")
            .report
    });
    (report, run_dir.join("report.html"), started.elapsed())
}

/// The heaviest report a run of `steps` steps can make.
fn worst_case(steps: usize) -> Report {
    let long = |what: &str, n: usize| -> String {
        std::iter::repeat_n(format!("{what} <with> \"quotes\" & ünïcödé; "), n).collect()
    };
    let mut out = Vec::with_capacity(steps);
    for i in 0..steps {
        let mut st = StepReport::blank(&format!("summarize[tone=formal,part={i}]"), "job");
        st.state = match i % 3 {
            0 => StepState::Failed,
            1 => StepState::Succeeded,
            _ => StepState::Cancelled,
        };
        if i > 0 {
            st.needs = vec![format!("summarize[tone=formal,part={}]", i - 1)];
        }
        st.started_at = Some("2026-12-01T10:00:01.000Z".into());
        st.finished_at = Some("2026-12-01T10:59:59.000Z".into());
        st.outcome.job_id = Some("ea05c15ab4f94d369c35d96c8fc39ac5".parse().expect("id"));
        st.outcome.wallet = Some("trading-wallet".into());
        st.outcome.payment = Some(aitbc_flow::money::Money::from_int(500));
        st.outcome.summary = long("summary", 20);
        st.outcome.issues = (0..8).map(|_| long("issue", 30)).collect();
        st.outcome.recommendations = (0..5).map(|_| long("advice", 20)).collect();
        st.outcome.result = Some(serde_json::Value::String(long("output", 400)));
        st.attempts = (0..30)
            .map(|k| Attempt {
                number: k + 1,
                started_at: "2026-12-01T10:00:01.000Z".into(),
                duration_ms: 1000,
                error: Some(long("503 Service Unavailable", 10)),
                delay_ms: Some(100),
            })
            .collect();
        out.push(st);
    }
    let mut r = aitbc_flow::report::Report {
        report_version: 1,
        run_id: "worst".into(),
        plan: "worst-case".into(),
        plan_path: "worst.yaml".into(),
        plan_hash: "0".repeat(64),
        runner_version: env!("CARGO_PKG_VERSION").into(),
        plan_git: None,
        coordinator: "http://127.0.0.1:1".into(),
        embedded_coordinator: false,
        status: aitbc_flow::report::RunStatus::Failed,
        exit_code: 1,
        started_at: "2026-12-01T10:00:00.000Z".into(),
        finished_at: Some("2026-12-01T11:00:00.000Z".into()),
        issues: vec!["step failed; stopping the run (fail-fast)".into()],
        vars: serde_json::Value::Null,
        inputs: Default::default(),
        steps: out,
        totals: Default::default(),
    };
    r.totals.failed = steps.div_ceil(3) as u32;
    r
}

struct Load {
    to_load: Duration,
    to_drawn: Duration,
    script_ms: f64,
    elements: u64,
    errors: usize,
}

fn load(exe: &std::path::Path, path: &std::path::Path) -> Load {
    let mut b = browser::Browser::start(exe, 1280, 1000).expect("chromium");
    let url = format!("file://{}", path.display());
    let t = Instant::now();
    b.open(&url).expect("open");
    let to_load = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let script_ms = loop {
        let v = b
            .eval("document.documentElement.dataset.rendered || null")
            .expect("eval");
        if let Some(ms) = v.as_str().and_then(|s| s.parse::<f64>().ok()) {
            break ms;
        }
        assert!(Instant::now() < deadline, "the page never finished drawing");
        std::thread::sleep(Duration::from_millis(5));
    };
    let to_drawn = t.elapsed();
    let elements = b
        .eval("document.getElementsByTagName('*').length")
        .expect("eval")
        .as_u64()
        .unwrap_or(0);
    Load {
        to_load,
        to_drawn,
        script_ms,
        elements,
        errors: b.js_errors().len(),
    }
}

fn measure(name: &str, report: &Report, path: &std::path::Path, exe: Option<&std::path::Path>) {
    let t = Instant::now();
    let page = aitbc_flow::report::html::render(report);
    let render = t.elapsed();
    std::fs::write(path, &page).expect("write");
    println!("\n{name}: {} steps", report.steps.len());
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| report.html size | {:.2} MB ({} bytes) |",
        page.len() as f64 / 1e6,
        page.len()
    );
    println!(
        "| render in Rust (html::render) | {:.1} ms |",
        render.as_secs_f64() * 1000.0
    );
    let Some(exe) = exe else {
        println!("| Chromium | not found: loads not measured |");
        return;
    };
    let mut loads: Vec<Load> = (0..3).map(|_| load(exe, path)).collect();
    loads.sort_by_key(|l| l.to_drawn);
    let m = &loads[1];
    println!(
        "| Chromium: navigation → load event (median of 3) | {:.0} ms |",
        m.to_load.as_secs_f64() * 1000.0
    );
    println!(
        "| Chromium: navigation → everything drawn (median of 3) | {:.0} ms |",
        m.to_drawn.as_secs_f64() * 1000.0
    );
    println!(
        "| Chromium: slowest of 3, navigation → drawn | {:.0} ms |",
        loads[2].to_drawn.as_secs_f64() * 1000.0
    );
    println!(
        "| page's clock when drawn (performance.now) | {:.0} ms |",
        m.script_ms
    );
    println!("| elements in the page after drawing | {} |", m.elements);
    println!("| JavaScript errors | {} |", m.errors);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let steps: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let exe = browser::find();
    let tmp = tempfile::tempdir().expect("tempdir");
    if let Some(exe) = &exe {
        let t = Instant::now();
        drop(browser::Browser::start(exe, 1280, 1000).expect("chromium"));
        println!(
            "Chromium start and close, for reference: {:.0} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    let (report, written, wall) = real_run(steps, tmp.path());
    assert_eq!(
        report.totals.succeeded as usize, steps,
        "every step succeeds"
    );
    println!(
        "real run of {steps} steps: {:.1} s; report.html as written by the run: {} bytes",
        wall.as_secs_f64(),
        std::fs::metadata(&written).map(|m| m.len()).unwrap_or(0)
    );
    measure("run", &report, &written, exe.as_deref());
    let worst = worst_case(steps);
    measure(
        "worst case",
        &worst,
        &tmp.path().join("worst.html"),
        exe.as_deref(),
    );
}
