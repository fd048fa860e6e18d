//! Client-side pacing, so that the runner stays under the service's limits instead of collecting 429s.
//!
//! The service limits each endpoint with a **sliding window** (N requests in any 60 s, `crate::limits`).
//! A token bucket that starts full and refills at N a minute lets 2N through in the first minute, so the
//! pacer keeps a window too, one per endpoint, and errs on the safe side of the service's clock: a
//! request holds its slot from the moment it is sent until its answer comes (or it is abandoned), and
//! the slot is free again one window after *that*. The service records a request when its handler
//! starts, which is somewhere between the two, so a window counted from the answer can never hold more
//! than N of the service's own records — however slow the answers are (a blocked service answers many
//! seconds late).
//!
//! The polls of every job being waited for go to one endpoint (`GET /v1/jobs/{id}`), so they share one
//! budget ([`PollBudget`]): a small burst, then a steady rate, taken in turn, sized so that all polls
//! together stay under 90 % of the endpoint's limit in any window. Eighty jobs waiting are then polled
//! one after another, evenly (each about every 80 × 60 s / 160 = 30 s), instead of 200 polls at once
//! and none for the rest of the minute. The window stays the hard limit under it.
//!
//! Under the windows, the requests in flight at once are capped (`ClientConfig::max_in_flight`, 8 for a
//! remote coordinator): the real service serves every request from a database pool of 5 + 10
//! connections, and a burst of a couple of hundred concurrent requests — what a window of 200 reads
//! allows at once — wedged it for good (checked 2026-12, `docs/decisions.md`).
//!
//! The runs of a store share their windows of a remote coordinator ([`SharedWindow`], kept by the
//! store: `store::pacing`, files of the user on one host; `store::pacing_pg`, rows in PostgreSQL
//! across hosts), since the service limits per client IP: a request then also takes a place in the
//! shared window, which holds the requests of every process. Without limits (`off`) there is no
//! window, so nothing is shared and nothing is touched.
//!
//! A 429 on a paced endpoint means something else shares our budget (another client on the same IP):
//! the endpoint then sends nothing more until the `Retry-After` the service gave has passed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::limits::{Endpoint, RateLimits};

/// Added to every window (the shared ones of `store::pacing` and `store::pacing_pg` too): the
/// service compares times with `>`, and its clock is not ours.
pub const MARGIN: Duration = Duration::from_millis(50);

/// The share of the job endpoint's limit the polls may use, at most, in any window (the rest is left
/// for one-off reads of a job: a status, a re-attach).
const POLL_SHARE: f64 = 0.9;

/// Of that share, how much may go at once (a token bucket of capacity `B` refilled at `r` lets at most
/// `B + r·W` through in any window `W`: with `B = N/10` and `r = 0.8·N/W` that is `0.9·N`).
const POLL_BURST: f64 = 0.1;

/// A window shared with other processes: every process's requests to one endpoint, counted as the
/// window of one process counts its own (from the moment a request may be sent until one window
/// after its answer).
pub trait SharedWindow: Send + Sync + std::fmt::Debug {
    /// Takes a place in `endpoint`'s window of `limit` requests in any `window`: its ticket, or how
    /// long to wait before asking again. (A window that cannot be used gives a ticket: the process
    /// paces itself alone then.)
    fn take(&self, endpoint: Endpoint, limit: usize, window: Duration) -> Result<u64, Duration>;
    /// The request of `ticket` was answered (or given up) now.
    fn answered(&self, endpoint: Endpoint, ticket: u64);
}

/// One endpoint's sliding window: at most `limit` requests in flight or answered within `window`.
#[derive(Debug)]
pub struct Window {
    limit: usize,
    window: Duration,
    state: Mutex<WindowState>,
    changed: Notify,
    /// The same endpoint's window shared with other processes, when there is one.
    shared: Option<(Endpoint, Arc<dyn SharedWindow>)>,
}

#[derive(Debug, Default)]
struct WindowState {
    /// When each request of the last window was answered (or abandoned), oldest first.
    answered: VecDeque<Instant>,
    /// Requests sent and not answered yet.
    in_flight: usize,
    /// Nothing is sent before this (a `Retry-After`).
    hold_until: Option<Instant>,
}

/// A request's place in a window, from the moment it may be sent until its answer; dropping it (the
/// answer came, or the request was given up) starts the slot's window.
#[derive(Debug)]
pub struct Slot<'a> {
    window: Option<&'a Window>,
    /// The request's place among those in flight (released after the window has recorded it).
    _in_flight: Option<tokio::sync::SemaphorePermit<'a>>,
    /// Its place in the shared window.
    ticket: Option<u64>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.window {
            let mut s = w.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            s.answered.push_back(Instant::now());
            drop(s);
            w.changed.notify_waiters();
            if let (Some(t), Some((e, shared))) = (self.ticket, &w.shared) {
                shared.answered(*e, t);
            }
        }
    }
}

impl Window {
    /// A window of `limit` requests in any `window`.
    pub fn new(limit: u32, window: Duration) -> Window {
        Window {
            limit: limit.max(1) as usize,
            window,
            state: Mutex::new(WindowState::default()),
            changed: Notify::new(),
            shared: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a request may be sent and takes its slot: in this process's window, then in the
    /// shared one.
    pub async fn acquire(&self) -> Slot<'_> {
        let mut slot = self.acquire_here().await;
        if let Some((endpoint, shared)) = &self.shared {
            loop {
                match shared.take(*endpoint, self.limit, self.window) {
                    Ok(t) => {
                        slot.ticket = Some(t);
                        break;
                    }
                    Err(wait) => tokio::time::sleep(wait.min(self.window)).await,
                }
            }
        }
        slot
    }

    async fn acquire_here(&self) -> Slot<'_> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                while s
                    .answered
                    .front()
                    .is_some_and(|t| *t + self.window + MARGIN <= now)
                {
                    s.answered.pop_front();
                }
                match s.hold_until {
                    Some(h) if h > now => Some(h - now),
                    _ if s.answered.len() + s.in_flight < self.limit => {
                        s.in_flight += 1;
                        return Slot {
                            window: Some(self),
                            _in_flight: None,
                            ticket: None,
                        };
                    }
                    _ => s
                        .answered
                        .front()
                        .map(|t| (*t + self.window + MARGIN).saturating_duration_since(now)),
                }
            };
            match wait {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = &mut notified => {}
                    }
                }
                // Every slot is in flight: the first answer starts a window, then look again.
                None => notified.await,
            }
        }
    }

    /// Sends nothing more for `d` (the service's `Retry-After`).
    pub fn hold_off(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut s = self.lock();
        s.hold_until = Some(s.hold_until.map_or(until, |h| h.max(until)));
    }
}

/// The polls of every job being waited for, budgeted together: a token bucket of capacity `N/10`
/// refilled at `0.8·N` a window, taken in turn (first come, first served), so that however many jobs
/// wait, their polls stay under `0.9·N` in any window and each job is polled in its turn.
#[derive(Debug)]
pub struct PollBudget {
    capacity: f64,
    per_sec: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl PollBudget {
    /// A budget for polls to an endpoint that allows `limit` requests in any `window`.
    pub fn new(limit: u32, window: Duration) -> PollBudget {
        let n = f64::from(limit.max(1));
        let capacity = (n * POLL_BURST).max(1.0);
        let per_sec = (n * POLL_SHARE - capacity).max(1.0) / window.as_secs_f64().max(1e-3);
        PollBudget {
            capacity,
            per_sec,
            state: tokio::sync::Mutex::new((capacity, Instant::now())),
        }
    }

    /// Waits for a poll's turn. The lock is held while waiting, so polls go in the order they asked.
    pub async fn turn(&self) {
        let mut s = self.state.lock().await;
        loop {
            let now = Instant::now();
            let earned = now.saturating_duration_since(s.1).as_secs_f64() * self.per_sec;
            s.0 = (s.0 + earned).min(self.capacity);
            s.1 = now;
            if s.0 >= 1.0 {
                s.0 -= 1.0;
                return;
            }
            tokio::time::sleep(Duration::from_secs_f64((1.0 - s.0) / self.per_sec)).await;
        }
    }
}

/// The windows of every paced endpoint, the poll budget, and the cap on requests in flight.
#[derive(Debug)]
pub struct Pacer {
    windows: HashMap<Endpoint, Window>,
    polls: Option<PollBudget>,
    in_flight: Option<tokio::sync::Semaphore>,
}

impl Pacer {
    /// Windows for the configured limits (none when they are off), and at most `max_in_flight`
    /// requests at once (no cap when `None`).
    pub fn new(limits: &RateLimits, max_in_flight: Option<usize>) -> Pacer {
        let windows = Endpoint::ALL
            .iter()
            .filter_map(|e| limits.of(*e).map(|n| (*e, Window::new(n, limits.window))))
            .collect();
        Pacer {
            windows,
            polls: limits
                .of(Endpoint::Job)
                .map(|n| PollBudget::new(n, limits.window)),
            in_flight: max_in_flight.map(|n| tokio::sync::Semaphore::new(n.max(1))),
        }
    }

    /// Waits for the endpoint's turn and takes a slot in its window (at once for an unpaced endpoint),
    /// then a place among the requests in flight. (The window first: a request waiting for its window
    /// must not hold a place that another endpoint's request could use.)
    pub async fn acquire(&self, endpoint: Option<Endpoint>) -> Slot<'_> {
        let mut slot = match endpoint.and_then(|e| self.windows.get(&e)) {
            Some(w) => w.acquire().await,
            None => Slot {
                window: None,
                _in_flight: None,
                ticket: None,
            },
        };
        if let Some(s) = &self.in_flight {
            slot._in_flight = s.acquire().await.ok();
        }
        slot
    }

    /// Shares every window with the other processes of `shared` (nothing when the limits are off).
    pub fn share(&mut self, shared: Arc<dyn SharedWindow>) {
        for (e, w) in self.windows.iter_mut() {
            w.shared = Some((*e, shared.clone()));
        }
    }

    /// The service answered 429: a paced endpoint sends nothing more until `retry_after` has passed
    /// (a window when the service did not say).
    pub fn rate_limited(&self, endpoint: Option<Endpoint>, retry_after: Option<Duration>) {
        if let Some(w) = endpoint.and_then(|e| self.windows.get(&e)) {
            w.hold_off(retry_after.unwrap_or(w.window));
        }
    }

    /// Waits for a poll's turn in the budget of all polls (at once when job reads are unpaced).
    pub async fn poll_turn(&self) {
        if let Some(b) = &self.polls {
            b.turn().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `count` requests as fast as the window lets them (each answered at once) and returns
    /// when each was sent, relative to the start.
    async fn send_times(w: &Window, count: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut out = Vec::new();
        for _ in 0..count {
            let slot = w.acquire().await;
            out.push(start.elapsed());
            drop(slot);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_lets_n_through_then_waits_a_window() {
        let w = Window::new(3, Duration::from_secs(60));
        let t = send_times(&w, 7).await;
        let secs: Vec<u64> = t.iter().map(|d| d.as_secs()).collect();
        // A token bucket would let a fourth through after 20 s; the service would refuse it.
        assert_eq!(secs, vec![0, 0, 0, 60, 60, 60, 120]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_n_plus_one_in_any_window_for_any_arrival_pattern() {
        // Requests arrive in bursts and trickles; check every window of the send times.
        let w = Window::new(5, Duration::from_secs(10));
        let start = Instant::now();
        let mut sent = Vec::new();
        for i in 0..40u64 {
            if i % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(1300 * (i % 3))).await;
            }
            let slot = w.acquire().await;
            sent.push(start.elapsed());
            drop(slot);
        }
        for (i, a) in sent.iter().enumerate() {
            let within = sent[i..]
                .iter()
                .take_while(|b| **b < *a + Duration::from_secs(10))
                .count();
            assert!(within <= 5, "{within} requests within 10 s from {a:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_counts_from_its_answer() {
        let w = Window::new(1, Duration::from_secs(10));
        let start = Instant::now();
        let slot = w.acquire().await;
        // The answer takes 7 s (a blocked service): the next may go 10 s after the answer, not the send.
        tokio::time::sleep(Duration::from_secs(7)).await;
        drop(slot);
        let _next = w.acquire().await;
        let e = start.elapsed();
        assert!(e >= Duration::from_secs(17), "{e:?}");
        assert!(e < Duration::from_secs(18), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_the_endpoint_for_its_retry_after() {
        let p = Pacer::new(&RateLimits::real_service(), None);
        let start = Instant::now();
        drop(p.acquire(Some(Endpoint::Submit)).await);
        p.rate_limited(Some(Endpoint::Submit), Some(Duration::from_secs(60)));
        drop(p.acquire(Some(Endpoint::Submit)).await);
        assert!(start.elapsed() >= Duration::from_secs(60));
        // Other endpoints go on.
        let t = Instant::now();
        p.rate_limited(Some(Endpoint::Submit), Some(Duration::from_secs(60)));
        drop(p.acquire(Some(Endpoint::Job)).await);
        drop(p.acquire(None).await);
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_cap_in_flight() {
        let p = std::sync::Arc::new(Pacer::new(&RateLimits::off(), Some(3)));
        let now = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (p, now, most) = (p.clone(), now.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = p.acquire(None).await;
                let n = now.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                most.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn polls_of_many_jobs_share_the_budget_evenly() {
        // 200 reads a minute, 80 jobs each asking for a poll every 5 s: the polls of all stay under
        // 180 in any minute, come evenly after the first burst, and every job gets its turns.
        let b = std::sync::Arc::new(PollBudget::new(200, Duration::from_secs(60)));
        let start = Instant::now();
        let times = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for j in 0..80usize {
            let b = b.clone();
            let times = times.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..6 {
                    b.turn().await;
                    times.lock().unwrap().push((start.elapsed(), j));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut t = times.lock().unwrap().clone();
        t.sort();
        for (i, (a, _)) in t.iter().enumerate() {
            let within = t[i..]
                .iter()
                .take_while(|(b, _)| *b < *a + Duration::from_secs(60))
                .count();
            assert!(within <= 180, "{within} polls within a minute from {a:?}");
        }
        // Past the burst, one poll every 60 s / 160 = 375 ms.
        let late: Vec<Duration> = t.iter().map(|(d, _)| *d).skip(20).collect();
        for w in late.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(370), "{w:?}");
        }
        // In turn: every job's second poll comes before any job's third.
        let second_last = (0..80)
            .map(|j| t.iter().filter(|(_, k)| *k == j).nth(1).unwrap().0)
            .max()
            .unwrap();
        let third_first = (0..80)
            .map(|j| t.iter().filter(|(_, k)| *k == j).nth(2).unwrap().0)
            .min()
            .unwrap();
        assert!(
            second_last <= third_first,
            "{second_last:?} > {third_first:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_jobs_poll_at_their_own_pace() {
        let b = PollBudget::new(200, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..10 {
            b.turn().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // One job polling every second is well within the budget: nothing was held back.
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}
