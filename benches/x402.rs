//! Hot paths of the x402 `exact` scheme, each next to its baseline in the same run:
//!
//! - `unpriced`: a free route through the layer vs the same router without it;
//! - `challenge`: 402 generation through the layer vs the bare router;
//! - `decode`: decoding a `PAYMENT-SIGNATURE` header;
//! - `precheck`: reading a payment and running every offline check (signature included) vs one
//!   ed25519 verification plus one envelope decode.
//!
//! `cargo bench --bench x402`

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request};
use tower::ServiceExt;
use tower_paywall::stellar::xdr::{Limits, WriteXdr};
use tower_paywall::stellar::{
    CredentialsArm, Keypair, Network, TransferRequest, build_transfer, decode_envelope, sign_payer,
    verify_ed25519,
};
use tower_paywall::x402::{Exact, header};
use tower_paywall::{PaymentLayer, PaymentScheme, Price, PriceFuture, PriceRequest, Priced};

mod support;

use support::{PAY_TO, exact};

/// A valid payment header for 0.001 USDC, signed like the TypeScript client signs it.
fn payment(exact: &Exact) -> HeaderValue {
    let network = Network::testnet();
    let payer = Keypair::from_seed([7; 32]);
    let mut envelope = build_transfer(&TransferRequest {
        source: "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF"
            .parse()
            .unwrap(),
        sequence: 1,
        fee: 10_100,
        contract: network.usdc().unwrap(),
        from: payer.address(),
        to: PAY_TO.parse().unwrap(),
        amount: 10_000,
        nonce: 42,
        signature_expiration_ledger: 0,
        max_time: 4_000_000_000,
        credentials: CredentialsArm::Address,
    })
    .unwrap();
    sign_payer(&mut envelope, &payer, &network.id(), 1_000).unwrap();
    let payload = serde_json::json!({
        "x402Version": 2,
        "payload": { "transaction": envelope.to_xdr_base64(Limits::none()).unwrap() },
        "resource": { "url": "http://example.com/paid" },
        "accepted": exact.requirements(Price::parse("0.001").unwrap().amount()),
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(payload.to_string());
    HeaderValue::from_str(&encoded).unwrap()
}

fn request(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header("host", "example.com")
        .body(Body::empty())
        .unwrap()
}

fn routes() -> Router {
    Router::new()
        .route("/free", get(|| async { "free" }))
        .route("/paid", get(|| async { "paid" }))
}

fn paywall_layer() -> PaymentLayer {
    let pricing = |request: &PriceRequest<'_>| match request.uri().path() {
        "/free" => PriceFuture::ready(Priced::Free),
        _ => PriceFuture::ready(Priced::Charge(Price::parse("0.001").unwrap())),
    };
    PaymentLayer::builder()
        .scheme(exact())
        .pricing(pricing)
        .build()
        .unwrap()
}

fn layered() -> Router {
    routes().layer(paywall_layer())
}

fn unpriced_and_challenge(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = routes();
    let paywalled = layered();
    let mut group = c.benchmark_group("layer");
    group.bench_function("bare router /free", |b| {
        b.to_async(&runtime)
            .iter(|| bare.clone().oneshot(request("/free")))
    });
    group.bench_function("unpriced /free through the layer", |b| {
        b.to_async(&runtime)
            .iter(|| paywalled.clone().oneshot(request("/free")))
    });
    let outside = tower::ServiceBuilder::new()
        .layer(paywall_layer())
        .service(routes());
    group.bench_function("unpriced /free, layer around the router", |b| {
        b.to_async(&runtime)
            .iter(|| outside.clone().oneshot(request("/free")))
    });
    group.bench_function("bare router /paid (no layer)", |b| {
        b.to_async(&runtime)
            .iter(|| bare.clone().oneshot(request("/paid")))
    });
    group.bench_function("402 challenge /paid", |b| {
        b.to_async(&runtime)
            .iter(|| paywalled.clone().oneshot(request("/paid")))
    });
    group.finish();
}

fn decode_and_precheck(c: &mut Criterion) {
    let exact = exact();
    let header = payment(&exact);
    let price = Price::parse("0.001").unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("payment-signature", header.clone());
    // Prime the scheme's copy of /supported, as the first request would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let parts = request("/paid").into_parts().0;
    runtime.block_on(exact.offer(&price, &parts)).unwrap();

    let payload = header::decode_payment(&header).unwrap();
    let transaction = payload.transaction().unwrap().to_owned();
    let keypair = Keypair::from_seed([7; 32]);
    let message = [5u8; 32];
    let signature = keypair.sign(&message);
    let public_key = keypair.public_key();

    let mut group = c.benchmark_group("payment");
    group.bench_function("decode PAYMENT-SIGNATURE", |b| {
        b.iter(|| header::decode_payment(std::hint::black_box(&header)).unwrap())
    });
    group.bench_function("baseline: ed25519 verify + envelope decode", |b| {
        b.iter(|| {
            let envelope = decode_envelope(std::hint::black_box(&transaction)).unwrap();
            assert!(verify_ed25519(&public_key, &message, &signature));
            envelope
        })
    });
    group.bench_function("offline precheck (read + check)", |b| {
        b.iter(|| {
            let credential = exact.read(std::hint::black_box(&headers)).unwrap().unwrap();
            exact.check(&credential, &price).unwrap();
            credential
        })
    });
    group.finish();
}

criterion_group!(benches, unpriced_and_challenge, decode_and_precheck);
criterion_main!(benches);
