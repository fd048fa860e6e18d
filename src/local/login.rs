//! Wallet login on the embedded coordinator, as the real service does it (`routers/users.py`): a nonce
//! per wallet address (single use, 5 minutes), an EIP-191 signature of [`login_message`] that must
//! recover to that address, then a client session token — an HS256 JWT with `sub` (the wallet address),
//! `role`, `type`, `session_id`, `iat` and `exp` (`LocalConfig::token_ttl`, 24 h by default). Each wallet is one
//! client: it sees the jobs it submitted under any of its tokens.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use hmac::{KeyInit, Mac};

use crate::auth::{TokenClaims, is_wallet_address, login_message, read_claims, recover_personal};

/// How long a nonce may be used.
pub const NONCE_TTL_SECS: i64 = 300;

/// At most this many nonces are kept (expired ones go first; past it, the oldest).
const MAX_NONCES: usize = 10_000;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a login was refused, with the service's status and `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// 400 `Invalid wallet address`.
    Address,
    /// 401 `Invalid or expired nonce`.
    Nonce,
    /// 401 `Invalid wallet signature`.
    Signature,
}

impl LoginRefused {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            LoginRefused::Address => 400,
            LoginRefused::Nonce | LoginRefused::Signature => 401,
        }
    }

    /// The `detail` text.
    pub fn detail(self) -> &'static str {
        match self {
            LoginRefused::Address => "Invalid wallet address",
            LoginRefused::Nonce => "Invalid or expired nonce",
            LoginRefused::Signature => "Invalid wallet signature",
        }
    }
}

/// The nonces handed out and the key that signs session tokens.
pub struct Logins {
    secret: [u8; 32],
    ttl_secs: i64,
    nonces: Mutex<HashMap<String, (String, i64)>>,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Logins {
    /// Logins whose tokens are signed with `secret` and valid `ttl_secs`.
    pub fn new(secret: [u8; 32], ttl_secs: i64) -> Logins {
        Logins {
            secret,
            ttl_secs,
            nonces: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh nonce for `address`, replacing any earlier one; returns it and when it expires.
    pub fn nonce(&self, address: &str, now: i64) -> Result<(String, i64), LoginRefused> {
        if !is_wallet_address(address) {
            return Err(LoginRefused::Address);
        }
        let nonce = b64(&rand::random::<[u8; 16]>());
        let expires = now + NONCE_TTL_SECS;
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.retain(|_, (_, e)| *e >= now);
        if nonces.len() >= MAX_NONCES
            && let Some(oldest) = nonces
                .iter()
                .min_by_key(|(_, (_, e))| *e)
                .map(|(k, _)| k.clone())
        {
            nonces.remove(&oldest);
        }
        nonces.insert(address.to_ascii_lowercase(), (nonce.clone(), expires));
        Ok((nonce, expires))
    }

    /// Checks a login (the nonce is used up whatever the signature) and issues a session token for
    /// the wallet; returns the token and the wallet's address in lower case.
    pub fn login(
        &self,
        address: &str,
        nonce: &str,
        signature: &str,
        now: i64,
    ) -> Result<(String, String), LoginRefused> {
        if !is_wallet_address(address) {
            return Err(LoginRefused::Address);
        }
        let address = address.to_ascii_lowercase();
        let issued = {
            let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
            match nonces.get(&address) {
                Some((n, e)) if n == nonce && *e >= now => nonces.remove(&address),
                _ => None,
            }
        };
        if issued.is_none() {
            return Err(LoginRefused::Nonce);
        }
        let message = login_message(&address, nonce);
        match recover_personal(message.as_bytes(), signature) {
            Ok(a) if a == address => {}
            _ => return Err(LoginRefused::Signature),
        }
        let token = self.issue(&address, now);
        Ok((token, address))
    }

    /// A client token for `sub`, valid from `now` for the configured time.
    pub fn issue(&self, sub: &str, now: i64) -> String {
        let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        // A session id as the real service adds: two logins in the same second differ.
        let claims = serde_json::json!({
            "sub": sub, "role": "client", "type": "access", "iat": now, "exp": now + self.ttl_secs,
            "session_id": b64(&rand::random::<[u8; 16]>()),
        });
        let payload = b64(claims.to_string().as_bytes());
        let signed = format!("{header}.{payload}");
        let sig = self.mac(signed.as_bytes()).finalize().into_bytes();
        format!("{signed}.{}", b64(&sig))
    }

    fn mac(&self, bytes: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(bytes);
        mac
    }

    /// The claims of a token this coordinator issued, if its signature holds, it is a client's and it
    /// has not expired.
    pub fn verify(&self, token: &str, now: i64) -> Option<TokenClaims> {
        let (signed, sig) = token.rsplit_once('.')?;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .ok()?;
        self.mac(signed.as_bytes()).verify_slice(&sig).ok()?;
        let claims = read_claims(token)?;
        (claims.role.as_deref() == Some("client") && claims.exp.is_some_and(|e| e > now))
            .then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::WalletKey;

    #[test]
    fn a_signed_nonce_gets_a_token_once() {
        let logins = Logins::new([7; 32], 3600);
        let key = WalletKey::random();
        let now = 1_800_000_000;
        let (nonce, expires) = logins.nonce(key.address(), now).unwrap();
        assert_eq!(expires, now + NONCE_TTL_SECS);
        let sig = key.sign_personal(login_message(key.address(), &nonce).as_bytes());
        let (token, who) = logins.login(key.address(), &nonce, &sig, now + 1).unwrap();
        assert_eq!(who, key.address());
        let claims = logins.verify(&token, now + 2).unwrap();
        assert_eq!(claims.sub.as_deref(), Some(key.address()));
        assert_eq!(claims.exp, Some(now + 1 + 3600));
        // Expired, tampered with, or from another coordinator: refused.
        assert_eq!(logins.verify(&token, now + 1 + 3600), None);
        assert_eq!(Logins::new([8; 32], 3600).verify(&token, now + 2), None);
        let mut forged = token.clone();
        forged.insert(forged.len() - 3, 'x');
        assert_eq!(logins.verify(&forged, now + 2), None);
        // The nonce is used up.
        assert_eq!(
            logins.login(key.address(), &nonce, &sig, now + 3),
            Err(LoginRefused::Nonce)
        );
    }

    #[test]
    fn a_wrong_signer_an_old_nonce_or_a_bad_address_is_refused() {
        let logins = Logins::new([7; 32], 3600);
        let key = WalletKey::random();
        let other = WalletKey::random();
        let now = 1_800_000_000;
        let (nonce, _) = logins.nonce(key.address(), now).unwrap();
        let sig = other.sign_personal(login_message(key.address(), &nonce).as_bytes());
        assert_eq!(
            logins.login(key.address(), &nonce, &sig, now),
            Err(LoginRefused::Signature)
        );
        let (nonce, _) = logins.nonce(key.address(), now).unwrap();
        let sig = key.sign_personal(login_message(key.address(), &nonce).as_bytes());
        assert_eq!(
            logins.login(key.address(), &nonce, &sig, now + NONCE_TTL_SECS + 1),
            Err(LoginRefused::Nonce)
        );
        assert_eq!(logins.nonce("ait1abc", now), Err(LoginRefused::Address));
        // The address may come in any case: the nonce is the wallet's.
        let upper = format!("0x{}", key.address()[2..].to_ascii_uppercase());
        let (nonce, _) = logins.nonce(&upper, now).unwrap();
        let sig = key.sign_personal(login_message(&upper, &nonce).as_bytes());
        assert!(logins.login(&upper, &nonce, &sig, now).is_ok());
    }
}
