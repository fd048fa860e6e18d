//! Money against the real service: a cancel with refund inside a run, the balance check (and the
//! only way to go without it), and paid jobs with no chain behind the coordinator.

use std::time::Duration;

use serde_json::Value;

use super::{outcome_issues, verify_run};
use crate::flow::{Flow, Report, run_plan, suite_plan, workdir};
use crate::rc::Service;
use crate::suite::Check;

fn amount(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.parse().ok())
}

/// A wait that times out on a job that never finishes: the runner cancels it and asks for the
/// refund; the report and `job status` say refunded, as the payment view does.
pub fn run_cancel_refund(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "run-cancel-refund");
    let mark = svc.mark();
    let out = run_plan(svc, &dir, &suite_plan("cancel-refund.yaml"), &[]).run();
    let Some(r) = verify_run(c, svc, &out, mark, 4) else {
        return;
    };
    let Some(job) = r
        .steps()
        .iter()
        .find(|s| s["id"] == "hang")
        .and_then(|s| s["job_id"].as_str())
        .map(str::to_string)
    else {
        return c.fail("the report names no job for step `hang`");
    };
    let refunded = amount(&r.0["totals"]["refunded_per_wallet"]["refund-wallet"]);
    c.expect(refunded == Some(2.0), || {
        format!(
            "totals.refunded_per_wallet says {} for refund-wallet (2 AITBC refunded expected)",
            r.0["totals"]["refunded_per_wallet"]
        )
    });
    if let Some(p) = c.ok(svc.payment(&job)) {
        c.expect(p["status"] == "refunded", || {
            format!("the payment view of {job} says {}", p["status"])
        });
    }
    let issues = r.issues_of_job(&job);
    c.expect(issues.iter().any(|i| i.contains("refunded")), || {
        format!("the report does not say the payment of {job} was refunded: {issues:?}")
    });
    let st = Flow::new(svc, &dir, ["job", "status", &job, "--output", "json"]).run();
    if let Some(v) = c.ok(st.json()) {
        c.expect(
            v["performance_metrics"]["payment_status"] == "refunded",
            || {
                format!(
                    "job status {job} says payment_status {} (the payment view says refunded)",
                    v["performance_metrics"]["payment_status"]
                )
            },
        );
    }
}

/// With no wallet daemon configured (the coordinator answers 403 on balances): balances, submits
/// and runs stop with exit 3 and say that balances come from `AITBC_WALLET_URL`; the operator can
/// go without the check only with `--no-balance-check` on the command line, and it is reported.
pub fn balance_check_off(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "balance-check-off");
    let no_wallet = |args: &[&str]| {
        Flow::new(svc, &dir, args.iter().copied())
            .unset("AITBC_WALLET_URL")
            .run()
    };
    let says_wallet_url = |o: &crate::flow::Out| o.text().contains("AITBC_WALLET_URL");
    let out = no_wallet(&["job", "balance", "w1"]);
    c.expect(out.code == 3 && says_wallet_url(&out), || {
        format!(
            "job balance without a wallet daemon: exit 3 and a word on AITBC_WALLET_URL expected:\n{}",
            out.show()
        )
    });
    let before = svc.job_count().unwrap_or(0);
    let submit = [
        "job",
        "submit",
        "--type",
        "inference",
        "--prompt",
        "No balance check.",
        "--payment",
        "1",
        "--wallet",
        "w1",
        "--output",
        "json",
    ];
    let out = no_wallet(&submit);
    c.expect(out.code == 3 && says_wallet_url(&out), || {
        format!(
            "job submit without a wallet daemon: exit 3 and a word on AITBC_WALLET_URL expected:\n{}",
            out.show()
        )
    });
    let out = no_wallet(&[&submit[..], &["--no-balance-check", "--wait"]].concat());
    if c.expect(out.code == 0, || {
        format!(
            "job submit --no-balance-check without a wallet daemon: exit 0 expected:\n{}",
            out.show()
        )
    }) && let Some(v) = c.ok(out.json())
    {
        let issues = outcome_issues(&v);
        c.expect(issues.iter().any(|i| i.contains("balance")), || {
            format!("job submit --no-balance-check: no issue says the balance was not checked: {issues:?}")
        });
    }
    let plan = suite_plan("one-job.yaml");
    let plan_s = plan.display().to_string();
    let run = [
        "run",
        plan_s.as_str(),
        "--runs-dir",
        "runs",
        "--output",
        "json",
        "-q",
    ];
    let out = no_wallet(&run);
    c.expect(out.code == 3 && says_wallet_url(&out), || {
        format!(
            "run without a wallet daemon: exit 3 and a word on AITBC_WALLET_URL expected:\n{}",
            out.show()
        )
    });
    let out = no_wallet(&[&run[..], &["--no-balance-check"]].concat());
    if c.expect(out.code == 0, || {
        format!(
            "run --no-balance-check without a wallet daemon: exit 0 expected:\n{}",
            out.show()
        )
    }) && let Some(v) = c.ok(out.json())
    {
        let issues = Report(v).issues();
        c.expect(issues.iter().any(|i| i.contains("balance")), || {
            format!("run --no-balance-check: the report's issues do not say the balance check was off: {issues:?}")
        });
    }
    let after = svc.job_count().unwrap_or(0);
    c.expect(after == before + 2, || {
        format!(
            "{} jobs were created; only the two with --no-balance-check may have been",
            after.saturating_sub(before)
        )
    });
}

/// With no chain behind the coordinator: two paid jobs succeed (receipts verified, the ~7 s submit
/// recorded among the step's attempts), and the refund of a cancelled one, refused after ~14 s, is
/// an issue with the amount still held.
pub fn no_chain(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "no-chain");
    let mark = svc.mark();
    let out = run_plan(svc, &dir, &suite_plan("no-chain.yaml"), &[])
        .limit(Duration::from_secs(240))
        .run();
    let Some(r) = verify_run(c, svc, &out, mark, 4) else {
        return;
    };
    for s in r.steps() {
        let id = s["id"].as_str().unwrap_or("?");
        if !id.starts_with("paid") {
            continue;
        }
        c.expect(s["state"] == "succeeded", || {
            format!("step `{id}` {}: {}", s["state"], s["summary"])
        });
        let longest = s["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["duration_ms"].as_u64())
            .max()
            .unwrap_or(0);
        c.expect(longest >= 5000, || {
            format!(
                "step `{id}`: its submit held the service ~7 s, its longest attempt is recorded as {longest} ms: \
                 the submit itself is missing from `attempts`: {}",
                s["attempts"]
            )
        });
    }
    let Some(job) = r
        .steps()
        .iter()
        .find(|s| s["id"] == "hang")
        .and_then(|s| s["job_id"].as_str())
        .map(str::to_string)
    else {
        return c.fail("the report names no job for step `hang`");
    };
    if let Some(p) = c.ok(svc.payment(&job)) {
        c.note(format!(
            "the payment of the cancelled job is {}",
            p["status"]
        ));
        c.expect(p["status"] != "refunded", || {
            format!("the payment of {job} was refunded although no chain answers")
        });
    }
    c.expect(
        r.0["totals"]["refunded_per_wallet"]
            .get("nochain-wallet")
            .is_none(),
        || {
            format!(
                "totals.refunded_per_wallet says {}",
                r.0["totals"]["refunded_per_wallet"]
            )
        },
    );
    let issues = r.issues_of_job(&job);
    c.expect(
        issues
            .iter()
            .any(|i| i.contains("refund") && i.contains("2 AITBC")),
        || {
            format!(
                "the refused refund of {job} is not reported with the amount still held (2 AITBC): {issues:?}"
            )
        },
    );
}
