//! The lock protocol's decisions, pure: no I/O, no async. Given a record as
//! read and the store's clock (as bounds), they say what the record means
//! and what to do or write next; the stores (`crate::store`) carry the
//! answers out as their own wire calls.
//!
//! - [`expiry`]: when a lease is alive on the store's clock, the times a
//!   write stamps, and the local deadline a holder keeps.
//! - [`grant`]: the single-holder acquire loop's next step.
//! - [`line`]: the waiting line the polling stores keep outside the lock
//!   record: places, entries, the record's mark, and how often to poll.
//! - [`slots`]: the holder table of a name more than one may hold
//!   (semaphores, shared locks) or that waiters queue for.
//! - [`record`]: the JSON lease record of the S3 and directory stores, and
//!   its fencing-token mark.
//! - [`revoke`]: what a forced release does to a holder, and how it reads.

pub(crate) mod expiry;
pub(crate) mod grant;
pub(crate) mod line;
#[cfg(any(feature = "dynamodb", feature = "s3", feature = "file"))]
pub(crate) mod record;
pub(crate) mod revoke;
pub(crate) mod slots;
