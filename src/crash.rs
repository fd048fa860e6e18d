//! Crash points for the durability tests: `AITBC_FLOW_CRASH_AT=POINT:N` makes the process kill itself
//! with SIGKILL the N-th time it passes POINT (`intent`, `submitted`, `wait`, `fetch`, `report`), as
//! `kill -9` would at that moment: no destructor runs, no buffer is flushed. Unset, a crash point costs
//! one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

struct Plan {
    point: String,
    nth: u32,
    seen: AtomicU32,
}

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let v = std::env::var("AITBC_FLOW_CRASH_AT").ok()?;
        let (point, nth) = v.split_once(':').unwrap_or((v.as_str(), "1"));
        Some(Plan {
            point: point.to_string(),
            nth: nth.parse().ok()?,
            seen: AtomicU32::new(0),
        })
    })
    .as_ref()
}

/// Passes a crash point.
pub fn point(name: &str) {
    if let Some(p) = plan()
        && p.point == name
        && p.seen.fetch_add(1, Ordering::SeqCst) + 1 == p.nth
    {
        #[cfg(unix)]
        // SAFETY: kill(2) on our own pid with a valid signal number has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}
