//! The etcd store (being written).

use super::{AcquireRequest, Backend, BoxFuture, EtcdOptions, Lease, LockInfo};
use crate::error::{Error, Result};
use std::time::Duration;

/// The etcd store.
pub struct EtcdStore;

fn todo() -> Error {
    Error::usage("etcd:// is not available yet")
}

impl EtcdStore {
    /// Connects to the cluster.
    pub async fn connect(
        _endpoints: Vec<String>,
        _prefix: String,
        _opts: &EtcdOptions,
    ) -> Result<Self> {
        Err(todo())
    }
}

#[async_trait::async_trait]
impl Backend for EtcdStore {
    fn describe(&self) -> String {
        "etcd".into()
    }
    async fn acquire(&self, _req: &AcquireRequest, _cancel: BoxFuture<'_, i32>) -> Result<Lease> {
        Err(todo())
    }
    async fn renew(&self, _lease: &Lease, _d: Duration, _next: &str) -> Result<Lease> {
        Err(todo())
    }
    async fn release(&self, _name: &str, _id: &str) -> Result<()> {
        Err(todo())
    }
    async fn inspect(&self, _name: &str) -> Result<LockInfo> {
        Err(todo())
    }
    async fn list(&self) -> Result<Vec<LockInfo>> {
        Err(todo())
    }
    async fn create(&self) -> Result<()> {
        Err(todo())
    }
}
