//! [`execute`] end to end over small plans, against the in-memory [`FakeCoordinator`]: no network, and
//! the tokio clock paused, so that polls and retry delays take no time and every run is the same.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::journal::{self, CancelOutcome, CancelWhy, Kept, Record, Replay, RunCancel, Submission};
use super::{RunOptions, RunOutcome, execute};
use crate::client::fake::{Call, FakeCoordinator, JobScript};
use crate::exit;
use crate::model::Event;
use crate::model::{RunStatus, StepReport, StepState};
use crate::money::Money;
use crate::plan::{CheckedPlan, LoadOptions};

/// A temporary folder for run `r1` and a fake coordinator whose wallets `w` and `v` hold 10 each.
struct Harness {
    dir: tempfile::TempDir,
    fake: Arc<FakeCoordinator>,
}

impl Harness {
    fn new() -> Harness {
        let fake = Arc::new(FakeCoordinator::new());
        fake.fund("w", money(10)).fund("v", money(10));
        Harness {
            dir: tempfile::tempdir().unwrap(),
            fake,
        }
    }

    /// Run `r1` in `runs/r1`, polling fast.
    fn options(&self) -> RunOptions {
        let run_dir = self.dir.path().join("runs/r1");
        std::fs::create_dir_all(&run_dir).unwrap();
        RunOptions {
            poll: (Duration::from_millis(10), Duration::from_millis(50)),
            seed: Some(1),
            ..RunOptions::new("r1", run_dir)
        }
    }

    /// Writes the plan, loads it as `run` does, and runs it to the end; returns the outcome and every
    /// event.
    async fn run_with(
        &self,
        yaml: &str,
        options: RunOptions,
        interrupt: CancellationToken,
    ) -> (RunOutcome, Vec<Event>) {
        let path = self.dir.path().join("plan.yaml");
        std::fs::write(&path, yaml).unwrap();
        let plan: Arc<CheckedPlan> = crate::plan::load(&path, &LoadOptions::default())
            .unwrap_or_else(|d| panic!("the test plan does not load: {d:?}"))
            .into();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let outcome = execute(plan, self.fake.clone(), options, tx, interrupt).await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (outcome, events)
    }

    async fn run(&self, yaml: &str) -> (RunOutcome, Vec<Event>) {
        self.run_with(yaml, self.options(), CancellationToken::new())
            .await
    }

    fn journal(&self) -> Vec<Record> {
        journal::read(&self.dir.path().join("runs/r1/journal.jsonl")).unwrap()
    }
}

fn outcome(status: RunStatus, exit_code: i32) -> RunOutcome {
    RunOutcome { status, exit_code }
}

/// The report of step `id` as its `step_finished` event gave it (exactly one such event per step).
fn report<'a>(events: &'a [Event], id: &str) -> &'a StepReport {
    let mut found = events.iter().filter_map(|e| match e {
        Event::StepFinished { report } if report.id == id => Some(&**report),
        _ => None,
    });
    let r = found
        .next()
        .unwrap_or_else(|| panic!("no step_finished for {id}"));
    assert!(found.next().is_none(), "two step_finished for {id}");
    r
}

/// Where the first event that matches is, in the stream.
fn position(events: &[Event], what: impl Fn(&Event) -> bool) -> usize {
    events.iter().position(what).expect("no such event")
}

fn issues(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RunIssue { message } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

/// The `job_cancelled` events: step, payment status read back, amount refunded.
fn cancels(events: &[Event]) -> Vec<(&str, Option<&str>, Option<Money>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::JobCancelled {
                id,
                payment_status,
                refunded,
                ..
            } => Some((id.as_str(), payment_status.as_deref(), *refunded)),
            _ => None,
        })
        .collect()
}

/// The job step `step` of run `r1` submitted.
fn job_of(fake: &FakeCoordinator, step: &str) -> crate::api::JobView {
    let cref = format!("r1/{step}");
    fake.jobs()
        .into_iter()
        .find(|j| j.client_ref() == Some(cref.as_str()))
        .unwrap_or_else(|| panic!("no job of {step}"))
}

fn money(n: i64) -> Money {
    Money::from_int(n)
}

const CHAIN: &str = r#"
version: 1
name: chain
steps:
  - id: a
    job: {job_type: inference, wallet: w, payment: 2, prompt: "alpha"}
  - id: b
    job: {job_type: inference, wallet: w, payment: 3, prompt: "after ${{ steps.a.output }}"}
  - id: c
    job: {job_type: inference, wallet: v, payment: 1, prompt: "gamma"}
"#;

#[tokio::test(start_paused = true)]
async fn a_submit_answer_that_is_already_final_is_not_polled() {
    let h = Harness::new();
    h.fake.script_others(JobScript::completes_at_submit());
    let (out, events) = h.run(CHAIN).await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert_eq!(h.fake.calls(Call::Submit), 3);
    assert_eq!(
        h.fake.calls(Call::Job),
        0,
        "no poll of a job already COMPLETED"
    );
    // The result is still fetched and its receipt checked.
    assert_eq!(h.fake.calls(Call::Result), 3);
    assert_eq!(
        report(&events, "a").outcome.status,
        Some(crate::model::OpStatus::Completed)
    );
    assert_eq!(job_of(&h.fake, "b").payload["prompt"], "after ok: alpha");
}

#[tokio::test(start_paused = true)]
async fn a_plan_runs_to_the_end_in_dependency_order() {
    let h = Harness::new();
    h.fake.script("a", [JobScript::completes_after(2)]);
    let (out, events) = h.run(CHAIN).await;

    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert!(matches!(events.first(), Some(Event::RunStarted { .. })));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            status: RunStatus::Succeeded,
            exit_code: 0,
            ..
        })
    ));
    for id in ["a", "b", "c"] {
        assert_eq!(report(&events, id).state, StepState::Succeeded, "{id}");
    }
    // b starts only once a has finished, and sees a's output.
    let a_done = position(
        &events,
        |e| matches!(e, Event::StepFinished { report } if report.id == "a"),
    );
    let b_start = position(
        &events,
        |e| matches!(e, Event::StepStarted { id, .. } if id == "b"),
    );
    assert!(a_done < b_start);
    assert_eq!(job_of(&h.fake, "b").payload["prompt"], "after ok: alpha");
    assert_eq!(h.fake.jobs().len(), 3);
    assert_eq!(h.fake.calls(Call::Submit), 3);
    assert_eq!(h.fake.balance_of("w"), money(5));
    assert_eq!(h.fake.balance_of("v"), money(9));
    assert!(issues(&events).is_empty(), "{:?}", issues(&events));

    // The journal: a versioned header, the intents, the steps, the end.
    let records = h.journal();
    assert!(matches!(
        records.first(),
        Some(Record::Run {
            version: journal::JOURNAL_VERSION,
            attempt: 0,
            ..
        })
    ));
    let intents = records
        .iter()
        .filter(|r| matches!(r, Record::Intent { .. }))
        .count();
    assert_eq!(intents, 3);
    assert!(
        matches!(records.last(), Some(Record::End { status, exit_code: 0 }) if status == "succeeded")
    );
}

#[tokio::test(start_paused = true)]
async fn fail_fast_skips_the_dependents_and_cancels_what_still_runs() {
    let h = Harness::new();
    h.fake
        .script("a", [JobScript::fails_after(1, "out of memory")])
        .script("c", [JobScript::never_finishes()]);
    let (out, events) = h.run(CHAIN).await;

    assert_eq!(out, outcome(RunStatus::Failed, exit::STEP_FAILED));
    let a = report(&events, "a");
    assert_eq!(a.state, StepState::Failed);
    assert!(
        a.outcome.summary.contains("out of memory"),
        "{}",
        a.outcome.summary
    );
    assert_eq!(
        issues(&events),
        ["step `a` failed; stopping the run (fail-fast)"]
    );
    let b = report(&events, "b");
    assert_eq!(b.state, StepState::Skipped);
    assert_eq!(b.outcome.summary, "Step skipped: needs `a`, which failed");
    assert_eq!(report(&events, "c").state, StepState::Cancelled);
    // The job still running was cancelled, and its refund asked for and read back.
    assert_eq!(cancels(&events), [("c", Some("refunded"), Some(money(1)))]);
    assert_eq!(h.fake.balance_of("v"), money(10));
    assert_eq!(h.fake.calls(Call::Submit), 2, "b was never sent");
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            status: RunStatus::Failed,
            exit_code: 1,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_cancels_the_running_job_and_ends_the_run_interrupted() {
    let h = Harness::new();
    h.fake.script_others(JobScript::never_finishes());
    let interrupt = CancellationToken::new();
    let ctrl_c = interrupt.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        ctrl_c.cancel();
    });
    let hanging = "version: 1\nname: hanging\nsteps:\n  - id: hang\n    job: {job_type: inference, wallet: w, payment: 2, prompt: forever}\n  - id: later\n    needs: [hang]\n    balance: {wallet: w}\n";
    let (out, events) = h.run_with(hanging, h.options(), interrupt).await;

    assert_eq!(out, outcome(RunStatus::Interrupted, exit::INTERRUPTED));
    assert_eq!(
        issues(&events),
        ["interrupted: cancelling the jobs still running"]
    );
    assert_eq!(report(&events, "hang").state, StepState::Cancelled);
    let later = report(&events, "later");
    assert_eq!(later.state, StepState::Skipped);
    assert_eq!(
        later.outcome.summary,
        "Step skipped: needs `hang`, which did not finish"
    );
    assert_eq!(
        cancels(&events),
        [("hang", Some("refunded"), Some(money(2)))]
    );
    assert_eq!(h.fake.balance_of("w"), money(10));
    assert!(
        matches!(h.journal().last(), Some(Record::End { status, exit_code: 130 }) if status == "interrupted")
    );
}

#[tokio::test(start_paused = true)]
async fn a_plan_that_cannot_be_paid_is_refused_before_anything_is_sent() {
    let h = Harness::new();
    h.fake.fund("w", money(1));
    let (out, events) = h.run(CHAIN).await;

    assert_eq!(out, outcome(RunStatus::Refused, exit::STEP_FAILED));
    assert_eq!(
        issues(&events),
        ["wallet w holds 1 AITBC, the plan needs 5: 4 short"]
    );
    assert_eq!(h.fake.calls(Call::Submit), 0);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::StepStarted { .. } | Event::StepFinished { .. }))
    );
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_that_never_answers_the_preflight_ends_the_run_unreachable() {
    let h = Harness::new();
    // The default retry policy makes three attempts.
    for _ in 0..3 {
        h.fake.fail_next(
            Call::Balance,
            FakeCoordinator::unavailable("/v1/wallets/v/balance"),
        );
    }
    let (out, events) = h.run(CHAIN).await;

    assert_eq!(out, outcome(RunStatus::Unreachable, exit::UNREACHABLE));
    let issues = issues(&events);
    assert_eq!(issues.len(), 1);
    assert!(
        issues[0].starts_with(
            "balance preflight failed: cannot check the balance of wallet v: coordinator unavailable"
        ),
        "{issues:?}"
    );
    assert_eq!(h.fake.calls(Call::Balance), 3);
    assert_eq!(h.fake.calls(Call::Submit), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_submit_answer_is_found_by_its_client_reference_not_paid_twice() {
    let h = Harness::new();
    h.fake
        .lose_next_answer(Call::Submit, FakeCoordinator::unavailable("/v1/jobs"));
    let one = "version: 1\nname: one\nsteps:\n  - id: a\n    job: {job_type: inference, wallet: w, payment: 2, prompt: alpha}\n";
    let (out, events) = h.run(one).await;

    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert_eq!(h.fake.jobs().len(), 1);
    assert_eq!(h.fake.calls(Call::Submit), 1);
    assert!(h.fake.calls(Call::List) >= 1);
    assert_eq!(h.fake.balance_of("w"), money(8));
    let errors: Vec<&str> = report(&events, "a")
        .attempts
        .iter()
        .filter_map(|t| t.error.as_deref())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("the job was found by its client reference")),
        "{errors:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_keeps_the_steps_done_before_and_runs_the_rest() {
    let h = Harness::new();
    // a (2) was paid in the earlier start: only b (3) and c (1) must be covered now.
    h.fake.fund("w", money(3)).fund("v", money(1));
    let mut a = crate::model::StepReport::blank("a", "job");
    a.state = StepState::Succeeded;
    let mut outputs = Map::new();
    outputs.insert("output".into(), json!("ok: alpha"));
    let earlier_job = "ea05c15ab4f94d369c35d96c8fc39ac5";
    let replay = Replay {
        run_id: "r1".into(),
        attempts: 1,
        done: [(
            "a".to_string(),
            Kept::new(a, journal::Outputs::of(&outputs), Default::default()),
        )]
        .into(),
        submissions: [(
            "a".to_string(),
            vec![Submission {
                number: 1,
                client_ref: "r1/a".into(),
                wallet: "w".into(),
                payment: money(2),
                buyer_address: None,
                job_id: Some(earlier_job.into()),
                cancelled: None,
            }],
        )]
        .into(),
        ..Replay::default()
    };
    let options = RunOptions {
        resume: Some(Arc::new(replay)),
        ..h.options()
    };
    let (out, events) = h.run_with(CHAIN, options, CancellationToken::new()).await;

    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert_eq!(h.fake.calls(Call::Submit), 2, "a is not sent again");
    assert_eq!(
        job_of(&h.fake, "b").payload["prompt"],
        "after ok: alpha",
        "a's journaled outputs"
    );
    // The report hears of a's job again, and a is not started.
    assert!(events.iter().any(|e| matches!(e, Event::JobSubmitted { id, job_id, .. } if id == "a" && job_id == earlier_job)));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::StepStarted { id, .. } if id == "a"))
    );
    assert_eq!(report(&events, "a").state, StepState::Succeeded);
    let records = h.journal();
    assert!(matches!(
        records.first(),
        Some(Record::Run { attempt: 1, .. })
    ));
    // a's record is in the journal from the earlier start: it is not written again.
    let again = records
        .iter()
        .any(|r| matches!(r, Record::Step { report, .. } if report.id == "a"));
    assert!(!again, "a is not journaled again");
    assert!(
        records
            .iter()
            .any(|r| matches!(r, Record::Step { report, .. } if report.id == "b"))
    );
}

/// The `payment_held` events: step, wallet, amount, and whether a note came with it.
fn held(events: &[Event]) -> Vec<(&str, &str, Money, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PaymentHeld {
                id,
                wallet,
                amount,
                note,
                ..
            } => Some((id.as_str(), wallet.as_str(), *amount, note.is_some())),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_payer_sent_is_the_wallets_address_from_its_balance() {
    let h = Harness::new();
    let (out, events) = h.run(CHAIN).await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    let w = crate::client::fake::address_of("w");
    let v = crate::client::fake::address_of("v");
    let buyers = h.fake.buyers();
    assert_eq!(buyers.len(), 3);
    assert_eq!(
        buyers.iter().filter(|b| b.as_deref() == Some(&w)).count(),
        2
    );
    assert_eq!(
        buyers.iter().filter(|b| b.as_deref() == Some(&v)).count(),
        1
    );
    // The fake escrows from the wallet the address belongs to.
    assert_eq!(h.fake.balance_of("w"), money(5));
    let a = report(&events, "a");
    let m = a.outcome.performance_metrics.as_ref().unwrap().to_value();
    assert_eq!(m["buyer_address"], json!(w));
    assert_eq!(m["payer"], "wallet_daemon");
    assert_eq!(a.outputs.to_value()["buyer_address"], json!(w));
    // The journal knows what was sent, for a resume.
    assert!(
        h.journal()
            .iter()
            .any(|r| matches!(r, Record::Intent { buyer_address: Some(b), .. } if *b == w))
    );
}

#[tokio::test(start_paused = true)]
async fn without_the_balance_check_nothing_is_read_and_the_wallet_is_sent_as_named() {
    let h = Harness::new();
    let options = RunOptions {
        balance_check: crate::ops::payer::BalanceCheck::Off,
        ..h.options()
    };
    let (out, events) = h.run_with(CHAIN, options, CancellationToken::new()).await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert_eq!(h.fake.calls(Call::Balance), 0);
    let run_issues = issues(&events);
    assert_eq!(run_issues.len(), 1);
    assert!(
        run_issues[0].contains("--no-balance-check"),
        "{run_issues:?}"
    );
    let mut buyers: Vec<String> = h.fake.buyers().into_iter().flatten().collect();
    buyers.sort();
    assert_eq!(buyers, ["v", "w", "w"]);
    let a = report(&events, "a");
    assert_eq!(
        a.outcome.performance_metrics.as_ref().unwrap().to_value()["payer"],
        "unresolved"
    );
    assert!(
        a.outcome
            .issues
            .iter()
            .any(|i| i.contains("--no-balance-check"))
            && a.outcome
                .issues
                .iter()
                .any(|i| i.contains("not a chain address")),
        "{:?}",
        a.outcome.issues
    );
}

#[tokio::test(start_paused = true)]
async fn a_refund_refused_after_a_timeout_is_a_payment_held() {
    let h = Harness::new();
    h.fake.script_others(JobScript::never_finishes()).fail_next(
        Call::Refund,
        crate::client::ClientError::Invalid {
            url: "http://fake.coordinator.invalid/v1/payments/p/refund".into(),
            status: 400,
            message: "Failed to refund payment".into(),
            details: vec![],
        },
    );
    let plan = "version: 1\nname: slow\nsteps:\n  - id: hang\n    timeout: 2s\n    job: {job_type: inference, wallet: w, payment: 2, prompt: forever}\n";
    let (out, events) = h.run(plan).await;
    assert_eq!(out, outcome(RunStatus::TimedOut, exit::TIMEOUT));
    assert_eq!(cancels(&events), [("hang", Some("escrowed"), None)]);
    assert_eq!(held(&events), [("hang", "w", money(2), true)]);
    let note = events
        .iter()
        .find_map(|e| match e {
            Event::PaymentHeld { note, .. } => note.clone(),
            _ => None,
        })
        .unwrap();
    assert!(
        note.contains("refund")
            && note.contains("2 AITBC still held")
            && note.contains("Failed to refund payment"),
        "{note}"
    );
    assert_eq!(h.fake.balance_of("w"), money(8));
}

#[tokio::test(start_paused = true)]
async fn a_completed_job_with_an_error_is_partial_and_its_payment_held() {
    let h = Harness::new();
    h.fake.fund("w", money(20)).script(
        "big",
        [JobScript::completes_held(
            1,
            "ZK proof required before escrow release (status: generation_failed)",
        )],
    );
    let plan = "version: 1\nname: big\nsteps:\n  - id: big\n    job: {job_type: inference, wallet: w, payment: 12, prompt: large}\n";
    let (out, events) = h.run(plan).await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    let big = report(&events, "big");
    assert_eq!(big.state, StepState::Succeeded);
    assert_eq!(
        big.outcome.validation_status,
        crate::model::ValidationStatus::Partial
    );
    assert!(
        big.outcome
            .issues
            .iter()
            .any(|i| i.contains("completed with an error: ZK proof required"))
            && big
                .outcome
                .issues
                .iter()
                .any(|i| i.contains("not released to the provider")),
        "{:?}",
        big.outcome.issues
    );
    assert_eq!(held(&events), [("big", "w", money(12), false)]);
}

#[tokio::test(start_paused = true)]
async fn a_job_left_waiting_behind_a_slow_service_is_reported_stuck() {
    let h = Harness::new();
    h.fake.script_others(JobScript::never_finishes());
    for _ in 0..2 {
        h.fake.fail_next(
            Call::Job,
            crate::client::ClientError::Timeout {
                url: "http://fake.coordinator.invalid/v1/jobs/x".into(),
                after: Duration::from_secs(10),
            },
        );
    }
    let plan = "version: 1\nname: slow\nsteps:\n  - id: hang\n    timeout: 3s\n    job: {job_type: inference, wallet: w, payment: 2, prompt: forever}\n";
    let (out, events) = h.run(plan).await;
    assert_eq!(out, outcome(RunStatus::TimedOut, exit::TIMEOUT));
    let r = report(&events, "hang");
    assert!(
        r.outcome
            .summary
            .contains("it looks stuck: still RUNNING while the service was slow or failing: 2 of"),
        "{}",
        r.outcome.summary
    );
    assert!(
        r.outcome
            .recommendations
            .iter()
            .any(|x| x.contains("may never have reached its miner")),
        "{:?}",
        r.outcome.recommendations
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_is_refunded_before_it_is_submitted_again() {
    let h = Harness::new();
    h.fake.script(
        "flaky",
        [
            JobScript::fails_after(1, "GPU fell off"),
            JobScript::completes_after(1),
        ],
    );
    let plan = "version: 1\nname: flaky\nsteps:\n  - id: flaky\n    retry: {max_attempts: 2, on: [job_failed], initial: 1s}\n    job: {job_type: inference, wallet: w, payment: 2, prompt: again}\n";
    let (out, events) = h.run(plan).await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    // Two jobs paid 2 each; the failed one was refunded (the fake, like the real service, keeps its
    // escrow until asked).
    assert_eq!(h.fake.calls(Call::Submit), 2);
    assert_eq!(h.fake.calls(Call::Refund), 1);
    assert_eq!(h.fake.balance_of("w"), money(8));
    let refunded: Vec<(&str, Money)> = events
        .iter()
        .filter_map(|e| match e {
            Event::PaymentRefunded { id, amount, .. } => Some((id.as_str(), *amount)),
            _ => None,
        })
        .collect();
    assert_eq!(refunded, [("flaky", money(2))]);
}

/// A plan whose `hang` job runs until the run is interrupted (2 s in), then `later`.
const HANGING: &str = "version: 1\nname: hanging\nsteps:\n  - id: hang\n    job: {job_type: inference, wallet: w, payment: 2, prompt: forever}\n  - id: later\n    needs: [hang]\n    balance: {wallet: w}\n";

/// Runs `plan` until an interrupt 2 s in; returns the journal folded for a resume.
async fn interrupted(h: &Harness, plan: &str) -> Arc<Replay> {
    let interrupt = CancellationToken::new();
    let ctrl_c = interrupt.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        ctrl_c.cancel();
    });
    let (out, _) = h.run_with(plan, h.options(), interrupt).await;
    assert_eq!(out, outcome(RunStatus::Interrupted, exit::INTERRUPTED));
    Arc::new(journal::replay(&mut h.journal()).unwrap())
}

fn resumed(h: &Harness, replay: Arc<Replay>, pay_again: bool) -> RunOptions {
    RunOptions {
        resume: Some(replay),
        pay_again,
        ..h.options()
    }
}

fn refund_refused() -> crate::client::ClientError {
    crate::client::ClientError::Invalid {
        url: "http://fake.coordinator.invalid/v1/payments/p/refund".into(),
        status: 400,
        message: "Failed to refund payment".into(),
        details: vec![],
    }
}

/// The client references of the jobs the fake holds, oldest first.
fn refs(fake: &FakeCoordinator) -> Vec<String> {
    fake.jobs()
        .iter()
        .map(|j| j.client_ref().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_journal_says_which_jobs_the_run_cancelled_and_what_became_of_their_payment() {
    let h = Harness::new();
    h.fake.script_others(JobScript::never_finishes());
    interrupted(&h, HANGING).await;
    let job = job_of(&h.fake, "hang").job_id.to_string();
    let cancels: Vec<(CancelWhy, Option<CancelOutcome>)> = h
        .journal()
        .into_iter()
        .filter_map(|r| match r {
            Record::Cancel {
                step,
                submission: 1,
                job_id,
                why,
                outcome,
            } if step == "hang" && job_id == job => Some((why, outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(
        cancels,
        [
            (CancelWhy::Interrupted, None),
            (
                CancelWhy::Interrupted,
                Some(CancelOutcome {
                    state: Some("CANCELED".into()),
                    payment_status: Some("refunded".into()),
                    refunded: Some(money(2)),
                    held: None,
                })
            )
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_resume_submits_again_a_job_the_run_cancelled_once_its_refund_is_confirmed() {
    let h = Harness::new();
    h.fake.script(
        "hang",
        [JobScript::never_finishes(), JobScript::completes_after(1)],
    );
    let replay = interrupted(&h, HANGING).await;
    assert_eq!(h.fake.balance_of("w"), money(10), "refunded on the way out");

    let (out, events) = h
        .run_with(
            HANGING,
            resumed(&h, replay, false),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    // Submitted again as its second submission, with a new client reference and key; paid once.
    assert_eq!(refs(&h.fake), ["r1/hang", "r1/hang#2"]);
    assert_eq!(h.fake.balance_of("w"), money(8));
    let hang = report(&events, "hang");
    assert_eq!(hang.state, StepState::Succeeded);
    assert!(
        hang.outcome.issues.iter().any(|i| i.contains(
            "was cancelled by the run when it was interrupted and its payment of 2 AITBC refunded: the step was submitted again"
        )),
        "{:?}",
        hang.outcome.issues
    );
    assert!(h.journal().iter().any(|r| matches!(r, Record::Intent { step, submission: 2, client_ref, .. } if step == "hang" && client_ref == "r1/hang#2")));
    // Resumed again, the run is done: nothing more is sent.
    let replay = Arc::new(journal::replay(&mut h.journal()).unwrap());
    let (out, _) = h
        .run_with(
            HANGING,
            resumed(&h, replay, false),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert_eq!(h.fake.calls(Call::Submit), 2);
}

#[tokio::test(start_paused = true)]
async fn a_job_the_run_cancelled_that_completed_after_all_is_used_not_paid_again() {
    let h = Harness::new();
    h.fake.script_others(JobScript::never_finishes());
    let replay = interrupted(&h, HANGING).await;
    h.fake.post_late_results();
    let (out, events) = h
        .run_with(
            HANGING,
            resumed(&h, replay, false),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert_eq!(h.fake.calls(Call::Submit), 1);
    let hang = report(&events, "hang");
    assert_eq!(hang.state, StepState::Succeeded);
    assert_eq!(hang.outcome.result, Some(json!("ok: forever")));
    assert!(
        hang.outcome
            .issues
            .iter()
            .any(|i| i.contains("completed after all: its result is used")),
        "{:?}",
        hang.outcome.issues
    );
}

#[tokio::test(start_paused = true)]
async fn a_refund_not_confirmed_is_paid_again_only_with_pay_again() {
    let h = Harness::new();
    h.fake
        .script(
            "hang",
            [JobScript::never_finishes(), JobScript::completes_after(1)],
        )
        .fail_next(Call::Refund, refund_refused());
    let replay = interrupted(&h, HANGING).await;
    assert_eq!(h.fake.balance_of("w"), money(8), "the refund was refused");
    assert!(matches!(
        &replay.submission("hang", 1).unwrap().cancelled,
        Some(RunCancel { why: CancelWhy::Interrupted, outcome: Some(o) }) if o.held == Some(money(2))
    ));

    // Asked again at the resume, refused again: nothing is sent, and the step says what is held.
    h.fake.fail_next(Call::Refund, refund_refused());
    let (out, events) = h
        .run_with(
            HANGING,
            resumed(&h, replay, false),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(out, outcome(RunStatus::Failed, exit::STEP_FAILED));
    assert_eq!(h.fake.calls(Call::Submit), 1);
    let hang = report(&events, "hang");
    assert_eq!(hang.state, StepState::Failed);
    let issue = &hang.outcome.issues[0];
    assert!(
        issue.contains("its refund is not confirmed: 2 AITBC may still be held by the service")
            && issue.contains("Failed to refund payment")
            && issue.contains("nothing was submitted again"),
        "{issue}"
    );
    assert!(
        hang.outcome
            .recommendations
            .iter()
            .any(|r| r.contains("--pay-again")),
        "{:?}",
        hang.outcome.recommendations
    );

    // With --pay-again it is submitted and paid again, the first payment reported as held.
    h.fake.fail_next(Call::Refund, refund_refused());
    let replay = Arc::new(journal::replay(&mut h.journal()).unwrap());
    let (out, events) = h
        .run_with(HANGING, resumed(&h, replay, true), CancellationToken::new())
        .await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert_eq!(refs(&h.fake), ["r1/hang", "r1/hang#2"]);
    assert_eq!(h.fake.balance_of("w"), money(6));
    assert_eq!(held(&events), [("hang", "w", money(2), true)]);

    // And without the fault, a later resume would have found the refund made and paid nothing more.
    let h = Harness::new();
    h.fake
        .script(
            "hang",
            [JobScript::never_finishes(), JobScript::completes_after(1)],
        )
        .fail_next(Call::Refund, refund_refused());
    let replay = interrupted(&h, HANGING).await;
    let (out, _) = h
        .run_with(
            HANGING,
            resumed(&h, replay, false),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert_eq!(h.fake.balance_of("w"), money(8));
}

/// A `submit` step whose job a later `wait` was following when the run stopped is unfinished: the
/// resume submits it again (its refund confirmed), and the `wait` and `fetch` follow the new job.
#[tokio::test(start_paused = true)]
async fn a_submit_step_whose_job_was_cancelled_on_the_way_out_runs_again() {
    let h = Harness::new();
    h.fake.script(
        "s",
        [JobScript::never_finishes(), JobScript::completes_after(1)],
    );
    let plan = "version: 1\nname: split\nsteps:\n  - id: s\n    submit: {job_type: inference, wallet: w, payment: 2, prompt: split}\n  - id: w\n    wait: {job: \"${{ steps.s.job_id }}\", timeout: 1h}\n  - id: f\n    needs: [w]\n    fetch: {job: \"${{ steps.s.job_id }}\"}\n";
    let replay = interrupted(&h, plan).await;
    assert!(!replay.done.contains_key("s"), "its job was cancelled");
    let (out, events) = h
        .run_with(plan, resumed(&h, replay, false), CancellationToken::new())
        .await;
    assert_eq!(out, outcome(RunStatus::Succeeded, exit::SUCCESS));
    assert_eq!(refs(&h.fake), ["r1/s", "r1/s#2"]);
    let second = h.fake.jobs()[1].job_id.clone();
    assert_eq!(report(&events, "f").outcome.job_id, Some(second));
    assert_eq!(h.fake.balance_of("w"), money(8));
}
