//! Each step kind, carried out by the operation layer ([`crate::ops`]) and wrapped in what only a run
//! has: the step's retry policy and attempt records, the client reference and idempotency key of each
//! submission, the journal's intent record under the wallet's lock, re-attaching on resume, tracking
//! the jobs in flight, the step's outputs for later templates, and saving results.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::journal::{CancelOutcome, CancelWhy, Record};
use super::runner::{Ctx, InFlight, finish_outputs};
use crate::api::{JobId, JobState, JobView};
use crate::client::{ClientError, Coordinator};
use crate::model::{
    Attempt, Event, JobRequest, JobType, JsonText, OpStatus, ReceiptCheck, StepReport, StepState,
    ValidationStatus,
};
use crate::money::Money;
use crate::ops::payer::{BalanceCheck, Payer};
use crate::ops::refund::Settled;
use crate::ops::retry::{FailureClass, RetryPolicy};
use crate::ops::{Conn, OpError, Trace};
use crate::plan::PlannedStep;
use crate::plan::check::RenderedStep;
use crate::plan::status::Gate;
use crate::plan::types::{OnTimeout, RetryOn};

/// How a step failed, for the run's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepFailure {
    /// It failed (a job failed, a request was refused, a check did not pass).
    Failed,
    /// It ran out of time.
    TimedOut,
    /// The coordinator could not be reached.
    Unreachable,
    /// The coordinator refused our credentials.
    Refused,
    /// The run was stopped while it ran.
    Cancelled,
}

/// What a step produced.
#[derive(Debug)]
pub struct StepResult {
    /// Its report entry.
    pub report: StepReport,
    /// Its outputs (for later templates), when it succeeded.
    pub outputs: Map<String, Value>,
    /// How it failed, if it did.
    pub failure: Option<StepFailure>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Replaces secret values everywhere in a step's report entry (a prompt that embeds a secret comes back
/// in outputs, results and the receipt's copy of the payload).
fn redact_report(plan: &crate::plan::CheckedPlan, r: &mut StepReport) {
    if plan.secrets.values().all(|s| s.is_empty()) {
        return;
    }
    let o = &mut r.outcome;
    o.summary = plan.redact(&o.summary);
    for text in o.issues.iter_mut().chain(o.recommendations.iter_mut()) {
        *text = plan.redact(text);
    }
    if let Some(m) = &mut o.performance_metrics {
        let mut v = m.to_value();
        plan.redact_value(&mut v);
        *m = JsonText::of(&v);
    }
    for v in [&mut o.result, &mut o.resource_allocation]
        .into_iter()
        .flatten()
    {
        plan.redact_value(v);
    }
    for v in o.jobs.iter_mut().flatten() {
        plan.redact_value(v);
    }
    for a in &mut r.attempts {
        if let Some(e) = &mut a.error {
            *e = plan.redact(e);
        }
    }
    if let Some(rc) = &mut r.receipt {
        let text = plan.redact(rc.receipt.get());
        if text != rc.receipt.get()
            && let Ok(raw) = serde_json::value::RawValue::from_string(text)
        {
            rc.receipt = raw;
        }
    }
}

/// The outputs a step's report keeps, as text: those later steps saw, less the receipt and the raw
/// result (they are in `receipt` and `result` already, and a report of 10,000 steps should not hold
/// them twice), secrets redacted. Written from the outputs themselves: no copy unless a secret is
/// to be redacted.
fn shown_outputs(plan: &crate::plan::CheckedPlan, outputs: &Map<String, Value>) -> JsonText {
    /// The outputs less those two, as a map to serialize.
    struct Shown<'a>(&'a Map<String, Value>);
    impl serde::Serialize for Shown<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(
                self.0
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "receipt" | "result")),
            )
        }
    }
    if plan.secrets.values().all(|s| s.is_empty()) {
        return JsonText::of(&Shown(outputs));
    }
    let mut v = serde_json::to_value(Shown(outputs)).unwrap_or(Value::Null);
    plan.redact_value(&mut v);
    JsonText::of(&v)
}

/// An empty report entry for a step.
pub fn blank_report(step: &PlannedStep) -> StepReport {
    StepReport::blank(&step.id, step.kind.name())
}

/// The report of a step that did not run because of its `when` or a dependency.
pub fn skipped_report(step: &PlannedStep, reason: &str) -> StepReport {
    StepReport::skipped(&step.id, step.kind.name(), reason)
}

/// The report of a step the run never reached.
pub fn not_started_report(step: &PlannedStep, reason: &str) -> StepReport {
    StepReport::not_started(&step.id, step.kind.name(), reason)
}

/// A failure inside a step, with what to tell the user.
struct Fail {
    kind: StepFailure,
    issue: String,
    recommendations: Vec<String>,
}

impl Fail {
    fn new(kind: StepFailure, issue: impl Into<String>) -> Fail {
        Fail {
            kind,
            issue: issue.into(),
            recommendations: Vec::new(),
        }
    }
    fn recommend(mut self, r: impl Into<String>) -> Fail {
        self.recommendations.push(r.into());
        self
    }
    /// An operation's failure, with the operation's own advice.
    fn from_op(e: OpError) -> Fail {
        let kind = match (&e, e.client()) {
            (OpError::WaitTimeout { .. }, _)
            | (_, Some(ClientError::Timeout { .. } | ClientError::OutOfTime { .. })) => {
                StepFailure::TimedOut
            }
            (_, Some(ClientError::Unavailable { .. })) => StepFailure::Unreachable,
            (_, Some(ClientError::Auth { .. })) => StepFailure::Refused,
            _ => StepFailure::Failed,
        };
        Fail {
            kind,
            issue: e.to_string(),
            recommendations: e.recommendations(),
        }
    }
}

impl From<OpError> for Fail {
    fn from(e: OpError) -> Fail {
        Fail::from_op(e)
    }
}

/// What a step's operations tell the run: each attempt goes into the step's report and, when it failed,
/// onto the event stream; retry jitter is drawn from the run's (seedable) RNG; state changes of a job
/// being waited for are events.
struct StepTrace<'a, C> {
    ctx: &'a Ctx<C>,
    step: &'a str,
    attempts: Mutex<Vec<Attempt>>,
}

impl<C: Send + Sync> Trace for StepTrace<'_, C> {
    fn attempt(&self, mut attempt: Attempt) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        // Numbered within the step: every request the step sends is one of its attempts, so that
        // "attempt 1" names one request, not the first of each.
        attempt.number = attempts.len() as u32 + 1;
        if attempt.error.is_some() {
            self.ctx.emit(Event::AttemptFailed {
                id: self.step.to_string(),
                attempt: attempt.clone(),
            });
        }
        attempts.push(attempt);
    }
    fn delay(&self, policy: &RetryPolicy, next: u32, retry_after: Option<Duration>) -> Duration {
        self.ctx.retry_delay(policy, next, retry_after)
    }
    fn job_state(&self, job: &JobId, state: JobState) {
        self.ctx.emit(Event::JobState {
            id: self.step.to_string(),
            job_id: job.to_string(),
            state: state.to_string(),
        });
    }
}

/// Runs one step to its end, honouring the run's cancellation and the step's timeout.
pub(crate) async fn run_step<C: Coordinator>(ctx: &Ctx<C>, step: &PlannedStep) -> StepResult {
    let started = Instant::now();
    let mut report = blank_report(step);
    let started_at = now();
    report.started_at = Some(started_at.clone());
    ctx.emit(Event::StepStarted {
        id: step.id.clone(),
        at: started_at,
    });

    // `when` and rendering see the outputs of the steps finished so far, and how the run goes.
    let run = ctx.run_now();
    let gate = crate::plan::status::gate_of(step.when.as_ref());
    let rendered = {
        let outs = ctx.outputs.read().unwrap_or_else(|p| p.into_inner());
        match ctx.plan.should_run(step, &outs, &run) {
            Ok(false) => {
                // A status step says why, from how the run went (`skipped: no step failed`).
                let mut r = if gate == Gate::Success {
                    let why = match ctx.plan.skipped_by_group(step, &outs, &run) {
                        Some(g) => format!("the `when` of its group `{g}` is false"),
                        None => "its `when` condition is false".to_string(),
                    };
                    skipped_report(step, &why)
                } else {
                    let why =
                        crate::plan::status::skipped_because(gate, &run.status, &run.failed_steps);
                    let shown = why.strip_prefix("skipped: ").unwrap_or(&why).to_string();
                    skipped_report(step, &shown).gated(gate.name(), why)
                };
                r.started_at = report.started_at.clone();
                r.finished_at = Some(now());
                return StepResult {
                    report: r,
                    outputs: Map::new(),
                    failure: None,
                };
            }
            Ok(true) => {
                if gate != Gate::Success {
                    report.when = Some(gate.name().to_string());
                    report.reason = Some(crate::plan::status::ran_because(
                        gate,
                        &run.status,
                        &run.failed_steps,
                    ));
                }
                ctx.plan.render(step, &outs, &run)
            }
            Err(d) => Err(d),
        }
    };
    let rendered = match rendered {
        Ok(r) => r,
        Err(d) => {
            let fail = Fail::new(StepFailure::Failed, ctx.plan.redact(&d.message));
            return finish(ctx, step, report, started, Err(fail));
        }
    };

    report.request = super::cache::request_record(&ctx.plan, &rendered).map(JsonText::from);
    // The step's timeout bounds its work: the operations end their waits, polls, reads and retry
    // delays by this deadline (a `Retry-After` past it ends the step as a timeout that names it).
    let timeout = step_timeout(step, &rendered);
    let deadline = tokio::time::Instant::now() + timeout;
    let trace = StepTrace {
        ctx,
        step: &step.id,
        attempts: Mutex::new(Vec::new()),
    };
    let conn = Conn {
        coord: &*ctx.coord,
        retry: RetryPolicy::new(step.retry.clone()),
        poll: ctx.poll,
        trace: &trace,
        deadline: Some(deadline),
    };
    let work = run_kind(ctx, step, &conn, &rendered, &mut report);
    // A step that runs after a stop listens to what may still stop it: Ctrl-C for `failure()`,
    // nothing but its own timeout for `always()` and `cancelled()`.
    let never = CancellationToken::new();
    let cancel = match gate {
        Gate::Success => &ctx.cancel,
        Gate::Failure => &ctx.interrupted,
        Gate::Always | Gate::Cancelled => &never,
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout_at(deadline + BACKSTOP, work) => match r {
            Ok(r) => r,
            Err(_) => Err(Fail::new(StepFailure::TimedOut, format!("step timed out after {}", crate::duration::Dur(timeout)))
                .recommend("Raise the step's `timeout`")),
        },
        _ = cancel.cancelled() => Err(Fail::new(StepFailure::Cancelled, "the run was stopped while this step ran")),
    };
    report.attempts = trace
        .attempts
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let payment = report.outcome.payment;
    let outcome = outcome.map_err(|f| bonded_advice(f, &report, payment));
    finish(ctx, step, report, started, outcome)
}

/// A step that timed out while its job, paid 10 or more, was still queued: a bonded provider may be
/// what it waits for. Said of that job only, not of every timeout.
fn bonded_advice(f: Fail, report: &StepReport, payment: Option<crate::money::Money>) -> Fail {
    let bonded = f.kind == StepFailure::TimedOut
        && report.outcome.status == Some(OpStatus::Submitted)
        && payment.is_some_and(|p| p >= crate::money::Money::from_int(10));
    if bonded && !f.recommendations.iter().any(|r| r.contains("bonded")) {
        f.recommend(
            "A job paid 10 or more may wait for a bonded provider: lower the payment or pick a provider",
        )
    } else {
        f
    }
}

/// How long past its deadline a step may still run: only what the deadline does not cut — a submit
/// already sent (abandoning it could leave a paid job nobody tracks; its own request timeout bounds it)
/// and the cancel of the step's job on a timeout. Anything else past it is a bug this catches.
const BACKSTOP: Duration = Duration::from_secs(30);

/// The step's timeout: a wait step's is its wait's `timeout` (which defaults to the step's).
fn step_timeout(step: &PlannedStep, rendered: &RenderedStep) -> Duration {
    match rendered {
        RenderedStep::Wait { timeout, .. } => *timeout,
        _ => step.timeout,
    }
}

fn finish<C>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    mut report: StepReport,
    started: Instant,
    outcome: Result<Map<String, Value>, Fail>,
) -> StepResult {
    report.outcome.set_execution_time(started.elapsed());
    report.finished_at = Some(now());
    let (outputs, failure) = match outcome.and_then(|own| {
        finish_outputs(ctx, step, own).map_err(|m| Fail::new(StepFailure::Failed, m))
    }) {
        Ok(outs) => {
            report.state = StepState::Succeeded;
            let o = &mut report.outcome;
            if o.summary.is_empty() {
                o.summary = format!("Step {} ({}) completed", step.id, step.kind.name());
            }
            // The step did what it was asked (a status read of a failed job is a good read).
            if o.validation_status == ValidationStatus::Failed {
                o.validation_status = ValidationStatus::Partial;
            }
            o.settle_in_place();
            (outs, None)
        }
        Err(f) => {
            report.state = if f.kind == StepFailure::Cancelled {
                StepState::Cancelled
            } else {
                StepState::Failed
            };
            let o = &mut report.outcome;
            o.summary = format!(
                "Step {} ({}) failed: {}",
                step.id,
                step.kind.name(),
                f.issue
            );
            if !o.issues.contains(&f.issue) {
                o.issues.push(f.issue);
            }
            for r in f.recommendations {
                if !o.recommendations.contains(&r) {
                    o.recommendations.push(r);
                }
            }
            o.validation_status = ValidationStatus::Failed;
            o.confidence = 0.0;
            if o.status.is_none() || o.status == Some(OpStatus::Completed) {
                o.status = Some(if f.kind == StepFailure::Cancelled {
                    OpStatus::Cancelled
                } else {
                    OpStatus::Failed
                });
            }
            (Map::new(), Some(f.kind))
        }
    };
    report.outputs = shown_outputs(&ctx.plan, &outputs);
    redact_report(&ctx.plan, &mut report);
    StepResult {
        report,
        outputs,
        failure,
    }
}

async fn run_kind<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    conn: &Conn<'_, C>,
    rendered: &RenderedStep,
    report: &mut StepReport,
) -> Result<Map<String, Value>, Fail> {
    match rendered {
        RenderedStep::Submit(req) => {
            let sent = submit(ctx, step, conn, req, 1, report).await?;
            let mut out = submit_outputs(&sent, req);
            out.insert("status".into(), json!(OpStatus::of(&sent.view)));
            Ok(out)
        }
        RenderedStep::Wait {
            job,
            timeout,
            on_timeout,
        } => {
            report.outcome.job_id = Some(job.clone());
            let view = wait(ctx, conn, job, None, *timeout, *on_timeout, report).await?;
            if !view.succeeded() {
                report.outcome.set_view(&view);
                return Err(OpError::JobEnded {
                    last: Box::new(view),
                }
                .into());
            }
            report.outcome = crate::ops::status::outcome(&view);
            Ok(view_outputs(&view))
        }
        RenderedStep::Fetch {
            job,
            save,
            verify_receipt,
        } => {
            report.outcome.job_id = Some(job.clone());
            fetch(
                ctx,
                conn,
                job,
                None,
                save.as_deref(),
                *verify_receipt,
                report,
            )
            .await
        }
        RenderedStep::Job {
            request,
            on_timeout,
            save,
        } => {
            // A `cache: true` step first looks for an earlier result of the same request (cache.rs).
            if let Some(out) = super::cache::reuse(ctx, step, request, save.as_deref(), report)
                .map_err(|m| Fail::new(StepFailure::Failed, m))?
            {
                return Ok(out);
            }
            let out = run_job(
                ctx,
                step,
                conn,
                request,
                *on_timeout,
                save.as_deref(),
                report,
            )
            .await?;
            super::cache::remember(ctx, step, request, &out, report);
            Ok(out)
        }
        RenderedStep::Optimize(req) => {
            let done = crate::ops::optimize::optimize(conn, req, &ctx.plan.plan.policy).await?;
            report.outcome = done.outcome;
            let a = done.answer;
            let mut out = Map::new();
            out.insert(
                "allocation".into(),
                serde_json::to_value(&a.allocation).unwrap_or(Value::Null),
            );
            out.insert("allocation_id".into(), json!(a.allocation.allocation_id));
            out.insert("estimated_cost".into(), json!(a.estimated_cost));
            out.insert("status".into(), json!("completed"));
            Ok(out)
        }
        RenderedStep::Status { job } => {
            report.outcome.job_id = Some(job.clone());
            let done = crate::ops::status::status(conn, job).await?;
            report.outcome = done.outcome;
            Ok(view_outputs(&done.answer))
        }
        RenderedStep::List {
            limit,
            status,
            job_type,
        } => {
            let req = crate::ops::list::ListRequest {
                limit: *limit,
                status: status.clone(),
                job_type: job_type.clone(),
            };
            let done = crate::ops::list::list(conn, &req).await?;
            let jobs = done.outcome.jobs.clone().unwrap_or_default();
            report.outcome = done.outcome;
            let mut out = Map::new();
            out.insert("count".into(), json!(jobs.len()));
            out.insert("jobs".into(), Value::Array(jobs));
            out.insert("status".into(), json!("completed"));
            Ok(out)
        }
        RenderedStep::Cancel { job } => {
            report.outcome.job_id = Some(job.clone());
            let done = crate::ops::cancel::cancel(conn, job).await?;
            // Tracked until the refund is settled (see `cancel_and_refund`).
            let tracked = ctx.inflight.lock().ok().and_then(|m| m.get(job).cloned());
            let failed = done.outcome.failed();
            report.outcome = done.outcome;
            if failed {
                ctx.untrack(job);
                let issue = report.outcome.issues.first().cloned().unwrap_or_default();
                return Err(Fail::new(StepFailure::Failed, issue));
            }
            let view = done.answer;
            // The real service does not refund on cancel: ask for it, and report what the payment
            // view says.
            let settled =
                refund_after_cancel(ctx, &step.id, conn, &view, tracked.as_ref(), report).await;
            ctx.untrack(job);
            let mut out = Map::new();
            out.insert("job_id".into(), json!(view.job_id));
            out.insert("state".into(), json!(view.state));
            out.insert("status".into(), json!(OpStatus::of(&view)));
            out.insert(
                "payment_status".into(),
                json!(
                    settled
                        .as_ref()
                        .and_then(|s| s.status().map(str::to_string))
                        .or(view.payment_status.clone())
                ),
            );
            out.insert(
                "refunded".into(),
                json!(settled.as_ref().and_then(Settled::refunded)),
            );
            Ok(out)
        }
        RenderedStep::Notify { url, headers, body } => {
            notify(ctx, conn, url, headers, body, report).await
        }
        // The end of a sub-plan's group: its steps are done; its outputs are the sub-plan's
        // `outputs:`, rendered by `finish_outputs` like any step's.
        RenderedStep::Uses { path } => {
            report.outcome.summary = format!(
                "Step {} ran the sub-plan {}",
                step.id,
                crate::text::shown(path)
            );
            let run = ctx.run_now();
            let mut out = {
                let outs = ctx.outputs.read().unwrap_or_else(|p| p.into_inner());
                ctx.plan.group_outputs(step, &outs, &run)
            }
            .map_err(|d| Fail::new(StepFailure::Failed, ctx.plan.redact(&d.message)))?;
            out.insert("status".into(), json!("completed"));
            Ok(out)
        }
        RenderedStep::Balance { wallet, min } => {
            report.outcome.wallet = Some(wallet.clone());
            let done = crate::ops::balance::balance(conn, wallet).await?;
            report.outcome = done.outcome;
            let held = done.answer.balance;
            if let Some(min) = min
                && held < *min
            {
                return Err(Fail::new(
                    StepFailure::Failed,
                    format!(
                        "wallet {wallet} holds {held} AITBC, below the minimum of {min}: {} short",
                        *min - held
                    ),
                )
                .recommend(format!("Fund {wallet} with at least {} AITBC", *min - held)));
            }
            let mut out = Map::new();
            out.insert("wallet".into(), json!(wallet));
            out.insert("balance".into(), json!(held));
            out.insert("status".into(), json!("completed"));
            Ok(out)
        }
    }
}

/// A `notify` step: the message POSTed with the step's retry policy (a webhook that is down or
/// answers 5xx or 429 is tried again; a 4xx is not). The URL may hold a secret: the outcome shows it
/// redacted, as every report does.
async fn notify<C: Coordinator>(
    ctx: &Ctx<C>,
    conn: &Conn<'_, C>,
    url: &str,
    headers: &[(String, String)],
    body: &Value,
    report: &mut StepReport,
) -> Result<Map<String, Value>, Fail> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Fail::new(StepFailure::Failed, format!("`url` is not a URL ({e})")))?;
    let shown = ctx.plan.redact(url);
    let status = conn
        .call(|c| c.notify(&parsed, headers, body))
        .await
        .map_err(|e| {
            // A webhook that cannot be reached is not the coordinator being unreachable: the step
            // failed, and the run's status (with `fail_run`) says `failed`.
            Fail::new(
                StepFailure::Failed,
                format!("the notification to {shown} was not delivered: {e}"),
            )
            .recommend("Check the webhook's URL and that it takes a JSON POST")
        })?;
    let mut o = crate::model::Outcome::new(
        crate::model::Operation::Notify,
        format!("Notification delivered to {shown} (HTTP {status})"),
    );
    o.status = Some(OpStatus::Completed);
    o.validation_status = ValidationStatus::Success;
    o.confidence = 1.0;
    report.outcome = o;
    let mut out = Map::new();
    out.insert("status".into(), json!("completed"));
    out.insert("http_status".into(), json!(status));
    Ok(out)
}

/// A `cancel` step's refund: asks for it, puts what became of the payment in the step's outcome in
/// place of the cancel's "still escrowed", and tells the totals when the job is one this run paid for.
async fn refund_after_cancel<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &str,
    conn: &Conn<'_, C>,
    view: &JobView,
    tracked: Option<&InFlight>,
    report: &mut StepReport,
) -> Option<Settled> {
    let job = &view.job_id;
    let settled = match crate::ops::refund::settle(conn, view).await {
        Ok((_, s)) => s,
        Err(e) => {
            report.outcome.issues.push(format!(
                "the payment of job {job} could not be read, so no refund was asked: {e}"
            ));
            report.outcome.settle_in_place();
            return None;
        }
    };
    let o = &mut report.outcome;
    // The cancel's own warning and advice are answered by the refund now.
    o.issues.retain(|i| !i.starts_with("the payment is still"));
    o.recommendations
        .retain(|r| !r.contains("aitbc-flow job refund"));
    if let Some(m) = &mut o.performance_metrics {
        m.update(|m| {
            m.insert("payment_status".into(), json!(settled.status()));
            m.insert("refunded".into(), json!(settled.refunded()));
        });
    }
    if let Some(f) = tracked {
        report_settlement(ctx, job, f, step, Ok(settled.clone()));
    }
    if matches!(
        settled,
        Settled::Held { .. } | Settled::NotRefundable { .. }
    ) {
        o.issues.push(settled.note(job));
        o.recommendations.push(format!(
            "Ask for the refund again with `aitbc-flow job refund {job}`"
        ));
    }
    o.validation_status = crate::model::ValidationStatus::Success;
    o.confidence = 1.0;
    o.settle_in_place();
    Some(settled)
}

/// The client reference that finds this step's job again after a lost response.
pub fn client_ref(run_id: &str, step_id: &str, submission: u32) -> String {
    if submission <= 1 {
        format!("{run_id}/{step_id}")
    } else {
        format!("{run_id}/{step_id}#{submission}")
    }
}

/// The idempotency key for a submission: a stable hash of its client reference.
pub fn idempotency_key(client_ref: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(client_ref.as_bytes())[..16])
}

/// Submits a job exactly once per (run, step, submission): the wallet's lock is held across the
/// balance check, the journal's intent record and the send; a submission the journal knows from an
/// earlier start is re-attached (by id) or reconciled (by reference) before anything is sent.
async fn submit<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    conn: &Conn<'_, C>,
    req: &JobRequest,
    submission: u32,
    report: &mut StepReport,
) -> Result<Sent, Fail> {
    report.outcome.job_type = JobType::parse(&req.job_type);
    report.outcome.wallet = Some(req.wallet.clone());
    report.outcome.payment = Some(req.payment);
    // The client-side rules, before anything is read or sent.
    crate::ops::submit::prepare(req, &ctx.plan.plan.policy, "")?;
    let lock = ctx.wallet_lock(&req.wallet);
    let _guard = lock.lock().await;

    // A resumed run walks the step's journaled submissions from this one: a job it finds is
    // re-attached to; an intent without a job id is reconciled by its client reference; a job the run
    // cancelled itself (on its way out, or at a timeout) and finds CANCELED is passed over for the next
    // submission once its payment is settled.
    let mut notes = Vec::new();
    let mut submission = submission;
    let (prior, reattached) = loop {
        let Some(prior) = ctx
            .resume
            .as_ref()
            .and_then(|r| r.submission(&step.id, submission))
            .cloned()
        else {
            break (None, None);
        };
        if let Some(id) = &prior.job_id {
            let id: JobId = id
                .parse()
                .map_err(|e: String| Fail::new(StepFailure::Failed, e))?;
            let view = conn.job(&id).await.map_err(OpError::from)?;
            if let Some(cancel) = &prior.cancelled {
                if view.state == JobState::Canceled {
                    pass_over(ctx, conn, &step.id, &prior, cancel.why, &view, &mut notes).await?;
                    submission += 1;
                    continue;
                }
                if view.succeeded() {
                    let settled = crate::ops::refund::settle(conn, &view).await;
                    journal_found(ctx, &step.id, &prior, cancel.why, &view, &settled);
                }
                notes.push(if view.succeeded() {
                    format!(
                        "job {id}, cancelled by the run {}, completed after all: its result is used",
                        cancel_phrase(cancel.why)
                    )
                } else {
                    format!(
                        "re-attached to job {id}: the run tried to cancel it {}, and it is {}",
                        cancel_phrase(cancel.why),
                        view.state
                    )
                });
            } else {
                notes.push(format!(
                    "re-attached to job {id}, submitted before the run was resumed"
                ));
            }
            break (Some(prior), Some(view));
        }
        let cref = client_ref(&ctx.run.id, &step.id, submission);
        match crate::ops::submit::find_by_ref(conn, &cref).await {
            Ok(Some(view)) => {
                notes.push(format!(
                    "found job {} by its client reference {cref}: it was submitted before the run stopped",
                    view.job_id
                ));
                break (Some(prior), Some(view));
            }
            Ok(None) => break (Some(prior), None),
            Err(e) => {
                return Err(Fail::from_op(e.into()).recommend(
                    "The run stopped after deciding to submit this job; resume again when the coordinator answers, so it can tell whether the job exists",
                ));
            }
        }
    };
    let cref = client_ref(&ctx.run.id, &step.id, submission);
    let key = idempotency_key(&cref);
    let mut body = crate::ops::submit::body(req, &cref);

    // A job re-attached to was submitted by this run: it reads as submitted, not as found by a key,
    // and its payer is what the journal recorded as sent.
    let (view, created, payer, check) = match reattached {
        Some(v) => {
            let sent = prior.as_ref().and_then(|p| p.buyer_address.as_deref());
            (
                v,
                true,
                Payer::recorded(&req.wallet, sent),
                BalanceCheck::On,
            )
        }
        None => {
            let check = ctx.balance_check;
            // The balance is checked against what other runs have reserved of the wallet, and the
            // payment reserved for this submit (released below once it is in escrow).
            let book = ctx.reservations.as_deref();
            let (funds, booked) = super::reserve::check_and_reserve(
                book,
                conn,
                &req.wallet,
                req.payment,
                check,
            )
            .await
            .map_err(|e| match e {
                super::reserve::Refused::Op(e) => Fail::from_op(e),
                super::reserve::Refused::Book(e) => Fail::new(
                    StepFailure::Failed,
                    format!(
                        "cannot reserve {} AITBC of wallet {} for the submit, so nothing was submitted: {e}",
                        req.payment, req.wallet
                    ),
                ),
            })?;
            let unbook = |why: &str| {
                if let (Some(book), Some(id)) = (book, booked)
                    && let Err(e) = book.release(&req.wallet, id)
                {
                    tracing::warn!(
                        "cannot release the reservation of wallet {} ({why}): {e}",
                        req.wallet
                    );
                }
            };
            crate::ops::submit::pay_from(&mut body, &funds.payer);
            // The run's spend cap holds the payment before anything is sent (every submission counts).
            let reservation = match ctx.spend.reserve(&req.wallet, req.payment) {
                Ok(r) => r,
                Err(e) => {
                    unbook("over the spend cap");
                    return Err(Fail::from_op(OpError::Rules(vec![e])));
                }
            };
            // The intent is on disk before the request leaves.
            let journaled = ctx
                .journal(
                    &Record::Intent {
                        step: step.id.clone(),
                        submission,
                        client_ref: cref.clone(),
                        wallet: req.wallet.clone(),
                        payment: req.payment,
                        buyer_address: Some(funds.payer.buyer_address.clone()),
                    },
                    true,
                )
                .await
                .map_err(|e| {
                    Fail::new(
                        StepFailure::Failed,
                        format!("cannot write the journal, so nothing was submitted: {e}"),
                    )
                });
            if let Err(fail) = journaled {
                ctx.spend.release(reservation);
                unbook("the journal failed");
                return Err(fail);
            }
            crate::crash::point("intent");
            let s = match crate::ops::submit::send(conn, &body, &key, &cref, &funds.payer).await {
                Ok(s) => {
                    ctx.spend.paid(reservation, s.view.job_id.as_str());
                    // In escrow, the payment is in the wallet's balance for every other run; else
                    // the reservation stays until the run ends.
                    if super::reserve::escrowed(s.view.payment_status.as_deref()) {
                        unbook("paid");
                    }
                    s
                }
                Err(e) => {
                    // A lost answer may hide an accepted job: its payment stays counted (and
                    // reserved, until the run ends).
                    match e.client() {
                        Some(c) if c.may_have_committed() => ctx.spend.paid_unknown(reservation),
                        _ => {
                            ctx.spend.release(reservation);
                            unbook("not sent");
                        }
                    }
                    return Err(e.into());
                }
            };
            (s.view, s.created, s.payer, check)
        }
    };
    // Written, not waited on: should the machine crash before the next flush point, a resume finds
    // the job by its client reference as it does for an intent without a job id. With a mirror (the
    // PostgreSQL store) it is flushed: another host resuming a dead one's run reads only the copy.
    if let Err(e) = ctx
        .journal(
            &Record::Submitted {
                step: step.id.clone(),
                submission,
                job_id: view.job_id.to_string(),
            },
            ctx.journal.mirrored(),
        )
        .await
    {
        notes.push(format!("job {} could not be journaled: {e}", view.job_id));
    }
    crate::crash::point("submitted");
    drop(_guard);

    ctx.track(
        &view.job_id,
        InFlight {
            step: step.id.clone(),
            submission,
            wallet: req.wallet.clone(),
            payment: req.payment,
        },
    );
    ctx.emit(Event::JobSubmitted {
        id: step.id.clone(),
        job_id: view.job_id.to_string(),
        wallet: req.wallet.clone(),
        payment: req.payment,
    });
    let mut outcome = crate::ops::submit::outcome(&view, req, created, &payer, check);
    outcome
        .issues
        .splice(0..0, std::mem::take(&mut report.outcome.issues));
    outcome.issues.extend(notes);
    report.outcome = outcome;
    Ok(Sent {
        view,
        payer,
        submission,
    })
}

/// A job a submit step sent (or found again), who pays for it, and which submission of the step it is.
struct Sent {
    view: JobView,
    payer: Payer,
    submission: u32,
}

/// How a note names when the run cancelled a job.
fn cancel_phrase(why: CancelWhy) -> &'static str {
    match why {
        CancelWhy::Interrupted => "when it was interrupted",
        CancelWhy::Stopped => "when it stopped at a failure",
        CancelWhy::Timeout => "at its wait's timeout",
        CancelWhy::Leftover => "when it ended",
    }
}

/// Journals what a resume found of a job the run had cancelled (a later resume reports the job from
/// the last such record): its state, and what became of its payment.
fn journal_found<C>(
    ctx: &Ctx<C>,
    step: &str,
    prior: &super::journal::Submission,
    why: CancelWhy,
    view: &JobView,
    settled: &Result<(Option<crate::api::PaymentView>, Settled), OpError>,
) {
    let (status, refunded, held) = match settled {
        Ok((_, s)) => (
            s.status().map(str::to_string),
            s.refunded(),
            match s {
                // A completed job's payment belongs to its provider, whatever the service does with it.
                _ if view.succeeded() => None,
                Settled::Unpaid | Settled::Refunded { .. } | Settled::Released { .. } => None,
                _ => Some(prior.payment),
            },
        ),
        Err(_) => (None, None, (!view.succeeded()).then_some(prior.payment)),
    };
    let _ = ctx.journal.append(
        &Record::Cancel {
            step: step.to_string(),
            submission: prior.number,
            job_id: view.job_id.to_string(),
            why,
            outcome: Some(CancelOutcome {
                state: Some(view.state.to_string()),
                payment_status: status,
                refunded,
                held,
            }),
        },
        false,
    );
}

/// A job the run cancelled itself, found CANCELED by a resume: the step's work is still to do, and
/// the caller submits it again as the step's next submission — once the job's payment is settled.
/// The payment view is read again (and a refund that was refused is asked for again): refunded, or
/// nothing paid, and the step goes on; still held (refused, not confirmed, or unreadable), and it
/// goes on only with `resume --pay-again`, the amount reported as held. Otherwise the step fails with
/// the amount still held and nothing is sent.
async fn pass_over<C: Coordinator>(
    ctx: &Ctx<C>,
    conn: &Conn<'_, C>,
    step: &str,
    prior: &super::journal::Submission,
    why: CancelWhy,
    view: &JobView,
    notes: &mut Vec<String>,
) -> Result<(), Fail> {
    let job = &view.job_id;
    let when = cancel_phrase(why);
    let settled = crate::ops::refund::settle(conn, view).await;
    journal_found(ctx, step, prior, why, view, &settled);
    // The report of this start hears of the job, as of a kept step's jobs: its totals then say what
    // the step paid, got back and left held, over both jobs.
    let submitted = |payment| {
        ctx.emit(Event::JobSubmitted {
            id: step.to_string(),
            job_id: job.to_string(),
            wallet: prior.wallet.clone(),
            payment,
        })
    };
    let not_refunded = match settled {
        Ok((_, Settled::Unpaid)) => {
            submitted(Money::ZERO);
            notes.push(format!(
                "job {job} was cancelled by the run {when} (it paid nothing): the step was submitted again"
            ));
            return Ok(());
        }
        Ok((_, Settled::Refunded { amount, .. })) => {
            submitted(prior.payment);
            ctx.emit(Event::PaymentRefunded {
                id: step.to_string(),
                job_id: job.to_string(),
                wallet: prior.wallet.clone(),
                amount,
            });
            notes.push(format!(
                "job {job} was cancelled by the run {when} and its payment of {amount} AITBC refunded: the step was submitted again"
            ));
            return Ok(());
        }
        Ok((_, s)) => s.note(job),
        Err(e) => format!("the payment of job {job} could not be read: {e}"),
    };
    let held = prior.payment;
    submitted(prior.payment);
    let mut fail = None;
    let note = if ctx.pay_again {
        notes.push(format!(
            "submitted again with --pay-again: job {job} still holds {held} AITBC"
        ));
        format!(
            "job {job} was cancelled by the run {when} and its refund is not confirmed: {held} AITBC may still be held ({not_refunded}); \
             the step was submitted again and paid again (--pay-again)"
        )
    } else {
        let issue = format!(
            "job {job} was cancelled by the run {when}, but its refund is not confirmed: {held} AITBC may still be held by the service ({not_refunded}); nothing was submitted again (`resume --pay-again` pays for the step again)"
        );
        fail = Some(
            Fail::new(StepFailure::Failed, issue.clone())
                .recommend(format!(
                    "Ask for the refund with `aitbc-flow job refund {job}`, then resume again"
                ))
                .recommend(format!(
                    "Or resume with --pay-again to submit the step again, paying {} AITBC more while {held} AITBC stays held",
                    prior.payment
                )),
        );
        issue
    };
    ctx.emit(Event::PaymentHeld {
        id: step.to_string(),
        job_id: job.to_string(),
        wallet: prior.wallet.clone(),
        amount: held,
        note: Some(note),
    });
    fail.map_or(Ok(()), Err)
}

fn submit_outputs(sent: &Sent, req: &JobRequest) -> Map<String, Value> {
    let view = &sent.view;
    let mut out = Map::new();
    out.insert("job_id".into(), json!(view.job_id));
    out.insert("state".into(), json!(view.state));
    out.insert("wallet".into(), json!(req.wallet));
    out.insert("buyer_address".into(), json!(sent.payer.buyer_address));
    out.insert("payment".into(), json!(req.payment));
    out.insert("job_type".into(), json!(req.job_type));
    out
}

fn view_outputs(view: &JobView) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("job_id".into(), json!(view.job_id));
    out.insert("state".into(), json!(view.state));
    out.insert("status".into(), json!(OpStatus::of(view)));
    out.insert("result".into(), view.result.clone().unwrap_or(Value::Null));
    out.insert(
        "output".into(),
        view.result
            .as_ref()
            .map_or(Value::Null, crate::ops::results::output_of),
    );
    out.insert("error".into(), json!(view.error));
    out
}

/// Waits for a job this run follows; on timeout cancels it (and asks for its refund) unless the step
/// says to keep it. A job that completes with an `error` and its payment still held (a failed ZK
/// proof) is counted as held.
async fn wait<C: Coordinator>(
    ctx: &Ctx<C>,
    conn: &Conn<'_, C>,
    job: &JobId,
    known: Option<&JobView>,
    timeout: Duration,
    on_timeout: OnTimeout,
    report: &mut StepReport,
) -> Result<JobView, Fail> {
    let waited = match known.filter(|v| v.state.is_final() && &v.job_id == job) {
        Some(v) => {
            conn.trace.job_state(job, v.state);
            Ok(v.clone())
        }
        None => crate::ops::wait::wait(conn, job, timeout).await,
    };
    let e = match waited {
        Ok(view) => {
            let f = ctx.inflight.lock().ok().and_then(|m| m.get(job).cloned());
            if let Some(f) = f {
                if view.succeeded() {
                    if view.error.is_some()
                        && matches!(view.payment_status.as_deref(), Some("escrowed" | "pending"))
                    {
                        // The step's outcome says why (the job's `error`); the totals count the money.
                        ctx.emit(Event::PaymentHeld {
                            id: f.step.clone(),
                            job_id: job.to_string(),
                            wallet: f.wallet.clone(),
                            amount: f.payment,
                            note: None,
                        });
                    }
                } else {
                    // Failed, expired or a failed result: the real service keeps the payment until
                    // it is asked for.
                    let conn = Conn::new(&*ctx.coord);
                    let settled = crate::ops::refund::settle(&conn, &view).await;
                    report_settlement(ctx, job, &f, &report.id, settled.map(|(_, s)| s));
                }
            }
            ctx.untrack(job);
            return Ok(view);
        }
        Err(e @ OpError::WaitTimeout { .. }) => e,
        Err(e) => return Err(e.into()),
    };
    let mut fail = Fail::new(StepFailure::TimedOut, e.to_string());
    let paid = ctx
        .inflight
        .lock()
        .ok()
        .and_then(|m| m.get(job).map(|f| f.payment));
    if let OpError::WaitTimeout { last, stuck, .. } = &e {
        report.outcome.set_view(last);
        if stuck.is_some() {
            // The issue (the error's text) says why; the advice for a stuck job comes first.
            if let Some(first) = e.recommendations().into_iter().next() {
                fail = fail.recommend(first);
            }
        }
    }
    match on_timeout {
        OnTimeout::Cancel => {
            let f = ctx.inflight.lock().ok().and_then(|m| m.get(job).cloned());
            match f {
                Some(f) => {
                    let settled =
                        cancel_and_refund(ctx, job, &f, &report.id, CancelWhy::Timeout).await;
                    fail = fail.recommend(match settled {
                        Some(Settled::Refunded { .. }) => {
                            "The job was cancelled and its payment refunded".to_string()
                        }
                        Some(Settled::Held { .. }) => format!(
                            "The job was cancelled, but its refund was refused: ask again with `aitbc-flow job refund {job}`"
                        ),
                        _ => "The job was cancelled".to_string(),
                    });
                }
                None => {
                    let _ = crate::ops::cancel::cancel(&Conn::new(&*ctx.coord), job).await;
                    fail = fail.recommend("The job was cancelled");
                }
            }
        }
        OnTimeout::Keep => {
            ctx.untrack(job);
            fail = fail.recommend(format!(
                "The job was kept running: `aitbc-flow job status {job}`"
            ));
        }
    }
    let fail = fail.recommend("Raise the wait's `timeout`");
    Err(bonded_advice(fail, report, paid))
}

/// Cancels a job this run submitted, asks for its refund and reads back what became of the payment;
/// emits what happened (a refund refused is a payment held, with the amount, on the `acting` step).
/// Returns what became of the payment, when it could be read.
///
/// The job stays tracked until what happened is emitted: a refund can take ~14 s on the real service,
/// and a step whose time runs out meanwhile is dropped — the run's way out then cancels and settles
/// the job again (a second cancel answers 409 and is read; a second refund is asked and read back).
///
/// The journal says so before the cancel is sent and again with what became of the payment, so that
/// `resume` knows the job as one the run cancelled itself (see `journal::Record::Cancel`).
pub(crate) async fn cancel_and_refund<C: Coordinator>(
    ctx: &Ctx<C>,
    job: &JobId,
    f: &InFlight,
    acting: &str,
    why: CancelWhy,
) -> Option<Settled> {
    let record = |outcome| Record::Cancel {
        step: f.step.clone(),
        submission: f.submission,
        job_id: job.to_string(),
        why,
        outcome,
    };
    if let Err(e) = ctx.journal(&record(None), true).await {
        // The cancel is sent anyway: a job left running would hold its payment for nothing. A resume
        // then finds it CANCELED without knowing why, and says so.
        ctx.emit(Event::RunIssue {
            message: format!("the cancel of job {job} could not be journaled: {e}"),
        });
    }
    let conn = Conn::new(&*ctx.coord);
    let view = match crate::ops::cancel::cancel(&conn, job).await {
        Ok(done) => Some(done.answer),
        // Gone, or the service could not say: read the job to report its state.
        Err(_) => conn.job(job).await.ok(),
    };
    let settled = match &view {
        // A job that completed meanwhile was paid for: nothing to refund.
        Some(v) if v.succeeded() => None,
        Some(v) => Some(
            crate::ops::refund::settle(&conn, v)
                .await
                .map(|(_, s)| s)
                .unwrap_or_else(|e| Settled::Held {
                    amount: f.payment,
                    status: v.payment_status.clone().unwrap_or_else(|| "unknown".into()),
                    error: format!("the payment could not be read, so no refund was asked: {e}"),
                }),
        ),
        None => None,
    };
    ctx.emit(Event::JobCancelled {
        id: f.step.clone(),
        job_id: job.to_string(),
        state: view.as_ref().map(|v| v.state.to_string()),
        payment_status: settled
            .as_ref()
            .and_then(|s| s.status().map(str::to_string))
            .or_else(|| view.as_ref().and_then(|v| v.payment_status.clone())),
        refunded: settled.as_ref().and_then(Settled::refunded),
        wallet: f.wallet.clone(),
    });
    let outcome = CancelOutcome {
        state: view.as_ref().map(|v| v.state.to_string()),
        payment_status: settled
            .as_ref()
            .and_then(|s| s.status().map(str::to_string))
            .or_else(|| view.as_ref().and_then(|v| v.payment_status.clone())),
        refunded: settled.as_ref().and_then(Settled::refunded),
        held: match &settled {
            Some(Settled::Held { amount, .. } | Settled::NotRefundable { amount, .. }) => {
                Some(*amount)
            }
            Some(_) => None,
            // The job could not be read, or completed meanwhile (paid for: nothing held for us).
            None => view.is_none().then_some(f.payment),
        },
    };
    if let Err(e) = ctx.journal(&record(Some(outcome)), true).await {
        ctx.emit(Event::RunIssue {
            message: format!("what became of cancelled job {job} could not be journaled: {e}"),
        });
    }
    if let Some(s @ (Settled::Held { .. } | Settled::NotRefundable { .. })) = &settled {
        // Said on the step that cancelled (a wait's timeout, or the submitting step on the way out).
        ctx.emit(Event::PaymentHeld {
            id: acting.to_string(),
            job_id: job.to_string(),
            wallet: f.wallet.clone(),
            amount: f.payment,
            note: Some(s.note(job)),
        });
    }
    ctx.untrack(job);
    settled
}

/// Tells the totals (and the step `acting`, with a note) what became of the payment of a job this run
/// paid for that ended unpaid: refunded, or still held.
fn report_settlement<C>(
    ctx: &Ctx<C>,
    job: &JobId,
    f: &InFlight,
    acting: &str,
    settled: Result<Settled, OpError>,
) {
    let settled = settled.unwrap_or_else(|e| Settled::Held {
        amount: f.payment,
        status: "unknown".into(),
        error: format!("the payment could not be read, so no refund was asked: {e}"),
    });
    match &settled {
        Settled::Refunded { amount, .. } => ctx.emit(Event::PaymentRefunded {
            id: acting.to_string(),
            job_id: job.to_string(),
            wallet: f.wallet.clone(),
            amount: *amount,
        }),
        Settled::Held { .. } | Settled::NotRefundable { .. } => ctx.emit(Event::PaymentHeld {
            id: acting.to_string(),
            job_id: job.to_string(),
            wallet: f.wallet.clone(),
            amount: f.payment,
            note: Some(settled.note(job)),
        }),
        Settled::Unpaid | Settled::Released { .. } => {}
    }
}

/// Fetches a finished job's result, verifies its receipt, saves it, and returns a fetch's outputs.
async fn fetch<C: Coordinator>(
    ctx: &Ctx<C>,
    conn: &Conn<'_, C>,
    job: &JobId,
    known: Option<&JobView>,
    save: Option<&str>,
    verify: bool,
    report: &mut StepReport,
) -> Result<Map<String, Value>, Fail> {
    let done = crate::ops::results::results(conn, job, known).await?;
    report.outcome = done.outcome;
    let fetched = done.answer;
    let Some(result) = fetched.result else {
        let state = fetched
            .view
            .as_ref()
            .map_or("unknown".to_string(), |v| v.state.to_string());
        return Err(Fail::new(
            StepFailure::Failed,
            format!("job {job} has no result yet (state {state})"),
        )
        .recommend("Add a `wait` step before the fetch"));
    };
    if crate::api::result_failed(Some(&result)) {
        let err = result
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error text");
        return Err(Fail::new(
            StepFailure::Failed,
            format!("job {job} reported a failed result: {err}"),
        ));
    }
    let mut out = Map::new();
    out.insert("job_id".into(), json!(job));
    out.insert("status".into(), json!("completed"));
    out.insert("output".into(), crate::ops::results::output_of(&result));
    let mut verified = Value::Null;
    if let (Some(receipt), Some(check)) = (&fetched.receipt, &fetched.receipt_check) {
        verified = json!(check.is_ok());
        let raw = serde_json::value::to_raw_value(receipt).map_err(|e| {
            Fail::new(
                StepFailure::Failed,
                format!("cannot keep the receipt of job {job}: {e}"),
            )
        })?;
        report.receipt = Some(ReceiptCheck {
            receipt: raw,
            verified: check.is_ok(),
            error: check.as_ref().err().map(|e| e.to_string()),
        });
        if verify && let Err(e) = check {
            return Err(Fail::new(
                StepFailure::Failed,
                format!("the receipt of job {job} did not verify: {e}"),
            )
            .recommend("Do not trust this result; report the provider"));
        }
    }
    out.insert("receipt_verified".into(), verified);
    if let Some(save) = save {
        let path = save_path(&ctx.run_dir, ctx.plan.dir(), save).map_err(|m| {
            Fail::new(StepFailure::Failed, m)
                .recommend("Save inside the run directory or under the plan's folder")
        })?;
        save_result(&ctx.plan, &path, &result, fetched.receipt.as_ref(), report)
            .map_err(|m| Fail::new(StepFailure::Failed, m))?;
        out.insert("saved".into(), json!(path.display().to_string()));
    }
    out.insert("receipt".into(), fetched.receipt.unwrap_or(Value::Null));
    out.insert("result".into(), result);
    Ok(out)
}

/// Saves a result and its receipt as served (the receipt keeps its signed bytes, so the file still
/// verifies). When a step of the plan lets a value computed from a secret into a payload
/// (`secrets_in_payload`), the result may quote it (the receipt signs the payload): the file is
/// then written readable only by its owner (0600), and the step's report says so.
pub(crate) fn save_result(
    plan: &crate::plan::CheckedPlan,
    path: &Path,
    result: &Value,
    receipt: Option<&Value>,
    report: &mut StepReport,
) -> Result<(), String> {
    let private = plan.secrets_in_payload();
    write_result(path, result, receipt, private)
        .map_err(|e| format!("cannot save the result to {}: {e}", path.display()))?;
    if private {
        report.outcome.issues.push(format!(
            "the saved result {} may hold a value computed from a secret \
             (`secrets_in_payload`): written readable only by you (mode 0600)",
            path.display()
        ));
    }
    Ok(())
}

fn write_result(
    path: &Path,
    result: &Value,
    receipt: Option<&Value>,
    private: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let body = json!({"result": result, "receipt": receipt});
    let text = serde_json::to_string_pretty(&body).unwrap_or_default() + "\n";
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = open.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Where `save:` writes: a relative path is inside the run directory; an absolute path must be under the
/// plan's folder or the run directory. A path that climbs out with `..` is refused.
pub fn save_path(run_dir: &Path, plan_dir: &Path, save: &str) -> Result<PathBuf, String> {
    let p = Path::new(save);
    let refuse =
        || format!("`save: {save}` leaves the run directory and the plan's folder; refused");
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(refuse());
    }
    if p.is_absolute() {
        let plan_abs = std::path::absolute(plan_dir).map_err(|_| refuse())?;
        let run_abs = std::path::absolute(run_dir).map_err(|_| refuse())?;
        if p.starts_with(&plan_abs) || p.starts_with(&run_abs) {
            return Ok(p.to_path_buf());
        }
        return Err(refuse());
    }
    if save.trim().is_empty() {
        return Err("`save:` is empty".to_string());
    }
    Ok(run_dir.join(p))
}

/// Submit, wait and fetch in one step; a failed job is resubmitted only with `retry.on: [job_failed]`.
async fn run_job<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    conn: &Conn<'_, C>,
    req: &JobRequest,
    on_timeout: OnTimeout,
    save: Option<&str>,
    report: &mut StepReport,
) -> Result<Map<String, Value>, Fail> {
    let policy = &conn.retry;
    // Tries count against `retry.max_attempts`; submissions number the step's jobs (a resume passes
    // over a job the run cancelled, so the two part).
    let mut tries = 1;
    let mut submission = 1;
    loop {
        let sent = submit(ctx, step, conn, req, submission, report).await?;
        submission = sent.submission;
        let submitted = report.outcome.clone();
        let job = sent.view.job_id.clone();
        // A submit answer that is already final needs no poll.
        let done = wait(
            ctx,
            conn,
            &job,
            Some(&sent.view),
            step.timeout,
            on_timeout,
            report,
        )
        .await?;
        if !done.succeeded() {
            report.outcome.set_view(&done);
            let fail = Fail::from_op(OpError::JobEnded {
                last: Box::new(done),
            });
            let delay = (tries < policy.max_attempts()
                && policy.retries(FailureClass::Retry(RetryOn::JobFailed)))
            .then(|| ctx.retry_delay(policy, tries + 1, None))
            // A resubmission that could not even start before the step's deadline is not made.
            .filter(|d| conn.left().is_none_or(|left| *d < left));
            if let Some(delay) = delay {
                conn.trace.attempt(Attempt {
                    number: tries,
                    started_at: now(),
                    duration_ms: 0,
                    error: Some(fail.issue.clone()),
                    delay_ms: Some(delay.as_millis() as u64),
                });
                tokio::time::sleep(delay).await;
                tries += 1;
                submission += 1;
                continue;
            }
            if !policy.retries(FailureClass::Retry(RetryOn::JobFailed)) {
                return Err(fail.recommend(crate::model::hints::RETRY_ON_JOB_FAILED));
            }
            return Err(fail);
        }
        let mut out = fetch(ctx, conn, &job, Some(&done), save, true, report).await?;
        let fetched = report.outcome.clone();
        report.outcome = crate::ops::submit::completed(submitted, fetched, req, &job);
        for (k, v) in submit_outputs(&sent, req) {
            out.entry(k).or_insert(v);
        }
        out.insert("state".into(), json!(done.state));
        return Ok(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bonded_provider_advice_is_for_a_queued_job_paid_ten_or_more() {
        let mut report = StepReport::blank("s", "job");
        let timed_out = || Fail::new(StepFailure::TimedOut, "timed out");
        let said = |f: Fail| f.recommendations.iter().any(|r| r.contains("bonded"));
        let ten = Some(crate::money::Money::from_int(10));
        let two = Some(crate::money::Money::from_int(2));
        report.outcome.status = Some(OpStatus::Submitted);
        assert!(said(bonded_advice(timed_out(), &report, ten)));
        assert!(!said(bonded_advice(timed_out(), &report, two)));
        assert!(!said(bonded_advice(timed_out(), &report, None)));
        assert!(!said(bonded_advice(
            Fail::new(StepFailure::Failed, "x"),
            &report,
            ten
        )));
        report.outcome.status = Some(OpStatus::Processing);
        assert!(!said(bonded_advice(timed_out(), &report, ten)));
    }

    #[test]
    fn save_paths_stay_inside() {
        let run = Path::new("/tmp/runs/r1");
        let plan = Path::new("/tmp/plans");
        assert_eq!(
            save_path(run, plan, "out/a.json").unwrap(),
            PathBuf::from("/tmp/runs/r1/out/a.json")
        );
        assert!(save_path(run, plan, "../../etc/passwd").is_err());
        assert!(save_path(run, plan, "out/../../x").is_err());
        assert!(save_path(run, plan, "/etc/passwd").is_err());
        assert!(save_path(run, plan, "/tmp/plans/results/a.json").is_ok());
        assert!(save_path(run, plan, "").is_err());
    }

    #[test]
    fn client_refs_and_keys_are_stable_per_submission() {
        assert_eq!(client_ref("r1", "analyze", 1), "r1/analyze");
        assert_eq!(client_ref("r1", "analyze", 2), "r1/analyze#2");
        assert_eq!(idempotency_key("r1/analyze"), idempotency_key("r1/analyze"));
        assert_ne!(
            idempotency_key("r1/analyze"),
            idempotency_key("r1/analyze#2")
        );
        assert_eq!(idempotency_key("x").len(), 32);
    }
}
