//! Pacing shared across processes, end to end: `run` processes against one `coordinator serve` with
//! its rate limits on (scaled down: a window of 3 s). Each process alone would take the whole limit;
//! together they stay within it — no 429 — and so need the least time the limits allow for the jobs of
//! all (`limits::RateLimits::least_time_for_jobs`): two run folders of one user (one pacing folder),
//! and three run folders of one PostgreSQL store (three hosts behind one address). Two pacing folders
//! do not share their windows, and collect 429s, which shows that the check can fail.

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use aitbc_flow::limits::RateLimits;
use support::{PlanDir, Serve, run_args};

const SPEC: &str = "submit=10,read=40,cancel=10,allocate=4,login=4,window=3s";

fn plan(jobs: usize) -> String {
    let mut s = format!("version: 1\nname: paced\ndefaults:\n  concurrency: {jobs}\nsteps:\n");
    for i in 0..jobs {
        s.push_str(&format!(
            "  - id: s{i}\n    job: {{job_type: inference, wallet: w, payment: 1, prompt: \"prompt {i}\"}}\n"
        ));
    }
    s
}

/// One `run` process of the plan: its run folder, its extra flags, and its own pacing folder when
/// it is not the one of the coordinator's runs (another user's).
struct Launch {
    runs: std::path::PathBuf,
    args: Vec<String>,
    pacing: Option<std::path::PathBuf>,
}

impl Launch {
    fn into(runs: &std::path::Path) -> Launch {
        Launch {
            runs: runs.to_path_buf(),
            args: Vec::new(),
            pacing: None,
        }
    }
}

/// Runs of 15 jobs each, started together; their exit codes and how long all took.
fn runs_together(
    serve: &Serve,
    dir: &PlanDir,
    launches: &[Launch],
) -> (Vec<Option<i32>>, Duration) {
    let started = Instant::now();
    let children: Vec<_> = launches
        .iter()
        .map(|l| {
            let mut cmd = serve.command();
            cmd.args(run_args(&dir.plan(), &l.runs))
                .args(&l.args)
                .env("AITBC_RATE_LIMIT", SPEC)
                .envs(l.pacing.iter().map(|p| ("AITBC_FLOW_PACING_DIR", p)))
                .env_remove("AITBC_FLOW_STORE")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut codes = Vec::new();
    for c in children {
        let pid = c.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(c.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(out) => {
                let out = out.unwrap();
                if out.status.code() != Some(0) {
                    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                }
                codes.push(out.status.code());
            }
            Err(_) => {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
                panic!("a run did not finish within 120 s");
            }
        }
    }
    (codes, started.elapsed())
}

/// What the coordinator saw of `jobs` jobs paced together: every submit admitted, none refused
/// (Serve's drop checks the 429s too), no window above the limit, and at least the least time the
/// limits allow; prints the measurement.
fn assert_paced_together(serve: &Serve, jobs: u64, elapsed: Duration, what: &str) {
    let limits = serve.get("/v1/local/limits");
    assert_eq!(limits["refused"], 0, "{limits}");
    assert_eq!(limits["admitted"]["submit"], jobs, "{limits}");
    let most = limits["most_in_a_window"]["submit"].as_u64().unwrap();
    assert!(most <= 10, "{limits}");
    let t_min = RateLimits::parse(SPEC).unwrap().least_time_for_jobs(jobs);
    println!("{what}, {SPEC}: {elapsed:?} (T_min {t_min:?}), most submits in a window {most}");
    assert!(elapsed >= t_min, "{elapsed:?} < {t_min:?}");
}

#[test]
fn two_run_folders_of_one_user_share_the_rate_limit_and_get_no_429() {
    // One pacing folder (the user's), two run folders: the windows are the user's, not the folder's.
    let serve = Serve::start(&["--rate-limits", SPEC, "--workers", "256"]);
    let dir = PlanDir::new(&plan(15));
    let other = tempfile::tempdir().unwrap();
    let (codes, elapsed) = runs_together(
        &serve,
        &dir,
        &[Launch::into(&dir.runs()), Launch::into(other.path())],
    );
    assert_eq!(codes, vec![Some(0), Some(0)]);
    // Together, the least time the limits allow for 30 jobs (each alone would need 3 s for 15).
    assert_eq!(
        RateLimits::parse(SPEC).unwrap().least_time_for_jobs(30),
        Duration::from_secs(6)
    );
    assert_paced_together(&serve, 30, elapsed, "two run folders of 15 jobs, one user");
    // The folder is the user's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(
        serve
            .pacing
            .path()
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap()
    .permissions()
    .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

#[test]
fn two_pacing_folders_do_not_share_and_collect_429s() {
    // Two users of one host (or one address): their windows are not shared, and the limits refuse.
    let mut serve = Serve::start(&["--rate-limits", SPEC, "--workers", "256"]);
    serve.allow_refusals = true;
    let dir = PlanDir::new(&plan(15));
    let other = tempfile::tempdir().unwrap();
    let other_pacing = tempfile::tempdir().unwrap();
    let _ = runs_together(
        &serve,
        &dir,
        &[
            Launch::into(&dir.runs()),
            Launch {
                pacing: Some(other_pacing.path().to_path_buf()),
                ..Launch::into(other.path())
            },
        ],
    );
    assert!(serve.refused() > 0, "the limits refused nothing");
}

#[test]
fn three_hosts_of_one_database_share_the_rate_limit_and_get_no_429() {
    // Three run folders (three hosts behind one address), one PostgreSQL store: the windows are rows
    // in the database, so the three stay within the limits together.
    let Some(pg) = postgres::cluster() else {
        return;
    };
    let url = pg.url_of("pacing");
    let serve = Serve::start(&["--rate-limits", SPEC, "--workers", "256"]);
    let dir = PlanDir::new(&plan(15));
    let tmp = tempfile::tempdir().unwrap();
    let launches: Vec<Launch> = ["a", "b", "c"]
        .iter()
        .map(|host| Launch {
            args: vec!["--store".into(), url.clone()],
            // Each host has its own pacing folder: only the database is shared.
            pacing: Some(tmp.path().join(format!("pacing-{host}"))),
            ..Launch::into(&tmp.path().join(host))
        })
        .collect();
    let (codes, elapsed) = runs_together(&serve, &dir, &launches);
    assert_eq!(codes, vec![Some(0), Some(0), Some(0)]);
    assert_eq!(
        RateLimits::parse(SPEC).unwrap().least_time_for_jobs(45),
        Duration::from_secs(12)
    );
    assert_paced_together(&serve, 45, elapsed, "three hosts of 15 jobs, one database");
    // Every request of the three was a row of the shared window; all were answered.
    let in_flight = pg.psql_in(
        "pacing",
        "SELECT count(*) FROM aitbc_flow_pacing WHERE answered_at IS NULL",
    );
    assert_eq!(in_flight, "0");
    let rows = pg.psql_in("pacing", "SELECT count(*) FROM aitbc_flow_pacing");
    assert_ne!(rows, "0", "the last window's requests are rows");
}

#[test]
fn the_database_window_counts_answers_for_a_window_and_in_flight_requests_until_their_bound() {
    use aitbc_flow::client::pace::SharedWindow;
    use aitbc_flow::limits::Endpoint;
    use aitbc_flow::store::pacing_pg::PgPacing;
    let Some(pg) = postgres::cluster() else {
        return;
    };
    let url = pg.url_of("pacing_sql");
    let store = aitbc_flow::store::postgres::PgStore::connect(&url).unwrap();
    let a = PgPacing::new(&store, "http://c");
    let b = PgPacing::new(&store, "http://c");
    let (w, flight) = (Duration::from_millis(1000), Duration::from_millis(500));
    let ms = |d: Duration| d.as_millis();
    // Two places: two hosts take one each; the third waits for the first to count no more: its
    // bound, then a window (and the margin).
    let t1 = a.take_key("k", 2, w, flight).unwrap().unwrap();
    let t2 = b.take_key("k", 2, w, flight).unwrap().unwrap();
    assert_ne!(t1, t2);
    let wait = a.take_key("k", 2, w, flight).unwrap().unwrap_err();
    assert!(ms(wait) > 1400 && ms(wait) <= 1550, "{wait:?}");
    // Another key has its own window.
    assert!(a.take_key("other", 2, w, flight).unwrap().is_ok());
    // The first is answered at once: it counts one window from its answer, no longer until its bound.
    a.answered_ticket(t1).unwrap();
    let wait = a.take_key("k", 2, w, flight).unwrap().unwrap_err();
    assert!(ms(wait) > 950 && ms(wait) <= 1050, "{wait:?}");
    // Past that window, the answered one no longer counts; the one in flight still does (its bound
    // and a window are 1.55 s).
    std::thread::sleep(Duration::from_millis(1100));
    let t3 = a.take_key("k", 2, w, flight).unwrap().unwrap();
    assert!(a.take_key("k", 2, w, flight).unwrap().is_err());
    // Past its bound and a window, the request in flight (its host gone) no longer counts either.
    std::thread::sleep(Duration::from_millis(500));
    assert!(b.take_key("k", 2, w, flight).unwrap().is_ok());
    let rows = pg.psql_in(
        "pacing_sql",
        &format!("SELECT count(*) FROM aitbc_flow_pacing WHERE id IN ({t1}, {t2})"),
    );
    assert_eq!(rows, "0", "the rows that no longer count are deleted");
    // What a request costs: a take and an answer, 200 times, the window filling up to 200 rows.
    let started = Instant::now();
    for _ in 0..200 {
        let t = a
            .take_key("cost", 1000, Duration::from_secs(60), flight)
            .unwrap()
            .unwrap();
        a.answered_ticket(t).unwrap();
    }
    println!(
        "database pacing: take + answer {:?} per request (200, window of up to 200 rows)",
        started.elapsed() / 200
    );
    // Through the trait, as a run uses it: a database that is gone makes the run pace itself alone
    // (ticket 0) instead of failing or waiting.
    let c = PgPacing::new(&store, "http://c");
    assert!(c.take(Endpoint::Submit, 5, w).unwrap() > 0);
    pg.psql_in(
        "pacing_sql",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'aitbc-flow' AND datname = 'pacing_sql'",
    );
    std::thread::sleep(Duration::from_millis(200));
    let said = Said::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let said = said.clone();
            move || said.clone()
        })
        .with_ansi(false)
        .finish();
    let started = Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(c.take(Endpoint::Submit, 5, w), Ok(0));
        assert_eq!(c.take(Endpoint::Submit, 5, w), Ok(0));
        c.answered(Endpoint::Submit, 7);
    });
    assert!(started.elapsed() < Duration::from_secs(6));
    // One warning line, naming the store by its redacted URL.
    let text = String::from_utf8(said.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("this run paces itself alone, so the hosts together may exceed"),
        "{text}"
    );
    assert!(text.contains("postgres:***@127.0.0.1"), "{text}");
    assert!(!text.contains(postgres::PASSWORD), "{text}");
    let _ = t3;
}

/// What was logged, for the test that reads its warnings.
#[derive(Clone, Default)]
struct Said(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Said {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
