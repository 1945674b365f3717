//! The object requests of [`super::Objects`], sent to S3 with the AWS SDK.

use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{Cond, Objects};
use crate::clock::ServerClock;
use crate::error::{Error, Result};
use crate::store::aws::{self, StoreInterceptor};

/// [`Objects`] sent to S3 with the AWS SDK.
pub struct SdkObjects {
    pub(super) client: Client,
    pub(super) bucket: String,
    pub(super) prefix: String,
    pub(super) clock: Arc<ServerClock>,
    pub(super) interceptor: StoreInterceptor,
}

impl SdkObjects {
    fn name(&self) -> String {
        store_name(&self.bucket, &self.prefix)
    }

    /// Maps an SDK error, turning a missing bucket into advice.
    fn error<E>(&self, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let endpoint = self.interceptor.endpoint();
        if err.code() == Some("NoSuchBucket") {
            let searched = aws::where_searched(self.client.config().region(), endpoint.as_deref());
            let create = crate::error::words(
                &format!(
                    "`awsflock table-create --backend s3://{}/{}`",
                    self.bucket, self.prefix
                ),
                "`Store::create`",
            )
            .to_string();
            return Error::store(format!(
                "bucket {} does not exist in {searched}; create it with \
                 {create} and the same region, profile and endpoint",
                self.bucket
            ));
        }
        aws::sdk_error_at(err, &self.name(), "S3", endpoint.as_deref())
    }
}

pub(super) fn store_name(bucket: &str, prefix: &str) -> String {
    format!("S3 bucket '{bucket}' prefix '{prefix}'")
}

#[async_trait::async_trait]
impl Objects for SdkObjects {
    fn clock(&self) -> &ServerClock {
        &self.clock
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(err) if err.code() == Some("NoSuchBucket") => return Err(self.error(err)),
            Err(err) if err.code() == Some("NoSuchKey") || status_of(&err) == Some(404) => {
                return Ok(None);
            }
            Err(err) => return Err(self.error(err)),
        };
        let etag = out
            .e_tag()
            .ok_or_else(|| {
                Error::store(format!(
                    "the endpoint{} returned s3://{}/{key} without an ETag, so it is not S3 or \
                     not one with conditional writes; {}",
                    self.interceptor
                        .endpoint()
                        .map(|e| format!(" {e}"))
                        .unwrap_or_default(),
                    self.bucket,
                    crate::error::words(
                        "check --endpoint-url / AWS_ENDPOINT_URL",
                        "check the endpoint (the options' endpoint_url, AWS_ENDPOINT_URL)",
                    )
                ))
            })?
            .to_string();
        let body = out.body.collect().await.map_err(|e| {
            Error::Unavailable(format!(
                "reading s3://{}/{key} from {} failed ({e}); try again",
                self.bucket,
                self.name()
            ))
        })?;
        Ok(Some((body.into_bytes().to_vec(), etag)))
    }

    async fn put(&self, key: &str, body: Vec<u8>, cond: Cond<'_>) -> Result<Option<String>> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        let req = match cond {
            Cond::Absent => req.if_none_match("*"),
            Cond::Is(etag) => req.if_match(etag),
            Cond::Any => req,
        };
        match req.send().await {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
            Err(err) if condition_failed(&err) => Ok(None),
            Err(err) => Err(self.error(err)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(String::from),
            );
        }
        Ok(keys)
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: &str,
        max: usize,
    ) -> Result<Vec<(String, i64)>> {
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(max.min(1000) as i32);
        if !start_after.is_empty() {
            req = req.start_after(start_after);
        }
        let page = req.send().await.map_err(|e| self.error(e))?;
        Ok(page
            .contents()
            .iter()
            .filter_map(|o| {
                let ms = o.last_modified()?.to_millis().ok()?;
                Some((o.key()?.to_string(), ms))
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn create_bucket(&self) -> Result<()> {
        let head = self.client.head_bucket().bucket(&self.bucket).send().await;
        match head {
            Ok(_) => return Ok(()),
            Err(err) if status_of(&err) == Some(404) || err.code() == Some("NotFound") => {}
            Err(err) if status_of(&err) == Some(403) => {
                return Err(Error::store(format!(
                    "bucket {} exists but these credentials may not use it (403 Forbidden); \
                     choose another bucket or check IAM permissions",
                    self.bucket
                )));
            }
            Err(err) => return Err(self.error(err)),
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        let region = self.client.config().region().map(|r| r.to_string());
        if let Some(r) = region.filter(|r| r != "us-east-1") {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(r.as_str()))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => {
                tracing::info!("created bucket '{}'", self.bucket);
                Ok(())
            }
            Err(err) if err.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(err) if err.code() == Some("BucketAlreadyExists") => Err(Error::store(format!(
                "bucket {} already exists and belongs to another account; bucket names are global, choose another",
                self.bucket
            ))),
            Err(err) => Err(self.error(err)),
        }
    }
}

/// The HTTP status of a service error.
pub(super) fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    }
}

/// True when a conditional write was refused because the object is not the
/// version named (412), or another conditional write on it was in progress
/// (409): either way, the object must be read again.
pub(super) fn condition_failed<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(
        err.code(),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    ) || status_of(err) == Some(412)
}
