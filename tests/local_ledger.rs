//! The ledger under concurrency: 100 submits at once from one wallet that can pay for only some of them.

mod local_support;

use aitbc_flow::local::{LocalConfig, WorkerLatency};
use local_support::{assert_invariant, job_body, local, money};
use reqwest::StatusCode;

async fn hundred_submits(latency: WorkerLatency) {
    // 37.5 covers floor(37.5 / 1.25) = 30 jobs of 1.25.
    let l = local(LocalConfig {
        fund: vec![("shared".into(), money("37.5"))],
        faucet: false,
        latency,
        ..LocalConfig::for_tests()
    })
    .await;
    let before = l.ledger().await;
    assert_invariant(&before);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let http = l.http.clone();
        let url = format!("{}/v1/jobs", l.url);
        let token = l.token.clone();
        let body = job_body("inference", &format!("job {i}"), "shared", "1.25");
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            resp.status()
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::PAYMENT_REQUIRED => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((created, refused), (30, 70));
    let after = l.ledger().await;
    assert_invariant(&after);
    assert_eq!(after.minted, before.minted);
    assert_eq!(after.jobs, 30);
    assert_eq!(after.wallets["shared"], money("0"));
    l.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_never_overspend_with_instant_workers() {
    hundred_submits(WorkerLatency::instant()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_never_overspend_while_jobs_wait() {
    hundred_submits(WorkerLatency::uniform(std::time::Duration::from_secs(30))).await;
}
