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
use super::record::{self, MAX_DURATION_S, MAX_TIME_MS};
use super::slots::{Holder, Kind, Slots};
use super::{AcquireRequest, CLIENT_TAG, Lease, LockInfo, RESERVED_PREFIX};
use crate::clock::ServerClock;
use crate::error::{Error, Result, words};

/// Attribute names. The first five are awsflock 0.2.0's.
pub(crate) mod attr {
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
    pub const SLOTS: &str = "slots";
    pub const SUPERVISED: &str = "supervised";
}

/// How many fencing tokens one reservation from the high-water mark covers.
/// Tokens after a wipe of the lock item jump by up to this much.
pub const FENCE_BLOCK: u64 = 1_000_000;

/// awsflock 0.2.0 takes over a lease whose `expiration_time` is more than
/// this far in the past.
pub const V020_TAKEOVER_AFTER_MS: i64 = 5000;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Whether DynamoDB refused a request because the table's key schema is
/// not the one the request's key has. DynamoDB has no error code of its
/// own for that: it is a ValidationException (the code of every malformed
/// request), told apart only by its documented message.
fn is_wrong_schema(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("ValidationException")
        && message.is_some_and(|m| m.contains("key element does not match the schema"))
}

/// What a request on a table with another key schema is told.
const WRONG_SCHEMA: &str = "does not have the key schema awsflock needs";

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// Every stored value is untrusted (another client, or a person with the
/// console, may have written it): a number is read only when it is an
/// integer (an integral `1.7e9` included) within `lo..=hi`, so that no
/// arithmetic on it can overflow. `Ok(None)`: absent; `Err`: what is wrong.
fn get_num(item: &Item, k: &str, lo: i64, hi: i64) -> std::result::Result<Option<i64>, String> {
    let Some(v) = item.get(k) else {
        return Ok(None);
    };
    let Ok(text) = v.as_n() else {
        return Err(format!("{k} is not a number ({})", kind_of(v)));
    };
    let x = text.parse::<i64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
            .map(|f| f as i64)
    });
    match x {
        Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
        _ => Err(format!("{k} is out of range ({})", record::clip(text))),
    }
}

/// A stored value's type and start, for messages.
fn kind_of(v: &AttributeValue) -> String {
    match v {
        AttributeValue::S(t) => format!("the string {:?}", record::clip(t)),
        AttributeValue::N(t) => format!("the number {}", record::clip(t)),
        AttributeValue::Bool(b) => format!("the boolean {b}"),
        AttributeValue::Null(_) => "null".into(),
        AttributeValue::B(_) => "binary".into(),
        AttributeValue::L(_) => "a list".into(),
        AttributeValue::M(_) => "a map".into(),
        _ => "a set".into(),
    }
}

pub(crate) fn get_i64(item: &Item, k: &str) -> Option<i64> {
    get_num(item, k, i64::MIN, i64::MAX).ok().flatten()
}

pub(crate) fn get_u64(item: &Item, k: &str) -> Option<u64> {
    get_i64(item, k).and_then(|v| u64::try_from(v).ok())
}

/// A stored time in ms since the epoch, if readable (0 to year 9999).
fn get_ms(item: &Item, k: &str) -> Option<i64> {
    get_num(item, k, 0, MAX_TIME_MS).ok().flatten()
}

/// What cannot be read in a lock item, or `None` when all of it can. An
/// item written by awsflock 0.2.0 (lock_id, lease_id, lease_duration, owner,
/// expiration_time) is readable.
fn problems(item: &Item) -> Option<String> {
    let mut found = Vec::new();
    for k in [attr::LEASE_ID, attr::EXPIRATION_TIME] {
        if !item.contains_key(k) {
            found.push(format!("{k} is missing"));
        }
    }
    for k in [
        attr::LEASE_ID,
        attr::OWNER,
        attr::REASON,
        attr::HOST,
        attr::CLIENT,
        attr::RELEASED_LEASE,
    ] {
        if let Some(v) = item.get(k).filter(|v| !v.is_s()) {
            found.push(format!("{k} is not a string ({})", kind_of(v)));
        }
    }
    let ranges = [
        (attr::EXPIRATION_TIME, MAX_TIME_MS / 1000),
        (attr::EXPIRES_MS, MAX_TIME_MS),
        (attr::ACQUIRED_MS, MAX_TIME_MS),
        (attr::RELEASED_MS, MAX_TIME_MS),
        (attr::LEASE_DURATION, MAX_DURATION_S),
        (attr::FENCE, i64::MAX),
        (attr::FENCE_LIMIT, i64::MAX),
        (attr::PID, i64::from(u32::MAX)),
    ];
    for (k, hi) in ranges {
        if let Err(e) = get_num(item, k, 0, hi) {
            found.push(e);
        }
    }
    (!found.is_empty()).then(|| found.join("; "))
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

/// The DynamoDB store: the lock logic, over the requests `R` sends
/// (the AWS SDK; the simulation's in-memory table in tests).
pub struct DynamoDb<R = Sdk> {
    req: R,
    clock: Arc<ServerClock>,
    host: String,
    /// The fencing high-water mark, once learnt (`None`: assume absent).
    hw_hint: std::sync::Mutex<Option<u64>>,
}

/// The requests the lock logic sends, each answered with what the logic
/// reads of the answer. [`Sdk`] sends them to DynamoDB; the simulation
/// applies them to its in-memory table (same conditions). Every decision
/// about an answer is in [`DynamoDb`], written once.
#[async_trait::async_trait]
pub(crate) trait Requests: Send + Sync {
    /// A short name for messages.
    fn describe(&self) -> String;

    /// A clearer error for one a request returned (see [`CasStore::explain`]).
    async fn explain(&self, err: Error) -> Error {
        err
    }

    /// GetItem of the lock item, strongly consistent.
    async fn get(&self, name: &str) -> Result<Option<Item>>;

    /// A counter grant, one UpdateItem: sets `attrs` (and removes `reason`
    /// when `attrs` has none, `released_*` and `slots`), adds one to
    /// `fence`, on `expiration_time = 0 AND attribute_not_exists(slots)`
    /// (`seen` `None`) or `lease_id = seen`, and `fence < fence_limit`. The new fence, or the item when the
    /// condition failed (`ALL_OLD`).
    async fn grant_counter(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<Option<u64>, Option<Item>>>;

    /// A fresh grant, one transaction with `token` as its
    /// ClientRequestToken: the high-water item from `hw` (`None`: absent)
    /// to `hw + FENCE_BLOCK`, and the lock item put with `attrs`, `fence =
    /// hw + 1` and `fence_limit = hw + FENCE_BLOCK`, on
    /// `attribute_not_exists` (`seen` `None`) or `lease_id = seen`.
    async fn grant_fresh(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
        hw: Option<u64>,
        token: &str,
    ) -> Result<FreshAnswer>;

    /// A renewal, one UpdateItem: sets `attrs` on `lease_id = cur AND
    /// expiration_time <> 0`, and with `no_shorter` = (s, ms) also
    /// `expiration_time <= s AND (no expires_ms OR expires_ms <= ms)`. The
    /// whole new item, or the item when the condition failed.
    async fn renew(
        &self,
        name: &str,
        cur: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        no_shorter: Option<(i64, i64)>,
    ) -> Result<std::result::Result<Option<Item>, Option<Item>>>;

    /// A release, one UpdateItem: `lease_id = nonce`, `expiration_time =
    /// 0`, `expires_ms = 0`, `released_lease = id`, `released_ms`, on
    /// `lease_id = id AND expiration_time <> 0`; the item when the condition
    /// failed.
    async fn release(
        &self,
        name: &str,
        id: &str,
        nonce: &str,
        released_ms: i64,
    ) -> Result<std::result::Result<(), Option<Item>>>;

    /// Releases an item whose `lease_id` cannot be read, on the condition
    /// that it still cannot.
    async fn release_unreadable(&self, name: &str, item: &Item, released_ms: i64) -> Result<()>;

    /// Every item of the table but the reserved ones, with its name.
    async fn scan(&self) -> Result<Vec<(String, Item)>>;

    /// A write of a holder table, one UpdateItem: sets `attrs` and
    /// removes `removes`, on `attribute_not_exists(lock_id)` (`seen`
    /// `None`) or `lease_id = seen`; the item when the condition failed.
    async fn put_slots(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        removes: Vec<&'static str>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<(), Option<Item>>>;

    /// Creates the table (see [`LockStore::create`]).
    async fn create(&self) -> Result<()>;
}

/// How a fresh-grant transaction ended.
#[derive(Debug)]
pub(crate) enum FreshAnswer {
    /// Both writes applied.
    Ok,
    /// The lock item's condition failed, with the item.
    LockFailed(Option<Item>),
    /// Only the high-water mark's condition failed, with its value.
    HwFailed(Option<u64>),
}

/// DynamoDB through the AWS SDK.
pub struct Sdk {
    client: Client,
    table: String,
    interceptor: StoreInterceptor,
    /// Set by [`Sdk::error`] when it answered a request with the generic
    /// "wrong key schema" error, for [`Sdk::explain_error`] to replace by
    /// one that shows the table's key schema.
    wrong_schema: std::sync::atomic::AtomicBool,
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
        let sdk = Sdk {
            client: Client::from_conf(conf),
            table,
            interceptor,
            wrong_schema: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(DynamoDb::over(
            sdk,
            clock,
            gethostname::gethostname().to_string_lossy().into_owned(),
        ))
    }

    /// HTTP attempts sent so far (for benchmarks and tests).
    #[allow(dead_code)]
    pub fn requests(&self) -> u64 {
        self.req.interceptor.requests()
    }
}

impl Sdk {
    fn name(&self) -> String {
        format!("DynamoDB table '{}'", self.table)
    }

    /// Maps an SDK error, turning a missing table into advice.
    fn error<E>(&self, err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let endpoint = self.interceptor.endpoint();
        let at = endpoint
            .as_deref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default();
        if err.code() == Some("ResourceNotFoundException") {
            let searched = aws::where_searched(self.client.config().region(), endpoint.as_deref());
            let create = words(
                &format!("`awsflock table-create --table {}`", self.table),
                "`Store::create`",
            )
            .to_string();
            return Error::store(format!(
                "DynamoDB table '{}' does not exist in {searched}; create it with \
                 {create} and the same region, profile and endpoint, \
                 or check AWS_REGION and the endpoint if it exists elsewhere",
                self.table
            ));
        }
        if is_wrong_schema(err.code(), err.message()) {
            self.wrong_schema
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Error::store(format!(
                "DynamoDB table '{}'{at} {WRONG_SCHEMA}, a single hash key lock_id (S); {}",
                self.table,
                self.other_table_hint()
            ));
        }
        aws::sdk_error_at(err, &self.name(), "DynamoDB", endpoint.as_deref())
    }

    /// The table's key schema: (attribute, HASH/RANGE, S/N/B) for each key.
    async fn key_schema(&self) -> Result<(Vec<(String, String, String)>, Option<TableStatus>)> {
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
        let keys = table
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
        Ok((keys, table.table_status().cloned()))
    }

    /// The error for a table whose key schema is not awsflock's, or `None`.
    fn schema_error(&self, keys: &[(String, String, String)]) -> Option<Error> {
        if is_awsflock_schema(keys) {
            return None;
        }
        let shown: Vec<String> = keys
            .iter()
            .map(|(n, k, t)| format!("{n} ({k}, {t})"))
            .collect();
        Some(Error::store(format!(
            "DynamoDB table '{}' has key schema [{}]; awsflock needs a single hash key lock_id (S): {}",
            self.table,
            shown.join(", "),
            words(
                "choose another table with --table (`awsflock table-create --table NAME` makes one)",
                "choose another table (`Store::create` makes one)",
            )
        )))
    }

    /// What to do about a table with the wrong key schema, in the words of
    /// the command line or of the library.
    fn other_table_hint(&self) -> String {
        words(
            &format!(
                "`awsflock table-create --table {}` shows its key schema; choose another table with --table",
                self.table
            ),
            "choose another table (`Store::create` makes one with the right key schema)",
        )
        .to_string()
    }

    /// The error for this table's wrong key schema: with the schema when
    /// DescribeTable may be used (it is `table-create`'s permission), else
    /// without.
    async fn wrong_schema(&self) -> Error {
        let generic = Error::store(format!(
            "DynamoDB table '{}' {WRONG_SCHEMA}, a single hash key lock_id (S); {}",
            self.table,
            self.other_table_hint()
        ));
        match self.key_schema().await {
            Ok((keys, _)) => self.schema_error(&keys).unwrap_or(generic),
            Err(_) => generic,
        }
    }

    /// One conditional UpdateItem of the lock item `name`: `e`'s changes on
    /// `condition`. The attributes `returns` asks for when it applies; the
    /// whole item (`ALL_OLD`) when the condition failed.
    async fn update(
        &self,
        name: &str,
        e: Expr,
        condition: String,
        returns: Option<ReturnValue>,
    ) -> Result<std::result::Result<Option<Item>, Option<Item>>> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LOCK_ID, s(name))
            .update_expression(e.update_expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .set_return_values(returns)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => Ok(Ok(out.attributes)),
            Err(err) => match ccf_of(&err) {
                Some(ccf) => Ok(Err(ccf.item().cloned())),
                None => Err(self.error(err)),
            },
        }
    }

    /// Replaces the generic "wrong key schema" error of a request by one
    /// that shows the table's actual key schema (one DescribeTable).
    async fn explain_error(&self, err: Error) -> Error {
        match err {
            Error::Store(m)
                if self
                    .wrong_schema
                    .swap(false, std::sync::atomic::Ordering::Relaxed) =>
            {
                match self.key_schema().await {
                    Ok((keys, _)) => self.schema_error(&keys).unwrap_or(Error::Store(m)),
                    Err(_) => Error::Store(m),
                }
            }
            other => other,
        }
    }
}

/// Which grant write takes a lock, conditioned on the lease id it carries
/// (`None`: on the item being released, or absent).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GrantKind {
    /// An UpdateItem that takes the next token from the item's own counter.
    Counter(Option<String>),
    /// A transaction that reserves a fresh block of tokens from the
    /// high-water mark.
    Fresh(Option<String>),
}

/// The grant for what a waiter saw (see [`CasStore::grant`]): the blind
/// grant is the counter grant on a released item; a free item with tokens
/// left gets a counter grant on its lease id, and an absent or counter-less
/// item a fresh grant (DESIGN.md, acquire steps 1-4).
pub(crate) fn grant_kind(seen: Option<&Option<Item>>) -> GrantKind {
    match seen {
        None => GrantKind::Counter(None),
        Some(None) => GrantKind::Fresh(None),
        Some(Some(item)) => {
            let id = Some(get_s(item, attr::LEASE_ID).unwrap_or_default().to_string());
            let counter_ok = matches!(
                (get_u64(item, attr::FENCE), get_u64(item, attr::FENCE_LIMIT)),
                (Some(f), Some(l)) if f < l
            );
            if counter_ok {
                GrantKind::Counter(id)
            } else {
                GrantKind::Fresh(id)
            }
        }
    }
}

#[async_trait::async_trait]
impl Requests for Sdk {
    fn describe(&self) -> String {
        self.name()
    }

    async fn explain(&self, err: Error) -> Error {
        self.explain_error(err).await
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

    async fn grant_counter(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<Option<u64>, Option<Item>>> {
        let mut e = Expr::default();
        if !attrs.iter().any(|(k, _)| *k == attr::REASON) {
            e.remove(attr::REASON);
        }
        for (k, v) in attrs {
            e.set(k, v);
        }
        e.remove(attr::RELEASED_LEASE);
        e.remove(attr::RELEASED_MS);
        e.remove(attr::SLOTS);
        let (fence, limit) = (e.name(attr::FENCE), e.name(attr::FENCE_LIMIT));
        let one = e.value("one", n(1));
        e.sets.push(format!("{fence} = {fence} + {one}"));
        let first = match seen {
            // Released, and no holder table: a table with only waiters
            // left is released too, and is theirs in turn.
            None => {
                let exp = e.name(attr::EXPIRATION_TIME);
                let zero = e.value("zero", n(0));
                let slots = e.name(attr::SLOTS);
                format!("{exp} = {zero} AND attribute_not_exists({slots})")
            }
            Some(id) => {
                let lid = e.name(attr::LEASE_ID);
                let seen = e.value("seen", s(id));
                format!("{lid} = {seen}")
            }
        };
        let condition = format!("{first} AND {fence} < {limit}");
        let res = self
            .update(name, e, condition, Some(ReturnValue::UpdatedNew))
            .await?;
        Ok(res.map(|new| new.as_ref().and_then(|a| get_u64(a, attr::FENCE))))
    }

    async fn grant_fresh(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
        hw: Option<u64>,
        token: &str,
    ) -> Result<FreshAnswer> {
        let old_hw = hw.unwrap_or(0);
        let new_hw = old_hw + FENCE_BLOCK;
        let fence = old_hw + 1;

        let mut hw_names = HashMap::from([("#hw".to_string(), attr::FENCE_HW.to_string())]);
        let mut hw_values = HashMap::new();
        let hw_cond = match hw {
            None => "attribute_not_exists(#hw)".to_string(),
            Some(h) => {
                hw_values.insert(":old".to_string(), n(h));
                "#hw = :old".to_string()
            }
        };
        let hw_put = Put::builder()
            .table_name(&self.table)
            .item(attr::LOCK_ID, s(hw_key(name)))
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
            .item(attr::LOCK_ID, s(name))
            .item(attr::FENCE, n(fence))
            .item(attr::FENCE_LIMIT, n(new_hw));
        for (k, v) in attrs {
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
            .client_request_token(token)
            .send()
            .await;
        match res {
            Ok(_) => Ok(FreshAnswer::Ok),
            Err(err) => {
                let Some(tce) = tce_of(&err) else {
                    return Err(self.error(err));
                };
                let reasons = tce.cancellation_reasons();
                let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
                let item = |i: usize| reasons.get(i).and_then(|r| r.item()).cloned();
                if code(1) == "ConditionalCheckFailed" {
                    return Ok(FreshAnswer::LockFailed(item(1)));
                }
                if code(0) == "ConditionalCheckFailed" {
                    return Ok(FreshAnswer::HwFailed(
                        item(0).as_ref().and_then(|i| get_u64(i, attr::FENCE_HW)),
                    ));
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

    async fn renew(
        &self,
        name: &str,
        cur: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        no_shorter: Option<(i64, i64)>,
    ) -> Result<std::result::Result<Option<Item>, Option<Item>>> {
        let mut e = Expr::default();
        for (k, v) in attrs {
            e.set(k, v);
        }
        let (lid, exp) = (e.name(attr::LEASE_ID), e.name(attr::EXPIRATION_TIME));
        let cur = e.value("cur", s(cur));
        let zero = e.value("zero", n(0));
        let mut condition = format!("{lid} = {cur} AND {exp} <> {zero}");
        if let Some((new_s, new_ms)) = no_shorter {
            let ms = e.name(attr::EXPIRES_MS);
            let new_s = e.value("new_s", n(new_s));
            let new_ms = e.value("new_ms", n(new_ms));
            condition.push_str(&format!(
                " AND {exp} <= {new_s} AND (attribute_not_exists({ms}) OR {ms} <= {new_ms})"
            ));
        }
        self.update(name, e, condition, Some(ReturnValue::AllNew))
            .await
    }

    async fn release(
        &self,
        name: &str,
        id: &str,
        nonce: &str,
        released_ms: i64,
    ) -> Result<std::result::Result<(), Option<Item>>> {
        let mut e = Expr::default();
        e.set(attr::LEASE_ID, s(nonce));
        e.set(attr::EXPIRES_MS, n(0));
        e.set(attr::RELEASED_LEASE, s(id));
        e.set(attr::RELEASED_MS, n(released_ms));
        let (lid, exp) = (e.name(attr::LEASE_ID), e.name(attr::EXPIRATION_TIME));
        let cur = e.value("cur", s(id));
        let zero = e.value("zero", n(0));
        e.sets.push(format!("{exp} = {zero}"));
        let res = self
            .update(name, e, format!("{lid} = {cur} AND {exp} <> {zero}"), None)
            .await?;
        Ok(res.map(|_| ()))
    }

    async fn release_unreadable(&self, name: &str, item: &Item, released_ms: i64) -> Result<()> {
        let mut e = Expr::default();
        e.set(attr::LEASE_ID, s(uuid::Uuid::new_v4().to_string()));
        e.set(attr::EXPIRATION_TIME, n(0));
        e.set(attr::EXPIRES_MS, n(0));
        e.set(attr::RELEASED_MS, n(released_ms));
        let lid = e.name(attr::LEASE_ID);
        let condition = if item.contains_key(attr::LEASE_ID) {
            let ty = e.value("string_type", s("S"));
            format!("attribute_exists({lid}) AND NOT attribute_type({lid}, {ty})")
        } else {
            format!("attribute_not_exists({lid})")
        };
        match self.update(name, e, condition, None).await? {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::Unavailable(format!(
                "lock {name:?} changed while being released; try again"
            ))),
        }
    }

    async fn scan(&self) -> Result<Vec<(String, Item)>> {
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
                    // Every item of awsflock's table has a string lock_id:
                    // this is another table.
                    return Err(self.wrong_schema().await);
                };
                if name.starts_with(RESERVED_PREFIX) {
                    continue;
                }
                out.push((name.to_string(), item.clone()));
            }
        }
        Ok(out)
    }

    async fn put_slots(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        removes: Vec<&'static str>,
        seen: Option<&str>,
    ) -> Result<std::result::Result<(), Option<Item>>> {
        let mut e = Expr::default();
        for (k, v) in attrs {
            e.set(k, v);
        }
        for k in removes {
            e.remove(k);
        }
        let condition = match seen {
            None => {
                let key = e.name(attr::LOCK_ID);
                format!("attribute_not_exists({key})")
            }
            Some(id) => {
                let lid = e.name(attr::LEASE_ID);
                let seen = e.value("seen", s(id));
                format!("{lid} = {seen}")
            }
        };
        Ok(self.update(name, e, condition, None).await?.map(|_| ()))
    }

    async fn create(&self) -> Result<()> {
        self.create_table().await?;
        self.wait_until_active().await?;
        self.enable_ttl().await
    }
}

impl<R: Requests> DynamoDb<R> {
    /// The lock logic over `req`, with the store's clock that `req`'s
    /// answers calibrate and this host's name (written with each grant).
    pub(crate) fn over(req: R, clock: Arc<ServerClock>, host: String) -> Self {
        DynamoDb {
            req,
            clock,
            host,
            hw_hint: std::sync::Mutex::new(None),
        }
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
            (attr::SUPERVISED, AttributeValue::Bool(req.supervised)),
        ];
        if let Some(r) = &req.reason {
            v.push((attr::REASON, s(r.clone())));
        }
        v
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
        let attrs = self.grant_attrs(req, lease_id, st);
        Ok(
            match self.req.grant_counter(&req.name, attrs, seen).await? {
                Ok(fence) => Outcome::Granted(fence),
                Err(item) => won_anyway(item, lease_id),
            },
        )
    }

    /// A grant with a fresh block of fencing tokens reserved from the
    /// high-water mark, in one transaction, for a lock item that is absent
    /// (`seen = None`) or whose counter was lost (wiped by an old client,
    /// deleted by TTL, or exhausted). The high-water mark is guessed from
    /// what this client last learnt (`None`: assume it does not exist yet);
    /// a wrong guess cancels the transaction, teaches the right value, and
    /// the caller tries again at once.
    async fn grant_fresh(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&str>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        let hw = self.hw_hint.lock().map(|h| *h).unwrap_or(None);
        let attrs = self.grant_attrs(req, lease_id, st);
        // The lease id is the transaction's ClientRequestToken: a retry of
        // a transaction that landed is a no-op.
        Ok(
            match self
                .req
                .grant_fresh(&req.name, attrs, seen, hw, lease_id)
                .await?
            {
                FreshAnswer::Ok => Outcome::Granted(Some(hw.unwrap_or(0) + 1)),
                // The lock item changed (or is ours already: a retry of a
                // transaction that landed).
                FreshAnswer::LockFailed(item) => won_anyway(item, lease_id),
                FreshAnswer::HwFailed(h) => {
                    if let Ok(mut hint) = self.hw_hint.lock() {
                        *hint = h.or(Some(0));
                    }
                    Outcome::Retry
                }
            },
        )
    }

    fn info_of(&self, name: &str, item: Option<&Item>) -> LockInfo {
        let Some(item) = item else {
            return cas::absent_info(name);
        };
        let released = get_i64(item, attr::EXPIRATION_TIME) == Some(0);
        let ours = get_s(item, attr::CLIENT).is_some();
        let expiry = expiry_ms(item);
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
            acquired_at_ms: get_ms(item, attr::ACQUIRED_MS),
            expires_at_ms: if released { None } else { expiry },
            expires_in_ms: if released {
                None
            } else {
                expiry.map(|e| e - self.clock.lower_ms())
            },
            lease_duration_s: get_num(item, attr::LEASE_DURATION, 0, MAX_DURATION_S)
                .ok()
                .flatten()
                .map(|d| d as u64),
            pid: get_u64(item, attr::PID).and_then(|p| u32::try_from(p).ok()),
            host: get_s(item, attr::HOST).map(String::from),
            client: Some(
                get_s(item, attr::CLIENT)
                    .map(String::from)
                    .unwrap_or_else(|| "awsflock 0.2.0".into()),
            ),
            problem: problems(item),
            supervised: !released && supervised_item(item),
            ..LockInfo::default()
        }
    }

    /// Renews to a caller-chosen next lease id (see [`LockStore::renew`]).
    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        let st = Stamp::now(&self.clock, duration);
        let attrs = vec![
            (attr::LEASE_ID, s(next_id)),
            (attr::LEASE_DURATION, n(duration.as_secs())),
            (attr::EXPIRATION_TIME, n(ceil_secs(st.expires_ms))),
            (attr::EXPIRES_MS, n(st.expires_ms)),
        ];
        // A new process (`awsflock renew`) stamps its first write on this
        // machine's clock. Should that clock be behind, the renewal would
        // write an expiry earlier than the lease it renews, one that may
        // look long past and be taken at once while that lease was still
        // valid: refuse to shorten it, and try again on the store's clock.
        let no_shorter = (!st.calibrated).then_some((ceil_secs(st.expires_ms), st.expires_ms));
        let item = match self
            .req
            .renew(&lease.name, &lease.lease_id, attrs, no_shorter)
            .await?
        {
            Ok(item) => item,
            Err(old) => match renew_refused(
                old.as_ref(),
                &lease.lease_id,
                next_id,
                !st.calibrated,
                self.clock.is_calibrated(),
            ) {
                // Our earlier attempt landed but its answer was lost.
                RenewRefused::Landed(i) => Some(i),
                // Still our lease, but the local clock would have
                // shortened it; the answer calibrated the store's clock.
                RenewRefused::Again => {
                    tracing::warn!(
                        "this machine's clock is behind the store's; renewing on the store's clock"
                    );
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
        // The expiry the store holds: an earlier attempt's, when that one
        // landed and this one found its own id.
        let st = renewed_stamp(item.as_ref(), st);
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

/// The lease's expiry on the store's clock, in ms. 0.2.0 writes whole
/// seconds truncated from its local clock, so its leases get a second more.
/// `None` when the expiry cannot be read: such a lease never expires, so
/// it is never taken over (DESIGN.md, "Unreadable records"). Nor is one
/// without a string `lease_id`, which no takeover could be conditioned on.
pub(crate) fn expiry_ms(item: &Item) -> Option<i64> {
    get_s(item, attr::LEASE_ID)?;
    match get_num(item, attr::EXPIRES_MS, 0, MAX_TIME_MS) {
        Ok(Some(ms)) if ms > 0 => Some(ms),
        Ok(_) => get_num(item, attr::EXPIRATION_TIME, 0, MAX_TIME_MS / 1000)
            .ok()
            .flatten()
            .map(|s| s * 1000 + 1000),
        Err(_) => None,
    }
}

/// Whether the item's lease is renewed by a supervisor (`run`, a
/// `LockGuard`): written by a grant of ours with `supervised = true`
/// (awsflock 0.2.0 rewrites whole items, so its leases never are).
fn supervised_item(item: &Item) -> bool {
    matches!(item.get(attr::SUPERVISED), Some(AttributeValue::Bool(true)))
}

/// Whether the item's lease was last written by awsflock 0.2.0: it
/// rewrites whole items with its five attributes only, so `expires_ms`
/// is gone. (Our renewal of a 0.2.0 lease writes `expires_ms`, on the
/// store's clock.)
fn written_by_v020(item: &Item) -> bool {
    get_i64(item, attr::EXPIRES_MS).is_none_or(|ms| ms <= 0)
        && get_i64(item, attr::EXPIRATION_TIME).is_some_and(|s| s > 0)
}

#[async_trait::async_trait]
impl<R: Requests> CasStore for DynamoDb<R> {
    type Record = Item;

    fn describe_store(&self) -> String {
        self.req.describe()
    }

    async fn explain(&self, err: Error) -> Error {
        self.req.explain(err).await
    }

    fn clock(&self) -> &ServerClock {
        &self.clock
    }

    /// The write [`grant_kind`] chooses.
    async fn grant(
        &self,
        req: &AcquireRequest,
        lease_id: &str,
        seen: Option<&Option<Item>>,
        st: &Stamp,
    ) -> Result<Outcome<Item>> {
        match grant_kind(seen) {
            GrantKind::Counter(id) => self.grant_counter(req, lease_id, id.as_deref(), st).await,
            GrantKind::Fresh(id) => self.grant_fresh(req, lease_id, id.as_deref(), st).await,
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Item>> {
        self.req.get(name).await
    }

    fn lease_id_of(rec: &Item) -> Option<String> {
        get_s(rec, attr::LEASE_ID).map(String::from)
    }

    fn is_released(rec: &Item) -> bool {
        get_i64(rec, attr::EXPIRATION_TIME) == Some(0)
    }

    fn expiry_ms(rec: &Item) -> Option<i64> {
        expiry_ms(rec)
    }

    /// awsflock 0.2.0 takes over a lease once its clock is more than 5 s
    /// past `expiration_time`, and its holders rely on that margin (their
    /// expiry is stamped when their acquire *started*): its leases get the
    /// same 5 s, on the store's clock. [`expiry_ms`] already adds the
    /// second lost to truncation.
    fn takeover_margin_ms(rec: &Item) -> i64 {
        takeover_margin_of(rec)
    }

    fn info(&self, name: &str, rec: Option<&Item>) -> LockInfo {
        self.info_of(name, rec)
    }

    async fn renew_to(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease> {
        DynamoDb::renew_to(self, lease, duration, next_id).await
    }

    /// The fresh lease id written by this call doubles as its nonce: only
    /// an earlier attempt of *this* call leaves it behind.
    async fn release_id(&self, name: &str, lease_id: &str) -> Result<()> {
        let nonce = uuid::Uuid::new_v4().to_string();
        let released_ms = self.clock.lower_ms();
        match self
            .req
            .release(name, lease_id, &nonce, released_ms)
            .await?
        {
            Ok(()) => Ok(()),
            // Released by an earlier attempt of this call whose answer
            // was lost (the SDK retried).
            Err(Some(i)) if get_s(&i, attr::LEASE_ID) == Some(nonce.as_str()) => Ok(()),
            Err(other) => Err(Error::NotHeld {
                name: name.to_string(),
                lease_id: lease_id.to_string(),
                detail: match other.map(|i| self.info_of(name, Some(&i))) {
                    Some(info) if info.held => holder_detail(&info),
                    _ => " (it is not held by anyone)".to_string(),
                },
            }),
        }
    }

    /// An item whose `lease_id` cannot be read (missing, or not a string)
    /// is one no lease id can release: it is released on the condition that
    /// its `lease_id` is still unreadable.
    async fn release_record(&self, name: &str, item: &Item) -> Result<()> {
        match get_s(item, attr::LEASE_ID) {
            Some(id) => self.release_id(name, id).await,
            None => {
                self.req
                    .release_unreadable(name, item, self.clock.lower_ms())
                    .await
            }
        }
    }

    async fn records(&self) -> Result<Vec<(String, Item)>> {
        self.req.scan().await
    }

    async fn create_store(&self) -> Result<()> {
        self.req.create().await
    }

    fn slots_of(rec: &Item) -> Option<Slots> {
        let table: Slots = serde_json::from_str(get_s(rec, attr::SLOTS)?).ok()?;
        (Some(table.version.as_str()) == get_s(rec, attr::LEASE_ID)).then_some(table)
    }

    /// Our own lease (written by awsflock-rs, with a counter, used up or
    /// not), held.
    fn as_table(rec: &Item) -> Option<Slots> {
        if written_by_v020(rec)
            || !get_s(rec, attr::CLIENT).is_some_and(|c| c.starts_with("awsflock-rs"))
            || problems(rec).is_some()
        {
            return None;
        }
        // A holder that took its block's last token (fence = limit) moves
        // too: the table's next admission reserves a fresh block.
        let (fence, limit) = match (get_u64(rec, attr::FENCE), get_u64(rec, attr::FENCE_LIMIT)) {
            (Some(f), Some(l)) if f <= l => (f, Some(l)),
            _ => return None,
        };
        let holder = Holder {
            lease_id: get_s(rec, attr::LEASE_ID)?.to_string(),
            kind: Kind::Exclusive,
            owner: get_s(rec, attr::OWNER).unwrap_or("NULL").to_string(),
            reason: get_s(rec, attr::REASON).map(String::from),
            fence,
            expires_ms: expiry_ms(rec)?,
            acquired_ms: get_i64(rec, attr::ACQUIRED_MS).unwrap_or(0),
            host: get_s(rec, attr::HOST).map(String::from),
            pid: get_u64(rec, attr::PID).and_then(|p| u32::try_from(p).ok()),
            supervised: supervised_item(rec),
            revoked_by: None,
            lease_ms: get_num(rec, attr::LEASE_DURATION, 1, MAX_DURATION_S)
                .ok()
                .flatten()
                .map(|d| d.saturating_mul(1000)),
        };
        Some(Slots::of_holder(holder, (fence + 1, limit)))
    }

    /// A revoked single holder is moved into a holder table and marked
    /// there (see `cas::force_once`): the lock item's own attributes and
    /// conditions are those of awsflock 0.2.0's table, plus `supervised`.
    fn supervised(rec: &Item) -> bool {
        supervised_item(rec)
    }

    fn last_fence(rec: &Item) -> Option<(u64, Option<u64>)> {
        match (get_u64(rec, attr::FENCE), get_u64(rec, attr::FENCE_LIMIT)) {
            (Some(f), Some(l)) if f < l => Some((f, Some(l))),
            _ => None,
        }
    }

    /// The block of tokens above the high-water mark as last learnt (read
    /// once when not known). The table's write reserves it in the same
    /// transaction, on the mark still being that (see `write_slots`).
    async fn fence_floor(&self, name: &str) -> Result<(u64, Option<u64>)> {
        let known = self.hw_hint.lock().ok().and_then(|h| *h);
        let h = match known {
            Some(h) => h,
            None => self
                .req
                .get(&hw_key(name))
                .await?
                .and_then(|i| get_u64(&i, attr::FENCE_HW))
                .unwrap_or(0),
        };
        Ok((h + 1, Some(h + FENCE_BLOCK)))
    }

    /// One UpdateItem of the item keeping `table`: awsflock 0.2.0's
    /// attributes say "held until the latest holder's expiry" while anyone
    /// holds (so it never takes the name), "released" when nobody does.
    async fn write_slots(
        &self,
        name: &str,
        seen: Option<&Item>,
        table: &Slots,
    ) -> Result<std::result::Result<(), Option<Item>>> {
        let seen_id = match seen {
            None => None,
            Some(item) => match get_s(item, attr::LEASE_ID) {
                Some(id) => Some(id),
                None => return Ok(Err(Some(item.clone()))),
            },
        };
        let latest = table.holders.iter().max_by_key(|h| h.expires_ms);
        let expires = latest.map_or(0, |h| h.expires_ms);
        let last = table.next_fence.saturating_sub(1);
        let mut attrs = vec![
            (attr::LEASE_ID, s(table.version.clone())),
            (
                attr::EXPIRATION_TIME,
                n(if expires > 0 { ceil_secs(expires) } else { 0 }),
            ),
            (attr::EXPIRES_MS, n(expires)),
            (attr::ACQUIRED_MS, n(self.clock.lower_ms())),
            (
                attr::OWNER,
                s(latest
                    .map(|h| h.owner.clone())
                    .unwrap_or_else(|| "NULL".into())),
            ),
            (attr::LEASE_DURATION, n(0)),
            (attr::CLIENT, s(CLIENT_TAG)),
            (attr::FENCE, n(last)),
            (
                attr::SLOTS,
                s(serde_json::to_string(table).unwrap_or_default()),
            ),
        ];
        let mut removes = vec![
            attr::RELEASED_LEASE,
            attr::RELEASED_MS,
            attr::PID,
            attr::HOST,
        ];
        match table.fence_limit {
            Some(l) => attrs.push((attr::FENCE_LIMIT, n(l))),
            None => removes.push(attr::FENCE_LIMIT),
        }
        match latest.and_then(|h| h.reason.clone()) {
            Some(r) => attrs.push((attr::REASON, s(r))),
            None => removes.push(attr::REASON),
        }
        // A table that starts a fresh block of tokens (the item is absent,
        // or kept no counter, or used its block up) reserves it from the
        // high-water mark in the same transaction as a fresh grant does, on
        // the mark being what the block was computed from: an item deleted
        // since (by awsflock 0.2.0's release, or TTL) and granted again
        // meanwhile can never make a token go back.
        let seen_limit = seen.and_then(|i| get_u64(i, attr::FENCE_LIMIT));
        if let Some(limit) = table.fence_limit.filter(|l| Some(*l) != seen_limit) {
            let hw = limit.saturating_sub(FENCE_BLOCK);
            let guess = (hw > 0).then_some(hw);
            return Ok(
                match self
                    .req
                    .grant_fresh(name, attrs, seen_id, guess, &table.version)
                    .await?
                {
                    FreshAnswer::Ok => Ok(()),
                    FreshAnswer::LockFailed(item) => Err(item),
                    FreshAnswer::HwFailed(h) => {
                        if let Ok(mut hint) = self.hw_hint.lock() {
                            *hint = h.or(Some(0));
                        }
                        Err(None)
                    }
                },
            );
        }
        self.req.put_slots(name, attrs, removes, seen_id).await
    }
}

/// How far past [`DynamoDb::expiry_ms`] the store's clock must be before a
/// waiter takes `item` over: awsflock 0.2.0's own 5 s for its items (the
/// second lost to its truncation is already in the expiry), 1 s for ours.
pub(crate) fn takeover_margin_of(item: &Item) -> i64 {
    if written_by_v020(item) {
        V020_TAKEOVER_AFTER_MS - 1000
    } else {
        cas::EXPIRY_MARGIN_MS
    }
}

/// What a renewal's failed condition means, from the item it returned.
#[derive(Debug)]
pub(crate) enum RenewRefused {
    /// The item carries our next lease id: an earlier attempt of this
    /// renewal landed and its answer was lost. Renewed, as that item says.
    Landed(Item),
    /// Still our current lease, but the write was stamped on this machine's
    /// clock and would have shortened it; the answer calibrated the store's
    /// clock: renew again on it.
    Again,
    /// The lease is not ours any more.
    NotHeld,
}

/// Judges a renewal whose condition failed (see [`RenewRefused`]).
/// `stamped_locally`: the write was stamped before the store's clock was
/// known; `calibrated`: it is known now.
pub(crate) fn renew_refused(
    item: Option<&Item>,
    current: &str,
    next_id: &str,
    stamped_locally: bool,
    calibrated: bool,
) -> RenewRefused {
    match item {
        Some(i) if get_s(i, attr::LEASE_ID) == Some(next_id) => RenewRefused::Landed(i.clone()),
        Some(i)
            if stamped_locally
                && calibrated
                && get_s(i, attr::LEASE_ID) == Some(current)
                && get_i64(i, attr::EXPIRATION_TIME) != Some(0) =>
        {
            RenewRefused::Again
        }
        _ => RenewRefused::NotHeld,
    }
}

/// The stamp a renewal's deadline is computed from: the expiry the item
/// holds (an earlier attempt's, when that one landed and this one found its
/// own id), not the one this attempt would have written.
pub(crate) fn renewed_stamp(item: Option<&Item>, st: Stamp) -> Stamp {
    match item.and_then(|i| get_i64(i, attr::EXPIRES_MS)) {
        Some(stored) => st.as_stored(stored),
        None => st,
    }
}

/// A failed condition whose current item carries our own lease id means an
/// earlier attempt of this very write landed (its answer was lost, and the SDK
/// retried): we hold the lock.
pub(crate) fn won_anyway(item: Option<Item>, lease_id: &str) -> Outcome<Item> {
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

pub(crate) fn ceil_secs(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000)
}

impl Sdk {
    /// CreateTable with awsflock's key schema, on demand; a table that
    /// exists already is checked by [`Self::wait_until_active`].
    async fn create_table(&self) -> Result<()> {
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
        Ok(())
    }

    /// Waits until the table is ACTIVE (at most 5 minutes), checking the
    /// key schema of a table that existed.
    async fn wait_until_active(&self) -> Result<()> {
        let wait_until = Instant::now() + Duration::from_secs(300);
        loop {
            let (keys, status) = self.key_schema().await?;
            if let Some(e) = self.schema_error(&keys) {
                return Err(e);
            }
            match table_wait(status.as_ref(), Instant::now(), wait_until) {
                TableWait::Ready => return Ok(()),
                TableWait::TimedOut => {
                    return Err(Error::Unavailable(format!(
                        "table '{}' did not become ACTIVE in 5 minutes",
                        self.table
                    )));
                }
                TableWait::Again => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// Turns on DynamoDB's TTL on `expiration_time`, unless it is on (or
    /// being turned on) already.
    async fn enable_ttl(&self) -> Result<()> {
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
        if !ttl_needs_enabling(status) {
            return Ok(());
        }
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
        Ok(())
    }
}

/// What to do while waiting for a table to become usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableWait {
    /// The table is ACTIVE.
    Ready,
    /// Not yet: look again shortly.
    Again,
    /// Not ACTIVE by the limit.
    TimedOut,
}

/// Judges a table seen in `status` at `now`, waited for until `until`.
fn table_wait(status: Option<&TableStatus>, now: Instant, until: Instant) -> TableWait {
    if status == Some(&TableStatus::Active) {
        TableWait::Ready
    } else if now > until {
        TableWait::TimedOut
    } else {
        TableWait::Again
    }
}

/// Whether a table whose TTL is in `status` needs UpdateTimeToLive.
fn ttl_needs_enabling(status: Option<&TimeToLiveStatus>) -> bool {
    !matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    )
}

/// Whether `keys` (attribute, HASH/RANGE, S/N/B) is awsflock's key schema:
/// a single hash key lock_id (S).
fn is_awsflock_schema(keys: &[(String, String, String)]) -> bool {
    keys == [(attr::LOCK_ID.into(), "HASH".into(), "S".into())]
}

#[cfg(test)]
mod tests {
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
            cas::EXPIRY_MARGIN_MS
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
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A store that sends nothing: enough to judge and show items.
    fn store() -> DynamoDb {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        let clock = Arc::new(ServerClock::new());
        let sdk = Sdk {
            client: Client::from_conf(conf),
            table: "t".into(),
            interceptor: StoreInterceptor::new(clock.clone()),
            wrong_schema: std::sync::atomic::AtomicBool::new(false),
        };
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
}
