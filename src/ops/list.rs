//! `list`: recent jobs, newest first, filtered by state (in the skill's words or the coordinator's)
//! and by job type.

use serde_json::{Value, json};

use super::{Conn, Done, OpError};
use crate::api::{JobList, JobState, JobView, ListQuery};
use crate::client::Coordinator;
use crate::model::{OpStatus, Operation, Outcome};

/// What to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// How many (the service's default is 20).
    pub limit: Option<u64>,
    /// A status: submitted, processing, completed, failed, cancelled, expired, or the coordinator's
    /// QUEUED, RUNNING, ….
    pub status: Option<String>,
    /// A job type.
    pub job_type: Option<String>,
}

/// Maps a status filter in the skill's words (or the coordinator's) to the coordinator's state.
pub fn state_filter(s: &str) -> Result<JobState, OpError> {
    let upper = s.trim().to_ascii_uppercase();
    let state = match upper.as_str() {
        "SUBMITTED" => Some(JobState::Queued),
        "PROCESSING" => Some(JobState::Running),
        // The service spells it with one L and silently ignores the other spelling.
        "CANCELLED" => Some(JobState::Canceled),
        other => JobState::parse(other),
    };
    state.ok_or_else(|| {
        OpError::Input(format!(
            "unknown status `{s}`: use submitted, processing, completed, failed, cancelled, expired \
             (or QUEUED, RUNNING, COMPLETED, FAILED, CANCELED, EXPIRED)"
        ))
    })
}

/// The query a request asks for, once its filters are checked.
pub fn query(req: &ListRequest) -> Result<ListQuery, OpError> {
    if let Some(t) = &req.job_type {
        crate::policy::check_job_type(t).map_err(|e| OpError::Rules(vec![e]))?;
    }
    let status = req
        .status
        .as_deref()
        .map(state_filter)
        .transpose()?
        .map(|s| s.as_str().to_string());
    Ok(ListQuery {
        limit: Some(req.limit.unwrap_or(20)),
        offset: None,
        status,
        job_type: req.job_type.clone(),
    })
}

/// Lists jobs.
pub async fn list<C: Coordinator>(
    conn: &Conn<'_, C>,
    req: &ListRequest,
) -> Result<Done<JobList>, OpError> {
    let q = query(req)?;
    let l = conn.call(|c| c.list(&q)).await?;
    let outcome = outcome(&l);
    Ok(Done { answer: l, outcome })
}

/// One line of a job list.
pub fn entry(v: &JobView) -> Value {
    json!({
        "job_id": v.job_id.as_str(),
        "job_type": v.job_type(),
        "status": OpStatus::of(v).as_str(),
        "state": v.state.as_str(),
        "payment_status": v.payment_status,
        "requested_at": v.requested_at,
    })
}

/// The outcome of a list.
pub fn outcome(l: &JobList) -> Outcome {
    let n = l.items.len();
    let mut out = Outcome::new(
        Operation::List,
        format!("{n} job{} listed", if n == 1 { "" } else { "s" }),
    );
    out.jobs = Some(l.items.iter().map(entry).collect());
    out
}
