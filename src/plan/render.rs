//! Run-time rendering: what the executor calls on a [`CheckedPlan`] when a step is ready. Templates
//! that read `steps.*` or `run.*` were checked at load (the step and the output exist) and are
//! rendered here against the outputs of the finished steps; the rendered request goes through the
//! same policy checks as the values known at load.

// A `Diagnostic` is large, but errors here are rare and end the step (or the load); the executor's
// API returns one by value as agreed.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::checked::{
    CheckedPlan, JobRequest, OptimizeRequest, PlannedStep, RenderedStep, RunInfo, StepKind,
    StepOutputs, StepView,
};
use super::codes::Code;
use super::diag::Diagnostic;
use super::static_policy::policy_diagnostic;
use super::template::{TemplateError, has_template, to_value};
use super::types::{Amount, Num, OnTimeout, When};
use super::uses::Included;
use crate::api::JobId;
use crate::money::Money;

/// The fields of each kind's spec that are strings (a lone `${{ }}` that rendered to a number or a
/// boolean is turned back into text there).
fn string_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "submit" => &[
            "job_type",
            "wallet",
            "prompt",
            "model",
            "provider_id",
            "endpoint",
        ],
        "job" => &[
            "job_type",
            "wallet",
            "prompt",
            "model",
            "provider_id",
            "endpoint",
            "save",
        ],
        "wait" | "status" | "cancel" => &["job"],
        "fetch" => &["job", "save"],
        "optimize" => &["agent_id", "task_type", "target", "wallet"],
        "list" => &["status", "job_type"],
        "balance" => &["wallet"],
        "notify" => &["url", "text"],
        _ => &[],
    }
}

impl CheckedPlan {
    /// The template context for a step: vars, env, secrets, this copy's matrix, run, and the outputs
    /// of the steps it references (`steps.X` is an object, or a list for an unpaired matrix step). A
    /// step of a sub-plan reads its sub-plan's vars and inputs, those `with:` gives at run time
    /// rendered now ([`Self::group_inputs`]).
    fn context(
        &self,
        step: &PlannedStep,
        outputs: &StepOutputs,
        run: &RunInfo,
        own: Option<&Map<String, Value>>,
    ) -> Result<minijinja::Value, Diagnostic> {
        let inputs = match &step.group {
            Some(g) => self.group_inputs(g, outputs, run)?,
            None => Cow::Borrowed(&self.inputs),
        };
        Ok(self.context_with(step, outputs, run, own, &inputs))
    }

    /// [`Self::context`] for a preview: an input `with:` gives at run time is the text of its
    /// template (`${{ inputs.text }}`), as the outputs of other steps are.
    fn preview_context(
        &self,
        step: &PlannedStep,
        outputs: &StepOutputs,
        run: &RunInfo,
        own: Option<&Map<String, Value>>,
    ) -> minijinja::Value {
        let inputs = match &step.group {
            Some(g) => {
                let mut inputs = g.inputs.clone();
                for d in &g.deferred {
                    let text = format!("${{{{ inputs.{} }}}}", d.name);
                    inputs.insert(d.name.clone(), Value::String(text));
                }
                Cow::Owned(inputs)
            }
            None => Cow::Borrowed(&self.inputs),
        };
        self.context_with(step, outputs, run, own, &inputs)
    }

    /// The context of [`Self::context`], with the step's inputs given.
    fn context_with(
        &self,
        step: &PlannedStep,
        outputs: &StepOutputs,
        run: &RunInfo,
        own: Option<&Map<String, Value>>,
        inputs: &Map<String, Value>,
    ) -> minijinja::Value {
        let mut m = Map::new();
        if let Some(own) = own {
            for (k, v) in own {
                m.insert(k.clone(), v.clone());
            }
        }
        // A step of a sub-plan reads its sub-plan's vars ([`super::uses`]).
        let vars = match &step.group {
            Some(g) => &g.vars,
            None => &self.vars,
        };
        super::template::insert_base_context(&mut m, vars, inputs, &self.env, &self.secrets);
        if !step.matrix.is_empty() {
            m.insert("matrix".into(), Value::Object(step.matrix.clone()));
        }
        m.insert(
            "run".into(),
            serde_json::to_value(run).unwrap_or(Value::Null),
        );
        m.insert("steps".into(), steps_value(&step.views, outputs));
        to_value(&Value::Object(m))
    }

    /// The inputs of a sub-plan's steps: those known at load, and those its `with:` gives at run
    /// time, rendered against the including plan (its vars and inputs, env, run and the outputs of
    /// the steps the values read) and checked against the sub-plan's declarations. A value that does
    /// not fit fails the step that needed it, naming the `with:` entry.
    pub fn group_inputs<'g>(
        &self,
        g: &'g Included,
        outputs: &StepOutputs,
        run: &RunInfo,
    ) -> Result<Cow<'g, Map<String, Value>>, Diagnostic> {
        if g.deferred.is_empty() {
            return Ok(Cow::Borrowed(&g.inputs));
        }
        let ctx = self.including_context(g, outputs, run)?;
        let mut out = g.inputs.clone();
        for d in &g.deferred {
            let mut v = d.value.clone();
            self.render_with_value(&mut v, &ctx).map_err(|e| {
                let message = format!(
                    "cannot render the `with:` value of input `{}` of the sub-plan `{}`: {e} (at {})",
                    d.name, g.file, d.at
                );
                with_error(self, message, &d.at).code(Code::Template)
            })?;
            let v = super::typed_inputs::from_value(&d.spec, &v).map_err(|m| {
                let message = format!(
                    "input `{}` of the sub-plan `{}`: {m} (the `with:` value at {})",
                    d.name, g.file, d.at
                );
                with_error(self, message, &d.at).code(Code::InputValue)
            })?;
            out.insert(d.name.clone(), v);
        }
        Ok(Cow::Owned(out))
    }

    /// The context of the `uses` step of group `g` in the plan that includes it: that plan's vars
    /// and inputs, env, secrets, `run`, and the outputs of the steps its `with:` values and `when`
    /// read.
    fn including_context(
        &self,
        g: &Included,
        outputs: &StepOutputs,
        run: &RunInfo,
    ) -> Result<minijinja::Value, Diagnostic> {
        let (vars, inputs) = match &g.outer {
            Some(o) => (&o.vars, self.group_inputs(o, outputs, run)?.into_owned()),
            None => (&self.vars, self.inputs.clone()),
        };
        let mut m = Map::new();
        super::template::insert_base_context(&mut m, vars, &inputs, &self.env, &self.secrets);
        m.insert(
            "run".into(),
            serde_json::to_value(run).unwrap_or(Value::Null),
        );
        m.insert("steps".into(), steps_value(&g.with_views, outputs));
        Ok(to_value(&Value::Object(m)))
    }

    /// The `uses` step around a step of group `g` (the outermost first) whose `when` is false, if
    /// any: its `when` is evaluated in the plan that includes it ([`Self::including_context`]).
    fn closing_group<'g>(
        &self,
        g: &'g Included,
        outputs: &StepOutputs,
        run: &RunInfo,
    ) -> Result<Option<&'g Included>, Diagnostic> {
        if let Some(o) = &g.outer
            && let Some(closed) = self.closing_group(o, outputs, run)?
        {
            return Ok(Some(closed));
        }
        let runs = match &g.when {
            None => true,
            Some((When::Bool(b), _)) => *b,
            Some((When::Expr(e), at)) => {
                let ctx = self.including_context(g, outputs, run)?;
                self.templates.eval_condition(e, &ctx).map_err(|err| {
                    let message = format!(
                        "cannot evaluate the `when` of the `uses` step `{}`: {err} (at {at})",
                        g.step
                    );
                    with_error(self, message, at).code(Code::Template)
                })?
            }
        };
        Ok((!runs).then_some(g))
    }

    /// The `uses` step whose `when` kept a step of its group from running (not the step's own:
    /// the end of a group skipped by its own `when` is skipped by its `when`), for the report.
    pub fn skipped_by_group(
        &self,
        step: &PlannedStep,
        outputs: &StepOutputs,
        run: &RunInfo,
    ) -> Option<String> {
        let g = step.group.as_ref()?;
        let closed = self.closing_group(g, outputs, run).ok().flatten()?;
        (closed.step != step.id).then(|| closed.step.clone())
    }

    /// Renders every template in a `with:` value.
    fn render_with_value(
        &self,
        v: &mut Value,
        ctx: &minijinja::Value,
    ) -> Result<(), TemplateError> {
        match v {
            Value::String(s) if has_template(s) => *v = self.templates.render(s, ctx)?,
            Value::Array(a) => {
                for x in a {
                    self.render_with_value(x, ctx)?;
                }
            }
            Value::Object(m) => {
                for x in m.values_mut() {
                    self.render_with_value(x, ctx)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A diagnostic at a value of a step, its message redacted and naming the matrix copy.
    fn step_error(&self, step: &PlannedStep, rel: &str, message: String) -> Diagnostic {
        let message = if step.matrix.is_empty() {
            message
        } else {
            format!("{message} in `{}`", step.id)
        };
        self.place(step, rel, message)
    }

    /// A diagnostic at a value of a step (`rel` inside its operation, or `/when…`, `/outputs…`), its
    /// message redacted: a template error unless the caller names another kind.
    fn place(&self, step: &PlannedStep, rel: &str, message: String) -> Diagnostic {
        self.place_part(step, rel, message, None)
    }

    /// As [`Self::place`], at one template (`part`, a byte range of the string) when it is known.
    fn place_part(
        &self,
        step: &PlannedStep,
        rel: &str,
        message: String,
        part: Option<(&str, std::ops::Range<usize>)>,
    ) -> Diagnostic {
        let kind = step.kind.name();
        let pointer = if step.prompt_file.is_some() && rel == "/prompt" {
            format!("{}/{kind}/prompt_file", step.pointer)
        } else if let StepKind::Uses(_) = step.kind {
            // A `uses` step's outputs are the sub-plan's top-level `outputs:`.
            rel.to_string()
        } else if rel.starts_with("/when") || rel.starts_with("/outputs") {
            format!("{}{rel}", step.pointer)
        } else {
            format!("{}/{kind}{rel}", step.pointer)
        };
        // Redacted first, then escaped and cut: a run shows this message as it is.
        let message = crate::text::message(&self.redact(&message)).into_owned();
        let d = Diagnostic::new(message).code(Code::Template);
        let source = step.group.as_ref().map_or(&self.source, |g| &g.source);
        match part {
            Some((text, part)) => source.at_part(&pointer, text, part, d),
            None => source.at(&pointer, d),
        }
    }

    /// Renders every template left in a value.
    fn render_value(
        &self,
        step: &PlannedStep,
        v: &mut Value,
        rel: String,
        ctx: &minijinja::Value,
    ) -> Result<(), Diagnostic> {
        match v {
            Value::String(s) if has_template(s) => {
                *v = self.templates.render(s, ctx).map_err(|e| {
                    at_its_line(self.step_error(
                        step,
                        &rel,
                        format!("cannot render the template: {e}"),
                    ))
                })?;
            }
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    self.render_value(step, x, format!("{rel}/{i}"), ctx)?;
                }
            }
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let seg = super::source::escape_pointer_segment(k).into_owned();
                    self.render_value(step, x, format!("{rel}/{seg}"), ctx)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Placeholder outputs for the steps a step reads: each output is the text of its own template
    /// (`${{ steps.analyze.job_id }}`), so a preview shows what is known only at run time.
    fn placeholder_outputs(&self, step: &PlannedStep) -> StepOutputs {
        let outputs_of = |id: &str, label: &str| -> Value {
            let mut names: Vec<String> = Vec::new();
            if let Some(s) = self.step(id) {
                names.extend(
                    super::types::kind_outputs(s.kind.name())
                        .iter()
                        .map(|n| n.to_string()),
                );
                names.extend(s.outputs.keys().cloned());
            }
            Value::Object(
                names
                    .into_iter()
                    .map(|n| {
                        let text = format!("${{{{ {label}.{n} }}}}");
                        (n, Value::String(text))
                    })
                    .collect(),
            )
        };
        let mut outputs = StepOutputs::new();
        for (name, view) in &step.views {
            match view {
                StepView::One(id) => {
                    outputs.insert(id.clone(), outputs_of(id, &format!("steps.{name}")));
                }
                StepView::List(ids) => {
                    for (k, id) in ids.iter().enumerate() {
                        outputs.insert(id.clone(), outputs_of(id, &format!("steps.{name}[{k}]")));
                    }
                }
            }
        }
        outputs
    }

    /// The run as a preview shows it: its id and start time as their templates.
    fn placeholder_run(&self) -> RunInfo {
        RunInfo {
            id: "${{ run.id }}".into(),
            started_at: "${{ run.started_at }}".into(),
            plan: self.plan.name.clone(),
            status: super::status::run_status::RUNNING.into(),
            failed_steps: Vec::new(),
        }
    }

    /// The step's request for a dry run: every template rendered, except that what is known only at
    /// run time stays readable as its template (`${{ steps.analyze.job_id }}`, `${{ run.id }}`). A
    /// value whose preview cannot be rendered (a filter that needs the real output) is shown as written.
    pub fn preview(&self, step: &PlannedStep) -> Value {
        let outputs = self.placeholder_outputs(step);
        let ctx = self.preview_context(step, &outputs, &self.placeholder_run(), None);
        let mut spec = step.spec().into_owned();
        preview_value(self, &mut spec, &ctx);
        spec
    }

    /// Run-time templates that call a filter, test or function that does not exist, found by
    /// rendering them against placeholders at load (so a typo in a filter fails `validate`, not the
    /// run).
    pub(crate) fn unknown_callables(
        &self,
        step: &PlannedStep,
        checks: &super::template::Templates,
    ) -> Vec<Diagnostic> {
        let calls = |s: &str| s.contains('|') || s.contains('(') || s.contains(" is ");
        let mut out = Vec::new();
        let mut leaves: Vec<(String, String)> = Vec::new();
        let spec = step.spec();
        if any_string(&spec, &|t| has_template(t) && calls(t)) {
            collect_strings(&spec, String::new(), &mut leaves);
            leaves.retain(|(_, t)| has_template(t) && calls(t));
        }
        let when = match &step.when {
            Some(When::Expr(w)) if calls(w) => Some(w),
            _ => None,
        };
        let any_output = step.outputs.values().any(|v| match v {
            Value::String(t) => calls(t),
            _ => true,
        });
        if leaves.is_empty() && when.is_none() && !any_output {
            return out;
        }
        let outputs = self.placeholder_outputs(step);
        let run = self.placeholder_run();
        let ctx = self.preview_context(step, &outputs, &run, None);
        // An unknown filter, test or function; or a template that runs out of fuel even against
        // placeholders, tried again with a whole render's fuel.
        let refused = |quick: Result<(), TemplateError>,
                       full: &dyn Fn() -> Result<(), TemplateError>|
         -> Option<(String, Option<String>)> {
            match quick {
                Err(TemplateError::Unknown(m)) => {
                    let s = super::template::suggest_filter(&m);
                    Some((m, s))
                }
                Err(TemplateError::OutOfFuel(_)) => match full() {
                    Err(e @ TemplateError::OutOfFuel(_)) => {
                        Some((format!("cannot render the template: {e}"), None))
                    }
                    _ => None,
                },
                _ => None,
            }
        };
        for (rel, text) in leaves {
            if let Some((m, s)) = refused(checks.render(&text, &ctx).map(drop), &|| {
                self.templates.render(&text, &ctx).map(drop)
            }) {
                let word = m.split(' ').nth(1).filter(|_| m.ends_with(" is unknown"));
                let part = if step.prompt_file.is_some() && rel == "/prompt" {
                    None
                } else {
                    super::template::wrong_template(&self.templates, &text, word)
                        .map(|r| (text.as_str(), r))
                };
                out.push(self.place_part(step, &rel, m, part).suggest(s));
            }
        }
        if let Some(w) = when
            && let Some((m, s)) = refused(checks.eval_condition(w, &ctx).map(drop), &|| {
                self.templates.eval_condition(w, &ctx).map(drop)
            })
        {
            out.push(self.place(step, "/when", m).suggest(s));
        }
        if !step.outputs.is_empty() {
            let own: Map<String, Value> = super::types::kind_outputs(step.kind.name())
                .iter()
                .map(|n| (n.to_string(), Value::String(format!("${{{{ {n} }}}}"))))
                .collect();
            let ctx = self.preview_context(step, &outputs, &run, Some(&own));
            let mut leaves: Vec<(String, String)> = Vec::new();
            collect_strings(
                &Value::Object(step.outputs.clone()),
                "/outputs".into(),
                &mut leaves,
            );
            for (rel, text) in leaves {
                if has_template(&text)
                    && calls(&text)
                    && let Some((m, s)) = refused(checks.render(&text, &ctx).map(drop), &|| {
                        self.templates.render(&text, &ctx).map(drop)
                    })
                {
                    out.push(self.place(step, &rel, m).suggest(s));
                }
            }
        }
        out
    }

    /// Renders a step against the outputs of the steps before it: exactly what the executor sends.
    /// The rendered request passes the same policy checks as at load.
    pub fn render(
        &self,
        step: &PlannedStep,
        outputs: &StepOutputs,
        run: &RunInfo,
    ) -> Result<RenderedStep, Diagnostic> {
        let mut spec = step.spec().into_owned();
        // The template context (vars, inputs, env, the outputs read) is built only when there is a
        // template to render: most steps of a big generated plan have none.
        if any_string(&spec, &has_template) {
            let ctx = self.context(step, outputs, run, None)?;
            self.render_value(step, &mut spec, String::new(), &ctx)?;
        }
        let kind = step.kind.name();
        if let Value::Object(m) = &mut spec {
            for f in string_fields(kind) {
                if let Some(v @ (Value::Number(_) | Value::Bool(_))) = m.get_mut(*f) {
                    *v = Value::String(v.to_string());
                }
            }
        }
        let bad = |rel: &str, e: String| self.step_error(step, rel, e);
        let job_id = |v: &Value, rel: &str| -> Result<JobId, Diagnostic> {
            let s = v.get("job").and_then(Value::as_str).unwrap_or("");
            JobId::from_str(s.trim()).map_err(|e| bad(rel, e).code(Code::InvalidValue))
        };
        let rendered = match &step.kind {
            StepKind::Submit(_) => RenderedStep::Submit(self.job_request(step, &spec)?),
            StepKind::Job(j) => RenderedStep::Job {
                request: self.job_request(step, &spec)?,
                on_timeout: j.on_timeout.unwrap_or_default(),
                save: spec.get("save").and_then(Value::as_str).map(str::to_string),
            },
            StepKind::Wait(w) => RenderedStep::Wait {
                job: job_id(&spec, "/job")?,
                timeout: w.timeout.map_or(step.timeout, |d| d.get()),
                on_timeout: w.on_timeout.unwrap_or(OnTimeout::Cancel),
            },
            StepKind::Fetch(f) => RenderedStep::Fetch {
                job: job_id(&spec, "/job")?,
                save: spec.get("save").and_then(Value::as_str).map(str::to_string),
                verify_receipt: f.verify_receipt.unwrap_or(true),
            },
            StepKind::Status(_) => RenderedStep::Status {
                job: job_id(&spec, "/job")?,
            },
            StepKind::Cancel(_) => RenderedStep::Cancel {
                job: job_id(&spec, "/job")?,
            },
            StepKind::List(_) => {
                let limit = list_limit(spec.get("limit")).map_err(|e| bad("/limit", e))?;
                RenderedStep::List {
                    limit,
                    status: spec
                        .get("status")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    job_type: spec
                        .get("job_type")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                }
            }
            StepKind::Notify(_) => {
                let url = text(&spec, "url");
                super::kinds::notify_url(&url).map_err(|e| bad("/url", e))?;
                let mut headers = Vec::new();
                if let Some(Value::Object(h)) = spec.get("headers") {
                    for (name, v) in h {
                        let value = match v {
                            Value::String(s) => s.clone(),
                            Value::Null => String::new(),
                            v => v.to_string(),
                        };
                        headers.push((name.clone(), value));
                    }
                }
                let body = match spec.get("body") {
                    Some(b) if !b.is_null() => b.clone(),
                    _ => serde_json::json!({ "text": text(&spec, "text") }),
                };
                RenderedStep::Notify { url, headers, body }
            }
            StepKind::Uses(path) => RenderedStep::Uses { path: path.clone() },
            StepKind::Balance(_) => RenderedStep::Balance {
                wallet: text(&spec, "wallet"),
                min: match spec.get("min") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(money(v).map_err(|e| bad("/min", e))?),
                },
            },
            StepKind::Optimize(o) => {
                let num = |f: &str, default: Option<f64>| -> Result<f64, Diagnostic> {
                    match spec.get(f) {
                        None | Some(Value::Null) => {
                            default.ok_or_else(|| bad("", format!("`{f}` is missing")))
                        }
                        Some(v) => as_f64(v).ok_or_else(|| {
                            bad(&format!("/{f}"), format!("`{f}` must be a number, not {v}"))
                        }),
                    }
                };
                let req = OptimizeRequest {
                    agent_id: text(&spec, "agent_id"),
                    cpu: num("cpu", None)?,
                    memory_gb: num("memory", None)?,
                    gpu: num("gpu", Some(0.0))?,
                    duration: o.duration.map(|d| d.get()),
                    task_type: spec
                        .get("task_type")
                        .and_then(Value::as_str)
                        .unwrap_or("inference")
                        .to_string(),
                    target: spec
                        .get("target")
                        .and_then(Value::as_str)
                        .unwrap_or("efficiency")
                        .to_string(),
                    wallet: spec
                        .get("wallet")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                };
                if let Some(e) = crate::policy::check_optimize(&req, &self.plan.policy).first() {
                    let field = match e.field() {
                        "job_type" => "task_type",
                        f => f,
                    };
                    let d = policy_diagnostic(e);
                    let placed = bad(&format!("/{field}"), d.message.clone());
                    return Err(Diagnostic {
                        code: d.code,
                        suggestion: d.suggestion,
                        help: d.help,
                        ..placed
                    });
                }
                RenderedStep::Optimize(req)
            }
        };
        Ok(rendered)
    }

    /// The job request of a `submit` or `job` step, checked against the policy.
    fn job_request(&self, step: &PlannedStep, spec: &Value) -> Result<JobRequest, Diagnostic> {
        let bad = |rel: &str, e: String| self.step_error(step, rel, e);
        let payment = match spec.get("payment") {
            Some(v) => money(v).map_err(|e| bad("/payment", e).code(Code::InvalidValue))?,
            None => return Err(bad("", "`payment` is missing".into()).code(Code::MissingKey)),
        };
        let obj = |k: &str| -> Map<String, Value> {
            spec.get(k)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let opt = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_string);
        let ttl = spec
            .get("ttl")
            .and_then(Value::as_str)
            .and_then(|s| crate::duration::parse_duration(s).ok());
        let req = JobRequest {
            job_type: text(spec, "job_type"),
            wallet: text(spec, "wallet"),
            payment,
            prompt: text(spec, "prompt"),
            model: opt("model"),
            provider_id: opt("provider_id"),
            endpoint: opt("endpoint"),
            parameters: obj("parameters"),
            constraints: obj("constraints"),
            ttl,
        };
        if let Some(e) = crate::policy::check_job(&req, &self.plan.policy).first() {
            let d = policy_diagnostic(e);
            let placed = bad(&format!("/{}", e.field()), d.message.clone());
            return Err(Diagnostic {
                code: d.code,
                suggestion: d.suggestion,
                help: d.help,
                ..placed
            });
        }
        Ok(req)
    }

    /// Whether a step runs: its `when`, evaluated against the outputs of the steps before it.
    pub fn should_run(
        &self,
        step: &PlannedStep,
        outputs: &StepOutputs,
        run: &RunInfo,
    ) -> Result<bool, Diagnostic> {
        // A step of a group runs only when the `uses` steps around it let it.
        if let Some(g) = &step.group
            && self.closing_group(g, outputs, run)?.is_some()
        {
            return Ok(false);
        }
        match &step.when {
            None => Ok(true),
            Some(When::Bool(b)) => Ok(*b),
            Some(When::Expr(e)) => {
                let ctx = self.context(step, outputs, run, None)?;
                self.templates.eval_condition(e, &ctx).map_err(|err| {
                    at_its_line(self.step_error(
                        step,
                        "/when",
                        format!("cannot evaluate `when`: {err}"),
                    ))
                })
            }
        }
    }

    /// Renders a step's declared `outputs:`; the templates see the step's own outputs (`output`,
    /// `job_id`, …) as top-level names, and `outputs` are those of the steps finished so far (what
    /// `steps.X` and a sub-plan's run-time inputs read). Returns the own outputs with the declared
    /// ones added.
    pub fn render_outputs(
        &self,
        step: &PlannedStep,
        own: &Map<String, Value>,
        outputs: &StepOutputs,
        run: &RunInfo,
    ) -> Result<Map<String, Value>, Diagnostic> {
        let mut out = own.clone();
        // A `uses` step's outputs read its group's steps: rendered by `group_outputs`.
        if step.outputs.is_empty() || matches!(step.kind, StepKind::Uses(_)) {
            return Ok(out);
        }
        let ctx = self.context(step, outputs, run, Some(own))?;
        self.outputs_into(step, &ctx, &mut out)?;
        Ok(out)
    }

    /// Renders the step's `outputs:` in `ctx` into `out`.
    fn outputs_into(
        &self,
        step: &PlannedStep,
        ctx: &minijinja::Value,
        out: &mut Map<String, Value>,
    ) -> Result<(), Diagnostic> {
        for (name, v) in &step.outputs {
            let mut v = v.clone();
            let seg = super::source::escape_pointer_segment(name).into_owned();
            self.render_value(step, &mut v, format!("/outputs/{seg}"), ctx)?;
            out.insert(name.clone(), v);
        }
        Ok(())
    }
}

impl CheckedPlan {
    /// The outputs of a `uses` step, the end of a sub-plan's group: the sub-plan's `outputs:`
    /// rendered over the outputs of the group's steps ([`super::uses`]).
    pub fn group_outputs(
        &self,
        step: &PlannedStep,
        outputs: &StepOutputs,
        run: &RunInfo,
    ) -> Result<Map<String, Value>, Diagnostic> {
        let ctx = self.context(step, outputs, run, None)?;
        let mut out = Map::new();
        self.outputs_into(step, &ctx, &mut out)?;
        Ok(out)
    }
}

/// What `steps` is to a template: the outputs of each step its views name (an object, or a list
/// for the copies of a matrix step).
fn steps_value(
    views: &std::collections::BTreeMap<String, StepView>,
    outputs: &StepOutputs,
) -> Value {
    let mut steps = Map::new();
    for (name, view) in views {
        let v = match view {
            StepView::One(id) => match outputs.get(id) {
                Some(v) => v.clone(),
                None => continue,
            },
            StepView::List(ids) => Value::Array(
                ids.iter()
                    .map(|id| outputs.get(id).cloned().unwrap_or(Value::Null))
                    .collect(),
            ),
        };
        steps.insert(name.clone(), v);
    }
    Value::Object(steps)
}

/// A run-time error in a `with:` value, at its entry, its message redacted, escaped and cut.
fn with_error(plan: &CheckedPlan, message: String, at: &super::diag::Location) -> Diagnostic {
    let mut d = Diagnostic::new(crate::text::message(&plan.redact(&message)).into_owned());
    d.location = Some(at.clone());
    d
}

/// A template that fails at run time says where it is in the plan in its message too: the run shows a
/// step's failure as its message alone.
fn at_its_line(mut d: Diagnostic) -> Diagnostic {
    if let Some(loc) = &d.location {
        d.message = format!("{} (at {loc})", d.message);
    }
    d
}

/// A list step's `limit`: none, or a whole number of at least 1 (the same rule at load and at run).
pub(super) fn list_limit(v: Option<&Value>) -> Result<Option<u64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_f64(v)
            .filter(|f| *f >= 1.0 && f.fract() == 0.0 && *f <= u32::MAX as f64)
            .map(|f| Some(f as u64))
            .ok_or_else(|| {
                format!(
                    "`limit` must be a whole number ≥ 1, not {}",
                    crate::text::shown(&v.to_string())
                )
            }),
    }
}

impl CheckedPlan {
    /// A step whose spec holds no template left to render is rendered at load, as the run would
    /// render it: whatever the run would refuse, `validate` refuses.
    pub(crate) fn refused_at_run(&self, step: &PlannedStep) -> Option<Diagnostic> {
        if any_string(&step.spec(), &has_template) {
            return None;
        }
        self.render(step, &StepOutputs::new(), &self.placeholder_run())
            .err()
    }
}

/// Whether any string in a value satisfies `f` (without allocating).
fn any_string(v: &Value, f: &dyn Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().any(|x| any_string(x, f)),
        Value::Object(m) => m.values().any(|x| any_string(x, f)),
        _ => false,
    }
}

/// Every string in a value, with its pointer.
pub(super) fn collect_strings(v: &Value, rel: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((rel, s.clone())),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_strings(x, format!("{rel}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let seg = super::source::escape_pointer_segment(k).into_owned();
                collect_strings(x, format!("{rel}/{seg}"), out);
            }
        }
        _ => {}
    }
}

/// Renders the templates left in a value for a preview, leaving as written what does not render.
fn preview_value(plan: &CheckedPlan, v: &mut Value, ctx: &minijinja::Value) {
    match v {
        Value::String(s) if has_template(s) => {
            if let Ok(r) = plan.templates.render(s, ctx) {
                *v = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| preview_value(plan, x, ctx)),
        Value::Object(m) => m.values_mut().for_each(|x| preview_value(plan, x, ctx)),
        _ => {}
    }
}

/// A string field of a rendered spec ("" when absent).
fn text(spec: &Value, key: &str) -> String {
    spec.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A number from a rendered value (a number, or text holding one).
fn as_f64(v: &Value) -> Option<f64> {
    match serde_json::from_value::<Num>(v.clone()).ok()? {
        Num::Lit(f) => Some(f),
        Num::Expr(s) => s.trim().parse().ok(),
    }
}

/// An amount from a rendered value.
fn money(v: &Value) -> Result<Money, String> {
    match serde_json::from_value::<Amount>(v.clone()) {
        Ok(Amount::Lit(m)) => Ok(m),
        Ok(Amount::Expr(s)) => Money::from_str(&s),
        Err(_) => Err(format!("expected an amount, found {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::LoadOptions;
    use super::super::check::test_support::{FEEDBACK, load_text};
    use super::*;
    use crate::plan::checked::DEFAULT_TIMEOUT;

    #[test]
    fn renders_at_run_time() {
        let p = load_text(FEEDBACK, &[], &LoadOptions::default()).unwrap();
        let mut outputs = StepOutputs::new();
        let job = "0123456789abcdef0123456789abcdef";
        outputs.insert("analyze".into(), serde_json::json!({"job_id": job}));
        let run = RunInfo::default();
        match p.render(&p.steps[1], &outputs, &run).unwrap() {
            RenderedStep::Wait {
                job: j, timeout, ..
            } => {
                assert_eq!(j.as_str(), job);
                assert_eq!(timeout, DEFAULT_TIMEOUT);
            }
            other => panic!("{other:?}"),
        }
        outputs.insert("done".into(), serde_json::json!({"output": "great"}));
        match p.render(&p.steps[3], &outputs, &run).unwrap() {
            RenderedStep::Job { request, .. } => {
                assert_eq!(request.prompt, "Summarize (casual): great");
                assert_eq!(request.payment, Money::from_int(2));
            }
            other => panic!("{other:?}"),
        }
        // A bad job id from a step is a run-time error at the value.
        outputs.insert("analyze".into(), serde_json::json!({"job_id": "nope"}));
        let e = p.render(&p.steps[1], &outputs, &run).unwrap_err();
        assert!(e.message.contains("not a job id"), "{e}");
        assert_eq!(e.location.unwrap().line, 16);
    }
    #[test]
    fn when_conditions() {
        let yaml = r#"
version: 1
name: t
steps:
  - id: b
    balance: {wallet: w}
  - id: s
    when: "${{ steps.b.balance > 100 }}"
    list: {}
"#;
        let p = load_text(yaml, &[], &LoadOptions::default()).unwrap();
        let s = p.step("s").unwrap();
        assert_eq!(s.needs, vec!["b"]);
        let mut o = StepOutputs::new();
        o.insert("b".into(), serde_json::json!({"balance": 150}));
        assert!(p.should_run(s, &o, &RunInfo::default()).unwrap());
        o.insert("b".into(), serde_json::json!({"balance": 50}));
        assert!(!p.should_run(s, &o, &RunInfo::default()).unwrap());
    }
}
