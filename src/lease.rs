//! A lease that renews itself: [`LockGuard`].
//!
//! ```text
//!   acquire ──► renew every `renew_every` ──► … ──► release()
//!                  │ renewal fails: retry (same next lease id) until the deadline
//!                  │ store says "not held": lost at once
//!                  │ time passed unseen (suspend, VM pause, store clock
//!                  │ jumped ahead): `suspect` at once, renew at once
//!                  └► deadline passes without a renewal: lost
//! ```
//!
//! Between renewals the guard looks at the clocks at every nap (at most
//! [`boottime::MAX_NAP`]), without any request to the store, for time that
//! passed without this process seeing it: see [`unseen_time`].
//!
//! The guard publishes its state on a watch channel: the current local
//! deadline (the instant by which everything done under the lease must have
//! stopped) and, once it happens, why the lease was lost. The `run`
//! supervisor schedules its SIGTERM/SIGKILL from that deadline.

use std::sync::Arc;
use std::time::Duration;

use crate::boottime::{self, BootInstant as Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::{AcquireRequest, Backend, BoxFuture, Lease};
use crate::error::{Error, Result};

/// Why a lease was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The store says the lease is not held any more: it was taken over, or
    /// released by force.
    Taken(String),
    /// No renewal succeeded before the deadline (store unreachable or frozen).
    Expired(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Taken(m) => write!(f, "the lease is no longer held ({m})"),
            Lost::Expired(m) => write!(f, "the lease could not be renewed before it expired ({m})"),
        }
    }
}

/// What a guard publishes to whoever watches it.
#[derive(Debug, Clone)]
pub struct GuardState {
    /// The lease as last granted or renewed.
    pub lease: Lease,
    /// Set once the lease is lost; the guard stops renewing then.
    pub lost: Option<Lost>,
    /// Set while the lease may already be gone although no renewal has
    /// failed (this machine was suspended, the store's clock was seen to
    /// jump): whoever acts under the lease must pause at once, until a
    /// renewal confirms the lease (this is cleared and `lease` updated) or
    /// `lost` is set. Says why.
    pub suspect: Option<String>,
}

/// A held lock that renews itself in the background until released or lost.
///
/// Dropping the guard stops renewing (the lease then expires on its own);
/// call [`LockGuard::release`] to free the lock at once.
pub struct LockGuard {
    store: Arc<dyn Backend>,
    state: watch::Receiver<GuardState>,
    pending: Arc<std::sync::Mutex<Option<String>>>,
    renew_now: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

/// The safety margin kept between the local deadline and the moment every
/// process under the lease must be dead: covers clock-rate drift (1%) and the
/// time a SIGKILL takes to land, and is never more than a quarter of the lease.
pub fn safety_margin(lease: Duration) -> Duration {
    (Duration::from_millis(500) + lease / 100).min(lease / 4)
}

impl LockGuard {
    /// Acquires the lock as `req` says and starts renewing it every
    /// `renew_every`. `cancel` ends a wait early (see [`Backend::acquire`]).
    pub async fn acquire(
        store: Arc<dyn Backend>,
        req: &AcquireRequest,
        renew_every: Duration,
        cancel: BoxFuture<'_, i32>,
    ) -> Result<LockGuard> {
        if renew_every >= req.lease {
            return Err(Error::usage(format!(
                "--renew-every ({}s) must be shorter than the lease ({}s)",
                renew_every.as_secs_f64(),
                req.lease.as_secs()
            )));
        }
        let lease = store.acquire(req, cancel).await?;
        let (tx, rx) = watch::channel(GuardState {
            lease,
            lost: None,
            suspect: None,
        });
        let pending = Arc::new(std::sync::Mutex::new(None));
        let renew_now = Arc::new(tokio::sync::Notify::new());
        let task = crate::timebase::spawn(renew_loop(
            store.clone(),
            tx,
            req.lease,
            renew_every,
            pending.clone(),
            renew_now.clone(),
        ));
        Ok(LockGuard {
            store,
            state: rx,
            pending,
            renew_now,
            task,
        })
    }

    /// The lease as last renewed.
    pub fn lease(&self) -> Lease {
        self.state.borrow().lease.clone()
    }

    /// The fencing token of this grant.
    pub fn fence(&self) -> Option<u64> {
        self.state.borrow().lease.fence
    }

    /// Asks for a renewal now instead of at the next period (e.g. to check
    /// the lease after the holder was stopped). Watch the state for the
    /// outcome: a new `lease` (renewed) or `lost`.
    pub fn renew_now(&self) {
        self.renew_now.notify_one();
    }

    /// A receiver of the guard's state, for watching deadline and loss.
    pub fn watch(&self) -> watch::Receiver<GuardState> {
        self.state.clone()
    }

    /// Resolves when the lease is lost (never, while renewals succeed).
    pub async fn lost(&self) -> Lost {
        let mut rx = self.state.clone();
        loop {
            if let Some(l) = rx.borrow_and_update().lost.clone() {
                return l;
            }
            if rx.changed().await.is_err() {
                // The renewal task ended without saying why: treat as lost.
                return Lost::Expired("renewal stopped".into());
            }
        }
    }

    /// Stops renewing and releases the lock. Returns [`Error::NotHeld`] if
    /// the lease had already been lost.
    pub async fn release(mut self) -> Result<()> {
        self.task.abort();
        let _ = (&mut self.task).await;
        let (name, id) = {
            let st = self.state.borrow();
            (st.lease.name.clone(), st.lease.lease_id.clone())
        };
        let pending = self.pending.lock().map(|p| p.clone()).unwrap_or(None);
        let mut result = release_with_retry(self.store.as_ref(), &name, &id).await;
        // A renewal may have landed whose answer never came: that lease is ours too.
        if let (Err(Error::NotHeld { .. }), Some(next)) = (&result, pending) {
            result = release_with_retry(self.store.as_ref(), &name, &next).await;
        }
        result
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Releases, retrying transient errors a few times: a lock left held until
/// its lease expires is safe but blocks the fleet for a lease.
///
/// A failed attempt may have landed with its answer lost; the next attempt,
/// a new call, then finds the lease gone. If nobody holds the lock then,
/// the release did what it was for: success.
async fn release_with_retry(store: &dyn Backend, name: &str, id: &str) -> Result<()> {
    let mut last = None;
    for attempt in 0..4u32 {
        match store.release(name, id).await {
            Err(Error::Unavailable(m)) => {
                tracing::warn!("release failed ({m}); retrying");
                last = Some(Error::Unavailable(m));
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(e @ Error::NotHeld { .. }) if last.is_some() => {
                return match store.inspect(name).await {
                    Ok(info) if !info.held => {
                        tracing::debug!("an earlier release attempt landed");
                        Ok(())
                    }
                    _ => Err(e),
                };
            }
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| Error::store("release failed")))
}

/// The clocks as seen at one look (see [`unseen_time`]).
#[derive(Debug, Clone, Copy)]
pub struct Look {
    /// CLOCK_MONOTONIC: stands still while the machine is suspended.
    pub mono: std::time::Instant,
    /// CLOCK_BOOTTIME: counts suspend.
    pub boot: Instant,
    /// The local wall clock (ms since the epoch).
    pub wall_ms: i64,
    /// Forward jumps of the store's clock seen so far.
    pub store_jumps: u64,
}

impl Look {
    /// The clocks now.
    pub fn now() -> Look {
        Look {
            mono: crate::timebase::mono_now(),
            boot: Instant::now(),
            wall_ms: crate::clock::local_wall_ms(),
            store_jumps: crate::clock::forward_jumps_anywhere(),
        }
    }
}

/// More time than this passing on one clock and not on another, between two
/// looks, means this process did not see that time pass.
pub const UNSEEN_TOLERANCE: Duration = Duration::from_millis(1000);

/// Why the time between two looks is suspect, if it is:
///
/// - the boot-time clock advanced much more than the monotonic clock: the
///   machine was suspended (the lease kept running on the store's clock);
/// - the wall clock advanced much more than the boot-time clock: the process
///   was frozen without either local clock counting it (a paused VM whose
///   wall clock was then resynchronised), so more may have passed than the
///   deadlines know;
/// - the store's clock was seen jumping ahead of what the bounds allowed: a
///   lease stamped before the jump expires earlier than its holder computed.
///
/// In each case the lease may already be gone although no renewal failed.
pub fn unseen_time(before: &Look, now: &Look) -> Option<String> {
    let boot = now.boot.saturating_duration_since(before.boot);
    let mono = now.mono.saturating_duration_since(before.mono);
    if boot > mono + UNSEEN_TOLERANCE {
        return Some(format!(
            "this machine was suspended for about {:.1}s",
            (boot - mono).as_secs_f64()
        ));
    }
    let wall = now.wall_ms - before.wall_ms;
    if wall > boot.as_millis() as i64 + UNSEEN_TOLERANCE.as_millis() as i64 {
        return Some(format!(
            "the wall clock jumped {:.1}s ahead of the boot-time clock (a paused virtual machine?)",
            (wall - boot.as_millis() as i64) as f64 / 1000.0
        ));
    }
    if now.store_jumps > before.store_jumps {
        return Some("the store's clock was seen jumping ahead".to_string());
    }
    None
}

async fn renew_loop(
    store: Arc<dyn Backend>,
    tx: watch::Sender<GuardState>,
    duration: Duration,
    every: Duration,
    pending: Arc<std::sync::Mutex<Option<String>>>,
    renew_now: Arc<tokio::sync::Notify>,
) {
    let mut next_renewal = Instant::now() + every;
    let mut look = Look::now();
    loop {
        // Wait for the next renewal, looking at the clocks at every nap.
        let mut why = None;
        loop {
            let left = next_renewal.remaining();
            if left.is_zero() {
                break;
            }
            tokio::select! {
                // Biased so that a simulated run is reproducible: either
                // branch leads to the same look at the clocks.
                biased;
                _ = tokio::time::sleep(left.min(boottime::MAX_NAP)) => {}
                _ = renew_now.notified() => break,
            }
            let now = Look::now();
            why = unseen_time(&look, &now);
            look = now;
            if why.is_some() {
                break;
            }
        }
        if let Some(w) = why {
            tracing::warn!("{w}: the lease may be gone; renewing now");
            tx.send_modify(|s| s.suspect = Some(w));
        }
        let mut renew_at_once = false;
        let current = tx.borrow().lease.clone();
        // One next lease id per renewal, reused on every retry, so that a
        // renewal that landed but whose answer was lost is recognised.
        let next_id = uuid::Uuid::new_v4().to_string();
        if let Ok(mut p) = pending.lock() {
            *p = Some(next_id.clone());
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let left = current.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tx.send_modify(|s| {
                    s.lost = Some(Lost::Expired("no renewal succeeded in time".into()))
                });
                return;
            }
            let attempt =
                boottime::timeout_at(current.deadline, store.renew(&current, duration, &next_id))
                    .await;
            match attempt {
                Ok(Ok(lease)) => {
                    tracing::debug!(lease_id = %lease.lease_id, "renewed");
                    if let Ok(mut p) = pending.lock() {
                        *p = None;
                    }
                    // Time may have gone unseen during the renewal itself
                    // (its answer showed the store's clock jumping ahead):
                    // then the lease it wrote is suspect too.
                    let now = Look::now();
                    let why = unseen_time(&look, &now);
                    look = now;
                    if let Some(w) = &why {
                        tracing::warn!("{w}: the lease may be shorter than written; renewing now");
                    }
                    let again = why.is_some();
                    tx.send_modify(|s| {
                        s.lease = lease;
                        s.suspect = why;
                    });
                    if again {
                        renew_at_once = true;
                    }
                    break;
                }
                Ok(Err(Error::NotHeld { .. })) => {
                    tx.send_modify(|s| {
                        s.lost = Some(Lost::Taken("taken over or released by force".into()))
                    });
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!("renewal failed: {e}; retrying");
                }
                Err(_) => {
                    tx.send_modify(|s| {
                        s.lost = Some(Lost::Expired("the store did not answer".into()))
                    });
                    return;
                }
            }
            let pause = backoff.min(current.deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        next_renewal = if renew_at_once {
            Instant::now()
        } else {
            Instant::now() + every
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(mono_ms: u64, boot_ms: u64, wall_ms: i64, store_jumps: u64) -> Look {
        static BASE: std::sync::OnceLock<(std::time::Instant, Instant)> =
            std::sync::OnceLock::new();
        let (m, b) = *BASE.get_or_init(|| (std::time::Instant::now(), Instant::now()));
        Look {
            mono: m + Duration::from_millis(mono_ms),
            boot: b + Duration::from_millis(boot_ms),
            wall_ms,
            store_jumps,
        }
    }

    #[test]
    fn time_that_passed_unseen_is_noticed() {
        let before = look(0, 0, 1_000_000, 3);
        // An ordinary nap: every clock moved by 250 ms.
        assert_eq!(unseen_time(&before, &look(250, 250, 1_000_250, 3)), None);
        // A slow nap on a busy machine is not suspect either.
        assert_eq!(unseen_time(&before, &look(900, 900, 1_000_900, 3)), None);
        // Suspended for a minute: boot time counted it, monotonic did not.
        let w = unseen_time(&before, &look(250, 60_250, 1_060_250, 3)).unwrap();
        assert!(w.contains("suspended"), "{w}");
        // A paused VM resynchronised by NTP: only the wall clock moved on.
        let w = unseen_time(&before, &look(250, 250, 1_120_250, 3)).unwrap();
        assert!(w.contains("wall clock"), "{w}");
        // The wall clock stepped back: nothing to fear for the lease.
        assert_eq!(unseen_time(&before, &look(250, 250, 900_000, 3)), None);
        // The store's clock was seen jumping ahead.
        let w = unseen_time(&before, &look(250, 250, 1_000_250, 4)).unwrap();
        assert!(w.contains("store"), "{w}");
    }

    #[test]
    fn margin_is_bounded_by_a_quarter_of_the_lease() {
        assert_eq!(
            safety_margin(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(60)),
            Duration::from_millis(1100)
        );
        assert!(safety_margin(Duration::from_secs(7200)) < Duration::from_secs(73));
    }
}
