//! The simulated network between a client and the store: each request is
//! delayed, lost, answered twice or throttled as the schedule draws, and
//! applied to the store's state atomically at one instant of true time;
//! the simulated `Date` header calibrates the client's [`ServerClock`]
//! exactly as `src/store/aws.rs` does for the real stores. DynamoDB's
//! requests ([`super::store`]) and S3's ([`super::objects`]) go through it.

use std::sync::Arc;
use std::time::Duration;

use super::clock::SimClock;
use super::model::Req;
use super::state::Table;
use super::world::World;
use crate::clock::{Moment, ServerClock};
use crate::error::{Error, Result};

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

/// One client's connection to the simulated store: [`super::store`]
/// makes it DynamoDB's [`crate::store::dynamodb::Requests`] (`into_store`
/// puts the real DynamoDB lock logic on top), [`super::objects`] S3's.
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

    /// Sends one request: `op` is applied to the table atomically at one
    /// instant of true time (twice for a duplicate).
    pub async fn call<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Table, i64, &mut Vec<String>) -> T + Send + 'static,
    {
        // A paused machine sends nothing.
        self.mach.awake().await;
        let sent = Moment::now();
        let (fate, there, back, client) = draw_fate(&self.world);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let w = self.world.clone();
        // The network and the store: not the client's task, so a request
        // that left is applied even if the client crashes or gives up.
        tokio::spawn(async move {
            tokio::time::sleep(there).await;
            let now = w.store_ms();
            let out = {
                let mut table = w.table.lock().unwrap();
                table.counts.current = client;
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

/// What the network does to the request the calling client sends now: its
/// fate and its delays there and back (drawn from the schedule's random
/// draws), recorded for the liveness invariants; and the client, if the
/// world knows it.
fn draw_fate(w: &World) -> (Fate, Duration, Duration, Option<usize>) {
    let (fate, there, back) = {
        let mut r = w.rng.lock().unwrap();
        let f = w.faults;
        let x = r.f64();
        let fate = if x < f.request_lost {
            Fate::RequestLost
        } else if x < f.request_lost + f.answer_lost {
            Fate::AnswerLost
        } else if x < f.request_lost + f.answer_lost + f.duplicate {
            Fate::Duplicate
        } else if x < f.request_lost + f.answer_lost + f.duplicate + f.throttled {
            Fate::Throttled
        } else {
            Fate::Ok
        };
        let delay = |r: &mut fastrand::Rng| {
            if r.f64() < f.slow {
                Duration::from_millis(r.u64(50..1500))
            } else {
                let (lo, hi) = f.latency_ms.unwrap_or((1, 40));
                Duration::from_millis(r.u64(lo..hi))
            }
        };
        let there = delay(&mut r);
        let mut back = delay(&mut r);
        if matches!(fate, Fate::RequestLost | Fate::AnswerLost) {
            // The SDK's attempt timeout.
            back += Duration::from_millis(r.u64(300..1200));
        }
        (fate, there, back)
    };
    let client = w.current_client();
    if let Some(client) = client {
        let sent = w.t();
        w.live.lock().unwrap().reqs.push(Req {
            client,
            sent,
            there,
            back,
            failed: matches!(fate, Fate::RequestLost | Fate::AnswerLost | Fate::Throttled),
        });
    }
    (fate, there, back, client)
}
