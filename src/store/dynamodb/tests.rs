//! Unit tests of the DynamoDB store's decisions.

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_dynamodb::types::{AttributeValue, TableStatus, TimeToLiveStatus};

use super::table::*;
use super::*;

#[test]
fn table_create_waits_for_active_within_its_limit() {
    let now = Instant::now();
    let until = now + Duration::from_secs(300);
    let active = Some(&TableStatus::Active);
    let creating = Some(&TableStatus::Creating);
    assert_eq!(table_wait(active, now, until), TableWait::Ready);
    assert_eq!(table_wait(creating, now, until), TableWait::Again);
    assert_eq!(table_wait(None, now, until), TableWait::Again);
    let late = until + Duration::from_secs(1);
    assert_eq!(table_wait(creating, late, until), TableWait::TimedOut);
    // Active at the last look counts, however late.
    assert_eq!(table_wait(active, late, until), TableWait::Ready);
}

#[test]
fn ttl_is_turned_on_unless_it_is_on_or_turning_on() {
    assert!(ttl_needs_enabling(None));
    assert!(ttl_needs_enabling(Some(&TimeToLiveStatus::Disabled)));
    assert!(ttl_needs_enabling(Some(&TimeToLiveStatus::Disabling)));
    assert!(!ttl_needs_enabling(Some(&TimeToLiveStatus::Enabled)));
    assert!(!ttl_needs_enabling(Some(&TimeToLiveStatus::Enabling)));
}

#[test]
fn only_a_single_string_hash_key_lock_id_is_awsflocks_schema() {
    let k = |n: &str, t: &str, ty: &str| (n.to_string(), t.to_string(), ty.to_string());
    assert!(is_awsflock_schema(&[k("lock_id", "HASH", "S")]));
    assert!(!is_awsflock_schema(&[k("lock_id", "HASH", "N")]));
    assert!(!is_awsflock_schema(&[k("id", "HASH", "S")]));
    assert!(!is_awsflock_schema(&[
        k("lock_id", "HASH", "S"),
        k("at", "RANGE", "N")
    ]));
}

#[test]
fn only_a_key_schema_validation_error_means_the_wrong_table() {
    let msg = "The provided key element does not match the schema";
    assert!(is_wrong_schema(Some("ValidationException"), Some(msg)));
    assert!(!is_wrong_schema(Some("ValidationException"), Some("bad")));
    assert!(!is_wrong_schema(Some("ValidationException"), None));
    assert!(!is_wrong_schema(
        Some("ResourceNotFoundException"),
        Some(msg)
    ));
}

#[test]
fn ceil_secs_rounds_up() {
    assert_eq!(ceil_secs(1000), 1);
    assert_eq!(ceil_secs(1001), 2);
    assert_eq!(ceil_secs(1999), 2);
}

#[test]
fn old_client_leases_get_its_own_five_second_margin() {
    // Every item here has a lease_id: without one, no expiry is read at all.
    let id = || (attr::LEASE_ID.to_string(), AttributeValue::S("x".into()));
    let old = HashMap::from([(attr::EXPIRATION_TIME.to_string(), n(100)), id()]);
    assert!(written_by_v020(&old));
    assert_eq!(
        expiry_ms(&old).unwrap() + <DynamoDb as CasStore>::takeover_margin_ms(&old),
        105_000
    );
    let ours = HashMap::from([
        (attr::EXPIRATION_TIME.to_string(), n(100)),
        (attr::EXPIRES_MS.to_string(), n(99_500)),
        id(),
    ]);
    assert!(!written_by_v020(&ours));
    assert_eq!(
        <DynamoDb as CasStore>::takeover_margin_ms(&ours),
        crate::protocol::expiry::EXPIRY_MARGIN_MS
    );
    let released = HashMap::from([
        (attr::EXPIRATION_TIME.to_string(), n(0)),
        (attr::EXPIRES_MS.to_string(), n(0)),
    ]);
    assert!(!written_by_v020(&released));
}

#[test]
fn old_client_expiry_gets_a_second_more() {
    let item = HashMap::from([
        (attr::LEASE_ID.to_string(), s("L")),
        (attr::EXPIRATION_TIME.to_string(), n(100)),
    ]);
    assert_eq!(expiry_ms(&item), Some(101_000));
    let item = HashMap::from([
        (attr::LEASE_ID.to_string(), s("L")),
        (attr::EXPIRATION_TIME.to_string(), n(100)),
        (attr::EXPIRES_MS.to_string(), n(99_500)),
    ]);
    assert_eq!(expiry_ms(&item), Some(99_500));
}

#[test]
fn a_single_region_table_is_used() {
    use aws_sdk_dynamodb::types::MultiRegionConsistency as M;
    let here = Some("us-east-1");
    assert_eq!(judge_replication("t", here, &[], None), Ok(()));
    // DescribeTable may list the Region asked as a replica: still one Region.
    let own = ["us-east-1".to_string()];
    assert_eq!(judge_replication("t", here, &own, None), Ok(()));
    assert_eq!(
        judge_replication("t", here, &own, Some(&M::Eventual)),
        Ok(())
    );
    assert_eq!(judge_replication("t", None, &own, Some(&M::Strong)), Ok(()));
    assert_eq!(judge_replication("t", None, &[], None), Ok(()));
}

#[test]
fn a_global_table_is_refused_whatever_its_consistency() {
    use aws_sdk_dynamodb::types::MultiRegionConsistency as M;
    let replicas = ["eu-west-1".to_string(), "us-east-1".to_string()];
    let here = Some("us-east-1");
    for (consistency, why) in [
        (None, "multi-Region eventual consistency"),
        (Some(M::Eventual), "multi-Region eventual consistency"),
        (
            Some(M::from("SOMETHING_NEW")),
            "multi-Region something_new consistency",
        ),
    ] {
        let err = judge_replication("locks", here, &replicas, consistency.as_ref()).unwrap_err();
        for needle in [
            "DynamoDB table 'locks'",
            "Regions eu-west-1, us-east-1",
            why,
            "last writer wins",
            "two holders",
            "single-Region table",
        ] {
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
        assert!(!err.contains('\n'), "{err:?}");
    }
    // Strong consistency keeps one holder, but not the transactions that
    // reserve fencing tokens.
    let err = judge_replication("locks", here, &replicas, Some(&M::Strong)).unwrap_err();
    for needle in [
        "Regions eu-west-1, us-east-1",
        "strong consistency",
        "TransactWriteItems",
        "single-Region table",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    }
    // Only the other Regions listed: the Region asked is named too.
    let others = ["ap-south-1".to_string()];
    let err = judge_replication("locks", here, &others, None).unwrap_err();
    assert!(err.contains("Regions ap-south-1, us-east-1"), "{err:?}");
    // The Region asked unknown: two replicas still make a global table.
    assert!(judge_replication("locks", None, &replicas, None).is_err());
}

#[test]
fn an_unchecked_table_is_warned_about_with_the_permission_to_grant() {
    let w = unchecked_warning("locks");
    for needle in [
        "'locks'",
        "other Regions",
        "AccessDeniedException",
        "dynamodb:DescribeTable",
    ] {
        assert!(w.contains(needle), "{needle:?} not in {w:?}");
    }
}
