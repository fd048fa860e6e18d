//! Who pays for a job: the address a submit sends as `buyer_address`, and whether the wallet's balance
//! is read before it is sent.
//!
//! The service escrows from whatever `buyer_address` says, and the contract wants a chain address
//! (`0x` and 40 hex digits), not a wallet's name. A wallet given as an address is sent as it is; a name
//! is resolved through the wallet daemon, whose balance answer — read before every submit anyway —
//! carries the wallet's `address`. Only when the operator switched the balance check off on the command
//! line (`--no-balance-check`, never a plan setting: a plan from git must not switch off a money rule)
//! is a name sent unresolved, and the outcome says so.

use serde_json::{Value, json};

use super::OpError;
use crate::api::{WalletBalance, is_address};

/// Whether a wallet's balance is read (and its address resolved) before a submit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BalanceCheck {
    /// Read the balance from the wallet daemon before every submit, and refuse what it cannot pay (the
    /// default).
    #[default]
    On,
    /// The operator said `--no-balance-check`: no balance is read, and the wallet is sent as given.
    Off,
}

impl BalanceCheck {
    /// `Off` when `skip` (the command line's `--no-balance-check`).
    pub fn skipped_if(skip: bool) -> BalanceCheck {
        if skip {
            BalanceCheck::Off
        } else {
            BalanceCheck::On
        }
    }

    /// The issue every outcome of a submit without the check carries.
    pub fn issue(self) -> Option<String> {
        (self == BalanceCheck::Off).then(|| {
            "the balance check was switched off on the command line (--no-balance-check): the wallet's \
             balance was not read before submitting"
                .to_string()
        })
    }
}

/// How the payer's address was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayerSource {
    /// The wallet was given as an address, and is sent as it is.
    Given,
    /// The wallet daemon's balance answer named the wallet's address.
    WalletDaemon,
    /// The wallet's name is sent as it is: with the balance check off it could not be resolved.
    Unresolved,
}

impl PayerSource {
    /// As the outcome's metrics write it.
    pub fn as_str(self) -> &'static str {
        match self {
            PayerSource::Given => "given",
            PayerSource::WalletDaemon => "wallet_daemon",
            PayerSource::Unresolved => "unresolved",
        }
    }
}

/// The payer of a job: the wallet as given and what is sent as `buyer_address`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payer {
    /// The wallet as the request names it.
    pub wallet: String,
    /// What the submit sends as `buyer_address`.
    pub buyer_address: String,
    /// How it was found.
    pub source: PayerSource,
}

impl Payer {
    /// The payer without a balance answer: an address as given, a name unresolved.
    pub fn unchecked(wallet: &str) -> Payer {
        Payer {
            wallet: wallet.to_string(),
            buyer_address: wallet.to_string(),
            source: if is_address(wallet) {
                PayerSource::Given
            } else {
                PayerSource::Unresolved
            },
        }
    }

    /// The payer of a job submitted earlier, from what was recorded as sent (a journal from before
    /// payers were recorded sent the wallet as given).
    pub fn recorded(wallet: &str, sent: Option<&str>) -> Payer {
        match sent {
            Some(a) if a != wallet => Payer {
                wallet: wallet.to_string(),
                buyer_address: a.to_string(),
                source: PayerSource::WalletDaemon,
            },
            _ => Payer::unchecked(wallet),
        }
    }

    /// The payer a balance answer names. A name needs a chain address in the answer (the upstream
    /// daemon answers a wallet created without one with its public key and `"error": "Invalid address
    /// format"`); an address must not be contradicted by the answer.
    pub fn from_balance(wallet: &str, b: &WalletBalance) -> Result<Payer, OpError> {
        let answered = b
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty());
        if is_address(wallet) {
            if let Some(a) = answered.filter(|a| is_address(a))
                && !a.eq_ignore_ascii_case(wallet)
            {
                return Err(OpError::PayerUnknown {
                    wallet: wallet.to_string(),
                    reason: format!("the wallet daemon answers for it with another address, {a}"),
                });
            }
            return Ok(Payer {
                wallet: wallet.to_string(),
                buyer_address: wallet.to_string(),
                source: PayerSource::Given,
            });
        }
        match answered {
            Some(a) if is_address(a) => Ok(Payer {
                wallet: wallet.to_string(),
                buyer_address: a.to_string(),
                source: PayerSource::WalletDaemon,
            }),
            other => {
                let said = match (other, &b.error) {
                    (Some(a), Some(e)) => format!("the wallet daemon names it `{a}` ({e})"),
                    (Some(a), None) => format!("the wallet daemon names it `{a}`"),
                    (None, Some(e)) => format!("the wallet daemon gives no address ({e})"),
                    (None, None) => "the wallet daemon gives no address".to_string(),
                };
                Err(OpError::PayerUnknown {
                    wallet: wallet.to_string(),
                    reason: format!(
                        "{said}, and a payer must be a chain address (0x and 40 hex digits)"
                    ),
                })
            }
        }
    }

    /// What the outcome says about the payer, when it is worth an issue.
    pub fn issue(&self) -> Option<String> {
        (self.source == PayerSource::Unresolved).then(|| {
            format!(
                "buyer_address is the wallet's name `{}`, not a chain address: with the balance check \
                 off it was not resolved through the wallet daemon",
                self.wallet
            )
        })
    }

    /// The metrics of a submit's outcome: what was sent and how it was found.
    pub fn metrics(&self) -> Value {
        json!({"buyer_address": self.buyer_address, "payer": self.source.as_str()})
    }

    /// Adds the payer to an outcome's metrics (kept as they are otherwise).
    pub fn add_to(&self, metrics: &mut Option<Value>) {
        let m = metrics.get_or_insert_with(|| json!({}));
        if let Value::Object(map) = m {
            map.insert("buyer_address".into(), json!(self.buyer_address));
            map.insert("payer".into(), json!(self.source.as_str()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;

    fn answer(address: Option<&str>, error: Option<&str>) -> WalletBalance {
        WalletBalance {
            error: error.map(str::to_string),
            ..WalletBalance::in_aitbc("w1", address.map(str::to_string), Money::ZERO)
        }
    }

    const ADDR: &str = "0x52908400098527886E0F7030069857D2E4169EE7";

    #[test]
    fn a_name_is_resolved_to_the_address_the_daemon_names() {
        let p = Payer::from_balance("w1", &answer(Some(ADDR), None)).unwrap();
        assert_eq!(p.buyer_address, ADDR);
        assert_eq!(p.source, PayerSource::WalletDaemon);
        assert_eq!(p.issue(), None);
    }

    #[test]
    fn a_name_without_a_chain_address_is_refused() {
        // What the upstream daemon answers for a wallet created without an address.
        let key = "83a809b36b6854c0b6a7dfbfdbc9261b32a426c847698e6687c3b6cc5531cc13";
        let e = Payer::from_balance("w1", &answer(Some(key), Some("Invalid address format")))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(key) && text.contains("Invalid address format"),
            "{text}"
        );
        assert!(Payer::from_balance("w1", &answer(None, None)).is_err());
    }

    #[test]
    fn an_address_is_sent_as_given_unless_the_daemon_contradicts_it() {
        let p = Payer::from_balance(ADDR, &answer(None, None)).unwrap();
        assert_eq!(
            (p.buyer_address.as_str(), p.source),
            (ADDR, PayerSource::Given)
        );
        let same = Payer::from_balance(ADDR, &answer(Some(&ADDR.to_lowercase()), None)).unwrap();
        assert_eq!(same.buyer_address, ADDR);
        let other = "0x0000000000000000000000000000000000000001";
        assert!(Payer::from_balance(ADDR, &answer(Some(other), None)).is_err());
    }

    #[test]
    fn without_the_check_a_name_is_sent_unresolved_and_said_so() {
        let p = Payer::unchecked("trading-wallet");
        assert_eq!(p.source, PayerSource::Unresolved);
        assert!(p.issue().unwrap().contains("`trading-wallet`"));
        assert_eq!(Payer::unchecked(ADDR).source, PayerSource::Given);
        assert!(
            BalanceCheck::Off
                .issue()
                .unwrap()
                .contains("--no-balance-check")
        );
        assert_eq!(BalanceCheck::On.issue(), None);
    }
}
