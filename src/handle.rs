//! [`Store`]: a store of locks, as a library user sees it.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::info::LockInfo;
use crate::lease::LockGuard;
use crate::request::{AcquireRequest, validate_name};
use crate::store::{LockStore, StoreOptions};

/// A store of locks: a DynamoDB table, an S3 prefix, an etcd prefix or a
/// local directory, named by a URL.
///
/// Cheap to clone (clones share one connection); safe to use from many
/// tasks at once.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn LockStore>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store")
            .field(&self.inner.describe())
            .finish()
    }
}

impl Store {
    /// Opens the store at `url`: `dynamodb://TABLE`, `s3://BUCKET/PREFIX`,
    /// `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` or `file:///DIR`. AWS stores
    /// load the standard AWS configuration (variables, profile files,
    /// instance role) as the AWS SDK does; no request is sent yet.
    ///
    /// Fails with [`crate::Error::Invalid`] for a URL it cannot read or a store
    /// this build leaves out (each store is a cargo feature), and with
    /// [`crate::Error::Store`] when there is no AWS region or no credentials.
    pub async fn open(url: &str) -> Result<Store> {
        Store::open_with(&StoreOptions::for_url(url)).await
    }

    /// Opens the store the options name ([`StoreOptions::from_env`] reads
    /// them as the `awsflock` command line does).
    pub async fn open_with(opts: &StoreOptions) -> Result<Store> {
        Ok(Store {
            inner: crate::store::open(opts).await?,
        })
    }

    /// Opens the AWS store at `url` (`dynamodb://TABLE` or
    /// `s3://BUCKET/PREFIX`) with an AWS configuration the caller already
    /// has: its region, credentials, endpoint and HTTP client are used, and
    /// no AWS variable or profile file is read. The store sets its own
    /// timeouts and retries on top, which renewals depend on.
    #[cfg(any(feature = "dynamodb", feature = "s3"))]
    pub async fn open_with_config(url: &str, config: &aws_config::SdkConfig) -> Result<Store> {
        let mut opts = StoreOptions::for_url(url);
        opts.aws_config = Some(config.clone());
        Store::open_with(&opts).await
    }

    /// The store for messages: `DynamoDB table 'awsflock'`.
    pub fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Creates what the store needs (a DynamoDB table, an S3 bucket, a
    /// directory); a no-op where nothing is needed.
    pub async fn create(&self) -> Result<()> {
        self.inner.create().await
    }

    /// Takes the lock, waiting as the request says, and returns a guard that
    /// renews the lease every third of its duration until released or lost.
    ///
    /// The renewal task is spawned on the current tokio runtime (this panics
    /// outside one); see [`LockGuard`] for what a blocked runtime does to it.
    /// Fails with [`crate::Error::NotAcquired`] (naming the holder) when the
    /// wait runs out. To give up waiting early, drop the returned future: a
    /// grant that was in flight then stays until its lease expires.
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<LockGuard> {
        self.acquire_renewing_every(req, req.lease / 3).await
    }

    /// [`Store::acquire`], renewing every `period` (shorter than the lease).
    pub async fn acquire_renewing_every(
        &self,
        req: &AcquireRequest,
        period: Duration,
    ) -> Result<LockGuard> {
        LockGuard::acquire(
            self.inner.clone(),
            req,
            period,
            Box::pin(std::future::pending()),
        )
        .await
    }

    /// What the store says about the lock `name` (held or not, by whom).
    pub async fn inspect(&self, name: &str) -> Result<LockInfo> {
        validate_name(name)?;
        self.inner.inspect(name).await
    }

    /// Every held lock in the store.
    pub async fn list(&self) -> Result<Vec<LockInfo>> {
        self.inner.list().await
    }

    /// Break glass: releases whatever lease holds the lock `name` and returns
    /// what it looked like, or `None` if the lock was not held. The holder's
    /// guard notices at its next renewal ([`LockGuard::lost`]).
    ///
    /// This is the break-glass release (`release --force --immediately`):
    /// a holder still running goes on until its next renewal.
    pub async fn force_release(&self, name: &str) -> Result<Option<LockInfo>> {
        use crate::protocol::revoke::{Force, ForceMode, Forced};
        validate_name(name)?;
        let force = Force::here(ForceMode::Immediately);
        Ok(match self.inner.force_release(name, &force).await? {
            Forced::NotHeld => None,
            Forced::Released(info) | Forced::Revoked(info) => Some(info),
        })
    }
}
