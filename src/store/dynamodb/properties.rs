//! Property tests: any item, however malformed, is judged and shown without
//! a panic.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::*;
use crate::protocol::record::{MAX_DURATION_S, MAX_TIME_MS};
use crate::store::aws::StoreInterceptor;
use proptest::prelude::*;

/// A store that sends nothing: enough to judge and show items.
fn store() -> DynamoDb {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .build();
    let clock = Arc::new(ServerClock::new());
    let sdk = Sdk::new(
        Client::from_conf(conf),
        "t".into(),
        StoreInterceptor::new(clock.clone()),
    );
    DynamoDb::over(sdk, clock, "h".into())
}

fn any_value() -> impl Strategy<Value = AttributeValue> {
    prop_oneof![
        "\\PC{0,12}".prop_map(AttributeValue::S),
        any::<i64>().prop_map(|n| AttributeValue::N(n.to_string())),
        any::<f64>().prop_map(|n| AttributeValue::N(n.to_string())),
        "[-+]?[0-9]{1,40}(\\.[0-9]{0,3})?([eE][-+]?[0-9]{1,3})?".prop_map(AttributeValue::N),
        "\\PC{0,8}".prop_map(AttributeValue::N),
        any::<bool>().prop_map(AttributeValue::Bool),
        Just(AttributeValue::Null(true)),
        Just(AttributeValue::L(vec![])),
        Just(AttributeValue::M(HashMap::new())),
        Just(AttributeValue::Ss(vec!["a".into()])),
    ]
}

fn any_item() -> impl Strategy<Value = Item> {
    let names = [
        attr::LEASE_ID,
        attr::LEASE_DURATION,
        attr::OWNER,
        attr::EXPIRATION_TIME,
        attr::FENCE,
        attr::FENCE_LIMIT,
        attr::EXPIRES_MS,
        attr::ACQUIRED_MS,
        attr::REASON,
        attr::PID,
        attr::HOST,
        attr::CLIENT,
        attr::RELEASED_LEASE,
        attr::RELEASED_MS,
    ];
    proptest::collection::hash_map(proptest::sample::select(names.to_vec()), any_value(), 0..14)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

proptest! {
    /// No item panics the decoder or the judgement, and what is decoded
    /// is in range; an unreadable expiry never counts as expired.
    #[test]
    fn any_item_is_judged_and_shown_without_panic(item in any_item()) {
        let db = store();
        let info = db.info_of("n", Some(&item));
        if let Some(e) = info.expires_at_ms {
            prop_assert!((0..=MAX_TIME_MS + 1000).contains(&e));
        }
        if let Some(a) = info.acquired_at_ms {
            prop_assert!((0..=MAX_TIME_MS).contains(&a));
        }
        let expiry_unreadable = get_s(&item, attr::LEASE_ID).is_none()
            || get_num(&item, attr::EXPIRES_MS, 0, MAX_TIME_MS).is_err()
            || (get_ms(&item, attr::EXPIRES_MS).unwrap_or(0) == 0
                && get_num(&item, attr::EXPIRATION_TIME, 0, MAX_TIME_MS / 1000)
                    .ok()
                    .flatten()
                    .is_none());
        if expiry_unreadable && !<DynamoDb as CasStore>::is_released(&item) {
            prop_assert!(info.held, "an unreadable expiry must count as held: {:?}", item);
        }
        if expiry_unreadable {
            prop_assert!(info.problem.is_some() || <DynamoDb as CasStore>::is_released(&item));
        }
        let _ = cas::holder_detail(&info);
    }

    /// A valid item, as awsflock writes it, reads back exactly.
    #[test]
    fn valid_items_round_trip(
        exp in 1..=MAX_TIME_MS - 1000,
        acq in 0..=MAX_TIME_MS,
        dur in 1..=MAX_DURATION_S,
        fence in 0..=i64::MAX - 1,
        pid in any::<u32>(),
        owner in "\\PC{0,20}",
    ) {
        let item: Item = HashMap::from([
            (attr::LEASE_ID.to_string(), s("L")),
            (attr::LEASE_DURATION.to_string(), n(dur)),
            (attr::OWNER.to_string(), s(owner.clone())),
            (attr::EXPIRATION_TIME.to_string(), n(ceil_secs(exp))),
            (attr::EXPIRES_MS.to_string(), n(exp)),
            (attr::ACQUIRED_MS.to_string(), n(acq)),
            (attr::FENCE.to_string(), n(fence)),
            (attr::FENCE_LIMIT.to_string(), n(fence + 1)),
            (attr::PID.to_string(), n(pid)),
            (attr::CLIENT.to_string(), s(CLIENT_TAG)),
        ]);
        let info = store().info_of("n", Some(&item));
        prop_assert_eq!(info.problem, None);
        prop_assert_eq!(info.expires_at_ms, Some(exp));
        prop_assert_eq!(info.acquired_at_ms, Some(acq));
        prop_assert_eq!(info.lease_duration_s, Some(dur as u64));
        prop_assert_eq!(info.fence, Some(fence as u64));
        prop_assert_eq!(info.pid, Some(pid));
        prop_assert_eq!(info.owner, Some(owner));
        prop_assert_eq!(info.lease_id.as_deref(), Some("L"));
    }
}
