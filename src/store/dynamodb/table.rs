//! Creating the table (on demand, TTL on), and checking the key schema of
//! one that exists.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::{Error, Result};

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
    /// key schema of a table that existed.
    pub(crate) async fn wait_until_active(&self) -> Result<()> {
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
