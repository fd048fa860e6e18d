//! The client-side rules of the operator skill: six job types, a minimum payment per type within the
//! service's bounds, a prompt of at most 4000 characters, AITBC as the currency, a paying wallet with
//! the balance to pay, and resource caps for `optimize`.
//!
//! The real coordinator checks none of this, so the runner does: at load on every value known then
//! (the plan checker), and on the rendered request just before it is sent (the operation layer, for
//! `op`, the `job` commands and the executor alike). All of them call these functions and report the
//! one error type, [`PolicyError`]; a plan's [`Policy`] may tighten the numbers.

pub mod settings;
pub mod spend;

use std::time::Duration;

use crate::api::{CURRENCY, OPTIMIZATION_TARGETS};
use crate::model::JobType;
use crate::model::request::{JobRequest, OptimizeRequest};
use crate::model::suggest::closest;
use crate::money::Money;

pub use settings::{Policy, ResourceCaps};

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

/// A broken rule. Its text never carries the "did you mean" ([`PolicyError::suggestion`]): the plan
/// checker shows that as help under the value, the operator commands as a recommendation.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// Not one of the six job types.
    #[error(
        "invalid job type `{}`: valid job types are {}",
        crate::text::shown(job_type),
        JobType::list()
    )]
    UnknownJobType {
        /// What was written.
        job_type: String,
        /// The closest valid type.
        suggestion: Option<String>,
    },
    /// Below the service's floor (0.01), or not a positive amount: the real service would silently
    /// skip the payment.
    #[error("payment {payment} AITBC is outside the service's bounds {min} … {max}")]
    PaymentOutOfBounds {
        /// The payment.
        payment: Money,
        /// The service's floor.
        min: Money,
        /// The service's ceiling.
        max: Money,
    },
    /// Less than the minimum for the job type.
    #[error(
        "payment {payment} is below the minimum of {minimum} AITBC for `{}` jobs",
        crate::text::shown(job_type)
    )]
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
    /// Not `AITBC`.
    #[error(
        "currency `{}` is not accepted: payments are in AITBC",
        crate::text::shown(given)
    )]
    Currency {
        /// What was given.
        given: String,
    },
    /// No paying wallet.
    #[error("a wallet is required to pay for a job")]
    NoWallet,
    /// The wallet cannot pay.
    #[error(
        "insufficient balance: wallet {} holds {held} AITBC, the job needs {needed} AITBC ({} short)",
        crate::text::shown(wallet),
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
    /// The wallet holds enough, but not with what other runs have reserved of it for their submits
    /// (`exec::reserve`).
    #[error(
        "wallet {} holds {held} AITBC, of which other runs have reserved {reserved} AITBC for their submits; the job needs {needed} AITBC ({} short), so nothing was submitted",
        crate::text::shown(wallet),
        *needed - (*held - *reserved)
    )]
    ReservedByOthers {
        /// The wallet.
        wallet: String,
        /// What it holds.
        held: Money,
        /// What the other runs' live reservations hold of it.
        reserved: Money,
        /// What is needed.
        needed: Money,
    },
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
    #[error(
        "invalid optimization target `{}`: valid targets are {}",
        crate::text::shown(target),
        OPTIMIZATION_TARGETS.join(", ")
    )]
    UnknownTarget {
        /// What was written.
        target: String,
        /// The closest valid target.
        suggestion: Option<String>,
    },
    /// A required field is empty.
    #[error("`{0}` is required")]
    Missing(&'static str),
    /// The spend cap leaves no room for the payment ([`spend::SpendCap`]).
    #[error(
        "spend cap: {payment} AITBC from wallet {wallet} is more than is left: {left} AITBC of {}",
        match cap_wallet {
            Some(w) => format!("the cap of {cap} AITBC for wallet {w}"),
            None => format!("the total cap of {cap} AITBC"),
        }
    )]
    SpendCap {
        /// The paying wallet (or wallets, for a plan).
        wallet: String,
        /// What was to be paid.
        payment: Money,
        /// What is left under the cap.
        left: Money,
        /// The cap.
        cap: Money,
        /// The wallet whose own cap it is; `None` for the total cap.
        cap_wallet: Option<String>,
    },
}

impl PolicyError {
    /// The request field the error is about (`job_type`, `payment`, `prompt`, `cpu`, …).
    pub fn field(&self) -> &'static str {
        match self {
            PolicyError::UnknownJobType { .. } => "job_type",
            PolicyError::PaymentBelowMinimum { .. }
            | PolicyError::PaymentOutOfBounds { .. }
            | PolicyError::PaymentAboveMaximum { .. }
            | PolicyError::InsufficientBalance { .. }
            | PolicyError::ReservedByOthers { .. }
            | PolicyError::SpendCap { .. } => "payment",
            PolicyError::PromptTooLong { .. } | PolicyError::EmptyPrompt => "prompt",
            PolicyError::Currency { .. } => "currency",
            PolicyError::NoWallet => "wallet",
            PolicyError::OverCap { resource, .. } | PolicyError::NotPositive { resource, .. } => {
                resource
            }
            PolicyError::UnknownTarget { .. } => "target",
            PolicyError::Missing(field) => field,
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

    /// What to do about it, in one sentence.
    pub fn advice(&self) -> Option<String> {
        Some(match self {
            PolicyError::UnknownJobType { suggestion, .. } => match suggestion {
                Some(t) => format!("Use job type `{t}`"),
                None => format!("Use one of the job types: {}", JobType::list()),
            },
            PolicyError::PromptTooLong { limit, .. } => {
                format!("Shorten the prompt to {limit} characters or split it into several jobs")
            }
            PolicyError::EmptyPrompt => "Give a prompt with --prompt or --prompt-file".into(),
            PolicyError::PaymentOutOfBounds { min, max, .. } => {
                format!("Pay between {min} and {max} AITBC")
            }
            PolicyError::PaymentBelowMinimum { minimum, .. } => {
                format!("Raise the payment to at least {minimum} AITBC")
            }
            PolicyError::PaymentAboveMaximum { maximum, .. } => {
                format!("Lower the payment to at most {maximum} AITBC")
            }
            PolicyError::Currency { .. } => "Pay in AITBC".into(),
            PolicyError::NoWallet => "Name the paying wallet with --wallet".into(),
            PolicyError::InsufficientBalance {
                wallet,
                held,
                needed,
            } => format!(
                "Fund wallet {wallet} with at least {} AITBC more, or lower the payment to at most {held} AITBC",
                *needed - *held
            ),
            PolicyError::ReservedByOthers { wallet, .. } => format!(
                "Run the plans that pay from wallet {wallet} one after another, or fund it for all of them"
            ),
            PolicyError::UnknownTarget { suggestion, .. } => match suggestion {
                Some(t) => format!("Use target `{t}`"),
                None => format!(
                    "Use one of the targets: {}",
                    OPTIMIZATION_TARGETS.join(", ")
                ),
            },
            PolicyError::OverCap { resource, cap, .. } => {
                format!("Ask for at most {cap} {resource}")
            }
            PolicyError::NotPositive { resource, .. } => {
                format!("Ask for more than 0 {resource}")
            }
            PolicyError::SpendCap { left, .. } => format!(
                "Lower the payment to at most {left} AITBC, or ask whoever set the spend cap to raise it"
            ),
            PolicyError::Missing(_) => return None,
        })
    }
}

/// The least a job of this type must pay: the policy's figure, else the built-in one, never below
/// 0.01.
pub fn min_payment(job_type: &str, policy: &Policy) -> Money {
    let builtin = JobType::parse(job_type).map_or_else(payment_floor, JobType::min_payment);
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

/// The job type of this name, or the error naming the valid ones.
pub fn job_type(name: &str) -> Result<JobType, PolicyError> {
    JobType::parse(name).ok_or_else(|| PolicyError::UnknownJobType {
        job_type: name.to_string(),
        suggestion: closest(name, JobType::names()),
    })
}

/// Checks that a job type is one of the six.
pub fn check_job_type(name: &str) -> Result<(), PolicyError> {
    job_type(name).map(drop)
}

/// Checks a payment against the minimum for its job type and the maximum.
pub fn check_payment(job_type: &str, payment: Money, policy: &Policy) -> Result<(), PolicyError> {
    if payment < payment_floor() {
        return Err(PolicyError::PaymentOutOfBounds {
            payment,
            min: payment_floor(),
            max: Money::from_int(PAYMENT_CEILING),
        });
    }
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

/// Checks the currency a request names (`None` is AITBC; the skill's "AIT" is accepted).
pub fn check_currency(currency: Option<&str>) -> Result<(), PolicyError> {
    match currency {
        Some(c) if !c.eq_ignore_ascii_case(CURRENCY) && !c.eq_ignore_ascii_case("AIT") => {
            Err(PolicyError::Currency {
                given: c.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// Every rule a rendered job request breaks (empty when it may be sent). The balance is checked
/// separately, with [`check_balance`], because it needs the wallet daemon.
pub fn check_job(request: &JobRequest, policy: &Policy) -> Vec<PolicyError> {
    let mut out = Vec::new();
    let type_ok = check_job_type(&request.job_type)
        .map_err(|e| out.push(e))
        .is_ok();
    let payment_type = if type_ok {
        request.job_type.as_str()
    } else {
        ""
    };
    if let Err(e) = check_payment(payment_type, request.payment, policy) {
        out.push(e);
    }
    if let Err(e) = check_prompt(&request.prompt, policy) {
        out.push(e);
    }
    if request.wallet.trim().is_empty() {
        out.push(PolicyError::NoWallet);
    }
    out
}

/// Refuses a payment the wallet's balance does not cover.
pub fn check_balance(wallet: &str, held: Money, needed: Money) -> Result<(), PolicyError> {
    if held >= needed {
        Ok(())
    } else {
        Err(PolicyError::InsufficientBalance {
            wallet: wallet.to_string(),
            held,
            needed,
        })
    }
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
        suggestion: closest(target, OPTIMIZATION_TARGETS),
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
    let mut out: Vec<PolicyError> = Vec::new();
    if request.agent_id.trim().is_empty() {
        out.push(PolicyError::Missing("agent_id"));
    }
    out.extend(
        [
            check_resource("cpu", request.cpu, cpu, false),
            check_resource("memory", request.memory_gb, mem, false),
            check_resource("gpu", request.gpu, gpu, true),
            check_job_type(&request.task_type),
            check_target(&request.target),
        ]
        .into_iter()
        .filter_map(Result::err),
    );
    if let Some(d) = request.duration
        && let Err(e) = check_duration(d, policy)
    {
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(v: serde_json::Value) -> Policy {
        serde_json::from_value(v).unwrap()
    }

    fn money(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn job(job_type: &str, payment: &str, prompt: &str) -> JobRequest {
        JobRequest {
            job_type: job_type.into(),
            wallet: "w".into(),
            payment: money(payment),
            prompt: prompt.into(),
            ..JobRequest::default()
        }
    }

    #[test]
    fn job_types_and_suggestions() {
        assert!(check_job_type("ollama").is_ok());
        let e = check_job_type("inferense").unwrap_err();
        assert_eq!(e.suggestion().as_deref(), Some("inference"));
        assert_eq!(
            e.to_string(),
            "invalid job type `inferense`: valid job types are inference, training, multimodal, ollama, streaming, monitoring"
        );
        assert_eq!(e.advice().as_deref(), Some("Use job type `inference`"));
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
        // Below the service's floor, whatever the type.
        assert!(check_payment("", money("0.001"), &p).is_err());
        assert!(check_payment("inference", money("-1"), &p).is_err());
        let p =
            policy(serde_json::json!({"min_payment": {"inference": 0}, "max_payment": 5000000}));
        assert_eq!(min_payment("inference", &p).to_string(), "0.01");
        assert_eq!(max_payment(&p), Money::from_int(1_000_000));
        let e = check_payment("inference", money("0.001"), &p).unwrap_err();
        assert_eq!(e.field(), "payment");
        assert_eq!(
            check_payment("training", money("9.99"), &Policy::default())
                .unwrap_err()
                .to_string(),
            "payment 9.99 is below the minimum of 10 AITBC for `training` jobs"
        );
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
    fn a_job_request_is_checked_whole() {
        let p = Policy::default();
        assert_eq!(check_job(&job("inference", "2", "hi"), &p), vec![]);
        let mut bad = job("inferense", "0.001", "");
        bad.wallet = " ".into();
        let fields: Vec<_> = check_job(&bad, &p).iter().map(|e| e.field()).collect();
        assert_eq!(fields, vec!["job_type", "payment", "prompt", "wallet"]);
    }

    #[test]
    fn currency_must_be_aitbc() {
        assert!(check_currency(None).is_ok());
        assert!(check_currency(Some("AIT")).is_ok());
        assert!(check_currency(Some("aitbc")).is_ok());
        assert_eq!(
            check_currency(Some("BTC")).unwrap_err().to_string(),
            "currency `BTC` is not accepted: payments are in AITBC"
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
        let none = OptimizeRequest {
            agent_id: " ".into(),
            ..r
        };
        assert_eq!(
            check_optimize(&none, &p)[0],
            PolicyError::Missing("agent_id")
        );
    }
}
