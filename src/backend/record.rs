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

use super::{AcquireRequest, LockInfo};
use crate::backend::cas::Stamp;

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
            client: super::CLIENT_TAG.to_string(),
            fence,
            fence_limit,
            acquired_ms: st.shown_ms,
            expires_ms: st.expires_ms,
            lease_duration: req.lease.as_secs(),
            released_lease: None,
            released_ms: None,
        }
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
            ..self.clone()
        }
    }

    /// This record released: `nonce` becomes its lease id (so only this
    /// release call can recognise its own lost answer).
    pub fn released(&self, nonce: &str, now_ms: i64) -> Self {
        LeaseRecord {
            released_lease: Some(self.lease_id.clone()),
            lease_id: nonce.to_string(),
            state: RecordState::Released,
            released_ms: Some(now_ms),
            ..self.clone()
        }
    }

    /// What the record says, for people. `held` is decided by the caller
    /// (it needs the store's clock).
    pub fn info(&self, held: bool, expires_in_ms: Option<i64>) -> LockInfo {
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
        }
    }

    /// Serialises the record (pretty, so people can read it).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a record; a document that is not one is reported, not guessed at.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not an awsflock lease record: {e}"))
    }
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
        }
    }

    #[test]
    fn round_trips_through_json() {
        let r = LeaseRecord::grant(&req(), "L1", &stamp(), Some(7), Some(FENCE_BLOCK));
        assert_eq!(LeaseRecord::from_json(&r.to_json()).unwrap(), r);
        assert!(LeaseRecord::from_json(b"{\"nope\":1}").is_err());
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
