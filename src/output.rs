//! Messages to people on stderr that can never take awsflock down.
//!
//! `eprintln!` panics when stderr is closed or a broken pipe (`2>&-`,
//! `2>&1 | head -1`), which would turn a clean outcome into exit 101 and
//! could skip a command's SIGTERM grace. [`say!`] writes the same line and
//! ignores a failed write: a message nobody can read must not change what
//! happens to the lock or the command.

use std::io::Write;

/// Writes one line to stderr, ignoring any error.
pub fn say_line(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|_| e.write_all(b"\n"));
}

/// Writes to stderr without a newline (a prompt), ignoring any error.
pub fn say_partial(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|_| e.flush());
}

/// `eprintln!` that never panics: see the module docs.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::say_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// `eprint!` that never panics (for prompts).
macro_rules! say_prompt {
    ($($arg:tt)*) => {
        $crate::output::say_partial(format_args!($($arg)*))
    };
}
pub(crate) use say_prompt;
