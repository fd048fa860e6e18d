//! Client configuration: where the coordinator and the wallet daemon are, the credentials, the
//! timeouts and the client-side pacing.
//!
//! Everything comes from the command line or the environment (`AITBC_COORDINATOR_URL`, `AITBC_TOKEN`,
//! `AITBC_TOKEN_FILE`, `AITBC_API_KEY`, `AITBC_WALLET_URL`, `AITBC_RATE_LIMIT`, `AITBC_MAX_IN_FLIGHT`), read once by
//! [`ClientConfig::from_env`] and then passed in: nothing reads the environment later. Secrets are held
//! in [`Secret`], which prints as `***`, so a config can be logged or debug-printed safely.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

/// A credential. Its `Debug` and `Display` print `***`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Client-side pacing: the limits per endpoint class and their window (`crate::limits`); off for the
/// embedded coordinator, the real service's for a remote one unless `AITBC_RATE_LIMIT` says otherwise.
pub type Pacing = crate::limits::RateLimits;

/// Requests in flight at once to a remote coordinator, by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// A configuration problem, reported before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A URL that does not parse, or is not http(s).
    #[error("{source_name} is not a usable URL (`{value}`): {reason}")]
    BadUrl {
        /// Where it came from (`--coordinator`, `AITBC_COORDINATOR_URL`, …).
        source_name: String,
        /// The text given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The token file could not be read, or is empty.
    #[error("cannot read the token from AITBC_TOKEN_FILE ({path}): {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Some other setting does not parse.
    #[error("{name}: {reason}")]
    Bad {
        /// The setting.
        name: String,
        /// Why.
        reason: String,
    },
    /// An HTTP client was asked for but no coordinator URL is configured.
    #[error("no coordinator configured (set --coordinator or AITBC_COORDINATOR_URL)")]
    NoCoordinator,
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
}

/// What the command line says; it wins over the environment.
#[derive(Clone, Debug, Default)]
pub struct ConfigOverrides {
    /// `--coordinator URL`.
    pub coordinator: Option<String>,
    /// `--wallet-url URL`.
    pub wallet_url: Option<String>,
}

/// How to reach the coordinator and the wallet daemon.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The coordinator's base URL; `None` means "start the embedded coordinator".
    pub coordinator_url: Option<Url>,
    /// The wallet daemon's base URL for balances; `None` means the coordinator's.
    pub wallet_url: Option<Url>,
    /// Sent as `Authorization: Bearer …`.
    pub token: Option<Secret>,
    /// Where the token was read from (`AITBC_TOKEN_FILE`), to read it again after a 401.
    pub token_file: Option<PathBuf>,
    /// Sent as `X-Api-Key` when set (a miner credential; clients do not need it).
    pub api_key: Option<Secret>,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Whole-request timeout for reads, cancels, allocations and balances.
    pub read_timeout: Duration,
    /// Whole-request timeout for a submit (a paid submit can block ~7 s on the real service).
    pub submit_timeout: Duration,
    /// Client-side pacing per endpoint class.
    pub pacing: Pacing,
    /// The largest answer read from any endpoint, in bytes (`AITBC_MAX_RESPONSE`).
    pub max_response: u64,
    /// The largest answer that carries a job — its view, result, receipt or a list of jobs — in bytes
    /// (`AITBC_MAX_RESULT`).
    pub max_result: u64,
    /// At most this many requests in flight at once (`None`: no cap). The real service wedges under a
    /// few hundred concurrent requests (a database pool of 5 + 10 connections).
    pub max_in_flight: Option<usize>,
}

/// The default of [`ClientConfig::max_response`]: 4 MiB.
pub const DEFAULT_MAX_RESPONSE: u64 = 4 << 20;
/// The default of [`ClientConfig::max_result`]: 16 MiB.
pub const DEFAULT_MAX_RESULT: u64 = 16 << 20;
/// The highest response limit that can be set: 1 GiB.
pub const MAX_RESPONSE_LIMIT: u64 = 1 << 30;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            coordinator_url: None,
            wallet_url: None,
            token: None,
            token_file: None,
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            submit_timeout: Duration::from_secs(30),
            pacing: Pacing::off(),
            max_response: DEFAULT_MAX_RESPONSE,
            max_result: DEFAULT_MAX_RESULT,
            max_in_flight: None,
        }
    }
}

impl ClientConfig {
    /// Reads the configuration from the process environment, with the command line's overrides.
    pub fn from_env(overrides: &ConfigOverrides) -> Result<ClientConfig, ConfigError> {
        ClientConfig::from_lookup(overrides, |k| std::env::var(k).ok())
    }

    /// As [`ClientConfig::from_env`], reading variables through `lookup` (for tests).
    pub fn from_lookup(
        overrides: &ConfigOverrides,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, ConfigError> {
        let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut c = ClientConfig::default();

        c.coordinator_url = match (&overrides.coordinator, var("AITBC_COORDINATOR_URL")) {
            (Some(u), _) => Some(parse_url("--coordinator", u)?),
            (None, Some(u)) => Some(parse_url("AITBC_COORDINATOR_URL", &u)?),
            (None, None) => None,
        };
        c.wallet_url = match (&overrides.wallet_url, var("AITBC_WALLET_URL")) {
            (Some(u), _) => Some(parse_url("--wallet-url", u)?),
            (None, Some(u)) => Some(parse_url("AITBC_WALLET_URL", &u)?),
            (None, None) => None,
        };
        c.token = match (var("AITBC_TOKEN"), var("AITBC_TOKEN_FILE")) {
            (Some(t), _) => Some(Secret::new(t.trim())),
            (None, Some(path)) => {
                c.token_file = Some(PathBuf::from(&path));
                Some(read_token_file(PathBuf::from(path))?)
            }
            (None, None) => None,
        };
        c.api_key = var("AITBC_API_KEY").map(|k| Secret::new(k.trim()));
        // A remote coordinator is paced to the real service's limits unless told otherwise.
        c.pacing = match var("AITBC_RATE_LIMIT") {
            Some(p) => Pacing::parse(&p).map_err(|reason| ConfigError::Bad {
                name: "AITBC_RATE_LIMIT".into(),
                reason,
            })?,
            None if c.coordinator_url.is_some() => Pacing::real_service(),
            None => Pacing::off(),
        };
        // A remote coordinator gets 8 requests in flight at most unless told otherwise (0: no cap).
        c.max_in_flight = match var("AITBC_MAX_IN_FLIGHT") {
            Some(n) => match n.trim().parse::<usize>() {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(ConfigError::Bad {
                        name: "AITBC_MAX_IN_FLIGHT".into(),
                        reason: format!("`{n}` is not a number of requests (0 for no cap)"),
                    });
                }
            },
            None if c.coordinator_url.is_some() => Some(DEFAULT_MAX_IN_FLIGHT),
            None => None,
        };
        if let Some(t) = var("AITBC_SUBMIT_TIMEOUT") {
            c.submit_timeout = parse_timeout("AITBC_SUBMIT_TIMEOUT", &t)?;
        }
        if let Some(t) = var("AITBC_READ_TIMEOUT") {
            c.read_timeout = parse_timeout("AITBC_READ_TIMEOUT", &t)?;
        }
        if let Some(t) = var("AITBC_MAX_RESPONSE") {
            c.max_response = parse_limit("AITBC_MAX_RESPONSE", &t)?;
        }
        if let Some(t) = var("AITBC_MAX_RESULT") {
            c.max_result = parse_limit("AITBC_MAX_RESULT", &t)?;
        }
        Ok(c)
    }

    /// A configuration for one coordinator URL, with defaults for everything else (unpaced).
    pub fn for_url(url: &str) -> Result<ClientConfig, ConfigError> {
        Ok(ClientConfig {
            coordinator_url: Some(parse_url("coordinator URL", url)?),
            ..ClientConfig::default()
        })
    }

    /// The same configuration with a bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> ClientConfig {
        self.token = Some(Secret::new(token));
        self
    }

    /// False when no coordinator URL is set: callers then start the embedded coordinator.
    pub fn is_configured(&self) -> bool {
        self.coordinator_url.is_some()
    }
}

/// Parses and checks a base URL; `source_name` says where it came from, for the error.
pub fn parse_url(source_name: &str, value: &str) -> Result<Url, ConfigError> {
    let bad = |reason: String| ConfigError::BadUrl {
        source_name: source_name.to_string(),
        value: value.to_string(),
        reason,
    };
    let url = Url::parse(value.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "the scheme must be http or https, not `{}`",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host".into()));
    }
    Ok(url)
}

fn read_token_file(path: PathBuf) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::TokenFile {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let t = text.trim();
    if t.is_empty() {
        return Err(ConfigError::TokenFile {
            path,
            reason: "the file is empty".into(),
        });
    }
    Ok(Secret::new(t))
}

/// Parses a size: a number of bytes, or with a unit (`512KiB`, `4MiB`, `1GiB`; `KB`/`MB`/`GB` are
/// powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad =
        || format!("`{text}` is not a size (expected e.g. `4MiB`, `512KiB` or a number of bytes)");
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let unit: u64 = match t[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).ok_or_else(bad)
}

fn parse_limit(name: &str, text: &str) -> Result<u64, ConfigError> {
    let n = parse_size(text).map_err(|reason| ConfigError::Bad {
        name: name.into(),
        reason,
    })?;
    if !(1024..=MAX_RESPONSE_LIMIT).contains(&n) {
        return Err(ConfigError::Bad {
            name: name.into(),
            reason: format!("`{text}` is outside 1 KiB … 1 GiB"),
        });
    }
    Ok(n)
}

fn parse_timeout(name: &str, text: &str) -> Result<Duration, ConfigError> {
    crate::duration::parse_duration(text).map_err(|reason| ConfigError::Bad {
        name: name.into(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn nothing_set_means_not_configured() {
        let c = ClientConfig::from_lookup(&ConfigOverrides::default(), env(&[])).unwrap();
        assert!(!c.is_configured());
        assert_eq!(c.pacing, Pacing::off());
        assert_eq!(c.max_in_flight, None);
        assert_eq!(c.submit_timeout, Duration::from_secs(30));
        assert_eq!(c.read_timeout, Duration::from_secs(10));
    }

    #[test]
    fn command_line_wins_over_environment() {
        let o = ConfigOverrides {
            coordinator: Some("http://127.0.0.1:9000".into()),
            wallet_url: None,
        };
        let c = ClientConfig::from_lookup(
            &o,
            env(&[("AITBC_COORDINATOR_URL", "http://example.invalid:8203")]),
        )
        .unwrap();
        assert_eq!(
            c.coordinator_url.unwrap().as_str(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(c.pacing, Pacing::real_service());
        assert_eq!(c.max_in_flight, Some(DEFAULT_MAX_IN_FLIGHT));
    }

    #[test]
    fn bad_url_names_its_source() {
        let e = ClientConfig::from_lookup(
            &ConfigOverrides::default(),
            env(&[("AITBC_COORDINATOR_URL", "localhost:8203")]),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("AITBC_COORDINATOR_URL is not a usable URL (`localhost:8203`)"));
        let e = parse_url("--coordinator", "not a url").unwrap_err();
        assert!(e.to_string().contains("--coordinator"), "{e}");
    }

    #[test]
    fn token_file_is_trimmed_and_token_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc.def.ghi \n").unwrap();
        let p = path.to_str().unwrap();
        let c =
            ClientConfig::from_lookup(&ConfigOverrides::default(), env(&[("AITBC_TOKEN_FILE", p)]))
                .unwrap();
        assert_eq!(c.token.as_ref().map(Secret::expose), Some("abc.def.ghi"));
        let c = ClientConfig::from_lookup(
            &ConfigOverrides::default(),
            env(&[("AITBC_TOKEN_FILE", p), ("AITBC_TOKEN", "direct")]),
        )
        .unwrap();
        assert_eq!(c.token.as_ref().map(Secret::expose), Some("direct"));
        std::fs::write(&path, "\n").unwrap();
        let e =
            ClientConfig::from_lookup(&ConfigOverrides::default(), env(&[("AITBC_TOKEN_FILE", p)]))
                .unwrap_err();
        assert!(matches!(e, ConfigError::TokenFile { .. }));
    }

    #[test]
    fn secrets_never_print() {
        let c = ClientConfig::from_lookup(
            &ConfigOverrides::default(),
            env(&[
                ("AITBC_TOKEN", "tok-SECRET-123"),
                ("AITBC_API_KEY", "key-SECRET-456"),
            ]),
        )
        .unwrap();
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("***"));
        assert_eq!(format!("{}", c.token.unwrap()), "***");
    }

    #[test]
    fn response_limits_parse_with_units_and_bounds() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("1gb"), Ok(1_000_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4 parsecs").is_err());
        let c = ClientConfig::from_lookup(
            &ConfigOverrides::default(),
            env(&[
                ("AITBC_MAX_RESPONSE", "1MiB"),
                ("AITBC_MAX_RESULT", "64MiB"),
            ]),
        )
        .unwrap();
        assert_eq!((c.max_response, c.max_result), (1 << 20, 64 << 20));
        let c = ClientConfig::from_lookup(&ConfigOverrides::default(), env(&[])).unwrap();
        assert_eq!((c.max_response, c.max_result), (4 << 20, 16 << 20));
        for bad in ["10", "2GiB"] {
            let e = ClientConfig::from_lookup(
                &ConfigOverrides::default(),
                env(&[("AITBC_MAX_RESULT", bad)]),
            )
            .unwrap_err();
            assert!(e.to_string().starts_with("AITBC_MAX_RESULT: "), "{e}");
        }
    }

    #[test]
    fn pacing_parses() {
        assert_eq!(Pacing::parse("off").unwrap(), Pacing::off());
        assert_eq!(Pacing::parse("real").unwrap(), Pacing::real_service());
        let p = Pacing::parse("submit=10, read=0").unwrap();
        assert_eq!(p.submit, Some(10));
        assert_eq!(p.read, None);
        assert!(Pacing::parse("submit=x").is_err());
        assert!(Pacing::parse("fast=1").is_err());
        let e = ClientConfig::from_lookup(
            &ConfigOverrides::default(),
            env(&[("AITBC_RATE_LIMIT", "submit=1,window=0s")]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("AITBC_RATE_LIMIT:"), "{e}");
    }
}
