//! `aitbc-flow login`'s client side: the wallet's key from where the upstream CLI keeps it, the login
//! exchange (`POST /v1/auth/nonce`, an EIP-191 signature, `POST /v1/login`), and the session token
//! written where the runner reads it (`AITBC_TOKEN_FILE`): atomically, mode 0600.
//!
//! Key sources, in the upstream CLI's formats (`aitbc auth login`, `aitbc wallet create`):
//! - a key file: 64 hex digits, `0x` optional (`--private-key-file`);
//! - a CLI wallet file (`~/.aitbc/wallets/NAME.json`, `--wallet NAME`): JSON whose `private_key` is the hex
//!   key (a wallet created with `--no-encrypt`);
//! - `AITBC_PRIVATE_KEY`: the hex key itself (for CI; the upstream CLI's `--private-key`).
//!
//! A wallet file whose key is encrypted (`private_key` an object: PBKDF2-SHA256 + Fernet) is refused
//! with a message saying how to export the key instead. The key and the token never reach any output.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::ClientError;
use super::config::Secret;
use super::http::HttpCoordinator;
use crate::auth::{
    LoginRequest, LoginResponse, NonceRequest, NonceResponse, WalletKey, login_message,
};
use crate::limits::Endpoint;

/// Where the wallet's key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A key file or a wallet file.
    File(PathBuf),
    /// `AITBC_PRIVATE_KEY` (the value is held as a [`Secret`]).
    Env(Secret),
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read the key file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file holds no usable key.
    #[error("{source_name}: {reason}")]
    Bad {
        /// The file, or `AITBC_PRIVATE_KEY`.
        source_name: String,
        /// Why (never the key).
        reason: String,
    },
}

impl KeySource {
    /// The key.
    pub fn read(&self) -> Result<WalletKey, KeyFileError> {
        match self {
            KeySource::Env(s) => WalletKey::from_hex(s.expose()).map_err(|e| KeyFileError::Bad {
                source_name: "AITBC_PRIVATE_KEY".into(),
                reason: e.to_string(),
            }),
            KeySource::File(path) => read_key_file(path),
        }
    }
}

/// Reads a key file or a CLI wallet file.
pub fn read_key_file(path: &Path) -> Result<WalletKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let bad = |reason: String| KeyFileError::Bad {
        source_name: path.display().to_string(),
        reason,
    };
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return WalletKey::from_hex(trimmed).map_err(|e| bad(e.to_string()));
    }
    let wallet: serde_json::Value =
        serde_json::from_str(trimmed).map_err(|e| bad(format!("not a wallet file (JSON): {e}")))?;
    match wallet.get("private_key") {
        Some(serde_json::Value::String(hex)) => {
            let key = WalletKey::from_hex(hex).map_err(|e| bad(e.to_string()))?;
            if let Some(addr) = wallet.get("address").and_then(|a| a.as_str())
                && !addr.eq_ignore_ascii_case(key.address())
            {
                return Err(bad(format!(
                    "its private key belongs to {}, not to the address {addr} the file names",
                    key.address()
                )));
            }
            Ok(key)
        }
        Some(serde_json::Value::Object(_)) => Err(bad(
            "the wallet's key is encrypted (PBKDF2-SHA256-Fernet), which aitbc-flow does not decrypt: \
             export the key to a file readable only by you (64 hex digits) and pass it with --key-file, \
             or set AITBC_PRIVATE_KEY"
                .into(),
        )),
        _ => Err(bad(
            "no `private_key` in the wallet file (a key file holds 64 hex digits; a wallet file is JSON with `private_key`)"
                .into(),
        )),
    }
}

/// True when others than the owner may read the file (a key file should be 0600).
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// A session got by logging in.
#[derive(Debug, Clone)]
pub struct Session {
    /// The wallet's address as the service keeps it (lower case).
    pub address: String,
    /// The user id the service gave, if it said.
    pub user_id: Option<String>,
    /// The session token.
    pub token: Secret,
    /// When it expires, if the token says.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoginError {
    /// A request failed or was refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An answer without what it must carry.
    #[error("the coordinator's answer to {what} has no {field}")]
    Missing {
        /// The request.
        what: &'static str,
        /// The field.
        field: &'static str,
    },
}

impl HttpCoordinator {
    /// Logs in with `key`: a nonce for the wallet's address, its EIP-191 signature, a session token.
    pub async fn login(&self, key: &WalletKey) -> Result<Session, LoginError> {
        let address = key.address().to_string();
        let nonce: NonceResponse = self
            .post_json(
                &["v1", "auth", "nonce"],
                Some(Endpoint::Nonce),
                &NonceRequest {
                    wallet_address: address.clone(),
                },
            )
            .await?;
        if nonce.nonce.is_empty() {
            return Err(LoginError::Missing {
                what: "POST /v1/auth/nonce",
                field: "nonce",
            });
        }
        let signature = key.sign_personal(login_message(&address, &nonce.nonce).as_bytes());
        let answer: LoginResponse = self
            .post_json(
                &["v1", "login"],
                Some(Endpoint::Login),
                &LoginRequest {
                    wallet_address: address.clone(),
                    nonce: nonce.nonce,
                    signature,
                },
            )
            .await?;
        let token = answer
            .session_token
            .filter(|t| !t.trim().is_empty())
            .ok_or(LoginError::Missing {
                what: "POST /v1/login",
                field: "session_token",
            })?;
        Ok(Session {
            address,
            user_id: answer.user_id,
            expires_at: crate::auth::expires_at(&token),
            token: Secret::new(token.trim()),
        })
    }
}

/// Writes the token to `path` atomically (a temporary file beside it, mode 0600, synced, renamed over
/// it), so that a runner reading the file sees the old token or the new one, never half of one.
pub fn write_token_file(path: &Path, token: &Secret) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(token.expose().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const ADDRESS: &str = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23";

    #[test]
    fn reads_the_upstream_formats() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("key");
        std::fs::write(&raw, format!("0x{KEY}\n")).unwrap();
        assert_eq!(read_key_file(&raw).unwrap().address(), ADDRESS);
        let wallet = dir.path().join("w.json");
        std::fs::write(
            &wallet,
            format!(r#"{{"wallet_id": "w", "type": "hd", "address": "0x2C7536E3605D9C16a7a3D7b1898e529396a65c23", "private_key": "{KEY}"}}"#),
        )
        .unwrap();
        assert_eq!(read_key_file(&wallet).unwrap().address(), ADDRESS);
        std::fs::write(
            &wallet,
            r#"{"address": "0x1", "private_key": {"encrypted_data": "gAAAA", "salt": "c2FsdA==", "algorithm": "PBKDF2-SHA256-Fernet", "iterations": 600000, "version": "1.0"}}"#,
        )
        .unwrap();
        let e = read_key_file(&wallet).unwrap_err().to_string();
        assert!(e.contains("encrypted") && e.contains("--key-file"), "{e}");
        std::fs::write(
            &wallet,
            format!(r#"{{"address": "0x1", "private_key": "{KEY}"}}"#),
        )
        .unwrap();
        let e = read_key_file(&wallet).unwrap_err().to_string();
        assert!(e.contains("not to the address 0x1"), "{e}");
        std::fs::write(&raw, "not a key").unwrap();
        let e = read_key_file(&raw).unwrap_err().to_string();
        assert!(
            e.contains("64 hex digits") && !e.contains("not a key"),
            "{e}"
        );
        let e = KeySource::Env(Secret::new("0x12")).read().unwrap_err();
        assert!(e.to_string().starts_with("AITBC_PRIVATE_KEY:"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn the_token_file_is_replaced_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_token_file(&path, &Secret::new("a.b.c")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a.b.c\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!readable_by_others(&path));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}
