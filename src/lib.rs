//! awsflock: a distributed `flock(1)` for the cloud.
//!
//! A lock is a lease in a shared store. Whoever holds the lease may act; the
//! lease expires unless renewed, so a crashed holder cannot block the fleet
//! forever; every grant carries a fencing token greater than all before it.
//!
//! # Layout
//!
//! - [`backend`]: the [`Backend`] trait every store implements, the types it
//!   speaks ([`Lease`], [`LockInfo`], [`AcquireRequest`]), and one file per
//!   store ([`backend::dynamodb`]; [`backend::aws`] holds what AWS stores share).
//! - [`clock`]: the store's clock as seen from here, from HTTP `Date` headers;
//!   all expiry is judged on it, never on the local wall clock.
//! - [`lease`]: [`LockGuard`], a lease that renews itself and says when it
//!   is lost.
//! - [`supervise`]: the `run` supervisor: spawn, forward signals, stop the
//!   command before the lease can expire, exit as the command did
//!   ([`supervise::unix`] holds the process-group and terminal details).
//! - [`duration`]: `900`, `15m`, `1h 30m` and friends.
//! - [`error`]: the one error type; [`exit`]: the documented exit codes.
//! - [`cli`]: the clap definition of the command line; [`app`]: carries each
//!   command out. `main.rs` only parses, runs and exits.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> awsflock::Result<()> {
//! use awsflock::{AcquireRequest, StoreOptions};
//! use std::time::Duration;
//!
//! let store = awsflock::backend::open(&StoreOptions::default()).await?;
//! let req = AcquireRequest {
//!     name: "nightly-backup".into(),
//!     lease: Duration::from_secs(60),
//!     wait: Some(Duration::from_secs(30)),
//!     owner: "backup@host-1".into(),
//!     reason: Some("nightly backup".into()),
//!     on_wait: None,
//!     supervised: false,
//! };
//! let lease = store.acquire(&req, Box::pin(std::future::pending())).await?;
//! println!("fence {:?}", lease.fence);
//! store.release(&lease.name, &lease.lease_id).await?;
//! # Ok(()) }
//! ```

pub mod app;
pub mod backend;
pub mod boottime;
pub mod cli;
pub mod clock;
pub mod duration;
pub mod error;
pub mod exit;
pub mod lease;
pub(crate) mod output;
pub mod supervise;
pub mod sys;
pub(crate) mod timebase;

#[cfg(test)]
mod sim;

pub use backend::{AcquireRequest, Backend, Lease, LockInfo, StoreOptions};
pub use error::{Error, Result};
pub use lease::LockGuard;
