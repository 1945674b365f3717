//! A lease that renews itself: [`LockGuard`] (its lifecycle is in its docs).
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

use crate::error::{Error, Result};
use crate::request::{AcquireRequest, Lease};
use crate::store::{BoxFuture, LockStore};

/// Why a lease was lost, or is about to be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lost {
    /// The store says the lease is not held any more: it was taken over, or
    /// released by force.
    Taken(String),
    /// No renewal succeeded before the deadline (store unreachable or frozen,
    /// or the runtime too busy to renew).
    Expired(String),
    /// Only from [`LockGuard::expiring`] and [`LockGuard::run_while_held`]:
    /// the lease is not lost yet, but no renewal succeeded in time, so work
    /// under it must stop now to be done before it expires; or time passed
    /// unseen (this machine was suspended, the store's clock jumped) so that
    /// the lease may already be gone.
    Expiring(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Taken(m) => write!(f, "the lease is no longer held ({m})"),
            Lost::Expired(m) => write!(f, "the lease could not be renewed before it expired ({m})"),
            Lost::Expiring(m) => write!(f, "the lease is about to expire ({m})"),
        }
    }
}

impl std::error::Error for Lost {}

/// What a guard publishes to whoever watches it.
#[derive(Debug, Clone)]
pub(crate) struct GuardState {
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
/// Made by [`crate::Store::acquire`], which spawns the renewal task on the
/// current tokio runtime. Renewals need that runtime to run: a runtime
/// blocked by synchronous work delays them, and the lease may then expire,
/// which [`LockGuard::expiring`] and [`LockGuard::lost`] report.
///
/// Dropping the guard stops renewing (the lease then expires on its own);
/// call [`LockGuard::release`] to free the lock at once.
///
/// # Lifecycle
///
/// ```text
///   acquire ──► renew every period ──► … ──► release()
///                  │ renewal fails: retry (same next lease id) until the deadline
///                  │ deadline − safety margin without a renewal: expiring()
///                  │ store says "not held": lost() at once
///                  │ time passed unseen (suspend, store clock jumped): expiring()
///                  └► deadline passes without a renewal: lost()
/// ```
///
/// The deadline is the end of the lease as seen from here, computed
/// conservatively from the store's clock; [`safety_margin`] before it,
/// everything done under the lease must have stopped, which
/// [`LockGuard::run_while_held`] does for the work it runs.
pub struct LockGuard {
    store: Arc<dyn LockStore>,
    state: watch::Receiver<GuardState>,
    pending: Arc<std::sync::Mutex<Option<String>>>,
    renew_now: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.borrow();
        f.debug_struct("LockGuard")
            .field("lease", &st.lease)
            .field("lost", &st.lost)
            .field("suspect", &st.suspect)
            .finish()
    }
}

/// The safety margin kept between the local deadline and the moment
/// everything done under the lease must have stopped: covers clock-rate
/// drift (1%) and the time stopping takes, and is never more than a quarter
/// of the lease. [`LockGuard::expiring`] resolves this long before the
/// deadline.
pub fn safety_margin(lease: Duration) -> Duration {
    (Duration::from_millis(500) + lease / 100).min(lease / 4)
}

/// How long a release may take when no bound is given: a few attempts
/// against a slow store.
const RELEASE_BOUND: Duration = Duration::from_secs(15);

impl LockGuard {
    /// Acquires the lock as `req` says and starts renewing it every
    /// `renew_every` on the current tokio runtime. `cancel` ends a wait early
    /// (see [`LockStore::acquire`]).
    pub(crate) async fn acquire(
        store: Arc<dyn LockStore>,
        req: &AcquireRequest,
        renew_every: Duration,
        cancel: BoxFuture<'_, i32>,
    ) -> Result<LockGuard> {
        if renew_every >= req.lease {
            return Err(Error::usage(format!(
                "the renewal period ({}s) must be shorter than the lease ({}s)",
                renew_every.as_secs_f64(),
                req.lease.as_secs()
            )));
        }
        let (lease, look, suspect) = acquire_looking(store.as_ref(), req, cancel).await?;
        if let Some(w) = &suspect {
            tracing::warn!(
                "{w} while acquiring: the lease may be shorter than written; renewing now"
            );
        }
        let (tx, rx) = watch::channel(GuardState {
            lease,
            lost: None,
            suspect,
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
            look,
        ));
        Ok(LockGuard {
            store,
            state: rx,
            pending,
            renew_now,
            task,
        })
    }

    /// The lease as last renewed (its id changes at each renewal; its fencing
    /// token does not).
    pub fn lease(&self) -> Lease {
        self.state.borrow().lease.clone()
    }

    /// The fencing token of this grant: pass it to whatever the work writes,
    /// so that a write from a holder whose lease was lost can be refused.
    /// `None` only for a lease first granted by awsflock 0.2.0.
    pub fn fence(&self) -> Option<u64> {
        self.state.borrow().lease.fence
    }

    /// Asks for a renewal now instead of at the next period (e.g. to check
    /// the lease after the process was stopped). A loss shows in
    /// [`LockGuard::lost`].
    pub fn renew_now(&self) {
        self.renew_now.notify_one();
    }

    /// A receiver of the guard's state, for watching deadline and loss.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) fn watch(&self) -> watch::Receiver<GuardState> {
        self.state.clone()
    }

    /// Whether the lease is lost already (what [`LockGuard::lost`] would
    /// resolve to at once).
    pub fn is_lost(&self) -> Option<Lost> {
        loss(&self.state)
    }

    /// Resolves when the lease is lost (never, while renewals succeed): taken
    /// over, released by force, or expired because no renewal succeeded
    /// before the deadline. At that point work under the lease should
    /// already have stopped: stop it at [`LockGuard::expiring`], which comes
    /// earlier.
    pub async fn lost(&self) -> Lost {
        let mut rx = self.state.clone();
        loop {
            rx.mark_unchanged();
            if let Some(l) = loss(&rx) {
                return l;
            }
            let _ = rx.changed().await;
        }
    }

    /// Resolves when work under the lease must stop: the lease was lost
    /// (as [`LockGuard::lost`]), or [`safety_margin`] before its deadline
    /// no renewal has succeeded yet ([`Lost::Expiring`]), or time passed
    /// that this process did not see (a suspend, a jump of the store's
    /// clock), so that the lease may already be gone ([`Lost::Expiring`]).
    ///
    /// A renewal that succeeds before then moves the deadline and the wait
    /// goes on; once resolved, the lease may still be renewed later (a
    /// slow store answered), which [`LockGuard::lease`] shows.
    pub async fn expiring(&self) -> Lost {
        let mut rx = self.state.clone();
        loop {
            let (warn_at, id) = {
                let st = rx.borrow_and_update();
                if let Some(l) = &st.lost {
                    return l.clone();
                }
                if let Some(why) = &st.suspect {
                    return Lost::Expiring(why.clone());
                }
                let margin = safety_margin(st.lease.duration);
                let warn_at = st
                    .lease
                    .deadline
                    .checked_sub(margin)
                    .unwrap_or(st.lease.deadline);
                (warn_at, st.lease.lease_id.clone())
            };
            tokio::select! {
                _ = boottime::sleep_until(warn_at) => {
                    if rx.borrow().lease.lease_id == id {
                        return Lost::Expiring("no renewal succeeded in time".into());
                    }
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Lost::Expired("renewal stopped".into());
                    }
                }
            }
        }
    }

    /// Runs `work` while the lease is held, and cancels it (drops the
    /// future) as soon as [`LockGuard::expiring`] resolves: the lease was
    /// lost, or is about to expire, or may be gone. Returns the work's
    /// output, or why it was cancelled.
    ///
    /// Cancellation happens at the work's next `.await`: work that blocks
    /// the thread cannot be cancelled, and delays renewals too.
    pub async fn run_while_held<F: std::future::Future>(
        &self,
        work: F,
    ) -> std::result::Result<F::Output, Lost> {
        tokio::select! {
            biased;
            lost = self.expiring() => Err(lost),
            out = work => Ok(out),
        }
    }

    /// Stops renewing and releases the lock, within about 15 seconds (see
    /// [`LockGuard::release_within`]).
    pub async fn release(self) -> Result<()> {
        self.release_within(RELEASE_BOUND).await
    }

    /// Stops renewing and releases the lock, giving up after `limit`
    /// (the lock then frees itself when the lease expires).
    ///
    /// `Ok` means the lease this guard last saw confirmed was held, without
    /// a gap, until it was released. Otherwise:
    ///
    /// - [`Error::NotHeld`], naming the last lease id the guard saw
    ///   confirmed, when the lease was lost ([`LockGuard::lost`] resolved,
    ///   or its deadline passed), or the store says it is not held. A
    ///   renewal that may have landed without its answer reaching the guard
    ///   is released too, so that it does not block others, but it never
    ///   turns a lost lease into `Ok`: the program never saw it confirmed.
    /// - [`Error::Unavailable`] when the store did not answer in time or
    ///   within `limit`: whether the lock was released is unknown, and it
    ///   frees itself when the lease expires.
    pub async fn release_within(mut self, limit: Duration) -> Result<()> {
        self.task.abort();
        let _ = (&mut self.task).await;
        let (known, lost) = {
            let st = self.state.borrow();
            (st.lease.clone(), st.lost.clone())
        };
        let pending = self.pending.lock().map(|p| p.clone()).unwrap_or(None);
        let store = self.store.clone();
        let name = known.name.clone();
        let work = async {
            let mut result = release_with_retry(store.as_ref(), &known).await;
            if let (Err(Error::NotHeld { .. }), Some(next)) = (&result, &pending) {
                // A renewal may have landed whose answer never came: that
                // lease is ours too, and must not block others.
                let next = Lease {
                    lease_id: next.clone(),
                    ..known.clone()
                };
                result = release_with_retry(store.as_ref(), &next).await;
            }
            result
        };
        let result = match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable(format!(
                "the release of lock {name:?} did not finish within {:.1}s",
                limit.as_secs_f64()
            ))),
        };
        let not_held = |detail: String| Error::NotHeld {
            name: name.clone(),
            lease_id: known.lease_id.clone(),
            detail,
        };
        if let Some(l) = lost {
            return match result {
                Err(e @ Error::Unavailable(_)) => Err(e),
                _ => Err(not_held(format!(" ({l})"))),
            };
        }
        match result {
            // Released, but perhaps under a renewal the guard never saw
            // confirmed, after the lease it knew had run out: the lock may
            // have been free (and taken) in between.
            Ok(()) if known.deadline.remaining().is_zero() => Err(not_held(
                " (its deadline passed before the release; a renewal that was never \
                 confirmed may have kept it)"
                    .into(),
            )),
            Ok(()) => Ok(()),
            Err(Error::NotHeld { detail, .. }) => Err(not_held(detail)),
            Err(e) => Err(e),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why the lease behind `rx` is lost, if it is: as the guard said, or,
/// when the renewal task ended without saying why, expired.
fn loss(rx: &watch::Receiver<GuardState>) -> Option<Lost> {
    if let Some(l) = rx.borrow().lost.clone() {
        return Some(l);
    }
    rx.has_changed()
        .is_err()
        .then(|| Lost::Expired("renewal stopped".into()))
}

/// Releases, retrying transient errors a few times: a lock left held until
/// its lease expires is safe but blocks the fleet for a lease.
///
/// A failed attempt may have landed with its answer lost; the next attempt,
/// a new call, then finds the lease gone. If nobody holds the lock then,
/// the release did what it was for: success.
async fn release_with_retry(store: &dyn LockStore, lease: &Lease) -> Result<()> {
    let (name, mut last) = (lease.name.as_str(), None);
    for attempt in 0..4u32 {
        match store.release_lease(lease).await {
            Err(Error::Unavailable(m)) => {
                crate::store::warn_retrying(&format!("release failed ({m})"), "retrying");
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
pub(crate) struct Look {
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
pub(crate) const UNSEEN_TOLERANCE: Duration = Duration::from_millis(1000);

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
pub(crate) fn unseen_time(before: &Look, now: &Look) -> Option<String> {
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
    store: Arc<dyn LockStore>,
    tx: watch::Sender<GuardState>,
    duration: Duration,
    every: Duration,
    pending: Arc<std::sync::Mutex<Option<String>>>,
    renew_now: Arc<tokio::sync::Notify>,
    look: Look,
) {
    let mut r = Renewer {
        store,
        tx,
        duration,
        pending,
        renew_now,
        look,
    };
    let mut next_renewal = if r.tx.borrow().suspect.is_some() {
        Instant::now()
    } else {
        Instant::now() + every
    };
    loop {
        if let Some(w) = r.nap_until(next_renewal).await {
            r.tx.send_modify(|s| s.suspect = Some(w.clone()));
            warn_after_acting(format!("{w}: the lease may be gone; renewing now")).await;
        }
        let Some(renew_at_once) = r.renew().await else {
            return;
        };
        next_renewal = if renew_at_once {
            Instant::now()
        } else {
            Instant::now() + every
        };
    }
}

/// The renewal task's state: what it renews with, and the clocks as last
/// looked at.
struct Renewer {
    store: Arc<dyn LockStore>,
    tx: watch::Sender<GuardState>,
    duration: Duration,
    /// The next lease id of the renewal in flight (a release uses it too).
    pending: Arc<std::sync::Mutex<Option<String>>>,
    renew_now: Arc<tokio::sync::Notify>,
    look: Look,
}

impl Renewer {
    /// Naps until `due` (or until a renewal is asked for at once), looking
    /// at the clocks at every nap: says why when time went unseen.
    async fn nap_until(&mut self, due: Instant) -> Option<String> {
        loop {
            let left = due.remaining();
            if left.is_zero() {
                return None;
            }
            tokio::select! {
                // Biased so that a simulated run is reproducible: either
                // branch leads to the same look at the clocks.
                biased;
                _ = tokio::time::sleep(left.min(boottime::MAX_NAP)) => {}
                _ = self.renew_now.notified() => return None,
            }
            let now = Look::now();
            let why = unseen_time(&self.look, &now);
            self.look = now;
            if why.is_some() {
                return why;
            }
        }
    }

    /// One renewal, retried with back-off until it lands or the lease is
    /// lost. `Some(true)`: renew again at once (the lease written is
    /// suspect); `Some(false)`: on the timer; `None`: lost (the state says
    /// why).
    async fn renew(&mut self) -> Option<bool> {
        let current = self.tx.borrow().lease.clone();
        // One next lease id per renewal, reused on every retry, so that a
        // renewal that landed but whose answer was lost is recognised.
        let next_id = uuid::Uuid::new_v4().to_string();
        if let Ok(mut p) = self.pending.lock() {
            *p = Some(next_id.clone());
        }
        let mut backoff = Duration::from_millis(100);
        // The clocks are looked at every nap while renewing too (attempts,
        // backoffs): time unseen then (a VM paused with the request in
        // flight or between retries) makes the lease suspect at once, not
        // when an answer comes. `flagged` keeps that suspicion for the
        // renewal's outcome.
        let mut seen = self.look;
        let mut flagged: Option<String> = None;
        loop {
            let left = current.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.lose(Lost::Expired("no renewal succeeded in time".into()));
                return None;
            }
            let attempt = self
                .attempt(&current, &next_id, &mut seen, &mut flagged)
                .await;
            look_again(&self.tx, &mut seen, &mut flagged).await;
            match attempt {
                Ok(Ok(lease)) => return Some(self.renewed(lease, flagged).await),
                Ok(Err(Error::NotHeld { detail, .. })) => {
                    self.taken(&detail, flagged.take());
                    return None;
                }
                Ok(Err(e)) => {
                    crate::store::warn_retrying(&format!("renewal failed: {e}"), "retrying");
                }
                Err(_) => {
                    self.lose(Lost::Expired("the store did not answer".into()));
                    return None;
                }
            }
            let until = Instant::now()
                + backoff.min(current.deadline.saturating_duration_since(Instant::now()));
            while !until.remaining().is_zero() {
                tokio::time::sleep(until.remaining().min(boottime::MAX_NAP)).await;
                look_again(&self.tx, &mut seen, &mut flagged).await;
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One renewal request, given up at the lease's deadline, looking at
    /// the clocks at every nap while it is in flight.
    async fn attempt(
        &self,
        current: &Lease,
        next_id: &str,
        seen: &mut Look,
        flagged: &mut Option<String>,
    ) -> std::result::Result<Result<Lease>, ()> {
        let renew = boottime::timeout_at(
            current.deadline,
            self.store.renew(current, self.duration, next_id),
        );
        tokio::pin!(renew);
        loop {
            tokio::select! {
                // Biased: an answer that is ready wins over a look.
                biased;
                out = &mut renew => break out,
                _ = tokio::time::sleep(boottime::MAX_NAP) => {
                    look_again(&self.tx, seen, flagged).await;
                }
            }
        }
    }

    /// A renewal landed: the new lease in force, suspect if time went
    /// unseen meanwhile (its answer showed the store's clock jumping
    /// ahead, or a nap saw it). Says whether to renew again at once.
    async fn renewed(&mut self, lease: Lease, flagged: Option<String>) -> bool {
        tracing::debug!(lease_id = %lease.lease_id, "renewed");
        if let Ok(mut p) = self.pending.lock() {
            *p = None;
        }
        let now = Look::now();
        let why = unseen_time(&self.look, &now).or(flagged);
        self.look = now;
        self.tx.send_modify(|s| {
            s.lease = lease;
            s.suspect = why.clone();
        });
        let Some(w) = why else {
            return false;
        };
        warn_after_acting(format!(
            "{w}: the lease may be shorter than written; renewing now"
        ))
        .await;
        true
    }

    /// The store refused the renewal: the lease was taken. Time that passed
    /// unseen (a renewal held up by a paused VM answers before the next
    /// look at the clocks) makes the loss suspect too: the deadline missed
    /// that time, so whoever acts under the lease stops at once.
    fn taken(&self, detail: &str, flagged: Option<String>) {
        let why = unseen_time(&self.look, &Look::now()).or(flagged);
        self.tx.send_modify(|s| {
            // Released by force: the store may say by whom.
            s.lost = Some(Lost::Taken(crate::protocol::revoke::lost_reason(detail)));
            if why.is_some() {
                s.suspect = why;
            }
        });
    }

    fn lose(&self, lost: Lost) {
        self.tx.send_modify(|s| s.lost = Some(lost));
    }
}

/// Acquires, looking at the clocks before the acquire and at every nap
/// while it waits: time that passed unseen while the grant was on its way
/// (a VM paused and then resynchronised, a suspend) shortened the lease
/// without the deadline knowing; the lease then starts suspect and is
/// renewed at once. Looking at every nap, not only before and after, keeps
/// a wall clock stepped back early in a long wait from hiding a later
/// pause (the step would offset the pause's forward step). Returns the
/// lease, the last look, and why it is suspect, if it is.
async fn acquire_looking(
    store: &dyn LockStore,
    req: &AcquireRequest,
    cancel: BoxFuture<'_, i32>,
) -> Result<(Lease, Look, Option<String>)> {
    let (mut seen, mut flagged) = (Look::now(), None);
    let acquire = store.acquire(req, cancel);
    tokio::pin!(acquire);
    let lease = loop {
        tokio::select! {
            // Biased so that a simulated run is reproducible.
            biased;
            r = &mut acquire => break r?,
            _ = tokio::time::sleep(boottime::MAX_NAP) => {
                let now = Look::now();
                if let Some(w) = unseen_time(&seen, &now) {
                    flagged.get_or_insert(w);
                }
                seen = now;
            }
        }
    };
    let look = Look::now();
    let suspect = unseen_time(&seen, &look).or(flagged);
    Ok((lease, look, suspect))
}

/// Looks at the clocks while renewing: time unseen since `seen` makes the
/// lease suspect at once (said once per renewal).
async fn look_again(tx: &watch::Sender<GuardState>, seen: &mut Look, flagged: &mut Option<String>) {
    let now = Look::now();
    let before = std::mem::replace(seen, now);
    if let Some(w) = unseen_time(&before, &now) {
        let first = flagged.is_none();
        tx.send_modify(|s| s.suspect = Some(w.clone()));
        *flagged = Some(w.clone());
        if first {
            warn_after_acting(format!("{w}: the lease may be gone; still renewing")).await;
        }
    }
}

/// Warns, once whoever acts under the lease has had its turn: signals
/// first, then words. The command line's log never blocks (its stderr is
/// written by a thread of its own, `src/output.rs`), but a program using
/// the library may log to a writer that does, on the runtime's one thread;
/// such a write would otherwise hold up the pause or kill of the command
/// that the state just published calls for. Call right after publishing
/// the state.
async fn warn_after_acting(msg: String) {
    // The supervisor's task, woken by the published state, runs before
    // this one is polled again.
    tokio::task::yield_now().await;
    tracing::warn!("{msg}");
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
