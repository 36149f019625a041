//! Paying for gRPC calls: [`PayingGrpcLayer`] around a `tonic::transport::Channel` (or any
//! gRPC client service) pays a call answered "payment required" with the same offers,
//! policy, budget and signer as the [`PayingClient`] it was made from, and sends the call
//! again, once, with the payment.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use tower_paywall::client::PayingClient;
//! # async fn run(client: PayingClient) -> Result<(), Box<dyn std::error::Error>> {
//! use tonic::transport::Endpoint;
//!
//! let endpoint = Endpoint::from_static("http://127.0.0.1:50051");
//! let channel = endpoint.connect().await?;
//! let paying = client.grpc_layer().origin(endpoint.uri());
//! let channel = tower::ServiceBuilder::new().layer(paying).service(channel);
//! // Any generated client over it: `ShopClient::new(channel)`.
//! # Ok(()) }
//! ```
//!
//! # What it reads, and what it sends
//!
//! A call is answered "payment required" when its answer is Trailers-Only with
//! `grpc-status: 8` (`RESOURCE_EXHAUSTED`, as [`PaymentLayer`](crate::PaymentLayer) answers
//! gRPC calls) or HTTP 402, and its metadata carries an offer (`payment-required`,
//! `www-authenticate: Payment …`). Any other answer, `RESOURCE_EXHAUSTED` without an offer
//! included, is the caller's. The payment goes in the metadata the server reads
//! (`payment-signature`, or `authorization` for MPP) and the paid answer carries the
//! [`Payment`](super::Payment) in its extensions (`tonic::Response::extensions().get::<Payment>()`), the
//! receipt from its metadata (`payment-response` or `payment-receipt`).
//!
//! # Streaming calls
//!
//! The payment is made before the stream starts: a server-streaming call is answered
//! "payment required" before its first message, so the caller sees the paid stream only; a
//! client-streaming call is answered before the server reads a message, and the messages the
//! caller had already handed over are sent again, in order, followed by the rest. To do so
//! the layer keeps what a call sends until its answer comes, up to
//! [`replay_limit`](PayingGrpcLayer::replay_limit) bytes: a call that sent more before its
//! answer came cannot be sent again and fails with [`ClientError::BodyNotReplayable`].
//!
//! # Never paying twice
//!
//! As with HTTP: the paid call is sent again with the **same** payment (up to
//! [`PayingClientBuilder::retries`](super::PayingClientBuilder::retries) times) when it is
//! answered `UNAVAILABLE` Trailers-Only (the layer's "retry with the same payment") or its
//! connection is lost, and never paid a second time: a paid call answered "payment required"
//! again gets that answer.
//!
//! # When nothing is paid
//!
//! A call the client does not pay (no acceptable offer, over the cap or the budget, the
//! payment failed) fails with the server's status (its code, metadata and details) and the
//! message `payment required, not paid: <reason>` (`payment required; the payment failed after
//! it was committed: …` when it counts as spent); the [`ClientError`] is the status's
//! `source()`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::channel::Action;
use super::replay::Replay;
use super::{ClientError, PayingClient, backoff, read_offers, receipt, retry_after};
use crate::layer::grpc::{GRPC_STATUS, GrpcCode};

/// How much of a call's messages is kept for sending it again, by default (tonic's largest
/// message by default).
pub const DEFAULT_REPLAY_LIMIT: usize = 4 * 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A tower layer paying the gRPC calls of the service it wraps (see the
/// [module docs](self)); made by [`PayingClient::grpc_layer`].
#[derive(Clone, Debug)]
#[must_use]
pub struct PayingGrpcLayer {
    client: PayingClient,
    origin: Option<Arc<str>>,
    replay_limit: usize,
}

impl PayingClient {
    /// A layer paying the calls of a gRPC client service (a `tonic::transport::Channel`) from
    /// this client: same policy, same budget (see [`grpc`](crate::client::grpc)).
    pub fn grpc_layer(&self) -> PayingGrpcLayer {
        PayingGrpcLayer {
            client: self.clone(),
            origin: None,
            replay_limit: DEFAULT_REPLAY_LIMIT,
        }
    }
}

impl PayingGrpcLayer {
    /// The server's URI (`Endpoint::uri()`): the origin whose channels
    /// ([`PayingClientBuilder::channel`](super::PayingClientBuilder::channel)) pay MPP
    /// `channel` challenges. A tonic client's requests carry no origin of their own; without
    /// one, calls are not paid from a channel.
    pub fn origin(mut self, uri: &http::Uri) -> Self {
        self.origin = reqwest::Url::parse(&uri.to_string())
            .ok()
            .filter(|url| url.origin().is_tuple())
            .map(|url| url.origin().ascii_serialization().into());
        self
    }

    /// The most bytes of a call's messages kept for sending it again (default
    /// [`DEFAULT_REPLAY_LIMIT`]).
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }
}

impl<S> Layer<S> for PayingGrpcLayer {
    type Service = PayingGrpc<S>;

    fn layer(&self, inner: S) -> PayingGrpc<S> {
        PayingGrpc {
            inner,
            layer: self.clone(),
        }
    }
}

/// A gRPC client service that pays (made by [`PayingGrpcLayer`]).
#[derive(Clone, Debug)]
pub struct PayingGrpc<S> {
    inner: S,
    layer: PayingGrpcLayer,
}

impl<S, B> Service<http::Request<tonic::body::Body>> for PayingGrpc<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone that is ready goes with the call (tower's way).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            Call {
                inner,
                layer: self.layer.clone(),
            }
            .run(request),
        )
    }
}

/// One call through the layer.
struct Call<S> {
    inner: S,
    layer: PayingGrpcLayer,
}

impl<S, B> Call<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    async fn run(
        mut self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<B>, BoxError> {
        let client = &self.layer.client;
        let (mut head, body) = request.into_parts();
        let origin = match &self.layer.origin {
            Some(origin) => origin.to_string(),
            None => origin_of(&head.uri),
        };
        client.name_channels(&origin, &mut head.headers);
        let (replay, first) = Replay::start(body, self.layer.replay_limit);
        let first = rebuild(&head, tonic::body::Body::new(first));
        let response = self.inner.call(first).await.map_err(Into::into)?;
        let offers = match payment_required(response.headers(), response.status()) {
            true => read_offers(response.headers(), &[]),
            false => Vec::new(),
        };
        if offers.is_empty() {
            replay.forget();
            return Ok(response);
        }
        let required = response.into_parts().0.headers;
        // The unpaid send reads no more of the body: what it read is what is sent again.
        replay.stop();
        if !replay.whole() {
            return Err(not_paid(&required, ClientError::BodyNotReplayable));
        }
        let (built, payment) = match client
            .pay_offers(&offers, &origin, Action::Voucher, None)
            .await
        {
            Ok(paid) => paid,
            Err(error) => return Err(not_paid(&required, error)),
        };
        head.headers.insert(built.name.clone(), built.value.clone());
        let mut attempt = 0;
        loop {
            // Whole: nothing was read since the payment, and a resend follows only a whole body.
            let Some(body) = replay.send() else {
                return Err("the paid call could not be sent again".into());
            };
            let paid = rebuild(&head, tonic::body::Body::new(body));
            std::future::poll_fn(|cx| self.inner.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let retries = client.inner.settings.retries;
            let delay = match self.inner.call(paid).await {
                Ok(response) if attempt < retries && unavailable(&response) && replay.whole() => {
                    retry_after(response.headers())
                }
                Ok(mut response) => {
                    replay.forget();
                    if !payment_required(response.headers(), response.status()) {
                        let receipt = receipt(response.headers());
                        let payment = super::Payment { receipt, ..payment };
                        response.extensions_mut().insert(payment);
                    }
                    return Ok(response);
                }
                Err(error) if attempt < retries && replay.whole() => {
                    let error: BoxError = error.into();
                    tracing::debug!(%error, attempt, "paid call lost; sending the same payment again");
                    backoff(attempt)
                }
                Err(error) => return Err(error.into()),
            };
            attempt += 1;
            tokio::time::sleep(delay).await;
        }
    }
}

/// The request `head` with `body`.
fn rebuild<T>(head: &http::request::Parts, body: T) -> http::Request<T> {
    let mut request = http::Request::new(body);
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = head.uri.clone();
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers.clone();
    *request.extensions_mut() = head.extensions.clone();
    request
}

/// The origin of a request's URI, when it names one.
fn origin_of(uri: &http::Uri) -> String {
    match (uri.scheme(), uri.authority()) {
        (Some(_), Some(_)) => reqwest::Url::parse(&uri.to_string())
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// The code of a Trailers-Only answer (`grpc-status` in its headers).
fn trailers_only_code(headers: &HeaderMap) -> Option<i32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// Whether an answer is "payment required": Trailers-Only `RESOURCE_EXHAUSTED`, or HTTP 402.
fn payment_required(headers: &HeaderMap, status: StatusCode) -> bool {
    status == StatusCode::PAYMENT_REQUIRED
        || (status == StatusCode::OK
            && trailers_only_code(headers) == Some(GrpcCode::ResourceExhausted as i32))
}

/// Whether an answer says "retry with the same payment": Trailers-Only `UNAVAILABLE`, or
/// HTTP 503.
fn unavailable<B>(response: &http::Response<B>) -> bool {
    response.status() == StatusCode::SERVICE_UNAVAILABLE
        || (response.status() == StatusCode::OK
            && trailers_only_code(response.headers()) == Some(GrpcCode::Unavailable as i32))
}

/// The call's error when its payment was not made (or failed after it was committed, as
/// [`ClientError::Incomplete`] says): the server's status, its message saying why, `error` as
/// its source.
fn not_paid(required: &HeaderMap, error: ClientError) -> BoxError {
    let server = tonic::Status::from_header_map(required);
    let code = server
        .as_ref()
        .map_or(tonic::Code::ResourceExhausted, tonic::Status::code);
    let details = server
        .as_ref()
        .map(|status| status.details().to_vec())
        .unwrap_or_default();
    let mut metadata = required.clone();
    for name in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "content-type",
    ] {
        metadata.remove(name);
    }
    let mut status = tonic::Status::with_details_and_metadata(
        code,
        match error {
            ClientError::Incomplete(_) => format!("payment required; {error}"),
            _ => format!("payment required, not paid: {error}"),
        },
        details.into(),
        tonic::metadata::MetadataMap::from_headers(metadata),
    );
    status.set_source(Arc::new(error));
    Box::new(status)
}
