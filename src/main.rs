// mimalloc: loading a 10,000-step plan is allocation-bound (a fifth of its instructions were in glibc's
// malloc and free); see docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // No transparent huge pages for this process: mimalloc asks for them on its arenas, and the kernel
    // then zeroes and counts 2 MiB for every arena page first touched. A 1,000-job run peaked at 210 MB
    // with them and 80 MB without, and spent twice the system time (docs/performance.md).
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and changes only this process's flags.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    std::process::exit(aitbc_flow::cli::main());
}
