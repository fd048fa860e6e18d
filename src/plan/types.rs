//! The plan format, as serde types. These are what a YAML plan deserializes into after it has passed the
//! JSON Schema (generated from these same types, so the two cannot drift apart: a test checks that
//! `schemas/plan.schema.json` is current). Every field carries a doc comment, which becomes its
//! description in the schema and so the explanation an editor shows.
//!
//! Values that may hold `${{ … }}` templates are kept as text (or [`Num`]) here and rendered later:
//! a template that needs a step's output can only be rendered when that step has run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::duration::Dur;
use crate::money::Money;

/// An aitbc-flow plan: a named set of steps that submit, wait for, fetch and manage AI jobs on AITBC.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan format version. Always 1.
    pub version: u32,
    /// The plan's name: letters, digits, `-` and `_`. Used for run directories, locks and history.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
    pub name: String,
    /// What the plan is for, in a sentence or two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Variables for templates (`${{ vars.name }}`); `--set name=value` and `--vars FILE` override them.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub vars: Map<String, Value>,
    /// Typed inputs for templates (`${{ inputs.name }}`): each has a type, and may have a default,
    /// be required, or be limited to a list of values. `--set name=value` and `--vars FILE` give them
    /// values, checked against the type when the plan is loaded. A name is a var or an input, not both.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(with = "std::collections::BTreeMap<String, InputSpec>")]
    pub inputs: Map<String, Value>,
    /// Names of environment variables that templates may read as `${{ env.NAME }}`. No other variable
    /// of the environment is visible to a plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Secrets for templates (`${{ secrets.NAME }}`), each read from an environment variable or a file.
    /// Their values are redacted wherever they would be printed.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub secrets: Map<String, Value>,
    /// Defaults for every step: timeout, retry policy and how many steps run at once.
    #[serde(default)]
    pub defaults: Defaults,
    /// Client-side rules checked before anything is sent: minimum payments, prompt length, resource caps.
    #[serde(default)]
    pub policy: Policy,
    /// When to run this plan on a schedule (`aitbc-flow scheduler`, or `run --lock` from system cron).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// How large the plan may grow: steps, matrix copies, template work (see docs/security.md). The
    /// defaults suit every plan we know of; a plan may lower them, or raise them up to fixed ceilings.
    #[serde(default)]
    pub limits: Limits,
    /// What this plan gives back when another plan uses it (`uses:`): each name a template over its
    /// steps' outputs, vars and inputs (`summary: "${{ steps.summarize.output }}"`), read by the
    /// including plan as `${{ steps.ID.NAME }}` of the `uses` step. A plan run on its own checks them
    /// and computes none.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub outputs: Map<String, Value>,
    /// The steps. They run as a graph: a step starts when the steps it needs (by `needs` or by a
    /// `${{ steps.X… }}` reference) are done.
    #[serde(deserialize_with = "steps_sized")]
    pub steps: Vec<Step>,
}

/// The steps, into a vector sized once from the list's length. serde's own `Vec` reserves at most
/// 1 MiB up front (a length it cannot trust), so 10,000 steps grew by doubling, each time moving every
/// step. The list read here is a parsed plan already in memory, its length bounded by
/// [`super::source::MAX_VALUES`]; the reservation is capped at [`super::limits::STEPS_CEILING`] anyway.
/// Same errors as serde's: "expected a sequence".
fn steps_sized<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Step>, D::Error> {
    struct Steps;
    impl<'de> serde::de::Visitor<'de> for Steps {
        type Value = Vec<Step>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Step>, A::Error> {
            let cap = seq
                .size_hint()
                .unwrap_or(0)
                .min(super::limits::STEPS_CEILING as usize);
            let mut steps = Vec::with_capacity(cap);
            while let Some(step) = seq.next_element()? {
                steps.push(step);
            }
            Ok(steps)
        }
    }
    d.deserialize_seq(Steps)
}

/// One typed input of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The input's type: `string`, `integer`, `number`, `boolean`, `amount` (exact AITBC, read from
    /// its digits) or `list`.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// The value when none is given on the command line. Checked against the type at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Whether a value must be given (`--set`, `--vars`); `run` refuses the plan without one, and
    /// `validate` does not. An input with a default is never missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The only values the input may take.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// What the input is for, shown by `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The type of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// A number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// An amount of AITBC, exact (`12.5`, `0.25`); never negative.
    Amount,
    /// A list of values.
    List,
}

/// How large a plan may grow. Each limit has a default and a ceiling that no plan can pass; the
/// ceilings keep loading any plan within about a second and far below 1 GiB of memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most steps the plan may have once its matrices are expanded. Default 10,000; at most 50,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50000))]
    pub steps: Option<u32>,
    /// The most copies one step's matrix may make. Default 1,000; at most 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub matrix_copies: Option<u32>,
    /// The work one template may do each time it is rendered, in MiniJinja fuel (about one instruction,
    /// or 64 bytes of data made, per unit). Default 500,000; at most 2,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2000000))]
    pub template_fuel: Option<u64>,
}

/// Where a secret comes from.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Read the secret from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Read the secret from this file (relative to the plan's folder); surrounding whitespace is trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Defaults applied to every step that does not set its own.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// How long a step may take before it is stopped (a `wait` cancels its job). Default 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// The retry policy for every step. Default: 3 attempts, exponential backoff from 1s to 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// How many steps may run at once. Default 16; `--concurrency` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
}

/// How backoff delays grow between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay (`initial`) every time.
    Fixed,
    /// `initial`, doubling each attempt, capped at `max`.
    Exponential,
}

/// Randomness added to backoff delays, so that many clients do not retry in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// The exact delay.
    None,
    /// A random delay between zero and the computed one ("full jitter").
    Full,
}

/// A class of failure that a retry policy may retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The coordinator could not be reached, or answered 5xx.
    Unavailable,
    /// The coordinator answered 429 (its `Retry-After` is honoured).
    RateLimited,
    /// A request timed out.
    Timeout,
    /// The job itself failed (a failed job is not retried unless this is listed).
    JobFailed,
}

/// A retry policy. `max_attempts` counts the first attempt: 1 means no retry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first one included (1 = never retry). At least 1.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// `fixed` or `exponential` (default).
    #[serde(default = "default_backoff")]
    pub backoff: Backoff,
    /// The first delay. Default 1s.
    #[serde(default = "default_initial")]
    pub initial: Dur,
    /// The longest delay. Default 30s. Must not be less than `initial`.
    #[serde(default = "default_max")]
    pub max: Dur,
    /// `full` (default) or `none`.
    #[serde(default = "default_jitter")]
    pub jitter: Jitter,
    /// What is retried. Default: `unavailable`, `rate_limited`, `timeout`. Add `job_failed` to resubmit
    /// a job whose result failed.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> Backoff {
    Backoff::Exponential
}
fn default_initial() -> Dur {
    Dur::secs(1)
}
fn default_max() -> Dur {
    Dur::secs(30)
}
fn default_jitter() -> Jitter {
    Jitter::Full
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::Unavailable, RetryOn::RateLimited, RetryOn::Timeout]
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: default_attempts(),
            backoff: default_backoff(),
            initial: default_initial(),
            max: default_max(),
            jitter: default_jitter(),
            on: default_retry_on(),
        }
    }
}

pub use crate::policy::settings::{Policy, ResourceCaps};

/// What to do when a second run of a scheduled plan is due while one is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip the new run (default).
    Skip,
    /// Wait for the running one, then run.
    Queue,
    /// Run both.
    Allow,
}

/// Which missed runs to make up after the scheduler was down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// None (default).
    None,
    /// Only the latest missed run.
    Latest,
    /// Every missed run, in order.
    All,
}

/// A cron schedule for the plan.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// A five-field cron expression, e.g. `"0 2 * * *"` (02:00 every day).
    pub cron: String,
    /// The time zone the expression is read in. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// What to do when a run is due while the previous one is still going. Default `skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// Which missed runs to make up. Default `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
}

/// A step: one operation (exactly one of `submit`, `wait`, `fetch`, `job`, `optimize`, `status`,
/// `list`, `cancel`, `balance`, `notify`) and the settings that control it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step's id, unique in the plan: letters, digits, `_` and `-`. Other steps refer to it as
    /// `${{ steps.ID.output }}` and in `needs`.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    pub id: String,
    /// A human name for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Steps that must finish before this one starts, besides those its templates refer to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Run the step only when this is true: a boolean or a template expression such as
    /// `${{ steps.check.balance > 100 }}`. A step that does not run is reported as skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    /// How long the step may take. Overrides `defaults.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// The step's retry policy. Overrides `defaults.retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// When true, a failure of this step does not fail the run or stop other steps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
    /// Fan the step out: one copy per combination of these values, with ids like
    /// `summarize[tone=formal]`. Templates read the values as `${{ matrix.tone }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Map<String, Value>>,
    /// Named outputs for later steps, each a template over this step's own outputs
    /// (e.g. `words: "${{ output | wordcount }}"`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub outputs: Map<String, Value>,
    /// Reuse the result of an earlier completed job with the identical request instead of paying again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
    /// Let a value computed from a secret go into this step's job payload (prompt, parameters,
    /// model), its outputs or its `save:` path. Without it that is a load error; with it, every
    /// value so computed is redacted whole in every output, and saved results are written 0600.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secrets_in_payload: bool,

    /// Submit a job and go on without waiting for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit: Option<SubmitSpec>,
    /// Wait for a submitted job to finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitSpec>,
    /// Fetch a finished job's result and verify its receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchSpec>,
    /// Submit a job, wait for it and fetch its result, in one step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSpec>,
    /// Ask the coordinator to allocate resources for an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimize: Option<OptimizeSpec>,
    /// Read a job's status once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobRef>,
    /// List recent jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<ListSpec>,
    /// Cancel a job (its payment is refunded where the coordinator refunds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<JobRef>,
    /// Read a wallet's balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceSpec>,
    /// POST a JSON message to a webhook (Slack, Mattermost or any URL that takes JSON). A failed
    /// notify is reported but leaves the run's status and exit code alone unless `fail_run: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
    /// Run another plan's steps as a group (a sub-plan, relative to this plan's folder and inside its
    /// repository): their ids are prefixed `ID.`, they start after this step's `needs`, steps that
    /// need this one wait for the whole group, and the sub-plan's `outputs:` are this step's outputs.
    /// This plan's policy, defaults, env and secrets apply to them. A `when` here applies to every
    /// step of the group (with their own, by AND).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// The sub-plan's inputs (`uses` steps only), each checked against its `inputs:` declaration.
    /// A value whose templates read only what is known at load (vars, inputs, env) is rendered and
    /// checked at load; one that reads `steps.*` or `run.*` is rendered when the group's steps need
    /// it (the group waits for the steps it reads) and checked then. Never a secret.
    #[serde(default, rename = "with", skip_serializing_if = "Map::is_empty")]
    pub with: Map<String, Value>,
}

/// A condition: a boolean, or a template expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum When {
    /// A fixed condition.
    Bool(bool),
    /// A template expression, e.g. `${{ steps.check.balance > 100 }}`.
    Expr(String),
}

/// A number written directly or as a template (`${{ vars.payment }}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Num {
    /// A number.
    Lit(f64),
    /// A template that renders to a number.
    Expr(String),
}

/// An amount of AITBC written directly or as a template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Amount {
    /// An amount (exact decimal).
    Lit(Money),
    /// A template that renders to an amount.
    Expr(String),
}

/// What to do with a job whose wait timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Cancel the job (its payment is refunded where the coordinator refunds). The default.
    #[default]
    Cancel,
    /// Leave the job running.
    Keep,
}

/// A job to submit.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitSpec {
    /// One of `inference`, `training`, `multimodal`, `ollama`, `streaming`, `monitoring`.
    #[schemars(schema_with = "crate::model::job_type::plan_field_schema")]
    pub job_type: String,
    /// The wallet that pays.
    pub wallet: String,
    /// What the job pays, in AITBC. At least the policy minimum for its type.
    pub payment: Amount,
    /// The prompt (at most 4000 characters after templating). Give this or `prompt_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A file holding the prompt, relative to the plan's folder; templated like `prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_file: Option<String>,
    /// The model, e.g. `llama2`, `mistral`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A GPU provider to send the job to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// A custom Ollama endpoint for `ollama` jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Extra keys for the job's payload (temperature, max_tokens, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// Placement constraints: gpu, cuda, min_vram_gb, models, max_price, region.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub constraints: Map<String, Value>,
    /// How long the coordinator keeps the job before it expires. Default 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Dur>,
}

/// A job to wait for.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// The job id, usually `${{ steps.ID.job_id }}`.
    pub job: String,
    /// How long to wait. Default: the step's timeout, or 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// `cancel` (default) or `keep` the job when the wait times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
}

/// A job whose result to fetch.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchSpec {
    /// The job id, usually `${{ steps.ID.job_id }}`.
    pub job: String,
    /// Save the result as JSON here: a path inside the run directory, or under the plan's folder. A path
    /// that leaves the plan's folder is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<String>,
    /// Verify the receipt's Ed25519 signature (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_receipt: Option<bool>,
}

/// A job to submit, wait for and fetch, in one step.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// One of `inference`, `training`, `multimodal`, `ollama`, `streaming`, `monitoring`.
    #[schemars(schema_with = "crate::model::job_type::plan_field_schema")]
    pub job_type: String,
    /// The wallet that pays.
    pub wallet: String,
    /// What the job pays, in AITBC. At least the policy minimum for its type.
    pub payment: Amount,
    /// The prompt (at most 4000 characters after templating). Give this or `prompt_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A file holding the prompt, relative to the plan's folder; templated like `prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_file: Option<String>,
    /// The model, e.g. `llama2`, `mistral`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A GPU provider to send the job to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// A custom Ollama endpoint for `ollama` jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Extra keys for the job's payload (temperature, max_tokens, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// Placement constraints: gpu, cuda, min_vram_gb, models, max_price, region.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub constraints: Map<String, Value>,
    /// How long the coordinator keeps the job before it expires. Default 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Dur>,
    /// `cancel` (default) or `keep` the job when the step times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// Save the result as JSON (see `fetch.save`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<String>,
}

impl JobSpec {
    /// The submit half of the step.
    pub fn submit(&self) -> SubmitSpec {
        SubmitSpec {
            job_type: self.job_type.clone(),
            wallet: self.wallet.clone(),
            payment: self.payment.clone(),
            prompt: self.prompt.clone(),
            prompt_file: self.prompt_file.clone(),
            model: self.model.clone(),
            provider_id: self.provider_id.clone(),
            endpoint: self.endpoint.clone(),
            parameters: self.parameters.clone(),
            constraints: self.constraints.clone(),
            ttl: self.ttl,
        }
    }
}

/// A resource allocation request for an agent.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizeSpec {
    /// The agent the resources are for.
    pub agent_id: String,
    /// CPU cores.
    pub cpu: Num,
    /// Memory in GB.
    pub memory: Num,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Num>,
    /// How long the resources are needed; used for the cost estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
    /// The job type the resources are for. Default `inference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// `speed`, `accuracy`, `efficiency` (default), `cost`, `scalability` or `reliability`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The wallet the allocation is for (reported only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<String>,
}

/// A reference to one job.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    /// The job id, usually `${{ steps.ID.job_id }}`.
    pub job: String,
}

/// Which jobs to list.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSpec {
    /// How many jobs, newest first. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Num>,
    /// Only jobs in this state: QUEUED, RUNNING, COMPLETED, FAILED, CANCELED or EXPIRED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only jobs of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::model::job_type::plan_field_schema")]
    pub job_type: Option<String>,
}

/// A wallet whose balance to read.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalanceSpec {
    /// The wallet.
    pub wallet: String,
    /// Fail the step when the balance is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Amount>,
}

/// A message to POST to a webhook.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// The webhook's URL (`http` or `https`). It may hold a secret (`${{ secrets.HOOK }}`): a URL is
    /// a credential place, like a header. A redirect is never followed (the message would go again,
    /// perhaps elsewhere).
    pub url: String,
    /// The message, sent as `{"text": …}` (what Slack and Mattermost incoming webhooks take).
    /// Give this or `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The JSON body to send instead of `{"text": …}`; every string in it is templated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// HTTP headers to send, e.g. `Authorization: "Bearer ${{ secrets.HOOK_TOKEN }}"`. Their values
    /// may hold secrets; the message itself may not (unless the step has `secrets_in_payload`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub headers: Map<String, Value>,
    /// When true, a notify that fails fails the run like any step. Default false: the failure is
    /// reported (the step's state and issues) and the run's status and exit code are those of the
    /// other steps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_run: bool,
}

/// The kinds of step, in the order they are documented.
pub const STEP_KINDS: [&str; 11] = [
    "submit", "wait", "fetch", "job", "optimize", "status", "list", "cancel", "balance", "notify",
    "uses",
];

/// The outputs each step kind produces, for `${{ steps.ID.NAME }}` (besides a step's own `outputs`).
pub fn kind_outputs(kind: &str) -> &'static [&'static str] {
    match kind {
        "submit" => &["job_id", "status", "state", "wallet", "payment", "job_type"],
        "wait" => &["job_id", "status", "state", "result", "output", "error"],
        "fetch" => &[
            "job_id",
            "status",
            "result",
            "output",
            "receipt",
            "receipt_verified",
            "saved",
        ],
        "job" => &[
            "job_id",
            "status",
            "state",
            "wallet",
            "payment",
            "job_type",
            "result",
            "output",
            "receipt",
            "receipt_verified",
            "saved",
        ],
        "optimize" => &["allocation", "allocation_id", "estimated_cost", "status"],
        "status" => &["job_id", "status", "state", "result", "output", "error"],
        "list" => &["jobs", "count", "status"],
        "cancel" => &["job_id", "status", "state"],
        "balance" => &["wallet", "balance", "status"],
        "notify" => &["status", "http_status"],
        "uses" => &["status"],
        _ => &[],
    }
}
