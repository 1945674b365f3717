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

/// How far ahead of a waiter's own view the store's clock may read, after
/// a jump ahead was seen, before the waiter believes it.
pub const JUMP_MS: i64 = 1000;

/// A waiter's own view of the store's clock: the earliest it could read at
/// one instant, moved on by the waiter's own elapsed time. A waiter judges
/// expiry by its [`Anchor::lower`], so a jump of the store's clock ahead,
/// seen in one answer's `Date`, cannot make a lease it judged live expire
/// before the waiter's own time says it has: the holder learns of the jump
/// only at its next request.
///
/// Only a jump the clock reported (an answer beyond its bounds,
/// `ServerClock::forward_jumps`) is held back; the bounds narrowing as
/// answers come in is believed at once. Elapsed time is the greater of the
/// boot-time clock's and the wall clock's: a paused VM's boot-time clock
/// misses the pause, its wall clock (resynchronised) does not, and the
/// store's clock moving on by a pause is no jump.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    lo_ms: i64,
    at: Instant,
    wall_ms: i64,
    jumps: u64,
}

impl Anchor {
    /// The view that the store's clock read at least `lo_ms` at `at`, when
    /// the local wall clock read `wall_ms` and the clock had reported
    /// `jumps` jumps ahead.
    pub fn new(lo_ms: i64, at: Instant, wall_ms: i64, jumps: u64) -> Anchor {
        Anchor {
            lo_ms,
            at,
            wall_ms,
            jumps,
        }
    }

    /// The earliest the store's clock reads at `now` (wall clock `wall_ms`),
    /// given `clock_lo`, the clock's own lower bound, and the count of jumps
    /// ahead it reported: `clock_lo`, and the view moves on to it (or stays
    /// ahead of it); but after a reported jump, while `clock_lo` is more
    /// than [`JUMP_MS`] ahead of this view moved on by the elapsed time,
    /// that. Never more than `clock_lo`: the view only ever holds a
    /// takeover back.
    pub fn lower(&mut self, clock_lo: i64, now: Instant, wall_ms: i64, jumps: u64) -> i64 {
        let boot = now.saturating_duration_since(self.at).as_millis() as i64;
        let elapsed = boot.max(wall_ms.saturating_sub(self.wall_ms));
        let own = self.lo_ms.saturating_add(elapsed);
        if jumps != self.jumps && clock_lo > own.saturating_add(JUMP_MS) {
            return own;
        }
        // The view keeps the later of the two: a bound gone stale (an answer
        // that straddled a pause) must not drag it back.
        *self = Anchor::new(clock_lo.max(own), now, wall_ms, jumps);
        clock_lo
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn a_jump_ahead_of_the_store_s_clock_is_not_believed_until_time_has_passed() {
        let t = Instant::now();
        let w = T0;
        let mut a = Anchor::new(T0, t, w, 0);
        let at = |ms: u64| t + Duration::from_millis(ms);
        // The bounds narrowing (no jump reported): believed at once.
        assert_eq!(a.lower(T0 + 3_000, at(100), w + 100, 0), T0 + 3_000);
        // The store's `Date` jumps 40 s ahead, reported: our own view holds.
        assert_eq!(a.lower(T0 + 43_000, at(1_100), w + 1_100, 1), T0 + 4_000);
        // ...until our own time catches up with what the clock says.
        assert_eq!(a.lower(T0 + 43_000, at(40_600), w + 40_600, 1), T0 + 43_000);
        // A step back is believed at once (expiry only later).
        assert_eq!(a.lower(T0 + 30_000, at(40_700), w + 40_700, 2), T0 + 30_000);
    }

    #[test]
    fn time_a_paused_vm_missed_on_its_boot_clock_is_counted_from_the_wall_clock() {
        let t = Instant::now();
        let mut a = Anchor::new(T0, t, T0, 0);
        // 10 s paused: the boot-time clock moved 100 ms, the wall clock 10 s;
        // the clock reports the answer after it as a jump.
        let after = t + Duration::from_millis(100);
        assert_eq!(a.lower(T0 + 10_100, after, T0 + 10_100, 1), T0 + 10_100);
    }
}
