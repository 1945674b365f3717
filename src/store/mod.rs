//! The stores a lock can live in: the public [`Store`] handle, and behind it
//! one trait, [`LockStore`], that each kind of store implements.
//!
//! Every store offers the same five operations ([`LockStore`]); the CLI, the
//! auto-renewing [`crate::lease::LockGuard`] and the `run` supervisor are
//! written against the trait only. One file per store:
//!
//! - `dynamodb`: the default, and the table format of awsflock 0.2.0.
//! - `s3`: one object per lock, changed with S3 conditional writes.
//! - `etcd`: etcd's own lock recipe (one key per contender, lowest create
//!   revision holds), with watches instead of polls.
//! - `file`: one file per lock in a local directory, for a single host.
//!
//! Each is behind the cargo feature of the same name. DynamoDB, S3 and the
//! file store share their acquire loop (`cas`).
//!
//! [`open`] turns a store URL into a store.

#[cfg(any(feature = "dynamodb", feature = "s3"))]
pub(crate) mod aws;
// The acquire loop of the stores that keep one record per lock.
#[cfg(any(feature = "dynamodb", feature = "s3", feature = "file"))]
#[cfg_attr(
    not(all(feature = "dynamodb", feature = "s3", feature = "file")),
    allow(dead_code)
)]
pub(crate) mod cas;
#[cfg(feature = "dynamodb")]
pub(crate) mod dynamodb;
#[cfg(feature = "etcd")]
pub(crate) mod etcd;
#[cfg(feature = "file")]
pub(crate) mod file;
#[cfg(feature = "s3")]
pub(crate) mod s3;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::boottime::BootInstant as Instant;

use crate::error::{Error, Result};
use crate::protocol::revoke;

use crate::info::LockInfo;
use crate::request::{AcquireRequest, Lease, validate_name};

/// A boxed future, for the cancellation signal passed to [`LockStore::acquire`].
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One store of locks. All methods are safe to call concurrently.
#[async_trait::async_trait]
pub(crate) trait LockStore: Send + Sync {
    /// A short name for messages: `dynamodb table 'awsflock'`.
    fn describe(&self) -> String;

    /// Takes the lock, waiting as the request says. Returns
    /// [`Error::NotAcquired`] when the wait runs out.
    ///
    /// `cancel` ends a wait early: the method then returns
    /// [`Error::Interrupted`] holding nothing (a grant that raced with the
    /// cancellation is released first).
    async fn acquire(&self, req: &AcquireRequest, cancel: BoxFuture<'_, i32>) -> Result<Lease>;

    /// Extends a lease by `duration` from now, moving it to the lease id
    /// `next_id` that the caller chose. Returns the renewed lease, or
    /// [`Error::NotHeld`] when it is no longer held.
    ///
    /// After an error, retry with the *same* `next_id`: a renewal that landed
    /// but whose answer was lost is then recognised as success instead of
    /// looking like a lost lock.
    async fn renew(&self, lease: &Lease, duration: Duration, next_id: &str) -> Result<Lease>;

    /// Releases a lease so others can take the lock at once. Returns
    /// [`Error::NotHeld`] when that lease is not held. Safe to retry.
    async fn release(&self, name: &str, lease_id: &str) -> Result<()>;

    /// Releases a lease this program holds, as [`LockStore::release`]
    /// does; a store may use what the lease says of how it is held (one
    /// holder of a holder table) to release it in fewer requests.
    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.release(&lease.name, &lease.lease_id).await
    }

    /// Reads the state of one lock.
    async fn inspect(&self, name: &str) -> Result<LockInfo>;

    /// Every held lock in the store.
    async fn list(&self) -> Result<Vec<LockInfo>>;

    /// Release without the lease id, as `force` says ([`revoke`]): a
    /// supervised holder is revoked (it stops at its next renewal and
    /// confirms), any other holder released at once. Says what it did and
    /// what the lock looked like before.
    async fn force_release(&self, name: &str, force: &revoke::Force) -> Result<revoke::Forced> {
        let _ = force;
        force_release_by_lease_id(self, name).await
    }

    /// Creates what the store needs (a table); a no-op where nothing is needed.
    async fn create(&self) -> Result<()>;

    /// A lease for a lock and lease id known only by name (the CLI's `renew`
    /// and `release`), to pass to [`LockStore::renew`].
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    fn lease_from_id(&self, name: &str, lease_id: &str) -> Lease {
        Lease {
            name: name.to_string(),
            lease_id: lease_id.to_string(),
            fence: None,
            duration: Duration::ZERO,
            acquired_at_ms: None,
            expires_at_ms: 0,
            deadline: Instant::now(),
            slotted: false,
        }
    }
}

/// [`LockStore::force_release`] for a store that keeps no revocation mark:
/// read the current lease id, release that lease at once.
pub async fn force_release_by_lease_id<B: LockStore + ?Sized>(
    store: &B,
    name: &str,
) -> Result<revoke::Forced> {
    validate_name(name)?;
    // A renewal between our read and our release changes the lease id;
    // read again and retry a few times.
    for _ in 0..5 {
        let info = store.inspect(name).await?;
        let Some(id) = info.lease_id.clone().filter(|_| info.held) else {
            return Ok(revoke::Forced::NotHeld);
        };
        match store.release(name, &id).await {
            Ok(()) => return Ok(revoke::Forced::Released(info)),
            Err(Error::NotHeld { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Unavailable(format!(
        "lock {name:?} kept changing hands while being released; try again"
    )))
}

/// Where the store is and how to reach it.
///
/// [`StoreOptions::default()`] is the DynamoDB table `awsflock`, with the
/// standard AWS configuration (region, credentials and endpoint from the AWS
/// variables and profile files, as the AWS SDK reads them); it reads none of
/// awsflock's own variables. [`StoreOptions::from_env`] reads those as the
/// command line does.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The store's URL: `dynamodb://TABLE`, `s3://BUCKET/PREFIX`,
    /// `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` or `file:///DIR`
    /// (default `dynamodb://awsflock`).
    pub url: Option<String>,
    /// The DynamoDB table, when the URL names none (`dynamodb://`); a table
    /// named in both places must agree.
    pub table: Option<String>,
    /// Every store's endpoint, beating every variable and the AWS profile.
    pub endpoint_url: Option<String>,
    /// awsflock 0.2.0's `DYNAMO_ENDPOINT_URL`: DynamoDB's endpoint when
    /// `endpoint_url` is not given; beats the SDK's variables, as it did in
    /// 0.2.0. Not used for S3.
    pub dynamodb_endpoint_url: Option<String>,
    /// The AWS region: beats `AWS_REGION` and the profile's region.
    pub region: Option<String>,
    /// The AWS profile: beats `AWS_PROFILE`, and its credentials beat the
    /// environment's keys (`AWS_ACCESS_KEY_ID`), as `aws --profile` does.
    pub profile: Option<String>,
    /// Authentication and TLS for etcd.
    pub etcd: EtcdOptions,
    /// An AWS configuration the caller already has (region, credentials,
    /// endpoint, HTTP client), used instead of loading the standard one;
    /// `region`, `profile` and the endpoints above still apply on top. The
    /// store sets its own per-attempt timeouts and retries, which renewals
    /// depend on.
    #[cfg(any(feature = "dynamodb", feature = "s3"))]
    pub aws_config: Option<aws_config::SdkConfig>,
}

impl StoreOptions {
    /// The variables [`StoreOptions::from_env`] reads, each with what it
    /// sets. The command line reads the same (its flags beat them).
    pub const ENV: &'static [(&'static str, &'static str)] = &[
        ("AWSFLOCK_BACKEND", "url"),
        ("AWSFLOCK_TABLE", "table"),
        ("AWSFLOCK_ENDPOINT_URL", "endpoint_url"),
        ("DYNAMO_ENDPOINT_URL", "dynamodb_endpoint_url"),
        ("AWSFLOCK_ETCD_USER", "etcd.user"),
        ("AWSFLOCK_ETCD_PASSWORD", "etcd.password"),
        ("AWSFLOCK_ETCD_CACERT", "etcd.cacert"),
        ("AWSFLOCK_ETCD_CERT", "etcd.cert"),
        ("AWSFLOCK_ETCD_KEY", "etcd.key"),
    ];

    /// The options the `awsflock` command line would use with no flags:
    ///
    /// | variable | sets |
    /// |---|---|
    /// | `AWSFLOCK_BACKEND` | `url` (the store URL) |
    /// | `AWSFLOCK_TABLE` | `table` |
    /// | `AWSFLOCK_ENDPOINT_URL` | `endpoint_url` (every store) |
    /// | `DYNAMO_ENDPOINT_URL` | `dynamodb_endpoint_url` (awsflock 0.2.0's) |
    /// | `AWSFLOCK_ETCD_USER`, `_PASSWORD`, `_CACERT`, `_CERT`, `_KEY` | `etcd` |
    ///
    /// Empty variables count as unset. Region, profile and the SDK's own
    /// endpoint variables are left to the AWS SDK, which reads them when the
    /// store is opened: the endpoint is `endpoint_url`, else (DynamoDB)
    /// `DYNAMO_ENDPOINT_URL`, else `AWS_ENDPOINT_URL_DYNAMODB` or
    /// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else the profile's
    /// `endpoint_url`; the region is `AWS_REGION`, else the profile's
    /// (`AWS_PROFILE`, default `default`).
    pub fn from_env() -> StoreOptions {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`StoreOptions::from_env`] with the variables looked up by `var`.
    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> StoreOptions {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        StoreOptions {
            url: get("AWSFLOCK_BACKEND"),
            table: get("AWSFLOCK_TABLE"),
            endpoint_url: get("AWSFLOCK_ENDPOINT_URL"),
            dynamodb_endpoint_url: get("DYNAMO_ENDPOINT_URL"),
            region: None,
            profile: None,
            etcd: EtcdOptions {
                user: get("AWSFLOCK_ETCD_USER"),
                password: get("AWSFLOCK_ETCD_PASSWORD"),
                cacert: get("AWSFLOCK_ETCD_CACERT").map(Into::into),
                cert: get("AWSFLOCK_ETCD_CERT").map(Into::into),
                key: get("AWSFLOCK_ETCD_KEY").map(Into::into),
            },
            #[cfg(any(feature = "dynamodb", feature = "s3"))]
            aws_config: None,
        }
    }

    /// Options for the store at `url`, otherwise as [`StoreOptions::default`].
    pub fn for_url(url: impl Into<String>) -> StoreOptions {
        StoreOptions {
            url: Some(url.into()),
            ..StoreOptions::default()
        }
    }
}

/// How to authenticate to etcd, as etcdctl's user, password, CA bundle,
/// client certificate and key.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// `USER` or `USER:PASSWORD`.
    pub user: Option<String>,
    /// The password, when not given in `user`.
    pub password: Option<String>,
    /// CA bundle to verify the server (turns TLS on).
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (with `key`).
    pub cert: Option<std::path::PathBuf>,
    /// Client key (with `cert`).
    pub key: Option<std::path::PathBuf>,
}

/// The default table name, as in awsflock 0.2.0.
pub const DEFAULT_TABLE: &str = "awsflock";

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `dynamodb://TABLE`
    DynamoDb {
        /// The table.
        table: String,
    },
    /// `s3://BUCKET/PREFIX`
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (may be empty; ends with `/` when not).
        prefix: String,
    },
    /// `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`
    Etcd {
        /// The cluster's client endpoints (`host:port`).
        endpoints: Vec<String>,
        /// The key prefix, the realm of lock names (may be empty).
        prefix: String,
    },
    /// `file:///DIR`
    File {
        /// The directory.
        dir: std::path::PathBuf,
    },
}

impl StoreOptions {
    /// Reads the store URL (default `dynamodb://`) and the table into a target.
    pub(crate) fn target(&self) -> Result<Target> {
        let url = self.url.as_deref().unwrap_or("dynamodb://");
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            Error::usage(format!(
                "cannot read backend {url:?}; use a URL such as dynamodb://TABLE"
            ))
        })?;
        match scheme {
            "dynamodb" => Target::dynamodb(url, rest, self.table.as_ref()),
            "s3" => Target::s3(url, rest),
            "etcd" => Target::etcd(url, rest),
            "file" => Target::file(url, rest),
            other => Err(Error::usage(format!(
                "unknown backend scheme {other:?} in {url:?}; supported: dynamodb://TABLE, s3://BUCKET/PREFIX, etcd://HOST:PORT/PREFIX, file:///DIR"
            ))),
        }
    }
}

impl Target {
    /// `dynamodb://TABLE`, or the table given apart (never both, unless
    /// they agree).
    fn dynamodb(url: &str, rest: &str, table: Option<&String>) -> Result<Target> {
        let from_url = rest.trim_end_matches('/');
        let table = if !from_url.is_empty() {
            if let Some(t) = table {
                if t != from_url {
                    return Err(Error::usage(format!(
                        "table {t:?} disagrees with the store URL {url:?}; give one of them"
                    )));
                }
            }
            from_url.to_string()
        } else {
            table.cloned().unwrap_or_else(|| DEFAULT_TABLE.to_string())
        };
        if table.is_empty() || table.contains('/') {
            return Err(Error::usage(format!(
                "bad table name {table:?} in backend {url:?}"
            )));
        }
        Ok(Target::DynamoDb { table })
    }

    /// `s3://BUCKET/PREFIX`
    fn s3(url: &str, rest: &str) -> Result<Target> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::usage(format!(
                "no bucket in backend {url:?}; use s3://BUCKET/PREFIX"
            )));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(Target::S3 {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`
    fn etcd(url: &str, rest: &str) -> Result<Target> {
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty() || endpoints.iter().any(|h| !h.contains(':')) {
            return Err(Error::usage(format!(
                "backend {url:?} needs HOST:PORT endpoints: etcd://HOST:PORT[,HOST:PORT...]/PREFIX"
            )));
        }
        Ok(Target::Etcd {
            endpoints,
            prefix: prefix.to_string(),
        })
    }

    /// `file:///DIR`
    fn file(url: &str, rest: &str) -> Result<Target> {
        if !rest.starts_with('/') {
            return Err(Error::usage(format!(
                "backend {url:?} needs an absolute directory: file:///path/to/dir"
            )));
        }
        Ok(Target::File {
            dir: std::path::PathBuf::from(rest),
        })
    }
}

/// Opens the store named by the options.
pub(crate) async fn open(opts: &StoreOptions) -> Result<Arc<dyn LockStore>> {
    #[cfg(any(feature = "dynamodb", feature = "s3"))]
    let aws = |service| aws::Settings {
        service,
        region: opts.region.clone(),
        profile: opts.profile.clone(),
        config: opts.aws_config.clone(),
    };
    #[allow(dead_code)] // with every store built in
    fn without(feature: &str) -> Result<Arc<dyn LockStore>> {
        Err(Error::usage(format!(
            "this awsflock was built without the {feature} store (cargo feature `{feature}`)"
        )))
    }
    match opts.target()? {
        #[cfg(feature = "dynamodb")]
        Target::DynamoDb { table } => {
            let endpoint = opts
                .endpoint_url
                .clone()
                .or_else(|| opts.dynamodb_endpoint_url.clone());
            let store = aws::with_settings(
                aws(aws::Service::DynamoDb),
                dynamodb::DynamoDb::connect(table, endpoint),
            );
            Ok(Arc::new(store.await?))
        }
        #[cfg(not(feature = "dynamodb"))]
        Target::DynamoDb { .. } => without("dynamodb"),
        #[cfg(feature = "s3")]
        Target::S3 { bucket, prefix } => {
            let store = aws::with_settings(
                aws(aws::Service::S3),
                s3::S3Store::connect(bucket, prefix, opts.endpoint_url.clone()),
            );
            Ok(Arc::new(store.await?))
        }
        #[cfg(not(feature = "s3"))]
        Target::S3 { .. } => without("s3"),
        #[cfg(feature = "file")]
        Target::File { dir } => Ok(Arc::new(file::FileStore::open(dir)?)),
        #[cfg(not(feature = "file"))]
        Target::File { .. } => without("file"),
        #[cfg(feature = "etcd")]
        Target::Etcd { endpoints, prefix } => Ok(Arc::new(
            etcd::EtcdStore::connect(endpoints, prefix, &opts.etcd).await?,
        )),
        #[cfg(not(feature = "etcd"))]
        Target::Etcd { .. } => Err(Error::usage(
            "this awsflock was built without etcd support; reinstall with \
             `cargo install --path . --features etcd` (needs protoc: apt-get install protobuf-compiler)",
        )),
    }
}

/// Warns that the store failed and the call is being retried (`then`:
/// "retrying", "still waiting"), once per outage: a failure within a
/// minute of the previous one goes to the debug log (`-v`) only, so that a
/// store overloaded for a minute says so in one line, not one per retry.
pub(crate) fn warn_retrying(msg: &str, then: &str) {
    const OUTAGE_GAP: Duration = Duration::from_secs(60);
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let last = LAST.lock().map(|mut l| l.replace(now)).unwrap_or_default();
    if last.is_some_and(|t| now.duration_since(t) < OUTAGE_GAP) {
        tracing::debug!("{msg}; {then}");
    } else {
        tracing::warn!("{msg}; {then}");
    }
}

/// A jittered pause between polls: 100 to 300 ms, so that a waiter notices a
/// release in about 200 ms + one round trip, and waiters don't poll in step.
#[cfg(any(
    feature = "dynamodb",
    feature = "s3",
    feature = "file",
    feature = "etcd"
))]
pub(crate) fn poll_pause() -> Duration {
    Duration::from_millis(100 + fastrand::u64(0..200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls() {
        let o = |b: Option<&str>, t: Option<&str>| StoreOptions {
            url: b.map(String::from),
            table: t.map(String::from),
            etcd: EtcdOptions::default(),
            ..StoreOptions::default()
        };
        assert_eq!(
            o(None, None).target().unwrap(),
            Target::DynamoDb {
                table: "awsflock".into()
            }
        );
        assert_eq!(
            o(None, Some("x")).target().unwrap(),
            Target::DynamoDb { table: "x".into() }
        );
        assert_eq!(
            o(Some("dynamodb://locks"), None).target().unwrap(),
            Target::DynamoDb {
                table: "locks".into()
            }
        );
        assert!(matches!(
            o(Some("ftp://x"), None).target(),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            o(Some("nonsense"), None).target(),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            o(Some("dynamodb://a"), Some("b")).target(),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn names() {
        assert!(validate_name("deploy").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(1025)).is_err());
        assert!(validate_name(&"x".repeat(1024)).is_ok());
        assert!(validate_name("__awsflock__/fence/x").is_err());
        for bad in ["a\nb", "a\rb", "a\tb", "a\x7fb", "a\u{85}b", "\x1b[31m"] {
            assert!(
                matches!(validate_name(bad), Err(Error::Invalid(m)) if m.contains("control character")),
                "{bad:?}"
            );
        }
        assert!(validate_name("锁🔒 deploy").is_ok());
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn from_env_reads_every_listed_variable_and_skips_empty_ones() {
        let vars: std::collections::HashMap<&str, &str> =
            StoreOptions::ENV.iter().map(|(v, _)| (*v, *v)).collect();
        let o = StoreOptions::from_vars(|k| vars.get(k).map(|v| v.to_string()));
        assert_eq!(o.url.as_deref(), Some("AWSFLOCK_BACKEND"));
        assert_eq!(o.table.as_deref(), Some("AWSFLOCK_TABLE"));
        assert_eq!(o.endpoint_url.as_deref(), Some("AWSFLOCK_ENDPOINT_URL"));
        assert_eq!(
            o.dynamodb_endpoint_url.as_deref(),
            Some("DYNAMO_ENDPOINT_URL")
        );
        assert_eq!(o.etcd.user.as_deref(), Some("AWSFLOCK_ETCD_USER"));
        assert_eq!(o.etcd.password.as_deref(), Some("AWSFLOCK_ETCD_PASSWORD"));
        assert!(o.etcd.cacert.is_some() && o.etcd.cert.is_some() && o.etcd.key.is_some());
        let empty = StoreOptions::from_vars(|_| Some(String::new()));
        assert!(empty.url.is_none() && empty.table.is_none() && empty.endpoint_url.is_none());
        // The default reads nothing.
        assert!(StoreOptions::default().url.is_none());
    }
}
