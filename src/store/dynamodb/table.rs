//! Creating the table (on demand, TTL on), and checking one that exists:
//! its key schema, and whether its replication lets one lock have two
//! holders (a global table: [`judge_replication`]).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, MultiRegionConsistency,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::{Error, Result, words};

use super::*;

impl Sdk {
    /// CreateTable with awsflock's key schema, on demand; a table that
    /// exists already is checked by [`Self::wait_until_active`].
    pub(crate) async fn create_table(&self) -> Result<()> {
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
    /// key schema of a table that existed; what DescribeTable said last.
    pub(crate) async fn wait_until_active(&self) -> Result<Described> {
        let wait_until = Instant::now() + Duration::from_secs(300);
        loop {
            let table = self.describe_table().await?;
            if let Some(e) = self.schema_error(&table.keys) {
                return Err(e);
            }
            match table_wait(table.status.as_ref(), Instant::now(), wait_until) {
                TableWait::Ready => return Ok(table),
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
    pub(crate) async fn enable_ttl(&self) -> Result<()> {
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

impl Sdk {
    /// Refuses every lock operation on a table whose replication could
    /// grant one lock twice ([`judge_replication`]). Judged once per store,
    /// before its first lock operation, from one DescribeTable; a
    /// DescribeTable refused by IAM is warned about once and the table used.
    pub(crate) async fn ready(&self) -> Result<()> {
        let verdict = self
            .replication
            .get_or_try_init(|| self.replication_verdict())
            .await?;
        match verdict {
            Some(refusal) => Err(Error::store(refusal.clone())),
            None => Ok(()),
        }
    }

    /// The table's replication judged from `table` (and remembered, so
    /// that the store's lock operations need no DescribeTable of their own).
    pub(crate) fn judged(&self, table: &Described) -> Result<()> {
        let verdict = self.judge(table).err();
        let _ = self.replication.set(verdict.clone());
        verdict.map_or(Ok(()), |refusal| Err(Error::store(refusal)))
    }

    fn judge(&self, table: &Described) -> std::result::Result<(), String> {
        let here = self.client.config().region().map(|r| r.as_ref());
        judge_replication(
            &self.table,
            here,
            &table.replicas,
            table.consistency.as_ref(),
        )
    }

    /// One DescribeTable, judged: `Some` refusal, or `None` (usable, or not
    /// to be checked: IAM refused DescribeTable). Other errors are not
    /// remembered: the next operation asks again.
    async fn replication_verdict(&self) -> Result<Option<String>> {
        let answer = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        match answer {
            Ok(d) => Ok(self.judge(&described(d)?).err()),
            Err(err) if err.code() == Some("AccessDeniedException") => {
                tracing::warn!("{}", unchecked_warning(&self.table));
                Ok(None)
            }
            Err(err) => Err(self.error(err)),
        }
    }
}

/// What DescribeTable says of a table, as far as awsflock reads it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Described {
    /// (attribute, HASH/RANGE, S/N/B) for each key.
    pub keys: Vec<(String, String, String)>,
    pub status: Option<TableStatus>,
    /// The Regions of its replicas: none for a single-Region table.
    pub replicas: Vec<String>,
    /// A global table's consistency mode (absent: eventual).
    pub consistency: Option<MultiRegionConsistency>,
}

/// The parts of a DescribeTable answer awsflock reads.
pub(crate) fn described(d: DescribeTableOutput) -> Result<Described> {
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
    Ok(Described {
        keys,
        status: table.table_status().cloned(),
        replicas: table
            .replicas()
            .iter()
            .filter_map(|r| r.region_name().map(String::from))
            .collect(),
        consistency: table.multi_region_consistency().cloned(),
    })
}

/// Whether awsflock can keep its promise (one holder per lock) on `table`,
/// reached in Region `here`, whose DescribeTable lists replicas in
/// `replicas` with `consistency`; `Err` is the one-line refusal.
///
/// A single-Region table (no replica but, perhaps, `here`) is fine. A
/// global table is not, whatever its consistency: with multi-Region
/// eventual consistency (the default) DynamoDB settles concurrent writes
/// in two Regions by last writer wins without telling either writer, so
/// both conditional grants succeed; a multi-Region strongly consistent one
/// does not support the transactions (TransactWriteItems) that reserve
/// fencing tokens, nor TTL (DESIGN.md, "Global tables").
pub(crate) fn judge_replication(
    table: &str,
    here: Option<&str>,
    replicas: &[String],
    consistency: Option<&MultiRegionConsistency>,
) -> std::result::Result<(), String> {
    let mut regions: Vec<&str> = replicas.iter().map(String::as_str).chain(here).collect();
    regions.sort_unstable();
    regions.dedup();
    if regions.len() < 2 {
        return Ok(());
    }
    let what = format!(
        "DynamoDB table '{table}' is a global table replicated across Regions {}",
        regions.join(", ")
    );
    let instead = words(
        "`awsflock table-create --table NAME --region REGION` makes one",
        "`Store::create` makes one",
    );
    let why = match consistency {
        Some(MultiRegionConsistency::Strong) => {
            "with multi-Region strong consistency, which does not support the transactions \
             (TransactWriteItems) awsflock reserves fencing tokens with, nor TTL"
                .to_string()
        }
        other => format!(
            "with multi-Region {} consistency: DynamoDB resolves concurrent writes in two \
             Regions by last writer wins without reporting the conflict, so two holders \
             could both be granted one lock",
            other.map_or("eventual".to_string(), |c| c.as_str().to_lowercase())
        ),
    };
    Err(format!(
        "{what} {why}; awsflock refuses to use it: use a single-Region table instead ({instead})"
    ))
}

/// The warning when IAM refuses DescribeTable: the table is used unchecked.
pub(crate) fn unchecked_warning(table: &str) -> String {
    format!(
        "could not check whether DynamoDB table '{table}' is a global table replicated to \
         other Regions (DescribeTable was refused: AccessDeniedException); one with \
         multi-Region eventual consistency can grant a lock to two holders; grant \
         dynamodb:DescribeTable on the table to have it checked"
    )
}

/// What to do while waiting for a table to become usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableWait {
    /// The table is ACTIVE.
    Ready,
    /// Not yet: look again shortly.
    Again,
    /// Not ACTIVE by the limit.
    TimedOut,
}

/// Judges a table seen in `status` at `now`, waited for until `until`.
pub(crate) fn table_wait(status: Option<&TableStatus>, now: Instant, until: Instant) -> TableWait {
    if status == Some(&TableStatus::Active) {
        TableWait::Ready
    } else if now > until {
        TableWait::TimedOut
    } else {
        TableWait::Again
    }
}

/// Whether a table whose TTL is in `status` needs UpdateTimeToLive.
pub(crate) fn ttl_needs_enabling(status: Option<&TimeToLiveStatus>) -> bool {
    !matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    )
}

/// Whether `keys` (attribute, HASH/RANGE, S/N/B) is awsflock's key schema:
/// a single hash key lock_id (S).
pub(crate) fn is_awsflock_schema(keys: &[(String, String, String)]) -> bool {
    keys == [(attr::LOCK_ID.into(), "HASH".into(), "S".into())]
}
