//! Waiting in the queue: what every way of waiting shares ([`Waiter`]:
//! keeping our leases alive, the signal and the time limit that end the
//! wait, watching for the deletion that may let us in), and waiting for a
//! plain lock, until our key heads the queue. Semaphores and shared locks
//! wait in `slots`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnResponse, WatchOptions,
};
use futures_util::future::Fuse;
use tokio::sync::mpsc;

use super::keys::{Holder, first_kv, header_revision, owner_opts};
use super::members::{Failed, error_chain, is_lease_gone};
use super::{ATTEMPT_MAX, EtcdStore, WATCH_CHECK};
use crate::boottime::{self, BootInstant as Instant};
use crate::clock::local_wall_ms;
use crate::error::{Error, Result};
use crate::info::LockInfo;
use crate::request::{AcquireRequest, Lease};
use crate::store::BoxFuture;
use crate::store::poll_pause;

/// The signal that interrupts an acquire (its number), once it comes.
pub(super) type Cancel<'a> = Fuse<BoxFuture<'a, i32>>;

/// The etcd lease an acquire granted.
pub(super) struct Granted {
    pub(super) id: i64,
    /// The TTL the cluster granted, in seconds.
    pub(super) ttl: i64,
    /// When the last grant or keep-alive that succeeded was sent.
    pub(super) refreshed: Arc<Mutex<Instant>>,
}

/// How one pass of [`EtcdStore::acquire_once`] ended.
pub(super) enum Pass {
    Done(Result<Lease>),
    /// Our key vanished while we waited (our lease expired, e.g. while the
    /// cluster was unreachable): queue again.
    Requeue,
}

/// Our key in the queue, as the waiting ([`Waiter`]) needs it.
pub(super) struct Queued<'a> {
    pub(super) key: &'a str,
    /// The key's create revision: its place in the queue.
    pub(super) rev: i64,
    /// The lease the lock is held on once taken.
    pub(super) lease: &'a Granted,
    /// The lease the key lives on while queued (`lease` itself for a
    /// short lease).
    pub(super) queue_lease: &'a Granted,
    pub(super) holder: &'a Holder,
}

/// Deadline, expiry and duration of a lease whose TTL the cluster reported
/// for a grant or keep-alive sent at `sent`.
pub(super) fn timing(sent: Instant, ttl_s: i64) -> (Instant, i64, Duration) {
    let ttl = Duration::from_secs(ttl_s.max(0) as u64);
    let deadline = sent + ttl;
    let left = deadline.saturating_duration_since(Instant::now());
    (deadline, local_wall_ms() + left.as_millis() as i64, ttl)
}

/// The lock was held (or waited for) past `give_up`.
pub(super) fn not_acquired(name: &str, info: &Option<LockInfo>) -> Pass {
    Pass::Done(Err(Error::NotAcquired {
        name: name.to_string(),
        holder: info.clone().map(Box::new),
    }))
}

/// A contender waiting in the queue, and what it needs to wait.
pub(super) struct Waiter<'a, 'c> {
    pub(super) store: &'a EtcdStore,
    pub(super) req: &'a AcquireRequest,
    cancel: &'a mut Cancel<'c>,
    give_up: Option<Instant>,
    pub(super) me: Queued<'a>,
    /// `PREFIX NAME /`: where the contenders queue.
    pub(super) mp: String,
    /// The last holder seen, for the error when the time is up.
    last_info: Option<LockInfo>,
    /// Keep our leases alive while we wait (stop when dropped).
    keepers: Vec<AbortOnDrop>,
    /// Says when one of our leases is gone: our place in the queue with it.
    lost: mpsc::Receiver<()>,
}

/// What a request sent while waiting came to.
pub(super) enum Sent {
    Answer(TxnResponse),
    /// One of our leases is gone.
    LeaseGone,
    /// No answer (a warning said so): after a pause, look again.
    Again,
}

// `Err(pass)`: the wait ends so. A pass goes back up by value anyway, so
// its size in a `Result` costs nothing.
#[allow(clippy::result_large_err)]
impl<'a, 'c> Waiter<'a, 'c> {
    /// Starts keeping our leases alive: the wait has begun.
    pub(super) fn new(
        store: &'a EtcdStore,
        req: &'a AcquireRequest,
        cancel: &'a mut Cancel<'c>,
        give_up: Option<Instant>,
        me: Queued<'a>,
        last_info: Option<LockInfo>,
    ) -> Self {
        let (lost_tx, lost) = mpsc::channel::<()>(2);
        let mut keepers = vec![store.keeper(me.lease, lost_tx.clone())];
        if me.queue_lease.id != me.lease.id {
            keepers.push(store.keeper(me.queue_lease, lost_tx));
        }
        Waiter {
            mp: store.mutex_prefix(&req.name),
            store,
            req,
            cancel,
            give_up,
            me,
            last_info,
            keepers,
            lost,
        }
    }

    /// Waits, queued, until our key heads the queue, then takes the lock
    /// (moves the key to our lease and stamps the time). Watches the key
    /// just before ours, and keeps both leases alive meanwhile: either one
    /// gone means our place in the queue is gone.
    pub(super) async fn wait_for_head(mut self) -> Pass {
        let req = self.req;
        let name = &req.name;
        loop {
            let stamped = self.me.holder.stamped();
            let txn = self.head_txn(&stamped);
            let resp = match self.send(&txn).await {
                Ok(Sent::Answer(r)) => r,
                Ok(Sent::LeaseGone) => {
                    tracing::warn!("our lease on {name} expired while waiting; queueing again");
                    return Pass::Requeue;
                }
                Ok(Sent::Again) => continue,
                Err(end) => return end,
            };
            let ops = resp.op_responses();
            let head = judge_head(
                resp.succeeded(),
                header_revision(&resp),
                first_kv(ops.first()).is_some(),
                first_kv(ops.get(1)).map(|kv| kv.key()),
            );
            let (pred, from) = match head {
                Head::Holder(rev) => return self.grant(rev, &stamped).await,
                Head::Requeue => {
                    tracing::warn!("our place in the queue for {name} expired; queueing again");
                    return Pass::Requeue;
                }
                Head::WaitFor { key, from } => (Some(key), from),
                Head::LookAgain => (None, 0),
            };
            if let Some(owner) = first_kv(ops.get(2)) {
                let info = self.store.info_of(name, owner, None);
                self.saw(info);
            }
            if let Err(end) = self.check_time() {
                return end;
            }
            let Some(pred) = pred else {
                // Nobody before us, yet not at the head: cannot happen in
                // one transaction; look again shortly.
                tokio::time::sleep(poll_pause()).await;
                continue;
            };
            // Wait for the key before ours to go.
            if let Err(end) = self.await_deletion(&pred, from, false).await {
                return end;
            }
        }
    }

    /// At the head (every contender's create revision is ours or later)
    /// and still queued: we hold it; move the key to our lease as
    /// `stamped`. Otherwise read our key, who is just before us, and who
    /// holds it.
    fn head_txn(&self, stamped: &Holder) -> Txn {
        let my_rev = self.me.rev;
        let before = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(my_rev - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1);
        Txn::new()
            .when([
                self.still_queued(),
                Compare::create_revision(self.mp.clone(), CompareOp::Greater, my_rev - 1)
                    .with_prefix(),
            ])
            .and_then([self.put_on_lease(stamped)])
            .or_else([
                TxnOp::get(self.me.key, Some(GetOptions::new().with_keys_only())),
                TxnOp::get(self.mp.clone(), Some(before)),
                TxnOp::get(self.mp.clone(), Some(owner_opts())),
            ])
    }

    /// The condition that our key is still queued, in its place.
    pub(super) fn still_queued(&self) -> Compare {
        Compare::create_revision(self.me.key, CompareOp::Equal, self.me.rev)
    }

    /// Puts our key again (which keeps its place), as `stamped`, on the
    /// lease the lock is held on.
    pub(super) fn put_on_lease(&self, stamped: &Holder) -> TxnOp {
        TxnOp::put(
            self.me.key,
            stamped.to_json(),
            Some(PutOptions::new().with_lease(self.me.lease.id)),
        )
    }

    /// Runs `f` unless the signal comes first.
    pub(super) async fn unless_interrupted<T>(
        &mut self,
        f: impl Future<Output = T>,
    ) -> Result<T, Pass> {
        tokio::select! {
            sig = &mut *self.cancel => Err(interrupted(sig)),
            r = f => Ok(r),
        }
    }

    /// Sends `txn` (a read, perhaps a take), unless the signal comes first.
    /// When no member answers, says so and looks again after a pause.
    /// `Err`: the wait ends so.
    pub(super) async fn send(&mut self, txn: &Txn) -> Result<Sent, Pass> {
        let store = self.store;
        match self.unless_interrupted(store.txn(txn)).await? {
            Ok(r) => Ok(Sent::Answer(r)),
            Err(Failed::Answer(e)) if is_lease_gone(&e) => Ok(Sent::LeaseGone),
            Err(e) => match store.error("read the lock", e) {
                e @ Error::Unavailable(_) => {
                    tracing::warn!("{e}; still waiting");
                    self.check_time()?;
                    self.pause().await?;
                    Ok(Sent::Again)
                }
                e => Err(Pass::Done(Err(e))),
            },
        }
    }

    /// A short pause before looking again, unless the signal or the time
    /// limit comes first.
    async fn pause(&mut self) -> Result<(), Pass> {
        tokio::select! {
            sig = &mut *self.cancel => Err(interrupted(sig)),
            _ = give_up_at(self.give_up) => Err(not_acquired(&self.req.name, &self.last_info)),
            _ = tokio::time::sleep(poll_pause()) => Ok(()),
        }
    }

    /// Ends the wait once the time to wait is up.
    pub(super) fn check_time(&self) -> Result<(), Pass> {
        if self.give_up.is_some_and(|g| Instant::now() >= g) {
            return Err(not_acquired(&self.req.name, &self.last_info));
        }
        Ok(())
    }

    /// We wait for the holder `info`: say so.
    pub(super) fn saw(&mut self, info: LockInfo) {
        if let Some(cb) = &self.req.on_wait {
            cb(&info);
        }
        self.last_info = Some(info);
    }

    /// Waits until `key` (any key under it when `prefix`) is deleted at or
    /// after revision `from`: then the caller looks again. Also returns
    /// when the watch failed (after a pause). `Err`: the wait ends so (the
    /// signal, the time limit, or one of our leases gone).
    pub(super) async fn await_deletion(
        &mut self,
        key: &[u8],
        from: i64,
        prefix: bool,
    ) -> Result<(), Pass> {
        let req = self.req;
        let name = &req.name;
        tokio::select! {
            sig = &mut *self.cancel => return Err(interrupted(sig)),
            _ = give_up_at(self.give_up) => return Err(not_acquired(name, &self.last_info)),
            Some(()) = self.lost.recv() => {
                tracing::warn!("our place in the queue for {name} expired; queueing again");
                return Err(Pass::Requeue);
            }
            r = self.store.watch_deletes(key, from, prefix) => {
                if let Err(e) = r {
                    tracing::warn!("watching the lock: {e}; looking again");
                    self.pause().await?;
                }
            }
        }
        Ok(())
    }

    /// We hold the lock, with token `rev`: our key is on our lease, as
    /// `stamped`. Stops keeping the leases alive and hands the lease out.
    pub(super) async fn grant(&mut self, rev: i64, stamped: &Holder) -> Pass {
        self.keepers.clear();
        let me = &self.me;
        self.store
            .granted(self.req, self.cancel, me.lease, rev, stamped, true)
            .await
    }
}

/// The wait was interrupted by signal `sig`.
fn interrupted(sig: i32) -> Pass {
    Pass::Done(Err(Error::Interrupted(sig)))
}

/// Comes when the time to wait is up (never, with no limit).
async fn give_up_at(give_up: Option<Instant>) {
    match give_up {
        Some(g) => boottime::sleep_until(g).await,
        None => std::future::pending().await,
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EtcdStore {
    /// Returns once `key` (any key under `key` as a prefix when `prefix`)
    /// is deleted at or after revision `from`, or an error when the watch
    /// cannot go on: then the caller looks again, and watches again on
    /// another member. Every [`WATCH_CHECK`] the member is asked for a
    /// progress report; one that has not answered by the next check is
    /// frozen or cut off, and is left.
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
    fn keeper(&self, lease: &Granted, lost: mpsc::Sender<()>) -> AbortOnDrop {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
