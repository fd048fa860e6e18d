//! `plan` (the dry run) and `graph`: what a plan would do, without a coordinator.
//!
//! The dry run prints the steps in the order they would start, with their levels, the rendered
//! requests (secrets redacted; values that need another step's output are shown as their
//! `${{ steps.… }}` template) and the payment per wallet. Balances are not known offline: `run`
//! compares them before the first submit.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::plan::check::LoadOptions;
use crate::plan::diag::Diagnostic;
pub use crate::report::dry_run::{dry_run_text, dry_run_value};

/// How `plan` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For a person.
    #[default]
    Text,
    /// Machine-readable JSON on stdout (documented in docs/plan-format.md).
    Json,
}

/// How `graph` draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// A Mermaid flowchart.
    #[default]
    Mermaid,
    /// Graphviz dot.
    Dot,
}

/// What the command line adds to a plan: `--set` and `--vars`.
#[derive(Debug, Default, clap::Args)]
pub struct Overrides {
    /// Override a variable: `--set wallet=ops-wallet`, `--set limits.max=3` (value read as YAML).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    /// Override variables from a YAML file (a mapping); applied before `--set`.
    #[arg(long = "vars", value_name = "FILE")]
    pub vars: Vec<PathBuf>,
}

impl Overrides {
    /// The load options these overrides make.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            set: self.set.clone(),
            vars_files: self.vars.clone(),
            environment: None,
        }
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// `plan PLAN`
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Variable overrides.
    #[command(flatten)]
    pub overrides: Overrides,
    /// `text` (default) or `json`.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `graph PLAN`
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// `mermaid` (default) or `dot`.
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    pub format: GraphFormat,
    /// Variable overrides (a matrix may depend on them).
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Prints diagnostics to stderr.
pub fn print_diagnostics(ds: &[Diagnostic]) {
    for d in ds {
        errln!("{d}");
    }
}

/// Prints warnings to stderr.
pub fn print_warnings(ds: &[Diagnostic]) {
    for d in ds {
        let text = d.to_string();
        let text = text.strip_prefix("error: ").unwrap_or(&text);
        errln!("warning: {text}");
    }
}

/// Runs `plan`.
pub fn plan(a: PlanArgs) -> i32 {
    let plan = match crate::plan::load(&a.plan, &a.overrides.load_options()) {
        Ok(p) => p,
        Err(ds) => {
            print_diagnostics(&ds);
            return crate::exit::INVALID;
        }
    };
    print_warnings(&plan.warnings);
    match a.output {
        Output::Json => {
            let v = dry_run_value(&plan);
            match serde_json::to_string_pretty(&v) {
                Ok(s) => outln!("{s}"),
                Err(e) => {
                    errln!("error: {e}");
                    return crate::exit::INVALID;
                }
            }
        }
        Output::Text => out!("{}", dry_run_text(&plan)),
    }
    crate::exit::SUCCESS
}

/// Runs `graph`.
pub fn graph(a: GraphArgs) -> i32 {
    let plan = match crate::plan::load(&a.plan, &a.overrides.load_options()) {
        Ok(p) => p,
        Err(ds) => {
            print_diagnostics(&ds);
            return crate::exit::INVALID;
        }
    };
    print_warnings(&plan.warnings);
    match a.format {
        GraphFormat::Mermaid => out!("{}", crate::plan::graph::to_mermaid(&plan)),
        GraphFormat::Dot => out!("{}", crate::plan::graph::to_dot(&plan)),
    }
    crate::exit::SUCCESS
}

/// The dry run of a plan file as JSON (what `plan --output json` prints).
pub fn dry_run_json(path: &Path, options: &LoadOptions) -> Result<Value, Vec<Diagnostic>> {
    crate::plan::load(path, options).map(|p| dry_run_value(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_split_at_the_first_equals() {
        assert_eq!(parse_set("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_set("=x").is_err());
        assert!(parse_set("novalue").is_err());
    }
}
