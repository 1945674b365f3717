//! The `run` supervisor: runs a command under a held lock.
//!
//! ```text
//!  grant too late? ──► do not start, release, exit 4
//!  start the watchdog (armed with the kill time), spawn CMD (own group)
//!     ├─ every renewal ───────► tell the watchdog the new kill time
//!     ├─ signal to awsflock ──► forward to the group (SIGTSTP too)
//!     ├─ lease lost ──────────► SIGTERM+SIGCONT, grace, SIGKILL
//!     ├─ term time reached without a renewal ──► SIGTERM+SIGCONT, then
//!     │                                          SIGKILL at the kill time
//!     ├─ lease suspect ───────► SIGSTOP the group until renewed (SIGCONT) or lost
//!     ├─ CMD stops (Ctrl-Z) ──► stop awsflock too if a job-control shell
//!     │                         (or a SIGTSTP sender) can continue it; when
//!     │                         continued: renew, hand back the terminal,
//!     │                         SIGCONT. Nobody to continue it: keep
//!     │                         renewing, say so
//!     ├─ watchdog died ───────► as lease lost
//!     └─ CMD exits ───────────► stop its leftovers, release, exit as CMD did
//!                               (died of the terminal's Ctrl-C: end by
//!                               SIGINT in the caller's whole group)
//!  awsflock stopped, hung or killed ──► the watchdog SIGKILLs the group at
//!                                       the last kill time it was told
//! ```
//!
//! The kill time (`deadline − margin`) comes from the lease's local
//! deadline, which is computed conservatively from the store's clock, so
//! every process in the group is dead before the lease can expire for
//! anyone else, whether awsflock is running or not. The decisions are pure
//! functions in `decide` ([`stop_times`], [`too_late`], [`next_step`],
//! [`kill_by`], [`wake_at`], [`on_continued`], [`on_stopped`],
//! [`interrupted_at_the_terminal`], [`ended_past_its_lease`]); `supervision`
//! carries them out while the command runs and settles its group after;
//! this module starts the command and releases the lock. Processes, signals
//! and the terminal are in [`unix`]. DESIGN.md has the argument and its
//! limits.

mod decide;
mod supervision;
#[cfg(unix)]
pub mod unix;

use std::ffi::OsString;
use std::time::Duration;

use futures_util::Stream;

use crate::boottime::{self, BootInstant as Instant};
use crate::error::Error;
use crate::lease::{LockGuard, Lost};
use crate::output::say;

// The decisions are named from here (the protocol simulation drives them).
pub use decide::*;
use supervision::Supervision;

#[cfg(unix)]
use unix as platform;

/// What to run and how to stop it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The program and its arguments, passed as given (no shell).
    pub program: OsString,
    /// The arguments.
    pub args: Vec<OsString>,
    /// Grace between SIGTERM and SIGKILL when the lease is being lost.
    pub kill_after: Duration,
    /// How often the lease is renewed (to size the grace).
    pub renew_every: Duration,
    /// Exit code when the lease was lost.
    pub lost_exit_code: i32,
    /// Let processes the command left in its group run on after it exits
    /// (without the lock) instead of stopping them before the release.
    pub leave_leftovers: bool,
}

/// The exit signal to end awsflock with, set by [`run`] when the command
/// was killed by a signal (see [`take_exit_signal`]).
static EXIT_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The signal that killed the command of the last [`run`], if any and if
/// awsflock should end by it too (the lease was not lost). The caller ends
/// the process with it once everything is released, as timeout(1) does.
pub fn take_exit_signal() -> Option<i32> {
    match EXIT_SIGNAL.swap(0, std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// A signal that ended a wait for the lock ([`Error::Interrupted`]) ends
/// awsflock too, once everything is done (see [`take_exit_signal`]): a
/// shell whose loop got Ctrl-C stops only if its child died of the signal;
/// an exit with 130 reads as a child that handled Ctrl-C and went on.
pub fn end_by_signal_if_interrupted(e: &Error) {
    if let Error::Interrupted(sig) = e {
        EXIT_SIGNAL.store(*sig, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs the command under `guard` and returns awsflock's exit code: the
/// command's, or `lost_exit_code` if the lease was lost. The lock is released
/// (or, if lost, left to the store) before returning. When the command was
/// killed by signal N, the code is 128+N and [`take_exit_signal`] says N.
///
/// `signals` are the signals to forward to the command's group as they come
/// (awsflock's own, from [`unix::signals`]; any stream of signal numbers).
pub async fn run(
    guard: LockGuard,
    opts: RunOptions,
    signals: impl Stream<Item = i32> + Unpin,
) -> i32 {
    platform::ignore_ttou();
    let own_signals = match platform::supervisor_signals() {
        Ok(s) => s,
        Err(e) => {
            say!("awsflock: error: cannot handle signals: {e}; the command was not started");
            finish_release(guard, None).await;
            return crate::exit::ERROR;
        }
    };
    if let Err((code, lost)) = confirm_suspect_grant(&guard, &opts).await {
        finish_release(guard, lost).await;
        return code;
    }
    let (watchdog, spawned, first_kill) = match start(&guard, &opts) {
        Ok(started) => started,
        Err((code, lost)) => {
            finish_release(guard, lost).await;
            return code;
        }
    };
    let mut s = Supervision::new(guard, opts, spawned, watchdog, first_kill);
    s.supervise(signals, own_signals).await;
    s.finish().await
}

/// When to send SIGTERM and SIGKILL for `guard`'s lease as it is now (see
/// [`stop_times`]).
fn times_now(guard: &LockGuard, opts: &RunOptions) -> (Instant, Instant) {
    // One read of the lease state: no second borrow while one is held.
    let lease = guard.lease();
    stop_times(
        lease.deadline,
        lease.duration,
        opts.renew_every,
        opts.kill_after,
    )
}

/// A lease that is suspect from the start (time passed unseen while it
/// was granted: a paused VM, a suspend) is renewed at once; the command
/// starts only once that renewal confirms it, and not at all if none does
/// by the SIGTERM time: then the exit code and the loss, if any.
async fn confirm_suspect_grant(
    guard: &LockGuard,
    opts: &RunOptions,
) -> Result<(), (i32, Option<Lost>)> {
    let (term_at, _) = times_now(guard, opts);
    if confirmed_by(guard, term_at).await {
        return Ok(());
    }
    let st = guard.watch().borrow().clone();
    say!(
        "awsflock: {}: the lease may have expired while it was granted ({}) and no renewal confirmed it; the command was not started",
        guard.lease().name,
        st.suspect.as_deref().unwrap_or("it was lost")
    );
    Err((opts.lost_exit_code, st.lost))
}

/// Whether the lease may be acted on by `term_at`: at once when it is not
/// suspect (a loss is the supervisor's to handle), else when a renewal
/// clears the suspicion before `term_at` and before the lease is lost.
pub(crate) async fn confirmed_by(guard: &LockGuard, term_at: Instant) -> bool {
    if guard.watch().borrow().suspect.is_none() {
        return true;
    }
    let mut w = guard.watch();
    let _ = boottime::timeout_at(term_at, async {
        loop {
            {
                let st = w.borrow_and_update();
                if st.lost.is_some() || st.suspect.is_none() {
                    return;
                }
            }
            if w.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let st = guard.watch().borrow().clone();
    st.lost.is_none() && st.suspect.is_none()
}

/// Arms the watchdog, checks the grant is not too late, and spawns the
/// command in its own group: the watchdog, the command and the first kill
/// time; or the exit code (and no loss) when the command was not started.
fn start(
    guard: &LockGuard,
    opts: &RunOptions,
) -> Result<(platform::Watchdog, platform::Spawned, Instant), (i32, Option<Lost>)> {
    let lease = guard.lease();
    let mut env = vec![("AWSFLOCK_LOCK", lease.name.clone())];
    if let Some(f) = lease.fence {
        env.push(("AWSFLOCK_FENCE", f.to_string()));
    }
    let (term_at, first_kill) = times_now(guard, opts);
    // The dead man's switch is armed before the command can run.
    let watchdog = match platform::Watchdog::start(first_kill) {
        Ok(w) => w,
        Err(e) => {
            say!("awsflock: error: cannot start the watchdog: {e}; the command was not started");
            return Err((crate::exit::ERROR, None));
        }
    };
    // A grant that took long to arrive may already be due its SIGTERM:
    // starting the command then would run it past the point where it must
    // be stopping. Checked right before the spawn.
    tracing::debug!(
        term_in = ?term_at.saturating_duration_since(Instant::now()),
        kill_in = ?first_kill.saturating_duration_since(Instant::now()),
        "lease granted"
    );
    // What awsflock said comes before what the command says (bounded: a
    // stderr nobody reads holds up the start by this much at most).
    crate::output::flush(Duration::from_millis(100));
    if too_late(Instant::now(), term_at) {
        watchdog.disarm();
        say!(
            "awsflock: {}: the lease arrived too late to run the command safely (the store was slow to answer); the command was not started",
            lease.name
        );
        return Err((opts.lost_exit_code, None));
    }
    match platform::spawn(&opts.program, &opts.args, &env, watchdog.announce_fd()) {
        Ok(spawned) => Ok((watchdog, spawned, first_kill)),
        Err(e) => {
            watchdog.disarm();
            let (code, msg) = platform::spawn_failure(&opts.program, &e);
            say!("awsflock: error: {msg}");
            Err((code, None))
        }
    }
}

/// Releases after the command ended, within bounded time. After a loss, the
/// lease is probably not ours, so one short attempt is enough.
async fn finish_release(guard: LockGuard, lost: Option<Lost>) {
    let name = guard.lease().name;
    let limit = if lost.is_some() {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(15)
    };
    match tokio::time::timeout(limit, guard.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(Error::NotHeld { .. })) if lost.is_some() => {}
        Ok(Err(e)) => say!(
            "awsflock: warning: could not release {name}: {e}; it frees itself when the lease expires"
        ),
        Err(_) => say!(
            "awsflock: warning: could not release {name} in time; it frees itself when the lease expires"
        ),
    }
}
