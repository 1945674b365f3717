//! A waiter's use of a store's waiting line ([`Line`]): its place, what
//! is ahead of it, and how often it looks (the rules are
//! [`crate::protocol::line`]'s; this file sends the reads and writes).

use std::time::Duration;

use super::backend::Line;
use crate::error::Result;
use crate::protocol::line::{self, Distance, Mark, READ_AHEAD, WAIT_LIFE_MS};
use crate::protocol::slots::{Kind, Mode, Now, Refusal, Slots};

/// Waiters this near the front read the line whenever the lock has room;
/// those further back only when the room lasts (the front is stuck behind
/// dead entries).
const NEAR: u64 = 8;

/// A waiter's place in the line.
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub key: String,
    /// How far from the front it was when it last looked.
    pub dist: Distance,
    /// When its entry lapses (store ms).
    pub expires_ms: i64,
}

/// What a waiter knows of the line between polls.
#[derive(Debug, Default)]
pub(super) struct InLine {
    pub place: Option<Place>,
    /// The mark's admission count when the lock last had room for us:
    /// the same count at the next poll means the front is not moving.
    room_seen: Option<u64>,
    /// Far from the front, we saw room and only noted it: look again
    /// soon (at the front's pace), and read the line then if the front has
    /// not moved (waiters ahead that left leave no entry to admit).
    recheck: bool,
    /// How fast the line moves, as seen from our polls.
    pace: Pace,
    /// A place taken whose entry write failed (it may have landed): the
    /// next join writes it again rather than leaving it to hold the line
    /// until it lapses.
    taken: Option<String>,
}

/// Admissions through the line per second, from the first poll that saw
/// the mark's count to the latest.
#[derive(Debug, Default)]
struct Pace {
    first: Option<(crate::boottime::BootInstant, u64)>,
}

impl Pace {
    fn rate(&mut self, admitted: u64) -> f64 {
        let now = crate::boottime::BootInstant::now();
        let (at, from) = *self.first.get_or_insert((now, admitted));
        let secs = now.saturating_duration_since(at).as_secs_f64();
        if secs < 0.5 {
            return 0.0;
        }
        admitted.saturating_sub(from) as f64 / secs
    }
}

/// What the line says of an admission now.
pub(super) enum View {
    /// Try, with these live entries ahead (their kinds).
    Try(Vec<Kind>),
    /// Wait: the lock has no room, or those ahead fill it.
    Wait,
}

/// Whether `kind`, with `ahead` in front of it, fits beside `table`'s
/// live holders (its record queue counted first) in `mode`.
fn fits(table: &Slots, id: &str, kind: Kind, mode: Mode, ahead: &[Kind], now: Now) -> bool {
    let mut t = table.clone();
    !matches!(
        t.judge(id, kind, mode, ahead, now),
        Err(Refusal::Wait { .. })
    )
}

impl InLine {
    /// Decides whether to try an admission now, reading the line when it
    /// may matter; joins it when a newcomer finds others waiting.
    #[allow(clippy::too_many_arguments)]
    pub async fn view(
        &mut self,
        line: &dyn Line,
        name: &str,
        id: &str,
        table: &Slots,
        kind: Kind,
        mode: Mode,
        now: Now,
    ) -> Result<View> {
        self.recheck = false;
        if !fits(table, id, kind, mode, &[], now) {
            self.room_seen = None;
            return Ok(View::Wait);
        }
        let mark = &table.line;
        match &self.place {
            None if !line.anyone_waiting(name, mark).await? => return Ok(View::Try(Vec::new())),
            None => self.join(line, name, id, kind, mark, now).await?,
            Some(_) => {
                let stuck = self.room_seen == Some(mark.admitted);
                if self.distance(line, mark) > NEAR && !stuck {
                    self.room_seen = Some(mark.admitted);
                    self.recheck = true;
                    return Ok(View::Wait);
                }
            }
        }
        self.room_seen = Some(mark.admitted);
        let ahead = self
            .read_ahead(line, name, id, table, kind, mode, now)
            .await?;
        if fits(table, id, kind, mode, &ahead, now) {
            Ok(View::Try(ahead))
        } else {
            Ok(View::Wait)
        }
    }

    /// Reads the live entries ahead of our place, a few at first, until
    /// they fill the room or our place is reached; notes the distance.
    #[allow(clippy::too_many_arguments)]
    async fn read_ahead(
        &mut self,
        line: &dyn Line,
        name: &str,
        id: &str,
        table: &Slots,
        kind: Kind,
        mode: Mode,
        now: Now,
    ) -> Result<Vec<Kind>> {
        let Some(place) = self.place.as_mut() else {
            return Ok(Vec::new());
        };
        let mut after = match table.line.served.as_str() {
            "" => line.floor(&place.key),
            served => served.to_string(),
        };
        let mut ahead = Vec::new();
        let mut max = 4;
        loop {
            let got = line.entries(name, &after, Some(&place.key), max).await?;
            let more = got.len() >= max;
            ahead.extend(line::ahead(&got, &table.line.served, &place.key, now));
            if !fits(table, id, kind, mode, &ahead, now) {
                return Ok(ahead);
            }
            match got.last() {
                Some(last) if more => after = last.place.clone(),
                _ => {
                    place.dist = Distance {
                        ahead: ahead.len() as u64,
                        admitted: table.line.admitted,
                    };
                    return Ok(ahead);
                }
            }
            max = (max * 4).min(READ_AHEAD);
        }
    }

    /// Takes a place in the line.
    async fn join(
        &mut self,
        line: &dyn Line,
        name: &str,
        id: &str,
        kind: Kind,
        mark: &Mark,
        now: Now,
    ) -> Result<()> {
        let expires_ms = now.hi + WAIT_LIFE_MS;
        let key = match self.taken.take() {
            // Still ahead of the mark: ours to write again.
            Some(p) if mark.served.is_empty() || p > mark.served => p,
            Some(passed) => {
                // The mark moved past it: an entry there is behind the
                // front, where nobody counts it; take a new place.
                let _ = line.leave(name, &passed).await;
                line.take_place(name, id, kind, mark).await?
            }
            None => line.take_place(name, id, kind, mark).await?,
        };
        self.taken = Some(key.clone());
        let ahead = line.enter(name, &key, id, kind, expires_ms, mark).await?;
        self.taken = None;
        self.place = Some(Place {
            key,
            dist: Distance {
                ahead,
                admitted: mark.admitted,
            },
            expires_ms,
        });
        Ok(())
    }

    /// Keeps our place while we wait: joins when we have none, refreshes
    /// it when due. Returns how long to pause before the next poll: by how
    /// many must be admitted before us (a semaphore of N admits the first N
    /// waiters at once) and how fast the line has been moving.
    #[allow(clippy::too_many_arguments)]
    pub async fn keep(
        &mut self,
        line: &dyn Line,
        name: &str,
        id: &str,
        kind: Kind,
        mode: Mode,
        mark: &Mark,
        now: Now,
    ) -> Result<Duration> {
        match &mut self.place {
            None => self.join(line, name, id, kind, mark, now).await?,
            Some(p) if line::refresh_due(p.expires_ms, now) => {
                let expires_ms = now.hi + WAIT_LIFE_MS;
                line.refresh(name, &p.key, id, kind, expires_ms).await?;
                p.expires_ms = expires_ms;
            }
            Some(_) => {}
        }
        let before_us = match mode {
            Mode::Semaphore(n) => self.distance(line, mark).saturating_sub(u64::from(n) - 1),
            Mode::Lock => self.distance(line, mark),
        };
        // The mark's rate, which a waiter that has only just joined knows
        // too (else its first pause, from its distance alone, can outlast
        // a line that moves fast), or the rate seen while waiting.
        let seen = self.pace.rate(mark.admitted);
        let rate = mark.rate(now.lo).unwrap_or(seen);
        if self.recheck {
            return Ok(line::poll_every(0, rate));
        }
        Ok(line::poll_every(before_us, rate))
    }

    /// How many places are ahead of ours, at most (0 without a place).
    pub fn distance(&self, line: &dyn Line, mark: &Mark) -> u64 {
        if mark.served.is_empty() {
            // No mark yet: nothing tells how far; look now.
            return 0;
        }
        self.place.as_ref().map_or(0, |p| {
            let counted = p.dist.now(mark);
            line.places_ahead(&p.key, mark).unwrap_or(counted)
        })
    }

    /// Leaves the line (best effort: an entry left behind lapses).
    pub async fn leave(&mut self, line: &dyn Line, name: &str) {
        let places = [self.place.take().map(|p| p.key), self.taken.take()];
        for key in places.into_iter().flatten() {
            if let Err(e) = line.leave(name, &key).await {
                tracing::debug!(error = %e, "could not delete our place in the line; it lapses");
            }
        }
    }
}

/// Who waits in `name`'s line after the record's mark, in order (the
/// first [`READ_AHEAD`] places), for `status`.
pub(super) async fn waiters(
    line: &dyn Line,
    name: &str,
    mark: &Mark,
    now: Now,
) -> Result<Vec<crate::info::WaiterInfo>> {
    let entries = line.entries(name, &mark.served, None, READ_AHEAD).await?;
    Ok(entries
        .into_iter()
        .filter(|e| e.alive(now))
        .enumerate()
        .map(|(i, e)| crate::info::WaiterInfo {
            position: i + 1,
            shared: e.kind == Kind::Shared,
            waiter: e.waiter,
            expires_at_ms: e.expires_ms,
        })
        .collect())
}
