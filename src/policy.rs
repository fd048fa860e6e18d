//! Client-side rules: job types, minimum payments, prompt length, resource caps, balance preflight.
//! (Placeholders until the checking half of issue 2 lands.)

use std::collections::BTreeMap;

use crate::money::Money;
use crate::plan::CheckedPlan;
use crate::plan::check::{JobRequest, OptimizeRequest};
use crate::plan::types::Policy;

/// What the plan will spend per wallet, and the steps whose spend is only known at run time.
pub fn spend_per_wallet(_plan: &CheckedPlan) -> (BTreeMap<String, Money>, Vec<String>) {
    (BTreeMap::new(), Vec::new())
}
/// Problems with a rendered job request.
pub fn check_job(_req: &JobRequest, _policy: &Policy) -> Vec<String> {
    Vec::new()
}
/// Problems with a rendered optimize request.
pub fn check_optimize(_req: &OptimizeRequest, _policy: &Policy) -> Vec<String> {
    Vec::new()
}
