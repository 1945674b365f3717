//! One schedule: drawn from its seed (every draw in a fixed order, so that
//! a seed always means the same schedule), run on the current runtime's
//! virtual time, and judged once it has ended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::{Act, NOTICE_WITHIN, Params, Spec, Who, ms};
use super::clock::{PauseKind, SimClock};
use super::model::{Faults, LiveLog, Report, Sharing, Store};
use super::state::Table;
use super::world::World;
use crate::timebase::{self, TimeSource};

/// What a schedule draws before its world exists.
struct Setup {
    n_clients: usize,
    /// Per client: whether it is an awsflock 0.2.0.
    v020s: Vec<bool>,
    lease: Duration,
    p: Params,
    faults: Faults,
    store_jumps: Vec<(Duration, i64)>,
    sharing: Sharing,
}

/// The directory store's one host's clocks, as drawn: each process gets
/// clocks of its own that read alike.
struct HostClock {
    start: tokio::time::Instant,
    boot: Duration,
    mono: Duration,
    skew: i64,
}

impl HostClock {
    fn draw(r: &mut fastrand::Rng, start: tokio::time::Instant) -> HostClock {
        let boot = Duration::from_secs(1_000_000 + r.u64(0..1_000_000));
        let mono = Duration::from_secs(1_000_000 + r.u64(0..1_000_000));
        let skew = if r.f64() < 0.2 {
            r.i64(-3 * 3_600_000..=3 * 3_600_000)
        } else {
            r.i64(-500..=500)
        };
        HostClock {
            start,
            boot,
            mono,
            skew,
        }
    }

    /// One process's clocks.
    fn process_clock(&self) -> Arc<SimClock> {
        let c = Arc::new(SimClock::new(self.start, self.boot, self.mono, 0));
        c.jump_wall(self.skew);
        c
    }
}

/// Draws and runs the schedule of `seed`.
pub async fn schedule(seed: u64, store: Store, slots: bool, tracing: bool) -> Report {
    let (s3, dir) = (store == Store::S3, store == Store::Dir);
    let mut r = fastrand::Rng::with_seed(seed);
    let start = tokio::time::Instant::now();
    let setup = draw_setup(&mut r, seed, s3, dir, slots);
    let w = new_world(&setup, &mut r, start, tracing, s3, dir);
    log_setup(&w, seed, &setup);
    let (lease, p) = (setup.lease, setup.p);
    let lease_ms = lease.as_millis() as u64;
    // The directory store's clients are processes of one host: one
    // boot-time clock, one wall clock (off by up to 0.5 s, or by hours).
    // Each process has a SimClock of its own (tokio's watch channels wake
    // their waiters in a random order: one clock per process keeps a seed
    // reproducible), all reading alike and paused and stepped together.
    let host = dir.then(|| HostClock::draw(&mut r, start));
    let mut handles = Vec::new();
    let mut blocked_by_skew_ahead = false;
    for (i, &v020) in setup.v020s.iter().enumerate() {
        let spec = Spec::draw(&mut r, v020, lease_ms, dir);
        let mach = match &host {
            Some(host) => super::dir::host_clock(&w, host.process_clock()),
            None => Arc::new(SimClock::new(
                start,
                Duration::from_secs(1_000_000 + r.u64(0..1_000_000)),
                Duration::from_secs(1_000_000 + r.u64(0..1_000_000)),
                0,
            )),
        };
        if spec.crashes_far_ahead() {
            blocked_by_skew_ahead = true;
        }
        handles.push(start_client(&w, i, spec, mach, p));
    }
    join_clients(&w, handles, blocked_by_skew_ahead).await;
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

/// The clients, the lease and its timings, the faults and the store's
/// clock steps, in this order from `r`; how the clients share the name
/// from a generator of its own.
fn draw_setup(r: &mut fastrand::Rng, seed: u64, s3: bool, dir: bool, slots: bool) -> Setup {
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
    let faults = draw_faults(r);
    let store_jumps = draw_store_jumps(r);
    // awsflock 0.2.0 judges expiry on its own wall clock: a store clock
    // that steps away from it lets 0.2.0 take a live lock (its known bug,
    // DESIGN.md), so schedules with 0.2.0 clients keep the store's clock
    // on time (drawn above, once the clients are known).
    // The directory store has no store clock: its leases are judged on
    // the host's boot-time clock, which does not step.
    let store_jumps = if v020s.contains(&true) || dir {
        Vec::new()
    } else {
        store_jumps
    };
    Setup {
        n_clients,
        sharing: draw_sharing(seed, slots, n_clients),
        v020s,
        lease,
        p,
        faults,
        store_jumps,
    }
}

fn draw_faults(r: &mut fastrand::Rng) -> Faults {
    if r.f64() < 0.3 {
        Faults::default()
    } else {
        Faults {
            request_lost: r.f64() * 0.1,
            answer_lost: r.f64() * 0.15,
            duplicate: r.f64() * 0.1,
            throttled: r.f64() * 0.1,
            slow: r.f64() * 0.1,
            latency_ms: None,
        }
    }
}

/// (true time, delta ms): the store's clock steps, in one schedule of five.
fn draw_store_jumps(r: &mut fastrand::Rng) -> Vec<(Duration, i64)> {
    if r.f64() < 0.2 {
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
    }
}

/// Drawn apart from the rest, so that a seed's ordinary schedule is the
/// same whether or not holder-table schedules exist.
fn draw_sharing(seed: u64, slots: bool, n_clients: usize) -> Sharing {
    if !slots {
        return Sharing::Lock;
    }
    let mut rs = fastrand::Rng::with_seed(seed ^ 0x5107_5107_5107_5107);
    if rs.bool() {
        Sharing::Semaphore(rs.u32(2..=3))
    } else {
        Sharing::ReadWrite((0..n_clients).map(|_| rs.f64() < 0.6).collect())
    }
}

/// The schedule's world; its own generator (the network's and the
/// supervisor's draws) is seeded from `r`.
fn new_world(
    setup: &Setup,
    r: &mut fastrand::Rng,
    start: tokio::time::Instant,
    tracing: bool,
    s3: bool,
    dir: bool,
) -> Arc<World> {
    let w = Arc::new(World {
        sharing: setup.sharing.clone(),
        start,
        rng: Mutex::new(fastrand::Rng::with_seed(r.u64(..))),
        table: Mutex::new(Table::new(start)),
        store_jumps: setup.store_jumps.clone(),
        faults: setup.faults,
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
    w
}

fn log_setup(w: &World, seed: u64, setup: &Setup) {
    let (n_clients, p) = (setup.n_clients, setup.p);
    w.log(
        "sim",
        format_args!(
            "seed {seed}: {n_clients} clients, {:?}, lease {}s, renew every {:.3}s, kill-after {:.3}s, {:?}, store clock steps {:?}",
            w.sharing,
            setup.lease.as_secs(),
            p.renew_every.as_secs_f64(),
            p.kill_after.as_secs_f64(),
            setup.faults,
            w.store_jumps
        ),
    );
}

/// Waits for every client, for at most 10 minutes of virtual time.
async fn join_clients(
    w: &World,
    handles: Vec<tokio::task::JoinHandle<()>>,
    blocked_by_skew_ahead: bool,
) {
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
}

/// Starts client `i` of the schedule, on its machine's clocks `mach`.
pub(super) fn start_client(
    w: &Arc<World>,
    i: usize,
    spec: Spec,
    mach: Arc<SimClock>,
    p: Params,
) -> tokio::task::JoinHandle<()> {
    let who = Arc::new(Who {
        w: w.clone(),
        i,
        name: format!("c{i}"),
        mach,
        act: Mutex::new(Act {
            // The next renewal, its answer (slow ones take up to 1.5 s
            // each way) and the supervisor's reaction.
            unresynced: p.lease / 3 + Duration::from_millis(3000) + NOTICE_WITHIN,
            ..Act::default()
        }),
    });
    who.mach.jump_wall(spec.skew_ms);
    w.live.lock().unwrap().clients.push((
        Arc::as_ptr(&who.mach) as *const () as usize,
        spec.v020,
        // The crash bound of (g) is in store time: not for the directory.
        !w.dir && spec.skew_ms.abs() <= 1000 && spec.wall_jump.is_none(),
    ));
    who.log(format_args!("{spec:?}"));
    tokio::spawn(run_client(who, spec, p))
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
                super::v020::v020_client(&who, &spec, p).await
            } else {
                super::ours::our_client(&who, &spec, p).await
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
