//! Platform-specific pieces that are not about running the command (that
//! lives in [`crate::supervise::unix`]): the boot-time clock, and what this
//! host says about its boot and its processes ([`host`]).

#[cfg_attr(not(any(feature = "cli", feature = "file")), allow(dead_code))]
pub mod host;

use std::time::Duration;

/// The boot-time clock: CLOCK_BOOTTIME on Linux, which keeps counting during
/// suspend; CLOCK_MONOTONIC elsewhere.
pub fn boottime_now() -> Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let id = nix::time::ClockId::CLOCK_BOOTTIME;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let id = nix::time::ClockId::CLOCK_MONOTONIC;
    match nix::time::clock_gettime(id) {
        Ok(ts) => Duration::new(
            ts.tv_sec().max(0) as u64,
            ts.tv_nsec().clamp(0, 999_999_999) as u32,
        ),
        // Both clocks always exist on the platforms above; if one did not,
        // the process-local monotonic clock is still monotonic.
        Err(_) => {
            static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            BASE.get_or_init(std::time::Instant::now).elapsed()
        }
    }
}
