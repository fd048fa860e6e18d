//! Receipts verified by an independent implementation of the canonical form written here (not the
//! crate's `canonical_json`): keys sorted, no spaces, nulls dropped, non-ASCII as `\uXXXX`, floats as
//! Python's `repr`, and `signature`, `attestations`, `reinvest_*` and what the service adds after signing
//! (`zk_status`, `zk_proof`, `tee_status`, `tee_attestation_id`, `tee_quote`) left out; nulls dropped
//! inside lists too.

mod local_support;

use aitbc_flow::local::LocalConfig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use local_support::{job_body, local};
use reqwest::StatusCode;
use serde_json::Value;

fn py_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else if f.abs() < 1e-4 || f.abs() >= 1e16 {
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap();
        let e: i32 = e.parse().unwrap();
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        format!("{f}")
    }
}

fn py_string(s: &str) -> String {
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        match unit {
            0x22 => out.push_str("\\\""),
            0x5c => out.push_str("\\\\"),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            0x20..=0x7e => out.push(unit as u8 as char),
            u => out.push_str(&format!("\\u{u:04x}")),
        }
    }
    out.push('"');
    out
}

fn canon(v: &Value, top: bool) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => py_float(n.as_f64().unwrap()),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_string(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .filter(|x| !x.is_null())
                .map(|x| canon(x, false))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m
                .iter()
                .filter(|(k, v)| {
                    !v.is_null()
                        && !(top
                            && ([
                                "signature",
                                "attestations",
                                "zk_status",
                                "zk_proof",
                                "tee_status",
                                "tee_attestation_id",
                                "tee_quote",
                            ]
                            .contains(&k.as_str())
                                || k.starts_with("reinvest_")))
                })
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", py_string(k), canon(&m[k.as_str()], false)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
    }
}

fn verify(receipt: &Value) -> bool {
    let sig = &receipt["signature"];
    assert_eq!(sig["alg"], "Ed25519");
    let key: [u8; 32] = URL_SAFE_NO_PAD
        .decode(sig["key_id"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig["sig"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = VerifyingKey::from_bytes(&key).unwrap();
    key.verify(
        canon(receipt, true).as_bytes(),
        &Signature::from_bytes(&sig),
    )
    .is_ok()
}

#[test]
fn the_independent_canonical_form_matches_known_text() {
    let v: Value = serde_json::from_str(
        r#"{"b":1,"a":{"z":null,"y":"é🎉"},"c":[1.0,null,0.1,1e-05],"signature":{},"tee_quote":"q"}"#,
    )
    .unwrap();
    assert_eq!(
        canon(&v, true),
        r#"{"a":{"y":"\u00e9\ud83c\udf89"},"b":1,"c":[1.0,0.1,1e-05]}"#
    );
}

#[tokio::test]
async fn receipts_verify_including_non_ascii_and_tampering_fails() {
    let l = local(LocalConfig::for_tests()).await;
    for (prompt, payment) in [
        ("plain ascii prompt", "2"),
        ("résumé — 日本語 🎉 \"quoted\"\n", "2"),
        (
            "a job paid 10 or more gets a TEE attestation after signing",
            "500",
        ),
    ] {
        let mut body = job_body("multimodal", prompt, "w", payment);
        body["payload"]["tags"] = serde_json::json!(["a", null, "b"]);
        let (status, job) = l.post("/v1/jobs", &body).await;
        assert_eq!(status, StatusCode::CREATED);
        let jid = job["job_id"].as_str().unwrap();
        l.wait_final(jid).await;
        let (status, receipt) = l.get(&format!("/v1/jobs/{jid}/receipt")).await;
        assert_eq!(status, StatusCode::OK);
        for k in [
            "version",
            "receipt_id",
            "job_id",
            "provider",
            "client",
            "status",
            "units",
            "unit_type",
            "unit_price",
            "price",
            "started_at",
            "completed_at",
            "metadata",
        ] {
            assert!(receipt.get(k).is_some(), "receipt lacks {k}");
        }
        assert_eq!(receipt["metadata"]["job_payload"]["prompt"], prompt);
        assert!(
            !receipt["client"].as_str().unwrap().contains(&l.token),
            "the token must not leak"
        );
        assert_eq!(receipt["metadata"]["job_payload"]["tags"][1], Value::Null);
        assert_eq!(
            receipt.get("tee_quote").is_some(),
            payment == "500",
            "the attestation comes with jobs paid 10 or more"
        );
        assert!(verify(&receipt), "receipt for {prompt:?} does not verify");
        // The crate's own verifier agrees with the independent one.
        assert_eq!(aitbc_flow::api::verify_receipt(&receipt), Ok(()));

        let mut unsigned_change = receipt.clone();
        unsigned_change["zk_status"] = "changed".into();
        assert!(verify(&unsigned_change));
        let mut tampered = receipt.clone();
        tampered["metadata"]["result"]["output"] = "forged".into();
        assert!(!verify(&tampered));
        let mut tampered = receipt.clone();
        tampered["price"] = serde_json::json!(1000.0);
        assert!(!verify(&tampered));
    }
    l.stop().await;
}
