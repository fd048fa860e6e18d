//! Restart with `--db`: jobs, balances, escrow, receipts, the signing key, idempotency keys and the
//! generated token survive; a job left queued resumes.

mod local_support;

use std::time::Duration;

use aitbc_flow::local::{LocalConfig, WorkerLatency};
use local_support::{assert_invariant, job_body, local, money, read};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("local.db");
    let config = |latency: WorkerLatency| LocalConfig {
        db: Some(db.clone()),
        token: None,
        extra_tokens: vec!["other".into()],
        latency,
        ..LocalConfig::for_tests()
    };

    // First run: one job completes, one is canceled, one stays queued behind a slow worker.
    let l = local(config(WorkerLatency {
        training: Duration::from_secs(60),
        ..WorkerLatency::instant()
    }))
    .await;
    let token = l.token.clone();
    assert!(l.handle.token_generated());
    let (_, done) = l.submit("w", "5", "finish me").await;
    let done_id = done["job_id"].as_str().unwrap().to_string();
    l.wait_final(&done_id).await;
    let (_, canceled) = l
        .post("/v1/jobs", &job_body("training", "cancel me", "w", "2"))
        .await;
    let canceled_id = canceled["job_id"].as_str().unwrap().to_string();
    l.post(&format!("/v1/jobs/{canceled_id}/cancel"), &json!({}))
        .await;
    let (_, queued) = l
        .post("/v1/jobs", &job_body("training", "later", "w", "3.5"))
        .await;
    let queued_id = queued["job_id"].as_str().unwrap().to_string();
    let resp = l
        .http
        .post(format!("{}/v1/jobs", l.url))
        .bearer_auth(&token)
        .header("Idempotency-Key", "k1")
        .json(&job_body("inference", "keyed", "w", "1"))
        .send()
        .await
        .unwrap();
    let (status, keyed) = read(resp).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, receipt_before) = l.get(&format!("/v1/jobs/{done_id}/receipt")).await;
    let ledger_before = l.ledger().await;
    assert_eq!(ledger_before.escrow, money("3.5"));
    assert_invariant(&ledger_before);
    let (_, job_before) = l.get(&format!("/v1/jobs/{done_id}")).await;
    l.stop().await;

    // Second run on the same file, instant workers, no token given: the stored one is reused.
    let l = local(config(WorkerLatency::instant())).await;
    assert_eq!(l.token, token);
    let (_, job_after) = l.get(&format!("/v1/jobs/{done_id}")).await;
    assert_eq!(job_after, job_before);
    let (status, receipt_after) = l.get(&format!("/v1/jobs/{done_id}/receipt")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receipt_after, receipt_before);
    assert!(aitbc_flow::api::verify_receipt(&receipt_after).is_ok());
    let (_, c) = l.get(&format!("/v1/jobs/{canceled_id}")).await;
    assert_eq!(
        (c["state"].clone(), c["payment_status"].clone()),
        (json!("CANCELED"), json!("refunded"))
    );
    let after = l.wait_final(&queued_id).await;
    assert_eq!(after["state"], "COMPLETED");
    assert_eq!(after["payment_status"], "released");
    // Ownership survives too: the other client still cannot see these jobs.
    let (status, _) = l.get_as(&format!("/v1/jobs/{done_id}"), "other").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The idempotency key still maps to its job.
    let resp = l
        .http
        .post(format!("{}/v1/jobs", l.url))
        .bearer_auth(&token)
        .header("Idempotency-Key", "k1")
        .json(&job_body("inference", "keyed", "w", "1"))
        .send()
        .await
        .unwrap();
    let (status, again) = read(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["job_id"], keyed["job_id"]);

    let ledger = l.ledger().await;
    assert_eq!(ledger.minted, ledger_before.minted);
    assert_eq!(ledger.jobs, 4);
    assert_eq!(ledger.escrow, money("0"));
    assert_eq!(ledger.wallets["w"], money("9990.5"));
    assert_invariant(&ledger);
    // The new receipt is signed by the same key as the old one.
    let (_, r) = l.get(&format!("/v1/jobs/{queued_id}/receipt")).await;
    assert_eq!(
        r["signature"]["key_id"],
        receipt_before["signature"]["key_id"]
    );
    l.stop().await;
}

#[tokio::test]
async fn fund_overrides_a_stored_balance() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("local.db");
    let l = local(LocalConfig {
        db: Some(db.clone()),
        ..LocalConfig::for_tests()
    })
    .await;
    l.submit("w", "10", "spend").await;
    l.stop().await;
    let l = local(LocalConfig {
        db: Some(db.clone()),
        fund: vec![("w".into(), money("42"))],
        ..LocalConfig::for_tests()
    })
    .await;
    let ledger = l.ledger().await;
    assert_eq!(ledger.wallets["w"], money("42"));
    assert_invariant(&ledger);
    l.stop().await;
}
