//! `run --only ID… --from-run RUN-ID`: the steps the selected ones need take their outputs from an
//! earlier run instead of running (and paying) again.
//!
//! What the earlier run says is read from its journal (the same record `resume` keeps a step by: its
//! report entry and outputs, secrets as `***` and where they stood), and only for steps that
//! succeeded there. A step's outputs stand for this run's when the plan is the one that run ran
//! (same SHA-256), or, when the plan changed, when the step renders to the same request with the
//! earlier outputs of what it needs; otherwise the run is refused naming the step. Such a step is
//! reported as taken from that run (`cached_from`), and no payment is counted for it: no job is
//! submitted, and the preflight and the spend cap leave it out.

use std::collections::BTreeMap;
use std::path::Path;

use super::journal::{self, Kept};
use crate::plan::CheckedPlan;
use crate::plan::check::{RunInfo, StepOutputs};

/// The steps taken from an earlier run.
#[derive(Clone, Debug, Default)]
pub struct Taken {
    /// The earlier run.
    pub run_id: String,
    /// Each step taken, by (expanded) id, as that run journaled it.
    pub steps: BTreeMap<String, Kept>,
}

/// Takes from run `run_id` (under `runs_dir`) every step of `plan` that `only` does not name
/// itself: those the selected steps need. `Err` is the message (naming the step) of a step that
/// cannot be taken.
pub fn take(
    runs_dir: &Path,
    run_id: &str,
    plan: &CheckedPlan,
    only: &[String],
) -> Result<Taken, String> {
    if only.is_empty() {
        return Err(
            "--from-run takes the outputs of the steps that `--only` needs: give --only too".into(),
        );
    }
    let dir = crate::report::history::find_run(runs_dir, run_id).map_err(|e| e.to_string())?;
    let mut records = journal::read(&dir.join("journal.jsonl"))
        .map_err(|e| format!("cannot read run `{run_id}`: {e}"))?;
    let replay =
        journal::replay(&mut records).map_err(|e| format!("cannot read run `{run_id}`: {e}"))?;
    let same_plan = replay.plan_hash == plan.content_hash;
    let mut taken = Taken {
        run_id: run_id.to_string(),
        steps: BTreeMap::new(),
    };
    let mut outputs = StepOutputs::new();
    // Steps are in a topological order: what a step needs is taken before it.
    for step in &plan.steps {
        if only.iter().any(|o| *o == step.id || *o == step.base_id) {
            continue;
        }
        let Some(kept) = replay.done.get(&step.id) else {
            return Err(format!(
                "step `{}` did not succeed in run `{run_id}`, so its outputs cannot be taken from it; \
                 run it too (add it to --only)",
                step.id
            ));
        };
        let given = kept
            .outputs_with(&plan.secrets)
            .unwrap_or_else(|_| kept.outputs.map());
        if !same_plan {
            let now = plan
                .render(step, &outputs, &RunInfo::default())
                .ok()
                .and_then(|r| super::cache::request_record(plan, &r));
            if now.is_none() || now != kept.request() {
                return Err(format!(
                    "step `{}`: run `{run_id}` ran another version of {} (sha256 {} then) and the \
                     step's request is not the same now, so its outputs cannot stand for this run's; \
                     run it too (add it to --only)",
                    step.id,
                    plan.path.display(),
                    &replay.plan_hash[..replay.plan_hash.len().min(12)]
                ));
            }
        }
        outputs.insert(step.id.clone(), serde_json::Value::Object(given));
        taken.steps.insert(step.id.clone(), kept.clone());
    }
    Ok(taken)
}
