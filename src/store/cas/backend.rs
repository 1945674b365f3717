//! What a compare-and-swap store supplies ([`CasStore`]: its writes, its
//! read, what its records say) and the judgments made of its records with
//! the pure rules of [`crate::protocol`].

use std::time::Duration;

use crate::boottime::BootInstant as Instant;
use crate::clock::ServerClock;
use crate::error::{Error, Result};
use crate::info::LockInfo;
use crate::protocol::expiry::{self, EXPIRY_MARGIN_MS, Judged, Now, Stamp};
use crate::protocol::grant::{self, Next};
use crate::protocol::line::{Entry, Mark};
use crate::protocol::slots::{self, Kind, Slots};
use crate::request::{AcquireRequest, Lease};
use crate::store::BoxFuture;

/// The result of one write that tried to take the lock.
pub enum Outcome<R> {
    /// We hold it, with this fencing token.
    Granted(Option<u64>),
    /// Someone else got there first; this is the record now (`None`: absent).
    Lost(Option<R>),
    /// Something the store needed was learnt (e.g. a fencing high-water
    /// mark); send the same kind of write again at once.
    Retry,
}

/// A store with one record per lock, changed only by compare-and-swap.
///
/// A store writes only what is its own (its record, its writes, its limits);
/// every `CasStore` is a [`LockStore`] through the one generic impl below,
/// which holds the acquire loop, inspect, list and force-release for all of
/// them.
#[async_trait::async_trait]
pub trait CasStore: Send + Sync {
    /// What the store keeps per lock.
    type Record: Clone + Send + Sync;

    /// The store's waiting line, when it keeps its waiters outside the
    /// lock record ([`Line`]); `None`: waiters queue in the record's holder
    /// table.
    fn line(&self) -> Option<&dyn Line> {
        None
    }

    /// A short name for messages (see [`LockStore::describe`]).
    fn describe_store(&self) -> String;

    /// Refuses a name this store cannot keep, with a usage error; every
    /// operation checks its name first.
    fn check_name(&self, name: &str) -> Result<()> {
        crate::request::validate_name(name)
    }

    /// A clearer error for one the store returned, once the store knows
    /// more about it (DynamoDB: a table with another key schema). Applied
    /// to the error of every operation but a release by lease id.
    async fn explain(&self, err: Error) -> Error {
        err
    }

    /// The store's clock as this client knows it.
    fn clock(&self) -> &ServerClock;

    /// One write that tries to grant the lock to `lease_id`. `seen` is
    /// `None` for the first, blind attempt (the store's cheapest grant of a
    /// released lock), or the record as last seen and judged free (`Some(None)`:
    /// absent); the write must be conditioned on that exact record.
    ///
    /// A failed condition whose current record carries `lease_id` is a grant
    /// (an earlier attempt of this write landed, its answer was lost).
    async fn grant(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&Option<Self::Record>>,
        st: &Stamp,
    ) -> Result<Outcome<Self::Record>>;

    /// Reads the record, strongly consistent.
    async fn read(&self, name: &str) -> Result<Option<Self::Record>>;

    /// The record's current lease id (changes at every write).
    fn lease_id_of(rec: &Self::Record) -> Option<String>;

    /// Whether the record says "released".
    fn is_released(rec: &Self::Record) -> bool;

    /// When the record's lease expires on the store's clock (ms).
    fn expiry_ms(rec: &Self::Record) -> Option<i64>;

    /// How far past [`CasStore::expiry_ms`] the store's clock must be before
    /// a waiter takes the record over. Records written by another client
    /// may need that client's own margin (awsflock 0.2.0's 5 s).
    fn takeover_margin_ms(_rec: &Self::Record) -> i64 {
        EXPIRY_MARGIN_MS
    }

    /// Whether the holder is known to be gone (e.g. a dead pid on this
    /// host): free at once, without waiting for the lease to expire.
    fn holder_gone(&self, _rec: &Self::Record) -> bool {
        false
    }

    /// What the record says, for people.
    fn info(&self, name: &str, rec: Option<&Self::Record>) -> LockInfo;

    /// Renews `lease` to `next_id` (see [`super::LockStore::renew`]).
    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease>;

    /// Releases `lease_id` (see [`super::LockStore::release`]).
    async fn release_id(&self, name: &str, lease_id: &str) -> Result<()>;

    /// Releases whatever lease `rec` holds, for a force-release: by its
    /// lease id. [`Error::NotHeld`] when the record changed meanwhile.
    async fn release_record(&self, name: &str, rec: &Self::Record) -> Result<()> {
        match Self::lease_id_of(rec) {
            Some(id) => self.release_id(name, &id).await,
            None => Err(Error::NotHeld {
                name: name.to_string(),
                lease_id: String::new(),
                detail: " (its lease id cannot be read)".to_string(),
            }),
        }
    }

    /// Whether a supervisor renews the record's lease (`run`, a
    /// `LockGuard`): a forced release then revokes it instead of freeing
    /// the lock under it (see `super::revoke`).
    fn supervised(_rec: &Self::Record) -> bool {
        false
    }

    /// Who revoked the single-holder record's lease, when it was revoked in
    /// place ([`CasStore::revoke_record`]).
    fn revoked_by(_rec: &Self::Record) -> Option<String> {
        None
    }

    /// Marks the single-holder record's lease revoked by `by`, on the
    /// condition that it is still `rec`: its renewals are then refused and
    /// it holds until it releases or expires. `Ok(false)` when the store
    /// cannot mark a single-holder record (the caller then moves the lease
    /// into a holder table and marks it there, [`CasStore::as_table`]);
    /// [`Error::NotHeld`] when the record changed meanwhile.
    async fn revoke_record(&self, _name: &str, _rec: &Self::Record, _by: &str) -> Result<bool> {
        Ok(false)
    }

    /// Every lock record in the store, with its name (reserved names
    /// left out), in any order.
    async fn records(&self) -> Result<Vec<(String, Self::Record)>>;

    /// Creates what the store needs (see [`LockStore::create`]).
    async fn create_store(&self) -> Result<()>;

    /// The holder table a record keeps, when it keeps a current one
    /// (its version is the record's own): a semaphore or shared lock.
    fn slots_of(_rec: &Self::Record) -> Option<Slots> {
        None
    }

    /// The store's time as holder tables are judged and stamped: the
    /// store's clock, as bounds.
    fn table_now(&self) -> Now {
        Now {
            lo: self.clock().lower_ms(),
            hi: self.clock().upper_ms(),
        }
    }

    /// A time of [`CasStore::table_now`]'s clock on the wall clock, for
    /// people.
    fn table_wall_ms(&self, ms: i64) -> i64 {
        ms
    }

    /// The local instant by which a holder whose entry in a table expires
    /// at `expires_ms` must have stopped, the write having been sent at
    /// `sent` for `lease`.
    fn table_deadline(&self, expires_ms: i64, sent: Instant, lease: Duration) -> Instant {
        expiry::clock_deadline(self.clock(), expires_ms, sent, lease)
    }

    /// A single-holder record written by this client (not by awsflock
    /// 0.2.0), held, with a counter of tokens (its block may be used up:
    /// the table's next admission reserves a fresh one), as the one
    /// exclusive holder of a holder table: its lease id, owner, reason, fence and
    /// stored expiry exactly as the record has them, so that its holder's
    /// next renewal, refused by the record, finds itself in the table and
    /// goes on there. `None`: waiters may not queue in this record (they
    /// poll it). Returns the table with that holder.
    fn as_table(_rec: &Self::Record) -> Option<Slots> {
        None
    }

    /// The last fencing token a single-holder record issued and the last
    /// of its block, when it can issue the next one itself.
    fn last_fence(_rec: &Self::Record) -> Option<(u64, Option<u64>)> {
        None
    }

    /// The first fencing token for a name whose record is absent, keeps no
    /// counter, or has used up its block: above every token issued for it
    /// before; with the last token of the block now reserved for it
    /// (`None`: no blocks, the store's mark is moved at each write).
    async fn fence_floor(&self, _name: &str) -> Result<(u64, Option<u64>)> {
        Ok((1, None))
    }

    /// Writes `table` as the name's record (its version is `table.version`),
    /// on the condition that the record is still `seen` (`None`: absent).
    /// `Ok(Err(current))` when it is not.
    async fn write_slots(
        &self,
        _name: &str,
        _seen: Option<&Self::Record>,
        _table: &Slots,
    ) -> Result<std::result::Result<(), Option<Self::Record>>> {
        Err(Error::usage(format!(
            "{} keeps no semaphores or shared locks; drop --max-holders and --shared",
            self.describe_store()
        )))
    }
}

/// A waiting line kept outside the lock record, one small entry per waiter
/// (see [`crate::protocol::line`]). Entries grant nothing: admission is
/// the record's conditional write, as ever.
#[async_trait::async_trait]
pub trait Line: Send + Sync {
    /// Takes a place in `name`'s line for waiter `id` asking for `kind`
    /// (nothing is written for it yet: see [`Line::enter`]).
    async fn take_place(&self, name: &str, id: &str, kind: Kind, mark: &Mark) -> Result<String>;

    /// Writes our entry at `place`, alive until `expires_ms`: how many
    /// places are ahead of it (live or not) after the record's `mark`.
    /// Safe to repeat at the same place after an error (the write may
    /// have landed without its answer).
    async fn enter(
        &self,
        name: &str,
        place: &str,
        id: &str,
        kind: Kind,
        expires_ms: i64,
        mark: &Mark,
    ) -> Result<u64>;

    /// Keeps the entry at `place` alive until `expires_ms`.
    async fn refresh(
        &self,
        name: &str,
        place: &str,
        id: &str,
        kind: Kind,
        expires_ms: i64,
    ) -> Result<()>;

    /// Deletes the entry at `place` (absent already: fine).
    async fn leave(&self, name: &str, place: &str) -> Result<()>;

    /// The first `max` entries after place `after` (empty: from the
    /// start) and before `before` (`None`: to the end), in order, live or
    /// not; fewer than `max` only when there are no more.
    async fn entries(
        &self,
        name: &str,
        after: &str,
        before: Option<&str>,
        max: usize,
    ) -> Result<Vec<Entry>>;

    /// A mark's `served` at the line's current end: every place taken
    /// from now on is after it (written when a waiter first marks a
    /// record).
    async fn end(&self, name: &str) -> Result<String>;

    /// How many places are ahead of `place` after the record's `mark`,
    /// at most, when the places themselves tell (`None`: they do not; the
    /// waiter counts admissions since it last looked).
    fn places_ahead(&self, _place: &str, _mark: &Mark) -> Option<u64> {
        None
    }

    /// Where to start reading the line ahead of `place` when the record
    /// keeps no mark (a plain record, freed): the places older than this
    /// are taken for stale.
    fn floor(&self, place: &str) -> String;

    /// Whether anyone may wait behind the record's `mark`: `false` only
    /// when surely nobody does (a newcomer then needs no place).
    async fn anyone_waiting(&self, name: &str, mark: &Mark) -> Result<bool> {
        Ok(!self.entries(name, &mark.served, None, 1).await?.is_empty())
    }
}

/// The cancellation signal of an acquire, fused (polled after it fired, it
/// stays pending).
pub type Cancel<'c> = futures_util::future::Fuse<BoxFuture<'c, i32>>;

/// What a record says, for people: with every holder and the queue when
/// it keeps a holder table.
pub fn info_of<S: CasStore + ?Sized>(s: &S, name: &str, rec: Option<&S::Record>) -> LockInfo {
    let mut info = s.info(name, rec);
    info.takeover_margin_ms = rec.map(S::takeover_margin_ms);
    if let Some(table) = rec.and_then(S::slots_of) {
        slots::describe(&table, s.table_now(), |ms| s.table_wall_ms(ms), &mut info);
    }
    info
}

/// `res`, its error made clearer by [`CasStore::explain`].
pub async fn explained<S: CasStore + ?Sized, T>(s: &S, res: Result<T>) -> Result<T> {
    match res {
        Err(e) => Err(s.explain(e).await),
        ok => ok,
    }
}

/// Past its expiry, and its takeover margin, by the earliest the store's
/// clock can read now ([`expiry::is_expired`]).
pub fn is_expired<S: CasStore + ?Sized>(s: &S, rec: &S::Record) -> bool {
    is_expired_at::<S>(rec, s.clock().lower_ms())
}

/// Past its expiry and its takeover margin by `lower`, the earliest the
/// store's clock reads now as the judge sees it (a waiter's
/// [`expiry::Anchor`]).
pub fn is_expired_at<S: CasStore + ?Sized>(rec: &S::Record, lower: i64) -> bool {
    expiry::is_expired(S::expiry_ms(rec), S::takeover_margin_ms(rec), lower)
}

/// Whether `rec` is held right now ([`expiry::is_held`]): what `status` and
/// `list` show, and exactly what a waiter decides ([`judge`]).
pub fn is_held<S: CasStore + ?Sized>(s: &S, rec: &S::Record) -> bool {
    is_held_at(s, rec, s.clock().lower_ms())
}

/// [`is_held`], with the store's clock read as `lower` at the earliest.
pub fn is_held_at<S: CasStore + ?Sized>(s: &S, rec: &S::Record, lower: i64) -> bool {
    expiry::is_held(
        S::is_released(rec),
        is_expired_at::<S>(rec, lower),
        s.holder_gone(rec),
    )
}

/// Judges a record for a waiter: free when absent or not [`is_held`].
pub fn judge<S: CasStore + ?Sized>(s: &S, rec: Option<&S::Record>) -> Judged {
    match rec {
        Some(rec) if is_held(s, rec) => Judged::Held,
        _ => Judged::Free,
    }
}

/// The acquire loop's decision ([`grant::next`]) on the record as seen,
/// the store's clock reading `lower` at the earliest.
pub fn next<S: CasStore + ?Sized>(
    s: &S,
    seen: Option<&Option<S::Record>>,
    unconfirmed: &[String],
    lower: i64,
) -> Next {
    let view = seen.map(|rec| {
        rec.as_ref().map(|r| grant::Seen {
            lease_id: S::lease_id_of(r),
            table_holders: S::slots_of(r)
                .map(|t| t.holders.into_iter().map(|h| h.lease_id).collect())
                .unwrap_or_default(),
            held: is_held_at(s, r, lower),
        })
    });
    grant::next(view, unconfirmed)
}

/// " (held by alice, reason: ..., fence 7)" for messages.
pub fn holder_detail(info: &LockInfo) -> String {
    crate::error::holder_detail(Some(info))
}
