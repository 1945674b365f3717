//! The acquire loop shared by every store that keeps one record per lock and
//! changes it only by compare-and-swap (DynamoDB conditional writes, S3
//! `If-Match`, a file under an OS lock).
//!
//! ```text
//!   blind grant ──ok──► granted
//!       │ lost: here is the record
//!       ▼
//!   judge ── free (absent, released, expired) ──► grant on that exact record ──► …
//!       └─── held ──► sleep 100–300 ms ──► read ──► judge …
//! ```
//!
//! A store supplies the writes ([`CasStore::grant`]), the read, and what its
//! records say; this module decides. DESIGN.md explains each rule.

use std::task::Poll;
use std::time::Duration;

use crate::boottime::BootInstant as Instant;

use futures_util::FutureExt;

use super::revoke::{self, Action, Force, Forced};
use super::slots::{Kind, Mode, Now, Slots};
use super::{AcquireRequest, BoxFuture, Lease, LockInfo, LockStore, multi, poll_pause};
use crate::clock::{ServerClock, local_wall_ms};
use crate::error::{Error, Result};

/// Extra time past a lease's expiry before a waiter may take it over (the
/// default of [`CasStore::takeover_margin_ms`]); defined with the holder
/// table, which judges every holder's expiry the same way.
pub use super::slots::EXPIRY_MARGIN_MS;

/// A first write made on the local clock is rewritten when the local clock
/// turns out to be further than this from the store's.
pub const SKEW_TOLERANCE_MS: i64 = 1000;

/// The times written with a grant or renewal, and what is needed afterwards
/// to compute the holder's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// The store's time when sending, at the earliest (shown as "acquired at").
    pub shown_ms: i64,
    /// The lease's expiry: the latest the store's clock could read when
    /// sending, plus the lease, so the lease is never shorter than asked.
    pub expires_ms: i64,
    /// When the write was sent (local monotonic clock).
    pub sent: Instant,
    /// The local wall clock when sending (to measure its skew afterwards).
    pub sent_wall_ms: i64,
    /// Whether the store's clock was known when sending.
    pub calibrated: bool,
}

impl Stamp {
    /// This stamp, for a write recognised as landed by an *earlier* attempt
    /// (its answer was lost): the lease expires when the record in the store
    /// says, `stored_expires_ms`, not when this attempt would have made it
    /// expire. A holder's deadline must come from what the store holds.
    pub fn as_stored(self, stored_expires_ms: i64) -> Stamp {
        Stamp {
            expires_ms: stored_expires_ms,
            ..self
        }
    }

    /// Stamps a write of a lease of `lease` now.
    pub fn now(clock: &ServerClock, lease: Duration) -> Stamp {
        let calibrated = clock.is_calibrated();
        Stamp {
            shown_ms: clock.lower_ms(),
            expires_ms: clock.upper_ms() + lease.as_millis() as i64,
            sent: Instant::now(),
            sent_wall_ms: local_wall_ms(),
            calibrated,
        }
    }
}

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

/// How a record is judged by a waiter.
#[derive(Debug, PartialEq, Eq)]
pub enum Judged {
    /// Nobody holds it: absent, released, or expired.
    Free,
    /// Somebody holds it.
    Held,
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

    /// A short name for messages (see [`LockStore::describe`]).
    fn describe_store(&self) -> String;

    /// Refuses a name this store cannot keep, with a usage error; every
    /// operation checks its name first.
    fn check_name(&self, name: &str) -> Result<()> {
        super::validate_name(name)
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
        multi::clock_deadline(self.clock(), expires_ms, sent, lease)
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

/// The one way a compare-and-swap store is a [`LockStore`]: names checked,
/// errors explained, the shared acquire loop, and inspect, list and
/// force-release built from reads of the record.
#[async_trait::async_trait]
impl<S: CasStore> LockStore for S {
    fn describe(&self) -> String {
        self.describe_store()
    }

    async fn acquire(&self, req: &AcquireRequest, cancel: BoxFuture<'_, i32>) -> Result<Lease> {
        self.check_name(&req.name)?;
        let mut cancel = cancel.fuse();
        let res = match multi::wanted(req)? {
            Some((kind, mode)) => multi::acquire(self, req, kind, mode, &mut cancel).await,
            None => acquire(self, req, &mut cancel).await,
        };
        explained(self, res).await
    }

    async fn renew(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        self.check_name(&lease.name)?;
        let res = if lease.slotted {
            multi::renew(self, lease, duration, next_id).await
        } else {
            match self.renew_to(lease, duration, next_id).await {
                // Given only a lease id: it may be one holder of several.
                // A renewal that landed may have been moved into the table
                // before its answer came: look for either id.
                Err(e @ Error::NotHeld { .. }) => {
                    match multi::holds(self, &lease.name, &[&lease.lease_id, next_id]).await {
                        Ok(true) => multi::renew(self, lease, duration, next_id).await,
                        Ok(false) => Err(e),
                        Err(read) => Err(read),
                    }
                }
                other => other,
            }
        };
        explained(self, res).await
    }

    /// One conditional write, its error as the store gave it (no extra
    /// request to explain it: DESIGN.md, "Failure cases"); a lease id the
    /// record does not hold may be one holder of several, in its table.
    async fn release(&self, name: &str, lease_id: &str) -> Result<()> {
        self.check_name(name)?;
        release_anywhere(self, name, lease_id).await
    }

    async fn inspect(&self, name: &str) -> Result<LockInfo> {
        self.check_name(name)?;
        let rec = explained(self, self.read(name).await).await?;
        Ok(info_of(self, name, rec.as_ref()))
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let records = explained(self, self.records().await).await?;
        let mut out: Vec<LockInfo> = records
            .iter()
            .map(|(name, rec)| info_of(self, name, Some(rec)))
            .filter(|i| i.held)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Reads the record and releases or revokes the lease(s) it holds
    /// ([`force_once`]); a renewal in between changes the record, so read
    /// again and retry a few times.
    async fn force_release(&self, name: &str, force: &Force) -> Result<Forced> {
        self.check_name(name)?;
        for _ in 0..5 {
            let Some(rec) = explained(self, self.read(name).await).await? else {
                return Ok(Forced::NotHeld);
            };
            let info = info_of(self, name, Some(&rec));
            if !info.held {
                return Ok(Forced::NotHeld);
            }
            match explained(self, force_once(self, name, &rec, force).await).await {
                Ok(true) => return Ok(Forced::Revoked(info)),
                Ok(false) => return Ok(Forced::Released(info)),
                Err(Error::NotHeld { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "lock {name:?} kept changing hands while being released; try again"
        )))
    }

    async fn create(&self) -> Result<()> {
        self.create_store().await
    }
}

/// One forced release of the held record `rec`, conditioned on it: a
/// holder table's holders each released or revoked ([`multi::force`]); a
/// single holder released, or revoked in place ([`CasStore::revoke_record`])
/// or, where the store cannot, moved into a holder table as its one
/// exclusive holder, marked revoked there. `Ok(true)` when a revoked holder
/// is left. A supervised record that can be neither (one with no counter
/// of tokens) is released at once, as before revocation existed.
async fn force_once<S: CasStore + ?Sized>(
    s: &S,
    name: &str,
    rec: &S::Record,
    force: &Force,
) -> Result<bool> {
    if let Some(table) = S::slots_of(rec) {
        return multi::force(s, name, rec, &table, force).await;
    }
    let revoked = S::revoked_by(rec).is_some();
    match revoke::action(force.mode, S::supervised(rec), revoked) {
        Action::Release => s.release_record(name, rec).await.map(|()| false),
        Action::Keep => Ok(true),
        Action::Revoke => {
            if s.revoke_record(name, rec, &force.by).await? {
                return Ok(true);
            }
            match S::as_table(rec) {
                Some(table) => multi::force(s, name, rec, &table, force).await,
                None => s.release_record(name, rec).await.map(|()| false),
            }
        }
    }
}

/// `res`, its error made clearer by [`CasStore::explain`].
/// Releases `lease_id` in the record, or, when the record refuses it, in
/// the table it may have been moved into.
pub async fn release_anywhere<S: CasStore + ?Sized>(
    s: &S,
    name: &str,
    lease_id: &str,
) -> Result<()> {
    match s.release_id(name, lease_id).await {
        Err(e @ Error::NotHeld { .. }) => match multi::holds(s, name, &[lease_id]).await {
            Ok(true) => multi::release(s, name, lease_id).await,
            Ok(false) => Err(e),
            Err(read) => Err(read),
        },
        other => other,
    }
}

/// What a record says, for people: with every holder and the queue when
/// it keeps a holder table.
pub fn info_of<S: CasStore + ?Sized>(s: &S, name: &str, rec: Option<&S::Record>) -> LockInfo {
    let mut info = s.info(name, rec);
    info.takeover_margin_ms = rec.map(S::takeover_margin_ms);
    if let Some(table) = rec.and_then(S::slots_of) {
        multi::describe(&table, s.table_now(), |ms| s.table_wall_ms(ms), &mut info);
    }
    info
}

async fn explained<S: CasStore + ?Sized, T>(s: &S, res: Result<T>) -> Result<T> {
    match res {
        Err(e) => Err(s.explain(e).await),
        ok => ok,
    }
}

/// Past its expiry, and its takeover margin, by the earliest the store's
/// clock can read now.
pub fn is_expired<S: CasStore + ?Sized>(s: &S, rec: &S::Record) -> bool {
    match S::expiry_ms(rec) {
        Some(exp) => s.clock().lower_ms() > exp + S::takeover_margin_ms(rec),
        None => false,
    }
}

/// Whether `rec` is held right now: what `status` and `list` show, and
/// exactly what a waiter decides ([`judge`]). There is no first-sight grace
/// (DESIGN.md, "expired"): every record a holder believes in was stamped on
/// the store's clock, and a first write stamped on a local clock is not
/// reported as a grant until it has been rewritten on the store's clock.
pub fn is_held<S: CasStore + ?Sized>(s: &S, rec: &S::Record) -> bool {
    !S::is_released(rec) && !is_expired(s, rec) && !s.holder_gone(rec)
}

/// Judges a record for a waiter: free when absent or not [`is_held`].
pub fn judge<S: CasStore + ?Sized>(s: &S, rec: Option<&S::Record>) -> Judged {
    match rec {
        Some(rec) if is_held(s, rec) => Judged::Held,
        _ => Judged::Free,
    }
}

/// What the acquire loop does next, from what it has seen: a pure decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The record carries one of our grants whose call failed (it landed,
    /// its answer was lost, nobody was told of it): give that one back
    /// first, then take the lock anew.
    GiveBack(String),
    /// Write a grant: blind when nothing was seen yet, else conditioned on
    /// the record seen, which is free.
    Grant,
    /// Somebody holds it: give up if the wait is over, else pause and read
    /// again.
    Wait,
}

/// The acquire loop's decision (see [`Next`]). `seen` is `None` before
/// anything is known, `Some(None)` for an absent record; `unconfirmed`
/// holds the lease ids of our grant writes whose call failed.
pub fn next<S: CasStore + ?Sized>(
    s: &S,
    seen: Option<&Option<S::Record>>,
    unconfirmed: &[String],
) -> Next {
    let Some(rec) = seen else {
        return Next::Grant;
    };
    if let Some(id) = rec
        .as_ref()
        .and_then(S::lease_id_of)
        .filter(|id| unconfirmed.contains(id))
    {
        return Next::GiveBack(id);
    }
    // A grant of ours that nobody was told of, moved into a table by a
    // waiter since: give it back there.
    if let Some(id) = rec.as_ref().and_then(S::slots_of).and_then(|t| {
        t.holders
            .into_iter()
            .find(|h| unconfirmed.contains(&h.lease_id))
    }) {
        return Next::GiveBack(id.lease_id);
    }
    match judge(s, rec.as_ref()) {
        Judged::Free => Next::Grant,
        Judged::Held => Next::Wait,
    }
}

/// Takes the lock as `req` says: the whole acquire of a compare-and-swap
/// store. [`next`] decides each step; [`Acquiring`] carries it out.
pub async fn acquire<'c, S: CasStore + ?Sized>(
    s: &S,
    req: &AcquireRequest,
    cancel: &mut Cancel<'c>,
) -> Result<Lease> {
    super::validate_name(&req.name)?;
    let mut a = Acquiring {
        s,
        req,
        give_up: req.wait.map(|w| Instant::now() + w),
        cancel,
        contacted: false,
        quick_retries: 0,
        unconfirmed: Vec::new(),
        seen: None,
    };
    loop {
        let step = next(s, a.seen.as_ref(), &a.unconfirmed);
        let rec = a.seen.as_ref().and_then(|r| r.as_ref());
        let table = rec.and_then(S::slots_of);
        // Held by one of ours: wait in a queue, in order, not by polling.
        let queue = rec.is_some_and(|r| is_held(s, r) && S::as_table(r).is_some());
        if (table.is_some() || queue) && !matches!(step, Next::GiveBack(_)) {
            // The name keeps a holder table (shared holders, a semaphore, or
            // a queue), or will once we queue behind its holder: take it as
            // an exclusive holder through the table, for what is left of
            // the wait (grants of ours nobody was told of are given back
            // first).
            let mut rest = req.clone();
            rest.wait = a
                .give_up
                .map(|g| g.saturating_duration_since(Instant::now()));
            return multi::acquire(s, &rest, Kind::Exclusive, Mode::Lock, a.cancel).await;
        }
        match step {
            Next::GiveBack(id) => a.give_back_one(id).await?,
            Next::Wait => {
                a.wait().await?;
                a.read_again().await?;
            }
            Next::Grant => {
                let lease_id = uuid::Uuid::new_v4().to_string();
                let st = Stamp::now(s.clock(), req.lease);
                let answer = s.grant(req, &lease_id, a.seen.as_ref(), &st).await;
                if let Some(done) = a.after_grant(answer, lease_id, st).await {
                    return done;
                }
            }
        }
    }
}

/// The cancellation signal of an acquire, fused (polled after it fired, it
/// stays pending).
pub type Cancel<'c> = futures_util::future::Fuse<BoxFuture<'c, i32>>;

/// One acquire in progress: what it has seen and what it must remember.
struct Acquiring<'a, 'c, S: CasStore + ?Sized> {
    s: &'a S,
    req: &'a AcquireRequest,
    /// When the wait runs out (`None`: never).
    give_up: Option<Instant>,
    cancel: &'a mut Cancel<'c>,
    /// The store has answered at least once (if only with a record).
    contacted: bool,
    /// Grants lost to a race in a row, retried without a pause.
    quick_retries: u32,
    /// Lease ids of grant writes whose call failed: each may have landed
    /// with its answer lost. Nobody was told of them.
    unconfirmed: Vec<String>,
    /// The record as last seen: `None` before anything is known, which
    /// makes the first attempt the blind grant.
    seen: Option<Option<S::Record>>,
}

impl<S: CasStore + ?Sized> Acquiring<'_, '_, S> {
    fn out_of_time(&self) -> bool {
        self.give_up.is_some_and(|g| Instant::now() >= g)
    }

    /// Sleeps `d`, unless a signal comes first.
    async fn pause(&mut self, d: Duration) -> Result<()> {
        tokio::select! {
            // Biased: a signal wins over a pause that ends at the same poll
            // (and a simulated run is reproducible).
            biased;
            sig = &mut self.cancel => Err(Error::Interrupted(sig)),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// An earlier grant of ours landed although its call failed: give it
    /// back (nobody believes in it) and take the lock anew.
    async fn give_back_one(&mut self, id: String) -> Result<()> {
        tracing::info!("an earlier grant attempt landed although it failed; giving it back");
        match release_anywhere(self.s, &self.req.name, &id).await {
            Ok(()) | Err(Error::NotHeld { .. }) => {
                self.unconfirmed.retain(|u| u != &id);
                self.seen = None;
                Ok(())
            }
            // Not given back: it stays ours to give back, after a pause.
            // (Forgetting it would leave a grant that nobody knows of
            // holding the lock until its expiry, which a clock far ahead
            // may have put hours away.)
            Err(e) if self.out_of_time() => Err(e),
            Err(e) => {
                super::warn_retrying(&e.to_string(), "still waiting");
                self.pause(poll_pause()).await
            }
        }
    }

    /// The lock is held: says who holds it, gives up if the wait is over,
    /// else pauses one poll (or what is left of the wait).
    async fn wait(&mut self) -> Result<()> {
        let rec = self.seen.as_ref().and_then(|r| r.as_ref());
        let info = self.s.info(&self.req.name, rec);
        if self.out_of_time() {
            return Err(Error::NotAcquired {
                name: self.req.name.clone(),
                holder: Some(Box::new(info)),
            });
        }
        if let Some(cb) = &self.req.on_wait {
            cb(&info);
        }
        let pause = match self.give_up {
            Some(g) => poll_pause().min(g.saturating_duration_since(Instant::now())),
            None => poll_pause(),
        };
        self.pause(pause).await
    }

    /// After a wait: reads the record again. An unavailable store is
    /// waited out once it has answered before.
    async fn read_again(&mut self) -> Result<()> {
        self.quick_retries = 0;
        match self.s.read(&self.req.name).await {
            Ok(rec) => {
                self.contacted = true;
                self.seen = Some(rec);
                Ok(())
            }
            Err(Error::Unavailable(msg)) if self.contacted => {
                super::warn_retrying(&msg, "still waiting");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// What a grant write's answer means; `Some` ends the acquire.
    async fn after_grant(
        &mut self,
        answer: Result<Outcome<S::Record>>,
        lease_id: String,
        st: Stamp,
    ) -> Option<Result<Lease>> {
        let (s, name) = (self.s, &self.req.name);
        match answer {
            Ok(Outcome::Granted(fence)) => {
                if let Poll::Ready(sig) = futures_util::poll!(&mut self.cancel) {
                    // A grant raced with the signal: give it back.
                    let _ = release_anywhere(s, name, &lease_id).await;
                    return Some(Err(Error::Interrupted(sig)));
                }
                match finish(s, name, lease_id.clone(), fence, self.req.lease, st).await {
                    Err(Error::NotHeld { .. }) => {
                        // The write was stamped on this machine's clock, which
                        // was off; before it could be rewritten on the store's
                        // clock another worker judged it expired and took it.
                        // Nothing was reported: go on waiting. (Or a waiter
                        // moved it into a holder table: then it is found
                        // there and given back.)
                        tracing::info!("the grant was taken over before it was confirmed; waiting");
                        self.unconfirmed.push(lease_id);
                        self.contacted = true;
                        match s.read(name).await {
                            Ok(rec) => self.seen = Some(rec),
                            Err(Error::Unavailable(msg)) => {
                                super::warn_retrying(&msg, "still waiting")
                            }
                            Err(e) => return Some(Err(e)),
                        }
                        None
                    }
                    Err(e) => {
                        // The grant landed but could not be rewritten on the
                        // store's clock: nobody was told of it; give it back.
                        self.unconfirmed.push(lease_id);
                        give_back(s, name, &self.unconfirmed).await;
                        Some(Err(e))
                    }
                    ok => Some(ok),
                }
            }
            // The store asks for another attempt at once (a guess it
            // corrected, such as DynamoDB's high-water mark).
            Ok(Outcome::Retry) => None,
            Ok(Outcome::Lost(rec)) => {
                self.contacted = true;
                self.quick_retries += 1;
                if self.quick_retries > 4 {
                    // Several immediate retries lost races: let the winner settle.
                    self.quick_retries = 0;
                    if let Err(e) = self.pause(poll_pause()).await {
                        return Some(Err(e));
                    }
                }
                self.seen = Some(rec);
                None
            }
            Err(Error::Unavailable(msg))
                if (self.contacted || s.clock().is_calibrated()) && !self.out_of_time() =>
            {
                // The store answered (if only with errors): the write may
                // have landed. Read, and recognise it if it did.
                self.unconfirmed.push(lease_id);
                super::warn_retrying(&msg, "retrying");
                if let Err(e) = self.pause(poll_pause()).await {
                    return Some(Err(e));
                }
                // Re-read before writing again: the state may have moved.
                if let Ok(rec) = s.read(name).await {
                    self.seen = Some(rec);
                }
                None
            }
            Err(e) => {
                if matches!(e, Error::Unavailable(_)) && s.clock().is_calibrated() {
                    self.unconfirmed.push(lease_id);
                }
                give_back(s, name, &self.unconfirmed).await;
                Some(Err(e))
            }
        }
    }
}

/// Before an acquire gives up with an error: releases the grants whose calls
/// failed but may have landed, so that none of them holds the lock, unseen,
/// until its lease expires. Bounded to 2 s; a release of a grant that never
/// landed is refused by its condition and changes nothing.
async fn give_back<S: CasStore + ?Sized>(s: &S, name: &str, unconfirmed: &[String]) {
    if unconfirmed.is_empty() {
        return;
    }
    let all = async {
        for id in unconfirmed {
            match release_anywhere(s, name, id).await {
                Ok(()) => tracing::info!("gave back a grant whose answer was lost"),
                Err(e) => tracing::debug!(error = %e, "no grant to give back"),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), all).await;
}

/// Turns a successful write into a lease. When the write was stamped with
/// the local clock (first request of the process) and the response showed
/// that clock to be off, rewrites the lease on the store's clock at once,
/// before anyone is told the lock is held; if someone took the lease over
/// meanwhile (it looked expired), that is [`Error::NotHeld`] and no grant.
///
/// `st.expires_ms` must be the expiry the store holds (see
/// [`Stamp::as_stored`]): the deadline is derived from it.
pub async fn finish<S: CasStore + ?Sized>(
    s: &S,
    name: &str,
    lease_id: String,
    fence: Option<u64>,
    lease: Duration,
    st: Stamp,
) -> Result<Lease> {
    let clock = s.clock();
    let mut granted = Lease {
        name: name.to_string(),
        lease_id,
        fence,
        duration: lease,
        acquired_at_ms: Some(st.shown_ms),
        expires_at_ms: st.expires_ms,
        deadline: st.sent,
        slotted: false,
    };
    if !st.calibrated {
        if let Some(skew) = clock.local_skew_ms(st.sent, st.sent_wall_ms) {
            if skew.abs() > SKEW_TOLERANCE_MS {
                tracing::warn!(
                    skew_ms = skew,
                    "this machine's clock is {}s off the store's; the lease was rewritten on the store's clock",
                    skew / 1000
                );
                let next = uuid::Uuid::new_v4().to_string();
                let mut renewed = s.renew_to(&granted, lease, &next).await?;
                renewed.acquired_at_ms = Some(clock.lower_ms());
                return Ok(renewed);
            }
        }
    }
    granted.deadline = clock
        .deadline_for(st.expires_ms)
        .unwrap_or(st.sent + lease)
        .min(st.sent + lease + Duration::from_millis(SKEW_TOLERANCE_MS as u64));
    Ok(granted)
}

/// " (held by alice, reason: ..., fence 7)" for messages.
pub fn holder_detail(info: &LockInfo) -> String {
    crate::error::holder_detail(Some(info))
}

/// "absent" for people: a [`LockInfo`] of a lock nobody ever held or that was
/// deleted.
pub fn absent_info(name: &str) -> LockInfo {
    LockInfo {
        name: name.to_string(),
        held: false,
        owner: None,
        reason: None,
        fence: None,
        lease_id: None,
        acquired_at_ms: None,
        expires_at_ms: None,
        expires_in_ms: None,
        lease_duration_s: None,
        pid: None,
        host: None,
        client: None,
        problem: None,
        ..LockInfo::default()
    }
}
