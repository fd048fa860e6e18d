//! Credentials that expire, end to end: `aitbc-flow login` against the embedded coordinator's wallet
//! login (nonce → EIP-191 signature → session token with `exp`), the token file it writes, a run refused
//! because its timeouts outlive the token, and a 401 that makes the client read a rotated token file.

mod support;

use std::process::Command;
use std::time::Duration;

use aitbc_flow::auth::WalletKey;
use aitbc_flow::client::Coordinator;
use aitbc_flow::client::config::{ClientConfig, Secret};
use aitbc_flow::client::http::HttpCoordinator;
use aitbc_flow::local::LocalConfig;
use support::{PlanDir, Serve, bin, output_within, run_args};

const LIMIT: Duration = Duration::from_secs(60);

/// `aitbc-flow login` against `serve` with these environment variables and arguments.
fn login(serve: &Serve, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = Command::new(bin());
    c.arg("login")
        .args(["--coordinator", &serve.url])
        .args(args)
        .env_remove("AITBC_TOKEN")
        .env_remove("AITBC_TOKEN_FILE")
        .env_remove("AITBC_PRIVATE_KEY")
        .env_remove("AITBC_KEY_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    output_within(c, LIMIT)
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A job command with the token from `token_file` only.
fn job_with_token_file(
    serve: &Serve,
    token_file: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let mut c = Command::new(bin());
    c.arg("job")
        .args(args)
        .args(["--coordinator", &serve.url])
        .env_remove("AITBC_TOKEN")
        .env("AITBC_TOKEN_FILE", token_file);
    output_within(c, LIMIT)
}

#[test]
fn login_writes_a_private_token_that_the_job_commands_use() {
    let serve = Serve::start(&[]);
    let key = WalletKey::random();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let out = login(
        &serve,
        &[("AITBC_PRIVATE_KEY", &key.expose_hex())],
        &["--token-file", token_file.to_str().unwrap()],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains(key.address()), "{all}");
    assert!(all.contains("valid until"), "{all}");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    // Neither the key nor the token is printed.
    assert!(!all.contains(&key.expose_hex()), "{all}");
    assert!(!all.contains(token), "{all}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let exp = aitbc_flow::auth::expires_at(token).unwrap();
    let left = exp - chrono::Utc::now();
    assert!(left > chrono::Duration::hours(23), "{left:?}");

    // The wallet is a client of its own: it submits and sees its job; the configured token's client
    // does not see it.
    let sub = job_with_token_file(
        &serve,
        &token_file,
        &[
            "submit",
            "--type",
            "inference",
            "--prompt",
            "hi",
            "--payment",
            "2",
            "--wallet",
            "w1",
            "--output",
            "json",
        ],
    );
    assert_eq!(sub.status.code(), Some(0), "{}", text(&sub));
    let v: serde_json::Value = serde_json::from_slice(&sub.stdout).unwrap();
    let id = v["job_id"].as_str().unwrap().to_string();
    let status = job_with_token_file(&serve, &token_file, &["status", &id]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(serve.jobs().iter().all(|j| j["job_id"] != id.as_str()));
    // Logging in again is the same client: it still sees the job.
    let again = login(
        &serve,
        &[("AITBC_PRIVATE_KEY", &key.expose_hex())],
        &["--token-file", token_file.to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_ne!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    let status = job_with_token_file(&serve, &token_file, &["status", &id]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
}

#[test]
fn login_reads_key_files_and_wallet_files_and_refuses_bad_keys() {
    let serve = Serve::start(&[]);
    let key = WalletKey::random();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("t");
    let tf = token_file.to_str().unwrap();

    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("0x{}\n", key.expose_hex())).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = login(
        &serve,
        &[],
        &["--key-file", key_file.to_str().unwrap(), "--token-file", tf],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("warning"), "{}", text(&out));

    // The upstream CLI's wallet file, found by name under HOME.
    let home = dir.path().join("home");
    let wallets = home.join(".aitbc/wallets");
    std::fs::create_dir_all(&wallets).unwrap();
    std::fs::write(
        wallets.join("trading.json"),
        format!(
            r#"{{"wallet_id": "trading", "type": "hd", "address": "{}", "private_key": "0x{}", "balance": 0}}"#,
            key.address(),
            key.expose_hex()
        ),
    )
    .unwrap();
    let out = login(
        &serve,
        &[("HOME", home.to_str().unwrap()), ("AITBC_TOKEN_FILE", tf)],
        &["--wallet", "trading", "--wallet-address", key.address()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Refused before anything is sent, and the key is never echoed.
    let bad = "0x1234zz";
    let out = login(&serve, &[("AITBC_PRIVATE_KEY", bad)], &["--token-file", tf]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("AITBC_PRIVATE_KEY: the private key is not 64 hex digits"));
    assert!(!text(&out).contains(bad));
    let other = WalletKey::random();
    let out = login(
        &serve,
        &[("AITBC_PRIVATE_KEY", &key.expose_hex())],
        &["--token-file", tf, "--wallet-address", other.address()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = login(&serve, &[("AITBC_PRIVATE_KEY", &key.expose_hex())], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("AITBC_TOKEN_FILE"), "{}", text(&out));
}

fn plan_with_timeout(timeout: &str) -> String {
    format!(
        r#"
version: 1
name: nightly
defaults:
  timeout: {timeout}
steps:
  - id: a
    job: {{job_type: inference, wallet: w, payment: 2, prompt: "one"}}
  - id: b
    needs: [a]
    job: {{job_type: inference, wallet: w, payment: 2, prompt: "two"}}
"#
    )
}

#[test]
fn a_run_whose_timeouts_outlive_the_token_is_refused_with_how_to_renew() {
    let serve = Serve::start(&["--token-ttl", "10m"]);
    let key = WalletKey::random();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let out = login(
        &serve,
        &[("AITBC_PRIVATE_KEY", &key.expose_hex())],
        &["--token-file", token_file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let run = |plan: &PlanDir| {
        let mut c = Command::new(bin());
        c.args(run_args(&plan.plan(), &plan.runs()))
            .env("AITBC_COORDINATOR_URL", &serve.url)
            .env_remove("AITBC_TOKEN")
            .env("AITBC_TOKEN_FILE", &token_file);
        output_within(c, LIMIT)
    };
    // Two steps in a chain, 5 minutes each (+ 30 s backstop): 11 minutes > the token's 10.
    let long = PlanDir::new(&plan_with_timeout("5m"));
    let out = run(&long);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("expires at"), "{err}");
    assert!(err.contains("may take up to 11m"), "{err}");
    assert!(err.contains("aitbc-flow login"), "{err}");
    assert!(err.contains(token_file.to_str().unwrap()), "{err}");
    // Refused before anything: no run directory, nothing submitted.
    assert!(!long.runs().exists() || std::fs::read_dir(long.runs()).unwrap().next().is_none());
    // Short timeouts fit: the run goes, with the wallet's token.
    let short = PlanDir::new(&plan_with_timeout("1m"));
    let out = run(&short);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client whose token file holds `stale` at start.
fn client_with_token_file(url: &str, path: &std::path::Path, stale: &str) -> HttpCoordinator {
    std::fs::write(path, stale).unwrap();
    let mut c = ClientConfig::for_url(url).unwrap();
    c.token = Some(Secret::new(stale));
    c.token_file = Some(path.to_path_buf());
    HttpCoordinator::new(&c).unwrap()
}

#[tokio::test]
async fn a_401_reads_a_rotated_token_file_once_and_sends_again() {
    let handle = aitbc_flow::local::start(LocalConfig::for_tests())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let q = aitbc_flow::api::ListQuery::default();

    // An external refresher wrote a new token after the client read the file.
    let client = client_with_token_file(&handle.url(), &path, "expired-token");
    std::fs::write(&path, format!("{}\n", handle.token())).unwrap();
    client
        .list(&q)
        .await
        .expect("sent again with the new token");
    // The new token is kept for what follows.
    std::fs::write(&path, "something-else").unwrap();
    client.list(&q).await.expect("the rotated token is kept");

    // Nothing new in the file: the 401 stands.
    let client = client_with_token_file(&handle.url(), &path, "expired-token");
    let e = client.list(&q).await.unwrap_err();
    assert!(
        matches!(e, aitbc_flow::client::ClientError::Auth { status: 401, .. }),
        "{e:?}"
    );
    // A new token that is refused too: read once, sent once, then the 401 stands (no loop).
    std::fs::write(&path, "also-wrong").unwrap();
    let e = client.list(&q).await.unwrap_err();
    assert!(matches!(e, aitbc_flow::client::ClientError::Auth { .. }));
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_embedded_coordinator_refuses_expired_tokens_and_others_signatures() {
    let handle = aitbc_flow::local::start(LocalConfig {
        token_ttl: Duration::from_secs(1),
        ..LocalConfig::for_tests()
    })
    .await
    .unwrap();
    let client = HttpCoordinator::new(&ClientConfig::for_url(&handle.url()).unwrap()).unwrap();
    let key = WalletKey::random();
    let session = client.login(&key).await.unwrap();
    assert_eq!(session.address, key.address());
    let exp = session.expires_at.unwrap();
    assert!(exp <= chrono::Utc::now() + chrono::Duration::seconds(2));
    let as_wallet = HttpCoordinator::new(
        &ClientConfig::for_url(&handle.url())
            .unwrap()
            .with_token(session.token.expose()),
    )
    .unwrap();
    let q = aitbc_flow::api::ListQuery::default();
    as_wallet.list(&q).await.expect("a fresh token is accepted");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = as_wallet.list(&q).await.unwrap_err();
    assert!(
        matches!(&e, aitbc_flow::client::ClientError::Auth { status: 401, detail, .. } if detail == "Invalid token"),
        "{e:?}"
    );

    // A signature by another key, straight over HTTP: 401 with the service's detail.
    let http = reqwest::Client::new();
    let nonce: serde_json::Value = http
        .post(format!("{}/v1/auth/nonce", handle.url()))
        .json(&serde_json::json!({"wallet_address": key.address()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = nonce["nonce"].as_str().unwrap();
    assert!(nonce["expires_at"].as_i64().is_some());
    let sig = WalletKey::random()
        .sign_personal(aitbc_flow::auth::login_message(key.address(), n).as_bytes());
    let r = http
        .post(format!("{}/v1/login", handle.url()))
        .json(&serde_json::json!({"wallet_address": key.address(), "nonce": n, "signature": sig}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["detail"], "Invalid wallet signature");
    let r = http
        .post(format!("{}/v1/auth/nonce", handle.url()))
        .json(&serde_json::json!({"wallet_address": "ait1notanaddress"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    handle.shutdown().await.unwrap();
}
