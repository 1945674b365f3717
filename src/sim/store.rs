//! One simulated client's requests to the store: the DynamoDB requests of
//! `src/store/dynamodb.rs` ([`Requests`]), applied to the shared in-memory
//! table of [`World`] (same attributes, same conditions: see
//! [`super::world::Table`]) through a simulated network that may delay,
//! lose, duplicate or throttle each one, with the simulated `Date` header
//! calibrating the client's [`ServerClock`] exactly as `src/store/aws.rs`
//! does for the real stores.
//!
//! Everything above the requests is the real store: [`SimStore::into_store`]
//! is `DynamoDb` over these requests, so every decision about an answer
//! (grants, renewals, releases, judging items) is the production code.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;

use super::World;
use super::world::{SimClock, TxAnswer};
use crate::clock::{Moment, ServerClock};
use crate::error::{Error, Result};
use crate::store::dynamodb::{DynamoDb, FENCE_BLOCK, FreshAnswer, Item, Requests};

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

/// One client's requests to the simulated table (the simulation's
/// [`Requests`]); `into_store` puts the real DynamoDB lock logic on top.
pub struct SimStore {
    pub world: Arc<World>,
    pub mach: Arc<SimClock>,
    /// Calibrated by every answer's `Date`, shared with the lock logic.
    pub clock: Arc<ServerClock>,
    pub host: String,
}

impl SimStore {
    pub fn new(world: Arc<World>, mach: Arc<SimClock>, host: String) -> SimStore {
        SimStore {
            world,
            mach,
            clock: Arc::new(ServerClock::new()),
            host,
        }
    }

    /// The real DynamoDB store's logic over these requests.
    pub fn into_store(self) -> DynamoDb<SimStore> {
        let (clock, host) = (self.clock.clone(), self.host.clone());
        DynamoDb::over(self, clock, host)
    }

    /// GetItem, strongly consistent (for the awsflock 0.2.0 model).
    pub async fn read(&self, name: &str) -> Result<Option<Item>> {
        self.get(name).await
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
        let sent = Moment::now();
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
        let received = Moment::now();
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
}

#[async_trait::async_trait]
impl Requests for SimStore {
    fn describe(&self) -> String {
        "simulated store".into()
    }

    async fn get(&self, name: &str) -> Result<Option<Item>> {
        let name = name.to_string();
        self.call(move |t, _, _| t.items.get(&name).cloned()).await
    }

    async fn grant_counter(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<Option<u64>, Option<Item>>> {
        let (name, seen) = (name.to_string(), seen.map(String::from));
        let res = self
            .call(move |t, now, v| t.grant_counter(&name, &attrs, seen.as_deref(), now, v))
            .await?;
        Ok(res.map(Some))
    }

    async fn grant_fresh(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
        hw: Option<u64>,
        token: &str,
    ) -> Result<FreshAnswer> {
        let (name, seen, token) = (name.to_string(), seen.map(String::from), token.to_string());
        let res = self
            .call(move |t, _, v| {
                t.grant_fresh(&name, &attrs, seen.as_deref(), hw, &token, FENCE_BLOCK, v)
            })
            .await?;
        Ok(match res {
            TxAnswer::Ok => FreshAnswer::Ok,
            TxAnswer::LockFailed(item) => FreshAnswer::LockFailed(item),
            TxAnswer::HwFailed(h) => FreshAnswer::HwFailed(h),
        })
    }

    async fn renew(
        &self,
        name: &str,
        cur: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        no_shorter: Option<(i64, i64)>,
    ) -> Result<std::result::Result<Option<Item>, Option<Item>>> {
        let (name, cur) = (name.to_string(), cur.to_string());
        let res = self
            .call(move |t, _, _| t.renew(&name, &cur, &attrs, no_shorter))
            .await?;
        Ok(res.map(Some))
    }

    async fn release(
        &self,
        name: &str,
        id: &str,
        nonce: &str,
        released_ms: i64,
    ) -> Result<std::result::Result<(), Option<Item>>> {
        let (name, id, nonce) = (name.to_string(), id.to_string(), nonce.to_string());
        self.call(move |t, _, _| t.release(&name, &id, &nonce, released_ms))
            .await
    }

    /// Not simulated: the simulation writes no unreadable items.
    async fn release_unreadable(&self, name: &str, _: &Item, _: i64) -> Result<()> {
        Err(Error::Unavailable(format!(
            "{name}: force-release is not simulated"
        )))
    }

    /// `list` is not simulated.
    async fn scan(&self) -> Result<Vec<(String, Item)>> {
        Ok(Vec::new())
    }

    async fn create(&self) -> Result<()> {
        Ok(())
    }

    async fn put_slots(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        removes: Vec<&'static str>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<(), Option<Item>>> {
        let (name, seen) = (name.to_string(), seen.map(String::from));
        self.call(move |t, now, v| t.put_slots(&name, &attrs, &removes, seen.as_deref(), now, v))
            .await
    }
}
