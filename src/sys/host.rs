//! What this host says about itself and its processes, for the directory
//! store and the supervisor: which boot this is, a clock that every process
//! on the kernel reads alike and that never steps, and whether a lease's
//! holder (and its watchdog) still lives.
//!
//! - **Boot id**: `/proc/sys/kernel/random/boot_id`, a random UUID chosen
//!   at each boot and the same in every container on the kernel.
//! - **Host boot-time clock**: CLOCK_BOOTTIME ([`BootInstant`]), which
//!   counts from boot, keeps counting during suspend and is never stepped by
//!   `date`, NTP or an administrator. A time namespace may add an offset to
//!   it (`/proc/self/timens_offsets`); it is taken off, so every process on
//!   the kernel reads the same value.
//! - **Holder identity**: a pid names a process only within one pid
//!   namespace and until the process dies and the number is reused. So a
//!   holder is recorded as its pid namespace (device and inode of
//!   `/proc/self/ns/pid`) and its start time (field 22 of `/proc/PID/stat`,
//!   clock ticks since boot); a pid is judged only by a process in the same
//!   namespace whose `/proc` shows that namespace.

use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::boottime::BootInstant;

/// This boot's id, or `None` where the kernel does not say (no `/proc`).
pub fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// The boot-time offset of this process's time namespace, in ns (0 outside
/// one, and on kernels without time namespaces).
fn boottime_offset_ns() -> i128 {
    static OFFSET: OnceLock<i128> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::fs::read_to_string("/proc/self/timens_offsets")
            .ok()
            .and_then(|text| parse_offset(&text))
            .unwrap_or(0)
    })
}

/// The `boottime SECS NANOS` line of `timens_offsets`, in ns.
fn parse_offset(text: &str) -> Option<i128> {
    let line = text.lines().find(|l| l.starts_with("boottime"))?;
    let mut f = line.split_whitespace().skip(1);
    let secs: i128 = f.next()?.parse().ok()?;
    let nanos: i128 = f.next()?.parse().ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// `t` on the host's boot-time clock, in whole ms (rounded down): the same
/// reading in every process on this kernel.
pub fn host_ms(t: BootInstant) -> i64 {
    let ns = t.since_origin().as_nanos() as i128 - boottime_offset_ns();
    ns.div_euclid(1_000_000) as i64
}

/// The host's boot-time clock now, in ms, rounded up: a lease stamped from
/// it is never shorter than asked.
pub fn host_ms_now_ceil() -> i64 {
    let ns = BootInstant::now().since_origin().as_nanos() as i128 - boottime_offset_ns();
    (ns + 999_999).div_euclid(1_000_000) as i64
}

/// The local instant at which the host's boot-time clock reads `ms`.
pub fn instant_at(ms: i64) -> BootInstant {
    let ns = i128::from(ms) * 1_000_000 + boottime_offset_ns();
    BootInstant::from_origin(Duration::from_nanos(
        ns.clamp(0, i128::from(u64::MAX)) as u64
    ))
}

/// Who holds a lease, precisely enough to tell whether it still lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    /// The holder's pid namespace: `DEV:INODE` of `/proc/self/ns/pid`.
    pub pid_ns: String,
    /// The holder's start time, in clock ticks since boot.
    pub start: u64,
}

/// The state letter and the start time in a `/proc/PID/stat` line.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    // The command name is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 come next; field 22 is the start time.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn pid_ns() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self/ns/pid").ok()?;
    Some(format!("{}:{}", m.dev(), m.ino()))
}

/// This process, or `None` when `/proc` cannot say who it is (not
/// mounted, or mounted for another pid namespace than ours).
pub fn me() -> Option<&'static ProcId> {
    static ME: OnceLock<Option<ProcId>> = OnceLock::new();
    ME.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // /proc shows our namespace only if it calls us by our own pid.
        let pid: u32 = stat.split_whitespace().next()?.parse().ok()?;
        if pid != std::process::id() {
            return None;
        }
        let (_, start) = parse_stat(&stat)?;
        Some(ProcId {
            pid_ns: pid_ns()?,
            start,
        })
    })
    .as_ref()
}

/// The environment variable that names, in a `run` holder's watchdog
/// (`awsflock __watchdog`), the holder it guards: `PID START` (see
/// [`ProcId`]). The supervisor sets it when it starts the watchdog.
pub const WATCHDOG_OF: &str = "AWSFLOCK_WATCHDOG_OF";

/// The pids in `/proc` (as its directory names), or `None` without a
/// readable `/proc`.
pub fn pids() -> Option<impl Iterator<Item = String>> {
    let dir = std::fs::read_dir("/proc").ok()?;
    Some(dir.flatten().filter_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        name.bytes().all(|b| b.is_ascii_digit()).then_some(name)
    }))
}

/// Whether a watchdog of the holder `pid` (started at `start`) may still
/// be running, in our pid namespace. A dead `run` holder's command group is
/// known dead only once its watchdog, which kills the group when its holder
/// dies and then exits, is gone: until then a grandchild of the command may
/// still run (the watchdog stopped, or not yet scheduled on a busy host).
/// A watchdog whose environment we may not read (another user's) counts as
/// one of this holder's: the caller then waits the lease out, as it does
/// for any holder it cannot judge.
pub fn watchdog_running(pid: u32, start: u64) -> bool {
    let wanted = format!("{WATCHDOG_OF}={pid} {start}");
    let Some(pids) = pids() else {
        return true;
    };
    for name in pids {
        // `PROGRAM __watchdog PGID`: the command line is readable by all.
        let Ok(cmdline) = std::fs::read(format!("/proc/{name}/cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).nth(1) != Some(b"__watchdog".as_slice()) {
            continue;
        }
        let state = std::fs::read_to_string(format!("/proc/{name}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s));
        if matches!(state, Some(('Z' | 'X', _)) | None) {
            continue;
        }
        match std::fs::read(format!("/proc/{name}/environ")) {
            Ok(env) => {
                if env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
                    return true;
                }
            }
            Err(_) => return true,
        }
    }
    false
}

/// What is known of a recorded holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It runs.
    Alive,
    /// It has exited (or is a zombie), or its pid now names another process.
    Dead,
    /// Not ours to judge: another pid namespace, or `/proc` cannot tell.
    Unknown,
}

/// Whether process `pid`, recorded as `id`, still runs. Only a process in
/// the same pid namespace (and boot, which the caller checks) can tell.
pub fn liveness(pid: u32, id: &ProcId) -> Liveness {
    let Some(mine) = me() else {
        return Liveness::Unknown;
    };
    if mine.pid_ns != id.pid_ns {
        return Liveness::Unknown;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return Liveness::Unknown;
    };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match parse_stat(&stat) {
            Some(('Z' | 'X', _)) => Liveness::Dead,
            Some((_, start)) if start != id.start => Liveness::Dead,
            Some(_) => Liveness::Alive,
            None => Liveness::Unknown,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Confirm with the kernel itself, not only /proc.
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
                Err(nix::errno::Errno::ESRCH) => Liveness::Dead,
                _ => Liveness::Unknown,
            }
        }
        Err(_) => Liveness::Unknown,
    }
}

/// The facts about this host that the directory store judges leases by,
/// behind one seam: [`LocalHost`] reads them from the kernel (the functions
/// above); the simulation (`src/sim/dir.rs`) supplies a simulated host's.
/// The clock functions take no `self`: the store judges a record's expiry
/// where it has no instance (`CasStore::expiry_ms`).
pub trait Host: Send + Sync + 'static {
    /// This boot's id ([`boot_id`]).
    fn boot_id() -> Option<&'static str>;
    /// `t` on the host's boot-time clock, ms rounded down ([`host_ms`]).
    fn host_ms(t: BootInstant) -> i64;
    /// The host's boot-time clock now, ms rounded up ([`host_ms_now_ceil`]).
    fn host_ms_now_ceil() -> i64;
    /// The local instant at which the host's clock reads `ms` ([`instant_at`]).
    fn instant_at(ms: i64) -> BootInstant;
    /// This process ([`me`]).
    fn me(&self) -> Option<ProcId>;
    /// This process's pid, as written in the records it grants.
    fn pid(&self) -> u32;
    /// Whether `pid`, recorded as `id`, still runs ([`liveness`]).
    fn liveness(&self, pid: u32, id: &ProcId) -> Liveness;
    /// Whether a watchdog of that holder may still run ([`watchdog_running`]).
    fn watchdog_running(&self, pid: u32, start: u64) -> bool;
}

/// This host, as its kernel describes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalHost;

impl Host for LocalHost {
    fn boot_id() -> Option<&'static str> {
        boot_id()
    }

    fn host_ms(t: BootInstant) -> i64 {
        host_ms(t)
    }

    fn host_ms_now_ceil() -> i64 {
        host_ms_now_ceil()
    }

    fn instant_at(ms: i64) -> BootInstant {
        instant_at(ms)
    }

    fn me(&self) -> Option<ProcId> {
        me().cloned()
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn liveness(&self, pid: u32, id: &ProcId) -> Liveness {
        liveness(pid, id)
    }

    fn watchdog_running(&self, pid: u32, start: u64) -> bool {
        watchdog_running(pid, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stat_line() {
        let line =
            "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 5000 300";
        assert_eq!(parse_stat(line), Some(('S', 123456)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_the_time_namespace_offset() {
        let text = "monotonic           0         0\nboottime       100000         5\n";
        assert_eq!(parse_offset(text), Some(100_000_000_000_005));
        assert_eq!(parse_offset("monotonic 0 0\n"), None);
    }

    #[test]
    fn knows_this_process_and_tells_a_reused_pid() {
        let me = me().expect("/proc shows this process");
        let pid = std::process::id();
        assert_eq!(liveness(pid, me), Liveness::Alive);
        let reused = ProcId {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(liveness(pid, &reused), Liveness::Dead);
        let elsewhere = ProcId {
            pid_ns: "0:1".into(),
            ..me.clone()
        };
        assert_eq!(liveness(pid, &elsewhere), Liveness::Unknown);
    }

    #[test]
    fn a_zombie_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let (_, start) = parse_stat(&stat()).unwrap();
        let id = ProcId {
            pid_ns: me().unwrap().pid_ns.clone(),
            start,
        };
        assert_eq!(liveness(pid, &id), Liveness::Alive);
        child.kill().unwrap();
        // Not reaped yet: a zombie, which kill(pid, 0) still finds.
        while parse_stat(&stat()).unwrap().0 != 'Z' {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(liveness(pid, &id), Liveness::Dead);
        child.wait().unwrap();
        assert_eq!(liveness(pid, &id), Liveness::Dead);
    }

    #[test]
    fn host_clock_round_trips() {
        let now = BootInstant::now();
        let ms = host_ms(now);
        let back = instant_at(ms);
        assert!(back <= now && now - back < Duration::from_millis(1));
        assert!(host_ms_now_ceil() >= ms);
    }
}
