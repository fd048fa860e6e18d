// mimalloc: loading a 10,000-step plan is allocation-bound (a fifth of its instructions were in glibc's
// malloc and free); see docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(aitbc_flow::cli::main());
}
