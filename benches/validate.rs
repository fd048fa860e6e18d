//! `validate` speed on generated plans: a small plan, a 10,000-step plan, and 1,000 `uses` steps of
//! one 9-step sub-plan (10,000 steps once expanded). Not a timed test; run with
//! `cargo bench --bench validate` and compare with docs/performance.md (targets: 10,000 steps < 200 ms,
//! small < 20 ms, wall clock).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// A plan of `n` steps: groups of submit → wait → fetch chained by templates, plus a balance check.

// The same allocator as the `aitbc-flow` binary, so the figures are the CLI's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn generate(n: usize) -> String {
    let mut s = String::from(
        "# yaml-language-server: $schema=../schemas/plan.schema.json\nversion: 1\nname: generated\n\
         vars:\n  wallet: bench-wallet\n  topic: throughput\ndefaults:\n  timeout: 300s\n  \
         retry: {max_attempts: 3, backoff: exponential, initial: 1s, max: 30s, jitter: full}\n\
         policy:\n  min_payment: {inference: 1}\nsteps:\n  - id: check\n    balance: {wallet: \"${{ vars.wallet }}\", min: 10}\n",
    );
    let mut i = 1;
    while i < n {
        let g = i;
        let _ = write!(
            s,
            "  - id: submit_{g}\n    submit:\n      job_type: inference\n      model: llama2\n      \
             wallet: ${{{{ vars.wallet }}}}\n      payment: 2\n      prompt: \"Summarize item {g} about ${{{{ vars.topic }}}}\"\n      \
             parameters: {{temperature: 0.2, max_tokens: 256}}\n    needs: [check]\n"
        );
        i += 1;
        if i < n {
            let _ = write!(
                s,
                "  - id: wait_{g}\n    wait:\n      job: ${{{{ steps.submit_{g}.job_id }}}}\n      timeout: 10m\n    \
                 retry: {{max_attempts: 5, initial: 500ms, max: 5s}}\n"
            );
            i += 1;
        }
        if i < n {
            let _ = write!(
                s,
                "  - id: fetch_{g}\n    fetch: {{job: \"${{{{ steps.submit_{g}.job_id }}}}\", save: out/{g}.json}}\n"
            );
            i += 1;
        }
    }
    s
}

/// A plan of `uses` steps, each of the same sub-plan (`sub.yaml`, `sub_steps` steps of
/// [`generate`]) with its own `with:` input: `uses` × (`sub_steps` + 1) steps once expanded.
fn generate_uses(uses: usize, sub_steps: usize) -> (String, String) {
    let sub = generate(sub_steps).replace(
        "vars:\n  wallet: bench-wallet\n  topic: throughput\n",
        "vars:\n  wallet: bench-wallet\ninputs:\n  topic: {type: string, required: true}\n",
    );
    let sub = sub.replace("${{ vars.topic }}", "${{ inputs.topic }}");
    let mut s = String::from("version: 1\nname: generated-uses\nsteps:\n");
    for g in 0..uses {
        let _ = write!(
            s,
            "  - id: group_{g}\n    uses: sub.yaml\n    with: {{topic: \"topic {g}\"}}\n"
        );
    }
    (s, sub)
}

fn time(runs: usize, mut f: impl FnMut() -> bool) -> (Duration, Duration, bool) {
    let mut times = Vec::with_capacity(runs);
    let mut ok = true;
    for _ in 0..runs {
        let t = Instant::now();
        ok &= f();
        times.push(t.elapsed());
    }
    times.sort();
    (times[0], times[runs / 2], ok)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    // BENCH_PLAN_DIR keeps the generated plans, e.g. to time the binary by hand.
    let dir_path = std::env::var_os("BENCH_PLAN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir_path).expect("the plan dir");
    println!(
        "| plan | steps | size | what | runs | min | median | result |\n|---|---|---|---|---|---|---|---|"
    );
    for (label, steps, runs) in [
        ("small", 12, 50),
        ("large", 10_000, 10),
        ("uses", 1_000 * 10, 10),
    ] {
        // `uses`: 1,000 `uses` steps of one 9-step sub-plan (10,000 steps once expanded).
        let text = if label == "uses" {
            let (text, sub) = generate_uses(1_000, 9);
            std::fs::write(dir_path.join("sub.yaml"), sub).expect("write the sub-plan");
            text
        } else {
            generate(steps)
        };
        let path = dir_path.join(format!("{label}.yaml"));
        std::fs::write(&path, &text).expect("write the plan");
        let size = format!("{} KiB", text.len() / 1024);
        let name = path.display().to_string();
        let (min, med, ok) = time(runs, || {
            aitbc_flow::plan::schema::load_raw(&path, &name).is_ok()
        });
        row(
            label,
            steps,
            &size,
            "load_raw (parse + schema + serde)",
            runs,
            min,
            med,
            ok,
        );
        let bytes = text.as_bytes();
        let (min, med, ok) = time(runs, || {
            saphyr_parser::Parser::new_from_str(&text).all(|e| e.is_ok())
        });
        row(
            label,
            steps,
            &size,
            "  (saphyr-parser events alone)",
            runs,
            min,
            med,
            ok,
        );
        let (min, med, ok) = time(runs, || {
            aitbc_flow::plan::source::parse(&name, bytes).is_ok()
        });
        row(
            label,
            steps,
            &size,
            "  parse (YAML → JSON + positions)",
            runs,
            min,
            med,
            ok,
        );
        if let Ok(src) = aitbc_flow::plan::source::parse(&name, bytes) {
            let (min, med, ok) = time(runs, || aitbc_flow::plan::schema::validate(&src).is_empty());
            row(label, steps, &size, "  schema + rules", runs, min, med, ok);
            let (min, med, ok) = time(runs, || {
                serde_path_to_error::deserialize::<_, aitbc_flow::plan::types::Plan>(&src.value)
                    .is_ok()
            });
            row(label, steps, &size, "  serde into Plan", runs, min, med, ok);
        }
        let (min, med, ok) = time(runs, || {
            aitbc_flow::cli::plan_cmds::validate_file(Path::new(&path)).valid
        });
        row(
            label,
            steps,
            &size,
            "validate_file (plan::load = load_raw + check)",
            runs,
            min,
            med,
            ok,
        );
        let (min, med, ok) = time(runs, || {
            std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-flow"))
                .arg("validate")
                .arg(&path)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        row(
            label,
            steps,
            &size,
            "`aitbc-flow validate` process",
            runs,
            min,
            med,
            ok,
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn row(
    label: &str,
    steps: usize,
    size: &str,
    what: &str,
    runs: usize,
    min: Duration,
    med: Duration,
    ok: bool,
) {
    println!(
        "| {label} | {steps} | {size} | {what} | {runs} | {} | {} | {} |",
        ms(min),
        ms(med),
        if ok { "valid" } else { "invalid" }
    );
}
