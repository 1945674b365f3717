//! The `run` supervisor: runs a command under a held lock.
//!
//! ```text
//!  spawn CMD (own process group) ─┬─ signal to awsflock ──► forward to the group
//!                                 ├─ lease lost ──────────► SIGTERM, grace, SIGKILL
//!                                 ├─ deadline - margin - grace reached without a
//!                                 │  renewal ──────────────► SIGTERM, then SIGKILL at
//!                                 │                          deadline - margin
//!                                 └─ CMD exits ───────────► release, exit as CMD did
//! ```
//!
//! The SIGKILL is scheduled from the lease's local deadline, which is computed
//! conservatively from the store's clock, so every process in the group is
//! dead before the lease can expire for anyone else. DESIGN.md has the
//! argument and its limits.

#[cfg(unix)]
pub mod unix;

use std::ffi::OsString;
use std::time::Duration;

use crate::boottime::{self, BootInstant as Instant};

use futures_util::StreamExt;

use crate::error::Error;
use crate::lease::{LockGuard, Lost, safety_margin};
use crate::output::say;

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
}

/// When to send SIGTERM and SIGKILL for a lease whose local deadline is
/// `deadline`: SIGKILL a safety margin before it, SIGTERM a grace before
/// that. The grace is `kill_after`, shortened when the lease is too short for
/// it, so that renewals always get a chance before the command is warned.
pub fn stop_times(
    deadline: Instant,
    lease: Duration,
    renew_every: Duration,
    kill_after: Duration,
) -> (Instant, Instant) {
    let margin = safety_margin(lease);
    let room = lease.saturating_sub(margin).saturating_sub(renew_every) / 2;
    let grace = kill_after.min(room);
    let kill_at = deadline.checked_sub(margin).unwrap_or(deadline);
    let term_at = kill_at.checked_sub(grace).unwrap_or(kill_at);
    (term_at, kill_at)
}

/// Runs the command under `guard` and returns awsflock's exit code: the
/// command's, or `lost_exit_code` if the lease was lost. The lock is released
/// (or, if lost, left to the store) before returning.
pub async fn run(
    guard: LockGuard,
    opts: RunOptions,
    signals: &mut signal_hook_tokio::Signals,
) -> i32 {
    let lease = guard.lease();
    let mut env = vec![("AWSFLOCK_LOCK", lease.name.clone())];
    if let Some(f) = lease.fence {
        env.push(("AWSFLOCK_FENCE", f.to_string()));
    }
    let mut spawned = match platform::spawn(&opts.program, &opts.args, &env) {
        Ok(s) => s,
        Err(e) => {
            let (code, msg) = platform::spawn_failure(&opts.program, &e);
            say!("awsflock: error: {msg}");
            finish_release(guard, None).await;
            return code;
        }
    };
    let watchdog = platform::Watchdog::start(spawned.pgid);
    let mut state = guard.watch();
    let mut lost: Option<Lost> = None;
    // Once stopping, the instant at which SIGKILL goes out.
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;

    let status = loop {
        let (term_at, deadline_kill) = {
            let s = state.borrow();
            stop_times(
                s.lease.deadline,
                lease.duration,
                opts.renew_every,
                opts.kill_after,
            )
        };
        let term_sleep = boottime::sleep_until(term_at);
        let kill_sleep = boottime::sleep_until(kill_at.unwrap_or(deadline_kill));
        tokio::select! {
            status = spawned.child.wait() => break status,
            Some(sig) = signals.next() => {
                tracing::debug!(sig, "forwarding signal to the command's group");
                spawned.signal_group(sig);
            }
            changed = state.changed(), if lost.is_none() => {
                let now_lost = match changed {
                    Ok(()) => state.borrow().lost.clone(),
                    Err(_) => Some(Lost::Expired("renewal stopped".into())),
                };
                if let Some(l) = now_lost {
                    say!("awsflock: {}: {l}; stopping the command", lease.name);
                    spawned.signal_group(libc::SIGTERM);
                    let grace = opts.kill_after.min(deadline_kill.saturating_duration_since(Instant::now()));
                    kill_at = Some(Instant::now() + grace);
                    lost = Some(l);
                }
            }
            _ = term_sleep, if kill_at.is_none() => {
                say!(
                    "awsflock: {}: the lease could not be renewed and expires soon; stopping the command",
                    lease.name
                );
                spawned.signal_group(libc::SIGTERM);
                kill_at = Some(deadline_kill);
                lost = Some(Lost::Expired("no renewal succeeded in time".into()));
            }
            _ = kill_sleep, if kill_at.is_some() && !killed => {
                spawned.signal_group(libc::SIGKILL);
                killed = true;
            }
        }
    };
    if lost.is_some() {
        // The command is gone; anything it left in its group must not go on
        // running without the lock.
        spawned.signal_group(libc::SIGKILL);
    }
    watchdog.disarm();
    spawned.restore_terminal();
    let code = match status {
        Ok(st) => platform::exit_code(st),
        Err(e) => {
            say!("awsflock: error: lost track of the command: {e}");
            crate::exit::ERROR
        }
    };
    match lost {
        Some(l) => {
            say!("awsflock: error: lease on {} lost: {l}", lease.name);
            finish_release(guard, Some(l)).await;
            opts.lost_exit_code
        }
        None => {
            finish_release(guard, None).await;
            code
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_lands_before_the_deadline_and_term_before_kill() {
        let now = Instant::now();
        let lease = Duration::from_secs(60);
        let (term, kill) = stop_times(now + lease, lease, lease / 3, Duration::from_secs(10));
        assert!(kill < now + lease);
        assert_eq!(kill - term, Duration::from_secs(10));
        // A 6 s lease cannot afford a 10 s grace: it is shortened, and SIGTERM
        // still comes after the first renewal was due.
        let lease = Duration::from_secs(6);
        let (term, kill) = stop_times(now + lease, lease, lease / 3, Duration::from_secs(10));
        assert!(kill < now + lease && term < kill);
        assert!(term > now + lease / 3, "{:?}", term - now);
    }
}
