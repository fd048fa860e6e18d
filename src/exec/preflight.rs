//! The balance preflight: before anything is submitted, each wallet the plan pays from must hold what
//! the plan will spend from it, so that a run that cannot be paid for is refused whole instead of
//! failing half-way with some jobs already paid.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::client::Coordinator;
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

/// Adds up what the plan will spend per wallet and compares it with each balance. Returns one message
/// per wallet that cannot pay; an error when a balance cannot be read (each read is retried with the
/// plan's default retry policy), worded as the operations word it (where balances come from, a wallet
/// the daemon does not know).
pub async fn preflight<C: Coordinator>(
    plan: &CheckedPlan,
    coord: &C,
    already_paid: &BTreeMap<String, Money>,
    seed: Option<u64>,
) -> Result<Vec<String>, OpError> {
    let (mut spend, _unknown) = crate::plan::spend::spend_per_wallet(plan);
    // A resumed run has paid for the jobs it submitted already: only the rest must be covered.
    for (wallet, paid) in already_paid {
        if let Some(s) = spend.get_mut(wallet) {
            *s = if *s > *paid { *s - *paid } else { Money::ZERO };
        }
    }
    spend.retain(|_, m| *m > Money::ZERO);
    let jitter = Jitter(Mutex::new(match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    }));
    let conn = Conn::new(coord)
        .with_retry(RetryPolicy::new(
            plan.plan.defaults.retry.clone().unwrap_or_default(),
        ))
        .with_trace(&jitter);
    let mut problems = Vec::new();
    for (wallet, needed) in &spend {
        let held = crate::ops::balance::read(&conn, wallet).await?.balance;
        if held < *needed {
            problems.push(format!(
                "wallet {wallet} holds {held} AITBC, the plan needs {needed}: {} short",
                *needed - held
            ));
        }
    }
    Ok(problems)
}
