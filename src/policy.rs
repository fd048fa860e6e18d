//! Client-side rules: job types, minimum payments, prompt length, resource caps, and the spend per
//! wallet for the balance preflight.
//!
//! The real coordinator checks none of this, so the runner does, twice: at load on every value that is
//! known then, and in the executor on the rendered request just before it is sent (values that come
//! from another step's output are only known then). Both call the same pure functions here.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::api::{JOB_TYPES, OPTIMIZATION_TARGETS};
use crate::money::Money;
use crate::plan::check::{CheckedPlan, JobRequest, OptimizeRequest};
use crate::plan::diag::suggest;
use crate::plan::template::has_template;
use crate::plan::types::Policy;

/// The built-in minimum payment per job type, in AITBC. `policy.min_payment` may raise or lower these
/// (never below [`PAYMENT_FLOOR`]).
pub const DEFAULT_MIN_PAYMENT: [(&str, i64); 6] = [
    ("inference", 1),
    ("training", 10),
    ("multimodal", 5),
    ("ollama", 1),
    ("streaming", 1),
    ("monitoring", 1),
];

/// The smallest payment the service accepts: 0.01 AITBC.
pub fn payment_floor() -> Money {
    Money(rust_decimal::Decimal::new(1, 2))
}

/// The smallest payment the service accepts, as text.
pub const PAYMENT_FLOOR: &str = "0.01";

/// The largest payment the service accepts: 1,000,000 AITBC.
pub const PAYMENT_CEILING: i64 = 1_000_000;

/// The longest prompt the service accepts, in characters. A policy may lower it, not raise it.
pub const MAX_PROMPT_CHARS: usize = 4000;

/// Default cap on CPU cores for `optimize`.
pub const DEFAULT_MAX_CPU: f64 = 64.0;
/// Default cap on memory (GB) for `optimize`.
pub const DEFAULT_MAX_MEMORY_GB: f64 = 512.0;
/// Default cap on GPUs for `optimize`.
pub const DEFAULT_MAX_GPU: f64 = 8.0;
/// Default cap on an allocation's duration for `optimize`: 24 hours.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A broken rule. The executor prints these; the loader turns them into diagnostics at the field
/// ([`PolicyError::field`]) they are about.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// Not one of the six job types.
    #[error("unknown job type `{job_type}` (valid: {})", JOB_TYPES.join(", "))]
    UnknownJobType {
        /// What was written.
        job_type: String,
        /// The closest valid type.
        suggestion: Option<String>,
    },
    /// Less than the minimum for the job type.
    #[error("payment {payment} is below the minimum of {minimum} AITBC for `{job_type}` jobs")]
    PaymentBelowMinimum {
        /// The job type.
        job_type: String,
        /// The payment.
        payment: Money,
        /// The minimum.
        minimum: Money,
    },
    /// More than the maximum.
    #[error("payment {payment} is above the maximum of {maximum} AITBC")]
    PaymentAboveMaximum {
        /// The payment.
        payment: Money,
        /// The maximum.
        maximum: Money,
    },
    /// The prompt is longer than the limit.
    #[error("prompt is {chars} characters long; the limit is {limit}")]
    PromptTooLong {
        /// Its length in characters.
        chars: usize,
        /// The limit.
        limit: usize,
    },
    /// The prompt is empty.
    #[error("prompt is empty")]
    EmptyPrompt,
    /// An `optimize` request asks for more than its cap.
    #[error("{resource} {requested} is over the cap of {cap}")]
    OverCap {
        /// `cpu`, `memory`, `gpu` or `duration`.
        resource: &'static str,
        /// What was asked for.
        requested: String,
        /// The cap.
        cap: String,
    },
    /// An `optimize` request asks for a negative or zero amount.
    #[error("{resource} must be more than 0, not {requested}")]
    NotPositive {
        /// `cpu`, `memory`, `gpu` or `duration`.
        resource: &'static str,
        /// What was asked for.
        requested: String,
    },
    /// Not an optimization target.
    #[error("unknown optimization target `{target}` (valid: {})", OPTIMIZATION_TARGETS.join(", "))]
    UnknownTarget {
        /// What was written.
        target: String,
        /// The closest valid target.
        suggestion: Option<String>,
    },
}

impl PolicyError {
    /// The request field the error is about (`job_type`, `payment`, `prompt`, `cpu`, …).
    pub fn field(&self) -> &'static str {
        match self {
            PolicyError::UnknownJobType { .. } => "job_type",
            PolicyError::PaymentBelowMinimum { .. } | PolicyError::PaymentAboveMaximum { .. } => {
                "payment"
            }
            PolicyError::PromptTooLong { .. } | PolicyError::EmptyPrompt => "prompt",
            PolicyError::OverCap { resource, .. } | PolicyError::NotPositive { resource, .. } => {
                resource
            }
            PolicyError::UnknownTarget { .. } => "target",
        }
    }

    /// The closest valid name, for "did you mean".
    pub fn suggestion(&self) -> Option<String> {
        match self {
            PolicyError::UnknownJobType { suggestion, .. }
            | PolicyError::UnknownTarget { suggestion, .. } => suggestion.clone(),
            _ => None,
        }
    }
}

/// The least a job of this type must pay: the policy's figure, else the built-in one, never below
/// 0.01.
pub fn min_payment(job_type: &str, policy: &Policy) -> Money {
    let builtin = DEFAULT_MIN_PAYMENT
        .iter()
        .find(|(t, _)| *t == job_type)
        .map(|(_, m)| Money::from_int(*m))
        .unwrap_or_else(payment_floor);
    let m = policy.min_payment.get(job_type).copied().unwrap_or(builtin);
    m.max(payment_floor())
}

/// The most a single job may pay: the policy's figure, never above 1,000,000.
pub fn max_payment(policy: &Policy) -> Money {
    let ceiling = Money::from_int(PAYMENT_CEILING);
    policy.max_payment.map_or(ceiling, |m| m.min(ceiling))
}

/// The longest prompt allowed: the policy's figure, never above 4000.
pub fn max_prompt_chars(policy: &Policy) -> usize {
    policy
        .max_prompt_chars
        .map_or(MAX_PROMPT_CHARS, |n| (n as usize).min(MAX_PROMPT_CHARS))
}

/// Checks that a job type is one of the six.
pub fn check_job_type(job_type: &str) -> Result<(), PolicyError> {
    if JOB_TYPES.contains(&job_type) {
        return Ok(());
    }
    Err(PolicyError::UnknownJobType {
        job_type: job_type.to_string(),
        suggestion: suggest(&job_type.to_ascii_lowercase(), JOB_TYPES)
            .or_else(|| closest_prefix(job_type, &JOB_TYPES)),
    })
}

/// A valid name that starts like `name` (catches `multi`, `train`), when edit distance finds none.
fn closest_prefix(name: &str, candidates: &[&str]) -> Option<String> {
    let n = name.to_ascii_lowercase();
    if n.len() < 3 {
        return None;
    }
    candidates
        .iter()
        .find(|c| c.starts_with(&n) || n.starts_with(*c))
        .map(|c| c.to_string())
}

/// Checks a payment against the minimum for its job type and the maximum.
pub fn check_payment(job_type: &str, payment: Money, policy: &Policy) -> Result<(), PolicyError> {
    let minimum = min_payment(job_type, policy);
    if payment < minimum {
        return Err(PolicyError::PaymentBelowMinimum {
            job_type: job_type.to_string(),
            payment,
            minimum,
        });
    }
    let maximum = max_payment(policy);
    if payment > maximum {
        return Err(PolicyError::PaymentAboveMaximum { payment, maximum });
    }
    Ok(())
}

/// Checks a rendered prompt's length (in characters, not bytes).
pub fn check_prompt(prompt: &str, policy: &Policy) -> Result<(), PolicyError> {
    if prompt.trim().is_empty() {
        return Err(PolicyError::EmptyPrompt);
    }
    let chars = prompt.chars().count();
    let limit = max_prompt_chars(policy);
    if chars > limit {
        return Err(PolicyError::PromptTooLong { chars, limit });
    }
    Ok(())
}

/// Every rule a rendered job request breaks.
pub fn check_job(request: &JobRequest, policy: &Policy) -> Vec<PolicyError> {
    let mut out = Vec::new();
    if let Err(e) = check_job_type(&request.job_type) {
        out.push(e);
    }
    if let Err(e) = check_payment(&request.job_type, request.payment, policy) {
        out.push(e);
    }
    if let Err(e) = check_prompt(&request.prompt, policy) {
        out.push(e);
    }
    out
}

fn fmt_num(f: f64) -> String {
    format!("{f}")
}

/// Checks one resource amount against its cap.
pub fn check_resource(
    resource: &'static str,
    requested: f64,
    cap: f64,
    zero_ok: bool,
) -> Result<(), PolicyError> {
    if !requested.is_finite() || requested < 0.0 || (requested == 0.0 && !zero_ok) {
        return Err(PolicyError::NotPositive {
            resource,
            requested: fmt_num(requested),
        });
    }
    if requested > cap {
        return Err(PolicyError::OverCap {
            resource,
            requested: fmt_num(requested),
            cap: fmt_num(cap),
        });
    }
    Ok(())
}

/// The caps in force: the policy's figures, never above the defaults.
pub fn caps(policy: &Policy) -> (f64, f64, f64, Duration) {
    let r = &policy.resources;
    (
        r.max_cpu
            .map_or(DEFAULT_MAX_CPU, |c| c.min(DEFAULT_MAX_CPU)),
        r.max_memory_gb
            .map_or(DEFAULT_MAX_MEMORY_GB, |c| c.min(DEFAULT_MAX_MEMORY_GB)),
        r.max_gpu
            .map_or(DEFAULT_MAX_GPU, |c| c.min(DEFAULT_MAX_GPU)),
        r.max_duration
            .map_or(DEFAULT_MAX_DURATION, |d| d.get().min(DEFAULT_MAX_DURATION)),
    )
}

/// Checks an optimization target.
pub fn check_target(target: &str) -> Result<(), PolicyError> {
    if OPTIMIZATION_TARGETS.contains(&target) {
        return Ok(());
    }
    Err(PolicyError::UnknownTarget {
        target: target.to_string(),
        suggestion: suggest(&target.to_ascii_lowercase(), OPTIMIZATION_TARGETS),
    })
}

/// Checks an allocation's duration against its cap.
pub fn check_duration(d: Duration, policy: &Policy) -> Result<(), PolicyError> {
    let (_, _, _, cap) = caps(policy);
    let text = |d: Duration| crate::duration::Dur(d).to_string();
    if d.is_zero() {
        return Err(PolicyError::NotPositive {
            resource: "duration",
            requested: text(d),
        });
    }
    if d > cap {
        return Err(PolicyError::OverCap {
            resource: "duration",
            requested: text(d),
            cap: text(cap),
        });
    }
    Ok(())
}

/// Every rule a rendered `optimize` request breaks.
pub fn check_optimize(request: &OptimizeRequest, policy: &Policy) -> Vec<PolicyError> {
    let (cpu, mem, gpu, _) = caps(policy);
    let mut out: Vec<PolicyError> = [
        check_resource("cpu", request.cpu, cpu, false),
        check_resource("memory", request.memory_gb, mem, false),
        check_resource("gpu", request.gpu, gpu, true),
        check_job_type(&request.task_type),
        check_target(&request.target),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    if let Some(d) = request.duration
        && let Err(e) = check_duration(d, policy)
    {
        out.push(e);
    }
    out
}

/// What a plan will spend per wallet (every `submit` and `job` step, matrix copies counted, steps with
/// a `when` counted as if they run, unless it is plainly `false`), and the ids of the steps whose wallet or payment is only known at
/// run time (left out of the sums).
pub fn spend_per_wallet(plan: &CheckedPlan) -> (BTreeMap<String, Money>, Vec<String>) {
    let mut spend: BTreeMap<String, Money> = BTreeMap::new();
    let mut runtime = Vec::new();
    for step in &plan.steps {
        if !matches!(step.kind.name(), "submit" | "job")
            || step.when == Some(crate::plan::types::When::Bool(false))
        {
            continue;
        }
        let wallet = step.spec.get("wallet").and_then(|w| w.as_str());
        let payment = step.spec.get("payment").and_then(|p| match p {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(v: serde_json::Value) -> Policy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn job_types_and_suggestions() {
        assert!(check_job_type("ollama").is_ok());
        let e = check_job_type("inferense").unwrap_err();
        assert_eq!(e.suggestion().as_deref(), Some("inference"));
        assert!(e.to_string().contains("inference, training, multimodal"));
        let e = check_job_type("multi").unwrap_err();
        assert_eq!(e.suggestion().as_deref(), Some("multimodal"));
        assert_eq!(check_job_type("video").unwrap_err().suggestion(), None);
    }

    #[test]
    fn payments() {
        let p = Policy::default();
        assert!(check_payment("training", Money::from_int(10), &p).is_ok());
        assert!(check_payment("training", Money::from_int(9), &p).is_err());
        assert!(check_payment("inference", Money::from_int(1_000_001), &p).is_err());
        let p =
            policy(serde_json::json!({"min_payment": {"inference": 0}, "max_payment": 5000000}));
        assert_eq!(min_payment("inference", &p).to_string(), "0.01");
        assert_eq!(max_payment(&p), Money::from_int(1_000_000));
        let e = check_payment("inference", "0.001".parse().unwrap(), &p).unwrap_err();
        assert_eq!(e.field(), "payment");
    }

    #[test]
    fn prompts_count_characters() {
        let p = Policy::default();
        assert!(check_prompt(&"é".repeat(4000), &p).is_ok());
        assert_eq!(
            check_prompt(&"a".repeat(4001), &p),
            Err(PolicyError::PromptTooLong {
                chars: 4001,
                limit: 4000
            })
        );
        let p = policy(serde_json::json!({"max_prompt_chars": 10}));
        assert!(check_prompt("12345678901", &p).is_err());
        assert_eq!(check_prompt("  ", &p), Err(PolicyError::EmptyPrompt));
    }

    #[test]
    fn optimize_caps() {
        let p = Policy::default();
        let r = OptimizeRequest {
            agent_id: "a".into(),
            cpu: 128.0,
            memory_gb: 16.0,
            gpu: 0.0,
            duration: Some(Duration::from_secs(48 * 3600)),
            task_type: "training".into(),
            target: "speeed".into(),
            wallet: None,
        };
        let errs = check_optimize(&r, &p);
        let fields: Vec<_> = errs.iter().map(|e| e.field()).collect();
        assert_eq!(fields, vec!["cpu", "target", "duration"]);
        assert_eq!(errs[1].suggestion().as_deref(), Some("speed"));
    }
}
