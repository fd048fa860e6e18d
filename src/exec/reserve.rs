//! Wallet reservations shared with the other runs that pay from the same wallets: before a submit, the
//! payment is reserved against the wallet's balance minus every other live reservation, so that runs
//! in several processes (two `run`s, the scheduler's children, several hosts) never overspend a wallet
//! together. The book itself is the store's (`store::reservations`: a file behind `flock` on one host,
//! rows in PostgreSQL across hosts); this file is the protocol every submit follows.
//!
//! **The protocol** (optimistic, so that no lock is held while the balance is read over the network):
//! read the wallet's version in the book ([`Reservations::version`]), read the balance from the
//! coordinator, then reserve ([`Reservations::reserve`]) in one step that refuses when the version has
//! changed in between — every reservation taken or released, and every dead one dropped, changes it —
//! and then reads the balance again. A reservation is released once the coordinator has taken the
//! payment into escrow (the balance shows it from then on), or when the run ends; one whose answer was
//! lost stays until the run ends. So a balance read can miss a payment only while that payment's
//! reservation is still counted.

use std::time::Instant;

use crate::client::Coordinator;
use crate::money::Money;
use crate::ops::payer::BalanceCheck;
use crate::ops::submit::Funds;
use crate::ops::{Conn, OpError};
use crate::policy::PolicyError;

/// A reservation in the book: what releases it.
pub type ReservationId = i64;

/// How many times a reservation is tried again when the book changed under it, before giving up.
const TRIES: u32 = 50;

/// A wallet's version as read before its balance, and when it was read.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    /// The version (changes with every reservation taken, released or dropped).
    pub version: i64,
    /// When it was read.
    pub at: Instant,
}

/// What one attempt to reserve gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Reserve {
    /// Reserved.
    Taken(ReservationId),
    /// The book changed since the version was read: read the balance again and try again.
    Changed,
    /// The balance minus the other live reservations (`others`) does not cover the amount.
    Short {
        /// What the other live reservations of the wallet hold.
        others: Money,
    },
}

/// The reservations of one run in a book shared with other runs. Dropping it releases what is left.
pub trait Reservations: Send + Sync + std::fmt::Debug {
    /// Where the book is, for messages (a store URL redacted).
    fn describe(&self) -> String;
    /// The wallet's version now; dead reservations (of a process that is gone, or a lease not renewed)
    /// are dropped first, which changes it.
    fn version(&self, wallet: &str) -> Result<Seen, String>;
    /// Reserves `amount` of `wallet` for this run when the version is still `seen` and `balance` minus
    /// every other live reservation of the wallet covers it.
    fn reserve(
        &self,
        wallet: &str,
        amount: Money,
        balance: Money,
        seen: Seen,
    ) -> Result<Reserve, String>;
    /// Releases one reservation of this run (of `wallet`).
    fn release(&self, wallet: &str, id: ReservationId) -> Result<(), String>;
}

/// Why a submit's reservation failed: the wallet cannot pay, or the book could not be used.
#[derive(Debug)]
pub enum Refused {
    /// The balance check (or the reservation against the other runs') refused the payment.
    Op(OpError),
    /// The book could not be read or written.
    Book(String),
}

/// The balance check before a submit, with the payment reserved in `book` when there is one. With the
/// check off nothing is read and nothing reserved (there is no balance to reserve against).
pub async fn check_and_reserve<C: Coordinator>(
    book: Option<&dyn Reservations>,
    conn: &Conn<'_, C>,
    wallet: &str,
    amount: Money,
    check: BalanceCheck,
) -> Result<(Funds, Option<ReservationId>), Refused> {
    let Some(book) = book.filter(|_| check == BalanceCheck::On) else {
        let funds = crate::ops::submit::check_funds(conn, wallet, amount, check)
            .await
            .map_err(Refused::Op)?;
        return Ok((funds, None));
    };
    for _ in 0..TRIES {
        let seen = book.version(wallet).map_err(Refused::Book)?;
        let funds = crate::ops::submit::check_funds(conn, wallet, amount, check)
            .await
            .map_err(Refused::Op)?;
        let Some(held) = funds.balance.as_ref().map(|b| b.balance) else {
            return Ok((funds, None));
        };
        match book
            .reserve(wallet, amount, held, seen)
            .map_err(Refused::Book)?
        {
            Reserve::Taken(id) => return Ok((funds, Some(id))),
            Reserve::Changed => {
                // Another run took or released a reservation meanwhile; a short pause spreads the
                // retries of runs that keep meeting.
                let ms = rand::random_range(1..20);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            Reserve::Short { others } => {
                return Err(Refused::Op(OpError::Rules(vec![
                    PolicyError::ReservedByOthers {
                        wallet: wallet.to_string(),
                        held,
                        reserved: others,
                        needed: amount,
                    },
                ])));
            }
        }
    }
    Err(Refused::Book(format!(
        "the reservations of wallet {wallet} kept changing under {TRIES} attempts to reserve {amount} AITBC"
    )))
}

/// Whether the coordinator has the payment in escrow, so that the wallet's balance shows it and its
/// reservation can go.
pub fn escrowed(payment_status: Option<&str>) -> bool {
    payment_status.is_some_and(|s| s.eq_ignore_ascii_case("escrowed"))
}
