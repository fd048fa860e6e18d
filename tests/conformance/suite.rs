//! The suite's own small runner: checks run one after the other (they share one coordinator and its
//! per-IP rate limits, so they must not overlap), each records every property that does not hold
//! instead of stopping at the first, and the summary says which checks failed and why.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// One check: a name, the properties that did not hold, and notes (measurements) worth printing.
pub struct Check {
    failures: Vec<String>,
    notes: Vec<String>,
}

impl Check {
    /// Records `what` as a failure unless `ok`; returns `ok`.
    pub fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) -> bool {
        if !ok {
            self.failures.push(what());
        }
        ok
    }

    /// Records one failure for all of `items` (each a thing that did not hold), showing a few.
    pub fn expect_none(&mut self, what: &str, items: Vec<String>) {
        if items.is_empty() {
            return;
        }
        let shown: Vec<String> = items.iter().take(3).map(|i| format!("  {i}")).collect();
        let more = if items.len() > 3 {
            format!("\n  … and {} more", items.len() - 3)
        } else {
            String::new()
        };
        self.failures.push(format!(
            "{} {what}:\n{}{more}",
            items.len(),
            shown.join("\n")
        ));
    }

    /// Records a failure.
    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    /// A measurement or fact printed under the check's line.
    pub fn note(&mut self, what: impl Into<String>) {
        self.notes.push(what.into());
    }

    /// The value of `r`, or `None` with its error recorded as a failure.
    pub fn ok<T>(&mut self, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.failures.push(e);
                None
            }
        }
    }
}

/// The checks run so far.
pub struct Suite {
    only: Option<String>,
    passed: Vec<String>,
    failed: Vec<(String, Vec<String>)>,
    started: Instant,
}

impl Suite {
    /// `only`: run just the checks whose name contains it (`CONFORMANCE_ONLY`).
    pub fn new(only: Option<String>) -> Suite {
        Suite {
            only,
            passed: Vec::new(),
            failed: Vec::new(),
            started: Instant::now(),
        }
    }

    /// True when the check of this name runs (the filter lets it through).
    pub fn selected(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|o| name.contains(o))
    }

    /// Runs one check (unless filtered out) and prints its outcome.
    pub fn run(&mut self, name: &str, f: impl FnOnce(&mut Check)) {
        if !self.selected(name) {
            return;
        }
        let start = Instant::now();
        let mut c = Check {
            failures: Vec::new(),
            notes: Vec::new(),
        };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&mut c))) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            c.fail(format!("the check panicked: {msg}"));
        }
        let took = secs(start.elapsed());
        if c.failures.is_empty() {
            println!("  ok    {name} ({took})");
            self.passed.push(name.to_string());
        } else {
            println!("  FAIL  {name} ({took})");
            for f in &c.failures {
                println!("{}", indent(&format!("- {f}"), 8));
            }
            self.failed.push((name.to_string(), c.failures));
        }
        for n in &c.notes {
            println!("{}", indent(n, 8));
        }
    }

    /// Records a failure of the environment (a process that would not start); later checks that
    /// need it are not run.
    pub fn environment_failed(&mut self, what: &str, why: String) {
        println!("  FAIL  {what}");
        println!("{}", indent(&why, 8));
        self.failed.push((what.to_string(), vec![why]));
    }

    /// Prints the summary; failure when any check failed.
    pub fn finish(self) -> ExitCode {
        let took = secs(self.started.elapsed());
        if self.failed.is_empty() {
            println!("conformance: {} checks passed in {took}", self.passed.len());
            return ExitCode::SUCCESS;
        }
        println!(
            "conformance: {} of {} checks failed in {took}: {}",
            self.failed.len(),
            self.failed.len() + self.passed.len(),
            self.failed
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        ExitCode::FAILURE
    }
}

/// `12.3s`, or `2m05s` past a minute.
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
