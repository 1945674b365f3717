//! The single-holder acquire loop: [`next`] decides each step on the record
//! last seen, [`Acquiring`] carries it out (DESIGN.md, "Acquire").

use std::task::Poll;
use std::time::Duration;

use super::backend::{Cancel, CasStore, Outcome, is_held_at, next};
use super::multi::{self, release_anywhere};
use crate::boottime::BootInstant as Instant;
use crate::error::{Error, Result};
use crate::protocol::expiry::{Anchor, SKEW_TOLERANCE_MS, Stamp, clock_deadline};
use crate::protocol::grant::Next;
use crate::protocol::slots::{Kind, Mode};
use crate::request::{AcquireRequest, Lease};
use crate::store::poll_pause;

/// Takes the lock as `req` says: the whole acquire of a compare-and-swap
/// store. [`next`] decides each step; [`Acquiring`] carries it out.
pub async fn acquire<'c, S: CasStore + ?Sized>(
    s: &S,
    req: &AcquireRequest,
    cancel: &mut Cancel<'c>,
) -> Result<Lease> {
    crate::request::validate_name(&req.name)?;
    let mut a = Acquiring {
        s,
        req,
        give_up: req.wait.map(|w| Instant::now() + w),
        cancel,
        contacted: false,
        quick_retries: 0,
        unconfirmed: Vec::new(),
        seen: None,
        anchor: None,
    };
    loop {
        let lower = a.lower();
        let step = next(s, a.seen.as_ref(), &a.unconfirmed, lower);
        let rec = a.seen.as_ref().and_then(|r| r.as_ref());
        let table = rec.and_then(S::slots_of);
        // Held by one of ours: wait in a queue, in order, not by polling.
        let queue = rec.is_some_and(|r| is_held_at(s, r, lower) && S::as_table(r).is_some());
        if (table.is_some() || queue) && !matches!(step, Next::GiveBack(_)) {
            // The name keeps a holder table (shared holders, a semaphore, or
            // a queue), or will once we queue behind its holder: take it as
            // an exclusive holder through the table, for what is left of
            // the wait (grants of ours nobody was told of are given back
            // first).
            let mut rest = req.clone();
            rest.wait = a
                .give_up
                .map(|g| g.saturating_duration_since(Instant::now()));
            return multi::acquire(s, &rest, Kind::Exclusive, Mode::Lock, a.cancel).await;
        }
        match step {
            Next::GiveBack(id) => a.give_back_one(id).await?,
            Next::Wait => {
                a.wait().await?;
                a.read_again().await?;
            }
            Next::Grant => {
                let lease_id = uuid::Uuid::new_v4().to_string();
                let st = Stamp::now(s.clock(), req.lease);
                let answer = s.grant(req, &lease_id, a.seen.as_ref(), &st).await;
                if let Some(done) = a.after_grant(answer, lease_id, st).await {
                    return done;
                }
            }
        }
    }
}

/// One acquire in progress: what it has seen and what it must remember.
struct Acquiring<'a, 'c, S: CasStore + ?Sized> {
    s: &'a S,
    req: &'a AcquireRequest,
    /// When the wait runs out (`None`: never).
    give_up: Option<Instant>,
    cancel: &'a mut Cancel<'c>,
    /// The store has answered at least once (if only with a record).
    contacted: bool,
    /// Grants lost to a race in a row, retried without a pause.
    quick_retries: u32,
    /// Lease ids of grant writes whose call failed: each may have landed
    /// with its answer lost. Nobody was told of them.
    unconfirmed: Vec<String>,
    /// The record as last seen: `None` before anything is known, which
    /// makes the first attempt the blind grant.
    seen: Option<Option<S::Record>>,
    /// Our own view of the store's clock, from its first calibrated
    /// reading: a jump ahead does not expire a lease early.
    anchor: Option<Anchor>,
}

impl<S: CasStore + ?Sized> Acquiring<'_, '_, S> {
    /// The earliest the store's clock reads now, as this waiter judges
    /// expiry ([`Anchor::lower`]; the clock's own bound until calibrated).
    fn lower(&mut self) -> i64 {
        let clock = self.s.clock();
        let lo = clock.lower_ms();
        // Anchored once this acquire has had an answer (the record seen).
        if !clock.is_calibrated() || self.seen.is_none() {
            return lo;
        }
        let (wall, jumps) = (crate::clock::local_wall_ms(), clock.forward_jumps());
        match &mut self.anchor {
            Some(a) => a.lower(lo, Instant::now(), wall, jumps),
            None => {
                self.anchor = Some(Anchor::new(lo, Instant::now(), wall, jumps));
                lo
            }
        }
    }

    fn out_of_time(&self) -> bool {
        self.give_up.is_some_and(|g| Instant::now() >= g)
    }

    /// Sleeps `d`, unless a signal comes first.
    async fn pause(&mut self, d: Duration) -> Result<()> {
        tokio::select! {
            // Biased: a signal wins over a pause that ends at the same poll
            // (and a simulated run is reproducible).
            biased;
            sig = &mut self.cancel => Err(Error::Interrupted(sig)),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// An earlier grant of ours landed although its call failed: give it
    /// back (nobody believes in it) and take the lock anew.
    async fn give_back_one(&mut self, id: String) -> Result<()> {
        tracing::info!("an earlier grant attempt landed although it failed; giving it back");
        match release_anywhere(self.s, &self.req.name, &id).await {
            Ok(()) | Err(Error::NotHeld { .. }) => {
                self.unconfirmed.retain(|u| u != &id);
                self.seen = None;
                Ok(())
            }
            // Not given back: it stays ours to give back, after a pause.
            // (Forgetting it would leave a grant that nobody knows of
            // holding the lock until its expiry, which a clock far ahead
            // may have put hours away.)
            Err(e) if self.out_of_time() => Err(e),
            Err(e) => {
                crate::store::warn_retrying(&e.to_string(), "still waiting");
                self.pause(poll_pause()).await
            }
        }
    }

    /// The lock is held: says who holds it, gives up if the wait is over,
    /// else pauses one poll (or what is left of the wait).
    async fn wait(&mut self) -> Result<()> {
        let rec = self.seen.as_ref().and_then(|r| r.as_ref());
        let info = self.s.info(&self.req.name, rec);
        if self.out_of_time() {
            return Err(Error::NotAcquired {
                name: self.req.name.clone(),
                holder: Some(Box::new(info)),
            });
        }
        if let Some(cb) = &self.req.on_wait {
            cb(&info);
        }
        let pause = match self.give_up {
            Some(g) => poll_pause().min(g.saturating_duration_since(Instant::now())),
            None => poll_pause(),
        };
        self.pause(pause).await
    }

    /// After a wait: reads the record again. An unavailable store is
    /// waited out once it has answered before.
    async fn read_again(&mut self) -> Result<()> {
        self.quick_retries = 0;
        match self.s.read(&self.req.name).await {
            Ok(rec) => {
                self.contacted = true;
                self.seen = Some(rec);
                Ok(())
            }
            Err(Error::Unavailable(msg)) if self.contacted => {
                crate::store::warn_retrying(&msg, "still waiting");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// What a grant write's answer means; `Some` ends the acquire.
    async fn after_grant(
        &mut self,
        answer: Result<Outcome<S::Record>>,
        lease_id: String,
        st: Stamp,
    ) -> Option<Result<Lease>> {
        let (s, name) = (self.s, &self.req.name);
        match answer {
            Ok(Outcome::Granted(fence)) => self.confirm(lease_id, fence, st).await,
            // The store asks for another attempt at once (a guess it
            // corrected, such as DynamoDB's high-water mark).
            Ok(Outcome::Retry) => None,
            Ok(Outcome::Lost(rec)) => {
                self.contacted = true;
                self.quick_retries += 1;
                if self.quick_retries > 4 {
                    // Several immediate retries lost races: let the winner settle.
                    self.quick_retries = 0;
                    if let Err(e) = self.pause(poll_pause()).await {
                        return Some(Err(e));
                    }
                }
                self.seen = Some(rec);
                None
            }
            Err(Error::Unavailable(msg))
                if (self.contacted || s.clock().is_calibrated()) && !self.out_of_time() =>
            {
                // The store answered (if only with errors): the write may
                // have landed. Read, and recognise it if it did.
                self.unconfirmed.push(lease_id);
                crate::store::warn_retrying(&msg, "retrying");
                if let Err(e) = self.pause(poll_pause()).await {
                    return Some(Err(e));
                }
                // Re-read before writing again: the state may have moved.
                if let Ok(rec) = s.read(name).await {
                    self.seen = Some(rec);
                }
                None
            }
            Err(e) => {
                if matches!(e, Error::Unavailable(_)) && s.clock().is_calibrated() {
                    self.unconfirmed.push(lease_id);
                }
                give_back(s, name, &self.unconfirmed).await;
                Some(Err(e))
            }
        }
    }

    /// A grant write landed: confirm it on the store's clock ([`finish`]),
    /// unless the acquire was cancelled meanwhile. `Some` ends the acquire.
    async fn confirm(
        &mut self,
        lease_id: String,
        fence: Option<u64>,
        st: Stamp,
    ) -> Option<Result<Lease>> {
        let (s, name) = (self.s, &self.req.name);
        if let Poll::Ready(sig) = futures_util::poll!(&mut self.cancel) {
            // A grant raced with the signal: give it back.
            let _ = release_anywhere(s, name, &lease_id).await;
            return Some(Err(Error::Interrupted(sig)));
        }
        match finish(s, name, lease_id.clone(), fence, self.req.lease, st).await {
            Err(Error::NotHeld { .. }) => {
                // The write was stamped on this machine's clock, which
                // was off; before it could be rewritten on the store's
                // clock another worker judged it expired and took it.
                // Nothing was reported: go on waiting. (Or a waiter
                // moved it into a holder table: then it is found
                // there and given back.)
                tracing::info!("the grant was taken over before it was confirmed; waiting");
                self.unconfirmed.push(lease_id);
                self.contacted = true;
                match s.read(name).await {
                    Ok(rec) => self.seen = Some(rec),
                    Err(Error::Unavailable(msg)) => {
                        crate::store::warn_retrying(&msg, "still waiting")
                    }
                    Err(e) => return Some(Err(e)),
                }
                None
            }
            Err(e) => {
                // The grant landed but could not be rewritten on the
                // store's clock: nobody was told of it; give it back.
                self.unconfirmed.push(lease_id);
                give_back(s, name, &self.unconfirmed).await;
                Some(Err(e))
            }
            ok => Some(ok),
        }
    }
}

/// Before an acquire gives up with an error: releases the grants whose calls
/// failed but may have landed, so that none of them holds the lock, unseen,
/// until its lease expires. Bounded to 2 s; a release of a grant that never
/// landed is refused by its condition and changes nothing.
async fn give_back<S: CasStore + ?Sized>(s: &S, name: &str, unconfirmed: &[String]) {
    if unconfirmed.is_empty() {
        return;
    }
    let all = async {
        for id in unconfirmed {
            match release_anywhere(s, name, id).await {
                Ok(()) => tracing::info!("gave back a grant whose answer was lost"),
                Err(e) => tracing::debug!(error = %e, "no grant to give back"),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), all).await;
}

/// Turns a successful write into a lease. When the write was stamped with
/// the local clock (first request of the process) and the response showed
/// that clock to be off, rewrites the lease on the store's clock at once,
/// before anyone is told the lock is held; if someone took the lease over
/// meanwhile (it looked expired), that is [`Error::NotHeld`] and no grant.
///
/// `st.expires_ms` must be the expiry the store holds (see
/// [`Stamp::as_stored`]): the deadline is derived from it.
pub async fn finish<S: CasStore + ?Sized>(
    s: &S,
    name: &str,
    lease_id: String,
    fence: Option<u64>,
    lease: Duration,
    st: Stamp,
) -> Result<Lease> {
    let clock = s.clock();
    let mut granted = Lease {
        name: name.to_string(),
        lease_id,
        fence,
        duration: lease,
        acquired_at_ms: Some(st.shown_ms),
        expires_at_ms: st.expires_ms,
        deadline: st.sent,
        slotted: false,
    };
    if !st.calibrated {
        if let Some(skew) = clock.local_skew_ms(st.sent, st.sent_wall_ms) {
            if skew.abs() > SKEW_TOLERANCE_MS {
                tracing::warn!(
                    skew_ms = skew,
                    "this machine's clock is {}s off the store's; the lease was rewritten on the store's clock",
                    skew / 1000
                );
                let next = uuid::Uuid::new_v4().to_string();
                let mut renewed = s.renew_to(&granted, lease, &next).await?;
                renewed.acquired_at_ms = Some(clock.lower_ms());
                return Ok(renewed);
            }
        }
    }
    granted.deadline = clock_deadline(clock, st.expires_ms, st.sent, lease);
    Ok(granted)
}
