//! The JSON lease record kept by the S3 and file stores: one small document
//! per lock, readable with `aws s3 cp s3://…/NAME -` or `cat`.
//!
//! ```json
//! {"name":"deploy","lease_id":"…","state":"held","owner":"alice","reason":"terraform apply",
//!  "pid":4242,"host":"ci-7","client":"awsflock-rs 0.1.0","fence":7,"fence_limit":1000000,
//!  "acquired_ms":1763800000000,"expires_ms":1763800060000,"lease_duration":60}
//! ```
//!
//! A fencing-token high-water mark lives beside it in a second document,
//! [`FenceMark`], that is never deleted by awsflock.

use serde::{Deserialize, Serialize};

use super::expiry::Stamp;
use super::slots::Slots;
use crate::info::LockInfo;
use crate::request::{AcquireRequest, CLIENT_TAG};

/// The state of a lock record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// Granted; valid until `expires_ms`.
    Held,
    /// Released by its holder (or by force); free.
    Released,
}

/// One lock's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The lock's name.
    pub name: String,
    /// The current lease id; changes at every write, so it versions the record.
    pub lease_id: String,
    /// Held or released.
    pub state: RecordState,
    /// Who holds (or last held) it.
    pub owner: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The holder's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The holder's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The holder's process holds the lease for as long as it lives (`run`).
    #[serde(default)]
    pub supervised: bool,
    /// Released by force by this one (see `super::revoke`): renewals are
    /// refused, and the lease holds until its holder releases it or it
    /// expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// The client that wrote the record.
    #[serde(default)]
    pub client: String,
    /// The fencing token of the current (or last) grant; `None` while a
    /// fresh grant is still reserving its block of tokens.
    #[serde(default)]
    pub fence: Option<u64>,
    /// The top of the block of tokens reserved for this record.
    #[serde(default)]
    pub fence_limit: Option<u64>,
    /// When the lease was granted (store's clock, ms since the epoch).
    pub acquired_ms: i64,
    /// When the lease expires (store's clock, ms since the epoch).
    pub expires_ms: i64,
    /// The lease duration in seconds.
    pub lease_duration: u64,
    /// After a release: the lease that was released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_lease: Option<String>,
    /// After a release: when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_ms: Option<i64>,
    /// Set only on the stand-in for a stored document that could not be
    /// read ([`LeaseRecord::decode`]): what is wrong with it. Never stored.
    #[serde(skip)]
    pub problem: Option<String>,
    /// The holders and waiters of a semaphore or shared lock; current only
    /// while its `version` is this record's `lease_id` (a client that
    /// knows no tables rewrites the record under a new lease id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<Slots>,
}

/// The latest instant a stored time may name: 9999-12-31T23:59:59.999Z, the
/// last one RFC 3339 can show. Every stored time and duration is checked
/// against it, so that no arithmetic on a record can overflow.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// The longest stored lease duration that can be read, in seconds (the span
/// up to [`MAX_TIME_MS`]; awsflock itself writes at most 366 days).
pub const MAX_DURATION_S: i64 = MAX_TIME_MS / 1000;

/// A stored value for messages: at most 40 characters.
pub fn clip(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// The fencing high-water mark of one lock: every token ever issued for it
/// is at most `fence_hw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceMark {
    /// The high-water mark.
    pub fence_hw: u64,
}

/// How many tokens one reservation from the high-water mark covers.
pub const FENCE_BLOCK: u64 = 1_000_000;

impl LeaseRecord {
    /// A record granting `req` to `lease_id`, stamped with `st`, with the
    /// given fence (or none yet) and block limit.
    pub fn grant(
        req: &AcquireRequest,
        lease_id: &str,
        st: &Stamp,
        fence: Option<u64>,
        fence_limit: Option<u64>,
    ) -> Self {
        LeaseRecord {
            name: req.name.clone(),
            lease_id: lease_id.to_string(),
            state: RecordState::Held,
            owner: req.owner.clone(),
            reason: req.reason.clone(),
            pid: Some(std::process::id()),
            host: Some(gethostname::gethostname().to_string_lossy().into_owned()),
            supervised: req.supervised,
            revoked_by: None,
            client: CLIENT_TAG.to_string(),
            fence,
            fence_limit,
            acquired_ms: st.shown_ms,
            expires_ms: st.expires_ms,
            lease_duration: req.lease.as_secs(),
            released_lease: None,
            released_ms: None,
            problem: None,
            slots: None,
        }
    }

    /// The record that keeps a holder table: its lease id is the table's
    /// version; held (until `expires_ms`, the latest holder's expiry) while
    /// anyone holds, so that a client that knows no tables sees the name
    /// held, and released when only waiters are left. Its fence is the last
    /// token issued, so a plain grant continues the count.
    pub fn of_table(name: &str, table: &Slots, acquired_ms: i64, expires_ms: i64) -> Self {
        let latest = table.holders.iter().max_by_key(|h| h.expires_ms);
        let last = table.next_fence.saturating_sub(1);
        LeaseRecord {
            name: name.to_string(),
            lease_id: table.version.clone(),
            state: if latest.is_some() {
                RecordState::Held
            } else {
                RecordState::Released
            },
            owner: latest.map(|h| h.owner.clone()).unwrap_or_default(),
            reason: latest.and_then(|h| h.reason.clone()),
            pid: None,
            host: None,
            supervised: false,
            revoked_by: None,
            client: CLIENT_TAG.to_string(),
            fence: (last > 0).then_some(last),
            fence_limit: table.fence_limit,
            acquired_ms,
            expires_ms,
            lease_duration: 0,
            released_lease: None,
            released_ms: None,
            problem: None,
            // Nobody holds or waits, and no line has a mark to keep: a
            // released record, as a plain release leaves it. (A mark
            // stays: without it a newcomer's blind grant of the released
            // record would pass those waiting in the line.)
            slots: (!table.is_empty() || table.line != super::line::Mark::default())
                .then(|| table.clone()),
        }
    }

    /// This record revoked by `by` (see `super::revoke`): the same lease,
    /// its renewals refused from now on.
    pub fn revoked(&self, by: &str) -> Self {
        LeaseRecord {
            revoked_by: Some(by.to_string()),
            ..self.clone()
        }
    }

    /// This record, when it is our own held lease with a counter of
    /// tokens, as the one exclusive holder of a table (see
    /// `CasStore::as_table`).
    pub fn as_table(&self) -> Option<Slots> {
        if self.state != RecordState::Held
            || self.problem.is_some()
            || self.slots.is_some()
            || !self.client.starts_with("awsflock-rs")
        {
            return None;
        }
        // A holder that took its block's last token (fence = limit) moves
        // too: the table's next admission reserves a fresh block.
        let next = match (self.fence, self.fence_limit) {
            (Some(f), Some(l)) if f <= l => f + 1,
            _ => return None,
        };
        let holder = super::slots::Holder {
            lease_id: self.lease_id.clone(),
            kind: super::slots::Kind::Exclusive,
            owner: self.owner.clone(),
            reason: self.reason.clone(),
            fence: next - 1,
            expires_ms: self.expires_ms,
            acquired_ms: self.acquired_ms,
            host: self.host.clone(),
            pid: self.pid,
            supervised: self.supervised,
            revoked_by: self.revoked_by.clone(),
            lease_ms: Some(self.lease_duration.saturating_mul(1000) as i64),
        };
        Some(Slots::of_holder(holder, (next, self.fence_limit)))
    }

    /// The holder table this record keeps, when it is current: its version
    /// is the record's lease id (see [`LeaseRecord::slots`]).
    pub fn current_slots(&self) -> Option<&Slots> {
        self.slots
            .as_ref()
            .filter(|t| t.version == self.lease_id && self.problem.is_none())
    }

    /// The next token from this record's own block, if it has one left.
    pub fn next_counter_fence(&self) -> Option<u64> {
        match (self.fence, self.fence_limit) {
            (Some(f), Some(l)) if f < l => Some(f + 1),
            _ => None,
        }
    }

    /// This record renewed to `next_id` for `duration` from `st`.
    pub fn renewed(&self, next_id: &str, st: &Stamp, duration_s: u64) -> Self {
        LeaseRecord {
            lease_id: next_id.to_string(),
            expires_ms: st.expires_ms,
            lease_duration: duration_s,
            slots: None,
            ..self.clone()
        }
    }

    /// This record released: `nonce` becomes its lease id (so only this
    /// release call can recognise its own lost answer).
    pub fn released(&self, nonce: &str, now_ms: i64) -> Self {
        LeaseRecord {
            revoked_by: None,
            released_lease: Some(self.lease_id.clone()),
            lease_id: nonce.to_string(),
            state: RecordState::Released,
            released_ms: Some(now_ms),
            problem: None,
            slots: None,
            ..self.clone()
        }
    }

    /// What the record says, for people. `held` is decided by the caller
    /// (it needs the store's clock).
    pub fn info(&self, held: bool, expires_in_ms: Option<i64>) -> LockInfo {
        if let Some(problem) = &self.problem {
            return LockInfo {
                held,
                owner: Some(self.owner.clone()).filter(|o| !o.is_empty()),
                // The stand-in's own id: what `release --force` releases.
                lease_id: Some(self.lease_id.clone()),
                problem: Some(problem.clone()),
                ..super::expiry::absent_info(&self.name)
            };
        }
        let released = self.state == RecordState::Released;
        LockInfo {
            name: self.name.clone(),
            held,
            owner: Some(self.owner.clone()),
            reason: self.reason.clone(),
            fence: self.fence,
            lease_id: if released {
                None
            } else {
                Some(self.lease_id.clone())
            },
            acquired_at_ms: Some(self.acquired_ms),
            expires_at_ms: if released {
                None
            } else {
                Some(self.expires_ms)
            },
            expires_in_ms: if released { None } else { expires_in_ms },
            lease_duration_s: Some(self.lease_duration),
            pid: self.pid,
            host: self.host.clone(),
            client: Some(self.client.clone()),
            problem: None,
            supervised: self.supervised && !released,
            revoked_by: if released {
                None
            } else {
                self.revoked_by.clone()
            },
            ..LockInfo::default()
        }
    }

    /// Serialises the record (pretty, so people can read it).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a record; a document that is not one is reported, not guessed
    /// at, with the first field that is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, NotARecord> {
        let not = NotARecord;
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| not(format!("not JSON ({e})")))?;
        let Some(obj) = value.as_object() else {
            return Err(not("not a JSON object".into()));
        };
        check_fields(obj).map_err(not)?;
        serde_json::from_value(value).map_err(|e| not(e.to_string()))
    }

    /// Reads a stored document as [`from_json`](Self::from_json) does, but
    /// never fails: a document that is not a readable record becomes a
    /// stand-in that is held, never expires and says what is wrong
    /// (`problem`), so that no waiter takes it over, `status` and `list` show
    /// it, and `release --force` (which replaces it by a released record
    /// conditioned on `version`) frees it. `version` is the document's
    /// version (an ETag): the stand-in's lease id is derived from it, so it
    /// changes whenever the document does.
    pub fn decode(bytes: &[u8], name: &str, version: &str) -> Self {
        match Self::from_json(bytes) {
            Ok(r) => r,
            Err(e) => {
                let owner = serde_json::from_slice::<serde_json::Value>(bytes)
                    .ok()
                    .and_then(|v| v.get("owner")?.as_str().map(clip))
                    .unwrap_or_default();
                LeaseRecord {
                    name: name.to_string(),
                    lease_id: format!("unreadable-{}", version.trim_matches('"')),
                    state: RecordState::Held,
                    owner,
                    reason: None,
                    pid: None,
                    host: None,
                    supervised: false,
                    revoked_by: None,
                    client: String::new(),
                    fence: None,
                    fence_limit: None,
                    acquired_ms: 0,
                    expires_ms: MAX_TIME_MS,
                    lease_duration: 0,
                    released_lease: None,
                    released_ms: None,
                    problem: Some(e.0),
                    slots: None,
                }
            }
        }
    }
}

/// Why a stored document is not a lease record: the first field that is
/// wrong, or that it is not a JSON object at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an awsflock lease record: {0}")]
pub struct NotARecord(pub String);

/// Checks the type and range of every field that has one, so that the
/// message names the field (serde's alone does not) and no stored number
/// can overflow later arithmetic.
fn check_fields(obj: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    use serde_json::Value;
    let shown = |v: &Value| clip(&v.to_string());
    for k in ["name", "lease_id", "state", "owner"] {
        match obj.get(k) {
            None => return Err(format!("{k} is missing")),
            Some(Value::String(_)) => {}
            Some(v) => return Err(format!("{k} is not a string ({})", shown(v))),
        }
    }
    for k in ["reason", "host", "client", "released_lease", "revoked_by"] {
        match obj.get(k) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(v) => return Err(format!("{k} is not a string ({})", shown(v))),
        }
    }
    if let Some(st) = obj.get("state").and_then(Value::as_str) {
        if st != "held" && st != "released" {
            return Err(format!(
                "state is neither \"held\" nor \"released\" ({})",
                clip(st)
            ));
        }
    }
    let ranges: [(&str, bool, i64, i64); 8] = [
        ("acquired_ms", true, 0, MAX_TIME_MS),
        ("expires_ms", true, 0, MAX_TIME_MS),
        ("lease_duration", true, 0, MAX_DURATION_S),
        ("released_ms", false, 0, MAX_TIME_MS),
        ("pid", false, 0, u32::MAX as i64),
        ("fence", false, 0, i64::MAX),
        ("fence_limit", false, 0, i64::MAX),
        ("supervised", false, 0, 0),
    ];
    for (k, required, lo, hi) in ranges {
        match obj.get(k) {
            None if required => return Err(format!("{k} is missing")),
            None | Some(Value::Null) => {}
            Some(Value::Bool(_)) if k == "supervised" => {}
            Some(v) if k == "supervised" => {
                return Err(format!("{k} is not true or false ({})", shown(v)));
            }
            Some(Value::Number(n)) => match n.as_i64() {
                Some(x) if (lo..=hi).contains(&x) => {}
                _ => return Err(format!("{k} is out of range ({n})")),
            },
            Some(v) => return Err(format!("{k} is not a number ({})", shown(v))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boottime::BootInstant as Instant;
    use std::time::Duration;

    fn stamp() -> Stamp {
        Stamp {
            shown_ms: 1_000,
            expires_ms: 61_000,
            sent: Instant::now(),
            sent_wall_ms: 1_000,
            calibrated: true,
        }
    }

    fn req() -> AcquireRequest {
        AcquireRequest {
            name: "deploy".into(),
            lease: Duration::from_secs(60),
            wait: None,
            owner: "alice".into(),
            reason: Some("terraform apply".into()),
            on_wait: None,
            supervised: false,
            max_holders: None,
            shared: false,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let r = LeaseRecord::grant(&req(), "L1", &stamp(), Some(7), Some(FENCE_BLOCK));
        assert_eq!(LeaseRecord::from_json(&r.to_json()).unwrap(), r);
        assert!(LeaseRecord::from_json(b"{\"nope\":1}").is_err());
        assert_eq!(LeaseRecord::decode(&r.to_json(), "deploy", "\"e1\""), r);
    }

    #[test]
    fn unreadable_documents_name_the_field_and_decode_to_a_held_stand_in() {
        let r = LeaseRecord::grant(&req(), "L1", &stamp(), Some(7), Some(FENCE_BLOCK));
        let mut v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        for (field, bad, says) in [
            (
                "expires_ms",
                serde_json::json!("soon"),
                "expires_ms is not a number",
            ),
            (
                "expires_ms",
                serde_json::json!(i64::MAX),
                "expires_ms is out of range",
            ),
            (
                "expires_ms",
                serde_json::json!(-1),
                "expires_ms is out of range",
            ),
            (
                "expires_ms",
                serde_json::json!(1e300),
                "expires_ms is out of range",
            ),
            (
                "lease_duration",
                serde_json::json!(1e30),
                "lease_duration is out of range",
            ),
            ("owner", serde_json::json!(7), "owner is not a string"),
            ("state", serde_json::json!("gone"), "state"),
        ] {
            let good = v[field].clone();
            v[field] = bad;
            let bytes = serde_json::to_vec(&v).unwrap();
            let e = LeaseRecord::from_json(&bytes).unwrap_err();
            assert!(e.0.contains(says), "{field}: {e}");
            let d = LeaseRecord::decode(&bytes, "deploy", "\"abc\"");
            assert_eq!(d.lease_id, "unreadable-abc");
            assert_eq!(d.state, RecordState::Held);
            assert_eq!(d.expires_ms, MAX_TIME_MS);
            assert!(d.problem.as_deref().unwrap().contains(says));
            let info = d.info(true, None);
            assert!(info.held && info.problem.is_some() && info.expires_at_ms.is_none());
            v[field] = good;
        }
        let d = LeaseRecord::decode(b"hello", "x", "e");
        assert!(d.problem.unwrap().contains("not JSON"));
    }

    #[test]
    fn counter_runs_to_the_limit_only() {
        let mut r = LeaseRecord::grant(&req(), "L1", &stamp(), Some(9), Some(10));
        assert_eq!(r.next_counter_fence(), Some(10));
        r.fence = Some(10);
        assert_eq!(r.next_counter_fence(), None);
        r.fence = None;
        assert_eq!(r.next_counter_fence(), None);
    }

    #[test]
    fn release_keeps_the_counter_and_changes_the_lease_id() {
        let r = LeaseRecord::grant(&req(), "L1", &stamp(), Some(3), Some(10));
        let rel = r.released("N", 5_000);
        assert_eq!(rel.lease_id, "N");
        assert_eq!(rel.released_lease.as_deref(), Some("L1"));
        assert_eq!(rel.state, RecordState::Released);
        assert_eq!(rel.next_counter_fence(), Some(4));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("held")),
            Just(serde_json::Value::from("released")),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn valid_record() -> impl Strategy<Value = LeaseRecord> {
        (
            ("\\PC{1,20}", "[0-9a-f-]{1,36}", any::<bool>(), "\\PC{0,20}"),
            (
                proptest::option::of("\\PC{0,20}"),
                proptest::option::of(any::<u32>()),
                proptest::option::of(0..=i64::MAX as u64),
                0..=MAX_TIME_MS,
                0..=MAX_TIME_MS,
                0..=MAX_DURATION_S as u64,
            ),
        )
            .prop_map(
                |((name, lease_id, held, owner), (reason, pid, fence, a, e, d))| LeaseRecord {
                    name,
                    lease_id,
                    state: if held {
                        RecordState::Held
                    } else {
                        RecordState::Released
                    },
                    owner,
                    reason,
                    pid,
                    host: Some("h".into()),
                    supervised: held,
                    revoked_by: None,
                    client: "c".into(),
                    fence,
                    fence_limit: fence.map(|f| f.saturating_add(10).min(i64::MAX as u64)),
                    acquired_ms: a,
                    expires_ms: e,
                    lease_duration: d,
                    released_lease: None,
                    released_ms: None,
                    problem: None,
                    slots: None,
                },
            )
    }

    /// The fields a record has, each given an arbitrary JSON value.
    fn record_like() -> impl Strategy<Value = serde_json::Value> {
        let fields = [
            "name",
            "lease_id",
            "state",
            "owner",
            "reason",
            "pid",
            "host",
            "supervised",
            "client",
            "fence",
            "fence_limit",
            "acquired_ms",
            "expires_ms",
            "lease_duration",
            "released_lease",
            "released_ms",
        ];
        proptest::collection::vec(
            (proptest::sample::select(fields.to_vec()), any_json()),
            0..20,
        )
        .prop_map(|kv| {
            serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        })
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and always give a record.
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let r = LeaseRecord::decode(&bytes, "n", "e");
            prop_assert!(r.problem.is_some() || LeaseRecord::from_json(&bytes).is_ok());
            let _ = r.info(true, Some(r.expires_ms));
        }

        /// Record-shaped JSON with arbitrary values: decoded or marked, and
        /// whatever is decoded stays within the ranges arithmetic relies on.
        #[test]
        fn record_shaped_json_is_decoded_in_range_or_marked(v in record_like()) {
            let bytes = serde_json::to_vec(&v).unwrap();
            let r = LeaseRecord::decode(&bytes, "n", "e");
            prop_assert!((0..=MAX_TIME_MS).contains(&r.expires_ms));
            prop_assert!((0..=MAX_TIME_MS).contains(&r.acquired_ms));
            prop_assert!(r.lease_duration <= MAX_DURATION_S as u64);
            if r.problem.is_some() {
                prop_assert_eq!(r.state, RecordState::Held);
                prop_assert_eq!(r.expires_ms, MAX_TIME_MS);
            }
        }

        /// Every valid record survives the trip through its stored form.
        #[test]
        fn valid_records_round_trip(r in valid_record()) {
            let bytes = r.to_json();
            prop_assert_eq!(LeaseRecord::from_json(&bytes), Ok(r.clone()));
            prop_assert_eq!(LeaseRecord::decode(&bytes, "other", "e"), r);
        }
    }
}
