//! A run's report for the terminal (`runs show`): the header, the totals and the spend per wallet, the
//! steps as an aligned table with their states coloured and each output's preview under its step, then
//! the issues and recommendations per step. `summary.md` says the same for Markdown readers.

use std::fmt::Write as _;

use super::model::Report;
use super::style::Palette;
use super::text::{clip, output_preview, state_word, status_word};
use super::writers::provenance_line;

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n >= width {
        s.to_string()
    } else {
        format!("{s}{}", " ".repeat(width - n))
    }
}

fn pad_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n >= width {
        s.to_string()
    } else {
        format!("{}{s}", " ".repeat(width - n))
    }
}

/// Renders `r` for a terminal `width` columns wide.
pub fn for_terminal(r: &Report, p: Palette, width: usize) -> String {
    let width = width.max(60);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {} of {} — {} (exit {})",
        p.bold("Run"),
        p.id(&r.run_id),
        p.bold(&r.plan),
        p.status(r.status, status_word(r.status)),
        r.exit_code
    );
    let field = |s: &mut String, k: &str, v: &str| {
        let _ = writeln!(s, "  {} {v}", p.dim(&pad(k, 12)));
    };
    field(
        &mut s,
        "coordinator",
        &format!(
            "{}{}",
            r.coordinator,
            if r.embedded_coordinator {
                " (embedded local coordinator)"
            } else {
                ""
            }
        ),
    );
    field(
        &mut s,
        "plan",
        &provenance_line(r).unwrap_or_else(|| format!("{} (not in a git work tree)", r.plan_path)),
    );
    field(&mut s, "aitbc-flow", &r.runner_version);
    field(
        &mut s,
        "started",
        &format!(
            "{}, wall time {:.3}s",
            r.started_at,
            r.totals.wall_time_ms as f64 / 1000.0
        ),
    );
    let t = &r.totals;
    let failed = format!("{} failed", t.failed);
    let failed = if t.failed > 0 { p.bad(&failed) } else { failed };
    let cancelled = format!("{} cancelled", t.cancelled);
    let cancelled = if t.cancelled > 0 {
        p.warn(&cancelled)
    } else {
        cancelled
    };
    field(
        &mut s,
        "steps",
        &format!(
            "{} succeeded, {failed}, {} skipped, {cancelled}; {} jobs submitted",
            t.succeeded, t.skipped, t.jobs
        ),
    );

    if !t.spend_per_wallet.is_empty() {
        let _ = writeln!(s, "\n{}", p.bold("Spend per wallet (AITBC)"));
        let w = t
            .spend_per_wallet
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            s,
            "  {}",
            p.dim(&format!(
                "{}  {:>10}  {:>10}  {:>10}",
                pad("wallet", w),
                "paid",
                "refunded",
                "still held"
            ))
        );
        for (wallet, paid) in &t.spend_per_wallet {
            let of = |m: &std::collections::BTreeMap<String, crate::money::Money>| {
                m.get(wallet).map_or("0".to_string(), |m| m.to_string())
            };
            let _ = writeln!(
                s,
                "  {}  {:>10}  {:>10}  {:>10}",
                pad(wallet, w),
                paid.to_string(),
                of(&t.refunded_per_wallet),
                of(&t.held_per_wallet)
            );
        }
    }

    if !r.issues.is_empty() {
        let _ = writeln!(s, "\n{}", p.bold("Issues"));
        for i in &r.issues {
            let _ = writeln!(s, "  {} {i}", p.warn("!"));
        }
    }

    let _ = writeln!(s, "\n{}", p.bold("Steps"));
    let id_w = r
        .steps
        .iter()
        .map(|st| st.id.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 32);
    let kind_w = 8;
    let state_w = 9;
    let job_w = 8;
    let pay_w = 8;
    let time_w = 8;
    let fixed = 2 + id_w + 2 + kind_w + 1 + state_w + 1 + job_w + 1 + pay_w + 1 + time_w + 2;
    let rest = width.saturating_sub(fixed).max(20);
    let _ = writeln!(
        s,
        "  {}",
        p.dim(&format!(
            "{}  {} {} {} {} {}  summary",
            pad("step", id_w),
            pad("kind", kind_w),
            pad("state", state_w),
            pad("job", job_w),
            pad_left("payment", pay_w),
            pad_left("time", time_w),
        ))
    );
    for st in &r.steps {
        let job = st
            .outcome
            .job_id
            .as_ref()
            .map_or(String::new(), |j| j.as_str().chars().take(job_w).collect());
        let state = pad(state_word(st.state), state_w);
        let _ = writeln!(
            s,
            "  {}  {} {} {} {} {}  {}",
            pad(&clip(&st.id, id_w), id_w),
            pad(&st.kind, kind_w),
            p.state(st.state, &state),
            pad(&job, job_w),
            pad_left(
                &st.outcome
                    .payment
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                pay_w
            ),
            pad_left(&format!("{:.3}s", st.outcome.execution_time), time_w),
            clip(&st.outcome.summary, rest)
        );
        if let Some(preview) = output_preview(st, width.saturating_sub(id_w + 8).max(20)) {
            let _ = writeln!(
                s,
                "  {}  {}",
                " ".repeat(id_w),
                p.dim(&format!("↳ {preview}"))
            );
        }
    }

    let noted: Vec<_> = r
        .steps
        .iter()
        .filter(|st| !st.outcome.issues.is_empty() || !st.outcome.recommendations.is_empty())
        .collect();
    if !noted.is_empty() {
        let _ = writeln!(s, "\n{}", p.bold("Step notes"));
        for st in noted {
            let _ = writeln!(s, "  {}", p.state(st.state, &st.id));
            for i in &st.outcome.issues {
                let _ = writeln!(s, "    {} {i}", p.warn("!"));
            }
            for rec in &st.outcome.recommendations {
                let _ = writeln!(s, "    {} {rec}", p.dim("→"));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{RunStatus, StepReport, StepState, Totals};

    fn report() -> Report {
        let mut ok = StepReport::blank("analyze", "job");
        ok.state = StepState::Succeeded;
        ok.outcome.summary = "Inference job completed".into();
        ok.outcome.result = Some(serde_json::Value::String("the\nanswer".into()));
        let mut bad = StepReport::blank("bad", "job");
        bad.state = StepState::Failed;
        bad.outcome.issues = vec!["the job failed: simulated failure".into()];
        Report {
            report_version: 1,
            run_id: "r1".into(),
            plan: "p".into(),
            plan_path: "p.yaml".into(),
            plan_hash: "h".into(),
            runner_version: "0.1.0".into(),
            plan_git: None,
            coordinator: "http://x".into(),
            embedded_coordinator: true,
            status: RunStatus::Failed,
            exit_code: 1,
            started_at: "2026-12-01T00:00:00Z".into(),
            finished_at: None,
            issues: Vec::new(),
            vars: serde_json::Value::Null,
            inputs: Default::default(),
            steps: vec![ok, bad],
            totals: Totals {
                succeeded: 1,
                failed: 1,
                ..Totals::default()
            },
        }
    }

    #[test]
    fn the_terminal_view_is_a_table_not_markdown() {
        let text = for_terminal(&report(), Palette::new(false), 100);
        assert!(!text.contains('|') && !text.contains("# "), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(text.contains("Run r1 of p — failed (exit 1)"), "{text}");
        let row = text.lines().find(|l| l.contains("analyze")).unwrap();
        assert!(
            row.contains("ok") && row.contains("Inference job completed"),
            "{row}"
        );
        assert!(text.contains("↳ the answer"), "{text}");
        assert!(
            text.contains("! the job failed: simulated failure"),
            "{text}"
        );
        let coloured = for_terminal(&report(), Palette::new(true), 100);
        assert!(coloured.contains("\x1b[1;31mfailed"), "{coloured}");
    }
}
