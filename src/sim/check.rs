//! The invariants judged on a whole schedule: (a) for names shared
//! through the holder table, once the schedule ended, and for one holder
//! at a time as each acting interval closes; the liveness invariants (f),
//! (g), (h) once the schedule ended (DESIGN.md, "Simulation").

use std::time::Duration;

use super::clock::EPOCH_MS;
use super::model::{AcqEnd, Interval, LiveLog, RecState, Sharing};
use super::world::World;

/// A waiter's poll pause is at most this ([`crate::store::poll_pause`]:
/// 100 ms plus up to 199 ms).
pub const POLL_MAX: Duration = Duration::from_millis(300);
/// A waiter behind others in a holder table's queue polls every 1 to 2 s
/// ([`crate::store::cas::multi`]); on DynamoDB and S3 every waiter behind one of
/// our leases queues, and may be behind a ticket that is gone by the time
/// the lock is free.
pub const POLL_BEHIND_MAX: Duration = Duration::from_millis(2000);
/// Timer rounding (tokio rounds every sleep up to the next millisecond) and
/// the steps of a waiter's loop that take no time in the simulation.
pub const SLACK: Duration = Duration::from_millis(50);
/// A waiter knows the store's clock from the whole-second `Date` of its
/// last answer: its lower bound may lag the store's clock by up to this.
pub const DATE_GRAIN_MS: i64 = 1000;
const EXPIRY_MARGIN: i64 = crate::protocol::expiry::EXPIRY_MARGIN_MS;

/// How far a lease's stamped expiry may lie past the store's clock at its
/// send plus the lease: the whole-second `Date` (1 s), the request that
/// calibrated the upper bound (up to 1.5 s on its way), and the bound's
/// widening for drift (1 ms per second since the last answer).
pub const CRASH_STAMP_ERROR_MS: i64 = 1000 + 1500 + 100;

impl World {
    /// Invariant (a) for names shared through the holder table, judged on
    /// every acting interval once the schedule ended: at no instant more
    /// than N holders of a semaphore, and never an exclusive holder (ours
    /// or awsflock 0.2.0's) beside anyone. The part of an interval excused
    /// as the paused-holder case (see [`Interval::excused_until`]) is left
    /// out.
    pub fn check_sharing(&self) {
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
    pub fn check_overlaps_of(
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
    pub fn check_liveness(&self, end: Duration, lease: Duration) {
        let (writes, lines) = {
            let t = self.table.lock().unwrap();
            (t.writes.clone(), t.lines.clone())
        };
        let live = self.live.lock().unwrap();
        // The record's states: Absent from the start, then one per write.
        let mut states = vec![(Duration::ZERO, RecState::Absent)];
        states.extend(writes.iter().copied());
        let judged = Judged {
            w: self,
            live: &live,
            states,
            lines,
            end,
        };
        let mut found = Vec::new();
        judged.free_records(&mut found);
        judged.releases(&mut found);
        judged.no_wait(&mut found);
        judged.crash_bounds(lease, &mut found);
        drop(live);
        for f in found {
            self.violation(f);
        }
    }
}

/// A whole schedule, as the liveness invariants judge it.
struct Judged<'a> {
    /// The waiting line's latest expiry after a state (by the index of
    /// the write in `Table::writes`, one less than the state's).
    lines: std::collections::BTreeMap<usize, i64>,
    w: &'a World,
    live: &'a LiveLog,
    /// The lock record's states, from the start: (since, state).
    states: Vec<(Duration, RecState)>,
    end: Duration,
}

impl Judged<'_> {
    /// Whether client `c` is ours (not an awsflock 0.2.0).
    fn ours(&self, c: usize) -> bool {
        self.live.clients.get(c).is_some_and(|x| !x.1)
    }

    /// When client `c` crashed (the schedule's end if it did not).
    fn crashed_at(&self, c: usize) -> Duration {
        self.live
            .crashes
            .iter()
            .find(|x| x.0 == c)
            .map(|x| x.1)
            .unwrap_or(self.end)
    }

    /// Invariants (f) and (g) over each state of the record: once it is
    /// free (absent, released, or expired past its takeover margin), a
    /// waiter of ours gets it within its bound, or somebody does.
    fn free_records(&self, found: &mut Vec<String>) {
        for (k, &(at, state)) in self.states.iter().enumerate() {
            let until = self.states.get(k + 1).map(|s| s.0).unwrap_or(self.end);
            // When a waiter must find this record free.
            let (free, why) = match state {
                RecState::Absent => (at, "absent"),
                RecState::Released => (at, "released"),
                RecState::Held {
                    exp_ms, margin_ms, ..
                } => (
                    self.w.true_when_store_stays_at(
                        exp_ms.saturating_add(margin_ms + DATE_GRAIN_MS + 1),
                        at,
                    ),
                    "expired past its takeover margin",
                ),
            };
            // Entries in the waiting line: free to the next waiter once
            // the last of them lapsed, too.
            let free = match k.checked_sub(1).and_then(|w| self.lines.get(&w)) {
                Some(&line_ms) => free.max(self.w.true_when_store_stays_at(
                    line_ms.saturating_add(EXPIRY_MARGIN + DATE_GRAIN_MS + 1),
                    at,
                )),
                None => free,
            };
            if free >= until {
                continue;
            }
            // Invariants (f) and (g): a waiter of ours that waits on gets it
            // (or somebody does: the record is written) within its bound.
            for a in self.live.attempts.iter().filter(|a| self.ours(a.client)) {
                let active_until = match a.end {
                    Some((e, _)) => e,
                    None => self.crashed_at(a.client),
                };
                if a.start >= until || active_until <= free {
                    continue;
                }
                let from = free.max(a.start);
                let by = self.w.waiter_bound(self.live, a.client, from);
                if by < until && active_until > by {
                    found.push(format!(
                        "liveness (invariant {}): the lock was {why} from {:.3}s and nobody got it until {}; c{} waited from {:.3}s and should have had it by {:.3}s",
                        if state == RecState::Released || state == RecState::Absent { "f" } else { "g" },
                        free.as_secs_f64(),
                        if k + 1 < self.states.len() { format!("{:.3}s", until.as_secs_f64()) } else { "the end".into() },
                        a.client,
                        from.as_secs_f64(),
                        by.as_secs_f64()
                    ));
                }
            }
        }
    }

    /// Invariant (f), as the program sees it: once `release()` returned
    /// `Ok`, the record is not its lease any more, and a waiter of ours
    /// gets the lock within its bound (unless another holds it by then).
    fn releases(&self, found: &mut Vec<String>) {
        for &(c, t_rel) in &self.live.releases {
            let at_rel = self
                .states
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
            let next = self
                .states
                .iter()
                .find(|s| s.0 > t_rel && matches!(s.1, RecState::Held { .. }) && s.1 != at_rel)
                .map(|s| s.0)
                .unwrap_or(self.end);
            for a in self
                .live
                .attempts
                .iter()
                .filter(|a| self.ours(a.client) && a.client != c)
            {
                let active_until = match a.end {
                    Some((e, _)) => e,
                    None => self.crashed_at(a.client),
                };
                if a.start >= next || active_until <= t_rel {
                    continue;
                }
                let from = t_rel.max(a.start).max(self.line_lapsed(t_rel, next));
                let by = self.w.waiter_bound(self.live, a.client, from);
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
    }

    /// When every entry the waiting line held between `from` and `until`
    /// (true time) has lapsed, on the store's clock (`from` when none).
    fn line_lapsed(&self, from: Duration, until: Duration) -> Duration {
        let mut by = from;
        for (k, &(at, _)) in self.states.iter().enumerate() {
            let next = self.states.get(k + 1).map_or(self.end, |s| s.0);
            if next <= from || at >= until {
                continue;
            }
            if let Some(&line_ms) = k.checked_sub(1).and_then(|w| self.lines.get(&w)) {
                let lapse = line_ms.saturating_add(EXPIRY_MARGIN + DATE_GRAIN_MS + 1);
                by = by.max(self.w.true_when_store_stays_at(lapse, at));
            }
        }
        by
    }

    /// Invariant (h): a --no-wait acquire that finds the lock free gets it.
    fn no_wait(&self, found: &mut Vec<String>) {
        for a in self
            .live
            .attempts
            .iter()
            .filter(|a| self.ours(a.client) && a.wait == Some(Duration::ZERO))
        {
            let Some((done, how)) = a.end else { continue };
            if how == AcqEnd::Granted {
                continue;
            }
            let k = self
                .states
                .iter()
                .rposition(|s| s.0 <= a.start)
                .unwrap_or(0);
            let state = self.states[k].1;
            let free = match state {
                RecState::Absent | RecState::Released => true,
                RecState::Held {
                    exp_ms, margin_ms, ..
                } => self.w.store_ms_at(a.start) > exp_ms + margin_ms + DATE_GRAIN_MS,
            };
            // Others waiting in line come first.
            let free = free && self.line_lapsed(a.start, done) <= a.start;
            let taken = self
                .states
                .iter()
                .any(|s| s.0 >= a.start && s.0 <= done && matches!(s.1, RecState::Held { .. }));
            let own_fault =
                self.live.reqs.iter().any(|r| {
                    r.client == a.client && r.failed && r.sent >= a.start && r.sent <= done
                });
            let paused = self
                .live
                .pauses
                .iter()
                .any(|&(c, s, e)| c == a.client && s <= done && e.is_none_or(|e| e >= a.start));
            let stepped = self
                .w
                .store_jumps
                .iter()
                .any(|(at, _)| *at >= a.start && *at <= done);
            if free && !taken && !own_fault && !paused && !stepped {
                found.push(format!(
                    "liveness (invariant h): c{}'s --no-wait acquire at {:.3}s found the lock free ({state}, store clock {:.3}s) and ended {how:?} at {:.3}s",
                    a.client,
                    a.start.as_secs_f64(),
                    (self.w.store_ms_at(a.start) - EPOCH_MS) as f64 / 1000.0,
                    done.as_secs_f64()
                ));
            }
        }
    }

    /// Invariant (g), its bound: a crashed holder of ours (its wall clock
    /// within 1 s of the store's, so no first write stamped on a far-off
    /// clock) left an expiry at most a lease, plus what its stamp may
    /// over-estimate the store's clock by, past the store's clock at the
    /// crash.
    fn crash_bounds(&self, lease: Duration, found: &mut Vec<String>) {
        let back_steps: i64 = self
            .w
            .store_jumps
            .iter()
            .filter(|j| j.1 < 0)
            .map(|j| -j.1)
            .sum();
        for &(c, t_c) in &self.live.crashes {
            if !self.ours(c) || !self.live.clients[c].2 {
                continue;
            }
            // The crashed client's last lease on the record: the one it
            // held at the crash, or one its requests in flight wrote after
            // it, until another's write.
            let at_crash = self.states.iter().rposition(|s| s.0 <= t_c).unwrap_or(0);
            let mut last_own = None;
            for s in &self.states[at_crash..] {
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
                let limit = self.w.store_ms_at(t_c)
                    + lease.as_millis() as i64
                    + CRASH_STAMP_ERROR_MS
                    + back_steps;
                if exp_ms > limit {
                    found.push(format!(
                        "liveness (invariant g): c{c} crashed at {:.3}s holding a lease that expires at {:.3}s (store), {} ms past the crash plus the lease and its stamp's error",
                        t_c.as_secs_f64(),
                        (exp_ms - EPOCH_MS) as f64 / 1000.0,
                        exp_ms - limit
                    ));
                }
            }
        }
    }
}
