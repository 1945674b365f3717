//! From the command line's options to the library's: the store to open,
//! the acquire request, the defaults that 0.2.0 and flock(1) set.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::{Global, LockArgs};
use crate::error::{Error, Result};
use crate::request::{AcquireRequest, OnWait};
use crate::store::{self, LockStore, StoreOptions};

use super::wait::waiting_display;

/// Default lease for `acquire` and `renew`, as in awsflock 0.2.0.
pub(super) const DEFAULT_LEASE: Duration = Duration::from_secs(2 * 3600);

/// Default lease for `run`: short, because it is renewed while the command runs.
pub(super) const DEFAULT_RUN_LEASE: Duration = Duration::from_secs(60);

/// Default wait of `acquire` for a held lock, as in awsflock 0.2.0. `run`
/// waits until it gets the lock, as flock(1), `consul lock` and `etcdctl
/// lock` do (a CI system has its own job timeout).
pub(super) const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// The store options: [`StoreOptions::from_env`], which a library user
/// calls too, with the global flags on top (clap reads the same variables
/// for the flags that have one; `cli::tests` checks that the lists agree).
pub(super) fn store_options(g: &Global) -> StoreOptions {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let mut o = StoreOptions::from_env();
    let or = |flag: &Option<String>, env: Option<String>| flag.clone().or(env);
    o.url = or(&g.backend, o.url);
    o.table = or(&g.table, o.table);
    o.endpoint_url = nonempty(&g.endpoint_url).or(o.endpoint_url);
    o.region = nonempty(&g.region);
    o.profile = nonempty(&g.profile);
    o.etcd.user = or(&g.etcd_user, o.etcd.user);
    o.etcd.password = or(&g.etcd_password, o.etcd.password);
    o.etcd.cacert = g.etcd_cacert.clone().or(o.etcd.cacert);
    o.etcd.cert = g.etcd_cert.clone().or(o.etcd.cert);
    o.etcd.key = g.etcd_key.clone().or(o.etcd.key);
    o
}

pub(super) async fn open(g: &Global) -> Result<Arc<dyn LockStore>> {
    store::open(&store_options(g)).await
}

/// Builds an acquire request from `acquire`/`run` options; `default_wait`
/// applies when no wait option is given (`None`: forever).
pub(super) fn request(
    name: &str,
    a: &LockArgs,
    default_lease: Duration,
    default_wait: Option<Duration>,
    g: &Global,
) -> Result<AcquireRequest> {
    crate::request::validate_name(name)?;
    let wait = if a.no_wait {
        Some(Duration::ZERO)
    } else if let Some(t) = a.timeout {
        Some(t) // flock(1)'s -w: 0 does not wait
    } else {
        a.wait_time.map_or(default_wait, |w| w.0)
    };
    let on_wait: Option<OnWait> = if g.quiet {
        None
    } else {
        Some(waiting_display(name))
    };
    Ok(AcquireRequest {
        name: name.to_string(),
        lease: a.lease_duration.unwrap_or(default_lease),
        wait,
        owner: a
            .owner
            .clone()
            .filter(|o| !o.is_empty())
            .unwrap_or_else(default_owner),
        reason: a.reason.clone().filter(|r| !r.is_empty()),
        on_wait,
        supervised: false,
        max_holders: a.max_holders,
        shared: a.shared,
    })
}

/// The host name, as awsflock 0.2.0 defaults `--owner`.
pub(super) fn default_owner() -> String {
    crate::request::default_owner()
}

/// Whether a lock not acquired goes unsaid: with `-q`, unless the record
/// cannot be read (that one needs `release --force`, and no wait will end it).
pub(super) fn quiet_conflict(g: &Global, e: &Error) -> bool {
    let unreadable = matches!(e, Error::NotAcquired { holder: Some(h), .. } if h.problem.is_some());
    g.quiet && !unreadable
}

/// The next forwarded signal, as the cancellation of a wait.
pub(super) fn next_signal(signals: &mut signal_hook_tokio::Signals) -> store::BoxFuture<'_, i32> {
    use futures_util::StreamExt;
    Box::pin(async move { signals.next().await.unwrap_or(libc::SIGTERM) })
}
