//! Progress notifications while a call waits: the skill's `progress` (0 submitted, 50 running, 100
//! done) for `submit` with `wait`, the share of steps finished for `run_plan`.
//!
//! The operations report through the synchronous [`Trace`]; a notification is async, so reports go
//! into a channel and one task per call sends them in order, each higher than the last (the protocol
//! asks progress to increase). [`Progress::finish`] waits until every report is sent, so that they all
//! arrive before the call's result.

use tokio::sync::mpsc;

use crate::api::{JobId, JobState};
use crate::model::outcome::progress_of;
use crate::ops::Trace;

/// One report: progress out of 100, and what happened.
pub type Report = (f64, String);

/// Where a call's progress goes (nowhere when the caller asked for none).
#[derive(Debug, Default)]
pub struct Progress {
    tx: Option<mpsc::UnboundedSender<Report>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// No notifications.
    pub fn none() -> Progress {
        Progress::default()
    }

    /// Reports go to `send`, one at a time, in order, only those higher than the last one sent.
    pub fn to<F, Fut>(mut send: F) -> Progress
    where
        F: FnMut(f64, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
        let task = tokio::spawn(async move {
            let mut last = f64::NEG_INFINITY;
            while let Some((p, message)) = rx.recv().await {
                if p > last {
                    last = p;
                    send(p, message).await;
                }
            }
        });
        Progress {
            tx: Some(tx),
            task: Some(task),
        }
    }

    /// Reports progress (0–100).
    pub fn report(&self, progress: f64, message: impl Into<String>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((progress.clamp(0.0, 100.0), message.into()));
        }
    }

    /// Waits until every report made so far has been sent.
    pub async fn finish(mut self) {
        self.tx = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Trace for Progress {
    /// A job seen in a new state: 0 queued, 50 running. A final state is not 100 yet: the result is
    /// still to be fetched and its receipt verified.
    fn job_state(&self, job: &JobId, state: JobState) {
        if !state.is_final() {
            self.report(
                f64::from(progress_of(state)),
                format!("job {job} is {state}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn reports_arrive_in_order_rising_and_before_finish_returns() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let p = Progress::to(move |v, m| {
            let s = s.clone();
            async move {
                tokio::task::yield_now().await;
                s.lock().unwrap().push((v, m));
            }
        });
        let job: JobId = "ea05c15ab4f94d369c35d96c8fc39ac5".parse().unwrap();
        p.report(0.0, "submitted");
        p.job_state(&job, JobState::Queued);
        p.job_state(&job, JobState::Running);
        p.job_state(&job, JobState::Completed);
        p.report(100.0, "done");
        p.finish().await;
        let seen = seen.lock().unwrap();
        let values: Vec<f64> = seen.iter().map(|(v, _)| *v).collect();
        assert_eq!(values, vec![0.0, 50.0, 100.0]);
        assert_eq!(seen[1].1, format!("job {job} is RUNNING"));
    }
}
