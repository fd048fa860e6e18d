//! `report.html`: one self-contained page per run — no network, no CDN, it opens offline and can be
//! mailed or attached to a CI run as it is.
//!
//! What does not change with the number of steps (the run's header, the totals per state and per
//! wallet, the run's issues) is written as HTML here. The step graph, the timeline (Gantt) and the step
//! table are drawn by the page's own script from the run's data, embedded as JSON: the timeline and the
//! table draw only the rows in view (a 10,000-step run is 10,000 rows of data, not 10,000 bars in the
//! page), and a graph of more than [`GRAPH_NODES`] steps is drawn as a summary per level. The texts of
//! each step (summary, issues, output preview, attempt errors) share a budget that shrinks as the run
//! grows, so the page stays under [`MAX_BYTES`].

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use serde_json::Value;

use super::model::{Report, StepReport};
use super::text::{clip, output_preview, state_class, status_word};
use super::writers::provenance_line;
use crate::money::Money;

/// The page's size limit; the texts are cut shorter until it fits.
pub const MAX_BYTES: usize = 9_500_000;

/// Above this many steps the graph is a summary per level rather than a drawing (the page's script
/// reads the same number from the data).
pub const GRAPH_NODES: usize = 200;

const CSS: &str = include_str!("html/report.css");
const JS: &str = include_str!("html/report.js");

/// Characters of text per step for this many steps.
fn text_budget(steps: usize) -> usize {
    (3_000_000 / steps.max(1)).clamp(160, 4000)
}

/// Renders the page.
pub fn render(r: &Report) -> String {
    let mut budget = text_budget(r.steps.len());
    loop {
        let page = page(r, budget);
        if page.len() <= MAX_BYTES || budget <= 40 {
            return page;
        }
        budget /= 2;
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One step as the page's script reads it (short keys: a 10,000-step run has 10,000 of these).
#[derive(Serialize)]
struct StepData<'a> {
    id: &'a str,
    kind: &'a str,
    state: &'static str,
    level: usize,
    #[serde(skip_serializing_if = "<[usize]>::is_empty")]
    needs: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wallet: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pay: Option<String>,
    /// Start and end, in milliseconds since the run started.
    #[serde(skip_serializing_if = "Option::is_none")]
    t0: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    t1: Option<i64>,
    secs: f64,
    /// Attempts as `[start, duration, error]`: start in ms since the run started; the error's text,
    /// or 1 for a failed attempt whose text did not fit the budget, or 0.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    att: Vec<(i64, u64, Value)>,
    /// How many attempts there were (more than `att` holds when they were many).
    #[serde(skip_serializing_if = "is_zero")]
    n_att: usize,
    summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    issues: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    more_issues: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    recs: Vec<String>,
    /// The receipt: verified, not verified, or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_from: Option<&'a str>,
    /// A status step's gate (`failure()`, `always()`, `cancelled()`) and why it ran or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    when: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct PageData<'a> {
    run_id: &'a str,
    status: &'a str,
    /// The run's length in milliseconds (the timeline's scale).
    span: i64,
    graph_nodes: usize,
    steps: Steps<'a>,
}

/// The steps' data, serialized one step at a time as it is written into the page (collected first,
/// a 10,000-step page's held ~4.6 MB more at the run's peak, which is when the page is written).
struct Steps<'a> {
    report: &'a Report,
    deps: Vec<Vec<usize>>,
    levels: Vec<usize>,
    base: Option<DateTime<FixedOffset>>,
    budget: usize,
}

impl Serialize for Steps<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.report
                .steps
                .iter()
                .zip(&self.deps)
                .zip(&self.levels)
                .map(|((st, needs), level)| step_data(st, *level, needs, self.base, self.budget)),
        )
    }
}

/// Milliseconds from `base` to the time `t` (never before it).
fn offset_of(base: Option<DateTime<FixedOffset>>, t: Option<&str>) -> Option<i64> {
    let t = parse_time(t?)?;
    Some((t - base?).num_milliseconds().max(0))
}

fn parse_time(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

fn step_data<'a>(
    st: &'a StepReport,
    level: usize,
    needs: &'a [usize],
    base: Option<DateTime<FixedOffset>>,
    budget: usize,
) -> StepData<'a> {
    let offset = |t: &Option<String>| offset_of(base, t.as_deref());
    let o = &st.outcome;
    // The budget, shared: a quarter each for the summary and the preview, the rest for issues,
    // advice and attempt errors.
    let quarter = (budget / 4).max(40);
    let mut left = budget.saturating_sub(2 * quarter).max(80);
    let mut take = |text: &str| -> Option<String> {
        if left < 20 {
            return None;
        }
        let t = clip(text, left.min(quarter * 2));
        left = left.saturating_sub(t.chars().count());
        Some(t)
    };
    let mut issues = Vec::new();
    for i in &o.issues {
        match take(i) {
            Some(t) => issues.push(t),
            None => break,
        }
    }
    let more_issues = o.issues.len() - issues.len();
    let mut recs = Vec::new();
    for rec in &o.recommendations {
        match take(rec) {
            Some(t) => recs.push(t),
            None => break,
        }
    }
    // The first and last attempts, when there were many (fewer for a big run).
    let n = st.attempts.len();
    let keep = if budget >= 1000 { 6 } else { 2 };
    let att = st
        .attempts
        .iter()
        .enumerate()
        .filter(|(i, _)| n <= 2 * keep || *i < keep || *i >= n - keep)
        .map(|(_, a)| {
            let start = offset(&Some(a.started_at.clone())).unwrap_or(0);
            let err = match a.error.as_deref() {
                None => Value::from(0),
                Some(e) => take(&clip(e, 200)).map_or(Value::from(1), Value::String),
            };
            (start, a.duration_ms, err)
        })
        .collect();
    let receipt = st.receipt.as_ref().map(|r| r.verified).or_else(|| {
        o.performance_metrics
            .as_ref()
            .and_then(|m| m.field("receipt_verified"))
            .and_then(|v| v.as_bool())
    });
    StepData {
        id: &st.id,
        kind: &st.kind,
        state: state_class(st.state),
        level,
        needs,
        job: o.job_id.as_ref().map(|j| j.as_str()),
        status: o.status.map(|s| s.as_str()),
        wallet: o.wallet.as_deref(),
        pay: o.payment.map(|p| p.to_string()),
        t0: offset(&st.started_at),
        t1: offset(&st.finished_at),
        secs: o.execution_time,
        att,
        n_att: n,
        summary: clip(&o.summary, quarter),
        issues,
        more_issues,
        recs,
        receipt,
        receipt_error: st
            .receipt
            .as_ref()
            .and_then(|r| r.error.as_deref())
            .map(|e| clip(e, 200)),
        preview: output_preview(st, quarter),
        cached_from: st.cached_from.as_ref().map(|c| c.run_id.as_str()),
        when: st.when.as_deref(),
        reason: st.reason.as_deref().map(|r| clip(r, 200)),
    }
}

/// Appends the run's data for the page's script to the page, as JSON that is safe inside a `<script>`
/// element. It is written into the page as it is serialized (not into a string of its own and then
/// a copy with `<` escaped: a 10,000-step page's data is ~4 MB, and it was held three times).
fn push_data_json(h: &mut String, r: &Report, budget: usize) {
    let index: std::collections::HashMap<&str, usize> = r
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = r
        .steps
        .iter()
        .map(|s| {
            s.needs
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect()
        })
        .collect();
    let levels = if crate::plan::graph::find_cycle(&deps).is_none() {
        crate::plan::graph::levels(&deps)
    } else {
        vec![0; deps.len()]
    };
    let base = parse_time(&r.started_at);
    // The last step's end (each step's `t1`).
    let end = r
        .steps
        .iter()
        .filter_map(|st| offset_of(base, st.finished_at.as_deref()))
        .max()
        .unwrap_or(0);
    let span = r
        .finished_at
        .as_deref()
        .and_then(parse_time)
        .zip(base)
        .map(|(f, b)| (f - b).num_milliseconds())
        .unwrap_or(r.totals.wall_time_ms as i64)
        .max(end)
        .max(1);
    let data = PageData {
        run_id: &r.run_id,
        status: r.status.as_str(),
        span,
        graph_nodes: GRAPH_NODES,
        steps: Steps {
            report: r,
            deps,
            levels,
            base,
            budget,
        },
    };
    let mut bytes = std::mem::take(h).into_bytes();
    let start = bytes.len();
    if serde_json::to_writer(ScriptSafe(&mut bytes), &data).is_err() {
        bytes.truncate(start);
        bytes.extend_from_slice(b"{\"steps\":[]}");
    }
    // Only whole UTF-8 text went in (the page so far and serde_json's output, `<` replaced by ASCII).
    *h = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// Writes JSON with `<` escaped as `\u003c`: in JSON `<` only appears inside strings, where the escape
/// means the same, so no text of the run can close the script element the data is in. (`<` is one
/// byte of UTF-8 that no other character's encoding contains, so it is replaced byte by byte.)
struct ScriptSafe<'a>(&'a mut Vec<u8>);

impl std::io::Write for ScriptSafe<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(at) = rest.iter().position(|&b| b == b'<') {
            self.0.extend_from_slice(&rest[..at]);
            self.0.extend_from_slice(b"\\u003c");
            rest = &rest[at + 1..];
        }
        self.0.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn money_cell(m: Option<&Money>) -> String {
    m.map_or("0".into(), |m| m.to_string())
}

fn page(r: &Report, budget: usize) -> String {
    // ~390 bytes a step at a 10,000-step page's text budget: sized to hold it without growing (a
    // string that outgrows its room doubles, and at the run's peak 3 MB became 6 MB).
    let mut h = String::with_capacity(64 * 1024 + r.steps.len() * 420);
    let status = r.status.as_str();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"aitbc-flow {}\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <title>Run {} of {} — {}</title>\n<style>\n{CSS}</style>\n\
         <script>\nwindow.addEventListener('error', function (e) {{ var b = document.getElementById('js-error'); \
         if (b) {{ b.hidden = false; b.textContent = 'This report could not be drawn completely: ' + e.message; }} }});\n\
         </script>\n</head>\n<body>\n\
         <div id=\"js-error\" class=\"js-error\" hidden></div>\n",
        esc(&r.runner_version),
        esc(&r.run_id),
        esc(&r.plan),
        status_word(r.status)
    );
    // The header.
    let _ = write!(
        h,
        "<header>\n<h1>Run <code>{}</code> of <code>{}</code></h1>\n\
         <p class=\"status-line\"><span id=\"run-status\" class=\"badge state-{status}\" data-status=\"{status}\">{}</span> \
         exit {}</p>\n<dl class=\"meta\">\n",
        esc(&r.run_id),
        esc(&r.plan),
        esc(status_word(r.status)),
        r.exit_code
    );
    let mut meta = |k: &str, v: String| {
        let _ = writeln!(h, "<dt>{k}</dt><dd>{v}</dd>");
    };
    meta(
        "coordinator",
        format!(
            "{}{}",
            esc(&r.coordinator),
            if r.embedded_coordinator {
                " (embedded local coordinator)"
            } else {
                ""
            }
        ),
    );
    meta(
        "plan",
        match provenance_line(r) {
            Some(p) => format!("<span id=\"provenance\">{}</span>", esc(&p)),
            None => format!("{} (not in a git work tree)", esc(&r.plan_path)),
        },
    );
    meta("plan sha256", format!("<code>{}</code>", esc(&r.plan_hash)));
    meta("aitbc-flow", esc(&r.runner_version));
    meta("started", esc(&r.started_at));
    meta("finished", r.finished_at.as_deref().map_or("—".into(), esc));
    meta(
        "wall time",
        format!("{:.3} s", r.totals.wall_time_ms as f64 / 1000.0),
    );
    h.push_str("</dl>\n</header>\n");

    // Totals.
    let t = &r.totals;
    h.push_str("<section id=\"totals\">\n<h2>Totals</h2>\n<div class=\"chips\">\n");
    for (name, n) in [
        ("succeeded", t.succeeded),
        ("failed", t.failed),
        ("skipped", t.skipped),
        ("cancelled", t.cancelled),
    ] {
        let _ = writeln!(
            h,
            "<span class=\"chip state-{name}\" data-total=\"{name}\"><b>{n}</b> {name}</span>"
        );
    }
    let _ = writeln!(
        h,
        "<span class=\"chip\" data-total=\"jobs\"><b>{}</b> jobs submitted</span>\n</div>",
        t.jobs
    );
    if t.spend_per_wallet.is_empty() {
        h.push_str("<p class=\"muted\" id=\"wallets-none\">No payments in this run.</p>\n");
    } else {
        h.push_str(
            "<table id=\"wallets\">\n<thead><tr><th>wallet</th><th class=\"num\">paid</th>\
             <th class=\"num\">refunded</th><th class=\"num\">still held</th>\
             <th class=\"num\" title=\"paid, less what was refunded and what the service still holds\">spent</th></tr></thead>\n<tbody>\n",
        );
        for (w, paid) in &t.spend_per_wallet {
            let refunded = t.refunded_per_wallet.get(w);
            let held = t.held_per_wallet.get(w);
            let spent =
                *paid - refunded.copied().unwrap_or_default() - held.copied().unwrap_or_default();
            let _ = writeln!(
                h,
                "<tr data-wallet=\"{}\"><td>{}</td><td class=\"num\" data-col=\"paid\">{paid}</td>\
                 <td class=\"num\" data-col=\"refunded\">{}</td><td class=\"num\" data-col=\"held\">{}</td>\
                 <td class=\"num\" data-col=\"spent\">{spent}</td></tr>",
                esc(w),
                esc(w),
                money_cell(refunded),
                money_cell(held)
            );
        }
        h.push_str("</tbody>\n</table>\n<p class=\"muted\">Amounts in AITBC.</p>\n");
    }
    if !r.issues.is_empty() {
        h.push_str("<h3>Issues of the run</h3>\n<ul id=\"run-issues\" class=\"issues\">\n");
        for i in &r.issues {
            let _ = writeln!(h, "<li>{}</li>", esc(i));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n");

    // What the script draws.
    h.push_str(
        "<section id=\"graph-section\">\n<h2>Step graph</h2>\n<div id=\"graph\" class=\"graph\"></div>\n</section>\n\
         <section id=\"timeline-section\">\n<h2>Timeline</h2>\n\
         <div class=\"filters\"><input id=\"filter\" type=\"search\" placeholder=\"filter steps by id, job or wallet\" aria-label=\"filter steps\">\
         <select id=\"state-filter\" aria-label=\"state\"><option value=\"\">every state</option>\
         <option>succeeded</option><option>failed</option><option>skipped</option><option>cancelled</option><option>pending</option></select>\
         <span id=\"shown\" class=\"muted\"></span></div>\n\
         <div id=\"axis\" class=\"axis\"></div>\n<div id=\"timeline\" class=\"vlist\"></div>\n\
         <p class=\"legend\"><span class=\"key state-succeeded\"></span>succeeded <span class=\"key state-failed\"></span>failed \
         <span class=\"key state-skipped\"></span>skipped <span class=\"key state-cancelled\"></span>cancelled \
         <span class=\"key att-failed-key\"></span>failed attempt</p>\n</section>\n\
         <section id=\"steps-section\">\n<h2>Steps</h2>\n<div class=\"grid-head row-grid\"><span>step</span><span>state</span>\
         <span>job</span><span>wallet</span><span class=\"num\">payment</span><span class=\"num\">time</span>\
         <span class=\"num\">attempts</span><span>receipt</span><span class=\"num\">issues</span><span>output</span></div>\n\
         <div id=\"steps\" class=\"vlist\"></div>\n<div id=\"detail\" class=\"detail\" hidden></div>\n</section>\n\
         <noscript><p>The graph, the timeline and the steps are drawn by this page's script; \
         <code>summary.md</code> and <code>report.json</code> beside this file hold the same.</p></noscript>\n",
    );
    let _ = write!(
        h,
        "<footer class=\"muted\">Written by aitbc-flow {}. Everything on this page is in this file: it needs no network.</footer>\n\
         <script type=\"application/json\" id=\"run-data\">",
        esc(&r.runner_version),
    );
    push_data_json(&mut h, r, budget);
    let _ = write!(h, "</script>\n<script>\n{JS}</script>\n</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attempt;
    use crate::report::model::{RunStatus, StepState, Totals};

    fn report(n: usize, text: usize) -> Report {
        let mut steps = Vec::new();
        for i in 0..n {
            let mut st = StepReport::blank(&format!("step-{i}"), "job");
            st.state = if i % 7 == 3 {
                StepState::Failed
            } else {
                StepState::Succeeded
            };
            if i > 0 {
                st.needs = vec![format!("step-{}", i - 1)];
            }
            st.started_at = Some("2026-12-01T10:00:01.000Z".into());
            st.finished_at = Some("2026-12-01T10:00:03.500Z".into());
            st.outcome.summary = "s".repeat(text);
            st.outcome.issues = vec!["i".repeat(text); 4];
            st.outcome.result = Some(serde_json::Value::String("<o>".repeat(text)));
            st.attempts = (0..30)
                .map(|k| Attempt {
                    number: k + 1,
                    started_at: "2026-12-01T10:00:01.000Z".into(),
                    duration_ms: 10,
                    error: Some("e".repeat(text)),
                    delay_ms: None,
                })
                .collect();
            steps.push(st);
        }
        Report {
            report_version: 1,
            run_id: "r<1>".into(),
            plan: "p&q".into(),
            plan_path: "p.yaml".into(),
            plan_hash: "h".into(),
            runner_version: "0".into(),
            plan_git: None,
            coordinator: "http://x".into(),
            embedded_coordinator: false,
            status: RunStatus::Failed,
            exit_code: 1,
            started_at: "2026-12-01T10:00:00.000Z".into(),
            finished_at: Some("2026-12-01T10:00:04.000Z".into()),
            issues: vec!["</script><script>alert(1)</script>".into()],
            vars: serde_json::Value::Null,
            inputs: Default::default(),
            steps,
            totals: Totals::default(),
        }
    }

    /// The run's data the page keeps in its script.
    fn page_data(page: &str) -> serde_json::Value {
        let data = page
            .split("<script type=\"application/json\" id=\"run-data\">")
            .nth(1)
            .and_then(|s| s.split("</script>").next())
            .unwrap();
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn the_page_escapes_what_the_run_says_and_keeps_the_data_in_its_script() {
        let page = render(&report(3, 10));
        assert!(page.contains("Run <code>r&lt;1&gt;</code> of <code>p&amp;q</code>"));
        assert!(!page.contains("<script>alert"));
        let v = page_data(&page);
        assert_eq!(v["steps"].as_array().unwrap().len(), 3);
        assert_eq!(v["steps"][2]["needs"], serde_json::json!([1]));
        assert_eq!(v["steps"][2]["level"], 2);
        assert_eq!(v["steps"][0]["t0"], 1000);
        assert_eq!(v["steps"][0]["t1"], 3500);
        assert_eq!(v["span"], 4000);
        assert_eq!(v["steps"][0]["n_att"], 30);
        assert_eq!(v["steps"][0]["att"].as_array().unwrap().len(), 12);
        assert_eq!(v["steps"][0]["att"][0][1], 10);
        assert_eq!(v["steps"][0]["preview"], "<o><o><o><o><o><o><o><o><o><o>");
        // No network: nothing is loaded from anywhere.
        for needle in ["src=\"http", "href=\"http", "@import", "url(http", "fetch("] {
            assert!(!page.contains(needle), "{needle}");
        }
    }

    #[test]
    fn a_status_step_says_its_gate_and_why_it_ran() {
        let mut r = report(2, 10);
        r.steps[1].when = Some("failure()".into());
        r.steps[1].reason = Some("ran: step step-0 failed".into());
        let page = render(&r);
        let v = page_data(&page);
        assert_eq!(v["steps"][1]["when"], "failure()");
        assert_eq!(v["steps"][1]["reason"], "ran: step step-0 failed");
        assert!(v["steps"][0].get("when").is_none());
        assert!(page.contains("addField(dl, 'why', s.reason)"));
    }

    #[test]
    fn a_huge_run_stays_under_the_size_limit() {
        let page = render(&report(10_000, 2_000));
        assert!(page.len() <= MAX_BYTES, "{} bytes", page.len());
        assert!(page.len() > 1_000_000);
    }
}
