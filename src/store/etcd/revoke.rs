//! Forced release (`release --force`): a supervised holder is marked
//! revoked (a key on its own lease, read by every renewal), any other has
//! its etcd lease revoked.

use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp};

use super::EtcdStore;
use super::keys::{Holder, lease_hex};
use crate::error::{Error, Result};
use crate::protocol::revoke::{Action, Force, Forced, action};
use crate::store::LockStore;

impl EtcdStore {
    /// Who revoked the contender holding etcd lease `id`, if anyone did.
    pub(super) async fn revoked_by(&self, id: i64) -> Result<Option<String>> {
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
    /// ([`crate::protocol::revoke`]): a supervised one (exclusive, shared or
    /// of a semaphore: every renewal reads the mark) is marked revoked (it
    /// stops at its next renewal and releases); any other has its etcd
    /// lease revoked. Several holders (shared, a semaphore) go one at a
    /// time.
    pub(super) async fn force_exclusive(&self, name: &str, force: &Force) -> Result<Forced> {
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
}
