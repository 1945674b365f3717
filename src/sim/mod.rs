//! A deterministic simulation of the lock protocol, running the real
//! protocol code: only the network, the store and the clocks are simulated
//! (in the style of FoundationDB's simulator and tokio's turmoil).
//!
//! Each schedule is one seed: a fresh current-thread tokio runtime with
//! paused (virtual) time, 2–4 clients (some of them awsflock 0.2.0) taking
//! one lock a few times, under faults drawn from the seed. The safety
//! invariants are checked as the schedule runs, the liveness ones
//! ([`World::check_liveness`]) when it has ended. A schedule runs without
//! its trace; a failing seed is rerun with it (a seed reproduces exactly),
//! and the failure prints the seed, the trace, and how to rerun it.
//! DESIGN.md, "Simulation", lists what is real and what is modelled.
//!
//! Our clients use DynamoDB ([`store`]), S3 ([`objects`]) or the
//! directory store, all of them processes of one host ([`dir`]).
//!
//! `cargo test --lib sim` runs the default number of schedules;
//! `scripts/sim.sh [--s3|--dir] SEEDS [START]` runs more
//! (`AWSFLOCK_SIM_SEEDS`, `AWSFLOCK_SIM_SEED`).

mod client;
mod dir;
mod objects;
mod store;
mod world;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::Fate;
pub use world::Table;

/// Per-request fault probabilities of one schedule.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub request_lost: f64,
    pub answer_lost: f64,
    pub duplicate: f64,
    pub throttled: f64,
    /// Chance of a slow request (up to 1.5 s each way).
    pub slow: f64,
}

/// One acting interval of a holder, in true time.
#[derive(Debug, Clone)]
pub struct Interval {
    pub client: usize,
    pub start: Duration,
    pub end: Duration,
    pub fence: Option<u64>,
    /// For a holder whose machine was VM-paused during this acquire or
    /// hold (its clocks missed the time): the true instant until which an
    /// overlap is the paused-holder case no lease can prevent (DESIGN.md;
    /// fencing tokens cover it, and they are checked). Past it, the
    /// holder must have noticed the unseen time.
    pub excused_until: Option<Duration>,
    /// Held as a shared holder (`--shared`, or a semaphore's holder).
    pub shared: bool,
}

/// How the clients of a schedule share the name: one holder (the lock
/// protocol), or through the holder table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    /// Every client takes the lock the ordinary way.
    Lock,
    /// Our clients take a semaphore of N (`--max-holders N`).
    Semaphore(u32),
    /// Our clients take the lock shared (`true`) or exclusive, per client.
    ReadWrite(Vec<bool>),
}

/// The lock's record as a waiter judges it, after a write (true time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecState {
    Absent,
    Released,
    /// Held until the store's clock passes `exp_ms` plus `margin_ms` (the
    /// real `dynamodb::expiry_ms` and `takeover_margin_of`); `owner` is the
    /// client that wrote it.
    Held {
        exp_ms: i64,
        margin_ms: i64,
        owner: Option<usize>,
        /// A hash of the lease id (only compared).
        lease: u64,
    },
}

impl std::fmt::Display for RecState {
    // Lease ids are random: never shown, so that a rerun reads the same.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecState::Absent => write!(f, "absent"),
            RecState::Released => write!(f, "released"),
            RecState::Held {
                exp_ms,
                margin_ms,
                owner,
                ..
            } => write!(
                f,
                "held by {} until {:.3}s (store) + {margin_ms} ms",
                owner.map_or("?".to_string(), |o| format!("c{o}")),
                (exp_ms - world::EPOCH_MS) as f64 / 1000.0
            ),
        }
    }
}

/// A holder table's record as a waiter judges it, for the liveness
/// invariants: free to the next waiter in turn once the holders and the
/// tickets ahead of it are gone, so held until the last of them lapses (a
/// dead waiter's ticket holds the queue up that long).
pub fn table_state(t: &crate::store::slots::Slots) -> RecState {
    let last = t
        .holders
        .iter()
        .map(|h| h.expires_ms)
        .chain(t.queue.iter().map(|q| q.expires_ms))
        .max();
    match last {
        None => RecState::Released,
        Some(exp_ms) => RecState::Held {
            exp_ms,
            margin_ms: crate::store::cas::EXPIRY_MARGIN_MS,
            owner: None,
            lease: 0,
        },
    }
}

/// One request a client sent (true time), as the network treated it.
#[derive(Debug, Clone, Copy)]
pub struct Req {
    pub client: usize,
    pub sent: Duration,
    pub there: Duration,
    pub back: Duration,
    /// Not applied, or its answer lost, or refused: the caller got an error.
    pub failed: bool,
}

/// How one acquire of one of our clients ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcqEnd {
    Granted,
    NotAcquired,
    Failed,
}

/// One acquire of one of our clients (true time).
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub client: usize,
    pub wait: Option<Duration>,
    pub start: Duration,
    /// `None` while running, or when the client crashed during it.
    pub end: Option<(Duration, AcqEnd)>,
}

/// What the liveness invariants (f), (g), (h) are judged on after the
/// schedule: who waited when, what each of their requests met, pauses and
/// crashes. The record's states come from [`Table::writes`].
#[derive(Default)]
pub struct LiveLog {
    pub reqs: Vec<Req>,
    pub attempts: Vec<Attempt>,
    /// (client, start, end): a pause (`None`: never ended).
    pub pauses: Vec<(usize, Duration, Option<Duration>)>,
    pub crashes: Vec<(usize, Duration)>,
    /// (client, when): a release that returned `Ok`.
    pub releases: Vec<(usize, Duration)>,
    /// Per client: (its clock's address, whether it is an awsflock 0.2.0,
    /// whether its wall clock stays within 1 s of the store's).
    pub clients: Vec<(usize, bool, bool)>,
}

/// A waiter's poll pause is at most this ([`crate::store::poll_pause`]:
/// 100 ms plus up to 199 ms).
pub const POLL_MAX: Duration = Duration::from_millis(300);
/// A waiter behind others in a holder table's queue polls every 1 to 2 s
/// ([`crate::store::multi`]); on DynamoDB and S3 every waiter behind one of
/// our leases queues, and may be behind a ticket that is gone by the time
/// the lock is free.
pub const POLL_BEHIND_MAX: Duration = Duration::from_millis(2000);
/// Timer rounding (tokio rounds every sleep up to the next millisecond) and
/// the steps of a waiter's loop that take no time in the simulation.
pub const SLACK: Duration = Duration::from_millis(50);
/// A waiter knows the store's clock from the whole-second `Date` of its
/// last answer: its lower bound may lag the store's clock by up to this.
pub const DATE_GRAIN_MS: i64 = 1000;

/// The shared world of one schedule.
pub struct World {
    pub start: tokio::time::Instant,
    pub rng: Mutex<fastrand::Rng>,
    pub table: Mutex<Table>,
    /// (true time, delta ms): the store's clock steps.
    pub store_jumps: Vec<(Duration, i64)>,
    pub faults: Faults,
    /// Whether `log` keeps the trace: only when a seed is rerun to show
    /// one (a seed reproduces exactly, so a run without it fails alike).
    pub tracing: bool,
    pub trace: Mutex<Vec<String>>,
    /// Events logged (traced or not): compared by the determinism test.
    pub events: AtomicU64,
    pub violations: Mutex<Vec<String>>,
    pub intervals: Mutex<Vec<Interval>>,
    /// Why the lock may stay blocked for hours (a documented availability
    /// cost), if it may.
    pub blocked: Mutex<Option<String>>,
    /// Our clients use the S3 store (over [`Table::objects`]) instead of
    /// DynamoDB; there are no awsflock 0.2.0 clients then.
    pub s3: bool,
    /// Our clients are processes of one host sharing the directory store
    /// (over [`Table::dir`]), with one boot-time and one wall clock.
    pub dir: bool,
    pub live: Mutex<LiveLog>,
    /// How the clients share the name.
    pub sharing: Sharing,
}

impl World {
    pub fn t(&self) -> Duration {
        world::true_now(self.start)
    }

    fn store_ms_at(&self, t: Duration) -> i64 {
        let off: i64 = self
            .store_jumps
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, d)| d)
            .sum();
        world::EPOCH_MS + t.as_millis() as i64 + off
    }

    /// The store's clock now (ms since the epoch).
    pub fn store_ms(&self) -> i64 {
        self.store_ms_at(self.t())
    }

    /// Forward steps of the store's clock so far (ms).
    pub fn forward_jumped_ms(&self) -> i64 {
        let t = self.t();
        self.store_jumps
            .iter()
            .filter(|(at, d)| *at <= t && *d > 0)
            .map(|(_, d)| d)
            .sum()
    }

    /// The first true instant, not before `from`, from which on the store's
    /// clock reads at least `ms` (it may step back).
    fn true_when_store_stays_at(&self, ms: i64, from: Duration) -> Duration {
        let mut cuts: Vec<Duration> = self
            .store_jumps
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| *at > from)
            .collect();
        cuts.sort();
        let mut starts = vec![from];
        starts.extend(cuts.iter().copied());
        let mut answer = from;
        for (k, seg) in starts.iter().enumerate() {
            let seg_end = cuts.get(k).copied();
            // Within a segment the store's clock is true time plus a constant.
            let off = self.store_ms_at(*seg) - world::EPOCH_MS - seg.as_millis() as i64;
            let reach = ms - world::EPOCH_MS - off;
            let reach = Duration::from_millis(reach.max(0) as u64);
            let below_until = match seg_end {
                Some(e) => reach.min(e),
                None => reach,
            };
            if below_until > *seg {
                answer = answer.max(below_until);
            }
        }
        answer
    }

    /// Traces `what` (formatted only when tracing).
    pub fn log(&self, who: &str, what: std::fmt::Arguments<'_>) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if !self.tracing {
            return;
        }
        let t = self.t();
        let line = format!(
            "{:>9.3}s store {:>9.3}s  {who:<4} {what}",
            t.as_secs_f64(),
            (self.store_ms() - world::EPOCH_MS) as f64 / 1000.0,
        );
        self.trace.lock().unwrap().push(line);
    }

    pub fn violation(&self, what: impl Into<String>) {
        let what = what.into();
        self.log("!!", format_args!("VIOLATION: {what}"));
        self.violations.lock().unwrap().push(what);
    }

    /// The client whose task this is, by its clocks (every client runs
    /// under its own [`world::SimClock`], which follows it into its
    /// renewal task).
    fn current_client(&self) -> Option<usize> {
        let src = crate::timebase::current()?;
        let at = Arc::as_ptr(&src) as *const () as usize;
        let live = self.live.lock().unwrap();
        live.clients.iter().position(|(p, _, _)| *p == at)
    }

    fn draw_fate(&self) -> (Fate, Duration, Duration) {
        let (fate, there, back) = {
            let mut r = self.rng.lock().unwrap();
            let f = self.faults;
            let x = r.f64();
            let fate = if x < f.request_lost {
                Fate::RequestLost
            } else if x < f.request_lost + f.answer_lost {
                Fate::AnswerLost
            } else if x < f.request_lost + f.answer_lost + f.duplicate {
                Fate::Duplicate
            } else if x < f.request_lost + f.answer_lost + f.duplicate + f.throttled {
                Fate::Throttled
            } else {
                Fate::Ok
            };
            let delay = |r: &mut fastrand::Rng| {
                if r.f64() < f.slow {
                    Duration::from_millis(r.u64(50..1500))
                } else {
                    Duration::from_millis(r.u64(1..40))
                }
            };
            let there = delay(&mut r);
            let mut back = delay(&mut r);
            if matches!(fate, Fate::RequestLost | Fate::AnswerLost) {
                // The SDK's attempt timeout.
                back += Duration::from_millis(r.u64(300..1200));
            }
            (fate, there, back)
        };
        if let Some(client) = self.current_client() {
            let sent = self.t();
            self.live.lock().unwrap().reqs.push(Req {
                client,
                sent,
                there,
                back,
                failed: matches!(fate, Fate::RequestLost | Fate::AnswerLost | Fate::Throttled),
            });
        }
        (fate, there, back)
    }

    /// Invariant (a) for names shared through the holder table, judged on
    /// every acting interval once the schedule ended: at no instant more
    /// than N holders of a semaphore, and never an exclusive holder (ours
    /// or awsflock 0.2.0's) beside anyone. The part of an interval excused
    /// as the paused-holder case (see [`Interval::excused_until`]) is left
    /// out.
    fn check_sharing(&self) {
        let ivs = self.intervals.lock().unwrap().clone();
        let limit = match &self.sharing {
            Sharing::Lock => return,
            Sharing::Semaphore(n) => *n as usize,
            Sharing::ReadWrite(_) => usize::MAX,
        };
        let parts: Vec<(Duration, Duration, &Interval)> = ivs
            .iter()
            .map(|iv| {
                (
                    iv.start.max(iv.excused_until.unwrap_or_default()),
                    iv.end,
                    iv,
                )
            })
            .filter(|(s, e, _)| s < e)
            .collect();
        for (s, e, a) in &parts {
            let beside: Vec<&Interval> = parts
                .iter()
                .filter(|(s2, e2, b)| b.client != a.client && s2 < e && s < e2)
                .map(|x| x.2)
                .collect();
            if let Some(b) = beside.iter().find(|b| !a.shared || !b.shared) {
                self.violation(format!(
                    "an exclusive holder beside another (invariant a): c{} ({}) {:.3}-{:.3}s and c{} ({}) {:.3}-{:.3}s",
                    a.client,
                    if a.shared { "shared" } else { "exclusive" },
                    s.as_secs_f64(),
                    e.as_secs_f64(),
                    b.client,
                    if b.shared { "shared" } else { "exclusive" },
                    b.start.as_secs_f64(),
                    b.end.as_secs_f64()
                ));
                return;
            }
            // The most holders at once while `a` begins (a sweep point).
            let at = *s;
            let n = parts
                .iter()
                .filter(|(s2, e2, _)| *s2 <= at && at < *e2)
                .count();
            if n > limit {
                self.violation(format!(
                    "{n} holders of a semaphore of {limit} at {:.3}s (invariant a)",
                    at.as_secs_f64()
                ));
                return;
            }
        }
    }

    /// Checks invariant (a) for an interval just closed against every
    /// interval recorded before it.
    fn check_overlaps_of(
        &self,
        client: usize,
        start: Duration,
        end: Duration,
        excused_until: Option<Duration>,
    ) {
        if self.sharing != Sharing::Lock {
            return; // judged by `check_sharing` once the schedule ended
        }
        let clash = self
            .intervals
            .lock()
            .unwrap()
            .iter()
            .find(|b| {
                let tolerated = excused_until.max(b.excused_until).unwrap_or(Duration::ZERO);
                b.client != client && start < b.end && b.start < end && end.min(b.end) > tolerated
            })
            .cloned();
        if let Some(b) = clash {
            self.violation(format!(
                "two holders act at once (invariant a): c{client} {:.3}-{:.3}s and c{} (fence {:?}) {:.3}-{:.3}s",
                start.as_secs_f64(),
                end.as_secs_f64(),
                b.client,
                b.fence,
                b.start.as_secs_f64(),
                b.end.as_secs_f64()
            ));
        }
    }

    /// By when client `c`, waiting from `from`, must have seen a free lock
    /// granted (DESIGN.md, invariant f): one poll pause, plus each of its
    /// requests in flight from then on (a failed one costs a poll pause
    /// more: the retry waits one), plus any pause of its machine and a poll
    /// pause after it.
    fn waiter_bound(&self, live: &LiveLog, c: usize, from: Duration) -> Duration {
        // Waiters queue (and those behind poll slowly) except on the
        // directory store, whose plain locks are not queued for.
        let poll = if self.dir { POLL_MAX } else { POLL_BEHIND_MAX };
        let mut items: Vec<(Duration, Duration, Duration)> = Vec::new();
        for r in live.reqs.iter().filter(|r| r.client == c) {
            let cost = r.there + r.back + if r.failed { POLL_MAX } else { Duration::ZERO };
            // (A failed request is retried after a poll pause.)
            items.push((r.sent, r.sent + r.there + r.back, cost));
        }
        for &(_, ps, pe) in live.pauses.iter().filter(|p| p.0 == c) {
            let pe = pe.unwrap_or(Duration::MAX);
            items.push((ps, pe, pe.saturating_sub(ps.max(from)).saturating_add(poll)));
        }
        items.sort_by_key(|i| i.0);
        let mut by = from + poll + SLACK;
        for (start, end, cost) in items {
            if end <= from {
                continue;
            }
            if start >= by {
                break;
            }
            by = by.saturating_add(cost);
        }
        by
    }

    /// The liveness invariants (f), (g), (h) (DESIGN.md, "Simulation"),
    /// judged on the whole schedule once it ended at `end`.
    fn check_liveness(&self, end: Duration, lease: Duration) {
        let writes = self.table.lock().unwrap().writes.clone();
        let live = self.live.lock().unwrap();
        let ours = |c: usize| live.clients.get(c).is_some_and(|x| !x.1);
        let crashed_at = |c: usize| {
            live.crashes
                .iter()
                .find(|x| x.0 == c)
                .map(|x| x.1)
                .unwrap_or(end)
        };
        let mut found = Vec::new();
        // The record's states: Absent from the start, then one per write.
        let mut states = vec![(Duration::ZERO, RecState::Absent)];
        states.extend(writes.iter().copied());
        for (k, &(at, state)) in states.iter().enumerate() {
            let until = states.get(k + 1).map(|s| s.0).unwrap_or(end);
            // When a waiter must find this record free.
            let (free, why) = match state {
                RecState::Absent => (at, "absent"),
                RecState::Released => (at, "released"),
                RecState::Held {
                    exp_ms, margin_ms, ..
                } => (
                    self.true_when_store_stays_at(
                        exp_ms.saturating_add(margin_ms + DATE_GRAIN_MS + 1),
                        at,
                    ),
                    "expired past its takeover margin",
                ),
            };
            if free >= until {
                continue;
            }
            // Invariants (f) and (g): a waiter of ours that waits on gets it
            // (or somebody does: the record is written) within its bound.
            for a in live.attempts.iter().filter(|a| ours(a.client)) {
                let active_until = match a.end {
                    Some((e, _)) => e,
                    None => crashed_at(a.client),
                };
                if a.start >= until || active_until <= free {
                    continue;
                }
                let from = free.max(a.start);
                let by = self.waiter_bound(&live, a.client, from);
                if by < until && active_until > by {
                    found.push(format!(
                        "liveness (invariant {}): the lock was {why} from {:.3}s and nobody got it until {}; c{} waited from {:.3}s and should have had it by {:.3}s",
                        if state == RecState::Released || state == RecState::Absent { "f" } else { "g" },
                        free.as_secs_f64(),
                        if k + 1 < states.len() { format!("{:.3}s", until.as_secs_f64()) } else { "the end".into() },
                        a.client,
                        from.as_secs_f64(),
                        by.as_secs_f64()
                    ));
                }
            }
        }
        // Invariant (f), as the program sees it: once `release()` returned
        // `Ok`, the record is not its lease any more, and a waiter of ours
        // gets the lock within its bound (unless another holds it by then).
        for &(c, t_rel) in &live.releases {
            let at_rel = states
                .iter()
                .rev()
                .find(|s| s.0 <= t_rel)
                .map(|s| s.1)
                .unwrap_or(RecState::Absent);
            if matches!(at_rel, RecState::Held { owner, .. } if owner != Some(c)) {
                continue; // taken already
            }
            // The next grant: a lease other than the one on the record when
            // the release returned (that can only be the releaser's own,
            // which it said was gone).
            let next = states
                .iter()
                .find(|s| s.0 > t_rel && matches!(s.1, RecState::Held { .. }) && s.1 != at_rel)
                .map(|s| s.0)
                .unwrap_or(end);
            for a in live
                .attempts
                .iter()
                .filter(|a| ours(a.client) && a.client != c)
            {
                let active_until = match a.end {
                    Some((e, _)) => e,
                    None => crashed_at(a.client),
                };
                if a.start >= next || active_until <= t_rel {
                    continue;
                }
                let from = t_rel.max(a.start);
                let by = self.waiter_bound(&live, a.client, from);
                if by < next && active_until > by {
                    found.push(format!(
                        "liveness (invariant f): c{c}'s release returned Ok at {:.3}s ({at_rel} then) and nobody else got the lock until {:.3}s; c{} waited from {:.3}s and should have had it by {:.3}s",
                        t_rel.as_secs_f64(),
                        next.as_secs_f64(),
                        a.client,
                        from.as_secs_f64(),
                        by.as_secs_f64()
                    ));
                }
            }
        }
        // Invariant (h): a --no-wait acquire that finds the lock free gets it.
        for a in live
            .attempts
            .iter()
            .filter(|a| ours(a.client) && a.wait == Some(Duration::ZERO))
        {
            let Some((done, how)) = a.end else { continue };
            if how == AcqEnd::Granted {
                continue;
            }
            let state = states
                .iter()
                .rev()
                .find(|s| s.0 <= a.start)
                .map(|s| s.1)
                .unwrap_or(RecState::Absent);
            let free = match state {
                RecState::Absent | RecState::Released => true,
                RecState::Held {
                    exp_ms, margin_ms, ..
                } => self.store_ms_at(a.start) > exp_ms + margin_ms + DATE_GRAIN_MS,
            };
            let taken = states
                .iter()
                .any(|s| s.0 >= a.start && s.0 <= done && matches!(s.1, RecState::Held { .. }));
            let own_fault = live
                .reqs
                .iter()
                .any(|r| r.client == a.client && r.failed && r.sent >= a.start && r.sent <= done);
            let paused = live
                .pauses
                .iter()
                .any(|&(c, s, e)| c == a.client && s <= done && e.is_none_or(|e| e >= a.start));
            let stepped = self
                .store_jumps
                .iter()
                .any(|(at, _)| *at >= a.start && *at <= done);
            if free && !taken && !own_fault && !paused && !stepped {
                found.push(format!(
                    "liveness (invariant h): c{}'s --no-wait acquire at {:.3}s found the lock free ({state}, store clock {:.3}s) and ended {how:?} at {:.3}s",
                    a.client,
                    a.start.as_secs_f64(),
                    (self.store_ms_at(a.start) - world::EPOCH_MS) as f64 / 1000.0,
                    done.as_secs_f64()
                ));
            }
        }
        // Invariant (g), its bound: a crashed holder of ours (its wall clock
        // within 1 s of the store's, so no first write stamped on a far-off
        // clock) left an expiry at most a lease, plus what its stamp may
        // over-estimate the store's clock by, past the store's clock at the
        // crash.
        let back_steps: i64 = self
            .store_jumps
            .iter()
            .filter(|j| j.1 < 0)
            .map(|j| -j.1)
            .sum();
        for &(c, t_c) in &live.crashes {
            if !ours(c) || !live.clients[c].2 {
                continue;
            }
            // The crashed client's last lease on the record: the one it
            // held at the crash, or one its requests in flight wrote after
            // it, until another's write.
            let at_crash = states.iter().rposition(|s| s.0 <= t_c).unwrap_or(0);
            let mut last_own = None;
            for s in &states[at_crash..] {
                match s.1 {
                    RecState::Held {
                        exp_ms,
                        owner: Some(o),
                        ..
                    } if o == c => last_own = Some(exp_ms),
                    _ if s.0 > t_c => break,
                    _ => {}
                }
            }
            if let Some(exp_ms) = last_own {
                let limit = self.store_ms_at(t_c)
                    + lease.as_millis() as i64
                    + CRASH_STAMP_ERROR_MS
                    + back_steps;
                if exp_ms > limit {
                    found.push(format!(
                        "liveness (invariant g): c{c} crashed at {:.3}s holding a lease that expires at {:.3}s (store), {} ms past the crash plus the lease and its stamp's error",
                        t_c.as_secs_f64(),
                        (exp_ms - world::EPOCH_MS) as f64 / 1000.0,
                        exp_ms - limit
                    ));
                }
            }
        }
        drop(live);
        for f in found {
            self.violation(f);
        }
    }
}

/// How far a lease's stamped expiry may lie past the store's clock at its
/// send plus the lease: the whole-second `Date` (1 s), the request that
/// calibrated the upper bound (up to 1.5 s on its way), and the bound's
/// widening for drift (1 ms per second since the last answer).
pub const CRASH_STAMP_ERROR_MS: i64 = 1000 + 1500 + 100;

/// What one schedule found.
pub struct Report {
    pub seed: u64,
    pub violations: Vec<String>,
    /// Empty unless the run was traced ([`run_seed_traced`]).
    pub trace: Vec<String>,
    /// Events logged, traced or not, and the true time the schedule ended.
    pub events: u64,
    pub ended: Duration,
}

impl Report {
    pub fn explain(&self) -> String {
        format!(
            "simulation seed {} failed:\n  {}\ntrace (true time, store time, client, event):\n{}\n\
             rerun: scripts/sim.sh 1 {} (or AWSFLOCK_SIM_SEED={} AWSFLOCK_SIM_SEEDS=1 cargo test --lib sim::tests::schedules -- --nocapture)",
            self.seed,
            self.violations.join("\n  "),
            self.trace.join("\n"),
            self.seed,
            self.seed
        )
    }
}

/// Runs the schedule of `seed` on a fresh runtime with virtual time,
/// without keeping its trace.
pub fn run_seed(seed: u64) -> Report {
    run(seed, Store::DynamoDb, false)
}

/// Which store a schedule's clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    DynamoDb,
    S3,
    /// The directory store, all clients on one host.
    Dir,
}

/// Runs the schedule of `seed` with our clients on `store`, without
/// keeping its trace.
pub fn run_seed_with(seed: u64, store: Store) -> Report {
    run(seed, store, false)
}

/// Runs the schedule of `seed` with our clients on `store`, keeping its
/// trace.
pub fn run_seed_traced_with(seed: u64, store: Store) -> Report {
    run(seed, store, true)
}

/// Runs the schedule of `seed`, with our clients on the S3 store when `s3`,
/// without keeping its trace.
pub fn run_seed_on(seed: u64, s3: bool) -> Report {
    run(seed, if s3 { Store::S3 } else { Store::DynamoDb }, false)
}

/// Runs the schedule of `seed` keeping its trace (for a failure, or to
/// read what a seed does), on the S3 store when `s3`.
pub fn run_seed_traced(seed: u64, s3: bool) -> Report {
    run(seed, if s3 { Store::S3 } else { Store::DynamoDb }, true)
}

fn run(seed: u64, store: Store, tracing: bool) -> Report {
    run_sharing(seed, store, false, tracing)
}

/// Runs the schedule of `seed` on `store` with the name shared through the
/// holder table (a semaphore, or readers and writers), without its trace.
pub fn run_slots_seed(seed: u64, store: Store) -> Report {
    run_sharing(seed, store, true, false)
}

/// [`run_slots_seed`], keeping the trace.
pub fn run_slots_seed_traced(seed: u64, store: Store) -> Report {
    run_sharing(seed, store, true, true)
}

fn run_sharing(seed: u64, store: Store, slots: bool, tracing: bool) -> Report {
    fastrand::seed(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(client::schedule(seed, store, slots, tracing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_u64(name: &str) -> Option<u64> {
        std::env::var(name).ok().and_then(|v| v.parse().ok())
    }

    /// Runs `count` schedules from `first`, panicking with the first
    /// failure's seed, trace and how to rerun it.
    fn run_range(first: u64, count: u64) -> u64 {
        let t0 = std::time::Instant::now();
        let mut slowest = (0.0f64, 0u64);
        let show = std::env::var_os("AWSFLOCK_SIM_TRACE").is_some();
        for seed in first..first + count {
            if show {
                let r = run_seed_traced(seed, false);
                eprintln!("seed {seed}:\n{}", r.trace.join("\n"));
            }
            let t = std::time::Instant::now();
            let r = run_seed(seed);
            let took = t.elapsed().as_secs_f64();
            if took > slowest.0 {
                slowest = (took, seed);
            }
            if !r.violations.is_empty() {
                // The same seed again, traced: it fails alike.
                let traced = run_seed_traced(seed, false);
                assert_eq!(
                    traced.violations, r.violations,
                    "seed {seed} failed differently when traced"
                );
                panic!("{}", traced.explain());
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "simulation: {count} schedules from seed {first} in {secs:.1}s ({:.0}/s); slowest: seed {} ({:.3}s)",
            count as f64 / secs.max(1e-9),
            slowest.1,
            slowest.0
        );
        count
    }

    /// The default run is split over two tests so that both cores work.
    const DEFAULT_SEEDS: u64 = 24_000;

    #[test]
    fn schedules() {
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        match env_u64("AWSFLOCK_SIM_SEEDS") {
            Some(n) => run_range(first, n),
            None => run_range(first, DEFAULT_SEEDS / 2),
        };
    }

    #[test]
    fn schedules_second_half() {
        if env_u64("AWSFLOCK_SIM_SEEDS").is_some() {
            return; // an explicit range runs in `schedules` alone
        }
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        run_range(first + DEFAULT_SEEDS / 2, DEFAULT_SEEDS / 2);
    }

    #[test]
    fn a_seed_reproduces_its_run_exactly() {
        for seed in [1u64, 7, 42, 1234, 99_999] {
            let a = run_seed_traced(seed, false);
            let b = run_seed_traced(seed, false);
            assert!(a.trace.len() > 5, "seed {seed}: {:?}", a.trace);
            assert_eq!(a.trace, b.trace, "seed {seed} ran differently twice");
            // Untraced (as the soaks run), it is the same run.
            let c = run_seed(seed);
            assert!(c.trace.is_empty());
            assert_eq!(
                (c.events, c.ended, &c.violations),
                (a.events, a.ended, &a.violations),
                "seed {seed} ran differently untraced"
            );
        }
        assert_ne!(
            run_seed_traced(1, false).trace,
            run_seed_traced(2, false).trace
        );
    }
}

/// Schedules whose clients share the name through the holder table: a
/// semaphore of 2 or 3, or readers and writers; on DynamoDB beside
/// awsflock 0.2.0 clients, on S3 and on the directory store.
#[cfg(test)]
mod slot_tests {
    use super::*;

    fn env_u64(name: &str) -> Option<u64> {
        std::env::var(name).ok().and_then(|v| v.parse().ok())
    }

    /// Runs `count` holder-table schedules on `store` from `first`,
    /// panicking with the first failure's seed and trace.
    fn run_range(store: Store, first: u64, count: u64) {
        let t0 = std::time::Instant::now();
        for seed in first..first + count {
            let r = run_slots_seed(seed, store);
            if !r.violations.is_empty() {
                let traced = run_slots_seed_traced(seed, store);
                panic!(
                    "{}\n  (a holder-table schedule: rerun with scripts/sim.sh --slots{} 1 {seed})",
                    traced.explain(),
                    match store {
                        Store::DynamoDb => "",
                        Store::S3 => " --s3",
                        Store::Dir => " --dir",
                    }
                );
            }
        }
        eprintln!(
            "simulation: {count} holder-table schedules on {store:?} from seed {first} in {:.1}s",
            t0.elapsed().as_secs_f64()
        );
    }

    /// `AWSFLOCK_SIM_SEEDS`/`AWSFLOCK_SIM_SEED` pick the range; with one
    /// seed, its trace is printed.
    fn range(store: Store, default: u64) {
        let first = env_u64("AWSFLOCK_SIM_SEED").unwrap_or(0);
        let count = env_u64("AWSFLOCK_SIM_SEEDS").unwrap_or(default);
        if count == 1 && std::env::var_os("AWSFLOCK_SIM_TRACE").is_some() {
            eprintln!("{}", run_slots_seed_traced(first, store).trace.join("\n"));
        }
        run_range(store, first, count);
    }

    #[test]
    fn slot_schedules_dynamodb() {
        range(Store::DynamoDb, 4_000);
    }

    #[test]
    fn slot_schedules_s3() {
        range(Store::S3, 2_000);
    }

    #[test]
    fn slot_schedules_dir() {
        range(Store::Dir, 2_000);
    }

    #[test]
    fn slot_schedules_use_every_kind_of_sharing() {
        let (mut sem, mut rw) = (0, 0);
        for seed in 0..200 {
            let r = run_slots_seed_traced(seed, Store::DynamoDb);
            let head = r.trace.first().cloned().unwrap_or_default();
            if head.contains("Semaphore") {
                sem += 1;
            }
            if head.contains("ReadWrite") {
                rw += 1;
            }
        }
        assert!(sem > 50 && rw > 50, "semaphores {sem}, read-write {rw}");
    }
}
