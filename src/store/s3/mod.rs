//! The S3 store: one JSON object per lock, changed only with S3 conditional
//! writes (`If-None-Match: *` to create, `If-Match: ETAG` to replace), driven
//! by the same acquire loop as DynamoDB ([`cas::acquire`]).
//!
//! `--backend s3://BUCKET/PREFIX` keeps, for a lock `NAME`:
//!
//! - `PREFIX` + `NAME`: the lock record, a [`LeaseRecord`] (pretty JSON,
//!   `application/json`), readable with `aws s3 cp s3://BUCKET/PREFIXNAME -`.
//!   Its ETag versions it: every write is conditioned on the ETag last read
//!   (or on the object being absent), and every write changes the lease id,
//!   so two versions never share a body or an ETag.
//! - `PREFIX` + `__awsflock__/fence/` + `NAME`: the fencing high-water mark,
//!   a [`FenceMark`]. awsflock never deletes it; `list` skips it.
//!
//! A failed S3 condition (HTTP 412, or 409 for a conflicting concurrent
//! write) carries no body, so every lost race is followed by one GET that
//! shows the record as it is now. A record that carries our own new lease id
//! means an earlier attempt of the same write landed and its answer was lost
//! (the SDK retried): that is success, not a loss.
//!
//! Requests per operation:
//!
//! | operation | requests |
//! |---|---|
//! | acquire, lock last released by awsflock (steady state) | 2: GET, PUT |
//! | acquire of a never-used (or deleted) name | 5: GET, PUT, GET and PUT of the mark, PUT |
//! | renew, release within one process (`run`, or a library user) | 1: PUT |
//! | `awsflock renew` / `awsflock release` (a new process) | 2: GET, PUT |
//! | status | 1: GET |
//! | list | 1 LIST per 1000 keys, then 1 GET per lock |
//!
//! Within one process the store remembers the ETag of each of its own writes
//! by lease id, which is what makes renew and release one request; another
//! process reads the record first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use futures_util::StreamExt;

use crate::clock::ServerClock;
use crate::error::{Error, Result};
use crate::info::LockInfo;
use crate::protocol::expiry::Stamp;
use crate::protocol::record::{FENCE_BLOCK, FenceMark, LeaseRecord, RecordState};
use crate::protocol::slots::Slots;
use crate::request::{AcquireRequest, Lease, RESERVED_PREFIX};
use crate::store::aws::{self, StoreInterceptor};
use crate::store::cas::{self, CasStore, Outcome, holder_detail};

mod line;
mod sdk;
pub use sdk::SdkObjects;
use sdk::store_name;
/// S3's limit on the length of a key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// How often a reservation from the high-water mark is retried when other
/// writers keep moving the mark.
const RESERVE_ATTEMPTS: u32 = 10;

/// How many lock records `list` reads at once.
const LIST_CONCURRENCY: usize = 8;

/// A lock record and the ETag of the object it was read from (or written as).
pub type Record = (LeaseRecord, String);

/// What a conditional PUT requires of the object it replaces.
#[derive(Debug, Clone, Copy)]
pub enum Cond<'a> {
    /// The object must not exist (`If-None-Match: *`).
    Absent,
    /// The object must be exactly this version (`If-Match: ETAG`).
    Is(&'a str),
    /// Unconditional (a waiter's own line entry).
    Any,
}

/// The object requests the S3 store sends, and the clock their answers
/// calibrate: the seam between the store's record logic ([`S3Store`]) and
/// the wire. [`SdkObjects`] sends them to S3 with the AWS SDK; the
/// simulation (`src/sim/objects.rs`) sends them to an in-memory bucket
/// through a simulated network, so the same record logic runs in both.
#[async_trait::async_trait]
pub trait Objects: Send + Sync {
    /// The store's clock as this client knows it (calibrated from every
    /// answer's `Date`).
    fn clock(&self) -> &ServerClock;

    /// GetObject: its body and ETag, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>>;

    /// PutObject of a JSON body on condition `cond`: the new ETag, or
    /// `None` when the condition failed (HTTP 412, or 409 for a
    /// conflicting concurrent write).
    async fn put(&self, key: &str, body: Vec<u8>, cond: Cond<'_>) -> Result<Option<String>>;

    /// ListObjectsV2, every page: the keys under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// ListObjectsV2, one page: at most `max` keys under `prefix` after
    /// `start_after` (empty: from the start), in order, with their
    /// `LastModified` (ms since the epoch, the store's clock).
    async fn list_page(
        &self,
        prefix: &str,
        start_after: &str,
        max: usize,
    ) -> Result<Vec<(String, i64)>>;

    /// DeleteObject, unconditional (absent already: fine).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Creates the bucket when it does not exist.
    async fn create_bucket(&self) -> Result<()>;
}

/// The S3 store: the record logic, over the object requests of `O`.
pub struct S3Store<O: Objects = SdkObjects> {
    objects: O,
    bucket: String,
    prefix: String,
    /// This process's own writes: lease id → the record written and its ETag.
    own: Mutex<HashMap<String, Record>>,
}

impl S3Store<SdkObjects> {
    /// Connects (lazily: no request is sent) to `bucket`, keeping locks under
    /// `prefix` (empty, or ending with `/`), with the standard AWS
    /// configuration and an optional endpoint override.
    pub async fn connect(bucket: String, prefix: String, endpoint: Option<String>) -> Result<Self> {
        let config = aws::load(endpoint.clone()).await?;
        let clock = Arc::new(ServerClock::new());
        let interceptor = StoreInterceptor::new(clock.clone());
        // Local S3 look-alikes (moto, MinIO) serve buckets by path, not by
        // host name.
        let custom_endpoint = endpoint.is_some()
            || config.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some_and(|v| !v.is_empty())
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
        let conf = aws_sdk_s3::config::Builder::from(&config)
            .interceptor(interceptor.clone())
            .force_path_style(custom_endpoint)
            .build();
        let objects = SdkObjects {
            client: Client::from_conf(conf),
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            clock,
            interceptor,
        };
        Ok(Self::over(objects, bucket, prefix))
    }

    /// HTTP attempts sent so far (for benchmarks and tests).
    #[allow(dead_code)] // for benchmarks and tests
    pub fn requests(&self) -> u64 {
        self.objects.interceptor.requests()
    }
}

impl<O: Objects> S3Store<O> {
    /// The store over `objects`, keeping locks under `prefix` of `bucket`
    /// (both for keys and messages only).
    pub fn over(objects: O, bucket: String, prefix: String) -> Self {
        Self {
            objects,
            bucket,
            prefix,
            own: Mutex::new(HashMap::new()),
        }
    }

    fn name(&self) -> String {
        store_name(&self.bucket, &self.prefix)
    }

    fn lock_key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fence_key(&self, name: &str) -> String {
        format!("{}{RESERVED_PREFIX}fence/{name}", self.prefix)
    }

    /// Checks a lock name, and that both of its keys fit in S3's key limit.
    fn check_keys(&self, name: &str) -> Result<()> {
        crate::request::validate_name(name)?;
        let longest = self.fence_key(name).len();
        if longest > MAX_KEY_BYTES {
            return Err(Error::usage(format!(
                "the lock name is {} bytes long; under prefix '{}' its S3 keys would reach {longest} bytes, \
                 over S3's limit of {MAX_KEY_BYTES}; use a name of at most {} bytes",
                name.len(),
                self.prefix,
                MAX_KEY_BYTES - (longest - name.len())
            )));
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        self.objects.get(key).await
    }

    async fn put(&self, key: &str, body: Vec<u8>, cond: Cond<'_>) -> Result<Option<String>> {
        self.objects.put(key, body, cond).await
    }

    /// Reads and parses the lock record of `name`.
    async fn get_record(&self, name: &str) -> Result<Option<Record>> {
        let key = self.lock_key(name);
        let Some((body, etag)) = self.get(&key).await? else {
            return Ok(None);
        };
        // An unreadable object is a held stand-in that says what is wrong
        // (DESIGN.md, "Unreadable records").
        let mut rec = LeaseRecord::decode(&body, name, &etag);
        if let Some(problem) = &mut rec.problem {
            problem.push_str(&format!(" in s3://{}/{key}", self.bucket));
        }
        Ok(Some((rec, etag)))
    }

    /// PUTs a lock record on condition `cond`; remembers it as our own when
    /// it landed.
    async fn put_record(&self, rec: &LeaseRecord, cond: Cond<'_>) -> Result<Option<String>> {
        let etag = self
            .put(&self.lock_key(&rec.name), rec.to_json(), cond)
            .await?;
        if let Some(e) = &etag {
            self.remember(rec.clone(), e.clone());
        }
        Ok(etag)
    }

    fn remember(&self, rec: LeaseRecord, etag: String) {
        if let Ok(mut own) = self.own.lock() {
            own.insert(rec.lease_id.clone(), (rec, etag));
        }
    }

    fn forget(&self, lease_id: &str) {
        if let Ok(mut own) = self.own.lock() {
            own.remove(lease_id);
        }
    }

    /// The record of our own lease `lease_id` on `name`, as we last wrote it,
    /// or as read now (another process's `renew`/`release`). `NotHeld` when
    /// neither that lease nor `or_id` (the lease id a retried renewal may have
    /// written already) is the current one.
    async fn current(&self, name: &str, lease_id: &str, or_id: Option<&str>) -> Result<Record> {
        let mine = self
            .own
            .lock()
            .ok()
            .and_then(|own| own.get(lease_id).cloned())
            .filter(|(r, _)| r.name == name);
        if let Some(r) = mine {
            return Ok(r);
        }
        let cur = self.get_record(name).await?;
        match cur {
            Some((r, etag))
                if (r.lease_id == lease_id || Some(r.lease_id.as_str()) == or_id)
                    && r.state == RecordState::Held =>
            {
                Ok((r, etag))
            }
            other => Err(self.not_held(name, lease_id, other.as_ref())),
        }
    }

    fn not_held(&self, name: &str, lease_id: &str, cur: Option<&Record>) -> Error {
        let info = self.info_of(name, cur);
        Error::NotHeld {
            name: name.to_string(),
            lease_id: lease_id.to_string(),
            detail: if info.held {
                holder_detail(&info)
            } else {
                " (it is not held by anyone)".to_string()
            },
        }
    }

    fn info_of(&self, name: &str, rec: Option<&Record>) -> LockInfo {
        match rec {
            None => crate::protocol::expiry::absent_info(name),
            Some(rec @ (r, _)) => {
                let held = cas::is_held(self, rec);
                let mut info = r.info(held, Some(r.expires_ms - self.objects.clock().lower_ms()));
                info.name = name.to_string();
                info
            }
        }
    }

    /// After a failed grant condition: the record now, which is a grant if it
    /// carries our lease id (an earlier attempt landed, its answer was lost).
    async fn after_lost_grant(&self, name: &str, lease_id: &str) -> Result<Outcome<Record>> {
        match self.get_record(name).await? {
            Some((r, etag)) if r.lease_id == lease_id => {
                let fence = r.fence;
                self.remember(r, etag);
                Ok(Outcome::Granted(fence))
            }
            other => Ok(Outcome::Lost(other)),
        }
    }

    /// A grant from the record's own block of tokens: one PUT on the exact
    /// version that was judged free.
    async fn grant_counter(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: &Record,
        fence: u64,
        st: &Stamp,
    ) -> Result<Outcome<Record>> {
        let (rec, etag) = seen;
        let new = LeaseRecord::grant(req, lease_id, st, Some(fence), rec.fence_limit);
        match self.put_record(&new, Cond::Is(etag)).await? {
            Some(_) => Ok(Outcome::Granted(Some(fence))),
            None => self.after_lost_grant(&req.name, lease_id).await,
        }
    }

    /// A grant with a fresh block of tokens from the high-water mark, for a
    /// record that is absent (`seen = None`) or has no tokens left (deleted,
    /// never finished, or its block used up).
    ///
    /// S3 has no transaction over two objects, so this is done in three
    /// steps, all while holding the lock:
    ///
    /// 1. a provisional grant: the lock record without a fence, on condition
    ///    "absent" or the exact version judged free;
    /// 2. a reservation: the mark moves from `h` to `h + FENCE_BLOCK` by
    ///    compare-and-swap (retried while other writers move it);
    /// 3. the finish: the record gets `fence = h + 1` and
    ///    `fence_limit = h + FENCE_BLOCK`, on condition that it is still the
    ///    provisional version of step 1.
    ///
    /// Why the token is greater than every earlier one: every token ever
    /// issued is at most the mark (a fresh grant issues `h + 1` after moving
    /// the mark past it; a counter grant stays within a block that was the
    /// mark when reserved), and the mark only grows. The reservation in
    /// step 2 moved the mark from exactly `h`, so every token issued before
    /// it is at most `h`. No token is issued between step 2 and step 3:
    /// while the provisional record holds the lock no other grant can
    /// happen (every grant replaces the lock record on its exact version,
    /// and the provisional record has no counter to grant from), so any
    /// other reservation made meanwhile belongs to a grant that can no longer
    /// finish. If the provisional lease is taken over anyway (it expired),
    /// step 3's condition fails and nothing is issued.
    async fn grant_fresh(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen_etag: Option<&str>,
        st: &Stamp,
    ) -> Result<Outcome<Record>> {
        let provisional = LeaseRecord::grant(req, lease_id, st, None, None);
        let cond = match seen_etag {
            None => Cond::Absent,
            Some(e) => Cond::Is(e),
        };
        let etag = match self.put_record(&provisional, cond).await? {
            Some(e) => e,
            None => match self.get_record(&req.name).await? {
                // An earlier attempt of this write landed; its answer was lost.
                Some((r, e)) if r.lease_id == lease_id => match r.fence {
                    Some(f) => {
                        self.remember(r, e);
                        return Ok(Outcome::Granted(Some(f)));
                    }
                    None => e,
                },
                other => return Ok(Outcome::Lost(other)),
            },
        };
        match self.reserve_and_finish(req, lease_id, &etag, st).await {
            Ok(out) => Ok(out),
            Err(e) => {
                // Give the provisional lease back rather than leave a lock
                // that looks held until it expires. Read it first: the last
                // write may have landed with its answer lost.
                self.forget(lease_id);
                if let Err(e2) = self.release_id(&req.name, lease_id).await {
                    tracing::debug!(error = %e2, "could not give back a provisional grant");
                }
                Err(e)
            }
        }
    }

    /// Steps 2 and 3 of [`Self::grant_fresh`].
    async fn reserve_and_finish(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        provisional_etag: &str,
        st: &Stamp,
    ) -> Result<Outcome<Record>> {
        let h = self.reserve(&req.name).await?;
        let fence = h + 1;
        let fin = LeaseRecord::grant(req, lease_id, st, Some(fence), Some(h + FENCE_BLOCK));
        match self.put_record(&fin, Cond::Is(provisional_etag)).await? {
            Some(_) => Ok(Outcome::Granted(Some(fence))),
            None => match self.get_record(&req.name).await? {
                Some((r, e)) if r.lease_id == lease_id && r.fence == Some(fence) => {
                    self.remember(r, e);
                    Ok(Outcome::Granted(Some(fence)))
                }
                // The provisional lease was taken over meanwhile.
                other => Ok(Outcome::Lost(other)),
            },
        }
    }

    /// Moves the fencing high-water mark of `name` up by one block and
    /// returns its old value `h`: the tokens `h + 1 ..= h + FENCE_BLOCK` are
    /// now ours to issue.
    async fn reserve(&self, name: &str) -> Result<u64> {
        let key = self.fence_key(name);
        for _ in 0..RESERVE_ATTEMPTS {
            let (h, etag) = match self.get(&key).await? {
                None => (0, None),
                Some((body, etag)) => {
                    let mark: FenceMark = serde_json::from_slice(&body).map_err(|e| {
                        Error::store(format!(
                            "s3://{}/{key} is not an awsflock fencing mark ({e}); \
                             it must hold {{\"fence_hw\": N}} with the highest token issued",
                            self.bucket
                        ))
                    })?;
                    (mark.fence_hw, Some(etag))
                }
            };
            let next = FenceMark {
                fence_hw: h + FENCE_BLOCK,
            };
            let body = serde_json::to_vec(&next).unwrap_or_default();
            let cond = match &etag {
                None => Cond::Absent,
                Some(e) => Cond::Is(e),
            };
            if self.put(&key, body, cond).await?.is_some() {
                return Ok(h);
            }
            tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
        }
        Err(Error::Unavailable(format!(
            "the fencing mark of lock {name:?} kept changing under {RESERVE_ATTEMPTS} attempts; try again"
        )))
    }

    /// Renews to a caller-chosen next lease id (see [`LockStore::renew`]).
    async fn renew_lease(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        let name = &lease.name;
        // A record that already carries `next_id` is a retry of a renewal
        // that landed.
        let (rec, etag) = self.current(name, &lease.lease_id, Some(next_id)).await?;
        let st = Stamp::now(self.objects.clock(), duration);
        let written = if rec.lease_id == next_id {
            rec
        } else {
            let new = rec.renewed(next_id, &st, duration.as_secs());
            match self.put_record(&new, Cond::Is(&etag)).await? {
                Some(_) => {
                    self.forget(&lease.lease_id);
                    new
                }
                None => {
                    self.forget(&lease.lease_id);
                    match self.get_record(name).await? {
                        // An earlier attempt of this renewal landed.
                        Some((r, e)) if r.lease_id == next_id => {
                            self.remember(r.clone(), e);
                            r
                        }
                        other => {
                            return Err(self.not_held(name, &lease.lease_id, other.as_ref()));
                        }
                    }
                }
            }
        };
        // The expiry the store holds: an earlier attempt's, when that one
        // landed and this one found its own id.
        let st = st.as_stored(written.expires_ms);
        let mut renewed = Box::pin(cas::finish(
            self,
            name,
            next_id.to_string(),
            written.fence,
            duration,
            st,
        ))
        .await?;
        renewed.acquired_at_ms = Some(written.acquired_ms);
        Ok(renewed)
    }

    /// Releases `lease_id` (see [`LockStore::release`]).
    async fn release_plain(&self, name: &str, lease_id: &str) -> Result<()> {
        let (rec, etag) = self.current(name, lease_id, None).await?;
        // The fresh lease id written by this call doubles as its nonce: only
        // an earlier attempt of *this* call leaves it behind.
        let nonce = uuid::Uuid::new_v4().to_string();
        let new = rec.released(&nonce, self.objects.clock().lower_ms());
        let landed = self
            .put(&self.lock_key(name), new.to_json(), Cond::Is(&etag))
            .await?;
        self.forget(lease_id);
        if landed.is_some() {
            return Ok(());
        }
        match self.get_record(name).await? {
            Some((r, _)) if r.lease_id == nonce => Ok(()),
            other => Err(self.not_held(name, lease_id, other.as_ref())),
        }
    }

    /// Reads one listed lock; a key that vanished is skipped. An object
    /// that does not hold a lock record is read as a held stand-in that
    /// says what is wrong ([`LeaseRecord::decode`]), and listed as such.
    async fn list_one(&self, name: String) -> Result<Option<(String, Record)>> {
        Ok(self.get_record(&name).await?.map(|r| (name, r)))
    }
}

#[async_trait::async_trait]
impl<O: Objects> CasStore for S3Store<O> {
    type Record = Record;

    fn line(&self) -> Option<&dyn cas::Line> {
        Some(self)
    }

    fn describe_store(&self) -> String {
        self.name()
    }

    /// The keys must fit S3's limit as well.
    fn check_name(&self, name: &str) -> Result<()> {
        self.check_keys(name)
    }

    fn clock(&self) -> &ServerClock {
        self.objects.clock()
    }

    /// S3 answers a failed condition without the object, so the blind step
    /// is a GET; a free record with tokens left gets a counter grant on its
    /// ETag, and an absent or counter-less one a fresh grant.
    async fn grant(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&Option<Record>>,
        st: &Stamp,
    ) -> Result<Outcome<Record>> {
        match seen {
            None => Ok(Outcome::Lost(self.get_record(&req.name).await?)),
            Some(None) => self.grant_fresh(req, lease_id, None, st).await,
            Some(Some(seen)) => match seen.0.next_counter_fence() {
                Some(f) => self.grant_counter(req, lease_id, seen, f, st).await,
                None => self.grant_fresh(req, lease_id, Some(&seen.1), st).await,
            },
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Record>> {
        self.get_record(name).await
    }

    fn lease_id_of(rec: &Record) -> Option<String> {
        Some(rec.0.lease_id.clone())
    }

    fn is_released(rec: &Record) -> bool {
        rec.0.state == RecordState::Released
    }

    fn expiry_ms(rec: &Record) -> Option<i64> {
        Some(rec.0.expires_ms)
    }

    fn info(&self, name: &str, rec: Option<&Record>) -> LockInfo {
        self.info_of(name, rec)
    }

    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        self.renew_lease(lease, duration, next_id).await
    }

    async fn release_id(&self, name: &str, lease_id: &str) -> Result<()> {
        self.release_plain(name, lease_id).await
    }

    async fn records(&self) -> Result<Vec<(String, Record)>> {
        let reserved = format!("{}{RESERVED_PREFIX}", self.prefix);
        let mut names = Vec::new();
        for key in self.objects.list(&self.prefix).await? {
            if key.starts_with(&reserved) {
                continue;
            }
            if let Some(name) = key.strip_prefix(&self.prefix).filter(|n| !n.is_empty()) {
                names.push(name.to_string());
            }
        }
        let found: Vec<Result<Option<(String, Record)>>> = futures_util::stream::iter(names)
            .map(|name| self.list_one(name))
            .buffer_unordered(LIST_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::new();
        for f in found {
            out.extend(f?);
        }
        Ok(out)
    }

    async fn create_store(&self) -> Result<()> {
        self.objects.create_bucket().await
    }

    fn slots_of(rec: &Record) -> Option<Slots> {
        rec.0.current_slots().cloned()
    }

    fn as_table(rec: &Record) -> Option<Slots> {
        rec.0.as_table()
    }

    /// A revoked single holder is moved into a holder table and marked
    /// there (see `cas::force_once`): no mark is written in the record.
    fn supervised(rec: &Record) -> bool {
        rec.0.supervised
    }

    fn last_fence(rec: &Record) -> Option<(u64, Option<u64>)> {
        rec.0
            .next_counter_fence()
            .map(|next| (next - 1, rec.0.fence_limit))
    }

    /// A fresh block of tokens from the high-water mark.
    async fn fence_floor(&self, name: &str) -> Result<(u64, Option<u64>)> {
        let h = self.reserve(name).await?;
        Ok((h + 1, Some(h + FENCE_BLOCK)))
    }

    /// One PUT of the record keeping `table`, on the ETag seen (or on
    /// absence). A failed condition is reported without reading again:
    /// the caller reads anyway.
    async fn write_slots(
        &self,
        name: &str,
        seen: Option<&Record>,
        table: &Slots,
    ) -> Result<std::result::Result<(), Option<Record>>> {
        let expires = table
            .holders
            .iter()
            .map(|h| h.expires_ms)
            .max()
            .unwrap_or(0);
        let rec = LeaseRecord::of_table(name, table, self.objects.clock().lower_ms(), expires);
        let cond = match seen {
            None => Cond::Absent,
            Some((_, etag)) => Cond::Is(etag),
        };
        Ok(
            match self.put(&self.lock_key(name), rec.to_json(), cond).await? {
                Some(_) => Ok(()),
                None => Err(None),
            },
        )
    }
}
