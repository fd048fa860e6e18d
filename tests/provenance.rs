//! A run records where its plan came from: the commit of the git work tree the plan lives in, the
//! branch, and whether tracked files had changes — in report.json, summary.md and report.html, beside
//! the runner's version. Read from `.git` itself (the commit) and `git status` (dirtiness).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const PLAN: &str = "version: 1\nname: tracked\nsteps:\n  - id: a\n    balance: {wallet: w}\n";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn run(plan: &Path, runs: &Path) -> Value {
    let mut cmd = Command::new(bin());
    cmd.args(run_args(plan, runs))
        .args(["--embedded-latency", "instant"])
        .env_remove("AITBC_COORDINATOR_URL");
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_report_records_the_plans_commit_and_whether_the_tree_was_dirty() {
    if Command::new("git").arg("--version").output().is_err() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "skipped: the provenance test needs git");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    std::fs::create_dir_all(repo.join("plans")).unwrap();
    git(&repo, &["init", "-q"]);
    let plan = repo.join("plans/p.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    git(&repo, &["add", "plans/p.yaml"]);
    git(&repo, &["commit", "-q", "-m", "plan"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    // Packed refs, as after a `git gc`, are read too.
    git(&repo, &["pack-refs", "--all"]);
    let runs = t.path().join("runs");

    // Clean; an untracked file (say, a runs folder inside the repository) does not count.
    std::fs::write(repo.join("notes.txt"), "untracked").unwrap();
    let r = run(&plan, &runs);
    assert_eq!(
        r["plan_git"],
        serde_json::json!({"commit": head, "branch": "main", "dirty": false, "path": "plans/p.yaml"})
    );
    assert_eq!(r["runner_version"], env!("CARGO_PKG_VERSION"));
    let dir = runs.join(r["run_id"].as_str().unwrap());
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(
        summary.contains(&format!(
            "- Plan: plans/p.yaml at {} (main, clean)",
            &head[..12]
        )),
        "{summary}"
    );
    assert!(summary.contains(&format!("- aitbc-flow {}", env!("CARGO_PKG_VERSION"))));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains(&head[..12]), "report.html names the commit");

    // A tracked file changed: dirty.
    std::fs::write(&plan, format!("{PLAN}# edited\n")).unwrap();
    let r = run(&plan, &runs);
    assert_eq!(r["plan_git"]["dirty"], true);
    assert_eq!(r["plan_git"]["commit"], head.as_str());

    // Detached at the commit.
    git(&repo, &["checkout", "-q", "--", "plans/p.yaml"]);
    git(&repo, &["checkout", "-q", "--detach"]);
    let r = run(&plan, &runs);
    assert_eq!(r["plan_git"]["branch"], Value::Null);
    assert_eq!(r["plan_git"]["commit"], head.as_str());
    assert_eq!(r["plan_git"]["dirty"], false);

    // Outside any work tree: nothing recorded.
    let loose = t.path().join("loose.yaml");
    std::fs::write(&loose, PLAN).unwrap();
    let r = run(&loose, &runs);
    if !t.path().ancestors().any(|a| a.join(".git").exists()) {
        assert!(r.get("plan_git").is_none(), "{}", r["plan_git"]);
    }
}
