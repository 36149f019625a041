//! A gRPC service behind the layer (tonic's server side, in process), each figure next to its
//! baseline in the same run:
//!
//! - `free`: a free method through the layer vs the same service without it;
//! - `payment required`: the unpaid call's Trailers-Only `RESOURCE_EXHAUSTED` answer;
//! - `paying client` (feature `client`): a free method called through `PayingGrpcLayer` (which
//!   keeps the call's messages until its answer) vs the same call without it.
//!
//! Each call sends a real gRPC request (one length-prefixed message) and reads the whole
//! answer, trailers included. `cargo bench --bench grpc`

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use http_body_util::Collected;
use tower::ServiceExt;
use tower_paywall::PaymentLayer;

mod support;

#[path = "../tests/support/shop.rs"]
#[allow(dead_code)]
mod shop;

/// The price `shop::pricing` charges.
const PRICE: &str = "0.001";

fn layer() -> PaymentLayer {
    PaymentLayer::builder()
        .scheme(support::exact())
        .pricing(shop::pricing)
        .build()
        .unwrap()
}

/// A unary call of `/demo.Shop/Browse` (an empty `BrowseRequest`) or `/demo.Shop/Buy`
/// (`BuyRequest { item: "a book" }`), in one length-prefixed message.
fn call(method: &str) -> http::Request<tonic::body::Body> {
    let message: &'static [u8] = match method {
        "/demo.Shop/Browse" => &[0, 0, 0, 0, 0],
        _ => &[0, 0, 0, 0, 8, 0x0a, 6, b'a', b' ', b'b', b'o', b'o', b'k'],
    };
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
    let bare = shop::ShopServer::new(shop::DemoShop);
    let paywalled = tower::ServiceBuilder::new()
        .layer(layer())
        .service(bare.clone());
    let mut group = c.benchmark_group("grpc");
    group.bench_function("free method, bare service", |b| {
        b.to_async(&runtime)
            .iter(|| answer(&bare, "/demo.Shop/Browse"))
    });
    group.bench_function("free method through the layer", |b| {
        b.to_async(&runtime)
            .iter(|| answer(&paywalled, "/demo.Shop/Browse"))
    });
    group.bench_function("unpaid call: RESOURCE_EXHAUSTED with the offers", |b| {
        b.to_async(&runtime).iter(|| async {
            let (head, answer) = answer(&paywalled, "/demo.Shop/Buy").await;
            assert_eq!(head.headers["grpc-status"], "8");
            answer
        })
    });
    #[cfg(feature = "client")]
    {
        let paying = tower::ServiceBuilder::new()
            .layer(paying_client().grpc_layer())
            .service(bare.clone());
        group.bench_function("free method through the paying client layer", |b| {
            b.to_async(&runtime)
                .iter(|| answer(&paying, "/demo.Shop/Browse"))
        });
    }
    group.finish();
}

/// `service`'s whole answer to a call of `method`: its head, and its body read to the end.
async fn answer<S, B>(service: &S, method: &str) -> (http::response::Parts, Collected<Bytes>)
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = service.clone().oneshot(call(method)).await.unwrap();
    let (head, body) = response.into_parts();
    (head, body.collect().await.unwrap())
}

/// A paying client whose ledger is never reached on the paths measured.
#[cfg(feature = "client")]
fn paying_client() -> tower_paywall::client::PayingClient {
    use std::sync::Arc;
    use tower_paywall::stellar::{JsonRpcClient, Keypair, Network};
    let rpc = JsonRpcClient::builder("http://127.0.0.1:9")
        .build()
        .unwrap();
    let key = Keypair::from_seed([7; 32]);
    tower_paywall::client::PayingClient::builder(key, Arc::new(rpc), Network::testnet())
        .build()
        .unwrap()
}

criterion_group!(benches, grpc);
criterion_main!(benches);
