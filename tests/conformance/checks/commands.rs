//! Each `job` command and each `op` operation against the real service.

use serde_json::{Value, json};

use crate::flow::{Flow, Out, workdir};
use crate::rc::Service;
use crate::suite::Check;

fn job(svc: &Service, dir: &std::path::Path, args: &[&str]) -> Out {
    let mut a = vec!["job"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--output", "json"]);
    Flow::new(svc, dir, a).run()
}

/// Runs a `job` command that must succeed; its outcome JSON.
fn job_ok(c: &mut Check, svc: &Service, dir: &std::path::Path, args: &[&str]) -> Option<Value> {
    let out = job(svc, dir, args);
    let what = format!("job {}", args.join(" "));
    if !c.expect(out.code == 0, || {
        format!("`{what}`: exit 0 expected:\n{}", out.show())
    }) {
        return None;
    }
    let v = c.ok(out.json().map_err(|e| format!("`{what}`: {e}")))?;
    // `partial`: done, with issues worth saying (an allocation smaller than asked, an escrow kept).
    c.expect(v["validation_status"] != "failed", || {
        format!(
            "`{what}`: validation_status {}: {:?}",
            v["validation_status"], v["issues"]
        )
    });
    Some(v)
}

/// What a fetched result must show: completed, its receipt verified.
fn fetched(c: &mut Check, what: &str, v: &Value) {
    c.expect(v["status"] == "completed", || {
        format!("{what}: status {} (completed expected)", v["status"])
    });
    c.expect(v["performance_metrics"]["receipt_verified"] == true, || {
        format!(
            "{what}: the receipt is not verified: {}",
            v["performance_metrics"]
        )
    });
}

/// `job submit --wait`, `status`, `results`, `list` (with a status filter), `optimize`, `balance`,
/// and the refusals a client must make itself (an unpayable job, an unknown job).
pub fn job_commands(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "job-commands");
    let mark = svc.mark();
    let Some(sub) = job_ok(
        c,
        svc,
        &dir,
        &[
            "submit",
            "--type",
            "inference",
            "--prompt",
            "Conformance: say hello.",
            "--payment",
            "2",
            "--wallet",
            "w1",
            "--wait",
        ],
    ) else {
        return;
    };
    fetched(c, "job submit --wait", &sub);
    let Some(id) = sub["job_id"].as_str().map(str::to_string) else {
        return c.fail(format!("job submit --wait: no job_id in {sub}"));
    };
    if let (Some(buyer), Some(w)) = (
        svc.escrow_buyers_since(mark).get(&id).cloned(),
        c.ok(svc.wallet("w1")),
    ) {
        c.expect(Some(buyer.as_str()) == w["address"].as_str(), || {
            format!(
                "job submit: the service escrowed from `{buyer}`; wallet w1's address is {}",
                w["address"]
            )
        });
    }
    if let Some(v) = job_ok(c, svc, &dir, &["status", &id]) {
        c.expect(v["status"] == "completed", || {
            format!("job status: {}", v["status"])
        });
    }
    if let Some(v) = job_ok(c, svc, &dir, &["results", &id]) {
        fetched(c, "job results", &v);
    }
    if let Some(v) = job_ok(c, svc, &dir, &["list", "--limit", "5"]) {
        let listed = v["jobs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|j| j["job_id"] == id.as_str()));
        c.expect(listed, || {
            format!("job list: {id} is not among {}", v["jobs"])
        });
    }
    if let Some(v) = job_ok(
        c,
        svc,
        &dir,
        &["list", "--status", "completed", "--limit", "5"],
    ) {
        let all = v["jobs"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|j| j["status"] == "completed"));
        c.expect(all, || {
            format!("job list --status completed: {}", v["jobs"])
        });
    }
    if let Some(v) = job_ok(
        c,
        svc,
        &dir,
        &[
            "optimize",
            "--agent-id",
            "conformance-agent",
            "--cpu",
            "4",
            "--memory",
            "16",
            "--gpu",
            "1",
            "--duration",
            "1h",
        ],
    ) {
        c.expect(
            v["resource_allocation"]["allocation_id"].is_string(),
            || {
                format!(
                    "job optimize: no allocation in {}",
                    v["resource_allocation"]
                )
            },
        );
    }
    if let Some(v) = job_ok(c, svc, &dir, &["balance", "w1"]) {
        c.expect(
            v["summary"]
                .as_str()
                .unwrap_or("")
                .contains("holds 100000 AITBC"),
            || {
                format!(
                    "job balance w1: {} (the wallet holds 100000 AIT)",
                    v["summary"]
                )
            },
        );
    }
    if let Some(v) = job_ok(c, svc, &dir, &["balance", "poor"]) {
        c.expect(
            v["summary"]
                .as_str()
                .unwrap_or("")
                .contains("holds 1.5 AITBC"),
            || {
                format!(
                    "job balance poor: {} (the wallet holds 1.5 AIT)",
                    v["summary"]
                )
            },
        );
    }
    let before = svc.job_count().unwrap_or(0);
    let out = job(
        svc,
        &dir,
        &[
            "submit",
            "--type",
            "inference",
            "--prompt",
            "Too dear.",
            "--payment",
            "2",
            "--wallet",
            "poor",
        ],
    );
    c.expect(
        out.code == 1 && out.text().contains("insufficient balance"),
        || {
            format!(
                "job submit from `poor` (1.5 AITBC) for 2 AITBC must be refused:\n{}",
                out.show()
            )
        },
    );
    c.expect(svc.job_count().unwrap_or(0) == before, || {
        "job submit from `poor` created a job".into()
    });
    let out = job(svc, &dir, &["status", "0123456789abcdef0123456789abcdef"]);
    c.expect(
        out.code == 1 && out.text().to_lowercase().contains("not found"),
        || {
            format!(
                "job status of an unknown job: exit 1 and \"not found\" expected:\n{}",
                out.show()
            )
        },
    );
}

/// `job submit` (no wait) of a job that never finishes, `job cancel`, `job refund`: the payment
/// view says refunded, and so does `job status` afterwards.
pub fn job_cancel_refund(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "job-cancel-refund");
    let Some(sub) = job_ok(
        c,
        svc,
        &dir,
        &[
            "submit",
            "--type",
            "inference",
            "--prompt",
            "HANG: cancel me",
            "--payment",
            "2",
            "--wallet",
            "w1",
        ],
    ) else {
        return;
    };
    let Some(id) = sub["job_id"].as_str().map(str::to_string) else {
        return c.fail(format!("job submit: no job_id in {sub}"));
    };
    if let Some(v) = job_ok(c, svc, &dir, &["cancel", &id]) {
        c.expect(v["status"] == "cancelled", || {
            format!("job cancel: status {}", v["status"])
        });
    }
    let out = job(svc, &dir, &["refund", &id]);
    c.expect(out.code == 0 && out.text().contains("refunded"), || {
        format!(
            "job refund {id}: exit 0 and \"refunded\" expected:\n{}",
            out.show()
        )
    });
    if let Some(p) = c.ok(svc.payment(&id)) {
        c.expect(p["status"] == "refunded", || {
            format!(
                "the payment view of {id} says {} after the refund",
                p["status"]
            )
        });
    }
    if let Some(v) = job_ok(c, svc, &dir, &["status", &id]) {
        c.expect(v["performance_metrics"]["payment_status"] == "refunded", || {
            format!(
                "job status {id} after the refund says payment_status {} (the job view's stale value; \
                 the payment view says refunded)",
                v["performance_metrics"]["payment_status"]
            )
        });
    }
}

fn op(c: &mut Check, svc: &Service, dir: &std::path::Path, input: Value) -> Option<Value> {
    let what = format!("op {input}");
    let out = Flow::new(svc, dir, ["op"]).stdin(input.to_string()).run();
    if !c.expect(out.code == 0, || {
        format!("`{what}`: exit 0 expected:\n{}", out.show())
    }) {
        return None;
    }
    let v = c.ok(out.json().map_err(|e| format!("`{what}`: {e}")))?;
    // `partial`: done, with issues worth saying (an allocation smaller than asked, an escrow kept).
    c.expect(v["validation_status"] != "failed", || {
        format!(
            "`{what}`: validation_status {}: {:?}",
            v["validation_status"], v["issues"]
        )
    });
    Some(v)
}

/// Each operation of the operator skill through `op`: submit (with wait), status, results, list,
/// optimize, balance, cancel, and refund (as `job refund`).
pub fn op_operations(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "op");
    let Some(sub) = op(
        c,
        svc,
        &dir,
        json!({"operation": "submit", "wallet": "w1", "job_type": "inference",
               "prompt": "Conformance op: say hello.", "payment": 2, "wait": true}),
    ) else {
        return;
    };
    fetched(c, "op submit (wait)", &sub);
    let Some(id) = sub["job_id"].as_str().map(str::to_string) else {
        return c.fail(format!("op submit: no job_id in {sub}"));
    };
    if let Some(v) = op(c, svc, &dir, json!({"operation": "status", "job_id": id})) {
        c.expect(v["status"] == "completed", || {
            format!("op status: {}", v["status"])
        });
    }
    if let Some(v) = op(c, svc, &dir, json!({"operation": "results", "job_id": id})) {
        fetched(c, "op results", &v);
    }
    if let Some(v) = op(c, svc, &dir, json!({"operation": "list", "limit": 5})) {
        let listed = v["jobs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|j| j["job_id"] == id.as_str()));
        c.expect(listed, || {
            format!("op list: {id} is not among {}", v["jobs"])
        });
    }
    if let Some(v) = op(
        c,
        svc,
        &dir,
        json!({"operation": "optimize", "agent_id": "conformance-op", "cpu": 4, "memory": 16,
               "gpu": 1, "duration": "1h"}),
    ) {
        c.expect(
            v["resource_allocation"]["allocation_id"].is_string(),
            || format!("op optimize: no allocation in {}", v["resource_allocation"]),
        );
    }
    if let Some(v) = op(
        c,
        svc,
        &dir,
        json!({"operation": "balance", "wallet": "w1"}),
    ) {
        c.expect(
            v["summary"]
                .as_str()
                .unwrap_or("")
                .contains("holds 100000 AITBC"),
            || format!("op balance: {}", v["summary"]),
        );
    }
    let Some(hang) = op(
        c,
        svc,
        &dir,
        json!({"operation": "submit", "wallet": "w1", "job_type": "inference",
               "prompt": "HANG: op cancel", "payment": 2}),
    ) else {
        return;
    };
    let Some(hid) = hang["job_id"].as_str().map(str::to_string) else {
        return c.fail(format!("op submit: no job_id in {hang}"));
    };
    if let Some(v) = op(c, svc, &dir, json!({"operation": "cancel", "job_id": hid})) {
        c.expect(v["status"] == "cancelled", || {
            format!("op cancel: {}", v["status"])
        });
    }
    if op(c, svc, &dir, json!({"operation": "refund", "job_id": hid})).is_some()
        && let Some(p) = c.ok(svc.payment(&hid))
    {
        c.expect(p["status"] == "refunded", || {
            format!("op refund: the payment view of {hid} says {}", p["status"])
        });
    }
}
