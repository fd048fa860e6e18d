//! Workers: tokio tasks that claim QUEUED jobs and post their results.
//!
//! A dispatcher receives job positions from the submit handler and starts one task per job, at most
//! `workers` at a time; a job that takes no time (instant workers) is done by the submit handler
//! itself, after its QUEUED answer is written ([`work_at_once`]). The built-in worker is deterministic: its output is derived from a hash of the job
//! type, model and prompt, so a plan gives the same results every run. `ollama` jobs go to Ollama's
//! `POST {endpoint}/api/generate` when an endpoint is configured.
//!
//! Test markers: a prompt containing `FAIL_RESULT` makes the built-in worker post a failed result (state
//! COMPLETED, `result.status: "failed"`, as the real service reports many failures); `FAIL` makes it fail
//! the job (state FAILED, the payment refunded); `HANG` keeps the job RUNNING until it is cancelled,
//! expires or the coordinator stops; `LATE` keeps it RUNNING until it is cancelled and then posts its
//! result all the same (ignored, unless the real quirks are on: then, as on the real service, a result
//! posted after a cancel turns the job COMPLETED); a payload type outside the six ends COMPLETED with
//! `result: {"status": "failed", "error": "Unsupported job type: X"}`, as on the real service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{JOB_TYPES, JobState};

use super::Shared;
use super::store::Miner;

/// How long the built-in worker takes per job type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerLatency {
    /// `inference`.
    pub inference: Duration,
    /// `training`.
    pub training: Duration,
    /// `multimodal`.
    pub multimodal: Duration,
    /// `ollama` (built-in worker only; a real Ollama takes what it takes).
    pub ollama: Duration,
    /// `streaming`.
    pub streaming: Duration,
    /// `monitoring`.
    pub monitoring: Duration,
    /// Any other type (which fails as unsupported).
    pub other: Duration,
}

impl WorkerLatency {
    /// No latency at all: for tests and benchmarks.
    pub fn instant() -> WorkerLatency {
        WorkerLatency::uniform(Duration::ZERO)
    }

    /// The same latency for every type.
    pub fn uniform(d: Duration) -> WorkerLatency {
        WorkerLatency {
            inference: d,
            training: d,
            multimodal: d,
            ollama: d,
            streaming: d,
            monitoring: d,
            other: d,
        }
    }

    /// Small but visible latencies, 200 ms … 2 s by type (the `serve` default).
    pub fn realistic() -> WorkerLatency {
        let ms = Duration::from_millis;
        WorkerLatency {
            inference: ms(500),
            training: ms(2000),
            multimodal: ms(1000),
            ollama: ms(800),
            streaming: ms(700),
            monitoring: ms(300),
            other: ms(200),
        }
    }

    /// The latency for a job type.
    pub fn for_type(&self, job_type: &str) -> Duration {
        match job_type {
            "inference" => self.inference,
            "training" => self.training,
            "multimodal" => self.multimodal,
            "ollama" => self.ollama,
            "streaming" => self.streaming,
            "monitoring" => self.monitoring,
            _ => self.other,
        }
    }
}

impl Default for WorkerLatency {
    /// [`WorkerLatency::realistic`].
    fn default() -> WorkerLatency {
        WorkerLatency::realistic()
    }
}

/// How a job's work ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A result to post (COMPLETED); it may itself say `status: failed`.
    Result(Value),
    /// The work failed (FAILED, with this error, refunded).
    Failed(String),
}

/// Starts a task per queued job, at most `workers` at once, until cancelled.
pub async fn dispatch(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<u32>,
    workers: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(workers.max(1)));
    loop {
        let pos = tokio::select! {
            _ = cancel.cancelled() => break,
            pos = rx.recv() => match pos { Some(p) => p, None => break },
        };
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            run_job(&shared, pos, &cancel).await;
            drop(permit);
        });
    }
}

/// Claims one job, does its work and posts the outcome.
async fn run_job(shared: &Shared, pos: u32, cancel: &CancellationToken) {
    let use_ollama = shared.ollama.is_some();
    let Some(claim) = shared.claim(pos, use_ollama) else {
        return;
    };
    let started = Instant::now();
    let prompt = text(&claim.payload, "prompt").unwrap_or("");
    let late = prompt.contains("LATE");
    if claim.miner == Miner::Builtin && (late || prompt.contains("HANG")) {
        // Hold the job RUNNING; look at it now and then, so that a job cancelled or expired meanwhile
        // gives its worker slot back instead of holding it until shutdown.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => { shared.unclaim(pos); return; }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if !shared.still_running(pos) {
                break;
            }
        }
        if !late {
            return;
        }
        // A provider that finishes after all: its result comes a little after the cancel.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        shared.post(
            pos,
            builtin(&claim.job_type, &claim.payload),
            started.elapsed(),
        );
        return;
    }
    let delay = if claim.miner == Miner::Ollama {
        Duration::ZERO
    } else {
        shared.latency.for_type(&claim.job_type)
    };
    if !delay.is_zero() {
        tokio::select! {
            _ = cancel.cancelled() => { shared.unclaim(pos); return; }
            _ = tokio::time::sleep(delay) => {}
        }
    }
    let outcome = match claim.miner {
        Miner::Ollama => {
            let base = shared.ollama.clone().unwrap_or_default();
            tokio::select! {
                _ = cancel.cancelled() => { shared.unclaim(pos); return; }
                o = ollama(&shared.http, &base, &claim.payload) => o,
            }
        }
        Miner::Builtin => builtin(&claim.job_type, &claim.payload),
    };
    shared.post(pos, outcome, started.elapsed());
}

/// Does a new job's work at once when its worker takes no time ([`Shared::takes_no_time`]): the
/// submit handler calls it after writing its answer, QUEUED as the real service answers, and before
/// sending it. "Instant" then means what it says — the job is final by the time the client can ask —
/// where a task of the dispatcher would race the client's first poll (and lose it now and then,
/// which made the client wait a whole poll delay for a job that takes no time). Such a job holds no
/// worker slot. Returns false, touching nothing, for any other job.
pub(super) fn work_at_once(shared: &Shared, pos: u32) -> bool {
    if !shared.takes_no_time(pos) {
        return false;
    }
    let started = Instant::now();
    if let Some(claim) = shared.claim(pos, false) {
        let outcome = builtin(&claim.job_type, &claim.payload);
        shared.post(pos, outcome, started.elapsed());
    }
    true
}

/// What a worker needs from a claimed job.
#[derive(Debug)]
pub struct Claim {
    /// `payload.type`.
    pub job_type: String,
    /// The payload.
    pub payload: Map<String, Value>,
    /// Which worker runs it.
    pub miner: Miner,
}

fn text<'a>(payload: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    payload.get(key).and_then(Value::as_str)
}

/// The default model per job type.
fn default_model(job_type: &str) -> &'static str {
    match job_type {
        "training" => "resnet50",
        "multimodal" => "llava",
        "ollama" => "llama2",
        "monitoring" => "monitor-v1",
        _ => "llama2",
    }
}

/// The deterministic built-in worker.
pub fn builtin(job_type: &str, payload: &Map<String, Value>) -> Outcome {
    if !JOB_TYPES.contains(&job_type) {
        return Outcome::Result(json!({
            "status": "failed",
            "error": format!("Unsupported job type: {job_type}"),
        }));
    }
    let prompt = text(payload, "prompt").unwrap_or("");
    if prompt.contains("FAIL_RESULT") {
        return Outcome::Result(json!({
            "status": "failed",
            "error": "simulated failure: the prompt asks for a failed result",
        }));
    }
    if prompt.contains("FAIL") {
        return Outcome::Failed("simulated failure: the prompt contains FAIL".into());
    }
    let model = text(payload, "model").unwrap_or_else(|| default_model(job_type));
    let digest = Sha256::new()
        .chain_update(job_type.as_bytes())
        .chain_update([0u8])
        .chain_update(model.as_bytes())
        .chain_update([0u8])
        .chain_update(prompt.as_bytes())
        .finalize();
    let h = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    let tag = hex::encode(&digest[..4]);
    let words = prompt.split_whitespace().count() as u64;
    let tokens = words + 8 + h % 32;
    let execution_time = (5 + h % 196) as f64 / 100.0; // 0.05 … 2.00 s
    let subject: String = prompt.chars().take(48).collect();
    let output = match job_type {
        "training" => format!(
            "Trained {model} for {} steps on \"{subject}\": final loss 0.{:04} [{tag}]",
            100 + h % 900,
            h % 10_000
        ),
        "multimodal" => format!(
            "{model} analysed \"{subject}\": {} findings [{tag}]",
            1 + h % 7
        ),
        "streaming" => format!(
            "{model} streamed {} chunks for \"{subject}\" [{tag}]",
            1 + h % 16
        ),
        "monitoring" => format!("{model} watched \"{subject}\": all metrics nominal [{tag}]"),
        _ => format!("{model} answers \"{subject}\" [{tag}]"),
    };
    Outcome::Result(json!({
        "status": "completed",
        "output": output,
        "execution_time": execution_time,
        "gpu_used": "RTX 4090",
        "model": model,
        "tokens_processed": tokens,
    }))
}

/// Calls Ollama's `/api/generate` (the payload's `endpoint` overrides the configured one).
pub async fn ollama(http: &reqwest::Client, base: &str, payload: &Map<String, Value>) -> Outcome {
    let base = text(payload, "endpoint")
        .unwrap_or(base)
        .trim_end_matches('/');
    let model = text(payload, "model").unwrap_or("llama2");
    let prompt = text(payload, "prompt").unwrap_or("");
    let url = format!("{base}/api/generate");
    let started = Instant::now();
    let resp = match http
        .post(&url)
        .json(&json!({"model": model, "prompt": prompt, "stream": false}))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("ollama at {url}: {}", error_chain(&e))),
    };
    let status = resp.status();
    let body = match resp.text().await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("ollama at {url}: {}", error_chain(&e))),
    };
    if !status.is_success() {
        let snippet: String = body.chars().take(200).collect();
        return Outcome::Failed(format!("ollama at {url}: HTTP {status}: {snippet}"));
    }
    let v: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return Outcome::Failed(format!("ollama at {url}: not JSON: {e}")),
    };
    let Some(output) = v.get("response").and_then(Value::as_str) else {
        return Outcome::Failed(format!("ollama at {url}: no `response` in the answer"));
    };
    let execution_time = v
        .get("total_duration")
        .and_then(Value::as_u64)
        .map(|ns| ns as f64 / 1e9)
        .unwrap_or_else(|| started.elapsed().as_secs_f64());
    let tokens = v.get("eval_count").and_then(Value::as_u64).unwrap_or(0)
        + v.get("prompt_eval_count")
            .and_then(Value::as_u64)
            .unwrap_or(0);
    Outcome::Result(json!({
        "status": "completed",
        "output": output,
        "execution_time": (execution_time * 1000.0).round() / 1000.0,
        "gpu_used": true,
        "model": v.get("model").and_then(Value::as_str).unwrap_or(model),
        "tokens_processed": tokens,
    }))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// True for the states in which a worker's result is taken: RUNNING, and with the real service's
/// quirks CANCELED too (a result posted after a cancel turns the job COMPLETED).
pub fn accepts_result(state: JobState, real_quirks: bool) -> bool {
    state == JobState::Running || (real_quirks && state == JobState::Canceled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn builtin_is_deterministic_and_depends_on_prompt_and_model() {
        let p = payload(json!({"prompt": "hello world", "model": "llama2"}));
        let a = builtin("inference", &p);
        assert_eq!(a, builtin("inference", &p));
        let q = payload(json!({"prompt": "hello world", "model": "mistral"}));
        assert_ne!(a, builtin("inference", &q));
        let Outcome::Result(r) = a else {
            panic!("expected a result")
        };
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], "llama2");
        assert!(r["tokens_processed"].as_u64().unwrap() >= 10);
    }

    #[test]
    fn unsupported_types_and_fail_marker() {
        let p = payload(json!({"prompt": "x"}));
        assert_eq!(
            builtin("video-upscale", &p),
            Outcome::Result(
                json!({"status": "failed", "error": "Unsupported job type: video-upscale"})
            )
        );
        let f = payload(json!({"prompt": "please FAIL now"}));
        assert!(matches!(builtin("training", &f), Outcome::Failed(_)));
    }
}
