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
use tower_paywall::mpp::credential::split_payment;

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

/// The headers that carry a payment to the gateway, not the upstream's business; and the
/// method overrides some frameworks honour (a `POST` read as the sold `GET`).
const CREDENTIALS: [&str; 7] = [
    "payment-signature",
    "x-payment",
    "payment-channel",
    "accept-payment",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
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
        let mut tls = tls_config(extra_roots)?;
        // The connector sets ALPN from the versions it enables (and refuses a preset list).
        tls.alpn_protocols.clear();
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
        let forwarded_host = match parts.headers.get(header::HOST) {
            Some(host) => Some(host.clone()),
            None => (parts.uri.authority())
                .and_then(|authority| HeaderValue::try_from(authority.as_str()).ok()),
        };
        hop_by_hop(&mut parts.headers);
        let payment = strip_credentials(&mut parts.headers);
        payer::strip(&mut parts.headers);
        if let Some(paid) = parts.extensions.get::<Paid>() {
            // The length is signed as the upstream will read it: hyper writes a known one.
            if !parts.headers.contains_key(header::CONTENT_LENGTH)
                && let Some(length) = http_body::Body::size_hint(&body).exact()
                && length > 0
            {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
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

/// The crate's TLS configuration ([`tower_paywall::client::tls_config`]), trusting the
/// certificates of `extra_roots` (PEM) beside the web's roots.
///
/// # Errors
///
/// [`UpstreamError::Certificate`] for an unreadable `extra_roots`.
pub fn tls_config(extra_roots: Option<&[u8]>) -> Result<rustls::ClientConfig, UpstreamError> {
    let extra_roots: Vec<Vec<u8>> = extra_roots.map(<[u8]>::to_vec).into_iter().collect();
    tower_paywall::client::tls_config(&extra_roots)
        .map_err(|error| UpstreamError::Certificate(error.to_string()))
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

/// Removes the client's payment credential (x402's headers, and every `Payment` credential
/// among the `Authorization` lines, other credentials kept), its payment negotiation and the
/// method overrides some frameworks honour; the payment's identity ([`payer::payment_id`] of
/// the credential as presented), if one was there.
fn strip_credentials(headers: &mut HeaderMap) -> Option<String> {
    let mut payment = ["payment-signature", "x-payment"]
        .iter()
        .find_map(|name| headers.get(*name))
        .map(|value| payer::payment_id(value.as_bytes()));
    for name in CREDENTIALS {
        headers.remove(name);
    }
    let lines: Vec<String> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    let (tokens, others) = split_payment(lines.iter().map(String::as_str));
    if let Some(token) = tokens.first() {
        payment = payment.or_else(|| Some(payer::payment_id(token.as_bytes())));
        let others: Vec<HeaderValue> = others
            .into_iter()
            .filter_map(|other| HeaderValue::try_from(other).ok())
            .collect();
        headers.remove(header::AUTHORIZATION);
        for other in others {
            headers.append(header::AUTHORIZATION, other);
        }
    }
    payment
}

/// `X-Forwarded-For` (the peer appended), `-Proto` and `-Host` (the client's own replaced),
/// as a reverse proxy sets them; a client's `Forwarded` is removed.
fn forwarded(headers: &mut HeaderMap, remote: SocketAddr, host: Option<HeaderValue>) {
    let ip = remote.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(chain) => format!("{chain}, {ip}"),
        None => ip,
    };
    if let Ok(chain) = HeaderValue::try_from(chain) {
        headers.insert("x-forwarded-for", chain);
    }
    headers.remove(header::FORWARDED);
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    match host {
        Some(host) => headers.insert("x-forwarded-host", host),
        None => headers.remove("x-forwarded-host"),
    };
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
            ("x-http-method-override", "GET"),
            ("accept", "*/*"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        hop_by_hop(&mut headers);
        let payment = strip_credentials(&mut headers);
        assert_eq!(payment, Some(payer::payment_id(b"eyJ4In0=")));
        let left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
        // Another authorization scheme is the upstream's: kept, alone or beside a payment,
        // however the payment is written.
        for (lines, kept, id) in [
            (&["Bearer t"][..], &["Bearer t"][..], None),
            (
                &["Bearer t, Payment eyJ5In0"][..],
                &["Bearer t"][..],
                Some("eyJ5In0"),
            ),
            (
                &["Bearer t", "payment\teyJ5In0"][..],
                &["Bearer t"][..],
                Some("eyJ5In0"),
            ),
            (&["Payment eyJ5In0"][..], &[][..], Some("eyJ5In0")),
        ] {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(header::AUTHORIZATION, HeaderValue::from_static(line));
            }
            let payment = strip_credentials(&mut headers);
            assert_eq!(
                payment,
                id.map(|id| payer::payment_id(id.as_bytes())),
                "{lines:?}"
            );
            let left: Vec<_> = headers.get_all(header::AUTHORIZATION).iter().collect();
            assert_eq!(left, kept, "{lines:?}");
        }
    }

    #[test]
    fn forwarded_headers_append_to_a_chain_and_replace_the_clients_own() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("forwarded", HeaderValue::from_static("host=evil.example"));
        let remote: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        let mut without_host = headers.clone();
        forwarded(
            &mut headers,
            remote,
            Some(HeaderValue::from_static("api.example")),
        );
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(headers["x-forwarded-host"], "api.example");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert!(headers.get("forwarded").is_none());
        forwarded(&mut without_host, remote, None);
        assert!(without_host.get("x-forwarded-host").is_none());
    }
}
