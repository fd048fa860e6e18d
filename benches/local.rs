//! Load benchmark of the embedded coordinator: a bounded loopback load generator against the real binary
//! (`coordinator serve --latency instant`) in its own process, so the RSS measured is the server's alone.
//!
//! Run: `cargo bench --bench local` (knobs: BENCH_CONNS, BENCH_SUBMITS, BENCH_READS, BENCH_JOBS,
//! BENCH_CAP_SECS). Prints a table; targets: ≥ 5,000 submissions/s, ≥ 20,000 status reads/s, and
//! < 100 MB RSS holding 100,000 finished jobs.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
        .args([
            "coordinator",
            "serve",
            "--latency",
            "instant",
            "--token",
            "bench",
        ])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the aitbc-flow binary starts");
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The outcome of one phase.
struct Phase {
    requests: u64,
    errors: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `total` requests over `conns` concurrent connections, stopping at `cap`.
async fn drive<F, Fut>(conns: u64, total: u64, cap: Duration, make: F) -> Phase
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let make = Arc::new(make);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, errors, make) = (next.clone(), errors.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || started.elapsed() > cap {
                    break;
                }
                let t = Instant::now();
                if !make(i).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                lat.push(t.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|&us| us as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    };
    Phase {
        requests: lat.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn client(conns: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(conns as usize)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn submit(http: &reqwest::Client, url: &str, i: u64) -> Option<String> {
    let body = json!({
        "payload": {"type": "inference", "prompt": format!("bench prompt {i}"), "model": "llama2"},
        "payment_amount": 0.05, "payment_currency": "AITBC", "buyer_address": format!("bench-{}", i % 64),
    });
    let resp = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth("bench")
        .json(&body)
        .send()
        .await
        .ok()?;
    if resp.status() != 201 {
        return None;
    }
    let v: serde_json::Value = resp.json().await.ok()?;
    v["job_id"].as_str().map(str::to_string)
}

async fn wait_all_finished(http: &reqwest::Client, url: &str, jobs: u64) -> bool {
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{url}/v1/local/ledger")).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["jobs"].as_u64() >= Some(jobs)
            && v["escrow"] == "0"
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn main() {
    let conns = env_or("BENCH_CONNS", 64);
    let submits = env_or("BENCH_SUBMITS", 20_000);
    let reads = env_or("BENCH_READS", 60_000);
    let jobs = env_or("BENCH_JOBS", 100_000);
    let cap = Duration::from_secs(env_or("BENCH_CAP_SECS", 60));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    let server = start_server();
    let pid = server.child.id();
    let url = server.url.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let http = client(conns);
        let mut up = false;
        for _ in 0..300 {
            if http.get(format!("{url}/health")).send().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "the coordinator did not start");
        let rss_idle = rss_mb(pid);

        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (h, u, sink) = (http.clone(), url.clone(), ids.clone());
        let sub = drive(conns, submits, cap, move |i| {
            let (h, u, sink) = (h.clone(), u.clone(), sink.clone());
            async move {
                match submit(&h, &u, i).await {
                    Some(id) => {
                        sink.lock().map(|mut v| v.push(id)).ok();
                        true
                    }
                    None => false,
                }
            }
        })
        .await;

        let ids: Arc<Vec<String>> = Arc::new(ids.lock().map(|v| v.clone()).unwrap_or_default());
        let (h, u, known) = (http.clone(), url.clone(), ids.clone());
        let read = drive(conns, reads, cap, move |i| {
            let (h, u, known) = (h.clone(), u.clone(), known.clone());
            async move {
                let id = &known[(i as usize * 7919) % known.len().max(1)];
                match h.get(format!("{u}/v1/jobs/{id}")).bearer_auth("bench").send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        })
        .await;

        // Fill up to `jobs` finished jobs, then measure the server's RSS.
        let (h, u) = (http.clone(), url.clone());
        let already = sub.requests - sub.errors;
        let fill = drive(conns, jobs.saturating_sub(already), Duration::from_secs(600), move |i| {
            let (h, u) = (h.clone(), u.clone());
            async move { submit(&h, &u, 1_000_000 + i).await.is_some() }
        })
        .await;
        let finished = wait_all_finished(&http, &url, jobs).await;
        let rss_full = rss_mb(pid);

        println!("local coordinator benchmark: release build, {cores} cores, instant workers, {conns} connections, reqwest load generator in a separate process");
        println!();
        println!("| phase | requests | errors | seconds | rate | p50 | p99 | target |");
        println!("|---|---:|---:|---:|---:|---:|---:|---|");
        for (name, p, target) in [("submit (POST /v1/jobs)", &sub, "≥ 5,000/s"), ("status (GET /v1/jobs/{id})", &read, "≥ 20,000/s")] {
            println!(
                "| {name} | {} | {} | {:.2} | {:.0}/s | {:.2} ms | {:.2} ms | {target} |",
                p.requests, p.errors, p.secs, p.requests as f64 / p.secs, p.p50_ms, p.p99_ms
            );
        }
        println!(
            "| fill to {jobs} jobs | {} | {} | {:.2} | {:.0}/s | {:.2} ms | {:.2} ms | |",
            fill.requests, fill.errors, fill.secs, fill.requests as f64 / fill.secs, fill.p50_ms, fill.p99_ms
        );
        println!();
        println!(
            "server RSS: {rss_idle:.1} MB idle, {rss_full:.1} MB holding {jobs} finished jobs (all finished: {finished}); target < 100 MB"
        );
    });
    drop(server);
}
