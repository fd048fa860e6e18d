//! A throwaway PostgreSQL cluster for the tests that need one (one per test binary, under a temp
//! dir, as a non-root user, 127.0.0.1 only), stopped when the binary exits. Without PostgreSQL
//! installed, [`cluster`] says so in one line and gives `None`, except under `CI=true`, where it fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const PASSWORD: &str = "pw-never-shown-4711";

/// A running cluster: its URL (with a password, which `trust` ignores), socket dir and port.
pub struct Cluster {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// The URL of another database of the cluster, created on first use.
    pub fn url_of(&self, db: &str) -> String {
        if self.psql(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{db}'"
        )) == "0"
        {
            self.psql(&format!("CREATE DATABASE {db}"));
        }
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Runs SQL through psql over the cluster's socket.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs SQL in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
pub static TLS_CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

/// The directory of `initdb`, `pg_ctl` and `psql` (the newest Debian `postgresql-N`).
pub fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// `cmd` as the user `nobody` when this process is root (PostgreSQL refuses to run as root).
pub fn as_owner(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

extern "C" fn stop_cluster() {
    for c in [CLUSTER.get(), TLS_CLUSTER.get()]
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = as_owner(&c.bin.join("pg_ctl"))
            .arg("-D")
            .arg(c.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

fn start_cluster() -> Option<Cluster> {
    start_cluster_with(|_| String::new())
}

/// Starts a cluster; `prepare` gets its folder once `initdb` made it and returns more server options.
pub fn start_cluster_with(prepare: impl FnOnce(&Path) -> String) -> Option<Cluster> {
    let Some(bin) = pg_bin() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no PostgreSQL under /usr/lib/postgresql: .ci/run installs it"
        );
        eprintln!("skipped: no PostgreSQL installed (apt-get install postgresql)");
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("aitbc-pg-")
        .tempdir()
        .unwrap()
        .keep();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ok = |c: &mut Command, what: &str| {
        let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(
        as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]),
        "initdb",
    );
    let more = prepare(&dir);
    ok(
        as_owner(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off{more}",
                dir.display()
            ))
            .args(["-w", "-t", "30", "start"]),
        "pg_ctl start",
    );
    static STOP_AT_EXIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain extern "C" function, run once at exit.
    STOP_AT_EXIT.call_once(|| unsafe {
        libc::atexit(stop_cluster);
    });
    Some(Cluster { bin, dir, port })
}

/// The cluster, started on first use; `None` (after one line) when PostgreSQL is not installed.
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER.get_or_init(start_cluster).as_ref()
}
