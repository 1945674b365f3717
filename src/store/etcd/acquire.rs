//! Acquiring: granting the lease, taking a free lock in one transaction,
//! or queueing behind the contenders already there (the waiting itself is
//! in `wait` and `slots`), and the lease handed to the caller.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp};
use futures_util::FutureExt;

use super::keys::{Holder, first_kv, header_revision, lease_hex, owner_opts};
use super::members::is_lease_gone;
use super::wait::{Cancel, Granted, Pass, Queued, Waiter, not_acquired, timing};
use super::{EtcdStore, QUEUE_TTL_S, REQUEST_TIMEOUT};
use crate::boottime::BootInstant as Instant;
use crate::error::{Error, Result};
use crate::protocol::slots::{self, Mode};
use crate::request::{AcquireRequest, Lease};

impl EtcdStore {
    pub(super) async fn acquire_once(
        &self,
        req: &AcquireRequest,
        cancel: &mut Cancel<'_>,
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
    /// others and waits until our key heads the queue
    /// ([`Waiter::wait_for_head`]), or is admitted beside those ahead
    /// ([`Waiter::wait_for_slot`]). What each answer means is decided by
    /// [`judge_take`], [`queue_revision`] and `wait`'s `judge_head`.
    async fn queue_and_wait(
        &self,
        req: &AcquireRequest,
        cancel: &mut Cancel<'_>,
        give_up: Option<Instant>,
        lease: &Granted,
        queue_lease: &mut Option<i64>,
    ) -> Pass {
        let name = &req.name;
        let my_key = self.key(name, &lease_hex(lease.id));
        let holder = Holder::of_request(req);
        let first = match self.take_if_free(name, &my_key, lease.id, &holder).await {
            Ok((Take::Took(rev), _)) => {
                return self.granted(req, cancel, lease, rev, &holder, false).await;
            }
            Ok((Take::Held, first)) => first,
            Err(e) => return Pass::Done(Err(e)),
        };
        let last_info = first.as_ref().map(|kv| self.info_of(name, kv, None));
        let wanted = slots::wanted(req).ok().flatten();
        // A plain lock asked of a semaphore's name: the holders' N differs.
        if let (None, Some(kv)) = (wanted, &first) {
            if let (_, stored @ Mode::Semaphore(_)) = Holder::from_value(kv.value()).mode() {
                return Pass::Done(Err(slots::mismatch(name, stored, Mode::Lock)));
            }
        }
        // (A semaphore or shared contender may be admitted beside those
        // there: it queues and looks once, even with no time to wait.)
        if wanted.is_none() && give_up.is_some_and(|g| Instant::now() >= g) {
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
        let waiter = Waiter::new(self, req, cancel, give_up, queued, last_info);
        match wanted {
            Some((kind, mode)) => waiter.wait_for_slot(kind, mode).await,
            None => waiter.wait_for_head().await,
        }
    }

    /// Free (nobody queued): takes it, putting our key on our lease.
    /// Otherwise reads who holds it: what [`judge_take`] makes of the
    /// answer, and the first contender.
    async fn take_if_free(
        &self,
        name: &str,
        my_key: &str,
        id: i64,
        holder: &Holder,
    ) -> Result<(Take, Option<KeyValue>)> {
        let mp = self.mutex_prefix(name);
        let txn = Txn::new()
            .when([Compare::create_revision(mp.clone(), CompareOp::Equal, 0).with_prefix()])
            .and_then([TxnOp::put(
                my_key,
                holder.to_json(),
                Some(PutOptions::new().with_lease(id)),
            )])
            .or_else([TxnOp::get(mp, Some(owner_opts()))]);
        let resp = self
            .txn(&txn)
            .await
            .map_err(|e| self.error("take the lock", e))?;
        let first = first_kv(resp.op_responses().first()).cloned();
        let seen = first
            .as_ref()
            .map(|kv| (kv.key(), kv.lease(), kv.mod_revision()));
        let take = judge_take(resp.succeeded(), header_revision(&resp), seen, my_key, id);
        Ok((take, first))
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

    /// We head the queue: the lease as the caller sees it, with token
    /// `rev`. When the lease was last refreshed a while ago (`queued`), one
    /// keep-alive first, so that the deadline starts now rather than at a
    /// keep-alive up to a third of the TTL old: otherwise the command could
    /// be warned before its first renewal was even due.
    pub(super) async fn granted(
        &self,
        req: &AcquireRequest,
        cancel: &mut Cancel<'_>,
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
}
