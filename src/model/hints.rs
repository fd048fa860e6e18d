//! The follow-up advice about one job, worded once. The operations give it (what `op` and the `job`
//! commands print after a submit, a status read or an early fetch); those who know more take it back
//! where it no longer applies: a run's report, once the run itself waited for the job or fetched its
//! result, and the `job` commands on the embedded coordinator, whose jobs end with the command.
//! Taking back is by equality with these texts, so the wording lives here only.

use std::fmt::Display;

/// After a submit: how to follow the job.
pub fn monitor(job: &impl Display) -> String {
    format!("Monitor progress with `aitbc-flow job status {job}`")
}

/// After a submit: how to get the result later.
pub fn fetch_once_completed(job: &impl Display) -> String {
    format!("Fetch the result with `aitbc-flow job results {job}` once it completes")
}

/// After a status read of a completed job.
pub fn fetch(job: &impl Display) -> String {
    format!("Fetch the result with `aitbc-flow job results {job}`")
}

/// After a status read of a job still queued or running.
pub fn check_again(job: &impl Display) -> String {
    format!(
        "Check again shortly, or wait with `aitbc-flow job submit … --wait`; fetch the result with \
         `aitbc-flow job results {job}` once it completes"
    )
}

/// After a fetch that came too early.
pub fn fetch_again(job: &impl Display) -> String {
    format!("Fetch the result again once `aitbc-flow job status {job}` says completed")
}

/// After submitting a job paid 10 AITBC or more that is still queued.
pub const BONDED_QUEUED: &str = "A job paid 10 AITBC or more may wait in QUEUED until a bonded provider takes it: \
     choose one with --provider-id or lower the payment if it does not start";

/// In a run, after a job step whose job failed, when the step does not resubmit failed jobs.
pub const RETRY_ON_JOB_FAILED: &str =
    "To resubmit a failed job automatically, add `retry.on: [job_failed]` to the step";

/// The advice about following `job` until it ends: moot once it has ended.
pub fn until_final(job: &impl Display) -> [String; 2] {
    [monitor(job), check_again(job)]
}

/// The advice about fetching `job`'s result: moot once it was fetched, or once the job ended without
/// one.
pub fn to_fetch(job: &impl Display) -> [String; 3] {
    [fetch_once_completed(job), fetch(job), fetch_again(job)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hint_names_the_job_and_the_lists_differ() {
        let job = "ea05c15ab4f94d369c35d96c8fc39ac5";
        for h in until_final(&job).iter().chain(to_fetch(&job).iter()) {
            assert!(h.contains(job), "{h}");
        }
        assert!(
            until_final(&job)
                .iter()
                .all(|h| !to_fetch(&job).contains(h))
        );
    }
}
