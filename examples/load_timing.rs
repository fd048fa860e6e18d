//! Times the stages of loading a plan: `cargo run --release --example load_timing -- PLAN`.
use std::path::Path;
use std::time::Instant;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "plans/feedback-analysis.yaml".into());
    let path = Path::new(&path);
    let mut best = [f64::MAX; 2];
    for _ in 0..10 {
        let t = Instant::now();
        let raw = aitbc_flow::plan::schema::load_raw(path, &path.display().to_string());
        let t1 = t.elapsed().as_secs_f64();
        let Ok((source, plan)) = raw else {
            eprintln!("invalid plan");
            return;
        };
        let t = Instant::now();
        let checked = aitbc_flow::plan::check::check(source, plan, path, &Default::default());
        let t2 = t.elapsed().as_secs_f64();
        assert!(checked.is_ok());
        best[0] = best[0].min(t1);
        best[1] = best[1].min(t2);
    }
    println!(
        "load_raw {:.1} ms, check {:.1} ms (best of 10)",
        best[0] * 1e3,
        best[1] * 1e3
    );
}
