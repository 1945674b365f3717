//! The store's clock, as seen from here: the clock every worker shares.
//!
//! Each response from the store carries an HTTP `Date` header (whole seconds).
//! If a request left at local monotonic time `t0`, its response arrived at `t1`
//! and said `Date: D`, the server's clock read somewhere in `[D, D+1s)` at some
//! instant in `[t0, t1]`. So, for every local monotonic instant `t`,
//!
//! ```text
//!     server(t) - t  ∈  [D - t1, D + 1s - t0]
//! ```
//!
//! Intersecting these intervals over every response gives a bound on the offset
//! between our monotonic clock and the server's wall clock that only gets
//! tighter, and that the local wall clock plays no part in. Old bounds are
//! widened by [`DRIFT_PER_SEC_MS`] per second of age, so the assumption is only
//! that the two clocks *run* at rates within 0.1% of each other, not that they
//! agree on the time.
//!
//! Everything that decides expiry uses the conservative end: a holder assumes
//! the latest the server could be ([`ServerClock::upper_ms`]), a waiter the
//! earliest ([`ServerClock::lower_ms`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::boottime::BootInstant as Instant;

/// How much an old bound is widened per second of its age, in ms (0.1%).
pub const DRIFT_PER_SEC_MS: f64 = 1.0;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds on the local boot-time clock ([`crate::boottime`]), from an
/// arbitrary base.
pub fn mono_ms(t: Instant) -> i64 {
    t.saturating_duration_since(base()).as_millis() as i64
        - base().saturating_duration_since(t).as_millis() as i64
}

/// The local monotonic instant for a value of [`mono_ms`].
pub fn instant_at(ms: i64) -> Instant {
    if ms >= 0 {
        base() + Duration::from_millis(ms as u64)
    } else {
        base()
            .checked_sub(Duration::from_millis(ms.unsigned_abs()))
            .unwrap_or_else(base)
    }
}

/// Milliseconds since the epoch on this machine's wall clock (may be wrong).
pub fn local_wall_ms() -> i64 {
    if let Some(ms) = crate::timebase::wall_ms() {
        return ms;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One instant on both local clocks: the boot-time clock (deadlines) and the
/// wall clock (which is set right after a VM pause that the boot-time clock
/// missed).
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// On the boot-time clock.
    pub at: Instant,
    /// On the wall clock, ms since the epoch.
    pub wall_ms: i64,
}

impl Moment {
    /// Now, on both clocks.
    pub fn now() -> Moment {
        Moment {
            at: Instant::now(),
            wall_ms: local_wall_ms(),
        }
    }
}

/// Time the boot-time clock may have missed between `from` and `to`: how
/// much further the wall clock went (never negative: a wall clock stepped
/// back hides nothing the boot-time clock missed, DESIGN.md's limit).
fn missed_ms(from_boot: i64, from_wall: i64, to_boot: i64, to_wall: i64) -> i64 {
    ((to_wall - from_wall) - (to_boot - from_boot)).max(0)
}

#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// server_ms - mono_ms is at least this...
    lo: i64,
    /// ...and at most this.
    hi: i64,
    /// mono_ms when the bounds were last narrowed.
    at: i64,
    /// This machine's wall clock then (ms since the epoch).
    wall: i64,
}

/// The offset between the local monotonic clock and the store's clock.
#[derive(Debug, Default)]
pub struct ServerClock {
    bounds: Mutex<Option<Bounds>>,
    /// How often the store's clock was seen ahead of where the bounds
    /// allowed it to be (see [`ServerClock::forward_jumps`]).
    jumps: AtomicU64,
}

/// Forward jumps seen by every [`ServerClock`] of this process.
static JUMPS_ANYWHERE: AtomicU64 = AtomicU64::new(0);

/// How many times any store clock of this process was seen jumping ahead
/// ([`ServerClock::forward_jumps`], summed). The lease layer watches this
/// without knowing which store it renews with; a process holding leases in
/// several stores treats a jump in one as suspect for all, which only costs
/// a renewal.
///
/// Under a simulated time source ([`crate::timebase`]) the count is that
/// source's own, so simulated processes do not see each other's jumps.
pub fn forward_jumps_anywhere() -> u64 {
    crate::timebase::forward_jumps().unwrap_or_else(|| JUMPS_ANYWHERE.load(Ordering::SeqCst))
}

impl ServerClock {
    /// A clock that has seen no response yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one response: sent at `sent`, received at `received`, with the
    /// server's `Date` header as whole seconds since the epoch.
    ///
    /// The bounds are offsets from the boot-time clock, which a paused VM
    /// stops while the store's clock goes on: the wall clock, set right on
    /// waking, shows the time the boot-time clock missed. Time missed while
    /// the request was out raises the answer's own upper bound; time missed
    /// since the bounds were last narrowed raises the old upper bound before
    /// the answer narrows it. The lower bounds stay true: the store's clock
    /// did not go back.
    pub fn observe(&self, sent: Moment, received: Moment, date_secs: i64) {
        let (t0, t1) = (mono_ms(sent.at), mono_ms(received.at));
        let in_flight = missed_ms(t0, sent.wall_ms, t1, received.wall_ms);
        let sample = Bounds {
            lo: date_secs * 1000 - t1,
            hi: date_secs * 1000 + 1000 - t0 + in_flight,
            at: t1,
            wall: received.wall_ms,
        };
        let wall_ms = received.wall_ms;
        let mut b = self.bounds.lock().unwrap_or_else(|e| e.into_inner());
        *b = Some(match *b {
            None => sample,
            Some(old) => {
                let age_s = (t1 - old.at).max(0) as f64 / 1000.0;
                let widen = (age_s * DRIFT_PER_SEC_MS).ceil() as i64;
                let missed = missed_ms(old.at, old.wall, t1, wall_ms);
                let (lo, hi) = (
                    (old.lo - widen).max(sample.lo),
                    (old.hi + widen + missed).min(sample.hi),
                );
                if lo <= hi && sample.lo <= old.hi + widen {
                    Bounds {
                        lo,
                        hi,
                        at: t1,
                        wall: wall_ms,
                    }
                } else if lo <= hi {
                    // Ahead of where the bounds allowed, but by no more than
                    // the time the boot-time clock missed: leases stamped
                    // before are shorter on the store's clock than their
                    // holders believed, as after a jump of the store's clock.
                    self.jumps.fetch_add(1, Ordering::SeqCst);
                    if !crate::timebase::note_forward_jump() {
                        JUMPS_ANYWHERE.fetch_add(1, Ordering::SeqCst);
                    }
                    Bounds {
                        lo,
                        hi,
                        at: t1,
                        wall: wall_ms,
                    }
                } else {
                    // The server's clock stepped (or a proxy rewrote Date): trust
                    // only what it says now.
                    let ahead = sample.lo > old.hi + widen;
                    if ahead {
                        // Leases stamped on the old bounds are shorter on
                        // the store's clock than their holders believed.
                        self.jumps.fetch_add(1, Ordering::SeqCst);
                        if !crate::timebase::note_forward_jump() {
                            JUMPS_ANYWHERE.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tracing::warn!(
                        jump_ms = if ahead {
                            sample.lo - (old.hi + widen)
                        } else {
                            sample.hi - (old.lo - widen)
                        },
                        "store clock jumped {}; recalibrating",
                        if ahead { "ahead" } else { "back" }
                    );
                    sample
                }
            }
        });
    }

    fn bounds_now(&self) -> Option<(i64, i64)> {
        let b = (*self.bounds.lock().unwrap_or_else(|e| e.into_inner()))?;
        let now = mono_ms(Instant::now());
        let widen = (((now - b.at).max(0) as f64 / 1000.0) * DRIFT_PER_SEC_MS).ceil() as i64;
        Some((now + b.lo - widen, now + b.hi + widen))
    }

    /// How many times a response showed the store's clock *ahead* of the
    /// latest time the bounds allowed: the store's clock (or the time this
    /// process saw pass) jumped. A lease stamped before such a jump expires
    /// earlier on the store's clock than its holder computed, so the lease
    /// layer treats a change of this count as suspect ([`crate::lease`]).
    pub fn forward_jumps(&self) -> u64 {
        self.jumps.load(Ordering::SeqCst)
    }

    /// True once a response with a `Date` header has been seen.
    pub fn is_calibrated(&self) -> bool {
        self.bounds.lock().map(|b| b.is_some()).unwrap_or(false)
    }

    /// The earliest the server's clock can read now (ms since the epoch).
    /// Falls back to the local wall clock before the first response.
    pub fn lower_ms(&self) -> i64 {
        self.bounds_now().map(|b| b.0).unwrap_or_else(local_wall_ms)
    }

    /// The latest the server's clock can read now (ms since the epoch).
    /// Falls back to the local wall clock before the first response.
    pub fn upper_ms(&self) -> i64 {
        self.bounds_now().map(|b| b.1).unwrap_or_else(local_wall_ms)
    }

    /// The local instant by which the server's clock will surely have reached
    /// `server_ms` *at the earliest*: the conservative deadline for a holder
    /// whose lease expires at `server_ms`. `None` before calibration.
    pub fn deadline_for(&self, server_ms: i64) -> Option<Instant> {
        let b = (*self.bounds.lock().unwrap_or_else(|e| e.into_inner()))?;
        // server(t) <= t + hi + widen(t); solve t + hi + (t - at)*drift = server_ms.
        let drift = DRIFT_PER_SEC_MS / 1000.0;
        let t = (server_ms as f64 - b.hi as f64 + b.at as f64 * drift) / (1.0 + drift);
        Some(instant_at(t.floor() as i64))
    }

    /// How far this machine's wall clock was from the server's at `sent`,
    /// when `wall_ms` was read there: 0 when inside the known bounds, negative
    /// when behind, positive when ahead. `None` before calibration.
    pub fn local_skew_ms(&self, sent: Instant, wall_ms: i64) -> Option<i64> {
        let b = (*self.bounds.lock().unwrap_or_else(|e| e.into_inner()))?;
        let t = mono_ms(sent);
        let (lo, hi) = (t + b.lo, t + b.hi);
        Some(if wall_ms < lo {
            wall_ms - lo
        } else if wall_ms > hi {
            wall_ms - hi
        } else {
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `t` on both clocks, with a wall clock that missed nothing.
    fn m(t: Instant) -> Moment {
        Moment {
            at: t,
            wall_ms: 1_700_000_000_000 + mono_ms(t),
        }
    }

    /// `t` on the boot clock, `wall_ms` on the wall clock.
    fn mw(t: Instant, wall_ms: i64) -> Moment {
        Moment { at: t, wall_ms }
    }

    /// The bounds, at `at`, hold the store's true time `true_ms`.
    fn assert_brackets(c: &ServerClock, at: Instant, true_ms: i64) {
        let now = mono_ms(at);
        let b = (*c.bounds.lock().unwrap()).unwrap();
        assert!(
            now + b.lo <= true_ms && true_ms <= now + b.hi,
            "store at {true_ms} outside [{}, {}]",
            now + b.lo,
            now + b.hi
        );
    }

    #[test]
    fn bounds_bracket_the_server_time_and_narrow() {
        let c = ServerClock::new();
        let t0 = Instant::now() - Duration::from_secs(2);
        c.observe(m(t0), m(t0 + Duration::from_millis(20)), 1_000_000);
        let b = c.bounds.lock().unwrap().unwrap();
        assert_eq!(b.hi - b.lo, 1020, "{b:?}");
        // A second sample 600 ms later, one Date second later, narrows it.
        let t2 = t0 + Duration::from_millis(600);
        c.observe(m(t2), m(t2 + Duration::from_millis(10)), 1_000_001);
        let b = c.bounds.lock().unwrap().unwrap();
        assert!(b.hi - b.lo <= 1000 - 380, "{b:?}");
        // Now-bounds contain the true offset and widen only by the drift allowance.
        let (lo, hi) = c.bounds_now().unwrap();
        assert!(hi - lo <= b.hi - b.lo + 2 * 3, "{lo} {hi} {b:?}");
    }

    #[test]
    fn skew_is_measured_against_the_server() {
        let c = ServerClock::new();
        let t0 = Instant::now();
        c.observe(m(t0), m(t0 + Duration::from_millis(5)), 2_000_000);
        let an_hour = 3_600_000;
        assert!(c.local_skew_ms(t0, 2_000_000_000 - an_hour).unwrap() < -3_500_000);
        assert!(c.local_skew_ms(t0, 2_000_000_000 + an_hour).unwrap() > 3_500_000);
        assert_eq!(c.local_skew_ms(t0, 2_000_000_500).unwrap(), 0);
    }

    /// A pause while the answer is on its way back: the Date was stamped
    /// before it, so the answer's own upper bound must take the time the
    /// boot-time clock missed in flight.
    #[test]
    fn time_missed_while_an_answer_was_out_raises_its_upper_bound() {
        let c = ServerClock::new();
        let t0 = Instant::now();
        let wall0 = 4_000_000_000;
        c.observe(
            mw(t0, wall0),
            mw(t0 + Duration::from_millis(5), wall0 + 5),
            4_000_000,
        );
        // Sent 1 s later; the store stamps 4,000,001; then the machine is
        // paused 1.98 s before the answer arrives: the store's clock reads
        // 4,000,002.995 s on arrival.
        let t1 = t0 + Duration::from_millis(1_000);
        c.observe(
            mw(t1, wall0 + 1_000),
            mw(t1 + Duration::from_millis(5), wall0 + 2_985),
            4_000_001,
        );
        assert_brackets(&c, t1 + Duration::from_millis(5), 4_000_002_995);
    }

    /// A VM pause stops the boot-time clock, not the store's: the time it
    /// missed (shown by the wall clock, set right on waking) must not let a
    /// later answer narrow the bounds below the store's true time.
    #[test]
    fn time_the_boot_clock_missed_keeps_the_store_clock_within_the_bounds() {
        let c = ServerClock::new();
        let t0 = Instant::now();
        let wall0 = 4_000_000_000;
        // The store's clock reads 4,000,000.010 s at t0 + 5 ms: the Date
        // leaves the bounds almost a second of room above it.
        c.observe(
            mw(t0, wall0),
            mw(t0 + Duration::from_millis(5), wall0 + 5),
            4_000_000,
        );
        // 1 s later on the boot clock, but the machine was paused for
        // 1.98 s in between: the store's clock reads 4,000,002.990 s. Its
        // Date says 4,000,002, which fits bounds that took the boot clock's
        // word for the time that passed.
        let t1 = t0 + Duration::from_millis(1_000);
        c.observe(
            mw(t1, wall0 + 2_980),
            mw(t1 + Duration::from_millis(5), wall0 + 2_985),
            4_000_002,
        );
        assert_brackets(&c, t1 + Duration::from_millis(5), 4_000_002_990);
        // A lease expiring at the store's 4,000,010 s ends 7.010 s from
        // now: the deadline must come no later.
        let deadline = c.deadline_for(4_000_010_000).unwrap();
        assert!(
            deadline <= t1 + Duration::from_millis(5 + 7_010),
            "deadline {:?} after the true expiry",
            deadline.saturating_duration_since(t1)
        );
    }

    #[test]
    fn a_store_clock_seen_ahead_of_the_bounds_is_counted() {
        let c = ServerClock::new();
        let t0 = Instant::now();
        c.observe(m(t0), m(t0 + Duration::from_millis(5)), 4_000_000);
        let t1 = t0 + Duration::from_millis(500);
        c.observe(m(t1), m(t1 + Duration::from_millis(5)), 4_000_001);
        assert_eq!(c.forward_jumps(), 0);
        // 20 s ahead of what half a second could explain.
        c.observe(m(t1), m(t1 + Duration::from_millis(5)), 4_000_021);
        assert_eq!(c.forward_jumps(), 1);
        // Back again: recalibrated, not counted as ahead.
        c.observe(m(t1), m(t1 + Duration::from_millis(5)), 4_000_001);
        assert_eq!(c.forward_jumps(), 1);
        let (lo, _) = c.bounds_now().unwrap();
        assert!(lo < 4_000_002_000, "{lo}");
    }

    #[test]
    fn deadline_is_no_later_than_the_upper_bound_allows() {
        let c = ServerClock::new();
        let t0 = Instant::now();
        c.observe(m(t0), m(t0 + Duration::from_millis(5)), 3_000_000);
        let expires = c.upper_ms() + 10_000;
        let d = c.deadline_for(expires).unwrap();
        let left = d.saturating_duration_since(Instant::now());
        assert!(
            left <= Duration::from_secs(10) && left > Duration::from_secs(9),
            "{left:?}"
        );
    }
}
