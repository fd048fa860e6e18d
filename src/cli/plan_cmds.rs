//! `validate` and `schema`: check plan files and print every problem in every file; print the JSON
//! Schemas that editors and other tools use.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::plan::{Diagnostic, LoadOptions};

/// How a command prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text on stderr.
    #[default]
    Text,
    /// JSON on stdout.
    Json,
    /// GitHub workflow annotations on stdout (`::error file=…,line=…,col=…,title=AF0003::…`), one per
    /// diagnostic, so that a CI job marks the lines in the pull request.
    Github,
}

/// `validate PLAN...`
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Plan files.
    #[arg(required = true)]
    pub plans: Vec<PathBuf>,
    /// `text` (default), `json`, or `github` (workflow annotations, as actionlint prints them).
    #[arg(long, visible_alias = "format", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Values to check each plan with (`--set`, `--vars`), read and checked against its typed
    /// `inputs:` as `run` reads them.
    #[command(flatten)]
    pub overrides: crate::cli::dry_run::Overrides,
    /// Check with the vars an earlier run recorded (under --runs-dir), as `run --vars-from` does.
    #[arg(long, value_name = "RUN-ID")]
    pub vars_from: Option<String>,
    /// `--runs-dir` (for --vars-from).
    #[command(flatten)]
    pub runs_dir: crate::cli::dry_run::RunsDirArg,
}

/// Which schema `schema` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    /// The plan format (`schemas/plan.schema.json`).
    Plan,
    /// The run report (`schemas/report.schema.json`).
    Report,
    /// One line of a run's `events.jsonl` (`schemas/events.schema.json`).
    Events,
}

/// `schema plan|report|events`
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Which schema.
    #[arg(value_enum)]
    pub which: SchemaKind,
}

/// The outcome of validating one file.
#[derive(Clone, Debug, Serialize)]
pub struct FileResult {
    /// The file as named on the command line.
    pub file: String,
    /// Whether it passed every check.
    pub valid: bool,
    /// Its errors, in file order.
    pub errors: Vec<Diagnostic>,
    /// Its warnings (problems that do not stop the plan).
    pub warnings: Vec<Diagnostic>,
}

/// The outcome of validating several files.
#[derive(Clone, Debug, Serialize)]
pub struct ValidateReport {
    /// True when every file is valid.
    pub valid: bool,
    /// How many files are invalid.
    pub invalid_files: usize,
    /// How many errors there are in all.
    pub error_count: usize,
    /// Each file, in the order given.
    pub files: Vec<FileResult>,
}

impl ValidateReport {
    /// The exit code: [`crate::exit::SUCCESS`] or [`crate::exit::INVALID`].
    pub fn exit_code(&self) -> i32 {
        if self.valid {
            crate::exit::SUCCESS
        } else {
            crate::exit::INVALID
        }
    }

    /// The report as people read it: every diagnostic drawn against its source, `ok: FILE` for each
    /// valid file, and a closing line with the counts.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            for d in &f.errors {
                out.push_str(&d.to_string());
                out.push('\n');
            }
            for w in &f.warnings {
                out.push_str(&w.as_warning());
                out.push('\n');
            }
            if f.valid {
                out.push_str(&format!("ok: {}\n", f.file));
            }
        }
        out.push_str(&self.closing_line());
        out
    }

    /// The report as GitHub workflow annotations: one line per error and warning, in file order.
    pub fn to_github(&self) -> String {
        use crate::plan::diag::Level;
        let mut out = String::new();
        for f in &self.files {
            for (level, ds) in [(Level::Error, &f.errors), (Level::Warning, &f.warnings)] {
                for d in ds {
                    out.push_str(&d.github_annotation(level));
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The closing line: `1 plan valid`, `1 of 2 plans invalid (3 errors)`.
    pub fn closing_line(&self) -> String {
        let n = self.files.len();
        let plans = if n == 1 { "plan" } else { "plans" };
        if self.valid {
            if n == 1 {
                "1 plan valid\n".to_string()
            } else {
                format!("all {n} plans valid\n")
            }
        } else {
            let errors = if self.error_count == 1 {
                "error"
            } else {
                "errors"
            };
            format!(
                "{} of {n} {plans} invalid ({} {errors})\n",
                self.invalid_files, self.error_count
            )
        }
    }
}

/// Validates one plan file: loading (YAML, schema, types) first, then the full check.
pub fn validate_file(path: &Path) -> FileResult {
    validate_file_with(path, false, &LoadOptions::default())
}

/// Validates one plan file. With `drop_in_background`, a large checked plan is freed on another thread: a
/// 10,000-step plan takes tens of milliseconds to hand back to the allocator piece by piece, and the
/// `validate` command has no use for it (the process may well exit before that thread is done).
/// `given` are the load options of `--set`, `--vars` and `--vars-from`.
fn validate_file_with(path: &Path, drop_in_background: bool, given: &LoadOptions) -> FileResult {
    let file = path.display().to_string();
    // Linting needs no secrets and no required inputs: a plan is checked with placeholders for the
    // unset secrets and without the inputs not given (`run` reads them for real and refuses a plan
    // without them); the inputs that have a value (their defaults) are still checked.
    let options = LoadOptions {
        placeholder_secrets: true,
        allow_missing_inputs: true,
        ..given.clone()
    };
    let (errors, warnings) = match crate::plan::load(path, &options) {
        Ok(mut checked) => {
            let warnings = std::mem::take(&mut checked.warnings);
            // A small plan is freed here in microseconds, less than starting a thread costs.
            if drop_in_background && checked.steps.len() >= 1000 {
                std::thread::spawn(move || drop(checked));
            }
            (Vec::new(), warnings)
        }
        Err(errors) => (errors, Vec::new()),
    };
    FileResult {
        valid: errors.is_empty(),
        file,
        errors,
        warnings,
    }
}

/// Validates every file; never stops at the first problem.
pub fn validate_paths(paths: &[PathBuf]) -> ValidateReport {
    validate_paths_with(paths, false, &LoadOptions::default())
}

fn validate_paths_with(
    paths: &[PathBuf],
    drop_in_background: bool,
    given: &LoadOptions,
) -> ValidateReport {
    let files: Vec<FileResult> = paths
        .iter()
        .map(|p| validate_file_with(p, drop_in_background, given))
        .collect();
    let invalid_files = files.iter().filter(|f| !f.valid).count();
    let error_count = files.iter().map(|f| f.errors.len()).sum();
    ValidateReport {
        valid: invalid_files == 0,
        invalid_files,
        error_count,
        files,
    }
}

/// Validates the files and returns the exit code and the text `validate` prints (for tests).
pub fn validate_to_text(paths: &[PathBuf]) -> (i32, String) {
    let report = validate_paths(paths);
    (report.exit_code(), report.to_text())
}

/// Runs `validate`.
pub fn validate(a: ValidateArgs) -> i32 {
    // The values are read as `run` reads them (one path: `dry_run::load_options_with`).
    let (given, _vars_file) = match crate::cli::dry_run::load_options_with(
        &a.overrides,
        a.vars_from.as_deref(),
        &a.runs_dir.dir,
    ) {
        Ok(x) => x,
        Err(e) => {
            errln!("error: {e}");
            return crate::exit::INVALID;
        }
    };
    let report = validate_paths_with(&a.plans, true, &given);
    match a.output {
        OutputFormat::Text => err!("{}", report.to_text()),
        OutputFormat::Github => {
            out!("{}", report.to_github());
            err!("{}", report.closing_line());
        }
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => outln!("{s}"),
            Err(e) => {
                errln!("error: cannot write the report as JSON: {e}");
                return crate::exit::INVALID;
            }
        },
    }
    report.exit_code()
}

/// Runs `schema`.
pub fn schema(a: SchemaArgs) -> i32 {
    match a.which {
        SchemaKind::Plan => match serde_json::to_string_pretty(&crate::plan::schema::plan_schema())
        {
            Ok(s) => {
                outln!("{s}");
                crate::exit::SUCCESS
            }
            Err(e) => {
                errln!("error: cannot print the plan schema: {e}");
                crate::exit::INVALID
            }
        },
        SchemaKind::Report => match serde_json::to_string_pretty(&crate::report::report_schema()) {
            Ok(s) => {
                outln!("{s}");
                crate::exit::SUCCESS
            }
            Err(e) => {
                errln!("error: cannot print the report schema: {e}");
                crate::exit::INVALID
            }
        },
        SchemaKind::Events => {
            match serde_json::to_string_pretty(&crate::report::model::events_schema()) {
                Ok(s) => {
                    outln!("{s}");
                    crate::exit::SUCCESS
                }
                Err(e) => {
                    errln!("error: cannot print the events schema: {e}");
                    crate::exit::INVALID
                }
            }
        }
    }
}
