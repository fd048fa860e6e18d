//! The plan tools: `validate_plan` and `plan` (the dry run, with the spend per wallet and what the spend
//! cap leaves), `run_plan` (the executor with every reporter, as `aitbc-flow run` runs it), and the run
//! history (`run_status`, `runs_list`).
//!
//! Plans are read from the server's plans folder only: a path outside it is refused before it is
//! opened, so an agent cannot have the server read — and quote back in a diagnostic — any other file.
//!
//! Under a spend cap, a plan runs only when its whole spend is known before it starts and fits: every
//! payment of it is reserved at once, and when the run ends the reservation is settled at what the run
//! paid less what was refunded. A plan whose payments are known only at run time, or that resubmits
//! failed jobs (`retry.on: [job_failed]`), cannot be bounded in advance and is refused under a cap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::answer::{Answer, redact};
use super::progress::Progress;
use super::server::State;
use super::tools::{PlanArgs, RunPlanArgs, RunStatusArgs, RunsListArgs};
use crate::client::Coordinator;
use crate::exec::RunOptions;
use crate::exec::session::{create_run_dir, new_run_id, run_with_reports_observed};
use crate::model::{Event, RunStatus};
use crate::money::Money;
use crate::plan::check::{CheckedPlan, LoadOptions};
use crate::plan::diag::Diagnostic;
use crate::plan::types::RetryOn;
use crate::policy::spend::Reservation;
use crate::report::{Report, history};

/// The plan file an argument names, if it is inside the plans folder.
pub fn resolve(plans_dir: &Path, path: &str) -> Result<PathBuf, String> {
    let given = Path::new(path);
    let joined = if given.is_absolute() {
        given.to_path_buf()
    } else {
        plans_dir.join(given)
    };
    let real = joined
        .canonicalize()
        .map_err(|e| format!("cannot read the plan `{path}`: {e}"))?;
    if !real.starts_with(plans_dir) {
        return Err(format!(
            "the plan `{path}` is outside the plans folder {}: the server reads plans there only \
             (start it with --plans-dir to serve another folder)",
            plans_dir.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("the plan `{path}` is not a file"));
    }
    Ok(real)
}

/// `--set` pairs from the `set` argument (text as given; numbers and booleans as written).
fn set_pairs(set: &BTreeMap<String, Value>) -> Vec<(String, String)> {
    set.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

fn load(
    state_dir: &Path,
    path: &str,
    set: &BTreeMap<String, Value>,
) -> Result<CheckedPlan, Answer> {
    let file = resolve(state_dir, path).map_err(Answer::refused)?;
    let options = LoadOptions {
        set: set_pairs(set),
        ..LoadOptions::default()
    };
    crate::plan::load(&file, &options).map_err(|ds| {
        Answer::error(json!({
            "summary": format!("the plan `{path}` is not valid: {} error{}", ds.len(), if ds.len() == 1 { "" } else { "s" }),
            "valid": false,
            "file": path,
            "errors": diagnostics(&ds),
            "validation_status": "failed",
        }))
    })
}

fn diagnostics(ds: &[Diagnostic]) -> Value {
    json!(
        ds.iter()
            .map(|d| json!({
                "message": d.message,
                "location": d.location.as_ref().map(|l| l.to_string()),
                "field": d.field,
                "suggestion": d.suggestion,
                "help": d.help,
            }))
            .collect::<Vec<_>>()
    )
}

/// The plan's secrets, to keep out of an answer on top of the plan's own redaction.
fn plan_secrets(plan: &CheckedPlan) -> Vec<String> {
    plan.secrets.values().cloned().collect()
}

/// `validate_plan`.
pub fn validate<C>(state: &State<C>, args: &PlanArgs) -> Answer {
    match load(&state.options.plans_dir, &args.path, &args.set) {
        Ok(plan) => {
            let mut v = json!({
                "summary": format!("the plan `{}` is valid: {} steps", plan.plan.name, plan.steps.len()),
                "valid": true,
                "plan": plan.plan.name,
                "file": args.path,
                "steps": plan.steps.len(),
                "errors": [],
                "warnings": diagnostics(&plan.warnings),
            });
            redact(&mut v, &plan_secrets(&plan));
            Answer::ok(v)
        }
        // An invalid plan is the answer to "is it valid?", not a failure of the tool; a plan that
        // cannot be read is.
        Err(mut a) => {
            a.is_error = a.value.get("valid") != Some(&Value::Bool(false));
            a
        }
    }
}

/// What keeps a plan's spend from being known before it runs, if anything.
fn unbounded(plan: &CheckedPlan, runtime: &[String]) -> Option<String> {
    if !runtime.is_empty() {
        return Some(format!(
            "the payments of steps {} are known only at run time",
            runtime.join(", ")
        ));
    }
    let resubmitting: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.kind.name(), "submit" | "job"))
        .filter(|s| s.retry.max_attempts > 1 && s.retry.on.contains(&RetryOn::JobFailed))
        .map(|s| s.id.as_str())
        .collect();
    (!resubmitting.is_empty()).then(|| {
        format!(
            "steps {} resubmit (and pay again for) failed jobs (retry.on: [job_failed])",
            resubmitting.join(", ")
        )
    })
}

/// `plan`: the dry run, and what the spend cap says of it.
pub fn dry_run<C>(state: &State<C>, args: &PlanArgs) -> Answer {
    let plan = match load(&state.options.plans_dir, &args.path, &args.set) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let mut v = crate::report::dry_run::dry_run_value(&plan);
    if state.cap.is_capped() {
        let (spend, runtime) = crate::plan::spend::spend_per_wallet(&plan);
        let verdict = match unbounded(&plan, &runtime) {
            Some(why) => {
                json!({"fits": false, "why": format!("the spend cap cannot bound this plan: {why}")})
            }
            None => match state.cap.check_all(&spend) {
                Ok(()) => json!({"fits": true}),
                Err(e) => json!({"fits": false, "why": e.to_string()}),
            },
        };
        if let Value::Object(m) = &mut v {
            m.insert(
                "spend_cap".into(),
                json!({"left": state.cap.left(), "plan": verdict}),
            );
        }
    }
    redact(&mut v, &plan_secrets(&plan));
    Answer::ok(v)
}

/// `run_plan`.
pub async fn run<C: Coordinator + 'static>(
    state: &Arc<State<C>>,
    args: &RunPlanArgs,
    progress: Progress,
    cancel: &CancellationToken,
) -> Answer {
    let plan = match load(&state.options.plans_dir, &args.path, &args.set) {
        Ok(p) => Arc::new(p),
        Err(a) => return a,
    };
    let reservations = match reserve(state, &plan) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let run_id = new_run_id();
    let run_dir = match create_run_dir(&state.options.runs_dir, &run_id) {
        Ok(d) => d,
        Err(e) => {
            release(state, reservations);
            return Answer::refused(format!(
                "cannot create the run directory under {}: {e}",
                state.options.runs_dir.display()
            ));
        }
    };
    let set = set_pairs(&args.set);
    let options = RunOptions {
        concurrency: args.concurrency.map(|c| c.max(1) as usize),
        fail_fast: !args.keep_going,
        poll: state.options.poll,
        embedded: state.options.embedded.is_some(),
        inputs: crate::report::repro::inputs(&plan, &set, &[], None, !args.no_cache),
        set,
        cache: !args.no_cache,
        ..RunOptions::new(run_id.clone(), run_dir.clone())
    };
    if args.wait.unwrap_or(true) {
        return execute(state, plan, options, reservations, progress, cancel.clone()).await;
    }
    // In the background: it stops when the server does; `run_status` follows it.
    progress.finish().await;
    state.runs_started(&run_id);
    let interrupt = state.shutdown.child_token();
    let st = state.clone();
    let id = run_id.clone();
    state.tasks.spawn(async move {
        let a = execute(
            &st,
            plan,
            options,
            reservations,
            Progress::none(),
            interrupt,
        )
        .await;
        tracing::info!("run {id} ended: {}", a.value["summary"]);
        st.runs_ended(&id);
    });
    Answer::ok(json!({
        "summary": format!("run {run_id} started: follow it with run_status"),
        "run_id": run_id,
        "run_dir": run_dir.display().to_string(),
        "status": RunStatus::Running,
    }))
}

/// Reserves the plan's whole spend under the cap (nothing when there is no cap).
fn reserve<C>(state: &State<C>, plan: &CheckedPlan) -> Result<Vec<Reservation>, Answer> {
    if !state.cap.is_capped() {
        return Ok(Vec::new());
    }
    let (spend, runtime) = crate::plan::spend::spend_per_wallet(plan);
    let refuse = |why: String, advice: &str| {
        Answer::error(json!({
            "summary": "Spend cap: the plan was not run",
            "issues": [why],
            "recommendations": [advice],
            "spend_cap": state.cap.left(),
            "validation_status": "failed",
        }))
    };
    if let Some(why) = unbounded(plan, &runtime) {
        return Err(refuse(
            format!("the spend cap cannot bound this plan: {why}"),
            "Give the payments and wallets as plain values, or run the plan with `aitbc-flow run` outside the server",
        ));
    }
    state.cap.reserve_all(&spend).map_err(|e| {
        refuse(
            e.to_string(),
            &e.advice()
                .unwrap_or_else(|| "Lower the plan's payments".into()),
        )
    })
}

fn release<C>(state: &State<C>, reservations: Vec<Reservation>) {
    for r in reservations {
        state.cap.release(r);
    }
}

/// Runs the plan with every reporter, reporting the share of steps finished, and settles its
/// reservations at what it paid less what was refunded.
async fn execute<C: Coordinator + 'static>(
    state: &State<C>,
    plan: Arc<CheckedPlan>,
    options: RunOptions,
    reservations: Vec<Reservation>,
    progress: Progress,
    interrupt: CancellationToken,
) -> Answer {
    let total = plan.steps.len().max(1);
    let mut finished = 0usize;
    let secrets = plan_secrets(&plan);
    let run_dir = options.run_dir.clone();
    progress.report(0.0, format!("run {} started", options.run_id));
    let ended = run_with_reports_observed(
        plan,
        state.coord.clone(),
        options,
        crate::report::terminal::Mode::Quiet,
        interrupt,
        |e| {
            if let Event::StepFinished { report } = e {
                finished += 1;
                progress.report(
                    (finished * 100 / total) as f64,
                    format!(
                        "step {} {} ({finished} of {total})",
                        report.id,
                        serde_json::to_value(report.state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    ),
                );
            }
        },
    )
    .await;
    progress.finish().await;
    let report = match ended {
        Ok(f) => f.report,
        Err(e) => {
            // The run happened, but its files could not all be written: read what is there.
            let partial = history::read_report(&run_dir);
            settle(state, reservations, partial.as_ref());
            return Answer::refused(format!(
                "cannot write the run's files in {}: {e}",
                run_dir.display()
            ));
        }
    };
    settle(state, reservations, Some(&report));
    let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
    redact(&mut v, &secrets);
    if report.status == RunStatus::Succeeded {
        Answer::ok(v)
    } else {
        Answer::error(v)
    }
}

/// Settles each wallet's reservation at the report's spend less its refunds; without a report, the
/// reservation stays whole (nothing says less was paid).
fn settle<C>(state: &State<C>, reservations: Vec<Reservation>, report: Option<&Report>) {
    for r in reservations {
        match report {
            Some(rep) => {
                let t = &rep.totals;
                let paid = t
                    .spend_per_wallet
                    .get(r.wallet())
                    .copied()
                    .unwrap_or_default();
                let back = t
                    .refunded_per_wallet
                    .get(r.wallet())
                    .copied()
                    .unwrap_or_default();
                state.cap.settle(r, (paid - back).max(Money::default()));
            }
            None => {
                let whole = r.amount();
                state.cap.settle(r, whole);
            }
        }
    }
}

/// `run_status`.
pub fn status<C>(state: &State<C>, args: &RunStatusArgs) -> Answer {
    let dir = match history::find_run(&state.options.runs_dir, &args.run_id) {
        Ok(d) => d,
        Err(e) => return Answer::refused(e.to_string()),
    };
    match history::read_report(&dir) {
        Some(r) => Answer::ok(r),
        None => Answer::refused(format!("run {} has no readable report yet", args.run_id)),
    }
}

/// `runs_list`.
pub fn list<C>(state: &State<C>, args: &RunsListArgs) -> Answer {
    let dir = &state.options.runs_dir;
    let runs = if dir.exists() {
        match history::list_runs(dir) {
            Ok(r) => r,
            Err(e) => return Answer::refused(e.to_string()),
        }
    } else {
        Vec::new()
    };
    let runs: Vec<_> = runs
        .into_iter()
        .filter(|r| args.plan.as_ref().is_none_or(|p| &r.plan == p))
        .filter(|r| args.status.is_none_or(|s| r.status == s))
        .take(args.limit.unwrap_or(20))
        .collect();
    Answer::ok(json!({
        "summary": format!("{} runs in {}", runs.len(), dir.display()),
        "runs": runs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plans_inside_the_plans_folder_are_opened() {
        let root = tempfile::tempdir().unwrap();
        let plans = root.path().join("plans");
        std::fs::create_dir_all(plans.join("team")).unwrap();
        std::fs::write(plans.join("team/a.yaml"), "x").unwrap();
        std::fs::write(root.path().join("token"), "secret").unwrap();
        let plans = plans.canonicalize().unwrap();
        assert_eq!(
            resolve(&plans, "team/a.yaml").unwrap(),
            plans.join("team/a.yaml")
        );
        let inside = plans.join("team/a.yaml").display().to_string();
        assert!(resolve(&plans, &inside).is_ok());
        for escape in ["../token", "team/../../token"] {
            let e = resolve(&plans, escape).unwrap_err();
            assert!(e.contains("is outside the plans folder"), "{escape}: {e}");
        }
        let abs = root.path().join("token").display().to_string();
        assert!(resolve(&plans, &abs).unwrap_err().contains("outside"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.path().join("token"), plans.join("link.yaml")).unwrap();
            let e = resolve(&plans, "link.yaml").unwrap_err();
            assert!(e.contains("is outside the plans folder"), "{e}");
        }
        assert!(
            resolve(&plans, "team")
                .unwrap_err()
                .contains("is not a file")
        );
        assert!(
            resolve(&plans, "nope.yaml")
                .unwrap_err()
                .starts_with("cannot read the plan `nope.yaml`")
        );
    }
}
