//! What a plan will spend, per wallet, as far as the checked plan knows it before it runs: the sums the
//! dry run shows and the executor's balance preflight compares with each wallet's balance.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::CheckedPlan;
use super::template::has_template;
use super::types::When;
use crate::money::Money;

/// What a plan will spend per wallet (every `submit` and `job` step, matrix copies counted, steps with
/// a `when` counted as if they run, unless it is plainly `false`), and the ids of the steps whose wallet
/// or payment is only known at run time (left out of the sums).
pub fn spend_per_wallet(plan: &CheckedPlan) -> (BTreeMap<String, Money>, Vec<String>) {
    spend_per_wallet_except(plan, &std::collections::HashSet::new())
}

/// [`spend_per_wallet`], leaving out the steps in `paid_elsewhere` (taken from an earlier run with
/// `--from-run`: they pay nothing).
pub fn spend_per_wallet_except(
    plan: &CheckedPlan,
    paid_elsewhere: &std::collections::HashSet<String>,
) -> (BTreeMap<String, Money>, Vec<String>) {
    let mut spend: BTreeMap<String, Money> = BTreeMap::new();
    let mut runtime = Vec::new();
    for step in plan
        .steps
        .iter()
        .filter(|s| !paid_elsewhere.contains(&s.id))
    {
        if !matches!(step.kind.name(), "submit" | "job") || step.when == Some(When::Bool(false)) {
            continue;
        }
        let spec = step.spec();
        let wallet = spec.get("wallet").and_then(|w| w.as_str());
        let payment = spec.get("payment").and_then(|p| match p {
            serde_json::Value::Number(n) => Money::from_str(&n.to_string()).ok(),
            serde_json::Value::String(s) if !has_template(s) => Money::from_str(s).ok(),
            _ => None,
        });
        match (wallet, payment) {
            (Some(w), Some(p)) if !has_template(w) => {
                *spend.entry(w.to_string()).or_default() += p;
            }
            _ => runtime.push(step.id.clone()),
        }
    }
    (spend, runtime)
}
