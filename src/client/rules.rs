//! The client-side rules of the operator skill, checked before anything is sent (the real coordinator
//! checks none of them): the six job types, a prompt of at most 4000 characters, a payment within the
//! service's bounds and above a per-type minimum, `AITBC` as the currency, the buyer being the wallet,
//! and a balance that covers the payment.
//!
//! These are the defaults the job commands and `op` apply; the numbers come from `crate::policy`, which
//! the plan checker and the executor use too.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::api::{
    AllocateRequest, CURRENCY, JOB_TYPES, JobCreate, OPTIMIZATION_TARGETS, TaskRequirements,
};
use crate::money::Money;

// One source for the numbers: the plan checker's policy module. The job commands and `op` apply its
// defaults; a plan's `policy` can tighten them.
pub use crate::policy::{
    DEFAULT_MAX_CPU as MAX_CPU, DEFAULT_MAX_DURATION as MAX_DURATION, DEFAULT_MAX_GPU as MAX_GPU,
    DEFAULT_MAX_MEMORY_GB as MAX_MEMORY_GB, MAX_PROMPT_CHARS,
};

/// The service's lower bound on a payment (below it the real service silently skips the payment).
pub fn min_payment_bound() -> Money {
    crate::policy::payment_floor()
}

/// The service's upper bound on a payment.
pub fn max_payment_bound() -> Money {
    Money::from_int(crate::policy::PAYMENT_CEILING)
}

/// The built-in minimum payment of a job type, in AITBC: the table of `crate::policy`
/// (`DEFAULT_MIN_PAYMENT`), which plans may override in their `policy.min_payment`.
pub fn default_min_payment(job_type: &str) -> Money {
    crate::policy::min_payment(job_type, &crate::plan::types::Policy::default())
}

/// A rule broken before anything was sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// Not one of the six job types.
    #[error("invalid job type `{given}`{}: valid job types are {}", suggestion_text(.suggestion), JOB_TYPES.join(", "))]
    UnknownJobType {
        /// What was given.
        given: String,
        /// The closest valid type, if one is close.
        suggestion: Option<String>,
    },
    /// An empty prompt.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A prompt over the limit.
    #[error("the prompt is {chars} characters long; the limit is {max}")]
    PromptTooLong {
        /// Its length in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// Outside 0.01 … 1,000,000.
    #[error("payment {payment} AITBC is outside the service's bounds {min} … {max}")]
    PaymentOutOfBounds {
        /// The payment.
        payment: Money,
        /// Lower bound.
        min: Money,
        /// Upper bound.
        max: Money,
    },
    /// Below the job type's minimum.
    #[error("payment {payment} AITBC is below the minimum for {job_type} jobs: {minimum} AITBC")]
    PaymentBelowMinimum {
        /// The job type.
        job_type: String,
        /// The payment.
        payment: Money,
        /// The minimum.
        minimum: Money,
    },
    /// Not `AITBC`.
    #[error("currency `{given}` is not accepted: payments are in AITBC")]
    Currency {
        /// What was given.
        given: String,
    },
    /// No wallet.
    #[error("a wallet is required to pay for a job")]
    NoWallet,
    /// The wallet cannot pay.
    #[error(
        "insufficient balance: wallet {wallet} holds {held} AITBC, the job needs {needed} AITBC ({} short)",
        *needed - *held
    )]
    InsufficientBalance {
        /// The wallet.
        wallet: String,
        /// What it holds.
        held: Money,
        /// What is needed.
        needed: Money,
    },
    /// Not one of the optimization targets.
    #[error("invalid optimization target `{given}`: valid targets are {}", OPTIMIZATION_TARGETS.join(", "))]
    UnknownTarget {
        /// What was given.
        given: String,
    },
    /// A resource request out of range.
    #[error("{what} {value} is out of range: it must be {range}")]
    Resource {
        /// `cpu`, `memory`, `gpu`, `duration`.
        what: &'static str,
        /// What was asked.
        value: String,
        /// The allowed range, in words.
        range: String,
    },
    /// A required field is missing.
    #[error("`{0}` is required")]
    Missing(&'static str),
}

fn suggestion_text(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// The closest job type to `given`, if it is within two edits.
pub fn suggest_job_type(given: &str) -> Option<String> {
    let lower = given.to_ascii_lowercase();
    JOB_TYPES
        .iter()
        .map(|t| (strsim::levenshtein(&lower, t), *t))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, t)| t.to_string())
}

/// Checks a job type.
pub fn check_job_type(job_type: &str) -> Result<(), RuleError> {
    if JOB_TYPES.contains(&job_type) {
        Ok(())
    } else {
        Err(RuleError::UnknownJobType {
            given: job_type.to_string(),
            suggestion: suggest_job_type(job_type),
        })
    }
}

/// What a submit needs, before it becomes a [`JobCreate`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubmitParams {
    /// One of the six job types.
    pub job_type: String,
    /// The prompt.
    pub prompt: String,
    /// The payment in AITBC.
    pub payment: Money,
    /// The currency as given (`None` means AITBC).
    pub currency: Option<String>,
    /// The paying wallet; it is also the `buyer_address`.
    pub wallet: String,
    /// The model (`payload.model`).
    pub model: Option<String>,
    /// A chosen provider (`provider_address`).
    pub provider_id: Option<String>,
    /// A custom Ollama endpoint (`payload.endpoint`).
    pub endpoint: Option<String>,
    /// A client reference (`payload.client_ref`), for finding a job whose response was lost.
    pub client_ref: Option<String>,
    /// Time to live.
    pub ttl: Option<Duration>,
    /// Extra payload keys.
    pub parameters: Map<String, Value>,
}

/// Every rule a submit breaks (empty when it may be sent). The balance is checked separately, with
/// [`check_balance`], because it needs the network.
pub fn check_submit(p: &SubmitParams) -> Vec<RuleError> {
    let mut errors = Vec::new();
    let type_ok = check_job_type(&p.job_type)
        .map_err(|e| errors.push(e))
        .is_ok();
    let chars = p.prompt.chars().count();
    if p.prompt.trim().is_empty() {
        errors.push(RuleError::EmptyPrompt);
    } else if chars > MAX_PROMPT_CHARS {
        errors.push(RuleError::PromptTooLong {
            chars,
            max: MAX_PROMPT_CHARS,
        });
    }
    if p.wallet.trim().is_empty() {
        errors.push(RuleError::NoWallet);
    }
    if let Some(c) = &p.currency
        && !c.eq_ignore_ascii_case(CURRENCY)
        && !c.eq_ignore_ascii_case("AIT")
    {
        errors.push(RuleError::Currency { given: c.clone() });
    }
    let (min, max) = (min_payment_bound(), max_payment_bound());
    if p.payment < min || p.payment > max {
        errors.push(RuleError::PaymentOutOfBounds {
            payment: p.payment,
            min,
            max,
        });
    } else if type_ok {
        let minimum = default_min_payment(&p.job_type);
        if p.payment < minimum {
            errors.push(RuleError::PaymentBelowMinimum {
                job_type: p.job_type.clone(),
                payment: p.payment,
                minimum,
            });
        }
    }
    errors
}

/// Refuses a payment the wallet's balance does not cover.
pub fn check_balance(wallet: &str, held: Money, needed: Money) -> Result<(), RuleError> {
    if held >= needed {
        Ok(())
    } else {
        Err(RuleError::InsufficientBalance {
            wallet: wallet.to_string(),
            held,
            needed,
        })
    }
}

/// The request body for a submit: `payload.type`/`prompt`/`model`, `payment_currency: AITBC` and
/// `buyer_address` = the wallet.
pub fn job_create(p: &SubmitParams) -> JobCreate {
    let mut payload = p.parameters.clone();
    payload.insert("type".into(), Value::String(p.job_type.clone()));
    payload.insert("prompt".into(), Value::String(p.prompt.clone()));
    if let Some(m) = &p.model {
        payload.insert("model".into(), Value::String(m.clone()));
    }
    if let Some(e) = &p.endpoint {
        payload.insert("endpoint".into(), Value::String(e.clone()));
    }
    if let Some(r) = &p.client_ref {
        payload.insert("client_ref".into(), Value::String(r.clone()));
    }
    JobCreate {
        payload,
        constraints: None,
        ttl_seconds: p.ttl.map(|d| d.as_secs().max(1)),
        payment_amount: Some(p.payment),
        payment_currency: Some(CURRENCY.to_string()),
        buyer_address: Some(p.wallet.clone()),
        provider_address: p.provider_id.clone(),
    }
}

/// What an optimize needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizeParams {
    /// The agent.
    pub agent_id: String,
    /// CPU cores.
    pub cpu: f64,
    /// Memory in GB.
    pub memory_gb: f64,
    /// GPUs.
    pub gpu: f64,
    /// How long the resources are needed.
    pub duration: Option<Duration>,
    /// The job type the resources are for (default inference).
    pub task_type: Option<String>,
    /// The optimization target (default efficiency).
    pub target: Option<String>,
}

/// Every rule an optimize request breaks.
pub fn check_optimize(p: &OptimizeParams) -> Vec<RuleError> {
    let mut errors = Vec::new();
    if p.agent_id.trim().is_empty() {
        errors.push(RuleError::Missing("agent_id"));
    }
    let mut range = |what: &'static str, v: f64, lo_exclusive: bool, max: f64| {
        let bad = !v.is_finite() || v > max || v < 0.0 || (lo_exclusive && v == 0.0);
        if bad {
            let lo = if lo_exclusive {
                "above 0"
            } else {
                "at least 0"
            };
            errors.push(RuleError::Resource {
                what,
                value: v.to_string(),
                range: format!("{lo} and at most {max}"),
            });
        }
    };
    range("cpu", p.cpu, true, MAX_CPU);
    range("memory", p.memory_gb, true, MAX_MEMORY_GB);
    range("gpu", p.gpu, false, MAX_GPU);
    if let Some(d) = p.duration
        && (d.is_zero() || d > MAX_DURATION)
    {
        errors.push(RuleError::Resource {
            what: "duration",
            value: format!("{}s", d.as_secs()),
            range: "above 0 and at most 86400s (24h)".into(),
        });
    }
    if let Some(t) = &p.task_type
        && let Err(e) = check_job_type(t)
    {
        errors.push(e);
    }
    if let Some(t) = &p.target
        && !OPTIMIZATION_TARGETS.contains(&t.as_str())
    {
        errors.push(RuleError::UnknownTarget { given: t.clone() });
    }
    errors
}

/// The request body for an optimize.
pub fn allocate_request(p: &OptimizeParams) -> AllocateRequest {
    AllocateRequest {
        agent_id: p.agent_id.clone(),
        task_requirements: TaskRequirements {
            cpu_cores: p.cpu,
            memory_gb: p.memory_gb,
            gpu_count: p.gpu,
            gpu_memory_gb: 0.0,
            storage_gb: 0.0,
            network_bandwidth: 0.0,
            task_type: p.task_type.clone().unwrap_or_else(|| "inference".into()),
        },
        optimization_target: p.target.clone().unwrap_or_else(|| "efficiency".into()),
        priority_level: "normal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_params() -> SubmitParams {
        SubmitParams {
            job_type: "inference".into(),
            prompt: "hello".into(),
            payment: Money::from_int(2),
            wallet: "w".into(),
            ..SubmitParams::default()
        }
    }

    fn money(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn a_good_submit_passes_and_builds_the_body() {
        let mut p = ok_params();
        p.model = Some("llama2".into());
        p.client_ref = Some("run-1/a".into());
        assert_eq!(check_submit(&p), vec![]);
        let body = serde_json::to_value(job_create(&p)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "payload": {"type": "inference", "prompt": "hello", "model": "llama2", "client_ref": "run-1/a"},
                "payment_amount": 2, "payment_currency": "AITBC", "buyer_address": "w"
            })
        );
    }

    #[test]
    fn an_unknown_type_lists_the_valid_ones_and_suggests() {
        let mut p = ok_params();
        p.job_type = "inferense".into();
        let errors = check_submit(&p);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "invalid job type `inferense` (did you mean `inference`?): valid job types are inference, training, multimodal, ollama, streaming, monitoring"
        );
        p.job_type = "video-upscale".into();
        assert_eq!(
            check_submit(&p)[0],
            RuleError::UnknownJobType {
                given: "video-upscale".into(),
                suggestion: None
            }
        );
    }

    #[test]
    fn prompt_length_counts_characters() {
        let mut p = ok_params();
        p.prompt = "é".repeat(4000);
        assert_eq!(check_submit(&p), vec![]);
        p.prompt.push('x');
        assert_eq!(
            check_submit(&p),
            vec![RuleError::PromptTooLong {
                chars: 4001,
                max: 4000
            }]
        );
        p.prompt = "  ".into();
        assert_eq!(check_submit(&p), vec![RuleError::EmptyPrompt]);
    }

    #[test]
    fn payment_bounds_and_minimums() {
        let mut p = ok_params();
        for (amount, ok) in [
            ("1", true),
            ("0.99", false),
            ("0.001", false),
            ("1000000", true),
            ("1000000.01", false),
            ("-1", false),
        ] {
            p.payment = money(amount);
            assert_eq!(check_submit(&p).is_empty(), ok, "{amount}");
        }
        p.job_type = "training".into();
        p.payment = money("9.99");
        assert_eq!(
            check_submit(&p)[0].to_string(),
            "payment 9.99 AITBC is below the minimum for training jobs: 10 AITBC"
        );
        p.payment = money("0.001");
        assert!(matches!(
            check_submit(&p)[0],
            RuleError::PaymentOutOfBounds { .. }
        ));
    }

    #[test]
    fn currency_must_be_aitbc() {
        let mut p = ok_params();
        p.currency = Some("AIT".into());
        assert!(check_submit(&p).is_empty());
        p.currency = Some("BTC".into());
        assert_eq!(
            check_submit(&p),
            vec![RuleError::Currency {
                given: "BTC".into()
            }]
        );
        assert_eq!(
            job_create(&ok_params()).payment_currency.as_deref(),
            Some("AITBC")
        );
    }

    #[test]
    fn balance_must_cover_the_payment() {
        assert!(check_balance("w", money("10"), money("10")).is_ok());
        let e = check_balance("trading-wallet", money("120"), money("500")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "insufficient balance: wallet trading-wallet holds 120 AITBC, the job needs 500 AITBC (380 short)"
        );
    }

    #[test]
    fn optimize_limits() {
        let mut p = OptimizeParams {
            agent_id: "a".into(),
            cpu: 4.0,
            memory_gb: 16.0,
            gpu: 1.0,
            duration: Some(Duration::from_secs(3600)),
            task_type: None,
            target: Some("efficiency".into()),
        };
        assert!(check_optimize(&p).is_empty());
        p.cpu = 65.0;
        p.gpu = -1.0;
        p.target = Some("fastest".into());
        let msgs: Vec<String> = check_optimize(&p).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "cpu 65 is out of range: it must be above 0 and at most 64",
                "gpu -1 is out of range: it must be at least 0 and at most 8",
                "invalid optimization target `fastest`: valid targets are speed, accuracy, efficiency, cost, scalability, reliability",
            ]
        );
    }
}
