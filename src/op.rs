//! The operator skill's JSON interface (`aitbc-ai-operator` v1.1): its input JSON ([`OpInput`]) is
//! turned into a typed request, run by the operation layer ([`crate::ops`]) and answered with the
//! skill's output JSON ([`Outcome`]) and an exit code.
//!
//! The job commands (`aitbc-flow job …`) build an [`OpInput`] from their flags, so the command line,
//! `aitbc-flow op` and the executor's per-step report all say the same thing in the same words: they
//! call the same operations. Every failure is still an [`Outcome`] (`validation_status: "failed"`,
//! with `issues` and `recommendations`) together with an exit code from [`crate::exit`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::api::JobId;
use crate::client::Coordinator;
use crate::exit;
use crate::model::{JobRequest, OptimizeRequest};
use crate::money::Money;
use crate::ops::list::ListRequest;
use crate::ops::payer::BalanceCheck;
use crate::ops::{Conn, OpError};
use crate::policy::{Policy, PolicyError};

pub use crate::model::{OpStatus, Operation, Outcome, ValidationStatus};

/// The skill's input JSON. Unknown fields are tolerated; numbers may be given as strings.
///
/// Its JSON Schema (the field descriptions are these doc comments) is what the MCP server's tools
/// offer as their input schemas, each tool the fields of its operation.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
pub struct OpInput {
    /// What to do.
    pub operation: Option<Operation>,
    /// The paying wallet (submit), the wallet to read (balance), reported (optimize).
    #[serde(default)]
    pub wallet: Option<String>,
    /// One of the six job types (submit; a filter for list).
    #[serde(default)]
    #[schemars(with = "Option<crate::model::JobType>")]
    pub job_type: Option<String>,
    /// The prompt (submit).
    #[serde(default)]
    pub prompt: Option<String>,
    /// The payment in AITBC (submit).
    #[serde(default)]
    pub payment: Option<Money>,
    /// The job (status, results, cancel, refund).
    #[serde(default)]
    pub job_id: Option<String>,
    /// The agent (optimize).
    #[serde(default)]
    pub agent_id: Option<String>,
    /// CPU cores (optimize).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub cpu: Option<f64>,
    /// Memory in GB (optimize).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub memory: Option<f64>,
    /// GPUs (optimize).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub gpu: Option<f64>,
    /// Seconds (or `"1h"`) the resources are needed (optimize).
    #[serde(default, deserialize_with = "lenient_duration")]
    #[schemars(schema_with = "duration_schema")]
    pub duration: Option<Duration>,
    /// Page size (list).
    #[serde(default)]
    pub limit: Option<u64>,
    /// The model (submit).
    #[serde(default)]
    pub model: Option<String>,
    /// A GPU provider (submit).
    #[serde(default)]
    pub provider_id: Option<String>,
    /// A custom Ollama endpoint (submit).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A JSON-lines or YAML list of prompts to submit (submit).
    #[serde(default)]
    pub batch_file: Option<PathBuf>,
    /// The most batch submits in flight at once (submit; default 4).
    #[serde(default)]
    pub parallel: Option<usize>,
    /// Extension: a status filter for list, in the skill's words or the coordinator's.
    #[serde(default)]
    pub status: Option<String>,
    /// Extension: wait for the job and fetch its result (submit).
    #[serde(default)]
    pub wait: Option<bool>,
    /// Extension: how long to wait (default 300 s).
    #[serde(default, deserialize_with = "lenient_duration")]
    #[schemars(schema_with = "duration_schema")]
    pub timeout: Option<Duration>,
    /// Extension: the optimization target (default efficiency).
    #[serde(default)]
    pub target: Option<String>,
    /// Extension: the job type the resources are for (optimize; default inference).
    #[serde(default)]
    pub task_type: Option<String>,
    /// Extension: the currency; only AITBC (or the skill's "AIT") is accepted.
    #[serde(default)]
    pub currency: Option<String>,
}

/// Seconds as a number, or a duration as text (`"90s"`, `"5m"`, `"1h"`).
fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["number", "string", "null"],
        "description": "Seconds (a number), or a duration such as \"90s\", \"5m\" or \"1h\"."
    })
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a number"))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a number, found {other}"
        ))),
    }
}

fn lenient_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| Some(Duration::from_secs_f64(f)))
            .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not a duration"))),
        Some(Value::String(s)) => crate::duration::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected seconds or a duration such as \"300s\", found {other}"
        ))),
    }
}

impl OpInput {
    /// Parses the input JSON; the error names the field that did not fit.
    pub fn from_json(text: &str) -> Result<OpInput, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let input: OpInput = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." || path.is_empty() {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })?;
        if input.operation.is_none() {
            return Err(
                "`operation` is required: one of submit, status, results, list, optimize, cancel, balance, refund"
                    .into(),
            );
        }
        Ok(input)
    }
}

/// What the caller of [`execute`] can set.
#[derive(Clone, Debug)]
pub struct OpOptions {
    /// How long `wait` waits when the input does not say (300 s).
    pub wait_timeout: Duration,
    /// First poll interval (0.5 s).
    pub poll_initial: Duration,
    /// Longest poll interval (5 s).
    pub poll_max: Duration,
    /// Where a relative `batch_file` is found.
    pub base_dir: PathBuf,
    /// Whether a submit reads the wallet's balance first: only the command line switches it off
    /// (`--no-balance-check`), never the input JSON.
    pub balance_check: BalanceCheck,
}

impl Default for OpOptions {
    fn default() -> Self {
        OpOptions {
            wait_timeout: Duration::from_secs(300),
            poll_initial: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            base_dir: PathBuf::from("."),
            balance_check: BalanceCheck::On,
        }
    }
}

/// An output and the exit code that goes with it.
#[derive(Clone, Debug, PartialEq)]
pub struct OpOutcome {
    /// The output JSON.
    pub output: Outcome,
    /// From [`crate::exit`].
    pub exit_code: i32,
}

/// Runs one operation and answers with its output JSON and exit code. Never panics on bad input or
/// network trouble: every failure is an output with `validation_status: "failed"`.
pub async fn execute<C: Coordinator>(c: &C, input: &OpInput, opts: &OpOptions) -> OpOutcome {
    let started = Instant::now();
    let op = input.operation.unwrap_or(Operation::Status);
    let mut conn = Conn::new(c);
    conn.poll = (opts.poll_initial, opts.poll_max);
    let result = run(&conn, input, op, opts).await;
    finish(op, input, result, started)
}

async fn run<C: Coordinator>(
    conn: &Conn<'_, C>,
    input: &OpInput,
    op: Operation,
    opts: &OpOptions,
) -> Result<Outcome, OpError> {
    use crate::ops;
    check_offline(input)?;
    Ok(match op {
        Operation::Submit if input.batch_file.is_some() => submit_batch(conn, input, opts).await?,
        Operation::Submit => submit(conn, input, opts).await?,
        Operation::Status => {
            ops::status::status(conn, &job_id(input, op)?)
                .await?
                .outcome
        }
        Operation::Results => {
            ops::results::results(conn, &job_id(input, op)?, None)
                .await?
                .outcome
        }
        Operation::List => ops::list::list(conn, &list_request(input)).await?.outcome,
        Operation::Optimize => {
            ops::optimize::optimize(conn, &optimize_request(input)?, &Policy::default())
                .await?
                .outcome
        }
        Operation::Cancel => {
            ops::cancel::cancel(conn, &job_id(input, op)?)
                .await?
                .outcome
        }
        Operation::Refund => {
            ops::refund::refund(conn, &job_id(input, op)?, None)
                .await?
                .outcome
        }
        Operation::Balance => {
            let wallet = required(&input.wallet, "wallet", op)?;
            ops::balance::balance(conn, wallet).await?.outcome
        }
        Operation::Notify | Operation::Group => return Err(not_an_operation(op)),
    })
}

/// Checks what can be checked without a coordinator (required fields, job ids, the client rules).
/// `Some` is the failure to report: nothing needs to be started or sent for it.
pub fn precheck(input: &OpInput) -> Option<OpOutcome> {
    let op = input.operation.unwrap_or(Operation::Status);
    match check_offline(input) {
        Ok(()) => None,
        Err(e) => Some(finish(op, input, Err(e), Instant::now())),
    }
}

fn check_offline(input: &OpInput) -> Result<(), OpError> {
    let op = input.operation.unwrap_or(Operation::Status);
    let rules = |broken: Vec<PolicyError>| {
        if broken.is_empty() {
            Ok(())
        } else {
            Err(OpError::Rules(broken))
        }
    };
    match op {
        Operation::Submit if input.batch_file.is_some() => {
            required(&input.job_type, "job_type", op)?;
            Ok(())
        }
        Operation::Submit => rules(submit_rules(&job_request(input)?, input)),
        Operation::Status | Operation::Results | Operation::Cancel | Operation::Refund => {
            job_id(input, op).map(drop)
        }
        Operation::List => crate::ops::list::query(&list_request(input)).map(drop),
        Operation::Optimize => rules(crate::policy::check_optimize(
            &optimize_request(input)?,
            &Policy::default(),
        )),
        Operation::Balance => required(&input.wallet, "wallet", op).map(drop),
        Operation::Notify | Operation::Group => Err(not_an_operation(op)),
    }
}

/// `notify` and `group` are what a plan's `notify` and `uses:` steps report, not operations of the skill.
fn not_an_operation(op: Operation) -> OpError {
    let what = match op {
        Operation::Group => "what a plan's `uses:` step reports",
        _ => "a plan step kind (a webhook POST)",
    };
    OpError::Input(format!(
        "`{}` is {what}, not an operation: use submit, status, results, list, cancel, refund, \
         optimize or balance",
        op.as_str()
    ))
}

/// The rules a submit breaks: the request's, and the currency the input names.
fn submit_rules(req: &JobRequest, input: &OpInput) -> Vec<PolicyError> {
    let mut broken = crate::policy::check_job(req, &Policy::default());
    if let Err(e) = crate::policy::check_currency(input.currency.as_deref()) {
        broken.push(e);
    }
    broken
}

/// The output and exit code of an operation's result: a failure becomes the skill's failed output
/// (a failed submit still says what was asked for), and the time it took is filled in.
pub fn finish(
    op: Operation,
    input: &OpInput,
    result: Result<Outcome, OpError>,
    started: Instant,
) -> OpOutcome {
    let (output, exit_code) = match result {
        Ok(out) => {
            let code = if out.failed() {
                exit::STEP_FAILED
            } else {
                exit::SUCCESS
            };
            (out, code)
        }
        Err(e) => {
            let mut out = e.outcome(op);
            // A failed submit still says what was asked for.
            if op == Operation::Submit {
                out.wallet = out.wallet.or_else(|| input.wallet.clone());
                out.payment = out.payment.or(input.payment);
                out.job_type = out.job_type.or_else(|| {
                    input
                        .job_type
                        .as_deref()
                        .and_then(crate::model::JobType::parse)
                });
            }
            (out, exit::for_op(&e))
        }
    };
    OpOutcome {
        output: output.with_execution_time(started.elapsed()),
        exit_code,
    }
}

fn required<'a>(v: &'a Option<String>, name: &str, op: Operation) -> Result<&'a str, OpError> {
    v.as_deref()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| OpError::Input(format!("`{name}` is required for {}", op.as_str())))
}

fn job_id(input: &OpInput, op: Operation) -> Result<JobId, OpError> {
    required(&input.job_id, "job_id", op)?
        .trim()
        .parse()
        .map_err(OpError::Input)
}

/// The job an input asks to submit (the rules are checked separately).
pub fn job_request(input: &OpInput) -> Result<JobRequest, OpError> {
    let op = Operation::Submit;
    Ok(JobRequest {
        job_type: required(&input.job_type, "job_type", op)?.to_string(),
        prompt: input.prompt.clone().unwrap_or_default(),
        payment: input
            .payment
            .ok_or_else(|| OpError::Input("`payment` is required for submit".into()))?,
        wallet: input.wallet.clone().unwrap_or_default(),
        model: input.model.clone(),
        provider_id: input.provider_id.clone(),
        endpoint: input.endpoint.clone(),
        ..JobRequest::default()
    })
}

/// The list an input asks for (the filters are checked by the operation).
fn list_request(input: &OpInput) -> ListRequest {
    ListRequest {
        limit: input.limit,
        status: input.status.clone(),
        job_type: input.job_type.clone(),
    }
}

/// The resources an input asks for (the rules are checked separately).
pub fn optimize_request(input: &OpInput) -> Result<OptimizeRequest, OpError> {
    let op = Operation::Optimize;
    Ok(OptimizeRequest {
        agent_id: required(&input.agent_id, "agent_id", op)?.to_string(),
        cpu: input
            .cpu
            .ok_or_else(|| OpError::Input("`cpu` is required for optimize".into()))?,
        memory_gb: input
            .memory
            .ok_or_else(|| OpError::Input("`memory` is required for optimize".into()))?,
        gpu: input.gpu.unwrap_or(0.0),
        duration: input.duration,
        task_type: input
            .task_type
            .clone()
            .or_else(|| input.job_type.clone())
            .unwrap_or_else(|| "inference".into()),
        target: input.target.clone().unwrap_or_else(|| "efficiency".into()),
        wallet: input.wallet.clone(),
    })
}

/// Submit; with `wait`, wait for the job and fetch its result, all in one output.
async fn submit<C: Coordinator>(
    conn: &Conn<'_, C>,
    input: &OpInput,
    opts: &OpOptions,
) -> Result<Outcome, OpError> {
    let req = job_request(input)?;
    let submitted =
        crate::ops::submit::submit(conn, &req, &Policy::default(), opts.balance_check).await?;
    if !input.wait.unwrap_or(false) {
        return Ok(submitted.outcome);
    }
    let view = &submitted.answer.view;
    let timeout = input.timeout.unwrap_or(opts.wait_timeout);
    let last = crate::ops::wait::wait(conn, &view.job_id, timeout).await?;
    if last.state != crate::api::JobState::Completed {
        return Err(OpError::JobEnded {
            last: Box::new(last),
        });
    }
    let fetched = crate::ops::results::results(conn, &last.job_id, Some(&last))
        .await?
        .outcome;
    Ok(crate::ops::submit::completed(
        submitted.outcome,
        fetched,
        &req,
        &view.job_id,
    ))
}

/// Submits every prompt of a batch file with at most `parallel` in flight, after checking every item
/// against the rules and the wallet's balance against the whole batch.
async fn submit_batch<C: Coordinator>(
    conn: &Conn<'_, C>,
    input: &OpInput,
    opts: &OpOptions,
) -> Result<Outcome, OpError> {
    use futures_util::StreamExt;

    let path = input.batch_file.clone().unwrap_or_default();
    let path = if path.is_absolute() {
        path
    } else {
        opts.base_dir.join(path)
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| OpError::Input(format!("cannot read {}: {e}", path.display())))?;
    let items = read_batch(&text, &path.to_string_lossy()).map_err(OpError::Input)?;
    if items.is_empty() {
        return Err(OpError::Input(format!(
            "{} holds no prompts",
            path.display()
        )));
    }
    let base = OpInput {
        prompt: Some(String::new()),
        ..input.clone()
    };
    let mut requests = Vec::new();
    let mut broken = Vec::new();
    for item in &items {
        let mut one = base.clone();
        one.prompt = Some(item.prompt.clone());
        one.job_type = item.job_type.clone().or(one.job_type);
        one.payment = item.payment.or(one.payment);
        one.model = item.model.clone().or(one.model);
        let req = job_request(&one)?;
        broken.extend(submit_rules(&req, &one));
        requests.push(req);
    }
    if !broken.is_empty() {
        broken.dedup();
        return Err(OpError::Rules(broken));
    }
    // One wallet's jobs never race its own balance: check the batch's total once, up front.
    let wallet = requests[0].wallet.clone();
    let total: Money = requests.iter().map(|r| r.payment).sum();
    let check = opts.balance_check;
    let funds = crate::ops::submit::check_funds(conn, &wallet, total, check).await?;
    let payer = &funds.payer;

    let parallel = input.parallel.unwrap_or(4).max(1);
    let outputs: Vec<Outcome> =
        futures_util::stream::iter(requests.into_iter().map(|req| async move {
            let started = Instant::now();
            let client_ref = format!("aitbc-flow-{}", hex::encode(rand::random::<[u8; 8]>()));
            let mut body = crate::ops::submit::body(&req, &client_ref);
            crate::ops::submit::pay_from(&mut body, payer);
            let sent = crate::ops::submit::send(conn, &body, &client_ref, &client_ref, payer).await;
            let out = match sent {
                Ok(s) => crate::ops::submit::outcome(&s.view, &req, s.created, payer, check),
                Err(e) => e.outcome(Operation::Submit),
            };
            out.with_execution_time(started.elapsed())
        }))
        .buffered(parallel)
        .collect()
        .await;

    let ok = outputs.iter().filter(|o| !o.failed()).count();
    let mut out = Outcome::new(
        Operation::Submit,
        format!(
            "{ok} of {} batch jobs submitted from {wallet}",
            outputs.len()
        ),
    );
    out.wallet = Some(wallet);
    out.payment = Some(total);
    out.status = Some(OpStatus::Submitted);
    out.progress = Some(0);
    out.performance_metrics = Some(payer.metrics().into());
    // What every item says about the payer is said once, for the batch.
    let common: Vec<String> = check.issue().into_iter().chain(payer.issue()).collect();
    out.issues.extend(common.iter().cloned());
    for (i, o) in outputs.iter().enumerate() {
        for issue in o.issues.iter().filter(|i| !common.contains(i)) {
            out.issues.push(format!("item {}: {issue}", i + 1));
        }
    }
    if ok < outputs.len() {
        out.validation_status = if ok == 0 {
            ValidationStatus::Failed
        } else {
            ValidationStatus::Partial
        };
        out.recommendations.push(
            "List recent jobs before resubmitting the failed items: a lost answer may hide an accepted job"
                .into(),
        );
    }
    out.jobs = Some(
        outputs
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .collect(),
    );
    Ok(out.settle())
}

/// One entry of a batch file: a prompt, with optional overrides of the command's fields.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct BatchItem {
    /// The prompt.
    pub prompt: String,
    /// Overrides the job type.
    #[serde(default)]
    pub job_type: Option<String>,
    /// Overrides the payment.
    #[serde(default)]
    pub payment: Option<Money>,
    /// Overrides the model.
    #[serde(default)]
    pub model: Option<String>,
}

/// Reads a batch file: JSON lines (each a prompt string or an object with `prompt`) or a YAML list of
/// the same. Blank lines and `#` comments are skipped in JSON lines.
pub fn read_batch(text: &str, file_name: &str) -> Result<Vec<BatchItem>, String> {
    let is_yaml = file_name.ends_with(".yaml") || file_name.ends_with(".yml");
    let values: Vec<Value> = if is_yaml {
        yaml_list(text)?
    } else {
        let mut out = Vec::new();
        let mut json_error = None;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            match serde_json::from_str::<Value>(t) {
                Ok(v) => out.push(v),
                Err(e) => {
                    json_error = Some(format!("line {}: {e}", i + 1));
                    break;
                }
            }
        }
        match json_error {
            // Not JSON lines: perhaps a YAML list without the extension.
            Some(e) => yaml_list(text).map_err(|_| format!("{file_name}: not JSON lines ({e})"))?,
            None => out,
        }
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(prompt) => Ok(BatchItem {
                prompt,
                ..BatchItem::default()
            }),
            other => serde_json::from_value(other)
                .map_err(|e| format!("{file_name}: item {}: {e}", i + 1)),
        })
        .collect()
}

fn yaml_list(text: &str) -> Result<Vec<Value>, String> {
    use saphyr::LoadableYamlNode;
    let docs = saphyr::Yaml::load_from_str(text).map_err(|e| e.to_string())?;
    match docs.first().map(yaml_to_json) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err("expected a YAML list of prompts".into()),
    }
}

fn yaml_to_json(y: &saphyr::Yaml) -> Value {
    use saphyr::{Scalar, Yaml};
    match y {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        Yaml::Value(Scalar::Integer(i)) => json!(i),
        Yaml::Value(Scalar::FloatingPoint(f)) => json!(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => Value::String(s.to_string()),
        Yaml::Representation(s, _, _) => Value::String(s.to_string()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match yaml_to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Tagged(_, inner) => yaml_to_json(inner),
        Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobState, JobView};
    use serde_json::json;

    #[test]
    fn input_parses_leniently_and_names_bad_fields() {
        let i = OpInput::from_json(
            r#"{"operation": "submit", "payment": "500", "cpu": "4", "duration": "1h", "whatever": 1}"#,
        )
        .unwrap();
        assert_eq!(i.payment, Some(Money::from_int(500)));
        assert_eq!(i.cpu, Some(4.0));
        assert_eq!(i.duration, Some(Duration::from_secs(3600)));
        let e = OpInput::from_json(r#"{"operation": "launch"}"#).unwrap_err();
        assert!(e.starts_with("operation: unknown variant `launch`"), "{e}");
        let e = OpInput::from_json(r#"{"operation": "submit", "payment": true}"#).unwrap_err();
        assert!(e.starts_with("payment:"), "{e}");
        assert!(
            OpInput::from_json("{}")
                .unwrap_err()
                .contains("`operation` is required")
        );
        assert!(OpInput::from_json("{\"operation\": ").is_err());
    }

    #[test]
    fn notify_is_refused_as_an_operation_naming_the_real_ones() {
        let i = OpInput::from_json(r#"{"operation": "notify"}"#).unwrap();
        let out = precheck(&i).expect("refused before anything is sent");
        assert_eq!(out.exit_code, crate::exit::INVALID);
        assert_eq!(out.output.validation_status, ValidationStatus::Failed);
        let said = out.output.issues.join(" ") + &out.output.summary;
        assert!(said.contains("`notify` is a plan step kind"), "{said}");
        assert!(said.contains("submit, status, results"), "{said}");
        let i = OpInput::from_json(r#"{"operation": "group"}"#).unwrap();
        let out = precheck(&i).expect("refused before anything is sent");
        assert_eq!(out.exit_code, crate::exit::INVALID);
        let said = out.output.issues.join(" ") + &out.output.summary;
        assert!(
            said.contains("`group` is what a plan's `uses:` step reports"),
            "{said}"
        );
    }

    #[test]
    fn output_has_exactly_the_skill_fields() {
        let v = serde_json::to_value(Outcome::new(Operation::Submit, "x")).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "summary",
                "operation",
                "job_id",
                "job_type",
                "status",
                "progress",
                "estimated_time",
                "wallet",
                "payment",
                "result",
                "jobs",
                "resource_allocation",
                "performance_metrics",
                "issues",
                "recommendations",
                "confidence",
                "execution_time",
                "validation_status"
            ]
        );
    }

    fn view(v: Value) -> JobView {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_failed_result_or_an_unverified_receipt_is_reported() {
        let id: JobId = "ea05c15ab4f94d369c35d96c8fc39ac5".parse().unwrap();
        let failed = json!({"status": "failed", "error": "Unsupported job type: video"});
        let out = crate::ops::results::outcome(&id, None, &failed, None, None);
        assert_eq!(out.status, Some(OpStatus::Failed));
        assert_eq!(out.validation_status, ValidationStatus::Failed);
        assert_eq!(out.issues[0], "the job failed: Unsupported job type: video");

        let ok = json!({"status": "completed", "output": "hi"});
        let receipt = json!({"receipt_id": "r", "signature": {"alg": "Ed25519", "key_id": "AAAA", "sig": "AAAA"}});
        let check = crate::api::verify_receipt(&receipt);
        let out = crate::ops::results::outcome(&id, None, &ok, Some(&receipt), Some(&check));
        assert_eq!(out.result, Some(json!("hi")));
        assert_eq!(out.validation_status, ValidationStatus::Partial);
        assert_eq!(
            out.performance_metrics.unwrap().to_value()["receipt_verified"],
            false
        );
        assert!(
            out.issues[0].starts_with("receipt not verified"),
            "{:?}",
            out.issues
        );
    }

    #[test]
    fn skipped_payments_and_escrow_after_cancel_are_issues() {
        let v = view(
            json!({"job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": "QUEUED",
                            "payload": {"type": "inference"}, "payment_status": "skipped"}),
        );
        let req = JobRequest {
            job_type: "inference".into(),
            wallet: "w".into(),
            payment: Money::from_int(2),
            ..JobRequest::default()
        };
        let payer =
            crate::ops::payer::Payer::unchecked("0x52908400098527886E0F7030069857D2E4169EE7");
        let out = crate::ops::submit::outcome(&v, &req, true, &payer, BalanceCheck::On);
        assert_eq!(out.validation_status, ValidationStatus::Partial);
        assert!(out.issues[0].contains("skipped the payment"));

        let v = view(
            json!({"job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": "CANCELED",
                            "payload": {"type": "inference"}, "payment_status": "escrowed"}),
        );
        let out = crate::ops::cancel::outcome(&v);
        assert_eq!(out.status, Some(OpStatus::Cancelled));
        assert!(out.issues[0].contains("still escrowed"));

        let v = view(
            json!({"job_id": "ea05c15ab4f94d369c35d96c8fc39ac5", "state": "EXPIRED",
                            "payload": {"type": "training"}, "error": "job expired"}),
        );
        let out = crate::ops::status::outcome(&v);
        assert_eq!(out.status, Some(OpStatus::Failed));
        assert_eq!(out.progress, Some(100));
        assert_eq!(out.issues, vec!["the job ended EXPIRED: job expired"]);
    }

    #[test]
    fn status_filters_accept_both_vocabularies() {
        use crate::ops::list::state_filter;
        assert_eq!(state_filter("cancelled").unwrap(), JobState::Canceled);
        assert_eq!(state_filter("CANCELED").unwrap(), JobState::Canceled);
        assert_eq!(state_filter("processing").unwrap(), JobState::Running);
        assert!(state_filter("done").is_err());
    }

    #[test]
    fn batch_files_read_as_json_lines_or_yaml() {
        let items = read_batch(
            "\"first\"\n\n# note\n{\"prompt\": \"second\", \"payment\": 3}\n",
            "b.jsonl",
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].payment, Some(Money::from_int(3)));
        let items = read_batch("- one\n- prompt: two\n  model: mistral\n", "b.yaml").unwrap();
        assert_eq!(items[1].model.as_deref(), Some("mistral"));
        let items = read_batch("- one\n- two\n", "prompts.txt").unwrap();
        assert_eq!(items.len(), 2);
        assert!(read_batch("{\"nope\": 1}\n", "b.jsonl").is_err());
    }
}
