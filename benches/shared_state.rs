//! What sharing state between the processes of one run folder costs a request or a submit: the
//! pacing windows (`store::pacing`: a take and an answer per request, each a locked read-modify-write
//! of the endpoint's file) and the wallet reservations (`store::reservations`: version, reserve and
//! release per submit). One process, in a temporary folder, N times each; prints a table of the time
//! per request or submit. (Without rate limits — `AITBC_RATE_LIMIT=off` — a request touches no file;
//! without the balance check a submit neither.)
//!
//! `cargo bench --bench shared_state -- [N]` (default 2,000).

use std::time::{Duration, Instant};

use aitbc_flow::client::pace::SharedWindow;
use aitbc_flow::exec::reserve::{Reservations, Reserve};
use aitbc_flow::limits::Endpoint;
use aitbc_flow::money::Money;
use aitbc_flow::store::pacing::FilePacing;
use aitbc_flow::store::reservations::FileReservations;

fn per_op(total: Duration, n: usize) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / n as f64)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();

    // The window as full as the service's read limit allows (200 in a minute): the file's largest.
    let pacing = FilePacing::new(dir.path(), "http://coordinator");
    let window = Duration::from_secs(60);
    let t = Instant::now();
    let mut full = 0;
    for _ in 0..n {
        match pacing.take(Endpoint::Job, 200, window) {
            Ok(ticket) => pacing.answered(Endpoint::Job, ticket),
            Err(_) => full += 1,
        }
    }
    let pace = t.elapsed();

    let book = FileReservations::new(dir.path(), "bench-run");
    let balance: Money = "1000000".parse().unwrap();
    let amount: Money = "1".parse().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let seen = book.version("w").unwrap();
        match book.reserve("w", amount, balance, seen).unwrap() {
            Reserve::Taken(id) => book.release("w", id).unwrap(),
            other => panic!("{other:?}"),
        }
    }
    let reserve = t.elapsed();

    println!("| shared state, one process, {n} times | per request or submit |");
    println!("|---|---:|");
    println!(
        "| pacing: take + answer ({} of them with the window full, 200 entries) | {} |",
        full,
        per_op(pace, n)
    );
    println!(
        "| reservations: version + reserve + release | {} |",
        per_op(reserve, n)
    );
}
