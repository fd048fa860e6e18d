//! The job lifecycle: submit (with escrow and idempotency), claim, post, cancel, lazy expiry, and the
//! settling of payments. Each operation takes the state lock once and records its changes for the
//! database in the same step, so the file sees changes in the order memory did.

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

#[cfg(test)]
use crate::api::JobView;
use crate::api::{JobCreate, JobState, PaymentView, result_failed};
use crate::money::Money;

use super::Shared;
use super::receipt;
use super::store::{
    Core, Currency, Job, Miner, OTHER_TYPE, Paid, PayStatus, Payment, RawId, iso, kind_of,
    now_micros,
};
use super::worker::{Claim, Outcome, accepts_result};

/// The service's default time to live.
const DEFAULT_TTL: u64 = 900;
/// The wallet charged when a paid job names no `buyer_address`.
pub const DEFAULT_WALLET: &str = "default";
/// The `error` of a job paid 10 or more that completes with the real quirks on: the real service's own
/// words when the ZK proof it requires before releasing the escrow could not be made.
pub const ZK_ERROR: &str = "ZK proof required before escrow release (status: generation_failed)";

/// Why a submit was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitError {
    /// The wallet holds less than the payment.
    Insufficient {
        /// The wallet.
        wallet: String,
        /// What it holds.
        held: Money,
        /// What the job needs.
        needed: Money,
    },
}

/// A submit's result: a new job, or the one an earlier request with the same idempotency key made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// 201.
    Created(u32),
    /// 200.
    Existing(u32),
}

/// Why a refund was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundError {
    /// Unknown payment, or another client's.
    NotFound,
    /// Released, or still escrowed for a job that is running.
    Refused,
}

/// What a submit will do about payment, decided before the lock is taken.
enum PaymentPlan {
    None,
    Skipped,
    Escrow {
        wallet: String,
        amount: Money,
        currency: Currency,
    },
}

fn plan_payment(req: &JobCreate) -> PaymentPlan {
    let Some(amount) = req.payment_amount else {
        return PaymentPlan::None;
    };
    if amount.decimal() <= Decimal::ZERO {
        return PaymentPlan::None;
    }
    let currency = Currency::parse(req.payment_currency.as_deref().unwrap_or("AITBC"));
    let min = Money(Decimal::new(1, 2));
    let max = Money::from_int(1_000_000);
    let Some(currency) = currency.filter(|_| amount >= min && amount <= max) else {
        return PaymentPlan::Skipped;
    };
    PaymentPlan::Escrow {
        wallet: req
            .buyer_address
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| DEFAULT_WALLET.to_string()),
        amount,
        currency,
    }
}

impl Shared {
    /// Creates a job (escrowing its payment), or returns the job an earlier request with the same
    /// idempotency key created.
    pub(crate) fn submit(
        &self,
        client: u32,
        req: JobCreate,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, SubmitError> {
        let payment = plan_payment(&req);
        let kind = kind_of(
            req.payload
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        let payload = serde_json::to_string(&req.payload).unwrap_or_else(|_| "{}".into());
        let constraints = req
            .constraints
            .as_ref()
            .and_then(|c| serde_json::to_string(c).ok())
            .map(String::into_boxed_str);
        let ttl = req
            .ttl_seconds
            .unwrap_or(DEFAULT_TTL)
            .min(10 * 365 * 86_400);
        let now = now_micros();
        let id: RawId = rand::random();

        let mut core = self.lock();
        if let Some(key) = idempotency_key
            && let Some(&pos) = core.idempotency.get(&(client, Box::from(key)))
        {
            return Ok(Submitted::Existing(pos));
        }
        let payment = match payment {
            PaymentPlan::None => Payment::None,
            PaymentPlan::Skipped => Payment::Skipped,
            PaymentPlan::Escrow {
                wallet,
                amount,
                currency,
            } => {
                // A payer named by its address pays from the wallet of that address.
                let wallet = if crate::api::is_address(&wallet) {
                    core.ledger.payer(&wallet).to_string()
                } else {
                    wallet
                };
                match core.ledger.escrow(&wallet, amount) {
                    Ok(name) => {
                        self.save_wallet(&core, &name);
                        Payment::Paid(Box::new(Paid {
                            id: rand::random(),
                            wallet: name,
                            amount,
                            currency,
                            status: PayStatus::Escrowed,
                            created_at: now,
                            updated_at: now,
                            view_status: None,
                        }))
                    }
                    Err(e) => {
                        self.save_wallet(&core, &wallet);
                        return Err(SubmitError::Insufficient {
                            wallet,
                            held: e.held,
                            needed: amount,
                        });
                    }
                }
            }
        };
        let pos = core.jobs.len() as u32;
        core.jobs.push(Job {
            id,
            owner: client,
            state: JobState::Queued,
            miner: None,
            requested_at: now,
            expires_at: now.saturating_add((ttl as i64).saturating_mul(1_000_000)),
            started_at: None,
            finished_at: None,
            error: None,
            payment,
            payload: payload.into_boxed_str(),
            kind,
            constraints,
            result: None,
            receipt: None,
        });
        core.index.insert(id, pos);
        self.save_job(&core, pos);
        if let Some(key) = idempotency_key {
            core.idempotency.insert((client, Box::from(key)), pos);
            self.persist(|| super::store::Op::Idempotency {
                client: self.client_id(client),
                key: key.to_string(),
                seq: pos,
            });
        }
        drop(core);
        Ok(Submitted::Created(pos))
    }

    /// Hands a job just created to its worker (after the submit's answer is written: the answer
    /// shows the job QUEUED, as the real service's does). A job whose worker takes no time is done
    /// here ([`super::worker::work_at_once`]); any other goes to the dispatcher's queue.
    pub(crate) fn start(&self, pos: u32) {
        if !super::worker::work_at_once(self, pos) {
            let _ = self.queue.send(pos);
        }
    }

    /// Whether the built-in worker would do a job at once: no latency for any type, no Ollama, and
    /// no test marker that holds the job in its payload.
    pub(crate) fn takes_no_time(&self, pos: u32) -> bool {
        if self.ollama.is_some() || self.latency != super::worker::WorkerLatency::instant() {
            return false;
        }
        let core = self.lock();
        core.jobs
            .get(pos as usize)
            .is_some_and(|j| !j.payload.contains("HANG") && !j.payload.contains("LATE"))
    }

    /// Moves a job's payment out of escrow: to the provider on completion, back to the wallet otherwise.
    fn settle(&self, core: &mut Core, pos: u32, to: PayStatus) {
        let now = now_micros();
        let job = &mut core.jobs[pos as usize];
        let Payment::Paid(paid) = &mut job.payment else {
            return;
        };
        if paid.status != PayStatus::Escrowed {
            return;
        }
        paid.status = to;
        paid.updated_at = now;
        let amount = paid.amount;
        let wallet = match to {
            PayStatus::Released => job.miner.unwrap_or(Miner::Builtin).id().to_string(),
            _ => paid.wallet.to_string(),
        };
        core.ledger.release(amount, &wallet);
        self.save_wallet(core, &wallet);
    }

    /// Ends a job in `state` (FAILED, CANCELED, EXPIRED) with a refund — or, with the real quirks on,
    /// with its payment left in escrow until the client asks for the refund.
    fn end_unpaid(&self, core: &mut Core, pos: u32, state: JobState, error: Option<&str>) {
        let job = &mut core.jobs[pos as usize];
        job.state = state;
        job.finished_at = Some(now_micros());
        if let Some(e) = error {
            job.error = Some(e.into());
        }
        if !self.real_quirks {
            self.settle(core, pos, PayStatus::Refunded);
        }
        self.save_job(core, pos);
    }

    /// Lazy expiry: a job past `expires_at` that has not finished turns EXPIRED (refunded) when read.
    pub(crate) fn expire_if_due(&self, core: &mut Core, pos: u32) {
        let job = &core.jobs[pos as usize];
        if !job.state.is_final() && now_micros() >= job.expires_at {
            self.end_unpaid(core, pos, JobState::Expired, Some("job expired"));
        }
    }

    /// Cancels a QUEUED or RUNNING job (refunding it); `false` when it is in any other state.
    pub(crate) fn cancel(&self, core: &mut Core, pos: u32) -> bool {
        self.expire_if_due(core, pos);
        if core.jobs[pos as usize].state.is_final() {
            return false;
        }
        // As the real service says it on the job view.
        self.end_unpaid(core, pos, JobState::Canceled, Some("canceled by client"));
        true
    }

    /// Asks for a refund of a payment; `Ok` when it is refunded (now or earlier). An escrowed payment
    /// is refunded when its job ended without a result worth paying for (CANCELED, FAILED, EXPIRED, a
    /// failed result); one of a job still queued or running, or that completed, is refused, and so is
    /// every refund when refunds are set to fail.
    pub(crate) fn refund(
        &self,
        client: u32,
        job_id: &str,
        payment_id: &str,
    ) -> Result<(), RefundError> {
        let mut core = self.lock();
        let pos = core.find(job_id, client).ok_or(RefundError::NotFound)?;
        self.expire_if_due(&mut core, pos);
        let job = &core.jobs[pos as usize];
        let Payment::Paid(paid) = &job.payment else {
            return Err(RefundError::NotFound);
        };
        if hex::encode(paid.id) != payment_id {
            return Err(RefundError::NotFound);
        }
        if self.refuse_refunds {
            return Err(RefundError::Refused);
        }
        let status = paid.status;
        let unpaid_end = match job.state {
            JobState::Canceled | JobState::Failed | JobState::Expired => true,
            JobState::Completed => result_failed(
                job.result
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .as_ref(),
            ),
            JobState::Queued | JobState::Running => false,
        };
        match status {
            PayStatus::Refunded => Ok(()),
            PayStatus::Escrowed if unpaid_end => {
                self.settle(&mut core, pos, PayStatus::Refunded);
                if self.real_quirks
                    && let Payment::Paid(p) = &mut core.jobs[pos as usize].payment
                {
                    // As the real service: only the payment view learns of the refund.
                    p.view_status = Some(PayStatus::Escrowed);
                }
                self.save_job(&core, pos);
                Ok(())
            }
            _ => Err(RefundError::Refused),
        }
    }

    /// A worker takes a QUEUED job: it turns RUNNING. `None` when it is no longer queued.
    pub(crate) fn claim(&self, pos: u32, use_ollama: bool) -> Option<Claim> {
        let mut core = self.lock();
        self.expire_if_due(&mut core, pos);
        let job = core.jobs.get_mut(pos as usize)?;
        if job.state != JobState::Queued {
            return None;
        }
        let miner = if use_ollama && job.kind == kind_of("ollama") {
            Miner::Ollama
        } else {
            Miner::Builtin
        };
        job.state = JobState::Running;
        job.started_at = Some(now_micros());
        job.miner = Some(miner);
        let payload = job.payload.clone();
        self.save_job(&core, pos);
        drop(core);
        let payload: Map<String, Value> = serde_json::from_str(&payload).unwrap_or_default();
        let job_type = payload
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Some(Claim {
            job_type,
            payload,
            miner,
        })
    }

    /// True while a claimed job is still RUNNING (not cancelled or expired).
    pub(crate) fn still_running(&self, pos: u32) -> bool {
        let mut core = self.lock();
        if pos as usize >= core.jobs.len() {
            return false;
        }
        self.expire_if_due(&mut core, pos);
        core.jobs[pos as usize].state == JobState::Running
    }

    /// A worker stopped by shutdown gives its job back to the queue.
    pub(crate) fn unclaim(&self, pos: u32) {
        let mut core = self.lock();
        if let Some(job) = core.jobs.get_mut(pos as usize)
            && job.state == JobState::Running
        {
            job.state = JobState::Queued;
            job.started_at = None;
            job.miner = None;
            self.save_job(&core, pos);
        }
    }

    /// A worker posts its outcome. Ignored when the job was cancelled or expired meanwhile — except, with
    /// the real quirks, a result posted after a cancel: the job turns COMPLETED, as on the real service.
    pub(crate) fn post(&self, pos: u32, outcome: Outcome, took: Duration) {
        match outcome {
            Outcome::Failed(error) => {
                let mut core = self.lock();
                if core
                    .jobs
                    .get(pos as usize)
                    .is_some_and(|j| j.state == JobState::Running)
                {
                    self.end_unpaid(&mut core, pos, JobState::Failed, Some(&error));
                }
            }
            Outcome::Result(result) => {
                let failed = result_failed(Some(&result));
                let text: Box<str> = result.to_string().into();
                // Sign outside the lock, on a copy of the job as it will be.
                let draft = {
                    let core = self.lock();
                    match core.jobs.get(pos as usize) {
                        Some(j) if accepts_result(j.state, self.real_quirks) => {
                            let mut d = j.clone();
                            d.state = JobState::Completed;
                            d.finished_at = Some(now_micros());
                            d.result = Some(text);
                            d
                        }
                        _ => return,
                    }
                };
                let signed = (!failed).then(|| {
                    let ms = took.as_millis().min(u64::MAX as u128) as u64;
                    receipt::sign(&draft, &self.client_id(draft.owner), &self.key, ms)
                });
                let mut core = self.lock();
                if !accepts_result(core.jobs[pos as usize].state, self.real_quirks) {
                    return;
                }
                let job = &mut core.jobs[pos as usize];
                job.state = JobState::Completed;
                job.finished_at = draft.finished_at;
                job.result = draft.result;
                job.receipt = signed.map(Box::new);
                if self.real_quirks {
                    // The real service releases nothing without a chain-verified ZK proof on a job
                    // paid 10 or more, and refunds nothing by itself.
                    if !failed && receipt::high_value(job) {
                        job.error = Some(ZK_ERROR.into());
                    } else if !failed {
                        self.settle(&mut core, pos, PayStatus::Released);
                    }
                } else {
                    let to = if failed {
                        PayStatus::Refunded
                    } else {
                        PayStatus::Released
                    };
                    self.settle(&mut core, pos, to);
                }
                self.save_job(&core, pos);
            }
        }
    }

    /// True when a job's `payload.type` is `job_type`.
    pub(crate) fn has_type(job: &Job, job_type: &str) -> bool {
        match kind_of(job_type) {
            OTHER_TYPE => {
                job.kind == OTHER_TYPE
                    && serde_json::from_str::<Map<String, Value>>(&job.payload)
                        .ok()
                        .and_then(|p| p.get("type").and_then(Value::as_str).map(|t| t == job_type))
                        .unwrap_or(false)
            }
            kind => job.kind == kind,
        }
    }

    /// The payment of a job, as `GET /v1/jobs/{id}/payment` shows it; `None` when the job is unpaid.
    pub(crate) fn payment_view(&self, job: &Job) -> Option<PaymentView> {
        let Payment::Paid(p) = &job.payment else {
            return None;
        };
        let mut extra = Map::new();
        let at = |s: PayStatus| -> Value {
            if p.status == s {
                Value::String(iso(p.updated_at))
            } else {
                Value::Null
            }
        };
        extra.insert("payment_method".into(), "aitbc_token".into());
        extra.insert("escrow_address".into(), "local-escrow".into());
        extra.insert("refund_address".into(), Value::String(p.wallet.to_string()));
        extra.insert("created_at".into(), Value::String(iso(p.created_at)));
        extra.insert("updated_at".into(), Value::String(iso(p.updated_at)));
        extra.insert("released_at".into(), at(PayStatus::Released));
        extra.insert("refunded_at".into(), at(PayStatus::Refunded));
        extra.insert("transaction_hash".into(), Value::Null);
        extra.insert("refund_transaction_hash".into(), Value::Null);
        Some(PaymentView {
            job_id: hex::encode(job.id),
            payment_id: hex::encode(p.id),
            amount: p.amount,
            currency: Some(p.currency.as_str().to_string()),
            status: p.status.as_str().to_string(),
            extra,
        })
    }

    /// The signed receipt of a completed job.
    pub(crate) fn receipt(&self, job: &Job) -> Option<Value> {
        let core = job.receipt.as_deref()?;
        let sig = receipt::sig_text(&core.sig);
        Some(receipt::build(
            job,
            core,
            &self.client_id(job.owner),
            Some((&self.key_id, &sig)),
        ))
    }
}

/// The fields the real service sends that the local one always leaves null.
const NULL_FIELDS: &[u8] = br#","zk_status":null,"zk_proof_id":null,"tee_status":null,"tee_attestation_id":null,"auto_reinvest_pct":null,"reinvest_status":null,"reinvest_stake_id":null}"#;

/// Writes a job's wire view — the JSON of a [`JobView`], byte for byte — splicing in the stored payload and
/// result text instead of parsing them: the hot path of every job read.
pub(crate) fn write_view(job: &Job, out: &mut Vec<u8>) {
    fn text(out: &mut Vec<u8>, v: &str) {
        let _ = serde_json::to_writer(&mut *out, v);
    }
    fn opt(out: &mut Vec<u8>, v: Option<&str>) {
        match v {
            Some(v) => text(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    let (payment_id, payment_status) = match &job.payment {
        Payment::None => (None, None),
        Payment::Skipped => (None, Some("skipped")),
        Payment::Paid(p) => (Some(hex::encode(p.id)), Some(p.shown().as_str())),
    };
    out.extend_from_slice(b"{\"job_id\":");
    text(out, &hex::encode(job.id));
    out.extend_from_slice(b",\"state\":");
    text(out, job.state.as_str());
    out.extend_from_slice(b",\"assigned_miner_id\":");
    opt(out, job.miner.map(Miner::id));
    out.extend_from_slice(b",\"requested_at\":");
    text(out, &iso(job.requested_at));
    out.extend_from_slice(b",\"expires_at\":");
    text(out, &iso(job.expires_at));
    out.extend_from_slice(b",\"error\":");
    opt(out, job.error.as_deref());
    out.extend_from_slice(b",\"payment_id\":");
    opt(out, payment_id.as_deref());
    out.extend_from_slice(b",\"payment_status\":");
    opt(out, payment_status);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(job.payload.as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(job.result.as_deref().unwrap_or("null").as_bytes());
    out.extend_from_slice(NULL_FIELDS);
}

/// The wire view of a job as a [`JobView`]: the reference that [`write_view`] must match byte for byte.
#[cfg(test)]
pub(crate) fn view(job: &Job) -> JobView {
    let (payment_id, payment_status) = match &job.payment {
        Payment::None => (None, None),
        Payment::Skipped => (None, Some("skipped".to_string())),
        Payment::Paid(p) => (
            Some(hex::encode(p.id)),
            Some(p.shown().as_str().to_string()),
        ),
    };
    let mut extra = Map::new();
    for k in [
        "zk_status",
        "zk_proof_id",
        "tee_status",
        "tee_attestation_id",
        "auto_reinvest_pct",
        "reinvest_status",
        "reinvest_stake_id",
    ] {
        extra.insert(k.into(), Value::Null);
    }
    JobView {
        job_id: hex::encode(job.id)
            .parse()
            .unwrap_or_else(|_| crate::api::JobId::random()),
        state: job.state,
        assigned_miner_id: job.miner.map(|m| m.id().to_string()),
        requested_at: Some(iso(job.requested_at)),
        expires_at: Some(iso(job.expires_at)),
        error: job.error.as_deref().map(str::to_string),
        payment_id,
        payment_status,
        payload: serde_json::from_str(&job.payload).unwrap_or_default(),
        result: job
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok()),
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: [0xab; 16],
            owner: 0,
            state: JobState::Queued,
            miner: None,
            requested_at: 1_795_592_033_129_984,
            expires_at: 1_795_592_933_129_984,
            started_at: None,
            finished_at: None,
            error: None,
            payment: Payment::None,
            payload:
                r#"{"type":"inference","prompt":"h\u00e9 \"q\" ✓","n":1.5,"client_ref":"r/1"}"#
                    .into(),
            kind: 0,
            constraints: None,
            result: None,
            receipt: None,
        }
    }

    fn same(job: &Job) {
        let mut fast = Vec::new();
        write_view(job, &mut fast);
        let reference = serde_json::to_vec(&view(job)).unwrap();
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(reference).unwrap()
        );
    }

    #[test]
    fn the_fast_view_is_the_job_view_byte_for_byte() {
        let mut j = job();
        // The payload text as the store writes it (serde_json of the parsed map).
        let map: Map<String, Value> = serde_json::from_str(&j.payload).unwrap();
        j.payload = serde_json::to_string(&map).unwrap().into();
        same(&j);
        j.payment = Payment::Skipped;
        same(&j);
        j.state = JobState::Completed;
        j.miner = Some(Miner::Ollama);
        j.error = Some("line\nbreak \"quoted\" é".into());
        j.result = Some(
            serde_json::json!({"status": "completed", "output": "ü", "execution_time": 0.86})
                .to_string()
                .into(),
        );
        j.payment = Payment::Paid(Box::new(Paid {
            id: [1; 16],
            wallet: "w".into(),
            amount: Money::from_int(5),
            currency: Currency::Aitbc,
            status: PayStatus::Released,
            created_at: 0,
            updated_at: 0,
            view_status: None,
        }));
        same(&j);
        if let Payment::Paid(p) = &mut j.payment {
            p.status = PayStatus::Refunded;
            p.view_status = Some(PayStatus::Escrowed);
        }
        same(&j);
    }
}
