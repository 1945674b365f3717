//! A simulated client: what it does and suffers (its [`Spec`], drawn from
//! the seed), its machine's clocks and its faults ([`Who`]), and its acting
//! intervals as the invariants judge them. Ours run in [`super::ours`], the
//! awsflock 0.2.0 model in [`super::v020`], both started by
//! [`super::schedule`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::clock::{EPOCH_MS, PauseKind, SimClock};
use super::model::{Interval, Sharing};
use super::world::World;
use crate::error::Error;
use crate::timebase::TimeSource;

pub const LOCK: &str = "L";

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// What one client does and suffers, drawn from the seed.
#[derive(Debug, Clone)]
pub struct Spec {
    pub v020: bool,
    pub wait: Option<Duration>,
    pub cycles: u32,
    pub skew_ms: i64,
    pub crash_at: Option<Duration>,
    pub pause: Option<(Duration, Duration, PauseKind)>,
    pub pause_after_grant: Option<(u32, Duration, PauseKind)>,
    /// On the directory store's host: the `run` process and its command
    /// stopped (a job stop; its watchdog runs on) at a time, for a time.
    pub stop: Option<(Duration, Duration)>,
    pub wall_jump: Option<(Duration, i64)>,
    pub ignores_term: bool,
    pub work: Vec<Duration>,
    pub think: Vec<Duration>,
}

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub lease: Duration,
    pub renew_every: Duration,
    pub kill_after: Duration,
}

/// A client's acting state, shared with its fault tasks.
#[derive(Default)]
pub struct Act {
    pub open: Option<(Duration, Option<u64>, Option<Duration>)>,
    /// The true instant of the current kill time (computed while awake).
    pub kill_true: Option<Duration>,
    /// A VM pause (the boot-time clock missed time) fell within this
    /// acquire or hold: the paused-holder case (DESIGN.md). Its deadline
    /// missed the pause, so invariant (d) cannot judge it; invariant (a)
    /// tolerates it only until `stale_until` (its wake plus
    /// [`NOTICE_WITHIN`]), by which the lease must have seen the unseen
    /// time and the supervisor stopped the command.
    pub stale: bool,
    pub stale_until: Duration,
    /// When the wall clock was last stepped back. A step back during a VM
    /// pause, or within one nap of waking, can leave the wall clock no
    /// further ahead than the boot-time clock, and nothing local can tell
    /// (DESIGN.md: "a VM paused whose clocks neither count the pause nor
    /// get resynchronised"). Until its next renewal's answer shows the
    /// store's clock ahead, the holder cannot know: such a pause is
    /// tolerated for `unresynced` after waking.
    pub stepped_back_at: Option<Duration>,
    pub unresynced: Duration,
    /// When the current VM pause began, and when the last one ended.
    pub paused_at: Duration,
    pub woke_at: Option<Duration>,
    /// Acquiring or holding.
    pub busy: bool,
    pub vm_paused: bool,
}

/// How soon after waking from a VM pause a holder must have stopped
/// acting: one nap of the lease's clock watch ([`crate::boottime::MAX_NAP`]),
/// then the supervisor's reaction (1–20 ms), with room for timer rounding.
pub const NOTICE_WITHIN: Duration = Duration::from_millis(400);

pub struct Who {
    pub w: Arc<World>,
    pub i: usize,
    pub name: String,
    pub mach: Arc<SimClock>,
    pub act: Mutex<Act>,
}

impl Who {
    pub fn log(&self, what: std::fmt::Arguments<'_>) {
        self.w.log(&self.name, what);
    }

    /// Whether this client is an awsflock 0.2.0.
    pub fn v020(&self) -> bool {
        self.w
            .live
            .lock()
            .unwrap()
            .clients
            .get(self.i)
            .is_some_and(|c| c.1)
    }

    pub fn open(&self, fence: Option<u64>) {
        let mut a = self.act.lock().unwrap();
        if a.open.is_none() {
            a.open = Some((self.w.t(), fence, a.stale.then_some(a.stale_until)));
        }
    }

    pub fn close(&self) {
        self.close_at(self.w.t());
    }

    /// Ends the acting interval at `end` (true time, not before now).
    pub fn close_at(&self, end: Duration) {
        let (iv, now_excused) = {
            let mut a = self.act.lock().unwrap();
            (a.open.take(), a.stale.then_some(a.stale_until))
        };
        if let Some((start, fence, excused_until)) = iv {
            // A wall step back within one nap of waking extends the excuse
            // of a hold that was excused already (`stale_until`, see the
            // wall-jump fault), also when it came after the command started.
            let excused_until = excused_until.and(excused_until.max(now_excused));
            if end > start {
                let shared = match &self.w.sharing {
                    Sharing::Lock => false,
                    Sharing::Semaphore(_) => !self.v020(),
                    Sharing::ReadWrite(kinds) => !self.v020() && kinds[self.i],
                };
                self.w.intervals.lock().unwrap().push(Interval {
                    client: self.i,
                    start,
                    end,
                    fence,
                    excused_until,
                    shared,
                });
                self.w.check_overlaps_of(self.i, start, end, excused_until);
            }
        }
    }

    pub async fn pause_for(&self, len: Duration, kind: PauseKind) {
        if self.mach.paused() || (self.w.dir && super::dir::any_paused(&self.w)) {
            return; // one pause at a time (on the directory's host, of any process)
        }
        self.log(format_args!(
            "paused ({kind:?}) for {:.3}s",
            len.as_secs_f64()
        ));
        self.close();
        let began = self.w.t();
        self.act.lock().unwrap().paused_at = began;
        // On the directory store's one host, the pause is every client's
        // (but a process's stop).
        let paused: Vec<usize> = if self.w.dir && kind != PauseKind::Stop {
            (0..self.w.live.lock().unwrap().clients.len()).collect()
        } else {
            vec![self.i]
        };
        let recs: Vec<usize> = {
            let mut live = self.w.live.lock().unwrap();
            paused
                .iter()
                .map(|&c| {
                    live.pauses.push((c, began, None));
                    live.pauses.len() - 1
                })
                .collect()
        };
        if kind == PauseKind::Stop {
            // Continued whatever becomes of the process.
            super::dir::stop_process(&self.w, self.i, &self.mach, began + len);
            let (w, i, mach) = (self.w.clone(), self.i, self.mach.clone());
            let _ = tokio::spawn(async move {
                tokio::time::sleep(len).await;
                super::dir::continue_process(&w, i, &mach);
                for rec in recs {
                    w.live.lock().unwrap().pauses[rec].2 = Some(w.t());
                }
            })
            .await;
        } else if self.w.dir {
            // The host's pause ends whatever becomes of this process.
            super::dir::pause_host(&self.w, kind, began + len);
            let w = self.w.clone();
            let _ = tokio::spawn(async move {
                tokio::time::sleep(len).await;
                super::dir::resume_host(&w);
                for rec in recs {
                    w.live.lock().unwrap().pauses[rec].2 = Some(w.t());
                }
            })
            .await;
        } else {
            self.mach.pause(kind);
            tokio::time::sleep(len).await;
            self.mach.resume();
            for rec in recs {
                self.w.live.lock().unwrap().pauses[rec].2 = Some(self.w.t());
            }
        }
        let mut a = self.act.lock().unwrap();
        // The directory store's leases are on the host's boot-time clock,
        // which a VM pause stops for every process alike: no holder of it
        // is in the paused-holder case, and none is excused.
        if kind == PauseKind::Vm && !self.w.dir {
            a.vm_paused = true;
            if a.busy {
                a.stale = true;
                let t = self.w.t();
                let hidden = a.stepped_back_at.is_some_and(|b| b >= a.paused_at);
                a.stale_until = t + if hidden { a.unresynced } else { NOTICE_WITHIN };
            }
            a.woke_at = Some(self.w.t());
        }
        drop(a);
        self.log(format_args!("woke"));
    }
}

impl Spec {
    /// Client `v020`'s part of the schedule, from `r`, in this order.
    pub fn draw(r: &mut fastrand::Rng, v020: bool, lease_ms: u64, dir: bool) -> Spec {
        let cycles = r.u32(1..=3);
        let big_skew = !v020 && r.f64() < 0.2;
        let mut spec = Spec {
            v020,
            wait: match r.u32(0..4) {
                0 => Some(Duration::ZERO),
                1 => Some(ms(r.u64(0..3 * lease_ms))),
                _ => None,
            },
            cycles,
            skew_ms: if big_skew {
                let h = r.i64(1..=3) * 3_600_000 + r.i64(-5000..5000);
                if r.bool() { h } else { -h }
            } else {
                r.i64(-500..=500)
            },
            crash_at: (r.f64() < 0.15).then(|| ms(r.u64(0..6 * lease_ms))),
            pause: (!v020 && r.f64() < 0.2).then(|| {
                (
                    ms(r.u64(0..6 * lease_ms)),
                    ms(r.u64(50..2 * lease_ms)),
                    if r.bool() {
                        PauseKind::Vm
                    } else {
                        PauseKind::Suspend
                    },
                )
            }),
            stop: None,
            pause_after_grant: (!v020 && r.f64() < 0.15).then(|| {
                (
                    r.u32(0..cycles),
                    ms(r.u64(50..2 * lease_ms)),
                    if r.bool() {
                        PauseKind::Vm
                    } else {
                        PauseKind::Suspend
                    },
                )
            }),
            wall_jump: (!v020 && r.f64() < 0.15)
                .then(|| (ms(r.u64(0..6 * lease_ms)), r.i64(-120_000..120_000))),
            ignores_term: r.bool(),
            work: (0..cycles).map(|_| ms(r.u64(0..2 * lease_ms))).collect(),
            think: (0..cycles).map(|_| ms(r.u64(0..lease_ms))).collect(),
        };
        if dir {
            spec.skew_ms = 0; // the host's wall clock is skewed once
            spec.stop =
                (r.f64() < 0.2).then(|| (ms(r.u64(0..6 * lease_ms)), ms(r.u64(50..2 * lease_ms))));
        }
        spec
    }

    /// Whether it crashes with its wall clock far ahead: if it dies between
    /// its first write (stamped on that clock) and the rewrite, the lock
    /// stays blocked for the skew plus the lease (DESIGN.md).
    pub fn crashes_far_ahead(&self) -> bool {
        self.crash_at.is_some() && self.skew_ms > 600_000
    }
}

/// Invariant (c): the holder's local deadline is not beyond the expiry the
/// store holds for its lease (in store time, at confirmation).
pub fn check_deadline(who: &Who, lease: &crate::request::Lease) {
    let written = who
        .w
        .table
        .lock()
        .unwrap()
        .written_expiry
        .get(&lease.lease_id)
        .copied();
    let Some(written) = written else { return };
    if who.w.dir {
        // The directory store's expiry is on the host's boot-time clock,
        // which every process reads alike, paused or not.
        let deadline_ms = lease.deadline.since_origin().as_millis() as i64;
        if deadline_ms > written {
            who.w.violation(format!(
                "{}: deadline {deadline_ms} ms (host boot-time clock) lies beyond the stored expiry {written} ms by {} ms (invariant c)",
                who.name,
                deadline_ms - written
            ));
        }
        return;
    }
    if who.act.lock().unwrap().vm_paused {
        return; // its boot-time clock missed time; checked by (a) instead
    }
    let now_boot = who.mach.boot();
    let ahead = lease.deadline.since_origin().as_millis() as i64 - now_boot.as_millis() as i64;
    let store_at_deadline = who.w.store_ms() + ahead;
    let slack = who.w.forward_jumped_ms();
    if store_at_deadline > written + slack {
        who.w.violation(format!(
            "{}: deadline {:.3}s (store time) lies beyond the stored expiry {:.3}s by {} ms (invariant c)",
            who.name,
            (store_at_deadline - EPOCH_MS) as f64 / 1000.0,
            (written - EPOCH_MS) as f64 / 1000.0,
            store_at_deadline - written
        ));
    }
}

pub fn short(e: &Error) -> &'static str {
    match e {
        Error::NotAcquired { .. } => "held by another",
        Error::NotHeld { .. } => "not held",
        Error::Unavailable(_) => "store unavailable",
        _ => "other error",
    }
}
