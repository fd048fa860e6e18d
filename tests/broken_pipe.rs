//! A closed stdout or stderr (`… | head -1`, `2>&1 | head`) ends output quietly: no panic (exit 101),
//! and a run goes on to the end with its report written.

mod support;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{bin, output_within, root};

/// The write end of a pipe whose read end is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two valid descriptors on success; we own both and close the read end.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe");
    // SAFETY: fds[0] and fds[1] were just returned by pipe(2) and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

#[test]
fn printing_into_a_closed_stdout_does_not_panic() {
    let runs = tempfile::tempdir().unwrap();
    for args in [
        vec!["schema", "plan"],
        vec!["schema", "report"],
        vec!["graph", "plans/feedback-analysis.yaml"],
        vec!["plan", "plans/feedback-analysis.yaml"],
        vec!["runs", "list", "--runs-dir", runs.path().to_str().unwrap()],
    ] {
        let mut cmd = Command::new(bin());
        cmd.current_dir(root())
            .args(&args)
            .stdout(closed_pipe())
            .stderr(Stdio::piped());
        let out = output_within(cmd, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_run_with_closed_stdout_and_stderr_and_debug_logs_completes() {
    let runs = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.current_dir(root())
        .args(["run", "plans/feedback-analysis.yaml", "--runs-dir"])
        .arg(runs.path())
        .env("RUST_LOG", "debug")
        .env_remove("AITBC_COORDINATOR_URL")
        .stdout(closed_pipe())
        .stderr(closed_pipe());
    let out = output_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0));
    let run = std::fs::read_dir(runs.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().join("report.json").is_file())
        .expect("a run directory with its report");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["totals"]["succeeded"], 6);
}
