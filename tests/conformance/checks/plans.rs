//! The example plans of `plans/`, and a run killed with SIGKILL then resumed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::verify_run;
use crate::flow::{Flow, Report, run_plan, suite_plan, workdir};
use crate::rc::Service;
use crate::suite::Check;

/// An example plan succeeds against the real service: exit 0, every receipt verified, and what
/// [`verify_run`] asks of every run.
pub fn example(c: &mut Check, svc: &Service, plan: &Path) {
    let name = plan.file_stem().unwrap_or_default().to_string_lossy();
    let dir = workdir(svc, &format!("plan-{name}"));
    let mark = svc.mark();
    let out = run_plan(svc, &dir, plan, &[])
        .limit(Duration::from_secs(300))
        .run();
    if let Some(r) = verify_run(c, svc, &out, mark, 0) {
        let jobs = r.jobs().len();
        c.note(format!(
            "{} steps, {jobs} jobs, {:.1}s",
            r.steps().len(),
            out.elapsed.as_secs_f64()
        ));
    }
}

/// `kill -9` of a run while its first jobs are in flight, then `resume`: the run succeeds, and the
/// coordinator holds exactly one job per submit of the plan (none submitted twice).
pub fn kill9_resume(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "resume-kill9");
    let plan = suite_plan("resume.yaml");
    let mut child = match run_plan(svc, &dir, &plan, &[]).spawn() {
        Ok(ch) => ch,
        Err(e) => return c.fail(e),
    };
    // The first `submitted` record is on disk (fsync'd) before the step goes on: kill then.
    let until = Instant::now() + Duration::from_secs(60);
    let mut journal = None;
    while Instant::now() < until {
        if let Some(j) = run_dir(&dir.join("runs")).map(|d| d.join("journal.jsonl"))
            && std::fs::read_to_string(&j).is_ok_and(|t| t.contains("{\"submitted\""))
        {
            journal = Some(j);
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            crate::flow::untrack(child.id());
            return c.fail(format!("the run ended ({st}) before any job was journaled"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    crate::flow::untrack(child.id());
    let Some(journal) = journal else {
        return c.fail("no job was journaled within 60 s");
    };
    let text = std::fs::read_to_string(&journal).unwrap_or_default();
    if text.contains("{\"end\"") {
        return c.fail("the run had already ended when it was killed: nothing to resume");
    }
    resume_and_count(c, svc, &dir, &journal, 3);
}

/// A run that stops between writing a submit's intent and sending it (the crash point `intent`,
/// the second time): `resume` re-attaches to the job journaled before, asks the coordinator's list
/// for the one whose intent has no job id, finds none, and submits it once.
pub fn crash_after_intent_resume(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "resume-intent");
    let plan = suite_plan("resume.yaml");
    let out = run_plan(svc, &dir, &plan, &[])
        .env("AITBC_FLOW_CRASH_AT", "intent:2")
        .run();
    if !c.expect(out.code == -1, || {
        format!(
            "the run was to kill itself at its second intent:\n{}",
            out.show()
        )
    }) {
        return;
    }
    let Some(journal) = run_dir(&dir.join("runs")).map(|d| d.join("journal.jsonl")) else {
        return c.fail("the run left no run directory");
    };
    resume_and_count(c, svc, &dir, &journal, 3);
}

fn resume_and_count(c: &mut Check, svc: &Service, dir: &Path, journal: &Path, expected: usize) {
    let run_id = journal
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mark = svc.mark();
    let out = Flow::new(
        svc,
        dir,
        [
            "resume",
            &run_id,
            "--runs-dir",
            "runs",
            "--output",
            "json",
            "-q",
        ],
    )
    .run();
    let report: Option<Report> = verify_run(c, svc, &out, mark, 0);
    if let Some(r) = &report {
        c.expect(r.0["status"] == "succeeded", || {
            format!("the resumed run ended {}", r.0["status"])
        });
    }
    let Some(jobs) = c.ok(svc.jobs_with_ref(&format!("{run_id}/"))) else {
        return;
    };
    let mut refs: HashMap<String, usize> = HashMap::new();
    for j in &jobs {
        *refs
            .entry(
                j["payload"]["client_ref"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
            .or_default() += 1;
    }
    c.expect(jobs.len() == expected, || {
        format!(
            "the coordinator holds {} jobs of run {run_id}, the plan submits {expected}: {refs:?}",
            jobs.len()
        )
    });
    c.expect(refs.values().all(|n| *n == 1), || {
        format!("a client reference was submitted twice: {refs:?}")
    });
}

/// The only run directory under `runs`.
fn run_dir(runs: &Path) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(runs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v.pop()
}
