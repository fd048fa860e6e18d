//! `submit`: check a job against the client rules, check that the wallet can pay, send it once, and
//! find it again by its client reference when the answer was lost.
//!
//! The steps are separate functions so that the executor can put its journal's intent record between
//! the balance check and the send, under its per-wallet lock; [`submit`] runs them in order for a
//! single command.

use serde_json::json;

use super::payer::{BalanceCheck, Payer};
use super::status::view_issues;
use super::{Conn, Done, OpError};
use crate::api::{CURRENCY, JobCreate, JobId, JobState, JobView, ListQuery, WalletBalance};
use crate::client::{ClientError, Coordinator};
use crate::model::{JobRequest, JobType, Operation, Outcome, hints};
use crate::money::Money;
use crate::policy::{Policy, check_balance, check_job};

/// A job the coordinator accepted.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// The job as accepted.
    pub view: JobView,
    /// False when the job was already there: found by its idempotency key or its client reference.
    pub created: bool,
    /// Set when a lost answer was made good by finding the job by its client reference.
    pub found_by_ref: bool,
    /// Who pays: what was sent as `buyer_address`.
    pub payer: Payer,
}

/// Checks a request against the rules and builds its body, with `client_ref` in the payload.
pub fn prepare(req: &JobRequest, policy: &Policy, client_ref: &str) -> Result<JobCreate, OpError> {
    let broken = check_job(req, policy);
    if !broken.is_empty() {
        return Err(OpError::Rules(broken));
    }
    Ok(body(req, client_ref))
}

/// The request body: `payload.type`/`prompt`/`model`/`endpoint`, the extra parameters (which cannot
/// override those), `client_ref`, `payment_currency: AITBC`, and the wallet as `buyer_address` until
/// [`pay_from`] puts the payer's address there.
pub fn body(req: &JobRequest, client_ref: &str) -> JobCreate {
    let mut payload = serde_json::Map::new();
    payload.insert("type".into(), json!(req.job_type));
    payload.insert("prompt".into(), json!(req.prompt));
    if let Some(m) = &req.model {
        payload.insert("model".into(), json!(m));
    }
    if let Some(e) = &req.endpoint {
        payload.insert("endpoint".into(), json!(e));
    }
    for (k, v) in &req.parameters {
        payload.entry(k.clone()).or_insert_with(|| v.clone());
    }
    payload.insert("client_ref".into(), json!(client_ref));
    JobCreate {
        payload,
        constraints: (!req.constraints.is_empty()).then(|| req.constraints.clone()),
        ttl_seconds: req.ttl.map(|d| d.as_secs().max(1)),
        payment_amount: Some(req.payment),
        payment_currency: Some(CURRENCY.into()),
        buyer_address: Some(req.wallet.clone()),
        provider_address: req.provider_id.clone(),
    }
}

/// Sets the body's `buyer_address` to the payer's address.
pub fn pay_from(body: &mut JobCreate, payer: &Payer) {
    body.buyer_address = Some(payer.buyer_address.clone());
}

/// What the check before a submit found: who pays, and the balance when it was read.
#[derive(Clone, Debug)]
pub struct Funds {
    /// Who pays.
    pub payer: Payer,
    /// The balance read (`None` with the check off).
    pub balance: Option<WalletBalance>,
}

/// Refuses a payment the wallet cannot make — a balance that cannot be read refuses it too — and finds
/// the payer's address in the balance answer. With the check off nothing is read: the wallet is the
/// payer as given.
pub async fn check_funds<C: Coordinator>(
    conn: &Conn<'_, C>,
    wallet: &str,
    needed: Money,
    check: BalanceCheck,
) -> Result<Funds, OpError> {
    if check == BalanceCheck::Off {
        return Ok(Funds {
            payer: Payer::unchecked(wallet),
            balance: None,
        });
    }
    let b = super::balance::read(conn, wallet).await?;
    let payer = Payer::from_balance(wallet, &b)?;
    check_balance(wallet, b.balance, needed).map_err(|e| OpError::Rules(vec![e]))?;
    Ok(Funds {
        payer,
        balance: Some(b),
    })
}

/// Sends a submit with the connection's retry policy. When an answer is lost (a timeout, a dropped
/// connection, a 5xx: the service may have committed the job), the job is looked up by its client
/// reference before anything is sent again — the real service has no idempotency key.
pub async fn send<C: Coordinator>(
    conn: &Conn<'_, C>,
    body: &JobCreate,
    key: &str,
    client_ref: &str,
    payer: &Payer,
) -> Result<Submitted, OpError> {
    let mut n = 1;
    loop {
        let started_at = super::conn::now();
        let t = std::time::Instant::now();
        let err = match conn.coord.submit(body, Some(key)).await.and_then(|answer| {
            same_ref(conn, &answer.0, client_ref)?;
            Ok(answer)
        }) {
            Ok((view, created)) => {
                conn.trace.attempt(crate::model::Attempt {
                    number: n,
                    started_at,
                    duration_ms: t.elapsed().as_millis() as u64,
                    error: None,
                    delay_ms: None,
                });
                return Ok(Submitted {
                    view,
                    created,
                    found_by_ref: false,
                    payer: payer.clone(),
                });
            }
            Err(e) => e,
        };
        let duration_ms = t.elapsed().as_millis() as u64;
        // A lookup that fails counts as "not found"; the idempotency key still guards the resend on
        // coordinators that honour it.
        let found = if err.may_have_committed() {
            find_by_ref(conn, client_ref).await.ok().flatten()
        } else {
            None
        };
        let delay = if found.is_none() {
            conn.retry_delay(n, &err)
        } else {
            None
        };
        // A delay past the step's deadline is not waited for (the server's Retry-After included).
        let out_of_time = delay.and_then(|d| conn.past_deadline(d, &err));
        let delay = delay.filter(|_| out_of_time.is_none());
        conn.trace.attempt(crate::model::Attempt {
            number: n,
            started_at,
            duration_ms,
            error: Some(match &found {
                Some(v) => format!(
                    "{err}; the job was found by its client reference ({})",
                    v.job_id
                ),
                None => err.to_string(),
            }),
            delay_ms: delay.map(|d| d.as_millis() as u64),
        });
        if let Some(view) = found {
            return Ok(Submitted {
                view,
                created: false,
                found_by_ref: true,
                payer: payer.clone(),
            });
        }
        if let Some(stop) = out_of_time {
            return Err(stop.into());
        }
        match delay {
            Some(d) => {
                tokio::time::sleep(d).await;
                n += 1;
            }
            None => return Err(err.into()),
        }
    }
}

/// Refuses the answer to a submit when it is a job with another client reference than the one sent:
/// the service keeps `payload.client_ref`, so such an answer is about another job.
fn same_ref<C: Coordinator>(
    conn: &Conn<'_, C>,
    view: &JobView,
    client_ref: &str,
) -> Result<(), ClientError> {
    match view.client_ref() {
        Some(r) if r != client_ref => Err(ClientError::WrongJob {
            url: format!("{}/v1/jobs", conn.coord.base_url()),
            asked: format!("with client reference {client_ref}"),
            answered: format!("{} (client reference {r})", view.job_id),
        }),
        _ => Ok(()),
    }
}

/// Looks a job up by its client reference, newest first, a page of 200 at a time (at most 10 pages),
/// each page read with the connection's retry policy. `Err` when the coordinator could not be asked.
pub async fn find_by_ref<C: Coordinator>(
    conn: &Conn<'_, C>,
    client_ref: &str,
) -> Result<Option<JobView>, ClientError> {
    const PAGE: u64 = 200;
    for page in 0..10u64 {
        let q = ListQuery {
            limit: Some(PAGE),
            offset: Some(page * PAGE),
            ..ListQuery::default()
        };
        let list = conn.call(|c| c.list(&q)).await?;
        let n = list.items.len() as u64;
        if let Some(v) = list
            .items
            .into_iter()
            .find(|j| j.client_ref() == Some(client_ref))
        {
            return Ok(Some(v));
        }
        if n < PAGE {
            break;
        }
    }
    Ok(None)
}

/// Checks, pays and sends a job in one go, with a fresh client reference (also the idempotency key).
pub async fn submit<C: Coordinator>(
    conn: &Conn<'_, C>,
    req: &JobRequest,
    policy: &Policy,
    check: BalanceCheck,
) -> Result<Done<Submitted>, OpError> {
    let client_ref = format!("aitbc-flow-{}", hex::encode(rand::random::<[u8; 8]>()));
    let mut body = prepare(req, policy, &client_ref)?;
    let funds = check_funds(conn, &req.wallet, req.payment, check).await?;
    pay_from(&mut body, &funds.payer);
    let s = send(conn, &body, &client_ref, &client_ref, &funds.payer).await?;
    let outcome = outcome(&s.view, req, s.created, &s.payer, check);
    Ok(Done { answer: s, outcome })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The outcome of a submit (`created` is false when the job was found again rather than made); the
/// metrics say what was sent as `buyer_address` and how it was found.
pub fn outcome(
    v: &JobView,
    req: &JobRequest,
    created: bool,
    payer: &Payer,
    check: BalanceCheck,
) -> Outcome {
    let verb = if created {
        "submitted"
    } else {
        "already submitted (same idempotency key)"
    };
    let mut out = Outcome::new(
        Operation::Submit,
        format!(
            "{} job {} {verb}: {} AITBC from {}",
            capitalize(&req.job_type),
            v.job_id,
            req.payment,
            req.wallet
        ),
    );
    out.job_type = JobType::parse(&req.job_type);
    out.set_view(v);
    out.wallet = Some(req.wallet.clone());
    out.payment = Some(req.payment);
    out.performance_metrics = Some(payer.metrics().into());
    out.issues = view_issues(v, true);
    out.issues.extend(check.issue());
    out.issues.extend(payer.issue());
    if req.payment >= Money::from_int(10) && v.state == JobState::Queued {
        out.recommendations.push(hints::BONDED_QUEUED.into());
    }
    out.recommendations.push(hints::monitor(&v.job_id));
    out.recommendations
        .push(hints::fetch_once_completed(&v.job_id));
    out.settle()
}

/// The outcome of a job submitted, waited for and fetched in one go (`job submit --wait`, a plan's
/// `job` step): the fetched result's outcome, as a submit, with the submit's issues first and its
/// payer in the metrics.
pub fn completed(submitted: Outcome, fetched: Outcome, req: &JobRequest, job: &JobId) -> Outcome {
    let mut out = fetched;
    if let Some(serde_json::Value::Object(sent)) = submitted
        .performance_metrics
        .as_ref()
        .map(crate::model::JsonText::to_value)
    {
        let m = out
            .performance_metrics
            .get_or_insert_with(crate::model::JsonText::empty_object);
        m.update(|map| {
            for (k, v) in sent {
                map.entry(k).or_insert(v);
            }
        });
    }
    out.operation = Operation::Submit;
    out.wallet = Some(req.wallet.clone());
    out.payment = Some(req.payment);
    out.job_type = JobType::parse(&req.job_type).or(out.job_type);
    out.issues.splice(0..0, submitted.issues);
    out.summary = format!(
        "{} job {job} {}: {} AITBC from {}",
        capitalize(&req.job_type),
        if out.failed() { "failed" } else { "completed" },
        req.payment,
        req.wallet
    );
    out.settle()
}
