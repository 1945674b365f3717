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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::boottime::{self, BootInstant as Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KeyValue, PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::cas::absent_info;
use super::slots::{self, Kind, Mode};
use super::{AcquireRequest, BoxFuture, EtcdOptions, Lease, LockInfo, LockStore, poll_pause};
use crate::clock::local_wall_ms;
use crate::error::{Error, Result};

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

/// One client per member, so that each attempt of a request goes to a
/// member we chose: after a member fails to answer, the next attempt goes
/// to the next one.
struct Members {
    endpoints: Vec<String>,
    /// Set once the member's client has connected (and authenticated).
    clients: Vec<OnceLock<Client>>,
    /// The member tried first.
    preferred: AtomicUsize,
}

/// Why a request failed, before it becomes one of our errors.
enum Failed {
    /// The cluster answered no (or the client could not make the request).
    Answer(etcd_client::Error),
    /// No member answered in time; the last attempt's error or timeout.
    Unanswered(String),
}

impl Members {
    /// The preferred member that is connected, or the next connected one.
    fn pick(&self) -> Option<(usize, Client)> {
        let n = self.clients.len();
        let p = self.preferred.load(Ordering::Relaxed);
        (0..n)
            .map(|k| (p + k) % n)
            .find_map(|i| self.clients[i].get().map(|c| (i, c.clone())))
    }

    /// Member `i` did not answer: prefer the next one.
    fn avoid(&self, i: usize) {
        let n = self.clients.len();
        let _ =
            self.preferred
                .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Runs `f` against one member after another until one answers or `end`
    /// passes. Each attempt may take a quarter of the time left (within
    /// [`ATTEMPT_MIN`]..[`ATTEMPT_MAX`]); an attempt that times out or fails
    /// in transit moves on to the next member. Errors the cluster meant
    /// (permission, lease not found, …) end it at once. The first attempt
    /// is made even when `end` has passed.
    async fn call<T, F, Fut>(&self, end: Instant, mut f: F) -> std::result::Result<T, Failed>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let mut last = String::new();
        for attempt in 0usize.. {
            let left = end.saturating_duration_since(Instant::now());
            if attempt > 0 && left.is_zero() {
                break;
            }
            let Some((i, client)) = self.pick() else {
                return Err(Failed::Unanswered("no member is connected".into()));
            };
            let per = (left / 4).clamp(ATTEMPT_MIN, ATTEMPT_MAX);
            match tokio::time::timeout(per, f(client)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_transient(&e) => {
                    last = format!("{}: {}", self.endpoints[i], error_chain(&e));
                    tracing::debug!("etcd request failed on {last}; trying another member");
                    self.avoid(i);
                }
                Ok(Err(e)) => return Err(Failed::Answer(e)),
                Err(_) => {
                    last = format!("{} did not answer within {per:?}", self.endpoints[i]);
                    tracing::debug!("etcd at {last}; trying another member");
                    self.avoid(i);
                }
            }
            if (attempt + 1) % n == 0 {
                // Every member failed once: a short pause before the next round.
                let pause = Duration::from_millis(100).min(left);
                tokio::time::sleep(pause).await;
            }
        }
        Err(Failed::Unanswered(last))
    }

    /// One keep-alive of lease `id`, retried on other members until `end`:
    /// when the successful attempt was sent, or `None` if the lease is gone.
    async fn keep_alive(
        &self,
        id: i64,
        end: Instant,
    ) -> std::result::Result<Option<Instant>, Failed> {
        self.call(end, |c| async move {
            let sent = Instant::now();
            match c.lease_client().keep_alive(id).await {
                Ok(_) => Ok(Some(sent)),
                Err(e) if is_lease_gone(&e) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }
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
    /// A semaphore's contender: its N (`--max-holders`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_holders: Option<u32>,
    /// A shared contender (`--shared`, or a semaphore's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shared: bool,
    /// Renewed by a supervisor (`run`, a `LockGuard`): a forced release
    /// marks it revoked instead of revoking its etcd lease.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    supervised: bool,
}

impl Holder {
    fn of_request(req: &AcquireRequest) -> Holder {
        let (shared, max_holders) = match slots::wanted(req).ok().flatten() {
            Some((_, Mode::Semaphore(n))) => (true, Some(n)),
            Some((kind, Mode::Lock)) => (kind == Kind::Shared, None),
            None => (false, None),
        };
        Holder {
            owner: Some(req.owner.clone()),
            reason: req.reason.clone(),
            pid: Some(std::process::id()),
            host: Some(gethostname::gethostname().to_string_lossy().into_owned()),
            client: Some(super::CLIENT_TAG.to_string()),
            acquired_ms: Some(local_wall_ms()),
            max_holders,
            shared,
            supervised: req.supervised,
        }
    }

    /// The kind of contender and the mode it asked for (`etcdctl lock`'s
    /// keys, with no value, are exclusive).
    fn mode(&self) -> (Kind, Mode) {
        match self.max_holders {
            Some(n) if n >= 2 => (Kind::Shared, Mode::Semaphore(n)),
            _ if self.shared => (Kind::Shared, Mode::Lock),
            _ => (Kind::Exclusive, Mode::Lock),
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

/// Whether a failed request is worth another attempt on another member:
/// it failed in transit, or the member could not serve it now (no leader,
/// leader changed, timed out, overloaded).
fn is_transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::Cancelled
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unavailable
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// The answer about a lease that no longer exists: gRPC NotFound, or the
/// keep-alive that etcd-client turns into an error when the TTL it got back
/// is 0 (it has no typed variant for that, only this message).
fn is_lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m == "lease not found",
        etcd_client::Error::GRpcStatus(s) => s.code() == Code::NotFound,
        _ => false,
    }
}

/// An error with its causes, on one line (a transport error says only
/// "transport error"; its sources say what happened).
fn error_chain(e: &etcd_client::Error) -> String {
    let (mut parts, mut cur): (Vec<String>, Option<&(dyn std::error::Error + 'static)>) = match e {
        etcd_client::Error::GRpcStatus(s) => {
            (vec![one_line(s.message())], std::error::Error::source(s))
        }
        etcd_client::Error::TransportError(t) => {
            (vec![one_line(&t.to_string())], std::error::Error::source(t))
        }
        etcd_client::Error::IoError(io) => (
            vec![one_line(&io.to_string())],
            std::error::Error::source(io),
        ),
        other => (vec![one_line(&other.to_string())], None),
    };
    while let Some(c) = cur {
        let m = one_line(&c.to_string());
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// Whether the connection was refused (nothing listens there).
fn is_refused(e: &etcd_client::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        etcd_client::Error::TransportError(t) => Some(t),
        etcd_client::Error::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cur = c.source();
    }
    false
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
    /// Connects to every member at once and returns as soon as one answers
    /// (within [`CONNECT_TIMEOUT`]) and accepts the credentials; the others
    /// join as they connect (a member that cannot be reached is tried again
    /// in the background every few seconds).
    pub async fn connect(
        endpoints: Vec<String>,
        prefix: String,
        opts: &EtcdOptions,
    ) -> Result<Self> {
        let list = endpoints.join(",");
        // Require a leader: a member cut off from the others fails requests
        // at once (Unavailable, then the next member is tried) and ends
        // watches, instead of serving a watch that will never see the
        // deletion it waits for.
        let mut copts = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let mut user_name = None;
        match (&opts.user, &opts.password) {
            (Some(user), Some(password)) => {
                user_name = Some(user.clone());
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
                user_name = Some(user.to_string());
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
        let probe_key = if prefix.is_empty() {
            String::from("\0")
        } else {
            prefix.clone()
        };
        let members = Arc::new(Members {
            endpoints: endpoints.clone(),
            clients: endpoints.iter().map(|_| OnceLock::new()).collect(),
            preferred: AtomicUsize::new(0),
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel(endpoints.len().max(1));
        let connect_by = Instant::now() + CONNECT_TIMEOUT;
        for (i, e) in endpoints.iter().enumerate() {
            let url = format!("{scheme}://{e}");
            let (copts, probe_key, members, tx) = (
                copts.clone(),
                probe_key.clone(),
                members.clone(),
                tx.clone(),
            );
            tokio::spawn(async move {
                // Only the first outcome is reported; dropping the sender
                // then lets `connect` see when every member has failed once.
                let mut tx = Some(tx);
                loop {
                    let limit = if tx.is_some() {
                        connect_by
                            .saturating_duration_since(Instant::now())
                            .max(ATTEMPT_MIN)
                    } else {
                        CONNECT_TIMEOUT
                    };
                    let r = tokio::time::timeout(
                        limit,
                        connect_member(&url, copts.clone(), probe_key.clone()),
                    )
                    .await;
                    let transient = match &r {
                        Ok(Ok(_)) => false,
                        Ok(Err(e)) => is_transient(e),
                        Err(_) => true,
                    };
                    // A member that answers "no leader" or "leader changed"
                    // is in an election, which takes about a second: ask
                    // again until the time for connecting is up, rather
                    // than report it failed (when every member has failed
                    // once, connecting gives up). A refused connection is
                    // reported at once: nothing listens there.
                    let retry_soon = Instant::now() + CONNECT_RETRY;
                    if tx.is_some()
                        && retry_soon < connect_by
                        && matches!(&r, Ok(Err(e)) if is_transient(e) && !is_refused(e))
                    {
                        tokio::time::sleep(CONNECT_RETRY).await;
                        continue;
                    }
                    let outcome = match r {
                        Ok(Ok(c)) => {
                            let _ = members.clients[i].set(c);
                            Ok(())
                        }
                        Ok(Err(e)) => Err(Some(e)),
                        Err(_) => Err(None),
                    };
                    let connected = outcome.is_ok();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((i, outcome)).await;
                    }
                    if connected || !transient {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            });
        }
        drop(tx);
        let mut failures = Vec::new();
        while let Some((i, outcome)) = rx.recv().await {
            match outcome {
                Ok(()) => {
                    members.preferred.store(i, Ordering::Relaxed);
                    return Ok(EtcdStore {
                        members,
                        endpoints,
                        prefix,
                        user: user_name,
                    });
                }
                Err(e) => failures.push((i, e)),
            }
        }
        // Nobody answered: the most telling failure (an answer beats silence).
        failures.sort_by_key(|(i, e)| (e.as_ref().is_none_or(is_transient), *i));
        Err(match failures.into_iter().next() {
            Some((_, Some(e))) => connect_error(&list, e, user_name.as_deref(), &prefix, tls),
            _ => Error::Unavailable(format!(
                "cannot reach etcd at {list}: no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )),
        })
    }

    /// When a request started now must have been answered.
    fn end(&self) -> Instant {
        Instant::now() + REQUEST_TIMEOUT
    }

    /// `PREFIX NAME /`: where the contenders for `name` queue.
    fn mutex_prefix(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix)
    }

    fn key(&self, name: &str, lease_hex: &str) -> String {
        format!("{}{lease_hex}", self.mutex_prefix(name))
    }

    /// Turns a failed request into our error, saying what we were doing.
    fn error(&self, what: &str, f: Failed) -> Error {
        let eps = self.endpoints.join(",");
        let e = match f {
            Failed::Unanswered(last) => {
                return Error::Unavailable(format!("etcd at {eps} did not {what} ({last})"));
            }
            Failed::Answer(e) => e,
        };
        match &e {
            etcd_client::Error::GRpcStatus(s) => {
                let msg = one_line(s.message());
                match s.code() {
                    Code::Unauthenticated => Error::store(format!(
                        "etcd at {eps} refused the credentials ({msg}); check --etcd-user/--etcd-password"
                    )),
                    Code::PermissionDenied => {
                        permission_error(&eps, self.user.as_deref(), &self.prefix, &msg)
                    }
                    _ if is_transient(&e) => {
                        Error::Unavailable(format!("etcd at {eps} did not {what}: {msg}"))
                    }
                    _ => Error::store(format!("etcd at {eps} could not {what}: {msg}")),
                }
            }
            _ if is_transient(&e) => {
                Error::Unavailable(format!("etcd at {eps} did not {what}: {}", error_chain(&e)))
            }
            _ => Error::store(format!(
                "etcd at {eps} could not {what}: {}",
                error_chain(&e)
            )),
        }
    }

    /// Runs one request (any member, until [`REQUEST_TIMEOUT`]).
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.members
            .call(self.end(), f)
            .await
            .map_err(|e| self.error(what, e))
    }

    fn not_held(name: &str, lease_id: &str) -> Error {
        Error::NotHeld {
            name: name.to_string(),
            lease_id: lease_id.to_string(),
            detail: String::new(),
        }
    }

    /// Revokes lease `id`, best effort (a failure leaves it to expire).
    async fn revoke_quietly(&self, id: i64) {
        let end = Instant::now() + Duration::from_secs(2);
        let r = self
            .members
            .call(end, |c| async move {
                match c.lease_client().revoke(id).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_lease_gone(&e) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(
                "could not revoke etcd lease {}: {}; it expires on its own",
                lease_hex(id),
                self.error("revoke it", e)
            );
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
        // Our holder's token is the revision of the write that confirmed
        // its grant, which is its key's last modification. etcdctl's token
        // (the revision it read when it got the lock) is stored nowhere.
        let fence = if h.client.is_some() {
            u64::try_from(kv.mod_revision()).ok()
        } else {
            None
        };
        LockInfo {
            name: name.to_string(),
            held: true,
            owner: h.owner,
            reason: h.reason,
            fence,
            lease_id: Some(lease_id),
            acquired_at_ms: h.acquired_ms,
            expires_at_ms,
            lease_duration_s,
            expires_in_ms,
            pid: h.pid,
            host: h.host,
            client: h.client,
            problem: None,
            supervised: h.supervised,
            ..LockInfo::default()
        }
    }

    /// `PREFIX __awsflock__/revoked/LEASE`: the revocation mark of the
    /// contender holding etcd lease `id`, attached to that lease (so it goes
    /// with the lease: at the holder's release, or its expiry).
    fn mark_key(&self, id: i64) -> String {
        format!(
            "{}{}revoked/{}",
            self.prefix,
            super::RESERVED_PREFIX,
            lease_hex(id)
        )
    }

    /// Who revoked the contender holding etcd lease `id`, if anyone did.
    async fn revoked_by(&self, id: i64) -> Result<Option<String>> {
        let key = self.mark_key(id);
        let got = self
            .call("read the lock", |c| {
                let key = key.clone();
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        Ok(got
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Writes the revocation mark of the holder `kv` (by `by`), on the
    /// condition that its key is still the one read. Whether it was.
    async fn mark_revoked(&self, kv: &KeyValue, by: &str) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                kv.key().to_vec(),
                CompareOp::Equal,
                kv.create_revision(),
            )])
            .and_then([TxnOp::put(
                self.mark_key(kv.lease()),
                by,
                Some(PutOptions::new().with_lease(kv.lease())),
            )]);
        let resp = self
            .txn(&txn)
            .await
            .map_err(|e| self.error("mark the lease revoked", e))?;
        Ok(resp.succeeded())
    }

    /// A forced release of the first holder, as `force` says
    /// ([`super::revoke`]): a supervised one (exclusive, shared or of a
    /// semaphore: every renewal reads the mark) is marked revoked (it stops
    /// at its next renewal and releases); any other has its etcd lease
    /// revoked. Several holders (shared, a semaphore) go one at a time.
    async fn force_exclusive(
        &self,
        name: &str,
        force: &super::revoke::Force,
    ) -> Result<super::revoke::Forced> {
        use super::revoke::{Action, Forced, action};
        for _ in 0..5 {
            let Some(kv) = self.holder_kv(name).await? else {
                return Ok(Forced::NotHeld);
            };
            let info = self.inspect(name).await?;
            if !info.held {
                return Ok(Forced::NotHeld);
            }
            let h = Holder::from_value(kv.value());
            let revoked = info.revoked_by.is_some();
            let lease_id = lease_hex(kv.lease());
            match action(force.mode, h.supervised, revoked) {
                Action::Keep => return Ok(Forced::Revoked(info)),
                Action::Revoke if self.mark_revoked(&kv, &force.by).await? => {
                    return Ok(Forced::Revoked(info));
                }
                Action::Revoke => continue,
                Action::Release => match self.release(name, &lease_id).await {
                    Ok(()) => return Ok(Forced::Released(info)),
                    Err(Error::NotHeld { .. }) => continue,
                    Err(e) => return Err(e),
                },
            }
        }
        Err(Error::Unavailable(format!(
            "lock {name:?} kept changing hands while being released; try again"
        )))
    }

    /// Every holder of a semaphore or of a lock held shared, and how many
    /// wait: the contenders in queue order, holding while admitted (the
    /// first N of a semaphore; the shared ones before the first exclusive
    /// one, or that one alone when it is first).
    async fn describe_holders(&self, name: &str, info: &mut LockInfo) -> Result<()> {
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
        let all: Vec<&KeyValue> = resp
            .kvs()
            .iter()
            .filter(|kv| is_contender(kv, &mp))
            .collect();
        let mut holding = Vec::new();
        for (i, kv) in all.iter().enumerate() {
            let (kind, mode) = Holder::from_value(kv.value()).mode();
            let admitted = match mode {
                Mode::Semaphore(n) => i < n as usize,
                Mode::Lock => (kind == Kind::Shared || i == 0) && holding.len() == i,
            };
            if !admitted {
                break;
            }
            holding.push(*kv);
            if kind == Kind::Exclusive {
                break;
            }
        }
        let ttls =
            futures_util::future::join_all(holding.iter().map(|kv| self.ttl_of(kv.lease()))).await;
        info.holders.clear();
        for (kv, ttl) in holding.iter().zip(ttls) {
            let Some((left, _)) = ttl? else { continue };
            let h = Holder::from_value(kv.value());
            let (kind, mode) = h.mode();
            if let Mode::Semaphore(n) = mode {
                info.max_holders = Some(n);
            }
            info.holders.push(super::HolderInfo {
                owner: h.owner.clone().unwrap_or_default(),
                reason: h.reason.clone(),
                fence: u64::try_from(kv.mod_revision()).unwrap_or(0),
                shared: kind == Kind::Shared,
                acquired_at_ms: h.acquired_ms.unwrap_or(0),
                expires_at_ms: local_wall_ms() + left * 1000,
                host: h.host.clone(),
                pid: h.pid,
            });
        }
        info.waiting = all.len().saturating_sub(holding.len());
        Ok(())
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
        Ok(resp.kvs().iter().find(|kv| is_contender(kv, &mp)).cloned())
    }

    /// Runs a transaction (any member, until [`REQUEST_TIMEOUT`]).
    async fn txn(&self, txn: &Txn) -> std::result::Result<etcd_client::TxnResponse, Failed> {
        self.members
            .call(self.end(), |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await
    }

    async fn acquire_once(
        &self,
        req: &AcquireRequest,
        cancel: &mut futures_util::future::Fuse<BoxFuture<'_, i32>>,
        give_up: Option<Instant>,
    ) -> Pass {
        let ttl = req.lease.as_secs_f64().ceil().max(1.0) as i64;
        let granted = self
            .members
            .call(self.end(), |c| async move {
                let sent = Instant::now();
                c.lease_client().grant(ttl, None).await.map(|g| (sent, g))
            })
            .await;
        let (sent, grant) = match granted {
            Ok(g) => g,
            Err(e) => return Pass::Done(Err(self.error("grant a lease", e))),
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
                let members = self.members.clone();
                tokio::spawn(async move {
                    let _ = members
                        .call(Instant::now() + REQUEST_TIMEOUT, |c| async move {
                            c.lease_client().revoke(q).await
                        })
                        .await;
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

    /// Takes the lock if nobody is queued for it, else queues behind the
    /// others and waits until our key heads the queue ([`Self::wait_for_head`]).
    /// What each answer means is decided by [`judge_take`],
    /// [`queue_revision`] and [`judge_head`].
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

        // Free (nobody queued): take it. Otherwise say who holds it.
        let txn = Txn::new()
            .when([Compare::create_revision(mp.clone(), CompareOp::Equal, 0).with_prefix()])
            .and_then([TxnOp::put(
                my_key.clone(),
                holder.to_json(),
                Some(PutOptions::new().with_lease(id)),
            )])
            .or_else([TxnOp::get(mp.clone(), Some(owner_opts()))]);
        let resp = match self.txn(&txn).await {
            Ok(r) => r,
            Err(e) => return Pass::Done(Err(self.error("take the lock", e))),
        };
        let ops = resp.op_responses();
        let first = first_kv(ops.first());
        let seen = first.map(|kv| (kv.key(), kv.lease(), kv.mod_revision()));
        match judge_take(resp.succeeded(), header_revision(&resp), seen, &my_key, id) {
            Take::Took(rev) => return self.granted(req, cancel, lease, rev, &holder, false).await,
            Take::Held => {}
        }
        let last_info = first.map(|kv| self.info_of(name, kv, None));
        // A plain lock asked of a semaphore's name: the holders' N differs.
        if let (None, Some(kv)) = (slots::wanted(req).ok().flatten(), first) {
            if let (_, stored @ Mode::Semaphore(_)) = Holder::from_value(kv.value()).mode() {
                return Pass::Done(Err(slots::mismatch(name, stored, Mode::Lock)));
            }
        }
        // (A semaphore or shared contender may be admitted beside those
        // there: it queues and looks once, even with no time to wait.)
        let shares = slots::wanted(req).ok().flatten().is_some();
        if !shares && give_up.is_some_and(|g| Instant::now() >= g) {
            return not_acquired(name, &last_info);
        }
        let (q, my_rev) = match self.enqueue(&my_key, lease, &holder, queue_lease).await {
            Ok(v) => v,
            Err(e) => return Pass::Done(Err(e)),
        };
        let queued = Queued {
            key: &my_key,
            rev: my_rev,
            lease,
            queue_lease: &q,
            holder: &holder,
        };
        match slots::wanted(req) {
            Ok(Some((kind, mode))) => {
                self.wait_for_slot(req, cancel, give_up, queued, last_info, kind, mode)
                    .await
            }
            _ => {
                self.wait_for_head(req, cancel, give_up, queued, last_info)
                    .await
            }
        }
    }

    /// [`Self::wait_for_head`] for a semaphore's or a shared contender:
    /// admitted once fewer than N contenders are ahead of it (all of the
    /// same N), or, shared, once no exclusive contender is ahead of it. Both
    /// only grow true: contenders ahead can only leave (a new one is
    /// always behind), so the judgement of one read stands, and the grant
    /// is one transaction on our key still being queued. A contender ahead
    /// in another mode is a usage error. Waits for a deletion under the
    /// name (semaphore), or of the last exclusive contender ahead (shared).
    #[allow(clippy::too_many_arguments)]
    async fn wait_for_slot(
        &self,
        req: &AcquireRequest,
        cancel: &mut futures_util::future::Fuse<BoxFuture<'_, i32>>,
        give_up: Option<Instant>,
        me: Queued<'_>,
        mut last_info: Option<LockInfo>,
        kind: Kind,
        mode: Mode,
    ) -> Pass {
        let name = &req.name;
        let mp = self.mutex_prefix(name);
        let (my_key, my_rev) = (me.key, me.rev);
        let interrupted = |sig| Pass::Done(Err(Error::Interrupted(sig)));
        let out_of_time = || give_up.is_some_and(|g| Instant::now() >= g);
        let (lost_tx, mut lost_rx) = tokio::sync::mpsc::channel::<()>(2);
        let mut keepers = vec![self.keeper(me.lease, lost_tx.clone())];
        if me.queue_lease.id != me.lease.id {
            keepers.push(self.keeper(me.queue_lease, lost_tx));
        }
        let give_up_at = async {
            match give_up {
                Some(g) => boottime::sleep_until(g).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(give_up_at);
        loop {
            let ahead_opts = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(my_rev - 1)
                .with_sort(SortTarget::Create, SortOrder::Ascend);
            let read = Txn::new()
                .when([Compare::create_revision(my_key, CompareOp::Equal, my_rev)])
                .and_then([TxnOp::get(mp.clone(), Some(ahead_opts))]);
            let attempt = tokio::select! {
                sig = &mut *cancel => return interrupted(sig),
                r = self.txn(&read) => r,
            };
            let resp = match attempt {
                Ok(r) => r,
                Err(Failed::Answer(e)) if is_lease_gone(&e) => return Pass::Requeue,
                Err(e) => match self.error("read the lock", e) {
                    e @ Error::Unavailable(_) => {
                        tracing::warn!("{e}; still waiting");
                        if out_of_time() {
                            return not_acquired(name, &last_info);
                        }
                        tokio::select! {
                            sig = &mut *cancel => return interrupted(sig),
                            _ = &mut give_up_at => return not_acquired(name, &last_info),
                            _ = tokio::time::sleep(poll_pause()) => continue,
                        }
                    }
                    e => return Pass::Done(Err(e)),
                },
            };
            if !resp.succeeded() {
                tracing::warn!("our place in the queue for {name} expired; queueing again");
                return Pass::Requeue;
            }
            let ahead: Vec<KeyValue> = match resp.op_responses().first() {
                Some(TxnOpResponse::Get(g)) => g
                    .kvs()
                    .iter()
                    .filter(|kv| is_contender(kv, &mp))
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            let mut last_exclusive = None;
            for kv in &ahead {
                let (k, m) = Holder::from_value(kv.value()).mode();
                let clash = match mode {
                    Mode::Semaphore(_) => m != mode,
                    Mode::Lock => m != Mode::Lock,
                };
                if clash {
                    return Pass::Done(Err(slots::mismatch(name, m, mode)));
                }
                if k == Kind::Exclusive {
                    last_exclusive = Some(kv.key().to_vec());
                }
            }
            let admitted = match mode {
                Mode::Semaphore(n) => ahead.len() < n as usize,
                Mode::Lock => kind == Kind::Shared && last_exclusive.is_none(),
            };
            if admitted {
                let stamped = Holder {
                    acquired_ms: Some(local_wall_ms()),
                    ..me.holder.clone()
                };
                let take = Txn::new()
                    .when([Compare::create_revision(my_key, CompareOp::Equal, my_rev)])
                    .and_then([TxnOp::put(
                        my_key,
                        stamped.to_json(),
                        Some(PutOptions::new().with_lease(me.lease.id)),
                    )]);
                let attempt = tokio::select! {
                    sig = &mut *cancel => return interrupted(sig),
                    r = self.txn(&take) => r,
                };
                match attempt {
                    Ok(r) if r.succeeded() => {
                        drop(keepers);
                        return self
                            .granted(req, cancel, me.lease, header_revision(&r), &stamped, true)
                            .await;
                    }
                    Ok(_) => return Pass::Requeue,
                    Err(Failed::Answer(e)) if is_lease_gone(&e) => return Pass::Requeue,
                    // Unknown: look again (a put that landed leaves our key
                    // queued and admitted, and is simply made again).
                    Err(e) => {
                        tracing::warn!("{}; looking again", self.error("take the lock", e));
                        tokio::select! {
                            sig = &mut *cancel => return interrupted(sig),
                            _ = tokio::time::sleep(poll_pause()) => continue,
                        }
                    }
                }
            }
            if let Some(first) = ahead.first() {
                let mut info = self.info_of(name, first, None);
                info.waiting = ahead.len();
                if let Some(cb) = &req.on_wait {
                    cb(&info);
                }
                last_info = Some(info);
            }
            if out_of_time() {
                return not_acquired(name, &last_info);
            }
            let from = header_revision(&resp) + 1;
            let (watched, prefix) = match (&mode, &last_exclusive) {
                (Mode::Lock, Some(key)) => (key.clone(), false),
                _ => (mp.clone().into_bytes(), true),
            };
            tokio::select! {
                sig = &mut *cancel => return interrupted(sig),
                _ = &mut give_up_at => return not_acquired(name, &last_info),
                Some(()) = lost_rx.recv() => {
                    tracing::warn!("our place in the queue for {name} expired; queueing again");
                    return Pass::Requeue;
                }
                r = self.watch_deletes(&watched, from, prefix) => {
                    if let Err(e) = r {
                        tracing::warn!("watching the lock: {e}; looking again");
                        tokio::select! {
                            sig = &mut *cancel => return interrupted(sig),
                            _ = &mut give_up_at => return not_acquired(name, &last_info),
                            _ = tokio::time::sleep(poll_pause()) => {}
                        }
                    }
                }
            }
        }
    }

    /// Puts our key in the queue, keeping its place if an earlier attempt
    /// did. A long lease would keep a waiter's key queued that long if the
    /// waiter died without revoking it (SIGKILL), blocking everyone behind
    /// it: while waiting, the key lives on a short queue lease (noted in
    /// `queue_lease`) and moves to the real one when it heads the queue (a
    /// put keeps its create revision, hence its place). Returns the lease
    /// the key is queued on and the key's create revision.
    async fn enqueue(
        &self,
        my_key: &str,
        lease: &Granted,
        holder: &Holder,
        queue_lease: &mut Option<i64>,
    ) -> Result<(Granted, i64)> {
        let q = if needs_queue_lease(lease.ttl) {
            let granted = self
                .members
                .call(self.end(), |c| async move {
                    let sent = Instant::now();
                    c.lease_client()
                        .grant(QUEUE_TTL_S, None)
                        .await
                        .map(|g| (sent, g))
                })
                .await;
            match granted {
                Ok((sent, g)) => {
                    *queue_lease = Some(g.id());
                    Granted {
                        id: g.id(),
                        ttl: g.ttl(),
                        refreshed: Arc::new(Mutex::new(sent)),
                    }
                }
                Err(e) => return Err(self.error("grant a lease", e)),
            }
        } else {
            Granted {
                id: lease.id,
                ttl: lease.ttl,
                refreshed: lease.refreshed.clone(),
            }
        };
        let txn = Txn::new()
            .when([Compare::create_revision(my_key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                my_key,
                holder.to_json(),
                Some(PutOptions::new().with_lease(q.id)),
            )])
            .or_else([TxnOp::get(my_key, None)]);
        let resp = self
            .txn(&txn)
            .await
            .map_err(|e| self.error("queue for the lock", e))?;
        let existing = first_kv(resp.op_responses().first()).map(|kv| kv.create_revision());
        let my_rev = queue_revision(resp.succeeded(), header_revision(&resp), existing)
            .ok_or_else(|| Error::store("etcd did not report the revision of our lock key"))?;
        Ok((q, my_rev))
    }

    /// Waits, queued, until our key heads the queue, then takes the lock
    /// (moves the key to our lease and stamps the time). Watches the key
    /// just before ours, and keeps both leases alive meanwhile: either one
    /// gone means our place in the queue is gone.
    async fn wait_for_head(
        &self,
        req: &AcquireRequest,
        cancel: &mut futures_util::future::Fuse<BoxFuture<'_, i32>>,
        give_up: Option<Instant>,
        me: Queued<'_>,
        mut last_info: Option<LockInfo>,
    ) -> Pass {
        let name = &req.name;
        let mp = self.mutex_prefix(name);
        let (my_key, my_rev) = (me.key, me.rev);
        let interrupted = |sig| Pass::Done(Err(Error::Interrupted(sig)));
        let out_of_time = || give_up.is_some_and(|g| Instant::now() >= g);
        let (lost_tx, mut lost_rx) = tokio::sync::mpsc::channel::<()>(2);
        let mut keepers = vec![self.keeper(me.lease, lost_tx.clone())];
        if me.queue_lease.id != me.lease.id {
            keepers.push(self.keeper(me.queue_lease, lost_tx));
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
                ..me.holder.clone()
            };
            let txn = Txn::new()
                .when([
                    Compare::create_revision(my_key, CompareOp::Equal, my_rev),
                    Compare::create_revision(mp.clone(), CompareOp::Greater, my_rev - 1)
                        .with_prefix(),
                ])
                .and_then([TxnOp::put(
                    my_key,
                    stamped.to_json(),
                    Some(PutOptions::new().with_lease(me.lease.id)),
                )])
                .or_else([
                    TxnOp::get(my_key, Some(GetOptions::new().with_keys_only())),
                    TxnOp::get(mp.clone(), Some(before)),
                    TxnOp::get(mp.clone(), Some(owner_opts())),
                ]);
            let attempt = tokio::select! {
                sig = &mut *cancel => return interrupted(sig),
                r = self.txn(&txn) => r,
            };
            let resp = match attempt {
                Ok(r) => r,
                Err(Failed::Answer(e)) if is_lease_gone(&e) => {
                    tracing::warn!("our lease on {name} expired while waiting; queueing again");
                    return Pass::Requeue;
                }
                Err(e) => match self.error("read the lock", e) {
                    e @ Error::Unavailable(_) => {
                        tracing::warn!("{e}; still waiting");
                        if out_of_time() {
                            return not_acquired(name, &last_info);
                        }
                        tokio::select! {
                            sig = &mut *cancel => return interrupted(sig),
                            _ = &mut give_up_at => return not_acquired(name, &last_info),
                            _ = tokio::time::sleep(poll_pause()) => continue,
                        }
                    }
                    e => return Pass::Done(Err(e)),
                },
            };
            let ops = resp.op_responses();
            let head = judge_head(
                resp.succeeded(),
                header_revision(&resp),
                first_kv(ops.first()).is_some(),
                first_kv(ops.get(1)).map(|kv| kv.key()),
            );
            let (pred, from) = match head {
                Head::Holder(rev) => {
                    drop(keepers);
                    return self
                        .granted(req, cancel, me.lease, rev, &stamped, true)
                        .await;
                }
                Head::Requeue => {
                    tracing::warn!("our place in the queue for {name} expired; queueing again");
                    return Pass::Requeue;
                }
                Head::WaitFor { key, from } => (Some(key), from),
                Head::LookAgain => (None, 0),
            };
            if let Some(owner) = first_kv(ops.get(2)) {
                let info = self.info_of(name, owner, None);
                if let Some(cb) = &req.on_wait {
                    cb(&info);
                }
                last_info = Some(info);
            }
            if out_of_time() {
                return not_acquired(name, &last_info);
            }
            let Some(pred) = pred else {
                // Nobody before us, yet not at the head: cannot happen in
                // one transaction; look again shortly.
                tokio::time::sleep(poll_pause()).await;
                continue;
            };
            // Wait for the key before ours to go.
            tokio::select! {
                sig = &mut *cancel => return interrupted(sig),
                _ = &mut give_up_at => return not_acquired(name, &last_info),
                Some(()) = lost_rx.recv() => {
                    tracing::warn!("our place in the queue for {name} expired; queueing again");
                    return Pass::Requeue;
                }
                r = self.watch_delete(&pred, from) => {
                    if let Err(e) = r {
                        tracing::warn!("watching the lock: {e}; looking again");
                        tokio::select! {
                            sig = &mut *cancel => return interrupted(sig),
                            _ = &mut give_up_at => return not_acquired(name, &last_info),
                            _ = tokio::time::sleep(poll_pause()) => {}
                        }
                    }
                }
            }
        }
    }

    /// Returns once `key` is deleted (at or after revision `from`), or an
    /// error when the watch cannot go on: then the caller looks again, and
    /// watches again on another member. Every [`WATCH_CHECK`] the member
    /// is asked for a progress report; one that has not answered by the next
    /// check is frozen or cut off, and is left.
    async fn watch_delete(&self, key: &[u8], from: i64) -> std::result::Result<(), String> {
        self.watch_deletes(key, from, false).await
    }

    /// [`Self::watch_delete`] for any key under `key` as a prefix when
    /// `prefix`.
    async fn watch_deletes(
        &self,
        key: &[u8],
        from: i64,
        prefix: bool,
    ) -> std::result::Result<(), String> {
        let Some((i, client)) = self.members.pick() else {
            return Err("no member is connected".into());
        };
        let ep = &self.members.endpoints[i];
        let opts = WatchOptions::new().with_start_revision(from);
        let opts = if prefix { opts.with_prefix() } else { opts };
        let started = tokio::time::timeout(
            ATTEMPT_MAX,
            client.watch_client().watch(key.to_vec(), Some(opts)),
        )
        .await;
        let mut stream = match started {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.members.avoid(i);
                return Err(format!("{ep}: {}", error_chain(&e)));
            }
            Err(_) => {
                self.members.avoid(i);
                return Err(format!("{ep} did not start a watch within {ATTEMPT_MAX:?}"));
            }
        };
        let mut check = tokio::time::interval(WATCH_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        let mut unanswered = false;
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        unanswered = false;
                        if resp.canceled()
                            || resp
                                .events()
                                .iter()
                                .any(|ev| ev.event_type() == EventType::Delete)
                        {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Err(format!("{ep} ended the watch")),
                    Err(e) => {
                        self.members.avoid(i);
                        return Err(format!("{ep}: {}", error_chain(&e)));
                    }
                },
                _ = check.tick() => {
                    if unanswered {
                        self.members.avoid(i);
                        return Err(format!(
                            "{ep} did not answer a progress request within {WATCH_CHECK:?}"
                        ));
                    }
                    if let Err(e) = stream.request_progress().await {
                        self.members.avoid(i);
                        return Err(format!("{ep}: {}", error_chain(&e)));
                    }
                    unanswered = true;
                }
            }
        }
    }

    /// Keeps `lease` alive in the background every third of its TTL, noting
    /// when each successful keep-alive was sent; each keep-alive is retried
    /// on other members until the lease would expire. Says so on `lost`
    /// when the lease is gone. Stops when dropped.
    fn keeper(&self, lease: &Granted, lost: tokio::sync::mpsc::Sender<()>) -> AbortOnDrop {
        let members = self.members.clone();
        let (id, refreshed) = (lease.id, lease.refreshed.clone());
        let ttl = Duration::from_secs(lease.ttl.max(1) as u64);
        let every = ttl / 3;
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let last = refreshed
                    .lock()
                    .map(|r| *r)
                    .unwrap_or_else(|e| *e.into_inner());
                let end = (last + ttl).max(Instant::now() + every);
                match members.keep_alive(id, end).await {
                    Ok(Some(sent)) => {
                        if let Ok(mut r) = refreshed.lock() {
                            *r = sent;
                        }
                    }
                    Ok(None) => {
                        let _ = lost.send(()).await;
                        return;
                    }
                    Err(Failed::Answer(e)) => tracing::warn!(
                        "keeping our place in the queue: {}; retrying",
                        error_chain(&e)
                    ),
                    Err(Failed::Unanswered(m)) => {
                        tracing::warn!("keeping our place in the queue: {m}; retrying")
                    }
                }
            }
        }))
    }

    /// We head the queue: the lease as the caller sees it, with token
    /// `rev`. When the lease was last refreshed a while ago (`queued`), one
    /// keep-alive first, so that the deadline starts now rather than at a
    /// keep-alive up to a third of the TTL old: otherwise the command could
    /// be warned before its first renewal was even due.
    async fn granted(
        &self,
        req: &AcquireRequest,
        cancel: &mut futures_util::future::Fuse<BoxFuture<'_, i32>>,
        lease: &Granted,
        rev: i64,
        holder: &Holder,
        queued: bool,
    ) -> Pass {
        if let Some(sig) = (&mut *cancel).now_or_never() {
            // Granted as the signal came: give it back (the caller revokes).
            return Pass::Done(Err(Error::Interrupted(sig)));
        }
        let mut sent = lease
            .refreshed
            .lock()
            .map(|r| *r)
            .unwrap_or_else(|e| *e.into_inner());
        if queued {
            let ttl = Duration::from_secs(lease.ttl.max(0) as u64);
            let end = (sent + ttl).min(Instant::now() + REQUEST_TIMEOUT);
            match self.members.keep_alive(lease.id, end).await {
                Ok(Some(fresh)) => sent = fresh,
                Ok(None) => {
                    tracing::warn!(
                        "our lease on {} expired as we got the lock; queueing again",
                        req.name
                    );
                    return Pass::Requeue;
                }
                // The last refresh still bounds the lease: keep that
                // deadline; the renewals retry.
                Err(_) => {}
            }
        }
        let (deadline, expires_at_ms, duration) = timing(sent, lease.ttl);
        Pass::Done(Ok(Lease {
            name: req.name.clone(),
            lease_id: lease_hex(lease.id),
            fence: u64::try_from(rev).ok().filter(|&r| r > 0),
            duration,
            acquired_at_ms: holder.acquired_ms,
            expires_at_ms,
            deadline,
            slotted: false,
        }))
    }
}

/// Our key in the queue, as [`EtcdStore::wait_for_head`] needs it.
struct Queued<'a> {
    key: &'a str,
    /// The key's create revision: its place in the queue.
    rev: i64,
    /// The lease the lock is held on once taken.
    lease: &'a Granted,
    /// The lease the key lives on while queued (`lease` itself for a
    /// short lease).
    queue_lease: &'a Granted,
    holder: &'a Holder,
}

/// Reads the first contender of a lock (the lowest create revision).
fn owner_opts() -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
}

/// The revision a response was served at (0 if etcd did not say).
fn header_revision(resp: &etcd_client::TxnResponse) -> i64 {
    resp.header().map(|h| h.revision()).unwrap_or(0)
}

/// The lock was held (or waited for) past `give_up`.
fn not_acquired(name: &str, info: &Option<LockInfo>) -> Pass {
    Pass::Done(Err(Error::NotAcquired {
        name: name.to_string(),
        holder: info.clone().map(Box::new),
    }))
}

/// What the "take it if nobody is queued" transaction found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// We hold the lock; the token is this revision.
    Took(i64),
    /// Someone is queued (or holds it): queue behind them.
    Held,
}

/// Judges the "take it if nobody is queued" transaction: it succeeded at
/// revision `header_rev` (the write that made us the holder: the token), or
/// it failed and `first` is the first contender's (key, lease, mod
/// revision). A first contender that is our own key on our lease means an
/// earlier attempt of this transaction was applied and its answer lost
/// (the member froze or the link broke after it wrote): that write took
/// the lock, and its revision, our key's mod revision, is the token.
fn judge_take(
    succeeded: bool,
    header_rev: i64,
    first: Option<(&[u8], i64, i64)>,
    my_key: &str,
    my_lease: i64,
) -> Take {
    if succeeded {
        return Take::Took(header_rev);
    }
    match first {
        Some((key, lease, mod_rev)) if key == my_key.as_bytes() && lease == my_lease => {
            Take::Took(mod_rev)
        }
        _ => Take::Held,
    }
}

/// Whether a lease of `ttl_s` seconds is too long for a key that waits in
/// the queue (see [`EtcdStore::enqueue`]).
fn needs_queue_lease(ttl_s: i64) -> bool {
    ttl_s > QUEUE_TTL_S
}

/// Our key's create revision after the queueing transaction: the
/// revision of its write when it succeeded, else the create revision of
/// the key an earlier attempt wrote. `None` when etcd reported neither.
fn queue_revision(succeeded: bool, header_rev: i64, existing: Option<i64>) -> Option<i64> {
    let rev = if succeeded {
        header_rev
    } else {
        existing.unwrap_or(0)
    };
    (rev != 0).then_some(rev)
}

/// What the head-of-queue transaction says to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Head {
    /// We head the queue and hold the lock; the token is this revision,
    /// the one of the write that found nobody before us (as etcdctl's is
    /// the revision of the read that found nobody before it).
    Holder(i64),
    /// Our key is gone (its lease expired): queue again.
    Requeue,
    /// Wait for `key`, the one just before ours, to be deleted after
    /// revision `from - 1`.
    WaitFor { key: Vec<u8>, from: i64 },
    /// Nobody before us, yet not at the head: cannot happen in one
    /// transaction; look again shortly.
    LookAgain,
}

/// Judges the head-of-queue transaction: it succeeded at `header_rev`, or
/// it failed and says whether our key is still there (`ours`) and which
/// key is just before ours (`pred`).
fn judge_head(succeeded: bool, header_rev: i64, ours: bool, pred: Option<&[u8]>) -> Head {
    if succeeded {
        return Head::Holder(header_rev);
    }
    if !ours {
        return Head::Requeue;
    }
    match pred {
        Some(key) => Head::WaitFor {
            key: key.to_vec(),
            from: header_rev + 1,
        },
        None => Head::LookAgain,
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

/// Connects to one member and reads one key under the prefix: the client
/// connects lazily, so this proves the member answers, accepts the
/// credentials and lets us read.
async fn connect_member(
    url: &str,
    copts: ConnectOptions,
    probe_key: String,
) -> std::result::Result<Client, etcd_client::Error> {
    let client = Client::connect([url], Some(copts)).await?;
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
    Ok(client)
}

/// A user who may not read or write under the prefix.
fn permission_error(endpoints: &str, user: Option<&str>, prefix: &str, msg: &str) -> Error {
    let who = user
        .map(|u| format!("user {u:?}"))
        .unwrap_or("this client".into());
    Error::store(format!(
        "etcd at {endpoints} denied {who} access to keys under '{prefix}' ({msg}); give one of its roles readwrite permission on that prefix (etcdctl role grant-permission ROLE readwrite --prefix '{prefix}')"
    ))
}

/// Why connecting failed, and what to do about it.
fn connect_error(
    endpoints: &str,
    e: etcd_client::Error,
    user: Option<&str>,
    prefix: &str,
    tls: bool,
) -> Error {
    if let etcd_client::Error::GRpcStatus(s) = &e {
        let msg = one_line(s.message());
        return match s.code() {
            // etcd answers InvalidArgument both for a missing user name and
            // for a failed authentication.
            Code::InvalidArgument if user.is_none() => Error::store(format!(
                "etcd at {endpoints} requires authentication ({msg}); give --etcd-user USER:PASSWORD"
            )),
            Code::InvalidArgument | Code::Unauthenticated => Error::store(format!(
                "etcd at {endpoints} refused the credentials ({msg}); check --etcd-user/--etcd-password"
            )),
            Code::FailedPrecondition if user.is_some() => Error::store(format!(
                "etcd at {endpoints} refused to authenticate ({msg}); leave out --etcd-user if its authentication is not enabled"
            )),
            Code::PermissionDenied => permission_error(endpoints, user, prefix, &msg),
            // etcd itself said "try again" (no leader, leader changed, …):
            // it was reached, so transport hints would mislead.
            _ if is_transient(&e) && msg.starts_with("etcdserver:") => Error::Unavailable(format!(
                "etcd at {endpoints} is not serving requests ({msg}); try again once the cluster has a leader"
            )),
            _ if is_transient(&e) => connect_failure(endpoints, &e, tls),
            _ => Error::store(format!("etcd at {endpoints}: {msg}")),
        };
    }
    connect_failure(endpoints, &e, tls)
}

/// Connecting failed in transit: say why, and what to check.
fn connect_failure(endpoints: &str, e: &etcd_client::Error, tls: bool) -> Error {
    let detail = error_chain(e);
    let hint = if is_refused(e) {
        "; is etcd listening there?"
    } else if tls {
        "; check --etcd-cacert, --etcd-cert and --etcd-key"
    } else {
        "; if it serves TLS, give --etcd-cacert (and --etcd-cert/--etcd-key when it asks for a client certificate)"
    };
    if is_transient(e) {
        Error::Unavailable(format!("cannot reach etcd at {endpoints}: {detail}{hint}"))
    } else {
        Error::store(format!(
            "cannot connect to etcd at {endpoints}: {detail}{hint}"
        ))
    }
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
impl LockStore for EtcdStore {
    fn describe(&self) -> String {
        format!(
            "etcd cluster {} prefix '{}'",
            self.endpoints.join(","),
            self.prefix
        )
    }

    async fn acquire(&self, req: &AcquireRequest, cancel: BoxFuture<'_, i32>) -> Result<Lease> {
        super::validate_name(&req.name)?;
        slots::wanted(req)?;
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
        super::validate_name(&lease.name)?;
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
                detail: super::revoke::refusal_detail(&String::from_utf8_lossy(mark.value())),
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
        super::validate_name(name)?;
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
        super::validate_name(name)?;
        let Some(kv) = self.holder_kv(name).await? else {
            return Ok(absent_info(name));
        };
        let ttl = self.ttl_of(kv.lease()).await?;
        if ttl.is_none() {
            // The lease ended between the two reads.
            return Ok(absent_info(name));
        }
        let mut info = self.info_of(name, &kv, ttl);
        if Holder::from_value(kv.value()).mode() != (Kind::Exclusive, Mode::Lock) {
            self.describe_holders(name, &mut info).await?;
        }
        info.revoked_by = self.revoked_by(kv.lease()).await?;
        Ok(info)
    }

    async fn force_release(
        &self,
        name: &str,
        force: &super::revoke::Force,
    ) -> Result<super::revoke::Forced> {
        super::validate_name(name)?;
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
            // Revocation marks live under the reserved prefix.
            if rest.starts_with(super::RESERVED_PREFIX) {
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
                if Holder::from_value(kv.value()).mode() != (Kind::Exclusive, Mode::Lock) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_lock_is_taken_at_the_revision_of_our_write() {
        assert_eq!(judge_take(true, 42, None, "p/L/1", 1), Take::Took(42));
    }

    #[test]
    fn our_own_key_first_in_line_means_an_earlier_attempt_took_the_lock() {
        let seen = Some((&b"p/L/1"[..], 1, 17));
        assert_eq!(judge_take(false, 42, seen, "p/L/1", 1), Take::Took(17));
        // Our key name on another lease, or another key: someone else's.
        let other_lease = Some((&b"p/L/1"[..], 2, 17));
        assert_eq!(judge_take(false, 42, other_lease, "p/L/1", 1), Take::Held);
        let other_key = Some((&b"p/L/2"[..], 1, 17));
        assert_eq!(judge_take(false, 42, other_key, "p/L/1", 1), Take::Held);
        assert_eq!(judge_take(false, 42, None, "p/L/1", 1), Take::Held);
    }

    #[test]
    fn only_leases_longer_than_the_queue_lease_queue_on_one() {
        assert!(!needs_queue_lease(QUEUE_TTL_S));
        assert!(needs_queue_lease(QUEUE_TTL_S + 1));
    }

    #[test]
    fn a_queued_key_keeps_the_place_an_earlier_attempt_got() {
        assert_eq!(queue_revision(true, 50, None), Some(50));
        assert_eq!(queue_revision(false, 50, Some(31)), Some(31));
        assert_eq!(queue_revision(false, 50, None), None);
        assert_eq!(queue_revision(true, 0, None), None);
    }

    #[test]
    fn the_head_of_the_queue_holds_and_the_others_watch_their_predecessor() {
        assert_eq!(judge_head(true, 60, true, None), Head::Holder(60));
        // Our key gone: queue again, whoever is before us.
        assert_eq!(judge_head(false, 60, false, Some(b"p/L/a")), Head::Requeue);
        assert_eq!(
            judge_head(false, 60, true, Some(b"p/L/a")),
            Head::WaitFor {
                key: b"p/L/a".to_vec(),
                from: 61
            }
        );
        assert_eq!(judge_head(false, 60, true, None), Head::LookAgain);
    }

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
