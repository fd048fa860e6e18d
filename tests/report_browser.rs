//! report.html in a real browser: a real run on the embedded coordinator, its report.html opened in
//! headless Chromium over the DevTools protocol. The page must draw one timeline bar per step in the
//! step's state, the graph coloured by state, the totals and the spend per wallet of report.json, ask
//! for nothing but its own file, raise no JavaScript error, and look like something (a screenshot that
//! is not blank).
//!
//! Without Chromium this test is skipped with one line on a developer's machine; in CI (`CI=true`)
//! a missing Chromium fails it: `.ci/run` installs Debian's `chromium`. `AITBC_CHROMIUM` names another
//! browser binary. `AITBC_REPORT_SCREENSHOT=docs/report-html.png` keeps the screenshot (the README's).

mod support;

#[path = "support/browser.rs"]
mod browser;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use support::*;

const PLAN: &str = r#"
version: 1
name: browser-check
steps:
  - id: funds
    balance: {wallet: research}
  - id: ask
    job:
      job_type: inference
      wallet: research
      payment: 2
      prompt: "Name ${{ matrix.n }} colours of the rainbow"
    matrix: {n: [three, five]}
  - id: flaky
    continue_on_error: true
    job: {job_type: inference, wallet: ops, payment: 1, prompt: "FAIL_RESULT please"}
  - id: never
    when: false
    balance: {wallet: research}
  - id: after
    needs: [ask]
    balance: {wallet: research}
"#;

fn chromium_or_skip() -> Option<std::path::PathBuf> {
    match browser::find() {
        Some(p) => Some(p),
        None if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => panic!(
            "CI=true but no Chromium was found: .ci/run installs Debian's `chromium` (or set AITBC_CHROMIUM)"
        ),
        None => {
            // Written to stderr itself, not through the test harness's capture, so that it shows.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: report.html browser test needs Chromium (apt-get install chromium, or AITBC_CHROMIUM=/path/to/chrome)"
            );
            None
        }
    }
}

#[test]
fn report_html_draws_the_run_in_a_real_browser() {
    let Some(exe) = chromium_or_skip() else {
        return;
    };
    let dir = PlanDir::new(PLAN);
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL");
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let html = dir.run_dir().join("report.html");
    assert!(
        html.is_file(),
        "report.html is written with the other reports"
    );

    let mut b = browser::Browser::start(&exe, 1280, 1700).expect("start chromium");
    let url = format!("file://{}", html.display());
    b.open(&url).expect("open report.html");
    let rendered = b
        .eval("document.documentElement.dataset.rendered || null")
        .unwrap();
    assert!(
        rendered.is_string(),
        "the page's script did not finish drawing"
    );

    let dom = b
        .eval(
            r#"(() => {
              const q = (s) => [...document.querySelectorAll(s)];
              return {
                bars: q('#timeline .bar').map(b => b.dataset.state),
                labels: q('#timeline .tl-row .tl-label').map(l => l.textContent),
                nodes: q('#graph .node').map(n => n.dataset.state),
                rows: q('#steps .step-row').length,
                totals: Object.fromEntries(q('[data-total]').map(e => [e.dataset.total, Number(e.querySelector('b').textContent)])),
                wallets: q('#wallets tbody tr').map(tr => ({
                  wallet: tr.dataset.wallet,
                  paid: tr.querySelector('[data-col=paid]').textContent,
                  refunded: tr.querySelector('[data-col=refunded]').textContent,
                  held: tr.querySelector('[data-col=held]').textContent,
                })),
                status: document.getElementById('run-status').dataset.status,
                detail: document.getElementById('detail').textContent,
                errorShown: !document.getElementById('js-error').hidden,
              };
            })()"#,
        )
        .unwrap();

    let steps = report["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let states: Vec<&str> = steps.iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    // One timeline bar per step, in plan order, each in its step's state.
    assert_eq!(dom["labels"], serde_json::json!(ids), "{dom:#}");
    assert_eq!(dom["bars"], serde_json::json!(states), "{dom:#}");
    assert!(states.contains(&"failed") && states.contains(&"skipped"));
    // The graph: one node per step, coloured by state.
    assert_eq!(dom["nodes"], serde_json::json!(states), "{dom:#}");
    assert_eq!(dom["rows"], 6);
    assert_eq!(dom["status"], report["status"]);
    for k in ["succeeded", "failed", "skipped", "cancelled", "jobs"] {
        assert_eq!(dom["totals"][k], report["totals"][k], "total {k}: {dom:#}");
    }
    let t = &report["totals"];
    let wallets = dom["wallets"].as_array().unwrap();
    assert_eq!(
        wallets.len(),
        t["spend_per_wallet"].as_object().unwrap().len()
    );
    for w in wallets {
        let name = w["wallet"].as_str().unwrap();
        let amount = |v: &Value| match v {
            Value::Null => "0".to_string(),
            v => v.to_string().trim_matches('"').to_string(),
        };
        assert_eq!(w["paid"], amount(&t["spend_per_wallet"][name]), "{w}");
        assert_eq!(
            w["refunded"],
            amount(&t["refunded_per_wallet"][name]),
            "{w}"
        );
        assert_eq!(w["held"], amount(&t["held_per_wallet"][name]), "{w}");
    }
    // The failed step is shown first, with its issue.
    let detail = dom["detail"].as_str().unwrap();
    assert!(
        detail.contains("flaky") && detail.contains("simulated failure"),
        "{detail}"
    );
    assert_eq!(dom["errorShown"], false);

    // A screenshot that shows something: many colours, and a fair share of the page not white.
    let png = b.screenshot().unwrap();
    let look = b
        .eval(&format!(
            r#"(async () => {{
              const img = new Image();
              img.src = 'data:image/png;base64,{png}';
              await img.decode();
              const c = document.createElement('canvas');
              c.width = img.width; c.height = img.height;
              const g = c.getContext('2d');
              g.drawImage(img, 0, 0);
              const d = g.getImageData(0, 0, c.width, c.height).data;
              const seen = new Set(); let ink = 0;
              for (let i = 0; i < d.length; i += 4) {{
                const k = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
                seen.add(k);
                if (k !== 0xffffff) ink++;
              }}
              return {{ width: c.width, height: c.height, colours: seen.size, ink: ink / (d.length / 4) }};
            }})()"#
        ))
        .unwrap();
    assert_eq!(look["width"], 1280, "{look}");
    assert!(look["colours"].as_u64().unwrap() >= 16, "{look}");
    assert!(look["ink"].as_f64().unwrap() > 0.03, "a blank page: {look}");
    if let Some(keep) = std::env::var_os("AITBC_REPORT_SCREENSHOT") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&png)
            .unwrap();
        std::fs::write(keep, bytes).unwrap();
    }

    // Nothing asked of the network, and no JavaScript error anywhere.
    let requests = b.requests();
    assert!(
        requests
            .iter()
            .all(|u| u.starts_with("file://") || u.starts_with("data:")),
        "the page asked for {requests:?}"
    );
    let errors = b.js_errors();
    assert!(errors.is_empty(), "JavaScript errors: {errors:#?}");
}

/// The browser test's own check: an error thrown by a page is seen (so the test above would fail on
/// one).
#[test]
fn a_javascript_error_is_caught() {
    let Some(exe) = browser::find() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><link rel=\"icon\" href=\"data:,\"></head><body><script>console.error('boom'); undefinedFunction();</script></body></html>",
    )
    .unwrap();
    let mut b = browser::Browser::start(&exe, 400, 300).expect("start chromium");
    b.open(&format!("file://{}", page.display())).unwrap();
    let _ = b.eval("1");
    let errors = b.js_errors();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors.iter().any(|e| e.contains("undefinedFunction")),
        "{errors:#?}"
    );
}
