//! What a run leaves behind and how it looks on a terminal, end to end: summary.md (output previews,
//! advice only where it applies, a refused run's table), junit.xml (fail-fast cancellations skipped
//! with their reason, failure messages, errors counted), events.jsonl against its schema, the closing
//! line and `resume with:`, the live view on a pseudo-terminal (job ids, spend, waiting steps, issues
//! as they happen), colours (NO_COLOR, CLICOLOR_FORCE, TERM=dumb, --progress), and the `runs`, `graph
//! --run`, `completions` and `man` commands.

mod support;

#[path = "support/pty.rs"]
mod pty;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// A `run` of the embedded coordinator with instant workers, the JSON report on stdout.
fn embedded(dir: &PlanDir, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(run_args(&dir.plan(), &dir.runs()))
        .args(["--embedded-latency", "instant"])
        .args(extra)
        .env_remove("AITBC_COORDINATOR_URL")
        .env_remove("AITBC_TOKEN");
    output_within(cmd, LIMIT)
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The attribute `name` of the first element `tag` in an XML text.
fn attr(xml: &str, tag: &str, name: &str) -> String {
    let start = xml
        .find(&format!("<{tag} "))
        .unwrap_or_else(|| panic!("no <{tag}>"));
    let elem = &xml[start..xml[start..].find('>').unwrap() + start];
    let key = format!(" {name}=\"");
    let at = elem
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {elem}"))
        + key.len();
    elem[at..at + elem[at..].find('"').unwrap()].to_string()
}

/// The `<testcase>` element of step `id`, with what it holds.
fn case<'a>(xml: &'a str, id: &str) -> &'a str {
    let start = xml
        .find(&format!("<testcase name=\"{id}\""))
        .unwrap_or_else(|| panic!("no testcase {id}"));
    let rest = &xml[start..];
    let end = rest[1..]
        .find("<testcase ")
        .map(|e| e + 1)
        .or_else(|| rest.find("</testsuite>"))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn summary_gives_advice_only_where_it_applies_and_shows_outputs() {
    let dir = PlanDir::new(
        r#"
version: 1
name: advice
steps:
  - id: hello
    job: {job_type: inference, wallet: w, payment: 2, prompt: "Say hello to the report"}
  - id: retried
    continue_on_error: true
    retry: {max_attempts: 2, on: [job_failed], initial: 10ms, max: 20ms}
    job: {job_type: inference, wallet: w, payment: 2, prompt: "FAIL_RESULT please"}
  - id: plain
    continue_on_error: true
    job: {job_type: inference, wallet: w, payment: 2, prompt: "FAIL_RESULT please"}
  - id: slow
    submit: {job_type: inference, wallet: w, payment: 2, prompt: "HANG until cancelled"}
  - id: hold
    continue_on_error: true
    wait: {job: "${{ steps.slow.job_id }}", timeout: 1s}
"#,
    );
    let out = embedded(&dir, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = read(&dir.run_dir(), "summary.md");
    let notes = |id: &str| -> String {
        summary
            .split(&format!("### {id}\n"))
            .nth(1)
            .map(|s| s.split("\n### ").next().unwrap_or(s).to_string())
            .unwrap_or_default()
    };
    // A step that resubmits failed jobs is not told to; one that does not, is.
    assert!(!notes("retried").contains("retry.on"), "{summary}");
    assert!(
        notes("plain").contains("add `retry.on: [job_failed]`"),
        "{summary}"
    );
    // A 2-AITBC job is never said to wait for a bonded provider; a job the run followed to its end
    // is not to be monitored or fetched by hand.
    assert!(!summary.contains("bonded"), "{summary}");
    assert!(!summary.contains("Monitor progress"), "{summary}");
    assert!(!summary.contains("`aitbc-flow job results"), "{summary}");
    // The output of each step that has one, in the steps table.
    let hello = summary
        .lines()
        .find(|l| l.starts_with("| hello |"))
        .unwrap();
    assert!(hello.contains("Say hello to the report"), "{hello}");
    assert!(summary.contains("| summary | output |"), "{summary}");
}

#[test]
fn a_refused_run_says_the_same_in_its_header_its_table_and_its_junit() {
    let runs = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.current_dir(root())
        .args(run_args(
            &root().join("plans/feedback-analysis.yaml"),
            runs.path(),
        ))
        .args([
            "--embedded-latency",
            "instant",
            "--fund",
            "trading-wallet=100",
            "--no-faucet",
        ])
        .env_remove("AITBC_COORDINATOR_URL");
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "refused");
    let run_dir = runs.path().join(report["run_id"].as_str().unwrap());
    let summary = read(&run_dir, "summary.md");
    assert!(
        summary.contains("0 succeeded, 0 failed, 0 skipped, 6 cancelled"),
        "{summary}"
    );
    let rows: Vec<&str> = summary
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| step") && !l.starts_with("| wallet"))
        .collect();
    assert_eq!(rows.len(), 6, "{summary}");
    for r in &rows {
        assert!(r.contains("| cancelled |"), "{r}");
        assert!(r.contains("refused before any submission"), "{r}");
    }
    assert!(!summary.contains("pending"), "{summary}");
    for s in report["steps"].as_array().unwrap() {
        assert_eq!(s["state"], "cancelled");
    }
    let junit = read(&run_dir, "junit.xml");
    assert_eq!(attr(&junit, "testsuite", "failures"), "6");
    assert_eq!(attr(&junit, "testsuite", "errors"), "0");
    assert_eq!(junit.matches("<failure message=\"").count(), 6);
    assert!(!junit.contains("message=\"\""), "{junit}");
    assert!(
        junit.contains("the plan needs 504: 404 short"),
        "the failure carries the refusal's reason: {junit}"
    );
}

#[test]
fn junit_skips_what_fail_fast_cancelled_with_the_reason() {
    let dir = PlanDir::new(
        r#"
version: 1
name: failfast
steps:
  - id: bad
    job: {job_type: inference, wallet: w, payment: 1, prompt: "FAIL please"}
  - id: slow
    job: {job_type: inference, wallet: w, payment: 1, prompt: "HANG until cancelled"}
  - id: later
    needs: [bad]
    balance: {wallet: w}
  - id: x
    balance: {wallet: w}
  - id: y
    balance: {wallet: w}
"#,
    );
    let out = embedded(&dir, &["--concurrency", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = |id: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state("bad"), "failed");
    assert_eq!(state("slow"), "cancelled");
    assert_eq!(state("x"), "cancelled");
    let junit = read(&dir.run_dir(), "junit.xml");
    // One real failure is one red test; the others are skipped, each saying why.
    assert_eq!(attr(&junit, "testsuite", "tests"), "5");
    assert_eq!(attr(&junit, "testsuite", "failures"), "1", "{junit}");
    assert_eq!(attr(&junit, "testsuite", "errors"), "0", "{junit}");
    assert_eq!(attr(&junit, "testsuite", "skipped"), "4", "{junit}");
    assert_eq!(attr(&junit, "testsuites", "failures"), "1");
    assert!(
        case(&junit, "bad").contains("<failure message=\""),
        "{junit}"
    );
    assert!(
        case(&junit, "bad").contains("ended FAILED"),
        "{}",
        case(&junit, "bad")
    );
    for id in ["slow", "x", "y"] {
        let c = case(&junit, id);
        assert!(c.contains("<skipped message=\""), "{c}");
        assert!(
            c.contains("step `bad` failed and the run stops at the first failure"),
            "{c}"
        );
    }
    assert!(case(&junit, "later").contains("needs `bad`"), "{junit}");
}

/// Waits until the run's events say a job was submitted.
fn wait_for_submission(runs: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let submitted = std::fs::read_dir(runs).ok().is_some_and(|rd| {
            rd.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("events.jsonl"))
                    .is_ok_and(|t| t.contains("\"job_submitted\""))
            })
        });
        if submitted {
            return;
        }
        assert!(Instant::now() < deadline, "no job was submitted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_interrupted_run_counts_its_cancelled_steps_and_says_how_to_resume() {
    let dir = PlanDir::new(
        r#"
version: 1
name: stopped
steps:
  - id: long
    timeout: 10m
    job: {job_type: training, wallet: w, payment: 10, prompt: "HANG forever"}
  - id: next
    balance: {wallet: w}
"#,
    );
    let mut cmd = Command::new(bin());
    cmd.args([
        "run",
        dir.plan().to_str().unwrap(),
        "--runs-dir",
        dir.runs().to_str().unwrap(),
        "--embedded-latency",
        "instant",
        "--concurrency",
        "1",
        "--poll-start",
        "20ms",
        "--poll-max",
        "100ms",
    ])
    .env_remove("AITBC_COORDINATOR_URL")
    .env("NO_COLOR", "1")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    wait_for_submission(&dir.runs());
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the run did not stop")
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run_id = dir
        .run_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(
        stdout.contains(&format!(
            "run {run_id} interrupted (0 succeeded, 0 failed, 0 skipped, 2 cancelled, 1 jobs)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "resume with: aitbc-flow resume {run_id} --runs-dir {}",
            dir.runs().display()
        )),
        "{stdout}"
    );
    // The steps an interrupted run stopped are errors, not failures, in junit.xml.
    let junit = read(&dir.run_dir(), "junit.xml");
    assert_eq!(attr(&junit, "testsuite", "errors"), "2", "{junit}");
    assert_eq!(attr(&junit, "testsuite", "failures"), "0", "{junit}");
    assert!(
        case(&junit, "long").contains("the run was interrupted"),
        "{junit}"
    );
}

#[test]
fn a_run_that_succeeds_prints_no_resume_hint_and_counts_every_state() {
    let dir = PlanDir::new(
        "version: 1\nname: fine\nsteps:\n  - id: a\n    balance: {wallet: w}\n  - id: b\n    when: false\n    balance: {wallet: w}\n",
    );
    let mut cmd = Command::new(bin());
    cmd.args([
        "run",
        dir.plan().to_str().unwrap(),
        "--runs-dir",
        dir.runs().to_str().unwrap(),
        "--embedded-latency",
        "instant",
    ])
    .env_remove("AITBC_COORDINATOR_URL")
    .env_remove("CLICOLOR_FORCE");
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("succeeded (1 succeeded, 0 failed, 1 skipped, 0 cancelled, 0 jobs)"),
        "{stdout}"
    );
    assert!(!stdout.contains("resume with"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "no colour into a pipe: {stdout:?}"
    );
}

#[test]
fn every_line_of_events_jsonl_matches_the_events_schema() {
    let dir = PlanDir::new(
        r#"
version: 1
name: evented
steps:
  - id: a
    job: {job_type: inference, wallet: w, payment: 2, prompt: "hello"}
  - id: b
    continue_on_error: true
    job: {job_type: inference, wallet: w, payment: 1, prompt: "FAIL please"}
  - id: c
    when: false
    balance: {wallet: w}
"#,
    );
    let out = embedded(&dir, &[]);
    assert_eq!(out.status.code(), Some(0));
    let schema: Value = serde_json::from_str(&read(&root(), "schemas/events.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the events schema compiles");
    let text = read(&dir.run_dir(), "events.jsonl");
    let mut kinds = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "line {}: {errors:?}\n{line}", n + 1);
        kinds.insert(v["event"].as_str().unwrap().to_string());
    }
    for k in [
        "run_started",
        "step_started",
        "job_submitted",
        "step_finished",
        "run_finished",
    ] {
        assert!(kinds.contains(k), "{kinds:?}");
    }
    // docs/events.md names every event the schema has.
    let doc = read(&root(), "docs/events.md");
    for variant in schema["oneOf"].as_array().unwrap() {
        let name = variant["properties"]["event"]["const"].as_str().unwrap();
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/events.md lacks {name}"
        );
    }
}

const LIVE: &str = r#"
version: 1
name: live
steps:
  - id: size
    optimize:
      agent_id: agent-1
      cpu: 16
      memory: 64
      gpu: 2
      duration: 1h
      task_type: training
      target: cost
      wallet: w
  - id: train-a-model-with-a-rather-long-step-id-so-that-the-live-view-must-cut-its-line
    needs: [size]
    job: {job_type: training, wallet: w, payment: 10, prompt: "Train a little"}
  - id: after
    needs: [train-a-model-with-a-rather-long-step-id-so-that-the-live-view-must-cut-its-line]
    balance: {wallet: w}
"#;

fn live_command(dir: &PlanDir, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args([
        "run",
        dir.plan().to_str().unwrap(),
        "--runs-dir",
        dir.runs().to_str().unwrap(),
        "--poll-start",
        "20ms",
        "--poll-max",
        "100ms",
    ])
    .args(extra)
    .env_remove("AITBC_COORDINATOR_URL")
    .env_remove("NO_COLOR")
    .env_remove("CLICOLOR_FORCE")
    .env_remove("CLICOLOR")
    .env("TERM", "xterm-256color");
    cmd
}

#[test]
fn the_live_view_shows_jobs_spend_waiting_steps_and_issues_in_colour() {
    let dir = PlanDir::new(LIVE);
    // The default (realistic) worker latency: the training job runs for 2 s, long enough to be seen.
    let out = pty::run(live_command(&dir, &[]), b"", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.screen);
    let s = &out.screen;
    let report: Value = serde_json::from_str(&read(&dir.run_dir(), "report.json")).unwrap();
    let job = report["steps"][1]["job_id"].as_str().unwrap();
    // The running step's line names its job (its long id cut to leave room); the total line counts
    // waiting steps and the spend.
    let running = s
        .split(['\n', '\r'])
        .map(visible)
        .find(|l| l.starts_with("  ⏳ train-a-model") && l.contains("running"))
        .unwrap_or_else(|| panic!("no line for the running step: {s}"));
    assert!(running.contains(&format!("job {}", &job[..8])), "{running}");
    assert!(running.contains('…'), "{running}");
    assert!(s.contains("1 running, 1 waiting"), "{s}");
    assert!(s.contains("10 AITBC paid"), "{s}");
    // Redrawn in place, with colours.
    assert!(s.contains("\x1b[J"), "{s:?}");
    assert!(s.contains("\x1b[32m✓\x1b[0m"), "{s:?}");
    // The optimize step's issue shows when the step finishes.
    assert!(s.contains("size: asked for 16 cpu cores, granted 8"), "{s}");
    // The closing line on stdout, the status in colour.
    assert!(s.contains("\x1b[32msucceeded\x1b[0m ("), "{s:?}");
    // The lines redrawn in place never wrap on the terminal's 80 columns (its own width, not a default).
    for line in s.split(['\n', '\r']).map(visible) {
        if line.starts_with("  ⏳") || line.contains(" steps done, ") {
            assert!(line.chars().count() < 80, "{line}");
        }
    }
}

/// `s` without its escape codes (`ESC [ … letter`).
fn visible(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `s` holds a colour code (an SGR escape: `ESC [ … m`).
fn has_colour(s: &str) -> bool {
    s.split('\x1b').skip(1).any(|rest| {
        rest.strip_prefix('[').is_some_and(|r| {
            let code: String = r
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ';')
                .collect();
            r[code.len()..].starts_with('m')
        })
    })
}

#[test]
fn no_color_and_a_dumb_terminal_get_no_escape_codes() {
    let dir = PlanDir::new(LIVE);
    let mut cmd = live_command(&dir, &["--embedded-latency", "instant"]);
    cmd.env("NO_COLOR", "1");
    let out = pty::run(cmd, b"", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.screen);
    assert!(!has_colour(&out.screen), "NO_COLOR: {:?}", out.screen);
    assert!(
        out.screen.contains("\x1b[J"),
        "still the live view: {:?}",
        out.screen
    );
    // A dumb terminal: one line per event, no colour, no cursor movement.
    let mut cmd = live_command(&dir, &["--embedded-latency", "instant"]);
    cmd.env("TERM", "dumb");
    let out = pty::run(cmd, b"", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.screen);
    assert!(!out.screen.contains('\x1b'), "TERM=dumb: {:?}", out.screen);
    assert!(
        out.screen.contains("▶ train"),
        "plain lines: {}",
        out.screen
    );
    // --progress plain on a terminal: colours, but no cursor codes.
    let out = pty::run(
        live_command(
            &dir,
            &["--embedded-latency", "instant", "--progress", "plain"],
        ),
        b"",
        LIMIT,
    );
    assert!(!out.screen.contains("\x1b[J"), "{:?}", out.screen);
    assert!(out.screen.contains("\x1b[32m✓"), "{:?}", out.screen);
    // --progress none: nothing but the closing line.
    let out = pty::run(
        live_command(
            &dir,
            &["--embedded-latency", "instant", "--progress", "none"],
        ),
        b"",
        LIMIT,
    );
    assert!(
        !out.screen.contains("▶") && !out.screen.contains("⏳"),
        "{}",
        out.screen
    );
    assert!(out.screen.contains("report in"), "{}", out.screen);
}

#[test]
fn clicolor_force_colours_a_pipe_and_progress_tty_redraws_into_one() {
    let dir = PlanDir::new(LIVE);
    let mut cmd = live_command(&dir, &["--embedded-latency", "instant"]);
    cmd.env("CLICOLOR_FORCE", "1");
    let out = output_within(cmd, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("\x1b[32m✓\x1b[0m"), "{stderr:?}");
    assert!(
        !stderr.contains("\x1b[J"),
        "a pipe is not redrawn: {stderr:?}"
    );
    assert!(stdout.contains("\x1b[32msucceeded"), "{stdout:?}");
    // NO_COLOR wins over CLICOLOR_FORCE.
    let mut cmd = live_command(&dir, &["--embedded-latency", "instant"]);
    cmd.env("CLICOLOR_FORCE", "1").env("NO_COLOR", "1");
    let out = output_within(cmd, LIMIT);
    assert!(!has_colour(&String::from_utf8_lossy(&out.stderr)));
    // --progress tty draws the live view even into a pipe.
    let out = output_within(
        live_command(
            &dir,
            &["--embedded-latency", "instant", "--progress", "tty"],
        ),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\x1b[J") && stderr.contains("⏳"),
        "{stderr:?}"
    );
    // Errors are coloured where colours are wanted.
    let bad = PlanDir::new("version: 1\nname: x\nsteps:\n  - id: a\n    balanse: {}\n");
    let mut cmd = Command::new(bin());
    cmd.args(["validate", bad.plan().to_str().unwrap()])
        .env("CLICOLOR_FORCE", "1")
        .env_remove("NO_COLOR");
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("\x1b[1;31merror[AF0008]:\x1b[0m"),
        "{stderr:?}"
    );
}

fn runs_cmd(args: &[&str], runs: &Path) -> std::process::Output {
    let mut c = Command::new(bin());
    c.arg("runs")
        .args(args)
        .args(["--runs-dir", runs.to_str().unwrap()])
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE");
    output_within(c, LIMIT)
}

#[test]
fn runs_list_show_open_and_prune_for_people() {
    let dir = PlanDir::new(
        "version: 1\nname: hist\nsteps:\n  - id: a\n    job: {job_type: inference, wallet: w, payment: 2, prompt: \"a short answer\"}\n",
    );
    assert_eq!(embedded(&dir, &[]).status.code(), Some(0));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(embedded(&dir, &[]).status.code(), Some(0));
    let runs = dir.runs();
    let ids: Vec<String> = {
        let out = runs_cmd(&["list", "--output", "json"], &runs);
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids.len(), 2);

    // A header, then one row per run.
    let out = runs_cmd(&["list"], &runs);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for h in ["RUN", "PLAN", "STATUS", "JOBS", "FAILED", "STARTED"] {
        assert!(lines[0].contains(h), "{text}");
    }
    assert!(lines[1].starts_with(&ids[0]), "{text}");

    // `latest`, for the terminal, with the output's preview; --html names report.html.
    let out = runs_cmd(&["show", "latest"], &runs);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("Run {} of hist", ids[0])),
        "{text}"
    );
    assert!(text.contains("a short answer"), "{text}");
    let out = runs_cmd(&["show", &ids[1], "--html"], &runs);
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(path.ends_with(&format!("{}/report.html", ids[1])), "{path}");
    assert!(Path::new(&path).is_file());
    // A run without report.html (an older one) gets it written from report.json.
    std::fs::remove_file(&path).unwrap();
    let out = runs_cmd(&["show", &ids[1], "--html"], &runs);
    assert_eq!(out.status.code(), Some(0));
    assert!(Path::new(&path).is_file());

    // `runs open` hands report.html to $BROWSER.
    let seen = dir.dir.path().join("opened.txt");
    let script = dir.dir.path().join("browser.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1\" > {}\n", seen.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut c = Command::new(bin());
    c.args([
        "runs",
        "open",
        "latest",
        "--runs-dir",
        runs.to_str().unwrap(),
    ])
    .env("BROWSER", &script);
    let out = output_within(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        read(dir.dir.path(), "opened.txt")
            .trim()
            .ends_with(&format!("{}/report.html", ids[0]))
    );

    // --dry-run removes nothing and says what it would.
    let out = runs_cmd(&["prune", "--keep", "0", "--dry-run"], &runs);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("would remove {}", ids[1])), "{text}");
    assert!(text.contains("would remove 2 runs"), "{text}");
    assert_eq!(history_len(&runs), 2);

    // On a terminal, removing every run is asked about; "n" keeps them, "y" removes them.
    let prune = || {
        let mut c = Command::new(bin());
        c.args([
            "runs",
            "prune",
            "--keep",
            "0",
            "--runs-dir",
            runs.to_str().unwrap(),
        ])
        .env("NO_COLOR", "1");
        c
    };
    let out = pty::run(prune(), b"n\n", LIMIT);
    assert!(
        out.screen.contains("remove all 2 runs in"),
        "{}",
        out.screen
    );
    assert!(out.screen.contains("nothing removed"), "{}", out.screen);
    assert_eq!(history_len(&runs), 2);
    let out = pty::run(prune(), b"y\n", LIMIT);
    assert!(out.screen.contains("removed 2 runs"), "{}", out.screen);
    assert_eq!(history_len(&runs), 0);
}

fn history_len(runs: &Path) -> usize {
    aitbc_flow::report::history::list_runs(runs).unwrap().len()
}

#[test]
fn graph_run_colours_the_graph_by_the_runs_states() {
    let dir = PlanDir::new(
        r#"
version: 1
name: coloured
steps:
  - id: a
    balance: {wallet: w}
  - id: bad
    needs: [a]
    continue_on_error: true
    job: {job_type: inference, wallet: w, payment: 1, prompt: "FAIL please"}
  - id: off
    when: false
    needs: [a]
    balance: {wallet: w}
"#,
    );
    assert_eq!(embedded(&dir, &[]).status.code(), Some(0));
    let graph = |args: &[&str]| {
        let mut c = Command::new(bin());
        c.arg("graph")
            .args(args)
            .args(["--runs-dir", dir.runs().to_str().unwrap()]);
        let out = output_within(c, LIMIT);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let plan = dir.plan();
    let m = graph(&[plan.to_str().unwrap(), "--run", "latest"]);
    assert!(m.contains("s0 --> s1"), "{m}");
    assert!(m.contains("classDef succeeded fill:#1a7f37"), "{m}");
    assert!(m.contains("class s0 succeeded"), "{m}");
    assert!(m.contains("class s1 failed"), "{m}");
    assert!(m.contains("class s2 skipped"), "{m}");
    // Without the plan: the run's own graph, from its report.
    assert_eq!(graph(&["--run", "latest"]), m);
    let d = graph(&["--run", "latest", "--format", "dot"]);
    assert!(
        d.contains("\"bad\" [label=\"bad\\njob\", style=filled, fillcolor=\"#cf222e\""),
        "{d}"
    );
    assert!(d.contains("\"a\" -> \"bad\";"), "{d}");
    // Without --run, nothing is coloured.
    assert!(!graph(&[plan.to_str().unwrap()]).contains("classDef"));
}

#[test]
fn completions_and_man_pages() {
    for (shell, mark) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef aitbc-flow"),
        ("fish", "complete -c aitbc-flow"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let mut c = Command::new(bin());
        c.args(["completions", shell]);
        let out = output_within(c, LIMIT);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(mark),
            "{shell}: {}",
            &text[..text.len().min(300)]
        );
        assert!(text.contains("resume"), "{shell} completes the subcommands");
    }
    let mut c = Command::new(bin());
    c.arg("man");
    let out = output_within(c, LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(".ie") || text.contains(".TH aitbc-flow"),
        "{}",
        &text[..200]
    );
    assert!(text.contains("completions"), "the page lists the commands");
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin());
    c.args(["man", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(output_within(c, LIMIT).status.code(), Some(0));
    for page in ["aitbc-flow.1", "aitbc-flow-run.1", "aitbc-flow-runs-show.1"] {
        assert!(dir.path().join(page).is_file(), "{page}");
    }
}

#[test]
fn job_submit_on_the_embedded_coordinator_does_not_point_at_a_job_that_is_gone() {
    let mut c = Command::new(bin());
    c.args([
        "job",
        "submit",
        "--type",
        "inference",
        "--prompt",
        "hello",
        "--payment",
        "1",
        "--wallet",
        "w",
        "--output",
        "json",
    ])
    .env_remove("AITBC_COORDINATOR_URL")
    .env_remove("AITBC_TOKEN");
    let out = output_within(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let recs = v["recommendations"].to_string();
    assert!(!recs.contains("job status"), "{recs}");
    assert!(!recs.contains("job results"), "{recs}");
    assert!(recs.contains("--wait"), "{recs}");
    assert!(recs.contains("coordinator serve"), "{recs}");
}

#[test]
fn the_readme_plan_is_a_plan_that_validates() {
    let readme = read(&root(), "README.md");
    let block = readme
        .split("## A plan")
        .nth(1)
        .and_then(|s| s.split("```yaml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README has a plan");
    // The plan sits beside the repository's prompts, as plans/feedback-analysis.yaml does.
    let dir = tempfile::tempdir().unwrap();
    let plans = dir.path().join("plans");
    std::fs::create_dir_all(plans.join("prompts")).unwrap();
    for e in std::fs::read_dir(root().join("plans/prompts"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), plans.join("prompts").join(e.file_name())).unwrap();
    }
    std::fs::write(plans.join("readme.yaml"), block).unwrap();
    let mut c = Command::new(bin());
    c.args(["validate", plans.join("readme.yaml").to_str().unwrap()]);
    let out = output_within(c, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
