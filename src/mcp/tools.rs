//! The catalogue of tools: each one's name, description, input schema, output schema and hints, and
//! whether it may spend (and so is left out by `--read-only`).
//!
//! The job tools' input schemas are cut from the JSON Schema of the skill's input type
//! ([`OpInput`]): each tool keeps the fields of its operation, with their descriptions and the job
//! type's enum, so the tools and `aitbc-flow op` cannot drift apart. The plan tools have their own
//! argument types ([`PlanArgs`], [`RunPlanArgs`], …).

use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::model::{JobType, Operation, Outcome};
use crate::op::OpInput;
use crate::report::Report;

/// What a tool does, for dispatching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One of the skill's operations.
    Job(Operation),
    /// Check a plan.
    ValidatePlan,
    /// The dry run of a plan.
    Plan,
    /// Run a plan.
    RunPlan,
    /// A run's report.
    RunStatus,
    /// The history of runs.
    RunsList,
}

/// One tool.
#[derive(Clone, Debug)]
pub struct ToolDef {
    /// What it does.
    pub kind: Kind,
    /// True when it pays for jobs or changes anything (left out by `--read-only`).
    pub writes: bool,
    /// The argument names it takes (anything else is refused).
    pub fields: Vec<String>,
    /// Its definition as the protocol lists it.
    pub tool: Tool,
}

/// The fields of each job tool, and which of them are required.
fn job_fields(op: Operation) -> (&'static [&'static str], &'static [&'static str]) {
    match op {
        Operation::Submit => (
            &[
                "job_type",
                "prompt",
                "payment",
                "wallet",
                "model",
                "provider_id",
                "endpoint",
                "currency",
                "wait",
                "timeout",
            ],
            &["job_type", "prompt", "payment", "wallet"],
        ),
        Operation::Status | Operation::Results | Operation::Cancel | Operation::Refund => {
            (&["job_id"], &["job_id"])
        }
        Operation::List => (&["limit", "status", "job_type"], &[]),
        Operation::Optimize => (
            &[
                "agent_id",
                "cpu",
                "memory",
                "gpu",
                "duration",
                "target",
                "task_type",
                "wallet",
            ],
            &["agent_id", "cpu", "memory"],
        ),
        Operation::Balance => (&["wallet"], &["wallet"]),
        // Not a tool: a plan's `notify` step reports it.
        Operation::Notify | Operation::Group => (&[], &[]),
    }
}

fn job_description(op: Operation) -> String {
    let minimums = JobType::ALL
        .iter()
        .map(|t| format!("{t} {}", t.min_payment()))
        .collect::<Vec<_>>()
        .join(", ");
    match op {
        Operation::Submit => format!(
            "Submit an AI job to the AITBC network, paid in AITBC from a wallet. Checked before anything \
             is sent: one of the six job types, at least the type's minimum payment ({minimums} AITBC), \
             a prompt of at most 4000 characters, a wallet whose balance covers the payment, and the \
             server's spend cap. Without `wait` it answers at once with the job id (monitor it with \
             `status`, fetch it with `results`); with `wait: true` it waits for the job (up to \
             `timeout`, 300 s by default) sending progress 0–100, then fetches the result and verifies \
             its receipt. Cancelling a waiting call cancels the job and asks for its refund."
        ),
        Operation::Status => "Read a job's status (submitted, processing, completed, failed, cancelled), \
             its progress and the time it is still expected to take."
            .into(),
        Operation::Results => "Fetch a completed job's result and verify its receipt's Ed25519 signature \
             (`performance_metrics.receipt_verified`)."
            .into(),
        Operation::List => "List recent jobs, newest first, optionally of one status or job type.".into(),
        Operation::Cancel => "Cancel a queued or running job and ask for the refund of its payment; \
             the answer says the payment status read back."
            .into(),
        Operation::Optimize => "Ask for a resource allocation (CPU, memory, GPUs) for an agent, within \
             the caps (64 CPU, 512 GB, 8 GPUs, 24 h), with a cost estimate when a duration is given."
            .into(),
        Operation::Balance => "Read a wallet's balance in AITBC.".into(),
        Operation::Refund => "Ask for the refund of a cancelled, failed or expired job's payment and \
             say what became of it, as the payment view reads (refunded, or still held with the amount)."
            .into(),
        Operation::Notify => "POST a message to a webhook (a plan's `notify` step; not a tool).".into(),
        Operation::Group => "The end of a sub-plan's group (a plan's `uses:` step; not a tool).".into(),
    }
}

/// The JSON Schema of the skill's input, every subschema inlined.
fn op_input_schema() -> Map<String, Value> {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<OpInput>();
    match serde_json::to_value(schema) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// A property's schema without the `null` that an `Option` adds: leaving a field out is how a tool
/// argument is optional. A unit enum's `oneOf` of constants (the job type) becomes an `enum`, with
/// each value's description kept in the field's.
fn tidy(mut prop: Value) -> Value {
    let Value::Object(m) = &mut prop else {
        return prop;
    };
    // `#[serde(default)]` shows as `"default": null`, which says nothing to a caller.
    if m.get("default") == Some(&Value::Null) {
        m.remove("default");
    }
    // Doc comments wrap at 100 columns; a description is one paragraph.
    if let Some(Value::String(d)) = m.get_mut("description") {
        *d = d.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    if let Some(Value::Array(types)) = m.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let t = types.remove(0);
            m.insert("type".into(), t);
        }
    }
    if let Some(Value::Array(any)) = m.get("anyOf").cloned() {
        let rest: Vec<Value> = any
            .into_iter()
            .filter(|a| a.get("type") != Some(&json!("null")))
            .collect();
        if rest.len() == 1
            && let Value::Object(inner) = &rest[0]
        {
            m.remove("anyOf");
            for (k, v) in inner {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    if let Some(Value::Array(one)) = m.get("oneOf").cloned()
        && one.iter().all(|o| o.get("const").is_some())
    {
        m.remove("oneOf");
        let values: Vec<Value> = one.iter().filter_map(|o| o.get("const").cloned()).collect();
        let described: Vec<String> = one
            .iter()
            .filter_map(|o| {
                Some(format!(
                    "`{}`: {}",
                    o.get("const")?.as_str()?,
                    o.get("description")?
                        .as_str()?
                        .trim_end_matches('.')
                        .to_lowercase()
                ))
            })
            .collect();
        if !described.is_empty() {
            let lead = m
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            m.insert(
                "description".into(),
                json!(
                    format!("{} {}.", lead.trim_end_matches('.'), described.join("; "))
                        .trim()
                        .to_string()
                ),
            );
        }
        m.insert("type".into(), json!("string"));
        m.insert("enum".into(), Value::Array(values));
    }
    prop
}

/// The input schema of a job tool: the skill's fields of its operation.
fn job_input_schema(all: &Map<String, Value>, op: Operation) -> JsonObject {
    let (fields, required) = job_fields(op);
    let props = all.get("properties").and_then(Value::as_object);
    let mut properties = Map::new();
    for f in fields {
        if let Some(p) = props.and_then(|p| p.get(*f)) {
            properties.insert((*f).to_string(), tidy(p.clone()));
        }
    }
    object_schema(properties, required)
}

fn object_schema(properties: Map<String, Value>, required: &[&str]) -> JsonObject {
    let mut m = Map::new();
    m.insert("type".into(), json!("object"));
    m.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        m.insert("required".into(), json!(required));
    }
    m.insert("additionalProperties".into(), json!(false));
    m
}

/// The input schema of an argument type: its properties, tidied, and its required fields.
fn args_schema<T: JsonSchema>() -> (JsonObject, Vec<String>) {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>();
    let Ok(Value::Object(m)) = serde_json::to_value(schema) else {
        return (object_schema(Map::new(), &[]), Vec::new());
    };
    let properties: Map<String, Value> = m
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.clone(), tidy(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let required: Vec<String> = m
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let fields: Vec<String> = properties.keys().cloned().collect();
    let required: Vec<&str> = required.iter().map(String::as_str).collect();
    (object_schema(properties, &required), fields)
}

/// `validate_plan` and `plan`: a plan file and variable overrides.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanArgs {
    /// The plan file, relative to the server's plans folder (`--plans-dir`, default: where the server
    /// was started) or absolute within it.
    pub path: String,
    /// Variable overrides, as `--set` gives them: `{"wallet": "ops-wallet", "limits.max": 3}` (each
    /// value read as YAML).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, SetValue>")]
    pub set: BTreeMap<String, Value>,
}

/// A `--set` value: text, a number or a boolean.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SetValue {
    /// Text (read as YAML).
    Text(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// `run_plan`: a plan, its overrides, and how to run it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPlanArgs {
    /// The plan file, relative to the server's plans folder or absolute within it.
    pub path: String,
    /// Variable overrides, as `--set` gives them (each value read as YAML).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, SetValue>")]
    pub set: BTreeMap<String, Value>,
    /// Keep running the other steps after a step fails (default: stop at the first failure).
    #[serde(default)]
    pub keep_going: bool,
    /// Steps running at once (default: the plan's `defaults.concurrency`, else 16).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    /// Do not reuse earlier results for `cache: true` steps: they run (and pay) again.
    #[serde(default)]
    pub no_cache: bool,
    /// Wait for the run to end, sending progress (the share of steps finished), and answer with its
    /// report (default true). With `false` the run goes on in the server and the answer is its id:
    /// follow it with `run_status`.
    #[serde(default)]
    pub wait: Option<bool>,
}

/// `run_status`: a run's id.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStatusArgs {
    /// The run's id (as `run_plan` or `runs_list` gives it).
    pub run_id: String,
}

/// `runs_list`: filters.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunsListArgs {
    /// Only runs of this plan (its `name`).
    #[serde(default)]
    pub plan: Option<String>,
    /// Only runs that ended so: running, succeeded, failed, refused, timed_out, interrupted,
    /// unreachable.
    #[serde(default)]
    pub status: Option<crate::model::RunStatus>,
    /// At most this many, newest first (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

fn output_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::tool::schema_for_output::<T>()
}

fn hints(read_only: bool, destructive: bool, open_world: bool) -> ToolAnnotations {
    let a = ToolAnnotations::new()
        .read_only(read_only)
        .open_world(open_world);
    if read_only {
        a.idempotent(true)
    } else {
        a.destructive(destructive)
    }
}

/// Every tool, in the order they are listed.
pub fn catalogue() -> Vec<ToolDef> {
    let all = op_input_schema();
    let mut out = Vec::new();
    for op in [
        Operation::Submit,
        Operation::Status,
        Operation::Results,
        Operation::List,
        Operation::Cancel,
        Operation::Refund,
        Operation::Optimize,
        Operation::Balance,
    ] {
        let writes = matches!(
            op,
            Operation::Submit | Operation::Cancel | Operation::Refund | Operation::Optimize
        );
        let tool = Tool::new(op.as_str(), job_description(op), job_input_schema(&all, op))
            .with_raw_output_schema(output_schema::<Outcome>())
            .with_annotations(hints(!writes, op == Operation::Cancel, true));
        out.push(ToolDef {
            kind: Kind::Job(op),
            writes,
            fields: job_fields(op).0.iter().map(|f| f.to_string()).collect(),
            tool,
        });
    }
    let plan_tool = |kind,
                     name: &'static str,
                     description: &str,
                     writes,
                     schema: (JsonObject, Vec<String>),
                     open_world| {
        ToolDef {
            kind,
            writes,
            fields: schema.1,
            tool: Tool::new(name, description.to_string(), schema.0)
                .with_annotations(hints(!writes, false, open_world)),
        }
    };
    out.push(plan_tool(
        Kind::ValidatePlan,
        "validate_plan",
        "Check a plan file against the plan schema and the rules (job types, payments, prompts, the step \
         graph): every error with its line, column and a fix. Sends nothing.",
        false,
        args_schema::<PlanArgs>(),
        false,
    ));
    out.push(plan_tool(
        Kind::Plan,
        "plan",
        "The dry run of a plan: its steps in the order they would start, the rendered requests (secrets \
         redacted) and the spend per wallet, with what the server's spend cap leaves. Sends nothing.",
        false,
        args_schema::<PlanArgs>(),
        false,
    ));
    out.push(plan_tool(
        Kind::RunPlan,
        "run_plan",
        "Run a plan against the coordinator: its jobs are submitted (and paid), waited for, fetched and \
         their receipts verified; the run's report is written under the server's runs folder. Under a \
         spend cap the plan's whole spend must fit before anything is sent. Sends progress (the share of \
         steps finished) while it waits; cancelling the call stops the run and cancels its jobs.",
        true,
        args_schema::<RunPlanArgs>(),
        true,
    ));
    let mut status = plan_tool(
        Kind::RunStatus,
        "run_status",
        "The report of a run (running or finished): its status, every step with its outcome, job ids, \
         receipts and the spend per wallet.",
        false,
        args_schema::<RunStatusArgs>(),
        false,
    );
    status.tool = status
        .tool
        .with_raw_output_schema(output_schema::<Report>());
    out.push(status);
    out.push(plan_tool(
        Kind::RunsList,
        "runs_list",
        "The history of runs in the server's runs folder, newest first: id, plan, status, jobs, failures.",
        false,
        args_schema::<RunsListArgs>(),
        false,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool<'a>(tools: &'a [ToolDef], name: &str) -> &'a Tool {
        &tools.iter().find(|t| t.tool.name == name).unwrap().tool
    }

    #[test]
    fn the_submit_schema_is_the_skills_fields_with_the_job_type_enum() {
        let tools = catalogue();
        let s = Value::Object((*tool(&tools, "submit").input_schema).clone());
        assert_eq!(
            s["required"],
            json!(["job_type", "prompt", "payment", "wallet"])
        );
        assert_eq!(s["additionalProperties"], false);
        let jt = &s["properties"]["job_type"];
        assert_eq!(
            jt["enum"],
            json!([
                "inference",
                "training",
                "multimodal",
                "ollama",
                "streaming",
                "monitoring"
            ])
        );
        assert_eq!(jt["type"], "string");
        assert!(
            jt["description"]
                .as_str()
                .unwrap()
                .starts_with("One of the six job types"),
            "{jt}"
        );
        assert_eq!(
            s["properties"]["payment"]["type"],
            json!(["number", "string"])
        );
        assert!(s["properties"]["timeout"]["description"].is_string());
        assert!(s["properties"].get("batch_file").is_none());
        assert!(s["properties"].get("operation").is_none());
    }

    #[test]
    fn every_tool_is_listed_once_and_the_writers_are_marked() {
        let tools = catalogue();
        let names: Vec<&str> = tools.iter().map(|t| &*t.tool.name).collect();
        assert_eq!(
            names,
            [
                "submit",
                "status",
                "results",
                "list",
                "cancel",
                "refund",
                "optimize",
                "balance",
                "validate_plan",
                "plan",
                "run_plan",
                "run_status",
                "runs_list"
            ]
        );
        let writers: Vec<&str> = tools
            .iter()
            .filter(|t| t.writes)
            .map(|t| &*t.tool.name)
            .collect();
        assert_eq!(
            writers,
            ["submit", "cancel", "refund", "optimize", "run_plan"]
        );
        for t in &tools {
            assert_eq!(
                t.tool.annotations.as_ref().unwrap().read_only_hint,
                Some(!t.writes)
            );
            let props = t.tool.input_schema["properties"].as_object().unwrap();
            let mut fields: Vec<&str> = t.fields.iter().map(String::as_str).collect();
            fields.sort();
            let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(fields, keys, "{}", t.tool.name);
        }
        let run = tool(&tools, "run_plan");
        assert_eq!(run.input_schema["required"], json!(["path"]));
    }
}
