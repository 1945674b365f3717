//! awsflock: a distributed `flock(1)` for the cloud, as a library.
//!
//! A lock is a lease in a shared store. Whoever holds the lease may act; the
//! lease expires unless renewed, so a crashed holder cannot block the fleet
//! forever; every grant carries a fencing token greater than all before it.
//!
//! [`Store::acquire`] takes a lock and returns a [`LockGuard`], which renews
//! the lease in the background until it is released or lost. The guard says
//! when the lease is about to be lost ([`LockGuard::expiring`]) and when it is
//! lost ([`LockGuard::lost`]), and can run work that is cancelled the moment
//! the lease can no longer be trusted ([`LockGuard::run_while_held`]).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use awsflock::{AcquireRequest, Store};
//!
//! # async fn demo() -> awsflock::Result<()> {
//! // The store: a DynamoDB table, with the standard AWS configuration.
//! let store = Store::open("dynamodb://awsflock").await?;
//!
//! // Wait up to 30 s for the lock; the lease lasts 60 s unless renewed,
//! // and the guard renews it every 20 s.
//! let mut req = AcquireRequest::new("nightly-backup", Duration::from_secs(60));
//! req.wait = Some(Duration::from_secs(30));
//! req.reason = Some("nightly backup".into());
//! let guard = store.acquire(&req).await?;
//!
//! // Pass the fencing token to whatever the work writes, so that a write
//! // from a holder whose lease was lost can be refused.
//! let fence = guard.fence();
//! let outcome = guard
//!     .run_while_held(async move {
//!         // ... the work, tagging each write with `fence` ...
//!         let _ = fence;
//!     })
//!     .await;
//! match outcome {
//!     Ok(()) => guard.release().await?,
//!     // The lease was lost or about to be: the work was cancelled.
//!     Err(lost) => eprintln!("stopped: {lost}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Runtime
//!
//! Everything is async on tokio. [`Store::acquire`] spawns the renewal task
//! on the current tokio runtime (it panics outside one). A runtime whose
//! threads are blocked (a long computation or blocking I/O on an async
//! thread, or a current-thread runtime busy elsewhere) delays renewals: the
//! lease may then expire, which [`LockGuard::expiring`] and
//! [`LockGuard::lost`] report. Run blocking work with
//! `tokio::task::spawn_blocking` or on another runtime.
//!
//! # Module map
//!
//! The public API is at the crate root:
//!
//! - [`Store`]: a store of locks, opened from a URL ([`Store::open`]), from
//!   [`StoreOptions`] (including [`StoreOptions::from_env`]), or with an AWS
//!   configuration the caller owns ([`Store::open_with_config`]); acquire,
//!   inspect, list, force-release.
//! - [`AcquireRequest`]: what to acquire, how long, how patiently.
//! - [`LockGuard`]: a held lock that renews itself; [`Lease`]: one grant with
//!   its fencing token; [`Lost`]: why a lease was lost.
//! - [`LockInfo`]: what a store says about a lock.
//! - [`Error`]: the one error type.
//!
//! Stores are cargo features: `dynamodb`, `s3`, `file` (on by default) and
//! `etcd` (needs `protoc`). The `cli` feature (on by default) builds the
//! `awsflock` command line; a library user turns it off:
//!
//! ```toml
//! awsflock = { version = "0.1", default-features = false, features = ["dynamodb"] }
//! ```
//!
//! Inside the crate, top-down (each module imports only from those below
//! it; DESIGN.md's module map has every file):
//!
//! - with `cli`: `cmd` (the program's entry, one module per command),
//!   `cli` (clap), `output` (stderr that never blocks nor panics, stdout,
//!   the log), `exit` (the exit codes, and how each [`Error`] and refused
//!   command line maps to one), `supervise` (the `run` supervisor: pure
//!   decisions, carried out), `duration`;
//! - `handle` ([`Store`]), `lease` (a [`LockGuard`] renewing its lease);
//! - `store`: the `LockStore` trait and one adapter per store (DynamoDB, S3
//!   and the directory store share one compare-and-swap acquire loop,
//!   `store::cas`; etcd keeps its own recipe);
//! - `protocol`: the lock protocol's decisions, pure (expiry on the store's
//!   clock, the acquire loop's next step, holder tables, the waiting line
//!   of DynamoDB and S3, the JSON record, forced release);
//! - `request` ([`AcquireRequest`], [`Lease`]), `info` ([`LockInfo`]),
//!   `error`; `clock` (the store's clock, learnt from HTTP `Date` headers),
//!   `boottime` (the clock of every local deadline; it counts suspend),
//!   `timebase`, `sys`.

#![deny(missing_docs)]

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cmd;
// A build without any store (only useful to check the features) uses
// little of the store layer.
#[cfg_attr(not(any(feature = "cli", feature = "file")), allow(dead_code))]
pub(crate) mod boottime;
#[cfg(feature = "cli")]
pub(crate) mod cli;
#[cfg_attr(
    not(any(
        feature = "dynamodb",
        feature = "s3",
        feature = "file",
        feature = "etcd"
    )),
    allow(dead_code)
)]
pub(crate) mod store;
// The store's clock is learnt from HTTP answers (the AWS stores); the
// directory and etcd stores use only part of it.
#[cfg_attr(not(any(feature = "dynamodb", feature = "s3")), allow(dead_code))]
pub(crate) mod clock;
#[cfg(feature = "cli")]
pub(crate) mod duration;
mod error;
#[cfg(feature = "cli")]
pub(crate) mod exit;
mod handle;
mod info;
mod lease;
#[cfg(feature = "cli")]
pub(crate) mod output;
#[cfg_attr(
    not(all(
        feature = "dynamodb",
        feature = "s3",
        feature = "file",
        feature = "etcd"
    )),
    allow(dead_code)
)]
pub(crate) mod protocol;
mod request;
#[cfg(feature = "cli")]
pub(crate) mod supervise;
pub(crate) mod sys;
pub(crate) mod timebase;

// The protocol simulation drives the supervisor's decisions and DynamoDB's
// record logic.
#[cfg(all(
    test,
    feature = "cli",
    feature = "dynamodb",
    feature = "s3",
    feature = "file"
))]
mod sim;

pub use error::{Error, Result};
pub use handle::Store;
pub use info::{HolderInfo, LockInfo};
pub use lease::{LockGuard, Lost, safety_margin};
pub use request::{AcquireRequest, Lease, OnWait};
pub use store::{EtcdOptions, StoreOptions};
