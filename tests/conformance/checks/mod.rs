//! The checks, by area, and what every run against the real service must show (`verify_run`).

pub mod commands;
pub mod login;
pub mod money;
pub mod pacing;
pub mod plans;
pub mod upstream_cli;
pub mod wallet;

use std::collections::HashMap;

use serde_json::Value;

use crate::flow::{Out, Report};
use crate::rc::{Mark, Service};
use crate::suite::Check;

/// What every run must show: the exit code expected, every fetched receipt verified, a COMPLETED job
/// with an `error` surfaced, balances in AITBC as the wallet says them, the wallet's address (not its
/// name) as the payer, and no 429 (the service's limits are on). Returns the report.
pub fn verify_run(
    c: &mut Check,
    svc: &Service,
    out: &Out,
    mark: Mark,
    expect_code: i32,
) -> Option<Report> {
    c.expect(out.code == expect_code, || {
        format!("exit {} expected, got:\n{}", expect_code, out.show())
    });
    let report = Report(c.ok(out.json())?);
    receipts_verified(c, &report);
    completed_with_error_surfaced(c, svc, &report);
    balances_in_aitbc(c, svc, &report);
    payer_is_the_address(c, svc, &report, mark);
    no_429(c, svc, &report, mark);
    Some(report)
}

/// Every step that fetched a result carries its receipt, verified.
pub fn receipts_verified(c: &mut Check, r: &Report) {
    let mut bad = Vec::new();
    for s in r.steps() {
        let fetched =
            matches!(s["kind"].as_str(), Some("job" | "fetch")) && s["state"] == "succeeded";
        if !fetched {
            continue;
        }
        let id = s["id"].as_str().unwrap_or("?");
        match s["receipt"].get("verified") {
            Some(Value::Bool(true)) => {}
            Some(v) => bad.push(format!(
                "step `{id}`: the receipt of job {} did not verify (verified: {v})",
                s["job_id"]
            )),
            None => bad.push(format!("step `{id}` fetched a result but has no receipt")),
        }
    }
    c.expect_none("fetched results without a verified receipt", bad);
}

/// A job that ended COMPLETED with an `error` (a job paid ≥ 10 whose ZK proof failed: the payment
/// stays in escrow) is reported with that error and the unreleased payment as issues.
pub fn completed_with_error_surfaced(c: &mut Check, svc: &Service, r: &Report) {
    // One list read for every job of the run (not one read each: the service's limits are on).
    let Some(views) = c.ok(svc.jobs_with_ref(&format!("{}/", r.run_id()))) else {
        return;
    };
    for (step, job) in r.jobs() {
        let Some(view) = views.iter().find(|v| v["job_id"] == job.as_str()) else {
            continue;
        };
        let Some(error) = view["error"].as_str().filter(|e| !e.is_empty()) else {
            continue;
        };
        if view["state"] != "COMPLETED" {
            continue;
        }
        let issues = r.issues_of_job(&job);
        let said = issues.iter().any(|i| i.contains(error));
        let payment = issues.iter().any(|i| {
            let i = i.to_lowercase();
            i.contains("escrow") || i.contains("not released") || i.contains("unreleased")
        });
        c.expect(said && payment, || {
            format!(
                "step `{step}`: job {job} ended COMPLETED with the error \"{error}\" and its payment {}; the \
                 report must say both as issues (error said: {said}, unreleased payment said: {payment}); \
                 the issues of its steps: {issues:?}",
                view["payment_status"]
            )
        });
    }
}

/// A balance step says the balance in AITBC as the wallet's `balance_ait` gives it (never the
/// compute-seconds of `balance`).
pub fn balances_in_aitbc(c: &mut Check, svc: &Service, r: &Report) {
    for s in r.steps() {
        if s["kind"] != "balance" || s["state"] != "succeeded" {
            continue;
        }
        let Some(wallet) = s["wallet"].as_str() else {
            continue;
        };
        let Some(w) = c.ok(svc.wallet(wallet)) else {
            continue;
        };
        let ait = w["balance_ait"]
            .as_str()
            .and_then(|t| t.strip_suffix(" AIT"))
            .unwrap_or("?");
        let summary = s["summary"].as_str().unwrap_or("");
        c.expect(summary.contains(&format!("holds {ait} AITBC")), || {
            format!(
                "step `{}`: the wallet answered {} (= {ait} AITBC), the step says \"{summary}\"",
                s["id"].as_str().unwrap_or("?"),
                w
            )
        });
    }
}

/// The chain was asked to escrow each paid job from the wallet's address (what the wallet answers
/// as `address`), not from the wallet's name; the report says which address was sent.
pub fn payer_is_the_address(c: &mut Check, svc: &Service, r: &Report, mark: Mark) {
    let buyers = svc.escrow_buyers_since(mark);
    let mut addresses: HashMap<String, Option<String>> = HashMap::new();
    let (mut wrong, mut unsaid) = (Vec::new(), Vec::new());
    for s in r.steps() {
        let (Some(job), Some(wallet)) = (s["job_id"].as_str(), s["wallet"].as_str()) else {
            continue;
        };
        if !matches!(s["kind"].as_str(), Some("job" | "submit")) {
            continue;
        }
        let Some(buyer) = buyers.get(job) else {
            continue; // no chain behind the coordinator: nothing was escrowed
        };
        let address = addresses
            .entry(wallet.to_string())
            .or_insert_with(|| {
                svc.wallet(wallet)
                    .ok()
                    .and_then(|w| w["address"].as_str().map(str::to_string))
            })
            .clone();
        let Some(address) = address else {
            c.fail(format!("the wallet gives no address for {wallet}"));
            continue;
        };
        let id = s["id"].as_str().unwrap_or("?");
        if buyer != &address {
            wrong.push(format!(
                "step `{id}`: the service escrowed job {job} from `{buyer}`; wallet {wallet}'s address is {address}"
            ));
        }
        if !s.to_string().contains(&address) {
            unsaid.push(format!("step `{id}`: {address} is not in its report entry"));
        }
    }
    c.expect_none(
        "paid jobs escrowed from another payer than the wallet's address",
        wrong,
    );
    c.expect_none(
        "paid jobs whose report does not say which payer address was sent",
        unsaid,
    );
}

/// No request of the run was answered 429: neither in the report's attempts nor in the
/// coordinator's log.
pub fn no_429(c: &mut Check, svc: &Service, r: &Report, mark: Mark) {
    let attempts = r.rate_limited_attempts();
    c.expect(attempts.is_empty(), || {
        format!(
            "{} attempts ended in a 429, e.g. {:?}",
            attempts.len(),
            &attempts[..attempts.len().min(3)]
        )
    });
    let served = svc.client_429s_since(mark);
    c.expect(served.is_empty(), || {
        format!(
            "the coordinator answered 429 {} times, e.g. on {:?}",
            served.len(),
            &served[..served.len().min(3)]
        )
    });
}

/// The issues of an outcome JSON (`job …` / `op`).
pub fn outcome_issues(v: &Value) -> Vec<String> {
    v["issues"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
