//! The one error type of the library, and how each kind maps to an exit code.

use crate::exit;

/// Everything that can go wrong, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or a parameter is wrong: fix the invocation.
    #[error("{0}")]
    Usage(String),
    /// The lock is held by someone else and the wait ran out.
    #[error("lock {name:?} was not acquired{detail}")]
    NotAcquired { name: String, detail: String },
    /// The lease is not held (it expired and was taken, was released, or never existed).
    #[error("lease {lease_id} on lock {name:?} is not held{detail}")]
    NotHeld {
        name: String,
        lease_id: String,
        detail: String,
    },
    /// The store refused the request; the message says what to do.
    #[error("{0}")]
    Store(String),
    /// The store could not be reached or was overloaded (network, timeout,
    /// throttling, 5xx) after the SDK's own retries: worth trying again later.
    #[error("{0}")]
    Unavailable(String),
    /// A signal ended the wait for the lock; nothing is held.
    #[error("interrupted by signal {0} while waiting; nothing is held")]
    Interrupted(i32),
}

impl Error {
    /// The documented exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::NotAcquired { .. } | Error::NotHeld { .. } => exit::NOT_HELD,
            Error::Store(_) | Error::Unavailable(_) => exit::ERROR,
            Error::Interrupted(sig) => exit::SIGNAL_BASE + sig,
        }
    }

    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub(crate) fn store(msg: impl Into<String>) -> Self {
        Error::Store(msg.into())
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
