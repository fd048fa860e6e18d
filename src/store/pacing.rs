//! The pacing windows of a remote coordinator shared by the runs of one user on one host: one file
//! per coordinator and endpoint in the user's pacing folder ([`user_dir`]), read and rewritten under
//! its `flock`, holding the requests of the last window of every process
//! (`client::pace::SharedWindow`). The service limits per client IP, so the runs of one host together
//! must stay under its limits, whatever run folder each one writes to.
//!
//! Each entry is a request: its process (pid and the kernel's start time of that pid), and when it
//! was answered — none while in flight. As in one process, a request holds its place from the moment
//! it may be sent until one window after its answer. The in-flight request of a process that is gone
//! counts as answered when that is found (it may have reached the service). Times are the host's
//! wall clock in milliseconds, the one clock all its processes share.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::locked_file::LockedFile;
use crate::client::pace::SharedWindow;
use crate::limits::Endpoint;

/// How long a request waits before looking again when every place is in flight.
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(25);

#[derive(Debug, Default, Serialize, Deserialize)]
struct WindowFile {
    next: u64,
    requests: Vec<Request>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    ticket: u64,
    pid: u32,
    started: Option<u64>,
    /// When it was answered (ms since the epoch); `None` while in flight.
    answered: Option<u64>,
}

/// The variable that names another pacing folder (for tests, or to share one across users).
pub const DIR_VAR: &str = "AITBC_FLOW_PACING_DIR";

/// The user's pacing folder: `AITBC_FLOW_PACING_DIR`, else `$XDG_RUNTIME_DIR/aitbc-flow/pacing`,
/// else `$HOME/.cache/aitbc-flow/pacing`; `RUNS/.pacing` when none of them is set.
pub fn user_dir(runs_dir: &Path) -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var(DIR_VAR) {
        return PathBuf::from(d);
    }
    if let Some(d) = var("XDG_RUNTIME_DIR") {
        return Path::new(&d).join("aitbc-flow").join("pacing");
    }
    if let Some(h) = var("HOME") {
        return Path::new(&h)
            .join(".cache")
            .join("aitbc-flow")
            .join("pacing");
    }
    runs_dir.join(".pacing")
}

/// The windows of one coordinator in a pacing folder.
#[derive(Debug)]
pub struct FilePacing {
    dir: PathBuf,
    pid: u32,
    started: Option<u64>,
}

impl FilePacing {
    /// The windows of the coordinator at `base_url` in the pacing folder `dir`.
    pub fn new(dir: &Path, base_url: &str) -> FilePacing {
        let key = coordinator_key(base_url);
        let pid = std::process::id();
        FilePacing {
            dir: dir.join(key),
            pid,
            started: super::reservations::start_time(pid),
        }
    }

    fn with_window<T>(
        &self,
        endpoint: Endpoint,
        f: impl FnOnce(&mut WindowFile, u64) -> T,
    ) -> std::io::Result<T> {
        let path = self.dir.join(format!("{}.json", endpoint_name(endpoint)));
        // Only this user reads and writes the windows.
        let make_dir = || {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(&self.dir)
        };
        let (mut file, text) = LockedFile::open(&path, make_dir)?;
        // A file that does not read (cut short by a full disk) starts the window again.
        let mut w: WindowFile = serde_json::from_slice(&text).unwrap_or_default();
        let out = f(&mut w, now_ms());
        file.write(serde_json::to_vec(&w).map_err(std::io::Error::other)?)?;
        Ok(out)
    }

    fn alive(&self, r: &Request) -> bool {
        if r.pid == self.pid {
            return r.started == self.started;
        }
        crate::exec::lock::pid_alive(r.pid)
            && match (r.started, super::reservations::start_time(r.pid)) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// The part of a window's name that names the coordinator at `base_url` (a hash: the URL is not
/// shown).
pub(super) fn coordinator_key(base_url: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(base_url.as_bytes())[..8])
}

/// The part of a window's name that names the endpoint.
pub(super) fn endpoint_name(endpoint: Endpoint) -> String {
    format!("{endpoint:?}").to_lowercase()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SharedWindow for FilePacing {
    fn take(&self, endpoint: Endpoint, limit: usize, window: Duration) -> Result<u64, Duration> {
        let window_ms = window
            .saturating_add(crate::client::pace::MARGIN)
            .as_millis() as u64;
        let taken = self.with_window(endpoint, |w, now| {
            for r in w.requests.iter_mut() {
                if r.answered.is_none() && !self.alive(r) {
                    r.answered = Some(now);
                }
            }
            w.requests
                .retain(|r| r.answered.is_none_or(|a| a + window_ms > now));
            if w.requests.len() < limit {
                w.next += 1;
                w.requests.push(Request {
                    ticket: w.next,
                    pid: self.pid,
                    started: self.started,
                    answered: None,
                });
                return Ok(w.next);
            }
            Err(w
                .requests
                .iter()
                .filter_map(|r| r.answered)
                .min()
                .map_or(IN_FLIGHT_WAIT, |a| {
                    Duration::from_millis((a + window_ms).saturating_sub(now).max(1))
                }))
        });
        match taken {
            Ok(t) => t,
            Err(e) => {
                // The run paces itself alone then (its own window still holds).
                tracing::warn!(
                    "the shared pacing in {} cannot be used: {e}",
                    self.dir.display()
                );
                Ok(0)
            }
        }
    }

    fn answered(&self, endpoint: Endpoint, ticket: u64) {
        if ticket == 0 {
            return;
        }
        let done = self.with_window(endpoint, |w, now| {
            if let Some(r) = w
                .requests
                .iter_mut()
                .find(|r| r.ticket == ticket && r.pid == self.pid)
            {
                r.answered = Some(now);
            }
        });
        if let Err(e) = done {
            tracing::warn!(
                "the shared pacing in {} cannot be used: {e}",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pacers_of_one_pacing_folder_share_one_window() {
        let dir = tempfile::tempdir().unwrap();
        let a = FilePacing::new(dir.path(), "http://c");
        let b = FilePacing::new(dir.path(), "http://c");
        let w = Duration::from_secs(60);
        let t1 = a.take(Endpoint::Submit, 2, w).unwrap();
        let t2 = b.take(Endpoint::Submit, 2, w).unwrap();
        // Both in flight: the third waits a little and looks again.
        assert_eq!(a.take(Endpoint::Submit, 2, w), Err(IN_FLIGHT_WAIT));
        // Another endpoint, or another coordinator, has its own window.
        assert!(a.take(Endpoint::Job, 2, w).is_ok());
        assert!(
            FilePacing::new(dir.path(), "http://other")
                .take(Endpoint::Submit, 2, w)
                .is_ok()
        );
        a.answered(Endpoint::Submit, t1);
        b.answered(Endpoint::Submit, t2);
        // Answered: free again a window (and the margin) after the answer.
        let wait = b.take(Endpoint::Submit, 2, w).unwrap_err();
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_millis(60_050));
        // Only this user may read the windows.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }

    #[test]
    fn the_request_of_a_dead_process_counts_from_when_it_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let a = FilePacing::new(dir.path(), "http://c");
        a.with_window(Endpoint::Submit, |w, _| {
            w.requests.push(Request {
                ticket: 99,
                pid: 999_999_999,
                started: None,
                answered: None,
            })
        })
        .unwrap();
        // In flight for ever, were it not dead: now it holds its place one window from now.
        let wait = a
            .take(Endpoint::Submit, 1, Duration::from_secs(10))
            .unwrap_err();
        assert!(wait > Duration::from_secs(9), "{wait:?}");
    }
}
