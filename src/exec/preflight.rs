//! The balance preflight: before anything is submitted, each wallet the plan pays from must hold what
//! the plan will spend from it, so that a run that cannot be paid for is refused whole instead of
//! failing half-way with some jobs already paid.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::client::{ClientError, Coordinator};
use crate::money::Money;
use crate::plan::CheckedPlan;

/// Adds up what the plan will spend per wallet and compares it with each balance. Returns one message
/// per wallet that cannot pay; an error when a balance cannot be read.
pub async fn preflight<C: Coordinator>(
    plan: &CheckedPlan,
    coord: &C,
    already_paid: &BTreeMap<String, Money>,
) -> Result<Vec<String>, ClientError> {
    let (mut spend, _unknown) = crate::policy::spend_per_wallet(plan);
    // A resumed run has paid for the jobs it submitted already: only the rest must be covered.
    for (wallet, paid) in already_paid {
        if let Some(s) = spend.get_mut(wallet) {
            *s = if *s > *paid { *s - *paid } else { Money::ZERO };
        }
    }
    spend.retain(|_, m| *m > Money::ZERO);
    let policy =
        super::retry::RetryPolicy::new(plan.plan.defaults.retry.clone().unwrap_or_default());
    let mut rng = StdRng::from_os_rng();
    let mut problems = Vec::new();
    for (wallet, needed) in &spend {
        let mut n = 1;
        let held = loop {
            match coord.balance(wallet).await {
                Ok(b) => break b.balance,
                Err(e)
                    if n < policy.max_attempts() && policy.retries(super::retry::classify(&e)) =>
                {
                    tokio::time::sleep(policy.delay(n + 1, e.retry_after(), &mut rng)).await;
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        };
        if held < *needed {
            problems.push(format!(
                "wallet {wallet} holds {held} AITBC, the plan needs {needed}: {} short",
                *needed - held
            ));
        }
    }
    Ok(problems)
}
