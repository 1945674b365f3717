//! The simulated world: true time, the store (one linearizable table of
//! DynamoDB items), each client's clocks, and the trace.
//!
//! Server-side conditions are evaluated here as DynamoDB evaluates the
//! ConditionExpressions that `src/store/dynamodb.rs` sends (see each
//! operation); a comparison with a missing attribute is false, as in
//! DynamoDB.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::dynamodb::{Item, attr, get_i64, get_s, get_u64, n};
use crate::timebase::TimeSource;

/// The store's clock at true time zero, ms since the epoch.
pub const EPOCH_MS: i64 = 1_800_000_000_000;

/// True time: tokio's virtual clock since the schedule started.
pub fn true_now(start: tokio::time::Instant) -> Duration {
    tokio::time::Instant::now().saturating_duration_since(start)
}

/// How a client is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseKind {
    /// The VM is paused: monotonic and boot-time clocks stand still; the
    /// wall clock is resynchronised afterwards.
    Vm,
    /// Suspend to RAM: the boot-time clock counts it, the monotonic does not.
    Suspend,
    /// One process stopped (SIGSTOP): it runs nothing, and every clock
    /// counts the time.
    Stop,
}

#[derive(Debug, Default)]
struct ClockState {
    /// True time lost to the boot-time clock (VM pauses).
    boot_lost: Duration,
    /// True time lost to the monotonic clock (every pause).
    mono_lost: Duration,
    /// A pause in progress: when it began (true) and its kind.
    paused: Option<(Duration, PauseKind)>,
    /// Wall clock minus true store-less time, ms (skew; jumps change it).
    wall_skew_ms: i64,
}

/// One simulated machine's clocks: the [`TimeSource`] its tasks run under.
pub struct SimClock {
    start: tokio::time::Instant,
    std_base: std::time::Instant,
    boot_origin: Duration,
    mono_origin: Duration,
    st: Mutex<ClockState>,
    jumps: AtomicU64,
    /// Flips on every pause and resume.
    pub pause_tx: tokio::sync::watch::Sender<bool>,
}

impl SimClock {
    pub fn new(
        start: tokio::time::Instant,
        boot_origin: Duration,
        mono_origin: Duration,
        wall_skew_ms: i64,
    ) -> SimClock {
        SimClock {
            start,
            std_base: std::time::Instant::now(),
            boot_origin,
            mono_origin,
            st: Mutex::new(ClockState {
                wall_skew_ms,
                ..ClockState::default()
            }),
            jumps: AtomicU64::new(0),
            pause_tx: tokio::sync::watch::channel(false).0,
        }
    }

    fn t(&self) -> Duration {
        true_now(self.start)
    }

    pub fn paused(&self) -> bool {
        self.st.lock().unwrap().paused.is_some()
    }

    pub fn pause(&self, kind: PauseKind) {
        let t = self.t();
        self.st.lock().unwrap().paused = Some((t, kind));
        self.pause_tx.send_replace(true);
    }

    pub fn resume(&self) {
        let t = self.t();
        {
            let mut st = self.st.lock().unwrap();
            if let Some((p, kind)) = st.paused.take() {
                let d = t.saturating_sub(p);
                if kind != PauseKind::Stop {
                    st.mono_lost += d;
                }
                if kind == PauseKind::Vm {
                    st.boot_lost += d;
                }
            }
        }
        self.pause_tx.send_replace(false);
    }

    pub fn jump_wall(&self, delta_ms: i64) {
        self.st.lock().unwrap().wall_skew_ms += delta_ms;
    }

    /// Waits until the machine is not paused.
    pub async fn awake(&self) {
        let mut rx = self.pause_tx.subscribe();
        while *rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The true instant at which the boot-time clock reads `boot`, if the
    /// machine is not paused until then.
    pub fn true_at_boot(&self, boot: Duration) -> Duration {
        let now_boot = self.boot();
        let t = self.t();
        if boot >= now_boot {
            t + (boot - now_boot)
        } else {
            t.saturating_sub(now_boot - boot)
        }
    }
}

impl TimeSource for SimClock {
    // While paused, the machine runs nothing, so nothing it reads may see
    // time pass: every clock reads what it read when the pause began. On
    // waking, boot-time (after a suspend) and wall time (resynchronised
    // after a VM pause) show the whole gap at the first look.
    fn boot(&self) -> Duration {
        let st = self.st.lock().unwrap();
        let t = match st.paused {
            Some((p, _)) => p,
            None => self.t(),
        };
        self.boot_origin + t.saturating_sub(st.boot_lost)
    }

    fn mono(&self) -> std::time::Instant {
        let st = self.st.lock().unwrap();
        let t = match st.paused {
            Some((p, _)) => p,
            None => self.t(),
        };
        self.std_base + self.mono_origin + t.saturating_sub(st.mono_lost)
    }

    fn wall_ms(&self) -> i64 {
        let st = self.st.lock().unwrap();
        let t = match st.paused {
            Some((p, _)) => p,
            None => self.t(),
        };
        EPOCH_MS + t.as_millis() as i64 + st.wall_skew_ms
    }

    fn note_forward_jump(&self) {
        self.jumps.fetch_add(1, Ordering::SeqCst);
    }

    fn forward_jumps(&self) -> u64 {
        self.jumps.load(Ordering::SeqCst)
    }
}

/// A transaction's answer, as `grant_fresh` reads its cancellation reasons.
pub enum TxAnswer {
    Ok,
    /// The lock item's condition failed (reason 1), with the item.
    LockFailed(Option<Item>),
    /// Only the high-water mark's condition failed (reason 0), with its value.
    HwFailed(Option<u64>),
}

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
    pub writes: Vec<(Duration, super::RecState)>,
    pub items: HashMap<String, Item>,
    pub hw: HashMap<String, u64>,
    /// ClientRequestTokens of transactions that landed (idempotency).
    tokens: HashSet<String>,
    /// The highest fence ever written to each lock item.
    pub max_fence: HashMap<String, u64>,
    /// The expiry each lease id was first written with (store ms).
    pub written_expiry: HashMap<String, i64>,
    /// The S3 bucket, for schedules with the S3 store.
    pub objects: super::objects::Bucket,
    /// The directory and its host's processes, for schedules with the
    /// directory store.
    pub dir: super::dir::Files,
}

fn num_eq(item: &Item, k: &str, v: i64) -> bool {
    get_i64(item, k) == Some(v)
}

/// The record as a waiter judges it, with the real `dynamodb::expiry_ms`
/// and `takeover_margin_of` (released: `expiration_time = 0`, as
/// `SimStore::is_released`).
pub fn state_of(item: Option<&Item>) -> super::RecState {
    use super::RecState;
    let Some(i) = item else {
        return RecState::Absent;
    };
    type Ddb = crate::store::dynamodb::DynamoDb<super::store::SimStore>;
    if let Some(t) = <Ddb as crate::store::cas::CasStore>::slots_of(i) {
        return super::table_state(&t);
    }
    if get_i64(i, attr::EXPIRATION_TIME) == Some(0) {
        return RecState::Released;
    }
    RecState::Held {
        // No expiry the waiter can read: it never judges it expired.
        exp_ms: crate::store::dynamodb::expiry_ms(i).unwrap_or(i64::MAX / 4),
        margin_ms: crate::store::dynamodb::takeover_margin_of(i),
        owner: get_s(i, attr::OWNER)
            .and_then(|o| o.strip_prefix('c'))
            .and_then(|n| n.parse().ok()),
        lease: {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            get_s(i, attr::LEASE_ID).hash(&mut h);
            h.finish()
        },
    }
}

type Ddb = crate::store::dynamodb::DynamoDb<super::store::SimStore>;

/// Queue order: every holder a table write admits (`after` against
/// `before`) is one that fits beside the holders and before the tickets
/// still alive on the store's true clock. A client judges with its lower
/// bound of that clock, which sees everything alive that truly is, so this
/// fails only for an admission that skipped its turn.
pub fn check_turn(
    before: &crate::store::slots::Slots,
    after: &crate::store::slots::Slots,
    now_ms: i64,
    back_ms: i64,
    violations: &mut Vec<String>,
) {
    let alive = |exp: i64| now_ms + back_ms <= exp + crate::store::cas::EXPIRY_MARGIN_MS;
    let had: std::collections::HashSet<u64> = before.holders.iter().map(|h| h.fence).collect();
    for h in after.holders.iter().filter(|h| !had.contains(&h.fence)) {
        let mut t = before.clone();
        t.mode = after.mode;
        t.holders.retain(|x| alive(x.expires_ms));
        let ahead: Vec<crate::store::slots::Kind> = before
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

impl Table {
    /// An empty table for a schedule that started at `start`.
    pub fn new(start: tokio::time::Instant) -> Table {
        Table {
            start: Some(start),
            ..Table::default()
        }
    }

    /// Records the record's state after a write that landed.
    fn note_state(&mut self, name: &str) {
        let t = self.start.map(true_now).unwrap_or_default();
        let st = state_of(self.items.get(name));
        self.writes.push((t, st));
    }

    fn note_write(&mut self, name: &str) -> Result<(), String> {
        self.note_state(name);
        let Some(item) = self.items.get(name) else {
            return Ok(());
        };
        if let (Some(id), Some(ms)) = (get_s(item, attr::LEASE_ID), get_i64(item, attr::EXPIRES_MS))
        {
            if ms > 0 {
                self.written_expiry.entry(id.to_string()).or_insert(ms);
            }
        }
        Ok(())
    }

    /// Records a granted fence; an error when it is not above every earlier one.
    pub(crate) fn grant_fence(&mut self, name: &str, fence: u64) -> Result<(), String> {
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

    /// `UpdateItem` of `grant_counter`: condition
    /// `expiration_time = 0 AND fence < fence_limit` (blind) or
    /// `lease_id = :seen AND fence < fence_limit`; sets `attrs`,
    /// `fence = fence + 1`, removes `reason`, `released_*`.
    pub fn grant_counter(
        &mut self,
        name: &str,
        attrs: &[(&'static str, aws_sdk_dynamodb::types::AttributeValue)],
        seen: Option<&str>,
        now_ms: i64,
        violations: &mut Vec<String>,
    ) -> Result<u64, Option<Item>> {
        let jumped = self
            .items
            .get(name)
            .and_then(<Ddb as crate::store::cas::CasStore>::slots_of);
        // Changed in place: the item is cloned only for a failed condition
        // (its answer carries the item).
        let cur = self.items.get_mut(name);
        let ok = cur.as_ref().is_some_and(|i| {
            let first = match seen {
                None => num_eq(i, attr::EXPIRATION_TIME, 0) && !i.contains_key(attr::SLOTS),
                Some(id) => get_s(i, attr::LEASE_ID) == Some(id),
            };
            let counter = matches!(
                (get_i64(i, attr::FENCE), get_i64(i, attr::FENCE_LIMIT)),
                (Some(f), Some(l)) if f < l
            );
            first && counter
        });
        let Some(item) = cur.filter(|_| ok) else {
            return Err(self.items.get(name).cloned());
        };
        // As the UpdateItem: REMOVE reason only when the grant sets none.
        if !attrs.iter().any(|(k, _)| *k == attr::REASON) {
            item.remove(attr::REASON);
        }
        for (k, v) in attrs {
            item.insert(k.to_string(), v.clone());
        }
        item.remove(attr::RELEASED_LEASE);
        item.remove(attr::RELEASED_MS);
        item.remove(attr::SLOTS);
        // Queue order: a plain grant never takes a name from a holder
        // table with anyone alive in it (holders or waiters in line).
        if let Some(t) = jumped {
            let back = self.back_ms;
            let alive = |exp: i64| now_ms + back <= exp + crate::store::cas::EXPIRY_MARGIN_MS;
            if t.holders.iter().any(|h| alive(h.expires_ms))
                || t.queue.iter().any(|q| alive(q.expires_ms))
            {
                violations.push(
                    "a plain grant took the name over live holders or waiters of its table (queue order)"
                        .to_string(),
                );
            }
        }
        let fence = get_u64(item, attr::FENCE).unwrap_or(0) + 1;
        item.insert(attr::FENCE.into(), n(fence));
        if let Err(e) = self.grant_fence(name, fence) {
            violations.push(e);
        }
        let _ = self.note_write(name);
        Ok(fence)
    }

    /// `TransactWriteItems` of `grant_fresh`: a Put of the high-water mark on
    /// `attribute_not_exists(fence_hw)` / `fence_hw = :old`, and a Put of the
    /// whole lock item on `attribute_not_exists(lock_id)` / `lease_id = :seen`;
    /// all or nothing; `ClientRequestToken` makes a repeat of a transaction
    /// that landed succeed without applying it again.
    #[allow(clippy::too_many_arguments)]
    pub fn grant_fresh(
        &mut self,
        name: &str,
        attrs: &[(&'static str, aws_sdk_dynamodb::types::AttributeValue)],
        seen: Option<&str>,
        hw_guess: Option<u64>,
        token: &str,
        block: u64,
        violations: &mut Vec<String>,
    ) -> TxAnswer {
        if self.tokens.contains(token) {
            return TxAnswer::Ok;
        }
        let cur = self.items.get(name).cloned();
        let lock_ok = match seen {
            None => cur.is_none(),
            Some(id) => cur
                .as_ref()
                .is_some_and(|i| get_s(i, attr::LEASE_ID) == Some(id)),
        };
        let hw = self.hw.get(name).copied();
        let hw_ok = match hw_guess {
            None => hw.is_none(),
            Some(g) => hw == Some(g),
        };
        if !lock_ok {
            return TxAnswer::LockFailed(cur);
        }
        if !hw_ok {
            return TxAnswer::HwFailed(hw);
        }
        let old = hw_guess.unwrap_or(0);
        let mut item = Item::new();
        item.insert(attr::LOCK_ID.into(), crate::store::dynamodb::s(name));
        item.insert(attr::FENCE.into(), n(old + 1));
        item.insert(attr::FENCE_LIMIT.into(), n(old + block));
        for (k, v) in attrs {
            item.insert(k.to_string(), v.clone());
        }
        type Ddb = crate::store::dynamodb::DynamoDb<super::store::SimStore>;
        let before = cur.as_ref().and_then(|c| {
            <Ddb as crate::store::cas::CasStore>::slots_of(c)
                .or_else(|| <Ddb as crate::store::cas::CasStore>::as_table(c))
        });
        let after = <Ddb as crate::store::cas::CasStore>::slots_of(&item);
        self.items.insert(name.to_string(), item);
        self.hw.insert(name.to_string(), old + block);
        self.tokens.insert(token.to_string());
        if after.is_some() {
            // A holder table starting a fresh block: its admissions are
            // the grants.
            self.note_table(name, before.as_ref(), after.as_ref(), violations);
        } else if let Err(e) = self.grant_fence(name, old + 1) {
            violations.push(e);
        }
        let _ = self.note_write(name);
        TxAnswer::Ok
    }

    /// `UpdateItem` of a holder table: on `attribute_not_exists(lock_id)`
    /// (`seen` `None`) or `lease_id = :seen`, sets `attrs` and removes
    /// `removes`; ALL_OLD on failure. Every token the table grants is
    /// checked against every earlier one (invariant b).
    pub fn put_slots(
        &mut self,
        name: &str,
        attrs: &[(&'static str, aws_sdk_dynamodb::types::AttributeValue)],
        removes: &[&'static str],
        seen: Option<&str>,
        now_ms: i64,
        violations: &mut Vec<String>,
    ) -> Result<(), Option<Item>> {
        let cur = self.items.get(name);
        let ok = match seen {
            None => cur.is_none(),
            Some(id) => cur.is_some_and(|i| get_s(i, attr::LEASE_ID) == Some(id)),
        };
        if !ok {
            return Err(cur.cloned());
        }
        type Ddb = crate::store::dynamodb::DynamoDb<super::store::SimStore>;
        // A plain lease of ours moved into a table keeps its token: it is
        // no new grant.
        let before = cur.and_then(|c| {
            <Ddb as crate::store::cas::CasStore>::slots_of(c)
                .or_else(|| <Ddb as crate::store::cas::CasStore>::as_table(c))
        });
        let item = self.items.entry(name.to_string()).or_insert_with(|| {
            let mut i = Item::new();
            i.insert(attr::LOCK_ID.into(), crate::store::dynamodb::s(name));
            i
        });
        for k in removes {
            item.remove(*k);
        }
        for (k, v) in attrs {
            item.insert(k.to_string(), v.clone());
        }
        let after = <Ddb as crate::store::cas::CasStore>::slots_of(item);
        self.note_table(name, before.as_ref(), after.as_ref(), violations);
        if let (Some(b), Some(a)) = (&before, &after) {
            check_turn(b, a, now_ms, self.back_ms, violations);
        }
        let _ = self.note_write(name);
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
        before: Option<&crate::store::slots::Slots>,
        after: Option<&crate::store::slots::Slots>,
        violations: &mut Vec<String>,
    ) {
        let Some(after) = after else { return };
        let had: std::collections::HashSet<u64> = before
            .map(|t| t.holders.iter().map(|h| h.fence).collect())
            .unwrap_or_default();
        let mut admitted: Vec<&crate::store::slots::Holder> = after
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

    /// `UpdateItem` of a renewal: `lease_id = :cur AND expiration_time <> 0`
    /// [`AND expiration_time <= :new_s AND (attribute_not_exists(expires_ms)
    /// OR expires_ms <= :new_ms)`]; returns ALL_NEW, or ALL_OLD on failure.
    pub fn renew(
        &mut self,
        name: &str,
        cur: &str,
        attrs: &[(&'static str, aws_sdk_dynamodb::types::AttributeValue)],
        no_shorter: Option<(i64, i64)>,
    ) -> Result<Item, Option<Item>> {
        let item = self.items.get(name).cloned();
        let ok = item.as_ref().is_some_and(|i| {
            get_s(i, attr::LEASE_ID) == Some(cur)
                && get_i64(i, attr::EXPIRATION_TIME).is_some_and(|e| e != 0)
                && no_shorter.is_none_or(|(new_s, new_ms)| {
                    get_i64(i, attr::EXPIRATION_TIME).is_some_and(|e| e <= new_s)
                        && get_i64(i, attr::EXPIRES_MS).is_none_or(|m| m <= new_ms)
                })
        });
        if !ok {
            return Err(item);
        }
        let mut item = item.unwrap();
        for (k, v) in attrs {
            item.insert(k.to_string(), v.clone());
        }
        self.items.insert(name.to_string(), item.clone());
        let _ = self.note_write(name);
        Ok(item)
    }

    /// `UpdateItem` of a release: `lease_id = :id AND expiration_time <> 0`.
    pub fn release(
        &mut self,
        name: &str,
        id: &str,
        nonce: &str,
        released_ms: i64,
    ) -> Result<(), Option<Item>> {
        let item = self.items.get_mut(name);
        let ok = item.as_ref().is_some_and(|i| {
            get_s(i, attr::LEASE_ID) == Some(id)
                && get_i64(i, attr::EXPIRATION_TIME).is_some_and(|e| e != 0)
        });
        let Some(item) = item.filter(|_| ok) else {
            return Err(self.items.get(name).cloned());
        };
        use crate::store::dynamodb::s;
        item.insert(attr::LEASE_ID.into(), s(nonce));
        item.insert(attr::EXPIRES_MS.into(), n(0));
        item.insert(attr::RELEASED_LEASE.into(), s(id));
        item.insert(attr::RELEASED_MS.into(), n(released_ms));
        item.insert(attr::EXPIRATION_TIME.into(), n(0));
        self.note_state(name);
        Ok(())
    }

    /// awsflock 0.2.0's whole-item `PutItem`, on `NOT(attribute_exists(lock_id))`
    /// (`old = None`) or `attribute_exists(lock_id) AND lease_id = :old`.
    pub fn put_v020(&mut self, name: &str, item: Item, old: Option<&str>) -> bool {
        let cur = self.items.get(name);
        let ok = match old {
            None => cur.is_none(),
            Some(id) => cur.is_some_and(|i| get_s(i, attr::LEASE_ID) == Some(id)),
        };
        if ok {
            self.items.insert(name.to_string(), item);
            self.note_state(name);
        }
        ok
    }

    /// awsflock 0.2.0's `DeleteItem` on `lease_id = :id`.
    pub fn delete_v020(&mut self, name: &str, id: &str) -> bool {
        let ok = self
            .items
            .get(name)
            .is_some_and(|i| get_s(i, attr::LEASE_ID) == Some(id));
        if ok {
            self.items.remove(name);
            self.note_state(name);
        }
        ok
    }
}
