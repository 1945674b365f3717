//! The DynamoDB store: awsflock 0.2.0's table format, plus fencing, shared-clock
//! expiry and one-request operations. DESIGN.md gives the protocol and the
//! reasoning; this file follows it step by step.
//!
//! One item per lock, keyed by `lock_id`, carrying 0.2.0's attributes
//! (`lease_id`, `lease_duration`, `owner`, `expiration_time` in whole seconds)
//! so that 0.2.0 clients on the same table keep working, and ours (`fence`,
//! `fence_limit`, `expires_ms`, `acquired_ms`, `reason`, `pid`, `host`,
//! `client`, `released_lease`, `released_ms`). A second item per lock, keyed
//! `__awsflock__/fence/NAME`, holds the fencing high-water mark `fence_hw`,
//! which 0.2.0 clients never touch and TTL never deletes.

//!
//! Files: `item` what an item means (attributes, expiry, the answers to
//! conditional writes); `mod.rs` the lock logic over the requests
//! ([`Requests`]) and the compare-and-swap interface; `sdk` those requests
//! sent with the AWS SDK; `table` creating and checking the table.

mod item;
mod line;
mod sdk;
mod table;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::clock::ServerClock;
use crate::error::{Error, Result};
use crate::info::LockInfo;
use crate::protocol::expiry::Stamp;
use crate::protocol::record::MAX_DURATION_S;
use crate::protocol::slots::{Holder, Kind, Slots};
use crate::request::{AcquireRequest, CLIENT_TAG, Lease};
use crate::store::cas::{self, CasStore, Outcome, holder_detail};

pub(crate) use self::item::*;
pub use self::sdk::Sdk;

/// The DynamoDB store: the lock logic, over the requests `R` sends
/// (the AWS SDK; the simulation's in-memory table in tests).
pub struct DynamoDb<R = Sdk> {
    req: R,
    clock: Arc<ServerClock>,
    host: String,
    /// The fencing high-water mark, once learnt (`None`: assume absent).
    hw_hint: std::sync::Mutex<Option<u64>>,
}

/// The attributes of an item that keeps a holder table: the table itself,
/// and 0.2.0's attributes as its latest holder (so that 0.2.0 sees the name
/// held); those to set and those to remove.
impl<R: Requests> DynamoDb<R> {
    fn table_attrs(
        &self,
        table: &Slots,
    ) -> (Vec<(&'static str, AttributeValue)>, Vec<&'static str>) {
        let latest = table.holders.iter().max_by_key(|h| h.expires_ms);
        let expires = latest.map_or(0, |h| h.expires_ms);
        let last = table.next_fence.saturating_sub(1);
        let mut attrs = vec![
            (attr::LEASE_ID, s(table.version.clone())),
            (
                attr::EXPIRATION_TIME,
                n(if expires > 0 { ceil_secs(expires) } else { 0 }),
            ),
            (attr::EXPIRES_MS, n(expires)),
            (attr::ACQUIRED_MS, n(self.clock.lower_ms())),
            (
                attr::OWNER,
                s(latest
                    .map(|h| h.owner.clone())
                    .unwrap_or_else(|| "NULL".into())),
            ),
            (attr::LEASE_DURATION, n(0)),
            (attr::CLIENT, s(CLIENT_TAG)),
            (attr::FENCE, n(last)),
            (
                attr::SLOTS,
                s(serde_json::to_string(table).unwrap_or_default()),
            ),
        ];
        let mut removes = vec![
            attr::RELEASED_LEASE,
            attr::RELEASED_MS,
            attr::PID,
            attr::HOST,
        ];
        match table.fence_limit {
            Some(l) => attrs.push((attr::FENCE_LIMIT, n(l))),
            None => removes.push(attr::FENCE_LIMIT),
        }
        match latest.and_then(|h| h.reason.clone()) {
            Some(r) => attrs.push((attr::REASON, s(r))),
            None => removes.push(attr::REASON),
        }
        (attrs, removes)
    }
}

/// The requests the lock logic sends, each answered with what the logic
/// reads of the answer. [`Sdk`] sends them to DynamoDB; the simulation
/// applies them to its in-memory table (same conditions). Every decision
/// about an answer is in [`DynamoDb`], written once.
#[async_trait::async_trait]
pub(crate) trait Requests: Send + Sync {
    /// A short name for messages.
    fn describe(&self) -> String;

    /// A clearer error for one a request returned (see [`CasStore::explain`]).
    async fn explain(&self, err: Error) -> Error {
        err
    }

    /// GetItem of the lock item, strongly consistent.
    async fn get(&self, name: &str) -> Result<Option<Item>>;

    /// A counter grant, one UpdateItem: sets `attrs` (and removes `reason`
    /// when `attrs` has none, `released_*` and `slots`), adds one to
    /// `fence`, on `expiration_time = 0 AND attribute_not_exists(slots)`
    /// (`seen` `None`) or `lease_id = seen`, and `fence < fence_limit`. The new fence, or the item when the
    /// condition failed (`ALL_OLD`).
    async fn grant_counter(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<Option<u64>, Option<Item>>>;

    /// A fresh grant, one transaction with `token` as its
    /// ClientRequestToken: the high-water item from `hw` (`None`: absent)
    /// to `hw + FENCE_BLOCK`, and the lock item put with `attrs`, `fence =
    /// hw + 1` and `fence_limit = hw + FENCE_BLOCK`, on
    /// `attribute_not_exists` (`seen` `None`) or `lease_id = seen`.
    async fn grant_fresh(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
        hw: Option<u64>,
        token: &str,
    ) -> Result<FreshAnswer>;

    /// A renewal, one UpdateItem: sets `attrs` on `lease_id = cur AND
    /// expiration_time <> 0`, and with `no_shorter` = (s, ms) also
    /// `expiration_time <= s AND (no expires_ms OR expires_ms <= ms)`. The
    /// whole new item, or the item when the condition failed.
    async fn renew(
        &self,
        name: &str,
        cur: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        no_shorter: Option<(i64, i64)>,
    ) -> Result<std::result::Result<Option<Item>, Option<Item>>>;

    /// A release, one UpdateItem: `lease_id = nonce`, `expiration_time =
    /// 0`, `expires_ms = 0`, `released_lease = id`, `released_ms`, on
    /// `lease_id = id AND expiration_time <> 0`; the item when the condition
    /// failed.
    async fn release(
        &self,
        name: &str,
        id: &str,
        nonce: &str,
        released_ms: i64,
    ) -> Result<std::result::Result<(), Option<Item>>>;

    /// Releases an item whose `lease_id` cannot be read, on the condition
    /// that it still cannot.
    async fn release_unreadable(&self, name: &str, item: &Item, released_ms: i64) -> Result<()>;

    /// Every item of the table but the reserved ones, with its name.
    async fn scan(&self) -> Result<Vec<(String, Item)>>;

    /// A write of a holder table, one UpdateItem: sets `attrs` and
    /// removes `removes`, on `attribute_not_exists(lock_id)` (`seen`
    /// `None`) or `lease_id = seen`; the item when the condition failed.
    async fn put_slots(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        removes: Vec<&'static str>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<(), Option<Item>>>;

    /// Creates the table (see [`LockStore::create`]).
    async fn create(&self) -> Result<()>;

    /// The waiting line's ticket counter of `name`, one UpdateItem with an
    /// unconditional `ADD next_ticket 1`: the new value.
    async fn take_ticket(&self, key: &str) -> Result<u64>;

    /// GetItem of a ticket counter, strongly consistent: its value (0 when
    /// absent).
    async fn last_ticket(&self, key: &str) -> Result<u64>;

    /// PutItem of a line entry, unconditional.
    async fn put_entry(&self, key: &str, attrs: Vec<(&'static str, AttributeValue)>) -> Result<()>;

    /// DeleteItem of a line entry, unconditional.
    async fn delete_entry(&self, key: &str) -> Result<()>;

    /// BatchGetItem of line entries, strongly consistent: those that exist.
    async fn get_entries(&self, keys: Vec<String>) -> Result<Vec<Item>>;
}

/// How a fresh-grant transaction ended.
#[derive(Debug)]
pub(crate) enum FreshAnswer {
    /// Both writes applied.
    Ok,
    /// The lock item's condition failed, with the item.
    LockFailed(Option<Item>),
    /// Only the high-water mark's condition failed, with its value.
    HwFailed(Option<u64>),
}

impl<R: Requests> DynamoDb<R> {
    /// The lock logic over `req`, with the store's clock that `req`'s
    /// answers calibrate and this host's name (written with each grant).
    pub(crate) fn over(req: R, clock: Arc<ServerClock>, host: String) -> Self {
        DynamoDb {
            req,
            clock,
            host,
            hw_hint: std::sync::Mutex::new(None),
        }
    }

    /// The attributes every grant writes (all of 0.2.0's, and ours but the fence).
    fn grant_attrs(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        st: &Stamp,
    ) -> Vec<(&'static str, AttributeValue)> {
        let mut v = vec![
            (attr::LEASE_ID, s(lease_id)),
            (attr::LEASE_DURATION, n(req.lease.as_secs())),
            (attr::OWNER, s(req.owner.clone())),
            (attr::EXPIRATION_TIME, n(ceil_secs(st.expires_ms))),
            (attr::EXPIRES_MS, n(st.expires_ms)),
            (attr::ACQUIRED_MS, n(st.shown_ms)),
            (attr::PID, n(std::process::id())),
            (attr::HOST, s(self.host.clone())),
            (attr::CLIENT, s(CLIENT_TAG)),
            (attr::SUPERVISED, AttributeValue::Bool(req.supervised)),
        ];
        if let Some(r) = &req.reason {
            v.push((attr::REASON, s(r.clone())));
        }
        v
    }

    /// A grant from the lock item's own fence counter, in one UpdateItem:
    /// blind (`seen = None`: the item must be released), or taking over the
    /// exact lease `seen` that we judged free.
    async fn grant_counter(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&str>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        let attrs = self.grant_attrs(req, lease_id, st);
        Ok(
            match self.req.grant_counter(&req.name, attrs, seen).await? {
                Ok(fence) => Outcome::Granted(fence),
                Err(item) => won_anyway(item, lease_id),
            },
        )
    }

    /// A grant with a fresh block of fencing tokens reserved from the
    /// high-water mark, in one transaction, for a lock item that is absent
    /// (`seen = None`) or whose counter was lost (wiped by an old client,
    /// deleted by TTL, or exhausted). The high-water mark is guessed from
    /// what this client last learnt (`None`: assume it does not exist yet);
    /// a wrong guess cancels the transaction, teaches the right value, and
    /// the caller tries again at once.
    async fn grant_fresh(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&str>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        let hw = self.hw_hint.lock().map(|h| *h).unwrap_or(None);
        let attrs = self.grant_attrs(req, lease_id, st);
        // The lease id is the transaction's ClientRequestToken: a retry of
        // a transaction that landed is a no-op.
        Ok(
            match self
                .req
                .grant_fresh(&req.name, attrs, seen, hw, lease_id)
                .await?
            {
                FreshAnswer::Ok => Outcome::Granted(Some(hw.unwrap_or(0) + 1)),
                // The lock item changed (or is ours already: a retry of a
                // transaction that landed).
                FreshAnswer::LockFailed(item) => won_anyway(item, lease_id),
                FreshAnswer::HwFailed(h) => {
                    if let Ok(mut hint) = self.hw_hint.lock() {
                        *hint = h.or(Some(0));
                    }
                    Outcome::Retry
                }
            },
        )
    }

    fn info_of(&self, name: &str, item: Option<&Item>) -> LockInfo {
        let Some(item) = item else {
            return crate::protocol::expiry::absent_info(name);
        };
        let released = get_i64(item, attr::EXPIRATION_TIME) == Some(0);
        let ours = get_s(item, attr::CLIENT).is_some();
        let expiry = expiry_ms(item);
        LockInfo {
            name: name.to_string(),
            held: cas::is_held(self, item),
            owner: get_s(item, attr::OWNER).map(String::from),
            reason: get_s(item, attr::REASON).map(String::from),
            fence: if ours {
                get_u64(item, attr::FENCE)
            } else {
                None
            },
            lease_id: if released {
                None
            } else {
                get_s(item, attr::LEASE_ID).map(String::from)
            },
            acquired_at_ms: get_ms(item, attr::ACQUIRED_MS),
            expires_at_ms: if released { None } else { expiry },
            expires_in_ms: if released {
                None
            } else {
                expiry.map(|e| e - self.clock.lower_ms())
            },
            lease_duration_s: get_num(item, attr::LEASE_DURATION, 0, MAX_DURATION_S)
                .ok()
                .flatten()
                .map(|d| d as u64),
            pid: get_u64(item, attr::PID).and_then(|p| u32::try_from(p).ok()),
            host: get_s(item, attr::HOST).map(String::from),
            client: Some(
                get_s(item, attr::CLIENT)
                    .map(String::from)
                    .unwrap_or_else(|| "awsflock 0.2.0".into()),
            ),
            problem: problems(item),
            supervised: !released && supervised_item(item),
            ..LockInfo::default()
        }
    }

    /// Renews to a caller-chosen next lease id (see [`LockStore::renew`]).
    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        let st = Stamp::now(&self.clock, duration);
        let attrs = vec![
            (attr::LEASE_ID, s(next_id)),
            (attr::LEASE_DURATION, n(duration.as_secs())),
            (attr::EXPIRATION_TIME, n(ceil_secs(st.expires_ms))),
            (attr::EXPIRES_MS, n(st.expires_ms)),
        ];
        // A new process (`awsflock renew`) stamps its first write on this
        // machine's clock. Should that clock be behind, the renewal would
        // write an expiry earlier than the lease it renews, one that may
        // look long past and be taken at once while that lease was still
        // valid: refuse to shorten it, and try again on the store's clock.
        let no_shorter = (!st.calibrated).then_some((ceil_secs(st.expires_ms), st.expires_ms));
        let item = match self
            .req
            .renew(&lease.name, &lease.lease_id, attrs, no_shorter)
            .await?
        {
            Ok(item) => item,
            Err(old) => match renew_refused(
                old.as_ref(),
                &lease.lease_id,
                next_id,
                !st.calibrated,
                self.clock.is_calibrated(),
            ) {
                // Our earlier attempt landed but its answer was lost.
                RenewRefused::Landed(i) => Some(i),
                // Still our lease, but the local clock would have
                // shortened it; the answer calibrated the store's clock.
                RenewRefused::Again => {
                    tracing::warn!(
                        "this machine's clock is behind the store's; renewing on the store's clock"
                    );
                    return Box::pin(self.renew_to(lease, duration, next_id)).await;
                }
                RenewRefused::NotHeld => {
                    return Err(Error::NotHeld {
                        name: lease.name.clone(),
                        lease_id: lease.lease_id.clone(),
                        detail: String::new(),
                    });
                }
            },
        };
        let fence = item
            .as_ref()
            .filter(|i| get_s(i, attr::CLIENT).is_some())
            .and_then(|i| get_u64(i, attr::FENCE));
        // The expiry the store holds: an earlier attempt's, when that one
        // landed and this one found its own id.
        let st = renewed_stamp(item.as_ref(), st);
        let mut renewed = Box::pin(cas::finish(
            self,
            &lease.name,
            next_id.to_string(),
            fence,
            duration,
            st,
        ))
        .await?;
        renewed.acquired_at_ms = item
            .as_ref()
            .and_then(|i| get_i64(i, attr::ACQUIRED_MS))
            .or(lease.acquired_at_ms);
        Ok(renewed)
    }
}

#[async_trait::async_trait]
impl<R: Requests> CasStore for DynamoDb<R> {
    type Record = Item;

    fn line(&self) -> Option<&dyn crate::store::cas::Line> {
        Some(self)
    }

    fn describe_store(&self) -> String {
        self.req.describe()
    }

    async fn explain(&self, err: Error) -> Error {
        self.req.explain(err).await
    }

    fn clock(&self) -> &ServerClock {
        &self.clock
    }

    /// The write [`grant_kind`] chooses.
    async fn grant(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&Option<Item>>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        match grant_kind(seen) {
            GrantKind::Counter(id) => self.grant_counter(req, lease_id, id.as_deref(), st).await,
            GrantKind::Fresh(id) => self.grant_fresh(req, lease_id, id.as_deref(), st).await,
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Item>> {
        self.req.get(name).await
    }

    fn lease_id_of(rec: &Item) -> Option<String> {
        get_s(rec, attr::LEASE_ID).map(String::from)
    }

    fn is_released(rec: &Item) -> bool {
        get_i64(rec, attr::EXPIRATION_TIME) == Some(0)
    }

    fn expiry_ms(rec: &Item) -> Option<i64> {
        expiry_ms(rec)
    }

    /// awsflock 0.2.0 takes over a lease once its clock is more than 5 s
    /// past `expiration_time`, and its holders rely on that margin (their
    /// expiry is stamped when their acquire *started*): its leases get the
    /// same 5 s, on the store's clock. [`expiry_ms`] already adds the
    /// second lost to truncation.
    fn takeover_margin_ms(rec: &Item) -> i64 {
        takeover_margin_of(rec)
    }

    fn info(&self, name: &str, rec: Option<&Item>) -> LockInfo {
        self.info_of(name, rec)
    }

    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        DynamoDb::renew_to(self, lease, duration, next_id).await
    }

    /// The fresh lease id written by this call doubles as its nonce: only
    /// an earlier attempt of *this* call leaves it behind.
    async fn release_id(&self, name: &str, lease_id: &str) -> Result<()> {
        let nonce = uuid::Uuid::new_v4().to_string();
        let released_ms = self.clock.lower_ms();
        match self
            .req
            .release(name, lease_id, &nonce, released_ms)
            .await?
        {
            Ok(()) => Ok(()),
            // Released by an earlier attempt of this call whose answer
            // was lost (the SDK retried).
            Err(Some(i)) if get_s(&i, attr::LEASE_ID) == Some(nonce.as_str()) => Ok(()),
            Err(other) => Err(Error::NotHeld {
                name: name.to_string(),
                lease_id: lease_id.to_string(),
                detail: match other.map(|i| self.info_of(name, Some(&i))) {
                    Some(info) if info.held => holder_detail(&info),
                    _ => " (it is not held by anyone)".to_string(),
                },
            }),
        }
    }

    /// An item whose `lease_id` cannot be read (missing, or not a string)
    /// is one no lease id can release: it is released on the condition that
    /// its `lease_id` is still unreadable.
    async fn release_record(&self, name: &str, item: &Item) -> Result<()> {
        match get_s(item, attr::LEASE_ID) {
            Some(id) => self.release_id(name, id).await,
            None => {
                self.req
                    .release_unreadable(name, item, self.clock.lower_ms())
                    .await
            }
        }
    }

    async fn records(&self) -> Result<Vec<(String, Item)>> {
        self.req.scan().await
    }

    async fn create_store(&self) -> Result<()> {
        self.req.create().await
    }

    fn slots_of(rec: &Item) -> Option<Slots> {
        let table: Slots = serde_json::from_str(get_s(rec, attr::SLOTS)?).ok()?;
        (Some(table.version.as_str()) == get_s(rec, attr::LEASE_ID)).then_some(table)
    }

    /// Our own lease (written by awsflock-rs, with a counter, used up or
    /// not), held.
    fn as_table(rec: &Item) -> Option<Slots> {
        if written_by_v020(rec)
            || !get_s(rec, attr::CLIENT).is_some_and(|c| c.starts_with("awsflock-rs"))
            || problems(rec).is_some()
        {
            return None;
        }
        // A holder that took its block's last token (fence = limit) moves
        // too: the table's next admission reserves a fresh block.
        let (fence, limit) = match (get_u64(rec, attr::FENCE), get_u64(rec, attr::FENCE_LIMIT)) {
            (Some(f), Some(l)) if f <= l => (f, Some(l)),
            _ => return None,
        };
        let holder = Holder {
            lease_id: get_s(rec, attr::LEASE_ID)?.to_string(),
            kind: Kind::Exclusive,
            owner: get_s(rec, attr::OWNER).unwrap_or("NULL").to_string(),
            reason: get_s(rec, attr::REASON).map(String::from),
            fence,
            expires_ms: expiry_ms(rec)?,
            acquired_ms: get_i64(rec, attr::ACQUIRED_MS).unwrap_or(0),
            host: get_s(rec, attr::HOST).map(String::from),
            pid: get_u64(rec, attr::PID).and_then(|p| u32::try_from(p).ok()),
            supervised: supervised_item(rec),
            revoked_by: None,
            lease_ms: get_num(rec, attr::LEASE_DURATION, 1, MAX_DURATION_S)
                .ok()
                .flatten()
                .map(|d| d.saturating_mul(1000)),
        };
        Some(Slots::of_holder(holder, (fence + 1, limit)))
    }

    /// A revoked single holder is moved into a holder table and marked
    /// there (see `cas::force_once`): the lock item's own attributes and
    /// conditions are those of awsflock 0.2.0's table, plus `supervised`.
    fn supervised(rec: &Item) -> bool {
        supervised_item(rec)
    }

    fn last_fence(rec: &Item) -> Option<(u64, Option<u64>)> {
        match (get_u64(rec, attr::FENCE), get_u64(rec, attr::FENCE_LIMIT)) {
            (Some(f), Some(l)) if f < l => Some((f, Some(l))),
            _ => None,
        }
    }

    /// The block of tokens above the high-water mark as last learnt (read
    /// once when not known). The table's write reserves it in the same
    /// transaction, on the mark still being that (see `write_slots`).
    async fn fence_floor(&self, name: &str) -> Result<(u64, Option<u64>)> {
        let known = self.hw_hint.lock().ok().and_then(|h| *h);
        let h = match known {
            Some(h) => h,
            None => self
                .req
                .get(&hw_key(name))
                .await?
                .and_then(|i| get_u64(&i, attr::FENCE_HW))
                .unwrap_or(0),
        };
        Ok((h + 1, Some(h + FENCE_BLOCK)))
    }

    /// One UpdateItem of the item keeping `table`: awsflock 0.2.0's
    /// attributes say "held until the latest holder's expiry" while anyone
    /// holds (so it never takes the name), "released" when nobody does.
    async fn write_slots(
        &self,
        name: &str,
        seen: Option<&Item>,
        table: &Slots,
    ) -> Result<std::result::Result<(), Option<Item>>> {
        let seen_id = match seen {
            None => None,
            Some(item) => match get_s(item, attr::LEASE_ID) {
                Some(id) => Some(id),
                None => return Ok(Err(Some(item.clone()))),
            },
        };
        let (attrs, removes) = self.table_attrs(table);
        // A table that starts a fresh block of tokens (the item is absent,
        // or kept no counter, or used its block up) reserves it from the
        // high-water mark in the same transaction as a fresh grant does, on
        // the mark being what the block was computed from: an item deleted
        // since (by awsflock 0.2.0's release, or TTL) and granted again
        // meanwhile can never make a token go back.
        let seen_limit = seen.and_then(|i| get_u64(i, attr::FENCE_LIMIT));
        if let Some(limit) = table.fence_limit.filter(|l| Some(*l) != seen_limit) {
            let hw = limit.saturating_sub(FENCE_BLOCK);
            let guess = (hw > 0).then_some(hw);
            return Ok(
                match self
                    .req
                    .grant_fresh(name, attrs, seen_id, guess, &table.version)
                    .await?
                {
                    FreshAnswer::Ok => Ok(()),
                    FreshAnswer::LockFailed(item) => Err(item),
                    FreshAnswer::HwFailed(h) => {
                        if let Ok(mut hint) = self.hw_hint.lock() {
                            *hint = h.or(Some(0));
                        }
                        Err(None)
                    }
                },
            );
        }
        self.req.put_slots(name, attrs, removes, seen_id).await
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
