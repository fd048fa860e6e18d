//! The Ollama worker against a fake Ollama (a tiny axum app): the request it sends, the result it posts,
//! and a failure that fails the job and refunds it.

mod local_support;

use std::sync::{Arc, Mutex};

use aitbc_flow::local::LocalConfig;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use local_support::{job_body, local, money};
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<Value>>>;

async fn generate(State(seen): State<Seen>, Json(req): Json<Value>) -> (StatusCode, Json<Value>) {
    seen.lock().unwrap().push(req.clone());
    let prompt = req["prompt"].as_str().unwrap_or("");
    if prompt.contains("boom") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "model exploded"})),
        );
    }
    (
        StatusCode::OK,
        Json(
            json!({"model": req["model"], "response": format!("echo: {prompt}"), "done": true,
                    "total_duration": 250_000_000u64, "eval_count": 5, "prompt_eval_count": 3}),
        ),
    )
}

async fn fake_ollama() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/api/generate", post(generate))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn ollama_jobs_go_to_ollama() {
    let (url, seen) = fake_ollama().await;
    let l = local(LocalConfig {
        ollama: Some(url),
        ..LocalConfig::for_tests()
    })
    .await;
    let (_, job) = l
        .post("/v1/jobs", &job_body("ollama", "hello llama", "w", "2"))
        .await;
    let done = l.wait_final(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["assigned_miner_id"], "ollama-local");
    assert_eq!(done["result"]["output"], "echo: hello llama");
    assert_eq!(done["result"]["tokens_processed"], 8);
    assert_eq!(done["result"]["execution_time"], 0.25);
    assert_eq!(done["payment_status"], "released");
    assert_eq!(
        seen.lock().unwrap()[0],
        json!({"model": "llama2", "prompt": "hello llama", "stream": false})
    );
    // Other types still use the built-in worker.
    let (_, job) = l
        .post(
            "/v1/jobs",
            &job_body("inference", "not for ollama", "w", "1"),
        )
        .await;
    let done = l.wait_final(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["assigned_miner_id"], "miner-local");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (_, job) = l
        .post("/v1/jobs", &job_body("ollama", "boom", "w", "4"))
        .await;
    let failed = l.wait_final(job["job_id"].as_str().unwrap()).await;
    assert_eq!(failed["state"], "FAILED");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("500") && error.contains("model exploded"),
        "{error}"
    );
    assert_eq!(failed["payment_status"], "refunded");
    assert_eq!(l.ledger().await.wallets["w"], money("9997"));
    l.stop().await;
}

#[tokio::test]
async fn the_payload_endpoint_overrides_and_unreachable_fails() {
    let (url, seen) = fake_ollama().await;
    let l = local(LocalConfig {
        ollama: Some("http://127.0.0.1:9".into()),
        ..LocalConfig::for_tests()
    })
    .await;
    let mut body = job_body("ollama", "routed", "w", "1");
    body["payload"]["endpoint"] = json!(url);
    let (_, job) = l.post("/v1/jobs", &body).await;
    let done = l.wait_final(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["result"]["output"], "echo: routed");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (_, job) = l
        .post("/v1/jobs", &job_body("ollama", "nobody home", "w", "1"))
        .await;
    let failed = l.wait_final(job["job_id"].as_str().unwrap()).await;
    assert_eq!(failed["state"], "FAILED");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .starts_with("ollama at http://127.0.0.1:9/api/generate")
    );
    assert_eq!(failed["payment_status"], "refunded");
    l.stop().await;
}
