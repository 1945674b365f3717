//! One simulated client's view of the store: a [`CasStore`] over the shared
//! [`World`], sending each request through a simulated network that may
//! delay, lose, duplicate or throttle it, and calibrating its own
//! [`ServerClock`] from the simulated `Date` header exactly as
//! `src/store/aws.rs` does for the real stores.
//!
//! The requests are the ones `src/store/dynamodb.rs` sends (same
//! attributes, same conditions: see [`super::world::Table`]); every
//! client-side decision about a returned item is the real one
//! (`won_anyway`, `renew_refused`, `renewed_stamp`, `DynamoDb::expiry_ms`,
//! `takeover_margin_of`, `cas::finish`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use super::World;
use super::world::{SimClock, TxAnswer};
use crate::boottime::BootInstant;
use crate::clock::ServerClock;
use crate::error::{Error, Result};
use crate::store::cas::{self, CasStore, Outcome, Stamp};
use crate::store::dynamodb::{
    self, DynamoDb, FENCE_BLOCK, GrantKind, Item, RenewRefused, attr, ceil_secs, get_s, get_u64, n,
    s,
};
use crate::store::{AcquireRequest, CLIENT_TAG, Lease, LockInfo};

/// What the network does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Ok,
    /// Never reaches the store.
    RequestLost,
    /// Applied; the answer never comes.
    AnswerLost,
    /// Applied twice (an SDK retry of a write that landed); the second answer comes.
    Duplicate,
    /// Refused (throttling, 5xx): not applied, an error with a `Date`.
    Throttled,
}

pub struct SimStore {
    pub world: Arc<World>,
    pub mach: Arc<SimClock>,
    pub clock: ServerClock,
    pub host: String,
    hw_hint: Mutex<Option<u64>>,
}

impl SimStore {
    pub fn new(world: Arc<World>, mach: Arc<SimClock>, host: String) -> SimStore {
        SimStore {
            world,
            mach,
            clock: ServerClock::new(),
            host,
            hw_hint: Mutex::new(None),
        }
    }

    /// Sends one request: `op` is applied to the table atomically at one
    /// instant of true time (twice for a duplicate).
    pub async fn call<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut super::world::Table, i64, &mut Vec<String>) -> T + Send + 'static,
    {
        // A paused machine sends nothing.
        self.mach.awake().await;
        let sent = BootInstant::now();
        let (fate, there, back) = self.world.draw_fate();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let w = self.world.clone();
        // The network and the store: not the client's task, so a request
        // that left is applied even if the client crashes or gives up.
        tokio::spawn(async move {
            tokio::time::sleep(there).await;
            let now = w.store_ms();
            let out = {
                let mut table = w.table.lock().unwrap();
                let mut v = Vec::new();
                let out = match fate {
                    Fate::RequestLost | Fate::Throttled => None,
                    Fate::Duplicate => {
                        op(&mut table, now, &mut v);
                        Some(op(&mut table, now, &mut v))
                    }
                    _ => Some(op(&mut table, now, &mut v)),
                };
                w.violations.lock().unwrap().extend(v);
                out
            };
            let _ = tx.send((out, now));
        });
        let (out, date_ms) = rx
            .await
            .map_err(|_| Error::Unavailable("simulated store went away".into()))?;
        tokio::time::sleep(back).await;
        // A paused machine receives nothing until it wakes.
        self.mach.awake().await;
        let received = BootInstant::now();
        match fate {
            Fate::RequestLost | Fate::AnswerLost => {
                Err(Error::Unavailable("simulated timeout".into()))
            }
            Fate::Throttled => {
                self.clock.observe(sent, received, date_ms.div_euclid(1000));
                Err(Error::Unavailable("simulated throttling".into()))
            }
            Fate::Ok | Fate::Duplicate => {
                self.clock.observe(sent, received, date_ms.div_euclid(1000));
                Ok(out.expect("applied"))
            }
        }
    }

    /// As `DynamoDb::grant_attrs`.
    fn grant_attrs(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        st: &Stamp,
    ) -> Vec<(&'static str, AttributeValue)> {
        vec![
            (attr::LEASE_ID, s(lease_id)),
            (attr::LEASE_DURATION, n(req.lease.as_secs())),
            (attr::OWNER, s(req.owner.clone())),
            (attr::EXPIRATION_TIME, n(ceil_secs(st.expires_ms))),
            (attr::EXPIRES_MS, n(st.expires_ms)),
            (attr::ACQUIRED_MS, n(st.shown_ms)),
            (attr::HOST, s(self.host.clone())),
            (attr::CLIENT, s(CLIENT_TAG)),
        ]
    }

    async fn grant_counter(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<String>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        let attrs = self.grant_attrs(req, lease_id, st);
        let name = req.name.clone();
        let res = self
            .call(move |t, _, v| t.grant_counter(&name, &attrs, seen.as_deref(), v))
            .await?;
        Ok(match res {
            Ok(fence) => Outcome::Granted(Some(fence)),
            Err(item) => dynamodb::won_anyway(item, lease_id),
        })
    }

    async fn grant_fresh(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<String>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        let hw = *self.hw_hint.lock().unwrap();
        let attrs = self.grant_attrs(req, lease_id, st);
        let (name, token) = (req.name.clone(), lease_id.to_string());
        let res = self
            .call(move |t, _, v| {
                t.grant_fresh(&name, &attrs, seen.as_deref(), hw, &token, FENCE_BLOCK, v)
            })
            .await?;
        Ok(match res {
            TxAnswer::Ok => Outcome::Granted(Some(hw.unwrap_or(0) + 1)),
            TxAnswer::LockFailed(item) => dynamodb::won_anyway(item, lease_id),
            TxAnswer::HwFailed(h) => {
                *self.hw_hint.lock().unwrap() = h.or(Some(0));
                Outcome::Retry
            }
        })
    }
}

#[async_trait::async_trait]
impl CasStore for SimStore {
    type Record = Item;

    fn describe_store(&self) -> String {
        "simulated store".into()
    }

    fn clock(&self) -> &ServerClock {
        &self.clock
    }

    /// As `DynamoDb::grant`: the write `dynamodb::grant_kind` chooses.
    async fn grant(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&Option<Item>>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        match dynamodb::grant_kind(seen) {
            GrantKind::Counter(id) => self.grant_counter(req, lease_id, id, st).await,
            GrantKind::Fresh(id) => self.grant_fresh(req, lease_id, id, st).await,
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Item>> {
        let name = name.to_string();
        self.call(move |t, _, _| t.items.get(&name).cloned()).await
    }

    fn lease_id_of(rec: &Item) -> Option<String> {
        get_s(rec, attr::LEASE_ID).map(String::from)
    }

    fn is_released(rec: &Item) -> bool {
        dynamodb::get_i64(rec, attr::EXPIRATION_TIME) == Some(0)
    }

    fn expiry_ms(rec: &Item) -> Option<i64> {
        DynamoDb::expiry_ms(rec)
    }

    fn takeover_margin_ms(rec: &Item) -> i64 {
        dynamodb::takeover_margin_of(rec)
    }

    fn info(&self, name: &str, rec: Option<&Item>) -> LockInfo {
        let mut info = cas::absent_info(name);
        if let Some(i) = rec {
            info.held = cas::is_held(self, i);
            info.lease_id = get_s(i, attr::LEASE_ID).map(String::from);
            info.owner = get_s(i, attr::OWNER).map(String::from);
            info.fence = get_u64(i, attr::FENCE);
            info.expires_at_ms = DynamoDb::expiry_ms(i);
        }
        info
    }

    /// As `DynamoDb::renew_to`.
    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        let st = Stamp::now(&self.clock, duration);
        let attrs = vec![
            (attr::LEASE_ID, s(next_id)),
            (attr::LEASE_DURATION, n(duration.as_secs())),
            (attr::EXPIRATION_TIME, n(ceil_secs(st.expires_ms))),
            (attr::EXPIRES_MS, n(st.expires_ms)),
        ];
        let no_shorter = (!st.calibrated).then_some((ceil_secs(st.expires_ms), st.expires_ms));
        let (name, cur) = (lease.name.clone(), lease.lease_id.clone());
        let res = self
            .call(move |t, _, _| t.renew(&name, &cur, &attrs, no_shorter))
            .await?;
        let item = match res {
            Ok(item) => Some(item),
            Err(old) => match dynamodb::renew_refused(
                old.as_ref(),
                &lease.lease_id,
                next_id,
                !st.calibrated,
                self.clock.is_calibrated(),
            ) {
                RenewRefused::Landed(i) => Some(i),
                RenewRefused::Again => {
                    return Box::pin(self.renew_to(lease, duration, next_id)).await;
                }
                RenewRefused::NotHeld => {
                    return Err(Error::NotHeld {
                        name: lease.name.clone(),
                        lease_id: lease.lease_id.clone(),
                        detail: String::new(),
                    });
                }
            },
        };
        let fence = item
            .as_ref()
            .filter(|i| get_s(i, attr::CLIENT).is_some())
            .and_then(|i| get_u64(i, attr::FENCE));
        let st = dynamodb::renewed_stamp(item.as_ref(), st);
        let mut renewed = Box::pin(cas::finish(
            self,
            &lease.name,
            next_id.to_string(),
            fence,
            duration,
            st,
        ))
        .await?;
        renewed.acquired_at_ms = lease.acquired_at_ms;
        Ok(renewed)
    }

    /// As `DynamoDb`'s release: a fresh lease id doubles as the call's nonce.
    async fn release_id(&self, name: &str, lease_id: &str) -> Result<()> {
        let nonce = uuid::Uuid::new_v4().to_string();
        let released_ms = self.clock.lower_ms();
        let (nm, id, no) = (name.to_string(), lease_id.to_string(), nonce.clone());
        match self
            .call(move |t, _, _| t.release(&nm, &id, &no, released_ms))
            .await?
        {
            Ok(()) => Ok(()),
            Err(Some(i)) if get_s(&i, attr::LEASE_ID) == Some(nonce.as_str()) => Ok(()),
            Err(_) => Err(Error::NotHeld {
                name: name.to_string(),
                lease_id: lease_id.to_string(),
                detail: String::new(),
            }),
        }
    }

    /// `list` is not simulated.
    async fn records(&self) -> Result<Vec<(String, Item)>> {
        Ok(Vec::new())
    }

    async fn create_store(&self) -> Result<()> {
        Ok(())
    }
}
