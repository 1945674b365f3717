//! The key layout of etcd's mutex recipe (`PREFIX NAME / LEASE`, and our
//! revocation marks), what a key's value says about its contender, and
//! reading keys out of answers.

use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget, TxnOpResponse, TxnResponse};
use serde::{Deserialize, Serialize};

use super::{ETCDCTL_OWNER, EtcdStore};
use crate::clock::local_wall_ms;
use crate::info::LockInfo;
use crate::protocol::slots::{self, Kind, Mode};
use crate::request::{AcquireRequest, CLIENT_TAG, RESERVED_PREFIX};

/// What our key's value says about its holder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Holder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) acquired_ms: Option<i64>,
    /// A semaphore's contender: its N (`--max-holders`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_holders: Option<u32>,
    /// A shared contender (`--shared`, or a semaphore's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    shared: bool,
    /// Renewed by a supervisor (`run`, a `LockGuard`): a forced release
    /// marks it revoked instead of revoking its etcd lease.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) supervised: bool,
}

impl Holder {
    pub(super) fn of_request(req: &AcquireRequest) -> Holder {
        let (shared, max_holders) = match slots::wanted(req).ok().flatten() {
            Some((_, Mode::Semaphore(n))) => (true, Some(n)),
            Some((kind, Mode::Lock)) => (kind == Kind::Shared, None),
            None => (false, None),
        };
        Holder {
            owner: Some(req.owner.clone()),
            reason: req.reason.clone(),
            pid: Some(std::process::id()),
            host: Some(gethostname::gethostname().to_string_lossy().into_owned()),
            client: Some(CLIENT_TAG.to_string()),
            acquired_ms: Some(local_wall_ms()),
            max_holders,
            shared,
            supervised: req.supervised,
        }
    }

    /// The kind of contender and the mode it asked for (`etcdctl lock`'s
    /// keys, with no value, are exclusive).
    pub(super) fn mode(&self) -> (Kind, Mode) {
        match self.max_holders {
            Some(n) if n >= 2 => (Kind::Shared, Mode::Semaphore(n)),
            _ if self.shared => (Kind::Shared, Mode::Lock),
            _ => (Kind::Exclusive, Mode::Lock),
        }
    }

    /// A contender for a plain lock: exclusive, not of a semaphore.
    pub(super) fn is_exclusive_lock(&self) -> bool {
        self.mode() == (Kind::Exclusive, Mode::Lock)
    }

    /// This record, stamped with the time the lock is granted.
    pub(super) fn stamped(&self) -> Holder {
        Holder {
            acquired_ms: Some(local_wall_ms()),
            ..self.clone()
        }
    }

    pub(super) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a key's value: ours, etcdctl's (empty), or something else.
    pub(super) fn from_value(value: &[u8]) -> Holder {
        if value.is_empty() {
            return Holder {
                owner: Some(ETCDCTL_OWNER.to_string()),
                ..Holder::default()
            };
        }
        serde_json::from_slice(value).unwrap_or_default()
    }
}

/// An etcd lease id as written in keys and printed as LEASE_ID.
pub fn lease_hex(id: i64) -> String {
    format!("{id:x}")
}

/// Reads a LEASE_ID back; `None` when it cannot be an etcd lease id.
pub fn parse_lease_hex(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16)
        .ok()
        .and_then(|v| i64::try_from(v).ok())
        .filter(|&v| v != 0)
}

/// Splits a key under the store's prefix into (lock name, lease hex), when
/// it looks like a contender's key: `NAME/<hex>`.
pub(super) fn split_key(rest: &str) -> Option<(&str, &str)> {
    let (name, id) = rest.rsplit_once('/')?;
    (!name.is_empty() && parse_lease_hex(id).is_some()).then_some((name, id))
}

/// Whether `kv` is a contender directly under `mutex_prefix`.
pub(super) fn is_contender(kv: &KeyValue, mutex_prefix: &str) -> bool {
    kv.lease() != 0
        && kv
            .key_str()
            .ok()
            .and_then(|k| k.strip_prefix(mutex_prefix))
            .is_some_and(|id| parse_lease_hex(id).is_some())
}

impl EtcdStore {
    /// `PREFIX NAME /`: where the contenders for `name` queue.
    pub(super) fn mutex_prefix(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix)
    }

    pub(super) fn key(&self, name: &str, lease_hex: &str) -> String {
        format!("{}{lease_hex}", self.mutex_prefix(name))
    }

    /// `PREFIX __awsflock__/revoked/LEASE`: the revocation mark of the
    /// contender holding etcd lease `id`, attached to that lease (so it goes
    /// with the lease: at the holder's release, or its expiry).
    pub(super) fn mark_key(&self, id: i64) -> String {
        format!(
            "{}{}revoked/{}",
            self.prefix,
            RESERVED_PREFIX,
            lease_hex(id)
        )
    }

    /// What a contender's key says, for people. `ttl`: (remaining, granted)
    /// seconds of its lease, when known.
    pub(super) fn info_of(&self, name: &str, kv: &KeyValue, ttl: Option<(i64, i64)>) -> LockInfo {
        let h = Holder::from_value(kv.value());
        let lease_id = kv
            .key_str()
            .ok()
            .and_then(|k| k.rsplit_once('/'))
            .map(|(_, id)| id.to_string())
            .unwrap_or_else(|| lease_hex(kv.lease()));
        let (expires_at_ms, expires_in_ms, lease_duration_s) = match ttl {
            Some((left, granted)) => (
                Some(local_wall_ms() + left * 1000),
                Some(left * 1000),
                Some(granted.max(0) as u64),
            ),
            None => (None, None, None),
        };
        // Our holder's token is the revision of the write that confirmed
        // its grant, which is its key's last modification. etcdctl's token
        // (the revision it read when it got the lock) is stored nowhere.
        let fence = if h.client.is_some() {
            u64::try_from(kv.mod_revision()).ok()
        } else {
            None
        };
        LockInfo {
            name: name.to_string(),
            held: true,
            owner: h.owner,
            reason: h.reason,
            fence,
            lease_id: Some(lease_id),
            acquired_at_ms: h.acquired_ms,
            expires_at_ms,
            lease_duration_s,
            expires_in_ms,
            pid: h.pid,
            host: h.host,
            client: h.client,
            problem: None,
            supervised: h.supervised,
            ..LockInfo::default()
        }
    }
}

/// Reads the first contender of a lock (the lowest create revision).
pub(super) fn owner_opts() -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
}

/// The revision a response was served at (0 if etcd did not say).
pub(super) fn header_revision(resp: &TxnResponse) -> i64 {
    resp.header().map(|h| h.revision()).unwrap_or(0)
}

/// The first key of a get inside a transaction.
pub(super) fn first_kv(op: Option<&TxnOpResponse>) -> Option<&KeyValue> {
    match op? {
        TxnOpResponse::Get(g) => g.kvs().first(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_round_trip_as_hex() {
        assert_eq!(lease_hex(0x694d_8f4f_5a3c_1b2e), "694d8f4f5a3c1b2e");
        assert_eq!(
            parse_lease_hex("694d8f4f5a3c1b2e"),
            Some(0x694d_8f4f_5a3c_1b2e)
        );
        assert_eq!(parse_lease_hex("7b"), Some(123));
        assert_eq!(parse_lease_hex(""), None);
        assert_eq!(parse_lease_hex("0"), None);
        assert_eq!(parse_lease_hex("ffffffffffffffff"), None);
        assert_eq!(parse_lease_hex("6f9a1c2e-0000"), None);
        assert_eq!(parse_lease_hex("12345678901234567"), None);
    }

    #[test]
    fn keys_split_into_name_and_lease() {
        assert_eq!(
            split_key("deploy/694d8f4f5a3c1b2e"),
            Some(("deploy", "694d8f4f5a3c1b2e"))
        );
        assert_eq!(split_key("a/b/7b"), Some(("a/b", "7b")));
        assert_eq!(split_key("/7b"), None);
        assert_eq!(split_key("deploy/config"), None);
        assert_eq!(split_key("deploy"), None);
    }

    #[test]
    fn etcdctl_keys_are_shown_as_etcdctl() {
        assert_eq!(
            Holder::from_value(b"").owner.as_deref(),
            Some(ETCDCTL_OWNER)
        );
        let h = Holder::from_value(br#"{"owner":"alice","reason":"deploy","acquired_ms":5}"#);
        assert_eq!(h.owner.as_deref(), Some("alice"));
        assert_eq!(h.reason.as_deref(), Some("deploy"));
        assert_eq!(h.acquired_ms, Some(5));
        assert!(Holder::from_value(b"not json").owner.is_none());
    }
}
