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

//! Files: `backend` the interface a store implements ([`CasStore`]) and
//! what its records say; `acquire` the single-holder loop; `multi` the
//! holder-table loop (semaphores, shared locks, waiting in order); this
//! file makes every [`CasStore`] a [`LockStore`].

mod acquire;
mod backend;
mod line;
pub(crate) mod multi;

use std::time::Duration;

use futures_util::FutureExt;

use self::acquire::acquire;
#[cfg(any(feature = "dynamodb", feature = "s3"))]
pub use self::acquire::finish;
pub use self::backend::*;
use self::multi::release_anywhere;
use crate::error::{Error, Result};
use crate::info::LockInfo;
use crate::protocol::revoke::{self, Action, Force, Forced};
use crate::request::{AcquireRequest, Lease};
use crate::store::{BoxFuture, LockStore};

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
        crate::request::validate_text(req)?;
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

    /// A holder of a table is released in the table at once (a read and a
    /// write), not first tried as a plain record (which refuses it).
    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.check_name(&lease.name)?;
        if !lease.slotted {
            return release_anywhere(self, &lease.name, &lease.lease_id).await;
        }
        match multi::release(self, &lease.name, &lease.lease_id).await {
            // Not in a table (a record no longer one): as for any lease id.
            Err(Error::NotHeld { .. }) => {
                release_anywhere(self, &lease.name, &lease.lease_id).await
            }
            other => other,
        }
    }

    async fn inspect(&self, name: &str) -> Result<LockInfo> {
        self.check_name(name)?;
        let rec = explained(self, self.read(name).await).await?;
        let mut info = info_of(self, name, rec.as_ref());
        if let Some(line) = self.line() {
            // Only a table has waiters in line (the first waiter marks a
            // plain record as one).
            if let Some(table) = rec.as_ref().and_then(S::slots_of) {
                let queue = line::waiters(line, name, &table.line, self.table_now()).await;
                info.queue = explained(self, queue).await?;
                info.waiting = info.waiting.max(info.queue.len());
            }
        }
        Ok(info)
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
