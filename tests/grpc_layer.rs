//! gRPC calls through `PaymentLayer` (tower level, x402 `exact` with a test-double facilitator
//! at the HTTP-client boundary): the layer's answers are Trailers-Only gRPC statuses with the
//! challenge in the metadata and a `google.rpc.Status` a client decodes without this crate
//! (decoded here with prost); a paid call is served and settled; a call its handler fails is
//! not settled; plain HTTP is unchanged.

mod support;

use std::sync::Arc;

use axum::Router;
use axum::routing::post;
use http::{HeaderValue, Request, StatusCode};
use support::*;
use tower_paywall::x402::PaymentRequired;
use tower_paywall::{PaymentLayer, Price};

/// `google.rpc.Status`, as a client without this crate decodes it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.ErrorInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(btree_map = "string, string", tag = "3")]
    metadata: std::collections::BTreeMap<String, String>,
}

/// A unary gRPC answer: one length-prefixed message.
const MESSAGE: &[u8] = &[0, 0, 0, 0, 2, 8, 1];

fn app(facilitator: &Arc<TestFacilitator>) -> Router {
    let layer = PaymentLayer::builder()
        .scheme(exact(facilitator))
        .price(Price::parse(PRICE).unwrap())
        .build()
        .unwrap();
    let ok = || async {
        (
            [("content-type", "application/grpc")],
            axum::body::Body::from(MESSAGE),
        )
    };
    // A call that fails before any message: Trailers-Only, `NOT_FOUND`.
    let missing = || async {
        (
            [("content-type", "application/grpc"), ("grpc-status", "5")],
            axum::body::Body::empty(),
        )
    };
    // A unary answer as gRPC servers send it: the message, then the status in trailers.
    let trailed = || async {
        (
            [("content-type", "application/grpc")],
            axum::body::Body::new(Unary { sent: 0 }),
        )
    };
    Router::new()
        .route("/demo.Shop/Buy", post(ok))
        .route("/demo.Shop/Trailed", post(trailed))
        .route("/demo.Shop/Missing", post(missing))
        .layer(layer)
}

/// A body of one message and `grpc-status: 0` trailers.
struct Unary {
    sent: u8,
}

impl http_body::Body for Unary {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.sent += 1;
        std::task::Poll::Ready(match self.sent {
            1 => Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
                MESSAGE,
            )))),
            2 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                Some(Ok(http_body::Frame::trailers(trailers)))
            }
            _ => None,
        })
    }

    /// Known, and small enough to record: only its trailers make it unrecordable.
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(MESSAGE.len() as u64)
    }
}

fn call(
    method: &str,
    content_type: &str,
    payment: Option<HeaderValue>,
) -> Request<axum::body::Body> {
    let mut request = Request::post(format!("http://example.com{method}"))
        .header("content-type", content_type)
        .header("te", "trailers");
    if let Some(payment) = payment {
        request = request.header("payment-signature", payment);
    }
    request.body(axum::body::Body::from(MESSAGE)).unwrap()
}

/// The status details of a Trailers-Only answer, decoded.
fn details(answer: &Answer) -> (RpcStatus, ErrorInfo) {
    use base64::Engine;
    use prost::Message;
    let encoded = answer.headers["grpc-status-details-bin"].to_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded)
        .unwrap();
    let status = RpcStatus::decode(&bytes[..]).unwrap();
    assert_eq!(status.details.len(), 1);
    assert_eq!(
        status.details[0].type_url,
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    let info = ErrorInfo::decode(&status.details[0].value[..]).unwrap();
    (status, info)
}

/// A Trailers-Only answer: HTTP 200, the call's content type, no body; its gRPC status.
fn trailers_only(answer: &Answer, content_type: &str) -> (u16, String) {
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], content_type);
    assert!(answer.body.is_empty(), "{}", answer.text());
    let code = answer.headers["grpc-status"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let message = answer.headers["grpc-message"].to_str().unwrap().to_owned();
    (code, message)
}

#[tokio::test]
async fn an_unpaid_call_gets_resource_exhausted_with_the_offers_in_its_metadata() {
    let facilitator = Arc::new(TestFacilitator::default());
    let app = app(&facilitator);
    for content_type in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-web",
    ] {
        let answer = send(&app, call("/demo.Shop/Buy", content_type, None)).await;
        let (code, message) = trailers_only(&answer, content_type);
        assert_eq!(code, 8, "RESOURCE_EXHAUSTED");
        assert_eq!(message, "Payment Required");
        let required: PaymentRequired = decode_header(&answer.headers["payment-required"]);
        assert_eq!(required.accepts, vec![requirements(PRICE_ATOMIC)]);
        assert_eq!(required.resource.url, "http://example.com/demo.Shop/Buy");
        let (status, info) = details(&answer);
        assert_eq!(
            (status.code, status.message.as_str()),
            (8, message.as_str())
        );
        assert_eq!(info.reason, "PAYMENT_REQUIRED");
        assert_eq!(info.domain, "tower-paywall");
        assert_eq!(info.metadata["httpStatus"], "402");
        assert_eq!(info.metadata["code"], "payment_required");
    }
    assert_eq!(facilitator.verify_calls(), 0);
}

#[tokio::test]
async fn a_paid_call_is_served_and_settled_and_carries_its_receipt() {
    let facilitator = Arc::new(TestFacilitator::default());
    let app = app(&facilitator);
    let payment = payment(&PaymentSpec::default());
    let answer = send(
        &app,
        call("/demo.Shop/Buy", "application/grpc", Some(payment)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, MESSAGE);
    assert!(answer.headers.get("grpc-status").is_none());
    assert!(answer.headers.contains_key("payment-response"));
    assert_eq!(facilitator.settle_calls(), 1);
}

#[tokio::test]
async fn a_paid_calls_trailers_reach_the_client_and_its_retry_gets_them_again() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let facilitator = Arc::new(TestFacilitator::default());
    let app = app(&facilitator);
    let payment = payment(&PaymentSpec::default());
    let response = app
        .clone()
        .oneshot(call(
            "/demo.Shop/Trailed",
            "application/grpc",
            Some(payment.clone()),
        ))
        .await
        .unwrap();
    assert!(response.headers().contains_key("payment-response"));
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), MESSAGE);
    assert_eq!(facilitator.settle_calls(), 1);
    // The answer is recorded once it has passed whole (trailers included): the retry of the
    // same payment (its answer was lost) gets it again, and nothing settles again.
    let mut replayed = None;
    for _ in 0..50 {
        let response = app
            .clone()
            .oneshot(call(
                "/demo.Shop/Trailed",
                "application/grpc",
                Some(payment.clone()),
            ))
            .await
            .unwrap();
        if response.headers().get("grpc-status").is_none() {
            replayed = Some(response.into_body().collect().await.unwrap());
            break;
        }
        // Until the record is written, the payment is busy (ABORTED).
        assert_eq!(response.headers()["grpc-status"], "10");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let replayed = replayed.expect("the recorded answer");
    assert_eq!(replayed.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(replayed.to_bytes(), MESSAGE);
    assert_eq!(facilitator.settle_calls(), 1);
}

#[tokio::test]
async fn a_call_its_handler_fails_is_not_settled() {
    let facilitator = Arc::new(TestFacilitator::default());
    let app = app(&facilitator);
    let payment = payment(&PaymentSpec::default());
    let answer = send(
        &app,
        call(
            "/demo.Shop/Missing",
            "application/grpc",
            Some(payment.clone()),
        ),
    )
    .await;
    let (code, _) = (answer.headers["grpc-status"].to_str().unwrap(), ());
    assert_eq!(code, "5", "the handler's own status");
    assert_eq!(facilitator.verify_calls(), 1);
    assert_eq!(
        facilitator.settle_calls(),
        0,
        "nothing settled for a failed call"
    );
    // The payment was given back: it pays for a call that succeeds.
    let answer = send(
        &app,
        call("/demo.Shop/Buy", "application/grpc", Some(payment)),
    )
    .await;
    assert_eq!(answer.body, MESSAGE);
    assert_eq!(facilitator.settle_calls(), 1);
}

#[tokio::test]
async fn refusals_map_to_their_codes() {
    let facilitator = Arc::new(TestFacilitator::default());
    let app = app(&facilitator);
    // A payment header that does not decode: a fresh 402, RESOURCE_EXHAUSTED with the reason.
    let garbage = HeaderValue::from_static("not-base64!");
    let answer = send(
        &app,
        call("/demo.Shop/Buy", "application/grpc", Some(garbage)),
    )
    .await;
    let (code, message) = trailers_only(&answer, "application/grpc");
    assert_eq!(
        (code, message.as_str()),
        (8, "Payment Required: invalid_payload")
    );
    assert!(answer.headers.contains_key("payment-required"));
    // One over the size limit: 400, INVALID_ARGUMENT.
    let huge = HeaderValue::from_str(&"A".repeat(40 * 1024)).unwrap();
    let answer = send(&app, call("/demo.Shop/Buy", "application/grpc", Some(huge))).await;
    let (code, message) = trailers_only(&answer, "application/grpc");
    assert_eq!(
        (code, message.as_str()),
        (3, "Bad Request: payment_header_too_large"),
        "INVALID_ARGUMENT"
    );
    // The facilitator refuses the payment: RESOURCE_EXHAUSTED with its reason.
    facilitator.set_verify(VerifyMode::Invalid(
        "invalid_exact_stellar_payload_bad_signature",
    ));
    let payment = payment(&PaymentSpec::default());
    let answer = send(
        &app,
        call("/demo.Shop/Buy", "application/grpc", Some(payment.clone())),
    )
    .await;
    let (code, message) = trailers_only(&answer, "application/grpc");
    assert_eq!(code, 8);
    assert!(
        message.contains("invalid_exact_stellar_payload_bad_signature"),
        "{message}"
    );
    let (_, info) = details(&answer);
    assert_eq!(info.reason, "INVALID_EXACT_STELLAR_PAYLOAD_BAD_SIGNATURE");
    // The facilitator is unreachable: UNAVAILABLE, retry later.
    facilitator.set_verify(VerifyMode::Fail(
        tower_paywall::x402::FacilitatorError::Timeout,
    ));
    let answer = send(
        &app,
        call("/demo.Shop/Buy", "application/grpc", Some(payment)),
    )
    .await;
    let (code, _) = trailers_only(&answer, "application/grpc");
    assert_eq!(code, 14, "UNAVAILABLE");
}

#[tokio::test]
async fn plain_http_is_unchanged() {
    let facilitator = Arc::new(TestFacilitator::default());
    let answer = send(
        &app(&facilitator),
        call("/demo.Shop/Buy", "application/json", None),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert!(answer.headers.get("grpc-status").is_none());
}
