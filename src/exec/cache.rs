//! The result cache: a `job` step with `cache: true` reuses the result of an earlier completed job
//! whose rendered request was identical, instead of paying for it again.
//!
//! - **The fingerprint** ([`fingerprint`]) is the SHA-256 of the canonical JSON
//!   ([`crate::api::canonical_json`]) of `{job_type, model, prompt, parameters, constraints, endpoint,
//!   provider_id}`: what decides the job's result. The wallet, the payment and the ttl are left out on
//!   purpose: who pays and how much does not change what the model answers, so a run paid from another
//!   wallet (or at another price) still reuses the result. A job pinned to a provider includes it.
//! - **The index** is `<runs>/.cache/index.jsonl`, one [`IndexEntry`] per line, appended (and fsync'd)
//!   when a `cache: true` job step succeeds for real. A torn last line (a crash while appending) is
//!   skipped on read and closed off before the next append. The full result and receipt are saved
//!   beside the run, in `<runs>/<run-id>/cache/<fingerprint prefix>-<step hash>.json`.
//! - **A hit is verified before use**: the source run's `report.json` must still exist (a pruned run is
//!   a miss, not an error) and say the step succeeded with this job and a verified receipt; the saved
//!   result must not be a failed one, its receipt must be the report's, name the same job, carry the
//!   same result, and its Ed25519 signature must verify again ([`crate::api::verify_receipt`]).
//! - **Only `job` steps** are cached. A `submit` + `fetch` pair is not: a `fetch` of a cached `submit`
//!   would need a job that was never submitted in this run.
//!
//! Lookups happen before the balance preflight for every step whose request is known at load, so
//! the preflight does not count steps that will be served from the cache ([`add_cached_spend`]); a step
//! whose request depends on earlier outputs is looked up when it runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::journal::Replay;
use super::runner::Ctx;
use super::steps;
use crate::api::{canonical_json, result_failed, verify_receipt};
use crate::model::{CachedFrom, ReceiptCheck, StepReport, StepState};
use crate::money::Money;
use crate::plan::check::{JobRequest, RenderedStep, RunInfo, StepOutputs};
use crate::plan::{CheckedPlan, PlannedStep};
use crate::report::model::Report;

/// The index file, relative to the runs directory.
pub const INDEX_FILE: &str = ".cache/index.jsonl";

/// The fingerprint of a job request: SHA-256 (hex) of the canonical JSON of its job type, model,
/// prompt, parameters, constraints, endpoint and provider. Wallet, payment and ttl are left out.
pub fn fingerprint(req: &JobRequest) -> String {
    use sha2::{Digest, Sha256};
    let v = json!({
        "job_type": req.job_type,
        "model": req.model,
        "prompt": req.prompt,
        "parameters": req.parameters,
        "constraints": req.constraints,
        "endpoint": req.endpoint,
        "provider_id": req.provider_id,
    });
    hex::encode(Sha256::digest(canonical_json(&v).as_bytes()))
}

/// One line of the index: where the result of a request with this fingerprint is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The request's fingerprint.
    pub fingerprint: String,
    /// The run that paid for the job.
    pub run_id: String,
    /// Its step.
    pub step_id: String,
    /// The job.
    pub job_id: String,
    /// The saved result and receipt, relative to the runs directory.
    pub result: String,
    /// When the entry was written (RFC 3339).
    pub at: String,
}

/// A verified earlier result.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedResult {
    /// Where it came from.
    pub from: CachedFrom,
    /// The result as the provider posted it.
    pub result: Value,
    /// Its signed receipt (verified again when found).
    pub receipt: Value,
}

/// What a lookup found: a hit, and the entries that matched but could not be trusted.
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    /// The newest entry that passed every check.
    pub hit: Option<CachedResult>,
    /// Why other entries of this fingerprint were not used (integrity problems only; a pruned run is
    /// not a problem).
    pub rejected: Vec<String>,
}

/// Why an entry was not used.
enum Reject {
    /// The source run (or its saved result) is gone: an ordinary miss.
    Gone,
    /// The entry does not check out: worth telling the user.
    Untrusted(String),
}

/// The saved result file of a cached job.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    fingerprint: String,
    job_id: String,
    result: Value,
    receipt: Value,
}

/// What a source run's report says about its steps (read once per run per source).
struct SourceStep {
    state: StepState,
    job_id: Option<String>,
    receipt: Option<Value>,
    verified: bool,
}

/// A source run's steps by id.
type SourceRun = HashMap<String, SourceStep>;

/// The cache as one run sees it: the index read once, the source reports read once each, the hits
/// found before the run started, and a lock for appending.
pub struct ResultCache {
    enabled: bool,
    runs_dir: PathBuf,
    run_id: String,
    index: OnceLock<HashMap<String, Vec<IndexEntry>>>,
    sources: Mutex<HashMap<String, Option<Arc<SourceRun>>>>,
    hits: Mutex<HashMap<String, (String, Lookup)>>,
    append: Mutex<()>,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("enabled", &self.enabled)
            .field("runs_dir", &self.runs_dir)
            .finish_non_exhaustive()
    }
}

impl ResultCache {
    /// The cache of run `run_id` whose directory is `run_dir` (the runs directory is its parent).
    /// When `enabled` is false nothing is looked up; successful `cache: true` steps are still recorded.
    pub fn new(run_dir: &Path, run_id: &str, enabled: bool) -> ResultCache {
        let runs_dir = run_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        ResultCache {
            enabled,
            runs_dir,
            run_id: run_id.to_string(),
            index: OnceLock::new(),
            sources: Mutex::new(HashMap::new()),
            hits: Mutex::new(HashMap::new()),
            append: Mutex::new(()),
        }
    }

    /// True when lookups are on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Looks up every `cache: true` job step whose request is known before the run (it reads no
    /// other step's outputs) and keeps the hits; returns the ids of the steps that will be served
    /// from the cache, for the balance preflight.
    /// When resuming, steps the earlier start finished or submitted are left alone.
    pub fn prefetch(
        &self,
        plan: &CheckedPlan,
        run: &RunInfo,
        resume: Option<&Replay>,
    ) -> HashSet<String> {
        let mut ids = HashSet::new();
        if !self.enabled {
            return ids;
        }
        let none = StepOutputs::new();
        for step in plan
            .steps
            .iter()
            .filter(|s| s.cache && !started(resume, &s.id))
        {
            let Ok(RenderedStep::Job { request, .. }) = plan.render(step, &none, run) else {
                continue;
            };
            let fp = fingerprint(&request);
            let found = self.lookup(&fp);
            if found.hit.is_some() {
                ids.insert(step.id.clone());
            }
            self.hits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(step.id.clone(), (fp, found));
        }
        ids
    }

    /// The lookup for a step about to run with this request: the one made before the run when the
    /// request is the same, else a fresh one.
    pub fn for_step(&self, step: &PlannedStep, req: &JobRequest) -> Lookup {
        if !self.enabled || !step.cache {
            return Lookup::default();
        }
        let fp = fingerprint(req);
        let early = self
            .hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&step.id);
        match early {
            Some((f, found)) if f == fp => found,
            _ => self.lookup(&fp),
        }
    }

    /// The newest trustworthy earlier result for this fingerprint.
    pub fn lookup(&self, fp: &str) -> Lookup {
        let mut out = Lookup::default();
        let index = self.index.get_or_init(|| read_index(&self.runs_dir));
        let Some(entries) = index.get(fp) else {
            return out;
        };
        for e in entries.iter().rev() {
            if e.run_id == self.run_id {
                continue;
            }
            match self.verify(e) {
                Ok(hit) => {
                    out.hit = Some(hit);
                    break;
                }
                Err(Reject::Gone) => {}
                Err(Reject::Untrusted(why)) => out.rejected.push(format!(
                    "the cached result of run {} step {} (job {}) was not used: {why}",
                    e.run_id, e.step_id, e.job_id
                )),
            }
        }
        out
    }

    fn source(&self, run_id: &str) -> Option<Arc<SourceRun>> {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources
            .entry(run_id.to_string())
            .or_insert_with(|| {
                let report = crate::report::history::read_report(&self.runs_dir.join(run_id))?;
                Some(Arc::new(source_steps(report)))
            })
            .clone()
    }

    fn verify(&self, e: &IndexEntry) -> Result<CachedResult, Reject> {
        let untrusted = |s: &str| Reject::Untrusted(s.to_string());
        if !plain_name(&e.run_id) {
            return Err(untrusted("the index names an invalid run id"));
        }
        let rel = Path::new(&e.result);
        let inside = rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !inside || !rel.starts_with(&e.run_id) {
            return Err(untrusted(
                "the index points outside the run's own directory",
            ));
        }
        let steps = self.source(&e.run_id).ok_or(Reject::Gone)?;
        let step = steps
            .get(&e.step_id)
            .ok_or_else(|| untrusted("its run's report has no such step"))?;
        if step.state != StepState::Succeeded {
            return Err(untrusted("its run's report says the step did not succeed"));
        }
        if step.job_id.as_deref() != Some(e.job_id.as_str()) {
            return Err(untrusted("its run's report names another job"));
        }
        if !step.verified {
            return Err(untrusted("its receipt did not verify in its own run"));
        }
        let text = match std::fs::read_to_string(self.runs_dir.join(rel)) {
            Ok(t) => t,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(Reject::Gone),
            Err(err) => return Err(Reject::Untrusted(format!("cannot read it: {err}"))),
        };
        let saved: Saved = serde_json::from_str(&text)
            .map_err(|err| Reject::Untrusted(format!("the saved result is unreadable: {err}")))?;
        if saved.fingerprint != e.fingerprint || saved.job_id != e.job_id {
            return Err(untrusted("the saved result belongs to another request"));
        }
        if result_failed(Some(&saved.result)) {
            return Err(untrusted("the job's result is a failed one"));
        }
        if step.receipt.as_ref() != Some(&saved.receipt) {
            return Err(untrusted(
                "the saved receipt differs from the one in its run's report",
            ));
        }
        if let Err(err) = verify_receipt(&saved.receipt) {
            return Err(Reject::Untrusted(format!(
                "its receipt did not verify: {err}"
            )));
        }
        if let Some(j) = saved.receipt.get("job_id").and_then(Value::as_str)
            && j != e.job_id
        {
            return Err(untrusted("its receipt is for another job"));
        }
        if let Some(r) = saved.receipt.pointer("/metadata/result")
            && r.is_object()
            && *r != saved.result
        {
            return Err(untrusted(
                "the saved result differs from the one its receipt signs",
            ));
        }
        Ok(CachedResult {
            from: CachedFrom {
                run_id: e.run_id.clone(),
                step_id: e.step_id.clone(),
                job_id: e.job_id.clone(),
            },
            result: saved.result,
            receipt: saved.receipt,
        })
    }

    /// Records a job step that succeeded for real: saves its result and receipt beside its run and
    /// appends an index line. Only `cache: true` steps with a verified receipt are recorded.
    pub fn remember(
        &self,
        step: &PlannedStep,
        req: &JobRequest,
        outputs: &Map<String, Value>,
    ) -> std::io::Result<()> {
        if !step.cache || outputs.get("receipt_verified") != Some(&Value::Bool(true)) {
            return Ok(());
        }
        let (Some(job_id), Some(result), Some(receipt)) = (
            outputs.get("job_id").and_then(Value::as_str),
            outputs.get("result"),
            outputs.get("receipt"),
        ) else {
            return Ok(());
        };
        if !plain_name(&self.run_id) {
            return Ok(());
        }
        let fp = fingerprint(req);
        // One file per step: two steps of a run may send the same request.
        let step_hash = {
            use sha2::{Digest, Sha256};
            hex::encode(&Sha256::digest(step.id.as_bytes())[..8])
        };
        let rel = format!("{}/cache/{}-{step_hash}.json", self.run_id, &fp[..16]);
        let saved = Saved {
            fingerprint: fp.clone(),
            job_id: job_id.to_string(),
            result: result.clone(),
            receipt: receipt.clone(),
        };
        let path = self.runs_dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let body = serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other)?;
        crate::report::writers::write_atomic(&path, &body)?;
        let entry = IndexEntry {
            fingerprint: fp,
            run_id: self.run_id.clone(),
            step_id: step.id.clone(),
            job_id: job_id.to_string(),
            result: rel,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let _guard = self.append.lock().unwrap_or_else(|p| p.into_inner());
        append_entry(&self.runs_dir.join(INDEX_FILE), &entry)
    }
}

/// For a `cache: true` job step: when an earlier result of the same request checks out, fills the
/// step's report (nothing paid, `cached_from` set) and returns the outputs a `job` step has; `None`
/// to run the job. An error only when the cached result cannot be saved where the step's `save:` says.
pub(crate) fn reuse<C>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    req: &JobRequest,
    save: Option<&str>,
    report: &mut StepReport,
) -> Result<Option<Map<String, Value>>, String> {
    // Resuming a step whose job was submitted before: re-attach to it (it is paid), never skip it.
    if started(ctx.resume.as_deref(), &step.id) {
        return Ok(None);
    }
    let found = ctx.cache.for_step(step, req);
    // Entries that did not check out are worth knowing about even when the job then runs.
    report.outcome.issues.extend(found.rejected);
    let Some(hit) = found.hit else {
        return Ok(None);
    };
    let CachedResult {
        from,
        result,
        receipt,
    } = hit;
    let output = crate::ops::results::output_of(&result);
    let raw = serde_json::value::to_raw_value(&receipt)
        .map_err(|e| format!("cannot keep the cached receipt: {e}"))?;
    let o = &mut report.outcome;
    o.job_id = from.job_id.parse().ok();
    o.job_type = crate::model::JobType::parse(&req.job_type);
    o.status = Some(crate::model::OpStatus::Completed);
    o.progress = Some(100);
    o.estimated_time = Some(0.0);
    o.wallet = Some(req.wallet.clone());
    o.payment = Some(Money::ZERO);
    o.result = Some(output.clone());
    let metrics = crate::ops::results::metrics_of(&result);
    o.performance_metrics = (!metrics.is_empty()).then(|| crate::model::JsonText::of(&metrics));
    report.receipt = Some(ReceiptCheck {
        receipt: raw,
        verified: true,
        error: None,
    });
    report.outcome.summary = format!(
        "Cached result from run {} step {} (job {}); nothing paid",
        from.run_id, from.step_id, from.job_id
    );
    let mut out = Map::new();
    out.insert("job_id".into(), json!(from.job_id));
    out.insert("state".into(), json!(crate::api::JobState::Completed));
    out.insert("status".into(), json!("completed"));
    out.insert("wallet".into(), json!(req.wallet));
    out.insert("payment".into(), json!(Money::ZERO));
    out.insert("job_type".into(), json!(req.job_type));
    out.insert("output".into(), output);
    out.insert("receipt_verified".into(), json!(true));
    if let Some(save) = save {
        let path = steps::save_path(&ctx.run_dir, ctx.plan.dir(), save)?;
        steps::save_result(&ctx.plan, &path, &result, Some(&receipt), report)?;
        out.insert("saved".into(), json!(path.display().to_string()));
    }
    out.insert("result".into(), result);
    out.insert("receipt".into(), receipt);
    report.cached_from = Some(from);
    Ok(Some(out))
}

/// After a job step succeeded for real: records its result in the cache (a failure to record is a
/// note on the step, never a failure of it).
pub(crate) fn remember<C>(
    ctx: &Ctx<C>,
    step: &PlannedStep,
    req: &JobRequest,
    outputs: &Map<String, Value>,
    report: &mut StepReport,
) {
    if let Err(e) = ctx.cache.remember(step, req, outputs) {
        report.outcome.issues.push(format!(
            "the result could not be recorded in the cache: {e}"
        ));
    }
}

/// True when a resumed run's earlier start finished this step or submitted its job.
fn started(resume: Option<&Replay>, step: &str) -> bool {
    resume.is_some_and(|r| r.done.contains_key(step) || r.submissions.contains_key(step))
}

/// A run id or file name with no path in it.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '\\']) && s != "." && s != ".."
}

fn source_steps(report: Report) -> SourceRun {
    report
        .steps
        .into_iter()
        .map(|s| {
            let receipt = s
                .receipt
                .as_ref()
                .and_then(|r| serde_json::from_str(r.receipt.get()).ok());
            let verified = s.receipt.as_ref().is_some_and(|r| r.verified);
            (
                s.id,
                SourceStep {
                    state: s.state,
                    job_id: s.outcome.job_id.map(String::from),
                    receipt,
                    verified,
                },
            )
        })
        .collect()
}

/// Reads the index: entries by fingerprint, oldest first. Unreadable lines (a torn last line) are
/// skipped; a missing index is empty.
pub fn read_index(runs_dir: &Path) -> HashMap<String, Vec<IndexEntry>> {
    let mut out: HashMap<String, Vec<IndexEntry>> = HashMap::new();
    let Ok(text) = std::fs::read(runs_dir.join(INDEX_FILE)) else {
        return out;
    };
    for line in text.split(|&b| b == b'\n') {
        if let Ok(e) = serde_json::from_slice::<IndexEntry>(line) {
            out.entry(e.fingerprint.clone()).or_default().push(e);
        }
    }
    out
}

/// Appends one line to the index and fsyncs it. When the file ends in a torn line (no newline), a
/// newline is written first so that the new entry stands on its own line.
pub fn append_entry(path: &Path, entry: &IndexEntry) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let mut line = Vec::with_capacity(256);
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push(b'\n');
        }
    }
    serde_json::to_writer(&mut line, entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // One write of the whole line: appends of concurrent runs do not interleave.
    f.write_all(&line)?;
    f.sync_data()
}

/// Drops the index entries whose run is gone (after `runs prune`), rewriting the index atomically.
/// Returns how many were dropped. An entry appended by a run while this rewrites may be lost; that
/// costs a later miss, never a wrong hit.
pub fn compact(runs_dir: &Path) -> std::io::Result<usize> {
    let path = runs_dir.join(INDEX_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut kept = Vec::with_capacity(text.len());
    let mut dropped = 0;
    let mut alive: HashMap<String, bool> = HashMap::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let keep = match serde_json::from_slice::<IndexEntry>(line) {
            Ok(e) => *alive.entry(e.run_id.clone()).or_insert_with(|| {
                plain_name(&e.run_id) && runs_dir.join(&e.run_id).join("report.json").is_file()
            }),
            Err(_) => false,
        };
        if keep {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        crate::report::writers::write_atomic(&path, &kept)?;
    }
    Ok(dropped)
}

/// Adds to `paid` (what the balance preflight need not cover, per wallet) the payments of the steps in
/// `cached`, which are served from the cache: their payment where it is known at load, as
/// [`crate::plan::spend::spend_per_wallet`] counts it.
pub fn add_cached_spend(
    paid: &mut BTreeMap<String, Money>,
    plan: &CheckedPlan,
    cached: &HashSet<String>,
) {
    for step in plan.steps.iter().filter(|s| cached.contains(&s.id)) {
        let spec = step.spec();
        let wallet = spec.get("wallet").and_then(Value::as_str);
        let payment = spec.get("payment").and_then(|p| match p {
            Value::Number(n) => n.to_string().parse::<Money>().ok(),
            Value::String(s) => s.parse::<Money>().ok(),
            _ => None,
        });
        if let (Some(w), Some(p)) = (wallet, payment) {
            *paid.entry(w.to_string()).or_default() += p;
        }
    }
}

/// The report entry's `request`: the rendered request as it is sent (secrets redacted). `None` for
/// steps that send no request body of their own.
pub fn request_record(plan: &CheckedPlan, rendered: &RenderedStep) -> Option<Value> {
    let mut v = match rendered {
        RenderedStep::Submit(req) | RenderedStep::Job { request: req, .. } => {
            let mut m = Map::new();
            m.insert("job_type".into(), json!(req.job_type));
            if let Some(x) = &req.model {
                m.insert("model".into(), json!(x));
            }
            m.insert("prompt".into(), json!(req.prompt));
            if !req.parameters.is_empty() {
                m.insert("parameters".into(), Value::Object(req.parameters.clone()));
            }
            if !req.constraints.is_empty() {
                m.insert("constraints".into(), Value::Object(req.constraints.clone()));
            }
            if let Some(x) = &req.endpoint {
                m.insert("endpoint".into(), json!(x));
            }
            if let Some(x) = &req.provider_id {
                m.insert("provider_id".into(), json!(x));
            }
            m.insert("wallet".into(), json!(req.wallet));
            m.insert("payment".into(), json!(req.payment));
            if let Some(t) = req.ttl {
                m.insert("ttl_seconds".into(), json!(t.as_secs()));
            }
            m.insert("fingerprint".into(), json!(fingerprint(req)));
            Value::Object(m)
        }
        RenderedStep::Optimize(o) => json!({
            "agent_id": o.agent_id, "cpu": o.cpu, "memory_gb": o.memory_gb, "gpu": o.gpu,
            "duration_seconds": o.duration.map(|d| d.as_secs()), "task_type": o.task_type,
            "target": o.target, "wallet": o.wallet,
        }),
        RenderedStep::Wait { job, timeout, .. } => {
            json!({"job": job, "timeout_seconds": timeout.as_secs_f64()})
        }
        RenderedStep::Fetch { job, save, .. } => json!({"job": job, "save": save}),
        RenderedStep::Status { job } | RenderedStep::Cancel { job } => json!({"job": job}),
        RenderedStep::List {
            limit,
            status,
            job_type,
        } => json!({"limit": limit, "status": status, "job_type": job_type}),
        RenderedStep::Balance { wallet, min } => json!({"wallet": wallet, "min": min}),
        // Header values are credentials: only their names are recorded.
        RenderedStep::Notify { url, headers, body } => json!({
            "url": url,
            "headers": headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            "body": body,
        }),
        // The end of a sub-plan's group sends nothing: the record names the sub-plan.
        RenderedStep::Uses { path } => json!({"uses": path}),
    };
    let sent = v.clone();
    plan.redact_value(&mut v);
    // A hash of a request that holds a secret is a hash of the secret: leave it out.
    if v != sent
        && let Value::Object(m) = &mut v
    {
        m.remove("fingerprint");
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: &str) -> JobRequest {
        JobRequest {
            job_type: "inference".into(),
            wallet: "w".into(),
            payment: Money::from_int(2),
            prompt: prompt.into(),
            model: Some("llama2".into()),
            provider_id: None,
            endpoint: None,
            parameters: Map::new(),
            constraints: Map::new(),
            ttl: None,
        }
    }

    #[test]
    fn the_fingerprint_leaves_out_wallet_payment_and_ttl() {
        let a = req("hello");
        let mut b = req("hello");
        b.wallet = "other".into();
        b.payment = Money::from_int(9);
        b.ttl = Some(std::time::Duration::from_secs(60));
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&req("hello!")));
        let mut c = req("hello");
        c.parameters.insert("temperature".into(), json!(0.2));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        let mut d = req("hello");
        d.provider_id = Some("miner-1".into());
        assert_ne!(fingerprint(&a), fingerprint(&d));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    fn entry(fp: &str, run: &str) -> IndexEntry {
        IndexEntry {
            fingerprint: fp.into(),
            run_id: run.into(),
            step_id: "s".into(),
            job_id: "j".into(),
            result: format!("{run}/cache/{fp}.json"),
            at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_closed_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE);
        append_entry(&path, &entry("a", "r1")).unwrap();
        // A crash in the middle of the second append.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"fingerprint":"b","run_"#).unwrap();
        drop(f);
        let idx = read_index(dir.path());
        assert_eq!(idx.len(), 1);
        assert_eq!(idx["a"], vec![entry("a", "r1")]);
        append_entry(&path, &entry("c", "r2")).unwrap();
        append_entry(&path, &entry("a", "r3")).unwrap();
        let idx = read_index(dir.path());
        assert_eq!(idx["c"], vec![entry("c", "r2")]);
        assert_eq!(idx["a"], vec![entry("a", "r1"), entry("a", "r3")]);
        assert!(!idx.contains_key("b"));
    }

    #[test]
    #[ignore = "timing: cargo test --release --lib long_history -- --ignored --nocapture"]
    fn long_history_lookup_time() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let n = 100_000;
        let mut text = String::new();
        for i in 0..n {
            let e = entry(&format!("{:064x}", i), &format!("run-{}", i / 10));
            text.push_str(&serde_json::to_string(&e).unwrap());
            text.push('\n');
        }
        std::fs::create_dir_all(runs.join(".cache")).unwrap();
        std::fs::write(runs.join(INDEX_FILE), &text).unwrap();
        let t = std::time::Instant::now();
        let cache = ResultCache::new(&runs.join("now"), "now", true);
        let l = cache.lookup(&format!("{:064x}", n / 2));
        let first = t.elapsed();
        let t = std::time::Instant::now();
        for i in 0..1000 {
            cache.lookup(&format!("{:064x}", i * 7));
        }
        println!(
            "{n} entries ({} MB): first lookup (reads the index) {first:?}, then {:?} per lookup",
            text.len() / 1_000_000,
            t.elapsed() / 1000
        );
        assert!(l.hit.is_none());
    }

    #[test]
    fn compacting_drops_the_entries_of_removed_runs() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path();
        assert_eq!(compact(runs).unwrap(), 0);
        std::fs::create_dir_all(runs.join("r1")).unwrap();
        std::fs::write(runs.join("r1/report.json"), "{}").unwrap();
        let path = runs.join(INDEX_FILE);
        append_entry(&path, &entry("a", "r1")).unwrap();
        append_entry(&path, &entry("b", "gone")).unwrap();
        append_entry(&path, &entry("c", "r1")).unwrap();
        assert_eq!(compact(runs).unwrap(), 1);
        let idx = read_index(runs);
        assert_eq!(idx.len(), 2);
        assert!(idx.contains_key("a") && idx.contains_key("c"));
        assert_eq!(compact(runs).unwrap(), 0);
    }

    #[test]
    fn a_missing_index_or_run_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let cache = ResultCache::new(&runs.join("now"), "now", true);
        assert!(cache.lookup("a").hit.is_none());
        append_entry(&runs.join(INDEX_FILE), &entry("a", "gone")).unwrap();
        let cache = ResultCache::new(&runs.join("now"), "now", true);
        let l = cache.lookup("a");
        assert!(l.hit.is_none());
        assert!(l.rejected.is_empty(), "{:?}", l.rejected);
        // An entry that points outside its run is not followed.
        let mut bad = entry("b", "r1");
        bad.result = "../../etc/passwd".into();
        append_entry(&runs.join(INDEX_FILE), &bad).unwrap();
        let cache = ResultCache::new(&runs.join("now"), "now", true);
        assert_eq!(cache.lookup("b").rejected.len(), 1);
    }
}
