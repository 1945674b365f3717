//! `acquire` and `renew`: a lease handed out and extended by its id, as
//! awsflock 0.2.0 does, and how a lease is printed.

use crate::cli::{AcquireArgs, Global, RenewArgs};
use crate::error::{Error, Result};
use crate::exit;
use crate::output::{out, say};
use crate::request::Lease;
use crate::supervise;

use super::facts::rfc3339;
use super::options::{DEFAULT_LEASE, DEFAULT_WAIT, next_signal, open, quiet_conflict, request};
use super::wait::waiting_done;

/// `acquire`: takes the lock and prints the lease (0.2.0's LEASE_ID).
pub(super) async fn acquire(g: &Global, a: AcquireArgs) -> Result<i32> {
    let store = open(g).await?;
    let req = request(&a.name, &a.lock, DEFAULT_LEASE, Some(DEFAULT_WAIT), g)?;
    // A signal ends the wait holding nothing (a queued etcd key is
    // revoked, a grant that raced with it is released), exit 128+N.
    let mut signals = supervise::unix::signals()
        .map_err(|e| Error::store(format!("cannot handle signals: {e}")))?;
    let lease = store.acquire(&req, next_signal(&mut signals)).await;
    waiting_done();
    match lease {
        Ok(lease) => print_lease(&lease, a.json, &req.owner, req.reason.as_deref())?,
        // -E/--conflict-exit-code, as flock(1)'s; -q: the exit code says it.
        Err(e @ Error::NotAcquired { .. }) => {
            if !quiet_conflict(g, &e) {
                say!("awsflock: error: {}", exit::message(&e));
            }
            return Ok(a.conflict_exit_code);
        }
        // -q: a wait ended by a signal says so by its exit code alone.
        Err(e @ Error::Interrupted(_)) if g.quiet => return Ok(exit::code(&e)),
        Err(e) => return Err(e),
    }
    Ok(exit::OK)
}

/// `renew`: extends a lease by its id, as 0.2.0 does.
pub(super) async fn renew(g: &Global, r: RenewArgs) -> Result<i32> {
    crate::request::validate_name(&r.name)?;
    let store = open(g).await?;
    let lease = store.lease_from_id(&r.name, &r.lease_id);
    let next = uuid::Uuid::new_v4().to_string();
    let renewed = store
        .renew(&lease, r.lease_duration.unwrap_or(DEFAULT_LEASE), &next)
        .await?;
    // The lease keeps its owner and reason; read them back for
    // --json (as `status` shows them) and to answer 0.2.0's --owner.
    let (mut owner, mut reason) = (None, None);
    if r.json || r.owner.is_some() {
        match store.inspect(&r.name).await {
            Ok(info) if info.lease_id.as_deref() == Some(renewed.lease_id.as_str()) => {
                (owner, reason) = (info.owner, info.reason);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the renewed lease back"),
        }
    }
    if let (Some(asked), Some(kept)) = (r.owner.as_deref(), owner.as_deref()) {
        if asked != kept && !g.quiet {
            say!(
                "awsflock: note: the lease keeps its owner {kept:?}; --owner {asked:?} is not applied on renew"
            );
        }
    }
    print_lease(
        &renewed,
        r.json,
        owner.as_deref().unwrap_or(""),
        reason.as_deref(),
    )?;
    Ok(exit::OK)
}

fn print_lease(lease: &Lease, json: bool, owner: &str, reason: Option<&str>) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "name": lease.name,
            "lease_id": lease.lease_id,
            "fence": lease.fence,
            "owner": if owner.is_empty() { None } else { Some(owner) },
            "reason": reason,
            "acquired_at": lease.acquired_at_ms.map(rfc3339),
            "expires_at": rfc3339(lease.expires_at_ms),
            "lease_duration": lease.duration.as_secs(),
        });
        out(&v.to_string())
    } else {
        out(&lease.lease_id)
    }
}
