//! The etcd store: `--backend etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
//!
//! Locks follow etcd's own mutex recipe (`concurrency.Mutex`, what
//! `etcdctl lock` uses), so `etcdctl lock` and awsflock contend for the same
//! locks:
//!
//! ```text
//! PREFIX NAME / <etcd lease id, lower-case hex>   one key per contender,
//!                                                 attached to its lease
//! ```
//!
//! - **acquire**: grant an etcd lease (TTL = the lease duration); if nobody
//!   is queued, create our key with it: held (one transaction). Otherwise
//!   queue: create our key, which is held once it has the lowest create
//!   revision under `PREFIX NAME /`. A waiter watches the key just before
//!   its own (greatest create revision below ours) until it is deleted, then
//!   looks again. Waiters are served in the order they queued, a release
//!   wakes exactly one of them, and nobody polls. Giving up revokes our
//!   lease, which removes our key.
//! - **queue lease**: while waiting, our key lives on a second, short lease
//!   ([`QUEUE_TTL_S`]) when the lease asked for is longer, and moves to the
//!   real lease when it heads the queue (a put keeps the create revision, so
//!   the key keeps its place). A waiter killed before it could revoke
//!   (SIGKILL) therefore blocks the queue for seconds, not for its lease.
//!   Both leases are kept alive while waiting, every third of their TTL,
//!   each keep-alive retried on other members until the lease would expire.
//! - **grant after queueing**: one keep-alive of the lease before
//!   returning, so that the local deadline counts from now and not from a
//!   keep-alive up to a third of the TTL old (the supervisor would warn the
//!   command before its first renewal was due).
//! - **fencing token**: the store revision of the transaction that made us
//!   the holder (= our key's mod revision). `etcdctl lock` exports as
//!   `ETCD_LOCK_REV` the revision of the read that found nobody before it;
//!   both are "the revision at which the grant was confirmed", so tokens
//!   increase strictly in grant order across awsflock and etcdctl holders.
//!   (A create revision would not: a waiter queues before it is granted.)
//! - **lease id**: the etcd lease id in hex. It does not change at renewal.
//! - **renew**: one keep-alive of the etcd lease and a read of our key;
//!   **release**: revoke the lease.
//! - **expiry**: etcd's own lease TTL, judged by the cluster's leader: no
//!   wall clock decides anything (times shown by `status` are the holder's
//!   own). The local deadline is the instant the grant or keep-alive that
//!   succeeded was sent plus the TTL.
//! - **members**: one client per listed member. Each request goes to one
//!   member at a time; an attempt may take a quarter of the time left
//!   ([`ATTEMPT_MIN`]..[`ATTEMPT_MAX`]) and one that times out or fails in
//!   transit moves on to the next member, so a frozen member, or a follower
//!   forwarding keep-alives to a frozen leader, costs an attempt, not the
//!   lease. A waiter's watch asks its member for a progress report every
//!   [`WATCH_CHECK`] and is made again elsewhere when none comes.
//! - **mixing with `etcdctl lock`**: exclusion holds while each holder's
//!   lease lives. etcdctl 3.4 does not watch its session: once its lease
//!   expires its command runs on beside the next holder, whose token is
//!   higher.
//!
//! Our key's value is a small JSON document (owner, reason, pid, host,
//! client, acquired time) for `status`; keys written by `etcdctl lock` are
//! empty and shown as held by `etcdctl`.
//!
//! A limit of the recipe, shared with `etcdctl lock`: a lock named `a` also
//! queues behind contenders for `a/b` (their keys lie under `PREFIX a/`).
//! `list` reads every key under PREFIX (the whole keyspace when PREFIX is
//! empty) and shows those that look like contenders' keys.
//!
//! The code, by concern: `members` (one client per member, each request
//! tried on one member after another, what a failure means), `connect`
//! (endpoints, TLS, authentication, the first member to answer), `keys`
//! (the key layout and what a key's value says), `acquire` (taking a free
//! lock, queueing, the lease handed out), `wait` (waiting in the queue, and
//! for the head of it), `slots` (semaphores and shared locks) and `revoke`
//! (forced release).

mod acquire;
mod connect;
mod keys;
mod members;
mod revoke;
mod slots;
mod wait;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse};
use futures_util::FutureExt;

use crate::boottime::BootInstant as Instant;
use crate::error::{Error, Result};
use crate::info::LockInfo;
use crate::protocol::expiry::absent_info;
use crate::protocol::revoke::{Force, Forced, refusal_detail};
use crate::protocol::slots::wanted;
use crate::request::{AcquireRequest, Lease, RESERVED_PREFIX, validate_name};
use crate::store::{BoxFuture, LockStore};

use keys::{Holder, is_contender, parse_lease_hex, split_key};
use members::{Members, is_lease_gone};
use wait::{Pass, timing};

/// How long connecting (and the first request) may take before the cluster
/// is reported unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How soon a member that answered "no leader" (or another "try again")
/// while connecting is asked again.
pub const CONNECT_RETRY: Duration = Duration::from_millis(200);

/// How long one request may take, all attempts on all members together,
/// before it counts as unanswered (renewals have the lease's deadline
/// instead).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds of one attempt of a request on one member: a quarter of the time
/// left, within these. A healthy member answers in milliseconds; a frozen
/// one, or a follower forwarding to a frozen leader, never does, and the
/// next attempt goes to another member. For a 6 s lease renewed every 2 s,
/// attempts of 1 s and 0.75 s go to two members before the supervisor would
/// warn the command (1.7 s after the renewal was due).
pub const ATTEMPT_MIN: Duration = Duration::from_millis(250);
pub const ATTEMPT_MAX: Duration = Duration::from_secs(2);

/// How often a waiter asks the member serving its watch to prove it is
/// alive (a progress request); a member that has not answered by the next
/// check is left for another.
pub const WATCH_CHECK: Duration = Duration::from_secs(1);

/// The TTL (seconds) of the lease a waiter's key lives on while it waits,
/// when the requested lease is longer: a waiter that dies without revoking
/// (SIGKILL) blocks the queue for at most this long.
pub const QUEUE_TTL_S: i64 = 10;

/// The owner shown for a key written by `etcdctl lock` (its value is empty).
pub const ETCDCTL_OWNER: &str = "etcdctl";

/// The etcd store.
pub struct EtcdStore {
    members: Arc<Members>,
    endpoints: Vec<String>,
    prefix: String,
    /// The user we authenticate as, if any (for messages).
    user: Option<String>,
}

impl EtcdStore {
    fn not_held(name: &str, lease_id: &str) -> Error {
        Error::NotHeld {
            name: name.to_string(),
            lease_id: lease_id.to_string(),
            detail: String::new(),
        }
    }

    /// (remaining, granted) TTL of lease `id`, `None` if it is gone.
    async fn ttl_of(&self, id: i64) -> Result<Option<(i64, i64)>> {
        let r = self
            .call("read a lease", |c| async move {
                c.lease_client().time_to_live(id, None).await
            })
            .await?;
        Ok((r.ttl() > 0).then(|| (r.ttl(), r.granted_ttl())))
    }

    /// The current holder of `name` (lowest create revision among its
    /// contenders), as stored.
    async fn holder_kv(&self, name: &str) -> Result<Option<KeyValue>> {
        Ok(self.contenders(name).await?.into_iter().next())
    }

    /// Every contender for `name` (holders and waiters), in queue order:
    /// by create revision.
    pub(super) async fn contenders(&self, name: &str) -> Result<Vec<KeyValue>> {
        let mp = self.mutex_prefix(name);
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let resp = self
            .call("read the lock", |c| {
                let (mp, opts) = (mp.clone(), opts.clone());
                async move { c.kv_client().get(mp, Some(opts)).await }
            })
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter(|kv| is_contender(kv, &mp))
            .cloned()
            .collect())
    }
}

#[async_trait::async_trait]
impl LockStore for EtcdStore {
    fn describe(&self) -> String {
        format!(
            "etcd cluster {} prefix '{}'",
            self.endpoints.join(","),
            self.prefix
        )
    }

    async fn acquire(&self, req: &AcquireRequest, cancel: BoxFuture<'_, i32>) -> Result<Lease> {
        validate_name(&req.name)?;
        crate::request::validate_text(req)?;
        wanted(req)?; // refuses a bad --max-holders or --shared
        let give_up = req.wait.map(|w| Instant::now() + w);
        let mut cancel = cancel.fuse();
        loop {
            match self.acquire_once(req, &mut cancel, give_up).await {
                Pass::Done(r) => return r,
                Pass::Requeue => {
                    if give_up.is_some_and(|g| Instant::now() >= g) {
                        return Err(Error::NotAcquired {
                            name: req.name.clone(),
                            holder: None,
                        });
                    }
                }
            }
        }
    }

    /// One keep-alive of the etcd lease, and a read that our key is still
    /// there on it. The lease id stays the same (`next_id` is not used: a
    /// keep-alive is idempotent, so a retry after a lost answer is
    /// harmless). Both are retried on other members until the lease's
    /// deadline (a leader failover, a frozen member); the new deadline
    /// counts from the sending of the keep-alive attempt that succeeded.
    ///
    /// etcd cannot change the TTL of an existing lease, so the lease keeps
    /// the duration it was granted with, whatever `duration` asks; the
    /// returned lease carries the duration in force, and the token of its
    /// grant.
    async fn renew(&self, lease: &Lease, duration: Duration, _next_id: &str) -> Result<Lease> {
        validate_name(&lease.name)?;
        let name = &lease.name;
        let Some(id) = parse_lease_hex(&lease.lease_id) else {
            return Err(Self::not_held(name, &lease.lease_id));
        };
        let key = self.key(name, &lease.lease_id);
        // A lease we hold has a deadline to work to; one known only by its
        // id (the `renew` command) has none.
        let end = if lease.duration.is_zero() {
            self.end()
        } else {
            lease.deadline
        };
        // Our key and its revocation mark, in one read, before the
        // keep-alive: a revoked lease is not extended (it ends when it
        // would have, unless its holder releases it first).
        let read = Txn::new().and_then([
            TxnOp::get(key.clone(), None),
            TxnOp::get(self.mark_key(id), None),
        ]);
        let got = self
            .members
            .call(end, |c| {
                let read = read.clone();
                async move { c.kv_client().txn(read).await }
            })
            .await
            .map_err(|e| self.error("read the lock", e))?;
        let mut reads = got.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let (kv, mark) = (reads.next().flatten(), reads.next().flatten());
        let Some(kv) = kv.filter(|kv| kv.lease() == id) else {
            return Err(Self::not_held(name, &lease.lease_id));
        };
        if let Some(mark) = mark {
            return Err(Error::NotHeld {
                name: name.clone(),
                lease_id: lease.lease_id.clone(),
                detail: refusal_detail(&String::from_utf8_lossy(mark.value())),
            });
        }
        let alive = self.members.keep_alive(id, end).await;
        let Some(sent) = alive.map_err(|e| self.error("renew the lease", e))? else {
            return Err(Self::not_held(name, &lease.lease_id));
        };
        let granted = if lease.duration.is_zero() {
            match self.ttl_of(id).await? {
                Some((_, granted)) => granted,
                None => return Err(Self::not_held(name, &lease.lease_id)),
            }
        } else {
            lease.duration.as_secs() as i64
        };
        if duration.as_secs() != granted as u64 {
            tracing::debug!(
                "etcd keeps a lease's TTL: renewed for {granted}s, not {}s",
                duration.as_secs()
            );
        }
        let (deadline, expires_at_ms, duration) = timing(sent, granted);
        Ok(Lease {
            name: name.clone(),
            lease_id: lease.lease_id.clone(),
            // The token of our grant: the revision that last wrote our key.
            fence: lease
                .fence
                .or_else(|| u64::try_from(kv.mod_revision()).ok()),
            duration,
            acquired_at_ms: Holder::from_value(kv.value()).acquired_ms,
            expires_at_ms,
            deadline,
            slotted: false,
        })
    }

    /// Revokes the etcd lease of the key `PREFIX NAME / LEASE_ID`, which
    /// removes the key and wakes the next waiter.
    async fn release(&self, name: &str, lease_id: &str) -> Result<()> {
        validate_name(name)?;
        if parse_lease_hex(lease_id).is_none() {
            return Err(Self::not_held(name, lease_id));
        }
        let key = self.key(name, lease_id);
        let got = self
            .call("read the lock", |c| {
                let key = key.clone();
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        let Some(lease) = got.kvs().first().map(|kv| kv.lease()).filter(|&l| l != 0) else {
            return Err(Self::not_held(name, lease_id));
        };
        // "Lease not found" on a retry may be our own earlier attempt, which
        // was applied and whose answer was lost: the key is gone either way,
        // so that is a release. Only the first attempt's "not found" means
        // the lease had ended before we revoked it.
        let attempts = AtomicUsize::new(0);
        let revoked = self
            .call("release the lease", |c| {
                let retry = attempts.fetch_add(1, Ordering::Relaxed) > 0;
                async move {
                    match c.lease_client().revoke(lease).await {
                        Ok(_) => Ok(true),
                        Err(e) if is_lease_gone(&e) => Ok(retry),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        if revoked {
            Ok(())
        } else {
            Err(Self::not_held(name, lease_id))
        }
    }

    async fn inspect(&self, name: &str) -> Result<LockInfo> {
        validate_name(name)?;
        let Some(kv) = self.holder_kv(name).await? else {
            return Ok(absent_info(name));
        };
        let ttl = self.ttl_of(kv.lease()).await?;
        if ttl.is_none() {
            // The lease ended between the two reads.
            return Ok(absent_info(name));
        }
        let mut info = self.info_of(name, &kv, ttl);
        if !Holder::from_value(kv.value()).is_exclusive_lock() {
            self.describe_holders(name, &mut info).await?;
        }
        info.revoked_by = self.revoked_by(kv.lease()).await?;
        Ok(info)
    }

    async fn force_release(&self, name: &str, force: &Force) -> Result<Forced> {
        validate_name(name)?;
        self.force_exclusive(name, force).await
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let key = if self.prefix.is_empty() {
            String::from("\0")
        } else {
            self.prefix.clone()
        };
        let resp = self
            .call("list the locks", |c| {
                let (key, opts) = (key.clone(), opts.clone());
                async move { c.kv_client().get(key, Some(opts)).await }
            })
            .await?;
        // In create-revision order, the first contender seen per name holds it.
        let mut holders: Vec<(String, KeyValue)> = Vec::new();
        let mut seen = HashSet::new();
        for kv in resp.kvs() {
            if kv.lease() == 0 {
                continue;
            }
            let Some(rest) = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(self.prefix.as_str()))
            else {
                continue;
            };
            // Revocation marks live under the reserved prefix.
            if rest.starts_with(RESERVED_PREFIX) {
                continue;
            }
            let Some((name, _)) = split_key(rest) else {
                continue;
            };
            if seen.insert(name.to_string()) {
                holders.push((name.to_string(), kv.clone()));
            }
        }
        let ttls =
            futures_util::future::join_all(holders.iter().map(|(_, kv)| self.ttl_of(kv.lease())))
                .await;
        let mut out = Vec::new();
        for ((name, kv), ttl) in holders.iter().zip(ttls) {
            if let Some(ttl) = ttl? {
                let mut info = self.info_of(name, kv, Some(ttl));
                if !Holder::from_value(kv.value()).is_exclusive_lock() {
                    self.describe_holders(name, &mut info).await?;
                }
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Nothing to create: keys and leases come and go with the locks.
    async fn create(&self) -> Result<()> {
        Ok(())
    }
}
