// mimalloc: loading a 10,000-step plan is allocation-bound (a fifth of its instructions were in glibc's
// malloc and free); see docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Two settings of the process, made from one constructor that runs before mimalloc's own (priority
// 101) and before the Rust runtime's first allocation or thread:
//
// - No transparent huge pages: mimalloc asks for them on its arenas, and the kernel then zeroes and
//   counts 2 MiB for every arena page first touched. A 1,000-job run peaked at 210 MB with them and
//   80 MB without, and spent twice the system time (docs/performance.md). Set in `main`, it came after
//   the first arena pages had been faulted in as huge pages, and zeroing those was 15-19 % of a small
//   plan's `validate` (docs/performance.md, issue 11).
// - mimalloc 3 gives freed memory back to the system a second after it is freed (its `purge_delay`,
//   1000 ms; mimalloc 2 waited 10 ms), so a run's peak RSS held what the plan's load and each finished
//   step's scratch had freed meanwhile: 10,000 jobs at 64 peaked at 147-150 MB with it and 132-134 MB
//   at 10 ms, in the same time (docs/performance.md). The option is set by its name, in the
//   environment mimalloc reads it from at its first allocation (it is not in the Rust bindings' list
//   of options); a value the user set is kept.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00100")]
static BEFORE_MAIN: extern "C" fn() = before_main;

#[cfg(target_os = "linux")]
extern "C" fn before_main() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and changes only this process's flags;
    // it neither allocates nor reads anything the runtime sets up. This runs before `main`, on the only
    // thread, so nothing reads the environment while `setenv` changes it; both strings are
    // NUL-terminated literals, and `setenv` copies them.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        libc::setenv(c"MIMALLOC_PURGE_DELAY".as_ptr(), c"10".as_ptr(), 0);
    }
}

fn main() {
    std::process::exit(aitbc_flow::cli::main());
}
