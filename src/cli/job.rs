//! `job …` and `op`: single job operations from the command line, and the operator skill's JSON
//! interface on stdin/stdout. Both build an [`OpInput`], run it with [`crate::op::execute`] and print
//! the [`Outcome`](crate::model::Outcome) (as text, or as the skill's output JSON).
//!
//! With no coordinator configured they start the embedded one in-process; its state lives only as
//! long as the command, which stderr says.

use std::io::Read;
use std::path::PathBuf;

use crate::client::config::{ClientConfig, ConfigOverrides, Pacing, Secret};
use crate::client::http::HttpCoordinator;
use crate::duration::Dur;
use crate::exit;
use crate::money::Money;
use crate::op::{OpInput, OpOptions, OpOutcome, Operation, Outcome, ValidationStatus};
use crate::ops::payer::BalanceCheck;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// The operator skill's output JSON.
    Json,
}

/// Where the coordinator is (shared by `job` and `op`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConnectArgs {
    /// The coordinator's base URL [env: AITBC_COORDINATOR_URL]; with none, an embedded coordinator is
    /// started for the command.
    #[arg(long, global = true, value_name = "URL")]
    pub coordinator: Option<String>,
    /// The wallet daemon's base URL for balances [env: AITBC_WALLET_URL] (the coordinator does not
    /// serve balances); default: the coordinator.
    #[arg(long, global = true, value_name = "URL")]
    pub wallet_url: Option<String>,
}

/// `job …`
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// Where the coordinator is.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// `text` (default) or `json` (the operator skill's output JSON).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// The job command.
    #[command(subcommand)]
    pub command: JobCommand,
}

/// Job commands.
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Submit a job (or a batch of prompts); with --wait, wait for it and fetch its result.
    Submit(SubmitArgs),
    /// Show a job's status.
    Status {
        /// The job id (32 hex characters).
        job_id: String,
    },
    /// Fetch a finished job's result and verify its receipt.
    Results {
        /// The job id.
        job_id: String,
    },
    /// List recent jobs, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Only jobs in this status (submitted, processing, completed, failed, cancelled, expired).
        #[arg(long)]
        status: Option<String>,
        /// Only jobs of this type.
        #[arg(long = "type", value_name = "TYPE")]
        job_type: Option<String>,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// The job id.
        job_id: String,
    },
    /// Ask for the refund of a job that ended without being paid out (cancelled, failed, expired), and
    /// say what became of its payment.
    Refund {
        /// The job id.
        job_id: String,
    },
    /// Ask for a resource allocation for an agent.
    Optimize(OptimizeArgs),
    /// Show a wallet's balance.
    Balance {
        /// The wallet.
        wallet: String,
    },
}

/// `job submit`
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// inference, training, multimodal, ollama, streaming or monitoring.
    #[arg(long = "type", value_name = "TYPE")]
    pub job_type: String,
    /// The prompt.
    #[arg(long, conflicts_with_all = ["prompt_file", "batch_file"])]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "FILE", conflicts_with = "batch_file")]
    pub prompt_file: Option<PathBuf>,
    /// The payment in AITBC.
    #[arg(long, value_name = "AITBC")]
    pub payment: Money,
    /// The paying wallet.
    #[arg(long)]
    pub wallet: String,
    /// The model (e.g. llama2, mistral).
    #[arg(long)]
    pub model: Option<String>,
    /// A GPU provider.
    #[arg(long, value_name = "ID")]
    pub provider_id: Option<String>,
    /// A custom Ollama endpoint.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// A JSON-lines or YAML list of prompts, each submitted as its own job.
    #[arg(long, value_name = "FILE")]
    pub batch_file: Option<PathBuf>,
    /// The most batch submits in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "batch_file")]
    pub parallel: usize,
    /// Wait for the job to finish, then fetch its result and verify the receipt.
    #[arg(long, conflicts_with = "batch_file")]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "300s")]
    pub timeout: Dur,
    /// Submit without reading the wallet's balance first (for a coordinator without a wallet daemon):
    /// the wallet is sent as given, and the output says so.
    #[arg(long)]
    pub no_balance_check: bool,
}

/// `job optimize`
#[derive(Debug, clap::Args)]
pub struct OptimizeArgs {
    /// The agent the resources are for.
    #[arg(long)]
    pub agent_id: String,
    /// CPU cores.
    #[arg(long)]
    pub cpu: f64,
    /// Memory in GB.
    #[arg(long, value_name = "GB")]
    pub memory: f64,
    /// GPUs.
    #[arg(long, default_value_t = 0.0)]
    pub gpu: f64,
    /// How long the resources are needed (for the cost estimate), e.g. 1h or 3600.
    #[arg(long)]
    pub duration: Option<Dur>,
    /// speed, accuracy, efficiency, cost, scalability or reliability.
    #[arg(long, default_value = "efficiency")]
    pub target: String,
    /// The job type the resources are for.
    #[arg(long, value_name = "TYPE", default_value = "inference")]
    pub task_type: String,
    /// The wallet (reported only).
    #[arg(long)]
    pub wallet: Option<String>,
}

/// `op`
#[derive(Debug, clap::Args)]
pub struct OpArgs {
    /// Where the coordinator is.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Submit without reading the wallet's balance first (for a coordinator without a wallet daemon);
    /// only the command line can say this, never the input JSON.
    #[arg(long)]
    pub no_balance_check: bool,
}

/// The skill input a job command stands for.
fn to_input(c: JobCommand) -> Result<OpInput, String> {
    let mut i = OpInput::default();
    match c {
        JobCommand::Refund { job_id } => {
            i.operation = Some(Operation::Refund);
            i.job_id = Some(job_id);
        }
        JobCommand::Submit(a) => {
            i.operation = Some(Operation::Submit);
            i.prompt = match (&a.prompt, &a.prompt_file) {
                (Some(p), _) => Some(p.clone()),
                // The operator's file, anywhere, but read with a prompt's bound (not a whole /dev/zero).
                (None, Some(f)) => Some(crate::plan::inputs::read_bounded(f).map_err(|e| {
                    format!(
                        "cannot read the prompt file {}: {e}",
                        crate::text::shown(&f.display().to_string())
                    )
                })?),
                (None, None) if a.batch_file.is_some() => None,
                (None, None) => {
                    return Err("give a prompt with --prompt, --prompt-file or --batch-file".into());
                }
            };
            i.job_type = Some(a.job_type);
            i.payment = Some(a.payment);
            i.wallet = Some(a.wallet);
            i.model = a.model;
            i.provider_id = a.provider_id;
            i.endpoint = a.endpoint;
            i.parallel = a.batch_file.is_some().then_some(a.parallel);
            i.batch_file = a.batch_file;
            i.wait = Some(a.wait);
            i.timeout = Some(a.timeout.get());
        }
        JobCommand::Status { job_id } => {
            i.operation = Some(Operation::Status);
            i.job_id = Some(job_id);
        }
        JobCommand::Results { job_id } => {
            i.operation = Some(Operation::Results);
            i.job_id = Some(job_id);
        }
        JobCommand::List {
            limit,
            status,
            job_type,
        } => {
            i.operation = Some(Operation::List);
            i.limit = Some(limit);
            i.status = status;
            i.job_type = job_type;
        }
        JobCommand::Cancel { job_id } => {
            i.operation = Some(Operation::Cancel);
            i.job_id = Some(job_id);
        }
        JobCommand::Optimize(a) => {
            i.operation = Some(Operation::Optimize);
            i.agent_id = Some(a.agent_id);
            i.cpu = Some(a.cpu);
            i.memory = Some(a.memory);
            i.gpu = Some(a.gpu);
            i.duration = a.duration.map(Dur::get);
            i.target = Some(a.target);
            i.task_type = Some(a.task_type);
            i.wallet = a.wallet;
        }
        JobCommand::Balance { wallet } => {
            i.operation = Some(Operation::Balance);
            i.wallet = Some(wallet);
        }
    }
    Ok(i)
}

/// Runs a job command.
pub fn execute(args: JobArgs) -> i32 {
    let check = BalanceCheck::skipped_if(matches!(
        &args.command,
        JobCommand::Submit(SubmitArgs {
            no_balance_check: true,
            ..
        })
    ));
    let input = match to_input(args.command) {
        Ok(i) => i,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    let format = args.output;
    match run_input(&args.connect, &input, check) {
        Ok(outcome) => {
            print_outcome(&outcome, format);
            outcome.exit_code
        }
        Err(code) => code,
    }
}

/// Runs `op`: the skill's input JSON on stdin, its output JSON on stdout.
pub fn op(args: OpArgs) -> i32 {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        errln!("error: cannot read the input JSON from stdin: {e}");
        return exit::INVALID;
    }
    let input = match OpInput::from_json(&text) {
        Ok(i) => i,
        Err(e) => {
            errln!("error: the input JSON on stdin is not a valid operator request: {e}");
            return exit::INVALID;
        }
    };
    let check = BalanceCheck::skipped_if(args.no_balance_check);
    match run_input(&args.connect, &input, check) {
        Ok(outcome) => {
            print_outcome(&outcome, OutputFormat::Json);
            outcome.exit_code
        }
        Err(code) => code,
    }
}

/// Connects (starting the embedded coordinator when none is configured), runs the input, and shuts
/// the embedded coordinator down. `Err` carries the exit code of a failure already reported.
fn run_input(
    connect_args: &ConnectArgs,
    input: &OpInput,
    balance_check: BalanceCheck,
) -> Result<OpOutcome, i32> {
    // A request that breaks a rule needs no coordinator, embedded or not.
    if let Some(failed) = crate::op::precheck(input) {
        return Ok(failed);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            errln!("error: cannot start the async runtime: {e}");
            exit::INVALID
        })?;
    runtime.block_on(async {
        let conn = connect(connect_args, crate::local::LocalConfig::default(), |url| {
            format!(
                "note: no coordinator configured (--coordinator or AITBC_COORDINATOR_URL): using an embedded \
                 one at {url} whose jobs and wallets live only as long as this command; `job submit --wait` \
                 is the useful form, or run `aitbc-flow coordinator serve` and point --coordinator at it"
            )
        })
        .await?;
        let opts = OpOptions {
            base_dir: std::env::current_dir().unwrap_or_default(),
            balance_check,
            ..OpOptions::default()
        };
        let mut outcome = crate::op::execute(&conn.client, input, &opts).await;
        if conn.local.is_some() {
            gone_with_the_command(&mut outcome.output);
        }
        conn.close().await;
        Ok(outcome)
    })
}

/// The coordinator a command talks to: the configured one, or an embedded one started for it.
pub struct Connection {
    /// The client.
    pub client: HttpCoordinator,
    /// The embedded coordinator, when one was started for the command.
    pub local: Option<crate::local::LocalHandle>,
    /// The credentials sent, which no output may show.
    pub token: Option<Secret>,
}

impl Connection {
    /// Stops the embedded coordinator, if one was started.
    pub async fn close(self) {
        if let Some(handle) = self.local
            && let Err(e) = handle.shutdown().await
        {
            tracing::warn!("embedded coordinator did not stop cleanly: {e}");
        }
    }
}

/// Connects to the coordinator configured by the flags and the environment, or — with none — starts
/// an embedded one with `local` and says so on stderr with `note(url)`. Runs inside a tokio runtime.
/// `Err` carries the exit code of a failure already reported.
pub async fn connect(
    args: &ConnectArgs,
    local: crate::local::LocalConfig,
    note: impl FnOnce(&str) -> String,
) -> Result<Connection, i32> {
    let overrides = ConfigOverrides {
        coordinator: args.coordinator.clone(),
        wallet_url: args.wallet_url.clone(),
    };
    let config = ClientConfig::from_env(&overrides).map_err(|e| {
        errln!("error: {e}");
        exit::INVALID
    })?;
    let (config, local) = if config.is_configured() {
        (config, None)
    } else {
        let handle = crate::local::start(local).await.map_err(|e| {
            errln!("error: cannot start the embedded coordinator: {e}");
            exit::UNREACHABLE
        })?;
        errln!("{}", note(&handle.url()));
        let mut c = ClientConfig::for_url(&handle.url()).map_err(|e| {
            errln!("error: {e}");
            exit::UNREACHABLE
        })?;
        c.token = Some(Secret::new(handle.token()));
        c.pacing = Pacing::off();
        (c, Some(handle))
    };
    let client = HttpCoordinator::new(&config).map_err(|e| {
        errln!("error: {e}");
        exit::INVALID
    })?;
    Ok(Connection {
        client,
        local,
        token: config.token.clone(),
    })
}

/// The embedded coordinator's jobs end with the command: advice to look at a job later (its status,
/// its result, a cancel or a refund) would name a job that is gone, so it is replaced by the way to
/// keep jobs.
fn gone_with_the_command(o: &mut Outcome) {
    let before = o.recommendations.len();
    o.recommendations
        .retain(|r| !r.contains("`aitbc-flow job ") && r != crate::model::hints::BONDED_QUEUED);
    if o.recommendations.len() < before {
        o.recommendations.push(EMBEDDED_JOBS_END.into());
    }
}

/// What replaces the follow-up advice on the embedded coordinator.
pub const EMBEDDED_JOBS_END: &str = "The embedded coordinator's jobs end with this command: use      `aitbc-flow job submit … --wait` to get the result now, or start `aitbc-flow coordinator serve`      and point --coordinator at it to keep jobs between commands";

fn print_outcome(outcome: &OpOutcome, format: OutputFormat) {
    match format {
        OutputFormat::Json => match serde_json::to_string_pretty(&outcome.output) {
            Ok(s) => outln!("{s}"),
            Err(e) => errln!("error: cannot write the output JSON: {e}"),
        },
        OutputFormat::Text => {
            let text = render_text(&outcome.output);
            if outcome.output.validation_status == ValidationStatus::Failed {
                err!("{text}");
            } else {
                out!("{text}");
            }
        }
    }
}

fn field(s: &mut String, name: &str, value: String) {
    use std::fmt::Write;
    let _ = writeln!(s, "  {name:<10} {value}");
}

/// The output for people: the summary, the fields that are set, then issues and recommendations.
pub fn render_text(o: &Outcome) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let lead = if o.validation_status == ValidationStatus::Failed {
        "error: "
    } else {
        ""
    };
    let _ = writeln!(s, "{lead}{}", o.summary);
    if let Some(id) = &o.job_id {
        field(&mut s, "job", id.to_string());
    }
    if let Some(t) = &o.job_type {
        field(&mut s, "type", t.to_string());
    }
    if let Some(st) = o.status {
        let mut v = st.as_str().to_string();
        if let Some(p) = o.progress {
            let _ = write!(v, " ({p}%)");
        }
        if let Some(t) = o.estimated_time.filter(|t| *t > 0.0) {
            let _ = write!(v, ", about {t}s to go");
        }
        field(&mut s, "status", v);
    }
    if let Some(w) = &o.wallet {
        field(&mut s, "wallet", w.clone());
    }
    let metrics = o
        .performance_metrics
        .as_ref()
        .map(crate::model::JsonText::to_value);
    if let Some(p) = &o.payment {
        field(&mut s, "payment", format!("{p} AITBC"));
    }
    if let Some(m) = &metrics
        && let Some(a) = m.get("buyer_address").and_then(|v| v.as_str())
    {
        let how = match m.get("payer").and_then(|v| v.as_str()) {
            Some("wallet_daemon") => " (the wallet's address, from the wallet daemon)",
            Some("given") => " (as given)",
            Some("unresolved") => " (the wallet's name: not resolved to an address)",
            _ => "",
        };
        field(&mut s, "payer", format!("{a}{how}"));
    }
    if o.operation == Operation::Refund
        && let Some(m) = &metrics
        && let Some(st) = m.get("payment_status").and_then(|v| v.as_str())
    {
        let done = m.get("refunded").is_some_and(|v| !v.is_null());
        field(
            &mut s,
            "refund",
            if done {
                format!("done (payment status: {st})")
            } else {
                format!("not made (payment status: {st})")
            },
        );
    }
    if let Some(a) = &o.resource_allocation {
        let g = |k: &str| a.get(k).map(|v| v.to_string()).unwrap_or_default();
        field(
            &mut s,
            "granted",
            format!(
                "{} cpu, {} GB memory, {} gpu ({})",
                g("cpu_cores"),
                g("memory_gb"),
                g("gpu_count"),
                g("allocation_id").trim_matches('"')
            ),
        );
    }
    if let Some(m) = &metrics {
        if let Some(v) = m.get("receipt_verified").and_then(|v| v.as_bool()) {
            field(
                &mut s,
                "receipt",
                if v { "verified" } else { "NOT verified" }.into(),
            );
        }
        if let Some(c) = m.get("estimated_cost") {
            field(&mut s, "cost", format!("about {c} AITBC"));
        }
    }
    if let Some(jobs) = &o.jobs {
        for j in jobs {
            let g = |k: &str| j.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
            let _ = writeln!(
                s,
                "  {}  {:<10}  {:<10}  {}",
                g("job_id"),
                g("job_type"),
                g("status"),
                g("requested_at")
            );
        }
    }
    if let Some(r) = &o.result {
        let r = match r {
            serde_json::Value::String(text) => text.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_default(),
        };
        if o.operation == Operation::Balance {
            field(&mut s, "balance", format!("{r} AITBC"));
        } else if o.operation == Operation::Refund {
            // Shown as the `refund` field above.
        } else {
            let _ = writeln!(s, "\n{r}\n");
        }
    }
    for i in &o.issues {
        let _ = writeln!(s, "  issue: {i}");
    }
    for r in &o.recommendations {
        let _ = writeln!(s, "  hint: {r}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::OpStatus;

    #[test]
    fn text_output_shows_what_is_set() {
        let mut o = Outcome::new(Operation::Submit, "Inference job x submitted");
        o.job_id = Some("ea05c15ab4f94d369c35d96c8fc39ac5".parse().unwrap());
        o.status = Some(OpStatus::Submitted);
        o.progress = Some(0);
        o.estimated_time = Some(10.0);
        o.payment = Some(Money::from_int(2));
        o.recommendations.push("Monitor it".into());
        assert_eq!(
            render_text(&o),
            "Inference job x submitted\n  job        ea05c15ab4f94d369c35d96c8fc39ac5\n  status     submitted (0%), about 10s to go\n  payment    2 AITBC\n  hint: Monitor it\n"
        );
    }
}
