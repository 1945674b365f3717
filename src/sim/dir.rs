//! The simulated directory store: one host whose processes (the clients)
//! share one directory, one boot-time clock and one wall clock. The real
//! record logic of the directory store (`FileStore`: grant under the
//! directory lock, the fence mark, renew, release, judging a record by its
//! boot stamp, its holder's pid and its watchdog) runs unchanged over
//! [`SimDir`] (the in-memory directory, the simulation's side of the seam
//! [`crate::store::file::Dir`]) and [`SimHost`] (this host's facts: its
//! boot id and boot-time clock, and which processes and watchdogs live,
//! the seam [`crate::store::file::Host`]).
//!
//! Each operation (what the real store runs on a thread of its own, under
//! the directory's flock when it changes anything) is applied whole at one
//! instant of true time, after a delay drawn from the seed (the thread, the
//! wait for the flock, the disk), so operations of different processes
//! interleave only between operations, as the flock makes them. Faults,
//! from the schedule's probabilities: an I/O error before anything is
//! written, a write that lands but whose directory sync fails (the caller
//! gets an error), and the directory lock busy for [`LOCK_WAIT`] (nothing
//! applied, "store unavailable"). An operation whose caller stopped waiting
//! is told so (`Cancel`), as the real thread is; one whose process crashed
//! is not applied (its thread died with it).

use std::sync::Arc;
use std::time::Duration;

use super::clock::{PauseKind, SimClock, true_now};
use super::model::{RecState, Req};
use super::state::Proc;
use super::world::World;
use crate::boottime::BootInstant;
use crate::error::{Error, Result};
use crate::protocol::record::RecordState;
use crate::store::file::dir::CancelOnDrop;
use crate::store::file::{Cancel, Dir, FileRecord, FileStore, Host, LOCK_WAIT, Liveness, ProcId};

/// The simulated host's boot id.
const BOOT_ID: &str = "5e1f0b07-0000-4000-8000-000000000001";
/// The simulated host's pid namespace.
const PID_NS: &str = "sim:1";
/// Client `i` is process `PID0 + i`, started at `START0 + i` (clock ticks).
const PID0: u32 = 4000;
const START0: u64 = 70_000;

/// Registers a process's clocks with the host (which pauses and steps
/// them all together).
pub fn host_clock(w: &World, c: Arc<SimClock>) -> Arc<SimClock> {
    w.table.lock().unwrap().dir.clocks.push(c.clone());
    c
}

/// Pauses the whole host (every process's clocks) until `until`.
pub fn pause_host(w: &World, kind: PauseKind, until: Duration) {
    let clocks = {
        let mut t = w.table.lock().unwrap();
        t.dir.paused_until = Some(until);
        t.dir.clocks.clone()
    };
    for c in clocks {
        c.pause(kind);
    }
}

/// Ends the host's pause.
pub fn resume_host(w: &World) {
    let clocks = {
        let mut t = w.table.lock().unwrap();
        t.dir.paused_until = None;
        t.dir.clocks.clone()
    };
    for c in clocks {
        c.resume();
    }
}

/// Whether any process's clocks are paused (the host paused, or a
/// process stopped): one pause at a time.
pub fn any_paused(w: &World) -> bool {
    let clocks = w.table.lock().unwrap().dir.clocks.clone();
    clocks.iter().any(|c| c.paused())
}

/// Stops process `client` (its clocks, `mach`) until `until`.
pub fn stop_process(w: &World, client: usize, mach: &SimClock, until: Duration) {
    let mut t = w.table.lock().unwrap();
    t.dir.procs.entry(client).or_default().stopped_until = Some(until);
    drop(t);
    mach.pause(PauseKind::Stop);
}

/// Continues process `client`.
pub fn continue_process(w: &World, client: usize, mach: &SimClock) {
    let mut t = w.table.lock().unwrap();
    t.dir.procs.entry(client).or_default().stopped_until = None;
    drop(t);
    mach.resume();
}

/// Steps the host's wall clock by `delta_ms`.
pub fn jump_host_wall(w: &World, delta_ms: i64) {
    let clocks = w.table.lock().unwrap().dir.clocks.clone();
    for c in clocks {
        c.jump_wall(delta_ms);
    }
}

/// Waits until the host is not paused and process `client` not stopped.
/// Not through the clocks' watch channel, whose waiters wake in a random
/// order: on the pause's own timer, in the order the waiters came.
async fn host_awake(w: &World, client: usize) {
    loop {
        let until = {
            let t = w.table.lock().unwrap();
            let stopped = t.dir.procs.get(&client).and_then(|p| p.stopped_until);
            t.dir.paused_until.max(stopped)
        };
        let Some(until) = until else { return };
        let now = w.t();
        if now < until {
            tokio::time::sleep(until - now).await;
        } else {
            tokio::task::yield_now().await; // the resume is due now
        }
    }
}

/// What happens to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Ok,
    /// An I/O error before anything was written.
    FailsBefore,
    /// Applied, then the directory's sync fails: the caller gets an error.
    FailsAfter,
    /// The directory lock stays taken by another process for `LOCK_WAIT`.
    LockBusy,
}

/// The record as a waiter judges it, for the liveness invariants: released,
/// or held (its expiry is on the host's boot-time clock and its holder may
/// be judged dead, so no expiry is given: only released records open a
/// window).
fn state_of(rec: &FileRecord) -> RecState {
    if rec.lease.state == RecordState::Released {
        return RecState::Released;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rec.lease.lease_id.hash(&mut h);
    RecState::Held {
        exp_ms: i64::MAX / 4,
        margin_ms: 0,
        owner: rec
            .lease
            .owner
            .strip_prefix('c')
            .and_then(|n| n.parse().ok()),
        lease: h.finish(),
    }
}

/// One client process's view of the directory.
pub struct SimDir {
    world: Arc<World>,
    client: usize,
}

impl SimDir {
    fn draw(&self) -> (Fate, Duration, Duration) {
        let mut r = self.world.rng.lock().unwrap();
        let f = self.world.faults;
        let x = r.f64();
        // An I/O error that fails a read ends an acquire: a fifth as often
        // as the network loses a request.
        let fate = if x < f.request_lost / 5.0 {
            Fate::FailsBefore
        } else if x < f.request_lost / 5.0 + f.answer_lost {
            Fate::FailsAfter
        } else if x < f.request_lost / 5.0 + f.answer_lost + f.throttled {
            Fate::LockBusy
        } else {
            Fate::Ok
        };
        let there = match fate {
            Fate::LockBusy => LOCK_WAIT,
            _ if r.f64() < f.slow => Duration::from_millis(r.u64(50..1500)),
            // At least 1 ms (a flock, a write, two syncs and a rename): a
            // process that releases and at once takes the lock again must
            // not land its grant at the very instant its release returned,
            // which the liveness check of (f) would read as the release
            // not having freed the lock.
            _ => Duration::from_millis(r.u64(1..6)),
        };
        (fate, there, Duration::from_millis(r.u64(0..3)))
    }

    /// Records a write of lock `name`'s record, with the invariants'
    /// bookkeeping: (b) a grant's token above every token before it; (c)
    /// the boot-time expiry first written for each lease id; and the
    /// record's state for the liveness invariants.
    fn note_write(&self, name: &str, bytes: &[u8]) {
        let new: Option<FileRecord> = serde_json::from_slice(bytes).ok();
        let mut t = self.world.table.lock().unwrap();
        let before: Option<FileRecord> = t
            .dir
            .records
            .get(name)
            .and_then(|b| serde_json::from_slice(b).ok());
        let Some(new) = new else { return };
        let mut violation = None;
        if let Some(table) = new.lease.current_slots() {
            let old = before.as_ref().and_then(|b| b.lease.current_slots());
            let mut found = Vec::new();
            t.note_table(name, old, Some(table), &mut found);
            violation = found.into_iter().next();
        } else if new.lease.state == RecordState::Held {
            if let Some(b) = &new.boot {
                t.written_expiry
                    .entry(new.lease.lease_id.clone())
                    .or_insert(b.expires_ms);
            }
            // A renewal keeps the grant's token and time.
            let renewal = before.is_some_and(|b| {
                b.lease.state == RecordState::Held
                    && b.lease.fence == new.lease.fence
                    && b.lease.acquired_ms == new.lease.acquired_ms
            });
            if let (Some(f), false) = (new.lease.fence, renewal) {
                let max = t.max_fence.entry(name.to_string()).or_insert(0);
                if f <= *max {
                    violation = Some(format!(
                        "fencing token {f} granted after token {} (invariant b)",
                        *max
                    ));
                }
                *max = (*max).max(f);
            }
        }
        let at = true_now(self.world.start);
        t.writes.push((at, state_of(&new)));
        drop(t);
        if let Some(v) = violation {
            self.world.violation(v);
        }
    }
}

fn ended(w: &World, client: usize) -> bool {
    let t = w.t();
    w.table
        .lock()
        .unwrap()
        .dir
        .procs
        .get(&client)
        .and_then(|p| p.ended)
        .is_some_and(|e| e <= t)
}

/// Client `client`'s process ends now (a crash, or its last cycle done);
/// its watchdog runs on for `watchdog`.
pub fn process_ended(w: &World, client: usize, watchdog: Duration) {
    let t = w.t();
    let mut table = w.table.lock().unwrap();
    let p = table.dir.procs.entry(client).or_default();
    if p.ended.is_none() {
        p.ended = Some(t);
        p.watchdog_until = t + watchdog;
    }
}

#[async_trait::async_trait]
impl Dir for SimDir {
    type Guard = ();

    fn describe(&self) -> String {
        "simulated directory".into()
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel) -> Result<T> + Send + 'static,
    {
        // A paused host runs nothing.
        host_awake(&self.world, self.client).await;
        let (fate, there, back) = self.draw();
        let sent = self.world.t();
        self.world.live.lock().unwrap().reqs.push(Req {
            client: self.client,
            sent,
            there,
            back,
            failed: fate != Fate::Ok,
        });
        let cancel = Cancel::default();
        let theirs = cancel.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (w, i) = (self.world.clone(), self.client);
        // The operation's thread: not the caller's task, so it goes on when
        // the caller stops waiting (and is told so through its `Cancel`);
        // under the caller's clocks (the host's).
        crate::timebase::spawn(async move {
            tokio::time::sleep(there).await;
            // A thread of a stopped process is stopped.
            host_awake(&w, i).await;
            if ended(&w, i) {
                return; // its thread died with its process
            }
            let out = match fate {
                Fate::FailsBefore | Fate::LockBusy => None,
                Fate::Ok | Fate::FailsAfter => Some(f(&theirs)),
            };
            let _ = tx.send(out);
        });
        let _cancel = CancelOnDrop(cancel);
        let out = rx
            .await
            .map_err(|_| Error::Unavailable("the process ended".into()))?;
        tokio::time::sleep(back).await;
        host_awake(&self.world, self.client).await;
        match (fate, out) {
            (Fate::Ok, Some(out)) => out,
            (Fate::FailsBefore, _) => Err(Error::store(
                "cannot write the simulated directory: simulated I/O error",
            )),
            (Fate::FailsAfter, _) => Err(Error::store(
                "cannot sync the simulated directory: simulated I/O error",
            )),
            _ => Err(Error::Unavailable(format!(
                "the simulated directory has been locked by another process for over {}s",
                LOCK_WAIT.as_secs()
            ))),
        }
    }

    /// Always free at once: operations are applied one at a time.
    fn lock(&self, _cancel: &Cancel) -> Result<()> {
        Ok(())
    }

    fn read_record(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .world
            .table
            .lock()
            .unwrap()
            .dir
            .records
            .get(name)
            .cloned())
    }

    fn write_record(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.note_write(name, bytes);
        self.world
            .table
            .lock()
            .unwrap()
            .dir
            .records
            .insert(name.to_string(), bytes.to_vec());
        Ok(())
    }

    fn read_mark(&self, name: &str) -> Result<u64> {
        Ok(self
            .world
            .table
            .lock()
            .unwrap()
            .dir
            .marks
            .get(name)
            .copied()
            .unwrap_or(0))
    }

    fn write_mark(&self, name: &str, fence: u64) -> Result<()> {
        self.world
            .table
            .lock()
            .unwrap()
            .dir
            .marks
            .insert(name.to_string(), fence);
        Ok(())
    }

    fn list_records(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let t = self.world.table.lock().unwrap();
        Ok(t.dir
            .records
            .iter()
            .map(|(k, v)| (crate::store::file::file_name(k), v.clone()))
            .collect())
    }

    fn create(&self) -> Result<()> {
        Ok(())
    }
}

/// One client process on the simulated host.
pub struct SimHost {
    world: Arc<World>,
    client: usize,
}

impl Host for SimHost {
    fn boot_id() -> Option<&'static str> {
        Some(BOOT_ID)
    }

    /// The host's boot-time clock is the simulated machine's (no time
    /// namespace offset).
    fn host_ms(t: BootInstant) -> i64 {
        (t.since_origin().as_nanos() / 1_000_000) as i64
    }

    fn host_ms_now_ceil() -> i64 {
        BootInstant::now()
            .since_origin()
            .as_nanos()
            .div_ceil(1_000_000) as i64
    }

    fn instant_at(ms: i64) -> BootInstant {
        BootInstant::from_origin(Duration::from_millis(ms.max(0) as u64))
    }

    fn me(&self) -> Option<ProcId> {
        Some(ProcId {
            pid_ns: PID_NS.into(),
            start: START0 + self.client as u64,
        })
    }

    fn pid(&self) -> u32 {
        PID0 + self.client as u32
    }

    fn liveness(&self, pid: u32, id: &ProcId) -> Liveness {
        if id.pid_ns != PID_NS {
            return Liveness::Unknown;
        }
        let Some(client) = pid.checked_sub(PID0) else {
            return Liveness::Dead; // no such process
        };
        if id.start != START0 + u64::from(client) {
            return Liveness::Dead;
        }
        if ended(&self.world, client as usize) {
            Liveness::Dead
        } else {
            Liveness::Alive
        }
    }

    fn watchdog_running(&self, pid: u32, _start: u64) -> bool {
        let Some(client) = pid.checked_sub(PID0) else {
            return false;
        };
        let t = self.world.t();
        match self
            .world
            .table
            .lock()
            .unwrap()
            .dir
            .procs
            .get(&(client as usize))
        {
            Some(Proc {
                ended: Some(_),
                watchdog_until,
                ..
            }) => t < *watchdog_until,
            // A live holder's watchdog runs.
            _ => true,
        }
    }
}

/// The real directory store of one simulated client process.
pub fn dir_store(world: Arc<World>, client: usize) -> FileStore<SimDir, SimHost> {
    FileStore::over(
        SimDir {
            world: world.clone(),
            client,
        },
        SimHost { world, client },
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Report, Store, env_u64, run_seed_traced_with, run_seed_with};

    /// How many directory-store schedules `schedules_dir` runs by default.
    const DEFAULT_SEEDS: u64 = 4_000;

    fn explain(r: &Report) -> String {
        format!(
            "directory-store simulation seed {} failed:\n  {}\ntrace (true time, store time, client, event):\n{}\n\
             rerun: scripts/sim.sh --dir 1 {} (or AWSFLOCK_SIM_SEED={} AWSFLOCK_SIM_SEEDS=1 \
             cargo test --lib sim::dir::tests::schedules_dir -- --nocapture)",
            r.seed,
            r.violations.join("\n  "),
            r.trace.join("\n"),
            r.seed,
            r.seed
        )
    }

    /// Schedules with our clients as processes of one host sharing the
    /// directory store, from seed `AWSFLOCK_SIM_SEED` (0),
    /// `AWSFLOCK_SIM_SEEDS` of them (10,000), on two threads (each schedule
    /// runs on its own runtime, so a seed runs the same on either); panics
    /// with the first failure's seed, trace and how to rerun it. One seed
    /// also prints its trace.
    #[test]
    fn schedules_dir() {
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        let count = env_u64("AWSFLOCK_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
        let t0 = std::time::Instant::now();
        let half = count / 2;
        let run = |from: u64, to: u64| {
            (from..to).find_map(|seed| {
                let r = run_seed_with(seed, Store::Dir);
                (!r.violations.is_empty()).then_some(r)
            })
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| run(first, first + half));
            let b = s.spawn(|| run(first + half, first + count));
            (a.join().unwrap(), b.join().unwrap())
        });
        if let Some(r) = a.or(b) {
            // The same seed again, keeping its trace: it fails alike.
            let traced = run_seed_traced_with(r.seed, Store::Dir);
            assert_eq!(
                traced.violations, r.violations,
                "seed {} failed differently when traced",
                r.seed
            );
            panic!("{}", explain(&traced));
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "simulation (directory store): {count} schedules from seed {first} in {secs:.1}s ({:.0}/s)",
            count as f64 / secs.max(1e-9)
        );
        if count == 1 {
            eprintln!(
                "{}",
                run_seed_traced_with(first, Store::Dir).trace.join("\n")
            );
        }
    }

    /// A directory-store schedule is reproducible from its seed, traced or
    /// not, and does use the directory store.
    #[test]
    fn a_dir_seed_reproduces_its_run_exactly() {
        for seed in (0..60u64).chain([1234, 99_999]) {
            let a = run_seed_traced_with(seed, Store::Dir);
            let b = run_seed_traced_with(seed, Store::Dir);
            assert!(a.trace.len() > 5, "seed {seed}: {:?}", a.trace);
            assert_eq!(a.trace, b.trace, "seed {seed} ran differently twice");
            let c = run_seed_with(seed, Store::Dir);
            assert_eq!(
                (c.events, c.ended, &c.violations),
                (a.events, a.ended, &a.violations),
                "seed {seed} ran differently untraced"
            );
        }
    }

    /// For measuring a deliberately broken directory store (DESIGN.md,
    /// "Simulation"): runs `AWSFLOCK_SIM_SEEDS` (2,000) schedules and
    /// counts those that fail, by invariant, without stopping at the first.
    #[test]
    #[ignore = "a measurement: run with --ignored --nocapture"]
    fn dir_failure_census() {
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        let count = env_u64("AWSFLOCK_SIM_SEEDS").unwrap_or(2_000);
        let t0 = std::time::Instant::now();
        let mut failed = 0u64;
        let mut first_failure = None;
        let mut by_kind = std::collections::BTreeMap::<String, u64>::new();
        for seed in first..first + count {
            let r = run_seed_with(seed, Store::Dir);
            if r.violations.is_empty() {
                continue;
            }
            failed += 1;
            first_failure.get_or_insert((seed, r.violations[0].clone()));
            for v in &r.violations {
                let kind = v
                    .find("(invariant")
                    .map(|i| v[i..].chars().take(13).collect())
                    .unwrap_or_else(|| v.chars().take(40).collect());
                *by_kind.entry(kind).or_default() += 1;
            }
        }
        eprintln!(
            "directory census: {failed} of {count} schedules from seed {first} failed in {:.1}s; first: {first_failure:?}; violations: {by_kind:?}",
            t0.elapsed().as_secs_f64()
        );
    }
}
