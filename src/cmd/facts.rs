//! What the renderings of a lock derive beyond its fields: times as people
//! and programs read them, when a lease was renewed, whether a holder's
//! process still runs.

use std::time::{Duration, UNIX_EPOCH};

use crate::info::LockInfo;

/// "10:02 UTC" in the local time zone with its abbreviation (what people
/// read on a terminal), or "2026-12-06 10:02 UTC" when that is not today,
/// from ms since the epoch; falls back to UTC when the zone is unknown.
///
/// libc's localtime_r rather than a crate: it is the C library's own answer
/// (TZ, /etc/localtime), the same as date(1) shows. The `time` crate,
/// already in the tree, refuses the local offset in a process with more
/// than one thread (awsflock has the runtime's blocking threads, for DNS),
/// so it would print UTC at random; `jiff` reads the zone itself, but
/// would add its crates for these few characters.
pub(super) fn clock_time(ms: i64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    match (local_time(ms), local_time(now_ms)) {
        (Some((date, hm, zone)), Some((today, _, _))) if date == today => format!("{hm} {zone}"),
        (Some((date, hm, zone)), _) => format!("{date} {hm} {zone}"),
        (None, _) => {
            let t = rfc3339(ms);
            let same_day = rfc3339(now_ms).get(..10) == t.get(..10);
            match (t.get(..10), t.get(11..16)) {
                (Some(_), Some(hm)) if same_day => format!("{hm} UTC"),
                (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
                _ => t,
            }
        }
    }
}

/// ("2026-12-07", "10:52", "UTC") for ms since the epoch, in the local zone.
fn local_time(ms: i64) -> Option<(String, String, String)> {
    let secs = ms.div_euclid(1000) as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return None;
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: glibc points tm_zone at a NUL-terminated static string.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    let zone = match (zone.is_empty(), tm.tm_gmtoff) {
        (false, _) => zone,
        (true, 0) => "UTC".into(),
        (true, off) => format!("{:+03}{:02}", off / 3600, (off.abs() % 3600) / 60),
    };
    Some((
        format!(
            "{:04}-{:02}-{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday
        ),
        format!("{:02}:{:02}", tm.tm_hour, tm.tm_min),
        zone,
    ))
}

/// RFC 3339 (UTC, milliseconds) for a time in ms since the epoch.
pub(super) fn rfc3339(ms: i64) -> String {
    // Stores check their times against this range already; clamp anyway, as
    // humantime cannot show a year past 9999.
    let ms = ms.clamp(0, crate::protocol::record::MAX_TIME_MS);
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// When the lease was last granted or renewed: its expiry less its length.
pub(super) fn renewed_at_ms(info: &LockInfo) -> Option<i64> {
    let lease = i64::try_from(info.lease_duration_s.filter(|d| *d > 0)?).ok()?;
    Some(
        info.expires_at_ms?
            .saturating_sub(lease.saturating_mul(1000)),
    )
}

/// Whether the holder's process still runs, when it runs on this host
/// (`None` elsewhere: a pid means nothing on another machine).
pub(super) fn pid_alive(host: Option<&str>, pid: Option<u32>) -> Option<bool> {
    let (host, pid) = (host?, pid?);
    let here = gethostname::gethostname();
    if here.is_empty() || here.to_string_lossy() != host {
        return None;
    }
    Some(process_runs(pid))
}

/// A process that exists and is not a zombie.
fn process_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => !status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) if std::path::Path::new("/proc/self").exists() => false,
        // No /proc: ask the kernel (EPERM means it exists).
        Err(_) => {
            let Ok(pid) = i32::try_from(pid) else {
                return false;
            };
            // SAFETY: signal 0 only checks that the process exists.
            let exists = unsafe { libc::kill(pid, 0) } == 0;
            exists || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
    }
}
