//! The requests a plan renders and the operations send: a job to submit and resources to allocate,
//! with every template already rendered. The plan checker produces them, the client rules check them
//! and the operation layer turns them into the coordinator's request bodies.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::money::Money;

/// A job to submit: what a `submit` or `job` step sends, and what `job submit` and `op` build.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobRequest {
    /// One of the six job types (checked by the client rules, so written as given).
    pub job_type: String,
    /// The paying wallet: its name, or its address.
    pub wallet: String,
    /// The payment.
    pub payment: Money,
    /// The rendered prompt.
    pub prompt: String,
    /// The model.
    pub model: Option<String>,
    /// A chosen provider.
    pub provider_id: Option<String>,
    /// A custom Ollama endpoint.
    pub endpoint: Option<String>,
    /// Extra payload keys (rendered).
    pub parameters: Map<String, Value>,
    /// Constraints (rendered).
    pub constraints: Map<String, Value>,
    /// Time to live.
    pub ttl: Option<Duration>,
}

/// Resources to allocate, with every template rendered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizeRequest {
    /// The agent.
    pub agent_id: String,
    /// Cores.
    pub cpu: f64,
    /// Memory in GB.
    pub memory_gb: f64,
    /// GPUs.
    pub gpu: f64,
    /// Duration of the allocation.
    pub duration: Option<Duration>,
    /// The job type.
    pub task_type: String,
    /// The optimization target.
    pub target: String,
    /// The wallet, for reports.
    pub wallet: Option<String>,
}
