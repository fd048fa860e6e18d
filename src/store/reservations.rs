//! Wallet reservations on one host: one file per wallet under `RUNS/.wallets/`, read and rewritten
//! under its `flock`, shared by every run of the run folder (two `run`s, the scheduler's children).
//! The protocol is `exec::reserve`'s; the PostgreSQL book is `store::reservations_pg`.
//!
//! A reservation names its process (pid and the kernel's start time of that pid, so that a reused pid
//! is not taken for the dead process): one whose process is gone does not count, and is dropped by the
//! next run that reads the file (which changes the wallet's version). The files are not fsynced: what
//! they hold dies with the processes that wrote it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::locked_file::LockedFile;
use crate::exec::reserve::{ReservationId, Reservations, Reserve, Seen};
use crate::money::Money;

/// One wallet's file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    version: i64,
    /// The next id to give.
    next: i64,
    reservations: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    id: ReservationId,
    run_id: String,
    pid: u32,
    /// The kernel's start time of `pid` (`/proc/PID/stat`), when it could be read.
    started: Option<u64>,
    amount: Money,
}

/// The reservations of one run in the run folder's book.
#[derive(Debug)]
pub struct FileReservations {
    dir: PathBuf,
    run_id: String,
    pid: u32,
    started: Option<u64>,
    /// The wallets this run reserved from (released at the end).
    used: Mutex<Vec<String>>,
}

impl FileReservations {
    /// The book under `runs_dir` for run `run_id` of this process.
    pub fn new(runs_dir: &Path, run_id: &str) -> FileReservations {
        let pid = std::process::id();
        FileReservations {
            dir: runs_dir.join(".wallets"),
            run_id: run_id.to_string(),
            pid,
            started: start_time(pid),
            used: Mutex::new(Vec::new()),
        }
    }

    fn path(&self, wallet: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let safe: String = wallet
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // Two names that read the same once made safe still get files of their own.
        let hash = hex::encode(&Sha256::digest(wallet.as_bytes())[..6]);
        self.dir.join(format!("{safe}.{hash}.json"))
    }

    /// Runs `f` on the wallet's book under its `flock`, writing the book back when `f` says so.
    fn with_book<T>(
        &self,
        wallet: &str,
        f: impl FnOnce(&mut Book) -> (bool, T),
    ) -> Result<T, String> {
        let path = self.path(wallet);
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let (mut file, text) =
            LockedFile::open(&path, || std::fs::create_dir_all(&self.dir)).map_err(err)?;
        let text = String::from_utf8_lossy(&text);
        let mut book: Book = if text.trim().is_empty() {
            Book::default()
        } else {
            serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a wallet reservation file: {e}", path.display()))?
        };
        let (write, out) = f(&mut book);
        if write {
            let text = serde_json::to_vec(&book).map_err(|e| err(std::io::Error::other(e)))?;
            file.write(text).map_err(err)?;
        }
        Ok(out)
    }

    fn alive(&self, e: &Entry) -> bool {
        if e.pid == self.pid {
            return e.started == self.started;
        }
        if !crate::exec::lock::pid_alive(e.pid) {
            return false;
        }
        match (e.started, start_time(e.pid)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Drops the reservations of dead processes; whether there were any.
    fn drop_dead(&self, book: &mut Book) -> bool {
        let before = book.reservations.len();
        book.reservations.retain(|e| self.alive(e));
        let dropped = book.reservations.len() != before;
        if dropped {
            book.version += 1;
        }
        dropped
    }

    fn release_where(&self, wallet: &str, which: impl Fn(&Entry) -> bool) -> Result<(), String> {
        self.with_book(wallet, |book| {
            let before = book.reservations.len();
            book.reservations.retain(|e| !which(e));
            let changed = book.reservations.len() != before;
            if changed {
                book.version += 1;
            }
            (changed, ())
        })
    }

    fn mine(&self, e: &Entry) -> bool {
        e.pid == self.pid && e.run_id == self.run_id
    }
}

/// The kernel's start time of a process (field 22 of `/proc/PID/stat`), which tells a reused pid
/// from the process that had it.
pub(super) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Reservations for FileReservations {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn version(&self, wallet: &str) -> Result<Seen, String> {
        self.with_book(wallet, |book| {
            let dropped = self.drop_dead(book);
            (
                dropped,
                Seen {
                    version: book.version,
                    at: Instant::now(),
                },
            )
        })
    }

    fn reserve(
        &self,
        wallet: &str,
        amount: Money,
        balance: Money,
        seen: Seen,
    ) -> Result<Reserve, String> {
        let out = self.with_book(wallet, |book| {
            if self.drop_dead(book) || book.version != seen.version {
                return (true, Reserve::Changed);
            }
            let others = book
                .reservations
                .iter()
                .fold(Money::ZERO, |s, e| s + e.amount);
            if balance < others + amount {
                return (false, Reserve::Short { others });
            }
            book.next += 1;
            let id = book.next;
            book.version += 1;
            book.reservations.push(Entry {
                id,
                run_id: self.run_id.clone(),
                pid: self.pid,
                started: self.started,
                amount,
            });
            (true, Reserve::Taken(id))
        })?;
        if matches!(out, Reserve::Taken(_)) {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            if !used.iter().any(|w| w == wallet) {
                used.push(wallet.to_string());
            }
        }
        Ok(out)
    }

    fn release(&self, wallet: &str, id: ReservationId) -> Result<(), String> {
        self.release_where(wallet, |e| self.mine(e) && e.id == id)
    }
}

impl Drop for FileReservations {
    fn drop(&mut self) {
        let used = std::mem::take(&mut *self.used.lock().unwrap_or_else(|p| p.into_inner()));
        for wallet in used {
            if let Err(e) = self.release_where(&wallet, |e| self.mine(e)) {
                tracing::warn!("cannot release the run's wallet reservations: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn a_second_run_sees_the_first_runs_reservation_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileReservations::new(dir.path(), "run-a");
        let b = FileReservations::new(dir.path(), "run-b");
        let seen = a.version("w").unwrap();
        let Reserve::Taken(id) = a.reserve("w", m("0.6"), m("1"), seen).unwrap() else {
            panic!("not reserved")
        };
        // b read its version before a reserved: told to read the balance again.
        assert_eq!(
            b.reserve("w", m("0.6"), m("1"), seen).unwrap(),
            Reserve::Changed
        );
        let seen = b.version("w").unwrap();
        assert_eq!(
            b.reserve("w", m("0.6"), m("1"), seen).unwrap(),
            Reserve::Short { others: m("0.6") }
        );
        assert!(matches!(
            b.reserve("w", m("0.4"), m("1"), seen).unwrap(),
            Reserve::Taken(_)
        ));
        a.release("w", id).unwrap();
        let seen = b.version("w").unwrap();
        assert_eq!(
            b.reserve("w", m("0.7"), m("1"), seen).unwrap(),
            Reserve::Short { others: m("0.4") }
        );
        // b's end releases the rest.
        drop(b);
        let seen = a.version("w").unwrap();
        assert!(matches!(
            a.reserve("w", m("1"), m("1"), seen).unwrap(),
            Reserve::Taken(_)
        ));
    }

    #[test]
    fn the_reservation_of_a_dead_process_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileReservations::new(dir.path(), "run-a");
        let dead = Book {
            version: 7,
            next: 1,
            reservations: vec![Entry {
                id: 1,
                run_id: "run-dead".into(),
                pid: 999_999_999,
                started: None,
                amount: m("5"),
            }],
        };
        std::fs::create_dir_all(&a.dir).unwrap();
        std::fs::write(a.path("w"), serde_json::to_vec(&dead).unwrap()).unwrap();
        let seen = a.version("w").unwrap();
        // Dropping it changed the version, so a balance read before the drop is not trusted.
        assert_eq!(seen.version, 8);
        assert!(matches!(
            a.reserve("w", m("1"), m("1"), seen).unwrap(),
            Reserve::Taken(_)
        ));
    }
}
