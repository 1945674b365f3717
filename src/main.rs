//! The `awsflock` binary: everything lives in the library's command-line
//! layer (the `cli` feature); this only runs it and exits with its code.

fn main() {
    std::process::exit(awsflock::cmd::main());
}
