//! Eighty jobs at once with the service's limits on (and the stand-in chain, so that no submit blocks
//! the service): no 429 at all, and no slower than the limits force.
//!
//! The bound (docs/real-coordinator.md): the service allows N requests of a kind in any 60 s, so k
//! requests of that kind take at least `60 s × floor((k − 1) / N)`. The run must make at least one
//! submit (N = 50) per job, and two reads per job (one that sees it finished, one for its result;
//! N = 200 if every read shared one window, as the client budgets them); and it cannot end before
//! its last job is done, which the miner (itself held to 50 results a minute) decides. So
//! `T_min = max(60 s × floor((S − 1) / 50), 60 s × floor((R − 1) / 200), last completion − start)`,
//! and the run must take at most `1.1 × T_min`. Its submits alone must fit in
//! `1.1 × 60 s × floor((S − 1) / 50)`: a client that spaces them evenly (one every 1.2 s) is too slow.

use std::time::{Duration, Instant};

use super::verify_run;
use crate::flow::{run_plan, suite_plan, workdir};
use crate::rc::Service;
use crate::suite::Check;

/// Jobs in the plan.
const JOBS: usize = 80;
/// The service's submit limit per 60 s.
const SUBMITS_PER_MIN: usize = 50;
/// The service's read limit per 60 s.
const READS_PER_MIN: usize = 200;

/// The least time `k` requests take under a sliding window of `per_min` a minute.
pub fn window_bound(k: usize, per_min: usize) -> f64 {
    60.0 * (k.saturating_sub(1) / per_min) as f64
}

/// The 80-job run. Returns when it ended (the service's windows are full until a minute later).
pub fn eighty_jobs(c: &mut Check, svc: &Service) -> Instant {
    let dir = workdir(svc, "pacing-80");
    let mark = svc.mark();
    let out = run_plan(svc, &dir, &suite_plan("paced-80.yaml"), &[])
        .limit(Duration::from_secs(15 * 60))
        .run();
    let ended = Instant::now();
    let Some(r) = verify_run(c, svc, &out, mark, 0) else {
        return ended;
    };
    let served = svc.requests_since(mark);
    let mut counts: Vec<_> = served
        .iter()
        .filter(|(k, _)| k.contains("/v1/jobs"))
        .collect();
    counts.sort();
    c.note(format!("requests the coordinator received: {counts:?}"));

    let Some(jobs) = c.ok(svc.jobs_with_ref(&format!("{}/", r.run_id()))) else {
        return ended;
    };
    c.expect(jobs.len() == JOBS, || {
        format!(
            "the coordinator holds {} jobs of the run, the plan has {JOBS}",
            jobs.len()
        )
    });
    let requested: Vec<f64> = jobs
        .iter()
        .filter_map(|j| epoch_naive(j["requested_at"].as_str()?))
        .collect();
    let started = r.0["started_at"].as_str().and_then(epoch_rfc3339);
    let completed: Vec<f64> = r
        .steps()
        .iter()
        .filter_map(|s| s["receipt"]["receipt"]["completed_at"].as_f64())
        .collect();
    let (Some(started), Some(first), Some(last)) = (
        started,
        requested.iter().cloned().reduce(f64::min),
        requested.iter().cloned().reduce(f64::max),
    ) else {
        c.fail("the run's start or its jobs' submit times are missing");
        return ended;
    };
    let wall = r.0["totals"]["wall_time_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let submit_bound = window_bound(JOBS, SUBMITS_PER_MIN);
    let read_bound = window_bound(2 * JOBS, READS_PER_MIN);
    // Receipts carry whole seconds: the last completion is known to within one.
    let done = completed.iter().cloned().reduce(f64::max).unwrap_or(0.0) + 1.0 - started;
    let t_min = submit_bound.max(read_bound).max(done);
    let span = last - first;
    c.note(format!(
        "{JOBS} jobs in {wall:.1}s; submits spanned {span:.1}s (limit bound {submit_bound:.0}s); last job \
         done {done:.1}s after the start; T_min {t_min:.1}s, allowed {:.1}s",
        1.1 * t_min
    ));
    c.expect(span <= 1.1 * submit_bound, || {
        format!(
            "the submits spanned {span:.1}s; the submit limit allows them in {submit_bound:.0}s (1.1 × = {:.1}s)",
            1.1 * submit_bound
        )
    });
    c.expect(wall <= 1.1 * t_min, || {
        format!(
            "the run took {wall:.1}s, more than 1.1 × T_min = {:.1}s",
            1.1 * t_min
        )
    });
    ended
}

/// `2026-12-01T18:08:51.225330` (UTC, no zone) → epoch seconds.
fn epoch_naive(s: &str) -> Option<f64> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Some(t.and_utc().timestamp_micros() as f64 / 1e6)
}

/// `2026-12-01T18:12:22.831Z` → epoch seconds.
fn epoch_rfc3339(s: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.timestamp_micros() as f64 / 1e6)
}
