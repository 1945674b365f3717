//! Messages to people on stderr that can never take awsflock down or hold
//! it up.
//!
//! `eprintln!` panics when stderr is closed or a broken pipe (`2>&-`,
//! `2>&1 | head -1`), which would turn a clean outcome into exit 101 and
//! could skip a command's SIGTERM grace. [`say!`] writes the same line and
//! ignores a failed write: a message nobody can read must not change what
//! happens to the lock or the command.
//!
//! A write can also block: stderr a pipe that nobody reads fills after
//! 64 KiB. awsflock runs on one thread, so a blocked write would stop the
//! renewals, the pause or kill of the command, and the release, until the
//! watchdog's kill time. Once [`detach`] has run (the command line runs it
//! first), every line, [`say!`]'s and the log's, goes to a queue that a
//! thread of its own writes to stderr, in order; when the queue is full
//! (128,000 lines), lines are dropped rather than waited for.

use std::io::Write;
use std::sync::OnceLock;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

static DETACHED: OnceLock<NonBlocking> = OnceLock::new();

/// Sends stderr through a writer thread from now on, and returns that
/// writer for the log. Dropping the guard writes what is queued, waiting
/// at most about a second for a stderr that does not drain; drop it
/// before exiting.
pub fn detach() -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("awsflock-stderr")
        .finish(std::io::stderr());
    let _ = DETACHED.set(writer.clone());
    (writer, guard)
}

fn write_stderr(bytes: &[u8]) {
    match DETACHED.get() {
        // One queued message per call: lines are never interleaved.
        Some(w) => {
            let _ = w.clone().write_all(bytes);
        }
        None => {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(bytes).and_then(|_| e.flush());
        }
    }
}

/// Writes one line to stderr, ignoring any error.
pub fn say_line(args: std::fmt::Arguments<'_>) {
    let mut line = args.to_string();
    line.push('\n');
    write_stderr(line.as_bytes());
}

/// Writes to stderr without a newline (a prompt), ignoring any error.
pub fn say_partial(args: std::fmt::Arguments<'_>) {
    write_stderr(args.to_string().as_bytes());
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
