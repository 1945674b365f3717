//! The waiting line of the polling stores (DynamoDB, S3): each waiter keeps
//! its place in an entry of its own, outside the lock record, so that
//! joining, keeping a place and leaving never write the lock record and
//! nothing's size depends on how many wait.
//!
//! - A **place** is a key that sorts in order of arrival: on DynamoDB the
//!   number an unconditional atomic increment of the name's ticket counter
//!   returned (20 digits), on S3 the store's time and a random id.
//! - An **entry** is the waiter's own small item or object under that key:
//!   its kind, and how long it lives unless its waiter refreshes it
//!   ([`WAIT_LIFE_MS`]). A dead waiter's entry lapses, like a dead holder's
//!   lease; a waiter that gives up deletes it.
//! - The lock record keeps a **mark** ([`Mark`], in the holder table): the
//!   greatest place admitted so far (`served`), and how many were admitted
//!   through the line (`admitted`). The entries ahead of a waiter are the
//!   live ones between `served` and its own place.
//!
//! **Places grant nothing.** Admission is still the one conditional write
//! of the lock record, judged on the record it replaces exactly as before
//! (`super::slots::Slots::admit`); the line only decides who tries. A wrong
//! view of the line can cost order or time, never a second holder.
//!
//! Polling is paced by the distance from the front: the waiter at the front
//! polls every 100–300 ms, the one behind it every ~0.4 s, and so on up to
//! [`FAR_POLL_MS`] for everyone further back, so a crowd costs about one
//! request per waiter every few seconds while the front moves at hand-off
//! speed. DESIGN.md ("The waiting line") gives the failure cases.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::expiry::{EXPIRY_MARGIN_MS, Now};
use crate::request::RESERVED_PREFIX;

/// How long an entry lives unless its waiter refreshes it: a waiter killed
/// while waiting is skipped this long (plus the margin) after its last
/// refresh.
pub const WAIT_LIFE_MS: i64 = 20_000;

/// An entry is refreshed when less than this is left of it: one write per
/// waiter every 12–17 s, with a poll to spare if one fails.
pub const WAIT_REFRESH_MS: i64 = 8_000;

/// The slowest poll, for waiters far from the front.
pub const FAR_POLL_MS: u64 = 6_000;

/// Each place nearer the front polls this much faster.
pub const POLL_STEP_MS: u64 = 400;

/// How many entries one read of the line looks at, at most.
pub const READ_AHEAD: usize = 100;

/// What a waiter asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Alone ([`super::slots::Mode::Lock`]).
    Exclusive,
    /// Beside other shared holders ([`super::slots::Mode::Lock`], `--shared`), or one of
    /// a semaphore's N ([`super::slots::Mode::Semaphore`]).
    Shared,
}

/// The line's mark in the lock record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The greatest place admitted through the line (empty: none yet).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub served: String,
    /// How many waiters were admitted through the line, ever.
    #[serde(default)]
    pub admitted: u64,
    /// When the last waiter was admitted through the line, on the table's
    /// clock (ms; 0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub at_ms: i64,
    /// The time between admissions, averaged (ms; 0: not known yet): how
    /// fast the line moves, for a waiter that has only just joined it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gap_ms: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Mark {
    /// The mark after admitting the waiter at `place` at `now_ms` (the
    /// admission's lower bound of the table's clock).
    pub fn admit(&self, place: &str, now_ms: i64) -> Mark {
        let gap_ms = match (self.at_ms, self.gap_ms) {
            (0, _) => 0,
            (at, 0) => (now_ms - at).max(1),
            (at, gap) => ((3 * gap + (now_ms - at).max(1)) / 4).max(1),
        };
        Mark {
            served: if place > self.served.as_str() {
                place.to_string()
            } else {
                self.served.clone()
            },
            admitted: self.admitted + 1,
            at_ms: now_ms,
            gap_ms,
        }
    }

    /// Admissions a second through the line, judged at `now_ms`: the
    /// average gap between them, or the time since the last if that is
    /// longer (a line that has stopped slows down). `None` before two
    /// admissions.
    pub fn rate(&self, now_ms: i64) -> Option<f64> {
        if self.gap_ms <= 0 || self.at_ms <= 0 {
            return None;
        }
        let gap = self.gap_ms.max(now_ms - self.at_ms).max(1);
        Some(1000.0 / gap as f64)
    }
}

/// One entry of the line, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place.
    pub place: String,
    /// What its waiter asks for.
    pub kind: Kind,
    /// When it lapses unless refreshed (store ms).
    pub expires_ms: i64,
    /// Its waiter's id (shown by `status`).
    pub waiter: String,
}

impl Entry {
    /// Alive until the store's clock, at the earliest, is past its expiry
    /// plus the margin (as a lease).
    pub fn alive(&self, now: Now) -> bool {
        now.lo <= self.expires_ms.saturating_add(EXPIRY_MARGIN_MS)
    }
}

/// The key prefix of a name's entries, under the store's reserved prefix:
/// the name's length first, so that no name's prefix is another's.
pub fn prefix(name: &str) -> String {
    format!("{RESERVED_PREFIX}wait/{}:{name}/", name.len())
}

/// The key of a name's ticket counter (DynamoDB), under the store's
/// reserved prefix.
pub fn counter_key(name: &str) -> String {
    format!("{RESERVED_PREFIX}ticket/{}:{name}", name.len())
}

/// The kind as stored in an entry.
pub fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Exclusive => "exclusive",
        Kind::Shared => "shared",
    }
}

/// The kind an entry stores (`None`: not one of ours).
pub fn kind_of_word(word: &str) -> Option<Kind> {
    match word {
        "exclusive" => Some(Kind::Exclusive),
        "shared" => Some(Kind::Shared),
        _ => None,
    }
}

/// The place of ticket number `n` (DynamoDB): fixed width, so that places
/// sort as numbers.
pub fn ticket_place(n: u64) -> String {
    format!("{n:020}")
}

/// The ticket number of a place written by [`ticket_place`].
pub fn ticket_of(place: &str) -> Option<u64> {
    place.parse().ok()
}

/// The place of a waiter that arrived at store time `ms` (S3): the time,
/// then the kind, then a random id, so that places sort by arrival and the
/// kind is read from the key alone.
pub fn timed_place(ms: i64, kind: Kind, id: &str) -> String {
    let k = match kind {
        Kind::Exclusive => 'x',
        Kind::Shared => 's',
    };
    format!("{:013}-{k}-{id}", ms.max(0))
}

/// The time a [`timed_place`] carries.
pub fn ms_of_timed(place: &str) -> Option<i64> {
    place.split('-').next()?.parse().ok()
}

/// The kind a [`timed_place`] carries.
pub fn kind_of_timed(place: &str) -> Option<Kind> {
    match place.split('-').nth(1) {
        Some("x") => Some(Kind::Exclusive),
        Some("s") => Some(Kind::Shared),
        _ => None,
    }
}

/// The kinds of the live entries ahead of `mine`: after the mark's
/// `served`, before `mine`, in order.
pub fn ahead(entries: &[Entry], served: &str, mine: &str, now: Now) -> Vec<Kind> {
    let mut live: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.place.as_str() > served && e.place.as_str() < mine && e.alive(now))
        .collect();
    live.sort_by(|a, b| a.place.cmp(&b.place));
    live.into_iter().map(|e| e.kind).collect()
}

/// What a waiter knows of its distance from the front: how many places
/// were ahead of it when it last looked, and the mark's count then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Distance {
    /// Places ahead (live or not) at the last look.
    pub ahead: u64,
    /// [`Mark::admitted`] at the last look.
    pub admitted: u64,
}

impl Distance {
    /// How many places are ahead now, at most: each admission through the
    /// line since the last look took one of them (or one behind, which
    /// only makes this an over-estimate).
    pub fn now(&self, mark: &Mark) -> u64 {
        self.ahead
            .saturating_sub(mark.admitted.saturating_sub(self.admitted))
    }
}

/// How long a waiter pauses between polls when `d` must be admitted
/// before it and the line has been moving at `rate` admissions a second:
/// the front and the one behind it every 100–300 ms (when the front's
/// section is short, the next hand-off waits for the second's poll), and
/// the third too while the line moves at least once a second (else, when
/// sections are short, it notices only a section late that it is second,
/// and every hand-off waits for its slower poll);
/// further back, [`POLL_STEP_MS`] per place, or
/// a quarter of the time the line takes to bring it to the front if that
/// is sooner, at least 200 ms and at most [`FAR_POLL_MS`]; jittered so that
/// a crowd does not poll in step. A waiter so paced is at the front before
/// the line reaches it, and a line that moves slowly costs little. (With
/// half the time, a jittered pause or a line that sped up left the front
/// asleep too often: the simulated crowd of 1,000 on DynamoDB drained in
/// 379 s, against 162 s with a quarter, for 54 requests a hand-off against
/// 85.)
pub fn poll_every(d: u64, rate: f64) -> Duration {
    if d <= 1 || (d == 2 && rate >= 1.0) {
        return Duration::from_millis(100 + fastrand::u64(0..200));
    }
    let mut base = d.saturating_mul(POLL_STEP_MS).min(FAR_POLL_MS);
    if rate > 0.0 {
        let until_front = (d as f64 / rate * 250.0) as u64;
        base = base.min(until_front).max(200);
    }
    Duration::from_millis(base * 3 / 4 + fastrand::u64(0..=base / 2))
}

/// Whether an entry expiring at `expires_ms` is due for a refresh at `now`.
pub fn refresh_due(expires_ms: i64, now: Now) -> bool {
    expires_ms - now.hi < WAIT_REFRESH_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    fn now(ms: i64) -> Now {
        Now {
            lo: T0 + ms,
            hi: T0 + ms + 100,
        }
    }

    fn entry(n: u64, kind: Kind, expires: i64) -> Entry {
        Entry {
            place: ticket_place(n),
            kind,
            expires_ms: T0 + expires,
            waiter: format!("w{n}"),
        }
    }

    #[test]
    fn ticket_places_sort_as_numbers() {
        assert!(ticket_place(9) < ticket_place(10));
        assert!(ticket_place(99) < ticket_place(1_000));
        assert_eq!(ticket_of(&ticket_place(42)), Some(42));
        assert!(ticket_place(1).as_str() > "");
    }

    #[test]
    fn timed_places_sort_by_time_and_carry_their_kind() {
        let a = timed_place(T0, Kind::Shared, "zz");
        let b = timed_place(T0 + 1, Kind::Exclusive, "aa");
        assert!(a < b);
        assert_eq!(kind_of_timed(&a), Some(Kind::Shared));
        assert_eq!(kind_of_timed(&b), Some(Kind::Exclusive));
        assert_eq!(kind_of_timed("junk"), None);
        assert_eq!(ms_of_timed(&a), Some(T0));
    }

    /// The pace fields are optional both ways: a mark written before them
    /// reads with none known, and a mark with them reads in a client that
    /// knows only `served` and `admitted` (records are parsed without
    /// `deny_unknown_fields`), which drops them when it writes the mark.
    #[test]
    fn the_mark_s_pace_is_compatible_with_marks_without_it() {
        let old: Mark =
            serde_json::from_str(r#"{"served":"00000000000000000007","admitted":3}"#).unwrap();
        assert_eq!((old.admitted, old.at_ms, old.gap_ms), (3, 0, 0));
        assert_eq!(old.rate(T0), None);
        let json = serde_json::to_string(&old).unwrap();
        assert!(
            !json.contains("at_ms") && !json.contains("gap_ms"),
            "{json}"
        );
        #[derive(Deserialize)]
        struct Before {
            #[serde(default)]
            served: String,
            #[serde(default)]
            admitted: u64,
        }
        let paced = old
            .admit(&ticket_place(8), T0)
            .admit(&ticket_place(9), T0 + 400);
        let read: Before = serde_json::from_str(&serde_json::to_string(&paced).unwrap()).unwrap();
        assert_eq!(
            (read.served.as_str(), read.admitted),
            (ticket_place(9).as_str(), 5)
        );
    }

    #[test]
    fn the_mark_says_how_fast_the_line_moves() {
        let mut m = Mark::default();
        assert_eq!(m.rate(T0), None);
        for i in 0..6 {
            m = m.admit(&ticket_place(i + 1), T0 + 300 * i as i64);
        }
        assert_eq!(m.admitted, 6);
        let at = T0 + 1_500;
        assert_eq!(m.at_ms, at);
        // Every 300 ms: 3.3 a second, until the last admission is longer
        // ago than that.
        let r = m.rate(at + 100).unwrap();
        assert!((r - 1000.0 / 300.0).abs() < 0.01, "{r}");
        assert!((m.rate(at + 2_000).unwrap() - 0.5).abs() < 0.01);
        // One slow gap moves the average a quarter of the way.
        let slow = m.admit(&ticket_place(7), at + 1_500);
        assert_eq!(slow.gap_ms, (3 * 300 + 1_500) / 4);
    }

    #[test]
    fn no_name_s_prefix_is_another_s() {
        let names = ["a", "a/b", "a/", "ab", "1:a", "b/1:a"];
        for x in names {
            for y in names {
                if x != y {
                    assert!(!prefix(x).starts_with(&prefix(y)), "{x} under {y}");
                }
            }
        }
    }

    #[test]
    fn only_live_entries_between_served_and_mine_are_ahead() {
        let entries = vec![
            entry(1, Kind::Exclusive, 60_000), // served already
            entry(2, Kind::Exclusive, 1_000),  // dead at 5 s
            entry(3, Kind::Shared, 60_000),
            entry(5, Kind::Exclusive, 60_000), // behind us
        ];
        let got = ahead(&entries, &ticket_place(1), &ticket_place(4), now(5_000));
        assert_eq!(got, vec![Kind::Shared]);
        // Still alive within the margin.
        let got = ahead(&entries, &ticket_place(1), &ticket_place(4), now(1_500));
        assert_eq!(got, vec![Kind::Exclusive, Kind::Shared]);
        // Skipped (served past us): nobody is ahead.
        assert!(ahead(&entries, &ticket_place(4), &ticket_place(3), now(0)).is_empty());
    }

    #[test]
    fn the_mark_only_moves_forward_and_counts_every_admission() {
        let m = Mark::default().admit(&ticket_place(5), T0);
        let m = m.admit(&ticket_place(3), T0 + 50);
        assert_eq!(m.served, ticket_place(5));
        assert_eq!(m.admitted, 2);
    }

    #[test]
    fn distance_shrinks_with_admissions_and_polls_slow_down_with_it() {
        let d = Distance {
            ahead: 10,
            admitted: 4,
        };
        let mark = |admitted| Mark {
            served: String::new(),
            admitted,
            ..Mark::default()
        };
        assert_eq!(d.now(&mark(4)), 10);
        assert_eq!(d.now(&mark(7)), 7);
        assert_eq!(d.now(&mark(40)), 0);
        for _ in 0..50 {
            assert!(poll_every(0, 0.0) <= Duration::from_millis(300));
            assert!(poll_every(1, 0.0) <= Duration::from_millis(300));
            let two = poll_every(2, 0.0);
            assert!(two >= Duration::from_millis(600) && two <= Duration::from_millis(1_000));
            assert!(poll_every(1_000, 0.0) >= Duration::from_millis(FAR_POLL_MS * 3 / 4));
            assert!(poll_every(1_000, 0.0) <= Duration::from_millis(FAR_POLL_MS * 5 / 4));
            // A line moving 5 a second: 10 places away is 2 s from the
            // front; poll within 1 s.
            assert!(poll_every(10, 5.0) <= Duration::from_millis(1_250));
            assert!(poll_every(2, 5.0) <= Duration::from_millis(300));
            assert!(poll_every(2, 0.5) >= Duration::from_millis(600));
            assert!(poll_every(3, 5.0) >= Duration::from_millis(150));
            // Far back, still at most the slowest poll.
            assert!(poll_every(1_000, 5.0) <= Duration::from_millis(FAR_POLL_MS * 5 / 4));
        }
    }
}
