//! The simulated DynamoDB: the lock protocol's requests of
//! `src/store/dynamodb.rs` ([`Requests`]) sent through the simulated
//! network ([`SimStore`]) and applied to the table's items with the
//! conditions DynamoDB evaluates (same attributes, same conditions).
//!
//! Everything above the requests is the real store: [`SimStore::into_store`]
//! is `DynamoDb` over these requests, so every decision about an answer
//! (grants, renewals, releases, judging items) is the production code.

use aws_sdk_dynamodb::types::AttributeValue;

use super::clock::true_now;
use super::counts::{Op, item_size};
use super::model::{RecState, table_state};
use super::net::SimStore;
use super::state::{LineEntry, Table, check_line_turn, check_turn, line_name};
use crate::error::{Error, Result};
use crate::store::dynamodb::{
    DynamoDb, FENCE_BLOCK, FreshAnswer, Item, Requests, attr, get_i64, get_s, get_u64, n,
};

/// A transaction's answer, as `grant_fresh` reads its cancellation reasons.
pub enum TxAnswer {
    Ok,
    /// The lock item's condition failed (reason 1), with the item.
    LockFailed(Option<Item>),
    /// Only the high-water mark's condition failed (reason 0), with its value.
    HwFailed(Option<u64>),
}

/// The simulation's own attribute of a line entry: when its waiter joined
/// (true time, ms), for the line-order check.
const JOINED_MS: &str = "sim_joined_ms";

fn num_eq(item: &Item, k: &str, v: i64) -> bool {
    get_i64(item, k) == Some(v)
}

/// The record as a waiter judges it, with the real `dynamodb::expiry_ms`
/// and `takeover_margin_of` (released: `expiration_time = 0`, as
/// `SimStore::is_released`).
pub fn state_of(item: Option<&Item>) -> RecState {
    let Some(i) = item else {
        return RecState::Absent;
    };
    type Ddb = crate::store::dynamodb::DynamoDb<SimStore>;
    if let Some(t) = <Ddb as crate::store::cas::CasStore>::slots_of(i) {
        return table_state(&t);
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

type Ddb = crate::store::dynamodb::DynamoDb<SimStore>;

/// The size of the item at `key` as DynamoDB bills it (0: none).
fn size_at(t: &Table, key: &str) -> usize {
    t.items.get(key).map_or(0, item_size)
}

/// Applies a write of kind `op` to the item at `key` (`f`) and counts it,
/// failed by its condition unless `ok` says so of its answer.
fn counted<T>(
    t: &mut Table,
    op: Op,
    key: &str,
    ok: impl Fn(&T) -> bool,
    f: impl FnOnce(&mut Table) -> T,
) -> T {
    let before = size_at(t, key);
    let out = f(t);
    let after = size_at(t, key);
    t.counts.ddb_write(op, key, ok(&out), before, after);
    out
}

/// A `GetItem` of the item at `key`, counted.
fn read_item(t: &mut Table, key: &str) -> Option<Item> {
    let item = t.items.get(key).cloned();
    t.counts
        .ddb_read(Op::GetItem, key, item.as_ref().map(item_size));
    item
}

/// DynamoDB's conditions, applied to the table's items as DynamoDB
/// evaluates the ConditionExpressions that `src/store/dynamodb.rs` sends
/// (see each operation); a comparison with a missing attribute is false,
/// as in DynamoDB.
impl Table {
    /// Records the record's state after a write that landed.
    fn note_state(&mut self, name: &str) {
        let t = self.start.map(true_now).unwrap_or_default();
        let st = state_of(self.items.get(name));
        // The waiting line: like the tickets of a table's queue, entries
        // after the mark hold the name up until the last of them lapses
        // (a dead waiter's entry holds the line up that long).
        if let Some(exp) = self.line_expiry(name) {
            self.lines.insert(self.writes.len(), exp);
        }
        self.writes.push((t, st));
    }

    /// The served mark of `name`'s record ("" when it keeps none).
    fn served(&self, name: &str) -> String {
        self.items
            .get(name)
            .and_then(<Ddb as crate::store::cas::CasStore>::slots_of)
            .map(|t| t.line.served)
            .unwrap_or_default()
    }

    /// The latest expiry of `name`'s line entries after its mark.
    fn line_expiry(&self, name: &str) -> Option<i64> {
        let prefix = crate::protocol::line::prefix(name);
        let served = self.served(name);
        self.items
            .iter()
            .filter(|(k, _)| k.strip_prefix(&prefix).is_some_and(|p| p > served.as_str()))
            .filter_map(|(_, i)| get_i64(i, attr::EXPIRES_MS))
            .max()
    }

    /// Writes a line entry; it keeps the time its waiter joined unless it
    /// had lapsed (a refresh after a lapse is a new arrival).
    pub fn put_entry(&mut self, key: &str, mut item: Item, now_ms: i64) {
        let margin = crate::protocol::expiry::EXPIRY_MARGIN_MS;
        let joined = self
            .items
            .get(key)
            .filter(|i| get_i64(i, attr::EXPIRES_MS).is_some_and(|e| now_ms <= e + margin))
            .and_then(|i| get_i64(i, JOINED_MS))
            // Join order in true time: the store's clock may step back.
            .unwrap_or(self.start.map(true_now).unwrap_or_default().as_millis() as i64);
        item.insert(JOINED_MS.into(), n(joined));
        self.items.insert(key.to_string(), item);
        if let Some(name) = line_name(key) {
            self.note_state(&name);
        }
    }

    /// Deletes a line entry.
    pub fn delete_entry(&mut self, key: &str) {
        if self.items.remove(key).is_some() {
            if let Some(name) = line_name(key) {
                self.note_state(&name);
            }
        }
    }

    /// The entries of `name`'s line, for the line-order check.
    fn line_entries(&self, name: &str) -> Vec<LineEntry> {
        let prefix = crate::protocol::line::prefix(name);
        self.items
            .iter()
            .filter_map(|(k, i)| {
                Some(LineEntry {
                    place: k.strip_prefix(&prefix)?.to_string(),
                    kind: get_s(i, attr::KIND).and_then(crate::protocol::line::kind_of_word)?,
                    expires_ms: get_i64(i, attr::EXPIRES_MS)?,
                    joined_ms: get_i64(i, JOINED_MS)?,
                })
            })
            .collect()
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
            let alive = |exp: i64| now_ms + back <= exp + crate::protocol::expiry::EXPIRY_MARGIN_MS;
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
        type Ddb = crate::store::dynamodb::DynamoDb<SimStore>;
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
        type Ddb = crate::store::dynamodb::DynamoDb<SimStore>;
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
            let entries = self.line_entries(name);
            check_line_turn(b, a, &entries, now_ms, self.back_ms, violations);
        }
        let _ = self.note_write(name);
        Ok(())
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
        counted(
            self,
            Op::PutItem,
            name,
            |ok| *ok,
            |t| t.put_v020_uncounted(name, item, old),
        )
    }

    fn put_v020_uncounted(&mut self, name: &str, item: Item, old: Option<&str>) -> bool {
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
        counted(
            self,
            Op::DeleteItem,
            name,
            |ok| *ok,
            |t| t.delete_v020_uncounted(name, id),
        )
    }

    fn delete_v020_uncounted(&mut self, name: &str, id: &str) -> bool {
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

impl SimStore {
    /// The real DynamoDB store's logic over these requests.
    pub fn into_store(self) -> DynamoDb<SimStore> {
        let (clock, host) = (self.clock.clone(), self.host.clone());
        DynamoDb::over(self, clock, host)
    }

    /// GetItem, strongly consistent (for the awsflock 0.2.0 model).
    pub async fn read(&self, name: &str) -> Result<Option<Item>> {
        self.get(name).await
    }
}

#[async_trait::async_trait]
impl Requests for SimStore {
    fn describe(&self) -> String {
        "simulated store".into()
    }

    async fn get(&self, name: &str) -> Result<Option<Item>> {
        let name = name.to_string();
        self.call(move |t, _, _| read_item(t, &name)).await
    }

    async fn grant_counter(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<Option<u64>, Option<Item>>> {
        let (name, seen) = (name.to_string(), seen.map(String::from));
        let res = self
            .call(move |t, now, v| {
                counted(t, Op::UpdateItem, &name, Result::is_ok, |t| {
                    t.grant_counter(&name, &attrs, seen.as_deref(), now, v)
                })
            })
            .await?;
        Ok(res.map(Some))
    }

    async fn grant_fresh(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
        hw: Option<u64>,
        token: &str,
    ) -> Result<FreshAnswer> {
        let (name, seen, token) = (name.to_string(), seen.map(String::from), token.to_string());
        let res = self
            .call(move |t, _, v| {
                // Two items: the lock item and the high-water mark (small).
                t.counts.wru += 2;
                let ok = |a: &TxAnswer| matches!(a, TxAnswer::Ok);
                counted(t, Op::TransactWriteItems, &name, ok, |t| {
                    t.grant_fresh(&name, &attrs, seen.as_deref(), hw, &token, FENCE_BLOCK, v)
                })
            })
            .await?;
        Ok(match res {
            TxAnswer::Ok => FreshAnswer::Ok,
            TxAnswer::LockFailed(item) => FreshAnswer::LockFailed(item),
            TxAnswer::HwFailed(h) => FreshAnswer::HwFailed(h),
        })
    }

    async fn renew(
        &self,
        name: &str,
        cur: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        no_shorter: Option<(i64, i64)>,
    ) -> Result<std::result::Result<Option<Item>, Option<Item>>> {
        let (name, cur) = (name.to_string(), cur.to_string());
        let res = self
            .call(move |t, _, _| {
                counted(t, Op::UpdateItem, &name, Result::is_ok, |t| {
                    t.renew(&name, &cur, &attrs, no_shorter)
                })
            })
            .await?;
        Ok(res.map(Some))
    }

    async fn release(
        &self,
        name: &str,
        id: &str,
        nonce: &str,
        released_ms: i64,
    ) -> Result<std::result::Result<(), Option<Item>>> {
        let (name, id, nonce) = (name.to_string(), id.to_string(), nonce.to_string());
        self.call(move |t, _, _| {
            counted(t, Op::UpdateItem, &name, Result::is_ok, |t| {
                t.release(&name, &id, &nonce, released_ms)
            })
        })
        .await
    }

    /// Not simulated: the simulation writes no unreadable items.
    async fn release_unreadable(&self, name: &str, _: &Item, _: i64) -> Result<()> {
        Err(Error::Unavailable(format!(
            "{name}: force-release is not simulated"
        )))
    }

    /// `list` is not simulated.
    async fn scan(&self) -> Result<Vec<(String, Item)>> {
        Ok(Vec::new())
    }

    async fn create(&self) -> Result<()> {
        Ok(())
    }

    async fn put_slots(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        removes: Vec<&'static str>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<(), Option<Item>>> {
        let (name, seen) = (name.to_string(), seen.map(String::from));
        self.call(move |t, now, v| {
            counted(t, Op::UpdateItem, &name, Result::is_ok, |t| {
                t.put_slots(&name, &attrs, &removes, seen.as_deref(), now, v)
            })
        })
        .await
    }

    async fn take_ticket(&self, key: &str) -> Result<u64> {
        let key = key.to_string();
        self.call(move |t, _, _| {
            t.counts.joined(&key, false);
            counted(
                t,
                Op::UpdateItem,
                &key,
                |_| true,
                |t| {
                    let item = t.items.entry(key.clone()).or_default();
                    let next = get_u64(item, attr::NEXT_TICKET).unwrap_or(0) + 1;
                    item.insert(attr::LOCK_ID.into(), AttributeValue::S(key.clone()));
                    item.insert(attr::NEXT_TICKET.into(), n(next));
                    next
                },
            )
        })
        .await
    }

    async fn last_ticket(&self, key: &str) -> Result<u64> {
        let key = key.to_string();
        self.call(move |t, _, _| {
            read_item(t, &key)
                .and_then(|i| get_u64(&i, attr::NEXT_TICKET))
                .unwrap_or(0)
        })
        .await
    }

    async fn put_entry(&self, key: &str, attrs: Vec<(&'static str, AttributeValue)>) -> Result<()> {
        let key = key.to_string();
        self.call(move |t, now, _| {
            let mut item: Item = attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            item.insert(attr::LOCK_ID.into(), AttributeValue::S(key.clone()));
            if !t.items.contains_key(&key) {
                t.counts.joined(&key, true);
            }
            counted(
                t,
                Op::PutItem,
                &key,
                |_| true,
                |t| t.put_entry(&key, item, now),
            );
        })
        .await
    }

    async fn delete_entry(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.call(move |t, _, _| {
            counted(t, Op::DeleteItem, &key, |_| true, |t| t.delete_entry(&key))
        })
        .await
    }

    async fn get_entries(&self, keys: Vec<String>) -> Result<Vec<Item>> {
        self.call(move |t, _, _| {
            t.counts.note(Op::BatchGetItem, true);
            t.counts.batch_keys += keys.len() as u64;
            let mut found = Vec::new();
            for k in &keys {
                let item = t.items.get(k).cloned();
                t.counts
                    .ddb_read(Op::BatchGetItem, k, item.as_ref().map(item_size));
                found.extend(item);
            }
            found
        })
        .await
    }
}
