//! The simulated clients: ours through the real `LockGuard` and the real
//! supervisor decisions, and a model of awsflock 0.2.0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::clock::{EPOCH_MS, PauseKind, SimClock};
use super::model::{AcqEnd, Attempt, Faults, Interval, LiveLog, Report, Sharing, Store};
use super::net::SimStore;
use super::state::Table;
use super::world::World;
use crate::boottime::{self, BootInstant};
use crate::error::Error;
use crate::lease::LockGuard;
use crate::store::dynamodb::{Item, attr, get_i64, get_s, n, s};
use crate::store::{AcquireRequest, LockStore};
use crate::supervise::{Facts, Pause, Phase, Step, confirmed_by, next_step, stop_times, too_late};
use crate::timebase::{self, TimeSource};

const LOCK: &str = "L";

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// What one client does and suffers, drawn from the seed.
#[derive(Debug, Clone)]
struct Spec {
    v020: bool,
    wait: Option<Duration>,
    cycles: u32,
    skew_ms: i64,
    crash_at: Option<Duration>,
    pause: Option<(Duration, Duration, PauseKind)>,
    pause_after_grant: Option<(u32, Duration, PauseKind)>,
    /// On the directory store's host: the `run` process and its command
    /// stopped (a job stop; its watchdog runs on) at a time, for a time.
    stop: Option<(Duration, Duration)>,
    wall_jump: Option<(Duration, i64)>,
    ignores_term: bool,
    work: Vec<Duration>,
    think: Vec<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Params {
    lease: Duration,
    renew_every: Duration,
    kill_after: Duration,
}

/// A client's acting state, shared with its fault tasks.
#[derive(Default)]
struct Act {
    open: Option<(Duration, Option<u64>, Option<Duration>)>,
    /// The true instant of the current kill time (computed while awake).
    kill_true: Option<Duration>,
    /// A VM pause (the boot-time clock missed time) fell within this
    /// acquire or hold: the paused-holder case (DESIGN.md). Its deadline
    /// missed the pause, so invariant (d) cannot judge it; invariant (a)
    /// tolerates it only until `stale_until` (its wake plus
    /// [`NOTICE_WITHIN`]), by which the lease must have seen the unseen
    /// time and the supervisor stopped the command.
    stale: bool,
    stale_until: Duration,
    /// When the wall clock was last stepped back. A step back during a VM
    /// pause, or within one nap of waking, can leave the wall clock no
    /// further ahead than the boot-time clock, and nothing local can tell
    /// (DESIGN.md: "a VM paused whose clocks neither count the pause nor
    /// get resynchronised"). Until its next renewal's answer shows the
    /// store's clock ahead, the holder cannot know: such a pause is
    /// tolerated for `unresynced` after waking.
    stepped_back_at: Option<Duration>,
    unresynced: Duration,
    /// When the current VM pause began, and when the last one ended.
    paused_at: Duration,
    woke_at: Option<Duration>,
    /// Acquiring or holding.
    busy: bool,
    vm_paused: bool,
}

/// How soon after waking from a VM pause a holder must have stopped
/// acting: one nap of the lease's clock watch ([`crate::boottime::MAX_NAP`]),
/// then the supervisor's reaction (1–20 ms), with room for timer rounding.
const NOTICE_WITHIN: Duration = Duration::from_millis(400);

struct Who {
    w: Arc<World>,
    i: usize,
    name: String,
    mach: Arc<SimClock>,
    act: Mutex<Act>,
}

impl Who {
    fn log(&self, what: std::fmt::Arguments<'_>) {
        self.w.log(&self.name, what);
    }

    /// Whether this client is an awsflock 0.2.0.
    fn v020(&self) -> bool {
        self.w
            .live
            .lock()
            .unwrap()
            .clients
            .get(self.i)
            .is_some_and(|c| c.1)
    }

    fn open(&self, fence: Option<u64>) {
        let mut a = self.act.lock().unwrap();
        if a.open.is_none() {
            a.open = Some((self.w.t(), fence, a.stale.then_some(a.stale_until)));
        }
    }

    fn close(&self) {
        self.close_at(self.w.t());
    }

    /// Ends the acting interval at `end` (true time, not before now).
    fn close_at(&self, end: Duration) {
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

    async fn pause_for(&self, len: Duration, kind: PauseKind) {
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

/// Draws and runs the schedule of `seed`.
pub async fn schedule(seed: u64, store: Store, slots: bool, tracing: bool) -> Report {
    let (s3, dir) = (store == Store::S3, store == Store::Dir);
    let mut r = fastrand::Rng::with_seed(seed);
    let start = tokio::time::Instant::now();
    let n_clients = r.usize(2..=4);
    let v020s: Vec<bool> = (0..n_clients)
        .map(|i| !s3 && !dir && i > 0 && r.f64() < 0.3)
        .collect();
    let lease = Duration::from_secs(r.u64(2..=6));
    let p = Params {
        lease,
        renew_every: lease / 3,
        kill_after: ms(r.u64(0..1500)),
    };
    let faults = if r.f64() < 0.3 {
        Faults::default()
    } else {
        Faults {
            request_lost: r.f64() * 0.1,
            answer_lost: r.f64() * 0.15,
            duplicate: r.f64() * 0.1,
            throttled: r.f64() * 0.1,
            slow: r.f64() * 0.1,
        }
    };
    // awsflock 0.2.0 judges expiry on its own wall clock: a store clock
    // that steps away from it lets 0.2.0 take a live lock (its known bug,
    // DESIGN.md), so schedules with 0.2.0 clients keep the store's clock
    // on time (drawn below, once the clients are known).
    let store_jumps: Vec<(Duration, i64)> = if r.f64() < 0.2 {
        (0..r.usize(1..=2))
            .map(|_| {
                let d = if r.bool() {
                    r.i64(1..=1000)
                } else {
                    -r.i64(1..=5000)
                };
                (ms(r.u64(0..20_000)), d)
            })
            .collect()
    } else {
        Vec::new()
    };
    // The directory store has no store clock: its leases are judged on
    // the host's boot-time clock, which does not step.
    let store_jumps = if v020s.contains(&true) || dir {
        Vec::new()
    } else {
        store_jumps
    };
    // Drawn apart from the rest, so that a seed's ordinary schedule is the
    // same whether or not holder-table schedules exist.
    let sharing = if slots {
        let mut rs = fastrand::Rng::with_seed(seed ^ 0x5107_5107_5107_5107);
        if rs.bool() {
            Sharing::Semaphore(rs.u32(2..=3))
        } else {
            Sharing::ReadWrite((0..n_clients).map(|_| rs.f64() < 0.6).collect())
        }
    } else {
        Sharing::Lock
    };
    let w = Arc::new(World {
        sharing,
        start,
        rng: Mutex::new(fastrand::Rng::with_seed(r.u64(..))),
        table: Mutex::new(Table::new(start)),
        store_jumps,
        faults,
        tracing,
        trace: Mutex::new(Vec::new()),
        events: AtomicU64::new(0),
        violations: Mutex::new(Vec::new()),
        intervals: Mutex::new(Vec::new()),
        blocked: Mutex::new(None),
        s3,
        dir,
        live: Mutex::new(LiveLog::default()),
    });
    w.table.lock().unwrap().back_ms = w
        .store_jumps
        .iter()
        .filter(|(_, d)| *d < 0)
        .map(|(_, d)| -d)
        .sum();
    w.log(
        "sim",
        format_args!(
            "seed {seed}: {n_clients} clients, {:?}, lease {}s, renew every {:.3}s, kill-after {:.3}s, {:?}, store clock steps {:?}",
            w.sharing,
            lease.as_secs(),
            p.renew_every.as_secs_f64(),
            p.kill_after.as_secs_f64(),
            faults,
            w.store_jumps
        ),
    );
    let lease_ms = lease.as_millis() as u64;
    // The directory store's clients are processes of one host: one
    // boot-time clock, one wall clock (off by up to 0.5 s, or by hours).
    // Each process has a SimClock of its own (tokio's watch channels wake
    // their waiters in a random order: one clock per process keeps a seed
    // reproducible), all reading alike and paused and stepped together.
    let host_clock = dir.then(|| {
        let boot = Duration::from_secs(1_000_000 + r.u64(0..1_000_000));
        let mono = Duration::from_secs(1_000_000 + r.u64(0..1_000_000));
        let skew = if r.f64() < 0.2 {
            r.i64(-3 * 3_600_000..=3 * 3_600_000)
        } else {
            r.i64(-500..=500)
        };
        move || {
            let c = Arc::new(SimClock::new(start, boot, mono, 0));
            c.jump_wall(skew);
            c
        }
    });
    let mut handles = Vec::new();
    let mut blocked_by_skew_ahead = false;
    for (i, &v020) in v020s.iter().enumerate() {
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
        let who = Arc::new(Who {
            w: w.clone(),
            i,
            name: format!("c{i}"),
            mach: match &host_clock {
                Some(host) => super::dir::host_clock(&w, host()),
                None => Arc::new(SimClock::new(
                    start,
                    Duration::from_secs(1_000_000 + r.u64(0..1_000_000)),
                    Duration::from_secs(1_000_000 + r.u64(0..1_000_000)),
                    0,
                )),
            },
            act: Mutex::new(Act {
                // The next renewal, its answer (slow ones take up to 1.5 s
                // each way) and the supervisor's reaction.
                unresynced: lease / 3 + Duration::from_millis(3000) + NOTICE_WITHIN,
                ..Act::default()
            }),
        });
        who.mach.jump_wall(spec.skew_ms);
        w.live.lock().unwrap().clients.push((
            Arc::as_ptr(&who.mach) as *const () as usize,
            v020,
            // The crash bound of (g) is in store time: not for the directory.
            !dir && spec.skew_ms.abs() <= 1000 && spec.wall_jump.is_none(),
        ));
        if spec.crash_at.is_some() && spec.skew_ms > 600_000 {
            blocked_by_skew_ahead = true;
        }
        who.log(format_args!("{spec:?}"));
        handles.push(tokio::spawn(run_client(who, spec, p)));
    }
    let all = futures_util::future::join_all(handles);
    match tokio::time::timeout(Duration::from_secs(600), all).await {
        // DESIGN.md: a holder whose wall clock is far ahead and that dies
        // between its first write (stamped on that clock) and the rewrite
        // blocks the lock for the skew plus the lease.
        Err(_) if blocked_by_skew_ahead || w.blocked.lock().unwrap().is_some() => w.log(
            "sim",
            format_args!(
                "stopped after 10 min: {}",
                w.blocked.lock().unwrap().clone().unwrap_or_else(|| "a client with its clock far ahead died mid-acquire (the documented availability cost)".into())
            ),
        ),
        Err(_) => w.violation("liveness (invariant e): the schedule did not end within 10 minutes"),
        Ok(results) => {
            for res in results {
                if let Err(e) = res {
                    w.violation(format!("a client panicked: {e}"));
                }
            }
        }
    }
    // Liveness is judged from the lock record's write log, which the
    // simulated table, bucket and directory all keep: for one holder at a
    // time. A shared name's liveness is (e), the schedule ending.
    if w.sharing == Sharing::Lock {
        w.check_liveness(w.t(), lease);
    } else {
        w.check_sharing();
    }
    let violations = w.violations.lock().unwrap().clone();
    let trace = std::mem::take(&mut *w.trace.lock().unwrap());
    Report {
        seed,
        violations,
        trace,
        events: w.events.load(Ordering::Relaxed),
        ended: w.t(),
    }
}

async fn run_client(who: Arc<Who>, spec: Spec, p: Params) {
    let mut faults = Vec::new();
    if let Some((at, len, kind)) = spec.pause {
        let who = who.clone();
        faults.push(tokio::spawn(async move {
            tokio::time::sleep(at).await;
            who.pause_for(len, kind).await;
        }));
    }
    if let Some((at, len)) = spec.stop {
        let who = who.clone();
        faults.push(tokio::spawn(async move {
            tokio::time::sleep(at).await;
            who.pause_for(len, PauseKind::Stop).await;
        }));
    }
    if let Some((at, d)) = spec.wall_jump {
        let who = who.clone();
        faults.push(tokio::spawn(async move {
            tokio::time::sleep(at).await;
            if who.w.dir {
                super::dir::jump_host_wall(&who.w, d); // the host's clock
            } else {
                who.mach.jump_wall(d);
            }
            if d < 0 {
                let t = who.w.t();
                let mut a = who.act.lock().unwrap();
                a.stepped_back_at = Some(t);
                // Within one nap of waking from a VM pause, the step can
                // still hide the pause from the next look.
                if a.stale && a.woke_at.is_some_and(|w| t <= w + crate::boottime::MAX_NAP) {
                    a.stale_until = a.stale_until.max(t + a.unresynced);
                }
            }
            who.log(format_args!("wall clock jumps {:+.3}s", d as f64 / 1000.0));
        }));
    }
    let src: Arc<dyn TimeSource> = who.mach.clone();
    let body = {
        let (who, spec) = (who.clone(), spec.clone());
        timebase::scope(src, async move {
            if spec.v020 {
                v020_client(&who, &spec, p).await
            } else {
                our_client(&who, &spec, p).await
            }
        })
    };
    match spec.crash_at {
        Some(at) => {
            tokio::select! {
                // Biased: reproducible.
                biased;
                _ = body => {}
                _ = tokio::time::sleep(at) => {
                    who.w.live.lock().unwrap().crashes.push((who.i, who.w.t()));
                    if who.w.dir {
                        crash_on_host(&who);
                    } else {
                        who.close();
                    }
                    who.log(format_args!("CRASHES"));
                }
            }
        }
        None => body.await,
    }
    if who.w.dir {
        // Its process exits (if it did not crash), and its watchdog with it.
        super::dir::process_ended(&who.w, who.i, Duration::ZERO);
    }
    // A crashed or finished client suffers no more faults.
    for f in faults {
        f.abort();
    }
}

/// A `run` process of the directory store's host crashes: the parent-death
/// signal kills its command at once, but what the command started in its
/// process group runs on until the watchdog, seeing its holder gone, kills
/// the group and exits: usually within 50 ms, sometimes (a busy host, the
/// watchdog not yet scheduled) up to 3 s later; and never past the kill
/// time, which the watchdog enforces whatever becomes of its holder.
/// Until the watchdog has exited the holder's record is not free by pid.
fn crash_on_host(who: &Who) {
    let wd = {
        let mut r = who.w.rng.lock().unwrap();
        if r.f64() < 0.2 {
            ms(r.u64(500..3000))
        } else {
            ms(r.u64(0..50))
        }
    };
    super::dir::process_ended(&who.w, who.i, wd);
    let now = who.w.t();
    let kill = who.act.lock().unwrap().kill_true.unwrap_or(now);
    let end = (now + wd).min(kill.max(now));
    who.log(format_args!(
        "its command's group acts until {:.3}s (watchdog exits at {:.3}s)",
        end.as_secs_f64(),
        (now + wd).as_secs_f64()
    ));
    who.close_at(end);
}

/// Invariant (c): the holder's local deadline is not beyond the expiry the
/// store holds for its lease (in store time, at confirmation).
fn check_deadline(who: &Who, lease: &crate::store::Lease) {
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

async fn our_client(who: &Arc<Who>, spec: &Spec, p: Params) {
    let net = SimStore::new(who.w.clone(), who.mach.clone(), who.name.clone());
    let shared: Arc<dyn LockStore> = if who.w.dir {
        Arc::new(super::dir::dir_store(who.w.clone(), who.i))
    } else if who.w.s3 {
        Arc::new(super::objects::s3_store(net))
    } else {
        Arc::new(net.into_store())
    };
    for cycle in 0..spec.cycles {
        tokio::time::sleep(spec.think[cycle as usize]).await;
        let req = AcquireRequest {
            name: LOCK.into(),
            lease: p.lease,
            wait: spec.wait,
            owner: who.name.clone(),
            reason: None,
            on_wait: None,
            supervised: true,
            max_holders: match &who.w.sharing {
                Sharing::Semaphore(n) => Some(*n),
                _ => None,
            },
            shared: matches!(&who.w.sharing, Sharing::ReadWrite(k) if k[who.i]),
        };
        who.log(format_args!("acquire (wait {:?})", spec.wait));
        {
            let mut a = who.act.lock().unwrap();
            a.busy = true;
            a.stale = false;
        }
        let attempt = {
            let mut live = who.w.live.lock().unwrap();
            live.attempts.push(Attempt {
                client: who.i,
                wait: spec.wait,
                start: who.w.t(),
                end: None,
            });
            live.attempts.len() - 1
        };
        let acquired = LockGuard::acquire(
            shared.clone(),
            &req,
            p.renew_every,
            Box::pin(std::future::pending()),
        )
        .await;
        let how = match &acquired {
            Ok(_) => AcqEnd::Granted,
            Err(Error::NotAcquired { .. }) => AcqEnd::NotAcquired,
            Err(_) => AcqEnd::Failed,
        };
        who.w.live.lock().unwrap().attempts[attempt].end = Some((who.w.t(), how));
        let guard = match acquired {
            Ok(g) => g,
            Err(e) => {
                who.act.lock().unwrap().busy = false;
                if !matches!(e, Error::NotAcquired { .. }) && spec.skew_ms > 600_000 {
                    // Its first grant may have landed, stamped on a clock far
                    // ahead, and not been given back: unanswered before any
                    // answer calibrated the clock, or its rewrite and its
                    // give-back failed.
                    *who.w.blocked.lock().unwrap() = Some(format!(
                        "{}'s first grant, stamped on its clock {} s ahead, may have landed and not been given back (the acquire failed)",
                        who.name,
                        spec.skew_ms / 1000
                    ));
                }
                who.log(format_args!("not acquired: {}", short(&e)));
                continue;
            }
        };
        let lease = guard.lease();
        who.log(format_args!(
            "granted, fence {:?}, deadline in {:.3}s",
            lease.fence,
            lease.deadline.remaining().as_secs_f64()
        ));
        check_deadline(who, &lease);
        let (term_at, kill_at) = stop_times(lease.deadline, p.lease, p.renew_every, p.kill_after);
        who.act.lock().unwrap().kill_true = Some(who.mach.true_at_boot(kill_at.since_origin()));
        if let Some((c, len, kind)) = spec.pause_after_grant {
            if c == cycle {
                who.pause_for(len, kind).await;
            }
        }
        // As `run`: a lease suspect from its grant starts the command only
        // once a renewal confirms it, and the SIGTERM time is that of the
        // lease as it is then.
        let confirmed = confirmed_by(&guard, term_at).await;
        let (term_at, _) = stop_times(
            guard.watch().borrow().lease.deadline,
            p.lease,
            p.renew_every,
            p.kill_after,
        );
        if !confirmed {
            who.log(format_args!(
                "suspect from its grant and not confirmed: the command is not started"
            ));
        } else if too_late(BootInstant::now(), term_at) {
            who.log(format_args!("too late to start the command"));
        } else {
            supervise(who, &guard, spec, p, spec.work[cycle as usize]).await;
        }
        let lost = guard.watch().borrow().lost.clone();
        let limit = if lost.is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(15)
        };
        match tokio::time::timeout(limit, guard.release()).await {
            Ok(Ok(())) => {
                who.w.live.lock().unwrap().releases.push((who.i, who.w.t()));
                who.log(format_args!("released"))
            }
            Ok(Err(e)) => who.log(format_args!("release: {}", short(&e))),
            Err(_) => who.log(format_args!("release timed out")),
        }
        who.act.lock().unwrap().busy = false;
    }
}

fn short(e: &Error) -> &'static str {
    match e {
        Error::NotAcquired { .. } => "held by another",
        Error::NotHeld { .. } => "not held",
        Error::Unavailable(_) => "store unavailable",
        _ => "other error",
    }
}

/// The `run` supervisor, as a model around the real pure decisions
/// ([`stop_times`], [`next_step`]): SIGSTOP, SIGTERM and SIGKILL take
/// effect at once; a command that ignores SIGTERM acts until SIGKILL.
async fn supervise(who: &Arc<Who>, guard: &LockGuard, spec: &Spec, p: Params, work: Duration) {
    let mut rx = guard.watch();
    let mut cur = rx.borrow_and_update().lease.clone();
    let (mut term_at, mut kill_at) = stop_times(cur.deadline, p.lease, p.renew_every, p.kill_after);
    who.act.lock().unwrap().kill_true = Some(who.mach.true_at_boot(kill_at.since_origin()));
    let mut phase = Phase::default();
    let mut renewed_since_pause = false;
    let mut work_left = work;
    let mut state_open = true;
    who.log(format_args!(
        "command starts ({:.3}s of work)",
        work.as_secs_f64()
    ));
    who.open(cur.fence);
    // The command acts from the spawn; the supervisor looks a moment later.
    let latency = ms(who.w.rng.lock().unwrap().u64(1..20));
    tokio::time::sleep(latency).await;
    work_left = work_left.saturating_sub(latency);
    loop {
        if who.mach.paused() {
            who.close();
            who.mach.awake().await;
            continue;
        }
        let st = rx.borrow_and_update().clone();
        if st.lease.lease_id != cur.lease_id {
            cur = st.lease.clone();
            who.log(format_args!(
                "renewed: expires {:.3}s (store), deadline in {:.3}s",
                (cur.expires_at_ms - EPOCH_MS) as f64 / 1000.0,
                cur.deadline.since_origin().as_secs_f64()
                    - BootInstant::now().since_origin().as_secs_f64()
            ));
            (term_at, kill_at) = stop_times(cur.deadline, p.lease, p.renew_every, p.kill_after);
            if phase.pause.is_some() {
                renewed_since_pause = true;
            }
            check_deadline(who, &cur);
            let mut a = who.act.lock().unwrap();
            a.kill_true = Some(who.mach.true_at_boot(kill_at.since_origin()));
            // A renewal after a VM pause past the kill time may itself be
            // stamped on bounds that missed the pause: the hold stays in
            // the paused-holder case until it ends.
        }
        let now = BootInstant::now();
        let f = Facts {
            now,
            term_at,
            kill_at,
            lost: st.lost.is_some(),
            suspect: st.suspect.is_some(),
            renewed_since_pause,
        };
        match next_step(&f, &phase, p.kill_after) {
            Step::Wait => {}
            Step::Pause => {
                phase.pause = Some(Pause::Suspect);
                renewed_since_pause = false;
                who.log(format_args!("SIGSTOP: the lease is suspect"));
            }
            Step::Continue => {
                phase.pause = None;
                who.log(format_args!("SIGCONT: the lease is confirmed"));
            }
            Step::Stop { kill_at: k } => {
                phase.kill_at = Some(k);
                phase.pause = None;
                who.log(format_args!(
                    "SIGTERM ({}){}",
                    st.lost
                        .as_ref()
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "no renewal in time".into()),
                    if spec.ignores_term { ", ignored" } else { "" }
                ));
                if !spec.ignores_term || k <= now {
                    // Stopped at once (or SIGKILLed at once: its kill time
                    // has come).
                    who.close();
                    return;
                }
            }
            Step::Kill => {
                who.close();
                who.log(format_args!("SIGKILL"));
                return;
            }
        }
        let running = phase.pause.is_none();
        if running {
            who.open(cur.fence);
            let stale = who.act.lock().unwrap().stale;
            // (Once SIGTERM went out, the command may act until the kill
            // time fixed then, which the model enforces.)
            if !stale && phase.kill_at.is_none() && now > cur.deadline {
                who.w.violation(format!(
                    "{}: the command acts past its own deadline (invariant d), {:.3}s past it",
                    who.name,
                    (now - cur.deadline).as_secs_f64()
                ));
            }
        } else {
            who.close();
        }
        if work_left.is_zero() {
            who.close();
            who.log(format_args!("command exits"));
            return;
        }
        let wake = phase.kill_at.unwrap_or(term_at);
        let t0 = who.w.t();
        let mut prx = who.mach.pause_tx.subscribe();
        tokio::select! {
            // Biased: reproducible; every branch leads to the same look.
            biased;
            _ = prx.changed() => {}
            changed = rx.changed(), if state_open => {
                if changed.is_err() {
                    state_open = false;
                }
            }
            _ = boottime::sleep_until(wake) => {}
            _ = tokio::time::sleep(work_left), if running => {}
        }
        if running {
            work_left = work_left.saturating_sub(who.w.t().saturating_sub(t0));
        }
    }
}

/// awsflock 0.2.0 as it really does it: its expiry stamped with its own
/// clock when its acquire *starts*, whole items put on `lease_id`, expiry
/// judged on its own clock with 5 s of margin, release by delete. It acts
/// until its command ends or its lease ends by its own belief (the grant
/// plus the lease). Modelled within its own assumption: it waits at most
/// 2.5 s (`--wait-time`), and its clock is within 0.5 s of the store's.
async fn v020_client(who: &Arc<Who>, spec: &Spec, p: Params) {
    let store = SimStore::new(who.w.clone(), who.mach.clone(), who.name.clone());
    let lease_ms = p.lease.as_millis() as i64;
    for cycle in 0..spec.cycles {
        tokio::time::sleep(spec.think[cycle as usize]).await;
        let start_wall = who.mach.wall_ms();
        let exp_s = (start_wall + lease_ms) / 1000;
        let lease_id = uuid::Uuid::new_v4().to_string();
        let mut item = Item::new();
        item.insert(attr::LOCK_ID.into(), s(LOCK));
        item.insert(attr::LEASE_ID.into(), s(&lease_id));
        item.insert(attr::LEASE_DURATION.into(), n(p.lease.as_secs()));
        item.insert(attr::OWNER.into(), s(&who.name));
        item.insert(attr::EXPIRATION_TIME.into(), n(exp_s));
        who.log(format_args!("0.2.0 acquire"));
        let mut backoff = ms(500);
        let mut granted = false;
        loop {
            let Ok(cur) = store.read(LOCK).await else {
                break; // 0.2.0 does not catch the SDK's errors
            };
            let old = match &cur {
                None => None,
                Some(i) => {
                    let Some(e) = get_i64(i, attr::EXPIRATION_TIME) else {
                        break; // it crashes on such an item
                    };
                    if who.mach.wall_ms() as f64 / 1000.0 - e as f64 > 5.0 {
                        get_s(i, attr::LEASE_ID).map(String::from)
                    } else {
                        let waited = who.mach.wall_ms() - start_wall;
                        if waited + backoff.as_millis() as i64 > 2500 {
                            break;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ms(1000));
                        continue;
                    }
                }
            };
            if cur.is_some() && old.is_none() {
                break;
            }
            let (it, o) = (item.clone(), old.clone());
            match store
                .call(move |t, _, _| t.put_v020(LOCK, it.clone(), o.as_deref()))
                .await
            {
                Ok(true) => {
                    granted = true;
                    break;
                }
                Ok(false) => continue,
                Err(_) => break,
            }
        }
        if !granted {
            who.log(format_args!("0.2.0 gave up"));
            continue;
        }
        let g = who.mach.wall_ms();
        if g - start_wall > 3000 {
            // Outside 0.2.0's own assumption (it waited so long that its
            // lease, stamped at the start, is mostly gone): not modelled.
            who.log(format_args!(
                "0.2.0 granted after a long wait; does not act"
            ));
            continue;
        }
        who.log(format_args!(
            "0.2.0 granted, expiration_time {:.3}s (store)",
            (exp_s * 1000 - EPOCH_MS) as f64 / 1000.0
        ));
        let believed = ms((g + lease_ms - who.mach.wall_ms()).max(0) as u64);
        let work = spec.work[cycle as usize];
        who.open(None);
        tokio::time::sleep(work.min(believed)).await;
        who.close();
        if work < believed {
            let id = lease_id.clone();
            let _ = store.call(move |t, _, _| t.delete_v020(LOCK, &id)).await;
            who.log(format_args!("0.2.0 released"));
        } else {
            who.log(format_args!(
                "0.2.0 stops: its lease ended by its own clock"
            ));
        }
    }
}
