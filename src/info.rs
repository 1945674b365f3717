//! What a store says about a lock: [`LockInfo`] and its holders. It sits
//! below the store layer and the error type, which both carry it.

use serde::Serialize;

/// What a store says about one lock ([`crate::Store::inspect`],
/// [`crate::Store::list`], and [`crate::Error::NotAcquired`] for waiters).
///
/// For a name that more than one may hold (a semaphore, or a lock taken
/// `--shared`), the single-holder fields describe the holder whose lease
/// ends last, and `holders` lists every one.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct LockInfo {
    /// The lock's name.
    pub name: String,
    /// Held right now (granted, not released, not expired).
    pub held: bool,
    /// The holder (or last holder) as it named itself.
    pub owner: Option<String>,
    /// The holder's reason.
    pub reason: Option<String>,
    /// The current (or last) fencing token.
    pub fence: Option<u64>,
    /// The current lease id (only useful to whoever holds it).
    pub lease_id: Option<String>,
    /// When the current holder acquired it (ms since the epoch, store's clock).
    pub acquired_at_ms: Option<i64>,
    /// When the lease expires (ms since the epoch, store's clock).
    pub expires_at_ms: Option<i64>,
    /// The lease duration, in seconds.
    pub lease_duration_s: Option<u64>,
    /// Time left on the lease by the store's clock (ms), when known.
    #[serde(skip)]
    pub expires_in_ms: Option<i64>,
    /// The holder's process id.
    pub pid: Option<u32>,
    /// The holder's host.
    pub host: Option<String>,
    /// Which client wrote the lease (`awsflock-rs x.y.z`, or `awsflock 0.2.0`).
    pub client: Option<String>,
    /// What could not be read in the stored record (`None`: all of it could),
    /// e.g. "expiration_time is not a number". A record whose expiry cannot
    /// be read counts as held (DESIGN.md, "Unreadable records").
    pub problem: Option<String>,
    /// At most this many may hold the name at once (a semaphore,
    /// `--max-holders`); `None` for a lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_holders: Option<u32>,
    /// Every live holder of a semaphore or of a lock held `--shared`
    /// (empty for a lock held the ordinary way: see the fields above).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<HolderInfo>,
    /// How many wait in the name's queue.
    #[serde(skip_serializing_if = "is_zero")]
    pub waiting: usize,
    /// While we wait for it: our place in its queue (1: next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// Who waits, in order (the stores that keep a waiting line).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<WaiterInfo>,
    /// A supervisor renews the holder's lease (`run`, a
    /// [`crate::LockGuard`]): a forced release asks it to stop instead of
    /// freeing the lock under it.
    #[serde(skip_serializing_if = "is_false")]
    pub supervised: bool,
    /// A holder was released by force by this one and has not confirmed
    /// yet: it still holds until it does or its lease ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// How long past its expiry (store's clock) the lease still counts as
    /// held, when the store knows: a lease inside this margin is "expired,
    /// free in ..." for people.
    #[serde(skip)]
    pub takeover_margin_ms: Option<i64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One holder of a semaphore or shared lock ([`LockInfo::holders`]).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct HolderInfo {
    /// The holder as it named itself.
    pub owner: String,
    /// Its reason.
    pub reason: Option<String>,
    /// Its fencing token.
    pub fence: u64,
    /// True for a shared holder (`--shared`, or any holder of a semaphore).
    pub shared: bool,
    /// When it was granted (ms since the epoch, store's clock).
    pub acquired_at_ms: i64,
    /// When its lease expires (ms since the epoch, store's clock).
    pub expires_at_ms: i64,
    /// Its host.
    pub host: Option<String>,
    /// Its process id.
    pub pid: Option<u32>,
}

/// One waiter of a lock's queue, for `status`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct WaiterInfo {
    /// Its place: 1 is next.
    pub position: usize,
    /// It asks to share (`--shared`, or a semaphore's holder).
    pub shared: bool,
    /// Its waiter id (its lease id once admitted).
    pub waiter: String,
    /// When its place lapses unless its waiter keeps it (ms since the
    /// epoch).
    pub expires_at_ms: i64,
}
