//! The simulation's shared vocabulary: what a schedule's faults, holders,
//! waiters and records are, as the world records them and the invariants
//! judge them, and what a schedule reports.

use std::time::Duration;

use super::clock::EPOCH_MS;

/// Per-request fault probabilities of one schedule.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub request_lost: f64,
    pub answer_lost: f64,
    pub duplicate: f64,
    pub throttled: f64,
    /// Chance of a slow request (up to 1.5 s each way).
    pub slow: f64,
    /// Each way's delay of a request that is not slow, ms (a range; `None`:
    /// 1–40 ms).
    pub latency_ms: Option<(u64, u64)>,
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
                (exp_ms - EPOCH_MS) as f64 / 1000.0
            ),
        }
    }
}

/// A holder table's record as a waiter judges it, for the liveness
/// invariants: free to the next waiter in turn once the holders and the
/// tickets ahead of it are gone, so held until the last of them lapses (a
/// dead waiter's ticket holds the queue up that long).
pub fn table_state(t: &crate::protocol::slots::Slots) -> RecState {
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
            margin_ms: crate::protocol::expiry::EXPIRY_MARGIN_MS,
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
/// crashes. The record's states come from [`super::state::Table::writes`].
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

/// What one schedule found.
pub struct Report {
    pub seed: u64,
    pub violations: Vec<String>,
    /// Empty unless the run was traced ([`super::run_seed_traced`]).
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

/// Which store a schedule's clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    DynamoDb,
    S3,
    /// The directory store, all clients on one host.
    Dir,
}
