//! What a caller asks of a store and what it gets back: the request to
//! acquire ([`AcquireRequest`]), the lease granted ([`Lease`]), and the rules
//! for a lock's name. Below every store and the protocol, which all use them.

use std::sync::Arc;
use std::time::Duration;

use crate::boottime::BootInstant as Instant;
use crate::error::{Error, Result};
use crate::info::LockInfo;

/// Written with every lease as its `client`, so `status` can tell who wrote it.
pub const CLIENT_TAG: &str = concat!("awsflock-rs ", env!("CARGO_PKG_VERSION"));

/// Lock names longer than this (in bytes) are refused.
pub const MAX_NAME_BYTES: usize = 1024;

/// Keys starting with this are the store's own bookkeeping (fencing high-water
/// marks); no lock may be named so.
pub const RESERVED_PREFIX: &str = "__awsflock__/";

/// A reason longer than this (in bytes) is refused: it is written with
/// every grant and renewal, so no record may grow with it.
pub const MAX_REASON_BYTES: usize = 512;

/// An owner longer than this (in bytes) is refused, for the same reason.
pub const MAX_OWNER_BYTES: usize = 256;

/// Checks what a request writes beside the lock: its reason and owner
/// within their limits, with a usage error that says what to do.
pub fn validate_text(req: &AcquireRequest) -> Result<()> {
    check_len(
        "--reason",
        req.reason.as_deref().unwrap_or(""),
        MAX_REASON_BYTES,
    )?;
    check_len("--owner", &req.owner, MAX_OWNER_BYTES)
}

/// `text` at most `max` bytes long, or a usage error naming `what`.
pub fn check_len(what: &str, text: &str, max: usize) -> Result<()> {
    if text.len() > max {
        return Err(Error::usage(format!(
            "{what} is {} bytes long; the limit is {max} bytes; shorten it (a link says more in fewer bytes)",
            text.len()
        )));
    }
    Ok(())
}

/// Checks a lock name: not empty, at most 1024 bytes, not reserved, and
/// free of control characters (a newline or an escape sequence in a name
/// would forge lines and colours in `list`, `status` and logs).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::usage(
            "the lock name is empty; give a name such as 'deploy-prod'",
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::usage(format!(
            "the lock name is {} bytes long; the limit is {MAX_NAME_BYTES} bytes",
            name.len()
        )));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(Error::usage(format!(
            "lock names starting with {RESERVED_PREFIX:?} are reserved; choose another name"
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::usage(format!(
            "the lock name {name:?} contains the control character U+{:04X}; \
             use printable characters only",
            c as u32
        )));
    }
    Ok(())
}

/// Called by a waiter at each poll of a held lock, with what it saw.
pub type OnWait = Arc<dyn Fn(&LockInfo) + Send + Sync>;

/// What the caller wants when acquiring: build one with
/// [`AcquireRequest::new`], then set the fields that differ from its
/// defaults.
#[derive(Clone)]
#[non_exhaustive]
pub struct AcquireRequest {
    /// The lock's name.
    pub name: String,
    /// How long the lease lasts unless renewed, counted from the grant.
    pub lease: Duration,
    /// How long to wait for a held lock: `Some(ZERO)` tries once, `None` waits forever.
    pub wait: Option<Duration>,
    /// Who holds it (informational): defaults to the host name.
    pub owner: String,
    /// Why (informational), shown to waiters and by [`crate::Store::inspect`].
    pub reason: Option<String>,
    /// Called at each poll while the lock is held by someone else.
    pub on_wait: Option<OnWait>,
    /// True when the requesting process holds the lease for as long as it
    /// lives (a [`crate::LockGuard`], the command line's `run`): a
    /// single-host store may then free the lock as soon as that process is
    /// gone. False when the lease is meant to outlive the process (the
    /// command line's `acquire`). [`AcquireRequest::new`] sets it.
    pub supervised: bool,
    /// At most this many may hold the name at once: a semaphore
    /// (`--max-holders N`). `None` or 1: a lock. Every holder of a name
    /// must ask for the same number.
    pub max_holders: Option<u32>,
    /// Take the lock as a reader (`--shared`, as `flock -s`): any number of
    /// shared holders at once, or one exclusive holder.
    pub shared: bool,
}

impl AcquireRequest {
    /// A request for the lock `name` with a lease of `lease` (counted from
    /// the grant, renewed by a [`crate::LockGuard`]), waiting at most 60
    /// seconds for a held lock, owned by this host's name, with no reason.
    pub fn new(name: impl Into<String>, lease: Duration) -> AcquireRequest {
        AcquireRequest {
            name: name.into(),
            lease,
            wait: Some(DEFAULT_WAIT),
            owner: default_owner(),
            reason: None,
            on_wait: None,
            supervised: true,
            max_holders: None,
            shared: false,
        }
    }
}

/// How long [`AcquireRequest::new`] waits for a held lock, as awsflock 0.2.0.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// This host's name, which the `owner` of a request defaults to (`NULL` when
/// the host has none, as awsflock 0.2.0).
pub fn default_owner() -> String {
    let h = gethostname::gethostname().to_string_lossy().into_owned();
    if h.is_empty() { "NULL".to_string() } else { h }
}

impl std::fmt::Debug for AcquireRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcquireRequest")
            .field("name", &self.name)
            .field("lease", &self.lease)
            .field("wait", &self.wait)
            .field("owner", &self.owner)
            .field("reason", &self.reason)
            .field("supervised", &self.supervised)
            .field("max_holders", &self.max_holders)
            .field("shared", &self.shared)
            .finish()
    }
}

/// A granted lease: the proof of holding a lock until it expires.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Lease {
    /// The lock's name.
    pub name: String,
    /// The secret that renews or releases this lease; changes at each renewal.
    pub lease_id: String,
    /// The fencing token of this grant: strictly greater than every token
    /// issued before for this name. `None` only for a lease granted by a
    /// client that issues no tokens (awsflock 0.2.0) and renewed by us.
    pub fence: Option<u64>,
    /// The lease duration in force.
    pub duration: Duration,
    /// When the lease was granted, on the store's clock (ms since the epoch).
    pub acquired_at_ms: Option<i64>,
    /// When the lease expires for everyone else, on the store's clock.
    pub expires_at_ms: i64,
    /// The local instant by which the lease must be renewed or everything done
    /// under it stopped: computed conservatively from the store's clock.
    pub(crate) deadline: Instant,
    /// Held as one of several holders of the name (a semaphore, or a lock
    /// taken `--shared`): renewed and released through the name's holder
    /// table.
    #[cfg_attr(
        not(any(feature = "dynamodb", feature = "s3", feature = "file")),
        allow(dead_code)
    )]
    pub(crate) slotted: bool,
}

impl Lease {
    /// How long this lease still lasts by this machine's clocks, judged
    /// conservatively from the store's clock (zero once it has run out).
    /// Everything done under the lease must have stopped by then.
    pub fn time_left(&self) -> Duration {
        self.deadline.remaining()
    }
}
