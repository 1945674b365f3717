//! Expiry, judged on the store's clock: when a lease is alive, when a
//! record is free, and the times a grant or renewal writes.
//!
//! Every judgment takes the store's clock as bounds ([`Now`]): a lease is
//! alive until the earliest the store's clock can read is past its expiry
//! plus [`EXPIRY_MARGIN_MS`]. DESIGN.md ("expired") gives the rules.

use std::time::Duration;

use crate::boottime::BootInstant as Instant;
use crate::clock::{ServerClock, local_wall_ms};
use crate::info::LockInfo;

/// Extra time past a lease's expiry before a waiter may take it over: a
/// lease is alive until the store's clock, at the earliest, is past its
/// expiry plus this margin (the default of a store's takeover margin).
pub const EXPIRY_MARGIN_MS: i64 = 1000;

/// A first write made on the local clock is rewritten when the local clock
/// turns out to be further than this from the store's.
pub const SKEW_TOLERANCE_MS: i64 = 1000;

/// The times written with a grant or renewal, and what is needed afterwards
/// to compute the holder's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// The store's time when sending, at the earliest (shown as "acquired at").
    pub shown_ms: i64,
    /// The lease's expiry: the latest the store's clock could read when
    /// sending, plus the lease, so the lease is never shorter than asked.
    pub expires_ms: i64,
    /// When the write was sent (local monotonic clock).
    pub sent: Instant,
    /// The local wall clock when sending (to measure its skew afterwards).
    pub sent_wall_ms: i64,
    /// Whether the store's clock was known when sending.
    pub calibrated: bool,
}

impl Stamp {
    /// This stamp, for a write recognised as landed by an *earlier* attempt
    /// (its answer was lost): the lease expires when the record in the store
    /// says, `stored_expires_ms`, not when this attempt would have made it
    /// expire. A holder's deadline must come from what the store holds.
    pub fn as_stored(self, stored_expires_ms: i64) -> Stamp {
        Stamp {
            expires_ms: stored_expires_ms,
            ..self
        }
    }

    /// Stamps a write of a lease of `lease` now.
    pub fn now(clock: &ServerClock, lease: Duration) -> Stamp {
        let calibrated = clock.is_calibrated();
        Stamp {
            shown_ms: clock.lower_ms(),
            expires_ms: clock.upper_ms() + lease.as_millis() as i64,
            sent: Instant::now(),
            sent_wall_ms: local_wall_ms(),
            calibrated,
        }
    }
}

/// The store's clock as the client knows it (ms since the epoch).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// The earliest it can read now.
    pub lo: i64,
    /// The latest it can read now.
    pub hi: i64,
}

/// How a record is judged by a waiter.
#[derive(Debug, PartialEq, Eq)]
pub enum Judged {
    /// Nobody holds it: absent, released, or expired.
    Free,
    /// Somebody holds it.
    Held,
}

/// Past its expiry and its takeover margin `margin_ms` by `now_lo`, the
/// earliest the store's clock can read now. A record with no expiry
/// (`None`) never expires.
pub fn is_expired(expiry_ms: Option<i64>, margin_ms: i64, now_lo: i64) -> bool {
    expiry_ms.is_some_and(|exp| now_lo > exp.saturating_add(margin_ms))
}

/// Whether a record is held: not released, not expired, and its holder not
/// known to be gone. There is no first-sight grace (DESIGN.md, "expired"):
/// every record a holder believes in was stamped on the store's clock.
pub fn is_held(released: bool, expired: bool, holder_gone: bool) -> bool {
    !released && !expired && !holder_gone
}

/// The local deadline of a lease that expires at `expires_ms` on the store's clock: from
/// the expiry the record stores, judged conservatively, and never later
/// than the lease counted from the send.
pub fn clock_deadline(
    clock: &ServerClock,
    expires_ms: i64,
    sent: Instant,
    lease: Duration,
) -> Instant {
    let cap = sent + lease + Duration::from_millis(SKEW_TOLERANCE_MS as u64);
    clock
        .deadline_for(expires_ms)
        .unwrap_or(sent + lease)
        .min(cap)
}

/// "absent" for people: a [`LockInfo`] of a lock nobody ever held or that was
/// deleted.
pub fn absent_info(name: &str) -> LockInfo {
    LockInfo {
        name: name.to_string(),
        held: false,
        owner: None,
        reason: None,
        fence: None,
        lease_id: None,
        acquired_at_ms: None,
        expires_at_ms: None,
        expires_in_ms: None,
        lease_duration_s: None,
        pid: None,
        host: None,
        client: None,
        problem: None,
        ..LockInfo::default()
    }
}
