//! Dry-run fixtures: every file in `tests/plans/valid/` is a valid plan, and its snapshot is the JSON
//! `plan --output json` prints for it (the content hash redacted). Plus the command-line overrides and
//! the graph drawings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aitbc_flow::cli::dry_run::dry_run_json;
use aitbc_flow::plan::LoadOptions;

/// The fake secret the fixtures read; it must never appear in any output.
const TOKEN: &str = "tok-live-7f3a9c51";
/// The secret in `tests/plans/valid/secret-salt.txt`.
const SALT: &str = "salt-9d8e7f";

fn environment() -> BTreeMap<String, String> {
    [
        ("AITBC_FLOW_TEST_TOKEN".to_string(), TOKEN.to_string()),
        ("AITBC_FLOW_REGION".to_string(), "eu-west".to_string()),
    ]
    .into()
}

fn options() -> LoadOptions {
    LoadOptions {
        environment: Some(environment()),
        ..Default::default()
    }
}

/// The fixture's path relative to the crate, so snapshots do not depend on where the checkout is.
fn relative(path: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

fn dry_run(path: &Path, options: &LoadOptions) -> serde_json::Value {
    match dry_run_json(path, options) {
        Ok(v) => v,
        Err(ds) => {
            let text: Vec<String> = ds.iter().map(ToString::to_string).collect();
            panic!("{} should be valid:\n{}", path.display(), text.join("\n"));
        }
    }
}

#[test]
fn valid_plans() {
    insta::glob!("plans/valid/*.yaml", |path| {
        let rel = relative(path);
        let v = dry_run(&rel, &options());
        let text = v.to_string();
        assert!(!text.contains(TOKEN), "a secret leaked: {text}");
        assert!(!text.contains(SALT), "a secret leaked: {text}");
        insta::assert_json_snapshot!(v, {".content_hash" => "[sha256]"});
    });
}

#[test]
fn a_status_step_without_needs_is_shown_after_the_steps_it_waits_for() {
    // `on_failure` needs nothing but waits for every plain step (as the run does): it is drawn at
    // the last level, after `publish`, not at level 0.
    let path = Path::new("tests/plans/valid/status-functions.yaml");
    let plan = aitbc_flow::plan::load(path, &options()).unwrap_or_else(|_| panic!("valid"));
    let level = |id: &str| plan.steps.iter().find(|s| s.id == id).unwrap().level;
    assert_eq!(level("build"), 0);
    assert_eq!(level("publish"), 1);
    assert_eq!(level("on_failure"), 2);
    let text = aitbc_flow::cli::dry_run::dry_run_text(&plan);
    let at = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("no `{s}` in:\n{text}"))
    };
    assert!(text.starts_with("plan `status-functions`"), "{text}");
    assert!(text.contains("4 steps in 3 levels"), "{text}");
    assert!(at("level 2") < at("  on_failure  [balance]"), "{text}");
    assert!(
        at("  publish  [balance]") < at("  on_failure  [balance]"),
        "{text}"
    );
    let json = dry_run(path, &options());
    let step = |id: &str| {
        json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(step("on_failure")["level"], 2);
    assert_eq!(json["levels"], 3);
}

#[test]
fn examples_dry_run_within_the_dev_grant() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("plans/ exists") {
        let path = relative(&entry.expect("a directory entry").path());
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let v = dry_run(&path, &LoadOptions::default());
        let per_wallet = v["spend"]["per_wallet"].as_object().expect("per_wallet");
        for (wallet, amount) in per_wallet {
            let amount = amount.as_f64().expect("a number");
            assert!(
                amount <= 10_000.0,
                "{}: {wallet} spends {amount}, more than the 10,000 AITBC dev grant",
                path.display()
            );
        }
        assert!(
            v["spend"]["known_at_run_time"]
                .as_array()
                .is_some_and(Vec::is_empty)
        );
        n += 1;
    }
    assert!(n >= 4, "expected at least four example plans, found {n}");
}

#[test]
fn set_and_vars_override_plan_vars() {
    let plan = Path::new("tests/plans/valid/overrides.yaml");
    let request = |o: &LoadOptions| dry_run(plan, o)["steps"][0]["request"].clone();

    let base = request(&options());
    assert_eq!(base["wallet"], "dev-wallet");
    assert_eq!(base["payment"], 3);

    // --vars merges mappings deeply: `limits.tone` survives.
    let o = LoadOptions {
        vars_files: vec![PathBuf::from("tests/plans/vars/overrides.yaml")],
        ..options()
    };
    let r = request(&o);
    assert_eq!(r["wallet"], "staging-wallet");
    assert_eq!(
        r["prompt"],
        "In at most 50 words and a neutral tone, describe a solar lantern."
    );

    // --set comes after --vars; values are YAML scalars; dotted keys set nested values.
    let o = LoadOptions {
        vars_files: vec![PathBuf::from("tests/plans/vars/overrides.yaml")],
        set: vec![
            ("wallet".into(), "prod-wallet".into()),
            ("payment".into(), "7.5".into()),
            ("limits.tone".into(), "warm".into()),
        ],
        ..options()
    };
    let r = request(&o);
    assert_eq!(r["wallet"], "prod-wallet");
    assert_eq!(r["payment"], 7.5);
    assert_eq!(
        r["prompt"],
        "In at most 50 words and a warm tone, describe a solar lantern."
    );
    let v = dry_run(plan, &o);
    assert_eq!(v["spend"]["per_wallet"]["prod-wallet"], 7.5);

    // An override that breaks the policy is a load error like any other.
    let o = LoadOptions {
        set: vec![("payment".into(), "0.5".into())],
        ..options()
    };
    let errs = dry_run_json(plan, &o).expect_err("below the minimum");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .message
            .contains("payment 0.5 is below the minimum of 1 AITBC"),
        "{}",
        errs[0]
    );
    assert_eq!(errs[0].location.as_ref().map(|l| l.line), Some(14));

    // A missing vars file is reported, not a panic.
    let o = LoadOptions {
        vars_files: vec![PathBuf::from("tests/plans/vars/nope.yaml")],
        ..options()
    };
    let errs = dry_run_json(plan, &o).expect_err("missing vars file");
    assert!(
        errs[0].message.contains("cannot read the vars file"),
        "{}",
        errs[0]
    );
}

#[test]
fn graphs() {
    let plan = aitbc_flow::plan::load(Path::new("tests/plans/valid/matrix.yaml"), &options())
        .expect("valid");
    insta::assert_snapshot!("matrix_mermaid", aitbc_flow::plan::graph::to_mermaid(&plan));
    insta::assert_snapshot!("matrix_dot", aitbc_flow::plan::graph::to_dot(&plan));
    // A sub-plan's group is drawn around its steps.
    let plan = aitbc_flow::plan::load(Path::new("tests/plans/valid/subplans.yaml"), &options())
        .expect("valid");
    insta::assert_snapshot!(
        "subplans_mermaid",
        aitbc_flow::plan::graph::to_mermaid(&plan)
    );
    insta::assert_snapshot!("subplans_dot", aitbc_flow::plan::graph::to_dot(&plan));
}

#[test]
fn the_binary_prints_the_dry_run_and_the_graph() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("the binary runs")
    };
    let out = run(&[
        "plan",
        "plans/feedback-analysis.yaml",
        "--set",
        "wallet=ops",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ops: 504 AITBC"), "{stdout}");
    assert!(
        stdout.contains("summarize[tone=casual]  [job]  after results"),
        "{stdout}"
    );

    let out = run(&["plan", "plans/feedback-analysis.yaml", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["spend"]["per_wallet"]["trading-wallet"], 504);

    let out = run(&["graph", "plans/feedback-analysis.yaml", "--format", "dot"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"analyze\" -> \"done\";"));

    let out = run(&["plan", "tests/plans/invalid/cycle.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the steps form a cycle"));
}
