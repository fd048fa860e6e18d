//! A bounded mutation test of the plan loader: every example plan and fixture, mutated the way an
//! adversary would (bytes flipped, lines repeated, anchors and aliases, deep nesting, huge numbers,
//! templates that nest or loop, tabs, escapes, files outside the repository), must load to a plan or to
//! clean diagnostics — never a panic, a stack overflow, a gigabyte, or a long wait.
//!
//! The seed is fixed, so every run tries the same mutants; a failure prints the seed and the mutant's
//! text. The fuzz target in `fuzz/` explores further (see docs/security.md).
//!
//! Each load runs on a thread with a 2 MiB stack (a tokio worker's), under a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aitbc_flow::plan::{CheckedPlan, LoadOptions};

/// The system allocator, counting what is allocated now and the most at once.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new) };
        if !q.is_null() {
            if new > layout.size() {
                let now =
                    NOW.fetch_add(new - layout.size(), Ordering::Relaxed) + new - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                NOW.fetch_sub(layout.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The seed of every run.
const SEED: u64 = 0x05ee_d0fa_17bc;
/// Mutants per run.
const MUTANTS: usize = 3000;
/// The most one load (and its renders) may take, in a debug build on a loaded CI machine.
const PER_MUTANT: Duration = Duration::from_secs(5);
/// The most one load may allocate above what was allocated before it.
const PER_MUTANT_BYTES: usize = 512 << 20;

/// A small deterministic generator (xorshift64*): the same mutants on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Text an adversary would put in a plan.
const SNIPPETS: &[&str] = &[
    "&a [*a, *a, *a]",
    "*a",
    "<<: *a\n",
    "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
    "${{ 1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1 }}",
    "${% for i in range(100000) %}${% for j in range(100000) %}x${% endfor %}${% endfor %}",
    "${{ 'x' * 1000000000 }}",
    "${{ steps.a.output | upper | lower | trim }}",
    "${% if true %}${% if true %}${% if true %}x${% endif %}${% endif %}${% endif %}",
    "${{ vars }}",
    "${{ range(10) | map('string') | join(',') }}",
    "matrix: {a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], c: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], d: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n",
    "\t",
    "\u{1b}[31m\u{7}",
    "\u{202e}",
    "0.0099999999999999999",
    "1000000.00000000001",
    "123456789012345678901234567890123456789012345678901234567890",
    "1e400",
    "-1",
    "1.5",
    "0",
    "90000",
    "prompt_file: /proc/self/environ\n",
    "prompt_file: /dev/zero\n",
    "prompt_file: ../../../../../../etc/passwd\n",
    "secrets: {K: {file: /dev/zero}}\n",
    "---\n",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[x]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "{{ x }}",
    "needs: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t]\n",
    "limits: {steps: 50000, matrix_copies: 10000, template_fuel: 2000000}\n",
    "\u{0}",
    "\u{feff}",
    "~",
    "!!str ",
    "? [a]\n: b\n",
];

/// Bytes that matter to YAML and templates.
const BYTES: &[u8] = b"{}[]:,-&*!|>'\"\t\n #$%~?<=+.0123456789eE\x1b\x07\x00\xff";

fn mutate(rng: &mut Rng, base: &[u8], all: &[Vec<u8>]) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..=rng.below(2) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = BYTES[rng.below(BYTES.len())];
            }
            1 if !out.is_empty() => {
                let end = (at + 1 + rng.below(20)).min(out.len());
                out.drain(at.min(end)..end);
            }
            2 => {
                // Repeat a line, many times.
                let text = out.clone();
                let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
                let line = lines[rng.below(lines.len())].to_vec();
                let times = 1 + rng.below(200);
                let pos = out[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1);
                for _ in 0..times {
                    out.splice(pos..pos, line.iter().copied().chain([b'\n']));
                }
            }
            3 | 4 => {
                let s = SNIPPETS[rng.below(SNIPPETS.len())].as_bytes();
                out.splice(at..at, s.iter().copied());
            }
            5 => {
                // A line of another file.
                let other = &all[rng.below(all.len())];
                let lines: Vec<&[u8]> = other.split(|b| *b == b'\n').collect();
                let line = lines[rng.below(lines.len())];
                let pos = out[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1);
                out.splice(pos..pos, line.iter().copied().chain([b'\n']));
            }
            _ => {
                // Indent or unindent a line.
                let pos = out[..at]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1);
                if rng.below(2) == 0 {
                    out.splice(pos..pos, *b"  ");
                } else if out.get(pos) == Some(&b' ') {
                    out.remove(pos);
                }
            }
        }
    }
    out
}

/// Every example plan and fixture, with its path.
fn inputs() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["plans", "tests/plans/valid", "tests/plans/invalid"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            if let Ok(b) = std::fs::read(&f) {
                out.push((f, b));
            }
        }
    }
    out
}

/// What a loaded plan does at run time: every step rendered, for a preview and against outputs.
fn exercise(plan: &CheckedPlan) {
    use aitbc_flow::plan::checked::{RunInfo, StepOutputs};
    let mut outputs = StepOutputs::new();
    for s in &plan.steps {
        let names = aitbc_flow::plan::types::kind_outputs(s.kind.name());
        let mut o = serde_json::Map::new();
        for n in names {
            o.insert(n.to_string(), serde_json::json!("x y z"));
        }
        o.insert(
            "job_id".into(),
            serde_json::json!("0123456789abcdef0123456789abcdef"),
        );
        outputs.insert(s.id.clone(), serde_json::Value::Object(o));
    }
    let run = RunInfo {
        id: "r".into(),
        started_at: "now".into(),
        plan: plan.plan.name.clone(),
        ..Default::default()
    };
    for s in plan.steps.iter().take(50) {
        let _ = plan.preview(s);
        let _ = plan.should_run(s, &outputs, &run);
        if let Err(d) = plan.render(s, &outputs, &run) {
            clean(&d.to_string());
        }
        let own = serde_json::Map::new();
        let _ = plan.render_outputs(s, &own, &outputs, &run);
    }
}

/// A diagnostic as printed: no control character but line breaks, and of bounded size.
fn clean(text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| c != '\n' && aitbc_flow::text::is_unsafe(c)),
        "a control character reaches the terminal: {text:?}"
    );
    assert!(
        text.len() < 16 * 1024,
        "a diagnostic of {} bytes",
        text.len()
    );
}

#[test]
fn mutated_plans_load_or_fail_cleanly_within_bounds() {
    let inputs = inputs();
    assert!(inputs.len() > 20, "the fixtures are there");
    let all: Vec<Vec<u8>> = inputs.iter().map(|(_, b)| b.clone()).collect();
    let mut rng = Rng(SEED);
    let started = Instant::now();
    let mut outcomes = (0usize, 0usize);
    let mut slowest = (Duration::ZERO, 0usize);
    let mut heaviest = (0usize, 0usize);
    for n in 0..MUTANTS {
        // Valid plans more often than fixtures: a mutant of a valid plan still loads now and then.
        let valid = inputs
            .iter()
            .filter(|(p, _)| !p.to_string_lossy().contains("invalid"));
        let valid: Vec<&(PathBuf, Vec<u8>)> = valid.collect();
        let (path, base) = if rng.below(3) > 0 {
            valid[rng.below(valid.len())]
        } else {
            &inputs[rng.below(inputs.len())]
        };
        let mutant = mutate(&mut rng, base, &all);
        let path = path.clone();
        let bytes = mutant.clone();
        let before = NOW.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let t = Instant::now();
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let opts = LoadOptions {
                    environment: Some(Default::default()),
                    ..Default::default()
                };
                match aitbc_flow::plan::check::load_bytes(&path, &bytes, &opts) {
                    Ok(plan) => {
                        exercise(&plan);
                        true
                    }
                    Err(errors) => {
                        assert!(!errors.is_empty(), "an error without a diagnostic");
                        assert!(errors.len() <= 101, "{} diagnostics", errors.len());
                        for d in &errors {
                            assert!(d.location.is_some(), "a diagnostic without a place: {d}");
                            clean(&d.to_string());
                            clean(&serde_json::to_string(d).unwrap_or_default());
                        }
                        false
                    }
                }
            })
            .expect("a thread")
            .join();
        let took = t.elapsed();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        let show = || String::from_utf8_lossy(&mutant[..mutant.len().min(4000)]).into_owned();
        match result {
            Ok(true) => outcomes.0 += 1,
            Ok(false) => outcomes.1 += 1,
            Err(_) => panic!("mutant {n} (seed {SEED:#x}) panicked:\n{}", show()),
        }
        assert!(
            took < PER_MUTANT,
            "mutant {n} (seed {SEED:#x}) took {took:?}:\n{}",
            show()
        );
        assert!(
            peak < PER_MUTANT_BYTES,
            "mutant {n} (seed {SEED:#x}) allocated {} MiB:\n{}",
            peak >> 20,
            show()
        );
        if took > slowest.0 {
            slowest = (took, n);
        }
        if peak > heaviest.0 {
            heaviest = (peak, n);
        }
    }
    eprintln!(
        "{MUTANTS} mutants in {:?}: {} loaded, {} refused; slowest #{} {:?}; heaviest #{} {} MiB",
        started.elapsed(),
        outcomes.0,
        outcomes.1,
        slowest.1,
        slowest.0,
        heaviest.1,
        heaviest.0 >> 20
    );
    // Both outcomes happen, or the mutations are too weak (or too strong) to test anything.
    assert!(
        outcomes.0 > MUTANTS / 20 && outcomes.1 > MUTANTS / 20,
        "{outcomes:?}"
    );
}
