//! Benchmark of the executor: N independent `job` steps (submit → wait → fetch) against the embedded
//! coordinator with instant workers, in this process over loopback HTTP, compared with the same HTTP
//! calls made directly at the same concurrency. Prints a table.
//!
//! `cargo bench --bench run -- [STEPS] [CONCURRENCY]` (defaults 10000 and 64).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aitbc_flow::api::{CURRENCY, JobCreate, JobId};
use aitbc_flow::client::Coordinator;
use aitbc_flow::client::config::{ClientConfig, Pacing, Secret};
use aitbc_flow::client::http::HttpCoordinator;
use aitbc_flow::exec::RunOptions;
use aitbc_flow::exec::session::run_with_reports;
use aitbc_flow::money::Money;
use aitbc_flow::report::terminal::Mode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

// The same allocator as the `aitbc-flow` binary, so the figures are the CLI's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A `coordinator serve` child with instant workers, so the runner's memory is measured alone.
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

fn plan_text(steps: usize, concurrency: usize) -> String {
    let mut s =
        format!("version: 1\nname: bench\ndefaults:\n  concurrency: {concurrency}\nsteps:\n");
    for i in 0..steps {
        s.push_str(&format!(
            "  - id: s{i}\n    job: {{job_type: inference, wallet: w{}, payment: 1, prompt: \"prompt {i}\"}}\n",
            i % 8
        ));
    }
    s
}

async fn client_for(url: &str, token: &str) -> HttpCoordinator {
    let mut c = ClientConfig::for_url(url).expect("url");
    c.token = Some(Secret::new(token));
    c.pacing = Pacing::off();
    HttpCoordinator::new(&c).expect("client")
}

/// The same calls a `job` step makes, without the runner: balance, submit, poll, result.
async fn direct(coord: Arc<HttpCoordinator>, steps: usize, concurrency: usize) -> Duration {
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..steps {
        let permit = sem.clone().acquire_owned().await.expect("permit");
        let coord = coord.clone();
        tasks.spawn(async move {
            let wallet = format!("d{}", i % 8);
            coord.balance(&wallet).await.expect("balance");
            let mut payload = serde_json::Map::new();
            payload.insert("type".into(), json!("inference"));
            payload.insert("prompt".into(), json!(format!("prompt {i}")));
            payload.insert("client_ref".into(), json!(format!("direct/{i}")));
            let body = JobCreate {
                payload,
                payment_amount: Some(Money::from_int(1)),
                payment_currency: Some(CURRENCY.into()),
                buyer_address: Some(wallet),
                ..JobCreate::default()
            };
            let key = format!("direct-{i}");
            let (view, _) = coord.submit(&body, Some(&key)).await.expect("submit");
            let id: JobId = view.job_id;
            let mut pause = Duration::from_millis(10);
            loop {
                let v = coord.job(&id).await.expect("poll");
                if v.state.is_final() {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            coord.result(&id).await.expect("result");
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    started.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let steps: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let plan_path = tmp.path().join("bench.yaml");
    std::fs::write(&plan_path, plan_text(steps, concurrency)).expect("write plan");

    let load_started = Instant::now();
    let plan = aitbc_flow::plan::load(&plan_path, &Default::default())
        .unwrap_or_else(|d| panic!("plan does not load: {}", d[0]));
    let load_time = load_started.elapsed();
    let plan = Arc::new(plan);

    let rss_before = rss_kb("VmRSS:");
    let serve = Serve::start();
    let (runner_wall, report, rss_after_runner) = rt.block_on(async {
        let coord = Arc::new(client_for(&serve.url, "bench").await);
        let mut options = RunOptions::new("bench", tmp.path().join("runs/bench"));
        options.poll = (Duration::from_millis(10), Duration::from_millis(100));
        options.embedded = true;
        let started = Instant::now();
        let finished = run_with_reports(
            plan.clone(),
            coord,
            options,
            Mode::Quiet,
            CancellationToken::new(),
        )
        .await
        .expect("run");
        let wall = started.elapsed();
        let rss = rss_kb("VmHWM:");
        (wall, finished.report, rss)
    });
    drop(serve);
    assert_eq!(
        report.totals.succeeded as usize, steps,
        "every step succeeds"
    );

    let serve = Serve::start();
    let direct_wall = rt.block_on(async {
        let coord = Arc::new(client_for(&serve.url, "bench").await);
        direct(coord, steps, concurrency).await
    });
    drop(serve);

    let per_step_runner = runner_wall.as_secs_f64() * 1000.0 / steps as f64;
    let per_step_direct = direct_wall.as_secs_f64() * 1000.0 / steps as f64;
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| steps (independent `job` steps) | {steps} |");
    println!("| concurrency | {concurrency} |");
    println!(
        "| plan load + check | {:.1} ms |",
        load_time.as_secs_f64() * 1000.0
    );
    println!("| runner wall time | {:.2} s |", runner_wall.as_secs_f64());
    println!(
        "| direct HTTP calls wall time | {:.2} s |",
        direct_wall.as_secs_f64()
    );
    println!("| runner per step (wall / steps) | {per_step_runner:.3} ms |");
    println!("| direct per step (wall / steps) | {per_step_direct:.3} ms |");
    println!(
        "| runner overhead per step | {:.3} ms |",
        per_step_runner - per_step_direct
    );
    println!(
        "| runner peak RSS (coordinator in another process) | {:.1} MB |",
        rss_after_runner as f64 / 1024.0
    );
    println!(
        "| RSS before the run (bench binary, runtime) | {:.1} MB |",
        rss_before as f64 / 1024.0
    );
}
