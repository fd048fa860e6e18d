//! An in-memory [`Coordinator`] for unit tests anywhere in the crate: no HTTP, no clock, no threads.
//!
//! It keeps jobs, payments and wallets the way the real service does — a submit escrows the payment
//! from the wallet its `buyer_address` names (a wallet's name, or the address its balance answer gives)
//! and honours its idempotency key, a completed job releases it, and a cancelled, failed or expired job
//! keeps it escrowed until a refund is asked for, after which only the payment view says `refunded`
//! (the job view keeps `escrowed`) — so that what the executor does with money can be checked.
//! How each job goes is scripted per step ([`JobScript`]: complete after N reads, fail, expire, or never
//! finish); any call can be made to fail, before or after it takes effect ([`FakeCoordinator::fail_next`],
//! [`FakeCoordinator::lose_next_answer`]); and every call is counted ([`FakeCoordinator::calls`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde_json::{Map, Value, json};

use super::{ClientError, Coordinator};
use crate::api::{
    AllocateRequest, Allocation, CURRENCY, GpuOffer, JobCreate, JobId, JobList, JobResult,
    JobState, JobView, ListQuery, PaymentView, RefundRequest, RefundResponse, WalletBalance,
    naive_now, sign_receipt,
};
use crate::money::Money;

/// The base URL the fake answers for (it is never dialled).
pub const BASE_URL: &str = "http://fake.coordinator.invalid";

/// One method of [`Coordinator`], for counting calls and injecting errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// [`Coordinator::submit`].
    Submit,
    /// [`Coordinator::job`].
    Job,
    /// [`Coordinator::result`].
    Result,
    /// [`Coordinator::cancel`].
    Cancel,
    /// [`Coordinator::list`].
    List,
    /// [`Coordinator::receipt`].
    Receipt,
    /// [`Coordinator::payment`].
    Payment,
    /// [`Coordinator::refund`].
    Refund,
    /// [`Coordinator::allocate`].
    Allocate,
    /// [`Coordinator::gpu_offers`].
    GpuOffers,
    /// [`Coordinator::balance`].
    Balance,
}

/// How a job ends, once its reads are used up.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEnd {
    /// COMPLETED with this result.
    Complete(Value),
    /// COMPLETED, but the result says `status: failed` with this error.
    ReportFailure(String),
    /// FAILED with this error.
    Fail(String),
    /// EXPIRED.
    Expire,
    /// COMPLETED with a good result but this `error`, its payment left in escrow (a job paid 10 or more
    /// whose ZK proof failed, on the real service).
    CompleteHeld(String),
    /// Stays RUNNING for ever (until cancelled).
    Never,
    /// COMPLETED already in the submit's answer (a service that ran the job at once).
    CompleteAtSubmit,
}

/// What a job does as it is read: `running_reads` reads of `GET /v1/jobs/{id}` answer RUNNING, the next
/// one answers its [`JobEnd`].
#[derive(Clone, Debug, PartialEq)]
pub struct JobScript {
    /// Reads that answer RUNNING before the end.
    pub running_reads: u32,
    /// The end.
    pub end: JobEnd,
}

impl JobScript {
    /// Completes after `reads` RUNNING reads, with the output `ok: <prompt>`.
    pub fn completes_after(reads: u32) -> JobScript {
        JobScript {
            running_reads: reads,
            end: JobEnd::Complete(Value::Null),
        }
    }
    /// Completes after `reads` RUNNING reads, with this result.
    pub fn completes_with(reads: u32, result: Value) -> JobScript {
        JobScript {
            running_reads: reads,
            end: JobEnd::Complete(result),
        }
    }
    /// Ends FAILED after `reads` RUNNING reads.
    pub fn fails_after(reads: u32, error: &str) -> JobScript {
        JobScript {
            running_reads: reads,
            end: JobEnd::Fail(error.into()),
        }
    }
    /// Ends COMPLETED with a failed result after `reads` RUNNING reads.
    pub fn reports_failure_after(reads: u32, error: &str) -> JobScript {
        JobScript {
            running_reads: reads,
            end: JobEnd::ReportFailure(error.into()),
        }
    }
    /// Ends COMPLETED after `reads` RUNNING reads with this `error`, its payment still escrowed.
    pub fn completes_held(reads: u32, error: &str) -> JobScript {
        JobScript {
            running_reads: reads,
            end: JobEnd::CompleteHeld(error.into()),
        }
    }
    /// Ends EXPIRED after `reads` RUNNING reads.
    pub fn expires_after(reads: u32) -> JobScript {
        JobScript {
            running_reads: reads,
            end: JobEnd::Expire,
        }
    }
    /// Completed when submitted: the submit's answer is final.
    pub fn completes_at_submit() -> JobScript {
        JobScript {
            running_reads: 0,
            end: JobEnd::CompleteAtSubmit,
        }
    }
    /// Never finishes.
    pub fn never_finishes() -> JobScript {
        JobScript {
            running_reads: 0,
            end: JobEnd::Never,
        }
    }
}

/// An injected error, answered before or after the call takes effect.
#[derive(Clone, Debug)]
enum Fault {
    Before(ClientError),
    After(ClientError),
}

#[derive(Debug)]
struct FakeJob {
    view: JobView,
    reads: u32,
    script: JobScript,
    wallet: String,
    payment: Money,
    /// The payment's status as the payment view says it (the job view lags behind a refund).
    paid: Option<String>,
    /// What the submit sent as `buyer_address`.
    buyer: Option<String>,
    receipt: Option<Value>,
}

/// The address the fake gives a wallet: `0x` and 40 hex digits of the name's SHA-256.
pub fn address_of(wallet: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "0x{}",
        &hex::encode(Sha256::digest(wallet.as_bytes()))[..40]
    )
}

#[derive(Debug)]
struct State {
    /// In submission order.
    jobs: Vec<FakeJob>,
    by_key: HashMap<String, usize>,
    scripts: HashMap<String, VecDeque<JobScript>>,
    default_script: JobScript,
    wallets: BTreeMap<String, Money>,
    faults: HashMap<Call, VecDeque<Fault>>,
    calls: HashMap<Call, usize>,
    offers: Vec<GpuOffer>,
    allocations: u32,
}

/// An in-memory coordinator. See the module documentation.
#[derive(Debug)]
pub struct FakeCoordinator {
    state: Mutex<State>,
    key: ed25519_dalek::SigningKey,
}

impl Default for FakeCoordinator {
    fn default() -> Self {
        FakeCoordinator::new()
    }
}

impl FakeCoordinator {
    /// No wallets (every balance is 0), no jobs, one GPU offer at 1 AITBC an hour; a job completes at
    /// its first read.
    pub fn new() -> FakeCoordinator {
        let offer: GpuOffer = serde_json::from_value(json!({
            "id": "gpu-1", "miner_id": "miner-fake", "model": "RTX 4090", "memory_gb": 24.0,
            "price_per_hour": 1.0, "status": "available"
        }))
        .expect("a GPU offer");
        FakeCoordinator {
            state: Mutex::new(State {
                jobs: Vec::new(),
                by_key: HashMap::new(),
                scripts: HashMap::new(),
                default_script: JobScript::completes_after(0),
                wallets: BTreeMap::new(),
                faults: HashMap::new(),
                calls: HashMap::new(),
                offers: vec![offer],
                allocations: 0,
            }),
            key: ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
        }
    }

    /// Sets a wallet's balance.
    pub fn fund(&self, wallet: &str, amount: Money) -> &Self {
        self.lock().wallets.insert(wallet.to_string(), amount);
        self
    }

    /// A wallet's balance now.
    pub fn balance_of(&self, wallet: &str) -> Money {
        self.lock()
            .wallets
            .get(wallet)
            .copied()
            .unwrap_or(Money::ZERO)
    }

    /// How the jobs of step `step` go, one script per submission (the last one repeats). The step is
    /// read from the job's `payload.client_ref` (`<run-id>/<step-id>`, `#n` for a resubmission).
    pub fn script(&self, step: &str, scripts: impl IntoIterator<Item = JobScript>) -> &Self {
        self.lock()
            .scripts
            .insert(step.to_string(), scripts.into_iter().collect());
        self
    }

    /// How the jobs of steps without a script go.
    pub fn script_others(&self, script: JobScript) -> &Self {
        self.lock().default_script = script;
        self
    }

    /// Providers post results after the cancel, as on the real service: every CANCELED job turns
    /// COMPLETED with the output `ok: <prompt>`; a payment still escrowed is released, a refunded one
    /// stays refunded.
    pub fn post_late_results(&self) -> &Self {
        let mut s = self.lock();
        for j in s.jobs.iter_mut() {
            if j.view.state != JobState::Canceled {
                continue;
            }
            let (paid, shown) = (j.paid.clone(), j.view.payment_status.clone());
            let prompt = j.view.payload.get("prompt").and_then(Value::as_str);
            let result =
                json!({"status": "completed", "output": format!("ok: {}", prompt.unwrap_or(""))});
            j.complete(result, &self.key);
            if paid.as_deref() != Some("escrowed") {
                j.paid = paid;
                j.view.payment_status = shown;
            }
        }
        drop(s);
        self
    }

    /// The next call of `call` answers `error` and does nothing.
    pub fn fail_next(&self, call: Call, error: ClientError) -> &Self {
        self.push_fault(call, Fault::Before(error))
    }

    /// The next call of `call` takes effect, then answers `error` (a response lost on the way back).
    pub fn lose_next_answer(&self, call: Call, error: ClientError) -> &Self {
        self.push_fault(call, Fault::After(error))
    }

    /// How many times `call` was made (failed calls included).
    pub fn calls(&self, call: Call) -> usize {
        self.lock().calls.get(&call).copied().unwrap_or(0)
    }

    /// Every job as it is now, in submission order.
    pub fn jobs(&self) -> Vec<JobView> {
        self.lock().jobs.iter().map(|j| j.view.clone()).collect()
    }

    /// What each submit sent as `buyer_address`, in submission order.
    pub fn buyers(&self) -> Vec<Option<String>> {
        self.lock().jobs.iter().map(|j| j.buyer.clone()).collect()
    }

    /// An error of the kind a connection failure gives, for [`FakeCoordinator::fail_next`].
    pub fn unavailable(path: &str) -> ClientError {
        ClientError::Unavailable {
            url: format!("{BASE_URL}{path}"),
            reason: "HTTP 503: injected".into(),
            status: Some(503),
        }
    }

    fn push_fault(&self, call: Call, fault: Fault) -> &Self {
        self.lock().faults.entry(call).or_default().push_back(fault);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a call and runs it, with the injected fault of that call if there is one.
    fn answer<T>(
        &self,
        call: Call,
        f: impl FnOnce(&mut State, &ed25519_dalek::SigningKey) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut s = self.lock();
        *s.calls.entry(call).or_default() += 1;
        let fault = s.faults.get_mut(&call).and_then(VecDeque::pop_front);
        match fault {
            Some(Fault::Before(e)) => Err(e),
            Some(Fault::After(e)) => f(&mut s, &self.key).and(Err(e)),
            None => f(&mut s, &self.key),
        }
    }
}

fn url(path: &str) -> String {
    format!("{BASE_URL}{path}")
}

fn not_found(path: &str, what: &str) -> ClientError {
    ClientError::NotFound {
        url: url(path),
        detail: format!("{what} not found"),
    }
}

/// The step of a client reference `<run-id>/<step-id>[#n]`.
fn step_of(client_ref: &str) -> Option<&str> {
    let (_, rest) = client_ref.split_once('/')?;
    Some(match rest.rsplit_once('#') {
        Some((step, n)) if n.bytes().all(|b| b.is_ascii_digit()) => step,
        _ => rest,
    })
}

impl State {
    fn find(&mut self, id: &JobId, path: &str) -> Result<&mut FakeJob, ClientError> {
        self.jobs
            .iter_mut()
            .find(|j| &j.view.job_id == id)
            .ok_or_else(|| not_found(path, "job"))
    }

    fn next_script(&mut self, payload: &Map<String, Value>) -> JobScript {
        let step = payload
            .get("client_ref")
            .and_then(Value::as_str)
            .and_then(step_of);
        match step.and_then(|s| self.scripts.get_mut(s)) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap_or_else(|| self.default_script.clone()),
            Some(q) => q
                .front()
                .cloned()
                .unwrap_or_else(|| self.default_script.clone()),
            None => self.default_script.clone(),
        }
    }
}

impl FakeJob {
    /// One read: RUNNING while reads remain, then the scripted end (once; a final job stays final).
    fn read(&mut self, key: &ed25519_dalek::SigningKey) {
        if self.view.state.is_final() {
            return;
        }
        self.reads += 1;
        if self.reads <= self.script.running_reads || self.script.end == JobEnd::Never {
            self.view.state = JobState::Running;
            self.view.assigned_miner_id = Some("miner-fake".into());
            return;
        }
        match self.script.end.clone() {
            JobEnd::CompleteAtSubmit => self.complete_with_prompt(key),
            JobEnd::Complete(result) => {
                let result = if result.is_null() {
                    let prompt = self.view.payload.get("prompt").and_then(Value::as_str);
                    json!({"status": "completed", "output": format!("ok: {}", prompt.unwrap_or(""))})
                } else {
                    result
                };
                self.complete(result, key);
            }
            JobEnd::ReportFailure(error) => {
                self.complete(json!({"status": "failed", "error": error}), key)
            }
            JobEnd::Fail(error) => {
                self.view.state = JobState::Failed;
                self.view.error = Some(error);
            }
            JobEnd::Expire => {
                self.view.state = JobState::Expired;
                self.view.error = Some("job expired".into());
            }
            JobEnd::CompleteHeld(error) => {
                let prompt = self.view.payload.get("prompt").and_then(Value::as_str);
                let result = json!({"status": "completed", "output": format!("ok: {}", prompt.unwrap_or(""))});
                let paid = self.paid.clone();
                self.complete(result, key);
                // Nothing released: the payment stays as it was.
                self.view.payment_status = paid.clone();
                self.paid = paid;
                self.view.error = Some(error);
            }
            JobEnd::Never => {}
        }
    }

    /// COMPLETED with the output `ok: <prompt>`.
    fn complete_with_prompt(&mut self, key: &ed25519_dalek::SigningKey) {
        let prompt = self.view.payload.get("prompt").and_then(Value::as_str);
        let result =
            json!({"status": "completed", "output": format!("ok: {}", prompt.unwrap_or(""))});
        self.complete(result, key);
    }

    fn complete(&mut self, result: Value, key: &ed25519_dalek::SigningKey) {
        self.view.state = JobState::Completed;
        self.view.result = Some(result.clone());
        if self.view.payment_id.is_some() {
            self.view.payment_status = Some("released".into());
            self.paid = Some("released".into());
        }
        let mut receipt = json!({
            "version": "1.0",
            "job_id": self.view.job_id,
            "provider": "miner-fake",
            "status": "COMPLETED",
            "price": self.payment,
            "metadata": {"job_payload": self.view.payload, "result": result},
        });
        sign_receipt(&mut receipt, key);
        self.receipt = Some(receipt);
    }
}

impl Coordinator for FakeCoordinator {
    fn base_url(&self) -> &str {
        BASE_URL
    }

    async fn submit(
        &self,
        job: &JobCreate,
        idempotency_key: Option<&str>,
    ) -> Result<(JobView, bool), ClientError> {
        self.answer(Call::Submit, |s, key| {
            if let Some(&i) = idempotency_key.and_then(|k| s.by_key.get(k)) {
                return Ok((s.jobs[i].view.clone(), false));
            }
            let buyer = job.buyer_address.clone().unwrap_or_default();
            // A wallet's address pays from that wallet.
            let wallet = s
                .wallets
                .keys()
                .find(|w| address_of(w).eq_ignore_ascii_case(&buyer))
                .cloned()
                .unwrap_or(buyer);
            let payment = job.payment_amount.unwrap_or(Money::ZERO);
            let held = s.wallets.get(&wallet).copied().unwrap_or(Money::ZERO);
            if held < payment {
                return Err(ClientError::InsufficientBalance {
                    wallet,
                    needed: payment,
                    held,
                });
            }
            s.wallets.insert(wallet.clone(), held - payment);
            let paid = payment > Money::ZERO;
            let view = JobView {
                job_id: JobId::random(),
                state: JobState::Queued,
                assigned_miner_id: None,
                requested_at: Some(naive_now()),
                expires_at: None,
                error: None,
                payment_id: paid.then(|| format!("pay-{}", s.jobs.len() + 1)),
                payment_status: paid.then(|| "escrowed".to_string()),
                payload: job.payload.clone(),
                result: None,
                extra: Map::new(),
            };
            let script = s.next_script(&job.payload);
            if let Some(k) = idempotency_key {
                s.by_key.insert(k.to_string(), s.jobs.len());
            }
            s.jobs.push(FakeJob {
                view: view.clone(),
                reads: 0,
                script,
                wallet,
                payment,
                paid: paid.then(|| "escrowed".to_string()),
                buyer: job.buyer_address.clone(),
                receipt: None,
            });
            let added = s.jobs.last_mut().expect("just pushed");
            if added.script.end == JobEnd::CompleteAtSubmit {
                added.complete_with_prompt(key);
                return Ok((added.view.clone(), true));
            }
            Ok((view, true))
        })
    }

    async fn job(&self, id: &JobId) -> Result<JobView, ClientError> {
        self.answer(Call::Job, |s, key| {
            let job = s.find(id, &format!("/v1/jobs/{id}"))?;
            job.read(key);
            Ok(job.view.clone())
        })
    }

    async fn result(&self, id: &JobId) -> Result<JobResult, ClientError> {
        self.answer(Call::Result, |s, _| {
            let path = format!("/v1/jobs/{id}/result");
            let job = s.find(id, &path)?;
            match (&job.view.result, job.view.state) {
                (Some(result), JobState::Completed) => Ok(JobResult {
                    result: result.clone(),
                    receipt: job.receipt.clone(),
                }),
                _ => Err(ClientError::NotReady { url: url(&path) }),
            }
        })
    }

    async fn cancel(&self, id: &JobId) -> Result<JobView, ClientError> {
        self.answer(Call::Cancel, |s, _| {
            let path = format!("/v1/jobs/{id}/cancel");
            let job = s.find(id, &path)?;
            if job.view.state.is_final() {
                return Err(ClientError::Conflict {
                    url: url(&path),
                    detail: format!("job is {}", job.view.state),
                });
            }
            // Like the real service: the payment stays in escrow until a refund is asked for.
            job.view.state = JobState::Canceled;
            Ok(job.view.clone())
        })
    }

    async fn list(&self, query: &ListQuery) -> Result<JobList, ClientError> {
        self.answer(Call::List, |s, _| {
            let limit = query.limit.unwrap_or(20);
            let offset = query.offset.unwrap_or(0);
            let items: Vec<JobView> = s
                .jobs
                .iter()
                .rev()
                .map(|j| &j.view)
                .filter(|v| {
                    query
                        .status
                        .as_deref()
                        .and_then(JobState::parse)
                        .is_none_or(|st| v.state == st)
                })
                .filter(|v| {
                    query
                        .job_type
                        .as_deref()
                        .is_none_or(|t| v.job_type() == Some(t))
                })
                .skip(offset as usize)
                .take(limit as usize)
                .cloned()
                .collect();
            Ok(JobList {
                total: items.len() as u64,
                items,
                limit,
                offset,
            })
        })
    }

    async fn receipt(&self, id: &JobId) -> Result<Value, ClientError> {
        self.answer(Call::Receipt, |s, _| {
            let path = format!("/v1/jobs/{id}/receipt");
            let job = s.find(id, &path)?;
            job.receipt
                .clone()
                .ok_or(ClientError::NotReady { url: url(&path) })
        })
    }

    async fn payment(&self, id: &JobId) -> Result<PaymentView, ClientError> {
        self.answer(Call::Payment, |s, _| {
            let path = format!("/v1/jobs/{id}/payment");
            let job = s.find(id, &path)?;
            let (Some(payment_id), Some(status)) = (&job.view.payment_id, &job.paid) else {
                return Err(not_found(&path, "payment"));
            };
            Ok(PaymentView {
                job_id: id.to_string(),
                payment_id: payment_id.clone(),
                amount: job.payment,
                currency: Some(CURRENCY.into()),
                status: status.clone(),
                extra: Map::new(),
            })
        })
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundResponse, ClientError> {
        self.answer(Call::Refund, |s, _| {
            let path = format!("/v1/payments/{}/refund", request.payment_id);
            let State { jobs, wallets, .. } = s;
            let job = jobs
                .iter_mut()
                .find(|j| j.view.payment_id.as_deref() == Some(request.payment_id.as_str()))
                .ok_or_else(|| not_found(&path, "payment"))?;
            let refundable = matches!(
                job.view.state,
                JobState::Canceled | JobState::Failed | JobState::Expired
            ) && job.paid.as_deref() == Some("escrowed");
            if !refundable {
                // The real service's answer for every refund it does not make.
                return Err(ClientError::Invalid {
                    url: url(&path),
                    status: 400,
                    message: "Failed to refund payment".into(),
                    details: Vec::new(),
                });
            }
            // Like the real service: the job view keeps saying `escrowed`.
            job.paid = Some("refunded".into());
            *wallets.entry(job.wallet.clone()).or_default() += job.payment;
            Ok(RefundResponse {
                status: "refunded".into(),
                payment_id: request.payment_id.clone(),
            })
        })
    }

    async fn allocate(&self, request: &AllocateRequest) -> Result<Allocation, ClientError> {
        self.answer(Call::Allocate, |s, _| {
            s.allocations += 1;
            let t = &request.task_requirements;
            Ok(Allocation {
                allocation_id: format!("alloc_{}", s.allocations),
                agent_id: request.agent_id.clone(),
                cpu_cores: t.cpu_cores,
                memory_gb: t.memory_gb,
                gpu_count: t.gpu_count,
                gpu_memory_gb: t.gpu_memory_gb,
                storage_gb: t.storage_gb,
                network_bandwidth: t.network_bandwidth,
                optimization_target: request.optimization_target.clone(),
                status: "allocated".into(),
                allocated_at: Some(naive_now()),
                extra: Map::new(),
            })
        })
    }

    async fn gpu_offers(&self, limit: Option<u32>) -> Result<Vec<GpuOffer>, ClientError> {
        self.answer(Call::GpuOffers, |s, _| {
            let n = limit.map_or(usize::MAX, |l| l as usize);
            Ok(s.offers.iter().take(n).cloned().collect())
        })
    }

    async fn balance(&self, wallet: &str) -> Result<WalletBalance, ClientError> {
        self.answer(Call::Balance, |s, _| {
            let balance = s.wallets.get(wallet).copied().unwrap_or(Money::ZERO);
            Ok(WalletBalance::in_aitbc(
                wallet,
                Some(address_of(wallet)),
                balance,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::verify_receipt;

    fn create(step: &str, wallet: &str, payment: i64) -> JobCreate {
        let mut payload = Map::new();
        payload.insert("type".into(), json!("inference"));
        payload.insert("prompt".into(), json!("hi"));
        payload.insert("client_ref".into(), json!(format!("r1/{step}")));
        JobCreate {
            payload,
            payment_amount: Some(Money::from_int(payment)),
            buyer_address: Some(wallet.into()),
            ..JobCreate::default()
        }
    }

    #[tokio::test]
    async fn a_job_follows_its_script_and_its_key() {
        let c = FakeCoordinator::new();
        c.fund("w", Money::from_int(10))
            .script("a", [JobScript::completes_after(2)]);
        let (v, created) = c.submit(&create("a", "w", 4), Some("k1")).await.unwrap();
        assert!(created);
        assert_eq!(c.balance_of("w"), Money::from_int(6));
        // The same key finds the same job, and charges nothing more.
        let (again, created) = c.submit(&create("a", "w", 4), Some("k1")).await.unwrap();
        assert!(!created);
        assert_eq!(again.job_id, v.job_id);
        assert_eq!(c.balance_of("w"), Money::from_int(6));

        assert_eq!(c.job(&v.job_id).await.unwrap().state, JobState::Running);
        assert!(matches!(
            c.result(&v.job_id).await,
            Err(ClientError::NotReady { .. })
        ));
        assert_eq!(c.job(&v.job_id).await.unwrap().state, JobState::Running);
        let done = c.job(&v.job_id).await.unwrap();
        assert_eq!(done.state, JobState::Completed);
        assert_eq!(done.payment_status.as_deref(), Some("released"));
        let r = c.result(&v.job_id).await.unwrap();
        assert_eq!(r.result["output"], "ok: hi");
        assert_eq!(verify_receipt(r.receipt.as_ref().unwrap()), Ok(()));
        assert_eq!(c.calls(Call::Job), 3);
        assert_eq!(c.calls(Call::Submit), 2);
        assert_eq!(c.jobs().len(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_job_keeps_its_escrow_until_refunded() {
        let c = FakeCoordinator::new();
        c.fund("w", Money::from_int(5))
            .script_others(JobScript::never_finishes());
        let (v, _) = c.submit(&create("a", "w", 5), None).await.unwrap();
        assert!(matches!(
            c.submit(&create("b", "w", 1), None).await,
            Err(ClientError::InsufficientBalance { .. })
        ));
        let cancelled = c.cancel(&v.job_id).await.unwrap();
        assert_eq!(cancelled.state, JobState::Canceled);
        assert_eq!(cancelled.payment_status.as_deref(), Some("escrowed"));
        assert!(matches!(
            c.cancel(&v.job_id).await,
            Err(ClientError::Conflict { .. })
        ));
        let req = RefundRequest {
            job_id: v.job_id.to_string(),
            payment_id: cancelled.payment_id.clone().unwrap(),
            reason: "buyer_requested".into(),
        };
        assert_eq!(c.refund(&req).await.unwrap().status, "refunded");
        assert_eq!(c.balance_of("w"), Money::from_int(5));
        assert!(c.refund(&req).await.is_err(), "refunded once only");
        // As on the real service, only the payment view knows.
        let v = c.job(&v.job_id).await.unwrap();
        assert_eq!(v.payment_status.as_deref(), Some("escrowed"));
        assert_eq!(c.payment(&v.job_id).await.unwrap().status, "refunded");
    }

    #[tokio::test]
    async fn injected_errors_come_before_or_after_the_effect() {
        let c = FakeCoordinator::new();
        c.fail_next(Call::Submit, FakeCoordinator::unavailable("/v1/jobs"))
            .lose_next_answer(Call::Submit, FakeCoordinator::unavailable("/v1/jobs"));
        assert!(c.submit(&create("a", "w", 0), None).await.is_err());
        assert!(c.jobs().is_empty(), "failed before: nothing created");
        assert!(c.submit(&create("a", "w", 0), None).await.is_err());
        assert_eq!(c.jobs().len(), 1, "lost answer: the job exists");
        let list = c.list(&ListQuery::default()).await.unwrap();
        assert_eq!(list.items[0].client_ref(), Some("r1/a"));
        assert!(c.submit(&create("a", "w", 0), None).await.is_ok());
        assert_eq!(c.calls(Call::Submit), 3);
    }

    #[tokio::test]
    async fn a_payer_named_by_its_address_pays_from_its_wallet() {
        let c = FakeCoordinator::new();
        c.fund("w", Money::from_int(5));
        let b = c.balance("w").await.unwrap();
        let address = b.address.unwrap();
        c.submit(&create("a", &address, 2), None).await.unwrap();
        assert_eq!(c.balance_of("w"), Money::from_int(3));
    }

    #[test]
    fn the_step_is_read_from_the_client_reference() {
        assert_eq!(step_of("r1/analyze"), Some("analyze"));
        assert_eq!(step_of("r1/analyze#2"), Some("analyze"));
        assert_eq!(step_of("r1/s[tone=a#b]"), Some("s[tone=a#b]"));
        assert_eq!(step_of("no-ref"), None);
    }
}
