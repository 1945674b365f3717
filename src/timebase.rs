//! Where the clocks are read: the real ones, unless a task runs under a
//! [`TimeSource`] of its own.
//!
//! Every reading of the boot-time clock ([`crate::boottime::BootInstant::now`]),
//! the monotonic clock ([`crate::lease::Look::now`]) and the local wall clock
//! ([`crate::clock::local_wall_ms`]) goes through here, as does the count of
//! forward jumps of the store's clock ([`crate::clock::forward_jumps_anywhere`]).
//! In production no source is set and each is one `try_with` on a task-local
//! that is absent, then the real clock. The deterministic simulation
//! (`src/sim/`) runs each simulated client under a source of its own, so that
//! the real protocol code sees clocks that are skewed, jump, or stand still
//! during a simulated suspend.
//!
//! A source follows a task into the tasks it starts only through [`spawn`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The clocks one process sees.
pub trait TimeSource: Send + Sync {
    /// CLOCK_BOOTTIME: time since an origin, counting suspend.
    fn boot(&self) -> Duration;
    /// CLOCK_MONOTONIC: stands still while the machine is suspended.
    fn mono(&self) -> std::time::Instant;
    /// The local wall clock, ms since the epoch (may be off by hours, may jump).
    fn wall_ms(&self) -> i64;
    /// Records that a store's clock was seen jumping ahead (see
    /// [`crate::clock::forward_jumps_anywhere`]).
    fn note_forward_jump(&self);
    /// Forward jumps recorded so far.
    fn forward_jumps(&self) -> u64;
}

tokio::task_local! {
    static SOURCE: Arc<dyn TimeSource>;
}

/// The source the current task runs under, if any.
pub fn current() -> Option<Arc<dyn TimeSource>> {
    SOURCE.try_with(|s| s.clone()).ok()
}

/// Runs `fut` with `source` as its clocks.
#[cfg_attr(not(test), allow(dead_code))]
pub async fn scope<F: Future>(source: Arc<dyn TimeSource>, fut: F) -> F::Output {
    SOURCE.scope(source, fut).await
}

/// `tokio::spawn`, carrying the current task's time source (if any) into
/// the new task.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match current() {
        Some(src) => tokio::spawn(SOURCE.scope(src, fut)),
        None => tokio::spawn(fut),
    }
}

/// The boot-time clock now: the task's source, else the real clock.
pub fn boot_now() -> Duration {
    SOURCE
        .try_with(|s| s.boot())
        .unwrap_or_else(|_| crate::sys::boottime_now())
}

/// The monotonic clock now: the task's source, else the real clock.
pub fn mono_now() -> std::time::Instant {
    SOURCE
        .try_with(|s| s.mono())
        .unwrap_or_else(|_| std::time::Instant::now())
}

/// The local wall clock now (ms since the epoch), or `None` for the real one.
pub fn wall_ms() -> Option<i64> {
    SOURCE.try_with(|s| s.wall_ms()).ok()
}

/// Records a forward jump with the task's source; `false` when there is none
/// (the caller then counts it process-wide).
pub fn note_forward_jump() -> bool {
    SOURCE.try_with(|s| s.note_forward_jump()).is_ok()
}

/// Forward jumps recorded by the task's source, or `None` when there is none.
pub fn forward_jumps() -> Option<u64> {
    SOURCE.try_with(|s| s.forward_jumps()).ok()
}
