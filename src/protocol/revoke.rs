//! Forced release, decided once for every store.
//!
//! A holder that a supervisor can stop (a `run`, a [`crate::LockGuard`]:
//! its record says `supervised`) is not freed at once: its lease is
//! marked *revoked* by a conditional write on its current lease id. Its
//! next renewal is refused because of the mark, so its supervisor stops
//! the command as for a lost lease and confirms by releasing. Until then
//! the revoked lease counts as held exactly as before (waiters judge it by
//! its expiry, which the mark leaves alone), so the lock is handed on at
//! the confirmation or when the old lease would have ended, whichever
//! comes first. A lease nothing supervises (`acquire`'s, awsflock 0.2.0's,
//! etcdctl's) has nobody to ask: it is released at once. So is every lease
//! under [`ForceMode::Immediately`], the break-glass for a supervised
//! holder known to be gone.
//!
//! This module holds the pure decisions; each store writes the mark its
//! own way (DESIGN.md, "Forced release").

use crate::info::LockInfo;

/// How a forced release treats a holder that a supervisor could stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// The library's `Store::force_release` always breaks glass; the command
// line revokes.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub enum ForceMode {
    /// The default: revoke a supervised holder and let it stop and confirm;
    /// release an unsupervised one at once.
    Revoke,
    /// Break glass: release every holder at once, supervised or not. A
    /// supervised holder still running goes on until its next renewal.
    Immediately,
}

/// A forced release as asked: how, and by whom (shown to the holder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Force {
    /// How supervised holders are treated.
    pub mode: ForceMode,
    /// Who asks, for the holder's message: `USER on HOST`.
    pub by: String,
}

impl Force {
    /// A forced release asked by this process's user on this host.
    pub fn here(mode: ForceMode) -> Force {
        let host = crate::request::default_owner();
        let by = match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
            Ok(u) if !u.is_empty() => format!("{u} on {host}"),
            _ => host,
        };
        Force { mode, by }
    }
}

/// What a forced release does to one holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Free it at once.
    Release,
    /// Mark it revoked; it is freed when its holder confirms or its lease ends.
    Revoke,
    /// Already revoked: leave the mark as it is, and wait as for a new one.
    Keep,
}

/// The one rule: what `force` does to a holder that is `supervised` (its
/// record says a supervisor renews it) and already `revoked` or not.
pub fn action(mode: ForceMode, supervised: bool, revoked: bool) -> Action {
    match (mode, supervised, revoked) {
        (ForceMode::Immediately, _, _) | (ForceMode::Revoke, false, _) => Action::Release,
        (ForceMode::Revoke, true, false) => Action::Revoke,
        (ForceMode::Revoke, true, true) => Action::Keep,
    }
}

/// What a forced release did.
#[derive(Debug, Clone, PartialEq)]
pub enum Forced {
    /// Nobody held the lock.
    NotHeld,
    /// Freed at once; what the lock looked like before.
    Released(LockInfo),
    /// At least one holder was revoked (or already was) and still holds
    /// until it confirms or its lease ends; what the lock looked like
    /// before.
    Revoked(LockInfo),
}

/// The detail of the [`crate::Error::NotHeld`] a revoked holder's renewal
/// gets.
pub fn refusal_detail(by: &str) -> String {
    format!(" (released by force by {by})")
}

/// Why a lease was lost, from the detail of the [`crate::Error::NotHeld`]
/// its renewal got: who released it by force, when the store said.
pub fn lost_reason(detail: &str) -> String {
    match detail
        .trim()
        .strip_prefix("(released by force by ")
        .and_then(|d| d.strip_suffix(')'))
    {
        Some(by) => format!("released by force by {by}"),
        None => "taken over or released by force".to_string(),
    }
}

/// Whether the wait of a forced release is over, from what the lock looks
/// like now: nobody revoked holds it any more (it confirmed, its lease
/// ended, or the lock was handed on).
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub fn handed_on(now: &LockInfo) -> bool {
    !now.held || now.revoked_by.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_supervised_holder_is_revoked_and_only_by_default() {
        use ForceMode::{Immediately, Revoke};
        assert_eq!(action(Revoke, true, false), Action::Revoke);
        assert_eq!(action(Revoke, true, true), Action::Keep);
        assert_eq!(action(Revoke, false, false), Action::Release);
        assert_eq!(action(Revoke, false, true), Action::Release);
        assert_eq!(action(Immediately, true, false), Action::Release);
        assert_eq!(action(Immediately, true, true), Action::Release);
    }

    #[test]
    fn the_holder_is_told_who_released_it() {
        assert_eq!(
            lost_reason(&refusal_detail("bob on ci-7")),
            "released by force by bob on ci-7"
        );
        assert_eq!(lost_reason(""), "taken over or released by force");
        assert_eq!(
            lost_reason(" (it is not among the holders)"),
            "taken over or released by force"
        );
    }

    #[test]
    fn the_wait_ends_when_no_revoked_holder_is_left() {
        let revoked = LockInfo {
            held: true,
            revoked_by: Some("bob".into()),
            ..LockInfo::default()
        };
        assert!(!handed_on(&revoked));
        assert!(handed_on(&LockInfo {
            revoked_by: None,
            ..revoked.clone()
        }));
        assert!(handed_on(&LockInfo {
            held: false,
            ..revoked
        }));
    }
}
