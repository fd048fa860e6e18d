//! The protocol handler: the server's instructions, the tools it lists (without the ones that spend
//! under `--read-only`), and each call dispatched to [`super::jobs`] or [`super::plans`]; and the stdio
//! loop, which on the way out — the client closed stdin, or a signal came — lets every call still
//! running finish its cleanup (a cancelled wait cancels its job and asks for the refund) before the
//! process ends.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::answer::Answer;
use super::progress::Progress;
use super::tools::{Kind, ToolDef, catalogue};
use super::{jobs, plans};
use crate::client::Coordinator;
use crate::op::OpOptions;
use crate::ops::Conn;
use crate::policy::spend::{Caps, SpendCap};

/// How long calls still running at shutdown get to finish their cleanup.
const DRAIN: Duration = Duration::from_secs(30);

/// What the server is started with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Offer only the tools that neither pay nor change anything.
    pub read_only: bool,
    /// The spend cap (`--max-spend`).
    pub caps: Caps,
    /// Where runs are written and read.
    pub runs_dir: PathBuf,
    /// The only folder plans are read from (an absolute, canonical path).
    pub plans_dir: PathBuf,
    /// The embedded coordinator's URL, when the server started one.
    pub embedded: Option<String>,
    /// How long `submit` with `wait` waits when the call does not say (300 s).
    pub wait_timeout: Duration,
    /// The polling backoff range while waiting for a job.
    pub poll: (Duration, Duration),
    /// Values no answer may show (the coordinator token).
    pub secrets: Vec<String>,
}

impl Options {
    /// Defaults: everything offered, no cap, `runs/` and the plans in `plans_dir`.
    pub fn new(plans_dir: PathBuf) -> Options {
        Options {
            read_only: false,
            caps: Caps::default(),
            runs_dir: PathBuf::from("runs"),
            plans_dir,
            embedded: None,
            wait_timeout: Duration::from_secs(300),
            poll: (Duration::from_millis(500), Duration::from_secs(5)),
            secrets: Vec::new(),
        }
    }
}

/// What every call shares.
pub struct State<C> {
    /// The coordinator.
    pub coord: Arc<C>,
    /// What may still be spent.
    pub cap: SpendCap,
    /// The options.
    pub options: Options,
    /// The tools offered.
    pub tools: Vec<ToolDef>,
    /// Calls and background runs still going.
    pub tasks: TaskTracker,
    /// Cancelled when the server stops: calls still running and background runs stop with it.
    pub shutdown: CancellationToken,
    /// Background runs still going.
    runs: Mutex<BTreeSet<String>>,
}

impl<C> State<C> {
    /// A connection for a call: each request sent once, the server's polling.
    pub fn conn(&self) -> Conn<'_, C> {
        let mut conn = Conn::new(&*self.coord);
        conn.poll = self.options.poll;
        conn
    }

    /// The options `op` runs with here.
    pub fn op_options(&self) -> OpOptions {
        OpOptions {
            wait_timeout: self.options.wait_timeout,
            poll_initial: self.options.poll.0,
            poll_max: self.options.poll.1,
            base_dir: self.options.plans_dir.clone(),
            balance_check: crate::ops::payer::BalanceCheck::On,
        }
    }

    /// A background run started.
    pub fn runs_started(&self, id: &str) {
        self.lock_runs().insert(id.to_string());
    }

    /// A background run ended.
    pub fn runs_ended(&self, id: &str) {
        self.lock_runs().remove(id);
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The background runs still going.
    pub fn runs_going(&self) -> Vec<String> {
        self.lock_runs().iter().cloned().collect()
    }
}

impl<C: Coordinator> State<C> {
    /// What the server tells the agent when it connects.
    pub fn instructions(&self) -> String {
        let mut s = String::from(
            "aitbc-flow runs AI jobs on the AITBC compute network for you, with the aitbc-ai-operator \
             skill's rules enforced by the tools: six job types, a minimum payment per type, prompts of \
             at most 4000 characters, no submit without the balance to pay, resource caps for optimize. \
             Answers are the skill's output JSON (summary, status, progress, issues, recommendations); a \
             refused call says why and what to do. Use `submit` with `wait: true` to get a result in one \
             call, or `submit` then `status`/`results`. Plans (YAML files in the server's plans folder) \
             are checked with `validate_plan`, previewed with `plan` and run with `run_plan`.",
        );
        match &self.options.embedded {
            Some(url) => s.push_str(&format!(
                " No coordinator is configured, so the server started an embedded one at {url}: its \
                 jobs, wallets and balances are local and live only as long as the server (new wallets \
                 get 10,000 test AITBC). Configure AITBC_COORDINATOR_URL and AITBC_TOKEN for the real \
                 network."
            )),
            None => s.push_str(&format!(
                " The coordinator is {}: payments are real.",
                self.coord.base_url()
            )),
        }
        if self.cap.is_capped() {
            let mut caps = Vec::new();
            if let Some(t) = self.cap.caps().total {
                caps.push(format!("{t} AITBC in total"));
            }
            for (w, m) in &self.cap.caps().per_wallet {
                caps.push(format!("{m} AITBC from wallet {w}"));
            }
            s.push_str(&format!(
                " Spend cap for this session: {} (what was paid and not refunded counts; a call past it \
                 is refused, saying what is left).",
                caps.join(", ")
            ));
        }
        if self.options.read_only {
            s.push_str(
                " Read-only: only the tools that neither pay nor change anything are offered.",
            );
        }
        s
    }
}

/// The MCP server.
pub struct Server<C> {
    state: Arc<State<C>>,
}

impl<C> Clone for Server<C> {
    fn clone(&self) -> Self {
        Server {
            state: self.state.clone(),
        }
    }
}

impl<C: Coordinator + 'static> Server<C> {
    /// A server on `coord` with these options.
    pub fn new(coord: Arc<C>, options: Options) -> Server<C> {
        let tools = catalogue()
            .into_iter()
            .filter(|t| !(options.read_only && t.writes))
            .collect();
        Server {
            state: Arc::new(State {
                coord,
                cap: SpendCap::new(options.caps.clone()),
                options,
                tools,
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                runs: Mutex::default(),
            }),
        }
    }

    /// What the calls share (for tests).
    pub fn state(&self) -> &Arc<State<C>> {
        &self.state
    }

    /// Runs one tool call: `progress` hears how it goes, `cancel` fires when the caller gives up.
    pub async fn call(
        &self,
        name: &str,
        arguments: Option<&serde_json::Map<String, serde_json::Value>>,
        progress: Progress,
        cancel: &CancellationToken,
    ) -> Answer {
        let st = &self.state;
        let Some(def) = st.tools.iter().find(|t| t.tool.name == name) else {
            progress.finish().await;
            let offered = catalogue().iter().any(|t| t.tool.name == name);
            return Answer::refused(if offered {
                format!(
                    "`{name}` is not offered: the server runs with --read-only, which offers only the \
                     tools that neither pay nor change anything"
                )
            } else {
                format!(
                    "there is no tool `{name}`: the tools are {}",
                    st.tools
                        .iter()
                        .map(|t| t.tool.name.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        };
        tracing::info!("tool call: {name}");
        let answer = match def.kind {
            Kind::Job(op) => match jobs::input(op, arguments, &def.fields) {
                Ok(input) => {
                    let out = jobs::call(st, &input, &progress, cancel).await;
                    Answer::outcome(&out)
                }
                Err(e) => Answer::refused(format!("invalid arguments for `{name}`: {e}")),
            },
            Kind::ValidatePlan => match args(name, arguments) {
                Ok(a) => plans::validate(st, &a),
                Err(e) => e,
            },
            Kind::Plan => match args(name, arguments) {
                Ok(a) => plans::dry_run(st, &a),
                Err(e) => e,
            },
            Kind::RunPlan => match args(name, arguments) {
                Ok(a) => return plans::run(st, &a, progress, cancel).await,
                Err(e) => e,
            },
            Kind::RunStatus => match args(name, arguments) {
                Ok(a) => plans::status(st, &a),
                Err(e) => e,
            },
            Kind::RunsList => match args(name, arguments) {
                Ok(a) => plans::list(st, &a),
                Err(e) => e,
            },
        };
        progress.finish().await;
        answer
    }

    /// Waits (a bounded time) for the calls and background runs still going, after telling the runs
    /// to stop.
    pub async fn drain(&self) {
        self.state.shutdown.cancel();
        self.state.tasks.close();
        if tokio::time::timeout(DRAIN, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "calls still running {} s after the client left were given up",
                DRAIN.as_secs()
            );
        }
    }
}

/// A plan tool's arguments.
fn args<T: serde::de::DeserializeOwned>(
    name: &str,
    arguments: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<T, Answer> {
    let v = serde_json::Value::Object(arguments.cloned().unwrap_or_default());
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        Answer::refused(format!("invalid arguments for `{name}`: {at}{}", e.inner()))
    })
}

/// Progress notifications for a call whose caller asked for them (a progress token in its `_meta`).
fn progress_for(context: &RequestContext<RoleServer>) -> Progress {
    let Some(token) = context.meta.get_progress_token() else {
        return Progress::none();
    };
    let peer = context.peer.clone();
    Progress::to(move |p, message| {
        let peer = peer.clone();
        let token = token.clone();
        async move {
            let n = ProgressNotificationParam::new(token, p)
                .with_total(100.0)
                .with_message(message);
            if let Err(e) = peer.notify_progress(n).await {
                tracing::debug!("a progress notification was not sent: {e}");
            }
        }
    })
}

impl<C: Coordinator + 'static> ServerHandler for Server<C> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("aitbc-flow", env!("CARGO_PKG_VERSION")))
            .with_instructions(self.state.instructions())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.state.tools.iter().map(|t| t.tool.clone()).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.state
            .tools
            .iter()
            .find(|t| t.tool.name == name)
            .map(|t| t.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // The call counts as running until it has answered: shutdown waits for its cleanup.
        let _running = self.state.tasks.token();
        let progress = progress_for(&context);
        // Given up when the caller cancels it, or at once when the server is told to stop (a client
        // that goes away sends SIGTERM soon after closing stdin: the cleanup must not wait for rmcp's
        // own drain of the session).
        let cancel = self.state.shutdown.child_token();
        let watch = {
            let (asked, cancel) = (context.ct.clone(), cancel.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = asked.cancelled() => cancel.cancel(),
                    _ = cancel.cancelled() => {}
                }
            })
        };
        let answer = self
            .call(&request.name, request.arguments.as_ref(), progress, &cancel)
            .await;
        watch.abort();
        Ok(answer.into_result(&self.state.options.secrets).into())
    }
}

/// Serves on stdin/stdout until the client closes stdin or `stop` is cancelled (a signal), then lets
/// the calls still running finish their cleanup.
pub async fn serve_stdio<C: Coordinator + 'static>(
    server: Server<C>,
    stop: CancellationToken,
) -> Result<(), String> {
    // A signal stops the calls at once (they cancel their jobs) and the session with them.
    let shutdown = server.state.shutdown.clone();
    let signals = stop.clone();
    tokio::spawn(async move {
        signals.cancelled().await;
        shutdown.cancel();
    });
    let running = server
        .clone()
        .serve_with_ct(rmcp::transport::stdio_pipes(), stop.child_token())
        .await
        .map_err(|e| format!("the MCP client did not initialize the session: {e}"))?;
    let ended = running.waiting().await;
    server.drain().await;
    ended
        .map(drop)
        .map_err(|e| format!("the MCP session ended abnormally: {e}"))
}
