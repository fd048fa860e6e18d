//! Exit codes, in one place. Every command maps its outcome to one of these.

/// The command did what was asked.
pub const SUCCESS: i32 = 0;
/// A step failed (or a run could not be paid for).
pub const STEP_FAILED: i32 = 1;
/// The plan is invalid, or the command line is.
pub const INVALID: i32 = 2;
/// The coordinator could not be reached, or it refused our credentials.
pub const UNREACHABLE: i32 = 3;
/// A step or a request ran out of time.
pub const TIMEOUT: i32 = 4;
/// The run was interrupted by Ctrl-C or SIGTERM.
pub const INTERRUPTED: i32 = 130;
