//! The model of awsflock 0.2.0, the clients that share DynamoDB tables
//! with ours.

use std::sync::Arc;

use super::client::{LOCK, Params, Spec, Who, ms};
use super::clock::EPOCH_MS;
use super::net::SimStore;
use crate::store::dynamodb::{Item, attr, get_i64, get_s, n, s};
use crate::timebase::TimeSource;

/// awsflock 0.2.0 as it really does it: its expiry stamped with its own
/// clock when its acquire *starts*, whole items put on `lease_id`, expiry
/// judged on its own clock with 5 s of margin, release by delete. It acts
/// until its command ends or its lease ends by its own belief (the grant
/// plus the lease). Modelled within its own assumption: it waits at most
/// 2.5 s (`--wait-time`), and its clock is within 0.5 s of the store's.
pub async fn v020_client(who: &Arc<Who>, spec: &Spec, p: Params) {
    let store = SimStore::new(who.w.clone(), who.mach.clone(), who.name.clone());
    let lease_ms = p.lease.as_millis() as i64;
    for cycle in 0..spec.cycles {
        tokio::time::sleep(spec.think[cycle as usize]).await;
        let start_wall = who.mach.wall_ms();
        let exp_s = (start_wall + lease_ms) / 1000;
        let lease_id = uuid::Uuid::new_v4().to_string();
        let mut item = Item::new();
        item.insert(attr::LOCK_ID.into(), s(LOCK));
        item.insert(attr::LEASE_ID.into(), s(&lease_id));
        item.insert(attr::LEASE_DURATION.into(), n(p.lease.as_secs()));
        item.insert(attr::OWNER.into(), s(&who.name));
        item.insert(attr::EXPIRATION_TIME.into(), n(exp_s));
        who.log(format_args!("0.2.0 acquire"));
        if !v020_acquire(who, &store, &item, start_wall).await {
            who.log(format_args!("0.2.0 gave up"));
            continue;
        }
        let g = who.mach.wall_ms();
        if g - start_wall > 3000 {
            // Outside 0.2.0's own assumption (it waited so long that its
            // lease, stamped at the start, is mostly gone): not modelled.
            who.log(format_args!(
                "0.2.0 granted after a long wait; does not act"
            ));
            continue;
        }
        who.log(format_args!(
            "0.2.0 granted, expiration_time {:.3}s (store)",
            (exp_s * 1000 - EPOCH_MS) as f64 / 1000.0
        ));
        let believed = ms((g + lease_ms - who.mach.wall_ms()).max(0) as u64);
        let work = spec.work[cycle as usize];
        who.open(None);
        tokio::time::sleep(work.min(believed)).await;
        who.close();
        if work < believed {
            let id = lease_id.clone();
            let _ = store.call(move |t, _, _| t.delete_v020(LOCK, &id)).await;
            who.log(format_args!("0.2.0 released"));
        } else {
            who.log(format_args!(
                "0.2.0 stops: its lease ended by its own clock"
            ));
        }
    }
}

/// awsflock 0.2.0's acquire of `item`, begun at `start_wall` on its wall
/// clock: whether it put it.
async fn v020_acquire(who: &Who, store: &SimStore, item: &Item, start_wall: i64) -> bool {
    let mut backoff = ms(500);
    loop {
        let Ok(cur) = store.read(LOCK).await else {
            return false; // 0.2.0 does not catch the SDK's errors
        };
        let old = match &cur {
            None => None,
            Some(i) => {
                let Some(e) = get_i64(i, attr::EXPIRATION_TIME) else {
                    return false; // it crashes on such an item
                };
                if who.mach.wall_ms() as f64 / 1000.0 - e as f64 > 5.0 {
                    get_s(i, attr::LEASE_ID).map(String::from)
                } else {
                    let waited = who.mach.wall_ms() - start_wall;
                    if waited + backoff.as_millis() as i64 > 2500 {
                        return false;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ms(1000));
                    continue;
                }
            }
        };
        if cur.is_some() && old.is_none() {
            return false;
        }
        let (it, o) = (item.clone(), old.clone());
        match store
            .call(move |t, _, _| t.put_v020(LOCK, it.clone(), o.as_deref()))
            .await
        {
            Ok(true) => return true,
            Ok(false) => continue,
            Err(_) => return false,
        }
    }
}
