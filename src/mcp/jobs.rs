//! The skill's operations as tools. A call's arguments become the skill's input ([`OpInput`]), checked
//! as `op` checks it; `status`, `results`, `list`, `optimize` and `balance` then run exactly as `op`
//! runs them ([`crate::op::execute`]). `submit` and `cancel` run the same operations with what only the
//! server has around them:
//!
//! - `submit` reserves its payment under the spend cap before anything is sent, and keeps it counted
//!   once the coordinator took the job (or may have: a lost answer counts); with `wait` it reports the
//!   job's progress; when the caller cancels the call (while it waits, or while the job was being
//!   sent) it cancels the job and asks for its refund.
//!   A job that ended without a result has its refund asked for too.
//! - `cancel` asks for the refund of the job it cancelled.
//!
//! A refund that the coordinator confirms gives the payment back to the spend cap.

use std::time::Instant;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::server::State;
use crate::api::{JobId, JobState, JobView};
use crate::client::Coordinator;
use crate::model::{Operation, Outcome};
use crate::op::OpInput;
use crate::ops::{self, Conn, OpError};
use crate::policy::Policy;

/// The skill's input for a tool's arguments: `operation` is the tool's, and every argument must be
/// one of the tool's fields (`fields`). `Err` says which argument did not fit.
pub fn input(
    op: Operation,
    arguments: Option<&Map<String, Value>>,
    fields: &[String],
) -> Result<OpInput, String> {
    let mut args = arguments.cloned().unwrap_or_default();
    if let Some(unknown) = args.keys().find(|k| !fields.iter().any(|f| f == *k)) {
        return Err(format!(
            "`{unknown}` is not an argument of `{}`: it takes {}",
            op.as_str(),
            fields.join(", ")
        ));
    }
    args.insert("operation".into(), Value::String(op.as_str().into()));
    OpInput::from_json(&Value::Object(args).to_string())
}

/// Runs one of the skill's operations; every failure is the skill's failed output.
pub async fn call<C: Coordinator>(
    state: &State<C>,
    input: &OpInput,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Outcome {
    let op = input.operation.unwrap_or(Operation::Status);
    if let Some(failed) = crate::op::precheck(input) {
        return failed.output;
    }
    let started = Instant::now();
    match op {
        Operation::Submit => {
            let mut notes = Vec::new();
            let result = submit(state, input, progress, cancel, &mut notes).await;
            let mut out = crate::op::finish(op, input, result, started).output;
            out.issues.extend(notes);
            out.settle()
        }
        Operation::Cancel => {
            let result = cancel_job(state, input).await;
            crate::op::finish(op, input, result, started).output
        }
        Operation::Refund => {
            let result = refund_job(state, input).await;
            crate::op::finish(op, input, result, started).output
        }
        _ => {
            crate::op::execute(&*state.coord, input, &state.op_options())
                .await
                .output
        }
    }
}

/// Submit under the spend cap; with `wait`, wait (reporting progress, giving up when `cancel` fires)
/// and fetch the result. `notes` gets what the outcome should also say (a refund).
async fn submit<C: Coordinator>(
    state: &State<C>,
    input: &OpInput,
    progress: &Progress,
    cancel: &CancellationToken,
    notes: &mut Vec<String>,
) -> Result<Outcome, OpError> {
    let req = crate::op::job_request(input)?;
    let reservation = state
        .cap
        .reserve(&req.wallet, req.payment)
        .map_err(|e| OpError::Rules(vec![e]))?;
    let conn = state.conn().with_trace(progress);
    let submitted = match ops::submit::submit(
        &conn,
        &req,
        &Policy::default(),
        ops::payer::BalanceCheck::On,
    )
    .await
    {
        Ok(s) => {
            state.cap.paid(reservation, s.answer.view.job_id.as_str());
            s
        }
        Err(e) => {
            // A lost answer may hide an accepted job: its payment stays counted.
            match &e {
                OpError::Client(c) if c.may_have_committed() => state.cap.paid_unknown(reservation),
                _ => state.cap.release(reservation),
            }
            return Err(e);
        }
    };
    let view = &submitted.answer.view;
    if cancel.is_cancelled() {
        // The caller gave up while the job was being sent: nobody will learn its id, so it is not
        // left running (and paid).
        return Ok(abandon(state, &state.conn(), &view.job_id).await);
    }
    if !input.wait.unwrap_or(false) {
        return Ok(submitted.outcome);
    }
    progress.report(0.0, format!("job {} submitted", view.job_id));
    let timeout = input.timeout.unwrap_or(state.options.wait_timeout);
    let last = tokio::select! {
        waited = ops::wait::wait(&conn, &view.job_id, timeout) => waited?,
        _ = cancel.cancelled() => return Ok(abandon(state, &state.conn(), &view.job_id).await),
    };
    if last.state != JobState::Completed {
        if let Some(note) = refund(state, &conn, &last).await {
            notes.push(note);
        }
        return Err(OpError::JobEnded {
            last: Box::new(last),
        });
    }
    progress.report(
        90.0,
        format!("job {} completed: fetching its result", view.job_id),
    );
    let fetched = ops::results::results(&conn, &last.job_id, Some(&last))
        .await?
        .outcome;
    progress.report(100.0, format!("job {} done", view.job_id));
    Ok(ops::submit::completed(
        submitted.outcome,
        fetched,
        &req,
        &view.job_id,
    ))
}

/// The caller gave up waiting: cancel the job and ask for its refund. Nobody reads the answer (the
/// protocol drops a cancelled call's result); the log says what became of the job.
async fn abandon<C: Coordinator>(state: &State<C>, conn: &Conn<'_, C>, job: &JobId) -> Outcome {
    match ops::cancel::cancel(conn, job).await {
        Ok(done) => {
            let note = refund(state, conn, &done.answer).await;
            tracing::info!(
                "the call waiting for job {job} was cancelled: job {}, {}",
                done.answer.state,
                note.as_deref().unwrap_or("no refund confirmed")
            );
            done.outcome
        }
        Err(e) => {
            tracing::warn!(
                "the call waiting for job {job} was cancelled, but the job was not: {e}"
            );
            e.outcome(Operation::Cancel)
        }
    }
}

/// Asks for the refund of a job that ended unpaid-out (cancelled, failed, expired); a confirmed one
/// gives its payment back to the spend cap. Returns what to tell the caller.
async fn refund<C: Coordinator>(
    state: &State<C>,
    conn: &Conn<'_, C>,
    view: &JobView,
) -> Option<String> {
    let r = settle(conn, view).await;
    if !r.refunded {
        return None;
    }
    let back = state.cap.refunded(view.job_id.as_str());
    Some(match back {
        Some(amount) => format!(
            "the payment of job {} was refunded ({amount} AITBC back under the spend cap)",
            view.job_id
        ),
        None => format!("the payment of job {} was refunded", view.job_id),
    })
}

/// `refund`: ask for the refund of a job's payment (`ops::refund`); a confirmed one gives its payment
/// back to the spend cap.
async fn refund_job<C: Coordinator>(state: &State<C>, input: &OpInput) -> Result<Outcome, OpError> {
    let job: JobId = input
        .job_id
        .as_deref()
        .unwrap_or_default()
        .trim()
        .parse()
        .map_err(OpError::Input)?;
    let conn = state.conn();
    let done = ops::refund::refund(&conn, &job, None).await?;
    let mut out = done.outcome;
    if done.answer.settled.refunded().is_some()
        && let Some(amount) = state.cap.refunded(job.as_str())
    {
        out.recommendations
            .push(format!("{amount} AITBC is back under the spend cap"));
    }
    Ok(out)
}

/// What a refund asked for came to: confirmed or not, and the payment status read back.
struct Settle {
    refunded: bool,
    payment_status: Option<String>,
}

/// Asks for the refund of a job that ended unpaid-out (`ops::refund`), reading its payment back.
async fn settle<C: Coordinator>(conn: &Conn<'_, C>, view: &JobView) -> Settle {
    match ops::refund::settle(conn, view).await {
        Ok((payment, settled)) => Settle {
            refunded: settled.refunded().is_some(),
            payment_status: payment.map(|p| p.status),
        },
        Err(_) => Settle {
            refunded: false,
            payment_status: None,
        },
    }
}

/// `cancel`: cancel the job, then ask for its refund and say the payment status read back.
async fn cancel_job<C: Coordinator>(state: &State<C>, input: &OpInput) -> Result<Outcome, OpError> {
    let job: JobId = input
        .job_id
        .as_deref()
        .unwrap_or_default()
        .trim()
        .parse()
        .map_err(OpError::Input)?;
    let conn = state.conn();
    let done = ops::cancel::cancel(&conn, &job).await?;
    let r = settle(&conn, &done.answer).await;
    if r.refunded {
        state.cap.refunded(job.as_str());
    }
    if done.outcome.failed() {
        // Already final: the outcome says so; a refund asked for a failed or expired job is added.
        let mut out = done.outcome;
        if r.refunded {
            out.issues
                .push(format!("the payment of job {job} was refunded"));
        }
        return Ok(out);
    }
    let mut view = done.answer;
    view.payment_status = r.payment_status.or(view.payment_status);
    Ok(ops::cancel::outcome(&view))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::client::ClientError;
    use crate::client::fake::{Call, FakeCoordinator, JobScript};
    use crate::mcp::server::{Options, Server};
    use crate::money::Money;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn server(fake: FakeCoordinator, caps: &[&str]) -> Server<FakeCoordinator> {
        let mut options = Options::new(std::env::temp_dir());
        for c in caps {
            options.caps.add(c).unwrap();
        }
        fake.fund("w", m("100"));
        Server::new(Arc::new(fake), options)
    }

    async fn call(s: &Server<FakeCoordinator>, tool: &str, args: Value) -> Value {
        let args = args.as_object().cloned();
        let a = s
            .call(
                tool,
                args.as_ref(),
                Progress::none(),
                &CancellationToken::new(),
            )
            .await;
        let mut v = a.value;
        v["is_error"] = json!(a.is_error);
        v
    }

    fn submit(payment: &str, wait: bool) -> Value {
        json!({"job_type": "inference", "prompt": "p", "payment": payment, "wallet": "w", "wait": wait})
    }

    fn left(s: &Server<FakeCoordinator>) -> Option<Money> {
        s.state().cap.left().total
    }

    #[tokio::test]
    async fn a_refused_submit_pays_nothing_and_a_lost_answer_stays_counted() {
        let fake = FakeCoordinator::new();
        fake.fail_next(
            Call::Submit,
            ClientError::Invalid {
                url: "u".into(),
                status: 422,
                message: "no".into(),
                details: Vec::new(),
            },
        );
        let s = server(fake, &["5"]);
        let out = call(&s, "submit", submit("2", false)).await;
        assert_eq!(out["is_error"], true, "{out}");
        assert_eq!(left(&s), Some(m("5")));
        // No answer, and the job is not found by its reference either: it may still exist.
        s.state()
            .coord
            .fail_next(Call::Submit, FakeCoordinator::unavailable("/v1/jobs"));
        let out = call(&s, "submit", submit("2", false)).await;
        assert_eq!(out["summary"], "Service unavailable", "{out}");
        assert_eq!(left(&s), Some(m("3")));
        let out = call(&s, "submit", submit("3.5", false)).await;
        assert_eq!(
            out["summary"], "Spend cap reached: 3 AITBC left to spend",
            "{out}"
        );
        assert_eq!(s.state().coord.calls(Call::Submit), 2);
    }

    #[tokio::test]
    async fn cancel_asks_for_the_refund_and_gives_the_payment_back_under_the_cap() {
        let fake = FakeCoordinator::new();
        fake.script_others(JobScript::never_finishes());
        let s = server(fake, &["5"]);
        let out = call(&s, "submit", submit("4", false)).await;
        assert_eq!(out["is_error"], false, "{out}");
        assert_eq!(left(&s), Some(m("1")));
        let job = out["job_id"].as_str().unwrap().to_string();
        let out = call(&s, "cancel", json!({ "job_id": job })).await;
        assert_eq!(out["status"], "cancelled", "{out}");
        assert_eq!(out["performance_metrics"]["payment_status"], "refunded");
        assert!(out["issues"].as_array().unwrap().is_empty(), "{out}");
        assert_eq!(left(&s), Some(m("5")));
        assert_eq!(s.state().coord.balance_of("w"), m("100"));
        // Cancelling it again refunds nothing twice.
        let out = call(&s, "cancel", json!({ "job_id": job })).await;
        assert_eq!(out["is_error"], true, "{out}");
        assert_eq!(left(&s), Some(m("5")));
        assert_eq!(s.state().coord.calls(Call::Refund), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_cancels_the_job_and_asks_for_its_refund() {
        let fake = FakeCoordinator::new();
        fake.script_others(JobScript::never_finishes());
        let s = server(fake, &["5"]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let got = seen.clone();
        let progress = Progress::to(move |p, _| {
            got.lock().unwrap().push(p);
            async {}
        });
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            stop.cancel();
        });
        let args = submit("4", true);
        let a = s.call("submit", args.as_object(), progress, &cancel).await;
        assert_eq!(a.value["status"], "cancelled", "{}", a.value);
        let coord = &s.state().coord;
        assert_eq!(coord.calls(Call::Cancel), 1);
        assert_eq!(coord.calls(Call::Refund), 1);
        assert_eq!(coord.jobs()[0].state, JobState::Canceled);
        assert_eq!(coord.balance_of("w"), m("100"));
        assert_eq!(left(&s), Some(m("5")));
        assert_eq!(*seen.lock().unwrap(), vec![0.0, 50.0]);
    }

    #[tokio::test]
    async fn a_submit_whose_caller_gave_up_while_it_was_sent_is_cancelled() {
        let fake = FakeCoordinator::new();
        fake.script_others(JobScript::never_finishes());
        let s = server(fake, &["5"]);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let args = submit("4", false);
        s.call("submit", args.as_object(), Progress::none(), &cancel)
            .await;
        let coord = &s.state().coord;
        assert_eq!(coord.calls(Call::Submit), 1);
        assert_eq!(coord.jobs()[0].state, JobState::Canceled);
        assert_eq!(coord.balance_of("w"), m("100"));
        assert_eq!(left(&s), Some(m("5")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_job_has_its_refund_asked_for() {
        let fake = FakeCoordinator::new();
        fake.script_others(JobScript::fails_after(1, "out of memory"));
        let s = server(fake, &["5"]);
        let out = call(&s, "submit", submit("4", true)).await;
        assert_eq!(out["is_error"], true, "{out}");
        assert!(
            out["summary"].as_str().unwrap().ends_with("ended FAILED"),
            "{out}"
        );
        assert!(
            out["issues"].as_array().unwrap().iter().any(|i| i
                .as_str()
                .unwrap()
                .contains("was refunded (4 AITBC back under the spend cap)")),
            "{out}"
        );
        assert_eq!(left(&s), Some(m("5")));
    }

    #[test]
    fn arguments_become_the_skills_input_or_a_clear_refusal() {
        let fields: Vec<String> = ["wallet"].iter().map(|s| s.to_string()).collect();
        let args = json!({"wallet": "w"});
        let i = input(Operation::Balance, args.as_object(), &fields).unwrap();
        assert_eq!(i.operation, Some(Operation::Balance));
        assert_eq!(i.wallet.as_deref(), Some("w"));
        let args = json!({"wallet": "w", "operation": "submit"});
        let e = input(Operation::Balance, args.as_object(), &fields).unwrap_err();
        assert_eq!(
            e,
            "`operation` is not an argument of `balance`: it takes wallet"
        );
    }
}
