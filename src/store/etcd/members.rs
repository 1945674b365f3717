//! One client per member, so that each attempt of a request goes to a
//! member we chose: a request is tried on one member after another until
//! one answers, and what a failed request means (try elsewhere, or the
//! cluster's answer) becomes one of our errors here.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, Txn, TxnResponse};
use tonic::Code;

use super::{ATTEMPT_MAX, ATTEMPT_MIN, EtcdStore, REQUEST_TIMEOUT};
use crate::boottime::BootInstant as Instant;
use crate::error::{Error, Result};

/// One client per member: after a member fails to answer, the next attempt
/// goes to the next one.
pub(super) struct Members {
    pub(super) endpoints: Vec<String>,
    /// Set once the member's client has connected (and authenticated).
    pub(super) clients: Vec<OnceLock<Client>>,
    /// The member tried first.
    pub(super) preferred: AtomicUsize,
}

/// Why a request failed, before it becomes one of our errors.
pub(super) enum Failed {
    /// The cluster answered no (or the client could not make the request).
    Answer(etcd_client::Error),
    /// No member answered in time; the last attempt's error or timeout.
    Unanswered(String),
}

impl Members {
    /// No member connected yet; the first is preferred.
    pub(super) fn new(endpoints: Vec<String>) -> Members {
        Members {
            clients: endpoints.iter().map(|_| OnceLock::new()).collect(),
            endpoints,
            preferred: AtomicUsize::new(0),
        }
    }

    /// The preferred member that is connected, or the next connected one.
    pub(super) fn pick(&self) -> Option<(usize, Client)> {
        let n = self.clients.len();
        let p = self.preferred.load(Ordering::Relaxed);
        (0..n)
            .map(|k| (p + k) % n)
            .find_map(|i| self.clients[i].get().map(|c| (i, c.clone())))
    }

    /// Member `i` did not answer: prefer the next one.
    pub(super) fn avoid(&self, i: usize) {
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
    pub(super) async fn call<T, F, Fut>(
        &self,
        end: Instant,
        mut f: F,
    ) -> std::result::Result<T, Failed>
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
    pub(super) async fn keep_alive(
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

impl EtcdStore {
    /// When a request started now must have been answered.
    pub(super) fn end(&self) -> Instant {
        Instant::now() + REQUEST_TIMEOUT
    }

    /// Turns a failed request into our error, saying what we were doing.
    pub(super) fn error(&self, what: &str, f: Failed) -> Error {
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
    pub(super) async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.members
            .call(self.end(), f)
            .await
            .map_err(|e| self.error(what, e))
    }

    /// Runs a transaction (any member, until [`REQUEST_TIMEOUT`]).
    pub(super) async fn txn(&self, txn: &Txn) -> std::result::Result<TxnResponse, Failed> {
        self.members
            .call(self.end(), |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await
    }
}

/// A user who may not read or write under the prefix.
pub(super) fn permission_error(
    endpoints: &str,
    user: Option<&str>,
    prefix: &str,
    msg: &str,
) -> Error {
    let who = user
        .map(|u| format!("user {u:?}"))
        .unwrap_or("this client".into());
    Error::store(format!(
        "etcd at {endpoints} denied {who} access to keys under '{prefix}' ({msg}); give one of its roles readwrite permission on that prefix (etcdctl role grant-permission ROLE readwrite --prefix '{prefix}')"
    ))
}

/// Whether a failed request is worth another attempt on another member:
/// it failed in transit, or the member could not serve it now (no leader,
/// leader changed, timed out, overloaded).
pub(super) fn is_transient(e: &etcd_client::Error) -> bool {
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
pub(super) fn is_lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m == "lease not found",
        etcd_client::Error::GRpcStatus(s) => s.code() == Code::NotFound,
        _ => false,
    }
}

/// An error with its causes, on one line (a transport error says only
/// "transport error"; its sources say what happened).
pub(super) fn error_chain(e: &etcd_client::Error) -> String {
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

pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
