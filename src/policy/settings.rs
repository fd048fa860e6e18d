//! The plan's `policy:` block: the client-side limits a plan may tighten. Defined here, beside the rules
//! that read it, so that the rules need not know the plan; the plan format re-exports it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Dur;
use crate::money::Money;

/// Client-side rules. The real coordinator checks none of these; the runner refuses a plan that breaks
/// them before anything is sent.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The least a job of each type must pay, e.g. `{multimodal: 5, training: 10}`. Types not listed use
    /// the built-in minimum (see docs/plan-format.md).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub min_payment: std::collections::BTreeMap<String, Money>,
    /// The most a single job may pay (default 1,000,000, the service's bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payment: Option<Money>,
    /// The longest prompt, in characters, after templating. Default and ceiling 4000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4000))]
    pub max_prompt_chars: Option<u32>,
    /// Caps for `optimize` requests.
    #[serde(default)]
    pub resources: ResourceCaps,
    /// The most the run may pay in all, in AITBC: every submission counts (a resubmission too), a
    /// confirmed refund is taken off. A run whose known spend is over it is refused before anything is
    /// sent; a submit that would pass it fails its step. `run --max-spend` may lower it, never raise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spend: Option<Money>,
    /// The most each listed wallet may pay in the run, e.g. `{trading-wallet: 600}` (as `max_spend`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub max_spend_per_wallet: std::collections::BTreeMap<String, Money>,
}

/// Caps on what an `optimize` step may ask for.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceCaps {
    /// Most CPU cores. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<f64>,
    /// Most memory in GB. Default 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_gb: Option<f64>,
    /// Most GPUs. Default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gpu: Option<f64>,
    /// Longest allocation. Default 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Dur>,
}
