//! A gRPC service behind the layer (tonic's server side, in process), each figure next to its
//! baseline in the same run:
//!
//! - `free`: a free method through the layer vs the same service without it;
//! - `payment required`: the unpaid call's Trailers-Only `RESOURCE_EXHAUSTED` answer.
//!
//! Each call sends a real gRPC request (one length-prefixed message) and reads the whole
//! answer, trailers included. `cargo bench --bench grpc`

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_paywall::x402::{
    Exact, Facilitator, FacilitatorError, FacilitatorRequest, SettleResponse, SupportedResponse,
    VerifyResponse,
};
use tower_paywall::{BoxFuture, PaymentLayer};

#[path = "../tests/support/shop.rs"]
#[allow(dead_code)]
mod shop;

/// The price `shop::pricing` charges.
const PRICE: &str = "0.001";
const PAY_TO: &str = "GB2Q4VZJ32UM4F2EMZR2QVKT4YHIAKGBEV2UDYH7Q6DOZ6KCX5KHSBNB";

/// A facilitator that is never called on these paths (only `/supported`, answered at once).
struct Idle(Arc<SupportedResponse>);

impl Facilitator for Idle {
    fn verify<'a>(
        &'a self,
        _: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<VerifyResponse, FacilitatorError>> {
        Box::pin(async { Err(FacilitatorError::Status(500)) })
    }
    fn settle<'a>(
        &'a self,
        _: &'a FacilitatorRequest<'a>,
    ) -> BoxFuture<'a, Result<SettleResponse, FacilitatorError>> {
        Box::pin(async { Err(FacilitatorError::Status(500)) })
    }
    fn supported(&self) -> BoxFuture<'_, Result<Arc<SupportedResponse>, FacilitatorError>> {
        let supported = self.0.clone();
        Box::pin(async move { Ok(supported) })
    }
}

fn layer() -> PaymentLayer {
    let supported: SupportedResponse = serde_json::from_str(
        r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"stellar:testnet","extra":{"areFeesSponsored":true}}],
            "signers":{"stellar:*":["GCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVYOJR"]}}"#,
    )
    .unwrap();
    let exact = Exact::builder(
        tower_paywall::stellar::Network::testnet(),
        PAY_TO.parse().unwrap(),
        Idle(Arc::new(supported)),
    )
    .build()
    .unwrap();
    PaymentLayer::builder()
        .scheme(exact)
        .pricing(shop::pricing)
        .build()
        .unwrap()
}

/// A unary call of `method`: `BuyRequest { item: "a book" }` in one length-prefixed message.
fn call(method: &str) -> http::Request<tonic::body::Body> {
    let message: &[u8] = &[0, 0, 0, 0, 8, 0x0a, 6, b'a', b' ', b'b', b'o', b'o', b'k'];
    http::Request::post(format!("http://example.com{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from_static(message),
        )))
        .unwrap()
}

fn grpc(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = shop::Shop;
    let paywalled = tower::ServiceBuilder::new()
        .layer(layer())
        .service(shop::Shop);
    let mut group = c.benchmark_group("grpc");
    group.bench_function("free method, bare service", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = bare
                .clone()
                .oneshot(call("/demo.Shop/Browse"))
                .await
                .unwrap();
            response.into_body().collect().await.unwrap()
        })
    });
    group.bench_function("free method through the layer", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = paywalled
                .clone()
                .oneshot(call("/demo.Shop/Browse"))
                .await
                .unwrap();
            response.into_body().collect().await.unwrap()
        })
    });
    group.bench_function("unpaid call: RESOURCE_EXHAUSTED with the offers", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = paywalled
                .clone()
                .oneshot(call("/demo.Shop/Buy"))
                .await
                .unwrap();
            assert_eq!(response.headers()["grpc-status"], "8");
            response.into_body().collect().await.unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, grpc);
criterion_main!(benches);
