//! Receipts: built from the job and the few values fixed at signing time ([`ReceiptCore`]), so a stored
//! job carries 64 bytes of signature instead of a second copy of its payload and result. Rebuilding gives
//! exactly the JSON that was signed, so the signature verifies on every read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use crate::api::sign_receipt;

use super::store::{Job, Payment, ReceiptCore};

/// The price per GPU second the local provider charges.
pub const UNIT_PRICE: f64 = 0.02;

fn parse_or_empty(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_else(|| json!({}))
}

/// The receipt of a completed job; signed with `(key_id, sig)` when given.
pub fn build(
    job: &Job,
    core: &ReceiptCore,
    client: &str,
    signature: Option<(&str, &str)>,
) -> Value {
    let mut r = json!({
        "version": "1.0",
        "receipt_id": hex::encode(core.receipt_id),
        "job_id": hex::encode(job.id),
        "provider": job.miner.map(|m| m.id()).unwrap_or("miner-local"),
        "client": client,
        "status": "COMPLETED",
        "units": core.units,
        "unit_type": "gpu_seconds",
        "unit_price": core.unit_price,
        "price": core.price,
        "started_at": core.started_at,
        "completed_at": core.completed_at,
        "metadata": {
            "job_payload": parse_or_empty(Some(&job.payload)),
            "job_constraints": parse_or_empty(job.constraints.as_deref()),
            "result": parse_or_empty(job.result.as_deref()),
            "metrics": {"duration_ms": core.duration_ms},
        },
    });
    if let Some((key_id, sig)) = signature
        && let Value::Object(map) = &mut r
    {
        map.insert(
            "signature".into(),
            json!({"alg": "Ed25519", "key_id": key_id, "sig": sig}),
        );
        if high_value(job) {
            // As the real service: a job paid 10 or more gets a TEE attestation after signing, so its
            // receipt verifies only when these fields are left out of the signed bytes.
            let id = hex::encode(job.id);
            // With the real quirks on such a job carries the service's ZK error, and so does its
            // receipt: the proof "failed".
            let zk = if job.error.is_some() {
                "generation_failed"
            } else {
                "not_required"
            };
            map.insert("zk_status".into(), json!(zk));
            map.insert("tee_status".into(), json!("verified"));
            map.insert(
                "tee_attestation_id".into(),
                json!(format!("att_{}", &id[..16])),
            );
            map.insert(
                "tee_quote".into(),
                json!(URL_SAFE_NO_PAD.encode(format!("local-quote:{id}"))),
            );
        } else {
            map.insert("zk_status".into(), json!("not_required"));
            map.insert("tee_status".into(), json!("not_required"));
        }
    }
    r
}

/// The real service's high-value threshold (`COORDINATOR_BOND_HIGH_VALUE_THRESHOLD`): 10 AITBC.
pub const HIGH_VALUE: i64 = 10;

/// True for a job paid 10 AITBC or more.
pub fn high_value(job: &Job) -> bool {
    matches!(&job.payment, Payment::Paid(p) if p.amount >= crate::money::Money::from_int(HIGH_VALUE))
}

/// Signs a receipt for `job` (which already carries its result and miner) and returns the stored parts.
pub fn sign(job: &Job, client: &str, key: &SigningKey, duration_ms: u64) -> ReceiptCore {
    let units = job
        .result
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|r| r.get("execution_time").and_then(Value::as_f64))
        .unwrap_or(duration_ms as f64 / 1000.0);
    let price = (units * UNIT_PRICE * 1e6).round() / 1e6;
    let started = job.started_at.unwrap_or(job.requested_at) / 1_000_000;
    let completed = job.finished_at.unwrap_or(job.requested_at) / 1_000_000;
    let mut core = ReceiptCore {
        receipt_id: rand::random(),
        units,
        unit_price: UNIT_PRICE,
        price,
        started_at: started,
        completed_at: completed,
        duration_ms,
        sig: [0; 64],
    };
    let mut unsigned = build(job, &core, client, None);
    sign_receipt(&mut unsigned, key);
    if let Some(sig) = unsigned
        .pointer("/signature/sig")
        .and_then(Value::as_str)
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    {
        core.sig = sig;
    }
    core
}

/// The signature as it appears in a receipt: base64url without padding.
pub fn sig_text(sig: &[u8; 64]) -> String {
    URL_SAFE_NO_PAD.encode(sig)
}

/// The key id a receipt names: the public key, base64url without padding.
pub fn key_id(key: &SigningKey) -> String {
    URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())
}
