//! Plan fixtures: every file in `tests/plans/invalid/` is one mistake, and its snapshot is exactly what
//! `validate` prints for it. A new case is a new file.

use std::path::{Path, PathBuf};

use aitbc_flow::cli::plan_cmds::validate_to_text;

/// The fixture's path relative to the crate, so snapshots do not depend on where the checkout is.
fn relative(path: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

#[test]
fn invalid_plans() {
    insta::glob!("plans/invalid/*.yaml", |path| {
        let rel = relative(path);
        let (code, text) = validate_to_text(std::slice::from_ref(&rel));
        assert_eq!(code, 2, "{} should be invalid:\n{text}", rel.display());
        // An error inside a sub-plan is placed there, and names this plan in its note.
        assert!(
            text.contains(&format!("--> {}:", rel.display()))
                || text.contains(&format!("included from {}:", rel.display())),
            "{} has an error without a location:\n{text}",
            rel.display()
        );
        insta::assert_snapshot!(text);
    });
}

#[test]
fn example_plans_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut plans: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| relative(&p))
        .collect();
    plans.sort();
    for plan in plans {
        let (code, text) = validate_to_text(std::slice::from_ref(&plan));
        assert_eq!(code, 0, "{} should be valid:\n{text}", plan.display());
    }
}

#[test]
fn several_files_report_every_error() {
    let files = [
        PathBuf::from("tests/plans/invalid/unknown-step-key.yaml"),
        PathBuf::from("tests/plans/invalid/duplicate-key.yaml"),
        PathBuf::from("tests/plans/invalid/unknown-kind-key.yaml"),
    ];
    let (code, text) = validate_to_text(&files);
    assert_eq!(code, 2);
    assert!(
        text.ends_with("3 of 3 plans invalid (4 errors)\n"),
        "{text}"
    );
}

#[test]
fn the_binary_exits_2_with_the_message_on_stderr() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
        .args(["validate", "tests/plans/invalid/unknown-step-key.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error[AF0003]: unknown key `timout` in step `analyze`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `timeout`?"), "{stderr}");
    assert!(
        stderr.contains("--> tests/plans/invalid/unknown-step-key.yaml:5:5"),
        "{stderr}"
    );
}

#[test]
fn json_output_lists_the_diagnostics() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
        .args([
            "validate",
            "--output",
            "json",
            "tests/plans/invalid/bad-enum-backoff.yaml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], false);
    let d = &v["files"][0]["errors"][0];
    assert_eq!(d["field"], "defaults.retry.backoff");
    assert_eq!(d["location"]["line"], 4);
}

#[test]
fn the_committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/plan.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let current = serde_json::to_string_pretty(&aitbc_flow::plan::schema::plan_schema())
        .expect("the schema serializes")
        + "\n";
    assert!(
        committed == current,
        "schemas/plan.schema.json is stale; regenerate it with\n    \
         cargo run -- schema plan > schemas/plan.schema.json"
    );
}

#[test]
fn github_format_prints_one_annotation_per_diagnostic() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
        .args([
            "validate",
            "--format",
            "github",
            "tests/plans/invalid/many-mistakes.yaml",
            "tests/plans/invalid/unknown-step-key.yaml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with("::error file=") || l.starts_with("::warning file=")),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 of 2 plans invalid"), "{stderr}");
    insta::assert_snapshot!(stdout);
}

/// Every invalid fixture's diagnostics carry a code narrower than the fallback `AF0000`: a new kind of
/// error gets its row in `src/plan/codes.rs` (and docs/diagnostics.md).
#[test]
fn no_invalid_fixture_falls_back_to_the_catch_all_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/snapshots") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.starts_with("plan_fixtures__invalid_plans@") || !name.ends_with(".snap") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).expect("snapshot");
        assert!(
            !text.contains("[AF0000]"),
            "{name} shows the catch-all code"
        );
    }
    assert!(seen > 50, "only {seen} invalid-plan snapshots found");
}

/// One pass reports every mistake (schema, job types, templates, needs): `--output json` and
/// `--format github` list the same problems, at the same places, in the same order.
#[test]
fn every_format_lists_the_same_mistakes_in_one_pass() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
            .arg("validate")
            .args(args)
            .arg("tests/plans/invalid/many-mistakes.yaml")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("the binary runs");
        assert_eq!(out.status.code(), Some(2));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (_, text) = run(&[]);
    let from_text: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("--> tests/plans/invalid/many-mistakes.yaml:")
        })
        .map(|p| {
            let (l, c) = p.split_once(':').expect("line:col");
            (l.parse().unwrap(), c.parse().unwrap())
        })
        .collect();
    let (json, _) = run(&["--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON on stdout");
    let from_json: Vec<(u64, u64)> = v["files"][0]["errors"]
        .as_array()
        .expect("a list of errors")
        .iter()
        .map(|d| {
            (
                d["location"]["line"].as_u64().unwrap(),
                d["location"]["column"].as_u64().unwrap(),
            )
        })
        .collect();
    let (github, _) = run(&["--format", "github"]);
    let from_github: Vec<(u64, u64)> = github
        .lines()
        .map(|l| {
            let line = l.split("line=").nth(1).unwrap().split(',').next().unwrap();
            let col = l.split("col=").nth(1).unwrap().split(',').next().unwrap();
            (line.parse().unwrap(), col.parse().unwrap())
        })
        .collect();
    assert_eq!(from_text, from_json);
    assert_eq!(from_text, from_github);
    let mut sorted = from_text.clone();
    sorted.sort();
    assert_eq!(from_text, sorted, "sorted by position");
    for (what, line) in [
        ("unknown key `modle`", 15),
        ("`inferense` is not a valid `job_type`", 12),
        ("filter upperr is unknown", 16),
        ("unknown step `analyse`", 18),
        ("`5 minutes` is not a duration", 19),
    ] {
        assert!(text.contains(what), "{what} missing:\n{text}");
        assert!(
            from_text.iter().any(|(l, _)| *l == line),
            "nothing on line {line}"
        );
    }
}
