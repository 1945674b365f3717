//! The holders of one name when more than one may hold it: semaphores
//! (`--max-holders N`), shared locks (`--shared`), and waiting in order.
//!
//! This module is pure: given the record as read and the store's clock
//! (as bounds, [`Now`]), it says whether a waiter is admitted and what the
//! record becomes. Each store keeps a [`Slots`] in its one record per name
//! and writes it back with one compare-and-swap on the version it read, as
//! it does the single-holder record, so the acquire loop's rules still
//! hold: a lost answer is recognised by our own ids in the record read
//! again, a grant is never inferred from time alone, and a holder's
//! deadline comes from the expiry the record stores.
//!
//! A name is in one [`Mode`] while anyone holds it or waits for it:
//! - [`Mode::Lock`]: exclusive holders alone, or any number of shared
//!   holders (`--shared`, as `flock -s`);
//! - [`Mode::Semaphore`]: at most N holders.
//!
//! Waiters queue as [`Ticket`]s, each kept alive by a heartbeat expiry that
//! its waiter refreshes; a dead waiter's ticket lapses like a dead holder's
//! lease. Admission follows the queue: a waiter is admitted only when every
//! live ticket ahead of it could be admitted with it.
//!
//! Every expiry is judged as the single-holder record's: alive until the
//! store's clock, at the earliest ([`Now::lo`]), is past the expiry plus
//! [`EXPIRY_MARGIN_MS`].

use serde::{Deserialize, Serialize};

pub use super::expiry::{EXPIRY_MARGIN_MS, Now};
pub use super::line::Kind;
use super::line::Mark;
use crate::error::{Error, Result};
use crate::info::{HolderInfo, LockInfo};
use crate::request::AcquireRequest;

/// What a request asks for: `None` for an ordinary lock (the single-holder
/// record), else the kind of holder and the name's mode.
pub fn wanted(req: &AcquireRequest) -> Result<Option<(Kind, Mode)>> {
    match (req.max_holders, req.shared) {
        (Some(0), _) => Err(Error::usage(
            "--max-holders must be at least 1; give the number of holders allowed at once",
        )),
        (Some(n), true) if n > 1 => Err(Error::usage(
            "--shared and --max-holders do not go together: every holder of a semaphore \
             shares it already; drop one of them",
        )),
        (Some(n), false) if n > 1 => Ok(Some((Kind::Shared, Mode::Semaphore(n)))),
        (_, true) => Ok(Some((Kind::Shared, Mode::Lock))),
        _ => Ok(None),
    }
}

/// The usage error for a name held or waited for in another mode.
pub fn mismatch(name: &str, stored: Mode, asked: Mode) -> Error {
    Error::usage(format!(
        "lock {name:?} is in use as {stored}; you asked for it as {asked}; \
         every holder of a name must give the same --max-holders"
    ))
}

/// How a name may be shared. Stored as `max_holders`: 1 for a lock, N for
/// a semaphore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub enum Mode {
    /// One exclusive holder, or any number of shared ones.
    Lock,
    /// At most this many holders (2 or more; 1 is [`Mode::Lock`]).
    Semaphore(u32),
}

impl From<Mode> for u32 {
    fn from(m: Mode) -> u32 {
        match m {
            Mode::Lock => 1,
            Mode::Semaphore(n) => n,
        }
    }
}

impl TryFrom<u32> for Mode {
    type Error = String;
    fn try_from(n: u32) -> Result<Mode, String> {
        match n {
            0 => Err("max_holders is 0".to_string()),
            1 => Ok(Mode::Lock),
            n => Ok(Mode::Semaphore(n)),
        }
    }
}

impl Mode {
    /// The mode `--max-holders N` asks for (`None`: not given).
    pub fn from_max_holders(n: Option<u32>) -> Mode {
        match n {
            Some(n) if n >= 2 => Mode::Semaphore(n),
            _ => Mode::Lock,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Lock => write!(f, "a lock (--max-holders 1)"),
            Mode::Semaphore(n) => write!(f, "a semaphore of {n} (--max-holders {n})"),
        }
    }
}

/// One holder's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Changes at every renewal, so that a renewal is conditioned on it.
    pub lease_id: String,
    pub kind: Kind,
    pub owner: String,
    pub reason: Option<String>,
    /// This grant's fencing token: above every token granted before on
    /// this name.
    pub fence: u64,
    /// When the lease expires on the store's clock (ms).
    pub expires_ms: i64,
    /// When it was granted (store's clock, ms).
    #[serde(default)]
    pub acquired_ms: i64,
    /// The holder's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The holder's process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A supervisor renews it (`run`, a `LockGuard`): a forced release
    /// revokes it instead of removing it (see `super::revoke`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supervised: bool,
    /// Released by force by this one: its renewals are refused, and it
    /// holds until it releases (confirms) or its lease ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// The lease of its latest grant or renewal (ms), so that `status` can
    /// show the lease and when it was last renewed (`expires_ms - lease_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<i64>,
}

/// One waiter's place in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Chosen by the waiter; becomes the lease id it is granted under, so
    /// that a grant whose answer was lost is recognised.
    pub id: String,
    pub kind: Kind,
    /// When the ticket lapses unless its waiter refreshes it (store ms).
    pub expires_ms: i64,
}

/// Everyone who holds or waits for one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    pub mode: Mode,
    pub holders: Vec<Holder>,
    /// In order of arrival.
    pub queue: Vec<Ticket>,
    /// The token the next grant gets.
    pub next_fence: u64,
    /// The version (lease id) of the record this table was written with.
    /// A record whose version differs was rewritten since by a client that
    /// knows nothing of holder tables (awsflock 0.2.0, or a plain lock
    /// of ours), so the table in it is stale and is not read.
    #[serde(default)]
    pub version: String,
    /// The last token of the block of fencing tokens reserved for this
    /// record (`None`: no block; the store's mark is moved at each grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_limit: Option<u64>,
    /// The boot of the host whose boot-time clock the expiries are on
    /// (the directory store); `None` for the store's own clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The waiting line's mark (DynamoDB and S3 keep their waiters outside
    /// the record, [`super::line`]; `queue` then stays empty).
    #[serde(default, skip_serializing_if = "is_default")]
    pub line: Mark,
}

fn is_default(m: &Mark) -> bool {
    *m == Mark::default()
}

/// A waiter asking to be admitted (see [`Slots::admit_applicant`]).
#[derive(Debug, Clone, Copy)]
pub struct Applicant<'a> {
    /// Its ticket id, which becomes its lease id.
    pub id: &'a str,
    pub kind: Kind,
    /// The mode it asks the name to be in.
    pub asked: Mode,
    pub owner: &'a str,
    pub reason: Option<&'a str>,
    /// Its lease's expiry if admitted.
    pub expires_ms: i64,
    /// Its place in the waiting line, if it has one.
    pub place: Option<&'a str>,
    /// The kinds of the live entries ahead of it in the line.
    pub line_ahead: &'a [Kind],
}

/// Why a waiter is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Held (or queued for) in another mode: a usage error that names both.
    ModeMismatch { stored: Mode, asked: Mode },
    /// Not now: this many live holders and live tickets ahead of it.
    Wait { holders: usize, ahead: usize },
}

/// Whether `expires_ms` is still alive at `now` (see the module docs).
fn alive(expires_ms: i64, now: Now) -> bool {
    now.lo <= expires_ms.saturating_add(EXPIRY_MARGIN_MS)
}

impl Slots {
    /// A name nobody holds or waits for, whose next token is `next_fence`.
    pub fn free(mode: Mode, (next_fence, fence_limit): (u64, Option<u64>)) -> Slots {
        Slots {
            mode,
            holders: Vec::new(),
            queue: Vec::new(),
            next_fence,
            version: String::new(),
            fence_limit,
            boot_id: None,
            line: Mark::default(),
        }
    }

    /// A table whose one holder is an exclusive lock holder that was
    /// granted in a single-holder record (see `CasStore::as_table`).
    pub fn of_holder(holder: Holder, (next_fence, fence_limit): (u64, Option<u64>)) -> Slots {
        Slots {
            holders: vec![holder],
            ..Slots::free(Mode::Lock, (next_fence, fence_limit))
        }
    }

    /// Drops the holders and tickets that are surely dead at `now`.
    pub fn prune(&mut self, now: Now) {
        self.holders.retain(|h| alive(h.expires_ms, now));
        self.queue.retain(|t| alive(t.expires_ms, now));
    }

    /// Whether nobody holds or waits (after [`Slots::prune`]).
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.queue.is_empty()
    }

    /// Whether a waiter of `kind`, `ahead` live tickets of the given kinds
    /// in front of it, may be admitted beside the live holders.
    pub(crate) fn fits(&self, kind: Kind, ahead: &[Kind]) -> bool {
        match self.mode {
            Mode::Semaphore(n) => self.holders.len() + ahead.len() < n as usize,
            Mode::Lock => match kind {
                Kind::Exclusive => self.holders.is_empty() && ahead.is_empty(),
                Kind::Shared => {
                    self.holders.iter().all(|h| h.kind == Kind::Shared)
                        && ahead.iter().all(|k| *k == Kind::Shared)
                }
            },
        }
    }

    /// Whether the waiter with ticket `id` is next in turn: it would be
    /// admitted as soon as the holders left, whatever their number (the
    /// first N waiters of a semaphore, the readers before the first writer,
    /// the writer at the head). Those poll quickly; the rest slowly.
    pub fn next_in_turn(&self, id: &str, kind: Kind, now: Now) -> bool {
        let mut t = self.clone();
        t.prune(now);
        let ahead: Vec<Kind> = t
            .queue
            .iter()
            .take_while(|q| q.id != id)
            .map(|q| q.kind)
            .collect();
        t.holders.clear();
        t.fits(kind, &ahead)
    }

    /// Whether the waiter with ticket `id` (queued or not: a waiter not
    /// queued stands behind every ticket) may be admitted now, in `asked`
    /// mode. Prunes first.
    pub fn judge(
        &mut self,
        id: &str,
        kind: Kind,
        asked: Mode,
        line_ahead: &[Kind],
        now: Now,
    ) -> Result<(), Refusal> {
        self.prune(now);
        if self.mode != asked && !self.is_empty() {
            return Err(Refusal::ModeMismatch {
                stored: self.mode,
                asked,
            });
        }
        let kind = match asked {
            Mode::Semaphore(_) => Kind::Shared,
            Mode::Lock => kind,
        };
        let ahead: Vec<Kind> = self
            .queue
            .iter()
            .take_while(|t| t.id != id)
            .map(|t| t.kind)
            .chain(line_ahead.iter().copied())
            .collect();
        // With the mode now ours (the name was free), fits() judges in it.
        let mut judged = self.clone();
        judged.mode = asked;
        if judged.fits(kind, &ahead) {
            Ok(())
        } else {
            Err(Refusal::Wait {
                holders: self.holders.len(),
                ahead: ahead.len(),
            })
        }
    }

    /// Admits the waiter with ticket `id` (see [`Slots::judge`]), no line
    /// ahead of it: [`Slots::admit_applicant`].
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &mut self,
        id: &str,
        kind: Kind,
        asked: Mode,
        owner: &str,
        reason: Option<&str>,
        expires_ms: i64,
        now: Now,
    ) -> Result<u64, Refusal> {
        self.admit_applicant(
            &Applicant {
                id,
                kind,
                asked,
                owner,
                reason,
                expires_ms,
                place: None,
                line_ahead: &[],
            },
            now,
        )
    }

    /// Admits `a` (see [`Slots::judge`]): removes its ticket, moves the
    /// line's mark past its place, and adds it as a holder under lease id
    /// `a.id`, with the next token, which it returns.
    pub fn admit_applicant(&mut self, a: &Applicant<'_>, now: Now) -> Result<u64, Refusal> {
        // Already admitted: an earlier attempt of this write landed, its
        // answer was lost.
        if let Some(h) = self.holders.iter().find(|h| h.lease_id == a.id) {
            return Ok(h.fence);
        }
        self.judge(a.id, a.kind, a.asked, a.line_ahead, now)?;
        self.mode = a.asked;
        self.queue.retain(|t| t.id != a.id);
        if let Some(place) = a.place {
            self.line = self.line.admit(place, now.lo);
        }
        let fence = self.next_fence;
        self.next_fence += 1;
        self.holders.push(Holder {
            lease_id: a.id.to_string(),
            kind: match a.asked {
                Mode::Semaphore(_) => Kind::Shared,
                Mode::Lock => a.kind,
            },
            owner: a.owner.to_string(),
            reason: a.reason.map(str::to_string),
            fence,
            expires_ms: a.expires_ms,
            acquired_ms: now.lo,
            host: None,
            pid: None,
            supervised: false,
            revoked_by: None,
            lease_ms: None,
        });
        Ok(fence)
    }

    /// Puts (or keeps) the waiter `id` in the queue, its ticket alive until
    /// `expires_ms`; a ticket already there keeps its place. `Err` when the
    /// name is held or queued for in another mode.
    pub fn enqueue(
        &mut self,
        id: &str,
        kind: Kind,
        asked: Mode,
        expires_ms: i64,
        now: Now,
    ) -> Result<(), Refusal> {
        self.prune(now);
        if self.mode != asked && !self.is_empty() {
            return Err(Refusal::ModeMismatch {
                stored: self.mode,
                asked,
            });
        }
        self.mode = asked;
        match self.queue.iter_mut().find(|t| t.id == id) {
            Some(t) => t.expires_ms = t.expires_ms.max(expires_ms),
            None => self.queue.push(Ticket {
                id: id.to_string(),
                kind,
                expires_ms,
            }),
        }
        Ok(())
    }

    /// Leaves the queue (a waiter that gives up). Whether it was there.
    pub fn leave(&mut self, id: &str) -> bool {
        let before = self.queue.len();
        self.queue.retain(|t| t.id != id);
        self.queue.len() != before
    }

    /// Renews holder `lease_id` as `next_id`, until `expires_ms` (never
    /// shorter than it was). `false` when it holds no more (a renewal
    /// must then report the lease lost).
    pub fn renew(&mut self, lease_id: &str, next_id: &str, expires_ms: i64) -> bool {
        match self.holders.iter_mut().find(|h| h.lease_id == lease_id) {
            Some(h) => {
                h.lease_id = next_id.to_string();
                h.expires_ms = h.expires_ms.max(expires_ms);
                true
            }
            None => false,
        }
    }

    /// A forced release of every holder, by `force`'s rule
    /// ([`super::revoke::action`]): released holders leave the table,
    /// revoked ones stay (marked) until they confirm or expire. Returns how
    /// many were released and how many are left revoked.
    pub fn force(&mut self, force: &super::revoke::Force) -> (usize, usize) {
        use super::revoke::{Action, action};
        let (mut released, mut revoked) = (0, 0);
        self.holders.retain_mut(|h| {
            match action(force.mode, h.supervised, h.revoked_by.is_some()) {
                Action::Release => {
                    released += 1;
                    return false;
                }
                Action::Revoke => h.revoked_by = Some(force.by.clone()),
                Action::Keep => {}
            }
            revoked += 1;
            true
        });
        (released, revoked)
    }

    /// Who revoked holder `lease_id`, when it was (its renewal is refused).
    pub fn revoked(&self, lease_id: &str) -> Option<&str> {
        self.holders
            .iter()
            .find(|h| h.lease_id == lease_id)
            .and_then(|h| h.revoked_by.as_deref())
    }

    /// Releases holder `lease_id`. Whether it held.
    pub fn release(&mut self, lease_id: &str) -> bool {
        let before = self.holders.len();
        self.holders.retain(|h| h.lease_id != lease_id);
        self.holders.len() != before
    }
}

/// A table's live holders and waiters, for `status` and `list`.
pub fn describe(table: &Slots, now: Now, wall: impl Fn(i64) -> i64, info: &mut LockInfo) {
    let mut t = table.clone();
    t.prune(now);
    info.max_holders = match t.mode {
        Mode::Semaphore(n) => Some(n),
        Mode::Lock => None,
    };
    info.waiting = t.queue.len();
    info.holders = t
        .holders
        .iter()
        .map(|h| HolderInfo {
            owner: h.owner.clone(),
            reason: h.reason.clone(),
            fence: h.fence,
            shared: h.kind == Kind::Shared,
            acquired_at_ms: wall(h.acquired_ms),
            expires_at_ms: wall(h.expires_ms),
            host: h.host.clone(),
            pid: h.pid,
        })
        .collect();
    info.held = !info.holders.is_empty();
    if let Some(last) = t.holders.iter().max_by_key(|h| h.expires_ms) {
        info.owner = Some(last.owner.clone());
        info.reason = last.reason.clone();
        info.fence = Some(last.fence);
        info.expires_at_ms = Some(wall(last.expires_ms));
        info.acquired_at_ms = Some(wall(last.acquired_ms));
        info.expires_in_ms = Some(last.expires_ms - now.lo);
        info.host = last.host.clone();
        info.pid = last.pid;
        info.supervised = last.supervised;
        // One holder: its lease, as a record without a table shows it.
        info.lease_id = (t.holders.len() == 1).then(|| last.lease_id.clone());
        info.lease_duration_s = last
            .lease_ms
            .filter(|_| t.holders.len() == 1)
            .map(|ms| (ms / 1000).max(0) as u64);
    } else {
        // Nobody holds (waiters may be queued): the record's own owner,
        // reason, host and pid name a placeholder ("NULL"), not a holder.
        info.owner = None;
        info.reason = None;
        info.host = None;
        info.pid = None;
        info.lease_id = None;
        info.lease_duration_s = None;
    }
    info.revoked_by = t.holders.iter().find_map(|h| h.revoked_by.clone());
    info.takeover_margin_ms = Some(EXPIRY_MARGIN_MS);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    fn now(ms: i64) -> Now {
        Now {
            lo: T0 + ms,
            hi: T0 + ms + 1000,
        }
    }

    fn admit(s: &mut Slots, id: &str, kind: Kind, mode: Mode, at: i64) -> Result<u64, Refusal> {
        s.admit(id, kind, mode, "o", None, T0 + at + 10_000, now(at))
    }

    #[test]
    fn a_revoked_holder_keeps_its_place_until_it_releases_and_its_renewal_is_refused() {
        use crate::protocol::revoke::{Force, ForceMode};
        let mut s = Slots::free(Mode::Semaphore(3), (1, None));
        admit(&mut s, "run", Kind::Shared, Mode::Semaphore(3), 0).unwrap();
        admit(&mut s, "acquire", Kind::Shared, Mode::Semaphore(3), 0).unwrap();
        s.holders[0].supervised = true;
        let force = Force {
            mode: ForceMode::Revoke,
            by: "bob".into(),
        };
        // The unsupervised holder leaves at once; the supervised one stays, marked.
        assert_eq!(s.force(&force), (1, 1));
        assert_eq!(s.holders.len(), 1);
        assert_eq!(s.revoked("run"), Some("bob"));
        // Forcing again keeps the mark and the holder.
        assert_eq!(s.force(&force), (0, 1));
        // Until it releases or expires, it is counted by waiters.
        let mut lock = Slots::free(Mode::Lock, (1, None));
        admit(&mut lock, "run", Kind::Exclusive, Mode::Lock, 0).unwrap();
        lock.holders[0].supervised = true;
        lock.force(&force);
        assert!(admit(&mut lock, "next", Kind::Exclusive, Mode::Lock, 1_000).is_err());
        assert!(lock.release("run"));
        assert!(admit(&mut lock, "next", Kind::Exclusive, Mode::Lock, 1_000).is_ok());
        // Break glass removes every holder.
        let immediately = Force {
            mode: ForceMode::Immediately,
            ..force
        };
        assert_eq!(s.force(&immediately), (1, 0));
        assert!(s.holders.is_empty());
    }

    #[test]
    fn a_semaphore_admits_n_and_queues_the_rest_in_order() {
        let sem = Mode::Semaphore(2);
        let mut s = Slots::free(sem, (1, None));
        assert_eq!(admit(&mut s, "a", Kind::Shared, sem, 0), Ok(1));
        assert_eq!(admit(&mut s, "b", Kind::Shared, sem, 0), Ok(2));
        assert!(matches!(
            admit(&mut s, "c", Kind::Shared, sem, 0),
            Err(Refusal::Wait { holders: 2, .. })
        ));
        s.enqueue("c", Kind::Shared, sem, T0 + 5_000, now(0))
            .unwrap();
        s.enqueue("d", Kind::Shared, sem, T0 + 5_000, now(0))
            .unwrap();
        assert!(s.release("a"));
        // d may not pass c.
        assert!(admit(&mut s, "d", Kind::Shared, sem, 1).is_err());
        assert_eq!(admit(&mut s, "c", Kind::Shared, sem, 1), Ok(3));
        assert!(s.queue.iter().all(|t| t.id != "c"));
    }

    #[test]
    fn a_mismatched_n_is_refused_while_anyone_holds_or_waits() {
        let mut s = Slots::free(Mode::Semaphore(3), (1, None));
        admit(&mut s, "a", Kind::Shared, Mode::Semaphore(3), 0).unwrap();
        assert_eq!(
            admit(&mut s, "b", Kind::Shared, Mode::Semaphore(4), 0),
            Err(Refusal::ModeMismatch {
                stored: Mode::Semaphore(3),
                asked: Mode::Semaphore(4)
            })
        );
        assert!(admit(&mut s, "b", Kind::Exclusive, Mode::Lock, 0).is_err());
        s.release("a");
        // Free again: the next holder sets the mode.
        assert_eq!(admit(&mut s, "b", Kind::Exclusive, Mode::Lock, 0), Ok(2));
    }

    #[test]
    fn readers_share_and_a_queued_writer_holds_back_later_readers() {
        let l = Mode::Lock;
        let mut s = Slots::free(l, (1, None));
        admit(&mut s, "r1", Kind::Shared, l, 0).unwrap();
        admit(&mut s, "r2", Kind::Shared, l, 0).unwrap();
        assert!(admit(&mut s, "w", Kind::Exclusive, l, 0).is_err());
        s.enqueue("w", Kind::Exclusive, l, T0 + 5_000, now(0))
            .unwrap();
        // A reader arriving after the writer queues behind it.
        assert!(admit(&mut s, "r3", Kind::Shared, l, 0).is_err());
        s.enqueue("r3", Kind::Shared, l, T0 + 5_000, now(0))
            .unwrap();
        s.release("r1");
        s.release("r2");
        assert!(admit(&mut s, "r3", Kind::Shared, l, 1).is_err());
        assert!(admit(&mut s, "w", Kind::Exclusive, l, 1).is_ok());
        assert!(admit(&mut s, "r3", Kind::Shared, l, 1).is_err());
        s.release("w");
        assert!(admit(&mut s, "r3", Kind::Shared, l, 2).is_ok());
    }

    #[test]
    fn dead_holders_and_waiters_lapse_after_their_expiry_and_the_margin() {
        let l = Mode::Lock;
        let mut s = Slots::free(l, (1, None));
        admit(&mut s, "a", Kind::Exclusive, l, 0).unwrap(); // expires at +10 s
        s.enqueue("dead", Kind::Exclusive, l, T0 + 2_000, now(0))
            .unwrap();
        s.enqueue("b", Kind::Exclusive, l, T0 + 60_000, now(0))
            .unwrap();
        // Past the ticket's expiry and margin, but not the holder's.
        assert!(admit(&mut s, "b", Kind::Exclusive, l, 3_001).is_err());
        assert_eq!(s.queue.len(), 1, "the dead waiter's ticket lapsed");
        // The holder's margin: 10 s + 1 s on the store's earliest clock.
        assert!(admit(&mut s, "b", Kind::Exclusive, l, 11_000).is_err());
        assert_eq!(admit(&mut s, "b", Kind::Exclusive, l, 11_001), Ok(2));
    }

    #[test]
    fn renew_and_release_need_the_current_lease_id() {
        let l = Mode::Lock;
        let mut s = Slots::free(l, (7, None));
        admit(&mut s, "a", Kind::Exclusive, l, 0).unwrap();
        assert!(s.renew("a", "a2", T0 + 20_000));
        assert!(!s.renew("a", "a3", T0 + 30_000), "an old id renews nothing");
        assert_eq!(s.holders[0].expires_ms, T0 + 20_000);
        assert!(!s.release("a"));
        assert!(s.release("a2"));
        assert!(s.holders.is_empty());
    }

    /// Random operations by 6 waiters on one name, each judged on a store
    /// clock known to within 1 s, with lapses: at no instant of the store's
    /// clock do more holders act than the mode allows, never an exclusive
    /// holder beside another, tokens strictly increase, and a waiter is
    /// never admitted ahead of a live ticket that was queued before it and
    /// could have been admitted.
    #[test]
    fn random_histories_keep_the_invariants() {
        for seed in 0..3_000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mode = if rng.bool() {
                Mode::Lock
            } else {
                Mode::Semaphore(rng.u32(2..=4))
            };
            let mut s = Slots::free(mode, (1, None));
            let mut t = 0i64;
            let mut last_fence = 0;
            // (id, kind, acting until (store ms)) of the clients that were
            // admitted: each acts until its lease's expiry at most.
            let mut acting: Vec<(String, Kind, i64)> = Vec::new();
            for step in 0..200 {
                t += rng.i64(0..800);
                let at = now(t);
                let c = rng.usize(0..6);
                let id = format!("c{c}-{}", step / 40);
                let kind = if rng.u8(0..4) == 0 {
                    Kind::Exclusive
                } else {
                    Kind::Shared
                };
                match rng.u8(0..6) {
                    0 | 1 if !s.holders.iter().any(|h| h.lease_id == id) => {
                        let exp = at.hi + rng.i64(500..4_000);
                        let ahead_before: Vec<Ticket> = s.queue.clone();
                        if let Ok(f) = s.admit(&id, kind, mode, "o", None, exp, at) {
                            assert!(f > last_fence, "seed {seed}: token {f} after {last_fence}");
                            last_fence = f;
                            // FIFO: every live ticket queued ahead of it was
                            // admissible with it.
                            let pos = ahead_before.iter().position(|x| x.id == id);
                            if let Some(p) = pos {
                                assert!(
                                    ahead_before[..p].iter().all(|x| !alive(x.expires_ms, at)
                                        || mode != Mode::Lock
                                        || (x.kind == Kind::Shared && kind == Kind::Shared)),
                                    "seed {seed}: admitted ahead of the queue"
                                );
                            }
                            // An id admitted again after its lease lapsed
                            // is a new holder.
                            let k = s.holders.last().unwrap().kind;
                            acting.retain(|a| a.0 != id);
                            acting.push((id.clone(), k, exp));
                        }
                    }
                    2 => {
                        let _ = s.enqueue(&id, kind, mode, at.hi + rng.i64(500..4_000), at);
                    }
                    3 => {
                        s.release(&id);
                        acting.retain(|a| a.0 != id);
                    }
                    4 => {
                        let exp = at.hi + rng.i64(500..4_000);
                        if s.renew(&id, &id, exp) {
                            for a in acting.iter_mut().filter(|a| a.0 == id) {
                                a.2 = a.2.max(exp);
                            }
                        }
                    }
                    _ => {
                        s.leave(&id);
                    }
                }
                // Those that may act at the store's latest time now.
                let live: Vec<&(String, Kind, i64)> =
                    acting.iter().filter(|a| a.2 >= at.hi).collect();
                match mode {
                    Mode::Semaphore(n) => assert!(
                        live.len() <= n as usize,
                        "seed {seed}: {} holders of a semaphore of {n}",
                        live.len()
                    ),
                    Mode::Lock => assert!(
                        live.iter().all(|a| a.1 == Kind::Shared) || live.len() <= 1,
                        "seed {seed}: an exclusive holder beside another: {live:?}"
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod describe_tests {
    use super::Ticket;
    use super::*;

    /// A table with a waiter and no live holder describes nobody as the
    /// holder, whatever placeholder the record carries.
    #[test]
    fn a_table_with_waiters_only_names_no_holder() {
        let now = Now {
            lo: 1_800_000_000_000,
            hi: 1_800_000_001_000,
        };
        let mut table = Slots::free(Mode::Lock, (5, None));
        table.queue.push(Ticket {
            id: "w".into(),
            kind: Kind::Exclusive,
            expires_ms: now.hi + 10_000,
        });
        let mut info = crate::protocol::expiry::absent_info("x");
        info.owner = Some("NULL".into());
        info.held = true;
        describe(&table, now, |ms| ms, &mut info);
        assert!(!info.held);
        assert_eq!(info.owner, None);
        assert_eq!(info.waiting, 1);
    }
}
