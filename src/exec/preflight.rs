//! The preflight: before anything is submitted, the coordinator must accept our credentials and each
//! wallet the plan pays from must hold what the plan will spend from it, so that a run that cannot be
//! paid for — or cannot even be sent — is refused whole instead of failing half-way with some jobs
//! already paid.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::api::ListQuery;
use crate::client::{ClientError, Coordinator};
use crate::money::Money;
use crate::ops::retry::RetryPolicy;
use crate::ops::{Conn, OpError, Trace};
use crate::plan::CheckedPlan;

/// Retry jitter for the preflight's balance reads, from the run's seed when it has one.
struct Jitter(Mutex<StdRng>);

impl Trace for Jitter {
    fn delay(&self, policy: &RetryPolicy, next: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = self.0.lock().unwrap_or_else(|p| p.into_inner());
        policy.delay(next, retry_after, &mut *rng)
    }
}

/// Why the preflight could not finish.
#[derive(Debug)]
pub enum PreflightError {
    /// The coordinator did not take our credentials, or could not be asked whether it does.
    Credentials(ClientError),
    /// A balance could not be read (worded as the operations word it: where balances come from, a
    /// wallet the daemon does not know).
    Balance(OpError),
}

impl PreflightError {
    /// The exit code for a run that stops here.
    pub fn exit_code(&self) -> i32 {
        match self {
            PreflightError::Credentials(e) => crate::exit::for_client(e),
            PreflightError::Balance(e) => crate::exit::for_op(e),
        }
    }
}

impl std::fmt::Display for PreflightError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PreflightError::Credentials(e @ ClientError::Auth { .. }) => write!(
                f,
                "credentials refused, nothing was submitted: {e}. Set AITBC_TOKEN (or AITBC_TOKEN_FILE) to a valid client token for this coordinator (tokens are valid for 24 h)"
            ),
            PreflightError::Credentials(e) => write!(
                f,
                "the coordinator could not be asked before the first submit, nothing was submitted: {e}"
            ),
            PreflightError::Balance(e) => write!(f, "balance preflight failed: {e}"),
        }
    }
}

/// Asks the coordinator once (one job read) whether it takes our credentials — with `probe`, and only
/// when the run will pay for something — then, with `balances`, compares what the run will still pay
/// per wallet (`spend`, from [`still_to_pay`]) with each balance. Returns one message per wallet that
/// cannot pay; an error when the coordinator refuses us or a balance cannot be read (each request is
/// retried with the plan's default retry policy, within the plan's default step timeout).
pub async fn preflight<C: Coordinator>(
    plan: &CheckedPlan,
    coord: &C,
    spend: &BTreeMap<String, Money>,
    seed: Option<u64>,
    probe: bool,
    balances: bool,
) -> Result<Vec<String>, PreflightError> {
    let jitter = Jitter(Mutex::new(match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    }));
    // A Retry-After of a year is not waited for here either: the preflight gets a step's time.
    let timeout = plan
        .plan
        .defaults
        .timeout
        .map_or(crate::plan::check::DEFAULT_TIMEOUT, |t| t.get());
    let conn = Conn::new(coord)
        .with_retry(RetryPolicy::new(
            plan.plan.defaults.retry.clone().unwrap_or_default(),
        ))
        .with_trace(&jitter)
        .with_deadline(tokio::time::Instant::now() + timeout);
    if probe && !spend.is_empty() {
        let one = ListQuery {
            limit: Some(1),
            ..ListQuery::default()
        };
        conn.call(|c| c.list(&one))
            .await
            .map_err(PreflightError::Credentials)?;
    }
    let mut problems = Vec::new();
    if !balances {
        return Ok(problems);
    }
    for (wallet, needed) in spend {
        let held = crate::ops::balance::read(&conn, wallet)
            .await
            .map_err(PreflightError::Balance)?
            .balance;
        if held < *needed {
            problems.push(format!(
                "wallet {wallet} holds {held} AITBC, the plan needs {needed}: {} short",
                *needed - held
            ));
        }
    }
    Ok(problems)
}

/// What a run will still pay per wallet: the plan's spend ([`crate::plan::spend::spend_per_wallet`])
/// less what a resumed run and the cache have paid already; wallets with nothing left are dropped.
pub fn still_to_pay(
    mut spend: BTreeMap<String, Money>,
    already_paid: &BTreeMap<String, Money>,
) -> BTreeMap<String, Money> {
    for (wallet, paid) in already_paid {
        if let Some(s) = spend.get_mut(wallet) {
            *s = if *s > *paid { *s - *paid } else { Money::ZERO };
        }
    }
    spend.retain(|_, m| *m > Money::ZERO);
    spend
}

/// The longest the steps still to run may take by their timeouts: each step is stopped at its
/// timeout plus the 30 s backstop (a `wait` at its own timeout), and `concurrency` steps run at once,
/// so by Graham's bound for list scheduling the run ends within `W / c + (1 − 1/c) · L`, where `W` is
/// the sum of the steps' bounds and `L` the longest chain of them through `needs`. Steps `done` cost
/// nothing (a resumed run keeps them).
pub fn longest_run(
    plan: &CheckedPlan,
    concurrency: usize,
    done: impl Fn(&str) -> bool,
) -> Duration {
    use crate::plan::checked::StepKind;
    let bound = |s: &crate::plan::PlannedStep| -> Duration {
        if done(&s.id) {
            return Duration::ZERO;
        }
        let own = match &s.kind {
            StepKind::Wait(w) => w.timeout.map_or(s.timeout, |d| d.get()),
            _ => s.timeout,
        };
        own + Duration::from_secs(30)
    };
    // Steps come in an order where what a step needs is before it (levels ascend).
    let mut order: Vec<&crate::plan::PlannedStep> = plan.steps.iter().collect();
    order.sort_by_key(|s| s.level);
    let mut chain: std::collections::HashMap<&str, Duration> = std::collections::HashMap::new();
    let mut total = Duration::ZERO;
    let mut longest = Duration::ZERO;
    for s in order {
        let b = bound(s);
        let before = s
            .needs
            .iter()
            .filter_map(|n| chain.get(n.as_str()))
            .max()
            .copied()
            .unwrap_or(Duration::ZERO);
        let end = before + b;
        chain.insert(s.id.as_str(), end);
        longest = longest.max(end);
        total += b;
    }
    let c = concurrency.max(1) as u32;
    total / c + longest.saturating_sub(longest / c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> CheckedPlan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, text).unwrap();
        crate::plan::load(&path, &crate::plan::LoadOptions::default())
            .unwrap_or_else(|d| panic!("{}", d[0]))
    }

    #[test]
    fn the_longest_run_follows_the_chain_and_the_slots() {
        // a (10m) → b (20m); c (5m) beside them; each + the 30 s backstop.
        let p = plan(
            r#"
version: 1
name: chain
steps:
  - id: a
    timeout: 10m
    job: {job_type: inference, wallet: w, payment: 2, prompt: "a"}
  - id: b
    needs: [a]
    timeout: 20m
    job: {job_type: inference, wallet: w, payment: 2, prompt: "b"}
  - id: c
    timeout: 5m
    job: {job_type: inference, wallet: w, payment: 2, prompt: "c"}
"#,
        );
        let secs = |d: Duration| d.as_secs_f64();
        // W = 10m30s + 20m30s + 5m30s = 2190 s, L = a → b = 1860 s;
        // 16 slots: W/16 + L·15/16 = 136.875 + 1743.75 s.
        assert_eq!(secs(longest_run(&p, 16, |_| false)), 1880.625);
        // One slot: everything in turn.
        assert_eq!(secs(longest_run(&p, 1, |_| false)), 2190.0);
        // A resumed run whose `a` is done: b and c remain (20m30s + 5m30s).
        assert_eq!(secs(longest_run(&p, 1, |id| id == "a")), 1560.0);
    }
}
