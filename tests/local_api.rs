//! The embedded coordinator's HTTP API over real HTTP: every endpoint, status code and error shape of
//! aitbc-api.md, auth, the list quirks, payments, idempotency and expiry.

mod local_support;

use std::time::Duration;

use aitbc_flow::local::{LocalConfig, WorkerLatency};
use local_support::{Local, assert_invariant, job_body, local, money, read};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn slow() -> LocalConfig {
    LocalConfig {
        latency: WorkerLatency::uniform(Duration::from_secs(30)),
        ..LocalConfig::for_tests()
    }
}

fn id(job: &Value) -> String {
    job["job_id"].as_str().expect("job_id").to_string()
}

fn is_naive_iso(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok() && !s.ends_with('Z')
}

/// With instant workers a submit is answered QUEUED, as the real service answers every submit, and the
/// job is final at the first read after it — every time, not when a worker task wins a race (the
/// client would then wait a whole poll delay). A job a test marker holds still goes to a worker.
#[tokio::test]
async fn an_instant_job_is_answered_queued_and_final_at_the_next_read() {
    let l = local(LocalConfig::for_tests()).await;
    for i in 0..50 {
        let body = job_body("inference", &format!("prompt {i}"), "w1", "1");
        let (status, job) = l.post("/v1/jobs", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        assert_eq!(job["state"], "QUEUED", "the answer of submit {i}");
        assert_eq!(job["payment_status"], "escrowed");
        let (status, now) = l.get(&format!("/v1/jobs/{}", id(&job))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(now["state"], "COMPLETED", "the first read after submit {i}");
        assert_eq!(now["payment_status"], "released");
    }
    let body = job_body("inference", "HANG here", "w1", "1");
    let (_, job) = l.post("/v1/jobs", &body).await;
    assert_eq!(job["state"], "QUEUED");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, now) = l.get(&format!("/v1/jobs/{}", id(&job))).await;
    assert_eq!(now["state"], "RUNNING", "a held job is its worker's");
}

#[tokio::test]
async fn submit_runs_to_completion_with_a_signed_receipt() {
    let l = local(LocalConfig::for_tests()).await;
    let mut body = job_body("inference", "Summarize the feedback", "w1", "5");
    body["payload"]["client_ref"] = json!("run-1/analyze");
    body["constraints"] = json!({"gpu": "RTX 4090"});
    let (status, job) = l.post("/v1/jobs", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let jid = id(&job);
    assert_eq!(jid.len(), 32);
    assert!(
        jid.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(is_naive_iso(&job["requested_at"]) && is_naive_iso(&job["expires_at"]));
    assert_eq!(job["payment_status"], "escrowed");
    assert_eq!(job["payload"]["client_ref"], "run-1/analyze");
    assert!(job.get("constraints").is_none());
    for k in [
        "zk_status",
        "tee_status",
        "reinvest_status",
        "assigned_miner_id",
        "error",
    ] {
        assert!(job.get(k).is_some(), "missing {k}");
    }

    let done = l.wait_final(&jid).await;
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(done["payment_status"], "released");
    assert_eq!(done["assigned_miner_id"], "miner-local");
    assert_eq!(done["result"]["status"], "completed");
    assert_eq!(done["result"]["model"], "llama2");
    assert!(done["result"]["tokens_processed"].as_u64().unwrap() > 0);
    assert!(done["result"]["execution_time"].as_f64().unwrap() > 0.0);

    let (status, res) = l.get(&format!("/v1/jobs/{jid}/result")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(res["result"], done["result"]);
    assert_eq!(res["receipt"]["job_id"], jid.as_str());
    assert_eq!(
        res["receipt"]["metadata"]["job_constraints"]["gpu"],
        "RTX 4090"
    );
    assert!(aitbc_flow::api::verify_receipt(&res["receipt"]).is_ok());

    let (status, receipt) = l.get(&format!("/v1/jobs/{jid}/receipt")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receipt, res["receipt"]);
    let (status, list) = l.get(&format!("/v1/jobs/{jid}/receipts")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([receipt]));

    // Completion pays the provider: the wallet keeps 9995, the miner got 5.
    let ledger = l.ledger().await;
    assert_eq!(ledger.wallets["w1"], money("9995"));
    assert_eq!(ledger.wallets["miner-local"], money("5"));
    assert_eq!(ledger.escrow, money("0"));
    assert_invariant(&ledger);
    l.stop().await;
}

#[tokio::test]
async fn same_input_gives_the_same_output() {
    let l = local(LocalConfig::for_tests()).await;
    let (_, a) = l.submit("w", "1", "deterministic please").await;
    let (_, b) = l.submit("w", "1", "deterministic please").await;
    let a = l.wait_final(&id(&a)).await;
    let b = l.wait_final(&id(&b)).await;
    assert_eq!(a["result"], b["result"]);
    l.stop().await;
}

#[tokio::test]
async fn result_is_425_until_completed_and_cancel_refunds() {
    let l = local(slow()).await;
    let (_, job) = l.submit("w", "2.5", "slow job").await;
    let jid = id(&job);
    let (status, body) = l.get(&format!("/v1/jobs/{jid}/result")).await;
    assert_eq!(status, StatusCode::TOO_EARLY);
    assert_eq!(body, json!({"detail": "job not ready"}));
    let (status, body) = l.get(&format!("/v1/jobs/{jid}/receipt")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"detail": "receipt not available"}));
    let (status, body) = l.get(&format!("/v1/jobs/{jid}/receipts")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"items": []})));
    assert_eq!(l.ledger().await.escrow, money("2.5"));

    let (status, canceled) = l.post(&format!("/v1/jobs/{jid}/cancel"), &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(canceled["state"], "CANCELED");
    assert_eq!(canceled["payment_status"], "refunded");
    // As the real service says it.
    assert_eq!(canceled["error"], "canceled by client");
    let (status, body) = l.post(&format!("/v1/jobs/{jid}/cancel"), &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body, json!({"detail": "job not cancelable"}));
    let (status, _) = l.get(&format!("/v1/jobs/{jid}/result")).await;
    assert_eq!(status, StatusCode::TOO_EARLY);

    let ledger = l.ledger().await;
    assert_eq!(ledger.wallets["w"], money("10000"));
    assert_eq!(ledger.escrow, money("0"));
    assert_invariant(&ledger);
    l.stop().await;
}

#[tokio::test]
async fn fail_marker_fails_and_unsupported_type_completes_failed() {
    let l = local(LocalConfig::for_tests()).await;
    let (_, job) = l.submit("w", "3", "please FAIL this").await;
    let failed = l.wait_final(&id(&job)).await;
    assert_eq!(failed["state"], "FAILED");
    assert!(failed["error"].as_str().unwrap().contains("FAIL"));
    assert_eq!(failed["payment_status"], "refunded");
    let (status, _) = l.get(&format!("/v1/jobs/{}/result", id(&job))).await;
    assert_eq!(status, StatusCode::TOO_EARLY);

    let (_, job) = l
        .post("/v1/jobs", &job_body("video-upscale", "x", "w", "3"))
        .await;
    let done = l.wait_final(&id(&job)).await;
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(
        done["result"],
        json!({"status": "failed", "error": "Unsupported job type: video-upscale"})
    );
    assert_eq!(done["payment_status"], "refunded");
    let (status, res) = l.get(&format!("/v1/jobs/{}/result", id(&job))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(res["receipt"], Value::Null);
    assert_eq!(l.ledger().await.wallets["w"], money("10000"));
    l.stop().await;
}

#[tokio::test]
async fn all_six_types_complete() {
    let l = local(LocalConfig::for_tests()).await;
    for t in aitbc_flow::api::JOB_TYPES {
        let (status, job) = l.post("/v1/jobs", &job_body(t, "hello", "w", "1")).await;
        assert_eq!(status, StatusCode::CREATED);
        let done = l.wait_final(&id(&job)).await;
        assert_eq!(done["state"], "COMPLETED", "{t}");
        assert_eq!(done["result"]["status"], "completed", "{t}");
    }
    l.stop().await;
}

#[tokio::test]
async fn auth_errors_and_foreign_jobs() {
    let l = local(LocalConfig {
        extra_tokens: vec!["other-client".into()],
        ..slow()
    })
    .await;
    let (_, job) = l.submit("w", "1", "mine").await;
    let jid = id(&job);

    let resp = l
        .http
        .get(format!("{}/v1/jobs/{jid}", l.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        read(resp).await.1,
        json!({"detail": "Authentication required"})
    );

    let (status, body) = l.get_as(&format!("/v1/jobs/{jid}"), "wrong").await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({"detail": "Invalid token"}))
    );
    let (status, body) = l.get_as(&format!("/v1/jobs/{jid}"), "miner-7").await;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, json!({"detail": "Forbidden"}))
    );

    // Another client sees neither the job nor its result, receipts, payment or cancel.
    for path in ["", "/result", "/receipt", "/receipts", "/payment"] {
        let (status, body) = l
            .get_as(&format!("/v1/jobs/{jid}{path}"), "other-client")
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, json!({"detail": "job not found"}), "{path}");
    }
    let (status, _) = l
        .post_as(
            &format!("/v1/jobs/{jid}/cancel"),
            &json!({}),
            "other-client",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = l.get_as("/v1/jobs", "other-client").await;
    assert_eq!(list["items"], json!([]));
    let (status, body) = l.get("/v1/jobs/ffffffffffffffffffffffffffffffff").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"detail": "job not found"}))
    );
    let (status, _) = l.get("/v1/jobs/not-a-job-id").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The GPU list needs no token.
    let resp = l
        .http
        .get(format!("{}/v1/marketplace/gpu/list", l.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    l.stop().await;
}

#[tokio::test]
async fn list_is_newest_first_with_the_real_quirks() {
    let l = local(slow()).await;
    let mut ids = Vec::new();
    for (i, t) in ["inference", "training", "inference", "multimodal"]
        .iter()
        .enumerate()
    {
        let (_, job) = l
            .post("/v1/jobs", &job_body(t, &format!("job {i}"), "w", "1"))
            .await;
        ids.push(id(&job));
    }
    l.post(&format!("/v1/jobs/{}/cancel", ids[1]), &json!({}))
        .await;

    let (status, list) = l.get("/v1/jobs?limit=3").await;
    assert_eq!(status, StatusCode::OK);
    let got: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[3].as_str(), ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(
        (
            list["total"].clone(),
            list["limit"].clone(),
            list["offset"].clone()
        ),
        (json!(3), json!(3), json!(0))
    );

    let (_, list) = l.get("/v1/jobs?limit=2&offset=2").await;
    assert_eq!(list["items"][0]["job_id"], ids[1].as_str());
    assert_eq!(list["total"], 2);

    let (_, list) = l.get("/v1/jobs?status=CANCELED").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["job_id"], ids[1].as_str());
    // Two Ls: unknown, so ignored: every job comes back.
    let (_, list) = l.get("/v1/jobs?status=CANCELLED").await;
    assert_eq!(list["total"], 4);
    let (_, list) = l.get("/v1/jobs?job_type=inference").await;
    assert_eq!(list["total"], 2);
    let (_, list) = l.get("/v1/jobs?limit=100000").await;
    assert_eq!(
        (list["total"].clone(), list["limit"].clone()),
        (json!(4), json!(100000))
    );

    let (status, body) = l.get("/v1/jobs?limit=abc").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["field"], "query.limit");
    l.stop().await;
}

#[tokio::test]
async fn validation_errors_have_the_real_shape() {
    let l = local(LocalConfig::for_tests()).await;
    let cases = [
        (
            "payment_amount",
            json!({"payload": {"type": "inference"}, "payment_amount": "abc"}),
        ),
        ("missing_payload", json!({"ttl_seconds": 60})),
        ("payload_not_object", json!({"payload": "inference"})),
        (
            "ttl_negative",
            json!({"payload": {"type": "inference"}, "ttl_seconds": -5}),
        ),
    ];
    for (name, body) in cases {
        let (status, err) = l.post("/v1/jobs", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}");
        insta::assert_json_snapshot!(format!("validation_{name}"), err, {".timestamp" => "[timestamp]"});
    }
    let resp = l
        .http
        .post(format!("{}/v1/jobs", l.url))
        .bearer_auth(&l.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, err) = read(resp).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    insta::assert_json_snapshot!("validation_bad_json", err, {".timestamp" => "[timestamp]"});
    // Nothing was created by the refused requests.
    assert_eq!(l.ledger().await.jobs, 0);
    l.stop().await;
}

#[tokio::test]
async fn routes_that_do_not_exist() {
    let l = local(LocalConfig::for_tests()).await;
    let (status, body) = l.get("/v1/nothing/here").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );
    let resp = l
        .http
        .delete(format!("{}/v1/jobs", l.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    l.stop().await;
}

#[tokio::test]
async fn payments_insufficient_skipped_null_and_refunds() {
    let l = local(LocalConfig {
        fund: vec![("poor".into(), money("10"))],
        ..slow()
    })
    .await;
    let (status, body) = l.submit("poor", "12.5", "too dear").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        body,
        json!({"detail": "insufficient balance: wallet poor holds 10 AITBC, job needs 12.5"})
    );

    // The real service skips bad payments silently.
    for (amount, currency) in [
        (json!(5), "XYZ"),
        (json!(0.001), "AITBC"),
        (json!(2_000_000), "AITBC"),
    ] {
        let mut b = job_body("inference", "x", "poor", "1");
        b["payment_amount"] = amount;
        b["payment_currency"] = json!(currency);
        let (status, job) = l.post("/v1/jobs", &b).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(job["payment_status"], "skipped");
        assert_eq!(job["payment_id"], Value::Null);
    }
    let mut b = job_body("inference", "x", "poor", "1");
    b["payment_amount"] = json!(0);
    let (_, free) = l.post("/v1/jobs", &b).await;
    assert_eq!(free["payment_status"], Value::Null);
    let (status, body) = l.get(&format!("/v1/jobs/{}/payment", id(&free))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"detail": "Payment not found for this job"}));
    assert_eq!(l.ledger().await.wallets["poor"], money("10"));

    let (_, job) = l.submit("poor", "4", "paid").await;
    let jid = id(&job);
    let pid = job["payment_id"].as_str().unwrap().to_string();
    let (status, p) = l.get(&format!("/v1/jobs/{jid}/payment")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            p["amount"].clone(),
            p["status"].clone(),
            p["currency"].clone()
        ),
        (json!(4), json!("escrowed"), json!("AITBC"))
    );
    for k in [
        "payment_method",
        "escrow_address",
        "refund_address",
        "created_at",
        "updated_at",
        "released_at",
        "refunded_at",
        "transaction_hash",
        "refund_transaction_hash",
    ] {
        assert!(p.get(k).is_some(), "payment lacks {k}");
    }
    let refund = json!({"job_id": jid, "payment_id": pid, "reason": "buyer_requested"});
    // Still escrowed for a live job: refused.
    let (status, body) = l.post(&format!("/v1/payments/{pid}/refund"), &refund).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "Failed to refund payment"})
        )
    );
    l.post(&format!("/v1/jobs/{jid}/cancel"), &json!({})).await;
    // Already refunded by the cancel: the runner's call is harmless.
    let (status, body) = l.post(&format!("/v1/payments/{pid}/refund"), &refund).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"status": "refunded", "payment_id": pid})
        )
    );
    let (_, p) = l.get(&format!("/v1/jobs/{jid}/payment")).await;
    assert_eq!(p["status"], "refunded");
    assert!(p["refunded_at"].is_string());
    let ledger = l.ledger().await;
    assert_eq!(ledger.wallets["poor"], money("10"));
    assert_invariant(&ledger);
    l.stop().await;
}

#[tokio::test]
async fn released_payment_cannot_be_refunded() {
    let l = local(LocalConfig::for_tests()).await;
    let (_, job) = l.submit("w", "1", "done soon").await;
    let done = l.wait_final(&id(&job)).await;
    assert_eq!(done["payment_status"], "released");
    let pid = done["payment_id"].as_str().unwrap();
    let refund = json!({"job_id": id(&job), "payment_id": pid, "reason": "buyer_requested"});
    let (status, _) = l.post(&format!("/v1/payments/{pid}/refund"), &refund).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let other =
        json!({"job_id": "ffffffffffffffffffffffffffffffff", "payment_id": pid, "reason": "x"});
    let (status, _) = l.post(&format!("/v1/payments/{pid}/refund"), &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    l.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_job_and_charges_once() {
    let l = local(LocalConfig {
        extra_tokens: vec!["second".into()],
        ..slow()
    })
    .await;
    let body = job_body("inference", "once", "w", "7");
    let send = |token: String| {
        l.http
            .post(format!("{}/v1/jobs", l.url))
            .bearer_auth(token)
            .header("Idempotency-Key", "step-analyze-1")
            .json(&body)
            .send()
    };
    let (s1, a) = read(send(l.token.clone()).await.unwrap()).await;
    let (s2, b) = read(send(l.token.clone()).await.unwrap()).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(a["job_id"], b["job_id"]);
    assert_eq!(l.ledger().await.wallets["w"], money("9993"));
    // Keys are per client.
    let (s3, c) = read(send("second".into()).await.unwrap()).await;
    assert_eq!(s3, StatusCode::CREATED);
    assert_ne!(a["job_id"], c["job_id"]);
    let ledger = l.ledger().await;
    assert_eq!(ledger.wallets["w"], money("9986"));
    assert_eq!(ledger.jobs, 2);
    l.stop().await;
}

#[tokio::test]
async fn expiry_is_lazy_and_refunds() {
    let l = local(slow()).await;
    let mut body = job_body("inference", "never runs in time", "w", "3");
    body["ttl_seconds"] = json!(1);
    let (_, job) = l.post("/v1/jobs", &body).await;
    assert_eq!(l.ledger().await.escrow, money("3"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, list) = l.get("/v1/jobs?status=EXPIRED").await;
    assert_eq!(list["total"], 1);
    let (_, expired) = l.get(&format!("/v1/jobs/{}", id(&job))).await;
    assert_eq!(expired["state"], "EXPIRED");
    assert_eq!(expired["error"], "job expired");
    assert_eq!(expired["payment_status"], "refunded");
    let (status, _) = l.get(&format!("/v1/jobs/{}/result", id(&job))).await;
    assert_eq!(status, StatusCode::TOO_EARLY);
    let (status, _) = l
        .post(&format!("/v1/jobs/{}/cancel", id(&job)), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let ledger = l.ledger().await;
    assert_eq!(
        (ledger.escrow, ledger.wallets["w"]),
        (money("0"), money("10000"))
    );
    l.stop().await;
}

#[tokio::test]
async fn allocate_gpu_list_and_balances() {
    let l = local(LocalConfig {
        faucet: false,
        fund: vec![("rich".into(), money("123.45"))],
        ..LocalConfig::for_tests()
    })
    .await;
    let req = json!({"agent_id": "agent-7", "task_requirements": {"cpu_cores": 4, "memory_gb": 16,
        "gpu_count": 1, "gpu_memory_gb": 24, "storage_gb": 10, "network_bandwidth": 100,
        "task_type": "inference"}, "optimization_target": "efficiency", "priority_level": "normal"});
    let (status, a) = l
        .post("/v1/agent-performance/resources/allocate", &req)
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert!(a["allocation_id"].as_str().unwrap().starts_with("alloc_"));
    assert_eq!(
        (a["agent_id"].clone(), a["status"].clone()),
        (json!("agent-7"), json!("allocated"))
    );
    assert_eq!(a["memory_gb"], json!(8.0));
    assert!(is_naive_iso(&a["allocated_at"]));
    let (status, _) = l
        .post_as("/v1/agent-performance/resources/allocate", &req, "miner-1")
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut bad = req.clone();
    bad["optimization_target"] = json!("fastest");
    let (status, err) = l
        .post("/v1/agent-performance/resources/allocate", &bad)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        err["error"]["details"][0]["field"],
        "body.optimization_target"
    );

    let (status, gpus) = l.get("/v1/marketplace/gpu/list?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gpus.as_array().unwrap().len(), 2);
    assert!(gpus[0]["price_per_hour"].is_string());
    let offer: aitbc_flow::api::GpuOffer = serde_json::from_value(gpus[0].clone()).unwrap();
    assert_eq!(offer.price_per_hour, money("0.5"));
    let (status, _) = l.get("/v1/marketplace/gpu/list?limit=501").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // As the upstream wallet daemon: `balance` in compute-seconds (1 AITBC = 3600), `balance_ait` text.
    let (status, b) = l.get("/v1/wallets/rich/balance").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b["balance"], json!(444420));
    assert_eq!(b["balance_ait"], json!("123.4500 AIT"));
    let b: aitbc_flow::api::WalletBalance = serde_json::from_value(b).unwrap();
    assert_eq!(
        (b.balance, b.compute_seconds),
        (money("123.45"), Some(money("444420")))
    );
    let (_, b) = l.get("/v1/wallets/nobody/balance").await;
    assert_eq!(
        (&b["balance"], &b["balance_ait"]),
        (&json!(0), &json!("0 AIT"))
    );
    l.stop().await;
}

#[tokio::test]
async fn faucet_grants_new_wallets() {
    let l: Local = local(LocalConfig::for_tests()).await;
    let (_, b) = l.get("/v1/wallets/fresh/balance").await;
    assert_eq!(b["balance_ait"], json!("10000 AIT"));
    assert_eq!(b["balance"], json!(36_000_000));
    let ledger = l.ledger().await;
    assert_eq!(ledger.minted, money("10000"));
    assert_invariant(&ledger);
    l.stop().await;
}

#[tokio::test]
async fn fail_result_and_hang_markers() {
    let l = local(LocalConfig {
        workers: 1,
        ..LocalConfig::for_tests()
    })
    .await;
    let (_, job) = l.submit("w", "2", "FAIL_RESULT please").await;
    let done = l.wait_final(&id(&job)).await;
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(done["result"]["status"], "failed");
    assert_eq!(done["payment_status"], "refunded");

    // HANG holds the only worker slot until the job is cancelled; then the slot is free again.
    let (_, hung) = l.submit("w", "2", "HANG here").await;
    let hung_id = id(&hung);
    let mut state = Value::Null;
    for _ in 0..100 {
        state = l.get(&format!("/v1/jobs/{hung_id}")).await.1["state"].clone();
        if state == "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, "RUNNING");
    let (status, _) = l
        .post(&format!("/v1/jobs/{hung_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, next) = l.submit("w", "1", "after the hang").await;
    let next = l.wait_final(&id(&next)).await;
    assert_eq!(next["state"], "COMPLETED");
    let ledger = l.ledger().await;
    assert_eq!(ledger.wallets["w"], money("9999"));
    assert_invariant(&ledger);
    l.stop().await;
}

#[tokio::test]
async fn a_running_job_expires_too() {
    let l = local(LocalConfig::for_tests()).await;
    let mut body = job_body("inference", "HANG until expiry", "w", "2");
    body["ttl_seconds"] = json!(1);
    let (_, job) = l.post("/v1/jobs", &body).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, expired) = l.get(&format!("/v1/jobs/{}", id(&job))).await;
    assert_eq!(expired["state"], "EXPIRED");
    assert_eq!(expired["error"], "job expired");
    assert_eq!(expired["payment_status"], "refunded");
    let ledger = l.ledger().await;
    assert_eq!(
        (ledger.escrow, ledger.wallets["w"]),
        (money("0"), money("10000"))
    );
    l.stop().await;
}
