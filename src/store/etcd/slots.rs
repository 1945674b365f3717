//! Semaphores (`--max-holders N`) and shared locks (`--shared`) on etcd's
//! queue: a contender is admitted beside those ahead of it rather than
//! when it heads the queue; who holds one, for `status` and `list`.

use etcd_client::{
    GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use super::EtcdStore;
use super::keys::{Holder, header_revision, is_contender};
use super::members::{Failed, is_lease_gone};
use super::wait::Pass;
use super::wait::{Sent, Waiter};
use crate::clock::local_wall_ms;
use crate::error::Result;
use crate::info::{HolderInfo, LockInfo};
use crate::protocol::slots::{Kind, Mode, mismatch};
use crate::store::poll_pause;

impl Waiter<'_, '_> {
    /// [`Self::wait_for_head`] for a semaphore's or a shared contender:
    /// admitted once fewer than N contenders are ahead of it (all of the
    /// same N), or, shared, once no exclusive contender is ahead of it. Both
    /// only grow true: contenders ahead can only leave (a new one is
    /// always behind), so the judgement of one read stands, and the grant
    /// is one transaction on our key still being queued. A contender ahead
    /// in another mode is a usage error. Waits for a deletion under the
    /// name (semaphore), or of the last exclusive contender ahead (shared).
    pub(super) async fn wait_for_slot(mut self, kind: Kind, mode: Mode) -> Pass {
        let req = self.req;
        let name = &req.name;
        loop {
            let read = self.ahead_txn();
            let resp = match self.send(&read).await {
                Ok(Sent::Answer(r)) => r,
                Ok(Sent::LeaseGone) => return Pass::Requeue,
                Ok(Sent::Again) => continue,
                Err(end) => return end,
            };
            if !resp.succeeded() {
                tracing::warn!("our place in the queue for {name} expired; queueing again");
                return Pass::Requeue;
            }
            let ahead = contenders(&resp, &self.mp);
            let modes: Vec<(Kind, Mode)> = ahead
                .iter()
                .map(|kv| Holder::from_value(kv.value()).mode())
                .collect();
            let standing = match judge_ahead(&modes, kind, mode) {
                Ok(s) => s,
                Err(theirs) => return Pass::Done(Err(mismatch(name, theirs, mode))),
            };
            if standing.admitted {
                match self.take_slot().await {
                    Some(end) => return end,
                    None => continue,
                }
            }
            if let Some(first) = ahead.first() {
                let mut info = self.store.info_of(name, first, None);
                info.waiting = ahead.len();
                self.saw(info);
            }
            if let Err(end) = self.check_time() {
                return end;
            }
            let from = header_revision(&resp) + 1;
            let (watched, prefix) = match (mode, standing.last_exclusive) {
                (Mode::Lock, Some(i)) => (ahead[i].key().to_vec(), false),
                _ => (self.mp.clone().into_bytes(), true),
            };
            if let Err(end) = self.await_deletion(&watched, from, prefix).await {
                return end;
            }
        }
    }

    /// If our key is still queued, the contenders ahead of it.
    fn ahead_txn(&self) -> Txn {
        let ahead_opts = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(self.me.rev - 1)
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        Txn::new()
            .when([self.still_queued()])
            .and_then([TxnOp::get(self.mp.clone(), Some(ahead_opts))])
    }

    /// Admitted: moves our key to our lease and stamps the time, if it is
    /// still queued. `Some`: the wait ends so (granted, interrupted, or our
    /// place is gone). `None`: look again (the answer is unknown; a put
    /// that landed leaves our key queued and admitted, and is simply made
    /// again).
    async fn take_slot(&mut self) -> Option<Pass> {
        let stamped = self.me.holder.stamped();
        let take = Txn::new()
            .when([self.still_queued()])
            .and_then([self.put_on_lease(&stamped)]);
        let store = self.store;
        let attempt = match self.unless_interrupted(store.txn(&take)).await {
            Ok(a) => a,
            Err(end) => return Some(end),
        };
        match attempt {
            Ok(r) if r.succeeded() => Some(self.grant(header_revision(&r), &stamped).await),
            Ok(_) => Some(Pass::Requeue),
            Err(Failed::Answer(e)) if is_lease_gone(&e) => Some(Pass::Requeue),
            Err(e) => {
                tracing::warn!("{}; looking again", store.error("take the lock", e));
                let pause = tokio::time::sleep(poll_pause());
                self.unless_interrupted(pause).await.err()
            }
        }
    }
}

/// The contenders a transaction's first get found under `mutex_prefix`.
fn contenders(resp: &TxnResponse, mutex_prefix: &str) -> Vec<KeyValue> {
    match resp.op_responses().first() {
        Some(TxnOpResponse::Get(g)) => g
            .kvs()
            .iter()
            .filter(|kv| is_contender(kv, mutex_prefix))
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// Where a semaphore's or shared contender stands.
#[derive(Debug, PartialEq, Eq)]
struct Standing {
    /// It holds a place.
    admitted: bool,
    /// The last exclusive contender ahead of it (its index): the one a
    /// shared contender waits for.
    last_exclusive: Option<usize>,
}

/// Judges the contenders ahead of ours (their kind and mode, in queue
/// order) for a contender of `kind` asking for `mode`: admitted when fewer
/// than N are ahead (a semaphore), or no exclusive one is (shared). `Err`:
/// the mode of a contender ahead that asked for another (a semaphore of
/// another N, or a lock among a semaphore's holders).
fn judge_ahead(
    ahead: &[(Kind, Mode)],
    kind: Kind,
    mode: Mode,
) -> std::result::Result<Standing, Mode> {
    let mut last_exclusive = None;
    for (i, &(k, m)) in ahead.iter().enumerate() {
        if m != mode {
            return Err(m);
        }
        if k == Kind::Exclusive {
            last_exclusive = Some(i);
        }
    }
    let admitted = match mode {
        Mode::Semaphore(n) => ahead.len() < n as usize,
        Mode::Lock => kind == Kind::Shared && last_exclusive.is_none(),
    };
    Ok(Standing {
        admitted,
        last_exclusive,
    })
}

impl EtcdStore {
    /// Every holder of a semaphore or of a lock held shared, and how many
    /// wait: the contenders in queue order, holding while admitted (the
    /// first N of a semaphore; the shared ones before the first exclusive
    /// one, or that one alone when it is first).
    pub(super) async fn describe_holders(&self, name: &str, info: &mut LockInfo) -> Result<()> {
        let contenders = self.contenders(name).await?;
        let all: Vec<&KeyValue> = contenders.iter().collect();
        let holding = holders_of(&all);
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
            info.holders.push(HolderInfo {
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
}

/// The contenders (in queue order) that hold a place: the first N of a
/// semaphore; the shared ones before the first exclusive one, or that one
/// alone when it is first.
fn holders_of<'k>(all: &[&'k KeyValue]) -> Vec<&'k KeyValue> {
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
    holding
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: (Kind, Mode) = (Kind::Shared, Mode::Lock);
    const EXCLUSIVE: (Kind, Mode) = (Kind::Exclusive, Mode::Lock);

    #[test]
    fn a_semaphore_contender_is_admitted_while_fewer_than_n_are_ahead() {
        let of_2 = (Kind::Shared, Mode::Semaphore(2));
        let judge = |ahead: &[(Kind, Mode)]| judge_ahead(ahead, Kind::Shared, Mode::Semaphore(2));
        assert!(judge(&[]).unwrap().admitted);
        assert!(judge(&[of_2]).unwrap().admitted);
        assert!(!judge(&[of_2, of_2]).unwrap().admitted);
        // Another N, or a plain lock, ahead: a usage error naming theirs.
        let of_3 = (Kind::Shared, Mode::Semaphore(3));
        assert_eq!(judge(&[of_2, of_3]), Err(Mode::Semaphore(3)));
        assert_eq!(judge(&[EXCLUSIVE]), Err(Mode::Lock));
    }

    #[test]
    fn a_shared_contender_waits_for_the_last_exclusive_one_ahead() {
        let judge = |ahead: &[(Kind, Mode)]| judge_ahead(ahead, Kind::Shared, Mode::Lock);
        let free = Standing {
            admitted: true,
            last_exclusive: None,
        };
        assert_eq!(judge(&[SHARED, SHARED]), Ok(free));
        let behind = |i| Standing {
            admitted: false,
            last_exclusive: Some(i),
        };
        assert_eq!(judge(&[EXCLUSIVE, SHARED]), Ok(behind(0)));
        assert_eq!(judge(&[SHARED, EXCLUSIVE, SHARED]), Ok(behind(1)));
        assert_eq!(judge(&[EXCLUSIVE, SHARED, EXCLUSIVE]), Ok(behind(2)));
        let semaphore = (Kind::Shared, Mode::Semaphore(2));
        assert_eq!(judge(&[semaphore]), Err(Mode::Semaphore(2)));
    }
}
