//! `paywall pay`: a local endpoint any agent sends its requests through, which pays their
//! 402s from a key in the environment ([`PayingClient`] underneath: one payment per request,
//! within a cap per payment and a budget).
//!
//! Two ways in, no TLS interception:
//! - **`http://` origins, as an `HTTP_PROXY`**: `curl -x http://127.0.0.1:8490 http://api/…`
//!   (the request line carries the absolute URL);
//! - **any origin, as a forward endpoint**: the target URL is the path, as in
//!   `http://127.0.0.1:8490/https://api.example.com/path?q=1`. `https://` origins go this way:
//!   the TLS to the origin is the proxy's own, checked against the web's roots (and `--ca`).
//!
//! `CONNECT` is refused with that hint. `GET /_paywall/spend` answers what was spent, the
//! budget and the payments made. Every payment is logged (amount, intent, method and URL) to
//! standard output, and with `--log FILE` appended to it as a JSON line. Only loopback peers
//! are served: anyone who can reach the endpoint spends from the key.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tower_paywall::client::{ClientError, PayingClient, Policy, payment};

use crate::upstream::hop_by_hop;

/// Where `paywall pay` listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8490";
/// The largest request body taken (it is kept to be sent again with the payment).
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;
/// The path that answers what was spent.
pub const SPEND_PATH: &str = "/_paywall/spend";
/// How many payments `/_paywall/spend` lists (the most recent).
const LISTED: usize = 1000;

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One payment made.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Paid {
    /// When (Unix seconds).
    pub at: u64,
    /// The amount, in atomic units.
    pub amount: String,
    /// `x402/exact`, `mpp/charge` …
    pub intent: String,
    /// The network.
    pub network: String,
    /// The request's method.
    pub method: String,
    /// The URL paid for.
    pub url: String,
    /// The status it was answered with.
    pub status: u16,
    /// Whether the server answered with a receipt (the money moved). A payment without one
    /// was signed and handed over, and still counts against the budget: the server may settle
    /// it while it is valid, though one that answers an error usually does not.
    pub receipt: bool,
}

/// The paying proxy (cheap to clone).
#[derive(Clone)]
pub struct PayProxy {
    inner: Arc<Inner>,
}

struct Inner {
    client: PayingClient,
    budget: Option<i128>,
    max_per_payment: Option<i128>,
    max_body: usize,
    payments: Mutex<VecDeque<Paid>>,
    log: Option<tokio::sync::Mutex<tokio::fs::File>>,
    quiet: bool,
    token: Option<String>,
}

impl std::fmt::Debug for PayProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayProxy")
            .field("budget", &self.inner.budget)
            .field("max_per_payment", &self.inner.max_per_payment)
            .finish_non_exhaustive()
    }
}

/// What a paying proxy is made with.
#[derive(Debug, Default)]
pub struct PayOptions {
    /// The most one payment may cost, in atomic units.
    pub max_per_payment: Option<i128>,
    /// The most paid in all, in atomic units.
    pub budget: Option<i128>,
    /// The largest request body taken.
    pub max_body: Option<usize>,
    /// A JSON-lines file each payment is appended to.
    pub log: Option<PathBuf>,
    /// Log payments to tracing only, not standard output.
    pub quiet: bool,
    /// A token every request must carry (as the password of `Proxy-Authorization: Basic`, so
    /// `HTTP_PROXY=http://agent:TOKEN@127.0.0.1:8490`, or in `Paywall-Pay-Token`), so that
    /// other users of the machine cannot spend from the key.
    pub token: Option<String>,
}

impl PayProxy {
    /// A proxy paying with `client` (built with its own policy: the cap and budget in
    /// `options` are set on it by [`policy`]).
    ///
    /// # Errors
    ///
    /// When the log file cannot be opened.
    pub async fn new(client: PayingClient, options: PayOptions) -> std::io::Result<PayProxy> {
        let log = match &options.log {
            Some(path) => Some(tokio::sync::Mutex::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .await?,
            )),
            None => None,
        };
        Ok(PayProxy {
            inner: Arc::new(Inner {
                client,
                budget: options.budget,
                max_per_payment: options.max_per_payment,
                max_body: options.max_body.unwrap_or(DEFAULT_MAX_BODY),
                payments: Mutex::new(VecDeque::with_capacity(LISTED)),
                log,
                quiet: options.quiet,
                token: options.token,
            }),
        })
    }

    /// What was spent, in atomic units.
    pub fn spent(&self) -> i128 {
        self.inner.client.spent()
    }

    /// Answers one request from `remote`.
    pub async fn handle(&self, request: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        if !remote.ip().is_loopback() {
            return text(
                StatusCode::FORBIDDEN,
                "paywall pay serves loopback peers only",
            );
        }
        if let Some(refusal) = from_a_browser(&request) {
            return text(StatusCode::FORBIDDEN, refusal);
        }
        if let Some(token) = &self.inner.token
            && !carries(request.headers(), token)
        {
            let mut response = text(
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "paywall pay needs its token: http://agent:TOKEN@<this proxy> as the proxy, or \
                 Paywall-Pay-Token: TOKEN",
            );
            response.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"paywall pay\""),
            );
            return response;
        }
        if request.method() == Method::CONNECT {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "paywall pay does not intercept TLS: send https:// requests to \
                 http://<this proxy>/https://host/path instead of through CONNECT",
            );
        }
        if request.uri().scheme().is_none() && request.uri().path() == SPEND_PATH {
            return self.spend();
        }
        let Some(url) = target(request.uri()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "send http://host/path as a proxy request, or http://<this proxy>/https://host/path",
            );
        };
        self.pay(request, url).await
    }

    /// `GET /_paywall/spend`.
    fn spend(&self) -> Response<Body> {
        let payments = self
            .inner
            .payments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let body = json!({
            "spent": self.spent().to_string(),
            "budget": self.inner.budget.map(|b| b.to_string()),
            "maxPerPayment": self.inner.max_per_payment.map(|m| m.to_string()),
            "payments": payments,
        });
        let mut response = Response::new(full(Bytes::from(body.to_string())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    async fn pay(&self, request: Request<Incoming>, url: reqwest::Url) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, self.inner.max_body).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is larger than --max-body (it is kept to be sent again with the payment)",
                );
            }
        };
        let method = parts.method.clone();
        let mut outgoing = reqwest::Request::new(parts.method, url.clone());
        let mut headers = parts.headers;
        hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(TOKEN);
        *outgoing.headers_mut() = headers;
        if !body.is_empty() {
            *outgoing.body_mut() = Some(reqwest::Body::from(body));
        }
        let response = match self.inner.client.execute(outgoing).await {
            Ok(response) => response,
            Err(error) => return refused(&error),
        };
        let status = response.status();
        let paid = payment(&response).cloned();
        let mut response = http::Response::from(response);
        hop_by_hop(response.headers_mut());
        // Only this proxy says what it paid or refused.
        crate::payer::strip(response.headers_mut());
        if let Some(paid) = paid {
            let record = Paid {
                at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
                amount: paid.amount.to_string(),
                intent: paid.intent.to_string(),
                network: paid.network.clone(),
                method: method.to_string(),
                url: url.to_string(),
                status: status.as_u16(),
                receipt: paid.receipt.is_some(),
            };
            self.record(record).await;
            let headers = response.headers_mut();
            if let Ok(amount) = HeaderValue::try_from(paid.amount.to_string()) {
                headers.insert(HeaderName::from_static("paywall-paid"), amount);
            }
            if let Ok(intent) = HeaderValue::try_from(paid.intent.to_string()) {
                headers.insert(HeaderName::from_static("paywall-paid-intent"), intent);
            }
        }
        response.map(|body| body.map_err(Into::into).boxed_unsync())
    }

    async fn record(&self, paid: Paid) {
        tracing::debug!(amount = %paid.amount, intent = %paid.intent, url = %paid.url, "paid");
        if !self.inner.quiet {
            let receipt = if paid.receipt {
                "receipt"
            } else {
                "no receipt: not settled (yet)"
            };
            println!(
                "paid {} ({}) {} {} {} -> {}, {receipt}",
                paid.amount, paid.network, paid.intent, paid.method, paid.url, paid.status
            );
        }
        if let Some(log) = &self.inner.log {
            let mut line = serde_json::to_vec(&paid).unwrap_or_default();
            line.push(b'\n');
            if let Err(error) = log.lock().await.write_all(&line).await {
                tracing::error!(%error, "the payment log cannot be written");
            }
        }
        let mut payments = self
            .inner
            .payments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if payments.len() == LISTED {
            payments.pop_front();
        }
        payments.push_back(paid);
    }
}

/// The HTTP client the proxy pays through: `tls` (HTTP/2 where offered), and no redirects
/// followed (a 3xx goes back to the agent, which decides).
///
/// # Errors
///
/// When reqwest refuses the configuration.
pub fn http_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The client's policy for `options`: its cap per payment and budget.
pub fn policy(options: &PayOptions) -> Policy {
    let mut policy = Policy::default();
    if let Some(cap) = options.max_per_payment {
        policy = policy.max_per_payment(cap);
    }
    if let Some(budget) = options.budget {
        policy = policy.budget(budget);
    }
    policy
}

/// Why a request is refused as one a web page made (a page must not spend from the key, nor
/// read what the proxy fetched): it names its origin or its site (`Origin`, `Sec-Fetch-Site`
/// other than `none`, which browsers add), or, in the forward form, its `Host` is not a
/// loopback name (a DNS name rebound to 127.0.0.1).
fn from_a_browser<B>(request: &Request<B>) -> Option<&'static str> {
    let headers = request.headers();
    if headers.contains_key(header::ORIGIN) {
        return Some("paywall pay does not serve requests from web pages (Origin)");
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() != b"none")
    {
        return Some("paywall pay does not serve requests from web pages (Sec-Fetch-Site)");
    }
    if request.uri().scheme().is_none() {
        let host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse::<http::uri::Authority>().ok());
        let loopback = host.is_some_and(|host| {
            let name = host.host().trim_start_matches('[').trim_end_matches(']');
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        if !loopback {
            return Some("paywall pay is reached by a loopback address (Host)");
        }
    }
    None
}

/// The header a forward request may carry the token in (never forwarded).
const TOKEN: &str = "paywall-pay-token";

/// Whether `headers` carry `token`: as the password of `Proxy-Authorization: Basic`, or in
/// `Paywall-Pay-Token` (compared in constant time).
fn carries(headers: &http::HeaderMap, token: &str) -> bool {
    use base64::Engine;
    use subtle::ConstantTimeEq;
    let same = |given: &[u8]| bool::from(given.ct_eq(token.as_bytes()));
    let basic = headers
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, encoded) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then_some(encoded.trim())
        })
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .is_some_and(|decoded| {
            decoded
                .iter()
                .position(|&byte| byte == b':')
                .is_some_and(|colon| same(&decoded[colon + 1..]))
        });
    basic
        || headers
            .get(TOKEN)
            .is_some_and(|value| same(value.as_bytes()))
}

/// The URL a request asks for: its absolute URI (proxy form), or the `http(s)://…` its path
/// carries (forward form).
fn target(uri: &http::Uri) -> Option<reqwest::Url> {
    let text = if uri.scheme().is_some() {
        uri.to_string()
    } else {
        let forward = uri.path_and_query()?.as_str().strip_prefix('/')?;
        forward.to_owned()
    };
    let url = reqwest::Url::parse(&text).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host().is_some()).then_some(url)
}

/// The answer to a request that was not paid.
fn refused(error: &ClientError) -> Response<Body> {
    let (status, reason) = match error {
        ClientError::OverLimit { .. } => (StatusCode::PAYMENT_REQUIRED, "over-limit"),
        ClientError::BudgetExceeded { .. } => (StatusCode::PAYMENT_REQUIRED, "budget"),
        ClientError::NoAcceptableOffer(_) => (StatusCode::PAYMENT_REQUIRED, "no-offer"),
        ClientError::Http(error) if error.is_timeout() => {
            (StatusCode::GATEWAY_TIMEOUT, "unreachable")
        }
        _ => (StatusCode::BAD_GATEWAY, "failed"),
    };
    tracing::warn!(%error, reason, "not paid");
    let mut response = text(status, &format!("paywall pay: {error}"));
    response.headers_mut().insert(
        HeaderName::from_static("paywall-refused"),
        HeaderValue::from_static(reason),
    );
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves `proxy` on `listener` until `shutdown` resolves.
///
/// # Errors
///
/// Never, today (accept errors are logged and waited out).
pub async fn serve(
    listener: tokio::net::TcpListener,
    proxy: PayProxy,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    crate::server::accept(
        listener,
        move |remote| {
            let proxy = proxy.clone();
            hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request, remote).await) }
            })
        },
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_as_a_proxy_password_or_a_header_and_nothing_else() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut headers = http::HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            headers
        };
        let basic = |credentials: &str| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        };
        let token = "s3cret-token";
        for good in [
            headers(&[("proxy-authorization", &basic("agent:s3cret-token"))]),
            headers(&[("proxy-authorization", &basic(":s3cret-token"))]),
            headers(&[("paywall-pay-token", token)]),
        ] {
            assert!(carries(&good, token), "{good:?}");
        }
        for bad in [
            headers(&[]),
            headers(&[("proxy-authorization", &basic("agent:s3cret-tokeN"))]),
            headers(&[("proxy-authorization", &basic("s3cret-token"))]),
            headers(&[("proxy-authorization", "Bearer s3cret-token")]),
            headers(&[("proxy-authorization", "Basic !!!")]),
            headers(&[("paywall-pay-token", "s3cret")]),
            headers(&[("authorization", &basic("agent:s3cret-token"))]),
        ] {
            assert!(!carries(&bad, token), "{bad:?}");
        }
    }

    #[test]
    fn requests_from_web_pages_are_refused() {
        let request = |target: &str, headers: &[(&'static str, &'static str)]| {
            let mut request = Request::builder().uri(target);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.body(()).unwrap()
        };
        for (target, headers) in [
            ("/https://a.example/x", &[("host", "127.0.0.1:8490")][..]),
            ("/https://a.example/x", &[("host", "localhost:8490")][..]),
            ("/https://a.example/x", &[("host", "[::1]:8490")][..]),
            // curl, an agent's own HTTP client, a user typing the URL.
            ("http://a.example/x", &[("host", "a.example")][..]),
            (
                "/_paywall/spend",
                &[("host", "127.0.0.1:8490"), ("sec-fetch-site", "none")][..],
            ),
        ] {
            assert_eq!(
                from_a_browser(&request(target, headers)),
                None,
                "{target} {headers:?}"
            );
        }
        for (target, headers) in [
            (
                "/https://a.example/x",
                &[
                    ("host", "127.0.0.1:8490"),
                    ("origin", "https://evil.example"),
                ][..],
            ),
            (
                "/https://a.example/x",
                &[("host", "127.0.0.1:8490"), ("sec-fetch-site", "cross-site")][..],
            ),
            (
                "http://a.example/x",
                &[("sec-fetch-site", "cross-site")][..],
            ),
            (
                "/_paywall/spend",
                &[("host", "rebound.evil.example:8490")][..],
            ),
            ("/_paywall/spend", &[][..]),
        ] {
            assert!(
                from_a_browser(&request(target, headers)).is_some(),
                "{target} {headers:?}"
            );
        }
    }

    #[test]
    fn targets_come_from_the_proxy_form_or_the_path() {
        let url = |uri: &str| target(&uri.parse().unwrap()).map(|url| url.to_string());
        assert_eq!(
            url("http://api.example/a?b=1"),
            Some("http://api.example/a?b=1".into())
        );
        assert_eq!(
            url("/https://api.example/a/b?c=1"),
            Some("https://api.example/a/b?c=1".into())
        );
        assert_eq!(
            url("/http://127.0.0.1:8480/w"),
            Some("http://127.0.0.1:8480/w".into())
        );
        for bad in [
            "/",
            "/api.example/a",
            "/ftp://api.example/a",
            "/https://",
            "/file:///etc/passwd",
        ] {
            assert_eq!(url(bad), None, "{bad}");
        }
    }
}
