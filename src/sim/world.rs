//! The shared world of one schedule: true time, the store's clock (true
//! time plus its steps), the store's state behind one lock (applied one
//! request at a time), the schedule's random draws, and the trace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::clock::{EPOCH_MS, true_now};
use super::model::{Faults, Interval, LiveLog, Sharing};
use super::state::Table;

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
        true_now(self.start)
    }

    pub fn store_ms_at(&self, t: Duration) -> i64 {
        let off: i64 = self
            .store_jumps
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, d)| d)
            .sum();
        EPOCH_MS + t.as_millis() as i64 + off
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
    pub fn true_when_store_stays_at(&self, ms: i64, from: Duration) -> Duration {
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
            let off = self.store_ms_at(*seg) - EPOCH_MS - seg.as_millis() as i64;
            let reach = ms - EPOCH_MS - off;
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
            (self.store_ms() - EPOCH_MS) as f64 / 1000.0,
        );
        self.trace.lock().unwrap().push(line);
    }

    pub fn violation(&self, what: impl Into<String>) {
        let what = what.into();
        self.log("!!", format_args!("VIOLATION: {what}"));
        self.violations.lock().unwrap().push(what);
    }

    /// The client whose task this is, by its clocks (every client runs
    /// under its own [`super::clock::SimClock`], which follows it into its
    /// renewal task).
    pub fn current_client(&self) -> Option<usize> {
        let src = crate::timebase::current()?;
        let at = Arc::as_ptr(&src) as *const () as usize;
        let live = self.live.lock().unwrap();
        live.clients.iter().position(|(p, _, _)| *p == at)
    }
}
