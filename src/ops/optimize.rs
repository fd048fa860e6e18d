//! `optimize`: ask for a resource allocation within the policy's caps, compare what was granted with
//! what was asked (the real service sizes allocations from the task type alone), and estimate the cost
//! from the cheapest GPU offer, since the service gives none.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Conn, Done, OpError};
use crate::api::{AllocateRequest, Allocation, TaskRequirements};
use crate::client::Coordinator;
use crate::model::{Operation, OptimizeRequest, Outcome};
use crate::money::Money;
use crate::policy::{Policy, check_optimize};

/// An allocation and its cost estimate.
#[derive(Clone, Debug)]
pub struct Optimized {
    /// What was granted.
    pub allocation: Allocation,
    /// Cheapest GPU offer × GPUs granted × hours, when it could be made.
    pub estimated_cost: Option<Money>,
}

/// The request body for an allocation.
pub fn allocate_request(req: &OptimizeRequest) -> AllocateRequest {
    AllocateRequest {
        agent_id: req.agent_id.clone(),
        task_requirements: TaskRequirements {
            cpu_cores: req.cpu,
            memory_gb: req.memory_gb,
            gpu_count: req.gpu,
            gpu_memory_gb: 0.0,
            storage_gb: 0.0,
            network_bandwidth: 0.0,
            task_type: req.task_type.clone(),
        },
        optimization_target: req.target.clone(),
        priority_level: "normal".into(),
    }
}

/// Allocates resources.
pub async fn optimize<C: Coordinator>(
    conn: &Conn<'_, C>,
    req: &OptimizeRequest,
    policy: &Policy,
) -> Result<Done<Optimized>, OpError> {
    let broken = check_optimize(req, policy);
    if !broken.is_empty() {
        return Err(OpError::Rules(broken));
    }
    let body = allocate_request(req);
    let allocation = conn.call(|c| c.allocate(&body)).await?;
    let mut offers_error = None;
    let estimated_cost = match req.duration {
        Some(d) if allocation.gpu_count > 0.0 => match conn.call(|c| c.gpu_offers(Some(500))).await
        {
            Ok(offers) => offers
                .iter()
                .map(|o| o.price_per_hour)
                .min()
                .and_then(|cheapest| cost(cheapest, allocation.gpu_count, d)),
            Err(e) => {
                offers_error = Some(e.to_string());
                None
            }
        },
        _ => None,
    };
    let mut outcome = outcome(req, &allocation, estimated_cost);
    if let Some(e) = offers_error {
        outcome
            .issues
            .retain(|i| !i.starts_with("no cost estimate"));
        outcome
            .issues
            .push(format!("no cost estimate: GPU offers unavailable ({e})"));
    }
    Ok(Done {
        answer: Optimized {
            allocation,
            estimated_cost,
        },
        outcome: outcome.settle(),
    })
}

/// Price per GPU hour × GPUs × hours, exact to 8 decimals.
fn cost(per_hour: Money, gpus: f64, d: Duration) -> Option<Money> {
    let hours = rust_decimal::Decimal::from(d.as_secs()) / rust_decimal::Decimal::from(3600);
    let gpus = Money::from_f64(gpus)?;
    Some(Money((per_hour.0 * gpus.0 * hours).round_dp(8).normalize()))
}

/// The outcome of an allocation: what was granted against what was asked, and the cost estimate.
pub fn outcome(
    req: &OptimizeRequest,
    granted: &Allocation,
    estimated_cost: Option<Money>,
) -> Outcome {
    let mut out = Outcome::new(
        Operation::Optimize,
        format!(
            "Resources allocated to agent {} ({}, {})",
            granted.agent_id, granted.allocation_id, granted.optimization_target
        ),
    );
    out.wallet = req.wallet.clone();
    out.status = Some(crate::model::OpStatus::Completed);
    out.resource_allocation = serde_json::to_value(granted).ok();
    for (what, want, got) in [
        ("cpu cores", req.cpu, granted.cpu_cores),
        ("memory GB", req.memory_gb, granted.memory_gb),
        ("GPUs", req.gpu, granted.gpu_count),
    ] {
        if (want - got).abs() > 1e-9 {
            out.issues
                .push(format!("asked for {want} {what}, granted {got}"));
        }
    }
    if !out.issues.is_empty() {
        out.recommendations.push(
            "The service sizes allocations from the task type: plan for what was granted, or ask again with another target"
                .into(),
        );
    }
    let mut metrics = Map::new();
    metrics.insert(
        "asked".into(),
        serde_json::to_value(allocate_request(req).task_requirements).unwrap_or(Value::Null),
    );
    if let Some(d) = req.duration {
        metrics.insert("duration_seconds".into(), json!(d.as_secs_f64()));
        out.estimated_time = Some(d.as_secs_f64());
    }
    match estimated_cost {
        Some(c) => {
            metrics.insert("estimated_cost".into(), json!(c));
        }
        None if req.duration.is_some() && granted.gpu_count > 0.0 => out
            .issues
            .push("no cost estimate: no GPU offers were available".into()),
        None => {}
    }
    out.performance_metrics = Some(crate::model::JsonText::of(&metrics));
    out
}
