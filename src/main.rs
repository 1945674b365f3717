//! The `awsflock` binary: parse, run, map the outcome to an exit code.
//! Everything else lives in the library.

use clap::Parser;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) = awsflock::app::internal_command(&args) {
        std::process::exit(code);
    }
    std::process::exit(awsflock::app::main_with(awsflock::cli::Cli::try_parse()));
}
