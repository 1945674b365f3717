//! Connecting: the options every member's client connects with
//! (authentication, TLS), connecting to every member at once, and why
//! connecting failed when no member answered.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use tokio::sync::mpsc;
use tonic::Code;

use super::members::{Members, error_chain, is_transient, one_line, permission_error};
use super::{ATTEMPT_MIN, CONNECT_RETRY, CONNECT_TIMEOUT, EtcdStore};
use crate::boottime::BootInstant as Instant;
use crate::error::{Error, Result};
use crate::store::EtcdOptions;

/// How connecting to one member ended: connected, or its error (`None`: no
/// answer in time).
type Outcome = std::result::Result<(), Option<etcd_client::Error>>;

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
        let (copts, user) = connect_options(opts)?;
        let tls = uses_tls(opts);
        let members = Arc::new(Members::new(endpoints.clone()));
        let mut first = dial_all(&members, &copts, tls, &prefix);
        let mut failures = Vec::new();
        while let Some((i, outcome)) = first.recv().await {
            match outcome {
                Ok(()) => {
                    members.preferred.store(i, Ordering::Relaxed);
                    return Ok(EtcdStore {
                        members,
                        endpoints,
                        prefix,
                        user,
                    });
                }
                Err(e) => failures.push((i, e)),
            }
        }
        let list = endpoints.join(",");
        Err(none_answered(
            &list,
            failures,
            user.as_deref(),
            &prefix,
            tls,
        ))
    }
}

/// The options every member's client connects with, and the user we
/// authenticate as.
fn connect_options(opts: &EtcdOptions) -> Result<(ConnectOptions, Option<String>)> {
    // Require a leader: a member cut off from the others fails requests
    // at once (Unavailable, then the next member is tried) and ends
    // watches, instead of serving a watch that will never see the
    // deletion it waits for.
    let copts = ConnectOptions::new()
        .with_require_leader(true)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    let (mut copts, user) = with_credentials(copts, opts)?;
    if uses_tls(opts) {
        copts = copts.with_tls(tls_options(opts)?);
    }
    Ok((copts, user))
}

/// `copts` authenticating as `--etcd-user` (`USER:PASSWORD`, or with
/// `--etcd-password`), and the user's name.
fn with_credentials(
    copts: ConnectOptions,
    opts: &EtcdOptions,
) -> Result<(ConnectOptions, Option<String>)> {
    match (&opts.user, &opts.password) {
        (Some(user), Some(password)) => Ok((
            copts
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true),
            Some(user.clone()),
        )),
        (Some(user), None) => {
            let (user, password) = user.split_once(':').ok_or_else(|| {
                Error::usage(format!(
                    "no password for etcd user {user:?}; give --etcd-user USER:PASSWORD or --etcd-password"
                ))
            })?;
            Ok((
                copts
                    .with_user(user, password)
                    .with_auto_token_refresh(true),
                Some(user.to_string()),
            ))
        }
        (None, Some(_)) => Err(Error::usage("--etcd-password needs --etcd-user")),
        (None, None) => Ok((copts, None)),
    }
}

/// Whether the members are reached over TLS: when any TLS file is given.
fn uses_tls(opts: &EtcdOptions) -> bool {
    opts.cacert.is_some() || opts.cert.is_some() || opts.key.is_some()
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

/// Starts connecting to every member in the background. Each member's
/// first outcome arrives on the receiver, which ends once every member has
/// reported one.
fn dial_all(
    members: &Arc<Members>,
    copts: &ConnectOptions,
    tls: bool,
    prefix: &str,
) -> mpsc::Receiver<(usize, Outcome)> {
    let scheme = if tls { "https" } else { "http" };
    let probe_key = if prefix.is_empty() {
        String::from("\0")
    } else {
        prefix.to_string()
    };
    let (tx, rx) = mpsc::channel(members.endpoints.len().max(1));
    let connect_by = Instant::now() + CONNECT_TIMEOUT;
    for (i, e) in members.endpoints.iter().enumerate() {
        let dial = Dial {
            i,
            url: format!("{scheme}://{e}"),
            copts: copts.clone(),
            probe_key: probe_key.clone(),
            members: members.clone(),
            connect_by,
        };
        tokio::spawn(dial.run(tx.clone()));
    }
    rx
}

/// Connecting to member `i`, in the background.
struct Dial {
    i: usize,
    url: String,
    copts: ConnectOptions,
    probe_key: String,
    members: Arc<Members>,
    /// When the first outcome is due.
    connect_by: Instant,
}

impl Dial {
    /// Connects until the member answers or fails for good. Only the first
    /// outcome is reported on `tx`; dropping the sender then lets
    /// [`EtcdStore::connect`] see when every member has failed once. A
    /// member that could not be reached is tried again every 3 s.
    async fn run(self, tx: mpsc::Sender<(usize, Outcome)>) {
        let mut tx = Some(tx);
        loop {
            let r = self.attempt(tx.is_some()).await;
            if tx.is_some() && self.retry_soon(&r) {
                tokio::time::sleep(CONNECT_RETRY).await;
                continue;
            }
            let transient = match &r {
                Ok(_) => false,
                Err(Some(e)) => is_transient(e),
                Err(None) => true,
            };
            let outcome = r.map(|c| {
                let _ = self.members.clients[self.i].set(c);
            });
            let connected = outcome.is_ok();
            if let Some(tx) = tx.take() {
                let _ = tx.send((self.i, outcome)).await;
            }
            if connected || !transient {
                return;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    /// One attempt, within the time left for connecting when its outcome
    /// is the `first`, else within [`CONNECT_TIMEOUT`]. `Err(None)`: no
    /// answer in time.
    async fn attempt(
        &self,
        first: bool,
    ) -> std::result::Result<Client, Option<etcd_client::Error>> {
        let limit = if first {
            self.connect_by
                .saturating_duration_since(Instant::now())
                .max(ATTEMPT_MIN)
        } else {
            CONNECT_TIMEOUT
        };
        let connecting = connect_member(&self.url, self.copts.clone(), self.probe_key.clone());
        match tokio::time::timeout(limit, connecting).await {
            Ok(r) => r.map_err(Some),
            Err(_) => Err(None),
        }
    }

    /// A member that answers "no leader" or "leader changed" is in an
    /// election, which takes about a second: ask again until the time for
    /// connecting is up, rather than report it failed (when every member
    /// has failed once, connecting gives up). A refused connection is
    /// reported at once: nothing listens there.
    fn retry_soon(&self, r: &std::result::Result<Client, Option<etcd_client::Error>>) -> bool {
        Instant::now() + CONNECT_RETRY < self.connect_by
            && matches!(r, Err(Some(e)) if is_transient(e) && !is_refused(e))
    }
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

/// No member connected: the most telling failure (an answer beats
/// silence), as our error.
fn none_answered(
    endpoints: &str,
    mut failures: Vec<(usize, Option<etcd_client::Error>)>,
    user: Option<&str>,
    prefix: &str,
    tls: bool,
) -> Error {
    failures.sort_by_key(|(i, e)| (e.as_ref().is_none_or(is_transient), *i));
    match failures.into_iter().next() {
        Some((_, Some(e))) => connect_error(endpoints, e, user, prefix, tls),
        _ => Error::Unavailable(format!(
            "cannot reach etcd at {endpoints}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
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
