//! The DynamoDB store: awsflock 0.2.0's table format, plus fencing, shared-clock
//! expiry and one-request operations. DESIGN.md gives the protocol and the
//! reasoning; this file follows it step by step.
//!
//! One item per lock, keyed by `lock_id`, carrying 0.2.0's attributes
//! (`lease_id`, `lease_duration`, `owner`, `expiration_time` in whole seconds)
//! so that 0.2.0 clients on the same table keep working, and ours (`fence`,
//! `fence_limit`, `expires_ms`, `acquired_ms`, `reason`, `pid`, `host`,
//! `client`, `released_lease`, `released_ms`). A second item per lock, keyed
//! `__awsflock__/fence/NAME`, holds the fencing high-water mark `fence_hw`,
//! which 0.2.0 clients never touch and TTL never deletes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, TransactionCanceledException,
};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus, TransactWriteItem,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::aws::{self, StoreInterceptor};
use super::cas::{self, CasStore, Outcome, Stamp, holder_detail};
use super::{AcquireRequest, Backend, BoxFuture, CLIENT_TAG, Lease, LockInfo, RESERVED_PREFIX};
use crate::clock::ServerClock;
use crate::error::{Error, Result};

/// Attribute names. The first five are awsflock 0.2.0's.
mod attr {
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
}

/// How many fencing tokens one reservation from the high-water mark covers.
/// Tokens after a wipe of the lock item jump by up to this much.
pub const FENCE_BLOCK: u64 = 1_000_000;

/// awsflock 0.2.0 takes over a lease whose `expiration_time` is more than
/// this far in the past.
pub const V020_TAKEOVER_AFTER_MS: i64 = 5000;

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_i64(item: &Item, k: &str) -> Option<i64> {
    let text = item.get(k)?.as_n().ok()?;
    text.parse::<i64>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().map(|f| f as i64))
}

fn get_u64(item: &Item, k: &str) -> Option<u64> {
    get_i64(item, k).and_then(|v| u64::try_from(v).ok())
}

fn hw_key(name: &str) -> String {
    format!("{RESERVED_PREFIX}fence/{name}")
}

/// Builds update and condition expressions with every attribute behind a
/// `#name` placeholder (several of ours are DynamoDB reserved words).
#[derive(Default)]
struct Expr {
    sets: Vec<String>,
    removes: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, attr: &str) -> String {
        let key = format!("#{attr}");
        self.names.insert(key.clone(), attr.to_string());
        key
    }

    fn value(&mut self, key: &str, v: AttributeValue) -> String {
        let key = format!(":{key}");
        self.values.insert(key.clone(), v);
        key
    }

    fn set(&mut self, attr: &str, v: AttributeValue) {
        let (name, value) = (self.name(attr), self.value(attr, v));
        self.sets.push(format!("{name} = {value}"));
    }

    fn remove(&mut self, attr: &str) {
        let name = self.name(attr);
        self.removes.push(name);
    }

    fn update_expression(&self) -> String {
        let mut out = format!("SET {}", self.sets.join(", "));
        if !self.removes.is_empty() {
            out.push_str(&format!(" REMOVE {}", self.removes.join(", ")));
        }
        out
    }
}

/// The DynamoDB store.
pub struct DynamoDb {
    client: Client,
    table: String,
    clock: Arc<ServerClock>,
    interceptor: StoreInterceptor,
    host: String,
    /// The fencing high-water mark, once learnt (`None`: assume absent).
    hw_hint: std::sync::Mutex<Option<u64>>,
}

impl DynamoDb {
    /// Connects (lazily: no request is sent) to `table`, with the standard AWS
    /// configuration and an optional endpoint override.
    pub async fn connect(table: String, endpoint: Option<String>) -> Result<Self> {
        let config = aws::load(endpoint).await?;
        let clock = Arc::new(ServerClock::new());
        let interceptor = StoreInterceptor::new(clock.clone());
        let conf = aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(interceptor.clone())
            .build();
        Ok(Self {
            client: Client::from_conf(conf),
            table,
            clock,
            interceptor,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            hw_hint: std::sync::Mutex::new(None),
        })
    }

    /// HTTP attempts sent so far (for benchmarks and tests).
    pub fn requests(&self) -> u64 {
        self.interceptor.requests()
    }

    fn name(&self) -> String {
        format!("DynamoDB table '{}'", self.table)
    }

    /// Maps an SDK error, turning a missing table into advice.
    fn error<E>(&self, err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if err.code() == Some("ResourceNotFoundException") {
            return Error::store(format!(
                "DynamoDB table '{}' does not exist; create it with `awsflock table-create --table {}`",
                self.table, self.table
            ));
        }
        aws::sdk_error(err, &self.name())
    }

    /// The attributes every grant writes (all of 0.2.0's, and ours but the fence).
    fn grant_attrs(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        st: &Stamp,
    ) -> Vec<(&'static str, AttributeValue)> {
        let mut v = vec![
            (attr::LEASE_ID, s(lease_id)),
            (attr::LEASE_DURATION, n(req.lease.as_secs())),
            (attr::OWNER, s(req.owner.clone())),
            (attr::EXPIRATION_TIME, n(ceil_secs(st.expires_ms))),
            (attr::EXPIRES_MS, n(st.expires_ms)),
            (attr::ACQUIRED_MS, n(st.shown_ms)),
            (attr::PID, n(std::process::id())),
            (attr::HOST, s(self.host.clone())),
            (attr::CLIENT, s(CLIENT_TAG)),
        ];
        if let Some(r) = &req.reason {
            v.push((attr::REASON, s(r.clone())));
        }
        v
    }

    async fn get(&self, name: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::LOCK_ID, s(name))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(out.item)
    }

    /// A grant from the lock item's own fence counter, in one UpdateItem:
    /// blind (`seen = None`: the item must be released), or taking over the
    /// exact lease `seen` that we judged free.
    async fn grant_counter(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&str>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        let mut e = Expr::default();
        for (k, v) in self.grant_attrs(req, lease_id, st) {
            e.set(k, v);
        }
        if req.reason.is_none() {
            e.remove(attr::REASON);
        }
        e.remove(attr::RELEASED_LEASE);
        e.remove(attr::RELEASED_MS);
        let (fence, limit) = (e.name(attr::FENCE), e.name(attr::FENCE_LIMIT));
        let one = e.value("one", n(1));
        e.sets.push(format!("{fence} = {fence} + {one}"));
        let first = match seen {
            None => {
                let exp = e.name(attr::EXPIRATION_TIME);
                let zero = e.value("zero", n(0));
                format!("{exp} = {zero}")
            }
            Some(id) => {
                let lid = e.name(attr::LEASE_ID);
                let seen = e.value("seen", s(id));
                format!("{lid} = {seen}")
            }
        };
        let condition = format!("{first} AND {fence} < {limit}");
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LOCK_ID, s(&req.name))
            .update_expression(e.update_expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => Ok(Outcome::Granted(
                out.attributes
                    .as_ref()
                    .and_then(|a| get_u64(a, attr::FENCE)),
            )),
            Err(err) => {
                if let Some(ccf) = ccf_of(&err) {
                    let item = ccf.item().cloned();
                    return Ok(won_anyway(item, lease_id));
                }
                Err(self.error(err))
            }
        }
    }

    /// A grant with a fresh block of fencing tokens reserved from the
    /// high-water mark, in one transaction, for a lock item that is absent
    /// (`seen = None`) or whose counter was lost (wiped by an old client,
    /// deleted by TTL, or exhausted). `hw` is our best knowledge of the
    /// high-water mark (`None`: assume it does not exist yet); it is updated
    /// when the transaction is cancelled because the guess was wrong.
    async fn grant_fresh(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&str>,
        hw: &mut Option<u64>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        let old_hw = hw.unwrap_or(0);
        let new_hw = old_hw + FENCE_BLOCK;
        let fence = old_hw + 1;

        let mut hw_names = HashMap::from([("#hw".to_string(), attr::FENCE_HW.to_string())]);
        let mut hw_values = HashMap::new();
        let hw_cond = match hw {
            None => "attribute_not_exists(#hw)".to_string(),
            Some(h) => {
                hw_values.insert(":old".to_string(), n(*h));
                "#hw = :old".to_string()
            }
        };
        let hw_put = Put::builder()
            .table_name(&self.table)
            .item(attr::LOCK_ID, s(hw_key(&req.name)))
            .item(attr::FENCE_HW, n(new_hw))
            .condition_expression(hw_cond)
            .set_expression_attribute_names(Some(std::mem::take(&mut hw_names)))
            .set_expression_attribute_values(if hw_values.is_empty() {
                None
            } else {
                Some(hw_values)
            })
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| Error::store(e.to_string()))?;

        let mut lock = Put::builder()
            .table_name(&self.table)
            .item(attr::LOCK_ID, s(&req.name))
            .item(attr::FENCE, n(fence))
            .item(attr::FENCE_LIMIT, n(new_hw));
        for (k, v) in self.grant_attrs(req, lease_id, st) {
            lock = lock.item(k, v);
        }
        lock = match seen {
            None => lock
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", attr::LOCK_ID),
            Some(id) => lock
                .condition_expression("#l = :seen")
                .expression_attribute_names("#l", attr::LEASE_ID)
                .expression_attribute_values(":seen", s(id)),
        };
        let lock = lock
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| Error::store(e.to_string()))?;

        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(hw_put).build())
            .transact_items(TransactWriteItem::builder().put(lock).build())
            .client_request_token(lease_id)
            .send()
            .await;
        match res {
            Ok(_) => Ok(Outcome::Granted(Some(fence))),
            Err(err) => {
                let Some(tce) = tce_of(&err) else {
                    return Err(self.error(err));
                };
                let reasons = tce.cancellation_reasons();
                let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
                let item = |i: usize| reasons.get(i).and_then(|r| r.item()).cloned();
                if code(1) == "ConditionalCheckFailed" {
                    // The lock item changed (or is ours already: a retry of a
                    // transaction that landed).
                    return Ok(won_anyway(item(1), lease_id));
                }
                if code(0) == "ConditionalCheckFailed" {
                    // Our guess of the high-water mark was wrong: learn it, and
                    // let the caller try again at once.
                    *hw = item(0)
                        .as_ref()
                        .and_then(|i| get_u64(i, attr::FENCE_HW))
                        .or(Some(0));
                    return Ok(Outcome::Retry);
                }
                Err(Error::Unavailable(format!(
                    "{} cancelled the transaction ({}, {}); try again",
                    self.name(),
                    code(0),
                    code(1)
                )))
            }
        }
    }

    /// The lease's expiry on the store's clock, in ms. 0.2.0 writes whole
    /// seconds truncated from its local clock, so its leases get a second more.
    fn expiry_ms(item: &Item) -> Option<i64> {
        get_i64(item, attr::EXPIRES_MS)
            .filter(|ms| *ms > 0)
            .or_else(|| get_i64(item, attr::EXPIRATION_TIME).map(|s| s * 1000 + 1000))
    }

    /// Whether the item's lease was last written by awsflock 0.2.0: it
    /// rewrites whole items with its five attributes only, so `expires_ms`
    /// is gone. (Our renewal of a 0.2.0 lease writes `expires_ms`, on the
    /// store's clock.)
    fn written_by_v020(item: &Item) -> bool {
        get_i64(item, attr::EXPIRES_MS).is_none_or(|ms| ms <= 0)
            && get_i64(item, attr::EXPIRATION_TIME).is_some_and(|s| s > 0)
    }

    fn info_of(&self, name: &str, item: Option<&Item>) -> LockInfo {
        let Some(item) = item else {
            return cas::absent_info(name);
        };
        let released = get_i64(item, attr::EXPIRATION_TIME) == Some(0);
        let ours = get_s(item, attr::CLIENT).is_some();
        LockInfo {
            name: name.to_string(),
            held: cas::is_held(self, item),
            owner: get_s(item, attr::OWNER).map(String::from),
            reason: get_s(item, attr::REASON).map(String::from),
            fence: if ours {
                get_u64(item, attr::FENCE)
            } else {
                None
            },
            lease_id: if released {
                None
            } else {
                get_s(item, attr::LEASE_ID).map(String::from)
            },
            acquired_at_ms: get_i64(item, attr::ACQUIRED_MS),
            expires_at_ms: if released {
                None
            } else {
                Self::expiry_ms(item)
            },
            expires_in_ms: if released {
                None
            } else {
                Self::expiry_ms(item).map(|e| e - self.clock.lower_ms())
            },
            lease_duration_s: get_u64(item, attr::LEASE_DURATION),
            pid: get_u64(item, attr::PID).and_then(|p| u32::try_from(p).ok()),
            host: get_s(item, attr::HOST).map(String::from),
            client: Some(
                get_s(item, attr::CLIENT)
                    .map(String::from)
                    .unwrap_or_else(|| "awsflock 0.2.0".into()),
            ),
        }
    }

    /// [`DynamoDb::grant_fresh`] with the high-water mark this client last
    /// learnt, remembering what it learns for the next fresh grant.
    async fn grant_fresh_hinted(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&str>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        let mut hw = self.hw_hint.lock().map(|h| *h).unwrap_or(None);
        let out = self.grant_fresh(req, lease_id, seen, &mut hw, st).await;
        if let Ok(mut h) = self.hw_hint.lock() {
            *h = hw;
        }
        out
    }

    /// Renews to a caller-chosen next lease id (see [`Backend::renew`]).
    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        let st = Stamp::now(&self.clock, duration);
        let mut e = Expr::default();
        e.set(attr::LEASE_ID, s(next_id));
        e.set(attr::LEASE_DURATION, n(duration.as_secs()));
        e.set(attr::EXPIRATION_TIME, n(ceil_secs(st.expires_ms)));
        e.set(attr::EXPIRES_MS, n(st.expires_ms));
        let (lid, exp) = (e.name(attr::LEASE_ID), e.name(attr::EXPIRATION_TIME));
        let cur = e.value("cur", s(&lease.lease_id));
        let zero = e.value("zero", n(0));
        let mut condition = format!("{lid} = {cur} AND {exp} <> {zero}");
        if !st.calibrated {
            // A new process (`awsflock renew`) stamps its first write on this
            // machine's clock. Should that clock be behind, the renewal would
            // write an expiry earlier than the lease it renews, one that may
            // look long past and be taken at once while that lease was still
            // valid: refuse to shorten it, and try again on the store's clock.
            let ms = e.name(attr::EXPIRES_MS);
            let new_s = e.value("new_s", n(ceil_secs(st.expires_ms)));
            let new_ms = e.value("new_ms", n(st.expires_ms));
            condition.push_str(&format!(
                " AND {exp} <= {new_s} AND (attribute_not_exists({ms}) OR {ms} <= {new_ms})"
            ));
        }
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LOCK_ID, s(&lease.name))
            .update_expression(e.update_expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let item = match res {
            Ok(out) => out.attributes,
            Err(err) => {
                let Some(ccf) = ccf_of(&err) else {
                    return Err(self.error(err));
                };
                match ccf.item() {
                    // Our earlier attempt landed but its answer was lost.
                    Some(i) if get_s(i, attr::LEASE_ID) == Some(next_id) => Some(i.clone()),
                    // Still our lease, but the local clock would have
                    // shortened it; the answer calibrated the store's clock.
                    Some(i)
                        if !st.calibrated
                            && self.clock.is_calibrated()
                            && get_s(i, attr::LEASE_ID) == Some(lease.lease_id.as_str())
                            && get_i64(i, attr::EXPIRATION_TIME) != Some(0) =>
                    {
                        tracing::warn!(
                            "this machine's clock is behind the store's; renewing on the store's clock"
                        );
                        return Box::pin(self.renew_to(lease, duration, next_id)).await;
                    }
                    _ => {
                        return Err(Error::NotHeld {
                            name: lease.name.clone(),
                            lease_id: lease.lease_id.clone(),
                            detail: String::new(),
                        });
                    }
                }
            }
        };
        let fence = item
            .as_ref()
            .filter(|i| get_s(i, attr::CLIENT).is_some())
            .and_then(|i| get_u64(i, attr::FENCE));
        // The expiry the store holds: an earlier attempt's, when that one
        // landed and this one found its own id.
        let st = match item.as_ref().and_then(|i| get_i64(i, attr::EXPIRES_MS)) {
            Some(stored) => st.as_stored(stored),
            None => st,
        };
        let mut renewed = Box::pin(cas::finish(
            self,
            &lease.name,
            next_id.to_string(),
            fence,
            duration,
            st,
        ))
        .await?;
        renewed.acquired_at_ms = item
            .as_ref()
            .and_then(|i| get_i64(i, attr::ACQUIRED_MS))
            .or(lease.acquired_at_ms);
        Ok(renewed)
    }
}

#[async_trait::async_trait]
impl CasStore for DynamoDb {
    type Record = Item;

    fn clock(&self) -> &ServerClock {
        &self.clock
    }

    /// The blind grant is the counter grant on a released item; a free item
    /// with tokens left gets a counter grant on its lease id, and an absent
    /// or counter-less item a fresh grant (DESIGN.md, acquire steps 1-4).
    async fn grant(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&Option<Item>>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        match seen {
            None => self.grant_counter(req, lease_id, None, st).await,
            Some(None) => self.grant_fresh_hinted(req, lease_id, None, st).await,
            Some(Some(item)) => {
                let id = get_s(item, attr::LEASE_ID).unwrap_or_default().to_string();
                let counter_ok = matches!(
                    (get_u64(item, attr::FENCE), get_u64(item, attr::FENCE_LIMIT)),
                    (Some(f), Some(l)) if f < l
                );
                if counter_ok {
                    self.grant_counter(req, lease_id, Some(&id), st).await
                } else {
                    self.grant_fresh_hinted(req, lease_id, Some(&id), st).await
                }
            }
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Item>> {
        self.get(name).await
    }

    fn lease_id_of(rec: &Item) -> Option<String> {
        get_s(rec, attr::LEASE_ID).map(String::from)
    }

    fn is_released(rec: &Item) -> bool {
        get_i64(rec, attr::EXPIRATION_TIME) == Some(0)
    }

    fn expiry_ms(rec: &Item) -> Option<i64> {
        DynamoDb::expiry_ms(rec)
    }

    /// awsflock 0.2.0 takes over a lease once its clock is more than 5 s
    /// past `expiration_time`, and its holders rely on that margin (their
    /// expiry is stamped when their acquire *started*): its leases get the
    /// same 5 s, on the store's clock. [`DynamoDb::expiry_ms`] already adds
    /// the second lost to truncation.
    fn takeover_margin_ms(rec: &Item) -> i64 {
        if DynamoDb::written_by_v020(rec) {
            V020_TAKEOVER_AFTER_MS - 1000
        } else {
            cas::EXPIRY_MARGIN_MS
        }
    }

    fn info(&self, name: &str, rec: Option<&Item>) -> LockInfo {
        self.info_of(name, rec)
    }

    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        DynamoDb::renew_to(self, lease, duration, next_id).await
    }

    async fn release_id(&self, name: &str, lease_id: &str) -> Result<()> {
        Backend::release(self, name, lease_id).await
    }
}

/// A failed condition whose current item carries our own lease id means an
/// earlier attempt of this very write landed (its answer was lost, and the SDK
/// retried): we hold the lock.
fn won_anyway(item: Option<Item>, lease_id: &str) -> Outcome<Item> {
    match item {
        Some(i) if get_s(&i, attr::LEASE_ID) == Some(lease_id) => {
            Outcome::Granted(get_u64(&i, attr::FENCE))
        }
        other => Outcome::Lost(other),
    }
}

type UpdateErr = SdkError<UpdateItemError, aws_smithy_runtime_api::http::Response>;
type TransactErr = SdkError<TransactWriteItemsError, aws_smithy_runtime_api::http::Response>;

fn ccf_of(err: &UpdateErr) -> Option<&ConditionalCheckFailedException> {
    match err.as_service_error()? {
        UpdateItemError::ConditionalCheckFailedException(e) => Some(e),
        _ => None,
    }
}

fn tce_of(err: &TransactErr) -> Option<&TransactionCanceledException> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(e) => Some(e),
        _ => None,
    }
}

fn ceil_secs(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000)
}

#[async_trait::async_trait]
impl Backend for DynamoDb {
    fn describe(&self) -> String {
        self.name()
    }

    async fn acquire(&self, req: &AcquireRequest, cancel: BoxFuture<'_, i32>) -> Result<Lease> {
        cas::acquire(self, req, cancel).await
    }

    async fn renew(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        super::validate_name(&lease.name)?;
        self.renew_to(lease, duration, next_id).await
    }

    async fn release(&self, name: &str, lease_id: &str) -> Result<()> {
        super::validate_name(name)?;
        // The fresh lease id written by this call doubles as its nonce: only
        // an earlier attempt of *this* call leaves it behind.
        let nonce = uuid::Uuid::new_v4().to_string();
        let mut e = Expr::default();
        e.set(attr::LEASE_ID, s(&nonce));
        e.set(attr::EXPIRES_MS, n(0));
        e.set(attr::RELEASED_LEASE, s(lease_id));
        e.set(attr::RELEASED_MS, n(self.clock.lower_ms()));
        let (lid, exp) = (e.name(attr::LEASE_ID), e.name(attr::EXPIRATION_TIME));
        let cur = e.value("cur", s(lease_id));
        let zero = e.value("zero", n(0));
        e.sets.push(format!("{exp} = {zero}"));
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LOCK_ID, s(name))
            .update_expression(e.update_expression())
            .condition_expression(format!("{lid} = {cur} AND {exp} <> {zero}"))
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(err) => {
                let Some(ccf) = ccf_of(&err) else {
                    return Err(self.error(err));
                };
                match ccf.item() {
                    // Released by an earlier attempt of this call whose answer
                    // was lost (the SDK retried).
                    Some(i) if get_s(i, attr::LEASE_ID) == Some(nonce.as_str()) => Ok(()),
                    other => Err(Error::NotHeld {
                        name: name.to_string(),
                        lease_id: lease_id.to_string(),
                        detail: match other.map(|i| self.info_of(name, Some(i))) {
                            Some(info) if info.held => holder_detail(&info),
                            _ => " (it is not held by anyone)".to_string(),
                        },
                    }),
                }
            }
        }
    }

    async fn inspect(&self, name: &str) -> Result<LockInfo> {
        super::validate_name(name)?;
        let item = self.get(name).await?;
        Ok(self.info_of(name, item.as_ref()))
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(e))?;
            for item in page.items() {
                let Some(name) = get_s(item, attr::LOCK_ID) else {
                    continue;
                };
                if name.starts_with(RESERVED_PREFIX) {
                    continue;
                }
                let info = self.info_of(name, Some(item));
                if info.held {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create(&self) -> Result<()> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attr::LOCK_ID)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| Error::store(e.to_string()))?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr::LOCK_ID)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| Error::store(e.to_string()))?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!("created table '{}'", self.table),
            Err(err) if err.code() == Some("ResourceInUseException") => {}
            Err(err) => return Err(self.error(err)),
        }
        // Wait until ACTIVE, and check the key schema of a table that existed.
        let wait_until = Instant::now() + Duration::from_secs(300);
        loop {
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.error(e))?;
            let table = d
                .table
                .ok_or_else(|| Error::store("DescribeTable returned no table"))?;
            let keys: Vec<(String, String, String)> = table
                .key_schema()
                .iter()
                .map(|k| {
                    let ty = table
                        .attribute_definitions()
                        .iter()
                        .find(|a| a.attribute_name() == k.attribute_name())
                        .map(|a| a.attribute_type().as_str().to_string())
                        .unwrap_or_default();
                    (
                        k.attribute_name().to_string(),
                        k.key_type().as_str().to_string(),
                        ty,
                    )
                })
                .collect();
            if keys
                != [(
                    attr::LOCK_ID.to_string(),
                    "HASH".to_string(),
                    "S".to_string(),
                )]
            {
                let shown: Vec<String> = keys
                    .iter()
                    .map(|(n, k, t)| format!("{n} ({k}, {t})"))
                    .collect();
                return Err(Error::store(format!(
                    "table '{}' exists with key schema [{}], not a single hash key lock_id (S); \
                     choose another name with --table",
                    self.table,
                    shown.join(", ")
                )));
            }
            if table.table_status() == Some(&TableStatus::Active) {
                break;
            }
            if Instant::now() > wait_until {
                return Err(Error::Unavailable(format!(
                    "table '{}' did not become ACTIVE in 5 minutes",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        let status = ttl
            .time_to_live_description()
            .and_then(|t| t.time_to_live_status());
        if !matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(attr::EXPIRATION_TIME)
                        .build()
                        .map_err(|e| Error::store(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(1000), 1);
        assert_eq!(ceil_secs(1001), 2);
        assert_eq!(ceil_secs(1999), 2);
    }

    #[test]
    fn old_client_leases_get_its_own_five_second_margin() {
        let old = HashMap::from([(attr::EXPIRATION_TIME.to_string(), n(100))]);
        assert!(DynamoDb::written_by_v020(&old));
        assert_eq!(
            DynamoDb::expiry_ms(&old).unwrap() + <DynamoDb as CasStore>::takeover_margin_ms(&old),
            105_000
        );
        let ours = HashMap::from([
            (attr::EXPIRATION_TIME.to_string(), n(100)),
            (attr::EXPIRES_MS.to_string(), n(99_500)),
        ]);
        assert!(!DynamoDb::written_by_v020(&ours));
        assert_eq!(
            <DynamoDb as CasStore>::takeover_margin_ms(&ours),
            cas::EXPIRY_MARGIN_MS
        );
        let released = HashMap::from([
            (attr::EXPIRATION_TIME.to_string(), n(0)),
            (attr::EXPIRES_MS.to_string(), n(0)),
        ]);
        assert!(!DynamoDb::written_by_v020(&released));
    }

    #[test]
    fn old_client_expiry_gets_a_second_more() {
        let item = HashMap::from([(attr::EXPIRATION_TIME.to_string(), n(100))]);
        assert_eq!(DynamoDb::expiry_ms(&item), Some(101_000));
        let item = HashMap::from([
            (attr::EXPIRATION_TIME.to_string(), n(100)),
            (attr::EXPIRES_MS.to_string(), n(99_500)),
        ]);
        assert_eq!(DynamoDb::expiry_ms(&item), Some(99_500));
    }
}
