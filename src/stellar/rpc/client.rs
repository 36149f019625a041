//! [`JsonRpcClient`]: JSON-RPC 2.0 over reqwest, its builder, and the transport: one `POST`
//! per call, the answer's frame checked (status, size, id, error object) before its `result` is
//! handed to the decoders in `wire`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use stellar_xdr::{LedgerKey, TransactionEnvelope};

use super::error::malformed;
use super::{
    Events, EventsRequest, Health, LatestLedger, LedgerEntries, NetworkInfo, RpcError, SendResult,
    Simulation, SorobanRpc, TransactionHash, TransactionInfo, wire,
};
use crate::BoxFuture;
use crate::http::{Body, ClientError, Failure};

/// Default timeout of one RPC call, and of connecting.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest RPC response body read (transaction meta can be large).
pub(super) const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Longest RPC error message kept, in characters.
const MAX_MESSAGE_CHARS: usize = 256;

/// Why a [`JsonRpcClient`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcBuildError {
    /// The URL is not an absolute `http`/`https` URL with a host, or carries credentials or a
    /// fragment.
    #[error("invalid Soroban RPC URL: {0}")]
    InvalidUrl(&'static str),
    /// The timeout is zero.
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

/// Builder of a [`JsonRpcClient`]; see [`JsonRpcClient::builder`].
#[derive(Clone)]
pub struct JsonRpcClientBuilder {
    url: String,
    timeout: Duration,
    root_certificates: Vec<Vec<u8>>,
}

impl fmt::Debug for JsonRpcClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonRpcClientBuilder")
            .field("url", &redacted(&self.url))
            .field("timeout", &self.timeout)
            .field("root_certificates", &self.root_certificates.len())
            .finish()
    }
}

impl JsonRpcClientBuilder {
    /// Timeout of each call, and of connecting; default 10 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts the certificates of this PEM text as extra roots, next to the webpki roots (for
    /// example a loopback sandbox's self-signed certificate). May be called several times.
    #[must_use]
    pub fn root_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.root_certificates.push(pem.to_vec());
        self
    }

    /// Validates the settings and builds the client.
    ///
    /// # Errors
    ///
    /// [`RpcBuildError`]: a URL that is not an absolute `http`/`https` URL with a host (or that
    /// carries credentials or a fragment), a zero timeout, an unusable root certificate.
    pub fn build(self) -> Result<JsonRpcClient, RpcBuildError> {
        let url = crate::http::http_url(&self.url)
            .map_err(|error| RpcBuildError::InvalidUrl(error.message()))?;
        if self.timeout.is_zero() {
            return Err(RpcBuildError::InvalidTimeout(
                "the timeout must not be zero",
            ));
        }
        let client = crate::http::client(self.timeout, &self.root_certificates).map_err(
            |error| match error {
                ClientError::Certificate(what) => RpcBuildError::InvalidCertificate(what),
                ClientError::Tls => RpcBuildError::Tls,
                ClientError::Client => RpcBuildError::Client,
            },
        )?;
        Ok(JsonRpcClient {
            inner: Arc::new(Inner {
                client,
                url,
                timeout: self.timeout,
                next_id: AtomicU64::new(1),
            }),
        })
    }
}

/// A Soroban RPC server reached over HTTP(S) with JSON-RPC 2.0: each call is one `POST` of
/// `{"jsonrpc":"2.0","id":N,"method":…,"params":{…}}` to the URL.
///
/// TLS is rustls with the ring provider and the webpki roots, plus any extra roots given to
/// the builder. Cheap to clone; clones share the connection pool. Its `Debug` shows only the
/// URL's origin, since providers may put an API key in the path or query.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tower_paywall::stellar::JsonRpcClient;
///
/// let rpc = JsonRpcClient::builder("https://soroban-testnet.stellar.org")
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JsonRpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
    next_id: AtomicU64,
}

impl fmt::Debug for JsonRpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonRpcClient")
            .field("origin", &self.inner.url.origin().ascii_serialization())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl JsonRpcClient {
    /// Starts building a client for the RPC server at `url`, e.g.
    /// `https://soroban-testnet.stellar.org`. Plain `http` is allowed (a loopback sandbox).
    pub fn builder(url: impl Into<String>) -> JsonRpcClientBuilder {
        JsonRpcClientBuilder {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            root_certificates: Vec::new(),
        }
    }
}

impl SorobanRpc for JsonRpcClient {
    fn health(&self) -> BoxFuture<'_, Result<Health, RpcError>> {
        Box::pin(async move { wire::health(self.inner.call("getHealth", None).await?) })
    }

    fn network(&self) -> BoxFuture<'_, Result<NetworkInfo, RpcError>> {
        Box::pin(async move { wire::network_info(self.inner.call("getNetwork", None).await?) })
    }

    fn latest_ledger(&self) -> BoxFuture<'_, Result<LatestLedger, RpcError>> {
        Box::pin(
            async move { wire::latest_ledger(self.inner.call("getLatestLedger", None).await?) },
        )
    }

    fn simulate_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<Simulation, RpcError>> {
        Box::pin(async move {
            let params = json!({ "transaction": wire::encode(transaction)? });
            wire::simulation(self.inner.call("simulateTransaction", Some(params)).await?)
        })
    }

    fn send_transaction<'a>(
        &'a self,
        transaction: &'a TransactionEnvelope,
    ) -> BoxFuture<'a, Result<SendResult, RpcError>> {
        Box::pin(async move {
            let params = json!({ "transaction": wire::encode(transaction)? });
            wire::send_result(self.inner.call("sendTransaction", Some(params)).await?)
        })
    }

    fn transaction<'a>(
        &'a self,
        hash: &'a TransactionHash,
    ) -> BoxFuture<'a, Result<TransactionInfo, RpcError>> {
        Box::pin(async move {
            let params = json!({ "hash": hash.to_string() });
            wire::transaction_info(self.inner.call("getTransaction", Some(params)).await?)
        })
    }

    fn ledger_entries<'a>(
        &'a self,
        keys: &'a [LedgerKey],
    ) -> BoxFuture<'a, Result<LedgerEntries, RpcError>> {
        Box::pin(async move {
            let keys = keys
                .iter()
                .map(wire::encode)
                .collect::<Result<Vec<_>, _>>()?;
            let params = json!({ "keys": keys });
            wire::ledger_entries(self.inner.call("getLedgerEntries", Some(params)).await?)
        })
    }

    fn events<'a>(&'a self, request: &'a EventsRequest) -> BoxFuture<'a, Result<Events, RpcError>> {
        Box::pin(async move {
            let params = wire::events_params(request)?;
            let answer = self.inner.call("getEvents", Some(params)).await?;
            wire::events(answer, request.limit)
        })
    }
}

/// A JSON-RPC 2.0 request.
#[derive(serde::Serialize)]
struct Request<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<Value>,
}

/// A JSON-RPC 2.0 response (`jsonrpc` is not checked).
#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    id: Value,
    result: Option<Box<RawValue>>,
    error: Option<Value>,
}

impl Inner {
    /// One JSON-RPC call: `POST`s the request and reads `result` as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: Option<Value>,
    ) -> Result<T, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            jsonrpc: "2.0",
            id,
            method,
            params,
        };
        // Cannot fail for this type; if it did, nothing was sent.
        let body = serde_json::to_vec(&request)
            .map_err(|_| RpcError::Unreachable("could not encode the request".into()))?;
        let response = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| {
                let failure = crate::http::send_failure(&error);
                tracing::debug!(method, error = ?error.without_url(), "Soroban RPC request failed");
                transport_error(failure)
            })?;
        let status = response.status();
        let body = crate::http::read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| {
                let failure = crate::http::body_failure(&error);
                tracing::debug!(method, error = ?error.without_url(), "Soroban RPC answer could not be read");
                transport_error(failure)
            })?;
        if !status.is_success() {
            return Err(RpcError::Status(status.as_u16()));
        }
        let Body::Complete(bytes) = body else {
            return Err(malformed(
                method,
                format_args!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
            ));
        };
        let response: Response = serde_json::from_slice(&bytes)
            .map_err(|_| malformed(method, "the answer is not a JSON-RPC response"))?;
        if let Some(error) = response.error {
            return Err(rpc_error(&error));
        }
        if response.id.as_u64() != Some(id) {
            return Err(malformed(method, "the answer's id is not the request's"));
        }
        let Some(result) = response.result else {
            return Err(malformed(method, "the answer has no result"));
        };
        serde_json::from_str(result.get())
            .map_err(|_| malformed(method, "the result is not the expected JSON"))
    }
}

/// The error of a call that gave no answer.
fn transport_error(failure: Failure) -> RpcError {
    match failure {
        Failure::Connect => RpcError::Unreachable("could not connect to the server".into()),
        Failure::Timeout => RpcError::Timeout,
        Failure::Request => RpcError::Unreachable("could not build the request".into()),
        Failure::Redirect => RpcError::Malformed("too many redirects".into()),
        Failure::Sent => {
            RpcError::Interrupted("connection failed after the request was sent".into())
        }
        Failure::Reading => {
            RpcError::Interrupted("connection failed while reading the answer".into())
        }
    }
}

/// A JSON-RPC error object: `code` (0 if absent or not an integer) and a shortened `message`.
fn rpc_error(error: &Value) -> RpcError {
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    RpcError::Rpc {
        code,
        message: shorten(message),
    }
}

/// At most [`MAX_MESSAGE_CHARS`] characters of `text`, control characters replaced by spaces.
fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let mut short: String = chars
        .by_ref()
        .take(MAX_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if chars.next().is_some() {
        short.push('…');
    }
    short
}

/// The URL's origin only, for `Debug` (the path or query may hold an API key).
fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => "<not a URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::http::testing::{TEST_CERT_PEM, serve_tls};
    use crate::stellar::rpc::testing::{Seen, answer, client, http, reply, serve, success};

    #[tokio::test]
    async fn ids_increase() {
        let (rpc, log) = answer(json!({"protocolVersion": 23, "sequence": 1})).await;
        rpc.latest_ledger().await.unwrap();
        rpc.clone().latest_ledger().await.unwrap();
        let ids: Vec<_> = log.all().iter().map(Seen::id).collect();
        assert_eq!(ids, [json!(1), json!(2)]);
    }

    #[tokio::test]
    async fn rpc_error_object() {
        let (base, _) = serve(reply(|seen: Seen| async move {
            let body = json!({"jsonrpc": "2.0", "id": seen.id(), "error": {"code": -32602, "message": "invalid parameters", "data": {"x": 1}}});
            http(200, body.to_string())
        }))
        .await;
        let error = client(&base).latest_ledger().await.unwrap_err();
        assert_eq!(
            error,
            RpcError::Rpc {
                code: -32602,
                message: "invalid parameters".into()
            }
        );
        assert!(!error.is_unavailable());

        // A huge message is cut; an error answer with a null id (parse errors) is still an error.
        let (base, _) = serve(reply(|_: Seen| async move {
            let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("bad\n{}", "x".repeat(100_000))}});
            http(200, body.to_string())
        }))
        .await;
        let RpcError::Rpc { code, message } = client(&base).health().await.unwrap_err() else {
            panic!("not an RPC error")
        };
        assert_eq!(code, -32700);
        assert!(message.starts_with("bad x"), "{message}");
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    async fn malformed_answer(body: String) -> RpcError {
        let (base, _) = serve(reply(move |_: Seen| {
            let body = body.clone();
            async move { http(200, body) }
        }))
        .await;
        client(&base).latest_ledger().await.unwrap_err()
    }

    #[tokio::test]
    async fn garbage_and_missing_result_are_malformed() {
        for body in [
            "not json".to_owned(),
            "[]".to_owned(),
            String::new(),
            r#"{"jsonrpc":"2.0","id":1}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":null}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":23,"sequence":5}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":"five"}}"#
                .to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":-1}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":4294967296}}"#
                .to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":1.5}}"#.to_owned(),
        ] {
            let error = malformed_answer(body.clone()).await;
            assert!(matches!(error, RpcError::Malformed(_)), "{body}: {error:?}");
            assert!(!error.is_unavailable());
        }
        let ok = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":23,"sequence":"5"}}"#;
        let (base, _) = serve(reply(move |_: Seen| async move { http(200, ok.into()) })).await;
        assert_eq!(client(&base).latest_ledger().await.unwrap().sequence, 5);
    }

    #[tokio::test]
    async fn http_statuses() {
        for (status, unavailable) in [
            (503, true),
            (500, true),
            (429, true),
            (404, false),
            (400, false),
        ] {
            let (base, _) = serve(reply(move |_: Seen| async move {
                http(status, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into())
            }))
            .await;
            let error = client(&base).health().await.unwrap_err();
            assert_eq!(error, RpcError::Status(status));
            assert_eq!(error.is_unavailable(), unavailable, "{status}");
        }
    }

    #[tokio::test]
    async fn oversized_answer_is_malformed() {
        let (base, _) = serve(reply(|_: Seen| async move {
            http(200, " ".repeat(MAX_RESPONSE_BYTES + 1))
        }))
        .await;
        let error = client(&base).health().await.unwrap_err();
        assert!(matches!(error, RpcError::Malformed(_)), "{error:?}");
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = client(&format!("http://{address}"))
            .latest_ledger()
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Unreachable(_)), "{error:?}");
        assert!(error.is_unavailable());
    }

    #[tokio::test]
    async fn slow_server_times_out() {
        let (base, _) = serve(reply(|seen: Seen| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            success(&seen, json!({"protocolVersion": 23, "sequence": 1}))
        }))
        .await;
        let rpc = JsonRpcClient::builder(&base)
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let started = Instant::now();
        let error = rpc.latest_ledger().await.unwrap_err();
        assert_eq!(error, RpcError::Timeout);
        assert!(error.is_unavailable());
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn https_with_an_extra_root_certificate() {
        let address = serve_tls(
            r#"{"jsonrpc":"2.0","id":1,"result":{"id":"ab","protocolVersion":23,"sequence":77}}"#,
        );
        let rpc = JsonRpcClient::builder(format!("https://{address}"))
            .root_certificate_pem(TEST_CERT_PEM.as_bytes())
            .build()
            .unwrap();
        assert_eq!(rpc.latest_ledger().await.unwrap().sequence, 77);

        // Without the extra root, the handshake fails before anything is sent.
        let error = client(&format!("https://{address}"))
            .latest_ledger()
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Unreachable(_)), "{error:?}");
    }

    #[test]
    fn builder_validation_and_debug() {
        use RpcBuildError::*;
        for url in [
            "",
            "soroban-testnet.stellar.org",
            "ftp://example.com",
            "https://user:secret@example.com",
            "https://example.com/#secret",
        ] {
            let error = JsonRpcClient::builder(url).build().unwrap_err();
            assert!(matches!(error, InvalidUrl(_)), "{url}: {error:?}");
            assert!(!error.to_string().contains("secret"));
        }
        let ok = |b: JsonRpcClientBuilder| b.build().map(|_| ());
        assert!(ok(JsonRpcClient::builder("http://127.0.0.1:8000")).is_ok());
        assert!(
            ok(JsonRpcClient::builder(
                "https://rpc.example/v2/KEY?apikey=KEY"
            ))
            .is_ok()
        );
        assert!(matches!(
            ok(JsonRpcClient::builder("https://rpc.example").timeout(Duration::ZERO)),
            Err(InvalidTimeout(_))
        ));
        assert!(matches!(
            ok(JsonRpcClient::builder("https://rpc.example").root_certificate_pem(b"nope")),
            Err(InvalidCertificate(_))
        ));

        let builder = JsonRpcClient::builder("https://rpc.example:8443/v2/SECRETKEY?apikey=SECRET");
        let debug = format!("{builder:?}");
        assert!(
            !debug.contains("SECRET") && debug.contains("https://rpc.example:8443"),
            "{debug}"
        );
        let client = builder.build().unwrap();
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("SECRET") && debug.contains("https://rpc.example:8443"),
            "{debug}"
        );
    }

    #[test]
    fn shorten_messages() {
        assert_eq!(shorten("a\tb\u{7}c"), "a b c");
        assert_eq!(
            shorten(&"é".repeat(MAX_MESSAGE_CHARS)),
            "é".repeat(MAX_MESSAGE_CHARS)
        );
        assert_eq!(
            shorten(&"é".repeat(MAX_MESSAGE_CHARS + 1)),
            format!("{}…", "é".repeat(MAX_MESSAGE_CHARS))
        );
    }
}
