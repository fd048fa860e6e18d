//! Wallet login as the coordinator speaks it: the message a wallet signs, EIP-191 (`personal_sign`)
//! signatures over secp256k1 with keccak256, the Ethereum address of a key, and the claims of a session
//! token (a JWT) — what the client (`aitbc-flow login`, the expiry check before a run) and the embedded
//! coordinator (which verifies logins and issues tokens) must agree on, written once.
//!
//! The flow (`apps/coordinator-api`, `routers/users.py`): `POST /v1/auth/nonce {"wallet_address"}` →
//! `{"wallet_address", "nonce", "expires_at"}`; the wallet signs [`login_message`] with EIP-191;
//! `POST /v1/login {"wallet_address", "nonce", "signature": "0x…"}` → `{…, "session_token"}`, an HS256 JWT
//! with `sub`, `role`, `type`, `iat` and `exp` (24 h). A client reads `exp` without checking the
//! signature: only the service can, and the client only needs to know when to log in again.

use std::fmt;

use base64::Engine;
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha3::{Digest, Keccak256};

/// The message the coordinator expects a wallet to sign for `POST /v1/login` (the address in lower case).
pub fn login_message(wallet_address: &str, nonce: &str) -> String {
    format!(
        "Sign this message to log in to AITBC.\nWallet: {}\nNonce: {nonce}",
        wallet_address.to_ascii_lowercase()
    )
}

/// True for `0x` followed by 40 hex digits, the only address form `/v1/auth/nonce` accepts.
pub fn is_wallet_address(text: &str) -> bool {
    text.strip_prefix("0x")
        .is_some_and(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// keccak256 of `bytes`.
fn keccak(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

/// The EIP-191 (version 0x45, `personal_sign`) hash of a message.
pub fn personal_hash(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    h.update(message);
    h.finalize().into()
}

/// The Ethereum address of a public key: the last 20 bytes of keccak256 of its uncompressed point,
/// `0x` and lower-case hex.
fn address_of(key: &VerifyingKey) -> String {
    let point = key.to_sec1_point(false);
    let hash = keccak(&point.as_bytes()[1..]);
    format!("0x{}", hex::encode(&hash[12..]))
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 32 bytes of hex (with or without `0x`). The text itself is never part of the message.
    #[error("the private key is not 64 hex digits (with or without 0x)")]
    NotHex,
    /// Zero, or not below the curve order.
    #[error("the private key is not a valid secp256k1 key")]
    OutOfRange,
}

/// A wallet's Ethereum (secp256k1) private key. `Debug` shows the address only.
#[derive(Clone)]
pub struct WalletKey {
    key: SigningKey,
    address: String,
}

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletKey({})", self.address)
    }
}

impl WalletKey {
    /// A key from its hex form (`0x` optional, surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<WalletKey, KeyError> {
        let t = text.trim();
        let t = t.strip_prefix("0x").unwrap_or(t);
        if t.len() != 64 {
            return Err(KeyError::NotHex);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(t, &mut bytes).map_err(|_| KeyError::NotHex)?;
        let key = SigningKey::from_slice(&bytes).map_err(|_| KeyError::OutOfRange)?;
        bytes.fill(0);
        Ok(WalletKey::from_signing_key(key))
    }

    /// A fresh random key (tests, and the embedded coordinator's examples).
    pub fn random() -> WalletKey {
        loop {
            if let Ok(key) = SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
                return WalletKey::from_signing_key(key);
            }
        }
    }

    fn from_signing_key(key: SigningKey) -> WalletKey {
        let address = address_of(key.verifying_key());
        WalletKey { key, address }
    }

    /// The wallet's address, `0x` and lower-case hex.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The key as 64 hex digits, for the one place that writes a key file (tests).
    pub fn expose_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// Signs `message` as `personal_sign` does: `0x` + r ‖ s ‖ v (v = 27 or 28), low-S, deterministic
    /// (RFC 6979), the form `eth_account`'s `sign_message` gives and `recover_message` reads.
    pub fn sign_personal(&self, message: &[u8]) -> String {
        let (sig, recid) = self.key.sign_prehash_recoverable(&personal_hash(message));
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + recid.to_byte();
        format!("0x{}", hex::encode(out))
    }
}

/// Why a signature did not give an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not 65 bytes of hex.
    #[error("the signature is not 65 bytes of hex")]
    Malformed,
    /// r, s or v out of range, or no key recovers from it.
    #[error("no public key recovers from the signature")]
    Unrecoverable,
}

/// The address whose key made `signature` (`0x` + 130 hex digits, v = 0, 1, 27 or 28) over `message`
/// with `personal_sign`.
pub fn recover_personal(message: &[u8], signature: &str) -> Result<String, SignatureError> {
    let t = signature.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let mut bytes = [0u8; 65];
    if t.len() != 130 {
        return Err(SignatureError::Malformed);
    }
    hex::decode_to_slice(t, &mut bytes).map_err(|_| SignatureError::Malformed)?;
    let v = match bytes[64] {
        0 | 1 => bytes[64],
        27 | 28 => bytes[64] - 27,
        _ => return Err(SignatureError::Unrecoverable),
    };
    let sig = Signature::from_slice(&bytes[..64]).map_err(|_| SignatureError::Unrecoverable)?;
    let recid = RecoveryId::from_byte(v).ok_or(SignatureError::Unrecoverable)?;
    let key = VerifyingKey::recover_from_prehash(&personal_hash(message), &sig, recid)
        .map_err(|_| SignatureError::Unrecoverable)?;
    Ok(address_of(&key))
}

/// What a session token says about itself (its payload, read without checking the signature).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenClaims {
    /// Who it is for (a user id on the real service, the wallet address on the embedded one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// `client`, `miner` or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Expires at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

/// The claims of a JWT (`header.payload.signature`, base64url); `None` when `token` is not one (an
/// opaque token, such as the embedded coordinator's fixed ones, has no expiry to read).
pub fn read_claims(token: &str) -> Option<TokenClaims> {
    let mut parts = token.trim().split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// When a session token expires, if it says.
pub fn expires_at(token: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let exp = read_claims(token)?.exp?;
    chrono::DateTime::from_timestamp(exp, 0)
}

/// `POST /v1/auth/nonce`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NonceRequest {
    /// `0x` + 40 hex digits.
    pub wallet_address: String,
}

/// The answer to `POST /v1/auth/nonce`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NonceResponse {
    /// The address as sent.
    pub wallet_address: String,
    /// What to sign (inside [`login_message`]); single use, valid 5 minutes.
    pub nonce: String,
    /// When the nonce expires, seconds since the epoch.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// `POST /v1/login`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoginRequest {
    /// The wallet's address.
    pub wallet_address: String,
    /// The nonce `/v1/auth/nonce` gave.
    pub nonce: String,
    /// `0x` + r ‖ s ‖ v of [`login_message`], EIP-191.
    pub signature: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("wallet_address", &self.wallet_address)
            .finish_non_exhaustive()
    }
}

/// The answer to `POST /v1/login` (the real service's `UserProfile`). `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoginResponse {
    /// The user the wallet belongs to (created at its first login).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The session token: a client JWT.
    #[serde(default)]
    pub session_token: Option<String>,
    /// The rest (`email`, `username`, `created_at`), kept as sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginResponse")
            .field("user_id", &self.user_id)
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A key and its address from the Ethereum test vectors (and `eth_account`): private key 0x4c08…
    const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const ADDRESS: &str = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23";

    #[test]
    fn the_address_of_a_known_key() {
        let k = WalletKey::from_hex(KEY).unwrap();
        assert_eq!(k.address(), ADDRESS);
        assert_eq!(
            WalletKey::from_hex(&format!(" 0x{KEY}\n"))
                .unwrap()
                .address(),
            ADDRESS
        );
        assert_eq!(format!("{k:?}"), format!("WalletKey({ADDRESS})"));
        assert_eq!(WalletKey::from_hex("12").unwrap_err(), KeyError::NotHex);
        assert_eq!(
            WalletKey::from_hex(&"0".repeat(64)).unwrap_err(),
            KeyError::OutOfRange
        );
        assert!(!KeyError::NotHex.to_string().contains(KEY));
    }

    #[test]
    fn signs_as_eth_account_does() {
        // eth_account: Account.from_key(KEY).sign_message(encode_defunct(text="hello")).signature.hex()
        let k = WalletKey::from_hex(KEY).unwrap();
        let sig = k.sign_personal(b"hello");
        assert_eq!(
            sig,
            "0xa5d58782075bdf09490159d634d1aae66a8f6777c7247d2f233e9511cfd7c64c34f288cdbcea5370e4863fdbe9f4d86654c2ba1d86589e9ebb64494c649008591b"
        );
        // And a login message with a nonce as the real service issues them.
        let msg = login_message(ADDRESS, "STGJEy35OokS5ZS6MdRWEQ");
        assert_eq!(
            k.sign_personal(msg.as_bytes()),
            "0x8037791d8f62b768b98fa23c75f3d28f40ceee5a7ba9a16efb95961f8d2365b459d0fae3e5af3cb30ff89264e04a9570c3bc8685a7d577d7b4a7902c46a5d54d1b"
        );
        assert_eq!(sig.len(), 2 + 130);
        assert!(sig.ends_with("1b") || sig.ends_with("1c"));
        assert_eq!(recover_personal(b"hello", &sig).unwrap(), ADDRESS);
        // Deterministic (RFC 6979).
        assert_eq!(k.sign_personal(b"hello"), sig);
    }

    #[test]
    fn recovery_fails_for_another_message_or_a_bad_signature() {
        let k = WalletKey::random();
        let msg = login_message(k.address(), "abc");
        let sig = k.sign_personal(msg.as_bytes());
        assert_eq!(recover_personal(msg.as_bytes(), &sig).unwrap(), k.address());
        assert_ne!(
            recover_personal(b"another message", &sig).unwrap_or_default(),
            k.address()
        );
        assert_eq!(
            recover_personal(msg.as_bytes(), "0x1234"),
            Err(SignatureError::Malformed)
        );
        let mut bad_v = sig.clone();
        bad_v.replace_range(130.., "05");
        assert_eq!(
            recover_personal(msg.as_bytes(), &bad_v),
            Err(SignatureError::Unrecoverable)
        );
        // v as 0/1 reads as well as 27/28.
        let mut v01 = sig.clone();
        let v = if sig.ends_with("1b") { "00" } else { "01" };
        v01.replace_range(130.., v);
        assert_eq!(recover_personal(msg.as_bytes(), &v01).unwrap(), k.address());
    }

    #[test]
    fn the_login_message_is_the_services() {
        assert_eq!(
            login_message("0xAbC0000000000000000000000000000000000000", "n-1"),
            "Sign this message to log in to AITBC.\nWallet: 0xabc0000000000000000000000000000000000000\nNonce: n-1"
        );
        assert!(is_wallet_address(ADDRESS));
        assert!(!is_wallet_address("ait1xyz"));
        assert!(!is_wallet_address(&ADDRESS[..41]));
    }

    #[test]
    fn reads_the_expiry_of_a_jwt() {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"HS256","typ":"JWT"}"#),
            enc(
                r#"{"sub":"u-1","role":"client","type":"access","iat":1796148077,"exp":1796234477}"#
            )
        );
        let c = read_claims(&token).unwrap();
        assert_eq!(c.exp, Some(1796234477));
        assert_eq!(c.role.as_deref(), Some("client"));
        assert_eq!(expires_at(&token).unwrap().timestamp(), 1796234477);
        assert_eq!(read_claims("test-token"), None);
        assert_eq!(read_claims("a.b.c.d"), None);
        assert_eq!(expires_at(&format!("x.{}.y", enc(r#"{"sub":"s"}"#))), None);
    }
}
