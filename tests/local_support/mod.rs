//! Shared helpers for the local coordinator tests: start it in-process on 127.0.0.1:0 and talk to it
//! with plain reqwest (not the crate's client), so these tests check the wire, not our own client.
#![allow(dead_code)]

use std::time::Duration;

use aitbc_flow::api::LedgerView;
use aitbc_flow::local::{LocalConfig, LocalHandle, start};
use aitbc_flow::money::Money;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A running coordinator and a client for it.
pub struct Local {
    /// The handle (shut it down at the end of a test).
    pub handle: LocalHandle,
    /// A plain HTTP client.
    pub http: reqwest::Client,
    /// Base URL.
    pub url: String,
    /// The client token.
    pub token: String,
}

/// Starts a coordinator with `config`.
pub async fn local(config: LocalConfig) -> Local {
    let handle = start(config).await.expect("coordinator starts");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    Local {
        url: handle.url(),
        token: handle.token().to_string(),
        handle,
        http,
    }
}

/// Reads a response as (status, JSON body or `null`).
pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body)
}

impl Local {
    /// GET with the client token.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_as(path, &self.token).await
    }

    /// GET with a given token.
    pub async fn get_as(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        read(resp).await
    }

    /// POST JSON with the client token.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_as(path, body, &self.token).await
    }

    /// POST JSON with a given token.
    pub async fn post_as(&self, path: &str, body: &Value, token: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("send");
        read(resp).await
    }

    /// Submits a paid inference job from `wallet`.
    pub async fn submit(&self, wallet: &str, payment: &str, prompt: &str) -> (StatusCode, Value) {
        self.post("/v1/jobs", &job_body("inference", prompt, wallet, payment))
            .await
    }

    /// Polls a job until it is in a final state (5 s at most).
    pub async fn wait_final(&self, id: &str) -> Value {
        for _ in 0..500 {
            let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            let state = job["state"].as_str().unwrap_or("");
            if !matches!(state, "QUEUED" | "RUNNING") {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} did not finish");
    }

    /// The local-only ledger view.
    pub async fn ledger(&self) -> LedgerView {
        let resp = self
            .http
            .get(format!("{}/v1/local/ledger", self.url))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.expect("ledger JSON")
    }

    /// Stops the coordinator.
    pub async fn stop(self) {
        self.handle.shutdown().await.expect("clean shutdown");
    }
}

/// A job body as the runner sends it.
pub fn job_body(job_type: &str, prompt: &str, wallet: &str, payment: &str) -> Value {
    json!({
        "payload": {"type": job_type, "prompt": prompt, "model": "llama2"},
        "ttl_seconds": 900,
        "payment_amount": payment.parse::<f64>().unwrap_or(0.0),
        "payment_currency": "AITBC",
        "buyer_address": wallet,
    })
}

/// Checks `sum(wallets) + escrow == minted`.
pub fn assert_invariant(l: &LedgerView) {
    let total: Money = l.wallets.values().copied().sum();
    assert_eq!(total + l.escrow, l.minted, "ledger invariant broken: {l:?}");
}

/// Parses an amount.
pub fn money(s: &str) -> Money {
    s.parse().expect("amount")
}
