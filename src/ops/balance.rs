//! `balance`: a wallet's balance, in AITBC, from the wallet daemon.

use serde_json::json;

use super::{Conn, Done, OpError};
use crate::api::WalletBalance;
use crate::client::Coordinator;
use crate::model::{Operation, Outcome};

/// Reads a wallet's balance.
pub async fn balance<C: Coordinator>(
    conn: &Conn<'_, C>,
    wallet: &str,
) -> Result<Done<WalletBalance>, OpError> {
    let b = conn.call(|c| c.balance(wallet)).await?;
    let outcome = outcome(&b);
    Ok(Done { answer: b, outcome })
}

/// The outcome of a balance read.
pub fn outcome(b: &WalletBalance) -> Outcome {
    let mut out = Outcome::new(
        Operation::Balance,
        format!("Wallet {} holds {} AITBC", b.wallet_id, b.balance),
    );
    out.wallet = Some(b.wallet_id.clone());
    out.result = Some(json!(b.balance.to_string()));
    out.performance_metrics = Some(json!({
        "balance": b.balance,
        "address": b.address,
        "chain_id": b.chain_id,
    }));
    out
}
