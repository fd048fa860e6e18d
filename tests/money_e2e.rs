//! Money end to end, with the real service's quirks on: the real binary against the embedded
//! coordinator started with `--real-quirks` (no refund on cancel, the job view still saying `escrowed`
//! after a refund, jobs paid 10 or more ending COMPLETED with a ZK error and their payment in escrow)
//! and `--fault-refuse-refunds`, and against a stand-in that answers exactly what the upstream wallet
//! daemon and the coordinator answered on 127.0.0.1 (see docs/decisions.md): who pays, refunds asked
//! for and read back, payments still held, and submitting without the balance check.

mod common;
mod support;

use std::time::Duration;

use aitbc_flow::local::{Faults, LocalConfig, WorkerLatency};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use common::{Coord, Out, job_id, run_with_env};
use serde_json::{Value, json};
use support::{PlanDir, Serve, output_within, run_args};

const LIMIT: Duration = Duration::from_secs(60);

/// An embedded coordinator in-process with the real quirks on; jobs take `latency` (a HANG prompt
/// never finishes).
fn quirky(latency: Duration, refuse_refunds: bool) -> Coord {
    Coord::with(LocalConfig {
        real_quirks: true,
        latency: WorkerLatency::uniform(latency),
        faults: Faults {
            refuse_refunds,
            ..Faults::default()
        },
        ..LocalConfig::for_tests()
    })
}

fn submit_args<'a>(prompt: &'a str, payment: &'a str, wallet: &'a str) -> Vec<&'a str> {
    vec![
        "job",
        "submit",
        "--type",
        "inference",
        "--prompt",
        prompt,
        "--payment",
        payment,
        "--wallet",
        wallet,
        "--output",
        "json",
    ]
}

fn issues(v: &Value) -> Vec<String> {
    v["issues"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_cancelled_job_is_refunded_on_request_and_status_reads_the_payment_view() {
    let c = quirky(Duration::from_secs(30), false);
    let sub = c.run(&submit_args("a slow one", "2", "w"), None);
    assert_eq!(sub.code, 0, "{sub:?}");
    let id = job_id(&sub.json());

    let cancel = c.run(&["job", "cancel", &id, "--output", "json"], None);
    assert_eq!(cancel.code, 0, "{cancel:?}");
    let cancel = cancel.json();
    assert_eq!(cancel["status"], "cancelled");
    assert!(
        issues(&cancel)[0].starts_with("the payment is still escrowed"),
        "{cancel}"
    );
    assert!(
        cancel["recommendations"][0]
            .as_str()
            .unwrap()
            .contains(&format!("job refund {id}"))
    );

    // Before the refund: the payment is held, and status says how to get it back.
    let st = c
        .run(&["job", "status", &id, "--output", "json"], None)
        .json();
    assert!(
        issues(&st)[0].starts_with("its payment of 2 AITBC is still held by the service"),
        "{st}"
    );

    let refund = c.run(&["job", "refund", &id], None);
    assert_eq!(refund.code, 0, "{refund:?}");
    assert!(
        refund
            .stdout
            .starts_with(&format!("Refunded 2 AITBC for job {id}")),
        "{refund:?}"
    );
    assert!(
        refund
            .stdout
            .contains("refund     done (payment status: refunded)")
    );

    // The job view still says escrowed; status reports the payment view.
    let st = c
        .run(&["job", "status", &id, "--output", "json"], None)
        .json();
    assert_eq!(st["performance_metrics"]["payment_status"], "refunded");
    assert_eq!(
        st["performance_metrics"]["job_view_payment_status"],
        "escrowed"
    );
    assert_eq!(st["validation_status"], "success", "{st}");
    let bal = c
        .run(&["job", "balance", "w", "--output", "json"], None)
        .json();
    assert_eq!(bal["result"], "10000");

    // Asking again says it was done already.
    let again = c.run(
        &["op"],
        Some(&format!(r#"{{"operation": "refund", "job_id": "{id}"}}"#)),
    );
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.json()["summary"]
            .as_str()
            .unwrap()
            .contains("was already refunded")
    );
}

#[test]
fn a_refused_refund_says_the_amount_is_still_held() {
    let c = quirky(Duration::from_secs(30), true);
    let id = job_id(&c.run(&submit_args("a slow one", "3", "w"), None).json());
    assert_eq!(c.run(&["job", "cancel", &id], None).code, 0);
    let refund = c.run(&["job", "refund", &id, "--output", "json"], None);
    assert_eq!(refund.code, 1, "{refund:?}");
    let v = refund.json();
    assert_eq!(v["operation"], "refund");
    assert_eq!(v["validation_status"], "failed");
    assert_eq!(
        v["summary"],
        format!("The refund of job {id} was refused: 3 AITBC still held")
    );
    assert!(issues(&v)[0].contains("Failed to refund payment"), "{v}");
    assert_eq!(v["performance_metrics"]["held"], 3);

    // A running job is not the client's to take back: refused before anything is asked.
    let running = job_id(&c.run(&submit_args("HANG on", "1", "w"), None).json());
    let out = c.run(&["job", "refund", &running], None);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cancel it first"), "{out:?}");
}

#[test]
fn a_completed_job_with_an_error_is_partial_and_says_its_payment_is_held() {
    let c = quirky(Duration::ZERO, false);
    let mut args = submit_args("a large job", "12", "w");
    args.push("--wait");
    let out = c.run(&args, None);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["status"], "completed");
    assert_eq!(v["validation_status"], "partial");
    let is = issues(&v);
    assert!(
        is.iter().any(|i| i
            == "the job completed with an error: ZK proof required before escrow release (status: generation_failed)"),
        "{is:?}"
    );
    assert!(
        is.iter()
            .any(|i| i.contains("was not released to the provider")),
        "{is:?}"
    );
    assert_eq!(v["performance_metrics"]["receipt_verified"], true);
    let st = c
        .run(&["job", "status", &job_id(&v), "--output", "json"], None)
        .json();
    assert_eq!(st["validation_status"], "partial");
    assert!(
        issues(&st)
            .iter()
            .any(|i| i.starts_with("its payment of 12 AITBC was not released")),
        "{st}"
    );
}

#[test]
fn a_wallet_given_as_an_address_is_sent_as_given() {
    let c = Coord::instant();
    let bal = c
        .run(
            &["job", "balance", "trading-wallet", "--output", "json"],
            None,
        )
        .json();
    let address = bal["performance_metrics"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let out = c.run(&submit_args("paid by address", "5", &address), None);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["performance_metrics"]["buyer_address"], address);
    assert_eq!(v["performance_metrics"]["payer"], "given");
    let bal = c
        .run(
            &["job", "balance", "trading-wallet", "--output", "json"],
            None,
        )
        .json();
    assert_eq!(bal["result"], "9995");

    // By name, the address the balance answer gives is what is sent.
    let text = c.run(
        &[
            "job",
            "submit",
            "--type",
            "inference",
            "--prompt",
            "by name",
            "--payment",
            "1",
            "--wallet",
            "trading-wallet",
        ],
        None,
    );
    assert!(
        text.stdout.contains(&format!(
            "payer      {address} (the wallet's address, from the wallet daemon)"
        )),
        "{text:?}"
    );
}

#[test]
fn without_the_balance_check_the_wallet_is_sent_as_named_and_the_outcome_says_so() {
    let c = Coord::instant();
    let mut args = submit_args("unchecked", "2", "w");
    args.push("--no-balance-check");
    let out = c.run(&args, None);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["validation_status"], "partial");
    assert_eq!(v["performance_metrics"]["payer"], "unresolved");
    assert_eq!(v["performance_metrics"]["buyer_address"], "w");
    let is = issues(&v);
    assert!(
        is.iter().any(|i| i.contains("--no-balance-check")),
        "{is:?}"
    );
    assert!(
        is.iter().any(|i| i.contains("not a chain address")),
        "{is:?}"
    );

    // `op` takes it from the command line only; the input JSON cannot switch the check off.
    let input = r#"{"operation": "submit", "wallet": "w", "job_type": "inference", "prompt": "x", "payment": 2, "no_balance_check": true}"#;
    let checked = c.run(&["op"], Some(input)).json();
    assert_eq!(checked["performance_metrics"]["payer"], "wallet_daemon");
    let unchecked = c.run(&["op", "--no-balance-check"], Some(input)).json();
    assert_eq!(unchecked["performance_metrics"]["payer"], "unresolved");
}

/// A stand-in for the wallet daemon and the coordinator, answering what the upstream ones answered
/// (recorded on 127.0.0.1, 2026-12-01): the daemon's 404 for an unknown wallet, its answer for a wallet
/// created without a chain address (the Ed25519 public key, `"error": "Invalid address format"`), a
/// wallet with an address, and the coordinator's 403 on the balance path.
struct Daemons {
    rt: tokio::runtime::Runtime,
    wallet_url: String,
    coordinator_url: String,
}

fn daemons() -> Daemons {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let answer = |status: u16, body: Value| {
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let wallet = Router::new().fallback(move |req: Request<Body>| async move {
        match req.uri().path() {
            "/v1/wallets/w1/balance" => answer(
                200,
                json!({"wallet_id": "w1", "address": "83a809b36b6854c0b6a7dfbfdbc9261b32a426c847698e6687c3b6cc5531cc13",
                       "balance": 0, "balance_ait": "0 AIT", "chain_id": "ait-devnet", "error": "Invalid address format"}),
            ),
            "/v1/wallets/w2/balance" => answer(
                200,
                json!({"wallet_id": "w2", "address": "0x52908400098527886E0F7030069857D2E4169EE7",
                       "balance": 36000, "balance_ait": "10 AIT", "chain_id": "ait-devnet"}),
            ),
            _ => answer(404, json!({"detail": "Wallet not found"})),
        }
    });
    let coordinator = Router::new().fallback(move |_: Request<Body>| async move {
        answer(403, json!({"detail": "Forbidden"}))
    });
    let (wallet_url, coordinator_url) = rt.block_on(async {
        let mut urls = Vec::new();
        for app in [wallet, coordinator] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            urls.push(format!("http://{}", l.local_addr().unwrap()));
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        (urls[0].clone(), urls[1].clone())
    });
    Daemons {
        rt,
        wallet_url,
        coordinator_url,
    }
}

impl Daemons {
    fn run(&self, c: &Coord, args: &[&str]) -> Out {
        let mut all = args.to_vec();
        all.extend(["--coordinator", &c.url, "--wallet-url", &self.wallet_url]);
        run_with_env(&all, None, &[("AITBC_TOKEN", &c.token)])
    }
}

#[test]
fn the_wallet_daemon_answers_are_worded_as_what_they_mean() {
    let d = daemons();
    let c = Coord::instant();

    let out = d.run(&c, &["job", "balance", "nosuch"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with("error: Wallet not found\n"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("wallet nosuch not found at the wallet daemon")
    );
    assert!(!out.stderr.contains("job id"), "{out:?}");

    // A wallet without a chain address cannot pay by name: nothing is sent.
    let out = d.run(&c, &submit_args("x", "2", "w1"));
    assert_eq!(out.code, 1, "{out:?}");
    let v = out.json();
    assert_eq!(
        v["summary"],
        "No payer address for the wallet: nothing was submitted"
    );
    assert!(issues(&v)[0].contains("Invalid address format"), "{v}");
    let listed = d.run(&c, &["job", "list", "--output", "json"]).json();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 0);

    // A wallet with one pays from its address, checked against its balance in AITBC.
    let v = d.run(&c, &submit_args("x", "2", "w2")).json();
    assert_eq!(v["validation_status"], "success", "{v}");
    assert_eq!(
        v["performance_metrics"]["buyer_address"],
        "0x52908400098527886E0F7030069857D2E4169EE7"
    );
    let out = d.run(&c, &submit_args("x", "11", "w2"));
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("holds 10 AITBC"), "{out:?}");

    // The coordinator alone does not serve balances: say so, not "check your token".
    let out = run_with_env(
        &[
            &submit_args("x", "2", "w2")[..],
            &["--coordinator", &d.coordinator_url],
        ]
        .concat(),
        None,
        &[("AITBC_TOKEN", "t")],
    );
    assert_eq!(out.code, 3, "{out:?}");
    let v = out.json();
    let text = format!("{} {}", issues(&v).join(" "), v["recommendations"]);
    assert!(text.contains("does not serve balances"), "{text}");
    assert!(
        text.contains("AITBC_WALLET_URL") && text.contains("--no-balance-check"),
        "{text}"
    );
    assert!(!text.contains("AITBC_TOKEN"), "{text}");
    drop(d.rt);
}

fn report_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id}"))
}

const HANGING: &str = r#"
version: 1
name: hanging
steps:
  - id: go
    submit: {job_type: inference, wallet: w, payment: 3, prompt: "HANG until cancelled"}
  - id: hold
    wait: {job: "${{ steps.go.job_id }}", timeout: 1s}
"#;

#[test]
fn a_run_asks_for_the_refund_the_service_does_not_make() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet", "--real-quirks"]);
    let dir = PlanDir::new(HANGING);
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()));
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(4));
    let report = report_of(&out);
    assert_eq!(report["totals"]["refunded_per_wallet"]["w"], 3);
    assert_eq!(report["totals"]["held_per_wallet"], json!({}));
    // The job view never learns of the refund; the money is back.
    let jobs = serve.jobs();
    assert_eq!(jobs[0]["state"], "CANCELED");
    assert_eq!(jobs[0]["payment_status"], "escrowed");
    let id = jobs[0]["job_id"].as_str().unwrap();
    assert_eq!(
        serve.get(&format!("/v1/jobs/{id}/payment"))["status"],
        "refunded"
    );
    assert_eq!(serve.get("/v1/wallets/w/balance")["balance_ait"], "100 AIT");
}

#[test]
fn a_refused_refund_is_held_in_the_totals_and_the_step() {
    let serve = Serve::start(&[
        "--fund",
        "w=100",
        "--no-faucet",
        "--real-quirks",
        "--fault-refuse-refunds",
    ]);
    let dir = PlanDir::new(HANGING);
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()));
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(4));
    let report = report_of(&out);
    assert_eq!(report["totals"]["spend_per_wallet"]["w"], 3);
    assert_eq!(report["totals"]["refunded_per_wallet"], json!({}));
    assert_eq!(report["totals"]["held_per_wallet"]["w"], 3);
    let hold = step(&report, "hold");
    assert!(
        issues(hold)
            .iter()
            .any(|i| i.contains("was refused: 3 AITBC still held")),
        "{hold}"
    );
    let summary = std::fs::read_to_string(dir.run_dir().join("summary.md")).unwrap();
    assert!(summary.contains("| w | 3 | 0 | 3 |"), "{summary}");
    assert_eq!(serve.get("/v1/wallets/w/balance")["balance_ait"], "97 AIT");
}

#[test]
fn a_cancel_step_asks_for_the_refund_and_a_big_job_is_partial_with_its_payment_held() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet", "--real-quirks"]);
    let dir = PlanDir::new(
        r#"
version: 1
name: money
steps:
  - id: go
    submit: {job_type: inference, wallet: w, payment: 2, prompt: "HANG until cancelled"}
  - id: stop
    cancel: {job: "${{ steps.go.job_id }}"}
  - id: big
    job: {job_type: inference, wallet: w, payment: 12, prompt: "a large job"}
"#,
    );
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()));
    let out = output_within(cmd, LIMIT);
    let report = report_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let stop = step(&report, "stop");
    assert_eq!(stop["outputs"]["payment_status"], "refunded");
    assert_eq!(stop["outputs"]["refunded"], 2);
    assert_eq!(stop["validation_status"], "success", "{stop}");
    let big = step(&report, "big");
    assert_eq!(big["state"], "succeeded");
    assert_eq!(big["validation_status"], "partial");
    assert!(
        issues(big)
            .iter()
            .any(|i| i.contains("completed with an error: ZK proof required")),
        "{big}"
    );
    assert_eq!(report["totals"]["refunded_per_wallet"]["w"], 2);
    assert_eq!(report["totals"]["held_per_wallet"]["w"], 12);
}

#[test]
fn a_run_without_the_balance_check_says_so_in_its_issues_and_inputs() {
    let serve = Serve::start(&["--fund", "w=1", "--no-faucet"]);
    let dir = PlanDir::new(
        "version: 1\nname: unchecked\nsteps:\n  - id: a\n    job: {job_type: inference, wallet: w, payment: 1, prompt: hi}\n",
    );
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .arg("--no-balance-check");
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(0));
    let report = report_of(&out);
    assert_eq!(report["inputs"]["balance_check"], false);
    assert!(
        report["issues"][0]
            .as_str()
            .unwrap()
            .contains("--no-balance-check"),
        "{report}"
    );
    assert_eq!(
        step(&report, "a")["performance_metrics"]["payer"],
        "unresolved"
    );
    // Without the flag the same plan is checked (and its inputs say nothing of it).
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()));
    let report = report_of(&output_within(cmd, LIMIT));
    assert!(report["inputs"].get("balance_check").is_none(), "{report}");
    assert_eq!(report["status"], "refused", "{report}");
}

#[test]
fn a_failed_job_is_refunded_on_request() {
    let serve = Serve::start(&["--fund", "w=100", "--no-faucet", "--real-quirks"]);
    let dir = PlanDir::new(
        "version: 1\nname: failing\nsteps:\n  - id: a\n    job: {job_type: inference, wallet: w, payment: 4, prompt: \"please FAIL this\"}\n",
    );
    let mut cmd = serve.command();
    cmd.args(run_args(&dir.plan(), &dir.runs()));
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let report = report_of(&out);
    assert_eq!(report["totals"]["refunded_per_wallet"]["w"], 4, "{report}");
    assert_eq!(serve.get("/v1/wallets/w/balance")["balance_ait"], "100 AIT");
    let jobs = serve.jobs();
    assert_eq!(jobs[0]["state"], "FAILED");
    // The job view never learns of it.
    assert_eq!(jobs[0]["payment_status"], "escrowed");
}
