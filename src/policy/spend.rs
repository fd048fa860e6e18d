//! The spend cap: how much one process (the MCP server's `--max-spend`) — or, later, one run (a plan's
//! `policy.max_spend`) — may still pay, in total and per wallet. A small thread-safe ledger of what was
//! paid and not refunded.
//!
//! A payment is *reserved* before it is sent, so that two calls at once cannot both fit under what is
//! left; it is then either *paid* (the coordinator took the job, or may have: a lost answer counts) or
//! *released* (nothing was sent, or the coordinator refused it). A confirmed refund of a job it paid
//! gives its amount back. Every submission counts, resubmissions of the same prompt included: the cap is
//! about money, not about jobs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::PolicyError;
use crate::money::Money;

/// The caps: a total, and one per wallet; a wallet without its own cap is bound by the total only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Caps {
    /// What all wallets together may pay.
    pub total: Option<Money>,
    /// What each named wallet may pay.
    pub per_wallet: BTreeMap<String, Money>,
}

impl Caps {
    /// The caps a plan's `policy:` block sets (`max_spend`, `max_spend_per_wallet`).
    pub fn of_policy(policy: &super::Policy) -> Caps {
        Caps {
            total: policy.max_spend,
            per_wallet: policy.max_spend_per_wallet.clone(),
        }
    }

    /// The tighter of two sets of caps, cap by cap: what the command line adds may lower a plan's
    /// caps, never raise them.
    pub fn tightest(&self, other: &Caps) -> Caps {
        let min = |a: Option<Money>, b: Option<Money>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut per_wallet = self.per_wallet.clone();
        for (w, m) in &other.per_wallet {
            let v = min(per_wallet.get(w).copied(), Some(*m));
            per_wallet.insert(w.clone(), v.unwrap_or(*m));
        }
        Caps {
            total: min(self.total, other.total),
            per_wallet,
        }
    }

    /// True when nothing is capped.
    pub fn is_empty(&self) -> bool {
        self.total.is_none() && self.per_wallet.is_empty()
    }

    /// Parses one `--max-spend` value: `AMOUNT` (the total) or `WALLET=AMOUNT`, into these caps. A cap
    /// given twice is an error, not "the last one wins".
    pub fn add(&mut self, text: &str) -> Result<(), String> {
        let (wallet, amount) = match text.split_once('=') {
            Some((w, a)) => (Some(w.trim()), a),
            None => (None, text),
        };
        let amount: Money = amount
            .trim()
            .parse()
            .map_err(|e| format!("`{text}` is not AMOUNT or WALLET=AMOUNT: {e}"))?;
        if amount.is_negative() {
            return Err(format!("`{text}`: a spend cap cannot be negative"));
        }
        match wallet {
            Some("") => Err(format!("`{text}`: the wallet name is empty")),
            Some(w) => match self.per_wallet.insert(w.to_string(), amount) {
                Some(_) => Err(format!("the spend cap of wallet {w} is given twice")),
                None => Ok(()),
            },
            None => match self.total.replace(amount) {
                Some(_) => Err("the total spend cap is given twice".into()),
                None => Ok(()),
            },
        }
    }
}

/// Room held for one payment until it is known whether it was made.
#[derive(Debug, PartialEq)]
#[must_use = "a reservation is either paid or released"]
pub struct Reservation {
    wallet: String,
    amount: Money,
}

impl Reservation {
    /// The wallet.
    pub fn wallet(&self) -> &str {
        &self.wallet
    }
    /// The amount held.
    pub fn amount(&self) -> Money {
        self.amount
    }
}

/// What is left under the caps.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Left {
    /// What is left of the total cap (`None`: no total cap).
    pub total: Option<Money>,
    /// What is left of each wallet's own cap.
    pub per_wallet: BTreeMap<String, Money>,
    /// What was paid and not refunded, per wallet (payments not yet settled included).
    pub spent: BTreeMap<String, Money>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Paid or reserved and not refunded, per wallet.
    spent: BTreeMap<String, Money>,
    /// Jobs paid through this ledger: job id → (wallet, amount), so that a refund is credited once.
    jobs: HashMap<String, (String, Money)>,
}

impl Ledger {
    fn total(&self) -> Money {
        self.spent.values().copied().sum()
    }
    fn spent(&self, wallet: &str) -> Money {
        self.spent.get(wallet).copied().unwrap_or_default()
    }
    fn take_back(&mut self, wallet: &str, amount: Money) {
        if let Some(s) = self.spent.get_mut(wallet) {
            *s = (*s - amount).max(Money::default());
        }
    }
}

/// The ledger of a process or a run: what may still be paid under its [`Caps`].
#[derive(Debug, Default)]
pub struct SpendCap {
    caps: Caps,
    ledger: Mutex<Ledger>,
}

impl SpendCap {
    /// A ledger under these caps, with nothing spent.
    pub fn new(caps: Caps) -> SpendCap {
        SpendCap {
            caps,
            ledger: Mutex::default(),
        }
    }

    /// The caps.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// True when something is capped.
    pub fn is_capped(&self) -> bool {
        !self.caps.is_empty()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock leaves consistent sums (each change is one statement).
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `amount` for a payment from `wallet`, or says which cap it would pass and what is left.
    pub fn reserve(&self, wallet: &str, amount: Money) -> Result<Reservation, PolicyError> {
        let mut one = BTreeMap::new();
        one.insert(wallet.to_string(), amount);
        self.reserve_all(&one).map(|mut r| r.remove(0))
    }

    /// Holds the payments of several wallets at once (a plan's spend per wallet): all or none.
    pub fn reserve_all(
        &self,
        payments: &BTreeMap<String, Money>,
    ) -> Result<Vec<Reservation>, PolicyError> {
        let mut ledger = self.ledger();
        self.fits(&ledger, payments)?;
        Ok(payments
            .iter()
            .map(|(wallet, amount)| {
                *ledger.spent.entry(wallet.clone()).or_default() += *amount;
                Reservation {
                    wallet: wallet.clone(),
                    amount: *amount,
                }
            })
            .collect())
    }

    /// Whether the payments would fit now, holding nothing (the dry run's verdict).
    pub fn check_all(&self, payments: &BTreeMap<String, Money>) -> Result<(), PolicyError> {
        self.fits(&self.ledger(), payments)
    }

    fn fits(&self, ledger: &Ledger, payments: &BTreeMap<String, Money>) -> Result<(), PolicyError> {
        let asked: Money = payments.values().copied().sum();
        for (wallet, amount) in payments {
            if let Some(cap) = self.caps.per_wallet.get(wallet)
                && ledger.spent(wallet) + *amount > *cap
            {
                return Err(PolicyError::SpendCap {
                    wallet: wallet.clone(),
                    payment: *amount,
                    left: (*cap - ledger.spent(wallet)).max(Money::default()),
                    cap: *cap,
                    cap_wallet: Some(wallet.clone()),
                });
            }
        }
        if let Some(cap) = self.caps.total
            && ledger.total() + asked > cap
        {
            return Err(PolicyError::SpendCap {
                wallet: payments.keys().cloned().collect::<Vec<_>>().join(", "),
                payment: asked,
                left: (cap - ledger.total()).max(Money::default()),
                cap,
                cap_wallet: None,
            });
        }
        Ok(())
    }

    /// Counts what was paid before this ledger was made (an earlier start of a resumed run), whatever
    /// the caps say: what was paid was paid.
    pub fn count_paid(&self, wallet: &str, amount: Money) {
        *self.ledger().spent.entry(wallet.to_string()).or_default() += amount;
    }

    /// Nothing was paid for this reservation: its room is free again.
    pub fn release(&self, r: Reservation) {
        self.ledger().take_back(&r.wallet, r.amount);
    }

    /// The reservation was paid for job `job_id` (whose refund will give it back).
    pub fn paid(&self, r: Reservation, job_id: &str) {
        self.ledger()
            .jobs
            .insert(job_id.to_string(), (r.wallet, r.amount));
    }

    /// The reservation was paid, but for no job known by id (a lost answer that may have created one).
    pub fn paid_unknown(&self, r: Reservation) {
        drop(r);
    }

    /// Settles a reservation at what was actually paid (a run's spend, refunds taken off): the rest
    /// is free again. More than was reserved is counted too: what was paid was paid.
    pub fn settle(&self, r: Reservation, actual: Money) {
        let mut ledger = self.ledger();
        ledger.take_back(&r.wallet, r.amount);
        *ledger.spent.entry(r.wallet).or_default() += actual.max(Money::default());
    }

    /// A refund of job `job_id` was confirmed: its payment, if this ledger paid it, is given back
    /// (once). Returns the amount given back.
    pub fn refunded(&self, job_id: &str) -> Option<Money> {
        let mut ledger = self.ledger();
        let (wallet, amount) = ledger.jobs.remove(job_id)?;
        ledger.take_back(&wallet, amount);
        Some(amount)
    }

    /// What is left under each cap, and what was spent.
    pub fn left(&self) -> Left {
        let ledger = self.ledger();
        Left {
            total: self
                .caps
                .total
                .map(|cap| (cap - ledger.total()).max(Money::default())),
            per_wallet: self
                .caps
                .per_wallet
                .iter()
                .map(|(w, cap)| (w.clone(), (*cap - ledger.spent(w)).max(Money::default())))
                .collect(),
            spent: ledger.spent.clone(),
        }
    }

    /// What `wallet` may still pay: the smaller of its own cap's and the total's remainder (`None`
    /// when neither caps it).
    pub fn left_for(&self, wallet: &str) -> Option<Money> {
        let left = self.left();
        match (left.total, left.per_wallet.get(wallet)) {
            (Some(t), Some(w)) => Some(t.min(*w)),
            (t, w) => t.or(w.copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_may_lower_a_plans_caps_never_raise_them() {
        let plan = Caps {
            total: Some(Money::from_int(100)),
            per_wallet: [("a".to_string(), Money::from_int(50))].into(),
        };
        let cli = Caps {
            total: Some(Money::from_int(200)),
            per_wallet: [
                ("a".to_string(), Money::from_int(10)),
                ("b".to_string(), Money::from_int(5)),
            ]
            .into(),
        };
        let t = plan.tightest(&cli);
        assert_eq!(t.total, Some(Money::from_int(100)));
        assert_eq!(t.per_wallet["a"], Money::from_int(10));
        assert_eq!(t.per_wallet["b"], Money::from_int(5));
        let cap = SpendCap::new(t);
        cap.count_paid("a", Money::from_int(8));
        assert!(cap.reserve("a", Money::from_int(3)).is_err());
        assert!(cap.reserve("a", Money::from_int(2)).is_ok());
    }

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn capped(args: &[&str]) -> SpendCap {
        let mut caps = Caps::default();
        for a in args {
            caps.add(a).unwrap();
        }
        SpendCap::new(caps)
    }

    #[test]
    fn caps_parse_total_and_per_wallet_once_each() {
        let mut caps = Caps::default();
        caps.add("10").unwrap();
        caps.add("ops=2.5").unwrap();
        assert_eq!(caps.total, Some(m("10")));
        assert_eq!(caps.per_wallet["ops"], m("2.5"));
        assert!(caps.add("12").unwrap_err().contains("given twice"));
        assert!(caps.add("ops=1").unwrap_err().contains("given twice"));
        assert!(caps.add("=1").is_err());
        assert!(caps.add("x=-1").is_err());
        assert!(caps.add("x=lots").is_err());
    }

    #[test]
    fn a_payment_past_the_total_is_refused_saying_what_is_left() {
        let cap = capped(&["10"]);
        let a = cap.reserve("w", m("6")).unwrap();
        cap.paid(a, "job-a");
        let e = cap.reserve("v", m("5")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spend cap: 5 AITBC from wallet v is more than is left: 4 AITBC of the total cap of 10 AITBC"
        );
        assert_eq!(
            e.advice().unwrap(),
            "Lower the payment to at most 4 AITBC, or ask whoever set the spend cap to raise it"
        );
        // What is left can still be paid, to the cent.
        let b = cap.reserve("v", m("4")).unwrap();
        cap.paid(b, "job-b");
        assert_eq!(cap.left().total, Some(Money::default()));
    }

    #[test]
    fn a_wallets_own_cap_binds_it_and_not_the_others() {
        let cap = capped(&["ops=3"]);
        let a = cap.reserve("ops", m("2")).unwrap();
        cap.paid(a, "j1");
        let e = cap.reserve("ops", m("1.5")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("1 AITBC of the cap of 3 AITBC for wallet ops"),
            "{e}"
        );
        let other = cap.reserve("other", m("1000")).unwrap();
        cap.release(other);
        assert_eq!(cap.left_for("ops"), Some(m("1")));
        assert_eq!(cap.left_for("other"), None);
    }

    #[test]
    fn released_and_refunded_payments_give_their_room_back_once() {
        let cap = capped(&["5"]);
        let r = cap.reserve("w", m("5")).unwrap();
        assert!(cap.reserve("w", m("0.01")).is_err());
        cap.release(r);
        let r = cap.reserve("w", m("5")).unwrap();
        cap.paid(r, "job");
        assert!(cap.reserve("w", m("1")).is_err());
        assert_eq!(cap.refunded("job"), Some(m("5")));
        assert_eq!(cap.refunded("job"), None);
        assert_eq!(cap.refunded("someone-elses"), None);
        assert_eq!(cap.left().total, Some(m("5")));
    }

    #[test]
    fn resubmissions_count_every_time() {
        let cap = capped(&["3"]);
        for id in ["a", "b", "c"] {
            let r = cap.reserve("w", m("1")).unwrap();
            cap.paid(r, id);
        }
        assert!(cap.reserve("w", m("1")).is_err());
    }

    #[test]
    fn a_plans_payments_are_reserved_all_or_none_and_settled_at_what_was_paid() {
        let cap = capped(&["10", "a=4"]);
        let mut plan = BTreeMap::new();
        plan.insert("a".to_string(), m("5"));
        plan.insert("b".to_string(), m("1"));
        assert!(cap.reserve_all(&plan).is_err());
        assert_eq!(cap.left().spent.values().copied().sum::<Money>(), m("0"));
        plan.insert("a".to_string(), m("4"));
        let rs = cap.reserve_all(&plan).unwrap();
        assert_eq!(cap.left().total, Some(m("5")));
        for r in rs {
            let actual = if r.wallet() == "a" { m("1.5") } else { m("0") };
            cap.settle(r, actual);
        }
        assert_eq!(cap.left().total, Some(m("8.5")));
        assert_eq!(cap.left_for("a"), Some(m("2.5")));
    }

    #[test]
    fn concurrent_reservations_never_pass_the_cap() {
        let cap = std::sync::Arc::new(capped(&["10"]));
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let cap = cap.clone();
                std::thread::spawn(move || {
                    cap.reserve("w", m("1"))
                        .map(|r| cap.paid(r, &i.to_string()))
                        .is_ok()
                })
            })
            .collect();
        let ok = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(ok, 10);
        assert_eq!(cap.left().total, Some(Money::default()));
    }
}
