//! [`HttpFacilitator`]: a remote x402 facilitator over HTTP(S), such as the hosted OpenZeppelin
//! one (`https://channels.openzeppelin.com/x402/testnet`).
//!
//! TLS is rustls with the ring provider and the webpki (Mozilla) roots, plus any extra roots
//! given to the builder. `/supported` is fetched once and refreshed in the background.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::BoxFuture;
use crate::http::{Body, ClientError, Failure, UrlError};
use crate::x402::facilitator::{Facilitator, FacilitatorError, FacilitatorRequest};
use crate::x402::wire::{SettleResponse, SupportedResponse, VerifyResponse};

/// Default timeout of `/verify` and `/supported` calls.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of `/settle`: `maxTimeoutSeconds` 60 plus 15 s, since facilitators poll
/// the ledger until the transaction is confirmed.
const DEFAULT_SETTLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Shortest accepted `/settle` timeout.
const MIN_SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default period of the background `/supported` refresh.
const DEFAULT_SUPPORTED_REFRESH: Duration = Duration::from_secs(600);
/// Largest facilitator response body read; anything longer is not a facilitator answer.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why an [`HttpFacilitator`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FacilitatorBuildError {
    /// The base URL is not an absolute `http`/`https` URL with a host, or carries
    /// credentials, a query or a fragment.
    #[error("invalid facilitator URL: {0}")]
    InvalidUrl(&'static str),
    /// The API key is empty or cannot be sent in an HTTP header.
    #[error("the API key is empty or contains characters not allowed in an HTTP header")]
    InvalidApiKey,
    /// A timeout or refresh period is out of range.
    #[error("invalid timeout: {0}")]
    InvalidTimeout(&'static str),
    /// An extra root certificate could not be read or used.
    #[error("invalid root certificate: {0}")]
    InvalidCertificate(&'static str),
    /// The TLS configuration could not be built.
    #[error("could not set up TLS")]
    Tls,
    /// The HTTP client could not be built.
    #[error("could not set up the HTTP client")]
    Client,
}

/// Builder of an [`HttpFacilitator`]; see [`HttpFacilitator::builder`].
#[derive(Clone)]
pub struct HttpFacilitatorBuilder {
    base_url: String,
    api_key: Option<String>,
    timeout: Duration,
    settle_timeout: Duration,
    supported_refresh: Duration,
    root_certificates: Vec<Vec<u8>>,
}

impl fmt::Debug for HttpFacilitatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFacilitatorBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("settle_timeout", &self.settle_timeout)
            .field("supported_refresh", &self.supported_refresh)
            .field("root_certificates", &self.root_certificates.len())
            .finish()
    }
}

impl HttpFacilitatorBuilder {
    /// The API key, sent as `Authorization: Bearer <key>` on `/verify`, `/settle` and
    /// `/supported` (the OpenZeppelin facilitator requires it on all three).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Timeout of `/verify` and `/supported` calls, and of connecting; default 10 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Timeout of `/settle` calls; default 75 s (`maxTimeoutSeconds` 60 + 15 s), at least 15 s.
    ///
    /// Facilitators answer `/settle` only once the transaction is confirmed or expired, so
    /// this should be at least the offers' `maxTimeoutSeconds` plus 15 s.
    #[must_use]
    pub fn settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// How often the cached `/supported` answer is refreshed in the background; default 10 min.
    #[must_use]
    pub fn supported_refresh(mut self, period: Duration) -> Self {
        self.supported_refresh = period;
        self
    }

    /// Trusts the certificates of this PEM text as extra roots, next to the webpki roots
    /// (for example a loopback sandbox's self-signed certificate). May be called several times.
    #[must_use]
    pub fn root_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.root_certificates.push(pem.to_vec());
        self
    }

    /// Validates the settings and builds the facilitator client.
    pub fn build(self) -> Result<HttpFacilitator, FacilitatorBuildError> {
        let base_url = base_url(&self.base_url)?;
        check_timeouts(&self)?;
        let authorization = self.api_key.as_deref().map(bearer).transpose()?;
        let client = crate::http::client(self.timeout, &self.root_certificates).map_err(
            |error| match error {
                ClientError::Certificate(what) => FacilitatorBuildError::InvalidCertificate(what),
                ClientError::Tls => FacilitatorBuildError::Tls,
                ClientError::Client => FacilitatorBuildError::Client,
            },
        )?;
        let inner = Inner {
            client,
            verify_url: endpoint(&base_url, "verify")?,
            settle_url: endpoint(&base_url, "settle")?,
            supported_url: endpoint(&base_url, "supported")?,
            base_url,
            authorization,
            timeout: self.timeout,
            settle_timeout: self.settle_timeout,
            supported_refresh: self.supported_refresh,
            supported: RwLock::new(None),
            first_fetch: tokio::sync::Mutex::new(()),
        };
        Ok(HttpFacilitator {
            inner: Arc::new(inner),
        })
    }
}

/// Parses and checks the base URL; returns it without trailing `/`.
fn base_url(input: &str) -> Result<String, FacilitatorBuildError> {
    use FacilitatorBuildError::InvalidUrl;
    const QUERY_OR_FRAGMENT: &str = "the URL must not have a query or a fragment";
    let url = crate::http::http_url(input).map_err(|error| match error {
        UrlError::Credentials => {
            InvalidUrl("credentials in the URL are not supported; use api_key")
        }
        UrlError::Fragment => InvalidUrl(QUERY_OR_FRAGMENT),
        other => InvalidUrl(other.message()),
    })?;
    if url.query().is_some() {
        return Err(InvalidUrl(QUERY_OR_FRAGMENT));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn endpoint(base_url: &str, path: &str) -> Result<Url, FacilitatorBuildError> {
    Url::parse(&format!("{base_url}/{path}"))
        .map_err(|_| FacilitatorBuildError::InvalidUrl("not an absolute URL"))
}

fn check_timeouts(builder: &HttpFacilitatorBuilder) -> Result<(), FacilitatorBuildError> {
    use FacilitatorBuildError::InvalidTimeout;
    if builder.timeout.is_zero() {
        return Err(InvalidTimeout("the timeout must not be zero"));
    }
    if builder.settle_timeout < MIN_SETTLE_TIMEOUT {
        return Err(InvalidTimeout("the settle timeout must be at least 15 s"));
    }
    if builder.supported_refresh.is_zero() {
        return Err(InvalidTimeout(
            "the /supported refresh period must not be zero",
        ));
    }
    Ok(())
}

fn bearer(key: &str) -> Result<HeaderValue, FacilitatorBuildError> {
    if key.is_empty() {
        return Err(FacilitatorBuildError::InvalidApiKey);
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| FacilitatorBuildError::InvalidApiKey)?;
    value.set_sensitive(true);
    Ok(value)
}

/// A remote x402 facilitator reached over HTTP(S): `POST {base}/verify`, `POST {base}/settle`,
/// `GET {base}/supported`.
///
/// Cheap to clone; clones share the connection pool and the `/supported` cache. The
/// background refresh of `/supported` stops once the last clone is dropped.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_paywall::x402::facilitator::HttpFacilitator;
///
/// let facilitator = HttpFacilitator::builder("https://channels.openzeppelin.com/x402/testnet")
///     .api_key("my-api-key")
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpFacilitator {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    base_url: String,
    verify_url: Url,
    settle_url: Url,
    supported_url: Url,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    settle_timeout: Duration,
    supported_refresh: Duration,
    /// The last good `/supported` answer.
    supported: RwLock<Option<Arc<SupportedResponse>>>,
    /// Held while the first `/supported` fetch runs, so concurrent first calls share it.
    first_fetch: tokio::sync::Mutex<()>,
}

impl fmt::Debug for HttpFacilitator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("HttpFacilitator")
            .field("base_url", &inner.base_url)
            .field(
                "api_key",
                &inner.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &inner.timeout)
            .field("settle_timeout", &inner.settle_timeout)
            .field("supported_refresh", &inner.supported_refresh)
            .finish_non_exhaustive()
    }
}

impl HttpFacilitator {
    /// Starts building a client for the facilitator at `base_url`, e.g.
    /// `https://channels.openzeppelin.com/x402/testnet` (a trailing `/` is ignored).
    pub fn builder(base_url: impl Into<String>) -> HttpFacilitatorBuilder {
        HttpFacilitatorBuilder {
            base_url: base_url.into(),
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
            settle_timeout: DEFAULT_SETTLE_TIMEOUT,
            supported_refresh: DEFAULT_SUPPORTED_REFRESH,
            root_certificates: Vec::new(),
        }
    }

    /// The facilitator's base URL, without trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }
}

impl Facilitator for HttpFacilitator {
    fn verify<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<VerifyResponse, FacilitatorError>> {
        let inner = &self.inner;
        Box::pin(inner.post(&inner.verify_url, request, inner.timeout))
    }

    fn settle<'a>(
        &'a self,
        request: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<SettleResponse, FacilitatorError>> {
        let inner = &self.inner;
        Box::pin(inner.post(&inner.settle_url, request, inner.settle_timeout))
    }

    fn supported(&self) -> BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>> {
        Box::pin(supported(&self.inner))
    }

    fn settle_timeout(&self) -> Option<Duration> {
        Some(self.inner.settle_timeout)
    }
}

/// The cached `/supported` answer; the first call fetches it and starts the refresher.
async fn supported(inner: &Arc<Inner>) -> Result<Arc<SupportedResponse>, FacilitatorError> {
    if let Some(cached) = inner.cached_supported() {
        return Ok(cached);
    }
    let _first = inner.first_fetch.lock().await;
    if let Some(cached) = inner.cached_supported() {
        return Ok(cached);
    }
    let fresh = Arc::new(inner.get_supported().await?);
    inner.store_supported(fresh.clone());
    spawn_refresher(inner);
    Ok(fresh)
}

/// Refreshes `/supported` every `supported_refresh` while the facilitator is alive.
fn spawn_refresher(inner: &Arc<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("x402 facilitator: no tokio runtime, /supported will not be refreshed");
        return;
    };
    runtime.spawn(refresh_supported(
        Arc::downgrade(inner),
        inner.supported_refresh,
    ));
}

async fn refresh_supported(weak: Weak<Inner>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        match inner.get_supported().await {
            Ok(fresh) => inner.store_supported(Arc::new(fresh)),
            Err(error) => tracing::warn!(
                %error,
                base_url = %inner.base_url,
                "x402 facilitator: refreshing /supported failed, keeping the previous answer"
            ),
        }
    }
}

/// A `/verify` or `/settle` answer.
trait Answer: DeserializeOwned + Send {
    /// The endpoint, for error messages.
    const ENDPOINT: &'static str;
    /// The key that makes a non-2xx JSON body an answer (`isValid`, `success`).
    const MARKER: &'static str;
    /// Whether this is a refusal (the only answer a non-2xx status may carry).
    fn is_refusal(&self) -> bool;
}

impl Answer for VerifyResponse {
    const ENDPOINT: &'static str = "/verify";
    const MARKER: &'static str = "isValid";
    fn is_refusal(&self) -> bool {
        !self.is_valid
    }
}

impl Answer for SettleResponse {
    const ENDPOINT: &'static str = "/settle";
    const MARKER: &'static str = "success";
    fn is_refusal(&self) -> bool {
        !self.success
    }
}

impl Inner {
    fn cached_supported(&self) -> Option<Arc<SupportedResponse>> {
        self.supported
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store_supported(&self, fresh: Arc<SupportedResponse>) {
        *self
            .supported
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(fresh);
    }

    fn request(&self, method: Method, url: &Url, timeout: Duration) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, url.clone())
            .timeout(timeout)
            .header(ACCEPT, "application/json");
        match &self.authorization {
            Some(authorization) => request.header(AUTHORIZATION, authorization.clone()),
            None => request,
        }
    }

    /// `POST`s a verify or settle request and reads the answer.
    async fn post<T: Answer>(
        &self,
        url: &Url,
        request: &FacilitatorRequest<'_>,
        timeout: Duration,
    ) -> Result<T, FacilitatorError> {
        // Cannot fail for these types; if it did, nothing was sent.
        let body = serde_json::to_vec(request)
            .map_err(|_| FacilitatorError::Unreachable("could not serialize the request".into()))?;
        let response = self
            .request(Method::POST, url, timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| send_error(&error))?;
        let status = response.status();
        let body = read_capped(response).await?;
        if status.is_success() {
            parse_success(body, T::ENDPOINT)
        } else {
            parse_failure(status, body)
        }
    }

    /// `GET /supported`, uncached.
    async fn get_supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        let response = self
            .request(Method::GET, &self.supported_url, self.timeout)
            .send()
            .await
            .map_err(|error| send_error(&error))?;
        let status = response.status();
        let body = read_capped(response).await?;
        if !status.is_success() {
            return Err(FacilitatorError::Status(status.as_u16()));
        }
        parse_success(body, "/supported")
    }
}

/// Reads a response body, giving up once it exceeds [`MAX_RESPONSE_BYTES`].
async fn read_capped(response: reqwest::Response) -> Result<Body, FacilitatorError> {
    crate::http::read_capped(response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|error| body_error(&error))
}

/// A 2xx body: the expected JSON, or `Malformed`.
fn parse_success<T: DeserializeOwned>(body: Body, endpoint: &str) -> Result<T, FacilitatorError> {
    let Body::Complete(bytes) = body else {
        return Err(FacilitatorError::Malformed(format!(
            "{endpoint} answer is larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    };
    serde_json::from_slice(&bytes).map_err(|_| {
        FacilitatorError::Malformed(format!("{endpoint} answer is not the expected JSON"))
    })
}

/// A non-2xx body: a refusal if it is a JSON answer (`isValid`/`success` present), else
/// `Status`. A non-2xx answer claiming success is contradictory: `Malformed`.
fn parse_failure<T: Answer>(status: StatusCode, body: Body) -> Result<T, FacilitatorError> {
    let not_an_answer = FacilitatorError::Status(status.as_u16());
    let Body::Complete(bytes) = body else {
        return Err(not_an_answer);
    };
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(not_an_answer);
    };
    if !object.contains_key(T::MARKER) {
        return Err(not_an_answer);
    }
    let malformed = |what: &str| {
        FacilitatorError::Malformed(format!(
            "{} answered HTTP {} with {what}",
            T::ENDPOINT,
            status.as_u16()
        ))
    };
    let answer: T = serde_json::from_value(Value::Object(object))
        .map_err(|_| malformed("a malformed answer"))?;
    if answer.is_refusal() {
        Ok(answer)
    } else {
        Err(malformed("an answer claiming success"))
    }
}

/// Classifies a failed `send`: before the request was delivered, or after.
fn send_error(error: &reqwest::Error) -> FacilitatorError {
    tracing::debug!(%error, "x402 facilitator request failed");
    failure(crate::http::send_failure(error))
}

/// Classifies a failure while reading the answer's body.
fn body_error(error: &reqwest::Error) -> FacilitatorError {
    tracing::debug!(%error, "x402 facilitator answer could not be read");
    failure(crate::http::body_failure(error))
}

/// The facilitator error of a call that gave no answer.
fn failure(failure: Failure) -> FacilitatorError {
    match failure {
        Failure::Connect => {
            FacilitatorError::Unreachable("could not connect to the facilitator".into())
        }
        Failure::Timeout => FacilitatorError::Timeout,
        Failure::Request => FacilitatorError::Unreachable("could not build the request".into()),
        Failure::Redirect => FacilitatorError::Malformed("too many redirects".into()),
        Failure::Sent => {
            FacilitatorError::Interrupted("connection failed after the request was sent".into())
        }
        Failure::Reading => {
            FacilitatorError::Interrupted("connection failed while reading the answer".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::{TEST_CERT_PEM, serve_tls};
    use crate::x402::wire::{PaymentPayload, PaymentRequirements};
    use axum::Router;
    use axum::extract::Request;
    use axum::response::{IntoResponse, Response};
    use std::sync::Mutex;
    use std::time::Instant;

    const PAYLOAD: &str = r#"{"x402Version":2,"payload":{"transaction":"AAAAAgAAAAA="},"resource":{"url":"https://api.example.com/premium-data"},"accepted":{"scheme":"exact","network":"stellar:testnet","amount":"10000000","asset":"CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA","payTo":"GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB","maxTimeoutSeconds":60,"extra":{"areFeesSponsored":true,"clientKey":1.50}},  "unknown" : null}"#;

    const SUPPORTED: &str = r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"stellar:testnet","extra":{"areFeesSponsored":true}}],"extensions":[],"signers":{"stellar:*":["GFACILITATOR"]}}"#;

    /// One request as the test double saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        authorization: Option<String>,
        content_type: Option<String>,
        body: Vec<u8>,
    }

    /// What the test double saw, shared with the test.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<Seen>>>);

    impl Log {
        fn all(&self) -> Vec<Seen> {
            self.0.lock().unwrap().clone()
        }
        fn count(&self, path: &str) -> usize {
            self.all().iter().filter(|s| s.path.ends_with(path)).count()
        }
    }

    type Reply = Arc<dyn Fn(String) -> BoxFuture<'static, Response> + Send + Sync>;

    /// A test double's behaviour: the response to a request for a path.
    fn reply<F, Fut>(f: F) -> Reply
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        Arc::new(move |path| Box::pin(f(path)))
    }

    /// Starts a loopback axum facilitator double; `reply` gets the request path.
    async fn serve(reply: Reply) -> (String, Log) {
        let log = Log::default();
        let seen = log.clone();
        let app = Router::new().fallback(move |request: Request| {
            let (seen, reply) = (seen.clone(), reply.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let header = |name| {
                    parts
                        .headers
                        .get(name)
                        .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
                };
                let path = parts.uri.path().to_owned();
                seen.0.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path: path.clone(),
                    authorization: header(AUTHORIZATION),
                    content_type: header(CONTENT_TYPE),
                    body: body.to_vec(),
                });
                reply(path).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}"), log)
    }

    fn json(status: u16, body: &str) -> Response {
        let status = StatusCode::from_u16(status).unwrap();
        (
            status,
            [(CONTENT_TYPE, "application/json")],
            body.to_owned(),
        )
            .into_response()
    }

    /// A double answering every path with the same status and body.
    fn fixed(status: u16, body: &'static str) -> Reply {
        reply(move |_| async move { json(status, body) })
    }

    /// A double answering like a healthy facilitator.
    fn healthy() -> Reply {
        reply(|path: String| async move {
            if path.ends_with("/verify") {
                json(200, r#"{"isValid":true,"payer":"GPAYER"}"#)
            } else if path.ends_with("/settle") {
                json(
                    200,
                    r#"{"success":true,"transaction":"abcd","network":"stellar:testnet","payer":"GPAYER"}"#,
                )
            } else if path.ends_with("/supported") {
                json(200, SUPPORTED)
            } else {
                json(404, "{}")
            }
        })
    }

    fn payment() -> PaymentPayload {
        PaymentPayload::from_json(PAYLOAD.as_bytes()).unwrap()
    }

    fn ours() -> PaymentRequirements {
        serde_json::from_str(r#"{"scheme":"exact","network":"stellar:testnet","amount":"10000000","asset":"CBIELTK6YBZJU5UP2WWQEUCYKLPU6AUNZ2BQ4WWFEIE3USCIHMXQDAMA","payTo":"GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB","maxTimeoutSeconds":60,"extra":{"areFeesSponsored":true}}"#).unwrap()
    }

    fn facilitator(base: &str) -> HttpFacilitator {
        HttpFacilitator::builder(base).build().unwrap()
    }

    async fn verify(f: &HttpFacilitator) -> Result<VerifyResponse, FacilitatorError> {
        let (payment, ours) = (payment(), ours());
        f.verify(&FacilitatorRequest::new(&payment, &ours)).await
    }

    async fn settle(f: &HttpFacilitator) -> Result<SettleResponse, FacilitatorError> {
        let (payment, ours) = (payment(), ours());
        f.settle(&FacilitatorRequest::new(&payment, &ours)).await
    }

    /// Shortens the settle timeout below the builder's 15 s floor, for tests only.
    fn with_settle_timeout(mut f: HttpFacilitator, timeout: Duration) -> HttpFacilitator {
        Arc::get_mut(&mut f.inner).unwrap().settle_timeout = timeout;
        f
    }

    #[tokio::test]
    async fn bearer_sent_on_all_three_endpoints() {
        let (base, log) = serve(healthy()).await;
        let f = HttpFacilitator::builder(&base)
            .api_key("test-key")
            .build()
            .unwrap();
        assert!(verify(&f).await.unwrap().is_valid);
        assert!(settle(&f).await.unwrap().success);
        assert_eq!(f.supported().await.unwrap().kinds.len(), 1);
        let seen = log.all();
        let paths: Vec<_> = seen
            .iter()
            .map(|s| (s.method.as_str(), s.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                ("POST", "/verify"),
                ("POST", "/settle"),
                ("GET", "/supported")
            ]
        );
        for s in &seen {
            assert_eq!(s.authorization.as_deref(), Some("Bearer test-key"), "{s:?}");
        }
    }

    #[tokio::test]
    async fn no_authorization_without_api_key() {
        let (base, log) = serve(healthy()).await;
        verify(&facilitator(&base)).await.unwrap();
        assert_eq!(log.all()[0].authorization, None);
    }

    #[tokio::test]
    async fn base_url_with_and_without_trailing_slash() {
        let (base, log) = serve(healthy()).await;
        for suffix in ["/x402/testnet", "/x402/testnet/"] {
            let f = facilitator(&format!("{base}{suffix}"));
            assert_eq!(f.base_url(), format!("{base}/x402/testnet"));
            verify(&f).await.unwrap();
        }
        let f = facilitator(&format!("{base}/"));
        assert_eq!(f.base_url(), base);
        verify(&f).await.unwrap();
        let paths: Vec<_> = log.all().into_iter().map(|s| s.path).collect();
        assert_eq!(
            paths,
            ["/x402/testnet/verify", "/x402/testnet/verify", "/verify"]
        );
    }

    #[tokio::test]
    async fn request_body_forwards_the_payload_byte_for_byte() {
        let (base, log) = serve(healthy()).await;
        let f = facilitator(&base);
        verify(&f).await.unwrap();
        settle(&f).await.unwrap();
        let requirements = serde_json::to_string(&ours()).unwrap();
        let expected = format!(
            r#"{{"x402Version":2,"paymentPayload":{PAYLOAD},"paymentRequirements":{requirements}}}"#
        );
        for seen in log.all() {
            assert_eq!(String::from_utf8(seen.body).unwrap(), expected);
            assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        }
    }

    #[tokio::test]
    async fn verify_200_valid_and_invalid() {
        let (base, _) = serve(fixed(200, r#"{"isValid":true,"payer":"GPAYER"}"#)).await;
        let answer = verify(&facilitator(&base)).await.unwrap();
        assert!(answer.is_valid);
        assert_eq!(answer.payer.as_deref(), Some("GPAYER"));

        let (base, _) = serve(fixed(
            200,
            r#"{"isValid":false,"invalidReason":"invalid_exact_stellar_payload_wrong_amount"}"#,
        ))
        .await;
        let answer = verify(&facilitator(&base)).await.unwrap();
        assert!(!answer.is_valid);
        assert_eq!(
            answer.invalid_reason.as_deref(),
            Some("invalid_exact_stellar_payload_wrong_amount")
        );
    }

    #[tokio::test]
    async fn non_2xx_with_an_answer_body_is_a_refusal() {
        let (base, _) = serve(fixed(
            400,
            r#"{"isValid":false,"invalidReason":"invalid_payload","success":false,"errorReason":"invalid_payload"}"#,
        ))
        .await;
        let f = facilitator(&base);
        let answer = verify(&f).await.unwrap();
        assert!(!answer.is_valid);
        assert_eq!(answer.invalid_reason.as_deref(), Some("invalid_payload"));
        let answer = settle(&f).await.unwrap();
        assert!(!answer.success);
        assert_eq!(answer.error_reason.as_deref(), Some("invalid_payload"));
        assert_eq!(answer.transaction, "");
    }

    #[tokio::test]
    async fn non_2xx_claiming_success_is_malformed() {
        let (base, _) = serve(fixed(
            500,
            r#"{"isValid":true,"success":true,"transaction":"t","network":"n"}"#,
        ))
        .await;
        let f = facilitator(&base);
        assert!(matches!(
            verify(&f).await,
            Err(FacilitatorError::Malformed(_))
        ));
        let error = settle(&f).await.unwrap_err();
        assert!(matches!(error, FacilitatorError::Malformed(_)));
        assert!(error.outcome_unknown());
    }

    #[tokio::test]
    async fn non_2xx_without_an_answer_is_status() {
        let (base, _) = serve(fixed(500, "internal error")).await;
        let f = facilitator(&base);
        assert_eq!(verify(&f).await, Err(FacilitatorError::Status(500)));
        let error = settle(&f).await.unwrap_err();
        assert_eq!(error, FacilitatorError::Status(500));
        assert!(error.outcome_unknown());
        assert_eq!(
            f.supported().await.unwrap_err(),
            FacilitatorError::Status(500)
        );

        let (base, _) = serve(fixed(404, r#"{"error":"PluginError"}"#)).await;
        let error = verify(&facilitator(&base)).await.unwrap_err();
        assert_eq!(error, FacilitatorError::Status(404));
        assert!(!error.outcome_unknown());
    }

    #[tokio::test]
    async fn malformed_2xx_bodies() {
        for body in [
            "garbage",
            "",
            "null",
            r#"{"isValid":"yes"}"#,
            r#"{"success":true}"#,
        ] {
            let (base, _) = serve(fixed(200, body)).await;
            let f = facilitator(&base);
            assert!(
                matches!(verify(&f).await, Err(FacilitatorError::Malformed(_))),
                "{body}"
            );
            if body != r#"{"success":true}"# {
                assert!(
                    matches!(settle(&f).await, Err(FacilitatorError::Malformed(_))),
                    "{body}"
                );
            }
            assert!(matches!(
                f.supported().await,
                Err(FacilitatorError::Malformed(_))
            ));
        }
    }

    #[tokio::test]
    async fn oversized_body_with_length_is_malformed() {
        let reply = reply(|_| async { (StatusCode::OK, vec![b' '; 4 << 20]).into_response() });
        let (base, _) = serve(reply).await;
        let f = facilitator(&base);
        let error = verify(&f).await.unwrap_err();
        assert!(matches!(error, FacilitatorError::Malformed(_)), "{error:?}");
    }

    /// A raw server streaming an endless chunked 200 body: the client must stop reading.
    #[tokio::test]
    async fn endless_chunked_body_is_malformed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0_u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
            // Up to 1 GiB: far more than the client may buffer.
            for _ in 0..16 * 1024 {
                if socket.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        let f = facilitator(&format!("http://{address}"));
        let error = verify(&f).await.unwrap_err();
        assert!(matches!(error, FacilitatorError::Malformed(_)), "{error:?}");
    }

    #[tokio::test]
    async fn settle_slower_than_settle_timeout_is_timeout() {
        let reply = reply(|_| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(200, r#"{"success":true,"transaction":"t","network":"n"}"#)
        });
        let (base, _) = serve(reply).await;
        let f = with_settle_timeout(facilitator(&base), Duration::from_millis(300));
        let started = Instant::now();
        let error = settle(&f).await.unwrap_err();
        assert_eq!(error, FacilitatorError::Timeout);
        assert!(error.outcome_unknown());
        assert!(started.elapsed() < Duration::from_secs(3));

        let f = HttpFacilitator::builder(&base)
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        assert_eq!(verify(&f).await, Err(FacilitatorError::Timeout));
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let f = facilitator(&format!("http://{address}"));
        let error = settle(&f).await.unwrap_err();
        assert!(
            matches!(error, FacilitatorError::Unreachable(_)),
            "{error:?}"
        );
        assert!(!error.outcome_unknown());
    }

    /// A server that reads the request and closes the connection without answering: the
    /// request was delivered, so this is `Interrupted` (outcome unknown), not `Unreachable`.
    #[tokio::test]
    async fn connection_closed_without_answer_is_interrupted() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buffer = [0_u8; 4096];
                let _ = socket.read(&mut buffer).await;
                drop(socket);
            }
        });
        let f = facilitator(&format!("http://{address}"));
        let error = settle(&f).await.unwrap_err();
        assert!(
            matches!(error, FacilitatorError::Interrupted(_)),
            "{error:?}"
        );
        assert!(error.outcome_unknown());
    }

    #[tokio::test]
    async fn supported_is_fetched_once() {
        let (base, log) = serve(healthy()).await;
        let f = facilitator(&base);
        let first = f.supported().await.unwrap();
        let second = f.supported().await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.fees_sponsored("exact", "stellar:testnet"), Some(true));
        assert_eq!(log.count("/supported"), 1);
    }

    #[tokio::test]
    async fn concurrent_first_supported_calls_share_one_fetch() {
        let reply = reply(|_| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            json(200, SUPPORTED)
        });
        let (base, log) = serve(reply).await;
        let f = facilitator(&base);
        let clone = f.clone();
        let (a, b, c) = tokio::join!(f.supported(), f.supported(), clone.supported());
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert_eq!(log.count("/supported"), 1);
    }

    #[tokio::test]
    async fn failed_first_supported_is_retried() {
        let calls = Arc::new(Mutex::new(0_u32));
        let counter = calls.clone();
        let reply = reply(move |_| {
            let n = {
                let mut calls = counter.lock().unwrap();
                *calls += 1;
                *calls
            };
            async move {
                if n == 1 {
                    json(503, "busy")
                } else {
                    json(200, SUPPORTED)
                }
            }
        });
        let (base, log) = serve(reply).await;
        let f = facilitator(&base);
        assert_eq!(
            f.supported().await.unwrap_err(),
            FacilitatorError::Status(503)
        );
        assert!(f.supported().await.is_ok());
        assert!(f.supported().await.is_ok());
        assert_eq!(log.count("/supported"), 2);
    }

    /// A double whose `/supported` network changes after the first answer, or fails.
    fn changing(later: &'static str, later_status: u16) -> Reply {
        let calls = Arc::new(Mutex::new(0_u32));
        reply(move |_| {
            let n = {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            async move {
                if n == 1 {
                    json(200, SUPPORTED)
                } else {
                    json(later_status, later)
                }
            }
        })
    }

    const SUPPORTED_PUBNET: &str = r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"stellar:pubnet","extra":{"areFeesSponsored":true}}]}"#;

    async fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
        for _ in 0..100 {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn supported_refreshes_in_the_background() {
        let (base, log) = serve(changing(SUPPORTED_PUBNET, 200)).await;
        let f = HttpFacilitator::builder(&base)
            .supported_refresh(Duration::from_millis(100))
            .build()
            .unwrap();
        let first = f.supported().await.unwrap();
        assert!(first.kind("exact", "stellar:testnet").is_some());
        assert!(wait_for(|| log.count("/supported") >= 3).await);
        let later = f.supported().await.unwrap();
        assert!(later.kind("exact", "stellar:pubnet").is_some());
        assert!(later.kind("exact", "stellar:testnet").is_none());
    }

    #[tokio::test]
    async fn failed_refresh_keeps_the_previous_answer() {
        let (base, log) = serve(changing("down", 500)).await;
        let f = HttpFacilitator::builder(&base)
            .supported_refresh(Duration::from_millis(100))
            .build()
            .unwrap();
        let first = f.supported().await.unwrap();
        assert!(wait_for(|| log.count("/supported") >= 3).await);
        let later = f.supported().await.unwrap();
        assert!(Arc::ptr_eq(&first, &later));
    }

    #[tokio::test]
    async fn dropping_the_facilitator_stops_the_refresher() {
        let (base, log) = serve(healthy()).await;
        let f = HttpFacilitator::builder(&base)
            .supported_refresh(Duration::from_millis(100))
            .build()
            .unwrap();
        let clone = f.clone();
        f.supported().await.unwrap();
        assert!(wait_for(|| log.count("/supported") >= 3).await);
        drop(f);
        assert!(
            wait_for(|| log.count("/supported") >= 5).await,
            "clones keep it alive"
        );
        drop(clone);
        // At most one refresh may have been in flight when the last clone was dropped.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let settled = log.count("/supported");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(log.count("/supported"), settled);
    }

    #[tokio::test]
    async fn null_and_unknown_fields_are_lenient() {
        let reply = reply(|path: String| async move {
            if path.ends_with("/verify") {
                json(
                    200,
                    r#"{"isValid":true,"invalidReason":null,"invalidMessage":null,"payer":null,"extensions":{"a":1},"new":[]}"#,
                )
            } else if path.ends_with("/settle") {
                json(
                    200,
                    r#"{"success":false,"errorReason":"tx_failed","errorMessage":null,"payer":null,"transaction":null,"network":null,"amount":null,"new":1}"#,
                )
            } else {
                json(
                    200,
                    r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"stellar:testnet","extra":null,"new":1}],"extensions":null,"signers":null,"new":{}}"#,
                )
            }
        });
        let (base, _) = serve(reply).await;
        let f = facilitator(&base);
        let verified = verify(&f).await.unwrap();
        assert!(verified.is_valid);
        assert_eq!(verified.payer, None);
        let settled = settle(&f).await.unwrap();
        assert!(!settled.success);
        assert_eq!(settled.error_reason.as_deref(), Some("tx_failed"));
        assert_eq!(
            (settled.transaction.as_str(), settled.network.as_str()),
            ("", "")
        );
        let supported = f.supported().await.unwrap();
        assert!(supported.signers.is_empty() && supported.extensions.is_empty());
        assert_eq!(supported.fees_sponsored("exact", "stellar:testnet"), None);
    }

    #[tokio::test]
    async fn redirects_are_followed_with_the_body() {
        let reply = reply(|path: String| async move {
            match path.strip_prefix("/old") {
                Some(rest) => (
                    StatusCode::PERMANENT_REDIRECT,
                    [(http::header::LOCATION, format!("/new{rest}"))],
                )
                    .into_response(),
                None => json(200, r#"{"isValid":true}"#),
            }
        });
        let (base, log) = serve(reply).await;
        let f = HttpFacilitator::builder(format!("{base}/old"))
            .api_key("k")
            .build()
            .unwrap();
        assert!(verify(&f).await.unwrap().is_valid);
        let seen = log.all();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].path, "/new/verify");
        assert_eq!(seen[1].body, seen[0].body);
        assert_eq!(seen[1].authorization.as_deref(), Some("Bearer k"));
    }

    #[test]
    fn builder_validation() {
        use FacilitatorBuildError::*;
        let bad_urls = [
            "",
            "channels.openzeppelin.com/x402",
            "/x402",
            "ftp://example.com",
            "file:///etc/passwd",
            "http://",
            "https://user:pass@example.com",
            "https://example.com/x402?key=secret",
            "https://example.com/x402#frag",
        ];
        for url in bad_urls {
            let error = HttpFacilitator::builder(url).build().unwrap_err();
            assert!(matches!(error, InvalidUrl(_)), "{url}: {error:?}");
            assert!(!error.to_string().contains("secret") && !error.to_string().contains("pass"));
        }
        let ok = |b: HttpFacilitatorBuilder| b.build().map(|_| ());
        let base = || HttpFacilitator::builder("https://example.com");
        assert!(ok(base()).is_ok());
        assert!(ok(HttpFacilitator::builder("http://127.0.0.1:8080/x402/")).is_ok());
        assert!(matches!(
            ok(base().timeout(Duration::ZERO)),
            Err(InvalidTimeout(_))
        ));
        assert!(matches!(
            ok(base().settle_timeout(Duration::from_secs(14))),
            Err(InvalidTimeout(_))
        ));
        assert!(ok(base().settle_timeout(Duration::from_secs(15))).is_ok());
        assert!(matches!(
            ok(base().supported_refresh(Duration::ZERO)),
            Err(InvalidTimeout(_))
        ));
        assert_eq!(ok(base().api_key("")), Err(InvalidApiKey));
        assert_eq!(ok(base().api_key("a\nb")), Err(InvalidApiKey));
        assert!(matches!(
            ok(base().root_certificate_pem(b"not pem")),
            Err(InvalidCertificate(_))
        ));
        assert!(matches!(
            ok(base().root_certificate_pem(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )),
            Err(InvalidCertificate(_))
        ));
        assert!(matches!(
            ok(base().root_certificate_pem(b"-----BEGIN CERTIFICATE-----\n!!!!")),
            Err(InvalidCertificate(_))
        ));
        assert!(
            ok(base()
                .root_certificate_pem(TEST_CERT_PEM.as_bytes())
                .root_certificate_pem(TEST_CERT_PEM.as_bytes()))
            .is_ok()
        );
    }

    #[test]
    fn settle_timeout_and_debug() {
        let builder = HttpFacilitator::builder("https://example.com/").api_key("super-secret-key");
        assert!(!format!("{builder:?}").contains("super-secret-key"));
        let f = builder.build().unwrap();
        assert_eq!(f.settle_timeout(), Some(Duration::from_secs(75)));
        let debug = format!("{f:?}");
        assert!(!debug.contains("super-secret-key"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert_eq!(f.base_url(), "https://example.com");
    }

    #[tokio::test]
    async fn https_with_an_extra_root_certificate() {
        let address = serve_tls(SUPPORTED);
        let f = HttpFacilitator::builder(format!("https://{address}"))
            .root_certificate_pem(TEST_CERT_PEM.as_bytes())
            .build()
            .unwrap();
        assert!(
            f.supported()
                .await
                .unwrap()
                .kind("exact", "stellar:testnet")
                .is_some()
        );

        // Without the extra root, the handshake fails before anything is sent.
        let f = facilitator(&format!("https://{address}"));
        let error = f.supported().await.unwrap_err();
        assert!(
            matches!(error, FacilitatorError::Unreachable(_)),
            "{error:?}"
        );
    }
}
