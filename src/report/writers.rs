//! The files of a run directory: `report.json` (rebuilt from the event stream), `summary.md`,
//! `junit.xml` and `events.jsonl`. Files are written atomically (temporary file, then rename), so a
//! run that stops at any moment leaves whole files behind.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::model::{Report, RunStatus, StepReport, StepState, Totals};
use super::text::{NotFinished, not_finished, output_preview, state_word, status_word};
use crate::api::JobState;
use crate::model::{Event, OpStatus, Operation, hints};
use crate::plan::CheckedPlan;

/// Builds the report from the event stream.
#[derive(Debug)]
pub struct ReportBuilder {
    report: Report,
    index: HashMap<String, usize>,
    started: std::time::Instant,
    /// Jobs of the run seen in a final state (by a wait's polls, a step's outcome or a cancel), and
    /// whether that state was COMPLETED.
    ended: HashMap<String, bool>,
    /// Jobs whose result a step of the run fetched.
    fetched: HashSet<String>,
}

impl ReportBuilder {
    /// A report with every step pending.
    pub fn new(plan: &CheckedPlan, run_id: &str, coordinator: &str, embedded: bool) -> Self {
        let steps: Vec<StepReport> = plan
            .steps
            .iter()
            .map(|s| StepReport {
                needs: s.needs.clone(),
                ..StepReport::blank(&s.id, s.kind.name())
            })
            .collect();
        let index = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        // Vars and inputs are one namespace on the command line (`--set`, `--vars`), so the report
        // records both, and `--vars-from` gives both back.
        let mut given = plan.vars.clone();
        given.extend(plan.inputs.clone());
        let vars = serde_json::from_str(&plan.redact(&Value::Object(given).to_string()))
            .unwrap_or(Value::Null);
        let mut totals = Totals::default();
        for s in &steps {
            tally(&mut totals, s.state, 1);
        }
        ReportBuilder {
            report: Report {
                report_version: 1,
                run_id: run_id.to_string(),
                plan: plan.plan.name.clone(),
                plan_path: plan.path.display().to_string(),
                plan_hash: plan.content_hash.clone(),
                runner_version: env!("CARGO_PKG_VERSION").to_string(),
                plan_git: super::provenance::of_plan(&plan.path),
                coordinator: coordinator.to_string(),
                embedded_coordinator: embedded,
                status: RunStatus::Running,
                exit_code: 0,
                started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                finished_at: None,
                issues: Vec::new(),
                vars,
                inputs: Default::default(),
                steps,
                totals,
            },
            index,
            started: std::time::Instant::now(),
            ended: HashMap::new(),
            fetched: HashSet::new(),
        }
    }

    /// Folds one event into the report.
    pub fn apply(&mut self, e: Event) {
        let r = &mut self.report;
        match e {
            Event::RunStarted {
                at,
                coordinator,
                embedded,
                ..
            } => {
                r.started_at = at;
                r.coordinator = coordinator;
                r.embedded_coordinator = embedded;
            }
            Event::RunIssue { message } => r.issues.push(message),
            Event::StepStarted { id, at } => {
                if let Some(&i) = self.index.get(&id) {
                    r.steps[i].started_at = Some(at);
                }
            }
            Event::AttemptFailed { .. } => {}
            Event::JobState { job_id, state, .. } => {
                if let Some(s) = JobState::parse(&state).filter(|s| s.is_final()) {
                    self.ended.insert(job_id, s == JobState::Completed);
                }
            }
            Event::JobSubmitted {
                wallet, payment, ..
            } => {
                r.totals.jobs += 1;
                *r.totals.spend_per_wallet.entry(wallet).or_default() += payment;
            }
            Event::JobCancelled {
                id,
                job_id,
                state,
                payment_status,
                refunded,
                wallet,
            } => {
                if let Some(m) = refunded {
                    *r.totals.refunded_per_wallet.entry(wallet).or_default() += m;
                }
                if let Some(s) = state
                    .as_deref()
                    .and_then(JobState::parse)
                    .filter(|s| s.is_final())
                {
                    self.ended.insert(job_id.clone(), s == JobState::Completed);
                }
                let payment = payment_status.as_deref().unwrap_or("unknown");
                let note = match state.as_deref() {
                    Some("CANCELED") => format!(
                        "job {job_id} was cancelled by the run (a wait's timeout, or the run stopping); payment status: {payment}"
                    ),
                    None => format!(
                        "job {job_id} could not be cancelled: the coordinator did not answer, so it may still run and hold its payment"
                    ),
                    Some(s @ ("QUEUED" | "RUNNING")) => format!(
                        "job {job_id} could not be cancelled: it is still {s}; payment status: {payment}"
                    ),
                    Some(s) => format!(
                        "job {job_id} had already ended {s} when the run cancelled it; payment status: {payment}"
                    ),
                };
                if let Some(&i) = self.index.get(&id) {
                    r.steps[i].outcome.issues.push(note);
                } else {
                    r.issues.push(note);
                }
            }
            Event::PaymentRefunded { wallet, amount, .. } => {
                *r.totals.refunded_per_wallet.entry(wallet).or_default() += amount;
            }
            Event::PaymentHeld {
                id,
                wallet,
                amount,
                note,
                ..
            } => {
                *r.totals.held_per_wallet.entry(wallet).or_default() += amount;
                if let Some(note) = note {
                    match self.index.get(&id) {
                        Some(&i) if !r.steps[i].outcome.issues.contains(&note) => {
                            r.steps[i].outcome.issues.push(note);
                        }
                        Some(_) => {}
                        None => r.issues.push(note),
                    }
                }
            }
            Event::StepFinished { report } => {
                if let Some(job) = &report.outcome.job_id {
                    let o = &report.outcome;
                    match o.status {
                        Some(OpStatus::Completed) => {
                            self.ended.insert(job.to_string(), true);
                        }
                        Some(OpStatus::Failed | OpStatus::Cancelled) => {
                            self.ended.insert(job.to_string(), false);
                        }
                        _ => {}
                    }
                    if o.result.is_some()
                        && matches!(o.operation, Operation::Results | Operation::Submit)
                    {
                        self.fetched.insert(job.to_string());
                    }
                }
                if let Some(&i) = self.index.get(&report.id) {
                    let mut rep = *report;
                    if rep.needs.is_empty() {
                        rep.needs = std::mem::take(&mut r.steps[i].needs);
                    }
                    // Notes added by earlier events (a cancel on the way out) are kept.
                    let earlier = std::mem::take(&mut r.steps[i].outcome.issues);
                    for note in earlier {
                        if !rep.outcome.issues.contains(&note) {
                            rep.outcome.issues.push(note);
                        }
                    }
                    let old = r.steps[i].state;
                    let new = rep.state;
                    r.steps[i] = rep;
                    tally(&mut r.totals, old, -1);
                    tally(&mut r.totals, new, 1);
                }
            }
            Event::RunFinished {
                status,
                exit_code,
                at,
                ..
            } => {
                r.status = status;
                r.exit_code = exit_code;
                r.finished_at = Some(at);
                self.close_steps();
                self.drop_moot_hints();
            }
        }
        self.report.totals.wall_time_ms = self.started.elapsed().as_millis() as u64;
    }

    /// A run over leaves no step pending: a step it never reached is "not run", with the reason the
    /// run gives (a refused run's steps were never started), so that its state and the totals agree.
    fn close_steps(&mut self) {
        let r = &mut self.report;
        let reason = match r.status {
            RunStatus::Refused => match r.issues.first() {
                Some(i) => format!("the run was refused before any submission: {i}"),
                None => "the run was refused before any submission".to_string(),
            },
            _ => "the run stopped before this step started".to_string(),
        };
        for st in r.steps.iter_mut().filter(|s| s.state == StepState::Pending) {
            let needs = std::mem::take(&mut st.needs);
            *st = StepReport {
                needs,
                ..StepReport::not_started(&st.id, &st.kind, &reason)
            };
        }
    }

    /// Takes back the advice about following up a job that the run itself followed up: "monitor" and
    /// "may wait for a bonded provider" once the job ended, "fetch the result" once a step fetched it
    /// or the job ended without one.
    fn drop_moot_hints(&mut self) {
        for st in &mut self.report.steps {
            let Some(job) = st.outcome.job_id.as_ref().map(|j| j.to_string()) else {
                continue;
            };
            let ended = self.ended.get(&job).copied();
            let no_fetch_left = self.fetched.contains(&job) || ended == Some(false);
            let until = hints::until_final(&job);
            let fetch = hints::to_fetch(&job);
            st.outcome.recommendations.retain(|h| {
                let moot_wait = ended.is_some() && (until.contains(h) || h == hints::BONDED_QUEUED);
                let moot_fetch = no_fetch_left && fetch.contains(h);
                !(moot_wait || moot_fetch)
            });
        }
    }

    /// Records what the command line gave the run (`--set`, `--vars`, `--vars-from`, `--no-cache`).
    pub fn set_inputs(&mut self, inputs: super::model::RunInputs) {
        self.report.inputs = inputs;
    }

    /// The report so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Takes the report.
    pub fn into_report(self) -> Report {
        self.report
    }
}

/// Adds `delta` to the count of steps in state `s`.
fn tally(t: &mut Totals, s: StepState, delta: i32) {
    let slot = match s {
        StepState::Succeeded => &mut t.succeeded,
        StepState::Failed => &mut t.failed,
        StepState::Skipped => &mut t.skipped,
        StepState::Cancelled | StepState::Pending => &mut t.cancelled,
    };
    *slot = slot.saturating_add_signed(delta);
}

/// Writes `contents` to `path` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp: PathBuf = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        path.with_file_name(name)
    };
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes `report.json` atomically, streaming it (a report of 10,000 steps is tens of megabytes).
pub fn write_report_json(dir: &Path, report: &Report) -> std::io::Result<()> {
    write_report_file(dir, report, true)
}

/// Writes `report.json` as the run goes: on one line (a third faster to write and smaller than the
/// indented file that the end of the run leaves).
pub fn write_report_json_so_far(dir: &Path, report: &Report) -> std::io::Result<()> {
    write_report_file(dir, report, false)
}

fn write_report_file(dir: &Path, report: &Report, pretty: bool) -> std::io::Result<()> {
    let path = dir.join("report.json");
    let tmp = dir.join("report.json.tmp");
    {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        if pretty {
            serde_json::to_writer_pretty(&mut w, report).map_err(std::io::Error::other)?;
        } else {
            serde_json::to_writer(&mut w, report).map_err(std::io::Error::other)?;
        }
        w.write_all(b"\n")?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_data()?;
    }
    crate::crash::point("report");
    std::fs::rename(&tmp, &path)
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// One line naming the plan's commit, as the summary and the terminal say it: `plans/x.yaml at
/// 0afd2c4 (main, with uncommitted changes)`.
pub fn provenance_line(r: &Report) -> Option<String> {
    let g = r.plan_git.as_ref()?;
    let commit = match &g.commit {
        Some(c) => format!("at {}", &c[..c.len().min(12)]),
        None => "(no commit yet)".to_string(),
    };
    let mut notes = Vec::new();
    if let Some(b) = &g.branch {
        notes.push(b.clone());
    }
    match g.dirty {
        Some(true) => notes.push("with uncommitted changes".into()),
        Some(false) => notes.push("clean".into()),
        None => notes.push("changes unknown".into()),
    }
    Some(format!("{} {commit} ({})", g.path, notes.join(", ")))
}

/// Renders `summary.md`.
pub fn summary_markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Run {} of `{}`\n", r.run_id, r.plan);
    let _ = writeln!(
        s,
        "- Status: **{}** (exit {})",
        status_word(r.status),
        r.exit_code
    );
    let _ = writeln!(
        s,
        "- Coordinator: {}{}",
        r.coordinator,
        if r.embedded_coordinator {
            " (embedded local coordinator)"
        } else {
            ""
        }
    );
    match provenance_line(r) {
        Some(p) => {
            let _ = writeln!(s, "- Plan: {}", md_cell(&p));
        }
        None => {
            let _ = writeln!(
                s,
                "- Plan: {} (not in a git work tree)",
                md_cell(&r.plan_path)
            );
        }
    }
    let _ = writeln!(s, "- aitbc-flow {}", r.runner_version);
    let _ = writeln!(s, "- Started: {}", r.started_at);
    if let Some(f) = &r.finished_at {
        let _ = writeln!(s, "- Finished: {f}");
    }
    let _ = writeln!(
        s,
        "- Steps: {} succeeded, {} failed, {} skipped, {} cancelled; {} jobs submitted",
        r.totals.succeeded, r.totals.failed, r.totals.skipped, r.totals.cancelled, r.totals.jobs
    );
    let _ = writeln!(
        s,
        "- Wall time: {:.3}s",
        r.totals.wall_time_ms as f64 / 1000.0
    );
    if !r.totals.spend_per_wallet.is_empty() {
        let _ = writeln!(s, "\n## Spend per wallet\n");
        let _ = writeln!(s, "| wallet | paid | refunded | still held |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for (w, m) in &r.totals.spend_per_wallet {
            let of = |t: &std::collections::BTreeMap<String, crate::money::Money>| {
                t.get(w).map_or("0".to_string(), |m| m.to_string())
            };
            let _ = writeln!(
                s,
                "| {} | {m} | {} | {} |",
                md_cell(w),
                of(&r.totals.refunded_per_wallet),
                of(&r.totals.held_per_wallet)
            );
        }
    }
    if !r.issues.is_empty() {
        let _ = writeln!(s, "\n## Issues\n");
        for i in &r.issues {
            let _ = writeln!(s, "- {}", md_cell(i));
        }
    }
    let _ = writeln!(s, "\n## Steps\n");
    let _ = writeln!(
        s,
        "| step | kind | state | job | payment | time | summary | output |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---|---|");
    for st in &r.steps {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.3}s | {} | {} |",
            md_cell(&st.id),
            st.kind,
            state_word(st.state),
            st.outcome.job_id.as_ref().map_or("", |j| j.as_str()),
            st.outcome
                .payment
                .map(|p| p.to_string())
                .unwrap_or_default(),
            st.outcome.execution_time,
            md_cell(&st.outcome.summary),
            output_preview(st, 80).map_or(String::new(), |p| md_cell(&p))
        );
    }
    let gated: Vec<&StepReport> = r.steps.iter().filter(|s| s.reason.is_some()).collect();
    if !gated.is_empty() {
        let _ = writeln!(s, "\n## Status steps\n");
        for st in gated {
            let _ = writeln!(
                s,
                "- {} (`{}`): {}",
                md_cell(&st.id),
                st.when.as_deref().unwrap_or(""),
                md_cell(st.reason.as_deref().unwrap_or(""))
            );
        }
    }
    let troubled: Vec<&StepReport> = r
        .steps
        .iter()
        .filter(|s| !s.outcome.issues.is_empty() || !s.outcome.recommendations.is_empty())
        .collect();
    if !troubled.is_empty() {
        let _ = writeln!(s, "\n## Step notes\n");
        for st in troubled {
            let _ = writeln!(s, "### {}\n", st.id);
            for i in &st.outcome.issues {
                let _ = writeln!(s, "- {}", md_cell(i));
            }
            for rec in &st.outcome.recommendations {
                let _ = writeln!(s, "- Recommendation: {}", md_cell(rec));
            }
            let _ = writeln!(s);
        }
    }
    s
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// What JUnit makes of a step.
enum Case {
    Passed,
    Skipped(String),
    Failure {
        message: String,
        kind: &'static str,
        text: String,
    },
    Error {
        message: String,
        text: String,
    },
}

fn junit_case(r: &Report, st: &StepReport) -> Case {
    let text = st.outcome.issues.join("\n");
    match (st.state, not_finished(r, st)) {
        (StepState::Succeeded, _) => Case::Passed,
        (StepState::Skipped, _) => Case::Skipped(st.outcome.summary.clone()),
        (_, Some(NotFinished::FailFast(why))) => Case::Skipped(why),
        (_, Some(NotFinished::Refused(why))) => Case::Failure {
            text: if text.is_empty() {
                r.issues.join("\n")
            } else {
                text
            },
            message: why,
            kind: "refused",
        },
        (_, Some(NotFinished::Stopped(why))) => Case::Error { message: why, text },
        _ => Case::Failure {
            message: st
                .outcome
                .issues
                .first()
                .cloned()
                .unwrap_or_else(|| st.outcome.summary.clone()),
            kind: "failed",
            text,
        },
    }
}

/// Renders `junit.xml`: one testcase per step. A failed step is a `failure`; a step cancelled because
/// another failed (fail-fast) is `skipped` with that reason; a step an interrupted run or an
/// unreachable coordinator stopped is an `error`; a refused run's steps fail with the refusal's reason.
pub fn junit_xml(r: &Report) -> String {
    let cases: Vec<Case> = r.steps.iter().map(|st| junit_case(r, st)).collect();
    let count = |f: fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count();
    let failures = count(|c| matches!(c, Case::Failure { .. }));
    let errors = count(|c| matches!(c, Case::Error { .. }));
    let skipped = count(|c| matches!(c, Case::Skipped(_)));
    let mut s = String::new();
    let time = r.totals.wall_time_ms as f64 / 1000.0;
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<testsuites name="aitbc-flow" tests="{}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{time:.3}">"#,
        r.steps.len(),
    );
    let _ = writeln!(
        s,
        r#"  <testsuite name="{}" tests="{}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{time:.3}" timestamp="{}">"#,
        xml_escape(&r.plan),
        r.steps.len(),
        xml_escape(&r.started_at)
    );
    for (st, case) in r.steps.iter().zip(&cases) {
        let _ = write!(
            s,
            r#"    <testcase name="{}" classname="{}.{}" time="{:.3}""#,
            xml_escape(&st.id),
            xml_escape(&r.plan),
            st.kind,
            st.outcome.execution_time
        );
        let body = match case {
            Case::Passed => {
                let _ = writeln!(s, "/>");
                continue;
            }
            Case::Skipped(why) => format!(r#"      <skipped message="{}"/>"#, xml_escape(why)),
            Case::Failure {
                message,
                kind,
                text,
            } => format!(
                r#"      <failure message="{}" type="{kind}">{}</failure>"#,
                xml_escape(message),
                xml_escape(text)
            ),
            Case::Error { message, text } => format!(
                r#"      <error message="{}" type="{}">{}</error>"#,
                xml_escape(message),
                r.status.as_str(),
                xml_escape(text)
            ),
        };
        let _ = writeln!(s, ">\n{body}\n    </testcase>");
    }
    let _ = writeln!(s, "  </testsuite>");
    let _ = writeln!(s, "</testsuites>");
    s
}

/// Writes `report.json`, `summary.md`, `junit.xml` and `report.html`.
pub fn write_all(dir: &Path, r: &Report) -> std::io::Result<()> {
    write_report_json(dir, r)?;
    write_atomic(&dir.join("summary.md"), summary_markdown(r).as_bytes())?;
    write_atomic(&dir.join("junit.xml"), junit_xml(r).as_bytes())?;
    write_atomic(&dir.join("report.html"), super::html::render(r).as_bytes())
}

/// Appends events to `events.jsonl`, one JSON object a line, flushed per event.
#[derive(Debug)]
pub struct EventLog {
    file: std::io::BufWriter<std::fs::File>,
}

impl EventLog {
    /// Opens (appends to) `events.jsonl` in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<EventLog> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("events.jsonl"))?;
        Ok(EventLog {
            file: std::io::BufWriter::new(f),
        })
    }

    /// Appends one event (secrets redacted by `redact`) to the buffer; [`EventLog::flush`] writes it.
    pub fn append(&mut self, e: &Event, redact: impl Fn(&str) -> String) -> std::io::Result<()> {
        let line = serde_json::to_string(e).map_err(std::io::Error::other)?;
        self.file.write_all(redact(&line).as_bytes())?;
        self.file.write_all(b"\n")
    }

    /// Writes what is buffered to the file (the run's loop does so whenever no event is waiting: one
    /// write for a burst of events, and nothing left in memory while the run waits).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
