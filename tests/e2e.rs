//! The end-to-end tests, in one test binary: each module runs the real
//! `awsflock` binary (`env!("CARGO_BIN_EXE_awsflock")`) with real signals,
//! exit codes and children, against real local servers (moto, etcd,
//! awsflock 0.2.0). `common` is the one harness they share: servers, unique
//! names, commands, critical sections and their checks.
//!
//! One binary rather than one per file: the harness compiles once and one
//! binary links. `scripts/test.sh` runs the tests side by side
//! (cargo-nextest); `cargo test --test e2e MODULE::` runs one module.

mod common;

mod bad_input;
mod cli_core;
mod conformance;
mod conventions;
mod errors;
#[cfg(feature = "etcd")]
mod etcd_store;
#[cfg(feature = "dynamodb")]
mod examples;
mod faults;
mod file_store;
mod global_tables;
mod interop_v020;
mod line_attacks;
mod operator;
mod pause_attacks;
mod revoke_attacks;
mod run_supervisor;
mod s3_store;
mod supervisor_safety;
mod terminal;
