//! Each step kind, carried out against the coordinator: render, check, send with retries, read back,
//! and fill the step's report entry (the operator skill's output fields plus attempts and timings).

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::crash;
use super::events::Event;
use super::journal::Record;
use super::retry::{FailureClass, PollBackoff, RetryPolicy, classify};
use super::runner::{Ctx, InFlight, finish_outputs};
use crate::api::{
    AllocateRequest, CURRENCY, JobCreate, JobId, JobState, JobView, ListQuery, RefundRequest,
    TaskRequirements, result_failed, verify_receipt,
};
use crate::client::{ClientError, Coordinator};
use crate::money::Money;
use crate::plan::PlannedStep;
use crate::plan::check::{JobRequest, OptimizeRequest, RenderedStep};
use crate::plan::types::{OnTimeout, RetryOn};
use crate::report::model::{Attempt, ReceiptCheck, StepReport, StepState};

/// How a step failed, for the run's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepFailure {
    /// It failed (a job failed, a request was refused, a check did not pass).
    Failed,
    /// It ran out of time.
    TimedOut,
    /// The coordinator could not be reached or refused our credentials.
    Unreachable,
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
    r.summary = plan.redact(&r.summary);
    for text in r.issues.iter_mut().chain(r.recommendations.iter_mut()) {
        *text = plan.redact(text);
    }
    for v in [
        &mut r.result,
        &mut r.jobs,
        &mut r.resource_allocation,
        &mut r.performance_metrics,
    ]
    .into_iter()
    .flatten()
    {
        plan.redact_value(v);
    }
    plan.redact_value(&mut r.outputs);
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

fn operation_of(kind: &str) -> &'static str {
    match kind {
        "submit" | "job" => "submit",
        "wait" | "status" => "status",
        "fetch" => "results",
        "optimize" => "optimize",
        "list" => "list",
        "cancel" => "cancel",
        "balance" => "balance",
        _ => "status",
    }
}

/// An empty report entry for a step.
pub fn blank_report(step: &PlannedStep) -> StepReport {
    empty_report(&step.id, step.kind.name())
}

/// An empty report entry for a step of this id and kind.
pub fn empty_report(id: &str, kind: &str) -> StepReport {
    StepReport {
        id: id.to_string(),
        kind: kind.to_string(),
        state: StepState::Pending,
        summary: String::new(),
        operation: operation_of(kind).to_string(),
        job_id: None,
        job_type: None,
        status: None,
        progress: 0,
        estimated_time: None,
        wallet: None,
        payment: None,
        result: None,
        jobs: None,
        resource_allocation: None,
        performance_metrics: None,
        issues: Vec::new(),
        recommendations: Vec::new(),
        confidence: 1.0,
        execution_time: 0.0,
        validation_status: "success".into(),
        attempts: Vec::new(),
        started_at: None,
        finished_at: None,
        receipt: None,
        outputs: Value::Object(Map::new()),
        request: None,
        cached_from: None,
    }
}

/// The report of a step that did not run because of its `when` or a dependency.
pub fn skipped_report(step: &PlannedStep, reason: &str) -> StepReport {
    let mut r = blank_report(step);
    r.state = StepState::Skipped;
    r.summary = format!("Step skipped: {reason}");
    r.validation_status = "partial".into();
    r
}

/// The report of a step the run never reached.
pub fn not_started_report(step: &PlannedStep, reason: &str) -> StepReport {
    let mut r = blank_report(step);
    r.state = StepState::Cancelled;
    r.summary = format!("Step not run: {reason}");
    r.status = Some("cancelled".into());
    r.validation_status = "failed".into();
    r
}

/// The operator skill's status word for a job state.
pub fn op_status(view: &JobView) -> &'static str {
    match view.state {
        JobState::Queued => "submitted",
        JobState::Running => "processing",
        JobState::Completed if result_failed(view.result.as_ref()) => "failed",
        JobState::Completed => "completed",
        JobState::Failed | JobState::Expired => "failed",
        JobState::Canceled => "cancelled",
    }
}

fn progress_of(state: JobState) -> u8 {
    match state {
        JobState::Queued => 0,
        JobState::Running => 50,
        _ => 100,
    }
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
    fn from_client(e: &ClientError) -> Fail {
        let kind = match e {
            ClientError::Unavailable { .. } | ClientError::Auth { .. } => StepFailure::Unreachable,
            ClientError::Timeout { .. } => StepFailure::TimedOut,
            _ => StepFailure::Failed,
        };
        let f = Fail::new(kind, e.to_string());
        match e {
            ClientError::Unavailable { .. } => f
                .recommend("Check that the coordinator is running and reachable")
                .recommend("Retry later; the step's retry policy covers short outages"),
            ClientError::Auth { .. } => f.recommend(
                "Check AITBC_TOKEN / AITBC_TOKEN_FILE: the token may be missing or expired",
            ),
            ClientError::InsufficientBalance { needed, .. } => {
                f.recommend(format!("Fund the wallet with at least {needed} AITBC"))
            }
            ClientError::RateLimited { .. } => {
                f.recommend("Lower the plan's concurrency or add retries for rate_limited")
            }
            ClientError::Timeout { .. } => f
                .recommend("Check the coordinator's load and the network")
                .recommend("Raise the step's timeout"),
            _ => f,
        }
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

    // `when` and rendering see the outputs of the steps finished so far.
    let rendered = {
        let outs = ctx.outputs.read().unwrap_or_else(|p| p.into_inner());
        match ctx.plan.should_run(step, &outs, &ctx.run) {
            Ok(false) => {
                let mut r = skipped_report(step, "its `when` condition is false");
                r.started_at = report.started_at.clone();
                r.finished_at = Some(now());
                return StepResult {
                    report: r,
                    outputs: Map::new(),
                    failure: None,
                };
            }
            Ok(true) => ctx.plan.render(step, &outs, &ctx.run),
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

    report.request = super::cache::request_record(&ctx.plan, &rendered);
    let timeout = step_timeout(step, &rendered);
    let work = run_kind(ctx, step, &rendered, &mut report);
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, work) => match r {
            Ok(r) => r,
            Err(_) => Err(Fail::new(StepFailure::TimedOut, format!("step timed out after {}", crate::duration::Dur(timeout)))
                .recommend("Raise the step's `timeout`")
                .recommend("Check the coordinator's queue: a job paid 10 or more may wait for a bonded provider")),
        },
        _ = ctx.cancel.cancelled() => Err(Fail::new(StepFailure::Cancelled, "the run was stopped while this step ran")),
    };
    finish(ctx, step, report, started, outcome)
}

fn step_timeout(step: &PlannedStep, rendered: &RenderedStep) -> Duration {
    // A wait's own timeout governs waiting; the step-level timer is only a backstop above it.
    match rendered {
        RenderedStep::Wait { timeout, .. } => *timeout + Duration::from_secs(30),
        _ => step.timeout + Duration::from_secs(30),
    }
}

fn finish<C>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    mut report: StepReport,
    started: Instant,
    outcome: Result<Map<String, Value>, Fail>,
) -> StepResult {
    report.execution_time = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    report.finished_at = Some(now());
    let (outputs, failure) = match outcome.and_then(|own| {
        finish_outputs(ctx, step, own).map_err(|m| Fail::new(StepFailure::Failed, m))
    }) {
        Ok(outs) => {
            report.state = StepState::Succeeded;
            if report.summary.is_empty() {
                report.summary = format!("Step {} ({}) completed", step.id, step.kind.name());
            }
            if !report.issues.is_empty() && report.validation_status == "success" {
                report.validation_status = "partial".into();
            }
            (outs, None)
        }
        Err(f) => {
            report.state = if f.kind == StepFailure::Cancelled {
                StepState::Cancelled
            } else {
                StepState::Failed
            };
            report.summary = format!(
                "Step {} ({}) failed: {}",
                step.id,
                step.kind.name(),
                f.issue
            );
            report.issues.push(f.issue);
            report.recommendations.extend(f.recommendations);
            report.validation_status = "failed".into();
            report.confidence = 0.0;
            if report.status.is_none() || report.status.as_deref() == Some("completed") {
                report.status = Some(
                    if f.kind == StepFailure::Cancelled {
                        "cancelled"
                    } else {
                        "failed"
                    }
                    .into(),
                );
            }
            (Map::new(), Some(f.kind))
        }
    };
    // The report keeps the outputs later steps saw, less the receipt and the raw result: they are in
    // `receipt` and `result` already, and a report of 10,000 steps should not hold them twice.
    let mut shown: Map<String, Value> = outputs
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "receipt" | "result"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    report.outputs = Value::Object(std::mem::take(&mut shown));
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
    rendered: &RenderedStep,
    report: &mut StepReport,
) -> Result<Map<String, Value>, Fail> {
    match rendered {
        RenderedStep::Submit(req) => {
            let view = submit(ctx, step, req, 1, report).await?;
            report.summary = format!(
                "{} job submitted: {} AITBC from {}",
                req.job_type, req.payment, req.wallet
            );
            report
                .recommendations
                .push("Monitor job progress for completion".into());
            let mut out = submit_outputs(&view, req);
            out.insert("status".into(), json!(op_status(&view)));
            Ok(out)
        }
        RenderedStep::Wait {
            job,
            timeout,
            on_timeout,
        } => {
            report.job_id = Some(job.to_string());
            let view = wait(ctx, step, job, *timeout, *on_timeout, report).await?;
            let mut out = Map::new();
            view_outputs(&view, &mut out);
            fill_from_view(report, &view);
            if !view.succeeded() {
                return Err(job_failure(&view));
            }
            report.summary = format!("Job {} completed", view.job_id);
            Ok(out)
        }
        RenderedStep::Fetch {
            job,
            save,
            verify_receipt: verify,
        } => {
            report.job_id = Some(job.to_string());
            let out = fetch(ctx, step, job, save.as_deref(), *verify, report).await?;
            report.summary = format!("Result of job {job} fetched");
            Ok(out)
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
            let out = run_job(ctx, step, request, *on_timeout, save.as_deref(), report).await?;
            super::cache::remember(ctx, step, request, &out, report);
            Ok(out)
        }
        RenderedStep::Optimize(req) => optimize(ctx, step, req, report).await,
        RenderedStep::Status { job } => {
            report.job_id = Some(job.to_string());
            let view = with_retry(ctx, step, report, || ctx.coord.job(job)).await?;
            fill_from_view(report, &view);
            report.summary = format!("Job {} is {}", view.job_id, view.state);
            let mut out = Map::new();
            view_outputs(&view, &mut out);
            Ok(out)
        }
        RenderedStep::List {
            limit,
            status,
            job_type,
        } => {
            let q = ListQuery {
                limit: *limit,
                offset: None,
                status: status.clone(),
                job_type: job_type.clone(),
            };
            let list = with_retry(ctx, step, report, || ctx.coord.list(&q)).await?;
            let jobs: Vec<Value> = list
                .items
                .iter()
                .map(|j| {
                    json!({"job_id": j.job_id, "state": j.state, "job_type": j.job_type(),
                           "status": op_status(j), "requested_at": j.requested_at,
                           "payment_status": j.payment_status})
                })
                .collect();
            report.summary = format!("{} jobs listed", jobs.len());
            report.jobs = Some(Value::Array(jobs.clone()));
            report.status = Some("completed".into());
            report.progress = 100;
            let mut out = Map::new();
            out.insert("count".into(), json!(jobs.len()));
            out.insert("jobs".into(), Value::Array(jobs));
            out.insert("status".into(), json!("completed"));
            Ok(out)
        }
        RenderedStep::Cancel { job } => {
            report.job_id = Some(job.to_string());
            let view = with_retry(ctx, step, report, || ctx.coord.cancel(job)).await?;
            ctx.untrack(job);
            fill_from_view(report, &view);
            report.summary = format!("Job {} cancelled", view.job_id);
            let mut out = Map::new();
            out.insert("job_id".into(), json!(view.job_id));
            out.insert("state".into(), json!(view.state));
            out.insert("status".into(), json!(op_status(&view)));
            Ok(out)
        }
        RenderedStep::Balance { wallet, min } => {
            report.wallet = Some(wallet.clone());
            let bal = with_retry(ctx, step, report, || ctx.coord.balance(wallet)).await?;
            report.summary = format!("Wallet {wallet} holds {} AITBC", bal.balance);
            report.result = Some(json!(bal.balance));
            report.status = Some("completed".into());
            report.progress = 100;
            if let Some(min) = min
                && bal.balance < *min
            {
                return Err(Fail::new(
                    StepFailure::Failed,
                    format!(
                        "wallet {wallet} holds {} AITBC, below the minimum of {min}: {} short",
                        bal.balance,
                        *min - bal.balance
                    ),
                )
                .recommend(format!(
                    "Fund {wallet} with at least {} AITBC",
                    *min - bal.balance
                )));
            }
            let mut out = Map::new();
            out.insert("wallet".into(), json!(wallet));
            out.insert("balance".into(), json!(bal.balance));
            out.insert("status".into(), json!("completed"));
            Ok(out)
        }
    }
}

/// Sends a request with the step's retry policy: only retryable failures are retried, each attempt is
/// recorded, `Retry-After` is honoured.
async fn with_retry<C, T, F, Fut>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    report: &mut StepReport,
    mut call: F,
) -> Result<T, Fail>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let policy = RetryPolicy::new(step.retry.clone());
    let mut n = 1;
    loop {
        let at = now();
        let t = Instant::now();
        match call().await {
            Ok(v) => {
                report.attempts.push(Attempt {
                    number: n,
                    started_at: at,
                    duration_ms: t.elapsed().as_millis() as u64,
                    error: None,
                    delay_ms: None,
                });
                return Ok(v);
            }
            Err(e) => {
                let retry = n < policy.max_attempts() && policy.retries(classify(&e));
                let delay = retry.then(|| ctx.retry_delay(&policy, n + 1, e.retry_after()));
                let attempt = Attempt {
                    number: n,
                    started_at: at,
                    duration_ms: t.elapsed().as_millis() as u64,
                    error: Some(e.to_string()),
                    delay_ms: delay.map(|d| d.as_millis() as u64),
                };
                record_failed_attempt(ctx, step, report, attempt);
                match delay {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        n += 1;
                    }
                    None => return Err(Fail::from_client(&e)),
                }
            }
        }
    }
}

/// Records a failed attempt in the step's report and on the event stream.
fn record_failed_attempt<C>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    report: &mut StepReport,
    attempt: Attempt,
) {
    report.attempts.push(attempt.clone());
    ctx.emit(Event::AttemptFailed {
        id: step.id.clone(),
        attempt,
    });
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

fn job_create(req: &JobRequest, client_ref: &str) -> JobCreate {
    let mut payload = Map::new();
    payload.insert("type".into(), json!(req.job_type));
    payload.insert("prompt".into(), json!(req.prompt));
    if let Some(m) = &req.model {
        payload.insert("model".into(), json!(m));
    }
    if let Some(e) = &req.endpoint {
        payload.insert("endpoint".into(), json!(e));
    }
    for (k, v) in &req.parameters {
        payload.entry(k.clone()).or_insert_with(|| v.clone());
    }
    payload.insert("client_ref".into(), json!(client_ref));
    JobCreate {
        payload,
        constraints: (!req.constraints.is_empty()).then(|| req.constraints.clone()),
        ttl_seconds: req.ttl.map(|d| d.as_secs().max(1)),
        payment_amount: Some(req.payment),
        payment_currency: Some(CURRENCY.into()),
        buyer_address: Some(req.wallet.clone()),
        provider_address: req.provider_id.clone(),
    }
}

/// Submits a job exactly once per (run, step, submission): the wallet's lock is held across the
/// balance check and the send; when a response is lost the job is looked up by its client reference
/// before anything is sent again.
async fn submit<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    req: &JobRequest,
    submission: u32,
    report: &mut StepReport,
) -> Result<JobView, Fail> {
    report.job_type = Some(req.job_type.clone());
    report.wallet = Some(req.wallet.clone());
    report.payment = Some(req.payment);
    let problems = crate::policy::check_job(req, &ctx.plan.plan.policy);
    if !problems.is_empty() {
        let mut f = Fail::new(
            StepFailure::Failed,
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        );
        if req.job_type.is_empty() || !crate::api::JOB_TYPES.contains(&req.job_type.as_str()) {
            f = f.recommend(format!("Use one of: {}", crate::api::JOB_TYPES.join(", ")));
        }
        return Err(f);
    }
    let cref = client_ref(&ctx.run.id, &step.id, submission);
    let key = idempotency_key(&cref);
    let body = job_create(req, &cref);
    let lock = ctx.wallet_lock(&req.wallet);
    let _guard = lock.lock().await;

    // Resuming: a submission the journal knows is re-attached (by id) or reconciled (by reference)
    // before anything is sent, so a crash never pays for a job twice.
    let prior = ctx
        .resume
        .as_ref()
        .and_then(|r| r.submission(&step.id, submission))
        .cloned();
    let mut reattached: Option<JobView> = None;
    if let Some(prior) = &prior {
        if let Some(id) = &prior.job_id {
            let id: JobId = id
                .parse()
                .map_err(|e: String| Fail::new(StepFailure::Failed, e))?;
            let view = with_retry(ctx, step, report, || ctx.coord.job(&id)).await?;
            report.issues.push(format!(
                "re-attached to job {id}, submitted before the run was resumed"
            ));
            reattached = Some(view);
        } else {
            match find_by_ref(ctx, &cref).await {
                Ok(Some(view)) => {
                    report.issues.push(format!(
                        "found job {} by its client reference {cref}: it was submitted before the run stopped",
                        view.job_id
                    ));
                    reattached = Some(view);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Fail::from_client(&e).recommend(
                        "The run stopped after deciding to submit this job; resume again when the coordinator answers, so it can tell whether the job exists",
                    ));
                }
            }
        }
    }

    let view = match reattached {
        Some(v) => v,
        None => {
            let balance = with_retry(ctx, step, report, || ctx.coord.balance(&req.wallet)).await?;
            if balance.balance < req.payment {
                return Err(Fail::new(
                    StepFailure::Failed,
                    format!(
                        "insufficient balance: wallet {} holds {} AITBC, job needs {}",
                        req.wallet, balance.balance, req.payment
                    ),
                )
                .recommend(format!(
                    "Fund {} with at least {} AITBC",
                    req.wallet,
                    req.payment - balance.balance
                )));
            }
            // The intent is on disk before the request leaves.
            ctx.journal(
                &Record::Intent {
                    step: step.id.clone(),
                    submission,
                    client_ref: cref.clone(),
                    wallet: req.wallet.clone(),
                    payment: req.payment,
                },
                true,
            )
            .map_err(|e| {
                Fail::new(
                    StepFailure::Failed,
                    format!("cannot write the journal, so nothing was submitted: {e}"),
                )
            })?;
            crash::point("intent");
            send_once(ctx, step, report, &body, &key, &cref).await?
        }
    };
    if let Err(e) = ctx.journal(
        &Record::Submitted {
            step: step.id.clone(),
            submission,
            job_id: view.job_id.to_string(),
        },
        true,
    ) {
        report
            .issues
            .push(format!("job {} could not be journaled: {e}", view.job_id));
    }
    crash::point("submitted");
    drop(_guard);

    ctx.track(
        &view.job_id,
        InFlight {
            step: step.id.clone(),
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
    report.job_id = Some(view.job_id.to_string());
    report.status = Some(op_status(&view).into());
    report.progress = progress_of(view.state);
    report.estimated_time = Some(estimated_seconds(&req.job_type));
    if view.payment_status.as_deref() == Some("skipped") {
        report.issues.push(format!(
            "the coordinator skipped the payment of job {} (payment_status: skipped)",
            view.job_id
        ));
    }
    Ok(view)
}

/// Sends a submit with the step's retry policy; when a response is lost, looks the job up by its
/// client reference before sending again.
async fn send_once<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    report: &mut StepReport,
    body: &JobCreate,
    key: &str,
    cref: &str,
) -> Result<JobView, Fail> {
    let policy = RetryPolicy::new(step.retry.clone());
    let mut n = 1;
    loop {
        let at = now();
        let t = Instant::now();
        let err = match ctx.coord.submit(body, Some(key)).await {
            Ok((view, _created)) => return Ok(view),
            Err(e) => e,
        };
        // The request may have been committed: find the job by its reference before sending again.
        // (A lookup that fails counts as "not found"; the idempotency key still guards the resend on
        // coordinators that honour it.)
        let found = if err.may_have_committed() {
            find_by_ref(ctx, cref).await.ok().flatten()
        } else {
            None
        };
        let retry = found.is_none() && n < policy.max_attempts() && policy.retries(classify(&err));
        let delay = retry.then(|| ctx.retry_delay(&policy, n + 1, err.retry_after()));
        let attempt = Attempt {
            number: n,
            started_at: at,
            duration_ms: t.elapsed().as_millis() as u64,
            error: Some(match &found {
                Some(v) => format!(
                    "{err}; the job was found by its client reference ({})",
                    v.job_id
                ),
                None => err.to_string(),
            }),
            delay_ms: delay.map(|d| d.as_millis() as u64),
        };
        record_failed_attempt(ctx, step, report, attempt);
        if let Some(v) = found {
            return Ok(v);
        }
        match delay {
            Some(d) => {
                tokio::time::sleep(d).await;
                n += 1;
            }
            None => return Err(Fail::from_client(&err)),
        }
    }
}

/// Looks a job up by its client reference, newest first, a page of 200 at a time (at most 10 pages).
/// `Err` when the coordinator could not be asked.
async fn find_by_ref<C: Coordinator>(
    ctx: &Ctx<C>,
    cref: &str,
) -> Result<Option<JobView>, ClientError> {
    const PAGE: u64 = 200;
    for page in 0..10u64 {
        let q = ListQuery {
            limit: Some(PAGE),
            offset: Some(page * PAGE),
            ..ListQuery::default()
        };
        let mut tries = 0;
        let list = loop {
            match ctx.coord.list(&q).await {
                Ok(list) => break list,
                Err(e) if e.is_retryable() && tries < 8 => {
                    tries += 1;
                    let pause = e
                        .retry_after()
                        .unwrap_or(Duration::from_millis(100 << tries.min(5)));
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        };
        let n = list.items.len() as u64;
        if let Some(v) = list
            .items
            .into_iter()
            .find(|j| j.client_ref() == Some(cref))
        {
            return Ok(Some(v));
        }
        if n < PAGE {
            break;
        }
    }
    Ok(None)
}

/// A rough completion estimate per job type, in seconds, for the report.
fn estimated_seconds(job_type: &str) -> f64 {
    match job_type {
        "training" => 300.0,
        "multimodal" => 45.0,
        "streaming" | "monitoring" => 60.0,
        _ => 30.0,
    }
}

fn submit_outputs(view: &JobView, req: &JobRequest) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("job_id".into(), json!(view.job_id));
    out.insert("state".into(), json!(view.state));
    out.insert("wallet".into(), json!(req.wallet));
    out.insert("payment".into(), json!(req.payment));
    out.insert("job_type".into(), json!(req.job_type));
    out
}

pub(crate) fn output_text(result: Option<&Value>) -> Value {
    match result {
        Some(r) => match r.get("output") {
            Some(o) => o.clone(),
            None => r.clone(),
        },
        None => Value::Null,
    }
}

fn view_outputs(view: &JobView, out: &mut Map<String, Value>) {
    out.insert("job_id".into(), json!(view.job_id));
    out.insert("state".into(), json!(view.state));
    out.insert("status".into(), json!(op_status(view)));
    out.insert("result".into(), view.result.clone().unwrap_or(Value::Null));
    out.insert("output".into(), output_text(view.result.as_ref()));
    out.insert("error".into(), json!(view.error));
}

pub(crate) fn metrics_of(result: Option<&Value>) -> Option<Value> {
    let r = result?.as_object()?;
    let m: Map<String, Value> = r
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "execution_time" | "tokens_processed" | "gpu_used" | "model"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!m.is_empty()).then_some(Value::Object(m))
}

fn fill_from_view(report: &mut StepReport, view: &JobView) {
    report.job_id = Some(view.job_id.to_string());
    report.job_type = view
        .job_type()
        .map(str::to_string)
        .or(report.job_type.take());
    report.status = Some(op_status(view).into());
    report.progress = progress_of(view.state);
    if view.result.is_some() {
        report.result = Some(output_text(view.result.as_ref()));
        report.performance_metrics = metrics_of(view.result.as_ref());
    }
}

fn job_failure(view: &JobView) -> Fail {
    let detail = view
        .result
        .as_ref()
        .and_then(|r| r.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| view.error.clone());
    let what = match view.state {
        JobState::Completed => "reported a failed result".to_string(),
        s => format!("ended {s}"),
    };
    let msg = match detail {
        Some(d) => format!("job {} {what}: {d}", view.job_id),
        None => format!("job {} {what}", view.job_id),
    };
    let f = Fail::new(StepFailure::Failed, msg);
    match view.state {
        JobState::Expired => f.recommend(
            "The job expired in the queue: raise its ttl, lower its payment below 10 or choose a bonded provider",
        ),
        _ => f.recommend("Check the job's prompt, type and model; add `retry.on: [job_failed]` to resubmit"),
    }
}

/// Polls a job until a final state or the timeout; on timeout cancels it unless told to keep it.
async fn wait<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    job: &JobId,
    timeout: Duration,
    on_timeout: OnTimeout,
    report: &mut StepReport,
) -> Result<JobView, Fail> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = PollBackoff::with(ctx.poll.0, ctx.poll.1);
    let mut last_state: Option<JobState> = None;
    let mut poll_errors = 0u32;
    loop {
        let polled = ctx.coord.job(job).await;
        crash::point("wait");
        match polled {
            Ok(view) => {
                if last_state != Some(view.state) {
                    last_state = Some(view.state);
                    ctx.emit(Event::JobState {
                        id: step.id.clone(),
                        job_id: job.to_string(),
                        state: view.state.to_string(),
                    });
                }
                if view.state.is_final() {
                    ctx.untrack(job);
                    return Ok(view);
                }
            }
            Err(e) if e.is_retryable() => {
                // A failed poll is retried as a poll: it never resubmits the job.
                poll_errors += 1;
                let attempt = Attempt {
                    number: poll_errors,
                    started_at: now(),
                    duration_ms: 0,
                    error: Some(format!("poll failed: {e}")),
                    delay_ms: None,
                };
                record_failed_attempt(ctx, step, report, attempt);
            }
            Err(e) => return Err(Fail::from_client(&e)),
        }
        let pause = backoff.next().unwrap_or(ctx.poll.1);
        let now_t = tokio::time::Instant::now();
        if now_t >= deadline {
            break;
        }
        tokio::time::sleep(pause.min(deadline - now_t)).await;
        if tokio::time::Instant::now() >= deadline {
            // One last look before giving up.
            if let Ok(view) = ctx.coord.job(job).await
                && view.state.is_final()
            {
                ctx.untrack(job);
                return Ok(view);
            }
            break;
        }
    }
    let mut fail = Fail::new(
        StepFailure::TimedOut,
        format!(
            "job {job} did not finish within {} (last state {})",
            crate::duration::Dur(timeout),
            last_state.map_or("unknown", JobState::as_str)
        ),
    );
    match on_timeout {
        OnTimeout::Cancel => {
            let f = ctx.inflight.lock().ok().and_then(|m| m.get(job).cloned());
            match f {
                Some(f) => {
                    cancel_and_refund(ctx, job, &f).await;
                    fail = fail.recommend("The job was cancelled and its payment refunded where the coordinator refunds");
                }
                None => {
                    let _ = ctx.coord.cancel(job).await;
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
    Err(fail
        .recommend("Raise the wait's `timeout`")
        .recommend("A job paid 10 or more may wait for a bonded provider: lower the payment or pick a provider"))
}

/// Cancels a job this run submitted and asks for (or reads back) its refund; emits what happened.
pub(crate) async fn cancel_and_refund<C: Coordinator>(ctx: &Ctx<C>, job: &JobId, f: &InFlight) {
    ctx.untrack(job);
    let view = match ctx.coord.cancel(job).await {
        Ok(v) => Some(v),
        // Already finished (409) or gone: read the job to report its state.
        Err(_) => ctx.coord.job(job).await.ok(),
    };
    let mut refunded = None;
    let mut payment_status = view.as_ref().and_then(|v| v.payment_status.clone());
    if let Some(v) = &view
        && matches!(
            v.state,
            JobState::Canceled | JobState::Failed | JobState::Expired
        )
    {
        if payment_status.as_deref() != Some("refunded")
            && let Some(pid) = &v.payment_id
        {
            // The real service does not refund on cancel: ask for it.
            let req = RefundRequest {
                job_id: job.to_string(),
                payment_id: pid.clone(),
                reason: "buyer_requested".into(),
            };
            if let Ok(r) = ctx.coord.refund(&req).await {
                payment_status = Some(r.status);
            }
        }
        if payment_status.as_deref() == Some("refunded") {
            refunded = Some(f.payment);
        }
    }
    ctx.emit(Event::JobCancelled {
        id: f.step.clone(),
        job_id: job.to_string(),
        state: view.as_ref().map(|v| v.state.to_string()),
        payment_status,
        refunded,
        wallet: f.wallet.clone(),
    });
}

/// Fetches a finished job's result, verifies its receipt and saves it.
async fn fetch<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    job: &JobId,
    save: Option<&str>,
    verify: bool,
    report: &mut StepReport,
) -> Result<Map<String, Value>, Fail> {
    fetch_inner(ctx, step, job, save, verify, report, true).await
}

async fn fetch_inner<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    job: &JobId,
    save: Option<&str>,
    verify: bool,
    report: &mut StepReport,
    first_try: bool,
) -> Result<Map<String, Value>, Fail> {
    crash::point("fetch");
    let got = with_retry(ctx, step, report, || ctx.coord.result(job)).await;
    let res = match got {
        Ok(r) => r,
        Err(f) => {
            // 425 is also the answer for FAILED, CANCELED and EXPIRED jobs: read the job to tell which.
            if let Ok(view) = ctx.coord.job(job).await {
                fill_from_view(report, &view);
                if view.succeeded() && first_try {
                    // It completed between the two requests: ask for the result once more.
                    return Box::pin(fetch_inner(ctx, step, job, save, verify, report, false))
                        .await;
                }
                if view.state.is_final() {
                    return Err(job_failure(&view));
                }
                return Err(Fail::new(
                    StepFailure::Failed,
                    format!("job {job} has no result yet (state {})", view.state),
                )
                .recommend("Add a `wait` step before the fetch"));
            }
            return Err(f);
        }
    };
    report.status = Some(
        if result_failed(Some(&res.result)) {
            "failed"
        } else {
            "completed"
        }
        .into(),
    );
    report.progress = 100;
    report.result = Some(output_text(Some(&res.result)));
    report.performance_metrics = metrics_of(Some(&res.result));
    if result_failed(Some(&res.result)) {
        let err = res
            .result
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
    out.insert("result".into(), res.result.clone());
    out.insert("output".into(), output_text(Some(&res.result)));
    let mut verified = Value::Null;
    match &res.receipt {
        Some(receipt) => {
            let check = verify_receipt(receipt);
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
            out.insert("receipt".into(), receipt.clone());
        }
        None => {
            report
                .issues
                .push(format!("job {job} came without a receipt"));
            out.insert("receipt".into(), Value::Null);
        }
    }
    out.insert("receipt_verified".into(), verified);
    if let Some(save) = save {
        let path = save_path(&ctx.run_dir, ctx.plan.dir(), save).map_err(|m| {
            Fail::new(StepFailure::Failed, m)
                .recommend("Save inside the run directory or under the plan's folder")
        })?;
        write_result(&path, &res.result, res.receipt.as_ref()).map_err(|e| {
            Fail::new(
                StepFailure::Failed,
                format!("cannot save the result to {}: {e}", path.display()),
            )
        })?;
        out.insert("saved".into(), json!(path.display().to_string()));
    }
    Ok(out)
}

pub(crate) fn write_result(
    path: &Path,
    result: &Value,
    receipt: Option<&Value>,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let body = json!({"result": result, "receipt": receipt});
    let text = serde_json::to_string_pretty(&body).unwrap_or_default() + "\n";
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
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
    req: &JobRequest,
    on_timeout: OnTimeout,
    save: Option<&str>,
    report: &mut StepReport,
) -> Result<Map<String, Value>, Fail> {
    let policy = RetryPolicy::new(step.retry.clone());
    let mut submission = 1;
    loop {
        let view = submit(ctx, step, req, submission, report).await?;
        let job = view.job_id.clone();
        let done = wait(ctx, step, &job, step.timeout, on_timeout, report).await?;
        fill_from_view(report, &done);
        if !done.succeeded() {
            let fail = job_failure(&done);
            if submission < policy.max_attempts()
                && policy.retries(FailureClass::Retry(RetryOn::JobFailed))
            {
                let delay = ctx.retry_delay(&policy, submission + 1, None);
                let attempt = Attempt {
                    number: submission,
                    started_at: now(),
                    duration_ms: 0,
                    error: Some(fail.issue.clone()),
                    delay_ms: Some(delay.as_millis() as u64),
                };
                record_failed_attempt(ctx, step, report, attempt);
                tokio::time::sleep(delay).await;
                submission += 1;
                continue;
            }
            return Err(fail);
        }
        let mut out = fetch(ctx, step, &job, save, true, report).await?;
        for (k, v) in submit_outputs(&view, req) {
            out.entry(k).or_insert(v);
        }
        out.insert("state".into(), json!(done.state));
        report.summary = format!(
            "{} job {} completed: {} AITBC from {}",
            req.job_type, job, req.payment, req.wallet
        );
        return Ok(out);
    }
}

/// Asks for resources, compares what was granted with what was asked, and estimates the cost.
async fn optimize<C: Coordinator>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    req: &OptimizeRequest,
    report: &mut StepReport,
) -> Result<Map<String, Value>, Fail> {
    let problems = crate::policy::check_optimize(req, &ctx.plan.plan.policy);
    if !problems.is_empty() {
        return Err(Fail::new(
            StepFailure::Failed,
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    report.wallet = req.wallet.clone();
    let body = AllocateRequest {
        agent_id: req.agent_id.clone(),
        task_requirements: TaskRequirements {
            cpu_cores: req.cpu,
            memory_gb: req.memory_gb,
            gpu_count: req.gpu,
            gpu_memory_gb: 0.0,
            storage_gb: 0.0,
            network_bandwidth: 0.0,
            task_type: req.task_type.clone(),
        },
        optimization_target: req.target.clone(),
        priority_level: "normal".into(),
    };
    let alloc = with_retry(ctx, step, report, || ctx.coord.allocate(&body)).await?;
    // The real service sizes the allocation from the task type alone: say where it differs.
    let mut diffs = Vec::new();
    for (what, asked, got) in [
        ("cpu cores", req.cpu, alloc.cpu_cores),
        ("memory GB", req.memory_gb, alloc.memory_gb),
        ("GPUs", req.gpu, alloc.gpu_count),
    ] {
        if (asked - got).abs() > 1e-9 {
            diffs.push(format!("{what}: asked {asked}, granted {got}"));
        }
    }
    if !diffs.is_empty() {
        report.issues.push(format!(
            "the allocation differs from the request ({})",
            diffs.join(", ")
        ));
    }
    let mut estimate = Value::Null;
    if let Some(d) = req.duration
        && alloc.gpu_count > 0.0
    {
        match ctx.coord.gpu_offers(Some(100)).await {
            Ok(offers) => {
                if let Some(cheapest) = offers.iter().map(|o| o.price_per_hour).min() {
                    let hours = Money(
                        rust_decimal::Decimal::from(d.as_secs())
                            / rust_decimal::Decimal::from(3600),
                    );
                    let gpus = Money::from_f64(alloc.gpu_count).unwrap_or(Money::ZERO);
                    let cost = Money((cheapest.0 * gpus.0 * hours.0).round_dp(8));
                    estimate = json!(cost);
                }
            }
            Err(e) => report
                .issues
                .push(format!("no cost estimate: GPU offers unavailable ({e})")),
        }
    }
    let alloc_json = serde_json::to_value(&alloc).unwrap_or(Value::Null);
    report.resource_allocation = Some(alloc_json.clone());
    report.status = Some("completed".into());
    report.progress = 100;
    report.summary = format!(
        "Resources allocated for agent {} ({})",
        req.agent_id, alloc.allocation_id
    );
    if !estimate.is_null() {
        report.performance_metrics = Some(json!({"estimated_cost": estimate}));
    }
    let mut out = Map::new();
    out.insert("allocation".into(), alloc_json);
    out.insert("allocation_id".into(), json!(alloc.allocation_id));
    out.insert("estimated_cost".into(), estimate);
    out.insert("status".into(), json!("completed"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
