//! `run` and `runs`: run a plan against a coordinator (the embedded one when none is configured), and
//! read the history of runs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::dry_run::{Overrides, print_diagnostics, print_warnings};
use crate::client::config::{ClientConfig, ConfigOverrides, Secret};
use crate::client::http::HttpCoordinator;
use crate::duration::Dur;
use crate::exec::RunOptions;
use crate::exec::journal::{self, Replay};
use crate::exec::session::{
    Finished, create_run_dir, interrupt_on_signals, new_run_id, run_with_reports,
};
use crate::exit;
use crate::money::Money;
use crate::report::style::{Palette, TermEnv};
use crate::report::terminal::{Mode, View};
use crate::report::{history, repro};
use tokio_util::sync::CancellationToken;

/// How `run` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RunOutput {
    /// Progress on stderr, a closing line on stdout.
    #[default]
    Text,
    /// The report as JSON on stdout, and nothing else there.
    Json,
}

/// How `run` and `resume` show progress on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// The live view on a terminal (unless `TERM=dumb`), one line per event otherwise.
    #[default]
    Auto,
    /// The live view, redrawn in place, even when stderr is not a terminal.
    Tty,
    /// One line per event, no cursor codes.
    Plain,
    /// Nothing (as `--quiet`).
    None,
}

impl Progress {
    /// The terminal view for this choice, from the environment and whether stderr is a terminal.
    pub fn view(self, quiet: bool, env: &TermEnv, stderr_tty: bool) -> View {
        let mode = match self {
            _ if quiet => Mode::Quiet,
            Progress::None => Mode::Quiet,
            Progress::Tty => Mode::Live,
            Progress::Plain => Mode::Plain,
            Progress::Auto if env.cursor(stderr_tty) => Mode::Live,
            Progress::Auto => Mode::Plain,
        };
        View {
            mode,
            palette: Palette::new(env.colour(stderr_tty || self == Progress::Tty)),
            tty_fd: stderr_tty.then_some(2),
        }
    }
}

/// Worker speed of the embedded coordinator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbeddedLatency {
    /// A realistic small delay per job type.
    #[default]
    Default,
    /// Jobs finish at once (tests, benchmarks).
    Instant,
}

/// `run PLAN`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Variable overrides.
    #[command(flatten)]
    pub overrides: Overrides,
    /// The coordinator's base URL; with none (and no AITBC_COORDINATOR_URL) the embedded local
    /// coordinator is started in-process.
    #[arg(long, env = "AITBC_COORDINATOR_URL", value_name = "URL")]
    pub coordinator: Option<String>,
    /// The wallet daemon's base URL for balances (default: the coordinator's).
    #[arg(long, env = "AITBC_WALLET_URL", value_name = "URL")]
    pub wallet_url: Option<String>,
    /// Where run directories go.
    #[arg(
        long,
        env = "AITBC_RUNS_DIR",
        default_value = "runs",
        value_name = "DIR"
    )]
    pub runs_dir: PathBuf,
    /// Steps running at once (default: the plan's `defaults.concurrency`, else 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Keep running the other steps after a step fails (default: stop at the first failure).
    #[arg(long)]
    pub keep_going: bool,
    /// `text` (default) or `json` (the report on stdout).
    #[arg(long, value_enum, default_value_t = RunOutput::Text)]
    pub output: RunOutput,
    /// No progress on stderr (as `--progress none`).
    #[arg(long, short)]
    pub quiet: bool,
    /// Progress on stderr: `auto` (the live view on a terminal, else one line per event), `tty`,
    /// `plain` or `none`. Colours follow NO_COLOR and CLICOLOR_FORCE.
    #[arg(long, value_enum, default_value_t = Progress::Auto, value_name = "WHEN")]
    pub progress: Progress,
    /// Embedded coordinator only: set a wallet's balance (`--fund trading-wallet=750`).
    #[arg(long, value_name = "WALLET=AMOUNT", value_parser = parse_fund)]
    pub fund: Vec<(String, Money)>,
    /// Embedded coordinator only: no 10,000 AITBC grant for new wallets.
    #[arg(long)]
    pub no_faucet: bool,
    /// Embedded coordinator only: worker latency.
    #[arg(long, value_enum, default_value_t = EmbeddedLatency::Default)]
    pub embedded_latency: EmbeddedLatency,
    /// Embedded coordinator only: apply the real service's rate limits (`real`, or e.g.
    /// `submit=10,read=40,window=5s`; 429 past them) and pace the run to them. Off by default.
    #[arg(long, value_name = "LIMITS", default_value = "off", value_parser = crate::limits::RateLimits::parse)]
    pub embedded_rate_limits: crate::limits::RateLimits,
    /// First polling delay while waiting for a job (it doubles up to --poll-max).
    #[arg(long, default_value = "500ms", value_name = "DURATION", hide = true)]
    pub poll_start: Dur,
    /// Longest polling delay while waiting for a job.
    #[arg(long, default_value = "5s", value_name = "DURATION", hide = true)]
    pub poll_max: Dur,
    /// Seed for retry jitter (reproducible delays).
    #[arg(long, hide = true)]
    pub seed: Option<u64>,
    /// Start from the vars an earlier run recorded (its report under --runs-dir); `--vars` and
    /// `--set` apply on top. A var that held a secret must be given again with `--set`.
    #[arg(long, value_name = "RUN-ID")]
    pub vars_from: Option<String>,
    /// Do not reuse earlier results for `cache: true` steps: they run (and pay) again.
    #[arg(long)]
    pub no_cache: bool,
    /// Submit without reading wallet balances (no preflight, no check before each submit), for a
    /// coordinator without a wallet daemon; the report says so. A plan cannot switch this off.
    #[arg(long)]
    pub no_balance_check: bool,
    /// The most this start of the run may pay: `AMOUNT` in all, or `WALLET=AMOUNT` for one wallet
    /// (repeatable). Lowers the plan's `policy.max_spend`, never raises it; every submission counts and a
    /// confirmed refund is taken off.
    #[arg(long, value_name = "[WALLET=]AMOUNT")]
    pub max_spend: Vec<String>,
    /// `--lock` and `--lock-timeout`.
    #[command(flatten)]
    pub lock: crate::cli::scheduler::LockFlags,
    /// `--only`/`--skip`: run some of the plan's steps (a `resume` repeats the selection).
    #[command(flatten)]
    pub select: crate::cli::dry_run::SelectFlags,
    /// With `--only`: the steps the selected ones need take their outputs from this earlier run
    /// (under --runs-dir; where they succeeded) instead of running and paying again.
    #[arg(long, value_name = "RUN-ID", requires = "only")]
    pub from_run: Option<String>,
}

/// The caps of `--max-spend` values; `Err` carries the exit code of a message already printed.
fn spend_caps(values: &[String]) -> Result<crate::policy::spend::Caps, i32> {
    let mut caps = crate::policy::spend::Caps::default();
    for v in values {
        if let Err(e) = caps.add(v) {
            errln!("error: --max-spend {v}: {e}");
            return Err(exit::INVALID);
        }
    }
    Ok(caps)
}

/// Parses `WALLET=AMOUNT`.
/// A warning for each `--fund` of a wallet no step of the plan uses (a typo funds nobody). Nothing
/// when a step's wallet is known only at run time.
fn unused_funds(plan: &crate::plan::CheckedPlan, fund: &[(String, Money)]) -> Vec<String> {
    let mut used = std::collections::BTreeSet::new();
    for s in &plan.steps {
        match s.spec().get("wallet") {
            Some(serde_json::Value::String(w)) if crate::plan::template::has_template(w) => {
                return Vec::new();
            }
            Some(serde_json::Value::String(w)) => {
                used.insert(w.clone());
            }
            _ => {}
        }
    }
    fund.iter()
        .filter(|(w, _)| !used.contains(w.as_str()))
        .map(|(w, _)| {
            let mut m = format!("warning: --fund {w}=…: no step of the plan uses the wallet `{w}`");
            if let Some(s) = crate::plan::diag::suggest(w, used.iter().map(String::as_str)) {
                m.push_str(&format!("; did you mean `{s}`?"));
            }
            crate::text::message(&m).into_owned()
        })
        .collect()
}

pub fn parse_fund(s: &str) -> Result<(String, Money), String> {
    let (w, a) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not WALLET=AMOUNT"))?;
    let m: Money = a.parse()?;
    if w.trim().is_empty() || m.is_negative() {
        return Err(format!(
            "`{s}` is not WALLET=AMOUNT with a non-negative amount"
        ));
    }
    Ok((w.trim().to_string(), m))
}

/// What `run` and `resume` share: where to run and how to report.
#[derive(Clone, Debug)]
struct ExecParams {
    coordinator: Option<String>,
    wallet_url: Option<String>,
    concurrency: Option<u32>,
    keep_going: bool,
    output: RunOutput,
    quiet: bool,
    progress: Progress,
    runs_dir: PathBuf,
    fund: Vec<(String, Money)>,
    no_faucet: bool,
    embedded_latency: EmbeddedLatency,
    embedded_rate_limits: crate::limits::RateLimits,
    poll: (std::time::Duration, std::time::Duration),
    seed: Option<u64>,
    set: Vec<(String, String)>,
    vars_files: Vec<PathBuf>,
    cache: bool,
    inputs: crate::model::RunInputs,
    /// The run holds the plan's lock.
    lock: bool,
    /// Whether balances are checked (`--no-balance-check` turns it off for this start).
    balance_check: crate::ops::payer::BalanceCheck,
    /// `--max-spend`.
    max_spend: crate::policy::spend::Caps,
    /// `resume --pay-again`.
    pay_again: bool,
    from_run: Option<Arc<crate::exec::from_run::Taken>>,
    /// Where the journal is copied (`--store postgres://…`).
    journal_mirror: Option<Arc<dyn journal::Mirror>>,
    /// The wallet reservations shared with the store's other runs.
    reservations: Option<Arc<dyn crate::exec::reserve::Reservations>>,
}

/// Runs `run`.
pub fn run(a: RunArgs) -> i32 {
    let signals = match runtime_with_signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (load, vars_file) = match crate::cli::dry_run::load_options_with(
        &a.overrides,
        a.vars_from.as_deref(),
        &a.runs_dir,
    ) {
        Ok(x) => x,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    let selection = a.select.selection();
    // The `--fund` check reads every step's wallet: from the specs as trees, before the run sheds them
    // (read from their text after, it would parse every spec at start-up).
    let (plan, unused) = match crate::plan::load(&a.plan, &load)
        .and_then(|mut p| crate::plan::select::apply(&mut p, &selection).map(|_| p))
    {
        Ok(p) => {
            let unused = unused_funds(&p, &a.fund);
            (Arc::new(shed_parse(p)), unused)
        }
        Err(ds) => {
            print_diagnostics(&ds);
            return exit::INVALID;
        }
    };
    let mut inputs = repro::inputs(
        &plan,
        &a.overrides.set,
        &a.overrides.vars,
        a.vars_from.as_deref(),
        !a.no_cache,
    );
    inputs.balance_check = !a.no_balance_check;
    let from_run = match &a.from_run {
        Some(id) => {
            match crate::cli::dry_run::take_from_run(&a.runs_dir, id, &plan, &selection.only) {
                Ok(t) => Some(Arc::new(t)),
                Err(code) => return code,
            }
        }
        None => None,
    };
    inputs.only = selection.only;
    inputs.skip = selection.skip;
    inputs.from_run = a.from_run.clone();
    print_warnings(&plan.warnings);
    for w in unused {
        errln!("{w}");
    }
    if let Some(code) =
        refuse_short_token(&a.coordinator, &a.wallet_url, &plan, a.concurrency, None)
    {
        return code;
    }
    let run_id = new_run_id();
    let store = match a.lock.store.open(&a.runs_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let run_lock = match crate::cli::scheduler::take_run_lock(&a.lock, &plan, &*store, &run_id) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // What a resume on another host needs besides the journal: the plan's files (never a secret),
    // the base vars of `--vars-from` named as the run folder keeps them.
    let files_read = match &vars_file {
        Some(f) => match f.named_as_kept(&plan.files_read, &a.runs_dir.join(&run_id)) {
            Ok(files) => std::borrow::Cow::Owned(files),
            Err(e) => {
                errln!("error: {e}");
                return exit::INVALID;
            }
        },
        None => std::borrow::Cow::Borrowed(&plan.files_read),
    };
    if let Err(e) = store.keep_run_files(&run_id, &plan.plan.name, run_lock.is_some(), &files_read)
    {
        errln!("error: {e}");
        return exit::INVALID;
    }
    let journal_mirror = match crate::cli::scheduler::journal_mirror(
        &*store,
        &plan.plan.name,
        &run_id,
        run_lock.as_ref(),
    ) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let reservations = match store.reservations(&run_id) {
        Ok(r) => r,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    let run_dir = match create_run_dir(&a.runs_dir, &run_id) {
        Ok(d) => d,
        Err(e) => {
            errln!(
                "error: cannot create the run directory under {}: {e}",
                a.runs_dir.display()
            );
            return exit::INVALID;
        }
    };
    let params = ExecParams {
        coordinator: a.coordinator.clone(),
        wallet_url: a.wallet_url.clone(),
        concurrency: a.concurrency,
        keep_going: a.keep_going,
        output: a.output,
        quiet: a.quiet,
        progress: a.progress,
        runs_dir: a.runs_dir.clone(),
        fund: a.fund.clone(),
        no_faucet: a.no_faucet,
        embedded_latency: a.embedded_latency,
        embedded_rate_limits: a.embedded_rate_limits,
        poll: (a.poll_start.get(), a.poll_max.get().max(a.poll_start.get())),
        seed: a.seed,
        set: a.overrides.set.clone(),
        vars_files: a.overrides.vars.clone(),
        cache: !a.no_cache,
        inputs,
        lock: run_lock.is_some(),
        balance_check: crate::ops::payer::BalanceCheck::skipped_if(a.no_balance_check),
        max_spend: match spend_caps(&a.max_spend) {
            Ok(c) => c,
            Err(code) => return code,
        },
        pay_again: false,
        from_run,
        journal_mirror,
        reservations,
    };
    // The base vars of `--vars-from` are kept in the run directory (the temporary file is gone), so
    // the journal names a file that `resume` can read again.
    let params = match vars_file {
        Some(f) => match f.keep_in(&run_dir) {
            Ok(kept) => ExecParams {
                vars_files: std::iter::once(kept).chain(params.vars_files).collect(),
                ..params
            },
            Err(e) => {
                errln!(
                    "error: cannot write the vars of --vars-from in {}: {e}",
                    run_dir.display()
                );
                return exit::INVALID;
            }
        },
        None => params,
    };
    let recorded_dir = run_dir.clone();
    let code = execute_plan(signals, plan, params, run_id, run_dir, None, &*store);
    if let Err(e) = store.record_run(&recorded_dir) {
        errln!("warning: the run is not in the shared history: {e}");
    }
    drop(run_lock);
    code
}

/// The async runtime, with Ctrl-C and SIGTERM handled from now on: taken before the plan's lock and the
/// run directory, so that a signal in between stops the run cleanly (exit 130) instead of killing it.
fn runtime_with_signals() -> Result<(tokio::runtime::Runtime, CancellationToken), i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            errln!("error: cannot start the async runtime: {e}");
            exit::INVALID
        })?;
    let interrupt = runtime.block_on(async { interrupt_on_signals() });
    Ok((runtime, interrupt))
}

/// Runs a loaded plan in a run directory, on the configured coordinator or an embedded one, and prints
/// the outcome; a remote coordinator is paced together with the other runs of `store`. Returns the
/// exit code.
fn execute_plan(
    (runtime, interrupt): (tokio::runtime::Runtime, CancellationToken),
    plan: Arc<crate::plan::CheckedPlan>,
    p: ExecParams,
    run_id: String,
    run_dir: PathBuf,
    resume: Option<Arc<Replay>>,
    store: &dyn crate::store::Store,
) -> i32 {
    let config = match ClientConfig::from_env(&ConfigOverrides {
        coordinator: p.coordinator.clone(),
        wallet_url: p.wallet_url.clone(),
    }) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    // Every endpoint a plan uses needs a token: without one, say so before anything is sent.
    if let Some(url) = config
        .coordinator_url
        .as_ref()
        .filter(|_| config.token.is_none())
    {
        errln!(
            "error: no credentials for the coordinator at {url}: set AITBC_TOKEN to a client token \
             (or AITBC_TOKEN_FILE to a file that holds one); nothing was sent"
        );
        return exit::UNREACHABLE;
    }
    let term = TermEnv::from_env();
    let view = p
        .progress
        .view(p.quiet, &term, std::io::stderr().is_terminal());
    let result = runtime.block_on(async {
        let (config, local) = if config.is_configured() {
            (config, None)
        } else {
            let mut lc = crate::local::LocalConfig {
                fund: p.fund.clone(),
                faucet: !p.no_faucet,
                rate_limits: p.embedded_rate_limits,
                ..crate::local::LocalConfig::default()
            };
            if p.embedded_latency == EmbeddedLatency::Instant {
                lc.latency = crate::local::WorkerLatency::instant();
            }
            let handle = crate::local::start(lc).await.map_err(|e| {
                errln!("error: cannot start the embedded coordinator: {e}");
                exit::UNREACHABLE
            })?;
            let mut c = ClientConfig::for_url(&handle.url()).map_err(|e| {
                errln!("error: {e}");
                exit::UNREACHABLE
            })?;
            c.token = Some(Secret::new(handle.token()));
            // Paced to the limits the embedded coordinator applies (none by default).
            c.pacing = p.embedded_rate_limits;
            (c, Some(handle))
        };
        if local.is_none() && (!p.fund.is_empty() || p.no_faucet) {
            errln!("note: --fund and --no-faucet apply to the embedded coordinator only; ignored");
        }
        if local.is_none() && !p.embedded_rate_limits.is_off() {
            errln!(
                "note: --embedded-rate-limits applies to the embedded coordinator only; ignored (AITBC_RATE_LIMIT paces a remote one)"
            );
        }
        let mut client = HttpCoordinator::new(&config).map_err(|e| {
            errln!("error: {e}");
            exit::INVALID
        })?;
        // A remote coordinator limits per client IP: the runs of the store pace together.
        if let Some(url) = config.coordinator_url.as_ref().filter(|_| local.is_none())
            && !config.pacing.is_off()
        {
            client.share_pacing(store.pacing(url.as_str()));
        }
        let options = RunOptions {
            concurrency: p.concurrency.map(|c| c as usize),
            fail_fast: !p.keep_going,
            poll: p.poll,
            seed: p.seed,
            embedded: local.is_some(),
            set: p.set.clone(),
            vars_files: p.vars_files.clone(),
            resume,
            cache: p.cache,
            inputs: p.inputs.clone(),
            lock: p.lock,
            balance_check: p.balance_check,
            max_spend: p.max_spend.clone(),
            pay_again: p.pay_again,
            from_run: p.from_run.clone(),
            journal_mirror: p.journal_mirror.clone(),
            // The run's own embedded coordinator has a ledger no other run pays from.
            reservations: p.reservations.clone().filter(|_| local.is_none()),
            ..RunOptions::new(run_id.clone(), run_dir.clone())
        };
        let finished =
            run_with_reports(plan.clone(), Arc::new(client), options, view, interrupt).await;
        if let Some(handle) = local
            && let Err(e) = handle.shutdown().await
        {
            tracing::warn!("embedded coordinator did not stop cleanly: {e}");
        }
        Ok::<_, i32>(finished)
    });
    let finished: Finished = match result {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            errln!(
                "error: cannot write the run's files in {}: {e}",
                run_dir.display()
            );
            return exit::STEP_FAILED;
        }
        Err(code) => return code,
    };
    match p.output {
        RunOutput::Json => match serde_json::to_string_pretty(&finished.report) {
            Ok(s) => outln!("{s}"),
            Err(e) => errln!("error: cannot print the report: {e}"),
        },
        RunOutput::Text => {
            let palette = Palette::new(term.colour(std::io::stdout().is_terminal()));
            outln!(
                "run {} {}: report in {}",
                finished.report.run_id,
                status_text(&finished, palette),
                finished.run_dir.display()
            );
        }
    }
    if let Some(hint) = resume_hint(&finished.report, &p.runs_dir) {
        match p.output {
            RunOutput::Text => outln!("{hint}"),
            RunOutput::Json => errln!("{hint}"),
        }
    }
    finished.outcome.exit_code
}

/// Refuses (exit 3, before anything is created or sent) a run against a remote coordinator whose
/// session token expires before the run's timeouts would end it.
fn refuse_short_token(
    coordinator: &Option<String>,
    wallet_url: &Option<String>,
    plan: &crate::plan::CheckedPlan,
    concurrency: Option<u32>,
    resume: Option<&Replay>,
) -> Option<i32> {
    // A configuration that does not load is reported where the run loads it.
    let config = ClientConfig::from_env(&ConfigOverrides {
        coordinator: coordinator.clone(),
        wallet_url: wallet_url.clone(),
    })
    .ok()?;
    if !config.is_configured() {
        return None;
    }
    let message = token_outlived(&config, plan, concurrency, resume)?;
    errln!("error: {message}");
    Some(exit::UNREACHABLE)
}

/// Why the session token cannot last the run, if it cannot: it expires (its `exp`) before the run's
/// timeouts would end it, so a request late in the run would be refused with a 401.
fn token_outlived(
    config: &ClientConfig,
    plan: &crate::plan::CheckedPlan,
    concurrency: Option<u32>,
    resume: Option<&Replay>,
) -> Option<String> {
    let token = config.token.as_ref()?;
    let expires = crate::auth::expires_at(token.expose())?;
    let slots = concurrency
        .map(|c| c as usize)
        .or(plan.plan.defaults.concurrency.map(|c| c as usize))
        .unwrap_or(16);
    let longest = crate::exec::preflight::longest_run(plan, slots, |id| {
        resume.is_some_and(|r| r.done.contains_key(id))
    });
    let now = chrono::Utc::now();
    let left = (expires - now).to_std().unwrap_or_default();
    if left > longest {
        return None;
    }
    let source = match &config.token_file {
        Some(path) => format!("in AITBC_TOKEN_FILE ({})", path.display()),
        None => "in AITBC_TOKEN".to_string(),
    };
    let when = expires.format("%Y-%m-%d %H:%M:%S UTC");
    let state = if left.is_zero() {
        format!("expired at {when}")
    } else {
        format!(
            "expires at {when}, in {}",
            Dur(std::time::Duration::from_secs(left.as_secs()))
        )
    };
    Some(format!(
        "the session token {source} {state}, but this run may take up to {} by its steps' timeouts: \
         a request after that would be refused. Renew the token first: `aitbc-flow login` writes a fresh \
         one (valid 24 h) to AITBC_TOKEN_FILE; or lower the steps' timeouts",
        Dur(std::time::Duration::from_secs(longest.as_secs()))
    ))
}

/// How to go on with a run that stopped before its end (interrupted, or the coordinator out of
/// reach): `resume` keeps what succeeded and never submits a job twice.
fn resume_hint(r: &crate::report::Report, runs_dir: &std::path::Path) -> Option<String> {
    use crate::report::RunStatus;
    if !matches!(r.status, RunStatus::Interrupted | RunStatus::Unreachable) {
        return None;
    }
    let dir = if runs_dir == std::path::Path::new("runs") {
        String::new()
    } else {
        format!(" --runs-dir {}", runs_dir.display())
    };
    Some(format!("resume with: aitbc-flow resume {}{dir}", r.run_id))
}

/// `resume RUN-ID`
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The run to resume (a directory name under the runs folder).
    pub run_id: String,
    /// Where run directories are.
    #[arg(
        long,
        env = "AITBC_RUNS_DIR",
        default_value = "runs",
        value_name = "DIR"
    )]
    pub runs_dir: PathBuf,
    #[command(flatten)]
    pub store: crate::cli::scheduler::StoreArg,
    /// Resume even though the plan file changed since the run started.
    #[arg(long)]
    pub force: bool,
    /// The coordinator's base URL (default: the one the run used).
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,
    /// The wallet daemon's base URL for balances (default: the coordinator's).
    #[arg(long, env = "AITBC_WALLET_URL", value_name = "URL")]
    pub wallet_url: Option<String>,
    /// Steps running at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Keep running the other steps after a step fails.
    #[arg(long)]
    pub keep_going: bool,
    /// `text` (default) or `json` (the report on stdout).
    #[arg(long, value_enum, default_value_t = RunOutput::Text)]
    pub output: RunOutput,
    /// No progress on stderr (as `--progress none`).
    #[arg(long, short)]
    pub quiet: bool,
    /// Progress on stderr: `auto`, `tty`, `plain` or `none` (see `run --progress`).
    #[arg(long, value_enum, default_value_t = Progress::Auto, value_name = "WHEN")]
    pub progress: Progress,
    /// Embedded coordinator only (a run that used one): worker latency.
    #[arg(long, value_enum, default_value_t = EmbeddedLatency::Default)]
    pub embedded_latency: EmbeddedLatency,
    /// First polling delay while waiting for a job.
    #[arg(long, default_value = "500ms", value_name = "DURATION", hide = true)]
    pub poll_start: Dur,
    /// Longest polling delay while waiting for a job.
    #[arg(long, default_value = "5s", value_name = "DURATION", hide = true)]
    pub poll_max: Dur,
    /// Submit without reading wallet balances, for this start only (see `run --no-balance-check`).
    #[arg(long)]
    pub no_balance_check: bool,
    /// The most this start of the run may pay: `AMOUNT` in all, or `WALLET=AMOUNT` for one wallet
    /// (repeatable). Lowers the plan's `policy.max_spend`, never raises it; every submission counts and a
    /// confirmed refund is taken off.
    #[arg(long, value_name = "[WALLET=]AMOUNT")]
    pub max_spend: Vec<String>,

    /// Submit again a step whose job the run cancelled (Ctrl-C, a failure, a timeout) although its
    /// refund is not confirmed: the step pays again while the first payment may still be held. Without
    /// it, such a step fails and says how much is held.
    #[arg(long)]
    pub pay_again: bool,
}

/// Runs `resume`: keeps the steps that succeeded, re-attaches to submitted jobs, reconciles intents
/// by client reference, and runs the rest, in the same run directory.
pub fn resume(a: ResumeArgs) -> i32 {
    let mut signals = match runtime_with_signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let store = match a.store.open(&a.runs_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Another host may move the run on while this one waits for its lock: then its journal is read
    // again, a few times at most.
    for _ in 0..MAX_RESTARTS {
        match resume_once(&a, &*store, signals) {
            Resumed::Done(code) => return code,
            Resumed::Again(s) => signals = s,
        }
    }
    errln!(
        "error: cannot resume run {}: it moved on on another host {MAX_RESTARTS} times while this \
         one waited for its lock",
        a.run_id
    );
    exit::INVALID
}

/// How many times `resume` reads a run's journal again because another host moved it on.
const MAX_RESTARTS: usize = 5;

/// How one attempt of `resume` ended.
enum Resumed {
    /// With this exit code.
    Done(i32),
    /// The store's journal of the run grew while this attempt waited for the lock: start again.
    Again((tokio::runtime::Runtime, CancellationToken)),
}

/// A run's plan loaded to resume it.
struct Resumable {
    /// The plan file as read (its copy, in a folder rebuilt from a store).
    plan_path: PathBuf,
    /// The `--vars` files as read (their copies, likewise).
    vars_files: Vec<PathBuf>,
    plan: Result<crate::plan::CheckedPlan, Vec<crate::plan::Diagnostic>>,
}

/// The plan of a run to resume, as its journal's first record says it was started: its plan file and
/// `--vars` files (their copies, in a folder rebuilt from a store), `--set` values and `--only`/`--skip`
/// selection.
/// A checked plan without its file's parse, which a run needs only to place a run-time error (it is
/// parsed again then): a 10,000-step plan's JSON tree and positions are ~26 MB of a run's memory.
/// A large plan's are freed on a thread, as `validate` frees a large plan.
fn shed_parse(mut plan: crate::plan::CheckedPlan) -> crate::plan::CheckedPlan {
    let shed = plan.shed_parse();
    if plan.steps.len() >= 1000 {
        std::thread::spawn(move || drop(shed));
    }
    plan
}

fn load_resumed(dir: &std::path::Path, replay: &Replay) -> Resumable {
    let (plan_path, vars_files) =
        crate::store::rebuild::map_paths(dir, &replay.plan_path, &replay.vars_files);
    let plan_path = PathBuf::from(plan_path);
    let options = crate::plan::check::LoadOptions {
        set: replay.set.clone(),
        vars_files: vars_files.clone(),
        environment: None,
        placeholder_secrets: false,
        allow_missing_inputs: false,
    };
    // The run's `--only`/`--skip` select the same steps again.
    let plan = crate::plan::load(&plan_path, &options)
        .and_then(|mut p| crate::plan::select::apply(&mut p, &replay.selection).map(|_| p))
        .map(shed_parse);
    Resumable {
        plan_path,
        vars_files,
        plan,
    }
}

/// One attempt of `resume`: the run folder brought up to the store (rebuilt from it when this host
/// does not have it), the journal replayed, the lock taken, and the run executed.
fn resume_once(
    a: &ResumeArgs,
    store: &dyn crate::store::Store,
    signals: (tokio::runtime::Runtime, CancellationToken),
) -> Resumed {
    let dir = a.runs_dir.join(&a.run_id);
    if a.run_id.contains('/') || a.run_id.contains("..") || a.run_id.is_empty() {
        errln!("error: no run `{}` in {}", a.run_id, a.runs_dir.display());
        return Resumed::Done(exit::INVALID);
    }
    match crate::store::rebuild::sync(store, &a.run_id, &dir) {
        Ok(crate::store::rebuild::Synced::Folder) => errln!(
            "note: run {} is not in {}: its folder is rebuilt from {} (its journal and the files \
             it read)",
            a.run_id,
            a.runs_dir.display(),
            store.describe()
        ),
        Ok(crate::store::rebuild::Synced::Journal) => errln!(
            "note: run {} went on on another host: its journal is taken from {}",
            a.run_id,
            store.describe()
        ),
        Ok(crate::store::rebuild::Synced::Unchanged) => {}
        Err(e) => {
            errln!("error: cannot resume run {}: {e}", a.run_id);
            return Resumed::Done(exit::INVALID);
        }
    }
    if !dir.is_dir() {
        errln!("error: no run `{}` in {}", a.run_id, a.runs_dir.display());
        return Resumed::Done(exit::INVALID);
    }
    let journal_path = dir.join("journal.jsonl");
    // The plan is loaded from the journal's first record before the rest is read: a 10,000-step
    // journal's reports and the plan's load then never need their memory at once.
    let early = journal::read_head(&journal_path).map(|head| load_resumed(&dir, &head));
    let mut records = match journal::read(&journal_path) {
        Ok(r) => r,
        Err(e) => {
            errln!("error: cannot resume run {}: {e}", a.run_id);
            return Resumed::Done(exit::INVALID);
        }
    };
    let mut replay = match journal::replay(&mut records) {
        Ok(r) => r,
        Err(e) => {
            errln!("error: cannot resume run {}: {e}", a.run_id);
            return Resumed::Done(exit::INVALID);
        }
    };
    // What the replay took is out of the records; the rest would last the whole resumed run.
    drop(records);
    let Resumable {
        plan_path,
        vars_files,
        plan: loaded,
    } = early.unwrap_or_else(|| load_resumed(&dir, &replay));
    // A folder rebuilt from a store reads the copies of the run's files.
    replay.vars_files = vars_files;
    let plan = match loaded {
        Ok(p) => Arc::new(p),
        Err(ds) => {
            print_diagnostics(&ds);
            return Resumed::Done(exit::INVALID);
        }
    };
    // `--from-run`: the same steps are taken from the same run again (those already recorded in this
    // run's journal are kept from it).
    let from_run = match &replay.from_run {
        Some(id) => {
            match crate::exec::from_run::take(&a.runs_dir, id, &plan, &replay.selection.only) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    errln!(
                        "error: cannot resume run {}: --from-run {id}: {e}",
                        a.run_id
                    );
                    return Resumed::Done(exit::INVALID);
                }
            }
        }
        None => None,
    };
    if plan.content_hash != replay.plan_hash && !a.force {
        // With sub-plans the hash covers each of them: say which files it is over.
        let used: Vec<&str> = plan.included.iter().map(|f| f.path.as_str()).collect();
        let subplans = if used.is_empty() {
            String::new()
        } else {
            format!(" (or a sub-plan it uses: {})", used.join(", "))
        };
        errln!(
            "error: {}{subplans} changed since run {} started (sha256 {} then, {} now); resuming would mix two plans. \
             Use --force to resume anyway.",
            plan_path.display(),
            a.run_id,
            short(&replay.plan_hash),
            short(&plan.content_hash)
        );
        return Resumed::Done(exit::INVALID);
    }
    // Outputs that quoted a secret are given back to later steps with the secret's value, read from
    // its source now: the plan must still have that secret.
    if let Some((step, secret)) = replay.done.iter().find_map(|(id, kept)| {
        kept.redacted.values().flatten().find_map(|p| match p {
            journal::Piece::Secret { secret } if !plan.secrets.contains_key(secret) => {
                Some((id, secret))
            }
            _ => None,
        })
    }) {
        errln!(
            "error: cannot resume run {}: the outputs of step `{step}` quoted the secret `{secret}`, \
             which {} no longer declares; later steps would be given `***` in its place. Declare it \
             again under `secrets:`.",
            a.run_id,
            plan_path.display()
        );
        return Resumed::Done(exit::INVALID);
    }
    // A run that already succeeded is "resumed" too: nothing is sent, and its report is rebuilt from
    // the journal (a crash while writing the report leaves an old one behind).
    let coordinator = if replay.embedded {
        if !replay.submissions.is_empty() {
            errln!(
                "note: run {} used an embedded coordinator, whose jobs ended with that process; \
                 steps that had not finished are submitted again to a new embedded coordinator",
                a.run_id
            );
        }
        replay
            .submissions
            .retain(|step, _| replay.done.contains_key(step));
        a.coordinator.clone()
    } else {
        a.coordinator.clone().or(Some(replay.coordinator.clone()))
    };
    let params = ExecParams {
        coordinator,
        wallet_url: a.wallet_url.clone(),
        concurrency: a.concurrency,
        keep_going: a.keep_going,
        output: a.output,
        quiet: a.quiet,
        progress: a.progress,
        runs_dir: a.runs_dir.clone(),
        fund: Vec::new(),
        no_faucet: false,
        embedded_latency: a.embedded_latency,
        embedded_rate_limits: crate::limits::RateLimits::off(),
        poll: (a.poll_start.get(), a.poll_max.get().max(a.poll_start.get())),
        seed: None,
        set: replay.set.clone(),
        vars_files: replay.vars_files.clone(),
        // The run is repeated as it was started: its cache setting and `--vars-from` (whose vars are
        // in `vars_files` already), and its lock; the balance check is this start's choice.
        cache: replay.cache,
        inputs: crate::model::RunInputs {
            balance_check: !a.no_balance_check,
            only: replay.selection.only.clone(),
            skip: replay.selection.skip.clone(),
            from_run: replay.from_run.clone(),
            ..repro::inputs(
                &plan,
                &replay.set,
                &replay.vars_files,
                replay.vars_from.as_deref(),
                replay.cache,
            )
        },
        lock: replay.lock,
        balance_check: crate::ops::payer::BalanceCheck::skipped_if(a.no_balance_check),
        max_spend: match spend_caps(&a.max_spend) {
            Ok(c) => c,
            Err(code) => return Resumed::Done(code),
        },
        pay_again: a.pay_again,
        from_run,
        journal_mirror: None,
        reservations: None,
    };
    if let Some(code) = refuse_short_token(
        &params.coordinator,
        &params.wallet_url,
        &plan,
        params.concurrency,
        Some(&replay),
    ) {
        return Resumed::Done(code);
    }
    let run_id = replay.run_id.clone();
    let flags = crate::cli::scheduler::LockFlags {
        lock: replay.lock,
        lock_timeout: Dur(std::time::Duration::from_secs(3600)),
        store: a.store.clone(),
    };
    let run_lock = match crate::cli::scheduler::take_run_lock(&flags, &plan, store, &run_id) {
        Ok(l) => l,
        Err(code) => return Resumed::Done(code),
    };
    // Taken: what the store has now is what this run goes on from.
    if run_lock.is_some() {
        match crate::store::rebuild::sync(store, &run_id, &dir) {
            Ok(crate::store::rebuild::Synced::Unchanged) => {}
            Ok(_) => {
                errln!(
                    "note: run {run_id} went on on another host while this one waited for its \
                     lock; reading its journal again"
                );
                drop(run_lock);
                return Resumed::Again(signals);
            }
            Err(e) => {
                errln!("error: cannot resume run {run_id}: {e}");
                return Resumed::Done(exit::INVALID);
            }
        }
    }
    let params = match crate::cli::scheduler::journal_mirror(
        store,
        &plan.plan.name,
        &run_id,
        run_lock.as_ref(),
    ) {
        Ok(journal_mirror) => ExecParams {
            journal_mirror,
            ..params
        },
        Err(code) => return Resumed::Done(code),
    };
    let params = match store.reservations(&run_id) {
        Ok(reservations) => ExecParams {
            reservations,
            ..params
        },
        Err(e) => {
            errln!("error: {e}");
            return Resumed::Done(exit::INVALID);
        }
    };
    let recorded_dir = dir.clone();
    let code = execute_plan(
        signals,
        plan,
        params,
        run_id,
        dir,
        Some(Arc::new(replay)),
        store,
    );
    if let Err(e) = store.record_run(&recorded_dir) {
        errln!("warning: the run is not in the shared history: {e}");
    }
    drop(run_lock);
    Resumed::Done(code)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn status_text(f: &Finished, p: Palette) -> String {
    let t = &f.report.totals;
    let word = p.status(f.report.status, f.report.status.as_str());
    format!(
        "{word} ({} succeeded, {} failed, {} skipped, {} cancelled, {} jobs)",
        t.succeeded, t.failed, t.skipped, t.cancelled, t.jobs
    )
}

/// `runs …`
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List(RunsListArgs),
    /// Show a run's report for the terminal (`--markdown`: summary.md; `--html`: report.html's path).
    Show(RunsShowArgs),
    /// Open a run's report.html in the browser ($BROWSER, else xdg-open or open).
    Open(RunsOpenArgs),
    /// Delete all but the newest N runs.
    Prune(RunsPruneArgs),
}

/// `runs list`
#[derive(Debug, clap::Args)]
pub struct RunsListArgs {
    /// Where run directories are.
    #[arg(long, env = "AITBC_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Only runs of this plan.
    #[arg(long)]
    pub plan: Option<String>,
    /// Only runs with this status (succeeded, failed, refused, timed_out, interrupted, unreachable, running).
    #[arg(long)]
    pub status: Option<String>,
    /// `text` (default) or `json`.
    #[arg(long, value_enum, default_value_t = RunOutput::Text)]
    pub output: RunOutput,
    #[command(flatten)]
    pub store: crate::cli::scheduler::StoreArg,
}

/// `runs show RUN-ID`
#[derive(Debug, clap::Args)]
pub struct RunsShowArgs {
    /// The run, or `latest`.
    pub run_id: String,
    /// Where run directories are.
    #[arg(long, env = "AITBC_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Print the path of the run's report.html instead (written from report.json if missing).
    #[arg(long, conflicts_with = "markdown")]
    pub html: bool,
    /// Print summary.md as it is (for a CI job summary).
    #[arg(long)]
    pub markdown: bool,
    #[command(flatten)]
    pub store: crate::cli::scheduler::StoreArg,
}

/// `runs open RUN-ID`
#[derive(Debug, clap::Args)]
pub struct RunsOpenArgs {
    /// The run, or `latest`.
    pub run_id: String,
    /// Where run directories are.
    #[arg(long, env = "AITBC_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
}

/// `runs prune --keep N`
#[derive(Debug, clap::Args)]
pub struct RunsPruneArgs {
    /// How many of the newest runs to keep.
    #[arg(long)]
    pub keep: usize,
    /// Where run directories are.
    #[arg(long, env = "AITBC_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Say which runs would be removed, and remove none.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before removing every run (`--keep 0` on a terminal asks).
    #[arg(long, short)]
    pub yes: bool,
    /// With `--store`: the rows of the whole shared history go, and the folders of those runs that are
    /// on this host.
    #[command(flatten)]
    pub store: crate::cli::scheduler::StoreArg,
}

/// Runs a `runs` command.
pub fn runs(c: RunsCommand) -> i32 {
    match c {
        RunsCommand::List(a) => runs_list(a),
        RunsCommand::Show(a) => runs_show(a),
        RunsCommand::Open(a) => runs_open(a),
        RunsCommand::Prune(a) => runs_prune(a),
    }
}

fn runs_list(a: RunsListArgs) -> i32 {
    let store = match a.store.open(&a.runs_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let runs = match store.list_runs() {
        Ok(r) => r,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    let runs: Vec<_> = runs
        .into_iter()
        .filter(|r| a.plan.as_ref().is_none_or(|p| &r.plan == p))
        .filter(|r| a.status.as_ref().is_none_or(|s| r.status.as_str() == s))
        .collect();
    match a.output {
        RunOutput::Json => match serde_json::to_string_pretty(&runs) {
            Ok(s) => outln!("{s}"),
            Err(e) => {
                errln!("error: {e}");
                return exit::INVALID;
            }
        },
        RunOutput::Text => {
            if runs.is_empty() {
                outln!("no runs in {}", store.describe());
                return exit::SUCCESS;
            }
            let p = Palette::new(TermEnv::from_env().colour(std::io::stdout().is_terminal()));
            let plan_w = runs
                .iter()
                .map(|r| r.plan.chars().count())
                .max()
                .unwrap_or(4)
                .clamp(4, 40);
            // The status is padded before it is coloured, so that its codes do not count as width.
            let row = |id: &str, plan: &str, status: String, jobs: &str, failed: &str, at: &str| {
                format!("{id:<24}  {plan:<plan_w$}  {status}  {jobs:>5}  {failed:>6}  {at}")
            };
            let head = row(
                "RUN",
                "PLAN",
                format!("{:<11}", "STATUS"),
                "JOBS",
                "FAILED",
                "STARTED",
            );
            outln!("{}", p.dim(&head));
            for r in &runs {
                let status = p.status(r.status, &format!("{:<11}", r.status.as_str()));
                outln!(
                    "{}",
                    row(
                        &r.run_id,
                        &r.plan,
                        status,
                        &r.jobs.to_string(),
                        &r.failed.to_string(),
                        &r.started_at,
                    )
                );
            }
        }
    }
    exit::SUCCESS
}

fn runs_show(a: RunsShowArgs) -> i32 {
    let store = match a.store.open(&a.runs_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (report, ran_in) = match store.find_report(&a.run_id) {
        Ok(found) => found,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    // The run's folder when it is on this host; a run of another host (from the shared history) gets
    // its report.html written under RUNS/.shared/ instead.
    let here = a.runs_dir.join(&report.run_id);
    let elsewhere = !here.join("report.json").is_file();
    let dir = if elsewhere {
        a.runs_dir.join(".shared").join(&report.run_id)
    } else {
        here
    };
    if a.html {
        if elsewhere && let Err(e) = std::fs::create_dir_all(&dir) {
            errln!("error: cannot create {}: {e}", dir.display());
            return exit::INVALID;
        }
        return match html_of(&dir, &report) {
            Ok(path) => {
                outln!("{}", path.display());
                exit::SUCCESS
            }
            Err(e) => {
                errln!("error: cannot write report.html in {}: {e}", dir.display());
                exit::INVALID
            }
        };
    }
    if a.markdown {
        match std::fs::read_to_string(dir.join("summary.md")) {
            Ok(s) => out!("{s}"),
            Err(_) => out!("{}", crate::report::writers::summary_markdown(&report)),
        }
        return exit::SUCCESS;
    }
    let tty = std::io::stdout().is_terminal();
    let p = Palette::new(TermEnv::from_env().colour(tty));
    let width = if tty {
        crate::report::style::width_of(1).unwrap_or(120)
    } else {
        std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(160)
    };
    out!("{}", crate::report::show::for_terminal(&report, p, width));
    if elsewhere {
        outln!(
            "\n{} {} (on the host that ran it; `runs show --html` writes one here)",
            p.dim("report:"),
            ran_in.join("report.html").display()
        );
    } else {
        outln!(
            "\n{} {}",
            p.dim("report:"),
            dir.join("report.html").display()
        );
    }
    exit::SUCCESS
}

/// The run's report.html, written from its report.json when it is missing (a run from before it
/// existed, or one whose files were copied without it).
fn html_of(dir: &std::path::Path, report: &crate::report::Report) -> std::io::Result<PathBuf> {
    let path = dir.join("report.html");
    if !path.is_file() {
        crate::report::writers::write_atomic(
            &path,
            crate::report::html::render(report).as_bytes(),
        )?;
    }
    Ok(std::path::absolute(&path).unwrap_or(path))
}

fn runs_open(a: RunsOpenArgs) -> i32 {
    let dir = match history::find_run(&a.runs_dir, &a.run_id) {
        Ok(d) => d,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    let Some(report) = history::read_report(&dir) else {
        errln!("error: run {} has no readable report", a.run_id);
        return exit::INVALID;
    };
    let path = match html_of(&dir, &report) {
        Ok(p) => p,
        Err(e) => {
            errln!("error: cannot write report.html in {}: {e}", dir.display());
            return exit::INVALID;
        }
    };
    // $BROWSER (a command, as other tools read it), else the desktop's opener.
    let browser = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty());
    let candidates: Vec<String> = match browser {
        Some(b) => vec![b],
        None if cfg!(target_os = "macos") => vec!["open".into()],
        None => vec!["xdg-open".into()],
    };
    for c in &candidates {
        let mut parts = c.split_whitespace();
        let Some(program) = parts.next() else {
            continue;
        };
        let spawned = std::process::Command::new(program)
            .args(parts)
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        match spawned {
            Ok(s) if s.success() => {
                outln!("opened {}", path.display());
                return exit::SUCCESS;
            }
            Ok(s) => {
                errln!("error: `{c}` could not open {} ({s})", path.display());
                return exit::INVALID;
            }
            Err(_) => continue,
        }
    }
    errln!(
        "error: no browser to open {} with: set BROWSER, or open the file yourself",
        path.display()
    );
    exit::INVALID
}

fn runs_prune(a: RunsPruneArgs) -> i32 {
    let store = match a.store.open(&a.runs_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let doomed = match store.to_prune(a.keep) {
        Ok(d) => d,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    if a.dry_run {
        for r in &doomed {
            outln!(
                "would remove {}  ({}, {})",
                r.run_id,
                r.plan,
                r.status.as_str()
            );
        }
        outln!(
            "would remove {} runs from {} (nothing removed: --dry-run)",
            doomed.len(),
            store.describe()
        );
        return exit::SUCCESS;
    }
    // Removing every run is asked about on a terminal; scripts say --yes (or are not asked at all).
    let everything = a.keep == 0 && !doomed.is_empty();
    if everything && !a.yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        err!(
            "remove all {} runs in {}? [y/N] ",
            doomed.len(),
            store.describe()
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            errln!("nothing removed");
            return exit::SUCCESS;
        }
    }
    if let Err(e) = store.forget(&doomed) {
        errln!("error: {e}");
        return exit::INVALID;
    }
    match history::remove(&a.runs_dir, &doomed) {
        Ok(removed) => {
            if removed.len() == doomed.len() {
                outln!("removed {} runs", removed.len());
            } else {
                outln!(
                    "removed {} runs from {} ({} of their folders were on this host)",
                    doomed.len(),
                    store.describe(),
                    removed.len()
                );
            }
            // The result cache forgets what the removed runs paid for.
            if let Err(e) = crate::exec::cache::compact(&a.runs_dir) {
                errln!("warning: cannot compact the result cache's index: {e}");
            }
            exit::SUCCESS
        }
        Err(e) => {
            errln!("error: {e}");
            exit::INVALID
        }
    }
}
