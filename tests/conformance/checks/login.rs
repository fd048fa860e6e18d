//! Session tokens against the real service: `aitbc-flow login` (nonce, EIP-191 signature, session
//! token), and a run refused when its timeouts outlive its token.

use std::os::unix::fs::PermissionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::Value;

use crate::flow::{Flow, run_plan, suite_plan, workdir};
use crate::rc::Service;
use crate::suite::Check;

/// A well-known test key (the first account of Hardhat's and Anvil's default mnemonic): it holds
/// nothing anywhere, and its address is public.
const TEST_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Its address.
const TEST_ADDRESS: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `aitbc-flow login --key-file KEY` writes a session token (0600) to `AITBC_TOKEN_FILE`; a job
/// command then works with that file alone; neither the key nor the token is printed.
pub fn session(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "login");
    let key = dir.join("wallet.key");
    let token_file = dir.join("session.token");
    if let Err(e) = std::fs::write(&key, format!("{TEST_KEY}\n"))
        .and_then(|_| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)))
    {
        return c.fail(format!("cannot write the key file: {e}"));
    }
    let key_s = key.display().to_string();
    let out = Flow::new(svc, &dir, ["login", "--key-file", key_s.as_str()])
        .unset("AITBC_TOKEN")
        .env("AITBC_TOKEN_FILE", &token_file)
        .run();
    if !c.expect(out.code == 0, || {
        format!("login: exit 0 expected:\n{}", out.show())
    }) {
        return;
    }
    c.expect(!out.text().contains(TEST_KEY), || {
        "login printed the private key".into()
    });
    let Some(token) = c.ok(std::fs::read_to_string(&token_file)
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("login wrote no token to AITBC_TOKEN_FILE: {e}")))
    else {
        return;
    };
    c.expect(!token.is_empty() && !out.text().contains(&token), || {
        "login printed the session token (or wrote an empty one)".into()
    });
    let mode = std::fs::metadata(&token_file)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    c.expect(mode == 0o600, || {
        format!("the token file has mode {mode:o}, 600 expected")
    });
    match jwt_claims(&token) {
        Some(claims) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let left_h = (claims["exp"].as_f64().unwrap_or(0.0) - now) / 3600.0;
            c.expect(claims["role"] == "client", || {
                format!("the token's role: {}", claims["role"])
            });
            c.expect((23.0..=25.0).contains(&left_h), || {
                format!("the token is valid {left_h:.1} h (24 h expected)")
            });
            c.note(format!(
                "logged in as {TEST_ADDRESS}: token for `{}`, valid {left_h:.1} h",
                claims["sub"].as_str().unwrap_or("?")
            ));
        }
        None => c.fail("the session token is not a JWT"),
    }
    let out = Flow::new(
        svc,
        &dir,
        ["job", "list", "--limit", "1", "--output", "json"],
    )
    .unset("AITBC_TOKEN")
    .env("AITBC_TOKEN_FILE", &token_file)
    .run();
    c.expect(out.code == 0, || {
        format!(
            "job list with the session token: exit 0 expected:\n{}",
            out.show()
        )
    });
}

/// A token valid one more hour: `plans/optimize-then-train.yaml` (a step may take 2 h) is refused
/// with exit 3 before anything is sent, saying how to renew; a run that fits is not.
pub fn token_lifetime(c: &mut Check, svc: &Service) {
    let dir = workdir(svc, "token-lifetime");
    let Some(token) = c.ok(svc.mint_token(1.0)) else {
        return;
    };
    let plan =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/optimize-then-train.yaml");
    let before = svc.job_count().unwrap_or(0);
    let out = run_plan(svc, &dir, &plan, &[])
        .env("AITBC_TOKEN", &token)
        .run();
    c.expect(out.code == 3, || {
        format!(
            "a run whose timeouts outlive its token: exit 3 expected:\n{}",
            out.show()
        )
    });
    c.expect(out.text().contains("aitbc-flow login"), || {
        format!(
            "the refusal must say how to renew the token (`aitbc-flow login`):\n{}",
            out.show()
        )
    });
    let after = svc.job_count().unwrap_or(0);
    c.expect(after == before, || {
        format!(
            "the refused run submitted {} jobs",
            after.saturating_sub(before)
        )
    });
    let out = run_plan(svc, &dir, &suite_plan("one-job.yaml"), &[])
        .env("AITBC_TOKEN", &token)
        .run();
    c.expect(out.code == 0, || {
        format!(
            "a run that fits in the token's hour: exit 0 expected:\n{}",
            out.show()
        )
    });
}
