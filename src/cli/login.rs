//! `login`: get a session token by signing the coordinator's nonce with the wallet's key, and write it
//! to `AITBC_TOKEN_FILE` (0600, atomically) where `run`, `resume` and the job commands read it. A cron
//! job runs it before the token's 24 h are up; a runner that gets a 401 reads the file again once.

use std::path::PathBuf;

use crate::client::config::{ClientConfig, Pacing, Secret};
use crate::client::http::HttpCoordinator;
use crate::client::login::{KeySource, LoginError, readable_by_others, write_token_file};
use crate::exit;

/// `login`
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The coordinator's base URL.
    #[arg(long, env = "AITBC_COORDINATOR_URL", value_name = "URL")]
    pub coordinator: Option<String>,
    /// A key file (64 hex digits) or an upstream CLI wallet file (JSON with `private_key`). Without it
    /// (and without --wallet), the key is read from AITBC_PRIVATE_KEY.
    #[arg(long, env = "AITBC_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The upstream CLI's wallet of this name: `~/.aitbc/wallets/NAME.json`.
    #[arg(long, value_name = "NAME", conflicts_with = "key_file")]
    pub wallet: Option<String>,
    /// The address to log in as; must be the key's (default: the key's).
    #[arg(long, value_name = "0x…")]
    pub wallet_address: Option<String>,
    /// Where to write the session token.
    #[arg(long, env = "AITBC_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Runs `login`.
pub fn login(a: LoginArgs) -> i32 {
    let Some(url) = a.coordinator.as_deref() else {
        errln!("error: no coordinator configured (set --coordinator or AITBC_COORDINATOR_URL)");
        return exit::INVALID;
    };
    let Some(token_file) = a.token_file.clone() else {
        errln!(
            "error: say where the session token goes: --token-file FILE or AITBC_TOKEN_FILE (the runner reads it there)"
        );
        return exit::INVALID;
    };
    let source = match (&a.key_file, &a.wallet) {
        (Some(f), _) => KeySource::File(f.clone()),
        (None, Some(name)) => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            KeySource::File(
                home.join(".aitbc")
                    .join("wallets")
                    .join(format!("{name}.json")),
            )
        }
        (None, None) => match std::env::var("AITBC_PRIVATE_KEY") {
            Ok(k) if !k.trim().is_empty() => KeySource::Env(Secret::new(k)),
            _ => {
                errln!(
                    "error: no key to sign with: give --key-file FILE, --wallet NAME, or set AITBC_PRIVATE_KEY"
                );
                return exit::INVALID;
            }
        },
    };
    let key = match source.read() {
        Ok(k) => k,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    if let KeySource::File(path) = &source
        && readable_by_others(path)
    {
        errln!(
            "warning: {} can be read by other users; a key file should be readable by you only (chmod 600)",
            path.display()
        );
    }
    if let Some(want) = &a.wallet_address
        && !want.trim().eq_ignore_ascii_case(key.address())
    {
        errln!(
            "error: the key belongs to {}, not to --wallet-address {}",
            key.address(),
            want.trim()
        );
        return exit::INVALID;
    }
    let mut config = match ClientConfig::for_url(url) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    config.pacing = Pacing::real_service();
    let client = match HttpCoordinator::new(&config) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return exit::INVALID;
        }
    };
    let session = match runtime.block_on(client.login(&key)) {
        Ok(s) => s,
        Err(LoginError::Client(e)) => {
            errln!("error: login as {} failed: {e}", key.address());
            return exit::for_client(&e);
        }
        Err(e) => {
            errln!("error: login as {} failed: {e}", key.address());
            return exit::STEP_FAILED;
        }
    };
    if let Err(e) = write_token_file(&token_file, &session.token) {
        errln!(
            "error: logged in, but cannot write the session token to {}: {e}",
            token_file.display()
        );
        return exit::STEP_FAILED;
    }
    let until = session
        .expires_at
        .map(|t| format!(", valid until {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    outln!(
        "logged in to {} as {}; session token written to {} (mode 0600){until}",
        client_url(url),
        session.address,
        token_file.display()
    );
    exit::SUCCESS
}

/// The URL as given, without a trailing slash.
fn client_url(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}
