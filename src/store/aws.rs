//! What the AWS-based stores share: configuration from the standard AWS chain,
//! the request interceptor that samples the store's clock and logs every
//! attempt, and the mapping of SDK errors to ours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::provider_config::ProviderConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
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

use crate::clock::{Moment, ServerClock};
use crate::error::{Error, Result, words};

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

/// The AWS service a store talks to: picks `AWS_ENDPOINT_URL_<SERVICE>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Service {
    /// DynamoDB (`AWS_ENDPOINT_URL_DYNAMODB`).
    #[default]
    DynamoDb,
    /// S3 (`AWS_ENDPOINT_URL_S3`).
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    S3,
}

impl Service {
    /// The service-specific endpoint variable, as the AWS CLI and SDKs read it.
    pub fn endpoint_var(self) -> &'static str {
        match self {
            Service::DynamoDb => "AWS_ENDPOINT_URL_DYNAMODB",
            Service::S3 => "AWS_ENDPOINT_URL_S3",
        }
    }
}

/// The AWS settings for the store being opened: region, profile, the
/// caller's own configuration, and which service it is.
/// [`crate::store::open`] sets them around a store's `connect` with
/// [`with_settings`]; [`load`] reads them.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Which service's endpoint variable applies.
    pub service: Service,
    /// Beats `AWS_REGION` and the profile's region.
    pub region: Option<String>,
    /// Beats `AWS_PROFILE`.
    pub profile: Option<String>,
    /// The caller's configuration, used instead of the standard chain.
    pub config: Option<SdkConfig>,
}

tokio::task_local! {
    static SETTINGS: Settings;
}

/// Runs `f` (a store's `connect`) with `settings` visible to [`load`].
pub async fn with_settings<F: std::future::Future>(settings: Settings, f: F) -> F::Output {
    SETTINGS.scope(settings, f).await
}

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// Loads region, credentials and endpoint from the standard AWS chain (or
/// the caller's configuration), with the [`Settings`] of [`with_settings`]
/// (region, profile) on top.
///
/// The endpoint, first found wins, as in the AWS CLI: `endpoint` (the
/// options' endpoint, or `DYNAMO_ENDPOINT_URL` for DynamoDB), then
/// `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_S3`, then
/// `AWS_ENDPOINT_URL`, then the profile's `endpoint_url` (the SDK resolves
/// all but the first). Fails early, with a message, when there is no region
/// or no credentials.
pub async fn load(endpoint: Option<String>) -> Result<SdkConfig> {
    let settings = SETTINGS.try_with(Settings::clone).unwrap_or_default();
    if let Some(given) = &settings.config {
        return from_given(given, &settings, endpoint).await;
    }
    let client = http_client(plain_http_endpoint(settings.service, endpoint.as_deref()));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts())
        .retry_config(retries())
        .http_client(client);
    if let Some(profile) = &settings.profile {
        // A profile named in the options (`--profile`) also beats the
        // environment's keys, as `aws --profile` does: its credentials come
        // from the profile alone. `AWS_PROFILE` is below the keys, as in the
        // AWS CLI, and is left to the SDK's chain.
        loader = loader.profile_name(profile).credentials_provider(
            aws_config::profile::ProfileFileCredentialsProvider::builder()
                // HTTPS whatever the store's endpoint: the profile may
                // assume a role through STS or sign in through SSO.
                .configure(&ProviderConfig::default().with_http_client(http_client(false)))
                .profile_name(profile)
                .build(),
        );
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(ep) = &endpoint {
        loader = loader.endpoint_url(ep.clone());
    }
    let mut config = loader.load().await;
    // A profile that was named must exist, as in the AWS CLI, even when the
    // environment's credentials would do without it: a mistyped name must
    // not act with other credentials (another account). Read only when a
    // profile is named; `default` may be missing, as in the AWS CLI.
    if let Some(p) = missing_profile(settings.profile.as_deref()).await {
        return Err(no_such_profile(&p));
    }
    let in_profile = settings
        .profile
        .as_deref()
        .map(|p| format!(" (profile {p:?})"))
        .unwrap_or_default();
    if config.region().is_none() {
        // A local endpoint needs no real region; pick the usual one.
        let has_endpoint = endpoint.is_some()
            || env_nonempty(settings.service.endpoint_var()).is_some()
            || env_nonempty("AWS_ENDPOINT_URL").is_some()
            || config.endpoint_url().is_some();
        if !has_endpoint {
            return Err(Error::store(format!(
                "no AWS region is configured{in_profile}; {}, set AWS_REGION, or set a region in the AWS profile",
                words("give --region", "give a region")
            )));
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
        return Err(Error::store(format!(
            "no AWS credentials found{in_profile}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             give {} (a profile in ~/.aws/config or AWS_CONFIG_FILE), configure SSO, \
             or run with an instance role",
            words("--profile", "a profile")
        )));
    }
    Ok(config)
}

/// The HTTP client for the SDK. A local server over plain HTTP (`plain`)
/// needs no TLS: its client skips the loading and parsing of every system
/// root certificate, which is most of a short command's start-up time.
/// Otherwise the SDK's default HTTPS client (hyper 1, rustls, the system's
/// root certificates, the proxy of `HTTPS_PROXY` / `NO_PROXY` as
/// behavior-version-latest has it) with ring as rustls's crypto instead of
/// aws-lc, whose C build costs a release build a tenth of its CPU
/// (Cargo.toml). Every SDK client and credential provider gets it: the
/// SDK's own default is left out of the build.
fn http_client(plain: bool) -> SharedHttpClient {
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig, tls};
    if plain {
        return Builder::new().build_http();
    }
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

/// [`load`] with the caller's configuration: its region, credentials,
/// endpoint and HTTP client, with the settings' region and `endpoint` on
/// top, and the store's own timeouts and retries (renewals depend on them).
async fn from_given(
    given: &SdkConfig,
    settings: &Settings,
    endpoint: Option<String>,
) -> Result<SdkConfig> {
    let mut b = given
        .clone()
        .into_builder()
        .timeout_config(timeouts())
        .retry_config(retries());
    if let Some(region) = &settings.region {
        b.set_region(Some(Region::new(region.clone())));
    }
    if given.http_client().is_none() {
        // What the SDK's default HTTPS client (a feature this crate leaves
        // off) would have been; it speaks plain HTTP too.
        b.set_http_client(Some(http_client(false)));
    }
    if let Some(ep) = endpoint {
        b.set_endpoint_url(Some(ep));
    }
    let config = b.build();
    if config.region().is_none() {
        return Err(Error::store(
            "the AWS configuration given has no region; set one in it or in the store options",
        ));
    }
    let Some(provider) = config.credentials_provider() else {
        return Err(Error::store(
            "the AWS configuration given has no credentials provider",
        ));
    };
    if let Err(e) = provider.provide_credentials().await {
        return Err(Error::store(format!(
            "the AWS configuration given found no credentials: {}",
            DisplayErrorContext(&e)
        )));
    }
    Ok(config)
}

/// The error for a profile named but in neither file.
fn no_such_profile(p: &str) -> Error {
    Error::store(format!(
        "the AWS profile '{p}' does not exist in AWS_CONFIG_FILE or AWS_SHARED_CREDENTIALS_FILE \
         (default ~/.aws/config, ~/.aws/credentials); check {} / AWS_PROFILE, \
         or create it with `aws configure --profile {p}`",
        words("--profile", "the profile option")
    ))
}

/// The profile named in the options (or else `AWS_PROFILE`) when the AWS
/// config and credentials files do not have it. `default` is never
/// missing: without it the standard chain goes on as if none was named.
async fn missing_profile(option: Option<&str>) -> Option<String> {
    let name = option
        .map(String::from)
        .or_else(|| env_nonempty("AWS_PROFILE"))
        .filter(|n| n != "default")?;
    #[allow(deprecated)] // the replacement lives in aws-runtime, not a dependency
    let files = aws_config::profile::profile_file::ProfileFiles::default();
    let set = aws_config::profile::load(
        &aws_types::os_shim_internal::Fs::real(),
        &aws_types::os_shim_internal::Env::real(),
        &files,
        None,
    )
    .await
    .ok()?;
    set.get_profile(&name).is_none().then_some(name)
}

/// Whether every request will go to a plain `http://` endpoint: the one
/// given, or else the service's `AWS_ENDPOINT_URL_<SERVICE>`, or else
/// `AWS_ENDPOINT_URL`.
fn plain_http_endpoint(service: Service, explicit: Option<&str>) -> bool {
    explicit
        .map(String::from)
        .or_else(|| env_nonempty(service.endpoint_var()))
        .or_else(|| env_nonempty("AWS_ENDPOINT_URL"))
        .is_some_and(|e| e.starts_with("http://"))
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
    #[allow(dead_code)] // for benchmarks and tests
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy)]
struct SentAt(Moment);

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
        cfg.interceptor_state().store_put(SentAt(Moment::now()));
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let received = Moment::now();
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
        let ms = received.at.saturating_duration_since(sent.at).as_millis() as u64;
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

/// Classifies a failure to get any answer by walking `err`'s sources: by
/// their types (an I/O error's kind, a rustls error), except for a host
/// name that does not resolve. That one has no type to look for: the
/// resolver's error is private to hyper-util and says "dns error", and the
/// C library's lookup failure is an I/O error of no stable kind, "failed to
/// lookup address information"; those two texts are read.
pub fn classify_unreached(err: &(dyn std::error::Error + 'static)) -> Unreached {
    let mut texts = Vec::new();
    let mut tls = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Unreached::Refused,
                std::io::ErrorKind::TimedOut => return Unreached::Timeout,
                _ => {}
            }
            tls |= wraps_tls_error(io);
        }
        tls |= e.downcast_ref::<rustls::Error>().is_some();
        texts.push(e.to_string());
        cur = e.source();
    }
    let all = texts.join(": ");
    let innermost = texts
        .iter()
        .rev()
        .find(|t| !t.trim().is_empty())
        .cloned()
        .unwrap_or_default();
    if tls {
        Unreached::Tls(innermost)
    } else if texts
        .iter()
        .any(|t| t == "dns error" || t.starts_with("failed to lookup address"))
    {
        Unreached::Dns(innermost)
    } else {
        Unreached::Other(short_cause(&all))
    }
}

/// Whether `io` wraps a rustls error, perhaps inside further I/O errors (an
/// I/O error's source() skips the error it wraps).
fn wraps_tls_error(io: &std::io::Error) -> bool {
    let mut inner = io.get_ref();
    while let Some(e) = inner {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
    }
    false
}

/// Whether an answer that the SDK could not read as the service's comes from
/// something else: a success it could not parse, a body that is neither XML
/// nor JSON (an HTML page, plain text), or a 5xx without the service's own
/// marks (a proxy's or load balancer's `502 Bad Gateway` page). A bodiless
/// 4xx (a HEAD's 403) is not judged.
fn foreign_answer(status: u16, headers: &aws_smithy_runtime_api::http::Headers) -> bool {
    if (500..=599).contains(&status) {
        return !aws_server_error(headers);
    }
    if (200..=299).contains(&status) {
        return true;
    }
    headers.get("content-type").is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        !(t.contains("xml") || t.contains("json"))
    })
}

/// Whether a 5xx carries what DynamoDB's and S3's own do, whatever its body:
/// a request id (`x-amzn-RequestId`, S3's `x-amz-request-id`) and no web
/// page. Only those are "overloaded, try again"; anything else answering
/// 5xx is a proxy or load balancer in between, or not the service at all.
fn aws_server_error(headers: &aws_smithy_runtime_api::http::Headers) -> bool {
    let request_id =
        headers.contains_key("x-amzn-requestid") || headers.contains_key("x-amz-request-id");
    let page = headers
        .get("content-type")
        .is_some_and(|t| t.to_ascii_lowercase().contains("html"));
    request_id && !page
}

/// "region R at ENDPOINT" (or "region (none)"): where a missing table or
/// bucket was looked for, so that a wrong region or endpoint shows.
pub fn where_searched(
    region: Option<&aws_types::region::Region>,
    endpoint: Option<&str>,
) -> String {
    let region = region
        .map(|r| r.to_string())
        .unwrap_or_else(|| "(none)".into());
    match endpoint {
        Some(e) => format!("region {region} at {e}"),
        None => format!("region {region}"),
    }
}

/// Maps an SDK error that the caller did not handle itself to ours, with a
/// message that says what to do, naming the store, the service (`DynamoDB`,
/// `S3`) and the endpoint the request went to, when known.
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
    let w = Where {
        store,
        service,
        endpoint,
        at: endpoint.map(|e| format!(" at {e}")).unwrap_or_default(),
        check: words(
            "check --endpoint-url / AWS_ENDPOINT_URL",
            "check the endpoint (the options' endpoint_url, AWS_ENDPOINT_URL)",
        ),
    };
    match &err {
        SdkError::TimeoutError(_) => Error::Unavailable(format!(
            "{store}{} did not answer in time; check the endpoint and network, then try again",
            w.at
        )),
        SdkError::DispatchFailure(df) => {
            let source: &(dyn std::error::Error + 'static) = &err;
            let unreached = if df.is_timeout() {
                Unreached::Timeout
            } else {
                classify_unreached(source.source().unwrap_or(source))
            };
            w.unreached(unreached)
        }
        SdkError::ResponseError(re) => {
            let raw = re.raw();
            if foreign_answer(raw.status().as_u16(), raw.headers()) {
                w.not_the_service(raw.status().as_u16(), raw.headers())
            } else {
                Error::Unavailable(format!(
                    "{store}{} sent an unreadable response; try again",
                    w.at
                ))
            }
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code();
            let status = se.raw().status().as_u16();
            if code.is_none() && foreign_answer(status, se.raw().headers()) {
                // No error code could be read from the answer: whatever
                // answered does not speak the service's protocol.
                return w.not_the_service(status, se.raw().headers());
            }
            w.refused(code, status, se.err().message())
        }
        _ => Error::store(format!("{store}: {}", short_cause(&detail))),
    }
}

/// Where a failed request went, to say so in its error.
struct Where<'a> {
    store: &'a str,
    service: &'a str,
    endpoint: Option<&'a str>,
    /// " at ENDPOINT", or nothing.
    at: String,
    /// What to check about the endpoint, in the caller's words.
    check: &'static str,
}

impl Where<'_> {
    /// The endpoint answered, but not as the service does.
    fn not_the_service(
        &self,
        status: u16,
        headers: &aws_smithy_runtime_api::http::Headers,
    ) -> Error {
        let ctype = headers.get("content-type").unwrap_or("no content type");
        let proxy = if status >= 500 {
            " (as a proxy or load balancer answers when what is behind it fails)"
        } else {
            ""
        };
        Error::store(format!(
            "the endpoint{} answered something that is not {} (HTTP {status}, {ctype}) \
             for {}{proxy}; {}",
            self.endpoint.map(|e| format!(" {e}")).unwrap_or_default(),
            self.service,
            self.store,
            self.check
        ))
    }

    /// No answer at all.
    fn unreached(&self, unreached: Unreached) -> Error {
        let check = self.check;
        let why = match unreached {
            Unreached::Refused => {
                format!("connection refused: nothing listens there; {check}, or start the server")
            }
            Unreached::Dns(d) => {
                format!("its host name does not resolve ({d}); {check} and the network's DNS")
            }
            Unreached::Timeout => format!("no connection in time; {check} and the network"),
            Unreached::Tls(d) => format!(
                "the TLS handshake failed ({d}); {check} (a local server usually wants http://)"
            ),
            Unreached::Other(d) => format!("{d}; {check} and the network"),
        };
        Error::Unavailable(format!("cannot reach {}{}: {why}", self.store, self.at))
    }

    /// The service refused the request with an error code.
    fn refused(&self, code: Option<&str>, status: u16, message: Option<&str>) -> Error {
        let store = self.store;
        if is_throttling_or_server(code, Some(status)) {
            return Error::Unavailable(format!(
                "{store}{} is overloaded or failing (HTTP {status}{}); try again later",
                self.at,
                code.map(|c| format!(" {c}")).unwrap_or_default()
            ));
        }
        let credentials = matches!(
            code,
            Some(
                "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "AccessDeniedException"
                    | "AccessDenied"
                    | "ExpiredTokenException"
                    | "MissingAuthenticationToken"
            )
        );
        if credentials {
            Error::store(format!(
                "{store} refused the credentials ({}: {}); check AWS credentials and IAM permissions",
                code.unwrap_or("?"),
                message.unwrap_or("")
            ))
        } else {
            Error::store(format!(
                "{store}: {}: {}",
                code.unwrap_or("error"),
                message.unwrap_or("request failed")
            ))
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// An error that says `text` and has `source` as its cause.
    #[derive(Debug)]
    struct Wrapped {
        text: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    }

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.text)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.source)
        }
    }

    fn wrapped(
        text: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Wrapped {
        Wrapped {
            text,
            source: Box::new(source),
        }
    }

    #[test]
    fn unreached_endpoints_are_told_apart_by_the_types_of_their_causes() {
        let refused = wrapped("connect", io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify_unreached(&refused), Unreached::Refused);
        let timeout = wrapped("connect", io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(classify_unreached(&timeout), Unreached::Timeout);
        // A handshake error inside two I/O errors, as hyper-rustls hands it on.
        let tls = io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::General("bad record".into()),
        ));
        assert!(matches!(
            classify_unreached(&wrapped("connect", tls)),
            Unreached::Tls(_)
        ));
        // The words alone are not enough.
        let words = wrapped(
            "tls handshake timed out",
            io::Error::other("connection refused"),
        );
        assert!(matches!(classify_unreached(&words), Unreached::Other(_)));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> aws_smithy_runtime_api::http::Headers {
        let mut h = aws_smithy_runtime_api::http::Headers::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    #[test]
    fn only_a_5xx_with_the_services_marks_is_the_service_failing() {
        let json = ("content-type", "application/x-amz-json-1.0");
        let xml = ("content-type", "application/xml");
        let html = ("content-type", "text/html");
        let dynamodb_id = ("x-amzn-RequestId", "ABC");
        let s3_id = ("x-amz-request-id", "DEF");
        // DynamoDB's and S3's own, with or without a body: retried.
        assert!(!foreign_answer(500, &headers(&[json, dynamodb_id])));
        assert!(!foreign_answer(503, &headers(&[xml, s3_id])));
        assert!(!foreign_answer(503, &headers(&[s3_id])));
        // A proxy's page, or an answer without a request id: not the service.
        assert!(foreign_answer(502, &headers(&[html])));
        assert!(foreign_answer(502, &headers(&[html, dynamodb_id])));
        assert!(foreign_answer(503, &headers(&[])));
        assert!(foreign_answer(500, &headers(&[json])));
        // 2xx that could not be read, 4xx pages; a bodiless 4xx is not judged.
        assert!(foreign_answer(200, &headers(&[json, dynamodb_id])));
        assert!(foreign_answer(
            404,
            &headers(&[("content-type", "text/plain")])
        ));
        assert!(!foreign_answer(403, &headers(&[])));
    }

    #[test]
    fn a_host_that_does_not_resolve_is_told_by_the_resolvers_own_words() {
        let dns = wrapped(
            "dns error",
            io::Error::other("failed to lookup address information: Name does not resolve"),
        );
        assert_eq!(
            classify_unreached(&dns),
            Unreached::Dns("failed to lookup address information: Name does not resolve".into())
        );
    }
}
