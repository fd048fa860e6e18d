//! The executor's async shell around the [`Dispatcher`]: it writes the journal's header, looks up the
//! cache, runs the balance preflight, starts a task for each step the dispatcher hands out, waits on
//! those tasks and on the interruption, and on the way out reports the steps that never started and
//! cancels the jobs still running. Which step may start, and what the outcome is, the dispatcher
//! decides. Apart from the journal it writes no files: it emits events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dispatch::{Dispatcher, Stop};
use super::journal::{CancelWhy, JOURNAL_VERSION, Journal, Record, Replay};
use super::preflight::{PreflightError, preflight};
use super::steps::{self, StepResult};
use crate::api::JobId;
use crate::client::Coordinator;
use crate::exit;
use crate::model::Event;
use crate::model::{RunStatus, StepReport, StepState};
use crate::money::Money;
use crate::ops::payer::BalanceCheck;
use crate::plan::check::{RunInfo, StepOutputs};
use crate::plan::{CheckedPlan, PlannedStep};

/// How to run a plan.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run's id.
    pub run_id: String,
    /// The run's directory (results saved by `fetch` go here).
    pub run_dir: PathBuf,
    /// Steps running at once (default: the plan's `defaults.concurrency`, else 16).
    pub concurrency: Option<usize>,
    /// Stop the run at the first failed step (the default).
    pub fail_fast: bool,
    /// Polling backoff range for `wait` (0.5 s → 5 s by default).
    pub poll: (Duration, Duration),
    /// Seed for retry jitter (random when `None`).
    pub seed: Option<u64>,
    /// True when the coordinator is the embedded one, whose jobs and ledger are in memory and end with
    /// the process (reported; the journal is then not fsync'd, [`Journal::set_fsync`]).
    pub embedded: bool,
    /// Reuse earlier results for `cache: true` steps (default true; `run --no-cache` turns it off).
    pub cache: bool,
    /// The command line's overrides, recorded in the report (`--set` values already redacted).
    pub inputs: crate::model::RunInputs,
    /// `--set` pairs the plan was loaded with (journaled, so `resume` loads it the same way).
    pub set: Vec<(String, String)>,
    /// `--vars` files the plan was loaded with (journaled).
    pub vars_files: Vec<PathBuf>,
    /// What an earlier start of this run did, when resuming it.
    pub resume: Option<Arc<Replay>>,
    /// `--from-run`: the steps whose outputs come from an earlier run instead of running.
    pub from_run: Option<Arc<super::from_run::Taken>>,
    /// True when the run holds the plan's lock (`--lock`; journaled so that a resume takes it too).
    pub lock: bool,
    /// `--max-spend`: caps that lower the plan's `policy.max_spend` for this start of the run.
    pub max_spend: crate::policy::spend::Caps,
    /// Whether wallet balances are read before the run and before every submit; only the command line
    /// switches it off (`--no-balance-check`), for this start of the run alone.
    pub balance_check: BalanceCheck,
    /// `resume --pay-again`: a job the run cancelled whose refund is not confirmed is submitted (and
    /// paid) again all the same; without it, its step fails saying how much is still held.
    pub pay_again: bool,
    /// Where the journal is copied besides its file (the PostgreSQL store, fenced by the lock).
    pub journal_mirror: Option<Arc<dyn super::journal::Mirror>>,
    /// The wallet reservations shared with other runs (`exec::reserve`); `None`: this run's own
    /// wallet locks alone.
    pub reservations: Option<Arc<dyn super::reserve::Reservations>>,
}

impl RunOptions {
    /// Defaults for a run with this id and directory.
    pub fn new(run_id: impl Into<String>, run_dir: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            run_id: run_id.into(),
            run_dir: run_dir.into(),
            concurrency: None,
            fail_fast: true,
            poll: (Duration::from_millis(500), Duration::from_secs(5)),
            seed: None,
            embedded: false,
            cache: true,
            inputs: Default::default(),
            set: Vec::new(),
            vars_files: Vec::new(),
            resume: None,
            from_run: None,
            lock: false,
            max_spend: Default::default(),
            balance_check: BalanceCheck::On,
            pay_again: false,
            journal_mirror: None,
            reservations: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    /// The status.
    pub status: RunStatus,
    /// The exit code for it.
    pub exit_code: i32,
}

/// A job this run submitted and has not seen finish.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub step: String,
    /// The step's submission that made the job (journaled with a cancel).
    pub submission: u32,
    pub wallet: String,
    pub payment: Money,
}

/// What every step task shares.
pub(crate) struct Ctx<C> {
    pub plan: Arc<CheckedPlan>,
    pub coord: Arc<C>,
    pub run: RunInfo,
    pub run_dir: PathBuf,
    pub outputs: RwLock<StepOutputs>,
    pub events: mpsc::UnboundedSender<Event>,
    pub wallet_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub inflight: Mutex<HashMap<JobId, InFlight>>,
    pub cancel: CancellationToken,
    /// Cancelled on Ctrl-C only: what a `failure()` step's work listens to (it may run after a
    /// fail-fast stop, and `ctx.cancel` is cancelled by then). `always()` and `cancelled()` steps are
    /// bounded by their own timeout alone.
    pub interrupted: CancellationToken,
    /// How the run goes so far, as templates read `run.status` and `run.failed_steps`.
    pub progress: RwLock<(String, Vec<String>)>,
    pub poll: (Duration, Duration),
    pub rng: Mutex<StdRng>,
    pub cache: Arc<super::cache::ResultCache>,
    pub journal: Arc<Journal>,
    pub resume: Option<Arc<Replay>>,
    /// The steps taken from an earlier run (`--from-run`).
    pub from_run: Option<Arc<super::from_run::Taken>>,
    pub balance_check: BalanceCheck,
    pub pay_again: bool,
    /// What the run may still pay (`policy.max_spend`, lowered by `--max-spend`).
    pub spend: Arc<crate::policy::spend::SpendCap>,
    /// The wallet reservations shared with other runs.
    pub reservations: Option<Arc<dyn super::reserve::Reservations>>,
}

impl<C> Ctx<C> {
    /// The run as a template sees it now: its status so far and the steps that failed.
    pub fn run_now(&self) -> RunInfo {
        let (status, failed) = self
            .progress
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        RunInfo {
            status,
            failed_steps: failed,
            ..self.run.clone()
        }
    }

    /// Tells the templates how the run goes (after each step, and at a stop).
    fn update_progress(&self, dispatcher: &Dispatcher) {
        let mut p = self.progress.write().unwrap_or_else(|p| p.into_inner());
        *p = (
            dispatcher.run_status().to_string(),
            dispatcher.failed_steps(),
        );
    }

    pub fn emit(&self, e: Event) {
        // A confirmed refund gives the job's payment back under the run's spend cap (once).
        match &e {
            Event::PaymentRefunded { job_id, .. }
            | Event::JobCancelled {
                job_id,
                refunded: Some(_),
                ..
            } => {
                self.spend.refunded(job_id);
            }
            _ => {}
        }
        let _ = self.events.send(e);
    }

    /// The jittered delay before attempt `next` of `policy`, drawn from the run's RNG.
    pub fn retry_delay(
        &self,
        policy: &crate::ops::retry::RetryPolicy,
        next: u32,
        retry_after: Option<Duration>,
    ) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        policy.delay(next, retry_after, &mut *rng)
    }

    /// The lock that serializes balance-changing submits of one wallet.
    pub fn wallet_lock(&self, wallet: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.wallet_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(wallet.to_string()).or_default().clone()
    }

    pub fn track(&self, job: &JobId, f: InFlight) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.clone(), f);
    }

    /// Appends to the journal; with `durable`, waits until the record is on disk. A journal that cannot
    /// be written is an error the caller must not ignore for money-moving records.
    pub async fn journal(&self, record: &Record, durable: bool) -> std::io::Result<()> {
        if durable {
            self.journal.append_durable(record).await
        } else {
            self.journal.append(record, false)
        }
    }

    /// Stops tracking a job; what was tracked of it, if anything.
    pub fn untrack(&self, job: &JobId) -> Option<InFlight> {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job)
    }
}

/// Runs a checked plan to the end (or to a stop), emitting events. `interrupt` is cancelled by the
/// caller on Ctrl-C or SIGTERM.
pub async fn execute<C: Coordinator + 'static>(
    plan: Arc<CheckedPlan>,
    coord: Arc<C>,
    options: RunOptions,
    events: mpsc::UnboundedSender<Event>,
    interrupt: CancellationToken,
) -> RunOutcome {
    let run = RunInfo {
        id: options.run_id.clone(),
        started_at: now(),
        plan: plan.plan.name.clone(),
        status: crate::plan::status::run_status::RUNNING.into(),
        failed_steps: Vec::new(),
    };

    let Some(journal) = open_journal(&plan, coord.base_url(), &options, &run, &events) else {
        return announce_end(&events, RunStatus::Failed, exit::STEP_FAILED, false);
    };
    // What the plan spends per wallet, read from every step's spec once (after the load a spec is
    // text, parsed when read).
    let plan_spend = crate::plan::spend::spend_per_wallet(&plan).0;
    let _ = events.send(Event::RunStarted {
        run_id: options.run_id.clone(),
        plan: plan.plan.name.clone(),
        coordinator: coord.base_url().to_string(),
        embedded: options.embedded,
        steps: plan
            .steps
            .iter()
            .map(|s| (s.id.clone(), s.kind.name().to_string()))
            .collect(),
        spend: plan_spend.clone(),
        at: run.started_at.clone(),
    });

    // Cache lookups come first: steps served from the cache are not counted by the preflight.
    let cache = Arc::new(super::cache::ResultCache::new(
        &options.run_dir,
        &options.run_id,
        options.cache,
    ));
    let mut cached = cache.prefetch(&plan, &run, options.resume.as_deref());
    // Steps taken from an earlier run (`--from-run`) pay nothing, like cache hits.
    if let Some(t) = &options.from_run {
        cached.extend(t.steps.keys().cloned());
    }
    let spend = Arc::new(spend_cap(&plan, &options));
    let to_pay =
        super::preflight::still_to_pay(plan_spend, &already_paid(&plan, &options, &cached));
    if let Some(refusal) = over_the_cap(&to_pay, &spend) {
        let _ = events.send(Event::RunIssue { message: refusal });
        return finish(
            &journal,
            &events,
            RunStatus::Refused,
            exit::STEP_FAILED,
            false,
        );
    }
    if let Some((status, code, refused)) =
        check_balances(&plan, coord.as_ref(), &options, &to_pay, &events).await
    {
        return finish(&journal, &events, status, code, refused);
    }

    let limit = options
        .concurrency
        .or(plan.plan.defaults.concurrency.map(|c| c as usize))
        .unwrap_or(16);
    let mut dispatcher = Dispatcher::new(
        plan.steps
            .iter()
            .map(|s| (s.id.as_str(), s.needs.iter().map(String::as_str))),
        limit,
        options.fail_fast,
    )
    .with_gates(
        plan.steps
            .iter()
            .map(|s| crate::plan::status::gate_of(s.when.as_ref()))
            .collect(),
    );
    let ctx = Arc::new(Ctx {
        plan: plan.clone(),
        coord,
        run,
        run_dir: options.run_dir.clone(),
        outputs: RwLock::new(BTreeMap::new()),
        events: events.clone(),
        wallet_locks: Mutex::new(HashMap::new()),
        inflight: Mutex::new(HashMap::new()),
        cancel: CancellationToken::new(),
        interrupted: CancellationToken::new(),
        progress: RwLock::new((
            crate::plan::status::run_status::RUNNING.to_string(),
            Vec::new(),
        )),
        poll: options.poll,
        rng: Mutex::new(match options.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        }),
        cache,
        journal: journal.clone(),
        resume: options.resume.clone(),
        from_run: options.from_run.clone(),
        balance_check: options.balance_check,
        pay_again: options.pay_again,
        spend,
        reservations: options.reservations.clone(),
    });
    drive(&ctx, &mut dispatcher, &interrupt).await;

    // Steps never started are reported as cancelled (stopped) or skipped.
    for (i, blocked) in dispatcher.never_started() {
        let step = &plan.steps[i];
        let gate = dispatcher.gate(i);
        let report = match blocked {
            Some(reason) => steps::skipped_report(step, reason),
            None if gate != crate::plan::status::Gate::Success => {
                let why = crate::plan::status::not_run_because(gate, dispatcher.interrupted());
                let shown = why.strip_prefix("not run: ").unwrap_or(&why).to_string();
                steps::not_started_report(step, &shown).gated(gate.name(), why)
            }
            None => steps::not_started_report(step, "the run stopped before this step started"),
        };
        ctx.emit(Event::StepFinished {
            report: Box::new(report),
        });
    }
    cancel_leftovers(&ctx, dispatcher.stop()).await;
    let (status, code) = dispatcher.outcome();
    finish(
        &journal,
        &events,
        status,
        code,
        dispatcher.credentials_refused(),
    )
}

/// Opens the journal and writes this start's header first: nothing is sent before the journal can
/// record what is sent. `None`, once the reason is reported, when it cannot be opened.
fn open_journal(
    plan: &CheckedPlan,
    coordinator: &str,
    options: &RunOptions,
    run: &RunInfo,
    events: &mpsc::UnboundedSender<Event>,
) -> Option<Arc<Journal>> {
    let journal = match Journal::open_mirrored(&options.run_dir, options.journal_mirror.clone()) {
        Ok(j) => {
            j.set_fsync(!options.embedded);
            Arc::new(j)
        }
        Err(e) => {
            let _ = events.send(Event::RunIssue {
                message: format!(
                    "cannot open the journal in {}: {e}",
                    options.run_dir.display()
                ),
            });
            return None;
        }
    };
    if let Err(e) = journal.append(&header(plan, coordinator, options, run), true) {
        let _ = events.send(Event::RunIssue {
            message: format!("cannot write the journal: {e}"),
        });
    }
    Some(journal)
}

/// The journal's header record for this start of the run.
fn header(plan: &CheckedPlan, coordinator: &str, options: &RunOptions, run: &RunInfo) -> Record {
    Record::Run {
        version: JOURNAL_VERSION,
        run_id: options.run_id.clone(),
        plan_path: std::path::absolute(&plan.path)
            .unwrap_or_else(|_| plan.path.clone())
            .display()
            .to_string(),
        plan_hash: plan.content_hash.clone(),
        set: options.set.clone(),
        vars_files: options.vars_files.clone(),
        coordinator: coordinator.to_string(),
        embedded: options.embedded,
        attempt: options.resume.as_ref().map_or(0, |r| r.attempts),
        at: run.started_at.clone(),
        cache: options.cache,
        vars_from: options.inputs.vars_from.clone(),
        lock: options.lock,
        only: options.inputs.only.clone(),
        from_run: options.inputs.from_run.clone(),
        skip: options.inputs.skip.clone(),
    }
}

/// What the run has paid already: an earlier start of it (when resuming) and the cache (by the runs its
/// results come from).
fn already_paid(
    plan: &CheckedPlan,
    options: &RunOptions,
    cached: &HashSet<String>,
) -> BTreeMap<String, Money> {
    let mut paid = options
        .resume
        .as_ref()
        .map(|r| r.paid_per_wallet())
        .unwrap_or_default();
    super::cache::add_cached_spend(&mut paid, plan, cached);
    paid
}

/// The run's spend cap: the plan's `policy.max_spend` caps, lowered by `--max-spend`, with what an
/// earlier start of a resumed run paid counted in.
fn spend_cap(plan: &CheckedPlan, options: &RunOptions) -> crate::policy::spend::SpendCap {
    use crate::policy::spend::{Caps, SpendCap};
    let caps = Caps::of_policy(&plan.plan.policy).tightest(&options.max_spend);
    let cap = SpendCap::new(caps);
    if let Some(r) = &options.resume {
        for (wallet, amount) in r.paid_per_wallet() {
            cap.count_paid(&wallet, amount);
        }
    }
    cap
}

/// Why the run must not start under its spend cap, if it must not: what it will still spend (as far as
/// the plan says before it runs, `to_pay`) does not fit.
fn over_the_cap(
    to_pay: &BTreeMap<String, Money>,
    cap: &crate::policy::spend::SpendCap,
) -> Option<String> {
    if !cap.is_capped() {
        return None;
    }
    cap.check_all(to_pay)
        .err()
        .map(|e| format!("the run would pay more than its spend cap allows: {e}"))
}

/// The preflight of what the run will still pay (`to_pay`: less what a resumed run and the cache have
/// paid already). Returns the run's outcome when it must not go on (and whether the coordinator
/// refused our credentials).
async fn check_balances<C: Coordinator>(
    plan: &CheckedPlan,
    coord: &C,
    options: &RunOptions,
    to_pay: &BTreeMap<String, Money>,
    events: &mpsc::UnboundedSender<Event>,
) -> Option<(RunStatus, i32, bool)> {
    let balances = match options.balance_check.issue() {
        Some(issue) => {
            // Said once for the run, and again by every submit's outcome.
            let _ = events.send(Event::RunIssue {
                message: format!(
                    "{issue}: no preflight and no check before each submit; wallets given by name are sent unresolved"
                ),
            });
            false
        }
        None => true,
    };
    // The embedded coordinator was started with our token: no need to ask it.
    let probe = !options.embedded;
    match preflight(plan, coord, to_pay, options.seed, probe, balances).await {
        Ok(problems) if problems.is_empty() => None,
        Ok(problems) => {
            for p in problems {
                let _ = events.send(Event::RunIssue { message: p });
            }
            Some((RunStatus::Refused, exit::STEP_FAILED, false))
        }
        Err(e) => {
            let _ = events.send(Event::RunIssue {
                message: e.to_string(),
            });
            // Where balances come from, and how to go on without them, is worth saying here too.
            if let PreflightError::Balance(op @ crate::ops::OpError::BalanceUnknown { error, .. }) =
                &e
                && matches!(
                    **error,
                    crate::client::ClientError::Auth { status: 403, .. }
                        | crate::client::ClientError::NotFound { .. }
                )
            {
                for advice in op.recommendations() {
                    let _ = events.send(Event::RunIssue {
                        message: format!("hint: {advice}"),
                    });
                }
            }
            let code = e.exit_code();
            let status = match code {
                exit::UNREACHABLE => RunStatus::Unreachable,
                exit::TIMEOUT => RunStatus::TimedOut,
                _ => RunStatus::Failed,
            };
            // (A balance read refused after the coordinator took our token is about the wallet
            // endpoint, not the credentials.)
            let refused = matches!(
                e,
                super::preflight::PreflightError::Credentials(
                    crate::client::ClientError::Auth { .. }
                )
            );
            Some((status, code, refused))
        }
    }
}

/// Starts the steps the dispatcher hands out and tells it how each ended, until nothing runs and
/// nothing more may start. On a stop (fail-fast or `interrupt`) the steps still running are cancelled
/// through `ctx.cancel`, and their results still come back here.
async fn drive<C: Coordinator + 'static>(
    ctx: &Arc<Ctx<C>>,
    dispatcher: &mut Dispatcher,
    interrupt: &CancellationToken,
) {
    let mut tasks: JoinSet<(usize, StepResult)> = JoinSet::new();
    loop {
        while let Some(i) = dispatcher.next_ready() {
            take_up(ctx, dispatcher, i, &mut tasks);
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok((i, result))) => step_ended(ctx, dispatcher, i, result),
                Some(Err(e)) => {
                    // A panicking step is a bug; keep the run going to write the report.
                    ctx.emit(Event::RunIssue { message: format!("a step task ended abnormally: {e}") });
                    dispatcher.lost_task();
                    ctx.update_progress(dispatcher);
                    ctx.cancel.cancel();
                }
                None => break,
            },
            _ = interrupt.cancelled(), if !dispatcher.interrupted() => {
                dispatcher.interrupt();
                ctx.update_progress(dispatcher);
                ctx.emit(Event::RunIssue { message: "interrupted: cancelling the jobs still running".into() });
                ctx.cancel.cancel();
                ctx.interrupted.cancel();
            }
        }
    }
}

/// Where a kept step's record comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeptFrom {
    /// An earlier start of this run: its record is in this journal already, and is not written again
    /// (a resume of 10,000 kept steps would copy tens of megabytes into the journal, each time).
    ThisRun,
    /// The run `--from-run` names: journaled here, so that a resume of this run keeps it too.
    OtherRun,
}

/// Records step `i` as succeeded with the outputs and this report entry of a journaled step (of an
/// earlier start of the run, or of the run `--from-run` names).
fn keep_step<C: Coordinator + 'static>(
    ctx: &Arc<Ctx<C>>,
    dispatcher: &mut Dispatcher,
    i: usize,
    kept: &super::journal::Kept,
    report: crate::model::StepReport,
    from: KeptFrom,
) {
    // Later steps get the outputs as the step made them: a secret it quoted is put back from the
    // secret's source (the journal holds only where it stood). The cli checked before the run
    // that the plan still has every such secret.
    if dispatcher.has_dependents(i) {
        let outputs = kept
            .outputs_with(&ctx.plan.secrets)
            .unwrap_or_else(|_| kept.outputs.map());
        keep_outputs(ctx, dispatcher, i, outputs);
    }
    if from == KeptFrom::OtherRun {
        record_step(ctx, report, &kept.outputs.map(), &kept.redacted);
    } else {
        ctx.emit(Event::StepFinished {
            report: Box::new(report),
        });
    }
    dispatcher.finished(i, StepState::Succeeded, None, false);
}

/// Takes up step `i`: keeps it from an earlier start of the run, skips it when a step it needs did not
/// succeed, or starts its task.
fn take_up<C: Coordinator + 'static>(
    ctx: &Arc<Ctx<C>>,
    dispatcher: &mut Dispatcher,
    i: usize,
    tasks: &mut JoinSet<(usize, StepResult)>,
) {
    let step = &ctx.plan.steps[i];
    // A step taken from an earlier run (`--from-run`): its outputs and report entry, marked as
    // taken from that run; no job, so no payment.
    if let Some(t) = &ctx.from_run
        && let Some(kept) = t.steps.get(&step.id)
        && !ctx
            .resume
            .as_ref()
            .is_some_and(|r| r.done.contains_key(&step.id))
    {
        let mut report = kept.report();
        report.cached_from = Some(crate::model::CachedFrom {
            run_id: t.run_id.clone(),
            step_id: step.id.clone(),
            job_id: report
                .outcome
                .job_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        });
        keep_step(ctx, dispatcher, i, kept, report, KeptFrom::OtherRun);
        return;
    }
    // A step that succeeded in an earlier start of this run keeps its report and outputs.
    if let Some(kept) = ctx.resume.as_ref().and_then(|r| r.done.get(&step.id)) {
        let submissions = ctx
            .resume
            .as_ref()
            .and_then(|r| r.submissions.get(&step.id));
        for sub in submissions.into_iter().flatten() {
            if let Some(job_id) = &sub.job_id {
                ctx.emit(Event::JobSubmitted {
                    id: step.id.clone(),
                    job_id: job_id.clone(),
                    wallet: sub.wallet.clone(),
                    payment: sub.payment,
                });
                // A job the run cancelled: what became of its payment, as last journaled.
                let outcome = sub.cancelled.as_ref().and_then(|c| c.outcome.as_ref());
                if let Some(amount) = outcome.and_then(|o| o.refunded) {
                    ctx.emit(Event::PaymentRefunded {
                        id: step.id.clone(),
                        job_id: job_id.clone(),
                        wallet: sub.wallet.clone(),
                        amount,
                    });
                } else if let Some(amount) = outcome.and_then(|o| o.held) {
                    ctx.emit(Event::PaymentHeld {
                        id: step.id.clone(),
                        job_id: job_id.clone(),
                        wallet: sub.wallet.clone(),
                        amount,
                        note: None,
                    });
                }
            }
        }
        keep_step(
            ctx,
            dispatcher,
            i,
            kept,
            kept.take_report(),
            KeptFrom::ThisRun,
        );
        return;
    }
    if let Some(reason) = dispatcher.blocked(i) {
        let report = steps::skipped_report(step, reason);
        ctx.emit(Event::StepFinished {
            report: Box::new(report),
        });
        dispatcher.finished(i, StepState::Skipped, None, false);
        return;
    }
    let ctx = ctx.clone();
    let step = step.clone();
    tasks.spawn(async move {
        let r = steps::run_step(&ctx, &step).await;
        (i, r)
    });
}

/// Records how step `i`'s task ended; the first failure of a fail-fast run stops it.
fn step_ended<C>(ctx: &Ctx<C>, dispatcher: &mut Dispatcher, i: usize, result: StepResult) {
    let step = &ctx.plan.steps[i];
    let state = result.report.state;
    // Secrets stay off the disk, in the journal too: an output that quoted one is journaled with
    // `***`, and where the secret stood, so that a resume can put its value back.
    let (journaled, redacted) =
        super::journal::redact_outputs(&result.outputs, &ctx.plan.secrets, |s| ctx.plan.redact(s));
    if state == StepState::Succeeded {
        keep_outputs(ctx, dispatcher, i, result.outputs);
    }
    record_step(ctx, result.report, &journaled, &redacted);
    let stopped = dispatcher
        .finished(i, state, result.failure, step.continue_on_error)
        .is_some();
    ctx.update_progress(dispatcher);
    if stopped {
        ctx.emit(Event::RunIssue {
            message: format!("step `{}` failed; stopping the run (fail-fast)", step.id),
        });
        ctx.cancel.cancel();
    }
}

/// Keeps a succeeded step's outputs for the templates of later steps — only when later steps read them.
fn keep_outputs<C>(ctx: &Ctx<C>, dispatcher: &Dispatcher, i: usize, outputs: Map<String, Value>) {
    if dispatcher.has_dependents(i)
        && let Ok(mut outs) = ctx.outputs.write()
    {
        outs.insert(ctx.plan.steps[i].id.clone(), Value::Object(outputs));
    }
}

/// Journals a finished step (with its outputs as they may be written, and where they quoted a secret)
/// and reports it.
fn record_step<C>(
    ctx: &Ctx<C>,
    report: StepReport,
    journaled: &Map<String, Value>,
    redacted: &BTreeMap<String, Vec<super::journal::Piece>>,
) {
    let _ = ctx.journal.write(&super::journal::StepRecord::Step {
        report: &report,
        outputs: journaled,
        redacted,
    });
    ctx.emit(Event::StepFinished {
        report: Box::new(report),
    });
}

/// Cancels the jobs this run submitted and did not see finish, and reads back what was refunded.
/// `stop` is why the run stopped early, if it did (journaled with each cancel: `resume` submits a job
/// cancelled on the way out again, once its refund is confirmed).
async fn cancel_leftovers<C: Coordinator>(ctx: &Ctx<C>, stop: Option<Stop>) {
    let why = match stop {
        Some(Stop::Interrupted) => CancelWhy::Interrupted,
        Some(Stop::Failed | Stop::TimedOut | Stop::Unreachable) => CancelWhy::Stopped,
        None => CancelWhy::Leftover,
    };
    let leftover: Vec<(JobId, InFlight)> = ctx
        .inflight
        .lock()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    for (job, f) in leftover {
        steps::cancel_and_refund(ctx, &job, &f, &f.step, why).await;
    }
}

/// Journals the end of the run and reports it.
fn finish(
    journal: &Journal,
    events: &mpsc::UnboundedSender<Event>,
    status: RunStatus,
    code: i32,
    credentials_refused: bool,
) -> RunOutcome {
    let word = serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = journal.append(
        &Record::End {
            status: word,
            exit_code: code,
        },
        true,
    );
    announce_end(events, status, code, credentials_refused)
}

/// Reports the end of the run.
fn announce_end(
    events: &mpsc::UnboundedSender<Event>,
    status: RunStatus,
    code: i32,
    credentials_refused: bool,
) -> RunOutcome {
    let _ = events.send(Event::RunFinished {
        status,
        exit_code: code,
        credentials_refused,
        at: now(),
    });
    RunOutcome {
        status,
        exit_code: code,
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A step's own outputs, merged with its declared `outputs:`.
pub(crate) fn finish_outputs<C>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    own: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    if step.outputs.is_empty() {
        return Ok(own);
    }
    let outs = ctx.outputs.read().unwrap_or_else(|p| p.into_inner());
    ctx.plan
        .render_outputs(step, &own, &outs, &ctx.run_now())
        .map_err(|d| d.message)
}

/// Reports of steps keyed by id, for reporters that need them.
pub type StepReports = BTreeMap<String, StepReport>;
