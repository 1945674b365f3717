//! The `awsflock` binary: parse, run, map the outcome to an exit code.
//! Everything else lives in the library.

use clap::Parser;

fn main() {
    std::process::exit(awsflock::app::main_with(awsflock::cli::Cli::try_parse()));
}
