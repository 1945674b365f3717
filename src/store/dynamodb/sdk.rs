//! The requests of [`super::Requests`], sent to DynamoDB with the AWS SDK,
//! and its errors made plain.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, TransactionCanceledException,
};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::clock::ServerClock;
use crate::error::{Error, Result, words};
use crate::request::RESERVED_PREFIX;
use crate::store::aws::{self, StoreInterceptor};

use super::table::{Described, described, is_awsflock_schema};
use super::*;

/// DynamoDB through the AWS SDK.
pub struct Sdk {
    pub(super) client: Client,
    pub(super) table: String,
    pub(super) interceptor: StoreInterceptor,
    /// Set by [`Sdk::error`] when it answered a request with the generic
    /// "wrong key schema" error, for [`Sdk::explain_error`] to replace by
    /// one that shows the table's key schema.
    pub(super) wrong_schema: std::sync::atomic::AtomicBool,
    /// Whether the table's replication lets awsflock use it, judged once,
    /// before the first lock operation ([`Sdk::ready`]): `Some` holds the
    /// message of a refusal.
    pub(super) replication: tokio::sync::OnceCell<Option<String>>,
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
        let sdk = Sdk::new(Client::from_conf(conf), table, interceptor);
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
    /// GetItem of each of `keys`, strongly consistent: those that exist.
    async fn get_each(&self, keys: &[Item]) -> Result<Vec<Item>> {
        let mut found = Vec::new();
        for key in keys {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.error(e))?;
            found.extend(out.item);
        }
        Ok(found)
    }

    /// Requests to `table` through `client`, nothing sent or judged yet.
    pub(super) fn new(client: Client, table: String, interceptor: StoreInterceptor) -> Self {
        Sdk {
            client,
            table,
            interceptor,
            wrong_schema: std::sync::atomic::AtomicBool::new(false),
            replication: tokio::sync::OnceCell::new(),
        }
    }

    /// The write of the fencing high-water mark in a fresh grant:
    /// conditioned on the mark read (`None`: absent).
    fn hw_put(&self, name: &str, hw: Option<u64>, new_hw: u64) -> Result<Put> {
        let mut hw_names = HashMap::from([("#hw".to_string(), attr::FENCE_HW.to_string())]);
        let mut hw_values = HashMap::new();
        let hw_cond = match hw {
            None => "attribute_not_exists(#hw)".to_string(),
            Some(h) => {
                hw_values.insert(":old".to_string(), n(h));
                "#hw = :old".to_string()
            }
        };
        Put::builder()
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
            .map_err(|e| Error::store(e.to_string()))
    }

    /// The write of the lock item in a fresh grant: conditioned on the
    /// lease id seen (`None`: absent).
    fn fresh_lock_put(
        &self,
        name: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        seen: Option<&str>,
        fence: u64,
        new_hw: u64,
    ) -> Result<Put> {
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
        lock.return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| Error::store(e.to_string()))
    }

    /// Which of a fresh grant's two writes was refused, and what it found.
    fn fresh_refused(&self, err: TransactErr) -> Result<FreshAnswer> {
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

    pub(crate) fn name(&self) -> String {
        format!("DynamoDB table '{}'", self.table)
    }

    /// Maps an SDK error, turning a missing table into advice.
    pub(crate) fn error<E>(&self, err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> Error
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

    /// What DescribeTable says of the table (see [`Described`]).
    pub(crate) async fn describe_table(&self) -> Result<Described> {
        let d = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        described(d)
    }

    /// The error for a table whose key schema is not awsflock's, or `None`.
    pub(crate) fn schema_error(&self, keys: &[(String, String, String)]) -> Option<Error> {
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
    pub(crate) fn other_table_hint(&self) -> String {
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
    pub(crate) async fn wrong_schema(&self) -> Error {
        let generic = Error::store(format!(
            "DynamoDB table '{}' {WRONG_SCHEMA}, a single hash key lock_id (S); {}",
            self.table,
            self.other_table_hint()
        ));
        match self.describe_table().await {
            Ok(d) => self.schema_error(&d.keys).unwrap_or(generic),
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
    pub(crate) async fn explain_error(&self, err: Error) -> Error {
        match err {
            Error::Store(m)
                if self
                    .wrong_schema
                    .swap(false, std::sync::atomic::Ordering::Relaxed) =>
            {
                match self.describe_table().await {
                    Ok(d) => self.schema_error(&d.keys).unwrap_or(Error::Store(m)),
                    Err(_) => Error::Store(m),
                }
            }
            other => other,
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
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
        let old_hw = hw.unwrap_or(0);
        let new_hw = old_hw + FENCE_BLOCK;
        let fence = old_hw + 1;

        let hw_put = self.hw_put(name, hw, new_hw)?;
        let lock = self.fresh_lock_put(name, attrs, seen, fence, new_hw)?;
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
            Err(err) => self.fresh_refused(err),
        }
    }

    async fn renew(
        &self,
        name: &str,
        cur: &str,
        attrs: Vec<(&'static str, AttributeValue)>,
        no_shorter: Option<(i64, i64)>,
    ) -> Result<std::result::Result<Option<Item>, Option<Item>>> {
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
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
        self.ready().await?;
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

    async fn take_ticket(&self, key: &str) -> Result<u64> {
        self.ready().await?;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LOCK_ID, s(key))
            .update_expression("ADD #t :one")
            .expression_attribute_names("#t", attr::NEXT_TICKET)
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        out.attributes
            .as_ref()
            .and_then(|a| get_u64(a, attr::NEXT_TICKET))
            .ok_or_else(|| Error::store(format!("the ticket counter {key} returned no number")))
    }

    async fn last_ticket(&self, key: &str) -> Result<u64> {
        self.ready().await?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::LOCK_ID, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(out
            .item
            .as_ref()
            .and_then(|i| get_u64(i, attr::NEXT_TICKET))
            .unwrap_or(0))
    }

    async fn put_entry(&self, key: &str, attrs: Vec<(&'static str, AttributeValue)>) -> Result<()> {
        self.ready().await?;
        let mut item: Item = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        item.insert(attr::LOCK_ID.to_string(), s(key));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn delete_entry(&self, key: &str) -> Result<()> {
        self.ready().await?;
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(attr::LOCK_ID, s(key))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn get_entries(&self, keys: Vec<String>) -> Result<Vec<Item>> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        self.ready().await?;
        let mut found = Vec::new();
        let mut keys: Vec<Item> = keys
            .into_iter()
            .map(|k| HashMap::from([(attr::LOCK_ID.to_string(), s(k))]))
            .collect();
        // BatchGetItem may leave keys unprocessed under load: ask again for
        // those, a few times.
        for _ in 0..5 {
            if keys.is_empty() {
                break;
            }
            let ka = KeysAndAttributes::builder()
                .set_keys(Some(keys.clone()))
                .consistent_read(true)
                .build()
                .map_err(|e| Error::store(e.to_string()))?;
            let req = self.client.batch_get_item().request_items(&self.table, ka);
            let out = match req.send().await {
                Ok(out) => out,
                // A policy written before the waiting line existed grants
                // GetItem but not BatchGetItem: read one key at a time.
                Err(e) if e.code() == Some("AccessDeniedException") => {
                    found.extend(self.get_each(&keys).await?);
                    return Ok(found);
                }
                Err(e) => return Err(self.error(e)),
            };
            if let Some(mut r) = out.responses {
                found.extend(r.remove(&self.table).unwrap_or_default());
            }
            keys = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .map(|ka| ka.keys)
                .unwrap_or_default();
        }
        if !keys.is_empty() {
            return Err(Error::Unavailable(format!(
                "DynamoDB left {} keys of the waiting line unread; try again",
                keys.len()
            )));
        }
        Ok(found)
    }

    async fn create(&self) -> Result<()> {
        self.create_table().await?;
        let table = self.wait_until_active().await?;
        // The same answer judges the table's replication: a table that
        // existed may be a global one.
        self.judged(&table)?;
        self.enable_ttl().await
    }
}

pub(crate) type UpdateErr = SdkError<UpdateItemError, aws_smithy_runtime_api::http::Response>;
pub(crate) type TransactErr =
    SdkError<TransactWriteItemsError, aws_smithy_runtime_api::http::Response>;

pub(crate) fn ccf_of(err: &UpdateErr) -> Option<&ConditionalCheckFailedException> {
    match err.as_service_error()? {
        UpdateItemError::ConditionalCheckFailedException(e) => Some(e),
        _ => None,
    }
}

pub(crate) fn tce_of(err: &TransactErr) -> Option<&TransactionCanceledException> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(e) => Some(e),
        _ => None,
    }
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
