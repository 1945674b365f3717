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
//! first), every message, [`say!`]'s and the log's ([`Stderr`]), goes to a
//! queue that a thread of its own writes to stderr, in order; when the
//! queue is full ([`QUEUE`] messages), new ones are dropped rather than
//! waited for. [`flush`] waits, for a bounded time, until what was queued
//! is written: before the command starts (so that awsflock's messages come
//! before the command's), before writing to stdout, and before exiting.
//! Should no thread start, messages are written directly, as before.
//!
//! The rest of the command line's plumbing to the terminal is here too: a
//! line to stdout ([`out`]), the log's set-up ([`init_logging`]) and
//! whether to colour ([`colour`]).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How many messages may wait for stderr; past this, new ones are dropped.
pub const QUEUE: usize = 4096;

struct Detached {
    tx: SyncSender<Vec<u8>>,
    /// Messages queued, and written (or failed) by the writer thread.
    queued: AtomicU64,
    written: Arc<AtomicU64>,
}

static DETACHED: OnceLock<Detached> = OnceLock::new();

/// Sends stderr through a writer thread from now on (see the module docs).
/// Without a thread (none could start), messages stay direct.
pub fn detach() {
    if DETACHED.get().is_some() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE);
    let written = Arc::new(AtomicU64::new(0));
    let counted = written.clone();
    let spawned = std::thread::Builder::new()
        .name("awsflock-stderr".into())
        .spawn(move || {
            let mut err = std::io::stderr();
            for msg in rx {
                let _ = err.write_all(&msg);
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
    if spawned.is_ok() {
        let _ = DETACHED.set(Detached {
            tx,
            queued: AtomicU64::new(0),
            written,
        });
    }
}

/// Waits until every message queued so far is written, or `within` has
/// passed (a stderr that does not drain). Returns at once when stderr is
/// not detached.
pub fn flush(within: Duration) {
    let Some(d) = DETACHED.get() else { return };
    let target = d.queued.load(Ordering::SeqCst);
    let until = Instant::now() + within;
    while d.written.load(Ordering::SeqCst) < target && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One message for stderr: queued when detached, else written at once.
fn write_stderr(bytes: &[u8]) {
    match DETACHED.get() {
        Some(d) => {
            if d.tx.try_send(bytes.to_vec()).is_ok() {
                d.queued.fetch_add(1, Ordering::SeqCst);
            }
        }
        None => {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(bytes).and_then(|_| e.flush());
        }
    }
}

/// The log's writer: each event, formatted whole, is one message.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_stderr(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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

/// Writes a line to stdout; a closed pipe (`| head`) is not an error worth a panic.
pub fn out(line: &str) -> Result<()> {
    // What awsflock said on stderr comes first (`2>&1`).
    flush(Duration::from_millis(100));
    let mut o = std::io::stdout().lock();
    match writeln!(o, "{line}").and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::store(format!("cannot write to stdout: {e}"))),
    }
}

/// Whether stderr is a terminal (live progress) or a log (one line per change).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Sets up stderr's writer thread ([`detach`]) and the log. `-q`
/// silences warnings (a store retried, a renewal that failed): errors still
/// end the command with their one line.
pub fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if quiet => "awsflock=error",
        0 => "awsflock=warn",
        1 => "awsflock=debug",
        _ => "debug",
    };
    let filter = if verbose == 0 {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
    } else {
        EnvFilter::new(default)
    };
    detach();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_target(false)
        .with_ansi(colour())
        .try_init();
}

/// Whether to colour stderr: on a terminal, unless `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn colour() -> bool {
    stderr_is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
