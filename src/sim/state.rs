//! What the simulated stores hold, behind the world's one lock: the
//! DynamoDB table's items, the S3 bucket, the directory and its host's
//! processes; and the invariants' bookkeeping of every write to a lock's
//! record (its states for the liveness invariants, the fencing tokens
//! granted, the expiry written for each lease). Each store's conditions
//! are applied to it in that store's module ([`super::store`],
//! [`super::objects`], [`super::dir`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::clock::SimClock;
use super::model::RecState;
use crate::store::dynamodb::Item;

/// The store's table, applied one request at a time (linearizable).
#[derive(Default)]
pub struct Table {
    /// The schedule's start: writes are recorded in true time.
    pub start: Option<tokio::time::Instant>,
    /// How far the store's clock steps back over the whole schedule (ms):
    /// a client may judge by its clock as it read before a step, so the
    /// queue order checks count an entry as alive only while it is by this
    /// much more.
    pub back_ms: i64,
    /// The lock record's state after each write that changed it (true
    /// time), for the liveness invariants.
    pub writes: Vec<(Duration, RecState)>,
    /// For the writes (by index) after which the name's waiting line held
    /// entries after the record's mark: the latest of their expiries (a
    /// waiter's turn may wait for a dead waiter's entry to lapse).
    pub lines: std::collections::BTreeMap<usize, i64>,
    pub items: HashMap<String, Item>,
    pub hw: HashMap<String, u64>,
    /// ClientRequestTokens of transactions that landed (idempotency).
    pub tokens: HashSet<String>,
    /// The highest fence ever written to each lock item.
    pub max_fence: HashMap<String, u64>,
    /// The expiry each lease id was first written with (store ms).
    pub written_expiry: HashMap<String, i64>,
    /// The S3 bucket, for schedules with the S3 store.
    pub objects: Bucket,
    /// The directory and its host's processes, for schedules with the
    /// directory store.
    pub dir: Files,
    /// The requests applied, by kind, and the sizes read and written.
    pub counts: super::counts::Counts,
}

/// The simulated bucket: linearizable per key (every request is applied
/// whole, one at a time); every write gives the object a new ETag.
#[derive(Default)]
pub struct Bucket {
    pub objects: BTreeMap<String, (Vec<u8>, String)>,
    pub writes: u64,
    /// Each object's `LastModified` (store ms), and for line entries when
    /// their waiter joined.
    pub modified: BTreeMap<String, (i64, i64)>,
}

/// One client process of the host, as `/proc` and the watchdog show it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proc {
    /// When it ended (crashed, or exited after its last cycle).
    pub ended: Option<Duration>,
    /// While it is stopped (SIGSTOP): when it is continued.
    pub stopped_until: Option<Duration>,
    /// Until when its watchdog runs: it kills what is left of the command's
    /// process group when its holder dies, then exits.
    pub watchdog_until: Duration,
}

/// The simulated directory: records and fence marks by lock name, and the
/// host's processes.
#[derive(Default)]
pub struct Files {
    pub records: BTreeMap<String, Vec<u8>>,
    pub marks: BTreeMap<String, u64>,
    pub procs: BTreeMap<usize, Proc>,
    /// Every process's clocks, which read alike.
    pub clocks: Vec<Arc<SimClock>>,
    /// While the host is paused: when the pause ends (true time).
    pub paused_until: Option<Duration>,
}

/// Queue order: every holder a table write admits (`after` against
/// `before`) is one that fits beside the holders and before the tickets
/// still alive on the store's true clock. A client judges with its lower
/// bound of that clock, which sees everything alive that truly is, so this
/// fails only for an admission that skipped its turn.
pub fn check_turn(
    before: &crate::protocol::slots::Slots,
    after: &crate::protocol::slots::Slots,
    now_ms: i64,
    back_ms: i64,
    violations: &mut Vec<String>,
) {
    let alive = |exp: i64| now_ms + back_ms <= exp + crate::protocol::expiry::EXPIRY_MARGIN_MS;
    let had: std::collections::HashSet<u64> = before.holders.iter().map(|h| h.fence).collect();
    for h in after.holders.iter().filter(|h| !had.contains(&h.fence)) {
        let mut t = before.clone();
        t.mode = after.mode;
        t.holders.retain(|x| alive(x.expires_ms));
        let ahead: Vec<crate::protocol::slots::Kind> = before
            .queue
            .iter()
            .take_while(|q| q.id != h.lease_id)
            .filter(|q| alive(q.expires_ms))
            .map(|q| q.kind)
            .collect();
        if !t.fits(h.kind, &ahead) {
            violations.push(format!(
                "token {} admitted out of turn: {} live holders, {} live tickets ahead (queue order)",
                h.fence,
                t.holders.len(),
                ahead.len()
            ));
        }
    }
}

/// The lock name a line entry's key belongs to.
pub fn line_name(key: &str) -> Option<String> {
    let rest = key
        .strip_prefix(crate::request::RESERVED_PREFIX)?
        .strip_prefix("wait/")?;
    let (len, rest) = rest.split_once(':')?;
    rest.get(..len.parse::<usize>().ok()?).map(str::to_string)
}

/// One entry of a waiting line, as the line-order check reads it.
pub struct LineEntry {
    pub place: String,
    pub kind: crate::protocol::slots::Kind,
    /// When it lapses (store ms).
    pub expires_ms: i64,
    /// When its waiter joined (true time, ms; a write after a lapse is a
    /// new arrival).
    pub joined_ms: i64,
}

/// Line order: an admission through the line (the mark moved to the
/// admitted place) fits beside the live holders and the entries ahead of
/// it that joined before its waiter did and were alive on the store's true
/// clock (so that the waiter's read of the line, made after it joined,
/// saw them alive).
pub fn check_line_turn(
    before: &crate::protocol::slots::Slots,
    after: &crate::protocol::slots::Slots,
    entries: &[LineEntry],
    now_ms: i64,
    back_ms: i64,
    violations: &mut Vec<String>,
) {
    if after.line.served == before.line.served {
        return;
    }
    let (from, to) = (before.line.served.as_str(), after.line.served.as_str());
    let Some(joined) = entries.iter().find(|e| e.place == to).map(|e| e.joined_ms) else {
        return;
    };
    let alive = |e: i64| now_ms + back_ms <= e + crate::protocol::expiry::EXPIRY_MARGIN_MS;
    let mut ahead: Vec<&LineEntry> = entries
        .iter()
        .filter(|e| e.place.as_str() > from && e.place.as_str() < to)
        .filter(|e| e.joined_ms < joined && alive(e.expires_ms))
        .collect();
    ahead.sort_by(|a, b| a.place.cmp(&b.place));
    let kinds: Vec<_> = ahead.iter().map(|e| e.kind).collect();
    let had: std::collections::HashSet<u64> = before.holders.iter().map(|h| h.fence).collect();
    let mut t = before.clone();
    t.mode = after.mode;
    t.holders.retain(|h| alive(h.expires_ms));
    for h in after.holders.iter().filter(|h| !had.contains(&h.fence)) {
        if !t.fits(h.kind, &kinds) {
            violations.push(format!(
                "place {to} admitted out of turn: {} live holders, {} live entries that joined before it ahead in line (line order)",
                t.holders.len(),
                kinds.len()
            ));
        }
    }
}

impl Table {
    /// An empty table for a schedule that started at `start`.
    pub fn new(start: tokio::time::Instant) -> Table {
        Table {
            start: Some(start),
            ..Table::default()
        }
    }

    /// Records a granted fence; an error when it is not above every earlier one.
    pub fn grant_fence(&mut self, name: &str, fence: u64) -> Result<(), String> {
        let max = self.max_fence.entry(name.to_string()).or_insert(0);
        if fence <= *max {
            return Err(format!(
                "fencing token {fence} granted after token {} (invariant b)",
                *max
            ));
        }
        *max = fence;
        Ok(())
    }

    /// The bookkeeping of a write of a holder table: (b) every holder it
    /// admits (one whose token the table before it did not have) has a
    /// token above every token granted before; (c) the expiry written with
    /// each grant or renewal, by lease id (a waiter keeps its id across
    /// attempts, so a re-admission under the same id overwrites it).
    pub fn note_table(
        &mut self,
        name: &str,
        before: Option<&crate::protocol::slots::Slots>,
        after: Option<&crate::protocol::slots::Slots>,
        violations: &mut Vec<String>,
    ) {
        let Some(after) = after else { return };
        let had: std::collections::HashSet<u64> = before
            .map(|t| t.holders.iter().map(|h| h.fence).collect())
            .unwrap_or_default();
        let mut admitted: Vec<&crate::protocol::slots::Holder> = after
            .holders
            .iter()
            .filter(|h| !had.contains(&h.fence))
            .collect();
        admitted.sort_by_key(|h| h.fence);
        for h in &after.holders {
            if had.contains(&h.fence) {
                self.written_expiry
                    .entry(h.lease_id.clone())
                    .or_insert(h.expires_ms);
            } else {
                self.written_expiry.insert(h.lease_id.clone(), h.expires_ms);
            }
        }
        for h in admitted {
            if let Err(e) = self.grant_fence(name, h.fence) {
                violations.push(e);
            }
        }
    }
}
