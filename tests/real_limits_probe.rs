//! A probe of the real upstream coordinator's login and rate limits (the facts `docs/decisions.md`
//! records), run by hand against an instance on 127.0.0.1 (`../shared/realcoord`):
//!
//! ```sh
//! AITBC_REAL_URL=http://127.0.0.1:8213 cargo test --test real_limits_probe -- --ignored --nocapture
//! ```
//!
//! It logs in with a fresh key (`/v1/auth/nonce`, EIP-191, `/v1/login`), checks a rotated token file is
//! picked up after a 401, then measures the limits with payment-free requests (unpaid submits and job
//! reads do not touch the chain, so they do not block the service): a token bucket's schedule collects
//! 429s, the client's sliding-window pacing none. About three minutes (two windows are waited out).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aitbc_flow::api::{JobCreate, JobId, ListQuery};
use aitbc_flow::auth::WalletKey;
use aitbc_flow::client::config::{ClientConfig, Pacing, Secret};
use aitbc_flow::client::http::HttpCoordinator;
use aitbc_flow::client::{ClientError, Coordinator};

fn client(url: &str, token: Option<&str>, pacing: Pacing) -> HttpCoordinator {
    let mut c = ClientConfig::for_url(url).unwrap();
    c.token = token.map(Secret::new);
    c.pacing = pacing;
    // Never more than 8 at once: a couple of hundred concurrent requests wedge the service.
    c.max_in_flight = Some(8);
    HttpCoordinator::new(&c).unwrap()
}

/// Sends `count` reads of `job` at the times `schedule` gives (from the start); returns the 429s and
/// the time of the last answer.
async fn reads(
    c: Arc<HttpCoordinator>,
    job: JobId,
    schedule: impl Fn(usize) -> Duration,
    count: usize,
) -> (usize, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        let at = schedule(i);
        let c = c.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(at.saturating_sub(start.elapsed())).await;
            let r = c.job(&job).await;
            if let Err(e) = &r
                && !matches!(e, ClientError::RateLimited { .. })
            {
                panic!("a read failed otherwise: {e}");
            }
            matches!(r, Err(ClientError::RateLimited { .. }))
        }));
    }
    let mut limited = 0;
    for t in tasks {
        limited += usize::from(t.await.unwrap());
    }
    (limited, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real coordinator: set AITBC_REAL_URL"]
async fn the_real_service_logs_in_and_limits_by_sliding_window() {
    let Ok(url) = std::env::var("AITBC_REAL_URL") else {
        println!("skipped: AITBC_REAL_URL is not set");
        return;
    };
    // Login.
    let key = WalletKey::random();
    let session = client(&url, None, Pacing::real_service())
        .login(&key)
        .await
        .expect("login");
    let ttl = session.expires_at.unwrap() - chrono::Utc::now();
    println!(
        "login as {}: user {:?}, token valid {} s",
        session.address,
        session.user_id,
        ttl.num_seconds()
    );
    let token = session.token.expose().to_string();

    // A 401 with a stale token, then the rotated file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "stale").unwrap();
    let mut c = ClientConfig::for_url(&url).unwrap();
    c.token = Some(Secret::new("stale"));
    c.token_file = Some(path.clone());
    let rotating = HttpCoordinator::new(&c).unwrap();
    std::fs::write(&path, &token).unwrap();
    let listed = rotating.list(&ListQuery::default()).await;
    println!(
        "after a 401 with a rotated token file: {:?}",
        listed.map(|l| l.items.len())
    );

    // One unpaid job to read.
    let unpaced = Arc::new(client(&url, Some(&token), Pacing::off()));
    let mut payload = serde_json::Map::new();
    payload.insert("type".into(), "inference".into());
    payload.insert("prompt".into(), "probe".into());
    let body = JobCreate {
        payload,
        ..JobCreate::default()
    };
    let (view, _) = unpaced.submit(&body, None).await.expect("submit");
    let job = view.job_id;

    // The old client's schedule: a bucket of 200 that refills at 200 a minute.
    let (limited, took) = reads(
        unpaced.clone(),
        job.clone(),
        |i| {
            if i < 200 {
                Duration::ZERO
            } else {
                Duration::from_millis(300 * (i as u64 - 199))
            }
        },
        260,
    )
    .await;
    println!("token bucket (200 + 200/min): 260 reads, {limited} refused (429), {took:?}");
    // Let the window empty.
    tokio::time::sleep(Duration::from_secs(61)).await;
    // The client's window: 200 at once, the rest a minute after the first answers.
    let paced = Arc::new(client(&url, Some(&token), Pacing::real_service()));
    let (limited, took) = reads(paced.clone(), job, |_| Duration::ZERO, 260).await;
    println!("sliding window (200 in any 60 s): 260 reads, {limited} refused (429), {took:?}");
    assert_eq!(limited, 0);
    // Submits: 60 unpaid ones at the client's pace.
    let start = Instant::now();
    let mut refused = 0;
    for _ in 0..60 {
        if let Err(ClientError::RateLimited { .. }) = paced.submit(&body, None).await {
            refused += 1;
        }
    }
    println!(
        "60 unpaid submits, paced: {refused} refused (429), {:?}",
        start.elapsed()
    );
    assert_eq!(refused, 0);
}
