//! Each fault flag: added latency, 503s, 429s with Retry-After, responses dropped after commit, the path
//! prefix, and repeatable draws with a seed.

mod local_support;

use std::time::{Duration, Instant};

use aitbc_flow::local::{Faults, LocalConfig};
use local_support::{job_body, local};
use reqwest::StatusCode;
use serde_json::json;

fn with(faults: Faults) -> LocalConfig {
    LocalConfig {
        faults,
        ..LocalConfig::for_tests()
    }
}

#[tokio::test]
async fn added_latency() {
    let l = local(with(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    }))
    .await;
    let t = Instant::now();
    let (status, _) = l.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    l.stop().await;
}

#[tokio::test]
async fn every_request_503() {
    let l = local(with(Faults {
        rate_503: 1.0,
        path_prefix: Some("/v1/jobs".into()),
        ..Faults::default()
    }))
    .await;
    let (status, body) = l.submit("w", "1", "x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"detail": "Service Unavailable"}));
    assert_eq!(l.ledger().await.jobs, 0, "a 503 commits nothing");
    l.stop().await;
}

#[tokio::test]
async fn every_request_429_with_retry_after() {
    let l = local(with(Faults {
        rate_429: 1.0,
        retry_after_secs: 7,
        ..Faults::default()
    }))
    .await;
    let resp = l
        .http
        .get(format!("{}/v1/jobs", l.url))
        .bearer_auth(&l.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"detail": "Rate limit exceeded"})
    );
    l.stop().await;
}

#[tokio::test]
async fn dropped_response_after_commit_only_on_the_prefix() {
    let l = local(with(Faults {
        drop_rate: 1.0,
        path_prefix: Some("/v1/jobs".into()),
        ..Faults::default()
    }))
    .await;
    // No status line at all: the client's send fails (hyper: IncompleteMessage).
    let err = l
        .http
        .post(format!("{}/v1/jobs", l.url))
        .bearer_auth(&l.token)
        .json(&job_body("inference", "lost answer", "w", "2"))
        .send()
        .await
        .expect_err("a dropped response must be an error for the client");
    assert!(!err.is_status(), "{err:?}");
    // The job was committed all the same (the ledger route is outside the prefix).
    let ledger = l.ledger().await;
    assert_eq!(ledger.jobs, 1);
    assert_eq!(ledger.wallets["w"], local_support::money("9998"));
    let (status, _) = l.get("/v1/marketplace/gpu/list").await;
    assert_eq!(status, StatusCode::OK);
    l.stop().await;
}

async fn statuses(seed: u64) -> Vec<u16> {
    let l = local(with(Faults {
        rate_503: 0.3,
        rate_429: 0.3,
        seed: Some(seed),
        ..Faults::default()
    }))
    .await;
    let mut out = Vec::new();
    for _ in 0..30 {
        out.push(l.get("/v1/marketplace/gpu/list").await.0.as_u16());
    }
    l.stop().await;
    out
}

#[tokio::test]
async fn seeded_faults_repeat() {
    let a = statuses(42).await;
    assert_eq!(a, statuses(42).await);
    assert!(
        a.contains(&503) && a.contains(&429) && a.contains(&200),
        "{a:?}"
    );
}
