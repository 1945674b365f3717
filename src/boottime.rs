//! Instants on a clock that keeps counting while the machine is suspended.
//!
//! Every lease deadline is a [`BootInstant`]. `std::time::Instant` (and
//! tokio's) is CLOCK_MONOTONIC, which stands still during suspend-to-RAM or
//! a paused VM: a deadline kept on it would be late, after waking, by the
//! length of the sleep, while the store's clock and everybody else's lease
//! kept running. CLOCK_BOOTTIME (Linux) counts that time too. Elsewhere the
//! monotonic clock is the best the platform offers.
//!
//! Timers still run on tokio's monotonic clock, so [`sleep_until`] sleeps in
//! naps of at most [`MAX_NAP`] and re-reads this clock after each: after a
//! suspend, a deadline that passed during the sleep is seen within one nap
//! of waking.

use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// The longest a [`sleep_until`] sleeps before it looks at the clock again.
pub const MAX_NAP: Duration = Duration::from_millis(250);

/// An instant on the boot-time clock (nanoseconds since boot on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(Duration);

impl BootInstant {
    /// The clock's reading now.
    pub fn now() -> BootInstant {
        BootInstant(crate::timebase::boot_now())
    }

    /// The instant `d` after the clock's origin (for tests and arithmetic).
    pub fn from_origin(d: Duration) -> BootInstant {
        BootInstant(d)
    }

    /// Time since the clock's origin.
    pub fn since_origin(self) -> Duration {
        self.0
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// Time elapsed since `self`.
    pub fn elapsed(self) -> Duration {
        BootInstant::now().saturating_duration_since(self)
    }

    /// `self - d`, unless that is before the clock's origin.
    pub fn checked_sub(self, d: Duration) -> Option<BootInstant> {
        self.0.checked_sub(d).map(BootInstant)
    }

    /// `self + d`, unless that overflows.
    #[allow(dead_code)]
    pub fn checked_add(self, d: Duration) -> Option<BootInstant> {
        self.0.checked_add(d).map(BootInstant)
    }

    /// Time left until `self`, zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.saturating_duration_since(BootInstant::now())
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_add(d))
    }
}

impl AddAssign<Duration> for BootInstant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for BootInstant {
    type Output = BootInstant;
    fn sub(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_sub(d))
    }
}

impl Sub<BootInstant> for BootInstant {
    type Output = Duration;
    fn sub(self, earlier: BootInstant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// Sleeps until the boot-time clock reaches `deadline`, noticing a suspend
/// within [`MAX_NAP`] of waking.
pub async fn sleep_until(deadline: BootInstant) {
    loop {
        let left = deadline.remaining();
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(MAX_NAP)).await;
    }
}

/// Runs `fut` until the boot-time clock reaches `deadline`; `Err(())` when
/// the deadline came first (as `tokio::time::timeout_at`, on this clock).
pub async fn timeout_at<F: std::future::Future>(
    deadline: BootInstant,
    fut: F,
) -> Result<F::Output, ()> {
    tokio::select! {
        // Biased (polled in this order) so that a simulated run is
        // reproducible; a result that is ready wins over a deadline reached
        // at the same poll, as tokio's own timeout does.
        biased;
        out = fut => Ok(out),
        _ = sleep_until(deadline) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_and_does_arithmetic() {
        let a = BootInstant::now();
        std::thread::sleep(Duration::from_millis(5));
        let b = BootInstant::now();
        assert!(b > a);
        assert!(b - a >= Duration::from_millis(5));
        assert_eq!(a - b, Duration::ZERO);
        assert_eq!((a + Duration::from_secs(1)) - a, Duration::from_secs(1));
        assert!(
            a.checked_sub(a.since_origin() + Duration::from_secs(1))
                .is_none()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sleeps_until_the_deadline() {
        let start = BootInstant::now();
        sleep_until(start + Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(30));
        let r = timeout_at(
            BootInstant::now() + Duration::from_millis(20),
            std::future::pending::<()>(),
        )
        .await;
        assert!(r.is_err());
    }
}
