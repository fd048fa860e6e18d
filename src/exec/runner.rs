//! The scheduler: starts steps as their dependencies finish, stops on failure or interruption, cancels
//! the jobs still running, and returns the outcome. It never writes files itself: it emits events.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::events::Event;
use super::journal::{Journal, Record, Replay};
use super::steps::{self, StepFailure, StepResult};
use crate::api::JobId;
use crate::client::{ClientError, Coordinator};
use crate::exit;
use crate::money::Money;
use crate::plan::check::{RunInfo, StepOutputs};
use crate::plan::{CheckedPlan, PlannedStep};
use crate::report::model::{RunStatus, StepReport, StepState};

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
    /// True when the coordinator is the embedded one (reported).
    pub embedded: bool,
    /// Reuse earlier results for `cache: true` steps (default true; `run --no-cache` turns it off).
    pub cache: bool,
    /// The command line's overrides, recorded in the report (`--set` values already redacted).
    pub inputs: crate::report::model::RunInputs,
    /// `--set` pairs the plan was loaded with (journaled, so `resume` loads it the same way).
    pub set: Vec<(String, String)>,
    /// `--vars` files the plan was loaded with (journaled).
    pub vars_files: Vec<PathBuf>,
    /// What an earlier start of this run did, when resuming it.
    pub resume: Option<Arc<Replay>>,
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
    pub poll: (Duration, Duration),
    pub rng: Mutex<StdRng>,
    pub cache: Arc<super::cache::ResultCache>,
    pub journal: Arc<Journal>,
    pub resume: Option<Arc<Replay>>,
}

impl<C> Ctx<C> {
    pub fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// The jittered delay before attempt `next` of `policy`, drawn from the run's RNG.
    pub fn retry_delay(
        &self,
        policy: &super::retry::RetryPolicy,
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
    pub fn journal(&self, record: &Record, durable: bool) -> std::io::Result<()> {
        // An fsync blocks: on the multi-threaded runtime, let the other tasks move to another thread.
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if durable && multi {
            tokio::task::block_in_place(|| self.journal.append(record, durable))
        } else {
            self.journal.append(record, durable)
        }
    }

    pub fn untrack(&self, job: &JobId) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job);
    }
}

/// Why the run is stopping early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Failed,
    TimedOut,
    Unreachable,
    Interrupted,
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
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let run = RunInfo {
        id: options.run_id.clone(),
        started_at: started.clone(),
        plan: plan.plan.name.clone(),
    };

    // The journal first: nothing is sent before it can record what is sent.
    let journal = match Journal::open(&options.run_dir) {
        Ok(j) => Arc::new(j),
        Err(e) => {
            let _ = events.send(Event::RunIssue {
                message: format!(
                    "cannot open the journal in {}: {e}",
                    options.run_dir.display()
                ),
            });
            let _ = events.send(Event::RunFinished {
                status: RunStatus::Failed,
                exit_code: exit::STEP_FAILED,
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            });
            return RunOutcome {
                status: RunStatus::Failed,
                exit_code: exit::STEP_FAILED,
            };
        }
    };
    let header = Record::Run {
        run_id: options.run_id.clone(),
        plan_path: std::path::absolute(&plan.path)
            .unwrap_or_else(|_| plan.path.clone())
            .display()
            .to_string(),
        plan_hash: plan.content_hash.clone(),
        set: options.set.clone(),
        vars_files: options.vars_files.clone(),
        coordinator: coord.base_url().to_string(),
        embedded: options.embedded,
        attempt: options.resume.as_ref().map_or(0, |r| r.attempts),
        at: run.started_at.clone(),
    };
    if let Err(e) = journal.append(&header, true) {
        let _ = events.send(Event::RunIssue {
            message: format!("cannot write the journal: {e}"),
        });
    }
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
        at: started.clone(),
    });
    let end_journal = journal.clone();
    let finish = |status: RunStatus, code: i32| {
        let word = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = end_journal.append(
            &Record::End {
                status: word,
                exit_code: code,
            },
            true,
        );
        let _ = events.send(Event::RunFinished {
            status,
            exit_code: code,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        RunOutcome {
            status,
            exit_code: code,
        }
    };

    // Cache lookups come first: steps served from the cache are not counted by the preflight.
    let cache = Arc::new(super::cache::ResultCache::new(
        &options.run_dir,
        &options.run_id,
        options.cache,
    ));
    let cached = cache.prefetch(&plan, &run, options.resume.as_deref());

    // Balance preflight: refuse a plan that cannot be paid before anything is submitted.
    let mut already_paid = options
        .resume
        .as_ref()
        .map(|r| r.paid_per_wallet())
        .unwrap_or_default();
    // Steps served from the cache are paid already, too (by the run they come from).
    super::cache::add_cached_spend(&mut already_paid, &plan, &cached);
    match preflight(&plan, coord.as_ref(), &already_paid).await {
        Ok(problems) if problems.is_empty() => {}
        Ok(problems) => {
            for p in problems {
                let _ = events.send(Event::RunIssue { message: p });
            }
            return finish(RunStatus::Refused, exit::STEP_FAILED);
        }
        Err(e) => {
            let _ = events.send(Event::RunIssue {
                message: format!("balance preflight failed: {e}"),
            });
            let status = match e.exit_code() {
                exit::UNREACHABLE => RunStatus::Unreachable,
                exit::TIMEOUT => RunStatus::TimedOut,
                _ => RunStatus::Failed,
            };
            return finish(status, e.exit_code());
        }
    }

    let concurrency = options
        .concurrency
        .or(plan.plan.defaults.concurrency.map(|c| c as usize))
        .unwrap_or(16)
        .max(1);
    let stop_token = CancellationToken::new();
    let ctx = Arc::new(Ctx {
        plan: plan.clone(),
        coord,
        run,
        run_dir: options.run_dir.clone(),
        outputs: RwLock::new(BTreeMap::new()),
        events: events.clone(),
        wallet_locks: Mutex::new(HashMap::new()),
        inflight: Mutex::new(HashMap::new()),
        cancel: stop_token.clone(),
        poll: options.poll,
        rng: Mutex::new(match options.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        }),
        cache,
        journal,
        resume: options.resume.clone(),
    });

    let n = plan.steps.len();
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    // Dependents and remaining-dependency counts, so that readiness is O(edges) overall.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for (i, s) in plan.steps.iter().enumerate() {
        for need in &s.needs {
            if let Some(&j) = index.get(need.as_str()) {
                dependents[j].push(i);
                waiting[i] += 1;
            }
        }
    }
    let mut state: Vec<Option<StepState>> = vec![None; n];
    // Steps whose dependencies did not all succeed: they are skipped when their turn comes.
    let mut blocked: Vec<Option<String>> = vec![None; n];
    let mut ready: std::collections::VecDeque<usize> =
        (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut tasks: JoinSet<(usize, StepResult)> = JoinSet::new();
    let mut stop: Option<Stop> = None;
    let mut timed_out = false;
    let mut failed = false;
    let mut unreachable = false;

    loop {
        // Start what can start.
        while stop.is_none() && tasks.len() < concurrency {
            let Some(i) = ready.pop_front() else { break };
            let step = &plan.steps[i];
            // A step that succeeded in an earlier start of this run keeps its report and outputs.
            if let Some((report, outputs)) = ctx.resume.as_ref().and_then(|r| r.done.get(&step.id))
            {
                for sub in ctx
                    .resume
                    .as_ref()
                    .and_then(|r| r.submissions.get(&step.id))
                    .into_iter()
                    .flatten()
                {
                    if let Some(job_id) = &sub.job_id {
                        let _ = events.send(Event::JobSubmitted {
                            id: step.id.clone(),
                            job_id: job_id.clone(),
                            wallet: sub.wallet.clone(),
                            payment: sub.payment,
                        });
                    }
                }
                state[i] = Some(StepState::Succeeded);
                if !dependents[i].is_empty()
                    && let Ok(mut outs) = ctx.outputs.write()
                {
                    outs.insert(step.id.clone(), Value::Object(outputs.clone()));
                }
                let _ = ctx.journal(
                    &Record::Step {
                        report: Box::new(report.clone()),
                        outputs: outputs.clone(),
                    },
                    false,
                );
                let _ = events.send(Event::StepFinished {
                    report: Box::new(report.clone()),
                });
                release(
                    i,
                    &dependents,
                    &mut waiting,
                    &mut ready,
                    &mut blocked,
                    &plan,
                    StepState::Succeeded,
                );
                continue;
            }
            if let Some(reason) = blocked[i].take() {
                let report = steps::skipped_report(step, &reason);
                state[i] = Some(StepState::Skipped);
                let _ = events.send(Event::StepFinished {
                    report: Box::new(report),
                });
                release(
                    i,
                    &dependents,
                    &mut waiting,
                    &mut ready,
                    &mut blocked,
                    &plan,
                    StepState::Skipped,
                );
                continue;
            }
            let ctx = ctx.clone();
            let step = step.clone();
            tasks.spawn(async move {
                let r = steps::run_step(&ctx, &step).await;
                (i, r)
            });
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let (i, result) = match joined {
                    Ok(x) => x,
                    Err(e) => {
                        // A panicking step is a bug; keep the run going to write the report.
                        let _ = events.send(Event::RunIssue { message: format!("a step task ended abnormally: {e}") });
                        failed = true;
                        stop.get_or_insert(Stop::Failed);
                        stop_token.cancel();
                        continue;
                    }
                };
                let step = &plan.steps[i];
                let st = result.report.state;
                state[i] = Some(st);
                let failure = result.failure;
                // Secrets stay off the disk, in the journal too (a resumed run then sees `***` where an
                // output had quoted a secret).
                let mut journaled = Value::Object(result.outputs.clone());
                ctx.plan.redact_value(&mut journaled);
                let journaled = match journaled {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                let _ = ctx.journal(
                    &Record::Step { report: Box::new(result.report.clone()), outputs: journaled },
                    false,
                );
                // Outputs are kept only for steps that later steps read.
                if st == StepState::Succeeded
                    && !dependents[i].is_empty()
                    && let Ok(mut outs) = ctx.outputs.write()
                {
                    outs.insert(step.id.clone(), Value::Object(result.outputs));
                }
                let _ = events.send(Event::StepFinished { report: Box::new(result.report) });
                release(i, &dependents, &mut waiting, &mut ready, &mut blocked, &plan, st);
                if let Some(f) = failure
                    && !step.continue_on_error && f != StepFailure::Cancelled {
                        match f {
                            StepFailure::TimedOut => timed_out = true,
                            StepFailure::Unreachable => unreachable = true,
                            _ => failed = true,
                        }
                        if options.fail_fast && stop.is_none() {
                            stop = Some(match f {
                                StepFailure::TimedOut => Stop::TimedOut,
                                StepFailure::Unreachable => Stop::Unreachable,
                                _ => Stop::Failed,
                            });
                            let _ = events.send(Event::RunIssue {
                                message: format!("step `{}` failed; stopping the run (fail-fast)", step.id),
                            });
                            stop_token.cancel();
                        }
                }
            }
            _ = interrupt.cancelled(), if stop != Some(Stop::Interrupted) => {
                stop = Some(Stop::Interrupted);
                let _ = events.send(Event::RunIssue { message: "interrupted: cancelling the jobs still running".into() });
                stop_token.cancel();
            }
        }
    }

    // Steps never started are reported as cancelled (stopped) or skipped.
    for (i, st) in state.iter().enumerate() {
        if st.is_none() {
            let step = &plan.steps[i];
            let report = if let Some(reason) = &blocked[i] {
                steps::skipped_report(step, reason)
            } else {
                steps::not_started_report(step, "the run stopped before this step started")
            };
            let _ = events.send(Event::StepFinished {
                report: Box::new(report),
            });
        }
    }

    // Cancel the jobs this run submitted and did not see finish, and read back what was refunded.
    let leftover: Vec<(JobId, InFlight)> = ctx
        .inflight
        .lock()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    for (job, f) in leftover {
        steps::cancel_and_refund(&ctx, &job, &f).await;
    }

    let (status, code) = match stop {
        Some(Stop::Interrupted) => (RunStatus::Interrupted, exit::INTERRUPTED),
        _ if unreachable => (RunStatus::Unreachable, exit::UNREACHABLE),
        _ if timed_out => (RunStatus::TimedOut, exit::TIMEOUT),
        _ if failed => (RunStatus::Failed, exit::STEP_FAILED),
        _ => (RunStatus::Succeeded, exit::SUCCESS),
    };
    finish(status, code)
}

/// Marks step `i` done and readies its dependents; a dependent of a step that did not succeed is
/// skipped when its turn comes.
fn release(
    i: usize,
    dependents: &[Vec<usize>],
    waiting: &mut [usize],
    ready: &mut std::collections::VecDeque<usize>,
    blocked: &mut [Option<String>],
    plan: &CheckedPlan,
    st: StepState,
) {
    for &d in &dependents[i] {
        if st != StepState::Succeeded && blocked[d].is_none() {
            let why = match st {
                StepState::Skipped => "was skipped",
                StepState::Failed => "failed",
                _ => "did not finish",
            };
            blocked[d] = Some(format!("needs `{}`, which {why}", plan.steps[i].id));
        }
        waiting[d] -= 1;
        if waiting[d] == 0 {
            ready.push_back(d);
        }
    }
}

/// Adds up what the plan will spend per wallet and compares it with each balance. Returns one message
/// per wallet that cannot pay; an error when a balance cannot be read.
pub async fn preflight<C: Coordinator>(
    plan: &CheckedPlan,
    coord: &C,
    already_paid: &BTreeMap<String, Money>,
) -> Result<Vec<String>, ClientError> {
    let (mut spend, _unknown) = crate::policy::spend_per_wallet(plan);
    // A resumed run has paid for the jobs it submitted already: only the rest must be covered.
    for (wallet, paid) in already_paid {
        if let Some(s) = spend.get_mut(wallet) {
            *s = if *s > *paid { *s - *paid } else { Money::ZERO };
        }
    }
    spend.retain(|_, m| *m > Money::ZERO);
    let policy =
        super::retry::RetryPolicy::new(plan.plan.defaults.retry.clone().unwrap_or_default());
    let mut rng = StdRng::from_os_rng();
    let mut problems = Vec::new();
    for (wallet, needed) in &spend {
        let mut n = 1;
        let held = loop {
            match coord.balance(wallet).await {
                Ok(b) => break b.balance,
                Err(e)
                    if n < policy.max_attempts() && policy.retries(super::retry::classify(&e)) =>
                {
                    tokio::time::sleep(policy.delay(n + 1, e.retry_after(), &mut rng)).await;
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        };
        if held < *needed {
            problems.push(format!(
                "wallet {wallet} holds {held} AITBC, the plan needs {needed}: {} short",
                *needed - held
            ));
        }
    }
    Ok(problems)
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
    ctx.plan
        .render_outputs(step, &own, &ctx.run)
        .map_err(|d| d.message)
}

/// Reports of steps keyed by id, for reporters that need them.
pub type StepReports = BTreeMap<String, StepReport>;
