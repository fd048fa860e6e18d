//! `balance`: a wallet's balance, in AITBC, from the wallet daemon (`AITBC_WALLET_URL`). The
//! coordinator does not serve balances (a client token gets 403 there), and the daemon answers 404
//! `Wallet not found` for a wallet it does not hold: both are worded here, once, for `job balance`, the
//! check before every submit and the run's preflight.

use serde_json::json;

use super::{Conn, Done, OpError};
use crate::api::WalletBalance;
use crate::client::{ClientError, Coordinator};
use crate::model::{Operation, Outcome};

/// Reads a wallet's balance.
pub async fn balance<C: Coordinator>(
    conn: &Conn<'_, C>,
    wallet: &str,
) -> Result<Done<WalletBalance>, OpError> {
    let b = read(conn, wallet).await?;
    let outcome = outcome(&b);
    Ok(Done { answer: b, outcome })
}

/// Reads a wallet's balance with the connection's retry policy; a failure says where balances come
/// from.
pub async fn read<C: Coordinator>(
    conn: &Conn<'_, C>,
    wallet: &str,
) -> Result<WalletBalance, OpError> {
    conn.call(|c| c.balance(wallet))
        .await
        .map_err(|e| unreadable(conn, wallet, e))
}

/// The error of a balance read that failed.
pub fn unreadable<C: Coordinator>(conn: &Conn<'_, C>, wallet: &str, e: ClientError) -> OpError {
    let base = conn.coord.base_url().trim_end_matches('/');
    match e {
        // The daemon's own 404; a route that does not exist says `Not Found`.
        ClientError::NotFound { url, detail } if detail.to_ascii_lowercase().contains("wallet") => {
            OpError::WalletNotFound {
                wallet: wallet.to_string(),
                url,
            }
        }
        e => {
            let at_coordinator = ClientError::url(&e).is_some_and(|u| u.starts_with(base));
            OpError::BalanceUnknown {
                wallet: wallet.to_string(),
                error: Box::new(e),
                at_coordinator,
            }
        }
    }
}

/// The outcome of a balance read.
pub fn outcome(b: &WalletBalance) -> Outcome {
    let mut out = Outcome::new(
        Operation::Balance,
        format!("Wallet {} holds {} AITBC", b.wallet_id, b.balance),
    );
    out.wallet = Some(b.wallet_id.clone());
    out.result = Some(json!(b.balance.to_string()));
    out.performance_metrics = Some(
        json!({
            "balance": b.balance,
            "address": b.address,
            "chain_id": b.chain_id,
        })
        .into(),
    );
    if let Some(e) = &b.error {
        out.issues.push(format!(
            "the wallet daemon reports an error for this wallet: {e} (its balance is then not read from the chain)"
        ));
    }
    if !b.address.as_deref().is_some_and(crate::api::is_address) {
        out.issues.push(format!(
            "the wallet has no chain address (the daemon names it {}): jobs cannot be paid from it by name",
            b.address
                .as_deref()
                .map_or("nothing".to_string(), |a| format!("`{a}`"))
        ));
        out.recommendations.push(
            "Register the wallet's chain address in its metadata at the wallet daemon, or pay with --wallet 0x…"
                .into(),
        );
    }
    out.settle()
}
