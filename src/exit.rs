//! The documented exit codes, in one place.
//!
//! Scripts branch on these, so they never change meaning. `run` exits with its
//! child's status instead, except for the two codes it owns (conflict and lease
//! lost), which the user can move with `--conflict-exit-code` and
//! `--lost-exit-code` when the child's own codes would collide with them.

/// Success.
pub const OK: i32 = 0;
/// An error: unreachable store, missing table, no credentials, I/O failure.
pub const ERROR: i32 = 1;
/// Bad command line: unknown option, bad duration, bad lock name, bad URL.
pub const USAGE: i32 = 2;
/// The lock was not acquired within the wait, or the lease is not (or no longer) held.
pub const NOT_HELD: i32 = 3;
/// `run` only: the lease was lost while the command ran, so the command was stopped.
pub const LOST: i32 = 4;
/// `run` only: the command was found but could not be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// `run` only: the command was not found.
pub const NOT_FOUND: i32 = 127;
/// `run` only: a child killed by signal N exits `SIGNAL_BASE + N`, as shells report it.
pub const SIGNAL_BASE: i32 = 128;

use crate::error::Error;

/// The exit code for an error: the one place where library errors meet
/// exit codes.
pub fn code(e: &Error) -> i32 {
    match e {
        Error::Invalid(_) => USAGE,
        Error::NotAcquired { .. } | Error::NotHeld { .. } => NOT_HELD,
        Error::Interrupted(sig) => SIGNAL_BASE + sig,
        _ => ERROR,
    }
}

/// An error as the command line shows it: the library's message, with the
/// command to run where the library can only describe it.
pub fn message(e: &Error) -> String {
    match e {
        Error::NotAcquired {
            name,
            holder: Some(h),
        } if h.problem.is_some() => {
            format!(
                "{}; `awsflock release {name} --force` frees it",
                e.to_string()
                    .trim_end_matches(')')
                    .replace("; a forced release frees it", "")
            ) + ")"
        }
        _ => e.to_string(),
    }
}
