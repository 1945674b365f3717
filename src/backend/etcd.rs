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
//!   Both leases are kept alive while waiting.
//! - **fencing token**: our key's create revision (what `etcdctl lock`
//!   exports as `ETCD_LOCK_REV`): the lock's next holder queued later, so its
//!   revision is higher.
//! - **lease id**: the etcd lease id in hex. It does not change at renewal.
//! - **renew**: one keep-alive of the etcd lease; **release**: revoke it.
//! - **expiry**: etcd's own lease TTL, judged by the cluster's leader: no
//!   wall clock decides anything (times shown by `status` are the holder's
//!   own). The local deadline is the instant the grant or keep-alive was
//!   sent plus the TTL the cluster reported.
//!
//! Our key's value is a small JSON document (owner, reason, pid, host,
//! client, acquired time) for `status`; keys written by `etcdctl lock` are
//! empty and shown as held by `etcdctl`.
//!
//! A limit of the recipe, shared with `etcdctl lock`: a lock named `a` also
//! queues behind contenders for `a/b` (their keys lie under `PREFIX a/`).
//! `list` reads every key under PREFIX (the whole keyspace when PREFIX is
//! empty) and shows those that look like contenders' keys.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::boottime::{self, BootInstant as Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KeyValue, PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};

use super::cas::{absent_info, holder_detail};
use super::{AcquireRequest, Backend, BoxFuture, EtcdOptions, Lease, LockInfo, poll_pause};
use crate::clock::local_wall_ms;
use crate::error::{Error, Result};

/// How long connecting (and the first request) may take before the cluster
/// is reported unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request may take before it counts as unanswered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The TTL (seconds) of the lease a waiter's key lives on while it waits,
/// when the requested lease is longer: a waiter that dies without revoking
/// (SIGKILL) blocks the queue for at most this long.
pub const QUEUE_TTL_S: i64 = 10;

/// The owner shown for a key written by `etcdctl lock` (its value is empty).
pub const ETCDCTL_OWNER: &str = "etcdctl";

/// The etcd store.
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
    prefix: String,
}

/// What our key's value says about its holder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Holder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acquired_ms: Option<i64>,
}

impl Holder {
    fn of_request(req: &AcquireRequest) -> Holder {
        Holder {
            owner: Some(req.owner.clone()),
            reason: req.reason.clone(),
            pid: Some(std::process::id()),
            host: Some(gethostname::gethostname().to_string_lossy().into_owned()),
            client: Some(super::CLIENT_TAG.to_string()),
            acquired_ms: Some(local_wall_ms()),
        }
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a key's value: ours, etcdctl's (empty), or something else.
    fn from_value(value: &[u8]) -> Holder {
        if value.is_empty() {
            return Holder {
                owner: Some(ETCDCTL_OWNER.to_string()),
                ..Holder::default()
            };
        }
        serde_json::from_slice(value).unwrap_or_default()
    }
}

/// An etcd lease id as written in keys and printed as LEASE_ID.
pub fn lease_hex(id: i64) -> String {
    format!("{id:x}")
}

/// Reads a LEASE_ID back; `None` when it cannot be an etcd lease id.
pub fn parse_lease_hex(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16)
        .ok()
        .and_then(|v| i64::try_from(v).ok())
        .filter(|&v| v != 0)
}

/// Splits a key under the store's prefix into (lock name, lease hex), when
/// it looks like a contender's key: `NAME/<hex>`.
fn split_key(rest: &str) -> Option<(&str, &str)> {
    let (name, id) = rest.rsplit_once('/')?;
    (!name.is_empty() && parse_lease_hex(id).is_some()).then_some((name, id))
}

/// gRPC status codes (as `tonic::Code` numbers) that mean "try again later".
fn is_transient_code(code: i32) -> bool {
    // Cancelled, Unknown, DeadlineExceeded, ResourceExhausted, Aborted,
    // Internal, Unavailable.
    matches!(code, 1 | 2 | 4 | 8 | 10 | 13 | 14)
}

/// The keep-alive of a lease that no longer exists.
fn is_lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => s.message().contains("lease not found"),
        _ => false,
    }
}

/// Deadline, expiry and duration of a lease whose TTL the cluster reported
/// for a grant or keep-alive sent at `sent`.
fn timing(sent: Instant, ttl_s: i64) -> (Instant, i64, Duration) {
    let ttl = Duration::from_secs(ttl_s.max(0) as u64);
    let deadline = sent + ttl;
    let left = deadline.saturating_duration_since(Instant::now());
    (deadline, local_wall_ms() + left.as_millis() as i64, ttl)
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The etcd lease an acquire granted.
struct Granted {
    id: i64,
    /// The TTL the cluster granted, in seconds.
    ttl: i64,
    /// When the last grant or keep-alive that succeeded was sent.
    refreshed: Arc<Mutex<Instant>>,
}

/// How one pass of [`EtcdStore::acquire_once`] ended.
enum Pass {
    Done(Result<Lease>),
    /// Our key vanished while we waited (our lease expired, e.g. while the
    /// cluster was unreachable): queue again.
    Requeue,
}

impl EtcdStore {
    /// Connects to the cluster and checks that it answers (within
    /// [`CONNECT_TIMEOUT`]) and accepts the credentials.
    pub async fn connect(
        endpoints: Vec<String>,
        prefix: String,
        opts: &EtcdOptions,
    ) -> Result<Self> {
        let list = endpoints.join(",");
        let mut copts = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        match (&opts.user, &opts.password) {
            (Some(user), Some(password)) => {
                copts = copts
                    .with_user(user.clone(), password.clone())
                    .with_auto_token_refresh(true);
            }
            (Some(user), None) => {
                let (user, password) = user.split_once(':').ok_or_else(|| {
                    Error::usage(format!(
                        "no password for etcd user {user:?}; give --etcd-user USER:PASSWORD or --etcd-password"
                    ))
                })?;
                copts = copts
                    .with_user(user, password)
                    .with_auto_token_refresh(true);
            }
            (None, Some(_)) => {
                return Err(Error::usage("--etcd-password needs --etcd-user"));
            }
            (None, None) => {}
        }
        let tls = opts.cacert.is_some() || opts.cert.is_some() || opts.key.is_some();
        if tls {
            copts = copts.with_tls(tls_options(opts)?);
        }
        let scheme = if tls { "https" } else { "http" };
        let urls: Vec<String> = endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let probe_key = if prefix.is_empty() {
            String::from("\0")
        } else {
            prefix.clone()
        };
        let connecting = async {
            let client = Client::connect(&urls, Some(copts)).await?;
            // The client connects lazily: one cheap read proves the cluster
            // answers and lets us read under the prefix.
            client
                .kv_client()
                .get(
                    probe_key,
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_limit(1),
                    ),
                )
                .await?;
            Ok::<_, etcd_client::Error>(client)
        };
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "cannot reach etcd at {list}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(connect_error(&list, e)),
            Ok(Ok(c)) => c,
        };
        Ok(EtcdStore {
            client,
            endpoints,
            prefix,
        })
    }

    /// `PREFIX NAME /`: where the contenders for `name` queue.
    fn mutex_prefix(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix)
    }

    fn key(&self, name: &str, lease_hex: &str) -> String {
        format!("{}{lease_hex}", self.mutex_prefix(name))
    }

    /// Turns a client error into ours, saying what we were doing.
    fn error(&self, what: &str, e: etcd_client::Error) -> Error {
        let eps = self.endpoints.join(",");
        match &e {
            etcd_client::Error::GRpcStatus(s) => {
                let code = s.code() as i32;
                let msg = one_line(s.message());
                if code == 16
                    || msg.contains("authentication")
                    || msg.contains("invalid auth token")
                {
                    Error::store(format!(
                        "etcd at {eps} refused the credentials ({msg}); check --etcd-user/--etcd-password"
                    ))
                } else if code == 7 {
                    Error::store(format!(
                        "etcd at {eps} refused to {what} ({msg}); the user needs read-write access to keys under '{}'",
                        self.prefix
                    ))
                } else if is_transient_code(code) {
                    Error::Unavailable(format!("etcd at {eps} did not {what}: {msg}"))
                } else {
                    Error::store(format!("etcd at {eps} could not {what}: {msg}"))
                }
            }
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
                Error::Unavailable(format!(
                    "etcd at {eps} did not {what}: {}",
                    one_line(&e.to_string())
                ))
            }
            _ => Error::store(format!(
                "etcd at {eps} could not {what}: {}",
                one_line(&e.to_string())
            )),
        }
    }

    /// Runs one request, bounded by [`REQUEST_TIMEOUT`].
    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(what, e)),
            Err(_) => Err(Error::Unavailable(format!(
                "etcd at {} did not {what} within {}s",
                self.endpoints.join(","),
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }

    fn not_held(name: &str, lease_id: &str) -> Error {
        Error::NotHeld {
            name: name.to_string(),
            lease_id: lease_id.to_string(),
            detail: String::new(),
        }
    }

    /// One keep-alive of lease `id`: `Ok(false)` when the lease is gone.
    async fn keep_alive_once(&self, id: i64) -> Result<bool> {
        let mut lc = self.client.lease_client();
        match tokio::time::timeout(REQUEST_TIMEOUT, lc.keep_alive(id)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if is_lease_gone(&e) => Ok(false),
            Ok(Err(e)) => Err(self.error("renew the lease", e)),
            Err(_) => Err(Error::Unavailable(format!(
                "etcd at {} did not renew the lease within {}s",
                self.endpoints.join(","),
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Revokes lease `id`, best effort (a failure leaves it to expire).
    async fn revoke_quietly(&self, id: i64) {
        let mut lc = self.client.lease_client();
        match tokio::time::timeout(Duration::from_secs(2), lc.revoke(id)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if is_lease_gone(&e) => {}
            Ok(Err(e)) => tracing::warn!(
                "could not revoke etcd lease {}: {}; it expires on its own",
                lease_hex(id),
                one_line(&e.to_string())
            ),
            Err(_) => tracing::warn!(
                "could not revoke etcd lease {} in time; it expires on its own",
                lease_hex(id)
            ),
        }
    }

    /// What a contender's key says, for people. `ttl`: (remaining, granted)
    /// seconds of its lease, when known.
    fn info_of(&self, name: &str, kv: &KeyValue, ttl: Option<(i64, i64)>) -> LockInfo {
        let h = Holder::from_value(kv.value());
        let lease_id = kv
            .key_str()
            .ok()
            .and_then(|k| k.rsplit_once('/'))
            .map(|(_, id)| id.to_string())
            .unwrap_or_else(|| lease_hex(kv.lease()));
        let (expires_at_ms, expires_in_ms, lease_duration_s) = match ttl {
            Some((left, granted)) => (
                Some(local_wall_ms() + left * 1000),
                Some(left * 1000),
                Some(granted.max(0) as u64),
            ),
            None => (None, None, None),
        };
        LockInfo {
            name: name.to_string(),
            held: true,
            owner: h.owner,
            reason: h.reason,
            fence: u64::try_from(kv.create_revision()).ok(),
            lease_id: Some(lease_id),
            acquired_at_ms: h.acquired_ms,
            expires_at_ms,
            lease_duration_s,
            expires_in_ms,
            pid: h.pid,
            host: h.host,
            client: h.client,
            problem: None,
        }
    }

    /// (remaining, granted) TTL of lease `id`, `None` if it is gone.
    async fn ttl_of(&self, id: i64) -> Result<Option<(i64, i64)>> {
        let mut lc = self.client.lease_client();
        let r = self.call("read a lease", lc.time_to_live(id, None)).await;
        match r {
            Ok(r) if r.ttl() > 0 => Ok(Some((r.ttl(), r.granted_ttl()))),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The current holder of `name` (lowest create revision among its
    /// contenders), as stored.
    async fn holder_kv(&self, name: &str) -> Result<Option<KeyValue>> {
        let mp = self.mutex_prefix(name);
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let mut kv = self.client.kv_client();
        let resp = self
            .call("read the lock", kv.get(mp.clone(), Some(opts)))
            .await?;
        Ok(resp.kvs().iter().find(|kv| is_contender(kv, &mp)).cloned())
    }

    async fn acquire_once(
        &self,
        req: &AcquireRequest,
        cancel: &mut futures_util::future::Fuse<BoxFuture<'_, i32>>,
        give_up: Option<Instant>,
    ) -> Pass {
        let ttl = req.lease.as_secs_f64().ceil().max(1.0) as i64;
        let sent = Instant::now();
        let mut lc = self.client.lease_client();
        let grant = match self.call("grant a lease", lc.grant(ttl, None)).await {
            Ok(g) => g,
            Err(e) => return Pass::Done(Err(e)),
        };
        let lease = Granted {
            id: grant.id(),
            ttl: grant.ttl(),
            refreshed: Arc::new(Mutex::new(sent)),
        };
        let mut queue_lease = None;
        let pass = self
            .queue_and_wait(req, cancel, give_up, &lease, &mut queue_lease)
            .await;
        if let Some(q) = queue_lease {
            if matches!(pass, Pass::Done(Ok(_))) {
                // Our key is on the lease itself now; the queue lease holds
                // nothing and may as well expire if this does not land.
                let mut lc = self.client.lease_client();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, lc.revoke(q)).await;
                });
            } else {
                self.revoke_quietly(q).await;
            }
        }
        if !matches!(pass, Pass::Done(Ok(_))) {
            // Giving up, interrupted, failed or queueing again: no key of
            // ours may stay in the queue.
            self.revoke_quietly(lease.id).await;
        }
        pass
    }

    async fn queue_and_wait(
        &self,
        req: &AcquireRequest,
        cancel: &mut futures_util::future::Fuse<BoxFuture<'_, i32>>,
        give_up: Option<Instant>,
        lease: &Granted,
        queue_lease: &mut Option<i64>,
    ) -> Pass {
        let name = &req.name;
        let mp = self.mutex_prefix(name);
        let id = lease.id;
        let my_key = self.key(name, &lease_hex(id));
        let holder = Holder::of_request(req);
        let owner_opts = || {
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1)
        };
        let interrupted = |sig| Pass::Done(Err(Error::Interrupted(sig)));
        let not_acquired = |info: &Option<LockInfo>| {
            Pass::Done(Err(Error::NotAcquired {
                name: name.clone(),
                detail: info.as_ref().map(holder_detail).unwrap_or_default(),
            }))
        };
        let out_of_time = || give_up.is_some_and(|g| Instant::now() >= g);
        let mut kvc = self.client.kv_client();

        // Free (nobody queued): take it. Otherwise say who holds it.
        let txn = Txn::new()
            .when([Compare::create_revision(mp.clone(), CompareOp::Equal, 0).with_prefix()])
            .and_then([TxnOp::put(
                my_key.clone(),
                holder.to_json(),
                Some(PutOptions::new().with_lease(id)),
            )])
            .or_else([TxnOp::get(mp.clone(), Some(owner_opts()))]);
        let resp = match self.call("take the lock", kvc.txn(txn)).await {
            Ok(r) => r,
            Err(e) => return Pass::Done(Err(e)),
        };
        if resp.succeeded() {
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            return self.granted(req, cancel, lease, rev, &holder);
        }
        let mut last_info =
            first_kv(resp.op_responses().first()).map(|kv| self.info_of(name, kv, None));
        if out_of_time() {
            return not_acquired(&last_info);
        }

        // Queue. A long lease would keep a waiter's key queued that long if
        // the waiter died without revoking it (SIGKILL), blocking everyone
        // behind it: while waiting, the key lives on a short queue lease and
        // moves to the real one when it heads the queue (a put keeps its
        // create revision, hence its place).
        let q = if lease.ttl > QUEUE_TTL_S {
            let mut lc = self.client.lease_client();
            match self
                .call("grant a lease", lc.grant(QUEUE_TTL_S, None))
                .await
            {
                Ok(g) => {
                    *queue_lease = Some(g.id());
                    (g.id(), g.ttl())
                }
                Err(e) => return Pass::Done(Err(e)),
            }
        } else {
            (id, lease.ttl)
        };
        let txn = Txn::new()
            .when([Compare::create_revision(
                my_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                my_key.clone(),
                holder.to_json(),
                Some(PutOptions::new().with_lease(q.0)),
            )])
            .or_else([TxnOp::get(my_key.clone(), None)]);
        let resp = match self.call("queue for the lock", kvc.txn(txn)).await {
            Ok(r) => r,
            Err(e) => return Pass::Done(Err(e)),
        };
        let my_rev = if resp.succeeded() {
            resp.header().map(|h| h.revision()).unwrap_or(0)
        } else {
            first_kv(resp.op_responses().first())
                .map(|kv| kv.create_revision())
                .unwrap_or(0)
        };
        if my_rev == 0 {
            return Pass::Done(Err(Error::store(
                "etcd did not report the revision of our lock key",
            )));
        }

        // Keep both leases alive while we wait; either one gone means our
        // place in the queue is gone.
        let (lost_tx, mut lost_rx) = tokio::sync::mpsc::channel::<()>(2);
        let mut keepers = vec![self.keeper(
            id,
            lease.ttl,
            Some(lease.refreshed.clone()),
            lost_tx.clone(),
        )];
        if q.0 != id {
            keepers.push(self.keeper(q.0, q.1, None, lost_tx));
        }
        let give_up_at = async {
            match give_up {
                Some(g) => boottime::sleep_until(g).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(give_up_at);
        loop {
            // At the head (every contender's create revision is ours or
            // later) and still queued: we hold it; move the key to our lease
            // and stamp the time. Otherwise read who is just before us, and
            // who holds it.
            let before = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(my_rev - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1);
            let stamped = Holder {
                acquired_ms: Some(local_wall_ms()),
                ..holder.clone()
            };
            let txn = Txn::new()
                .when([
                    Compare::create_revision(my_key.clone(), CompareOp::Equal, my_rev),
                    Compare::create_revision(mp.clone(), CompareOp::Greater, my_rev - 1)
                        .with_prefix(),
                ])
                .and_then([TxnOp::put(
                    my_key.clone(),
                    stamped.to_json(),
                    Some(PutOptions::new().with_lease(id)),
                )])
                .or_else([
                    TxnOp::get(my_key.clone(), Some(GetOptions::new().with_keys_only())),
                    TxnOp::get(mp.clone(), Some(before)),
                    TxnOp::get(mp.clone(), Some(owner_opts())),
                ]);
            let attempt = tokio::select! {
                sig = &mut *cancel => return interrupted(sig),
                r = self.call("read the lock", kvc.txn(txn)) => r,
            };
            let resp = match attempt {
                Ok(r) => r,
                Err(Error::Store(m)) if m.contains("lease not found") => {
                    tracing::warn!("our lease on {name} expired while waiting; queueing again");
                    return Pass::Requeue;
                }
                Err(e @ Error::Unavailable(_)) => {
                    tracing::warn!("{e}; still waiting");
                    if out_of_time() {
                        return not_acquired(&last_info);
                    }
                    tokio::select! {
                        sig = &mut *cancel => return interrupted(sig),
                        _ = &mut give_up_at => return not_acquired(&last_info),
                        _ = tokio::time::sleep(poll_pause()) => continue,
                    }
                }
                Err(e) => return Pass::Done(Err(e)),
            };
            if resp.succeeded() {
                drop(keepers);
                return self.granted(req, cancel, lease, my_rev, &stamped);
            }
            let ops = resp.op_responses();
            if first_kv(ops.first()).is_none() {
                tracing::warn!("our place in the queue for {name} expired; queueing again");
                return Pass::Requeue;
            }
            let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            if let Some(owner) = first_kv(ops.get(2)) {
                let info = self.info_of(name, owner, None);
                if let Some(cb) = &req.on_wait {
                    cb(&info);
                }
                last_info = Some(info);
            }
            if out_of_time() {
                return not_acquired(&last_info);
            }
            let Some(pred) = first_kv(ops.get(1)).cloned() else {
                // Nobody before us, yet not at the head: cannot happen in
                // one transaction; look again shortly.
                tokio::time::sleep(poll_pause()).await;
                continue;
            };
            // Wait for the key before ours to go.
            let mut wc = self.client.watch_client();
            let opts = WatchOptions::new().with_start_revision(header_rev + 1);
            let watching = async {
                let mut stream = wc.watch(pred.key().to_vec(), Some(opts)).await?;
                while let Some(resp) = stream.message().await? {
                    if resp.canceled()
                        || resp
                            .events()
                            .iter()
                            .any(|ev| ev.event_type() == EventType::Delete)
                    {
                        break;
                    }
                }
                Ok::<_, etcd_client::Error>(())
            };
            tokio::select! {
                sig = &mut *cancel => return interrupted(sig),
                _ = &mut give_up_at => return not_acquired(&last_info),
                Some(()) = lost_rx.recv() => {
                    tracing::warn!("our place in the queue for {name} expired; queueing again");
                    return Pass::Requeue;
                }
                r = watching => {
                    if let Err(e) = r {
                        tracing::warn!("watching the lock: {}; looking again", one_line(&e.to_string()));
                        tokio::select! {
                            sig = &mut *cancel => return interrupted(sig),
                            _ = &mut give_up_at => return not_acquired(&last_info),
                            _ = tokio::time::sleep(poll_pause()) => {}
                        }
                    }
                }
            }
        }
    }

    /// Keeps lease `id` (granted for `ttl_s`) alive in the background every
    /// third of its TTL, noting when each successful keep-alive was sent;
    /// says so on `lost` when the lease is gone. Stops when dropped.
    fn keeper(
        &self,
        id: i64,
        ttl_s: i64,
        refreshed: Option<Arc<Mutex<Instant>>>,
        lost: tokio::sync::mpsc::Sender<()>,
    ) -> AbortOnDrop {
        let client = self.client.clone();
        let every = Duration::from_millis(ttl_s.max(1) as u64 * 1000 / 3);
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let sent = Instant::now();
                let mut lc = client.lease_client();
                match tokio::time::timeout(REQUEST_TIMEOUT, lc.keep_alive(id)).await {
                    Ok(Ok(_)) => {
                        if let Some(Ok(mut r)) = refreshed.as_ref().map(|r| r.lock()) {
                            *r = sent;
                        }
                    }
                    Ok(Err(e)) if is_lease_gone(&e) => {
                        let _ = lost.send(()).await;
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(
                        "keeping our place in the queue: {}; retrying",
                        one_line(&e.to_string())
                    ),
                    Err(_) => tracing::warn!("keeping our place in the queue: no answer; retrying"),
                }
            }
        }))
    }

    /// We head the queue: the lease as the caller sees it.
    fn granted(
        &self,
        req: &AcquireRequest,
        cancel: &mut futures_util::future::Fuse<BoxFuture<'_, i32>>,
        lease: &Granted,
        rev: i64,
        holder: &Holder,
    ) -> Pass {
        if let Some(sig) = (&mut *cancel).now_or_never() {
            // Granted as the signal came: give it back (the caller revokes).
            return Pass::Done(Err(Error::Interrupted(sig)));
        }
        let sent = lease
            .refreshed
            .lock()
            .map(|r| *r)
            .unwrap_or_else(|e| *e.into_inner());
        let (deadline, expires_at_ms, duration) = timing(sent, lease.ttl);
        Pass::Done(Ok(Lease {
            name: req.name.clone(),
            lease_id: lease_hex(lease.id),
            fence: u64::try_from(rev).ok(),
            duration,
            acquired_at_ms: holder.acquired_ms,
            expires_at_ms,
            deadline,
        }))
    }
}

/// The first key of a get inside a transaction.
fn first_kv(op: Option<&TxnOpResponse>) -> Option<&KeyValue> {
    match op? {
        TxnOpResponse::Get(g) => g.kvs().first(),
        _ => None,
    }
}

/// Whether `kv` is a contender directly under `mutex_prefix`.
fn is_contender(kv: &KeyValue, mutex_prefix: &str) -> bool {
    kv.lease() != 0
        && kv
            .key_str()
            .ok()
            .and_then(|k| k.strip_prefix(mutex_prefix))
            .is_some_and(|id| parse_lease_hex(id).is_some())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn connect_error(endpoints: &str, e: etcd_client::Error) -> Error {
    let msg = match &e {
        etcd_client::Error::GRpcStatus(s) => {
            let code = s.code() as i32;
            let msg = one_line(s.message());
            if code == 16 || code == 7 || msg.contains("authentication") {
                return Error::store(format!(
                    "etcd at {endpoints} refused the credentials ({msg}); check --etcd-user/--etcd-password"
                ));
            }
            if !is_transient_code(code) {
                return Error::store(format!("etcd at {endpoints}: {msg}"));
            }
            msg
        }
        other => one_line(&other.to_string()),
    };
    Error::Unavailable(format!("cannot reach etcd at {endpoints}: {msg}"))
}

fn tls_options(opts: &EtcdOptions) -> Result<TlsOptions> {
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p)
            .map_err(|e| Error::usage(format!("cannot read {what} {}: {e}", p.display())))
    };
    let mut tls = TlsOptions::new();
    if let Some(ca) = &opts.cacert {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--etcd-cacert")?));
    }
    match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read(cert, "--etcd-cert")?,
                read(key, "--etcd-key")?,
            ));
        }
        (None, None) => {}
        _ => return Err(Error::usage("--etcd-cert and --etcd-key go together")),
    }
    Ok(tls)
}

#[async_trait::async_trait]
impl Backend for EtcdStore {
    fn describe(&self) -> String {
        format!(
            "etcd cluster {} prefix '{}'",
            self.endpoints.join(","),
            self.prefix
        )
    }

    async fn acquire(&self, req: &AcquireRequest, cancel: BoxFuture<'_, i32>) -> Result<Lease> {
        super::validate_name(&req.name)?;
        let give_up = req.wait.map(|w| Instant::now() + w);
        let mut cancel = cancel.fuse();
        loop {
            match self.acquire_once(req, &mut cancel, give_up).await {
                Pass::Done(r) => return r,
                Pass::Requeue => {
                    if give_up.is_some_and(|g| Instant::now() >= g) {
                        return Err(Error::NotAcquired {
                            name: req.name.clone(),
                            detail: String::new(),
                        });
                    }
                }
            }
        }
    }

    /// One keep-alive of the etcd lease. The lease id stays the same
    /// (`next_id` is not used: a keep-alive is idempotent, so a retry after a
    /// lost answer is harmless).
    ///
    /// etcd cannot change the TTL of an existing lease, so the lease keeps
    /// the duration it was granted with, whatever `duration` asks; the
    /// returned lease carries the duration in force.
    async fn renew(&self, lease: &Lease, duration: Duration, _next_id: &str) -> Result<Lease> {
        super::validate_name(&lease.name)?;
        let name = &lease.name;
        let Some(id) = parse_lease_hex(&lease.lease_id) else {
            return Err(Self::not_held(name, &lease.lease_id));
        };
        let key = self.key(name, &lease.lease_id);
        let sent = Instant::now();
        let mut kv = self.client.kv_client();
        let (alive, got, ttl) = tokio::join!(
            self.keep_alive_once(id),
            self.call("read the lock", kv.get(key, None)),
            self.ttl_of(id),
        );
        if !alive? {
            return Err(Self::not_held(name, &lease.lease_id));
        }
        let got = got?;
        let Some(kv) = got.kvs().first().filter(|kv| kv.lease() == id) else {
            return Err(Self::not_held(name, &lease.lease_id));
        };
        let granted = match ttl? {
            Some((_, granted)) => granted,
            None => return Err(Self::not_held(name, &lease.lease_id)),
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
            fence: u64::try_from(kv.create_revision()).ok(),
            duration,
            acquired_at_ms: Holder::from_value(kv.value()).acquired_ms,
            expires_at_ms,
            deadline,
        })
    }

    /// Revokes the etcd lease of the key `PREFIX NAME / LEASE_ID`, which
    /// removes the key and wakes the next waiter.
    async fn release(&self, name: &str, lease_id: &str) -> Result<()> {
        super::validate_name(name)?;
        if parse_lease_hex(lease_id).is_none() {
            return Err(Self::not_held(name, lease_id));
        }
        let mut kv = self.client.kv_client();
        let got = self
            .call("read the lock", kv.get(self.key(name, lease_id), None))
            .await?;
        let Some(lease) = got.kvs().first().map(|kv| kv.lease()).filter(|&l| l != 0) else {
            return Err(Self::not_held(name, lease_id));
        };
        let mut lc = self.client.lease_client();
        match tokio::time::timeout(REQUEST_TIMEOUT, lc.revoke(lease)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_lease_gone(&e) => Err(Self::not_held(name, lease_id)),
            Ok(Err(e)) => Err(self.error("release the lease", e)),
            Err(_) => Err(Error::Unavailable(format!(
                "etcd at {} did not release the lease within {}s",
                self.endpoints.join(","),
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn inspect(&self, name: &str) -> Result<LockInfo> {
        super::validate_name(name)?;
        let Some(kv) = self.holder_kv(name).await? else {
            return Ok(absent_info(name));
        };
        let ttl = self.ttl_of(kv.lease()).await?;
        if ttl.is_none() {
            // The lease ended between the two reads.
            return Ok(absent_info(name));
        }
        Ok(self.info_of(name, &kv, ttl))
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
        let mut kvc = self.client.kv_client();
        let resp = self
            .call("list the locks", kvc.get(key, Some(opts)))
            .await?;
        // In create-revision order, the first contender seen per name holds it.
        let mut holders: Vec<(String, KeyValue)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
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
                out.push(self.info_of(name, kv, Some(ttl)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_round_trip_as_hex() {
        assert_eq!(lease_hex(0x694d_8f4f_5a3c_1b2e), "694d8f4f5a3c1b2e");
        assert_eq!(
            parse_lease_hex("694d8f4f5a3c1b2e"),
            Some(0x694d_8f4f_5a3c_1b2e)
        );
        assert_eq!(parse_lease_hex("7b"), Some(123));
        assert_eq!(parse_lease_hex(""), None);
        assert_eq!(parse_lease_hex("0"), None);
        assert_eq!(parse_lease_hex("ffffffffffffffff"), None);
        assert_eq!(parse_lease_hex("6f9a1c2e-0000"), None);
        assert_eq!(parse_lease_hex("12345678901234567"), None);
    }

    #[test]
    fn keys_split_into_name_and_lease() {
        assert_eq!(
            split_key("deploy/694d8f4f5a3c1b2e"),
            Some(("deploy", "694d8f4f5a3c1b2e"))
        );
        assert_eq!(split_key("a/b/7b"), Some(("a/b", "7b")));
        assert_eq!(split_key("/7b"), None);
        assert_eq!(split_key("deploy/config"), None);
        assert_eq!(split_key("deploy"), None);
    }

    #[test]
    fn etcdctl_keys_are_shown_as_etcdctl() {
        assert_eq!(
            Holder::from_value(b"").owner.as_deref(),
            Some(ETCDCTL_OWNER)
        );
        let h = Holder::from_value(br#"{"owner":"alice","reason":"deploy","acquired_ms":5}"#);
        assert_eq!(h.owner.as_deref(), Some("alice"));
        assert_eq!(h.reason.as_deref(), Some("deploy"));
        assert_eq!(h.acquired_ms, Some(5));
        assert!(Holder::from_value(b"not json").owner.is_none());
    }
}
