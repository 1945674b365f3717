//! Acquire, renew and release for names that more than one may hold: a
//! semaphore (`--max-holders N`) or a lock taken `--shared`. The table of
//! holders and waiters ([`Slots`]) lives in the name's one record and is
//! changed only by compare-and-swap on the version read, like the
//! single-holder record ([`super::cas`]):
//!
//! ```text
//!   read ── our id among the holders ──► granted (an answer was lost)
//!     │
//!     ▼
//!   admit? ── yes ──► write the table with us as a holder ──► granted
//!     │ (lost the race: read again)
//!     └── wait ──► keep our ticket in the queue ──► sleep ──► read …
//! ```
//!
//! A record written by a client that knows no holder tables (a plain lock
//! of ours, awsflock 0.2.0) is judged as one exclusive holder, and taken
//! over only when it is free, on its exact version. DESIGN.md ("Semaphores
//! and shared locks") gives every rule and failure case.

use std::time::Duration;

use crate::boottime::BootInstant as Instant;

use super::backend::{self as cas, Cancel, CasStore};
use super::line::{InLine, View};
use crate::error::{Error, Result};
use crate::protocol::expiry::Anchor;
use crate::protocol::slots::{Applicant, Kind, Mode, Now, Refusal, Slots};
pub use crate::protocol::slots::{mismatch, wanted};
use crate::request::{AcquireRequest, Lease};
use crate::store::poll_pause;

/// How long a waiter's ticket lasts unless its waiter refreshes it: a dead
/// waiter leaves the queue this long (plus the margin) after its last poll.
pub const TICKET_LIFE_MS: i64 = 15_000;

/// A ticket is refreshed when less than this is left of it: about one
/// write per waiter every 7.5 s.
pub const TICKET_REFRESH_MS: i64 = TICKET_LIFE_MS / 2;

/// How many lost races a renewal or release rides out before it reports
/// the store as too busy.
const MAX_RACES: u32 = 30;

/// One write of a holder's expiry: when it was sent, and the expiry it
/// carries on the table's clock.
#[derive(Clone, Copy)]
struct Sent {
    at: Instant,
    now: Now,
    expires_ms: i64,
}

impl Sent {
    fn now<S: CasStore + ?Sized>(s: &S, lease: Duration) -> Sent {
        let now = s.table_now();
        Sent {
            at: Instant::now(),
            now,
            expires_ms: now.hi.saturating_add(lease.as_millis() as i64),
        }
    }

    /// This write, recognised as landed by an earlier attempt: the lease
    /// ends when the table says.
    fn as_stored(self, expires_ms: i64) -> Sent {
        Sent { expires_ms, ..self }
    }
}

/// What the record read says, for a client of holder tables.
enum Table {
    /// A table we may change (absent and free records become empty ones).
    Slots(Slots),
    /// A live single-holder record: one exclusive holder we cannot queue
    /// behind in its record (awsflock 0.2.0's).
    Plain,
}

async fn table_of<S: CasStore + ?Sized>(
    s: &S,
    name: &str,
    rec: Option<&S::Record>,
    mode: Mode,
    lower: i64,
) -> Result<Table> {
    match rec {
        None => Ok(Table::Slots(Slots::free(mode, s.fence_floor(name).await?))),
        Some(r) => match S::slots_of(r) {
            Some(t) => Ok(Table::Slots(t)),
            // Held by one of ours: its holder becomes the table's.
            None if cas::is_held_at(s, r, lower) => {
                Ok(S::as_table(r).map_or(Table::Plain, Table::Slots))
            }
            None => {
                let next = match S::last_fence(r) {
                    Some((f, limit)) => (f + 1, limit),
                    None => s.fence_floor(name).await?,
                };
                Ok(Table::Slots(Slots::free(mode, next)))
            }
        },
    }
}

/// Takes `req.name` as a `kind` holder of a name in `mode`, waiting in the
/// name's queue as the request says.
pub async fn acquire<S: CasStore + ?Sized>(
    s: &S,
    req: &AcquireRequest,
    kind: Kind,
    mode: Mode,
    cancel: &mut Cancel<'_>,
) -> Result<Lease> {
    let mut w = Waiter {
        s,
        req,
        kind,
        mode,
        id: uuid::Uuid::new_v4().to_string(),
        give_up: req.wait.map(|w| Instant::now() + w),
        cancel,
        maybe: None,
        contacted: false,
        races: 0,
        line: InLine::default(),
        anchor: None,
    };
    loop {
        if let Some(lease) = w.round().await? {
            return Ok(lease);
        }
    }
}

/// One waiter of a holder table: what it must remember between rounds.
struct Waiter<'a, 'c, S: CasStore + ?Sized> {
    s: &'a S,
    req: &'a AcquireRequest,
    kind: Kind,
    mode: Mode,
    /// Our ticket's id, and our lease id once admitted.
    id: String,
    give_up: Option<Instant>,
    cancel: &'a mut Cancel<'c>,
    /// The stamp of the last grant attempt whose answer was lost: it may
    /// have landed, and the next read recognises it by our id.
    maybe: Option<Sent>,
    /// The store has answered at least once.
    contacted: bool,
    /// Writes of the table lost to a race.
    races: u32,
    /// Our place in the store's waiting line, if it keeps one.
    line: InLine,
    /// Our own view of the table's clock (see [`Anchor`]).
    anchor: Option<Anchor>,
}

/// What one attempt to be admitted came to.
enum Admit {
    Granted(Lease),
    /// Read again at once (or after a pause already taken).
    Again,
    /// Not admitted: keep our place and wait.
    Wait,
}

impl<S: CasStore + ?Sized> Waiter<'_, '_, S> {
    /// The table's clock now, its lower bound as this waiter judges expiry
    /// ([`Anchor::lower`]: a jump of the store's clock ahead does not
    /// expire a holder or an entry early).
    fn now(&mut self) -> Now {
        let mut now = self.s.table_now();
        if self.s.clock().is_calibrated() {
            let at = Instant::now();
            let (wall, jumps) = (
                crate::clock::local_wall_ms(),
                self.s.clock().forward_jumps(),
            );
            match &mut self.anchor {
                Some(a) => now.lo = a.lower(now.lo, at, wall, jumps),
                None => self.anchor = Some(Anchor::new(now.lo, at, wall, jumps)),
            }
        }
        now
    }

    fn out_of_time(&self) -> bool {
        self.give_up.is_some_and(|g| Instant::now() >= g)
    }

    fn name(&self) -> &str {
        &self.req.name
    }

    /// Read, judge, and try to be admitted or keep our place: `Some` once
    /// granted, `None` to go round again.
    async fn round(&mut self) -> Result<Option<Lease>> {
        let Some(rec) = self.read().await? else {
            return Ok(None);
        };
        let (s, name) = (self.s, self.req.name.as_str());
        let now = self.now();
        let mut table = match table_of(s, name, rec.as_ref(), self.mode, now.lo).await? {
            Table::Slots(t) => t,
            Table::Plain => {
                if let Mode::Semaphore(_) = self.mode {
                    return Err(mismatch(name, Mode::Lock, self.mode));
                }
                let info = cas::info_of(s, name, rec.as_ref());
                let give_up = self.give_up;
                let out_of_time = move || give_up.is_some_and(|g| Instant::now() >= g);
                let r = wait_turn(self.req, self.cancel, &info, poll_pause(), &out_of_time).await;
                if r.is_err() {
                    self.give_back(false).await;
                }
                return r.map(|()| None);
            }
        };
        if let Some(h) = table.holders.iter().find(|h| h.lease_id == self.id) {
            // An earlier attempt landed; its answer was lost.
            let st = self.maybe.unwrap_or_else(|| Sent::now(s, self.req.lease));
            let lease = granted(s, self.req, &self.id, h.fence, st.as_stored(h.expires_ms));
            self.leave_line().await;
            return Ok(Some(lease));
        }
        if table.fence_limit.is_some_and(|l| table.next_fence > l) {
            // The record's block of tokens is used up: reserve another.
            let (first, limit) = s.fence_floor(name).await?;
            table.next_fence = table.next_fence.max(first);
            table.fence_limit = limit;
        }
        match self.try_admit(&table, rec.as_ref(), now).await? {
            Admit::Granted(lease) => Ok(Some(lease)),
            Admit::Again => Ok(None),
            Admit::Wait => self.keep_place_and_wait(&table, rec.as_ref(), now).await,
        }
    }

    /// The record, or `None` after a pause for a store that is unavailable
    /// after having answered once (a waiter rides out an outage).
    async fn read(&mut self) -> Result<Option<Option<S::Record>>> {
        match self.s.read(self.name()).await {
            Ok(r) => {
                self.contacted = true;
                Ok(Some(r))
            }
            Err(Error::Unavailable(msg)) if self.contacted && !self.out_of_time() => {
                crate::store::warn_retrying(&msg, "still waiting");
                self.pause(self.maybe.is_some()).await?;
                Ok(None)
            }
            Err(e) => {
                self.give_back(self.maybe.is_some()).await;
                Err(e)
            }
        }
    }

    /// Writes the table with us admitted, if the table admits us now.
    async fn try_admit(
        &mut self,
        table: &Slots,
        rec: Option<&S::Record>,
        now: Now,
    ) -> Result<Admit> {
        let (s, req) = (self.s, self.req);
        let line_ahead = match s.line() {
            None => Vec::new(),
            Some(line) => {
                let (name, id) = (req.name.as_str(), self.id.as_str());
                let view = self
                    .line
                    .view(line, name, id, table, self.kind, self.mode, now);
                match view.await {
                    Ok(View::Try(ahead)) => ahead,
                    Ok(View::Wait) => return Ok(Admit::Wait),
                    Err(e) => return self.line_error(e).await,
                }
            }
        };
        let st = Sent::now(s, req.lease);
        let mut next = table.clone();
        let place = self.line.place.as_ref().map(|p| p.key.clone());
        let applicant = Applicant {
            id: &self.id,
            kind: self.kind,
            asked: self.mode,
            owner: &req.owner,
            reason: req.reason.as_deref(),
            expires_ms: st.expires_ms,
            place: place.as_deref(),
            line_ahead: &line_ahead,
        };
        let admitted = next.admit_applicant(&applicant, now);
        let fence = match admitted {
            Ok(fence) => fence,
            Err(Refusal::ModeMismatch { stored, asked }) => {
                self.give_back(self.maybe.is_some()).await;
                return Err(mismatch(self.name(), stored, asked));
            }
            Err(Refusal::Wait { .. }) => return Ok(Admit::Wait),
        };
        if let Some(h) = next.holders.iter_mut().find(|h| h.lease_id == self.id) {
            h.acquired_ms = st.now.lo;
            h.host = Some(gethostname::gethostname().to_string_lossy().into_owned());
            h.pid = Some(std::process::id());
            h.supervised = req.supervised;
            h.lease_ms = Some(req.lease.as_millis() as i64);
        }
        next.version = uuid::Uuid::new_v4().to_string();
        match s.write_slots(self.name(), rec, &next).await {
            Ok(Ok(())) => {
                if let std::task::Poll::Ready(sig) = futures_util::poll!(&mut *self.cancel) {
                    self.give_back(true).await;
                    return Err(Error::Interrupted(sig));
                }
                self.leave_line().await;
                Ok(Admit::Granted(granted(s, req, &self.id, fence, st)))
            }
            Ok(Err(_)) => {
                self.races += 1;
                if self.races.is_multiple_of(5) {
                    self.pause(self.maybe.is_some()).await?;
                }
                Ok(Admit::Again)
            }
            Err(Error::Unavailable(msg)) if !self.out_of_time() => {
                crate::store::warn_retrying(&msg, "retrying");
                self.maybe = Some(st);
                self.pause(true).await?;
                Ok(Admit::Again)
            }
            Err(e) => {
                self.give_back(true).await;
                Err(e)
            }
        }
    }

    /// Not admitted: keep our ticket in the queue fresh, then wait our turn.
    async fn keep_place_and_wait(
        &mut self,
        table: &Slots,
        rec: Option<&S::Record>,
        now: Now,
    ) -> Result<Option<Lease>> {
        let mut info = cas::info_of(self.s, self.name(), rec);
        if let Some(line) = self.s.line() {
            return self.wait_in_line(line, table, rec, info, now).await;
        }
        let ours = table.queue.iter().find(|t| t.id == self.id);
        info.waiting = table.queue.len();
        let stale = ours.is_none_or(|t| t.expires_ms - now.hi < TICKET_REFRESH_MS);
        if !self.out_of_time() && stale && !self.enqueue(table, rec, now).await? {
            // Someone else wrote first: read again at once.
            return Ok(None);
        }
        let soon = table.next_in_turn(&self.id, self.kind, now);
        let give_up = self.give_up;
        let out_of_time = move || give_up.is_some_and(|g| Instant::now() >= g);
        let pause = if soon {
            poll_pause()
        } else {
            Duration::from_millis(1000 + fastrand::u64(0..1000))
        };
        let r = wait_turn(self.req, self.cancel, &info, pause, &out_of_time).await;
        if r.is_err() {
            self.give_back(self.maybe.is_some()).await;
        }
        r.map(|()| None)
    }

    /// Writes our ticket into the queue (or refreshes it): `false` when
    /// someone else wrote the record first.
    async fn enqueue(&mut self, table: &Slots, rec: Option<&S::Record>, now: Now) -> Result<bool> {
        let mut queued = table.clone();
        if let Err(Refusal::ModeMismatch { stored, asked }) =
            queued.enqueue(&self.id, self.kind, self.mode, now.hi + TICKET_LIFE_MS, now)
        {
            self.give_back(self.maybe.is_some()).await;
            return Err(mismatch(self.name(), stored, asked));
        }
        queued.version = uuid::Uuid::new_v4().to_string();
        match self.s.write_slots(self.name(), rec, &queued).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => Ok(false),
            Err(Error::Unavailable(msg)) => {
                crate::store::warn_retrying(&msg, "still waiting");
                Ok(true)
            }
            Err(e) => {
                self.give_back(self.maybe.is_some()).await;
                Err(e)
            }
        }
    }

    /// Waits in the store's line: keeps our place, then pauses by our
    /// distance from the front.
    async fn wait_in_line(
        &mut self,
        line: &dyn super::backend::Line,
        table: &Slots,
        rec: Option<&S::Record>,
        mut info: crate::info::LockInfo,
        now: Now,
    ) -> Result<Option<Lease>> {
        let (name, id) = (self.req.name.as_str(), self.id.as_str());
        let unmarked = table.line.served.is_empty() && self.line.place.is_none();
        if rec.is_some() && unmarked && !self.out_of_time() {
            // A plain record of ours, held, or a table whose line has no
            // mark yet: first mark it as a table whose line starts now, so
            // that nobody takes it past the line when it is released and
            // every waiter knows how far it is from the front; then join
            // (read again at once either way).
            return match self.mark(line, table, rec).await {
                Ok(()) => Ok(None),
                Err(e) => self.line_error(e).await.map(|_| None),
            };
        }
        let pause = if self.out_of_time() {
            Duration::ZERO
        } else {
            match self
                .line
                .keep(line, name, id, self.kind, self.mode, &table.line, now)
                .await
            {
                Ok(pause) => pause,
                Err(e) => return self.line_error(e).await.map(|_| None),
            }
        };
        let ahead = self.line.distance(line, &table.line);
        info.waiting = info.waiting.max(ahead as usize + 1);
        info.position = self.line.place.as_ref().map(|_| ahead as usize + 1);
        let give_up = self.give_up;
        let out_of_time = move || give_up.is_some_and(|g| Instant::now() >= g);
        let r = wait_turn(self.req, self.cancel, &info, pause, &out_of_time).await;
        if r.is_err() {
            self.give_back(self.maybe.is_some()).await;
        }
        r.map(|()| None)
    }

    /// Writes the plain record `rec` (held by one of ours) as `table`, its
    /// line's mark at the line's current end: everyone who joins from now
    /// on is after it. Lost to a race (another waiter marked it, or the
    /// holder renewed or released): nothing to do.
    async fn mark(
        &mut self,
        line: &dyn super::backend::Line,
        table: &Slots,
        rec: Option<&S::Record>,
    ) -> Result<()> {
        let mut marked = table.clone();
        marked.line.served = line.end(&self.req.name).await?;
        marked.version = uuid::Uuid::new_v4().to_string();
        self.s.write_slots(&self.req.name, rec, &marked).await?.ok();
        Ok(())
    }

    /// A read or write of the line failed: an unavailable store is waited
    /// out like a failed read of the record; anything else ends the wait.
    async fn line_error(&mut self, e: Error) -> Result<Admit> {
        match e {
            Error::Unavailable(msg) if !self.out_of_time() => {
                crate::store::warn_retrying(&msg, "still waiting");
                self.pause(self.maybe.is_some()).await?;
                Ok(Admit::Again)
            }
            e => {
                self.give_back(self.maybe.is_some()).await;
                Err(e)
            }
        }
    }

    /// Leaves the line once admitted.
    async fn leave_line(&mut self) {
        if let Some(line) = self.s.line() {
            self.line.leave(line, &self.req.name).await;
        }
    }

    /// Leaves the line and the record's queue, and gives back a grant that
    /// may have landed unseen ([`give_back`]).
    async fn give_back(&mut self, maybe_granted: bool) {
        self.leave_line().await;
        give_back(self.s, &self.req.name, &self.id, maybe_granted).await;
    }

    async fn pause(&mut self, maybe: bool) -> Result<()> {
        let signal = tokio::select! {
            biased;
            sig = &mut *self.cancel => Some(sig),
            _ = tokio::time::sleep(poll_pause()) => None,
        };
        match signal {
            Some(sig) => {
                self.give_back(maybe).await;
                Err(Error::Interrupted(sig))
            }
            None => Ok(()),
        }
    }
}

/// One pause of a waiter, `pause` long (its caller chose it: by the record's
/// queue, [`Slots::next_in_turn`], or by its place in the store's line),
/// never past the end of the wait. Out of time: [`Error::NotAcquired`].
async fn wait_turn(
    req: &AcquireRequest,
    cancel: &mut Cancel<'_>,
    info: &crate::info::LockInfo,
    pause: Duration,
    out_of_time: &impl Fn() -> bool,
) -> Result<()> {
    if out_of_time() {
        return Err(Error::NotAcquired {
            name: req.name.clone(),
            holder: Some(Box::new(info.clone())),
        });
    }
    if let Some(cb) = &req.on_wait {
        cb(info);
    }
    let mut d = pause;
    if let Some(w) = req.wait {
        // Never sleep past the end of the wait.
        d = d.min(w);
    }
    tokio::select! {
        biased;
        sig = &mut *cancel => Err(Error::Interrupted(sig)),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

/// Leaves the queue and gives back a grant that may have landed unseen:
/// best effort, within 2 s (a ticket left behind lapses by itself).
async fn give_back<S: CasStore + ?Sized>(s: &S, name: &str, id: &str, maybe_granted: bool) {
    let all = async {
        for _ in 0..MAX_RACES {
            let Ok(rec) = s.read(name).await else { return };
            let Some(table) = rec.as_ref().and_then(S::slots_of) else {
                return;
            };
            let mut next = table.clone();
            let left = next.leave(id);
            let released = maybe_granted && next.release(id);
            if !left && !released {
                return;
            }
            next.version = uuid::Uuid::new_v4().to_string();
            match s.write_slots(name, rec.as_ref(), &next).await {
                Ok(Ok(())) => {
                    if released {
                        tracing::info!("gave back a grant whose answer was lost");
                    }
                    return;
                }
                Ok(Err(_)) => continue,
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), all).await;
}

fn granted<S: CasStore + ?Sized>(
    s: &S,
    req: &AcquireRequest,
    id: &str,
    fence: u64,
    st: Sent,
) -> Lease {
    Lease {
        name: req.name.clone(),
        lease_id: id.to_string(),
        fence: Some(fence),
        duration: req.lease,
        acquired_at_ms: Some(s.table_wall_ms(st.now.lo)),
        expires_at_ms: s.table_wall_ms(st.expires_ms),
        deadline: s.table_deadline(st.expires_ms, st.at, req.lease),
        slotted: true,
    }
}

/// Releases `lease_id` in the record, or, when the record refuses it, in
/// the table it may have been moved into.
pub async fn release_anywhere<S: CasStore + ?Sized>(
    s: &S,
    name: &str,
    lease_id: &str,
) -> Result<()> {
    match s.release_id(name, lease_id).await {
        Err(e @ Error::NotHeld { .. }) => match holds(s, name, &[lease_id]).await {
            Ok(true) => release(s, name, lease_id).await,
            Ok(false) => Err(e),
            Err(read) => Err(read),
        },
        other => other,
    }
}

/// Renews a holder of a table to `next_id` for `duration`.
pub async fn renew<S: CasStore + ?Sized>(
    s: &S,
    lease: &Lease,
    duration: Duration,
    next_id: &str,
) -> Result<Lease> {
    let name = lease.name.as_str();
    let not_held = |detail: &str| Error::NotHeld {
        name: name.to_string(),
        lease_id: lease.lease_id.clone(),
        detail: detail.to_string(),
    };
    for _ in 0..MAX_RACES {
        let rec = s.read(name).await?;
        let Some(table) = rec.as_ref().and_then(S::slots_of) else {
            return Err(not_held(" (the name has no holder table any more)"));
        };
        let st = Sent::now(s, duration);
        if let Some(h) = table.holders.iter().find(|h| h.lease_id == next_id) {
            // An earlier attempt of this renewal landed.
            return Ok(renewed(
                s,
                lease,
                next_id,
                duration,
                st.as_stored(h.expires_ms),
            ));
        }
        if let Some(by) = table.revoked(&lease.lease_id) {
            return Err(not_held(&crate::protocol::revoke::refusal_detail(by)));
        }
        let mut next = table.clone();
        if !next.renew(&lease.lease_id, next_id, st.expires_ms) {
            return Err(not_held(" (it is not among the holders)"));
        }
        let stored = match next.holders.iter_mut().find(|h| h.lease_id == next_id) {
            Some(h) => {
                h.lease_ms = Some(duration.as_millis() as i64);
                h.expires_ms
            }
            None => st.expires_ms,
        };
        next.version = uuid::Uuid::new_v4().to_string();
        match s.write_slots(name, rec.as_ref(), &next).await? {
            Ok(()) => {
                let mut done = renewed(s, lease, next_id, duration, st.as_stored(stored));
                if stored > st.expires_ms {
                    // The table kept a later expiry than this renewal asked
                    // for: our view of the store's clock went back since
                    // that expiry was written (the store's clock stepped
                    // back). The lease has not moved on the store's own
                    // clock, so neither does the deadline.
                    done.deadline = done.deadline.min(lease.deadline);
                }
                return Ok(done);
            }
            Err(_) => continue,
        }
    }
    Err(Error::Unavailable(format!(
        "lock {name:?} changed at every attempt to renew it; try again"
    )))
}

fn renewed<S: CasStore + ?Sized>(
    s: &S,
    lease: &Lease,
    next_id: &str,
    duration: Duration,
    st: Sent,
) -> Lease {
    Lease {
        lease_id: next_id.to_string(),
        duration,
        expires_at_ms: s.table_wall_ms(st.expires_ms),
        deadline: s.table_deadline(st.expires_ms, st.at, duration),
        slotted: true,
        ..lease.clone()
    }
}

/// Releases one holder of a table.
pub async fn release<S: CasStore + ?Sized>(s: &S, name: &str, lease_id: &str) -> Result<()> {
    for _ in 0..MAX_RACES {
        let rec = s.read(name).await?;
        let Some(table) = rec.as_ref().and_then(S::slots_of) else {
            return Err(Error::NotHeld {
                name: name.to_string(),
                lease_id: lease_id.to_string(),
                detail: String::new(),
            });
        };
        let mut next = table.clone();
        if !next.release(lease_id) {
            return Err(Error::NotHeld {
                name: name.to_string(),
                lease_id: lease_id.to_string(),
                detail: " (it is not among the holders)".to_string(),
            });
        }
        next.version = uuid::Uuid::new_v4().to_string();
        match s.write_slots(name, rec.as_ref(), &next).await? {
            Ok(()) => return Ok(()),
            Err(_) => continue,
        }
    }
    Err(Error::Unavailable(format!(
        "lock {name:?} changed at every attempt to release it; try again"
    )))
}

/// Whether one of `ids` holds `name` through its table (for a renewal or
/// release whose record refused it: the lease may have been moved into a
/// table since, or be one holder of several). A read that fails is that
/// error, never "not held": the caller retries.
pub async fn holds<S: CasStore + ?Sized>(s: &S, name: &str, ids: &[&str]) -> Result<bool> {
    Ok(s.read(name).await?.is_some_and(|rec| {
        S::slots_of(&rec)
            .is_some_and(|t| t.holders.iter().any(|h| ids.contains(&h.lease_id.as_str())))
    }))
}

/// A forced release of a table, conditioned on the record `rec` it was
/// read from: each holder released or revoked as `force` says
/// ([`Slots::force`]); waiters stay queued. `Ok(true)` when a revoked
/// holder is left (the lock is handed on when it confirms or expires).
pub async fn force<S: CasStore + ?Sized>(
    s: &S,
    name: &str,
    rec: &S::Record,
    table: &Slots,
    force: &crate::protocol::revoke::Force,
) -> Result<bool> {
    let mut next = table.clone();
    next.prune(s.table_now());
    let (_, revoked) = next.force(force);
    next.version = uuid::Uuid::new_v4().to_string();
    match s.write_slots(name, Some(rec), &next).await? {
        Ok(()) => Ok(revoked > 0),
        Err(_) => Err(Error::NotHeld {
            name: name.to_string(),
            lease_id: String::new(),
            detail: " (it changed while being released)".to_string(),
        }),
    }
}
