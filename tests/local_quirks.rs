//! The embedded coordinator with the real service's payment quirks on (`--real-quirks`), over real
//! HTTP: no refund on cancel or failure (the client asks for it), the job view still saying
//! `escrowed` after a refund, a job paid 10 or more ending COMPLETED with the ZK `error` and its payment
//! in escrow; refunds that are refused (`--fault-refuse-refunds`); and a payer named by its address.

mod local_support;

use std::time::Duration;

use aitbc_flow::api::verify_receipt;
use aitbc_flow::local::{Faults, LocalConfig, WorkerLatency};
use local_support::{Local, assert_invariant, local, money};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn quirky() -> LocalConfig {
    LocalConfig {
        real_quirks: true,
        ..LocalConfig::for_tests()
    }
}

fn slow(config: LocalConfig) -> LocalConfig {
    LocalConfig {
        latency: WorkerLatency::uniform(Duration::from_secs(30)),
        ..config
    }
}

fn id(job: &Value) -> String {
    job["job_id"].as_str().expect("job_id").to_string()
}

async fn refund(l: &Local, job: &Value) -> (StatusCode, Value) {
    let (_, p) = l.get(&format!("/v1/jobs/{}/payment", id(job))).await;
    let pid = p["payment_id"].as_str().expect("payment_id").to_string();
    let body = json!({"job_id": id(job), "payment_id": pid, "reason": "buyer_requested"});
    l.post(&format!("/v1/payments/{pid}/refund"), &body).await
}

#[tokio::test]
async fn a_cancel_refunds_nothing_until_asked_and_the_job_view_never_learns() {
    let l = local(slow(quirky())).await;
    let (_, job) = l.submit("w", "2.5", "slow job").await;
    let jid = id(&job);
    let (status, canceled) = l.post(&format!("/v1/jobs/{jid}/cancel"), &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(canceled["state"], "CANCELED");
    assert_eq!(canceled["payment_status"], "escrowed");
    assert_eq!(l.ledger().await.escrow, money("2.5"));

    let (status, body) = refund(&l, &job).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "refunded");
    // Only the payment view says so.
    let (_, view) = l.get(&format!("/v1/jobs/{jid}")).await;
    assert_eq!(view["payment_status"], "escrowed");
    let (_, p) = l.get(&format!("/v1/jobs/{jid}/payment")).await;
    assert_eq!(p["status"], "refunded");
    assert!(p["refunded_at"].is_string());
    let ledger = l.ledger().await;
    assert_eq!(ledger.wallets["w"], money("10000"));
    assert_eq!(ledger.escrow, money("0"));
    assert_invariant(&ledger);
    // Asking again is harmless.
    assert_eq!(refund(&l, &job).await.0, StatusCode::OK);
    assert_eq!(l.ledger().await.wallets["w"], money("10000"));
    l.stop().await;
}

#[tokio::test]
async fn a_failed_job_keeps_its_escrow_and_a_running_one_is_not_refunded() {
    let l = local(quirky()).await;
    let (_, job) = l.submit("w", "3", "please FAIL this").await;
    let failed = l.wait_final(&id(&job)).await;
    assert_eq!(failed["state"], "FAILED");
    assert_eq!(failed["payment_status"], "escrowed");
    assert_eq!(refund(&l, &job).await.0, StatusCode::OK);
    assert_eq!(l.ledger().await.wallets["w"], money("10000"));

    let (_, hang) = l.submit("w", "1", "HANG forever").await;
    let (status, body) = refund(&l, &hang).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"detail": "Failed to refund payment"}));
    l.stop().await;
}

#[tokio::test]
async fn a_job_paid_10_or_more_completes_with_the_zk_error_and_its_payment_in_escrow() {
    let l = local(quirky()).await;
    let (_, job) = l.submit("w", "12", "a large job").await;
    let done = l.wait_final(&id(&job)).await;
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(
        done["error"],
        "ZK proof required before escrow release (status: generation_failed)"
    );
    assert_eq!(done["payment_status"], "escrowed");
    assert_eq!(done["result"]["status"], "completed");
    let (_, r) = l.get(&format!("/v1/jobs/{}/result", id(&job))).await;
    assert_eq!(r["receipt"]["zk_status"], "generation_failed");
    assert_eq!(verify_receipt(&r["receipt"]), Ok(()));
    // Completed: not the client's to take back.
    assert_eq!(refund(&l, &job).await.0, StatusCode::BAD_REQUEST);
    let ledger = l.ledger().await;
    assert_eq!(ledger.escrow, money("12"));
    assert_invariant(&ledger);
    // Below the threshold a job is paid out as usual.
    let (_, small) = l.submit("w", "2", "a small job").await;
    let done = l.wait_final(&id(&small)).await;
    assert_eq!(done["payment_status"], "released");
    assert_eq!(done["error"], Value::Null);
    l.stop().await;
}

#[tokio::test]
async fn refunds_can_be_set_to_fail() {
    let l = local(slow(LocalConfig {
        faults: Faults {
            refuse_refunds: true,
            ..Faults::default()
        },
        ..quirky()
    }))
    .await;
    let (_, job) = l.submit("w", "2", "slow job").await;
    l.post(&format!("/v1/jobs/{}/cancel", id(&job)), &json!({}))
        .await;
    let (status, body) = refund(&l, &job).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"detail": "Failed to refund payment"}));
    let (_, p) = l.get(&format!("/v1/jobs/{}/payment", id(&job))).await;
    assert_eq!(p["status"], "escrowed");
    assert_eq!(l.ledger().await.escrow, money("2"));
    l.stop().await;
}

#[tokio::test]
async fn without_quirks_a_cancel_still_refunds_at_once() {
    let l = local(slow(LocalConfig::for_tests())).await;
    let (_, job) = l.submit("w", "2", "slow job").await;
    let (_, canceled) = l
        .post(&format!("/v1/jobs/{}/cancel", id(&job)), &json!({}))
        .await;
    assert_eq!(canceled["payment_status"], "refunded");
    assert_eq!(l.ledger().await.wallets["w"], money("10000"));
    l.stop().await;
}

#[tokio::test]
async fn a_payer_named_by_its_address_pays_from_its_wallet() {
    let l = local(LocalConfig::for_tests()).await;
    let (_, b) = l.get("/v1/wallets/trading-wallet/balance").await;
    let address = b["address"].as_str().unwrap().to_string();
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{address}"
    );
    let (status, job) = l.submit(&address, "5", "paid by address").await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let ledger = l.ledger().await;
    assert_eq!(ledger.wallets["trading-wallet"], money("9995"));
    assert!(!ledger.wallets.contains_key(&address), "{ledger:?}");
    // The balance of the address is the wallet's.
    let (_, by_address) = l.get(&format!("/v1/wallets/{address}/balance")).await;
    assert_eq!(by_address["wallet_id"], "trading-wallet");
    assert_eq!(by_address["balance_ait"], "9995 AIT");
    // An address no wallet has is a wallet of its own, whose address is itself.
    let stranger = "0x52908400098527886E0F7030069857D2E4169EE7";
    let (_, b) = l.get(&format!("/v1/wallets/{stranger}/balance")).await;
    assert_eq!(b["address"], stranger);
    l.stop().await;
}
