//! What a DynamoDB item means: its attributes, its expiry, and what the
//! answer to a conditional write says.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::protocol::expiry::Stamp;
use crate::protocol::record::{self, MAX_DURATION_S, MAX_TIME_MS};
use crate::request::RESERVED_PREFIX;
use crate::store::cas::Outcome;

/// Attribute names. The first five are awsflock 0.2.0's.
pub(crate) mod attr {
    pub const LOCK_ID: &str = "lock_id";
    pub const LEASE_ID: &str = "lease_id";
    pub const LEASE_DURATION: &str = "lease_duration";
    pub const OWNER: &str = "owner";
    pub const EXPIRATION_TIME: &str = "expiration_time";
    pub const FENCE: &str = "fence";
    pub const FENCE_LIMIT: &str = "fence_limit";
    pub const EXPIRES_MS: &str = "expires_ms";
    pub const ACQUIRED_MS: &str = "acquired_ms";
    pub const REASON: &str = "reason";
    pub const PID: &str = "pid";
    pub const HOST: &str = "host";
    pub const CLIENT: &str = "client";
    pub const RELEASED_LEASE: &str = "released_lease";
    pub const RELEASED_MS: &str = "released_ms";
    pub const FENCE_HW: &str = "fence_hw";
    pub const SLOTS: &str = "slots";
    pub const SUPERVISED: &str = "supervised";
    /// A waiting line's ticket counter.
    pub const NEXT_TICKET: &str = "next_ticket";
    /// A line entry's waiter id and kind.
    pub const WAITER: &str = "waiter";
    pub const KIND: &str = "kind";
}

/// How many fencing tokens one reservation from the high-water mark covers.
/// Tokens after a wipe of the lock item jump by up to this much.
pub const FENCE_BLOCK: u64 = 1_000_000;

/// awsflock 0.2.0 takes over a lease whose `expiration_time` is more than
/// this far in the past.
pub const V020_TAKEOVER_AFTER_MS: i64 = 5000;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Whether DynamoDB refused a request because the table's key schema is
/// not the one the request's key has. DynamoDB has no error code of its
/// own for that: it is a ValidationException (the code of every malformed
/// request), told apart only by its documented message.
pub(crate) fn is_wrong_schema(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("ValidationException")
        && message.is_some_and(|m| m.contains("key element does not match the schema"))
}

/// What a request on a table with another key schema is told.
pub(crate) const WRONG_SCHEMA: &str = "does not have the key schema awsflock needs";

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// Every stored value is untrusted (another client, or a person with the
/// console, may have written it): a number is read only when it is an
/// integer (an integral `1.7e9` included) within `lo..=hi`, so that no
/// arithmetic on it can overflow. `Ok(None)`: absent; `Err`: what is wrong.
pub(crate) fn get_num(
    item: &Item,
    k: &str,
    lo: i64,
    hi: i64,
) -> std::result::Result<Option<i64>, String> {
    let Some(v) = item.get(k) else {
        return Ok(None);
    };
    let Ok(text) = v.as_n() else {
        return Err(format!("{k} is not a number ({})", kind_of(v)));
    };
    let x = text.parse::<i64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
            .map(|f| f as i64)
    });
    match x {
        Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
        _ => Err(format!("{k} is out of range ({})", record::clip(text))),
    }
}

/// A stored value's type and start, for messages.
pub(crate) fn kind_of(v: &AttributeValue) -> String {
    match v {
        AttributeValue::S(t) => format!("the string {:?}", record::clip(t)),
        AttributeValue::N(t) => format!("the number {}", record::clip(t)),
        AttributeValue::Bool(b) => format!("the boolean {b}"),
        AttributeValue::Null(_) => "null".into(),
        AttributeValue::B(_) => "binary".into(),
        AttributeValue::L(_) => "a list".into(),
        AttributeValue::M(_) => "a map".into(),
        _ => "a set".into(),
    }
}

pub(crate) fn get_i64(item: &Item, k: &str) -> Option<i64> {
    get_num(item, k, i64::MIN, i64::MAX).ok().flatten()
}

pub(crate) fn get_u64(item: &Item, k: &str) -> Option<u64> {
    get_i64(item, k).and_then(|v| u64::try_from(v).ok())
}

/// A stored time in ms since the epoch, if readable (0 to year 9999).
pub(crate) fn get_ms(item: &Item, k: &str) -> Option<i64> {
    get_num(item, k, 0, MAX_TIME_MS).ok().flatten()
}

/// What cannot be read in a lock item, or `None` when all of it can. An
/// item written by awsflock 0.2.0 (lock_id, lease_id, lease_duration, owner,
/// expiration_time) is readable.
pub(crate) fn problems(item: &Item) -> Option<String> {
    let mut found = Vec::new();
    for k in [attr::LEASE_ID, attr::EXPIRATION_TIME] {
        if !item.contains_key(k) {
            found.push(format!("{k} is missing"));
        }
    }
    for k in [
        attr::LEASE_ID,
        attr::OWNER,
        attr::REASON,
        attr::HOST,
        attr::CLIENT,
        attr::RELEASED_LEASE,
    ] {
        if let Some(v) = item.get(k).filter(|v| !v.is_s()) {
            found.push(format!("{k} is not a string ({})", kind_of(v)));
        }
    }
    let ranges = [
        (attr::EXPIRATION_TIME, MAX_TIME_MS / 1000),
        (attr::EXPIRES_MS, MAX_TIME_MS),
        (attr::ACQUIRED_MS, MAX_TIME_MS),
        (attr::RELEASED_MS, MAX_TIME_MS),
        (attr::LEASE_DURATION, MAX_DURATION_S),
        (attr::FENCE, i64::MAX),
        (attr::FENCE_LIMIT, i64::MAX),
        (attr::PID, i64::from(u32::MAX)),
    ];
    for (k, hi) in ranges {
        if let Err(e) = get_num(item, k, 0, hi) {
            found.push(e);
        }
    }
    (!found.is_empty()).then(|| found.join("; "))
}

pub(crate) fn hw_key(name: &str) -> String {
    format!("{RESERVED_PREFIX}fence/{name}")
}

/// Which grant write takes a lock, conditioned on the lease id it carries
/// (`None`: on the item being released, or absent).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GrantKind {
    /// An UpdateItem that takes the next token from the item's own counter.
    Counter(Option<String>),
    /// A transaction that reserves a fresh block of tokens from the
    /// high-water mark.
    Fresh(Option<String>),
}

/// The grant for what a waiter saw (see [`CasStore::grant`]): the blind
/// grant is the counter grant on a released item; a free item with tokens
/// left gets a counter grant on its lease id, and an absent or counter-less
/// item a fresh grant (DESIGN.md, acquire steps 1-4).
pub(crate) fn grant_kind(seen: Option<&Option<Item>>) -> GrantKind {
    match seen {
        None => GrantKind::Counter(None),
        Some(None) => GrantKind::Fresh(None),
        Some(Some(item)) => {
            let id = Some(get_s(item, attr::LEASE_ID).unwrap_or_default().to_string());
            let counter_ok = matches!(
                (get_u64(item, attr::FENCE), get_u64(item, attr::FENCE_LIMIT)),
                (Some(f), Some(l)) if f < l
            );
            if counter_ok {
                GrantKind::Counter(id)
            } else {
                GrantKind::Fresh(id)
            }
        }
    }
}

/// The lease's expiry on the store's clock, in ms. 0.2.0 writes whole
/// seconds truncated from its local clock, so its leases get a second more.
/// `None` when the expiry cannot be read: such a lease never expires, so
/// it is never taken over (DESIGN.md, "Unreadable records"). Nor is one
/// without a string `lease_id`, which no takeover could be conditioned on.
pub(crate) fn expiry_ms(item: &Item) -> Option<i64> {
    get_s(item, attr::LEASE_ID)?;
    match get_num(item, attr::EXPIRES_MS, 0, MAX_TIME_MS) {
        Ok(Some(ms)) if ms > 0 => Some(ms),
        Ok(_) => get_num(item, attr::EXPIRATION_TIME, 0, MAX_TIME_MS / 1000)
            .ok()
            .flatten()
            .map(|s| s * 1000 + 1000),
        Err(_) => None,
    }
}

/// Whether the item's lease is renewed by a supervisor (`run`, a
/// `LockGuard`): written by a grant of ours with `supervised = true`
/// (awsflock 0.2.0 rewrites whole items, so its leases never are).
pub(crate) fn supervised_item(item: &Item) -> bool {
    matches!(item.get(attr::SUPERVISED), Some(AttributeValue::Bool(true)))
}

/// Whether the item's lease was last written by awsflock 0.2.0: it
/// rewrites whole items with its five attributes only, so `expires_ms`
/// is gone. (Our renewal of a 0.2.0 lease writes `expires_ms`, on the
/// store's clock.)
pub(crate) fn written_by_v020(item: &Item) -> bool {
    get_i64(item, attr::EXPIRES_MS).is_none_or(|ms| ms <= 0)
        && get_i64(item, attr::EXPIRATION_TIME).is_some_and(|s| s > 0)
}

/// How far past [`DynamoDb::expiry_ms`] the store's clock must be before a
/// waiter takes `item` over: awsflock 0.2.0's own 5 s for its items (the
/// second lost to its truncation is already in the expiry), 1 s for ours.
pub(crate) fn takeover_margin_of(item: &Item) -> i64 {
    if written_by_v020(item) {
        V020_TAKEOVER_AFTER_MS - 1000
    } else {
        crate::protocol::expiry::EXPIRY_MARGIN_MS
    }
}

/// What a renewal's failed condition means, from the item it returned.
#[derive(Debug)]
pub(crate) enum RenewRefused {
    /// The item carries our next lease id: an earlier attempt of this
    /// renewal landed and its answer was lost. Renewed, as that item says.
    Landed(Item),
    /// Still our current lease, but the write was stamped on this machine's
    /// clock and would have shortened it; the answer calibrated the store's
    /// clock: renew again on it.
    Again,
    /// The lease is not ours any more.
    NotHeld,
}

/// Judges a renewal whose condition failed (see [`RenewRefused`]).
/// `stamped_locally`: the write was stamped before the store's clock was
/// known; `calibrated`: it is known now.
pub(crate) fn renew_refused(
    item: Option<&Item>,
    current: &str,
    next_id: &str,
    stamped_locally: bool,
    calibrated: bool,
) -> RenewRefused {
    match item {
        Some(i) if get_s(i, attr::LEASE_ID) == Some(next_id) => RenewRefused::Landed(i.clone()),
        Some(i)
            if stamped_locally
                && calibrated
                && get_s(i, attr::LEASE_ID) == Some(current)
                && get_i64(i, attr::EXPIRATION_TIME) != Some(0) =>
        {
            RenewRefused::Again
        }
        _ => RenewRefused::NotHeld,
    }
}

/// The stamp a renewal's deadline is computed from: the expiry the item
/// holds (an earlier attempt's, when that one landed and this one found its
/// own id), not the one this attempt would have written.
pub(crate) fn renewed_stamp(item: Option<&Item>, st: Stamp) -> Stamp {
    match item.and_then(|i| get_i64(i, attr::EXPIRES_MS)) {
        Some(stored) => st.as_stored(stored),
        None => st,
    }
}

/// A failed condition whose current item carries our own lease id means an
/// earlier attempt of this very write landed (its answer was lost, and the SDK
/// retried): we hold the lock.
pub(crate) fn won_anyway(item: Option<Item>, lease_id: &str) -> Outcome<Item> {
    match item {
        Some(i) if get_s(&i, attr::LEASE_ID) == Some(lease_id) => {
            Outcome::Granted(get_u64(&i, attr::FENCE))
        }
        other => Outcome::Lost(other),
    }
}

pub(crate) fn ceil_secs(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000)
}
