//! The other direction: the upstream `aitbc` CLI (`ai submit|status|results|jobs|cancel|refund`,
//! README item 11 on its flags) against `aitbc-flow coordinator serve`.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::flow::{Out, run_limited};
use crate::rc::Paths;
use crate::suite::Check;
use crate::support::Serve;

/// The JSON the CLI prints after its one-line message (`Job submitted: …` then the JSON).
fn json_in(out: &Out) -> Option<Value> {
    let at = out.stdout.find(['{', '['])?;
    serde_json::from_str(&out.stdout[at..]).ok()
}

/// Forgets the child when the check ends (`Serve` kills it on drop).
struct Untrack(u32);

impl Drop for Untrack {
    fn drop(&mut self) {
        crate::flow::untrack(self.0);
    }
}

struct Cli<'a> {
    paths: &'a Paths,
    url: String,
    token: String,
}

impl Cli<'_> {
    /// `aitbc --url URL --api-key TOKEN --output json ARGS` (the global `--output` wins over a
    /// command's own `--format`).
    fn run(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(self.paths.realcoord.join("aitbc.sh"));
        cmd.env("RC", &self.paths.rc)
            .args([
                "--url",
                &self.url,
                "--api-key",
                &self.token,
                "--output",
                "json",
            ])
            .args(args);
        run_limited(&mut cmd, None, Duration::from_secs(90))
    }

    /// Runs a command that must succeed and print JSON.
    fn ok(&self, c: &mut Check, args: &[&str]) -> Option<Value> {
        let out = self.run(args);
        let what = format!("aitbc {}", args.join(" "));
        if !c.expect(out.code == 0, || {
            format!("`{what}`: exit 0 expected:\n{}", out.show())
        }) {
            return None;
        }
        let v = json_in(&out);
        c.expect(v.is_some(), || {
            format!("`{what}` printed no JSON:\n{}", out.show())
        });
        v
    }
}

/// `ai submit`, `status`, `results`, `jobs`, `cancel`, `refund` against `coordinator serve`.
pub fn against_serve(c: &mut Check, paths: &Paths) {
    let serve = Serve::start(&[]);
    let pid = serve.child.id();
    crate::flow::track(pid);
    let _untrack = Untrack(pid);
    let cli = Cli {
        paths,
        url: serve.url.clone(),
        token: serve.token.clone(),
    };
    let submit = |c: &mut Check, prompt: &str| -> Option<String> {
        let v = cli.ok(
            c,
            &[
                "ai",
                "submit",
                "--type",
                "inference",
                "--prompt",
                prompt,
                "--payment",
                "2",
                "--buyer-address",
                "cli-wallet",
            ],
        )?;
        c.expect(v["payment_status"] == "escrowed", || {
            format!(
                "ai submit: payment_status {} (escrowed expected)",
                v["payment_status"]
            )
        });
        let id = v["job_id"].as_str().filter(|s| s.len() == 32)?.to_string();
        Some(id)
    };
    let Some(id) = submit(c, "Upstream CLI: say hello.") else {
        return c.fail("ai submit: no job id");
    };
    // With `--latency instant` the job is done by the first read; allow a few.
    let mut state = Value::Null;
    for _ in 0..5 {
        match cli.ok(c, &["ai", "status", "--job-id", &id]) {
            Some(v) if v["state"] == "COMPLETED" => {
                state = v["state"].clone();
                break;
            }
            Some(v) => state = v["state"].clone(),
            None => break,
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    c.expect(state == "COMPLETED", || format!("ai status: state {state}"));
    if let Some(v) = cli.ok(c, &["ai", "results", "--job-id", &id]) {
        c.expect(v["result"]["status"] == "completed", || {
            format!("ai results: result {}", v["result"])
        });
        c.expect(v["receipt"]["signature"]["sig"].is_string(), || {
            format!("ai results: no signed receipt in {}", v["receipt"])
        });
    }
    if let Some(v) = cli.ok(c, &["ai", "jobs", "--limit", "10"]) {
        let listed = v["items"]
            .as_array()
            .is_some_and(|a| a.iter().any(|j| j["job_id"] == id.as_str()));
        c.expect(listed, || format!("ai jobs: {id} is not listed"));
    }
    let Some(hang) = submit(c, "HANG: the upstream CLI cancels this") else {
        return c.fail("ai submit: no job id");
    };
    if let Some(v) = cli.ok(
        c,
        &["ai", "cancel", "--job-id", &hang, "--wallet", "cli-wallet"],
    ) {
        c.expect(v["state"] == "CANCELED", || {
            format!("ai cancel: state {}", v["state"])
        });
    }
    if let Some(v) = cli.ok(
        c,
        &["ai", "refund", "--job-id", &hang, "--reason", "conformance"],
    ) {
        c.expect(v["status"] == "refunded", || format!("ai refund: {v}"));
    }
    if let Some(v) = cli.ok(c, &["ai", "status", "--job-id", &hang]) {
        c.expect(v["payment_status"] == "refunded", || {
            format!(
                "ai status after the refund: payment_status {}",
                v["payment_status"]
            )
        });
    }
    let out = cli.run(&[
        "ai",
        "status",
        "--job-id",
        "0123456789abcdef0123456789abcdef",
    ]);
    c.expect(out.code != 0 && out.text().contains("404"), || {
        format!(
            "ai status of an unknown job must fail with the 404:\n{}",
            out.show()
        )
    });
}
