//! The per-plan run lock (`run --lock`): `RUNS/.locks/<plan>.lock` says who is running a plan, so that a
//! second run from cron or the scheduler does not pay for the same work twice.
//!
//! The lock is an advisory `flock` on a file that is never deleted (so no run can lock an unlinked
//! file): the kernel drops it when its holder dies, whatever the way. The file's content names the
//! holder (pid, host, start time, run id) for messages; it is emptied on release, so content found
//! under a free lock was left by a process that died. Because `flock` may not reach across hosts on
//! some network file systems, a lock written by another host is honoured until it is
//! [`STALE_AFTER`] old. [`judge`] holds these rules and is pure.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A lock written by another host is taken over once it is this old.
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How often a queued run looks at the lock again.
pub const POLL: Duration = Duration::from_millis(250);

/// Who holds a lock: the content of the lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The plan's name.
    pub plan: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// When the holder took the lock (RFC 3339, UTC).
    pub started_at: DateTime<Utc>,
    /// The holder's run id.
    pub run_id: String,
}

impl LockInfo {
    /// This process, about to run `run_id` of `plan`.
    pub fn current(plan: &str, run_id: &str) -> LockInfo {
        LockInfo {
            plan: plan.to_string(),
            pid: std::process::id(),
            host: hostname(),
            started_at: Utc::now(),
            run_id: run_id.to_string(),
        }
    }

    /// `pid N, run R, since T` (plus the host when it is not this one).
    pub fn describe(&self) -> String {
        let host = if self.host == hostname() {
            String::new()
        } else {
            format!(" on {}", self.host)
        };
        format!(
            "pid {}{host}, run {}, since {}",
            self.pid,
            self.run_id,
            self.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// What the content of a lock file and the state of its `flock` mean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nobody holds the lock: take it.
    Free,
    /// A live run holds it (its info, when readable).
    Held(Option<LockInfo>),
    /// It was left by a run that is gone: take it over, and say so.
    Stale {
        /// What the file said, when readable.
        info: Option<LockInfo>,
        /// Why it is stale, for the message.
        reason: String,
    },
}

/// Decides what a lock means. `locked_by_other` is whether another process holds the `flock`;
/// `content` is the file's text; `pid_alive` answers for a pid on this host.
pub fn judge(
    locked_by_other: bool,
    content: &str,
    this_host: &str,
    now: DateTime<Utc>,
    pid_alive: impl Fn(u32) -> bool,
) -> Verdict {
    let parsed = if content.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str::<LockInfo>(content.trim()))
    };
    if locked_by_other {
        return Verdict::Held(parsed.and_then(Result::ok));
    }
    match parsed {
        None => Verdict::Free,
        Some(Err(_)) => Verdict::Stale {
            info: None,
            reason: "its content is unreadable".into(),
        },
        Some(Ok(info)) if info.host == this_host => {
            let reason = if pid_alive(info.pid) {
                format!("pid {} no longer holds it", info.pid)
            } else {
                format!("pid {} is not running", info.pid)
            };
            Verdict::Stale {
                info: Some(info),
                reason,
            }
        }
        Some(Ok(info)) => {
            let age = now.signed_duration_since(info.started_at);
            if age.to_std().is_ok_and(|a| a >= STALE_AFTER) {
                Verdict::Stale {
                    reason: format!(
                        "it was taken on {} more than {}h ago",
                        info.host,
                        STALE_AFTER.as_secs() / 3600
                    ),
                    info: Some(info),
                }
            } else {
                Verdict::Held(Some(info))
            }
        }
    }
}

/// Errors of the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be created, read or written.
    #[error("cannot use the lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A held lock; released (its file emptied and unlocked) on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases the lock now (the same as dropping it).
    pub fn release(self) {}
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Empty first: content under a free lock means "left by a dead process".
        let _ = self.file.set_len(0);
        let _ = self.file.sync_data();
        let _ = self.file.unlock();
    }
}

/// What one attempt to take a lock gave.
#[derive(Debug)]
pub enum Attempt {
    /// Taken; with what a stale lock said and why it was stale, when one was taken over.
    Taken(RunLock, Option<(Option<LockInfo>, String)>),
    /// Another run holds it.
    Held(Option<LockInfo>),
}

/// `RUNS/.locks/<plan>.lock` (characters outside `[A-Za-z0-9_.-]` in the name become `_`).
pub fn lock_path(runs_dir: &Path, plan: &str) -> PathBuf {
    let safe: String = plan
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    runs_dir.join(".locks").join(format!("{safe}.lock"))
}

/// Tries once to take the lock at `path` for `me`.
pub fn try_acquire(path: &Path, me: &LockInfo) -> Result<Attempt, LockError> {
    let io = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    let locked_by_other = match file.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    };
    let mut content = String::new();
    // A holder may not have written its info yet: an empty held lock is read again once.
    for _ in 0..2 {
        content.clear();
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let _ = file.read_to_string(&mut content);
        if !locked_by_other || !content.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let taken_over = match judge(locked_by_other, &content, &me.host, Utc::now(), pid_alive) {
        Verdict::Held(info) => return Ok(Attempt::Held(info)),
        Verdict::Free => None,
        Verdict::Stale { info, reason } => Some((info, reason)),
    };
    let text = serde_json::to_string(me).map_err(|e| io(std::io::Error::other(e)))?;
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(Attempt::Taken(
        RunLock {
            file,
            path: path.to_path_buf(),
        },
        taken_over,
    ))
}

/// Whether a process with this pid runs on this host (`kill(pid, 0)`: EPERM means it does).
#[cfg(unix)]
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a process with this pid runs on this host (unknown here: assumed so; the lock itself
/// decides staleness).
#[cfg(not(unix))]
pub fn pid_alive(_pid: u32) -> bool {
    true
}

/// This host's name (`gethostname`), or `localhost` when it cannot be read.
#[cfg(unix)]
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// This host's name (`COMPUTERNAME`), or `localhost`.
#[cfg(not(unix))]
pub fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(host: &str, pid: u32, started: &str) -> LockInfo {
        LockInfo {
            plan: "nightly".into(),
            pid,
            host: host.into(),
            started_at: started.parse().unwrap(),
            run_id: "R1".into(),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_free_empty_lock_is_free_and_a_held_one_is_held() {
        assert_eq!(judge(false, "", "h", now(), |_| true), Verdict::Free);
        assert_eq!(judge(true, "", "h", now(), |_| true), Verdict::Held(None));
        let i = info("h", 42, "2026-11-25T09:00:00Z");
        let text = serde_json::to_string(&i).unwrap();
        assert_eq!(
            judge(true, &text, "h", now(), |_| false),
            Verdict::Held(Some(i))
        );
    }

    #[test]
    fn content_under_a_free_lock_on_this_host_is_stale() {
        let i = info("h", 42, "2026-11-25T09:59:00Z");
        let text = serde_json::to_string(&i).unwrap();
        match judge(false, &text, "h", now(), |_| false) {
            Verdict::Stale { info, reason } => {
                assert_eq!(info, Some(i.clone()));
                assert_eq!(reason, "pid 42 is not running");
            }
            v => panic!("{v:?}"),
        }
        match judge(false, &text, "h", now(), |_| true) {
            Verdict::Stale { reason, .. } => assert_eq!(reason, "pid 42 no longer holds it"),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            judge(false, "{not json", "h", now(), |_| true),
            Verdict::Stale { info: None, .. }
        ));
    }

    #[test]
    fn another_hosts_lock_is_honoured_until_it_is_old() {
        let young = info("other", 42, "2026-11-25T01:00:00Z");
        let text = serde_json::to_string(&young).unwrap();
        assert_eq!(
            judge(false, &text, "h", now(), |_| false),
            Verdict::Held(Some(young))
        );
        let old = info("other", 42, "2026-11-24T09:00:00Z");
        let text = serde_json::to_string(&old).unwrap();
        assert!(matches!(
            judge(false, &text, "h", now(), |_| true),
            Verdict::Stale { .. }
        ));
    }

    #[test]
    fn lock_path_is_per_plan_and_safe() {
        assert_eq!(
            lock_path(Path::new("runs"), "nightly-report"),
            Path::new("runs/.locks/nightly-report.lock")
        );
        assert_eq!(
            lock_path(Path::new("runs"), "a/b"),
            Path::new("runs/.locks/a_b.lock")
        );
    }

    #[test]
    fn a_lock_is_exclusive_released_on_drop_and_stale_content_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(dir.path(), "p");
        let me = LockInfo::current("p", "R1");
        let Attempt::Taken(lock, None) = try_acquire(&path, &me).unwrap() else {
            panic!("not taken")
        };
        // flock is per open file: a second open in this process conflicts like another process.
        match try_acquire(&path, &LockInfo::current("p", "R2")).unwrap() {
            Attempt::Held(Some(i)) => assert_eq!(i.run_id, "R1"),
            a => panic!("{a:?}"),
        }
        drop(lock);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let Attempt::Taken(_lock, None) = try_acquire(&path, &me).unwrap() else {
            panic!("not taken after release")
        };
        drop(_lock);
        // A file left by a dead process: taken over, and its holder named.
        let dead = LockInfo {
            pid: 999_999_999,
            ..LockInfo::current("p", "R0")
        };
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        match try_acquire(&path, &me).unwrap() {
            Attempt::Taken(_, Some((Some(i), reason))) => {
                assert_eq!(i.run_id, "R0");
                assert!(reason.contains("not running"), "{reason}");
            }
            a => panic!("{a:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn this_process_is_alive_and_a_huge_pid_is_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(999_999_999));
        assert!(!hostname().is_empty());
    }
}
