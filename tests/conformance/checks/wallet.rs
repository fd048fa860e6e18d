//! Against the real wallet daemon (`apps/wallet`), which reads balances from the chain in
//! compute-seconds: every account holds 36000 (10 AIT), as in the issue that saw "36000 AITBC".

use super::verify_run;
use crate::flow::{Flow, run_plan, suite_plan, workdir};
use crate::rc::{CHAIN_BALANCE, DAEMON_ADDRESS, DAEMON_WALLET, Service};
use crate::suite::Check;

/// `job balance` says 10 AITBC, never the 36000 compute-seconds of `balance`.
pub fn balance_in_aitbc(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "daemon-balance");
    if let Some(w) = c.ok(svc.wallet(DAEMON_WALLET)) {
        c.note(format!("the wallet daemon answers {w}"));
    }
    let out = Flow::new(
        svc,
        &dir,
        ["job", "balance", DAEMON_WALLET, "--output", "json"],
    )
    .run();
    if !c.expect(out.code == 0, || {
        format!("job balance: exit 0 expected:\n{}", out.show())
    }) {
        return;
    }
    let Some(v) = c.ok(out.json()) else { return };
    let summary = v["summary"].as_str().unwrap_or("");
    c.expect(summary.contains("holds 10 AITBC"), || {
        format!("job balance {DAEMON_WALLET}: \"{summary}\" (the daemon says 10 AIT)")
    });
    let result = v["result"]
        .as_str()
        .map(str::to_string)
        .unwrap_or(v["result"].to_string());
    c.expect(result == "10", || {
        format!(
            "job balance {DAEMON_WALLET}: result {result} (10 AITBC expected; the daemon's `balance` is {CHAIN_BALANCE} compute-seconds)"
        )
    });
}

/// `job balance nosuch`: the daemon's 404 is about the wallet, not about a job.
pub fn unknown_wallet(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "daemon-unknown-wallet");
    let out = Flow::new(svc, &dir, ["job", "balance", "nosuch"]).run();
    let text = out.text();
    let lower = text.to_lowercase();
    c.expect(out.code == 1, || {
        format!("exit 1 expected:\n{}", out.show())
    });
    c.expect(
        text.contains("nosuch") && lower.contains("not found"),
        || {
            format!(
                "the message must say that wallet `nosuch` was not found:\n{}",
                out.show()
            )
        },
    );
    c.expect(
        !lower.contains("job not found") && !lower.contains("job id"),
        || {
            format!(
                "the message talks about a job for an unknown wallet:\n{}",
                out.show()
            )
        },
    );
}

/// `plans/feedback-analysis.yaml` needs 504 AITBC from a wallet holding 10: refused before anything
/// is submitted, with the shortfall said in AITBC.
pub fn unpayable_plan_refused(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "daemon-unpayable");
    let plan =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/feedback-analysis.yaml");
    let before = svc.job_count().unwrap_or(0);
    let out = run_plan(svc, &dir, &plan, &[]).run();
    c.expect(out.code == 1, || {
        format!("exit 1 expected:\n{}", out.show())
    });
    c.expect(out.text().contains("holds 10 AITBC, the plan needs 504: 494 short"), || {
        format!(
            "the refusal must say \"wallet {DAEMON_WALLET} holds 10 AITBC, the plan needs 504: 494 short\":\n{}",
            out.show()
        )
    });
    let after = svc.job_count().unwrap_or(0);
    c.expect(after == before, || {
        format!(
            "{} jobs were submitted by an unpayable plan",
            after.saturating_sub(before)
        )
    });
}

/// A paid job from a wallet of the daemon: the service is asked to escrow from the wallet's address
/// (resolved through the daemon), and the report says so.
pub fn payer_address(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "daemon-payer");
    let mark = svc.mark();
    let out = run_plan(
        svc,
        &dir,
        &suite_plan("one-job.yaml"),
        &["--set", &format!("wallet={DAEMON_WALLET}")],
    )
    .run();
    let Some(r) = verify_run(c, svc, &out, mark, 0) else {
        return;
    };
    let buyers = svc.escrow_buyers_since(mark);
    for (_, job) in r.jobs() {
        match buyers.get(&job) {
            Some(b) => c.note(format!("job {job} was escrowed from `{b}`")),
            None => c.fail(format!("the stand-in chain saw no escrow of job {job}")),
        }
    }
    c.expect(out.stdout.contains(DAEMON_ADDRESS), || {
        format!("the report never names the payer address {DAEMON_ADDRESS}")
    });
}
