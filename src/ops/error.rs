//! Why an operation failed, and what to tell the user about it: the summary, issues and
//! recommendations of the skill's output, worded once for `op`, the `job` commands and the run report.

use std::time::Duration;

use crate::api::{JobState, JobView};
use crate::client::ClientError;
use crate::duration::Dur;
use crate::model::{Operation, Outcome, ValidationStatus};
use crate::policy::PolicyError;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    /// The input does not say enough, or says it wrongly.
    #[error("{0}")]
    Input(String),
    /// Client rules broken before anything was sent.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Rules(Vec<PolicyError>),
    /// The wallet's balance could not be read, so nothing was submitted.
    #[error("cannot check the balance of wallet {wallet}: {}", balance_error(.error, *.at_coordinator))]
    BalanceUnknown {
        /// The wallet.
        wallet: String,
        /// Why.
        error: Box<ClientError>,
        /// True when it was the coordinator that was asked (no wallet daemon configured).
        at_coordinator: bool,
    },
    /// The wallet daemon does not know the wallet.
    #[error("wallet {wallet} not found at the wallet daemon ({url})")]
    WalletNotFound {
        /// The wallet.
        wallet: String,
        /// The URL that was asked.
        url: String,
    },
    /// The wallet has no chain address to send as `buyer_address`, so nothing was submitted.
    #[error("no payer address for wallet {wallet}: {reason}")]
    PayerUnknown {
        /// The wallet.
        wallet: String,
        /// Why.
        reason: String,
    },
    /// The coordinator refused or could not be reached.
    #[error("{0}")]
    Client(Box<ClientError>),
    /// The job did not finish in time.
    #[error("job {} did not finish within {} (last state {}){}{}", .last.job_id, Dur(*.after), .last.state,
        fmt_asked(.retry_after),
        .stuck.as_ref().map(|s| format!("; it looks stuck: {s}")).unwrap_or_default())]
    WaitTimeout {
        /// The job as last seen.
        last: Box<JobView>,
        /// The timeout.
        after: Duration,
        /// Set when the wait ended early because the server's `Retry-After` passed the timeout.
        retry_after: Option<Duration>,
        /// Why the job looks stuck rather than slow, when it does.
        stuck: Option<String>,
    },
    /// The job completed, but its result could not be read (the service said "not ready" again, or
    /// answered something that is not a result).
    #[error("job {} is COMPLETED, but its result could not be read: {error}", .last.job_id)]
    ResultUnavailable {
        /// The job as read.
        last: Box<JobView>,
        /// What the result endpoint answered.
        error: Box<ClientError>,
    },
    /// The job ended without a result (FAILED, CANCELED, EXPIRED), or with a failed one.
    #[error("{}", ended(.last))]
    JobEnded {
        /// The job as last seen.
        last: Box<JobView>,
    },
}

fn fmt_asked(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|ra| {
            format!(
                ": the coordinator asked to wait {} s before the next poll (Retry-After), past the timeout",
                ra.as_secs()
            )
        })
        .unwrap_or_default()
}

/// What a failed balance read means: a 403 on the balance path is a service that does not serve
/// balances (the coordinator), not a bad token.
fn balance_error(e: &ClientError, at_coordinator: bool) -> String {
    match e {
        ClientError::Auth {
            status: 403, url, ..
        }
        | ClientError::NotFound { url, .. } => {
            let who = if at_coordinator {
                "the coordinator"
            } else {
                "the service"
            };
            format!(
                "{who} at {url} does not serve balances ({}); balances come from the wallet daemon (AITBC_WALLET_URL)",
                match e {
                    ClientError::Auth { detail, .. } => format!("HTTP 403 {detail}"),
                    _ => "HTTP 404".to_string(),
                }
            )
        }
        other => other.to_string(),
    }
}

/// "job X ended FAILED: why", or "job X reported a failed result: why".
fn ended(v: &JobView) -> String {
    let detail = v
        .result
        .as_ref()
        .and_then(|r| r.get("error"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .or_else(|| v.error.clone());
    let what = match v.state {
        JobState::Completed => "reported a failed result".to_string(),
        s => format!("ended {s}"),
    };
    match detail {
        Some(d) => format!("job {} {what}: {d}", v.job_id),
        None => format!("job {} {what}", v.job_id),
    }
}

impl From<ClientError> for OpError {
    fn from(e: ClientError) -> OpError {
        OpError::Client(Box::new(e))
    }
}

impl From<Vec<PolicyError>> for OpError {
    fn from(e: Vec<PolicyError>) -> OpError {
        OpError::Rules(e)
    }
}

impl OpError {
    /// The client error behind this one, if any.
    pub fn client(&self) -> Option<&ClientError> {
        match self {
            OpError::BalanceUnknown { error, .. }
            | OpError::Client(error)
            | OpError::ResultUnavailable { error, .. } => Some(error),
            _ => None,
        }
    }

    /// True when only the wallet's balance stood in the way (the request itself is valid).
    pub fn is_insufficient_balance(&self) -> bool {
        matches!(self, OpError::Rules(rules) if rules.iter().all(|r| matches!(r, PolicyError::InsufficientBalance { .. } | PolicyError::ReservedByOthers { .. })))
    }

    /// The one-line summary of the skill's output.
    pub fn summary(&self, op: Operation) -> String {
        let what = op.as_str();
        match self {
            OpError::Input(_) => format!("Invalid {what} request"),
            OpError::Rules(rules) => {
                if let Some(PolicyError::InsufficientBalance { needed, .. }) = rules
                    .iter()
                    .find(|r| matches!(r, PolicyError::InsufficientBalance { .. }))
                {
                    format!("Insufficient balance: the job requires {needed} AITBC")
                } else if let Some(PolicyError::ReservedByOthers { needed, wallet, .. }) = rules
                    .iter()
                    .find(|r| matches!(r, PolicyError::ReservedByOthers { .. }))
                {
                    format!(
                        "Insufficient balance: the job requires {needed} AITBC that other runs have reserved of wallet {wallet}"
                    )
                } else if let Some(PolicyError::SpendCap { left, .. }) = rules
                    .iter()
                    .find(|r| matches!(r, PolicyError::SpendCap { .. }))
                {
                    format!("Spend cap reached: {left} AITBC left to spend")
                } else if rules
                    .iter()
                    .any(|r| matches!(r, PolicyError::UnknownJobType { .. }))
                {
                    "Invalid job type".to_string()
                } else {
                    format!("The {what} request breaks the client rules")
                }
            }
            OpError::BalanceUnknown { wallet, .. } if op == Operation::Balance => {
                format!("Cannot read the balance of wallet {wallet}")
            }
            OpError::BalanceUnknown { .. } => {
                "Balance check failed: nothing was submitted".to_string()
            }
            OpError::WalletNotFound { .. } if op == Operation::Balance => {
                "Wallet not found".to_string()
            }
            OpError::WalletNotFound { .. } => "Wallet not found: nothing was submitted".to_string(),
            OpError::PayerUnknown { .. } => {
                "No payer address for the wallet: nothing was submitted".to_string()
            }
            OpError::Client(e) => match &**e {
                ClientError::Unavailable { .. } => "Service unavailable".into(),
                ClientError::Timeout { .. } => "Request timed out".into(),
                ClientError::RateLimited { .. } => "Rate limited by the coordinator".into(),
                ClientError::Auth { .. } => "Authentication refused".into(),
                ClientError::NotFound { .. } => "Job not found".into(),
                ClientError::NotReady { .. } => "The job has no result yet".into(),
                ClientError::Conflict { .. } => format!("The job cannot be {what}ed now"),
                ClientError::InsufficientBalance { needed, .. } => {
                    format!("Insufficient balance: the job requires {needed} AITBC")
                }
                ClientError::Invalid { .. } => "The coordinator refused the request".into(),
                ClientError::Protocol { .. } => "Unexpected answer from the coordinator".into(),
                ClientError::TooLarge { .. } => "The coordinator's answer was too large".into(),
                ClientError::Redirect { .. } => {
                    "The coordinator redirected the request; not followed".into()
                }
                ClientError::WrongJob { .. } => "The coordinator answered about another job".into(),
                ClientError::OutOfTime { .. } => format!("The {what} ran out of time"),
            },
            OpError::ResultUnavailable { last, .. } => format!(
                "Job {} completed, but its result could not be read",
                last.job_id
            ),
            OpError::WaitTimeout {
                after,
                stuck: Some(_),
                last,
                ..
            } => format!(
                "Job {} looks stuck ({}): timed out after {}",
                last.job_id,
                last.state,
                Dur(*after)
            ),
            OpError::WaitTimeout { after, .. } => format!("Job timed out after {}", Dur(*after)),
            OpError::JobEnded { last } => match last.state {
                JobState::Completed => {
                    format!("Job {} completed with a failed result", last.job_id)
                }
                s => format!("Job {} ended {s}", last.job_id),
            },
        }
    }

    /// What went wrong, one line each.
    pub fn issues(&self) -> Vec<String> {
        match self {
            OpError::Rules(rules) => rules.iter().map(ToString::to_string).collect(),
            OpError::WaitTimeout {
                last,
                after,
                stuck: Some(why),
                ..
            } => vec![
                format!(
                    "job {} did not finish within {} (last state {})",
                    last.job_id,
                    Dur(*after),
                    last.state
                ),
                format!("the job looks stuck: {why}"),
            ],
            OpError::Client(e) => match &**e {
                ClientError::Unavailable {
                    url,
                    reason,
                    status,
                } => vec![
                    format!(
                        "service status: unavailable ({}) at {url}",
                        status.map_or("no answer".to_string(), |s| format!("HTTP {s}"))
                    ),
                    reason.clone(),
                ],
                other => vec![other.to_string()],
            },
            other => vec![other.to_string()],
        }
    }

    /// What to do about it.
    pub fn recommendations(&self) -> Vec<String> {
        let s = |t: &str| t.to_string();
        match self {
            OpError::Input(_) => vec![s(
                "See `aitbc-flow op --help` or docs/job-commands.md for the input fields of each operation",
            )],
            OpError::Rules(rules) => rules.iter().filter_map(PolicyError::advice).collect(),
            OpError::BalanceUnknown { error, .. } => {
                let mut r = vec![s(
                    "Set AITBC_WALLET_URL (or --wallet-url) to the wallet daemon that holds the wallet: balances come from it, not from the coordinator",
                )];
                if !matches!(
                    **error,
                    ClientError::Auth { status: 403, .. } | ClientError::NotFound { .. }
                ) {
                    r.extend(client_advice(error));
                }
                r.push(s(
                    "The balance is checked before every submit; to submit without it, say --no-balance-check on the command line (the outcome reports it)",
                ));
                r
            }
            OpError::WalletNotFound { wallet, url } => vec![
                format!(
                    "Check the wallet's name: the wallet daemon at {} knows no wallet `{wallet}` (it lists its wallets at GET /v1/wallets)",
                    url.split("/v1/wallets/").next().unwrap_or(url)
                ),
                s(
                    "Create the wallet at the wallet daemon, or point AITBC_WALLET_URL at the daemon that holds it",
                ),
            ],
            OpError::PayerUnknown { wallet, .. } => vec![
                format!(
                    "Give the wallet's chain address instead of its name (--wallet 0x…), or register the address in wallet {wallet}'s metadata at the wallet daemon"
                ),
                s(
                    "The service escrows the payment from `buyer_address`: it must be the paying wallet's address",
                ),
            ],
            OpError::Client(e) => client_advice(e),
            OpError::ResultUnavailable { last, error } => {
                let mut r = vec![format!(
                    "The job completed and is paid: fetch its result again later with `aitbc-flow job results {}`",
                    last.job_id
                )];
                if !matches!(**error, ClientError::NotReady { .. }) {
                    r.extend(client_advice(error));
                }
                r
            }
            OpError::WaitTimeout {
                last,
                retry_after,
                stuck,
                ..
            } => {
                let mut r = Vec::new();
                if stuck.is_some() {
                    r.push(format!(
                        "The job may never have reached its miner (a slow or blocked service can leave it {} with nobody working on it): cancel it with `aitbc-flow job cancel {}`, ask for its refund with `aitbc-flow job refund {}`, and resubmit",
                        last.state, last.job_id, last.job_id
                    ));
                }
                r.extend(vec![
                format!("Check the job with `aitbc-flow job status {}`", last.job_id),
                match retry_after {
                    Some(ra) => format!(
                        "The coordinator asked to wait {} s before polling again: wait longer than that, or later",
                        ra.as_secs()
                    ),
                    None => s("Wait longer with --timeout (e.g. --timeout 10m)"),
                },
                s("Check that providers are online for this job type and model"),
                format!(
                    "Cancel it with `aitbc-flow job cancel {}` if it is no longer needed",
                    last.job_id
                ),
                ]);
                // Only a job still waiting for a provider, and not one known to be paid below 10.
                let paid = last
                    .extra
                    .get("payment_amount")
                    .and_then(|v| serde_json::from_value::<crate::money::Money>(v.clone()).ok());
                if last.state == JobState::Queued
                    && paid.is_none_or(|p| p >= crate::money::Money::from_int(10))
                {
                    r.insert(
                        r.len() - 2,
                        s("A job paid 10 AITBC or more may stay QUEUED until a bonded provider takes it: lower the payment or choose a provider with --provider-id"),
                    );
                }
                r
            }
            OpError::JobEnded { last } => match last.state {
                JobState::Expired => vec![s(
                    "The job expired before a provider finished it: resubmit with a longer ttl, a payment below 10 or a bonded provider",
                )],
                JobState::Canceled => vec![s("The job was cancelled: resubmit it if still needed")],
                _ => vec![s(
                    "Check the job's prompt, type and model are supported by the providers, then resubmit",
                )],
            },
        }
    }

    /// The skill's output for this failure.
    pub fn outcome(&self, operation: Operation) -> Outcome {
        let mut out = Outcome::new(operation, self.summary(operation));
        out.validation_status = ValidationStatus::Failed;
        out.issues = self.issues();
        out.recommendations = self.recommendations();
        if let OpError::WaitTimeout { last, .. }
        | OpError::JobEnded { last }
        | OpError::ResultUnavailable { last, .. } = self
        {
            out.set_view(last);
        }
        out
    }
}

fn client_advice(e: &ClientError) -> Vec<String> {
    let s = |t: &str| t.to_string();
    match e {
        ClientError::Unavailable { .. } => vec![
            s("Retry in a few seconds: the service may be restarting or overloaded"),
            s(
                "Check that the coordinator is running and reachable (--coordinator or AITBC_COORDINATOR_URL)",
            ),
            s(
                "Before resubmitting a submit, list recent jobs: the first one may have been accepted",
            ),
        ],
        ClientError::Timeout { .. } => vec![
            s(
                "Retry: the service was slow to answer (a paid submit can take ~7 s when the chain is slow)",
            ),
            s(
                "Before resubmitting a submit, list recent jobs: the first one may have been accepted",
            ),
            s("Raise the request timeout with AITBC_SUBMIT_TIMEOUT or AITBC_READ_TIMEOUT"),
        ],
        ClientError::RateLimited { retry_after, .. } => vec![
            match retry_after {
                Some(d) => format!("Retry after {} s", d.as_secs()),
                None => s("Retry in a minute"),
            },
            s("Pace requests with AITBC_RATE_LIMIT (the service allows 50 submits a minute)"),
        ],
        ClientError::Auth { .. } => vec![
            s(
                "Check AITBC_TOKEN or AITBC_TOKEN_FILE: client tokens are valid for 24 h; `aitbc-flow login` writes a fresh one to AITBC_TOKEN_FILE",
            ),
            s("Use a token with the client role"),
        ],
        ClientError::NotFound { .. } => vec![s(
            "Check the job id: unknown jobs and jobs of another client both answer 404",
        )],
        ClientError::NotReady { .. } => {
            vec![s("Wait for the job to complete, then fetch its result")]
        }
        ClientError::Conflict { .. } => vec![s("Read the job's status: it has already finished")],
        ClientError::InsufficientBalance {
            wallet,
            needed,
            held,
        } => vec![format!(
            "Fund wallet {wallet} with at least {} AITBC more",
            *needed - *held
        )],
        ClientError::Invalid { .. } => {
            vec![s("Fix the fields the coordinator names and try again")]
        }
        ClientError::Protocol { .. } => vec![s(
            "Check that the URL points at an AITBC coordinator (not a proxy or another service)",
        )],
        ClientError::TooLarge { setting, .. } => vec![
            format!("If answers this large are expected, raise {setting} (e.g. {setting}=64MiB)"),
            s(
                "Otherwise check that the URL points at an AITBC coordinator (not a proxy or another service)",
            ),
        ],
        ClientError::Redirect { .. } => vec![s(
            "Set the coordinator URL (--coordinator or AITBC_COORDINATOR_URL) to the address that serves the API itself: a redirect to another address is not followed, and a POST is never redirected",
        )],
        ClientError::WrongJob { asked, .. } => vec![format!(
            "Do not trust this coordinator's answers about job {asked}: check that the URL points at the AITBC coordinator, not a cache or proxy that mixes up jobs"
        )],
        ClientError::OutOfTime {
            wait, retry_after, ..
        } => match wait {
            Some(w) if *retry_after => vec![
                format!(
                    "The coordinator asked to wait {} s (Retry-After): run the step later, or give it a `timeout` above that",
                    w.as_secs()
                ),
                s(
                    "Pace requests with AITBC_RATE_LIMIT so that the service's limits are not reached",
                ),
            ],
            _ => vec![s("Raise the step's `timeout`")],
        },
    }
}
