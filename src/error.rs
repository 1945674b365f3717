//! The one error type of the library.

use crate::info::LockInfo;

/// Everything that can go wrong, sorted by what the caller should do about it.
///
/// Messages say what happened in the library's terms (a store, a lock, a
/// lease); a program that shows them to people may add its own advice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is wrong (a lock name, a store URL, a duration): fix the
    /// call; trying again will not help.
    #[error("{0}")]
    Invalid(String),
    /// The lock is held by someone else and the wait ran out.
    #[error("lock {name:?} was not acquired{}", holder_detail(holder.as_deref()))]
    NotAcquired {
        /// The lock's name.
        name: String,
        /// Who held it at the last look, when the store said.
        holder: Option<Box<LockInfo>>,
    },
    /// The lease is not held (it expired and was taken, was released, or never existed).
    #[error("lease {lease_id} on lock {name:?} is not held{detail}")]
    NotHeld {
        /// The lock's name.
        name: String,
        /// The lease that is not held: for a [`crate::LockGuard`], the last
        /// lease the guard saw confirmed.
        lease_id: String,
        /// More about why, or empty.
        detail: String,
    },
    /// The store refused the request; the message says what to do.
    #[error("{0}")]
    Store(String),
    /// The store could not be reached or was overloaded (network, timeout,
    /// throttling, 5xx) after the SDK's own retries: worth trying again later.
    #[error("{0}")]
    Unavailable(String),
    /// The wait for the lock was cancelled (by the cancellation future, which
    /// returned this number, e.g. a signal's); nothing is held.
    #[error("interrupted by signal {0} while waiting; nothing is held")]
    Interrupted(i32),
}

/// " (held by alice, reason: ..., fence 7)" for messages.
pub(crate) fn holder_detail(info: Option<&LockInfo>) -> String {
    let Some(info) = info else {
        return String::new();
    };
    let owner = info.owner.as_deref().unwrap_or("unknown");
    let mut s = format!(" (held by {owner}");
    if let Some(r) = &info.reason {
        s.push_str(&format!(", reason: {r}"));
    }
    if let Some(f) = info.fence {
        s.push_str(&format!(", fence {f}"));
    }
    if let Some(p) = &info.problem {
        s.push_str(&format!(
            "; unreadable record: {p}; a forced release frees it"
        ));
    }
    s.push(')');
    s
}

impl Error {
    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub(crate) fn store(msg: impl Into<String>) -> Self {
        Error::Store(msg.into())
    }

    /// Who holds the lock, when the error is about a lock someone else holds.
    pub fn holder(&self) -> Option<&LockInfo> {
        match self {
            Error::NotAcquired { holder, .. } => holder.as_deref(),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (the store was unreachable or
    /// overloaded, or the lock was busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::NotAcquired { .. })
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Set by the command line: messages then name its flags (`--endpoint-url`)
/// where a library user would read the name of an option.
static CLI_WORDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes messages name the command line's flags (the `awsflock` binary only).
#[cfg(feature = "cli")]
pub(crate) fn use_cli_words() {
    CLI_WORDS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `cli` in the command line, `lib` in a library.
#[allow(dead_code)] // not every store phrases a message both ways
pub(crate) fn words<'a>(cli: &'a str, lib: &'a str) -> &'a str {
    if CLI_WORDS.load(std::sync::atomic::Ordering::Relaxed) {
        cli
    } else {
        lib
    }
}
