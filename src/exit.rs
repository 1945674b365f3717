//! The documented exit codes, in one place.
//!
//! Scripts branch on these, so they never change meaning. `run` exits with its
//! child's status instead, except for the two codes it owns (conflict and lease
//! lost), which the user can move with `--conflict-exit-code` and
//! `--lost-exit-code` when the child's own codes would collide with them.

/// Success.
pub const OK: i32 = 0;
/// An error: unreachable store, missing table, a table awsflock refuses (another
/// key schema, a global table), no credentials, I/O failure.
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
use crate::output::say;

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
    let text = e.to_string();
    match e {
        Error::NotAcquired { name, .. } | Error::NotHeld { name, .. } => text.replace(
            "a forced release frees it",
            &format!("`awsflock release {name} --force` frees it"),
        ),
        _ => text,
    }
}

/// The exit code for a command line clap refused, printing the error as
/// one line (help and version as clap formats them).
pub(crate) fn clap_exit(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                USAGE
            } else {
                OK
            }
        }
        _ => {
            // clap says what is wrong in the lines before "Usage:"; join them.
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let first = what.join(" ");
            let first = first.trim_start_matches("error: ");
            say!("awsflock: error: {first} (see 'awsflock --help')");
            USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_the_command_that_frees_an_unreadable_lock() {
        let mut info = crate::info::LockInfo {
            name: "deploy".into(),
            held: true,
            owner: Some("ci-7".into()),
            reason: None,
            fence: Some(3),
            lease_id: None,
            acquired_at_ms: None,
            expires_at_ms: None,
            lease_duration_s: None,
            expires_in_ms: None,
            pid: None,
            host: None,
            client: None,
            problem: Some("expiration_time is not a number".into()),
            ..Default::default()
        };
        let e = Error::NotAcquired {
            name: "deploy".into(),
            holder: Some(Box::new(info.clone())),
        };
        assert_eq!(code(&e), NOT_HELD);
        assert!(e.to_string().contains("a forced release frees it"), "{e}");
        assert!(!e.to_string().contains("awsflock"), "{e}");
        assert_eq!(
            message(&e),
            "lock \"deploy\" was not acquired (held by ci-7, fence 3; unreadable record: \
             expiration_time is not a number; `awsflock release deploy --force` frees it)"
        );
        info.problem = None;
        let e = Error::NotAcquired {
            name: "deploy".into(),
            holder: Some(Box::new(info)),
        };
        assert_eq!(message(&e), e.to_string());
        assert_eq!(code(&Error::Invalid("x".into())), USAGE);
        assert_eq!(code(&Error::Interrupted(15)), SIGNAL_BASE + 15);
        assert_eq!(code(&Error::Unavailable("x".into())), ERROR);
    }
}
