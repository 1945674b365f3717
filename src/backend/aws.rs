//! What the AWS-based stores share: configuration from the standard AWS chain,
//! the request interceptor that samples the store's clock and logs every
//! attempt, and the mapping of SDK errors to ours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::boottime::BootInstant as Instant;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use aws_smithy_types::date_time::{DateTime, Format};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use crate::clock::ServerClock;
use crate::error::{Error, Result};

/// Per-attempt and per-call time limits. An unreachable endpoint fails a call
/// within about 10 s; a frozen store fails one attempt within 3 s, so a
/// renewing holder gets several tries within even a short lease.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(9))
        .build()
}

/// The SDK's own retries of throttling, 5xx and network errors: 3 attempts
/// with jittered exponential backoff from 100 ms (the standard mode starts at
/// up to 1 s, which is longer than the time a short lease leaves a renewal
/// before the command must be warned). The lease and wait loops retry again
/// on top of this, with their own backoff, until their deadlines.
pub fn retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(1))
}

/// Loads region, credentials and endpoint from the standard AWS chain, with
/// `endpoint` (from `--endpoint-url` or `DYNAMO_ENDPOINT_URL`) taking
/// precedence over `AWS_ENDPOINT_URL`. Fails early, with a message, when
/// there is no region or no credentials.
pub async fn load(endpoint: Option<String>) -> Result<SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts())
        .retry_config(retries());
    if let Some(ep) = &endpoint {
        loader = loader.endpoint_url(ep.clone());
    }
    if plain_http_endpoint(endpoint.as_deref()) {
        // A local server over plain HTTP needs no TLS: skip the default
        // client's loading and parsing of every system root certificate,
        // which is most of a short command's start-up time.
        loader = loader.http_client(aws_smithy_http_client::Builder::new().build_http());
    }
    let mut config = loader.load().await;
    if config.region().is_none() {
        // A local endpoint needs no real region; pick the usual one.
        let has_endpoint = endpoint.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        if !has_endpoint {
            if let Some(msg) = selected_profile().and_then(|p| missing_profile_message(&p)) {
                return Err(Error::store(msg));
            }
            return Err(Error::store(
                "no AWS region is configured; set AWS_REGION (or a region in your AWS profile)",
            ));
        }
        config = config
            .into_builder()
            .region(Region::new("us-east-1"))
            .build();
    }
    let Some(provider) = config.credentials_provider() else {
        return Err(Error::store(
            "no AWS credentials provider; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
        ));
    };
    if let Err(e) = provider.provide_credentials().await {
        tracing::debug!(error = %DisplayErrorContext(&e), "credential chain failed");
        if let Some(msg) = selected_profile().and_then(|p| missing_profile_message(&p)) {
            return Err(Error::store(msg));
        }
        return Err(Error::store(
            "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             configure AWS_PROFILE or SSO, or run with an instance role",
        ));
    }
    Ok(config)
}

/// The profile named by `AWS_PROFILE`, if any other than `default`.
fn selected_profile() -> Option<String> {
    std::env::var("AWS_PROFILE")
        .ok()
        .filter(|p| !p.is_empty() && p != "default")
}

/// The AWS config and credentials files, as the SDK finds them.
fn profile_files() -> [std::path::PathBuf; 2] {
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| home.join(".aws").join(default))
    };
    [
        file("AWS_CONFIG_FILE", "config"),
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
    ]
}

/// When the AWS profile `profile` is defined in neither the config nor the
/// credentials file: a message saying so and what to do. Meant for whichever
/// option selected the profile (`AWS_PROFILE` today).
pub fn missing_profile_message(profile: &str) -> Option<String> {
    let files = profile_files();
    let defined = files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines().any(|l| {
                let l = l.trim();
                let Some(inner) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
                    return false;
                };
                let inner = inner.trim();
                inner == profile
                    || inner
                        .strip_prefix("profile")
                        .is_some_and(|rest| rest.trim() == profile)
            })
        })
    });
    (!defined).then(|| {
        format!(
            "the AWS profile '{profile}' does not exist in {} or {}; \
             create it with `aws configure --profile {profile}` or select another profile",
            files[0].display(),
            files[1].display()
        )
    })
}

/// Whether every request will go to a plain `http://` endpoint: the one
/// given, or else the SDK's `AWS_ENDPOINT_URL_DYNAMODB`/`_S3` and
/// `AWS_ENDPOINT_URL`.
fn plain_http_endpoint(explicit: Option<&str>) -> bool {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(ep) = explicit {
        return ep.starts_with("http://");
    }
    let service: Vec<String> = ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_S3"]
        .iter()
        .filter_map(|k| var(k))
        .collect();
    let all: Vec<String> = service.into_iter().chain(var("AWS_ENDPOINT_URL")).collect();
    !all.is_empty() && all.iter().all(|e| e.starts_with("http://"))
}

/// Counts and times every HTTP attempt, and feeds each response's `Date`
/// header to the shared [`ServerClock`].
#[derive(Debug, Clone)]
pub struct StoreInterceptor {
    clock: Arc<ServerClock>,
    requests: Arc<AtomicU64>,
    endpoint: Arc<std::sync::Mutex<Option<String>>>,
}

impl StoreInterceptor {
    /// An interceptor feeding `clock`.
    pub fn new(clock: Arc<ServerClock>) -> Self {
        Self {
            clock,
            requests: Arc::new(AtomicU64::new(0)),
            endpoint: Arc::default(),
        }
    }

    /// `scheme://host:port` of the last request sent, for messages.
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint.lock().ok().and_then(|e| e.clone())
    }

    /// How many HTTP attempts have been sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy)]
struct SentAt(Instant);

impl Storable for SentAt {
    type Storer = StoreReplace<Self>;
}

impl Intercept for StoreInterceptor {
    fn name(&self) -> &'static str {
        "awsflock::StoreInterceptor"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let uri = context.request().uri();
        let origin_end = uri
            .find("://")
            .and_then(|i| uri[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(uri.len());
        if let Ok(mut e) = self.endpoint.lock() {
            *e = Some(uri[..origin_end].to_string());
        }
        cfg.interceptor_state().store_put(SentAt(Instant::now()));
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let received = Instant::now();
        let Some(SentAt(sent)) = cfg.load::<SentAt>().copied() else {
            return Ok(()); // failed before transmission: nothing was sent
        };
        // 1 for the first try, 2+ for the SDK's retries.
        let attempt = cfg
            .load::<aws_smithy_runtime_api::client::retries::RequestAttempts>()
            .map(|a| a.attempts())
            .unwrap_or(1);
        let op = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        let ms = received.saturating_duration_since(sent).as_millis() as u64;
        match context.response() {
            Some(resp) => {
                let status = resp.status().as_u16();
                let code = resp.headers().get("x-amzn-errortype").unwrap_or("");
                let code = code.split(':').next().unwrap_or("");
                if let Some(date) = resp.headers().get("date") {
                    match DateTime::from_str(date, Format::HttpDate) {
                        Ok(d) => self.clock.observe(sent, received, d.secs()),
                        Err(_) => tracing::debug!(date, "unreadable Date header"),
                    }
                }
                let outcome = match (status, code) {
                    (200..=299, _) => "ok",
                    (412, _)
                    | (_, "ConditionalCheckFailedException" | "TransactionCanceledException") => {
                        "condition_failed"
                    }
                    (404, _) => "not_found",
                    _ if is_throttling_or_server(Some(code), None) => "throttled",
                    (500..=599, _) => "server_error",
                    _ => "error",
                };
                tracing::debug!(
                    target: "awsflock::store",
                    %op, status, %outcome, %code, ms, attempt, "store_request"
                );
            }
            None => {
                let err = context
                    .output_or_error()
                    .and_then(|r| r.err())
                    .map(|e| format!("{}", DisplayErrorContext(e)))
                    .unwrap_or_default();
                tracing::debug!(target: "awsflock::store", %op, ms, attempt, %err, "store_request failed");
            }
        }
        Ok(())
    }
}

/// True for the error codes that mean "overloaded, try later".
pub fn is_throttling_or_server(code: Option<&str>, status: Option<u16>) -> bool {
    matches!(
        code,
        Some(
            "ThrottlingException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "TransactionInProgressException"
                | "SlowDown"
                | "RequestTimeout"
        )
    ) || status.is_some_and(|s| s >= 500)
}

/// Maps an SDK error that the caller did not handle itself to ours, with a
/// message that says what to do. `store` names the store for the message.
pub fn sdk_error<E>(err: SdkError<E, aws_smithy_runtime_api::http::Response>, store: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    sdk_error_at(err, store, "the store", None)
}

/// Why a request never got an answer, from the error's whole source chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreached {
    /// Nothing listens at the endpoint.
    Refused,
    /// The endpoint's host name does not resolve.
    Dns(String),
    /// No answer in time.
    Timeout,
    /// The TLS handshake failed.
    Tls(String),
    /// Anything else: the innermost cause.
    Other(String),
}

/// Classifies a failure to get any answer by walking `err`'s sources.
pub fn classify_unreached(err: &(dyn std::error::Error + 'static)) -> Unreached {
    let mut texts = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Unreached::Refused,
                std::io::ErrorKind::TimedOut => return Unreached::Timeout,
                _ => {}
            }
        }
        texts.push(e.to_string());
        cur = e.source();
    }
    let all = texts.join(": ");
    let lower = all.to_lowercase();
    let innermost = texts
        .iter()
        .rev()
        .find(|t| !t.trim().is_empty())
        .cloned()
        .unwrap_or_default();
    if lower.contains("connection refused") {
        Unreached::Refused
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        Unreached::Dns(innermost)
    } else if lower.contains("timed out") || lower.contains("timeout") {
        Unreached::Timeout
    } else if lower.contains("tls") || lower.contains("certificate") || lower.contains("handshake")
    {
        Unreached::Tls(innermost)
    } else {
        Unreached::Other(short_cause(&all))
    }
}

/// Whether an answer that the SDK could not read as the service's comes from
/// something else: a success it could not parse, or a body that is neither
/// XML nor JSON (an HTML page, plain text). A bodiless error (a HEAD's 403)
/// is not judged.
fn foreign_answer(status: u16, headers: &aws_smithy_runtime_api::http::Headers) -> bool {
    if (500..=599).contains(&status) {
        return false;
    }
    if (200..=299).contains(&status) {
        return true;
    }
    headers.get("content-type").is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        !(t.contains("xml") || t.contains("json"))
    })
}

/// [`sdk_error`], naming the service (`DynamoDB`, `S3`) and the endpoint the
/// request went to, when known.
pub fn sdk_error_at<E>(
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
    store: &str,
    service: &str,
    endpoint: Option<&str>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    tracing::debug!(error = %detail, "store error");
    let at = endpoint.map(|e| format!(" at {e}")).unwrap_or_default();
    let check = "check --endpoint-url / AWS_ENDPOINT_URL";
    let not_the_service = |status: u16, headers: &aws_smithy_runtime_api::http::Headers| {
        let ctype = headers.get("content-type").unwrap_or("no content type");
        Error::store(format!(
            "the endpoint{} answered something that is not {service} (HTTP {status}, {ctype}) \
             for {store}; {check}",
            endpoint.map(|e| format!(" {e}")).unwrap_or_default()
        ))
    };
    match &err {
        SdkError::TimeoutError(_) => Error::Unavailable(format!(
            "{store}{at} did not answer in time; check the endpoint and network, then try again"
        )),
        SdkError::DispatchFailure(_) => {
            let source: &(dyn std::error::Error + 'static) = &err;
            let why = match classify_unreached(source.source().unwrap_or(source)) {
                Unreached::Refused => format!(
                    "connection refused: nothing listens there; {check}, or start the server"
                ),
                Unreached::Dns(d) => {
                    format!("its host name does not resolve ({d}); {check} and the network's DNS")
                }
                Unreached::Timeout => format!("no connection in time; {check} and the network"),
                Unreached::Tls(d) => format!(
                    "the TLS handshake failed ({d}); {check} (a local server usually wants http://)"
                ),
                Unreached::Other(d) => format!("{d}; {check} and the network"),
            };
            Error::Unavailable(format!("cannot reach {store}{at}: {why}"))
        }
        SdkError::ResponseError(re) => {
            let raw = re.raw();
            if foreign_answer(raw.status().as_u16(), raw.headers()) {
                not_the_service(raw.status().as_u16(), raw.headers())
            } else {
                Error::Unavailable(format!(
                    "{store}{at} sent an unreadable response; try again"
                ))
            }
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code();
            let status = se.raw().status().as_u16();
            if code.is_none() && foreign_answer(status, se.raw().headers()) {
                // No error code could be read from the answer: whatever
                // answered does not speak the service's protocol.
                return not_the_service(status, se.raw().headers());
            }
            if is_throttling_or_server(code, Some(status)) {
                Error::Unavailable(format!(
                    "{store} is overloaded or failing ({}); try again later",
                    code.unwrap_or("HTTP error")
                ))
            } else if matches!(
                code,
                Some(
                    "UnrecognizedClientException"
                        | "InvalidSignatureException"
                        | "AccessDeniedException"
                        | "AccessDenied"
                        | "ExpiredTokenException"
                        | "MissingAuthenticationToken"
                )
            ) {
                Error::store(format!(
                    "{store} refused the credentials ({}: {}); check AWS credentials and IAM permissions",
                    code.unwrap_or("?"),
                    se.err().message().unwrap_or("")
                ))
            } else {
                Error::store(format!(
                    "{store}: {}: {}",
                    code.unwrap_or("error"),
                    se.err().message().unwrap_or("request failed")
                ))
            }
        }
        _ => Error::store(format!("{store}: {}", short_cause(&detail))),
    }
}

/// The innermost cause of an error chain, which is the one people recognise
/// ("Connection refused").
fn short_cause(detail: &str) -> String {
    detail
        .rsplit(": ")
        .next()
        .unwrap_or(detail)
        .trim()
        .trim_end_matches(')')
        .to_string()
}
