//! The command line's commands: [`main`] parses the arguments, sets up
//! stderr, the log and the async runtime, and hands the parsed command to
//! its module, which turns the options into library calls and the results
//! into output and an exit code.
//!
//! - `acquire`: `acquire` and `renew` (a lease kept by its id, as 0.2.0).
//! - `release`: `release`, by lease id or `--force` (its prompt and wait).
//! - `run`: `run`, which hands the lock to the supervisor (`supervise`).
//! - `status`: `status` and `list`, as text and as JSON.
//! - `docs`: `completions` and `man`.
//! - `options`: the global flags and lock options as the library's
//!   [`StoreOptions`](crate::StoreOptions) and [`AcquireRequest`](crate::AcquireRequest).
//! - `wait`: what a waiter shows on stderr.
//! - `show` and `facts`: a lock for people (and the times and processes
//!   behind both renderings), whatever a store reports.

mod acquire;
mod docs;
mod facts;
mod options;
mod release;
mod run;
mod show;
mod status;
mod wait;

use crate::cli::{Cli, Command, Global};
use crate::error::Result;
use crate::exit;
use crate::output::say;
use crate::supervise;

/// The `awsflock` program: the internal commands, or parse the command
/// line and run it. Returns the exit code. Kept here so `main.rs` stays a
/// single call; not part of the library's API.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) = internal_command(&args) {
        return code;
    }
    main_with(<Cli as clap::Parser>::try_parse())
}

/// The whole program after argument parsing: sets up logging and the async
/// runtime, runs the command, prints any error as one line, and returns the
/// exit code.
pub(crate) fn main_with(parsed: std::result::Result<Cli, clap::Error>) -> i32 {
    crate::error::use_cli_words();
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return exit::clap_exit(e),
    };
    crate::output::init_logging(cli.global.verbose, cli.global.quiet);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("awsflock: error: cannot start: {e}");
            return exit::ERROR;
        }
    };
    let code = match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            say!("awsflock: error: {}", exit::message(&e));
            supervise::end_by_signal_if_interrupted(&e);
            exit::code(&e)
        }
    };
    drop(rt);
    // What is still queued for stderr is written before awsflock exits
    // (waiting at most a second for a stderr that does not drain).
    crate::output::flush(std::time::Duration::from_secs(1));
    // `run` whose command was killed by a signal ends by the same signal,
    // now that the lock is released, so that the caller sees it.
    match supervise::take_exit_signal() {
        Some(sig) => supervise::unix::die_by_signal(sig),
        None => code,
    }
}

/// Runs the parsed command line and returns the exit code.
async fn dispatch(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::TableCreate => table_create(g).await,
        Command::Acquire(a) => acquire::acquire(g, a).await,
        Command::Renew(r) => acquire::renew(g, r).await,
        Command::Release(r) => release::release(g, r).await,
        Command::List(l) => status::list(g, l).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
        Command::Run(r) => run::run(g, r).await,
        Command::Status(s) => status::status(g, s).await,
    }
}

/// `table-create`: makes the store ready (a table, a bucket, a directory).
async fn table_create(g: &Global) -> Result<i32> {
    let store = options::open(g).await?;
    store.create().await?;
    say!("awsflock: {} is ready", store.describe());
    Ok(exit::OK)
}

/// The internal commands that are not part of the command line people use:
/// `awsflock __watchdog PGID`, the dead man's switch that `run` starts to
/// kill its command's process group when the latest kill time passes
/// without a newer one, or awsflock dies (see `supervise::unix`). Returns the exit code when `args`
/// (without the program name) is one of them.
pub(crate) fn internal_command(args: &[std::ffi::OsString]) -> Option<i32> {
    match args {
        [cmd, pgid] if cmd == "__watchdog" => {
            let pgid = pgid.to_str()?.parse::<i32>().ok()?;
            Some(supervise::unix::watchdog_main(pgid))
        }
        _ => None,
    }
}
