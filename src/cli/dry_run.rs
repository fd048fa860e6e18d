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
            placeholder_secrets: false,
            allow_missing_inputs: false,
        }
    }
}

/// The load options of `--set`, `--vars` and `--vars-from RUN-ID`, one path for `run` and `validate`:
/// the earlier run's vars go in as the first `--vars` file, so `--vars` and `--set` apply on top
/// exactly as they do on the plan's own vars. Keep the file until the plan is loaded (`run` keeps it
/// in the run directory). `Err` is the message, naming `--vars-from`.
pub fn load_options_with(
    overrides: &Overrides,
    vars_from: Option<&str>,
    runs_dir: &Path,
) -> Result<(LoadOptions, Option<crate::report::repro::VarsFile>), String> {
    use crate::report::repro;
    let mut load = overrides.load_options();
    let Some(id) = vars_from else {
        return Ok((load, None));
    };
    let file = repro::vars_from(runs_dir, id, &overrides.set)
        .map_err(|e| e.to_string())
        .and_then(|vars| {
            repro::VarsFile::write(&vars)
                .map_err(|e| format!("cannot pass on the vars of run `{id}`: {e}"))
        })
        .map_err(|e| format!("--vars-from {id}: {e}"))?;
    load.vars_files.insert(0, file.path().to_path_buf());
    Ok((load, Some(file)))
}

/// `--from-run RUN-ID`: the steps of `plan` that `--only` needs, taken from that run as `run` takes
/// them ([`crate::exec::from_run::take`], the one function that decides). `Err` is the exit code of
/// the message printed (naming the step that cannot be taken).
pub fn take_from_run(
    runs_dir: &Path,
    id: &str,
    plan: &crate::plan::CheckedPlan,
    only: &[String],
) -> Result<crate::exec::from_run::Taken, i32> {
    crate::exec::from_run::take(runs_dir, id, plan, only).map_err(|e| {
        errln!(
            "error[{}]: --from-run {id}: {e}",
            crate::plan::Code::StepSelection
        );
        crate::exit::INVALID
    })
}

/// `--runs-dir`, for the commands that read earlier runs (`--from-run`, `--vars-from`, `--run`).
#[derive(Debug, clap::Args)]
pub struct RunsDirArg {
    /// Where run directories are.
    #[arg(
        long = "runs-dir",
        env = "AITBC_RUNS_DIR",
        default_value = "runs",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
}

/// `--only` and `--skip`: which steps of the plan to run.
#[derive(Debug, Default, clap::Args)]
pub struct SelectFlags {
    /// Run only these steps and what they need, transitively (`--only a,b` or `--only a --only b`;
    /// a matrix step's id as written selects all its copies).
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Leave out these steps and the steps that need them, transitively.
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    pub skip: Vec<String>,
}

impl SelectFlags {
    /// The selection these flags make.
    pub fn selection(&self) -> crate::plan::select::Selection {
        crate::plan::select::Selection {
            only: self.only.clone(),
            skip: self.skip.clone(),
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
    /// `--only`/`--skip`: show the run of these steps.
    #[command(flatten)]
    pub select: SelectFlags,
    /// With `--only`: show which steps the selected ones would take from this earlier run (under
    /// --runs-dir), as `run --from-run` takes them, and which would run.
    #[arg(long, value_name = "RUN-ID", requires = "only")]
    pub from_run: Option<String>,
    /// `--runs-dir` (for --from-run).
    #[command(flatten)]
    pub runs_dir: RunsDirArg,
    /// `text` (default) or `json`.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `graph PLAN`
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The plan file (with --run it may be left out: the run's graph is drawn from its report).
    #[arg(required_unless_present = "run")]
    pub plan: Option<PathBuf>,
    /// Colour the steps by their states in this run (a run id, or `latest`).
    #[arg(long, value_name = "RUN-ID")]
    pub run: Option<String>,
    /// `--runs-dir` (for --run).
    #[command(flatten)]
    pub runs_dir: RunsDirArg,
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
        errln!("{}", d.as_warning());
    }
}

/// Runs `plan`.
pub fn plan(a: PlanArgs) -> i32 {
    let mut plan = match crate::plan::load(&a.plan, &a.overrides.load_options()) {
        Ok(p) => p,
        Err(ds) => {
            print_diagnostics(&ds);
            return crate::exit::INVALID;
        }
    };
    print_warnings(&plan.warnings);
    let left_out = match crate::plan::select::apply(&mut plan, &a.select.selection()) {
        Ok(l) => l,
        Err(ds) => {
            print_diagnostics(&ds);
            return crate::exit::INVALID;
        }
    };
    let taken = match &a.from_run {
        Some(id) => match take_from_run(&a.runs_dir.dir, id, &plan, &a.select.only) {
            Ok(t) => Some(t),
            Err(code) => return code,
        },
        None => None,
    };
    // The steps taken from the earlier run and those that would run, in plan order.
    let split = taken.as_ref().map(|t| {
        let (from, run): (Vec<&str>, Vec<&str>) = plan
            .steps
            .iter()
            .map(|s| s.id.as_str())
            .partition(|id| t.steps.contains_key(*id));
        (t.run_id.as_str(), from, run)
    });
    // What the taken steps paid in their run is not paid again: the spend leaves them out, as `run`'s
    // preflight and spend cap do.
    let paid_elsewhere: std::collections::HashSet<String> = taken
        .as_ref()
        .map(|t| t.steps.keys().cloned().collect())
        .unwrap_or_default();
    match a.output {
        Output::Json => {
            let mut v = crate::report::dry_run::dry_run_value_except(&plan, &paid_elsewhere);
            if !a.select.selection().is_all()
                && let Value::Object(m) = &mut v
            {
                let left: Vec<Value> = left_out
                    .iter()
                    .map(|(id, why)| serde_json::json!({"id": id, "why": why}))
                    .collect();
                m.insert("left_out".into(), Value::Array(left));
            }
            if let Some((run_id, from, run)) = &split
                && let Value::Object(m) = &mut v
            {
                m.insert(
                    "from_run".into(),
                    serde_json::json!({"run_id": run_id, "taken": from, "would_run": run}),
                );
            }
            match serde_json::to_string_pretty(&v) {
                Ok(s) => outln!("{s}"),
                Err(e) => {
                    errln!("error: {e}");
                    return crate::exit::INVALID;
                }
            }
        }
        Output::Text => {
            out!(
                "{}",
                crate::report::dry_run::dry_run_text_except(&plan, &paid_elsewhere)
            );
            if !a.select.selection().is_all() {
                if left_out.is_empty() {
                    outln!("\nleft out by --only/--skip: nothing");
                } else {
                    outln!("\nleft out by --only/--skip");
                }
                for (id, why) in &left_out {
                    outln!("  {id}: {why}");
                }
            }
            if let Some((run_id, from, run)) = &split {
                let list = |ids: &[&str]| {
                    if ids.is_empty() {
                        "nothing".to_string()
                    } else {
                        ids.join(", ")
                    }
                };
                outln!("\nfrom run {run_id} (--from-run)");
                outln!(
                    "  taken (outputs and report entries from that run; nothing submitted or paid): {}",
                    list(from)
                );
                outln!("  would run: {}", list(run));
            }
        }
    }
    crate::exit::SUCCESS
}

/// Runs `graph`.
pub fn graph(a: GraphArgs) -> i32 {
    use crate::plan::graph::{Node, dot, mermaid, plan_nodes};
    use crate::report::text::{STATE_STYLES, state_class};
    let run = match &a.run {
        Some(id) => {
            let report = crate::report::history::find_run(&a.runs_dir.dir, id)
                .map_err(|e| e.to_string())
                .and_then(|dir| {
                    crate::report::history::read_report(&dir)
                        .ok_or_else(|| format!("run {id} has no readable report"))
                });
            match report {
                Ok(r) => Some(r),
                Err(e) => {
                    errln!("error: {e}");
                    return crate::exit::INVALID;
                }
            }
        }
        None => None,
    };
    let plan = match &a.plan {
        Some(path) => match crate::plan::load(path, &a.overrides.load_options()) {
            Ok(p) => Some(p),
            Err(ds) => {
                print_diagnostics(&ds);
                return crate::exit::INVALID;
            }
        },
        None => None,
    };
    if let Some(p) = &plan {
        print_warnings(&p.warnings);
    }
    let states: std::collections::HashMap<&str, &'static str> = run
        .iter()
        .flat_map(|r| {
            r.steps
                .iter()
                .map(|s| (s.id.as_str(), state_class(s.state)))
        })
        .collect();
    let (name, nodes): (&str, Vec<Node>) = match (&plan, &run) {
        (Some(p), run) => {
            if let Some(r) = run
                && r.plan_hash != p.content_hash
            {
                errln!(
                    "note: run {} ran another version of {} (sha256 {} then); steps are coloured by id",
                    r.run_id,
                    p.path.display(),
                    &r.plan_hash[..r.plan_hash.len().min(12)]
                );
            }
            let nodes = plan_nodes(p)
                .into_iter()
                .map(|n| Node {
                    class: states.get(n.id).copied(),
                    ..n
                })
                .collect();
            (&p.plan.name, nodes)
        }
        (None, Some(r)) => (
            &r.plan,
            r.steps
                .iter()
                .map(|s| Node {
                    id: &s.id,
                    kind: &s.kind,
                    needs: &s.needs,
                    class: Some(state_class(s.state)),
                })
                .collect(),
        ),
        (None, None) => {
            errln!("error: give a plan file, or --run RUN-ID to draw a run's graph");
            return crate::exit::INVALID;
        }
    };
    let styles: &[(&str, &str, &str)] = if run.is_some() { &STATE_STYLES } else { &[] };
    // A plan's groups of sub-plans are drawn around their steps.
    match a.format {
        GraphFormat::Mermaid => {
            let mut text = mermaid(&nodes, styles);
            if let Some(p) = &plan {
                crate::plan::graph::mermaid_groups(p, &mut text);
            }
            out!("{text}")
        }
        GraphFormat::Dot => {
            let mut text = dot(name, &nodes, styles);
            if let Some(p) = &plan {
                crate::plan::graph::dot_groups(p, &mut text);
            }
            out!("{text}")
        }
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
