//! The wallet ledger: balances, the escrow pot, and the money created by the faucet and `--fund`.
//!
//! Every amount is an exact decimal ([`Money`]). The ledger is a plain value with no locking of its own:
//! it lives inside the coordinator's single state lock, so a balance check and the escrow that follows it
//! are one step, and 100 concurrent submits from one wallet can never spend more than it holds. Money only
//! moves between wallets and the escrow pot; it enters the system only through the faucet and `--fund`,
//! which are counted in `minted`, so `sum(balances) + escrow == minted` at all times.

use std::collections::HashMap;
use std::sync::Arc;

use crate::money::Money;

/// The grant a new wallet receives when the faucet is on.
pub const FAUCET_GRANT: i64 = 10_000;

/// A submit asked for more than the wallet holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insufficient {
    /// What the wallet holds.
    pub held: Money,
}

/// Balances, escrow and minted total.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    wallets: HashMap<Arc<str>, Money>,
    /// A wallet's address (lower case) → its name, for submits that name the payer by address.
    by_address: HashMap<Box<str>, Arc<str>>,
    escrow: Money,
    minted: Money,
    faucet: bool,
}

/// The chain address the embedded coordinator gives a wallet: a name that is an address already is
/// its own; any other name gets `0x` and the first 40 hex digits of its SHA-256 (stable, so the same
/// wallet has the same address across restarts).
pub fn address_of(name: &str) -> String {
    if crate::api::is_address(name) {
        return name.to_string();
    }
    use sha2::{Digest, Sha256};
    format!("0x{}", &hex::encode(Sha256::digest(name.as_bytes()))[..40])
}

impl Ledger {
    #[cfg(test)]
    /// An empty ledger; with `faucet`, a wallet seen for the first time is granted 10,000 AITBC.
    pub fn new(faucet: bool) -> Ledger {
        Ledger {
            faucet,
            ..Ledger::default()
        }
    }

    /// Restores a ledger from stored balances, escrow and minted total.
    pub fn restore(
        faucet: bool,
        wallets: impl IntoIterator<Item = (String, Money)>,
        escrow: Money,
        minted: Money,
    ) -> Ledger {
        let mut l = Ledger {
            wallets: wallets
                .into_iter()
                .map(|(k, v)| (Arc::from(k), v))
                .collect(),
            by_address: HashMap::new(),
            escrow,
            minted,
            faucet,
        };
        let names: Vec<Arc<str>> = l.wallets.keys().cloned().collect();
        for name in names {
            l.index(&name);
        }
        l
    }

    /// Remembers a wallet's address.
    fn index(&mut self, name: &Arc<str>) {
        self.by_address
            .insert(address_of(name).to_ascii_lowercase().into(), name.clone());
    }

    /// The wallet a payer names: a known wallet's address stands for that wallet; anything else (a
    /// name, or an address no wallet has) is the wallet's name itself.
    pub fn payer<'a>(&'a self, buyer: &'a str) -> &'a str {
        if crate::api::is_address(buyer)
            && let Some(name) = self.by_address.get(buyer.to_ascii_lowercase().as_str())
        {
            return name;
        }
        buyer
    }

    /// The wallet's balance, creating it (with the faucet grant) on first sight. Returns the balance and
    /// whether the wallet was created.
    pub fn touch(&mut self, wallet: &str) -> (Money, bool) {
        if let Some(b) = self.wallets.get(wallet) {
            return (*b, false);
        }
        let grant = if self.faucet {
            Money::from_int(FAUCET_GRANT)
        } else {
            Money::ZERO
        };
        let name: Arc<str> = wallet.into();
        self.index(&name);
        self.wallets.insert(name, grant);
        self.minted += grant;
        (grant, true)
    }

    /// The wallet's balance without creating it: what the faucet would grant for an unknown wallet.
    pub fn peek(&self, wallet: &str) -> Money {
        match self.wallets.get(wallet) {
            Some(b) => *b,
            None if self.faucet => Money::from_int(FAUCET_GRANT),
            None => Money::ZERO,
        }
    }

    /// Sets a wallet's balance exactly (`--fund`); the difference is minted (or burnt).
    pub fn set(&mut self, wallet: &str, amount: Money) {
        let name: Arc<str> = wallet.into();
        self.index(&name);
        let old = self.wallets.insert(name, amount).unwrap_or(Money::ZERO);
        self.minted = self.minted - old + amount;
    }

    /// Moves `amount` from the wallet into escrow, or refuses when the wallet holds less. Returns the
    /// wallet's name as the ledger holds it (shared, so a payment costs no copy of it).
    pub fn escrow(&mut self, wallet: &str, amount: Money) -> Result<Arc<str>, Insufficient> {
        let (held, _) = self.touch(wallet);
        if held < amount {
            return Err(Insufficient { held });
        }
        let Some(name) = self.wallets.get_key_value(wallet).map(|(k, _)| k.clone()) else {
            return Err(Insufficient { held });
        };
        self.wallets.insert(name.clone(), held - amount);
        self.escrow += amount;
        Ok(name)
    }

    /// Pays escrowed money out to `to`: the provider on completion, the payer on a refund. Returns the
    /// receiver's new balance.
    pub fn release(&mut self, amount: Money, to: &str) -> Money {
        self.escrow -= amount;
        let balance = self.wallets.entry(to.into()).or_insert(Money::ZERO);
        *balance += amount;
        *balance
    }

    /// The money held in escrow.
    pub fn escrowed(&self) -> Money {
        self.escrow
    }

    /// All money ever created by the faucet and `--fund`.
    pub fn minted(&self) -> Money {
        self.minted
    }

    /// Every wallet and its balance.
    pub fn wallets(&self) -> impl Iterator<Item = (&str, Money)> {
        self.wallets.iter().map(|(k, v)| (&**k, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn invariant(l: &Ledger) {
        let total: Money = l.wallets().map(|(_, b)| b).sum();
        assert_eq!(total + l.escrowed(), l.minted());
    }

    #[test]
    fn escrow_release_and_refund_keep_the_total() {
        let mut l = Ledger::new(true);
        assert_eq!(l.touch("w"), (m("10000"), true));
        assert_eq!(l.escrow("w", m("0.1")).as_deref(), Ok("w"));
        assert!(l.escrow("w", m("0.2")).is_ok());
        assert_eq!(l.peek("w"), m("9999.7"));
        invariant(&l);
        l.release(m("0.1"), "miner");
        l.release(m("0.2"), "w");
        invariant(&l);
        assert_eq!(l.peek("w"), m("9999.9"));
        assert_eq!(l.escrowed(), Money::ZERO);
    }

    #[test]
    fn a_wallet_is_found_by_its_address() {
        let mut l = Ledger::new(true);
        l.set("trading-wallet", m("5"));
        let a = address_of("trading-wallet");
        assert!(crate::api::is_address(&a));
        assert_eq!(l.payer(&a), "trading-wallet");
        assert_eq!(
            l.payer(&a.to_ascii_uppercase().replace("0X", "0x")),
            "trading-wallet"
        );
        assert_eq!(l.payer("trading-wallet"), "trading-wallet");
        let stranger = "0x52908400098527886E0F7030069857D2E4169EE7";
        assert_eq!(l.payer(stranger), stranger);
        assert_eq!(address_of(stranger), stranger);
        let restored = Ledger::restore(false, [("w".to_string(), m("1"))], Money::ZERO, m("1"));
        assert_eq!(restored.payer(&address_of("w")), "w");
    }

    #[test]
    fn no_overspending_and_fund_sets_exactly() {
        let mut l = Ledger::new(false);
        l.set("w", m("5"));
        assert_eq!(l.escrow("w", m("5.01")), Err(Insufficient { held: m("5") }));
        assert!(l.escrow("w", m("5")).is_ok());
        assert_eq!(l.peek("w"), Money::ZERO);
        l.set("w", m("2"));
        invariant(&l);
        assert_eq!(l.peek("unknown"), Money::ZERO);
    }
}
