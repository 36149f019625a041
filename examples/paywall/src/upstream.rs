//! Forwarding a request to the upstream and its answer back, both bodies streamed.
//!
//! The request loses its hop-by-hop headers, the client's payment credential and every
//! `Paywall-*` header the client sent; a paid one gains the [payer headers](crate::payer). An
//! upstream that cannot be reached is a 502, one that does not answer in time a 504: both
//! below the layer, so an after-success route is not charged for them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_paywall::Paid;

use crate::payer::{self, PayerFields, UpstreamSecret};

/// What the upstream answers with: its own body, or the gateway's small answer.
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// How long the upstream may take to answer (its head) by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection to the upstream may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers that concern one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The headers that carry a payment to the gateway, not the upstream's business.
const CREDENTIALS: [&str; 4] = [
    "payment-signature",
    "x-payment",
    "payment-channel",
    "accept-payment",
];

/// An upstream's base URL, read once per routes file: its scheme, authority and path prefix.
#[derive(Clone, Debug)]
pub struct Base {
    scheme: Scheme,
    authority: Authority,
    /// The path before the request's (`""` or `/api`).
    prefix: Arc<str>,
}

impl Base {
    /// Reads `http(s)://host[:port][/prefix]`.
    ///
    /// # Errors
    ///
    /// What is wrong with it.
    pub fn parse(url: &str) -> Result<Base, String> {
        let uri: Uri = url
            .parse()
            .map_err(|error| format!("upstream {url:?}: {error}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!("upstream {url:?} is not an absolute URL"));
        };
        if uri.query().is_some() {
            return Err(format!("upstream {url:?} has a query"));
        }
        Ok(Base {
            scheme: scheme.clone(),
            authority: authority.clone(),
            prefix: Arc::from(uri.path().trim_end_matches('/')),
        })
    }

    /// The upstream URI of a request for `path_and_query`.
    fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Option<Uri> {
        let path_and_query = match (path_and_query, self.prefix.is_empty()) {
            (Some(pq), true) => pq.clone(),
            (pq, _) => {
                let pq = pq.map_or("/", PathAndQuery::as_str);
                PathAndQuery::try_from(format!("{}{pq}", self.prefix)).ok()?
            }
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .ok()
    }
}

/// Where a request goes and where it came from: in a paid request's extensions, from the
/// gateway through the layer.
#[derive(Clone, Debug)]
pub struct Target {
    /// The upstream, from the routes file the request was routed with.
    pub base: Base,
    /// The client's address.
    pub remote: SocketAddr,
}

/// The upstream client (cheap to clone).
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
    timeout: Duration,
    secret: Option<Arc<UpstreamSecret>>,
}

/// Why the upstream client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The extra CA file is not a PEM with certificates.
    #[error("the upstream CA: {0}")]
    Certificate(String),
}

impl Upstream {
    /// A client answering within `timeout`, trusting the usual web roots and the
    /// certificates of `extra_roots` (PEM) for `https://` upstreams, signing payer headers
    /// with `secret` when there is one. HTTP/2 is used where the upstream's TLS offers it.
    ///
    /// # Errors
    ///
    /// [`UpstreamError::Certificate`] for an unreadable `extra_roots`.
    pub fn new(
        timeout: Duration,
        extra_roots: Option<&[u8]>,
        secret: Option<UpstreamSecret>,
    ) -> Result<Upstream, UpstreamError> {
        let tls = tls_config(extra_roots)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Upstream {
            client,
            timeout,
            secret: secret.map(Arc::new),
        })
    }

    /// Sends `request` to the [`Target`] in its extensions, and gives back the upstream's
    /// answer, or a 502 or 504 of the gateway's.
    pub async fn forward(&self, mut request: Request<Incoming>) -> Response<UpstreamBody> {
        match request.extensions_mut().remove::<Target>() {
            Some(target) => self.forward_to(request, &target).await,
            None => problem(StatusCode::INTERNAL_SERVER_ERROR, "request not routed"),
        }
    }

    /// Sends `request` to `target`, and gives back the upstream's answer, or a 502 or 504 of
    /// the gateway's.
    pub async fn forward_to(
        &self,
        request: Request<Incoming>,
        target: &Target,
    ) -> Response<UpstreamBody> {
        let (mut parts, body) = request.into_parts();
        let Some(uri) = target.base.uri(parts.uri.path_and_query()) else {
            return problem(StatusCode::BAD_REQUEST, "unreadable request target");
        };
        let forwarded_host = parts.headers.get(header::HOST).cloned();
        let payment = credential(&parts.headers).map(payer::payment_id);
        hop_by_hop(&mut parts.headers);
        strip_credentials(&mut parts.headers);
        payer::strip(&mut parts.headers);
        if let Some(paid) = parts.extensions.get::<Paid>() {
            let fields = PayerFields::of(paid, payment.unwrap_or_default());
            let signed_path = uri.path_and_query().map_or("/", |pq| pq.as_str());
            fields.add(
                &mut parts.headers,
                parts.method.as_str(),
                signed_path,
                self.secret.as_deref(),
                SystemTime::now(),
            );
        }
        forwarded(&mut parts.headers, target.remote, forwarded_host);
        parts.headers.remove(header::HOST);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => problem(
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream did not answer in time",
            ),
            Ok(Err(error)) => {
                tracing::warn!(%error, "upstream unreachable");
                problem(StatusCode::BAD_GATEWAY, "the upstream cannot be reached")
            }
            Ok(Ok(response)) => {
                tracing::debug!(status = %response.status(), version = ?response.version(), "upstream answered");
                let (mut parts, body) = response.into_parts();
                hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Either::Left(body))
            }
        }
    }
}

/// rustls with the ring provider, trusting the web's roots and the certificates of
/// `extra_roots` (PEM).
///
/// # Errors
///
/// [`UpstreamError::Certificate`] for an unreadable `extra_roots`.
pub fn tls_config(extra_roots: Option<&[u8]>) -> Result<rustls::ClientConfig, UpstreamError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let unreadable = |error: &dyn std::fmt::Display| UpstreamError::Certificate(error.to_string());
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_roots {
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| unreadable(&error))?;
            roots.add(certificate).map_err(|error| unreadable(&error))?;
            added += 1;
        }
        if added == 0 {
            return Err(UpstreamError::Certificate("no CERTIFICATE in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| unreadable(&error))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("timeout", &self.timeout)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl tower_service::Service<Request<Incoming>> for Upstream {
    type Response = Response<UpstreamBody>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let upstream = self.clone();
        Box::pin(async move { Ok(upstream.forward(request).await) })
    }
}

/// The credential a request pays with, as presented.
fn credential(headers: &HeaderMap) -> Option<&[u8]> {
    ["payment-signature", "x-payment"]
        .iter()
        .find_map(|name| headers.get(*name))
        .or_else(|| headers.get(header::AUTHORIZATION).filter(|v| is_payment(v)))
        .map(HeaderValue::as_bytes)
}

/// Whether an `Authorization` value is MPP's `Payment` scheme.
fn is_payment(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"payment "))
}

/// Removes the hop-by-hop headers, and those `Connection` names.
pub(crate) fn hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Removes the client's payment credential and payment negotiation.
fn strip_credentials(headers: &mut HeaderMap) {
    for name in CREDENTIALS {
        headers.remove(name);
    }
    if headers.get(header::AUTHORIZATION).is_some_and(is_payment) {
        headers.remove(header::AUTHORIZATION);
    }
}

/// `X-Forwarded-For` (appended), `-Proto` and `-Host`, as a reverse proxy sets them.
fn forwarded(headers: &mut HeaderMap, remote: SocketAddr, host: Option<HeaderValue>) {
    let ip = remote.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(chain) => format!("{chain}, {ip}"),
        None => ip,
    };
    if let Ok(chain) = HeaderValue::try_from(chain) {
        headers.insert("x-forwarded-for", chain);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
}

/// A small `application/problem+json` answer of the gateway's own.
pub fn problem(status: StatusCode, detail: &str) -> Response<UpstreamBody> {
    problem_bytes(status, detail).map(|body| Either::Right(Full::new(body)))
}

/// [`problem`], as bytes.
pub fn problem_bytes(status: StatusCode, detail: &str) -> Response<Bytes> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or_default(),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_credentials_and_connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("payment-signature", "eyJ4In0="),
            ("x-payment", "eyJ4In0="),
            ("payment-channel", "CABC"),
            ("accept-payment", "stellar/charge"),
            ("authorization", "PAYMENT eyJ4In0="),
            ("accept", "*/*"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        assert_eq!(credential(&headers), Some(&b"eyJ4In0="[..]));
        hop_by_hop(&mut headers);
        strip_credentials(&mut headers);
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
        // Another authorization scheme is the upstream's: kept.
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_credentials(&mut bearer);
        assert_eq!(bearer.len(), 1);
        assert_eq!(credential(&bearer), None);
    }

    #[test]
    fn forwarded_headers_append_to_a_chain() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let remote: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        forwarded(
            &mut headers,
            remote,
            Some(HeaderValue::from_static("api.example")),
        );
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(headers["x-forwarded-host"], "api.example");
    }
}
